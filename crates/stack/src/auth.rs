//! Authentication for a stack run: a throwaway issuer, the services' `auth` env, and tokens for the driver's calls.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use testkit::DevIssuer;
use tonic::{Request, Status, metadata::MetadataValue, service::Interceptor};

/// The issuer every token of a stack run names.
pub const ISSUER: &str = "https://stack.local";
/// How long the tokens of a run live: the length of a demo or a system test, no more.
pub const LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A fresh Ed25519 key (in memory only), its JWKS file and orders' token file in the
/// run's directory. Nothing is committed: each run makes its own.
pub struct DevAuth {
    issuer: DevIssuer,
    jwks: PathBuf,
    orders_token: PathBuf,
}

impl DevAuth {
    /// Generates the key and writes `dir/jwks.json` and `dir/orders-to-users.token`
    /// (orders' identity towards users: subject `orders`, scope `users.read`).
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn new(dir: &std::path::Path) -> anyhow::Result<Self> {
        let issuer = DevIssuer::generate(ISSUER);
        let jwks = dir.join("jwks.json");
        issuer.write_jwks(&jwks).with_context(|| format!("write {}", jwks.display()))?;
        let orders_token = dir.join("orders-to-users.token");
        let token = issuer.token("orders", "users", &["users.read"], LIFETIME);
        std::fs::write(&orders_token, token.expose_secret())
            .with_context(|| format!("write {}", orders_token.display()))?;
        Ok(Self { issuer, jwks, orders_token })
    }

    /// Env vars turning auth on for a users replica: tokens for audience `users`;
    /// `GetUserByEmail` only for the `users.read` scope (orders).
    pub fn users_env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.jwt_env(
            ["USERS_AUTH__MODE", "USERS_AUTH__JWKS_FILE", "USERS_AUTH__ISSUER", "USERS_AUTH__AUDIENCE"],
            "users",
        );
        env.push(("USERS_AUTH__SCOPES__GETUSERBYEMAIL", "[users.read]".to_owned()));
        env
    }

    /// Env vars turning auth on for an orders replica (audience `orders`) and giving
    /// it its token towards users.
    pub fn orders_env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.jwt_env(
            ["ORDERS_AUTH__MODE", "ORDERS_AUTH__JWKS_FILE", "ORDERS_AUTH__ISSUER", "ORDERS_AUTH__AUDIENCE"],
            "orders",
        );
        env.push(("ORDERS_USERS__TOKEN_FILE", self.orders_token.display().to_string()));
        env
    }

    /// A service's `auth` section in JWT mode, verifying this run's tokens for
    /// `audience`: the values of its `mode`, `jwks_file`, `issuer` and `audience` keys,
    /// named in that order by `keys` (the service's env var names).
    fn jwt_env(&self, keys: [&'static str; 4], audience: &str) -> Vec<(&'static str, String)> {
        let values = ["jwt".to_owned(), self.jwks.display().to_string(), ISSUER.to_owned(), audience.to_owned()];
        keys.into_iter().zip(values).collect()
    }

    /// A short-lived token of subject `subject` for `audience` with `scopes`.
    pub fn token(&self, subject: &str, audience: &str, scopes: &[&str]) -> SecretString {
        self.issuer.token(subject, audience, scopes, LIFETIME)
    }

    /// An interceptor sending a short-lived token of subject `subject` for `audience`
    /// (`users` or `orders`) with `scopes`, for a generated client's `with_interceptor`.
    pub fn bearer(&self, subject: &str, audience: &str, scopes: &[&str]) -> Bearer {
        Bearer(Some(self.issuer.token(subject, audience, scopes, LIFETIME)))
    }
}

/// Adds `authorization: Bearer <token>` to every call (see [`DevAuth::bearer`]), or
/// nothing ([`Bearer::anonymous`]).
#[derive(Clone)]
pub struct Bearer(Option<SecretString>);

impl Bearer {
    /// Sends no credentials: for a stack whose services run with `auth.mode = "none"`.
    pub fn anonymous() -> Self {
        Self(None)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else { return Ok(request) };
        let mut value = MetadataValue::try_from(format!("Bearer {}", token.expose_secret()))
            .map_err(|_| Status::internal("a minted token is always a header value"))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_jwt_mode_with_its_own_audience_under_its_own_prefix() {
        let dir = crate::temp_dir("auth-env");
        let auth = DevAuth::new(&dir).expect("the key files are written");
        let jwks = dir.join("jwks.json").display().to_string();
        let env = [auth.users_env(), auth.orders_env()].concat();
        let expected = [
            ("USERS_AUTH__MODE", "jwt"),
            ("USERS_AUTH__JWKS_FILE", &jwks),
            ("USERS_AUTH__ISSUER", ISSUER),
            ("USERS_AUTH__AUDIENCE", "users"),
            ("USERS_AUTH__SCOPES__GETUSERBYEMAIL", "[users.read]"),
            ("ORDERS_AUTH__MODE", "jwt"),
            ("ORDERS_AUTH__JWKS_FILE", &jwks),
            ("ORDERS_AUTH__ISSUER", ISSUER),
            ("ORDERS_AUTH__AUDIENCE", "orders"),
        ];
        let _ = std::fs::remove_dir_all(&dir);
        let found: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).take(9).collect();
        assert_eq!(found, expected);
        assert_eq!(env[9].0, "ORDERS_USERS__TOKEN_FILE");
    }
}
