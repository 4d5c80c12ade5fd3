//! Replaying a call: the request body read whole once, so that retries and hedges can
//! each resend a copy, and what the replayed calls of one channel share.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tonic::{Status, body::Body};
use tower::retry::budget::TpsBudget;

use super::{config::ClientConfig, metrics::ClientMetrics};
use crate::support::methods::Methods;

/// Largest request body buffered for retries and hedges (tonic's default message size limit).
const MAX_RETRY_BUFFER: usize = 4 * 1024 * 1024;

/// What every call through one channel's attempts step (`Retry`) shares, hedged or retried.
pub(super) struct Shared {
    /// The upstream's name, in errors and logs.
    pub(super) target: String,
    pub(super) config: ClientConfig,
    pub(super) budget: Arc<TpsBudget>,
    pub(super) methods: Methods,
    pub(super) metrics: ClientMetrics,
}

/// `body`, read whole so that each attempt can resend it: RESOURCE_EXHAUSTED naming
/// `target` and `purpose` when it is over [`MAX_RETRY_BUFFER`] (4 MiB).
pub(super) async fn buffer(body: Body, target: &str, purpose: &str) -> Result<Bytes, Status> {
    let body = Limited::new(body, MAX_RETRY_BUFFER).collect().await;
    let body = body.map_err(|error| {
        Status::resource_exhausted(format!("request to {target} not buffered for {purpose}: {error}"))
    })?;
    Ok(body.to_bytes())
}

/// A copy of the buffered request for one attempt.
pub(super) fn rebuild(parts: &http::request::Parts, body: Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(Full::new(body)));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}
