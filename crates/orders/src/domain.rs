//! Orders, the rules that make one valid, and the use cases the gRPC layer calls.

use std::{fmt, time::SystemTime};

use platform::{
    database::{from_micros, to_micros},
    email::Email,
    id::Id,
};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    changes::{Change, Changes},
    page_token::PageTokens,
    repository::{Inserted, OrderRepository},
    users_client::UsersClient,
};

/// An order's id.
pub type OrderId = Id<Order>;

/// Parses an [`OrderId`] from request field `field`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `field`.
pub fn parse_order_id(input: &str, field: &'static str) -> Result<OrderId, Error> {
    OrderId::parse(input).map_err(|reason| Error::invalid(field, reason))
}

/// An amount in the minor unit of its currency; always > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cents(i64);

impl Cents {
    /// Parses `total_cents`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `total_cents` when it is not > 0.
    pub fn parse(value: i64) -> Result<Self, Error> {
        if value > 0 { Ok(Self(value)) } else { Err(Error::invalid("total_cents", "must be greater than 0")) }
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
    /// [`Error::InvalidArgument`] naming `currency`.
    pub fn parse(input: &str) -> Result<Self, Error> {
        iso_currency::Currency::from_code(&input.trim().to_ascii_uppercase())
            .map(Self)
            .ok_or_else(|| Error::invalid("currency", format!("{input:?} is not an ISO 4217 currency code")))
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
    /// [`Error::InvalidArgument`] naming `idempotency_key`.
    pub fn parse(input: &str) -> Result<Option<Self>, Error> {
        if input.is_empty() {
            return Ok(None);
        }
        if input.len() > 128 {
            return Err(Error::invalid("idempotency_key", "must be at most 128 characters"));
        }
        if !input.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid("idempotency_key", "must be printable ASCII without spaces"));
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

/// What it takes to place an order: already-parsed fields.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Who orders; must be a user.
    pub customer: Email,
    /// How much.
    pub total: Cents,
    /// In which currency.
    pub currency: Currency,
    /// Makes a retried request create one order.
    pub idempotency_key: Option<IdempotencyKey>,
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

impl Order {
    /// Whether `new` asks for the same order as this one (the idempotency check).
    fn same_request(&self, new: &NewOrder) -> bool {
        self.customer == new.customer && self.total == new.total && self.currency == new.currency
    }
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

/// Which orders to list.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only this customer's orders, or everyone's.
    pub customer: Option<Email>,
    /// Orders per page, after defaults and limits.
    pub page_size: u32,
    /// The opaque token of the previous page, if any.
    pub page_token: Option<String>,
}

/// One page of orders.
#[derive(Debug, Clone)]
pub struct Page {
    /// The orders, oldest first.
    pub orders: Vec<Order>,
    /// Token for the next page; `None` when this page is the last.
    pub next_page_token: Option<String>,
}

/// Why an orders use case failed. `grpc.rs` maps each variant to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed (INVALID_ARGUMENT).
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field, as named in the proto.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No such order (NOT_FOUND).
    #[error("order not found")]
    NotFound,
    /// No user has this email (FAILED_PRECONDITION).
    #[error("no customer with email {0}: create the user first")]
    UnknownCustomer(Email),
    /// The idempotency key was used for a different request (ALREADY_EXISTS).
    #[error("idempotency_key {0:?} was already used for a different order request")]
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
    /// Anything else (INTERNAL); the detail is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// An [`Error::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

/// The orders use cases.
#[derive(Clone)]
pub struct Orders {
    repository: OrderRepository,
    users: UsersClient,
    tokens: PageTokens,
    changes: Changes,
}

impl Orders {
    /// Use cases over their collaborators.
    pub fn new(repository: OrderRepository, users: UsersClient, tokens: PageTokens, changes: Changes) -> Self {
        Self { repository, users, tokens, changes }
    }

    /// Places `new`, or with a known idempotency key returns the order it placed first.
    ///
    /// # Errors
    /// [`Error::KeyReused`] for a known key with other fields; [`Error::UnknownCustomer`];
    /// [`Error::UsersUnavailable`]; storage errors.
    pub async fn create(&self, new: NewOrder) -> Result<Order, Error> {
        // A replay answers from our own table, without asking users again.
        if let Some(key) = &new.idempotency_key
            && let Some(first) = self.repository.by_idempotency_key(key).await?
        {
            return replay(first, &new, key);
        }
        if !self.users.exists(&new.customer).await? {
            return Err(Error::UnknownCustomer(new.customer));
        }
        let now = from_micros(to_micros(SystemTime::now()));
        let order = Order {
            id: OrderId::generate(),
            customer: new.customer.clone(),
            total: new.total,
            currency: new.currency,
            status: OrderStatus::Created,
            created_at: now,
        };
        match self.repository.insert(&order, new.idempotency_key.as_ref()).await? {
            Inserted::New => Ok(order),
            // A concurrent request with the same key won the race.
            Inserted::KeyTaken(first) => replay(first, &new, new.idempotency_key.as_ref().expect("only keys conflict")),
        }
    }

    /// The order with `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; storage errors.
    pub async fn get(&self, id: OrderId) -> Result<Order, Error> {
        self.repository.get(id).await?.ok_or(Error::NotFound)
    }

    /// One page of orders, oldest first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `page_token` for a token that was altered or
    /// issued for another filter; storage errors.
    pub async fn list(&self, query: ListQuery) -> Result<Page, Error> {
        let customer = query.customer.as_ref();
        let after = match &query.page_token {
            Some(token) => Some(self.tokens.verify(token, customer)?),
            None => None,
        };
        let mut orders = self.repository.list(customer, after, query.page_size + 1).await?;
        let more = orders.len() > query.page_size as usize;
        orders.truncate(query.page_size as usize);
        let next_page_token = match orders.last() {
            Some(last) if more => Some(self.tokens.issue(last.id, customer)),
            _ => None,
        };
        Ok(Page { orders, next_page_token })
    }

    /// Moves order `id` to `to`. Asking for the status it already has returns it
    /// unchanged, so the call is safe to retry.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::WrongStatus`]; storage errors.
    pub async fn advance(&self, id: OrderId, to: OrderStatus) -> Result<Order, Error> {
        let Some(required) = to.predecessor() else {
            return Err(Error::Internal(anyhow::anyhow!("no transition leads to {to}")));
        };
        let now = from_micros(to_micros(SystemTime::now()));
        if let Some(order) = self.repository.transition(id, required, to, now).await? {
            return Ok(order);
        }
        let current = self.get(id).await?;
        if current.status == to {
            Ok(current)
        } else {
            Err(Error::WrongStatus { current: current.status, required, wanted: to })
        }
    }

    /// The events of order `id`: those that already happened, then each new one as it
    /// happens on any replica. The stream ends after DELIVERED, when the receiver is
    /// dropped (the client cancelled), or with an error if storage fails.
    ///
    /// # Errors
    /// [`Error::NotFound`]; storage errors (before the stream starts).
    pub async fn watch(&self, id: OrderId) -> Result<ReceiverStream<Result<OrderEvent, Error>>, Error> {
        // Subscribe before the first read, so no change can slip between the two.
        let mut changes = self.changes.subscribe();
        let history = self.repository.events(id).await?;
        if history.is_empty() {
            return Err(Error::NotFound);
        }
        let (sender, receiver) = mpsc::channel(8);
        let repository = self.repository.clone();
        tokio::spawn(async move {
            let mut pending = history;
            let mut reached = None;
            loop {
                for event in pending.drain(..) {
                    if Some(event.reached) <= reached {
                        continue;
                    }
                    reached = Some(event.reached);
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if reached == Some(OrderStatus::Delivered) {
                    return;
                }
                let relevant = tokio::select! {
                    () = sender.closed() => return,
                    change = changes.recv() => match change {
                        Ok(Change::Order(changed)) => changed == id,
                        // Missed notifications: look again rather than risk missing ours.
                        Ok(Change::Resync) | Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => return,
                    },
                };
                if relevant {
                    match repository.events(id).await {
                        Ok(events) => pending = events,
                        Err(error) => {
                            let _ = sender.send(Err(error)).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(ReceiverStream::new(receiver))
    }
}

/// The answer to a request whose idempotency key names order `first`.
fn replay(first: Order, new: &NewOrder, key: &IdempotencyKey) -> Result<Order, Error> {
    if first.same_request(new) { Ok(first) } else { Err(Error::KeyReused(key.as_str().to_owned())) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use platform::{
        client::{ClientConfig, ResilientChannel},
        config::DatabaseConfig,
        discovery,
        metrics::Metrics,
        observe::ClientLayer,
    };
    use tokio_stream::StreamExt;

    use super::*;
    use crate::repository::MIGRATOR;

    /// Use cases over an in-memory SQLite database (the embedded path) and a users
    /// client with no endpoints (these tests never reach it).
    async fn embedded_orders() -> (Orders, OrderRepository, Changes) {
        let mut config = DatabaseConfig::at("sqlite::memory:".parse().expect("a database URL"));
        // Each in-memory SQLite connection is its own database: keep one.
        config.max_connections = std::num::NonZeroU32::MIN;
        let pool = platform::database::connect(&config).await.expect("in-memory SQLite");
        MIGRATOR.run(&pool).await.expect("migrations apply on SQLite");
        let changes = Changes::local();
        let repository = OrderRepository::new(platform::database::Database::new(pool, "orders"), changes.clone());
        let channel =
            ResilientChannel::new("users", &ClientConfig::with_endpoints(vec![]), discovery::fixed(vec![]), &[])
                .expect("an empty descriptor set decodes");
        let observed = tower::Layer::layer(&ClientLayer::new(&Metrics::new(), &[], "users"), channel);
        let users = UsersClient::new(observed);
        let orders = Orders::new(repository.clone(), users, PageTokens::new("k"), changes.clone());
        (orders, repository, changes)
    }

    async fn stored_order(repository: &OrderRepository) -> Order {
        let order = Order {
            id: OrderId::generate(),
            customer: Email::parse("sqlite@example.com").expect("valid"),
            total: Cents::parse(100).expect("positive"),
            currency: Currency::parse("USD").expect("ISO 4217"),
            status: OrderStatus::Created,
            created_at: from_micros(to_micros(SystemTime::now())),
        };
        assert!(matches!(repository.insert(&order, None).await, Ok(Inserted::New)));
        order
    }

    #[tokio::test]
    async fn on_sqlite_a_watch_follows_local_changes_to_delivery() {
        let (orders, repository, _) = embedded_orders().await;
        let order = stored_order(&repository).await;
        let mut events = orders.watch(order.id).await.expect("the order exists");
        assert_eq!(events.next().await.map(|e| e.expect("no error").reached), Some(OrderStatus::Created));
        orders.advance(order.id, OrderStatus::Shipped).await.expect("shipped");
        assert_eq!(events.next().await.map(|e| e.expect("no error").reached), Some(OrderStatus::Shipped));
        orders.advance(order.id, OrderStatus::Delivered).await.expect("delivered");
        assert_eq!(events.next().await.map(|e| e.expect("no error").reached), Some(OrderStatus::Delivered));
        assert!(events.next().await.is_none(), "the stream ends after delivery");
    }

    #[tokio::test]
    async fn a_watch_unsubscribes_when_its_client_goes_away() {
        let (orders, repository, changes) = embedded_orders().await;
        let order = stored_order(&repository).await;
        let mut events = orders.watch(order.id).await.expect("the order exists");
        events.next().await.expect("the created event").expect("no error");
        assert_eq!(changes.watchers(), 1);
        drop(events);
        // The watch task notices the closed stream and drops its subscription.
        tokio::time::timeout(Duration::from_secs(10), async {
            while changes.watchers() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the watcher unsubscribes");
    }

    #[test]
    fn total_cents_must_be_positive() {
        assert!(Cents::parse(1).is_ok());
        for bad in [0, -5, i64::MIN] {
            assert!(matches!(Cents::parse(bad), Err(Error::InvalidArgument { field: "total_cents", .. })));
        }
    }

    #[test]
    fn currency_codes_are_iso_4217_and_case_insensitive() {
        assert_eq!(Currency::parse("eur").map(Currency::code).ok(), Some("EUR"));
        for bad in ["", "EURO", "XYZ", "€"] {
            assert!(matches!(Currency::parse(bad), Err(Error::InvalidArgument { field: "currency", .. })), "{bad}");
        }
    }

    #[test]
    fn an_empty_idempotency_key_means_none_and_bad_ones_are_named() {
        assert_eq!(IdempotencyKey::parse("").ok(), Some(None));
        assert!(matches!(IdempotencyKey::parse("order-42"), Ok(Some(_))));
        for bad in ["has space".to_owned(), "k".repeat(129), "ünicode".to_owned()] {
            assert!(matches!(
                IdempotencyKey::parse(&bad),
                Err(Error::InvalidArgument { field: "idempotency_key", .. })
            ));
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
