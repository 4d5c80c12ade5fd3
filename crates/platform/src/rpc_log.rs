//! A tower layer that writes one log line per RPC: service, method, gRPC status code and duration.
//!
//! The status of a gRPC call is known only at its end: in the response headers for a
//! trailers-only response (most errors), otherwise in the trailers after the last
//! message. So the layer watches the response body until its trailers, and an RPC
//! whose body is dropped first (the client went away) is logged as `Cancelled`.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};

/// Builds [`RpcLog`] services.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLogLayer;

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog { inner }
    }
}

/// Logs one line per RPC at its end (see the module docs).
#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let completion = Completion::start(request.uri().path());
        ResponseFuture { inner: self.inner.call(request), completion: Some(completion) }
    }
}

pin_project! {
    /// The response future of [`RpcLog`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        completion: Option<Completion>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Body,
{
    type Output = Result<Response<LoggedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(completion) = this.completion.take() else {
            // Polled after completion: a caller bug, but not a reason to panic.
            return Poll::Ready(result.map(|r| r.map(|body| LoggedBody { inner: body, completion: None })));
        };
        Poll::Ready(match result {
            Ok(response) => {
                let completion = match grpc_status(response.headers()) {
                    // Trailers-only response: the RPC ends here.
                    Some(code) => {
                        completion.finish(code);
                        None
                    }
                    None => Some(completion),
                };
                Ok(response.map(|body| LoggedBody { inner: body, completion }))
            }
            Err(error) => {
                completion.finish(Code::Unknown);
                Err(error)
            }
        })
    }
}

pin_project! {
    /// A response body that logs its RPC when the trailers pass through.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        completion: Option<Completion>,
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(trailers), Some(completion)) = (frame.trailers_ref(), this.completion.take()) {
                    completion.finish(grpc_status(trailers).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(_)) => {
                if let Some(completion) = this.completion.take() {
                    completion.finish(Code::Internal);
                }
            }
            None => {
                if let Some(completion) = this.completion.take() {
                    // A gRPC response must end with trailers; one without has no status.
                    completion.finish(Code::Unknown);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `grpc-status` header or trailer, if present.
fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers.get("grpc-status").map(|value| Code::from_bytes(value.as_bytes()))
}

/// One RPC in flight; logs exactly once, at `finish` or, failing that, at drop.
struct Completion {
    service: String,
    method: String,
    start: Instant,
    logged: bool,
}

impl Completion {
    fn start(path: &str) -> Self {
        // gRPC paths are `/{package.Service}/{Method}` (PROTOCOL-HTTP2.md).
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        Self { service: service.to_owned(), method: method.to_owned(), start: Instant::now(), logged: false }
    }

    fn finish(mut self, code: Code) {
        self.log(code);
    }

    fn log(&mut self, code: Code) {
        self.logged = true;
        let duration_ms = self.start.elapsed().as_secs_f64() * 1e3;
        let (service, method) = (self.service.as_str(), self.method.as_str());
        if matches!(code, Code::Internal | Code::Unknown | Code::DataLoss) {
            tracing::error!(rpc.system = "grpc", rpc.service = service, rpc.method = method, grpc.code = ?code, duration_ms, "rpc finished");
        } else {
            tracing::info!(rpc.system = "grpc", rpc.service = service, rpc.method = method, grpc.code = ?code, duration_ms, "rpc finished");
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.logged {
            // The response (or its body) was dropped before the status was sent:
            // the client cancelled or disconnected.
            self.log(Code::Cancelled);
        }
    }
}
