//! The user value types (ids, names, users) and the error enum every users module
//! shares. Imports nothing of this crate, so domain -> repository -> user runs one way.

use std::time::SystemTime;

use platform::{
    email::Email,
    id::Id,
    status::{InvalidFields, quote},
};

/// A user's id.
pub type UserId = Id<User>;

/// A display name: 1 to 200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Parses `input`.
    ///
    /// # Errors
    /// [`InvalidFields`] naming `name`.
    pub fn parse(input: &str) -> Result<Self, InvalidFields> {
        let trimmed = input.trim();
        match trimmed.chars().count() {
            0 => Err(InvalidFields::one("name", "must not be empty")),
            201.. => Err(InvalidFields::one("name", "must be at most 200 characters")),
            _ if trimmed.chars().any(char::is_control) => {
                Err(InvalidFields::one("name", "must not contain control characters"))
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
    /// Request fields are malformed (INVALID_ARGUMENT, one field violation each).
    #[error("{0}")]
    InvalidArgument(#[from] InvalidFields),
    /// No such user (NOT_FOUND).
    #[error("user not found")]
    NotFound,
    /// The email belongs to another user (ALREADY_EXISTS).
    #[error("a user with email {} already exists", quote(.0.as_str()))]
    EmailTaken(Email),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed_and_must_not_be_blank_or_too_long() {
        assert_eq!(UserName::parse("  Ada ").map(|n| n.as_str().to_owned()).ok(), Some("Ada".to_owned()));
        assert_eq!(UserName::parse("   ").err().map(|e| e.fields()), Some(vec!["name"]));
        assert!(UserName::parse(&"é".repeat(200)).is_ok());
        assert_eq!(UserName::parse(&"é".repeat(201)).err().map(|e| e.fields()), Some(vec!["name"]));
        assert_eq!(UserName::parse("a\u{0}b").err().map(|e| e.fields()), Some(vec!["name"]));
    }

    #[test]
    fn a_user_id_must_be_a_uuid_and_names_its_field() {
        assert!(UserId::parse_field(&UserId::generate().to_string(), "id").is_ok());
        assert_eq!(UserId::parse_field("42", "id").err().map(|e| e.fields()), Some(vec!["id"]));
    }
}
