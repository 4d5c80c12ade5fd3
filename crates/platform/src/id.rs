//! `Id<T>`: a typed UUID, so an order id cannot be passed where a user id is wanted.

use std::{fmt, marker::PhantomData};

use uuid::Uuid;

use crate::status::InvalidFields;

/// The id of a `T`: a UUID, version 7 (time-ordered) when we generate it, written in
/// its hyphenated lowercase form. Its text form sorts in creation order.
pub struct Id<T> {
    uuid: Uuid,
    kind: PhantomData<fn() -> T>,
}

impl<T> Id<T> {
    /// A fresh, time-ordered id (UUIDv7, RFC 9562 §5.7).
    pub fn generate() -> Self {
        Self::from_uuid(Uuid::now_v7())
    }

    /// Parses a UUID in any of its usual text forms.
    ///
    /// # Errors
    /// `"must be a UUID"` when `input` is not one.
    pub fn parse(input: &str) -> Result<Self, String> {
        Uuid::parse_str(input.trim()).map(Self::from_uuid).map_err(|_| "must be a UUID".to_owned())
    }

    /// Parses the id in request field `field`.
    ///
    /// # Errors
    /// [`InvalidFields`] naming `field` when `input` is not a UUID.
    pub fn parse_field(input: &str, field: &'static str) -> Result<Self, InvalidFields> {
        Self::parse(input).map_err(|reason| InvalidFields::one(field, reason))
    }

    /// The id's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.uuid.as_bytes()
    }

    /// The id with these 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self::from_uuid(Uuid::from_bytes(bytes))
    }

    fn from_uuid(uuid: Uuid) -> Self {
        Self { uuid, kind: PhantomData }
    }
}

// Manual impls: derives would demand `T: Clone` etc., though only the UUID is stored.
impl<T> Clone for Id<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Id<T> {}
impl<T> PartialEq for Id<T> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}
impl<T> Eq for Id<T> {}
impl<T> std::hash::Hash for Id<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.uuid.hash(state);
    }
}
impl<T> fmt::Debug for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.uuid)
    }
}
impl<T> fmt::Display for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uuid.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Id;

    #[test]
    fn generated_ids_sort_in_creation_order_as_text() {
        let ids: Vec<String> = (0..100).map(|_| Id::<()>::generate().to_string()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn an_id_round_trips_through_text_and_bytes() {
        let id = Id::<()>::generate();
        assert_eq!(Id::<()>::parse(&id.to_string()), Ok(id));
        assert_eq!(Id::<()>::from_bytes(*id.as_bytes()), id);
        assert!(Id::<()>::parse("42").is_err());
    }
}
