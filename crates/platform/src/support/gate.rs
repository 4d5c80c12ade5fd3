//! One service for the server layers that look at each request before the inner service does: they answer it themselves, or pass it on and finish its response.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use tower::{Layer, Service};

/// What a [`Gated`] service does around each call of its inner service: the request
/// either goes on, keeping a [`Pass`] for its response, or is answered here (the
/// inner service never sees it). Runs on every call: keep it cheap.
pub trait Gate<B, R> {
    /// What the request leaves for its response.
    type Pass: Pass<R>;

    /// `Ok` to call the inner service with `request` (which this may change), `Err`
    /// with the answer to give instead.
    ///
    /// # Errors
    /// The response that answers a refused request.
    fn admit(&self, request: &mut Request<B>) -> Result<Self::Pass, Response<R>>;
}

/// What a [`Gate`] does to the response of a call it let through.
pub trait Pass<R> {
    /// The response given to the caller in place of `response`.
    fn finish(self, response: Response<R>) -> Response<R>;
}

/// Nothing to do to the response.
impl<R> Pass<R> for () {
    fn finish(self, response: Response<R>) -> Response<R> {
        response
    }
}

/// The layer that puts a clone of the gate `G` in front of a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct GateLayer<G> {
    gate: G,
}

impl<G> From<G> for GateLayer<G> {
    fn from(gate: G) -> Self {
        Self { gate }
    }
}

impl<S, G: Clone> Layer<S> for GateLayer<G> {
    type Service = Gated<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated { inner, gate: self.gate.clone() }
    }
}

/// The inner service `S` behind the gate `G` (see [`GateLayer`]).
#[derive(Debug, Clone)]
pub struct Gated<S, G> {
    inner: S,
    gate: G,
}

impl<S, G, B, R> Service<Request<B>> for Gated<S, G>
where
    S: Service<Request<B>, Response = Response<R>>,
    G: Gate<B, R>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = GatedFuture<S::Future, G::Pass, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.gate.admit(&mut request) {
            Ok(pass) => GatedFuture { state: State::Passed { answer: self.inner.call(request), pass: Some(pass) } },
            Err(response) => GatedFuture { state: State::Answered { response: Some(response) } },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a [`Gated`] call: the gate's own answer, or the inner
    /// service's finished by its [`Pass`].
    pub struct GatedFuture<F, P, R> {
        #[pin]
        state: State<F, P, R>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<F, P, R> {
        Answered { response: Option<Response<R>> },
        Passed { #[pin] answer: F, pass: Option<P> },
    }
}

impl<F, P, R, E> Future for GatedFuture<F, P, R>
where
    F: Future<Output = Result<Response<R>, E>>,
    P: Pass<R>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProjection::Answered { response } => {
                Poll::Ready(Ok(response.take().expect("a gated future is not polled after it is ready")))
            }
            StateProjection::Passed { answer, pass } => {
                let response = ready!(answer.poll(cx))?;
                let pass = pass.take().expect("a gated future is not polled after it is ready");
                Poll::Ready(Ok(pass.finish(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use tower::ServiceExt;

    use super::*;

    /// Refuses paths under `/closed/`; tags the responses it lets through.
    #[derive(Clone)]
    struct ClosedPaths;

    struct Tag;

    impl Pass<String> for Tag {
        fn finish(self, response: Response<String>) -> Response<String> {
            response.map(|body| format!("{body} (tagged)"))
        }
    }

    impl Gate<(), String> for ClosedPaths {
        type Pass = Tag;

        fn admit(&self, request: &mut Request<()>) -> Result<Tag, Response<String>> {
            if request.uri().path().starts_with("/closed/") {
                Err(Response::new("refused".to_owned()))
            } else {
                Ok(Tag)
            }
        }
    }

    /// The body answering a request to `path` through [`ClosedPaths`], and how many
    /// calls reached the inner service.
    async fn answer(path: &str) -> (String, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = tower::service_fn({
            let calls = calls.clone();
            move |_: Request<()>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new("answered".to_owned())) }
            }
        });
        let request = Request::builder().uri(path).body(()).expect("request");
        let response = GateLayer::from(ClosedPaths).layer(inner).oneshot(request).await.expect("infallible");
        (response.into_body(), calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_refused_request_is_answered_by_the_gate_and_never_reaches_the_inner_service() {
        assert_eq!(answer("/closed/door").await, ("refused".to_owned(), 0));
    }

    #[tokio::test]
    async fn an_admitted_request_gets_the_inner_response_finished_by_its_pass() {
        assert_eq!(answer("/open/door").await, ("answered (tagged)".to_owned(), 1));
    }
}
