//! The `auth` config section: mode, JWKS file, issuer, audience, per-method scopes, reflection access.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

/// The `auth` config section, read at load; see the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `auth.mode`: `jwt` (the default: bearer tokens required) or `none` (every
    /// call open, a WARN at start).
    pub mode: AuthMode,
    /// `auth.jwks_file`: the JWKS (RFC 7517 `{"keys": [...]}`) whose keys verify
    /// tokens. Re-read when its modification time or size changes, checked at most
    /// every `jwks_refresh`, so keys rotate without a restart.
    pub jwks_file: Option<PathBuf>,
    /// `auth.jwks_refresh`: how often to look for a changed JWKS file (default `"5s"`;
    /// `"0s"` checks on every call).
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// `auth.issuer`: the `iss` every token must carry, e.g. `https://auth.example.com`.
    pub issuer: Option<String>,
    /// `auth.audience`: an `aud` every token must carry, e.g. `users`.
    pub audience: Option<String>,
    /// `auth.algorithms`: signature algorithms accepted (default `["EdDSA", "ES256",
    /// "RS256"]`; names as in RFC 7518 §3.1; `none` is never accepted).
    pub algorithms: Vec<Algorithm>,
    /// `auth.leeway`: clock skew allowed on `exp` and `nbf` (default `"30s"`, at most `"5m"`).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// `auth.reflection`: `open` (default) or `authenticated`.
    pub reflection: ReflectionAccess,
    /// `auth.default_scopes`: scopes that may call a method `scopes` does not list;
    /// empty (the default) lets any valid token call it.
    pub default_scopes: Vec<String>,
    /// `auth.scopes.<Method>`: per method (its name, `GetUserByEmail`, or
    /// `package.Service/Method`; case-insensitive), the scopes that may call it (any
    /// one suffices), e.g. `auth.scopes.GetUserByEmail = ["users.read"]`.
    pub scopes: BTreeMap<String, Vec<String>>,
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Bearer JWTs required (see the module docs).
    Jwt,
    /// No authentication: every call is open.
    None,
}

/// `auth.reflection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReflectionAccess {
    /// Anyone may list the services (grpcurl, Postman).
    Open,
    /// Reflection takes a valid token, as a business method with no scope rule.
    Authenticated,
}

impl Default for AuthConfig {
    /// `mode = "jwt"` with nothing to verify against: business calls are refused
    /// until `jwks_file`, `issuer` and `audience` are set (or `mode = "none"`).
    fn default() -> Self {
        Self {
            mode: AuthMode::Jwt,
            jwks_file: None,
            jwks_refresh: Duration::from_secs(5),
            issuer: None,
            audience: None,
            algorithms: vec![Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256],
            leeway: Duration::from_secs(30),
            reflection: ReflectionAccess::Open,
            default_scopes: Vec::new(),
            scopes: BTreeMap::new(),
        }
    }
}

impl AuthConfig {
    /// Authentication off (`auth.mode = "none"`): for tests and explicit open setups.
    pub fn none() -> Self {
        Self { mode: AuthMode::None, ..Self::default() }
    }

    /// JWT mode verifying against `jwks_file` for `issuer` and `audience`, other keys at
    /// their defaults.
    pub fn jwt(jwks_file: impl Into<PathBuf>, issuer: &str, audience: &str) -> Self {
        Self {
            jwks_file: Some(jwks_file.into()),
            issuer: Some(issuer.to_owned()),
            audience: Some(audience.to_owned()),
            ..Self::default()
        }
    }

    /// The rules across keys: in `jwt` mode `jwks_file`, `issuer` and `audience` are
    /// set together or not at all (none set: not configured, calls refused); at least
    /// one algorithm; a leeway of at most 5 minutes.
    ///
    /// # Errors
    /// [`crate::config::InvalidKey`] naming the key that breaks one.
    pub fn check(&self) -> Result<(), crate::config::InvalidKey> {
        let invalid = |key, reason: &str| Err(crate::config::InvalidKey { key, reason: reason.to_owned() });
        if self.mode == AuthMode::None {
            return Ok(());
        }
        let set = [self.jwks_file.is_some(), non_empty(&self.issuer), non_empty(&self.audience)];
        if set.iter().any(|s| *s) {
            if !set[0] {
                return invalid("auth.jwks_file", "must be set with auth.issuer and auth.audience");
            }
            if !set[1] {
                return invalid("auth.issuer", "must be set with auth.jwks_file and auth.audience");
            }
            if !set[2] {
                return invalid("auth.audience", "must be set with auth.jwks_file and auth.issuer");
            }
        }
        if self.algorithms.is_empty() {
            return invalid("auth.algorithms", "must list at least one algorithm, e.g. [\"EdDSA\"]");
        }
        if self.leeway > Duration::from_secs(300) {
            return invalid("auth.leeway", "must be at most 5m");
        }
        Ok(())
    }

    /// The scopes that may call `path` (`/package.Service/Method`): its `scopes`
    /// entry, else `default_scopes`. Empty: any valid token.
    pub(super) fn scopes_for(&self, path: &str) -> &[String] {
        let full = path.trim_start_matches('/');
        let method = full.rsplit('/').next().unwrap_or(full);
        self.scopes
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(method) || name.eq_ignore_ascii_case(full))
            .map_or(&self.default_scopes, |(_, scopes)| scopes)
    }
}

fn non_empty(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.trim().is_empty())
}
