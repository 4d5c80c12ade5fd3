//! The one mapping from a service failure to a gRPC status a program can read: the
//! code, a short message, and the standard `google.rpc` error details
//! (`google/rpc/error_details.proto`, AIP-193) a client decodes instead of parsing text.
//!
//! Both services turn their error enum into a [`Failure`] and let `Status::from` do
//! the rest, so every INVALID_ARGUMENT carries `google.rpc.BadRequest` field
//! violations, every refusal a client must branch on carries `google.rpc.ErrorInfo`,
//! and failures whose detail belongs in the log (UNAVAILABLE, INTERNAL) never send it.

use std::{collections::HashMap, fmt::Display};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// How many characters of a caller's input a message quotes at most.
pub const QUOTE_CHARS: usize = 32;

/// How many bytes a quotation may take at most (escapes included), quotes and ellipsis excluded.
const QUOTE_BYTES: usize = 64;

/// `input` as an error message may quote it: Rust-escaped (`"a\nb"`), in double
/// quotes, cut after [`QUOTE_CHARS`] characters or 64 bytes of escaped text, whichever
/// comes first, and then ended with `…`. So a quotation is at most 69 bytes however
/// long the input: a 1 MB field cannot become a 1 MB `grpc-message` trailer, which
/// clients with a 16 KB metadata limit refuse.
pub fn quote(input: &str) -> String {
    let mut quoted = String::from("\"");
    let mut escaped_len = 0;
    let mut cut = false;
    for (taken, c) in input.chars().enumerate() {
        let escaped = c.escape_debug().to_string();
        if taken == QUOTE_CHARS || escaped_len + escaped.len() > QUOTE_BYTES {
            cut = true;
            break;
        }
        escaped_len += escaped.len();
        quoted.push_str(&escaped);
    }
    quoted.push('"');
    if cut {
        quoted.push('…');
    }
    quoted
}

/// One malformed request field: a `google.rpc.BadRequest.FieldViolation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's name as the proto spells it (`customer_email`), which is what
    /// `FieldViolation.field` holds.
    pub field: &'static str,
    /// What is wrong with it, quoting the input only through [`quote`].
    pub description: String,
}

/// A request's malformed fields, every one of them, so a client learns all from one
/// call: what a request's parse fails with, and what becomes INVALID_ARGUMENT with one
/// `google.rpc.BadRequest` field violation each. Never empty.
///
/// Displays as `invalid <field>: <description>` per field, joined by `; `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFields(Vec<FieldViolation>);

impl InvalidFields {
    /// One malformed field; `description` quotes the input only through [`quote`].
    pub fn one(field: &'static str, description: impl Into<String>) -> Self {
        Self(vec![FieldViolation { field, description: description.into() }])
    }

    /// Every error among the parsed fields of one request, in order: `None` when each
    /// field parsed.
    pub fn all(errors: impl IntoIterator<Item = Option<InvalidFields>>) -> Option<Self> {
        let violations: Vec<FieldViolation> = errors.into_iter().flatten().flat_map(|e| e.0).collect();
        (!violations.is_empty()).then_some(Self(violations))
    }

    /// The names of the malformed fields, in order.
    pub fn fields(&self) -> Vec<&'static str> {
        self.0.iter().map(|violation| violation.field).collect()
    }
}

impl std::fmt::Display for InvalidFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, violation) in self.0.iter().enumerate() {
            let separator = if i == 0 { "" } else { "; " };
            write!(f, "{separator}invalid {}: {}", violation.field, violation.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidFields {}

impl From<InvalidFields> for Status {
    fn from(fields: InvalidFields) -> Self {
        Status::from(Failure::from(fields))
    }
}

impl From<InvalidFields> for Failure {
    fn from(fields: InvalidFields) -> Self {
        Failure::InvalidArgument(fields.0)
    }
}

/// What a client branches on: `google.rpc.ErrorInfo`'s `reason` (UPPER_SNAKE_CASE,
/// stable, e.g. `IDEMPOTENCY_KEY_REUSED`) and `domain` (who defines the reason: the
/// proto package, e.g. `orders.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    /// `ErrorInfo.reason`.
    pub reason: &'static str,
    /// `ErrorInfo.domain`.
    pub domain: &'static str,
}

/// A service failure in the terms a caller reads; `Status::from` is the one mapper.
#[derive(Debug)]
pub enum Failure {
    /// INVALID_ARGUMENT, one `BadRequest` field violation per bad field; the message is
    /// `invalid <field>: <description>` per field, joined by `; `.
    InvalidArgument(Vec<FieldViolation>),
    /// NOT_FOUND with this message.
    NotFound(String),
    /// ALREADY_EXISTS with `ErrorInfo` from `reason`.
    AlreadyExists(Reason, String),
    /// FAILED_PRECONDITION with `ErrorInfo` from `reason`.
    FailedPrecondition(Reason, String),
    /// UNAVAILABLE with this message, which says which dependency (worth retrying).
    Unavailable(String),
    /// UNAVAILABLE "`dependency` unavailable"; the error's detail is logged at WARN only.
    DependencyUnavailable {
        /// What did not answer, e.g. "database".
        dependency: &'static str,
        /// The detail, for the log.
        detail: String,
    },
    /// ABORTED "`dependency` aborted the transaction; try again": a dependency (the
    /// database) rolled the call's transaction back for a conflict with a concurrent
    /// one, so nothing of it took effect. The detail is logged at WARN only.
    DependencyAborted {
        /// What aborted, e.g. "database".
        dependency: &'static str,
        /// The detail, for the log.
        detail: String,
    },
    /// INTERNAL "internal error"; the detail is logged at ERROR only.
    Internal(String),
}

impl Failure {
    /// [`Failure::InvalidArgument`] for one field.
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation { field, description: description.into() }])
    }
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::InvalidArgument(violations) => {
                let fields = InvalidFields(violations);
                let message = fields.to_string();
                let mut details = ErrorDetails::new();
                for violation in fields.0 {
                    details.add_bad_request_violation(violation.field, violation.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Failure::NotFound(message) => Status::not_found(message),
            Failure::AlreadyExists(reason, message) => refusal(Code::AlreadyExists, reason, message),
            Failure::FailedPrecondition(reason, message) => refusal(Code::FailedPrecondition, reason, message),
            Failure::Unavailable(message) => Status::unavailable(message),
            Failure::DependencyUnavailable { dependency, detail } => unavailable(dependency, detail),
            Failure::DependencyAborted { dependency, detail } => aborted(dependency, detail),
            Failure::Internal(detail) => internal(detail),
        }
    }
}

fn refusal(code: Code, reason: Reason, message: String) -> Status {
    let details = ErrorDetails::with_error_info(reason.reason, reason.domain, HashMap::new());
    Status::with_error_details(code, message, details)
}

/// UNAVAILABLE for a dependency (`what`, e.g. "database") that did not answer in time:
/// worth retrying, possibly on another replica. Logs `error` at WARN.
pub fn unavailable(what: &str, error: impl Display) -> Status {
    tracing::warn!(error = %error, dependency = what, "dependency unavailable");
    Status::unavailable(format!("{what} unavailable"))
}

/// ABORTED for a dependency (`what`, e.g. "database") that rolled the call's work back
/// for a conflict with concurrent work: worth trying again (gRPC status codes: ABORTED is
/// a concurrency conflict such as a transaction abort). Logs `error` at WARN.
pub fn aborted(what: &str, error: impl Display) -> Status {
    tracing::warn!(error = %error, dependency = what, "dependency aborted the transaction");
    Status::aborted(format!("{what} aborted the transaction; try again"))
}

/// INTERNAL with the fixed message "internal error": the detail (SQL text, paths)
/// would help an attacker more than a caller. Logs the whole error chain at ERROR.
pub fn internal(error: impl Display) -> Status {
    tracing::error!(error = format!("{error:#}"), "internal error");
    Status::internal("internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_input_is_quoted_whole_and_escaped() {
        assert_eq!(quote("EUR"), "\"EUR\"");
        assert_eq!(quote("a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(quote(&"x".repeat(QUOTE_CHARS)), format!("\"{}\"", "x".repeat(QUOTE_CHARS)));
    }

    #[test]
    fn a_long_input_is_cut_to_a_short_prefix() {
        let quoted = quote(&"x".repeat(1 << 20));
        assert_eq!(quoted, format!("\"{}\"…", "x".repeat(QUOTE_CHARS)));
        // Escapes cannot blow the bound up either.
        for nasty in ["\u{0}".repeat(1 << 20), "\u{10ffff}".repeat(1 << 20), "é".repeat(1 << 20)] {
            assert!(quote(&nasty).len() <= QUOTE_BYTES + 5, "{}", quote(&nasty).len());
        }
    }

    #[test]
    fn invalid_argument_carries_one_field_violation_per_bad_field() {
        let status = Status::from(Failure::InvalidArgument(vec![
            FieldViolation { field: "currency", description: "is not a code".into() },
            FieldViolation { field: "total_cents", description: "must be greater than 0".into() },
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid currency: is not a code; invalid total_cents: must be greater than 0");
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("a BadRequest detail").field_violations;
        let fields: Vec<_> = violations.iter().map(|v| (v.field.as_str(), v.description.as_str())).collect();
        assert_eq!(fields, [("currency", "is not a code"), ("total_cents", "must be greater than 0")]);
    }

    #[test]
    fn all_keeps_every_bad_field_in_order_and_is_none_when_each_field_parsed() {
        assert_eq!(InvalidFields::all([None, None]), None);
        let fields = InvalidFields::all([
            Some(InvalidFields::one("customer_email", "is not an email")),
            None,
            Some(InvalidFields::one("currency", "is not a code")),
        ])
        .expect("two bad fields");
        assert_eq!(fields.fields(), ["customer_email", "currency"]);
        assert_eq!(fields.to_string(), "invalid customer_email: is not an email; invalid currency: is not a code");
        let status = Status::from(fields);
        assert_eq!(status.get_error_details().bad_request().map(|b| b.field_violations.len()), Some(2));
    }

    #[test]
    fn a_refusal_carries_its_reason_and_domain() {
        let reason = Reason { reason: "IDEMPOTENCY_KEY_REUSED", domain: "orders.v1" };
        for (failure, code) in [
            (Failure::AlreadyExists(reason, "reused".into()), Code::AlreadyExists),
            (Failure::FailedPrecondition(reason, "reused".into()), Code::FailedPrecondition),
        ] {
            let status = Status::from(failure);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), "reused");
            let details = status.get_error_details();
            let info = details.error_info().expect("an ErrorInfo detail");
            assert_eq!((info.reason.as_str(), info.domain.as_str()), ("IDEMPOTENCY_KEY_REUSED", "orders.v1"));
        }
    }

    #[test]
    fn unavailable_aborted_and_internal_failures_keep_their_detail_out_of_the_message() {
        let status =
            Status::from(Failure::DependencyUnavailable { dependency: "database", detail: "pool timed out".into() });
        assert_eq!((status.code(), status.message()), (Code::Unavailable, "database unavailable"));
        let status = Status::from(Failure::DependencyAborted {
            dependency: "database",
            detail: "could not serialize access to secret_table".into(),
        });
        assert_eq!((status.code(), status.message()), (Code::Aborted, "database aborted the transaction; try again"));
        let status = Status::from(Failure::Internal("SELECT * FROM secret_table".into()));
        assert_eq!((status.code(), status.message()), (Code::Internal, "internal error"));
    }
}
