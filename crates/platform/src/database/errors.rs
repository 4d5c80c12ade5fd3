//! What a failed database call means for its caller: sqlx errors classified by SQLSTATE, the one classification both repositories use.

/// What a failed database call means for its caller: the one classification of sqlx
/// errors both repositories use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFailure {
    /// The database could not be reached in time, or went away under the call (a
    /// server shutting down, a backend terminated, too many connections): a gRPC
    /// UNAVAILABLE, worth retrying, possibly on another replica.
    Unavailable,
    /// The database rolled the transaction back to resolve a conflict with a concurrent
    /// one (a serialization failure or a deadlock): a gRPC ABORTED; the whole
    /// transaction may succeed when tried again.
    Aborted,
    /// A fault in the query or the data (INTERNAL).
    Other,
}

// SQLSTATE codes, named as the conditions of PostgreSQL's manual, "Appendix A.
// PostgreSQL Error Codes" (https://www.postgresql.org/docs/current/errcodes-appendix.html).
/// Class 08, Connection Exception: every code of the class (`connection_failure`
/// 08006, `connection_does_not_exist` 08003, ...).
const CONNECTION_EXCEPTION_CLASS: &str = "08";
/// `too_many_connections` (class 53, Insufficient Resources).
const TOO_MANY_CONNECTIONS: &str = "53300";
/// `admin_shutdown` (class 57, Operator Intervention): `pg_ctl stop`/`restart` in fast
/// mode or `pg_terminate_backend` ended the session ("terminating connection due to
/// administrator command").
const ADMIN_SHUTDOWN: &str = "57P01";
/// `crash_shutdown`: another server process crashed and the server is resetting.
const CRASH_SHUTDOWN: &str = "57P02";
/// `cannot_connect_now`: the server is starting up or shutting down.
const CANNOT_CONNECT_NOW: &str = "57P03";
/// `serialization_failure` (class 40, Transaction Rollback).
const SERIALIZATION_FAILURE: &str = "40001";
/// `deadlock_detected` (class 40, Transaction Rollback).
const DEADLOCK_DETECTED: &str = "40P01";

impl StorageFailure {
    /// How `error` fails its caller. Unavailable: no connection in time
    /// ([`sqlx::Error::PoolTimedOut`], also [`DatabaseDown`]), the pool closed, an I/O
    /// or TLS error, or a PostgreSQL error with SQLSTATE class 08, 53300, 57P01, 57P02
    /// or 57P03. Aborted: SQLSTATE 40001 or 40P01. Anything else (other SQLSTATEs, any
    /// SQLite error, a decode error) is Other.
    pub fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable
            }
            sqlx::Error::Database(error) => {
                // SQLSTATEs are PostgreSQL's; SQLite's codes are numbers of another scheme.
                let Some(error) = error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() else {
                    return Self::Other;
                };
                match error.code() {
                    TOO_MANY_CONNECTIONS | ADMIN_SHUTDOWN | CRASH_SHUTDOWN | CANNOT_CONNECT_NOW => Self::Unavailable,
                    code if code.starts_with(CONNECTION_EXCEPTION_CLASS) => Self::Unavailable,
                    SERIALIZATION_FAILURE | DEADLOCK_DETECTED => Self::Aborted,
                    _ => Self::Other,
                }
            }
            _ => Self::Other,
        }
    }
}

/// Whether `error` means the database could not be reached in time or went away
/// under the call (a gRPC UNAVAILABLE, worth retrying elsewhere) rather than a fault
/// in the query or data: [`StorageFailure::of`] is [`StorageFailure::Unavailable`].
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    StorageFailure::of(error) == StorageFailure::Unavailable
}
