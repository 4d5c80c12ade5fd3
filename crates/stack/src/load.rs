//! Steady CreateOrder traffic for the system tests: the calls that must all succeed
//! while a test kills, restarts or ejects what is behind orders.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use api::orders::v1::{CreateOrderRequest, ListOrdersRequest, order_service_client::OrderServiceClient};
use tokio::{sync::watch, task::JoinHandle};
use tonic::client::GrpcService;

use crate::Service;

/// What a generated client's channel may fail with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The deadline of each call the load makes.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// CreateOrder calls from several gRPC clients, one call at a time each, every call
/// with a fresh idempotency key, until [`OrderLoad::stop`]. Failed calls are kept as
/// `"<code>: <message>"` lines.
pub struct OrderLoad {
    stop: Arc<AtomicBool>,
    /// Calls that succeeded so far; watched to wait for progress.
    succeeded: watch::Receiver<usize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl OrderLoad {
    /// Starts the clients against `orders`, ordering for the existing user `customer`,
    /// each over a connection of its own with no retries: every failure of orders counts.
    ///
    /// # Errors
    /// When a client cannot connect to orders.
    pub async fn start(orders: &Service, customer: &str, concurrency: usize) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..concurrency {
            clients.push(OrderServiceClient::connect(orders.address.clone()).await?);
        }
        Ok(Self::with_clients(clients, customer))
    }

    /// Starts one task per generated client of `clients` (e.g. over a
    /// `platform::client::ResilientChannel` that retries and balances, as a caller of
    /// several orders replicas would), ordering for the existing user `customer`. Each
    /// call also sends its idempotency key as the `idempotency-key` header, which tells
    /// a retrying channel that the call may be retried.
    pub fn with_clients<T>(clients: Vec<OrderServiceClient<T>>, customer: &str) -> Self
    where
        T: GrpcService<tonic::body::Body> + Send + 'static,
        T::Error: Into<BoxError>,
        T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
        T::Future: Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (count, succeeded) = watch::channel(0usize);
        let count = Arc::new(count);
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for mut client in clients {
            let (stop, count, failures, customer) =
                (stop.clone(), count.clone(), failures.clone(), customer.to_owned());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let key = uuid::Uuid::new_v4().to_string();
                    let mut request = tonic::Request::new(CreateOrderRequest {
                        customer_email: customer.clone(),
                        total_cents: 100,
                        currency: "USD".to_owned(),
                        idempotency_key: key.clone(),
                    });
                    request.set_timeout(CALL_TIMEOUT);
                    if let Ok(value) = key.parse() {
                        request.metadata_mut().insert("idempotency-key", value);
                    }
                    match client.create_order(request).await {
                        Ok(_) => count.send_modify(|n| *n += 1),
                        Err(status) => {
                            let failure = format!("{:?}: {}", status.code(), status.message());
                            failures.lock().unwrap_or_else(|e| e.into_inner()).push(failure);
                        }
                    }
                }
            }));
        }
        Self { stop, succeeded, failures, tasks }
    }

    /// How many calls have succeeded so far.
    pub fn succeeded(&self) -> usize {
        *self.succeeded.borrow()
    }

    /// Returns once `more` calls have succeeded since this was called.
    ///
    /// # Errors
    /// When that takes longer than `patience` (a guard against a hung test, not a
    /// wait), naming the failures so far.
    pub async fn wait_for_more(&self, more: usize, patience: Duration) -> anyhow::Result<()> {
        let target = self.succeeded() + more;
        let mut succeeded = self.succeeded.clone();
        match tokio::time::timeout(patience, succeeded.wait_for(|n| *n >= target)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => anyhow::bail!("the load stopped"),
            Err(_) => anyhow::bail!("{more} more calls did not succeed in time; failures: {:?}", self.failures()),
        }
    }

    /// The calls that failed so far.
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the clients after their current call; returns (succeeded, failures).
    ///
    /// # Errors
    /// When a client task panicked.
    pub async fn stop(mut self) -> anyhow::Result<(usize, Vec<String>)> {
        self.stop.store(true, Ordering::SeqCst);
        for task in std::mem::take(&mut self.tasks) {
            task.await?;
        }
        Ok((self.succeeded(), self.failures()))
    }
}

/// How many orders `customer` has in `orders`' database, by paging ListOrders: with one
/// order per successful call, what tells a duplicate apart.
///
/// # Errors
/// When orders cannot be reached or a page fails.
pub async fn orders_stored(orders: &Service, customer: &str) -> anyhow::Result<usize> {
    orders_stored_at(&orders.address, customer).await
}

/// As [`orders_stored`], for the orders replica at `address` (`http://HOST:PORT`); an
/// empty `customer` counts every order.
///
/// # Errors
/// When orders cannot be reached or a page fails.
pub async fn orders_stored_at(address: &str, customer: &str) -> anyhow::Result<usize> {
    let mut client = OrderServiceClient::connect(address.to_owned()).await?;
    let mut count = 0;
    let mut page_token = String::new();
    loop {
        let request = ListOrdersRequest { page_size: 1000, customer_email: customer.to_owned(), page_token };
        let mut stream = client.list_orders(request).await?.into_inner();
        page_token = String::new();
        while let Some(message) = stream.message().await? {
            count += 1;
            page_token = message.next_page_token;
        }
        if page_token.is_empty() {
            return Ok(count);
        }
    }
}
