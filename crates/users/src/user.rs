//! The user value types (ids, names, users) and the error enum every users module
//! shares. Imports nothing of this crate, so domain -> repository -> user runs one way.

use std::time::SystemTime;

use platform::{email::Email, id::Id, status::quote};

/// A user's id.
pub type UserId = Id<User>;

/// Parses a [`UserId`] from request field `field`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `field`.
pub fn parse_user_id(input: &str, field: &'static str) -> Result<UserId, Error> {
    UserId::parse(input).map_err(|reason| Error::invalid(field, reason))
}

/// A display name: 1 to 200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Parses `input`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `name`.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let trimmed = input.trim();
        match trimmed.chars().count() {
            0 => Err(Error::invalid("name", "must not be empty")),
            201.. => Err(Error::invalid("name", "must be at most 200 characters")),
            _ if trimmed.chars().any(char::is_control) => {
                Err(Error::invalid("name", "must not contain control characters"))
            }
            _ => Ok(Self(trimmed.to_owned())),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique, normalised email.
    pub email: Email,
    /// Display name.
    pub name: UserName,
    /// Creation time (microsecond precision).
    pub created_at: SystemTime,
}

/// Why a users use case failed. `grpc.rs` maps each variant to one gRPC code.
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
    /// Several request fields are malformed (INVALID_ARGUMENT, one field violation
    /// each): `(field, reason)` pairs, fields as named in the proto.
    #[error("{}", .0.iter().map(|(field, reason)| format!("invalid {field}: {reason}")).collect::<Vec<_>>().join("; "))]
    InvalidArguments(Vec<(&'static str, String)>),
    /// No such user (NOT_FOUND).
    #[error("user not found")]
    NotFound,
    /// The email belongs to another user (ALREADY_EXISTS).
    #[error("a user with email {} already exists", quote(.0.as_str()))]
    EmailTaken(Email),
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

    /// The errors of a request's fields as one: `None` when there are none, the error
    /// itself when there is one, else [`Error::InvalidArguments`] with every bad field,
    /// so a client learns all of them from one call. A non-field error wins outright.
    pub fn of_fields(errors: impl IntoIterator<Item = Option<Error>>) -> Option<Error> {
        let mut errors: Vec<Error> = errors.into_iter().flatten().collect();
        if errors.len() <= 1 {
            return errors.pop();
        }
        let mut fields = Vec::with_capacity(errors.len());
        for error in errors {
            match error {
                Error::InvalidArgument { field, reason } => fields.push((field, reason)),
                Error::InvalidArguments(more) => fields.extend(more),
                other => return Some(other),
            }
        }
        Some(Error::InvalidArguments(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed_and_must_not_be_blank_or_too_long() {
        assert_eq!(UserName::parse("  Ada ").map(|n| n.as_str().to_owned()).ok(), Some("Ada".to_owned()));
        assert!(matches!(UserName::parse("   "), Err(Error::InvalidArgument { field: "name", .. })));
        assert!(UserName::parse(&"é".repeat(200)).is_ok());
        assert!(matches!(UserName::parse(&"é".repeat(201)), Err(Error::InvalidArgument { field: "name", .. })));
        assert!(matches!(UserName::parse("a\u{0}b"), Err(Error::InvalidArgument { field: "name", .. })));
    }

    #[test]
    fn a_user_id_must_be_a_uuid_and_names_its_field() {
        assert!(parse_user_id(&UserId::generate().to_string(), "id").is_ok());
        assert!(matches!(parse_user_id("42", "id"), Err(Error::InvalidArgument { field: "id", .. })));
    }
}
