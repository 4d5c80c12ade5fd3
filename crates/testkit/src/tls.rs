//! A throwaway certificate authority: the dev CA of `make demo`, the tests and `dev-certs`.

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

/// A throwaway certificate authority for `make demo`, tests and `dev-certs`: a fresh
/// ECDSA P-256 key each time, certificates issued on demand. Keys live in memory and in
/// the files written from them; nothing is ever committed.
pub struct DevCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// A certificate and its private key, PEM.
pub struct DevCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER: what a peer sees in the handshake.
    pub der: Vec<u8>,
}

impl fmt::Debug for DevCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCert").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA named `name` (its subject's common name).
    ///
    /// # Errors
    /// When the key or certificate cannot be made (rcgen).
    pub fn generate(name: &str) -> Result<Self, rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self { issuer: rcgen::Issuer::new(params, key), cert_pem })
    }

    /// The CA certificate, PEM: what `client_ca_file` and `ca_file` hold.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new certificate for `names` (DNS names or IP addresses, the first also its
    /// common name), usable by servers and clients alike, with a new key.
    ///
    /// # Errors
    /// When a name is not valid in a certificate (rcgen).
    pub fn issue(&self, names: &[&str]) -> Result<DevCert, rcgen::Error> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(rcgen::DnType::CommonName, *first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(DevCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() })
    }

    /// Writes `ca.pem`, and for each `(stem, names)` a certificate `{stem}.pem` with its
    /// key `{stem}-key.pem` (mode 0600), into `dir` (created if missing).
    ///
    /// # Errors
    /// When a certificate cannot be made or a file written.
    pub fn write_files(&self, dir: &Path, certs: &[(&str, &[&str])]) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        write_atomically(&dir.join("ca.pem"), self.cert_pem.as_bytes())?;
        for (stem, names) in certs {
            let cert = self.issue(names).map_err(io::Error::other)?;
            cert.write(&dir.join(format!("{stem}.pem")), &dir.join(format!("{stem}-key.pem")))?;
        }
        Ok(())
    }
}

impl DevCert {
    /// Writes the certificate to `cert_file` and the key to `key_file` (mode 0600),
    /// each replaced whole through a rename, key first, so a reader never sees half
    /// a file.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn write(&self, cert_file: &Path, key_file: &Path) -> io::Result<()> {
        write_atomically(key_file, self.key_pem.as_bytes())?;
        write_atomically(cert_file, self.cert_pem.as_bytes())
    }
}

/// Writes `contents` to a temporary file beside `path` (mode 0600), then renames it over `path`.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(temporary, path)
}
