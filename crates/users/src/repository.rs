//! Storage of users over sqlx; the same SQL runs on PostgreSQL and SQLite.

use std::time::SystemTime;

use platform::{
    database::{Database, InSpan, StorageFailure, from_micros, to_micros},
    email::Email,
};
use sqlx::{FromRow, error::ErrorKind};

use crate::user::{Error, User, UserId, UserName};

/// The embedded migrations of the users database (`crates/users/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Reads and writes the `users` table.
#[derive(Clone)]
pub struct UserRepository {
    db: Database,
}

/// A `users` row as stored.
#[derive(FromRow)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    created_at: i64,
}

impl UserRepository {
    /// A query's `error` as ours, the database's health probe told of it first
    /// ([`Database::noticed`]). Not for `acquire`'s errors: it tells the probe itself.
    fn failed(&self, error: sqlx::Error) -> Error {
        storage_error(self.db.noticed(error))
    }

    /// A repository over `db` (migrated with [`MIGRATOR`]).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The current time at the precision this repository stores (whole microseconds
    /// since the Unix epoch), so a user built with it equals the user read back.
    pub fn now() -> SystemTime {
        from_micros(to_micros(SystemTime::now()))
    }

    /// Inserts `user`.
    ///
    /// # Errors
    /// [`Error::EmailTaken`] when the email is taken; [`Error::Unavailable`], [`Error::Aborted`] or [`Error::Internal`].
    pub async fn insert(&self, user: &User) -> Result<(), Error> {
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        sqlx::query("INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(user.id.to_string())
            .bind(user.email.as_str())
            .bind(user.name.as_str())
            .bind(to_micros(user.created_at))
            .execute(&mut *conn)
            .in_span(self.db.span("INSERT", "users"))
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
                    Error::EmailTaken(user.email.clone())
                }
                _ => self.failed(e),
            })?;
        Ok(())
    }

    /// The user with `id`, if any.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Aborted`] or [`Error::Internal`].
    pub async fn get(&self, id: UserId) -> Result<Option<User>, Error> {
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        let row = sqlx::query_as::<_, UserRow>("SELECT id, email, name, created_at FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .in_span(self.db.span("SELECT", "users"))
            .await
            .map_err(|e| self.failed(e))?;
        row.map(User::try_from).transpose()
    }

    /// The user whose email is `email`, if any.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Aborted`] or [`Error::Internal`].
    pub async fn by_email(&self, email: &Email) -> Result<Option<User>, Error> {
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        let row = sqlx::query_as::<_, UserRow>("SELECT id, email, name, created_at FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&mut *conn)
            .in_span(self.db.span("SELECT", "users"))
            .await
            .map_err(|e| self.failed(e))?;
        row.map(User::try_from).transpose()
    }
}

impl TryFrom<UserRow> for User {
    type Error = Error;

    fn try_from(row: UserRow) -> Result<Self, Error> {
        let corrupt = |what: &str| Error::Internal(anyhow::anyhow!("stored user {} has an invalid {what}", row.id));
        Ok(User {
            id: UserId::parse(&row.id).map_err(|_| corrupt("id"))?,
            email: Email::parse(&row.email).map_err(|_| corrupt("email"))?,
            name: UserName::parse(&row.name).map_err(|_| corrupt("name"))?,
            created_at: from_micros(row.created_at),
        })
    }
}

/// Classifies a sqlx error ([`StorageFailure::of`]): could-not-reach-the-database is
/// UNAVAILABLE (worth a retry elsewhere), a transaction rolled back for a conflict
/// ABORTED, everything else INTERNAL.
fn storage_error(error: sqlx::Error) -> Error {
    match StorageFailure::of(&error) {
        StorageFailure::Unavailable => Error::Unavailable(error),
        StorageFailure::Aborted => Error::Aborted(error),
        StorageFailure::Other => Error::Internal(error.into()),
    }
}
