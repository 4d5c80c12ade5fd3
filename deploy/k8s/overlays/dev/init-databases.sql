-- Runs once, when the compose stack's PostgreSQL starts on an empty volume
-- (/docker-entrypoint-initdb.d). One role and one database per service: each service owns
-- its schema (embedded sqlx migrations) and cannot read the other's tables.
-- Local-only passwords; a real deployment takes the URLs from secrets.
CREATE ROLE users LOGIN PASSWORD 'users';
CREATE DATABASE users OWNER users;
REVOKE ALL ON DATABASE users FROM PUBLIC;

CREATE ROLE orders LOGIN PASSWORD 'orders';
CREATE DATABASE orders OWNER orders;
REVOKE ALL ON DATABASE orders FROM PUBLIC;
