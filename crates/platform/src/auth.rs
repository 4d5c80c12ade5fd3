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

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{HeaderValue, Request, Response, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tonic::Status;
use tower::{Layer, Service};

use crate::{
    support::files::FileStamp,
    support::gate::{Gate, GateLayer},
};

/// Path prefix of the health service, always open (probes and balancers hold no token).
const HEALTH: &str = "/grpc.health.v1.Health/";
/// Path prefixes of server reflection (v1 and v1alpha).
const REFLECTION: [&str; 2] = ["/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

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
    fn scopes_for(&self, path: &str) -> &[String] {
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

/// Why [`Authenticator::new`] failed: the JWKS file cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("auth.jwks_file {path}: {reason}")]
pub struct JwksError {
    path: String,
    reason: String,
}

/// The verified caller of a call, in the request's extensions once [`Authenticate`]
/// let it through (absent with `auth.mode = "none"` or on open paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub` claim.
    pub subject: String,
}

/// The claims we read; every other claim is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
}

impl Claims {
    fn has_any(&self, wanted: &[String]) -> bool {
        let from_scope = self.scope.iter().flat_map(|s| s.split_ascii_whitespace());
        let from_scp = self.scp.iter().flatten().map(String::as_str);
        let held: HashSet<&str> = from_scope.chain(from_scp).collect();
        wanted.iter().any(|w| held.contains(w.as_str()))
    }
}

/// The keys of the JWKS file and when they were read.
struct KeySet {
    keys: Vec<(Option<String>, DecodingKey)>,
    stamp: Option<FileStamp>,
    checked: Instant,
}

/// Checks bearer tokens for one server (see the module docs). Cloning is cheap.
#[derive(Clone)]
pub struct Authenticator {
    config: Arc<AuthConfig>,
    keys: Option<Arc<RwLock<KeySet>>>,
    /// Held by the one call that re-reads the file; the others use the keys they have.
    reloading: Arc<Mutex<()>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator").field("mode", &self.config.mode).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// What a server told nothing about auth uses: every business call refused
    /// UNAUTHENTICATED ("authentication is not configured"), with a WARN now.
    pub fn unconfigured() -> Self {
        tracing::warn!(
            "authentication is not configured (auth.jwks_file, auth.issuer, auth.audience): every business RPC is \
             refused UNAUTHENTICATED; set them, or auth.mode = \"none\" to run open"
        );
        Self { config: Arc::new(AuthConfig::default()), keys: None, reloading: Arc::new(Mutex::new(())) }
    }

    /// Reads the JWKS file of `config` (if any). Logs a WARN when calls will be open
    /// (`mode = "none"`) or refused (nothing configured).
    ///
    /// # Errors
    /// [`JwksError`] when the file cannot be read, is not a JWKS, or holds no usable key.
    pub fn new(config: &AuthConfig) -> Result<Self, JwksError> {
        let keys = match (config.mode, &config.jwks_file) {
            (AuthMode::None, _) => {
                tracing::warn!("auth.mode = \"none\": every RPC is open to anyone who can reach the port");
                None
            }
            (AuthMode::Jwt, None) => return Ok(Self::unconfigured()),
            (AuthMode::Jwt, Some(path)) => {
                let (keys, stamp) = read_jwks(path)?;
                Some(Arc::new(RwLock::new(KeySet { keys, stamp, checked: Instant::now() })))
            }
        };
        Ok(Self { config: Arc::new(config.clone()), keys, reloading: Arc::new(Mutex::new(())) })
    }

    /// Decides a call to `path` carrying `headers`: `Ok(Some(caller))` for a verified
    /// token, `Ok(None)` for an open path or `mode = "none"`.
    ///
    /// # Errors
    /// UNAUTHENTICATED (no, malformed, unverifiable token; auth not configured) or
    /// PERMISSION_DENIED (no accepted scope). The message never quotes the token.
    pub fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<Caller>, Status> {
        if self.config.mode == AuthMode::None || path.starts_with(HEALTH) {
            return Ok(None);
        }
        let reflection = REFLECTION.iter().any(|prefix| path.starts_with(prefix));
        if reflection && self.config.reflection == ReflectionAccess::Open {
            return Ok(None);
        }
        let Some(keys) = &self.keys else {
            return Err(Status::unauthenticated(
                "authentication is not configured on this server (auth.jwks_file, auth.issuer, auth.audience)",
            ));
        };
        let token = bearer(headers)?;
        self.reload_if_changed(keys);
        let claims = self.verify(keys, token)?;
        let wanted = if reflection { &[][..] } else { self.config.scopes_for(path) };
        if !wanted.is_empty() && !claims.has_any(wanted) {
            return Err(Status::permission_denied(format!(
                "the caller lacks a scope this method accepts ({})",
                wanted.join(" or ")
            )));
        }
        Ok(Some(Caller { subject: claims.sub }))
    }

    fn verify(&self, keys: &RwLock<KeySet>, token: &str) -> Result<Claims, Status> {
        let refused = |reason: &str| Status::unauthenticated(format!("invalid bearer token: {reason}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused("malformed or unsupported header"))?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(refused("algorithm not accepted"));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.set_issuer(&[self.config.issuer.as_deref().unwrap_or_default()]);
        validation.set_audience(&[self.config.audience.as_deref().unwrap_or_default()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let keys = keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let candidates = keys.keys.iter().filter(|(kid, _)| header.kid.is_none() || *kid == header.kid);
        let mut last = refused("no key of the key set matches");
        for (_, key) in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => last = refused(&describe(error.kind())),
            }
        }
        Err(last)
    }

    /// Re-reads the JWKS file when `jwks_refresh` has passed and it changed (see
    /// [`FileStamp`]); a file that does not read keeps the keys in use (WARN).
    fn reload_if_changed(&self, keys: &RwLock<KeySet>) {
        let Some(path) = &self.config.jwks_file else { return };
        {
            let current = keys.read().unwrap_or_else(|p| p.into_inner());
            if current.checked.elapsed() < self.config.jwks_refresh {
                return;
            }
        }
        let Ok(_reloading) = self.reloading.try_lock() else { return };
        let stamp = stamp(path);
        let mut current = keys.write().unwrap_or_else(|p| p.into_inner());
        current.checked = Instant::now();
        if stamp.is_some() && stamp == current.stamp {
            return;
        }
        drop(current);
        match read_jwks(path) {
            Ok((new_keys, stamp)) => {
                let mut current = keys.write().unwrap_or_else(|p| p.into_inner());
                tracing::info!(keys = new_keys.len(), "auth.jwks_file changed: keys reloaded");
                (current.keys, current.stamp) = (new_keys, stamp);
            }
            Err(error) => {
                let mut current = keys.write().unwrap_or_else(|p| p.into_inner());
                current.stamp = stamp;
                tracing::warn!(%error, "auth.jwks_file changed but does not read; keeping the keys in use");
            }
        }
    }
}

/// The stamp of `path`, if it can be read.
fn stamp(path: &Path) -> Option<FileStamp> {
    FileStamp::of(path)
}

type Keys = (Vec<(Option<String>, DecodingKey)>, Option<FileStamp>);

/// The usable keys of the JWKS file at `path` and its stamp.
fn read_jwks(path: &Path) -> Result<Keys, JwksError> {
    let error = |reason: String| JwksError { path: path.display().to_string(), reason };
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| error(format!("not a JWKS: {e}")))?;
    let keys: Vec<_> = set
        .keys
        .iter()
        .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok().map(|key| (jwk.common.key_id.clone(), key)))
        .collect();
    if keys.is_empty() {
        return Err(error("holds no usable key".to_owned()));
    }
    Ok((keys, stamp))
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(headers: &http::HeaderMap) -> Result<&str, Status> {
    let missing = || Status::unauthenticated("missing `authorization: Bearer <token>` metadata");
    let value = headers.get(AUTHORIZATION).ok_or_else(missing)?.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

/// Why a token failed, in words that quote nothing of it.
fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "expired".to_owned(),
        K::ImmatureSignature => "not valid yet (nbf)".to_owned(),
        K::InvalidIssuer => "wrong issuer".to_owned(),
        K::InvalidAudience => "wrong audience".to_owned(),
        K::InvalidSignature => "bad signature".to_owned(),
        K::MissingRequiredClaim(claim) => format!("missing claim `{claim}`"),
        K::InvalidAlgorithm => "algorithm does not match the key".to_owned(),
        _ => "malformed".to_owned(),
    }
}

/// Server layer: answers refused calls (see [`Authenticator::check`]), records the
/// caller's subject as `enduser.id` on the current (call) span and puts [`Caller`]
/// in the request's extensions.
pub type AuthLayer = GateLayer<Authenticate>;

impl AuthLayer {
    /// The layer over `authenticator`.
    pub fn new(authenticator: Authenticator) -> Self {
        Self::from(Authenticate { authenticator })
    }
}

/// The check [`AuthLayer`] puts in front of a service.
#[derive(Debug, Clone)]
pub struct Authenticate {
    authenticator: Authenticator,
}

impl<B, R: Default> Gate<B, R> for Authenticate {
    type Pass = ();

    fn admit(&self, request: &mut Request<B>) -> Result<(), Response<R>> {
        let caller = self.authenticator.check(request.uri().path(), request.headers()).map_err(Status::into_http)?;
        if let Some(caller) = caller {
            tracing::Span::current().record("enduser.id", caller.subject.as_str());
            request.extensions_mut().insert(caller);
        }
        Ok(())
    }
}

/// The token a client sends as `authorization: Bearer <token>`: from config
/// (`token`) or a file re-read when it changes (`token_file`, e.g. a Kubernetes
/// projected service-account token, rotated by the kubelet). Never logged.
#[derive(Clone)]
pub struct CallerToken(Arc<TokenSource>);

enum TokenSource {
    Fixed(HeaderValue),
    File { path: PathBuf, cached: Mutex<Option<(FileStamp, HeaderValue)>> },
}

impl fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerToken([redacted])")
    }
}

impl PartialEq for CallerToken {
    /// The same source: equal fixed tokens, or the same file.
    fn eq(&self, other: &Self) -> bool {
        match (&*self.0, &*other.0) {
            (TokenSource::Fixed(a), TokenSource::Fixed(b)) => a == b,
            (TokenSource::File { path: a, .. }, TokenSource::File { path: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl CallerToken {
    /// The file it reads, when it reads one (for writing a config back).
    pub fn path(&self) -> Option<&Path> {
        match &*self.0 {
            TokenSource::Fixed(_) => None,
            TokenSource::File { path, .. } => Some(path),
        }
    }

    /// A fixed token.
    ///
    /// # Errors
    /// When the token holds characters a header cannot carry (the message does not quote it).
    pub fn fixed(token: &SecretString) -> Result<Self, String> {
        Ok(Self(Arc::new(TokenSource::Fixed(header_value(token.expose_secret().trim())?))))
    }

    /// A token read from `path` (surrounding whitespace trimmed) on first use and again
    /// whenever the file's modification time or size changes.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self(Arc::new(TokenSource::File { path: path.into(), cached: Mutex::new(None) }))
    }

    /// The `authorization` header value, `None` when the file cannot be read (the call
    /// then goes without, and the server answers UNAUTHENTICATED).
    pub fn header(&self) -> Option<HeaderValue> {
        match &*self.0 {
            TokenSource::Fixed(value) => Some(value.clone()),
            TokenSource::File { path, cached } => {
                let mut cached = cached.lock().unwrap_or_else(|p| p.into_inner());
                let now = stamp(path);
                if let (Some(now), Some((seen, value))) = (now.as_ref(), cached.as_ref())
                    && now == seen
                {
                    return Some(value.clone());
                }
                match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| header_value(t.trim())) {
                    Ok(value) => {
                        *cached = now.map(|now| (now, value.clone()));
                        Some(value)
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "the caller token file does not read");
                        None
                    }
                }
            }
        }
    }
}

fn header_value(token: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token holds characters a header cannot carry".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Client layer: sets `authorization: Bearer <token>` on every outgoing call.
#[derive(Debug, Clone)]
pub struct AttachTokenLayer {
    token: Option<CallerToken>,
}

impl AttachTokenLayer {
    /// Attaches `token`; `None` sends calls unchanged.
    pub fn new(token: Option<CallerToken>) -> Self {
        Self { token }
    }
}

impl<S> Layer<S> for AttachTokenLayer {
    type Service = AttachToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttachToken { inner, token: self.token.clone() }
    }
}

/// See [`AttachTokenLayer`].
#[derive(Debug, Clone)]
pub struct AttachToken<S> {
    inner: S,
    token: Option<CallerToken>,
}

impl<S, B> Service<Request<B>> for AttachToken<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(value) = self.token.as_ref().and_then(CallerToken::header) {
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests;
