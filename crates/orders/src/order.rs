//! The order value types (ids, amounts, currencies, keys, statuses, orders, events)
//! and the error enum every orders module shares. Imports nothing of this crate, so
//! domain -> repository -> order, and page tokens, the users client and change
//! notifications all depend on it and never on the use cases.

use std::{fmt, time::SystemTime};

use platform::{
    email::Email,
    id::Id,
    status::{InvalidFields, quote},
};

/// An order's id.
pub type OrderId = Id<Order>;

/// An amount in the minor unit of its currency; always > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cents(i64);

impl Cents {
    /// Parses `total_cents`.
    ///
    /// # Errors
    /// [`InvalidFields`] naming `total_cents` when it is not > 0.
    pub fn parse(value: i64) -> Result<Self, InvalidFields> {
        if value > 0 { Ok(Self(value)) } else { Err(InvalidFields::one("total_cents", "must be greater than 0")) }
    }

    /// The amount.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// An ISO 4217 alphabetic currency code, upper case (checked against the
/// `iso_currency` crate's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Parses `currency`, case-insensitively.
    ///
    /// # Errors
    /// [`InvalidFields`] naming `currency`.
    pub fn parse(input: &str) -> Result<Self, InvalidFields> {
        iso_currency::Currency::from_code(&input.trim().to_ascii_uppercase())
            .map(Self)
            .ok_or_else(|| InvalidFields::one("currency", format!("{} is not an ISO 4217 currency code", quote(input))))
    }

    /// The three-letter code.
    pub fn code(self) -> &'static str {
        self.0.code()
    }
}

/// A client-chosen idempotency key: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses `idempotency_key`; the empty string means "no key".
    ///
    /// # Errors
    /// [`InvalidFields`] naming `idempotency_key`.
    pub fn parse(input: &str) -> Result<Option<Self>, InvalidFields> {
        if input.is_empty() {
            return Ok(None);
        }
        if input.len() > 128 {
            return Err(InvalidFields::one("idempotency_key", "must be at most 128 characters"));
        }
        if !input.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidFields::one("idempotency_key", "must be printable ASCII without spaces"));
        }
        Ok(Some(Self(input.to_owned())))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an order is in its life; it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OrderStatus {
    /// Placed.
    Created = 1,
    /// Handed to the carrier.
    Shipped = 2,
    /// Received. Final.
    Delivered = 3,
}

impl OrderStatus {
    /// The stored number (the `orders.v1.OrderStatus` value).
    pub fn number(self) -> i64 {
        self as i64
    }

    /// The status with stored number `number`.
    pub fn from_number(number: i64) -> Option<Self> {
        match number {
            1 => Some(Self::Created),
            2 => Some(Self::Shipped),
            3 => Some(Self::Delivered),
            _ => None,
        }
    }

    /// The status an order must have to move to `self`.
    pub fn predecessor(self) -> Option<Self> {
        match self {
            Self::Created => None,
            Self::Shipped => Some(Self::Created),
            Self::Delivered => Some(Self::Shipped),
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "CREATED",
            Self::Shipped => "SHIPPED",
            Self::Delivered => "DELIVERED",
        })
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Id.
    pub id: OrderId,
    /// The customer's email.
    pub customer: Email,
    /// Amount.
    pub total: Cents,
    /// Currency.
    pub currency: Currency,
    /// Where it is now.
    pub status: OrderStatus,
    /// Creation time (microsecond precision).
    pub created_at: SystemTime,
}

/// One step an order reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderEvent {
    /// The order.
    pub order_id: OrderId,
    /// The status it reached.
    pub reached: OrderStatus,
    /// When.
    pub occurred_at: SystemTime,
}

/// Why an orders use case failed. `grpc.rs` maps each variant to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Request fields are malformed (INVALID_ARGUMENT, one field violation each).
    #[error("{0}")]
    InvalidArgument(#[from] InvalidFields),
    /// No such order (NOT_FOUND).
    #[error("order not found")]
    NotFound,
    /// No user has this email (FAILED_PRECONDITION).
    #[error("no customer with email {}: create the user first", quote(.0.as_str()))]
    UnknownCustomer(Email),
    /// The idempotency key was used for a different request (ALREADY_EXISTS).
    #[error("idempotency_key {} was already used for a different order request", quote(.0))]
    KeyReused(String),
    /// The order is not in a status that allows this move (FAILED_PRECONDITION).
    #[error("order is {current}; it must be {required} to become {wanted}")]
    WrongStatus {
        /// Where the order is.
        current: OrderStatus,
        /// Where it must be.
        required: OrderStatus,
        /// Where the call wanted it.
        wanted: OrderStatus,
    },
    /// The users service did not answer in time (UNAVAILABLE).
    #[error("users service unavailable: {0}")]
    UsersUnavailable(String),
    /// The database could not be reached in time (UNAVAILABLE).
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database rolled the transaction back for a conflict with a concurrent one
    /// (ABORTED): nothing was written, and the call may succeed when tried again.
    #[error("database transaction aborted")]
    Aborted(#[source] sqlx::Error),
    /// Anything else (INTERNAL); the detail is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// An [`Error::InvalidArgument`] for one field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument(InvalidFields::one(field, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_cents_must_be_positive() {
        assert!(Cents::parse(1).is_ok());
        for bad in [0, -5, i64::MIN] {
            assert_eq!(Cents::parse(bad).err().map(|e| e.fields()), Some(vec!["total_cents"]));
        }
    }

    #[test]
    fn currency_codes_are_iso_4217_and_case_insensitive() {
        assert_eq!(Currency::parse("eur").map(Currency::code).ok(), Some("EUR"));
        for bad in ["", "EURO", "XYZ", "€"] {
            assert_eq!(Currency::parse(bad).err().map(|e| e.fields()), Some(vec!["currency"]), "{bad}");
        }
    }

    #[test]
    fn an_empty_idempotency_key_means_none_and_bad_ones_are_named() {
        assert_eq!(IdempotencyKey::parse("").ok(), Some(None));
        assert!(matches!(IdempotencyKey::parse("order-42"), Ok(Some(_))));
        for bad in ["has space".to_owned(), "k".repeat(129), "ünicode".to_owned()] {
            assert_eq!(IdempotencyKey::parse(&bad).err().map(|e| e.fields()), Some(vec!["idempotency_key"]));
        }
    }

    #[test]
    fn statuses_only_move_forward_one_step() {
        assert_eq!(OrderStatus::Created.predecessor(), None);
        assert_eq!(OrderStatus::Shipped.predecessor(), Some(OrderStatus::Created));
        assert_eq!(OrderStatus::Delivered.predecessor(), Some(OrderStatus::Shipped));
        for status in [OrderStatus::Created, OrderStatus::Shipped, OrderStatus::Delivered] {
            assert_eq!(OrderStatus::from_number(status.number()), Some(status));
        }
        assert_eq!(OrderStatus::from_number(0), None);
    }
}
