//! The client's deadline step: each call gets the earliest of its configured timeout, the caller's, and what remains of the call being served.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::time::{Instant, Timeout};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service, layer::layer_fn};

use super::{
    config::ClientConfig,
    outcome::{BoxError, outcome},
};
use crate::deadline;

/// How close to its deadline a CANCELLED answer counts as the upstream giving up at
/// the deadline (the two timers start a network transit apart).
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

/// The deadline of the whole call, attempts and backoff included; the layers below
/// read it from the request's extensions.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallDeadline(pub(super) Instant);

/// Gives each call a deadline: the earliest of the method's configured timeout, the
/// caller's own `grpc-timeout`, and what remains of the call being served (so a
/// deadline holds across hops, tonic #2316); enforces it here too, so a hung
/// connection cannot hold the caller past it.
#[derive(Clone)]
pub(super) struct Deadline<S> {
    inner: S,
    config: Arc<ClientConfig>,
}

impl<S> Deadline<S> {
    /// The layer: timeouts per method from `config` (`timeout`, `method_timeouts`).
    pub(super) fn layer(config: &ClientConfig) -> impl Layer<S, Service = Self> + Clone {
        let config = Arc::new(config.clone());
        layer_fn(move |inner| Self { inner, config: config.clone() })
    }
}

impl<S> Service<http::Request<Body>> for Deadline<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        let mut deadline = Instant::now() + self.config.timeout_of(method);
        // The served call's deadline lives in a task-local (`crate::deadline::incoming`),
        // so it is read here, synchronously, in the task that serves the call: work a
        // handler spawns sees it only when spawned with `crate::deadline::spawn`.
        for other in [deadline::from_headers(request.headers()), deadline::incoming()].into_iter().flatten() {
            deadline = deadline.min(other);
        }
        request.extensions_mut().insert(CallDeadline(deadline));
        DeadlineFuture { call: tokio::time::timeout_at(deadline, self.inner.call(request)), deadline }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a call through [`Deadline`]: the inner call's, or
    /// DEADLINE_EXCEEDED once its deadline passes.
    pub struct DeadlineFuture<F> {
        #[pin]
        call: Timeout<F>,
        deadline: Instant,
    }
}

impl<F> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let exceeded = || Status::deadline_exceeded("deadline exceeded before the upstream answered").into();
        Poll::Ready(match ready!(this.call.poll(cx)) {
            // tonic's own timers (the server's, and the channel's, both set from
            // our grpc-timeout) end a call at its deadline with CANCELLED; the
            // caller should see what happened: the deadline passed.
            Ok(result) if outcome(&result) == Code::Cancelled && Instant::now() + DEADLINE_SLACK >= *this.deadline => {
                Err(exceeded())
            }
            Ok(result) => result,
            Err(_) => Err(exceeded()),
        })
    }
}

/// Sets `grpc-timeout` to what remains of the call's deadline.
///
/// # Errors
/// DEADLINE_EXCEEDED when nothing remains.
pub(super) fn with_remaining_timeout(mut request: http::Request<Body>) -> Result<http::Request<Body>, Status> {
    if let Some(CallDeadline(deadline)) = request.extensions().get::<CallDeadline>().copied() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Status::deadline_exceeded("deadline exceeded before the call was sent"));
        }
        request.headers_mut().insert(deadline::GRPC_TIMEOUT, deadline::encode_timeout(remaining));
    }
    Ok(request)
}
