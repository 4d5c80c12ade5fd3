//! Small pieces the concern modules share, none of them used by other crates: `backoff`
//! (exponential backoff with jitter), `files` (noticing a rewritten file), `redact`
//! (addresses without credentials, for logs), `gate` (the one service shape of the
//! server layers that answer or pass on a request) and `methods` (the one reader of the
//! proto descriptors: method kind, idempotency, metric labels).
//!
//! Imports point down to here: only `methods` imports anything of ours
//! (`observability::metrics`, for label values).

pub(crate) mod backoff;
pub(crate) mod files;
pub(crate) mod gate;
pub(crate) mod methods;
pub(crate) mod redact;
