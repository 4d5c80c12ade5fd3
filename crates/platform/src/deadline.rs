//! Deadline propagation: the server side remembers each incoming call's deadline so
//! the client side can send what remains of it on outgoing calls.
//!
//! The deadline travels in a tokio task-local ([`incoming`]), set by [`PropagateLayer`]
//! around the handler: it is there for the handler's own task only. Work a handler
//! spawns on the call's behalf must be spawned with [`spawn`] (or wrapped in
//! [`scope`]) to keep it; a bare `tokio::spawn` starts with no deadline.
//!
//! A deadline travels as the `grpc-timeout` header: 1 to 8 ASCII digits followed by a
//! unit, `H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds or
//! `n` nanoseconds (gRPC over HTTP/2, PROTOCOL-HTTP2.md, "Timeout").

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderMap, Request};
use tokio::time::Instant;
use tower::{Layer, Service};

/// The `grpc-timeout` header codec (in the Connect crate, which translates
/// `connect-timeout-ms` into it).
pub use connect::timeout::{GRPC_TIMEOUT, encode_timeout, parse_timeout};

tokio::task_local! {
    static INCOMING: Option<Instant>;
}

/// The deadline of the gRPC call this task is serving, if its caller set one.
/// `None` outside a server call or when the caller sent no `grpc-timeout`.
pub fn incoming() -> Option<Instant> {
    INCOMING.try_with(|deadline| *deadline).ok().flatten()
}

/// Runs `future` as if serving a call with `deadline` (what [`PropagateLayer`] does;
/// public for tests and for work a handler spawns on the call's behalf).
pub async fn scope<F: Future>(deadline: Option<Instant>, future: F) -> F::Output {
    INCOMING.scope(deadline, future).await
}

/// `tokio::spawn`, keeping the deadline of the call being served (if any) for the
/// spawned task, so its outgoing calls send what remains of it. Use it for work a
/// handler starts on the call's behalf; a task-local does not cross `tokio::spawn`.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(INCOMING.scope(incoming(), future))
}

/// The caller's deadline carried by `headers`, as an instant from now.
pub fn from_headers(headers: &HeaderMap) -> Option<Instant> {
    headers.get(GRPC_TIMEOUT).and_then(parse_timeout).map(|timeout| Instant::now() + timeout)
}

/// How much earlier than tonic's own timer [`Propagate`] answers an expired call.
/// tonic's server reads `grpc-timeout` too, outside every layer of ours, and answers
/// an expired call CANCELLED ("Timeout expired"), where gRPC says DEADLINE_EXCEEDED
/// (grpc-go's servers answer it). Both timers start within microseconds of each other
/// and tokio's timers tick in milliseconds, so one millisecond is enough to go first;
/// tonic polls the call before its timer, so a tie goes to us as well.
pub const ANSWER_BEFORE_TONIC: Duration = Duration::from_millis(1);

/// Server layer: serves each call inside a scope holding its deadline (see
/// [`incoming`]), and answers DEADLINE_EXCEEDED when the handler has not answered by
/// then (gRPC status codes: "the deadline expired before the operation could
/// complete"). For a streaming response that is the deadline of its headers; the
/// stream itself is the handler's to bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateLayer;

impl<S> Layer<S> for PropagateLayer {
    type Service = Propagate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Propagate { inner }
    }
}

/// See [`PropagateLayer`].
#[derive(Debug, Clone)]
pub struct Propagate<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for Propagate<S>
where
    S: Service<Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let deadline = from_headers(request.headers());
        let served = INCOMING.scope(deadline, self.inner.call(request));
        let Some(deadline) = deadline else { return Box::pin(served) };
        let expiry = tokio::time::sleep_until(deadline.checked_sub(ANSWER_BEFORE_TONIC).unwrap_or(deadline));
        Box::pin(async move {
            tokio::select! {
                // The deadline first: when a busy runtime wakes this call late, after the
                // handler's own outgoing calls also timed out (at the deadline itself), the
                // answer is still DEADLINE_EXCEEDED, not whatever the handler made of that.
                biased;
                () = expiry => {
                    Ok(tonic::Status::deadline_exceeded("deadline exceeded while the server handled the call").into_http())
                }
                answered = served => answered,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn every_unit_of_the_spec_parses() {
        let cases = [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("4S", Duration::from_secs(4)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_timeout(&HeaderValue::from_static(text)), Some(expected), "{text}");
        }
    }

    #[test]
    fn malformed_timeouts_are_ignored() {
        for text in ["", "m", "10", "10x", "123456789m", "-5m", "1.5S"] {
            assert_eq!(parse_timeout(&HeaderValue::from_str(text).expect("ascii")), None, "{text:?}");
        }
    }

    #[test]
    fn encoding_keeps_eight_digits_and_never_rounds_up() {
        assert_eq!(encode_timeout(Duration::from_millis(1500)), "1500000u");
        assert_eq!(encode_timeout(Duration::from_secs(1000)), "1000000m");
        assert_eq!(encode_timeout(Duration::from_secs(200_000)), "200000S");
        let round_trip = parse_timeout(&encode_timeout(Duration::from_nanos(1_999_999))).expect("parses");
        assert_eq!(round_trip, Duration::from_micros(1999));
    }

    #[tokio::test]
    async fn a_call_still_running_at_its_deadline_is_answered_deadline_exceeded() {
        let slow = tower::service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("too late")))
        });
        let mut service = PropagateLayer.layer(slow);
        let mut request = Request::new(());
        request.headers_mut().insert(GRPC_TIMEOUT, HeaderValue::from_static("50m"));
        let started = Instant::now();
        let response = service.call(request).await.expect("answered");
        let status = tonic::Status::from_header_map(response.headers()).expect("a grpc-status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(started.elapsed() < Duration::from_secs(30), "answered at the deadline, not when the handler ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_wakeup_answers_deadline_exceeded_not_what_the_handler_made_of_its_own_timeout() {
        // The handler's outgoing call times out at the deadline itself; it answers UNAVAILABLE.
        let handler = tower::service_fn(|_: Request<()>| async {
            tokio::time::sleep_until(incoming().expect("inside the scope")).await;
            Ok::<_, std::convert::Infallible>(tonic::Status::unavailable("users timed out").into_http::<String>())
        });
        let mut request = Request::new(());
        request.headers_mut().insert(GRPC_TIMEOUT, HeaderValue::from_static("50m"));
        let call = PropagateLayer.layer(handler).call(request);
        tokio::pin!(call);
        assert!(futures::poll!(&mut call).is_pending(), "both timers are set");
        // The runtime wakes the call only once both timers are due, as a busy one may.
        tokio::time::advance(Duration::from_millis(60)).await;
        let response = call.await.expect("answered");
        let status = tonic::Status::from_header_map(response.headers()).expect("a grpc-status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }

    #[tokio::test]
    async fn a_call_without_a_deadline_is_left_to_finish() {
        let quick = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
        });
        let response = PropagateLayer.layer(quick).call(Request::new(())).await.expect("answered");
        assert_eq!(response.body(), "done");
        assert!(tonic::Status::from_header_map(response.headers()).is_none());
    }

    #[tokio::test]
    async fn the_deadline_is_visible_inside_the_scope_only() {
        let deadline = Instant::now() + Duration::from_secs(3);
        assert_eq!(scope(Some(deadline), async { incoming() }).await, Some(deadline));
        assert_eq!(incoming(), None);
    }
}
