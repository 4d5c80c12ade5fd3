//! The answers the gRPC protocol asks for where tonic gives others: a non-gRPC content type is refused, an undecodable request is INVALID_ARGUMENT, an oversize one RESOURCE_EXHAUSTED.

use crate::support::gate::{Gate, GateLayer};
use http::{HeaderValue, Request, Response, StatusCode, header::CONTENT_TYPE};
use tonic::{Code, Status, body::Body};

/// The start of the message tonic's protobuf codec gives a request body that does not
/// decode (invalid UTF-8 in a string, a wrong wire type, a truncated field): prost's
/// `DecodeError` text, under code INTERNAL.
const UNDECODABLE: &str = "failed to decode Protobuf message";
/// The start of the message tonic gives a request message over its decoding limit,
/// under code OUT_OF_RANGE.
const OVERSIZE: &str = "Error, decoded message length too large";

/// Refuses a request whose content type is not `application/grpc` (or
/// `application/grpc+proto`, `application/grpc;…`) with HTTP 415 Unsupported Media
/// Type: "If Content-Type does not begin with "application/grpc", gRPC servers SHOULD
/// respond with HTTP status of 415" (gRPC over HTTP/2, PROTOCOL-HTTP2.md, "Requests").
/// Without it such a body is decoded as protobuf anyway. The response also carries
/// `grpc-status` UNIMPLEMENTED for gRPC clients that read it.
///
/// Put it after the layers that translate other protocols (gRPC-Web, Connect) into
/// gRPC, so it only sees what none of them accepted.
pub type GrpcOnlyLayer = GateLayer<GrpcOnly>;

/// The check [`GrpcOnlyLayer`] puts in front of a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcOnly;

impl<B, R: Default> Gate<B, R> for GrpcOnly {
    type Pass = ();

    fn admit(&self, request: &mut Request<B>) -> Result<(), Response<R>> {
        if is_grpc(request.headers().get(CONTENT_TYPE)) {
            Ok(())
        } else {
            tracing::debug!("refused a request that is not gRPC (HTTP 415)");
            Err(unsupported_media_type())
        }
    }
}

/// Whether `content_type` is gRPC's: `application/grpc`, alone or followed by `+codec`
/// or `;parameters`.
fn is_grpc(content_type: Option<&HeaderValue>) -> bool {
    let Some(rest) = content_type.and_then(|value| value.as_bytes().strip_prefix(b"application/grpc")) else {
        return false;
    };
    matches!(rest.first(), None | Some(b'+' | b';'))
}

/// HTTP 415 with a gRPC status, for a request [`GrpcOnlyLayer`] refuses.
fn unsupported_media_type<R: Default>() -> Response<R> {
    let mut response = Status::unimplemented("the content type is not application/grpc").into_http::<R>();
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

/// Gives `response`, when it answers a request that tonic could not decode, the code
/// the gRPC spec gives it: INVALID_ARGUMENT for a body that is not the method's message (tonic says INTERNAL,
/// which reads as a server fault, is logged at ERROR and alerts on-call for what a
/// client sent) and RESOURCE_EXHAUSTED for a message over the size limit (tonic says
/// OUT_OF_RANGE; gRPC's statuscodes.md lists "request message larger than the
/// server's limit" under RESOURCE_EXHAUSTED). The message is kept.
///
/// Only statuses tonic itself made are rewritten (recognised by their messages), and
/// only those sent before any response message (trailers-only responses, where the
/// request is decoded: every unary and server-streaming call).
///
/// A plain function, for `ServiceBuilder::map_response`: it needs no state.
pub fn recode_request_errors(mut response: Response<Body>) -> Response<Body> {
    recode(&mut response);
    response
}

/// Rewrites the status in `response`'s headers when it is one of tonic's request
/// decoding errors (see [`recode_request_errors`]).
fn recode(response: &mut Response<Body>) {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return;
    };
    let code = match status.code() {
        Code::Internal if status.message().starts_with(UNDECODABLE) => Code::InvalidArgument,
        Code::OutOfRange if status.message().starts_with(OVERSIZE) => Code::ResourceExhausted,
        _ => return,
    };
    let recoded = Status::new(code, status.message().to_owned());
    if recoded.add_header(response.headers_mut()).is_err() {
        tracing::debug!("could not rewrite a request decoding status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: Status) -> Status {
        let mut response = status.into_http::<Body>();
        recode(&mut response);
        Status::from_header_map(response.headers()).expect("a status in the headers")
    }

    #[test]
    fn an_undecodable_body_is_invalid_argument_with_its_message_kept() {
        let status = answered(Status::internal(
            "failed to decode Protobuf message: GetUserRequest.id: invalid string value: data is not UTF-8 encoded",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("GetUserRequest.id"), "{}", status.message());
    }

    #[test]
    fn an_oversize_message_is_resource_exhausted() {
        let status = answered(Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        ));
        assert_eq!(status.code(), Code::ResourceExhausted);
    }

    #[test]
    fn a_handler_s_own_internal_and_out_of_range_are_kept() {
        assert_eq!(answered(Status::internal("internal error")).code(), Code::Internal);
        assert_eq!(answered(Status::out_of_range("page 9 of 3")).code(), Code::OutOfRange);
    }

    #[test]
    fn grpc_content_types_are_recognised_and_others_are_not() {
        let grpc = |text: &'static str| is_grpc(Some(&HeaderValue::from_static(text)));
        assert!(grpc("application/grpc"));
        assert!(grpc("application/grpc+proto"));
        assert!(grpc("application/grpc;charset=utf-8"));
        assert!(!grpc("application/grpcx"));
        assert!(!grpc("application/json"));
        assert!(!grpc("text/plain"));
        assert!(!is_grpc(None));
    }
}
