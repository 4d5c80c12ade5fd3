-- Portable between PostgreSQL and SQLite: ids are UUIDv7 text (sorts by creation),
-- times are microseconds since the Unix epoch, status and kind are the numbers of
-- orders.v1.OrderStatus (1 created, 2 shipped, 3 delivered).
CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    customer_email  TEXT NOT NULL,
    total_cents     BIGINT NOT NULL CHECK (total_cents > 0),
    currency        TEXT NOT NULL,
    status          BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    -- NULL when the client sent none; NULLs never conflict.
    idempotency_key TEXT UNIQUE
);

CREATE INDEX orders_by_customer ON orders (customer_email, id);

-- One row per step an order reached; the key makes each step happen once.
CREATE TABLE order_events (
    order_id    TEXT NOT NULL REFERENCES orders (id),
    status      BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, status)
);
