//! A throwaway token issuer: the dev issuer of `make demo` and the tests.

use std::{
    fmt,
    path::Path,
    time::{Duration, SystemTime},
};

use jsonwebtoken::Algorithm;
use secrecy::SecretString;

/// A throwaway Ed25519 issuer for `make demo` and tests: a fresh key each time, its
/// public half written as a JWKS file, short-lived tokens minted on demand. The
/// private key lives only in memory; nothing is ever committed.
pub struct DevIssuer {
    key: jsonwebtoken::EncodingKey,
    kid: String,
    public_x: String,
    issuer: String,
}

impl fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIssuer").field("kid", &self.kid).field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// A new random key, issuing as `issuer`.
    pub fn generate(issuer: &str) -> Self {
        use base64::Engine;
        let seed: [u8; 32] = rand::random();
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        // PKCS#8 v1 of an Ed25519 private key (RFC 8410 §7): a fixed prefix, then the seed.
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&seed);
        let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let public_x = encode(signing.verifying_key().as_bytes());
        let kid = encode(&rand::random::<[u8; 9]>());
        Self { key: jsonwebtoken::EncodingKey::from_ed_der(&der), kid, public_x, issuer: issuer.to_owned() }
    }

    /// The issuer (`iss`) its tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWKS holding its public key, as JSON text.
    pub fn jwks(&self) -> String {
        serde_json::json!({
            "keys": [{"kty": "OKP", "crv": "Ed25519", "x": self.public_x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]
        })
        .to_string()
    }

    /// Writes [`DevIssuer::jwks`] to `path` (replacing it whole, via a rename).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_jwks(&self, path: &Path) -> std::io::Result<()> {
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, self.jwks())?;
        std::fs::rename(temporary, path)
    }

    /// A token for `subject` with `scopes`, for `audience`, valid for `lifetime`.
    pub fn token(&self, subject: &str, audience: &str, scopes: &[&str], lifetime: Duration) -> SecretString {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        self.token_with(serde_json::json!({
            "sub": subject,
            "iss": self.issuer,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime.as_secs().max(1),
            "scope": scopes.join(" "),
        }))
    }

    /// A token with exactly `claims`, for tests of bad claims.
    pub fn token_with(&self, claims: serde_json::Value) -> SecretString {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        SecretString::from(jsonwebtoken::encode(&header, &claims, &self.key).expect("an Ed25519 key signs any claims"))
    }
}
