//! The client side: the token a client sends ([`CallerToken`]) and the layer that attaches it ([`AttachTokenLayer`]).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::{HeaderValue, Request, header::AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};
use tower::{Layer, Service};

use crate::support::files::FileStamp;

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
                let now = FileStamp::of(path);
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
