//! The server side: bearer tokens checked per call ([`Authenticator`]) and the layer that answers refused calls ([`AuthLayer`]).

use std::{
    collections::HashSet,
    fmt,
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use http::{Request, Response, header::AUTHORIZATION};
use jsonwebtoken::Validation;
use serde::Deserialize;
use tonic::Status;

use super::{
    config::{AuthConfig, AuthMode, ReflectionAccess},
    jwks::{JwksError, KeySet, read_jwks, stamp},
};
use crate::support::gate::{Gate, GateLayer};

/// Path prefix of the health service, always open (probes and balancers hold no token).
const HEALTH: &str = "/grpc.health.v1.Health/";
/// Path prefixes of server reflection (v1 and v1alpha).
const REFLECTION: [&str; 2] = ["/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

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
