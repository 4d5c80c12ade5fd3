//! The same service over Connect with JSON, from a plain HTTP/1.1 client (what `curl`
//! and browsers do): POST, a cacheable GET, and an error with its details.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prost::Message;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Sends `request` over HTTP/1.1; the answer's status and JSON body.
async fn send(request: Request<Full<Bytes>>) -> (StatusCode, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.expect("an HTTP answer");
    let status = response.status();
    let body = response.into_body().collect().await.expect("the whole body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_else(|_| panic!("JSON, not {body:?}")))
}

/// A Connect unary POST of `message` (JSON) to `method` of the users service.
async fn post(app: &TestApp, method: &str, message: &Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/users.v1.UserService/{method}", app.address))
        .header("content-type", "application/json")
        .header("connect-protocol-version", "1")
        .body(Full::new(Bytes::from(message.to_string())))
        .expect("a valid request");
    send(request).await
}

#[tokio::test]
async fn a_user_created_over_connect_json_is_read_back_with_a_get() {
    let app = spawn_app().await;
    let (status, created) = post(&app, "CreateUser", &json!({"email": "connie@example.com", "name": "Connie"})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["user"]["id"].as_str().expect("an id").to_owned();
    assert!(created["user"]["createdAt"].is_string(), "lowerCamelCase RFC 3339 timestamp: {created}");

    let query = format!("connect=v1&encoding=json&message=%7B%22id%22%3A%22{id}%22%7D");
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("{}/users.v1.UserService/GetUser?{query}", app.address))
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let (status, read) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["user"]["id"], id.as_str());
    assert_eq!(read["user"]["email"], "connie@example.com");
}

#[tokio::test]
async fn an_invalid_user_over_connect_json_is_a_400_with_the_bad_request_detail() {
    let app = spawn_app().await;
    let (status, error) = post(&app, "CreateUser", &json!({"email": "not-an-email", "name": "  "})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["code"], "invalid_argument");
    let detail = &error["details"][0];
    assert_eq!(detail["type"], "google.rpc.BadRequest", "{error}");
    let value = STANDARD_NO_PAD.decode(detail["value"].as_str().expect("base64")).expect("unpadded base64");
    let bad_request = tonic_types::pb::BadRequest::decode(&value[..]).expect("a google.rpc.BadRequest");
    let fields: Vec<_> = bad_request.field_violations.iter().map(|violation| violation.field.as_str()).collect();
    assert_eq!(fields, ["email", "name"]);
}

#[tokio::test]
async fn an_unknown_user_over_connect_is_a_404_not_found() {
    let app = spawn_app().await;
    let (status, error) = post(&app, "GetUser", &json!({"id": "0190d3a8-0000-7000-8000-000000000000"})).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{error}");
}

#[tokio::test]
async fn a_browser_preflight_from_an_allowed_origin_is_answered_with_cors_headers() {
    let app = crate::helpers::spawn_app_with(|config| {
        config.server.cors_allowed_origins = vec![http::HeaderValue::from_static("https://app.example.com")];
    })
    .await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let preflight = |origin: &'static str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("{}/users.v1.UserService/CreateUser", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,connect-protocol-version")
            .body(Full::new(Bytes::new()))
            .expect("a valid request")
    };
    let allowed = client.request(preflight("https://app.example.com")).await.expect("an answer");
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let other = client.request(preflight("https://evil.example.com")).await.expect("an answer");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
