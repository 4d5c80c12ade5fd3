//! A Connect JSON client over HTTP/1.1 for the demo's calls: unary `POST` and the cacheable `GET`, as `curl` or a browser makes them.

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tonic::{Code, Status};

/// Calls one service (`base`, e.g. `http://127.0.0.1:50052`) with a bearer token (or none), per the
/// Connect protocol spec (connectrpc.com/docs/protocol): `application/json` bodies,
/// errors read from the spec's JSON error body.
pub struct ConnectJson {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<SecretString>,
}

impl ConnectJson {
    /// A client of the service at `base`, sending `authorization: Bearer <token>` when
    /// `token` is given (`None`: a service with `auth.mode = "none"`).
    pub fn new(base: &str, token: Option<SecretString>) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { client, base: base.trim_end_matches('/').to_owned(), token }
    }

    /// Calls `method` (e.g. `orders.v1.OrderService/CreateOrder`) with `message` (proto3
    /// JSON) in a `POST`; returns the response message.
    ///
    /// # Errors
    /// The call's status: the error body's code and message, or UNAVAILABLE when the
    /// service cannot be reached or answers something that is not Connect.
    pub async fn post(&self, method: &str, message: &Value) -> Result<Value, Status> {
        let request = Request::post(format!("{}/{method}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .header("connect-protocol-version", "1")
            .body(Full::new(Bytes::from(message.to_string())));
        self.send(request).await
    }

    /// Calls `method`, which the proto must mark `NO_SIDE_EFFECTS`, with `message` in
    /// a `GET` query (`connect=v1&encoding=json&message=…`): a request an HTTP cache
    /// can answer. Returns the response message.
    ///
    /// # Errors
    /// As [`ConnectJson::post`].
    pub async fn get(&self, method: &str, message: &Value) -> Result<Value, Status> {
        let query = utf8_percent_encode(&message.to_string(), NON_ALPHANUMERIC).to_string();
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("{}/{method}?connect=v1&encoding=json&message={query}", self.base))
            .body(Full::new(Bytes::new()));
        self.send(request).await
    }

    async fn send(&self, request: http::Result<Request<Full<Bytes>>>) -> Result<Value, Status> {
        let mut request = request.map_err(|error| Status::invalid_argument(format!("not a request: {error}")))?;
        if let Some(token) = &self.token {
            let bearer = format!("Bearer {}", token.expose_secret());
            let mut value =
                bearer.parse::<http::HeaderValue>().map_err(|_| Status::internal("a token header value"))?;
            value.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let response = self.client.request(request).await.map_err(|error| Status::unavailable(error.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|error| Status::unavailable(error.to_string()))?;
        let body: Value = serde_json::from_slice(&body.to_bytes())
            .map_err(|error| Status::unavailable(format!("HTTP {status} without a JSON body: {error}")))?;
        if status == StatusCode::OK {
            return Ok(body);
        }
        let code = body["code"].as_str().map_or(Code::Unknown, ::connect::code_of);
        Err(Status::new(code, body["message"].as_str().unwrap_or_default()))
    }
}
