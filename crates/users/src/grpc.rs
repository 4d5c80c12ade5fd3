//! The gRPC edge: implements `users.v1.UserService`, translating proto <-> domain and `Error` -> `Status`.

use api::users::v1::{
    self as pb, CreateUserRequest, CreateUserResponse, GetUserByEmailRequest, GetUserByEmailResponse, GetUserRequest,
    GetUserResponse, user_service_server::UserService,
};
use platform::{email::Email, status};
use tonic::{Request, Response, Status};

use crate::{
    domain::{NewUser, Users},
    user::{Error, User, UserName, parse_user_id},
};

/// The `users.v1.UserService` implementation.
pub struct UserGrpc {
    users: Users,
}

impl UserGrpc {
    /// Serves the given use cases.
    pub fn new(users: Users) -> Self {
        Self { users }
    }
}

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
        let new = NewUser::try_from(request.into_inner())?;
        let user = self.users.create(new).await?;
        Ok(Response::new(CreateUserResponse { user: Some(user.into()) }))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let id = parse_user_id(&request.get_ref().id, "id")?;
        let user = self.users.get(id).await?;
        Ok(Response::new(GetUserResponse { user: Some(user.into()) }))
    }

    async fn get_user_by_email(
        &self,
        request: Request<GetUserByEmailRequest>,
    ) -> Result<Response<GetUserByEmailResponse>, Status> {
        let email = parse_email(&request.get_ref().email)?;
        let user = self.users.by_email(&email).await?;
        Ok(Response::new(GetUserByEmailResponse { user: Some(user.into()) }))
    }
}

fn parse_email(input: &str) -> Result<Email, Error> {
    Email::parse(input).map_err(|reason| Error::invalid("email", reason))
}

impl TryFrom<CreateUserRequest> for NewUser {
    type Error = Error;

    fn try_from(request: CreateUserRequest) -> Result<Self, Error> {
        Ok(NewUser { email: parse_email(&request.email)?, name: UserName::parse(&request.name)? })
    }
}

impl From<User> for pb::User {
    fn from(user: User) -> Self {
        pb::User {
            id: user.id.to_string(),
            email: user.email.to_string(),
            name: user.name.as_str().to_owned(),
            created_at: Some(user.created_at.into()),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            Error::NotFound => Status::not_found(error.to_string()),
            Error::EmailTaken(_) => Status::already_exists(error.to_string()),
            Error::Unavailable(source) => status::unavailable("database", source),
            Error::Internal(source) => status::internal(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_arguments_map_to_invalid_argument_naming_the_field() {
        let status = Status::from(
            NewUser::try_from(CreateUserRequest { email: "nope".into(), name: "Ada".into() }).unwrap_err(),
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("invalid email"), "{}", status.message());
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let status = Status::from(Error::Internal(anyhow::anyhow!("SELECT * FROM secret_table failed")));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }
}
