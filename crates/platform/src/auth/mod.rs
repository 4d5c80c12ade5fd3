//! Who may call: bearer JWTs checked against a JWKS file that rotates without a restart, per-method scopes, and the token a client sends.
//!
//! A call carries `authorization: Bearer <JWT>` (RFC 6750 §2.1). The token must be
//! signed by a key of the JWKS file (RFC 7517) with an allow-listed algorithm, name
//! the configured issuer and audience, and not be expired (a small leeway for clock
//! skew); otherwise the call is answered UNAUTHENTICATED. A valid token without a
//! scope the method accepts is answered PERMISSION_DENIED (gRPC status codes: "the
//! caller does not have permission"). Scopes come from the `scope` claim (a
//! space-separated string, RFC 8693 §4.2) or the `scp` claim (a list).
//!
//! `grpc.health.v1.Health` is always open; reflection is open unless
//! `auth.reflection = "authenticated"`. The caller's subject (`sub`) is recorded as
//! `enduser.id` on the call's span (OpenTelemetry general attributes), so the
//! `"rpc finished"` line carries it; the token itself never reaches a log, span or
//! error message.
//!
//! Secure by default: with no `auth` settings every business call is refused
//! UNAUTHENTICATED ("authentication is not configured"); running open takes
//! `auth.mode = "none"`, which logs a WARN at start.
//!
//! One file per side: `server` (the [`Authenticator`] and its [`AuthLayer`]), `client`
//! (the [`CallerToken`] a client attaches with [`AttachTokenLayer`]), `jwks` (reading
//! the key file), `config` (the `auth` section). `server` imports `jwks` and `config`;
//! `client` imports none of them.

mod client;
mod config;
mod jwks;
mod server;

pub use self::{
    client::{AttachToken, AttachTokenLayer, CallerToken},
    config::{AuthConfig, AuthMode, ReflectionAccess},
    jwks::JwksError,
    server::{AuthLayer, Authenticate, Authenticator, Caller},
};

#[cfg(test)]
mod tests;
