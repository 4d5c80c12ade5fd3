//! The orders use cases the gRPC layer calls (`Orders`), and their inputs and outputs.

use platform::email::Email;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    changes::Changes,
    order::{Cents, Currency, Error, IdempotencyKey, Order, OrderEvent, OrderId, OrderStatus},
    page_token::PageTokens,
    repository::{Inserted, OrderRepository},
    users_client::UsersClient,
    watchers::{Update, Watchers},
};

/// What it takes to place an order: already-parsed fields.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Who orders; must be a user.
    pub customer: Email,
    /// How much.
    pub total: Cents,
    /// In which currency.
    pub currency: Currency,
    /// Makes a retried request create one order.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Order {
    /// Whether `new` asks for the same order as this one (the idempotency check).
    fn same_request(&self, new: &NewOrder) -> bool {
        self.customer == new.customer && self.total == new.total && self.currency == new.currency
    }
}

/// Which orders to list.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only this customer's orders, or everyone's.
    pub customer: Option<Email>,
    /// Orders per page, after defaults and limits.
    pub page_size: u32,
    /// The opaque token of the previous page, if any.
    pub page_token: Option<String>,
}

/// One page of orders.
#[derive(Debug, Clone)]
pub struct Page {
    /// The orders, oldest first.
    pub orders: Vec<Order>,
    /// Token for the next page; `None` when this page is the last.
    pub next_page_token: Option<String>,
}

/// The orders use cases.
#[derive(Clone)]
pub struct Orders {
    repository: OrderRepository,
    users: UsersClient,
    tokens: PageTokens,
    watchers: Watchers,
}

impl Orders {
    /// Use cases over their collaborators; starts WatchOrder's fan-out of `changes`
    /// ([`Watchers::start`]).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(repository: OrderRepository, users: UsersClient, tokens: PageTokens, changes: &Changes) -> Self {
        let watchers = Watchers::start(repository.clone(), changes);
        Self { repository, users, tokens, watchers }
    }

    /// Places `new`, or with a known idempotency key returns the order it placed first.
    ///
    /// # Errors
    /// [`Error::KeyReused`] for a known key with other fields; [`Error::UnknownCustomer`];
    /// [`Error::UsersUnavailable`]; storage errors.
    pub async fn create(&self, new: NewOrder) -> Result<Order, Error> {
        // A replay answers from our own table, without asking users again.
        if let Some(key) = &new.idempotency_key
            && let Some(first) = self.repository.by_idempotency_key(key).await?
        {
            return replay(first, &new, key);
        }
        if !self.users.exists(&new.customer).await? {
            return Err(Error::UnknownCustomer(new.customer));
        }
        let order = Order {
            id: OrderId::generate(),
            customer: new.customer.clone(),
            total: new.total,
            currency: new.currency,
            status: OrderStatus::Created,
            // At storage precision: what create returns equals what a later read returns.
            created_at: OrderRepository::now(),
        };
        match self.repository.insert(&order, new.idempotency_key.as_ref()).await? {
            Inserted::New => Ok(order),
            // A concurrent request with the same key won the race.
            Inserted::KeyTaken(first) => replay(first, &new, new.idempotency_key.as_ref().expect("only keys conflict")),
        }
    }

    /// The order with `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; storage errors.
    pub async fn get(&self, id: OrderId) -> Result<Order, Error> {
        self.repository.get(id).await?.ok_or(Error::NotFound)
    }

    /// One page of orders, oldest first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `page_token` for a token that was altered or
    /// issued for another filter; storage errors.
    pub async fn list(&self, query: ListQuery) -> Result<Page, Error> {
        let customer = query.customer.as_ref();
        let after = match &query.page_token {
            Some(token) => Some(self.tokens.verify(token, customer)?),
            None => None,
        };
        let mut orders = self.repository.list(customer, after, query.page_size + 1).await?;
        let more = orders.len() > query.page_size as usize;
        orders.truncate(query.page_size as usize);
        let next_page_token = match orders.last() {
            Some(last) if more => Some(self.tokens.issue(last.id, customer)),
            _ => None,
        };
        Ok(Page { orders, next_page_token })
    }

    /// Moves order `id` to `to`. Asking for the status it already has returns it
    /// unchanged, so the call is safe to retry.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::WrongStatus`]; storage errors.
    pub async fn advance(&self, id: OrderId, to: OrderStatus) -> Result<Order, Error> {
        let Some(required) = to.predecessor() else {
            return Err(Error::Internal(anyhow::anyhow!("no transition leads to {to}")));
        };
        if let Some(order) = self.repository.transition(id, required, to, OrderRepository::now()).await? {
            return Ok(order);
        }
        let current = self.get(id).await?;
        if current.status == to {
            Ok(current)
        } else {
            Err(Error::WrongStatus { current: current.status, required, wanted: to })
        }
    }

    /// The events of order `id`: those that already happened, then each new one as it
    /// happens on any replica. The stream ends after DELIVERED, when the receiver is
    /// dropped (the client cancelled), or with an error if storage fails.
    ///
    /// # Errors
    /// [`Error::NotFound`]; storage errors (before the stream starts).
    pub async fn watch(&self, id: OrderId) -> Result<ReceiverStream<Result<OrderEvent, Error>>, Error> {
        // Register before the first read, so no change can slip between the two.
        let mut watching = self.watchers.watch(id);
        let history = self.repository.events(id).await?;
        if history.is_empty() {
            return Err(Error::NotFound);
        }
        let (sender, receiver) = mpsc::channel(8);
        let repository = self.repository.clone();
        tokio::spawn(async move {
            let mut pending = history;
            let mut reached = None;
            loop {
                for event in pending.drain(..) {
                    if Some(event.reached) <= reached {
                        continue;
                    }
                    reached = Some(event.reached);
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if reached == Some(OrderStatus::Delivered) {
                    return;
                }
                let update = tokio::select! {
                    () = sender.closed() => return,
                    update = watching.next() => match update {
                        Some(update) => update,
                        None => return,
                    },
                };
                pending = match update {
                    Update::Events(events) => events.to_vec(),
                    Update::ReadAgain => match repository.events(id).await {
                        Ok(events) => events,
                        Err(error) => {
                            let _ = sender.send(Err(error)).await;
                            return;
                        }
                    },
                };
            }
        });
        Ok(ReceiverStream::new(receiver))
    }

    /// How many WatchOrder streams this replica serves now.
    pub fn watchers(&self) -> usize {
        self.watchers.count()
    }
}

/// The answer to a request whose idempotency key names order `first`.
fn replay(first: Order, new: &NewOrder, key: &IdempotencyKey) -> Result<Order, Error> {
    if first.same_request(new) { Ok(first) } else { Err(Error::KeyReused(key.as_str().to_owned())) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use platform::{
        client::{self, ClientConfig},
        observability::metrics::Metrics,
    };
    use tokio_stream::StreamExt;

    use super::*;
    use crate::repository::embedded::{self, stored_order};

    /// Use cases over an in-memory SQLite database (the embedded path) and a users
    /// client with no endpoints (these tests never reach it).
    async fn embedded_orders() -> (Orders, OrderRepository) {
        let (repository, changes) = embedded::repository().await;
        let channel = client::channel("users", &ClientConfig::with_endpoints(vec![]), None, &Metrics::new(), &[])
            .expect("an empty descriptor set decodes");
        let users = UsersClient::new(channel);
        let orders = Orders::new(repository.clone(), users, PageTokens::new("k"), &changes);
        (orders, repository)
    }

    #[tokio::test]
    async fn on_sqlite_a_watch_follows_local_changes_to_delivery() {
        let (orders, repository) = embedded_orders().await;
        let order = stored_order(&repository).await;
        let mut events = orders.watch(order.id).await.expect("the order exists");
        assert_eq!(events.next().await.map(|e| e.expect("no error").reached), Some(OrderStatus::Created));
        orders.advance(order.id, OrderStatus::Shipped).await.expect("shipped");
        assert_eq!(events.next().await.map(|e| e.expect("no error").reached), Some(OrderStatus::Shipped));
        orders.advance(order.id, OrderStatus::Delivered).await.expect("delivered");
        assert_eq!(events.next().await.map(|e| e.expect("no error").reached), Some(OrderStatus::Delivered));
        assert!(events.next().await.is_none(), "the stream ends after delivery");
    }

    #[tokio::test]
    async fn many_watchers_of_one_order_each_see_every_change_and_other_orders_are_not_theirs() {
        let (orders, repository) = embedded_orders().await;
        let watched = stored_order(&repository).await;
        let other = stored_order(&repository).await;
        let mut streams = Vec::new();
        for _ in 0..20 {
            let mut events = orders.watch(watched.id).await.expect("the order exists");
            assert_eq!(events.next().await.map(|e| e.expect("no error").reached), Some(OrderStatus::Created));
            streams.push(events);
        }
        assert_eq!(orders.watchers(), 20);
        orders.advance(other.id, OrderStatus::Shipped).await.expect("the other order shipped");
        orders.advance(watched.id, OrderStatus::Shipped).await.expect("shipped");
        orders.advance(watched.id, OrderStatus::Delivered).await.expect("delivered");
        for events in &mut streams {
            let seen: Vec<_> = events.map(|e| e.expect("no error")).collect().await;
            assert!(seen.iter().all(|e| e.order_id == watched.id), "{seen:?}");
            let reached: Vec<_> = seen.iter().map(|e| e.reached).collect();
            assert_eq!(reached, [OrderStatus::Shipped, OrderStatus::Delivered]);
        }
        drop(streams);
        no_watchers_left(&orders).await;
    }

    #[tokio::test]
    async fn a_watch_unsubscribes_when_its_client_goes_away() {
        let (orders, repository) = embedded_orders().await;
        let order = stored_order(&repository).await;
        let mut events = orders.watch(order.id).await.expect("the order exists");
        events.next().await.expect("the created event").expect("no error");
        assert_eq!(orders.watchers(), 1);
        drop(events);
        // The watch task notices the closed stream and drops its subscription.
        no_watchers_left(&orders).await;
    }

    /// Waits (10 s at most) until no stream watches an order: each watch task notices its
    /// closed stream and ends its registration.
    async fn no_watchers_left(orders: &Orders) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while orders.watchers() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("every watcher unsubscribes");
    }
}
