//! The users service as orders sees it: "does this customer exist?", over the
//! round-robin channel, with a deadline on every call.

use std::time::Duration;

use api::users::v1::{GetUserByEmailRequest, user_service_client::UserServiceClient};
use platform::{
    client::{RoundRobin, with_deadline},
    email::Email,
    observe,
};
use tonic::Code;

use crate::domain::Error;

/// The channel users calls go through: observed (span, traceparent, metrics), then balanced.
pub type UsersChannel = observe::Client<RoundRobin>;

/// A typed client of `users.v1.UserService`.
#[derive(Clone)]
pub struct UsersClient {
    client: UserServiceClient<UsersChannel>,
    timeout: Duration,
}

impl UsersClient {
    /// Calls go through `channel`, each with deadline `timeout`.
    pub fn new(channel: UsersChannel, timeout: Duration) -> Self {
        Self { client: UserServiceClient::new(channel), timeout }
    }

    /// Whether a user owns `email` (`GetUserByEmail`; NOT_FOUND means no).
    ///
    /// # Errors
    /// [`Error::UsersUnavailable`] when users fails or misses the deadline.
    pub async fn exists(&self, email: &Email) -> Result<bool, Error> {
        let mut client = self.client.clone();
        let request = GetUserByEmailRequest { email: email.to_string() };
        match with_deadline(request, self.timeout, |request| client.get_user_by_email(request)).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => {
                tracing::warn!(grpc.code = ?status.code(), message = status.message(), "users call failed");
                Err(Error::UsersUnavailable(format!("{:?}", status.code())))
            }
        }
    }
}
