//! Change notifications: which orders changed, on this replica or on another one
//! (PostgreSQL LISTEN/NOTIFY), so WatchOrder streams follow every replica's writes.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::{sync::broadcast, task::JoinHandle};

use crate::order::OrderId;

/// The PostgreSQL notification channel; the payload is the changed order's id.
pub const CHANNEL: &str = "order_changes";

/// One notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This order changed: read its events again.
    Order(OrderId),
    /// Notifications may have been missed (the LISTEN connection dropped): every
    /// watcher should read its order again.
    Resync,
}

/// A fan-out of [`Change`]s inside this process; WatchOrder's streams hear them through
/// the one subscriber of `watchers.rs`.
#[derive(Clone)]
pub struct Changes {
    sender: broadcast::Sender<Change>,
    via_postgres: bool,
}

impl Changes {
    /// Changes seen only inside this process: for SQLite, where one orders process
    /// owns the file.
    pub fn local() -> Self {
        Self { sender: broadcast::channel(1024).0, via_postgres: false }
    }

    /// Changes from every replica: LISTENs on [`CHANNEL`] at the PostgreSQL `url`
    /// and forwards each notification, reconnecting (and sending [`Change::Resync`])
    /// when the connection drops.
    ///
    /// # Errors
    /// When the first LISTEN connection fails.
    pub async fn listen(url: &str) -> Result<(Self, JoinHandle<()>), sqlx::Error> {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        let changes = Self { sender: broadcast::channel(1024).0, via_postgres: true };
        let sender = changes.sender.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => match OrderId::parse(notification.payload()) {
                        Ok(id) => {
                            let _ = sender.send(Change::Order(id));
                        }
                        Err(_) => tracing::warn!(payload = notification.payload(), "ignoring a malformed notification"),
                    },
                    Ok(None) => {
                        tracing::warn!("LISTEN connection lost; reconnecting");
                        let _ = sender.send(Change::Resync);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN reconnect failed; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok((changes, task))
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    /// Whether writers must `pg_notify` within their write (PostgreSQL: in the same
    /// statement or transaction, so it is delivered only if the write commits) rather
    /// than call [`Changes::committed`].
    pub fn via_postgres(&self) -> bool {
        self.via_postgres
    }

    /// Tells every watcher to read its order again, as a lost LISTEN connection does.
    #[cfg(test)]
    pub(crate) fn resync(&self) {
        let _ = self.sender.send(Change::Resync);
    }

    /// Announces a committed change of order `id` to this process's watchers, when
    /// there is no LISTEN/NOTIFY to do it.
    pub fn committed(&self, id: OrderId) {
        if !self.via_postgres {
            let _ = self.sender.send(Change::Order(id));
        }
    }
}
