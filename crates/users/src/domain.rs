//! The users use cases the gRPC layer calls (`Users`), and their inputs.

use platform::email::Email;

use crate::{
    repository::UserRepository,
    user::{Error, User, UserId, UserName},
};

/// What it takes to create a user: already-parsed fields.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Unique email.
    pub email: Email,
    /// Display name.
    pub name: UserName,
}

/// The users use cases over a repository.
#[derive(Clone)]
pub struct Users {
    repository: UserRepository,
}

impl Users {
    /// Use cases over `repository`.
    pub fn new(repository: UserRepository) -> Self {
        Self { repository }
    }

    /// Stores a new user with a fresh id and the current time.
    ///
    /// # Errors
    /// [`Error::EmailTaken`], or a storage error.
    pub async fn create(&self, new: NewUser) -> Result<User, Error> {
        // At storage precision: what create returns equals what a later read returns.
        let created_at = UserRepository::now();
        let user = User { id: UserId::generate(), email: new.email, name: new.name, created_at };
        self.repository.insert(&user).await?;
        Ok(user)
    }

    /// The user with `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`], or a storage error.
    pub async fn get(&self, id: UserId) -> Result<User, Error> {
        self.repository.get(id).await?.ok_or(Error::NotFound)
    }

    /// The user that owns `email`.
    ///
    /// # Errors
    /// [`Error::NotFound`], or a storage error.
    pub async fn by_email(&self, email: &Email) -> Result<User, Error> {
        self.repository.by_email(email).await?.ok_or(Error::NotFound)
    }
}
