//! How an attempt ended, read one way by every step: the boxed error type, the gRPC code of a result, and the one [`Status`] every error leaves the channel as.

use std::error::Error as StdError;

use http::HeaderValue;
use tonic::{Code, Status, body::Body};

/// The error type of [`ResilientChannel`](super::ResilientChannel): always a boxed
/// [`Status`], which tonic's generated clients hand back as is.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why the balancer did not send an attempt: not worth retrying, since nothing changes
/// until an ejection expires or the resolver publishes.
#[derive(Debug, thiserror::Error)]
#[error("no healthy endpoint for {target}: {known} known, {ejected} ejected")]
pub struct NoHealthyEndpointError {
    pub(super) target: String,
    pub(super) known: usize,
    pub(super) ejected: usize,
}

impl From<NoHealthyEndpointError> for Status {
    fn from(error: NoHealthyEndpointError) -> Self {
        Status::unavailable(error.to_string())
    }
}

/// The `grpc-status` of a response's headers, if it has one (a trailers-only answer).
pub(super) fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers.get("grpc-status").map(HeaderValue::as_bytes).map(Code::from_bytes)
}

/// The status code a result stands for: OK for a response still streaming.
pub(super) fn outcome(result: &Result<http::Response<Body>, BoxError>) -> Code {
    match result {
        Ok(response) => grpc_status(response.headers()).unwrap_or(Code::Ok),
        Err(error) => status_code(error),
    }
}

/// The code of an error: its [`Status`]'s, else UNAVAILABLE (a transport error).
pub(super) fn status_code(error: &BoxError) -> Code {
    error.downcast_ref::<Status>().map_or(Code::Unavailable, Status::code)
}

/// Every error leaves this channel as a [`Status`]; transport errors are UNAVAILABLE.
pub(super) fn into_status(error: BoxError) -> Status {
    match error.downcast::<Status>() {
        Ok(status) => *status,
        Err(error) => match error.downcast::<NoHealthyEndpointError>() {
            Ok(error) => Status::from(*error),
            Err(error) => Status::unavailable(error.to_string()),
        },
    }
}
