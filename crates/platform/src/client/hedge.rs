//! Hedging, for the attempts step: gRFC A6 `hedgingPolicy` for idempotent single-request calls, further attempts after a delay, the first answer wins.

use std::{pin::pin, sync::Arc};

use futures::{StreamExt, stream::FuturesUnordered};
use tonic::{Code, body::Body};
use tower::{Service, ServiceExt, retry::budget::Budget};

use super::{
    balance::Tried,
    config::HedgingPolicy,
    deadline::with_remaining_timeout,
    outcome::{BoxError, NoHealthyEndpointError, grpc_status, into_status, status_code},
    replay::{Shared, buffer, rebuild},
};

/// Makes the attempts of a call to a method with a hedging `policy` (gRFC A6
/// `hedgingPolicy`): the first at once, another every `hedgingDelay` (or at once after
/// a non-fatal status) up to `maxAttempts`, each to an endpoint the others have not
/// used and withdrawn from the retry budget; the first answer that is OK or fatal wins
/// and the other attempts are cancelled. The request body is buffered (see [`buffer`]).
pub(super) async fn call_hedged<S>(
    inner: S,
    shared: Arc<Shared>,
    request: http::Request<Body>,
    policy: HedgingPolicy,
) -> Result<http::Response<Body>, BoxError>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let (parts, body) = request.into_parts();
    let body = buffer(body, &shared.target, "hedging").await?;
    // Shared by the hedges, so each goes to an endpoint the others have not used.
    let tried = Tried::default();
    let send = |inner: S| {
        let mut request = rebuild(&parts, body.clone());
        request.extensions_mut().insert(tried.clone());
        async move { inner.oneshot(with_remaining_timeout(request).map_err(BoxError::from)?).await }
    };
    let mut in_flight = FuturesUnordered::new();
    in_flight.push(send(inner.clone()));
    let mut sent = 1;
    let mut last: Option<Result<http::Response<Body>, BoxError>> = None;
    loop {
        let may_hedge = sent < policy.max_attempts;
        let mut delay = pin!(tokio::time::sleep(policy.hedging_delay));
        let next = tokio::select! {
            result = in_flight.next(), if !in_flight.is_empty() => Some(result.expect("not empty")),
            () = &mut delay, if may_hedge => None,
            else => break,
        };
        let hedge_now = match next {
            // The delay passed with no answer: hedge.
            None => true,
            Some(result) => {
                let code = match &result {
                    Ok(response) => grpc_status(response.headers()).unwrap_or(Code::Ok),
                    Err(error) if error.is::<NoHealthyEndpointError>() => Code::Unavailable,
                    Err(error) => status_code(error),
                };
                // Dropping `in_flight` on return cancels the other attempts.
                if code == Code::Ok || !policy.non_fatal(code) {
                    return result.map_err(into_status).map_err(Into::into);
                }
                last = Some(result);
                if !may_hedge && in_flight.is_empty() {
                    break;
                }
                // gRFC A6: a non-fatal status sends the next hedge at once.
                may_hedge
            }
        };
        if hedge_now {
            if !shared.budget.withdraw() {
                shared.metrics.budget_exhausted.inc();
                tracing::debug!(upstream = shared.target, "retry budget exhausted: not hedging");
                // No more hedges: wait for what is in flight.
                sent = policy.max_attempts;
                if in_flight.is_empty() {
                    break;
                }
                continue;
            }
            sent += 1;
            shared.metrics.hedges.inc();
            in_flight.push(send(inner.clone()));
        }
    }
    last.expect("an attempt ended").map_err(into_status).map_err(Into::into)
}
