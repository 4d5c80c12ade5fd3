//! Recovery: a handler that panics fails its own call with INTERNAL, and the server keeps serving.

use std::any::Any;

use http::Response;
use tonic::{Status, body::Body};
use tower_http::catch_panic::CatchPanicLayer;

/// What [`layer`] answers a panicking call with.
pub type PanicAnswer = fn(Box<dyn Any + Send + 'static>) -> Response<Body>;

/// Catches a panic while a call is made or its response awaited (tower-http's
/// `CatchPanicLayer`) and answers that call INTERNAL, without detail: the panic message
/// is logged at ERROR, in the call's span, so with its trace id. Other calls and
/// connections are untouched: without this layer the connection's task would end,
/// failing every call multiplexed on it.
///
/// Its responses have tower-http's boxed body; map them back with `Body::new`.
pub fn layer() -> CatchPanicLayer<PanicAnswer> {
    CatchPanicLayer::custom(internal as PanicAnswer)
}

/// The answer to a call whose handler panicked with `panic`.
fn internal(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(panic = message, "a handler panicked; the call is answered INTERNAL");
    Status::internal("internal error").into_http()
}

#[cfg(test)]
mod tests {
    use http::Request;
    use tonic::Code;
    use tower::{Layer, ServiceExt};

    use super::*;

    #[tokio::test]
    async fn a_panic_while_answering_is_an_internal_status() {
        let panicking = tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("boom");
            }
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        });
        let response = layer().layer(panicking).oneshot(Request::new(())).await.expect("infallible");
        let status = Status::from_header_map(response.headers()).expect("a status in the headers");
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error", "the panic message stays in the log");
    }

    #[tokio::test]
    async fn a_panic_while_making_the_call_is_an_internal_status_too() {
        #[derive(Clone)]
        struct PanicsInCall;
        impl tower::Service<Request<()>> for PanicsInCall {
            type Response = Response<Body>;
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<Response<Body>, Self::Error>>;
            fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<()>) -> Self::Future {
                panic!("boom before any future")
            }
        }
        let response = layer().layer(PanicsInCall).oneshot(Request::new(())).await.expect("infallible");
        let status = Status::from_header_map(response.headers()).expect("a status in the headers");
        assert_eq!(status.code(), Code::Internal);
    }
}
