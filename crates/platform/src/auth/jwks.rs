//! Reading the JWKS file (RFC 7517): its usable keys and the stamp that says when it changed.

use std::{path::Path, time::Instant};

use jsonwebtoken::{DecodingKey, jwk::JwkSet};

use crate::support::files::FileStamp;

/// Why [`Authenticator::new`] failed: the JWKS file cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("auth.jwks_file {path}: {reason}")]
pub struct JwksError {
    path: String,
    reason: String,
}

/// The keys of the JWKS file and when they were read.
pub(super) struct KeySet {
    pub(super) keys: Vec<(Option<String>, DecodingKey)>,
    pub(super) stamp: Option<FileStamp>,
    pub(super) checked: Instant,
}

/// The stamp of `path`, if it can be read.
pub(super) fn stamp(path: &Path) -> Option<FileStamp> {
    FileStamp::of(path)
}

pub(super) type Keys = (Vec<(Option<String>, DecodingKey)>, Option<FileStamp>);

/// The usable keys of the JWKS file at `path` and its stamp.
pub(super) fn read_jwks(path: &Path) -> Result<Keys, JwksError> {
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
