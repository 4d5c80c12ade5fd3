//! gRPC statuses for failures whose detail belongs in the log, never in the response.

use std::fmt::Display;

use tonic::Status;

/// UNAVAILABLE for a dependency (`what`, e.g. "database") that did not answer in time:
/// worth retrying, possibly on another replica. Logs `error` at WARN.
pub fn unavailable(what: &str, error: impl Display) -> Status {
    tracing::warn!(error = %error, dependency = what, "dependency unavailable");
    Status::unavailable(format!("{what} unavailable"))
}

/// INTERNAL with the fixed message "internal error": the detail (SQL text, paths)
/// would help an attacker more than a caller. Logs the whole error chain at ERROR.
pub fn internal(error: impl Display) -> Status {
    tracing::error!(error = format!("{error:#}"), "internal error");
    Status::internal("internal error")
}
