//! Client side of service-to-service calls: a channel that round-robins over the
//! endpoints a resolver publishes, and per-call deadlines.
//!
//! The endpoint source is pluggable: anything that publishes the current endpoint set
//! into a [`tokio::sync::watch`] channel. [`fixed`] is the static list from config;
//! a registry watcher (Consul, DNS) publishes into the same kind of channel.

use std::{
    error::Error as StdError,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::Uri;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::{
    Status,
    body::Body,
    transport::{Channel, Endpoint},
};
use tower::{Service, ServiceExt};

/// The error type of [`RoundRobin`]: a boxed transport error or a [`Status`].
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How a service reaches one of its upstreams.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Upstream addresses as `http://host:port`, used in turn (round-robin).
    pub endpoints: Vec<String>,
    /// Deadline of every call, e.g. `"1s"`: sent as `grpc-timeout` and enforced here.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long to wait for a TCP connection to an endpoint, e.g. `"500ms"`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// A config with the given endpoints, a 1 s deadline and a 500 ms connect timeout.
    pub fn with_endpoints(endpoints: Vec<String>) -> Self {
        Self { endpoints, timeout: Duration::from_secs(1), connect_timeout: Duration::from_millis(500) }
    }

    /// The endpoints, parsed.
    ///
    /// # Errors
    /// The first endpoint that is not an absolute `http://host:port` URI, with `key`
    /// (the config key of this client, e.g. `users.endpoints`) in the message.
    pub fn endpoint_uris(&self, key: &str) -> Result<Vec<Uri>, String> {
        self.endpoints
            .iter()
            .map(|endpoint| match endpoint.parse::<Uri>() {
                Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => Ok(uri),
                _ => Err(format!("invalid config key `{key}`: {endpoint:?} is not an http://host:port address")),
            })
            .collect()
    }
}

/// A resolver that always answers `endpoints`: the static list from config.
pub fn fixed(endpoints: Vec<Uri>) -> watch::Receiver<Vec<Uri>> {
    watch::channel(endpoints).1
}

/// A gRPC channel over many endpoints that sends each call to the next one in turn.
///
/// Channels to endpoints are created lazily (connected on first use) and kept while
/// the resolver still lists them; when the resolver publishes a new set, dropped
/// endpoints stop getting new calls and their in-flight calls finish.
/// Cloning is cheap and clones share the rotation.
#[derive(Clone)]
pub struct RoundRobin {
    shared: Arc<Shared>,
}

struct Shared {
    target: String,
    connect_timeout: Duration,
    resolver: Mutex<watch::Receiver<Vec<Uri>>>,
    pool: Mutex<Vec<(Uri, Channel)>>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// A balancer for `target` (a name for error messages, e.g. `users`) over the
    /// endpoints `resolver` publishes.
    pub fn new(target: impl Into<String>, resolver: watch::Receiver<Vec<Uri>>, connect_timeout: Duration) -> Self {
        let shared = Shared {
            target: target.into(),
            connect_timeout,
            resolver: Mutex::new(resolver),
            pool: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        };
        shared.refresh(true);
        Self { shared: Arc::new(shared) }
    }

    fn pick(&self) -> Option<Channel> {
        self.shared.refresh(false);
        let pool = self.shared.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.is_empty() {
            return None;
        }
        let index = self.shared.next.fetch_add(1, Ordering::Relaxed) % pool.len();
        Some(pool[index].1.clone())
    }
}

impl Shared {
    /// Takes the resolver's latest endpoint set if it changed (or `force`).
    fn refresh(&self, force: bool) {
        let mut resolver = self.resolver.lock().unwrap_or_else(PoisonError::into_inner);
        // A closed resolver (e.g. `fixed`) keeps its last value: nothing new to take.
        if !force && !resolver.has_changed().unwrap_or(false) {
            return;
        }
        let wanted = resolver.borrow_and_update().clone();
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = Vec::with_capacity(wanted.len());
        for uri in wanted {
            let channel = match pool.iter().position(|(known, _)| *known == uri) {
                Some(index) => pool.swap_remove(index).1,
                None => Endpoint::from(uri.clone()).connect_timeout(self.connect_timeout).connect_lazy(),
            };
            next.push((uri, channel));
        }
        tracing::debug!(target_service = %self.target, endpoints = next.len(), "endpoint set updated");
        *pool = next;
    }
}

impl Service<http::Request<Body>> for RoundRobin {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per endpoint; it is awaited in `call` once one is picked.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let picked = self.pick();
        let target = self.shared.target.clone();
        Box::pin(async move {
            let Some(channel) = picked else {
                return Err(Status::unavailable(format!("no endpoints for {target}")).into());
            };
            channel.oneshot(request).await.map_err(Into::into)
        })
    }
}

/// Runs `call` under `timeout`: the deadline travels as `grpc-timeout` (so the server
/// stops working on an abandoned call) and is also enforced here, so a hung connection
/// cannot hold the caller past it.
///
/// # Errors
/// The call's own [`Status`], or DEADLINE_EXCEEDED when `timeout` passes first.
pub async fn with_deadline<T, R, F, Fut>(message: T, timeout: Duration, call: F) -> Result<R, Status>
where
    F: FnOnce(tonic::Request<T>) -> Fut,
    Fut: Future<Output = Result<R, Status>>,
{
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    match tokio::time::timeout(timeout, call(request)).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!("no answer within {} ms", timeout.as_millis()))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use api::users::v1::{
        GetUserByEmailRequest, GetUserByEmailResponse,
        user_service_client::UserServiceClient,
        user_service_server::{UserService, UserServiceServer},
    };
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Code, Request, Response};

    use super::*;

    /// A users service that only counts the calls it gets.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    #[tonic::async_trait]
    impl UserService for Counting {
        async fn create_user(
            &self,
            _: Request<api::users::v1::CreateUserRequest>,
        ) -> Result<Response<api::users::v1::CreateUserResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn get_user(
            &self,
            _: Request<api::users::v1::GetUserRequest>,
        ) -> Result<Response<api::users::v1::GetUserResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn get_user_by_email(
            &self,
            _: Request<GetUserByEmailRequest>,
        ) -> Result<Response<GetUserByEmailResponse>, Status> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(GetUserByEmailResponse { user: None }))
        }
    }

    async fn serve_counting() -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let uri = format!("http://{}", listener.local_addr().expect("addr")).parse().expect("uri");
        let service = Counting::default();
        let count = service.0.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(UserServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (uri, count)
    }

    async fn call(client: &mut UserServiceClient<RoundRobin>) -> Result<(), Status> {
        client.get_user_by_email(GetUserByEmailRequest { email: "a@example.com".into() }).await.map(|_| ())
    }

    #[tokio::test]
    async fn calls_alternate_over_the_endpoints() {
        let (a, count_a) = serve_counting().await;
        let (b, count_b) = serve_counting().await;
        let mut client = UserServiceClient::new(RoundRobin::new("users", fixed(vec![a, b]), Duration::from_secs(1)));
        for _ in 0..10 {
            call(&mut client).await.expect("the call succeeds");
        }
        assert_eq!((count_a.load(Ordering::SeqCst), count_b.load(Ordering::SeqCst)), (5, 5));
    }

    #[tokio::test]
    async fn a_new_endpoint_set_takes_effect_on_the_next_call() {
        let (a, count_a) = serve_counting().await;
        let (b, count_b) = serve_counting().await;
        let (publish, resolver) = watch::channel(vec![a]);
        let mut client = UserServiceClient::new(RoundRobin::new("users", resolver, Duration::from_secs(1)));
        call(&mut client).await.expect("a answers");
        publish.send(vec![b]).expect("the balancer listens");
        for _ in 0..3 {
            call(&mut client).await.expect("b answers");
        }
        assert_eq!((count_a.load(Ordering::SeqCst), count_b.load(Ordering::SeqCst)), (1, 3));
    }

    #[tokio::test]
    async fn no_endpoints_is_unavailable_naming_the_target() {
        let mut client = UserServiceClient::new(RoundRobin::new("users", fixed(vec![]), Duration::from_secs(1)));
        let status = call(&mut client).await.expect_err("nowhere to send it");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("users"), "{}", status.message());
    }

    #[test]
    fn endpoints_must_be_absolute_http_addresses_and_errors_name_the_key() {
        let config = ClientConfig::with_endpoints(vec!["http://127.0.0.1:1".into(), "localhost".into()]);
        let error = config.endpoint_uris("users.endpoints").expect_err("no scheme");
        assert!(error.contains("users.endpoints") && error.contains("localhost"), "{error}");
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_deadline_exceeded() {
        let status = with_deadline((), Duration::from_millis(10), |_| std::future::pending::<Result<(), Status>>())
            .await
            .expect_err("never answers");
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }
}
