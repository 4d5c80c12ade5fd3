//! The users service as orders sees it: "does this customer exist?", over the
//! resilient channel (deadlines, retries, balancing and ejection live there).

use api::{
    rpc::Code,
    users::v1::{GetUserByEmailRequest, user_service_client::UserServiceClient},
};
use platform::{client, email::Email};

use crate::order::Error;

/// The channel users calls go through: observed (span, traceparent, metrics), then
/// the resilient channel (deadline, retries, balancing); built by [`client::channel`].
pub type UsersChannel = client::Channel;

/// A typed client of `users.v1.UserService`.
#[derive(Clone)]
pub struct UsersClient {
    client: UserServiceClient<UsersChannel>,
}

impl UsersClient {
    /// Calls go through `channel`.
    pub fn new(channel: UsersChannel) -> Self {
        Self { client: UserServiceClient::new(channel) }
    }

    /// Whether a user owns `email` (`GetUserByEmail`; NOT_FOUND means no).
    ///
    /// # Errors
    /// [`Error::UsersUnavailable`] when users fails or misses the deadline.
    pub async fn exists(&self, email: &Email) -> Result<bool, Error> {
        let mut client = self.client.clone();
        let request = GetUserByEmailRequest { email: email.to_string() };
        match client.get_user_by_email(request).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => {
                tracing::warn!(grpc.code = ?status.code(), error = status.message(), "users call failed");
                Err(Error::UsersUnavailable(format!("{:?}", status.code())))
            }
        }
    }
}
