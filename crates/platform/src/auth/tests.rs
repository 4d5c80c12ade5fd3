//! Unit tests of token checks, key rotation, the layer's answers and the client token.

use std::{
    convert::Infallible,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue, Request, header::AUTHORIZATION};
use jsonwebtoken::Algorithm;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use testkit::DevIssuer;
use tonic::{Code, Status};
use tower::Service;

use super::*;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "users";
const GET_BY_EMAIL: &str = "/users.v1.UserService/GetUserByEmail";
const CREATE: &str = "/users.v1.UserService/CreateUser";

/// A fresh directory for one test's JWKS file.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("auth-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// An issuer, its JWKS written, and an authenticator over it that checks the file on
/// every call; `GetUserByEmail` needs `users.read`.
fn setup() -> (DevIssuer, PathBuf, Authenticator) {
    let issuer = DevIssuer::generate(ISSUER);
    let jwks = scratch().join("jwks.json");
    issuer.write_jwks(&jwks).expect("written");
    let mut config = AuthConfig::jwt(&jwks, ISSUER, AUDIENCE);
    config.jwks_refresh = Duration::ZERO;
    config.scopes.insert("GetUserByEmail".to_owned(), vec!["users.read".to_owned()]);
    let authenticator = Authenticator::new(&config).expect("keys read");
    (issuer, jwks, authenticator)
}

fn bearer_headers(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().expect("a header value"));
    headers
}

fn code_of(result: Result<Option<Caller>, Status>) -> Code {
    result.map_or_else(|status| status.code(), |_| Code::Ok)
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs()
}

#[test]
fn a_call_without_a_token_is_unauthenticated_and_health_stays_open() {
    let (_, _, auth) = setup();
    let status = auth.check(CREATE, &HeaderMap::new()).expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(code_of(auth.check(CREATE, &bearer_headers("not-a-jwt"))), Code::Unauthenticated);
    let mut basic = HeaderMap::new();
    basic.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
    assert_eq!(code_of(auth.check(CREATE, &basic)), Code::Unauthenticated);
    assert_eq!(auth.check("/grpc.health.v1.Health/Check", &HeaderMap::new()).expect("open"), None);
    assert_eq!(
        auth.check("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", &HeaderMap::new()).expect("open"),
        None
    );
}

#[test]
fn reflection_takes_a_token_when_configured_so() {
    let (issuer, jwks, _) = setup();
    let mut config = AuthConfig::jwt(&jwks, ISSUER, AUDIENCE);
    config.reflection = ReflectionAccess::Authenticated;
    let auth = Authenticator::new(&config).expect("keys read");
    let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    assert_eq!(code_of(auth.check(path, &HeaderMap::new())), Code::Unauthenticated);
    let token = issuer.token("grpcurl", AUDIENCE, &[], Duration::from_secs(60));
    assert_eq!(code_of(auth.check(path, &bearer_headers(token.expose_secret()))), Code::Ok);
}

#[test]
fn with_no_auth_settings_business_calls_are_refused_saying_auth_is_not_configured() {
    let auth = Authenticator::new(&AuthConfig::default()).expect("nothing to read");
    let status = auth.check(CREATE, &bearer_headers("anything")).expect_err("not configured");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("not configured"), "{}", status.message());
    assert_eq!(auth.check("/grpc.health.v1.Health/Check", &HeaderMap::new()).expect("open"), None);
    let open = Authenticator::new(&AuthConfig::none()).expect("nothing to read");
    assert_eq!(open.check(CREATE, &HeaderMap::new()).expect("open"), None);
}

#[test]
fn a_valid_token_passes_with_its_subject_and_a_missing_scope_is_permission_denied() {
    let (issuer, _, auth) = setup();
    let reader = issuer.token("orders", AUDIENCE, &["users.read"], Duration::from_secs(60));
    let caller = auth.check(GET_BY_EMAIL, &bearer_headers(reader.expose_secret())).expect("allowed");
    assert_eq!(caller, Some(Caller { subject: "orders".to_owned() }));

    let writer = issuer.token("demo", AUDIENCE, &["users.write"], Duration::from_secs(60));
    let status = auth.check(GET_BY_EMAIL, &bearer_headers(writer.expose_secret())).expect_err("no users.read");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(!status.message().contains(writer.expose_secret()), "the token is never quoted");
    assert_eq!(code_of(auth.check(CREATE, &bearer_headers(writer.expose_secret()))), Code::Ok, "no rule: any token");

    let listed = issuer.token_with(serde_json::json!({
        "sub": "svc", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 60, "scp": ["users.read"],
    }));
    assert_eq!(code_of(auth.check(GET_BY_EMAIL, &bearer_headers(listed.expose_secret()))), Code::Ok, "scp list");
}

#[test]
fn expired_wrong_issuer_wrong_audience_subjectless_and_unsigned_tokens_are_unauthenticated() {
    let (issuer, _, auth) = setup();
    let claims = |exp: u64, iss: &str, aud: &str| serde_json::json!({"sub": "mallory", "iss": iss, "aud": aud, "exp": exp, "scope": "users.read"});
    let cases = [
        ("expired beyond the leeway", issuer.token_with(claims(now() - 120, ISSUER, AUDIENCE))),
        ("another issuer", issuer.token_with(claims(now() + 60, "https://evil.test", AUDIENCE))),
        ("another audience", issuer.token_with(claims(now() + 60, ISSUER, "orders"))),
        ("no subject", issuer.token_with(serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 60}))),
        ("signed by another key", DevIssuer::generate(ISSUER).token("mallory", AUDIENCE, &[], Duration::from_secs(60))),
    ];
    for (case, token) in cases {
        let status = auth.check(CREATE, &bearer_headers(token.expose_secret())).expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    }
    // alg "none" (RFC 7519 §6): header and claims, no signature.
    use base64::Engine;
    let b64 = |json: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string());
    let unsigned =
        format!("{}.{}.", b64(serde_json::json!({"alg": "none"})), b64(claims(now() + 60, ISSUER, AUDIENCE)));
    assert_eq!(code_of(auth.check(CREATE, &bearer_headers(&unsigned))), Code::Unauthenticated);
    // HS256 keyed with the public key's text (algorithm confusion): not allow-listed.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims(now() + 60, ISSUER, AUDIENCE),
        &jsonwebtoken::EncodingKey::from_secret(issuer.jwks().as_bytes()),
    )
    .expect("signed");
    assert_eq!(code_of(auth.check(CREATE, &bearer_headers(&forged))), Code::Unauthenticated);
    // Expired a moment ago, within the 30s leeway: still accepted (clock skew).
    let skewed = issuer.token_with(claims(now() - 5, ISSUER, AUDIENCE));
    assert_eq!(code_of(auth.check(CREATE, &bearer_headers(skewed.expose_secret()))), Code::Ok);
}

#[test]
fn keys_rotate_when_the_jwks_file_changes_without_a_restart() {
    let (old, jwks, auth) = setup();
    let old_token = old.token("orders", AUDIENCE, &[], Duration::from_secs(60));
    assert_eq!(code_of(auth.check(CREATE, &bearer_headers(old_token.expose_secret()))), Code::Ok);

    let new = DevIssuer::generate(ISSUER);
    let new_token = new.token("orders", AUDIENCE, &[], Duration::from_secs(60));
    assert_eq!(code_of(auth.check(CREATE, &bearer_headers(new_token.expose_secret()))), Code::Unauthenticated);
    new.write_jwks(&jwks).expect("rotated");
    assert_eq!(code_of(auth.check(CREATE, &bearer_headers(new_token.expose_secret()))), Code::Ok, "new key used");
    assert_eq!(
        code_of(auth.check(CREATE, &bearer_headers(old_token.expose_secret()))),
        Code::Unauthenticated,
        "the retired key is gone"
    );

    std::fs::write(&jwks, "{ not json").expect("broken");
    assert_eq!(
        code_of(auth.check(CREATE, &bearer_headers(new_token.expose_secret()))),
        Code::Ok,
        "a broken file keeps the keys in use"
    );
}

#[test]
fn a_missing_jwks_file_fails_start_up_naming_the_key() {
    let config = AuthConfig::jwt("/nonexistent/jwks.json", ISSUER, AUDIENCE);
    let error = Authenticator::new(&config).expect_err("no file").to_string();
    assert!(error.contains("auth.jwks_file") && error.contains("/nonexistent/jwks.json"), "{error}");
}

#[test]
fn bad_auth_settings_are_config_errors_naming_the_key() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Sample {
        auth: AuthConfig,
    }
    for (variable, value, key) in [
        ("SAMPLE_AUTH__ALGORITHMS", "[none]", "auth.algorithms"),
        ("SAMPLE_AUTH__MODE", "off", "auth.mode"),
        ("SAMPLE_AUTH__ISSUER", "https://issuer.test", "auth.jwks_file"),
        ("SAMPLE_AUTH__LEEWAY", "1h", "auth.leeway"),
    ] {
        let error = crate::config::refusal_with_env(variable, value, || {
            crate::config::load_checked("SAMPLE_", None, |s: &Sample| s.auth.check())
        });
        assert!(error.contains(key), "{variable}: {error}");
    }
}

#[tokio::test]
async fn the_log_line_of_a_call_names_the_subject_and_never_the_token() {
    let (logs, _guard) = crate::support::redact::captured::logs();
    let (issuer, _, auth) = setup();
    let ok = tower::service_fn(|_: Request<crate::observability::layer::ClientGoneBody<()>>| async {
        Ok::<_, Infallible>(Status::ok("").into_http::<String>())
    });
    let local = "127.0.0.1:1".parse().expect("address");
    let metrics = crate::observability::metrics::Metrics::new();
    let mut service = tower::ServiceBuilder::new()
        .layer(crate::observability::layer::ServerLayer::new(&metrics, &[api::FILE_DESCRIPTOR_SET], local))
        .layer(AuthLayer::new(auth))
        .service(ok);
    let token = issuer.token("orders-service", AUDIENCE, &["users.read"], Duration::from_secs(60));
    let request = Request::builder()
        .uri(GET_BY_EMAIL)
        .header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()))
        .body(())
        .expect("request");
    let response = service.call(request).await.expect("answered");
    assert!(response.headers().get("grpc-status").is_some_and(|s| s == "0"), "{:?}", response.headers());
    let refused = service.call(Request::builder().uri(CREATE).body(()).expect("request")).await.expect("answered");
    let status = Status::from_header_map(refused.headers()).expect("a status");
    assert_eq!(status.code(), Code::Unauthenticated);

    let logs = logs.text();
    let finished: Vec<&str> = logs.lines().filter(|line| line.contains("rpc finished")).collect();
    assert_eq!(finished.len(), 2, "{logs}");
    assert!(finished[0].contains(r#"enduser.id="orders-service""#), "{}", finished[0]);
    assert!(!logs.contains(token.expose_secret()), "the token never reaches a log line");
}

#[test]
fn a_caller_token_file_is_read_again_when_it_changes_and_never_shown() {
    let path = scratch().join("token");
    std::fs::write(&path, "first-token\n").expect("written");
    let token = CallerToken::file(&path);
    assert_eq!(token.header().expect("read"), "Bearer first-token");
    std::fs::write(&path, "second-token-longer\n").expect("rotated");
    assert_eq!(token.header().expect("read"), "Bearer second-token-longer");
    assert!(token.header().expect("read").is_sensitive());
    assert_eq!(format!("{token:?}"), "CallerToken([redacted])");
    let fixed = CallerToken::fixed(&SecretString::from("abc")).expect("a header value");
    assert_eq!(fixed.header().expect("fixed"), "Bearer abc");
    assert!(CallerToken::fixed(&SecretString::from("a\nb")).is_err());
}

#[test]
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
fn a_scope_rule_from_the_environment_applies_to_its_method_whatever_the_case() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Sample {
        auth: AuthConfig,
    }
    figment::Jail::expect_with(|jail| {
        jail.set_env("SAMPLE_AUTH__SCOPES__GETUSERBYEMAIL", "[users.read]");
        let sample: Sample = crate::config::load("SAMPLE_", None).map_err(|e| e.to_string())?;
        assert_eq!(sample.auth.scopes_for(GET_BY_EMAIL), ["users.read".to_owned()]);
        assert!(sample.auth.scopes_for(CREATE).is_empty());
        Ok(())
    });
}
