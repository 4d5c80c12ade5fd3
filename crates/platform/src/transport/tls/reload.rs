//! Reading PEM files (certificates, keys, CA roots; checked at load through serde) and the rustls config built again when any of them changes.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use serde::{Deserialize, Deserializer, de::Error as _};

use crate::support::files::FileStamp;

/// The only crypto provider in the tree (ring; see the workspace `Cargo.toml`).
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS file or setting could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub(super) String);

/// The certificates in the PEM file at `path` (at least one).
pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{shown}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{shown}: no PEM certificate in it")));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1). The error never
/// quotes the file.
pub(super) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError(format!("{}: no PEM private key ({e})", path.display())))
}

/// The CA certificates in the PEM file at `path`, as trust anchors.
pub(super) fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError(format!("{}: not a CA certificate: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

/// Serde: a path to a PEM file holding at least one certificate, checked at load.
pub(super) fn cert_file<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    read_certs(&path).map_err(D::Error::custom)?;
    Ok(path)
}

/// Serde: as [`cert_file`], optional.
pub(super) fn optional_cert_file<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    cert_file(deserializer).map(Some)
}

/// Serde: a path to a PEM file holding a private key, checked at load.
pub(super) fn key_file<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    read_key(&path).map_err(D::Error::custom)?;
    Ok(path)
}

/// Serde: as [`key_file`], optional.
pub(super) fn optional_key_file<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    key_file(deserializer).map(Some)
}

/// What a file looked like, to notice that it changed (see [`FileStamp`]).
pub(super) type Stamp = Option<FileStamp>;

pub(super) fn stamp(path: &Path) -> Stamp {
    FileStamp::of(path)
}

/// A rustls config built from files, built again when any of them changes (see the
/// module docs).
pub(super) struct Reloading<T> {
    /// What the files are for, in log lines (`server.tls`, `users.tls`).
    name: &'static str,
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    current: Mutex<(Vec<Stamp>, Arc<T>)>,
}

impl<T> Reloading<T> {
    /// Builds the first config now, with `build` from the settings `raw`, which name the
    /// files `paths` (the ones set).
    pub(super) fn new<R: Send + Sync + 'static>(
        name: &'static str,
        paths: &[Option<&PathBuf>],
        raw: R,
        build: fn(&R) -> Result<T, TlsError>,
    ) -> Result<Self, TlsError>
    where
        T: 'static,
    {
        let paths: Vec<PathBuf> = paths.iter().flatten().map(|path| (*path).clone()).collect();
        let stamps = paths.iter().map(|path| stamp(path)).collect();
        let first = build(&raw)?;
        let build = Box::new(move || build(&raw));
        Ok(Self { name, paths, build, current: Mutex::new((stamps, Arc::new(first))) })
    }

    /// The config for the next handshake: built again first when a file changed.
    pub(super) fn current(&self) -> Arc<T> {
        let stamps: Vec<Stamp> = self.paths.iter().map(|path| stamp(path)).collect();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if stamps != current.0 {
            current.0 = stamps;
            match (self.build)() {
                Ok(config) => {
                    current.1 = Arc::new(config);
                    tracing::info!(section = self.name, "TLS files changed: certificates reloaded");
                }
                Err(error) => {
                    tracing::warn!(section = self.name, %error, "TLS files changed but do not load; keeping those in use");
                }
            }
        }
        current.1.clone()
    }
}
