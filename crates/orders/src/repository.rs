//! Storage of orders and their events over sqlx; the same SQL runs on PostgreSQL and SQLite.

use std::time::SystemTime;

use platform::{
    database::{Database, InSpan, StorageFailure, from_micros, to_micros},
    email::Email,
};
use sqlx::{Acquire, Any, FromRow, Transaction, any::AnyArguments, query::Query};

use crate::{
    changes::{CHANNEL, Changes},
    order::{Cents, Currency, Error, IdempotencyKey, Order, OrderEvent, OrderId, OrderStatus},
};

/// The embedded migrations of the orders database (`crates/orders/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const ORDER_COLUMNS: &str = "id, customer_email, total_cents, currency, status, created_at";

/// The outcome of [`OrderRepository::insert`].
#[derive(Debug)]
pub enum Inserted {
    /// The order was stored.
    New,
    /// Its idempotency key already names this (earlier) order; nothing was stored.
    KeyTaken(Order),
}

/// Reads and writes the `orders` and `order_events` tables, and announces changes.
#[derive(Clone)]
pub struct OrderRepository {
    db: Database,
    changes: Changes,
}

#[derive(FromRow)]
struct OrderRow {
    id: String,
    customer_email: String,
    total_cents: i64,
    currency: String,
    status: i64,
    created_at: i64,
}

#[derive(FromRow)]
struct EventRow {
    order_id: String,
    status: i64,
    occurred_at: i64,
}

impl OrderRepository {
    /// A query's `error` as ours, the database's health probe told of it first
    /// ([`Database::noticed`]). Not for `acquire`'s errors: it tells the probe itself.
    fn failed(&self, error: sqlx::Error) -> Error {
        storage_error(self.db.noticed(error))
    }

    /// A repository over `db` (migrated with [`MIGRATOR`]) that announces writes on `changes`.
    pub fn new(db: Database, changes: Changes) -> Self {
        Self { db, changes }
    }

    /// The current time at the precision this repository stores (whole microseconds
    /// since the Unix epoch), so an order built with it equals the order read back.
    pub fn now() -> SystemTime {
        from_micros(to_micros(SystemTime::now()))
    }

    /// Stores `order` (status CREATED) and its CREATED event, unless `key` already
    /// names an order. Concurrent inserts with one key store exactly one order.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Aborted`] or [`Error::Internal`].
    pub async fn insert(&self, order: &Order, key: Option<&IdempotencyKey>) -> Result<Inserted, Error> {
        if self.changes.via_postgres() {
            return self.insert_in_one_statement(order, key).await;
        }
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        let mut tx = conn.begin().await.map_err(|e| self.failed(e))?;
        let stored = with_order(
            "INSERT INTO orders (id, customer_email, total_cents, currency, status, created_at, updated_at, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING",
            order,
            key,
        )
        .execute(&mut *tx)
        .in_span(self.db.span("INSERT", "orders"))
        .await
        .map_err(|e| self.failed(e))?
        .rows_affected();
        if stored == 0 {
            tx.rollback().await.map_err(|e| self.failed(e))?;
            // Back to the pool before the next query takes one (a pool of one would deadlock).
            drop(conn);
            return self.key_taken(key).await;
        }
        self.record_event(&mut tx, order.id, order.status, order.created_at).await?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        self.changes.committed(order.id);
        Ok(Inserted::New)
    }

    /// [`OrderRepository::insert`] on PostgreSQL: the order, its CREATED event and the
    /// change NOTIFY in one statement (data-modifying `WITH`), so one round trip where the
    /// transaction takes four (BEGIN, two INSERTs, COMMIT). A statement is atomic on its
    /// own; an idempotency key already taken inserts nothing and notifies no one.
    async fn insert_in_one_statement(&self, order: &Order, key: Option<&IdempotencyKey>) -> Result<Inserted, Error> {
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        let stored = with_order(
            "WITH stored AS (\
                INSERT INTO orders (id, customer_email, total_cents, currency, status, created_at, updated_at, idempotency_key) \
                VALUES ($1, $2, $3, $4, $5, $6, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING \
                RETURNING id, status, created_at) \
             INSERT INTO order_events (order_id, status, occurred_at) SELECT id, status, created_at FROM stored \
             RETURNING pg_notify($8, order_id)",
            order,
            key,
        )
        .bind(CHANNEL)
        .execute(&mut *conn)
        .in_span(self.db.span("INSERT", "orders"))
        .await
        .map_err(|e| self.failed(e))?
        .rows_affected();
        drop(conn);
        if stored == 0 {
            return self.key_taken(key).await;
        }
        Ok(Inserted::New)
    }

    /// The order idempotency key `key` already names, after an insert with it stored nothing.
    async fn key_taken(&self, key: Option<&IdempotencyKey>) -> Result<Inserted, Error> {
        let key = key.ok_or_else(|| Error::Internal(anyhow::anyhow!("insert without a key stored nothing")))?;
        let first = self.by_idempotency_key(key).await?;
        first
            .map(Inserted::KeyTaken)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("conflicting idempotency key vanished")))
    }

    /// Moves order `id` from `from` to `to` and records the event, in one transaction.
    /// `None` when the order does not exist or is not in status `from`.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Aborted`] or [`Error::Internal`].
    pub async fn transition(
        &self,
        id: OrderId,
        from: OrderStatus,
        to: OrderStatus,
        at: SystemTime,
    ) -> Result<Option<Order>, Error> {
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        let mut tx = conn.begin().await.map_err(|e| self.failed(e))?;
        let moved = sqlx::query("UPDATE orders SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(to.number())
            .bind(to_micros(at))
            .bind(id.to_string())
            .bind(from.number())
            .execute(&mut *tx)
            .in_span(self.db.span("UPDATE", "orders"))
            .await
            .map_err(|e| self.failed(e))?
            .rows_affected();
        if moved == 0 {
            tx.rollback().await.map_err(|e| self.failed(e))?;
            return Ok(None);
        }
        self.record_event(&mut tx, id, to, at).await?;
        let order = sqlx::query_as::<_, OrderRow>(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .in_span(self.db.span("SELECT", "orders"))
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        self.changes.committed(id);
        order.try_into().map(Some)
    }

    /// The order with `id`, if any.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Aborted`] or [`Error::Internal`].
    pub async fn get(&self, id: OrderId) -> Result<Option<Order>, Error> {
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        let row = sqlx::query_as::<_, OrderRow>(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .in_span(self.db.span("SELECT", "orders"))
            .await
            .map_err(|e| self.failed(e))?;
        row.map(Order::try_from).transpose()
    }

    /// The order an idempotency key names, if any.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Aborted`] or [`Error::Internal`].
    pub async fn by_idempotency_key(&self, key: &IdempotencyKey) -> Result<Option<Order>, Error> {
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        let row =
            sqlx::query_as::<_, OrderRow>(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE idempotency_key = $1"))
                .bind(key.as_str())
                .fetch_optional(&mut *conn)
                .in_span(self.db.span("SELECT", "orders"))
                .await
                .map_err(|e| self.failed(e))?;
        row.map(Order::try_from).transpose()
    }

    /// Up to `limit` orders after order `after` (by id, which is creation order),
    /// optionally only `customer`'s.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Aborted`] or [`Error::Internal`].
    pub async fn list(
        &self,
        customer: Option<&Email>,
        after: Option<OrderId>,
        limit: u32,
    ) -> Result<Vec<Order>, Error> {
        // Placeholders are numbered by hand: the Any driver's query builder writes `?`,
        // which PostgreSQL does not accept.
        let mut sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1");
        let mut binds = Vec::new();
        if let Some(customer) = customer {
            binds.push(customer.to_string());
            sql.push_str(&format!(" AND customer_email = ${}", binds.len()));
        }
        if let Some(after) = after {
            binds.push(after.to_string());
            sql.push_str(&format!(" AND id > ${}", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", binds.len() + 1));
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        let query = binds.into_iter().fold(sqlx::query_as::<_, OrderRow>(&sql), |query, value| query.bind(value));
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .in_span(self.db.span("SELECT", "orders"))
            .await
            .map_err(|e| self.failed(e))?;
        rows.into_iter().map(Order::try_from).collect()
    }

    /// The events of order `id`, in the order they happened; empty when there is no such order.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Aborted`] or [`Error::Internal`].
    pub async fn events(&self, id: OrderId) -> Result<Vec<OrderEvent>, Error> {
        let mut conn = self.db.acquire().await.map_err(storage_error)?;
        let rows = sqlx::query_as::<_, EventRow>(
            "SELECT order_id, status, occurred_at FROM order_events WHERE order_id = $1 ORDER BY status",
        )
        .bind(id.to_string())
        .fetch_all(&mut *conn)
        .in_span(self.db.span("SELECT", "order_events"))
        .await
        .map_err(|e| self.failed(e))?;
        rows.into_iter().map(OrderEvent::try_from).collect()
    }

    async fn record_event(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: OrderId,
        reached: OrderStatus,
        at: SystemTime,
    ) -> Result<(), Error> {
        // On PostgreSQL the NOTIFY rides on the INSERT (one round trip, not two), and is
        // delivered to every replica's LISTEN when, and only if, the transaction commits.
        let notify = self.changes.via_postgres();
        let statement = if notify {
            "INSERT INTO order_events (order_id, status, occurred_at) VALUES ($1, $2, $3) RETURNING pg_notify($4, $5)"
        } else {
            "INSERT INTO order_events (order_id, status, occurred_at) VALUES ($1, $2, $3)"
        };
        let mut query = sqlx::query(statement).bind(id.to_string()).bind(reached.number()).bind(to_micros(at));
        if notify {
            query = query.bind(CHANNEL).bind(id.to_string());
        }
        query.execute(&mut **tx).in_span(self.db.span("INSERT", "order_events")).await.map_err(|e| self.failed(e))?;
        Ok(())
    }
}

/// `statement` with `order`'s columns bound as `$1` to `$7`: id, customer_email,
/// total_cents, currency, status, created_at (also for updated_at), idempotency_key.
fn with_order<'q>(
    statement: &'q str,
    order: &'q Order,
    key: Option<&IdempotencyKey>,
) -> Query<'q, Any, AnyArguments<'q>> {
    sqlx::query(statement)
        .bind(order.id.to_string())
        .bind(order.customer.as_str())
        .bind(order.total.get())
        .bind(order.currency.code())
        .bind(order.status.number())
        .bind(to_micros(order.created_at))
        .bind(key.map(|k| k.as_str().to_owned()))
}

fn corrupt(what: &str, id: &str) -> Error {
    Error::Internal(anyhow::anyhow!("stored order {id} has an invalid {what}"))
}

impl TryFrom<OrderRow> for Order {
    type Error = Error;

    fn try_from(row: OrderRow) -> Result<Self, Error> {
        Ok(Order {
            id: OrderId::parse(&row.id).map_err(|_| corrupt("id", &row.id))?,
            customer: Email::parse(&row.customer_email).map_err(|_| corrupt("customer_email", &row.id))?,
            total: Cents::parse(row.total_cents).map_err(|_| corrupt("total_cents", &row.id))?,
            currency: Currency::parse(&row.currency).map_err(|_| corrupt("currency", &row.id))?,
            status: OrderStatus::from_number(row.status).ok_or_else(|| corrupt("status", &row.id))?,
            created_at: from_micros(row.created_at),
        })
    }
}

impl TryFrom<EventRow> for OrderEvent {
    type Error = Error;

    fn try_from(row: EventRow) -> Result<Self, Error> {
        Ok(OrderEvent {
            order_id: OrderId::parse(&row.order_id).map_err(|_| corrupt("id", &row.order_id))?,
            reached: OrderStatus::from_number(row.status).ok_or_else(|| corrupt("event status", &row.order_id))?,
            occurred_at: from_micros(row.occurred_at),
        })
    }
}

/// Classifies a sqlx error ([`StorageFailure::of`]) as UNAVAILABLE (could not reach
/// the database), ABORTED (a transaction rolled back for a conflict) or INTERNAL.
fn storage_error(error: sqlx::Error) -> Error {
    match StorageFailure::of(&error) {
        StorageFailure::Unavailable => Error::Unavailable(error),
        StorageFailure::Aborted => Error::Aborted(error),
        StorageFailure::Other => Error::Internal(error.into()),
    }
}

/// For the crate's unit tests: a repository over an in-memory SQLite database, and orders stored in it.
#[cfg(test)]
pub(crate) mod embedded {
    use platform::{config::DatabaseConfig, database::Database, email::Email};

    use super::*;
    use crate::order::{Cents, Currency, OrderStatus};

    /// A migrated in-memory SQLite repository (the embedded path) and its local [`Changes`].
    pub(crate) async fn repository() -> (OrderRepository, Changes) {
        let mut config = DatabaseConfig::at("sqlite::memory:".parse().expect("a database URL"));
        // Each in-memory SQLite connection is its own database: keep one.
        config.max_connections = std::num::NonZeroU32::MIN;
        let database = Database::connect(&config, "orders").await.expect("in-memory SQLite");
        database.migrate(&MIGRATOR).await.expect("migrations apply on SQLite");
        let changes = Changes::local();
        (OrderRepository::new(database, changes.clone()), changes)
    }

    /// A new order (status CREATED), stored.
    pub(crate) async fn stored_order(repository: &OrderRepository) -> Order {
        let order = Order {
            id: OrderId::generate(),
            customer: Email::parse("sqlite@example.com").expect("valid"),
            total: Cents::parse(100).expect("positive"),
            currency: Currency::parse("USD").expect("ISO 4217"),
            status: OrderStatus::Created,
            created_at: OrderRepository::now(),
        };
        assert!(matches!(repository.insert(&order, None).await, Ok(Inserted::New)));
        order
    }
}
