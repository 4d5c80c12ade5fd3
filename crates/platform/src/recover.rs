//! Recovery: a handler that panics fails its own call with INTERNAL, and the server keeps serving.

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use futures::FutureExt;
use http::{Request, Response};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

/// Catches a panic while a call is made or its response awaited and answers that call
/// INTERNAL, without detail (the panic message is logged at ERROR, in the call's span,
/// so with its trace id). Other calls and connections are untouched: without this
/// layer the connection's task would end, failing every call multiplexed on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecoverLayer;

impl<S> Layer<S> for RecoverLayer {
    type Service = Recover<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Recover { inner }
    }
}

/// The service [`RecoverLayer`] builds.
#[derive(Debug, Clone)]
pub struct Recover<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Recover<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let answer = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(answer) => answer,
            Err(panic) => return Box::pin(std::future::ready(Ok(internal(panic.as_ref())))),
        };
        Box::pin(async move {
            match AssertUnwindSafe(answer).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => Ok(internal(panic.as_ref())),
            }
        })
    }
}

/// The answer to a call whose handler panicked with `panic`.
fn internal(panic: &(dyn Any + Send)) -> Response<Body> {
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
    use tonic::Code;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panic_while_answering_is_an_internal_status() {
        let panicking = tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("boom");
            }
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        });
        let response = RecoverLayer.layer(panicking).oneshot(Request::new(())).await.expect("infallible");
        let status = Status::from_header_map(response.headers()).expect("a status in the headers");
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error", "the panic message stays in the log");
    }
}
