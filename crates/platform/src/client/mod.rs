//! Client side of service-to-service calls: a channel that follows a resolver,
//! balances over connected endpoints, ejects failing ones, retries within a budget,
//! and gives every call a deadline that holds across hops.
//!
//! One step per module, composed here in [`ResilientChannel::new`]: `deadline`
//! (`Deadline::layer`), `retry` (`Retry::layer`: retries, or hedges through `hedge`,
//! both resending the body `replay` buffered), `balance` (the balancer, one attempt on
//! one endpoint, skipping those `outlier` ejected). Imports point down that list and
//! never back to this file: `metrics` (the counters), `outcome` (how an attempt ended)
//! and `config` sit below every step. Most callers
//! want [`channel`]: the resilient channel under the observing layer (span,
//! `traceparent`, `grpc_client_*` metrics), its metrics registered:
//! `UserServiceClient::new(client::channel("users", &config.users, consul, &metrics, api::FILE_DESCRIPTOR_SET)?)`.

mod balance;
pub mod config;
mod deadline;
mod hedge;
mod metrics;
mod outcome;
mod outlier;
mod replay;
mod retry;

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::{Service, ServiceBuilder, retry::budget::TpsBudget};

use self::{
    balance::Balancer,
    deadline::{Deadline, DeadlineFuture},
    retry::Retry,
};
pub use self::{
    config::{
        BalancerKind, ClientConfig, FailurePercentageEjection, HedgingPolicy, OutlierDetection, ResolverConfig,
        RetryBudget, RetryPolicy, StatusCodeName, SuccessRateEjection,
    },
    metrics::ClientMetrics,
    outcome::{BoxError, NoHealthyEndpointError},
};
use crate::{
    auth::{AttachToken, AttachTokenLayer},
    discovery::consul::Consul,
    discovery::{self, Resolver},
    observability::layer,
    observability::metrics::Metrics,
    support::methods::Methods,
};

/// What [`channel`] returns and a generated client runs over: the observing layer
/// (span, `traceparent`, `grpc_client_*` call metrics) over a [`ResilientChannel`].
pub type Channel = layer::Client<ResilientChannel>;

/// A snapshot of a channel's counters and endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// Attempts sent to an endpoint (first tries and retries).
    pub attempts: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries wanted but refused by the retry budget.
    pub budget_exhausted: u64,
    /// Endpoint ejections by outlier detection.
    pub ejections: u64,
    /// Connected endpoints.
    pub endpoints: usize,
    /// Connected endpoints ejected right now.
    pub ejected: usize,
}

/// `resolver = "consul"` without a Consul client to follow it with.
#[derive(Debug, thiserror::Error)]
#[error("the consul resolver needs the `consul` config section")]
pub struct MissingConsulError;

/// Why [`channel`] could not build a channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// `resolver = "consul"` without a Consul client.
    #[error("upstream {upstream}: {source}")]
    MissingConsul {
        /// The upstream's name, e.g. `users`.
        upstream: String,
        /// What is missing.
        source: MissingConsulError,
    },
    /// The upstream's descriptor set does not decode (a build fault of `api`).
    #[error("upstream {upstream}: descriptor set does not decode: {source}")]
    Descriptor {
        /// The upstream's name.
        upstream: String,
        /// The decode error.
        source: prost::DecodeError,
    },
    /// This upstream's metrics are already registered in the registry.
    #[error("upstream {upstream}: metrics not registered: {source}")]
    Metrics {
        /// The upstream's name.
        upstream: String,
        /// The registry's error.
        source: prometheus::Error,
    },
}

/// The channel to `upstream` (e.g. `users`) a generated client runs over: endpoints
/// from the resolver `config.resolver` names (`consul` is needed for the Consul one),
/// the resilient steps of [`ResilientChannel`], and the observing layer on top, its
/// call metrics and the channel's own ([`ClientMetrics`]) registered in `metrics`.
/// `descriptor_set` is the upstream's encoded `FileDescriptorSet`.
///
/// # Errors
/// [`ChannelError`]: no Consul client for the Consul resolver, a descriptor set that
/// does not decode, or this upstream already registered in `metrics`.
pub fn channel(
    upstream: &str,
    config: &ClientConfig,
    consul: Option<&Consul>,
    metrics: &Metrics,
    descriptor_set: &[u8],
) -> Result<Channel, ChannelError> {
    let resolver = resolver(&config.resolver, consul)
        .map_err(|source| ChannelError::MissingConsul { upstream: upstream.to_owned(), source })?;
    let methods = Methods::from_descriptor_sets(&[descriptor_set])
        .map_err(|source| ChannelError::Descriptor { upstream: upstream.to_owned(), source })?;
    let channel = ResilientChannel::with_methods(upstream, config, resolver, methods.clone());
    channel
        .register_metrics(metrics)
        .map_err(|source| ChannelError::Metrics { upstream: upstream.to_owned(), source })?;
    let observe = layer::ClientLayer::with_methods(metrics, methods, upstream);
    Ok(tower::Layer::layer(&observe, channel))
}

/// Starts the resolver `config` describes (already validated at load).
///
/// # Errors
/// [`MissingConsulError`] when it is `Consul` and `consul` is `None`.
pub fn resolver(config: &ResolverConfig, consul: Option<&Consul>) -> Result<Resolver, MissingConsulError> {
    Ok(match config {
        ResolverConfig::Static { endpoints } => discovery::fixed(endpoints.clone()),
        ResolverConfig::Consul { service, wait } => {
            discovery::consul(consul.ok_or(MissingConsulError)?.clone(), service.clone(), *wait)
        }
        ResolverConfig::Dns { name, refresh, nameserver } => discovery::dns(name.clone(), *refresh, *nameserver),
    })
}

/// A gRPC channel over the endpoints of one upstream, with deadlines, retries and
/// outlier ejection (see the module docs and [`ClientConfig`]). Cloning is cheap;
/// clones share endpoints, budget and counters.
#[derive(Clone)]
pub struct ResilientChannel {
    service: AttachToken<Deadline<Retry<Balancer>>>,
    target: String,
    balancer: Balancer,
    metrics: ClientMetrics,
}

impl ResilientChannel {
    /// A channel to `target` (its name in logs and errors, e.g. `users`) over the
    /// endpoints `resolver` publishes. `descriptor_set` is the upstream's encoded
    /// `FileDescriptorSet`: it says which methods are idempotent and unary.
    ///
    /// # Errors
    /// When `descriptor_set` does not decode.
    pub fn new(
        target: &str,
        config: &ClientConfig,
        resolver: Resolver,
        descriptor_set: &[u8],
    ) -> Result<Self, prost::DecodeError> {
        Ok(Self::with_methods(target, config, resolver, Methods::from_descriptor_sets(&[descriptor_set])?))
    }

    /// As [`ResilientChannel::new`], over methods already read.
    pub fn with_methods(target: &str, config: &ClientConfig, resolver: Resolver, methods: Methods) -> Self {
        let metrics = ClientMetrics::new(target);
        let balancer = Balancer::new(
            target,
            resolver,
            config.connect_timeout,
            config.balancer,
            config.outlier_detection.clone(),
            metrics.clone(),
            config.tls.clone(),
        );
        let budget =
            TpsBudget::new(config.retry_budget.window(), config.retry_budget.min_per_second, config.retry_budget.ratio);
        let service = ServiceBuilder::new()
            // This service's own identity on every call (`token`/`token_file`), set
            // once: retries resend the same headers.
            .layer(AttachTokenLayer::new(config.token.clone()))
            // The call's deadline first, so it bounds everything below: retries,
            // backoff, waiting for a first connection.
            .layer(Deadline::layer(config))
            // Further attempts next: hedges for the methods that have a hedging policy
            // (more attempts after a delay, the first answer wins), retries for the
            // others. Each attempt goes back through the balancer, which can then pick
            // another endpoint; one budget caps them across calls.
            .layer(Retry::layer(target, config, budget, methods, metrics.clone()))
            // One attempt on one endpoint: pick a ready, not ejected one, record the outcome.
            .service(balancer.clone());
        Self { service, target: target.to_owned(), balancer, metrics }
    }

    /// Registers this channel's counters and endpoint gauges in `metrics`:
    /// `grpc_client_attempts_total`, `grpc_client_retries_total`,
    /// `grpc_client_retry_budget_exhausted_total`, `grpc_client_ejections_total`
    /// (counters; ejections also labelled `reason`) and `grpc_client_endpoints`, `grpc_client_ejected_endpoints`
    /// (gauges), each labelled `upstream` with this channel's target.
    ///
    /// # Errors
    /// When a channel to the same upstream is already registered there.
    pub fn register_metrics(&self, metrics: &Metrics) -> prometheus::Result<()> {
        self.metrics.register(metrics)?;
        self.balancer.register_gauges(metrics, &self.target)
    }

    /// The counters and endpoint counts right now.
    pub fn stats(&self) -> ClientStats {
        let (endpoints, ejected) = self.balancer.endpoint_counts();
        ClientStats {
            attempts: self.metrics.attempts.get(),
            retries: self.metrics.retries.get(),
            budget_exhausted: self.metrics.budget_exhausted.get(),
            ejections: self.metrics.ejections_total(),
            endpoints,
            ejected,
        }
    }
}

impl Service<http::Request<Body>> for ResilientChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = DeadlineFuture<BoxFuture<'static, Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.service.call(request)
    }
}

#[cfg(test)]
mod tests;
