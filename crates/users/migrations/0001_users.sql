-- Portable between PostgreSQL and SQLite: ids are UUID text, times are microseconds
-- since the Unix epoch.
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
