//! The gRPC edge: implements `users.v1.UserService`, translating proto <-> domain and `Error` -> `Status`.

use api::{
    rpc::{Request, Response, Status, async_trait},
    users::v1::{
        self as pb, CreateUserRequest, CreateUserResponse, GetUserByEmailRequest, GetUserByEmailResponse,
        GetUserRequest, GetUserResponse, user_service_server::UserService,
    },
};
use platform::{
    email::Email,
    status::{Failure, InvalidFields, Reason},
};

use crate::{
    domain::{NewUser, Users},
    user::{Error, User, UserId, UserName},
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

#[async_trait]
impl UserService for UserGrpc {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
        let new = NewUser::try_from(request.into_inner())?;
        let user = self.users.create(new).await?;
        Ok(Response::new(CreateUserResponse { user: Some(user.into()) }))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let id = UserId::parse_field(&request.get_ref().id, "id")?;
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

fn parse_email(input: &str) -> Result<Email, InvalidFields> {
    Email::parse(input).map_err(|reason| InvalidFields::one("email", reason))
}

impl TryFrom<CreateUserRequest> for NewUser {
    type Error = Error;

    /// Every bad field is reported, not only the first.
    fn try_from(request: CreateUserRequest) -> Result<Self, Error> {
        match (parse_email(&request.email), UserName::parse(&request.name)) {
            (Ok(email), Ok(name)) => Ok(NewUser { email, name }),
            (email, name) => Err(InvalidFields::all([email.err(), name.err()])
                .map_or_else(|| Error::Internal(anyhow::anyhow!("a request failed without an error")), Error::from)),
        }
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

/// `google.rpc.ErrorInfo.domain` of every reason below: the proto package.
pub const ERROR_DOMAIN: &str = "users.v1";
/// ALREADY_EXISTS: another user already has this email.
pub const EMAIL_TAKEN: Reason = Reason { reason: "EMAIL_TAKEN", domain: ERROR_DOMAIN };

/// One code per variant, through the shared mapper (`platform::status`), which adds
/// `BadRequest` field violations to INVALID_ARGUMENT and `ErrorInfo` to the refusals
/// a client branches on.
impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        let failure = match error {
            Error::InvalidArgument(fields) => Failure::from(fields),
            Error::NotFound => Failure::NotFound(message),
            Error::EmailTaken(_) => Failure::AlreadyExists(EMAIL_TAKEN, message),
            Error::Unavailable(source) => {
                Failure::DependencyUnavailable { dependency: "database", detail: source.to_string() }
            }
            Error::Aborted(source) => Failure::DependencyAborted { dependency: "database", detail: source.to_string() },
            Error::Internal(source) => Failure::Internal(format!("{source:#}")),
        };
        Status::from(failure)
    }
}

#[cfg(test)]
mod tests {
    use api::rpc::Code;
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn invalid_arguments_map_to_invalid_argument_naming_the_field() {
        let status = Status::from(
            NewUser::try_from(CreateUserRequest { email: "nope".into(), name: "Ada".into() }).unwrap_err(),
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("invalid email"), "{}", status.message());
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let status = Status::from(Error::Internal(anyhow::anyhow!("SELECT * FROM secret_table failed")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }

    /// The fields of a status's `google.rpc.BadRequest` violations.
    fn violated_fields(status: &Status) -> Vec<String> {
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("a BadRequest detail");
        bad_request.field_violations.iter().map(|v| v.field.clone()).collect()
    }

    #[test]
    fn a_create_request_with_two_bad_fields_names_both_as_field_violations() {
        let status =
            Status::from(NewUser::try_from(CreateUserRequest { email: "nope".into(), name: " ".into() }).unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["email", "name"]);
        assert!(status.message().contains("invalid email: ") && status.message().contains("invalid name: "));
    }

    #[test]
    fn a_taken_email_is_already_exists_with_reason_email_taken() {
        let status = Status::from(Error::EmailTaken(Email::parse("ada@example.com").expect("valid")));
        assert_eq!(status.code(), Code::AlreadyExists);
        let details = status.get_error_details();
        let info = details.error_info().expect("an ErrorInfo detail");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("EMAIL_TAKEN", "users.v1"));
    }

    #[test]
    fn a_megabyte_of_input_in_any_field_yields_a_short_message() {
        let huge = "X".repeat(1 << 20);
        for (request, field) in [
            (CreateUserRequest { email: huge.clone(), name: "Ada".into() }, "email"),
            (CreateUserRequest { email: "ada@example.com".into(), name: huge.clone() }, "name"),
        ] {
            let status = Status::from(NewUser::try_from(request).unwrap_err());
            assert!(status.message().len() < 200, "{field}: {} bytes", status.message().len());
            assert_eq!(violated_fields(&status), [field]);
        }
        let status = Status::from(parse_email(&huge).unwrap_err());
        assert!(status.message().len() < 200, "{} bytes", status.message().len());
    }
}
