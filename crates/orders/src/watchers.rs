//! WatchOrder's fan-out inside one replica: one read of an order's events per change, sent to every stream watching that order.
//!
//! Without it, every watching stream read its order's events again on every change, and
//! woke for every change of any order: 5,000 watchers of 10 orders made 500 reads on a
//! pool of 10 connections and 5,000 task wake-ups per change (docs/perf.md, WatchOrder).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast::{self, error::RecvError};

use crate::{
    changes::{Change, Changes},
    order::{OrderEvent, OrderId},
    repository::OrderRepository,
};

/// Updates queued per watched order before a slow stream lags (and reads for itself).
const UPDATES_PER_ORDER: usize = 16;

/// What a watching stream hears about its order.
#[derive(Debug, Clone)]
pub enum Update {
    /// The order changed; these are all its events, read once after the change.
    Events(Arc<Vec<OrderEvent>>),
    /// Read the order's events yourself: notifications may have been missed (the LISTEN
    /// connection dropped, or this replica fell behind), or the shared read failed.
    ReadAgain,
}

/// The orders watched in this replica, each with the channel its streams listen on.
/// Cloning shares them.
#[derive(Clone)]
pub struct Watchers {
    orders: Arc<Mutex<HashMap<OrderId, broadcast::Sender<Update>>>>,
}

impl Watchers {
    /// Starts the fan-out: a task that hears every [`Change`] and, for an order some
    /// stream watches, reads its events once through `repository` and sends them to those
    /// streams. Reads run one at a time, so the task holds at most one pool connection.
    ///
    /// # Panics
    /// Outside a tokio runtime (the task is spawned on the current one).
    pub fn start(repository: OrderRepository, changes: &Changes) -> Self {
        let watchers = Self { orders: Arc::default() };
        let mut heard = changes.subscribe();
        let fan_out = watchers.clone();
        tokio::spawn(async move {
            loop {
                match heard.recv().await {
                    Ok(Change::Order(id)) => {
                        let Some(sender) = fan_out.sender(id) else { continue };
                        let update = match repository.events(id).await {
                            Ok(events) => Update::Events(Arc::new(events)),
                            Err(error) => {
                                tracing::warn!(%error, order_id = %id, "reading a watched order after a change failed; its streams read it themselves");
                                Update::ReadAgain
                            }
                        };
                        let _ = sender.send(update);
                    }
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => fan_out.tell_everyone(Update::ReadAgain),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        watchers
    }

    /// Registers a stream watching order `id`; from now on it hears every change of it.
    /// Subscribe before reading the order's history, so no change slips between the two.
    pub fn watch(&self, id: OrderId) -> Watching {
        let mut orders = self.lock();
        let updates = orders.entry(id).or_insert_with(|| broadcast::channel(UPDATES_PER_ORDER).0).subscribe();
        Watching { updates, id, watchers: self.clone() }
    }

    /// How many streams watch an order in this replica now.
    pub fn count(&self) -> usize {
        self.lock().values().map(broadcast::Sender::receiver_count).sum()
    }

    fn sender(&self, id: OrderId) -> Option<broadcast::Sender<Update>> {
        self.lock().get(&id).cloned()
    }

    fn tell_everyone(&self, update: Update) {
        for sender in self.lock().values() {
            let _ = sender.send(update.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, broadcast::Sender<Update>>> {
        // A panic while the map is held cannot leave it half-changed: use it as it is.
        self.orders.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One stream's registration with [`Watchers`]; dropping it ends the registration, and
/// the last one of an order frees the order's channel.
pub struct Watching {
    updates: broadcast::Receiver<Update>,
    id: OrderId,
    watchers: Watchers,
}

impl Watching {
    /// The next update of the watched order; a stream that fell more than
    /// 16 updates behind hears [`Update::ReadAgain`]. `None` once the fan-out has
    /// stopped (it does not while the replica runs).
    pub async fn next(&mut self) -> Option<Update> {
        match self.updates.recv().await {
            Ok(update) => Some(update),
            Err(RecvError::Lagged(_)) => Some(Update::ReadAgain),
            Err(RecvError::Closed) => None,
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut orders = self.watchers.lock();
        // Under the lock no stream can subscribe: this receiver being the last one
        // means the order is no longer watched here.
        if orders.get(&self.id).is_some_and(|sender| sender.receiver_count() <= 1) {
            orders.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::repository::embedded::{self, stored_order};

    /// Upper bound for what should happen at once: a guard against a hung test, not a wait.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// The fan-out over an in-memory SQLite database holding `orders` new orders.
    async fn fan_out(orders: usize) -> (Watchers, Changes, Vec<OrderId>) {
        let (repository, changes) = embedded::repository().await;
        let mut ids = Vec::new();
        for _ in 0..orders {
            ids.push(stored_order(&repository).await.id);
        }
        (Watchers::start(repository, &changes), changes, ids)
    }

    async fn next(watching: &mut Watching) -> Update {
        tokio::time::timeout(PATIENCE, watching.next()).await.expect("an update in time").expect("the fan-out runs")
    }

    #[tokio::test]
    async fn a_stream_that_falls_more_than_sixteen_updates_behind_hears_read_again_then_the_updates_still_queued() {
        let (watchers, changes, ids) = fan_out(1).await;
        let mut slow = watchers.watch(ids[0]);
        let mut keeping_up = watchers.watch(ids[0]);
        for _ in 0..UPDATES_PER_ORDER + 1 {
            changes.committed(ids[0]);
            // One change at a time: the stream that keeps up hears each before the next.
            assert!(matches!(next(&mut keeping_up).await, Update::Events(events) if events.len() == 1));
        }
        assert!(matches!(next(&mut slow).await, Update::ReadAgain), "the slow stream missed an update");
        assert!(matches!(next(&mut slow).await, Update::Events(_)), "then it hears what is still queued");
    }

    #[tokio::test]
    async fn a_resync_tells_every_stream_of_every_order_to_read_again_and_a_change_only_that_orders_streams() {
        let (watchers, changes, ids) = fan_out(2).await;
        let mut first = watchers.watch(ids[0]);
        let mut second = watchers.watch(ids[1]);
        changes.resync();
        assert!(matches!(next(&mut first).await, Update::ReadAgain));
        assert!(matches!(next(&mut second).await, Update::ReadAgain));

        changes.committed(ids[1]);
        assert!(matches!(next(&mut second).await, Update::Events(events) if events[0].order_id == ids[1]));
        changes.resync();
        // The first stream's next update is the resync: the change of the other order never reached it.
        assert!(matches!(next(&mut first).await, Update::ReadAgain));
    }

    #[tokio::test]
    async fn the_last_stream_of_an_order_leaving_frees_the_orders_channel() {
        let (watchers, _changes, ids) = fan_out(1).await;
        let one = watchers.watch(ids[0]);
        let other = watchers.watch(ids[0]);
        assert_eq!(watchers.count(), 2);
        drop(one);
        assert_eq!((watchers.count(), watchers.lock().len()), (1, 1));
        drop(other);
        assert_eq!((watchers.count(), watchers.lock().len()), (0, 0));
    }
}
