//! The Connect protocol (connectrpc.com/docs/protocol) on the gRPC port: a tower layer that translates Connect calls into gRPC for the tonic routes and their answers back.
//!
//! What it translates (every rule below is from the Connect protocol spec):
//! - unary calls: `POST` with `application/proto` or `application/json`, and `GET`
//!   (query `connect=v1`, `encoding`, `message`, `base64`, `compression`) for methods
//!   the proto marks `idempotency_level = NO_SIDE_EFFECTS`; trailers come back as
//!   `trailer-` headers, errors as the spec's JSON with the status's HTTP code;
//! - server streaming: `POST` with `application/connect+proto` / `+json`, messages in
//!   5-byte envelopes (flag `0x01` compressed, `0x02` end of stream), the end-stream
//!   message carrying the error and the trailers;
//! - `connect-timeout-ms` becomes `grpc-timeout` ([`timeout`]), so the server's deadline
//!   layer (`platform::deadline`) enforces and propagates it like a gRPC deadline; `connect-protocol-version`, when sent, must be 1;
//! - compression `gzip` and `identity` (`content-encoding`/`accept-encoding` for
//!   unary, `connect-content-encoding`/`connect-accept-encoding` for streams); another
//!   encoding is `unimplemented`; answer messages under [`COMPRESS_MIN_BYTES`] go out
//!   uncompressed;
//! - JSON is canonical proto3 JSON through `prost-reflect` over the served descriptor sets.
//!
//! gRPC and gRPC-Web requests pass through untouched; any other `POST` content type is
//! answered 415. Every request leaves this layer tagged with its [`Protocol`].

use std::{
    collections::HashMap,
    convert::Infallible,
    io::{Read, Write},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use base64::{
    Engine,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig, general_purpose::STANDARD_NO_PAD},
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{StreamExt, future::BoxFuture};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::{Code, body::Body};
use tower::{BoxError, Layer, Service};

pub mod timeout;

/// Largest request message accepted, after decompression (bytes): tonic's default
/// `max_decoding_message_size`, so Connect and gRPC callers meet the same limit.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Smallest answer message compressed (bytes): a smaller one goes out uncompressed even
/// to a client that accepts gzip, which the Connect protocol allows (the encoding is the
/// server's choice among those the client accepts; an enveloped message says in its own
/// flag whether it is compressed). Below about a kilobyte gzip saves little (its header
/// and trailer alone are 18 bytes) and each message pays for setting up a compressor
/// (flate2 zeroes over 200 KiB of state): skipping that cut a Connect JSON GetUser's CPU
/// by 24% (docs/perf.md, section 16). connect-go's `WithCompressMinBytes` is the same knob.
pub const COMPRESS_MIN_BYTES: usize = 1024;

/// The protocol a call arrived in; [`ConnectLayer`] puts it in every request's
/// extensions, and `observe` reports it as `rpc.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC over HTTP/2.
    Grpc,
    /// gRPC-Web (translated to gRPC by tonic-web below this layer).
    GrpcWeb,
    /// Connect, translated to gRPC by this layer.
    Connect,
}

impl Protocol {
    /// The attribute value: `grpc`, `grpc_web` or `connect`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::GrpcWeb => "grpc_web",
            Self::Connect => "connect",
        }
    }
}

/// In the extensions of a call that arrived as a Connect `GET`: its raw query string,
/// for handlers that report how they were called (the conformance server does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectGet {
    /// The query as sent, still percent-encoded (`connect=v1&encoding=json&message=...`).
    pub query: String,
}

/// What the layer knows of one method from the descriptors.
#[derive(Clone, Debug)]
struct MethodInfo {
    input: MessageDescriptor,
    output: MessageDescriptor,
    /// `idempotency_level = NO_SIDE_EFFECTS`: callable with `GET`.
    no_side_effects: bool,
}

/// Builds [`Connect`] services over the methods of some descriptor sets.
#[derive(Clone)]
pub struct ConnectLayer {
    methods: Arc<HashMap<String, MethodInfo>>,
}

impl ConnectLayer {
    /// Reads the methods (and so the JSON shapes) of `descriptor_sets` (encoded
    /// `FileDescriptorSet`s). A set that does not decode is logged and skipped: its
    /// methods still answer Connect's binary codec, JSON calls to them are `unimplemented`.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        let mut methods = HashMap::new();
        for set in descriptor_sets {
            let pool = match DescriptorPool::decode(*set) {
                Ok(pool) => pool,
                Err(error) => {
                    tracing::error!(%error, "descriptor set does not decode; Connect JSON is off for its methods");
                    continue;
                }
            };
            for service in pool.services() {
                for method in service.methods() {
                    let no_side_effects =
                        method.method_descriptor_proto().options.as_ref().and_then(|options| options.idempotency_level)
                            == Some(prost_types::method_options::IdempotencyLevel::NoSideEffects as i32);
                    methods.insert(
                        format!("/{}/{}", service.full_name(), method.name()),
                        MethodInfo { input: method.input(), output: method.output(), no_side_effects },
                    );
                }
            }
        }
        Self { methods: Arc::new(methods) }
    }
}

impl<S> Layer<S> for ConnectLayer {
    type Service = Connect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Connect { inner, methods: self.methods.clone() }
    }
}

/// Serves Connect in front of gRPC routes (see the module docs).
#[derive(Clone)]
pub struct Connect<S> {
    inner: S,
    methods: Arc<HashMap<String, MethodInfo>>,
}

impl<S, ResBody> Service<Request<Body>> for Connect<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The service polled ready is the one that serves; a fresh clone waits its turn.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let kind = Kind::of(&request);
        let protocol = match kind {
            Kind::Grpc | Kind::UnsupportedGrpc => Protocol::Grpc,
            Kind::GrpcWeb => Protocol::GrpcWeb,
            _ => Protocol::Connect,
        };
        request.extensions_mut().insert(protocol);
        let method = self.methods.get(request.uri().path()).cloned();
        let refusal = match kind {
            Kind::Grpc | Kind::GrpcWeb | Kind::Unsupported | Kind::UnsupportedGrpc => None,
            _ if method.is_none() => Some((StatusCode::NOT_FOUND, unknown_method())),
            Kind::Unary(_) | Kind::Stream(_) if request.method() != Method::POST => Some((
                StatusCode::METHOD_NOT_ALLOWED,
                ConnectError::new(Code::Unknown, "Connect calls are POST (or GET for methods without side effects)"),
            )),
            _ => None,
        };
        Box::pin(async move {
            let refused = refusal.is_some() || matches!(kind, Kind::Unsupported | Kind::UnsupportedGrpc);
            let request = if refused {
                // Read (and drop) the body before refusing: answered while it is still
                // unread, an HTTP/1.1 client still sending it sees a broken pipe.
                let _ = read_body(request.into_body()).await;
                Request::new(Body::empty())
            } else {
                request
            };
            if let Some((status, error)) = refusal {
                let mut response = error_response(status, &error, &HeaderMap::new());
                if status == StatusCode::METHOD_NOT_ALLOWED {
                    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
                }
                return Ok(response);
            }
            match kind {
                Kind::UnsupportedGrpc => {
                    // gRPC over HTTP/2: an unsupported content type is answered 415.
                    let mut response = Response::new(Body::empty());
                    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
                    response.headers_mut().insert("grpc-status", HeaderValue::from_static("12"));
                    response.headers_mut().insert("grpc-message", HeaderValue::from_static("unsupported%20codec"));
                    Ok(response)
                }
                Kind::GrpcWeb if request.version() < http::Version::HTTP_2 => {
                    // gRPC-Web over HTTP/1.1 has no request streaming (browsers cannot send
                    // it), so read the body first: answered while the body is still
                    // unread, hyper closes the kept-alive connection, which a client
                    // reusing it sees as "server closed idle connection".
                    let (parts, body) = request.into_parts();
                    match read_body(body).await {
                        Ok(body) => {
                            let request = Request::from_parts(parts, Body::new(Full::new(body)));
                            inner.call(request).await.map(|response| response.map(Body::new))
                        }
                        Err(error) => Ok(tonic::Status::new(error.code, error.message).into_http()),
                    }
                }
                Kind::Grpc | Kind::GrpcWeb => inner.call(request).await.map(|response| response.map(Body::new)),
                Kind::Unsupported => {
                    // As connect-go: 415, no body, and the types this port accepts.
                    let mut response = Response::new(Body::empty());
                    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
                    response.headers_mut().insert(
                        "accept-post",
                        HeaderValue::from_static(
                            "application/grpc, application/grpc+proto, application/grpc-web, application/grpc-web+proto, \
                             application/json, application/proto, application/connect+json, application/connect+proto",
                        ),
                    );
                    Ok(response)
                }
                Kind::Unary(_) | Kind::Get => {
                    let accept = Compression::accepted(request.headers().get(header::ACCEPT_ENCODING));
                    let prepared = match kind {
                        Kind::Unary(codec) => prepare_unary(request, codec, method.as_ref()).await,
                        _ => prepare_get(request, method.as_ref()),
                    };
                    match prepared {
                        Ok((codec, grpc)) => {
                            let answer = call_unary(inner, grpc).await?;
                            Ok(unary_response(answer, codec, method.as_ref(), accept))
                        }
                        Err(refused) => Ok(*refused),
                    }
                }
                Kind::Stream(codec) => stream(inner, request, codec, method).await,
            }
        })
    }
}

/// A message codec: the binary protobuf encoding or canonical proto3 JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Proto,
    Json,
}

impl Codec {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "proto" => Some(Self::Proto),
            "json" | "json; charset=utf-8" => Some(Self::Json),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Proto => "proto",
            Self::Json => "json",
        }
    }

    /// The request message as binary protobuf, for the gRPC routes.
    fn decode_request(self, method: Option<&MethodInfo>, message: Bytes) -> Result<Bytes, ConnectError> {
        match self {
            Self::Proto => Ok(message),
            Self::Json => {
                let method = method.ok_or_else(unknown_method)?;
                let text: &[u8] = if message.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &message };
                let mut deserializer = serde_json::Deserializer::from_slice(text);
                let decoded = DynamicMessage::deserialize_with_options(
                    method.input.clone(),
                    &mut deserializer,
                    // connect-go discards unknown fields as well (protojson DiscardUnknown).
                    &DeserializeOptions::new().deny_unknown_fields(false),
                )
                .and_then(|message| deserializer.end().map(|()| message))
                .map_err(|error| {
                    ConnectError::new(
                        Code::InvalidArgument,
                        format!("the JSON request message does not parse: {error}"),
                    )
                })?;
                Ok(decoded.encode_to_vec().into())
            }
        }
    }

    /// A response message from the gRPC routes in this codec.
    fn encode_answer(self, method: Option<&MethodInfo>, message: Bytes) -> Result<Bytes, ConnectError> {
        match self {
            Self::Proto => Ok(message),
            Self::Json => {
                let method = method.ok_or_else(unknown_method)?;
                let decoded = DynamicMessage::decode(method.output.clone(), message)
                    .map_err(|error| ConnectError::new(Code::Internal, format!("response message: {error}")))?;
                let mut out = Vec::new();
                let mut serializer = serde_json::Serializer::new(&mut out);
                decoded
                    .serialize_with_options(&mut serializer, &SerializeOptions::new())
                    .map_err(|error| ConnectError::new(Code::Internal, format!("response message: {error}")))?;
                Ok(out.into())
            }
        }
    }
}

fn unknown_method() -> ConnectError {
    ConnectError::new(Code::Unimplemented, "no such method (or no descriptor for its JSON form)")
}

/// How a request is served, from its method and content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Grpc,
    GrpcWeb,
    Unary(Codec),
    Stream(Codec),
    Get,
    Unsupported,
    /// gRPC or gRPC-Web with a codec other than proto.
    UnsupportedGrpc,
}

impl Kind {
    fn of<B>(request: &Request<B>) -> Self {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        // gRPC's codec suffix: none or `proto` (tonic's routes speak no other codec).
        let proto_or_nothing = |rest: &str| matches!(rest.split(';').next().unwrap_or("").trim(), "" | "+proto");
        if let Some(rest) = content_type.strip_prefix("application/grpc-web-text") {
            if proto_or_nothing(rest) { Self::GrpcWeb } else { Self::UnsupportedGrpc }
        } else if let Some(rest) = content_type.strip_prefix("application/grpc-web") {
            if proto_or_nothing(rest) { Self::GrpcWeb } else { Self::UnsupportedGrpc }
        } else if let Some(rest) = content_type.strip_prefix("application/grpc") {
            if proto_or_nothing(rest) { Self::Grpc } else { Self::UnsupportedGrpc }
        } else if request.method() == Method::GET {
            Self::Get
        } else if let Some(codec) = content_type.strip_prefix("application/connect+") {
            Codec::parse(codec).map_or(Self::Unsupported, Self::Stream)
        } else if let Some(codec) = content_type.strip_prefix("application/") {
            Codec::parse(codec).map_or(Self::Unsupported, Self::Unary)
        } else {
            Self::Unsupported
        }
    }
}

/// A message compression: `identity` or `gzip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    Identity,
    Gzip,
}

impl Compression {
    /// `None` (absent) is identity; anything but identity or gzip is `unimplemented`.
    fn parse(value: Option<&str>) -> Result<Self, ConnectError> {
        match value.map(str::trim) {
            None | Some("" | "identity") => Ok(Self::Identity),
            Some("gzip") => Ok(Self::Gzip),
            Some(other) => Err(ConnectError::new(
                Code::Unimplemented,
                format!("unsupported compression {:?}; supported: gzip, identity", truncate(other)),
            )),
        }
    }

    /// gzip when an accept header lists it.
    fn accepted(value: Option<&HeaderValue>) -> Self {
        let accepts_gzip = value
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.split(',').any(|name| name.split(';').next().unwrap_or("").trim() == "gzip"));
        if accepts_gzip { Self::Gzip } else { Self::Identity }
    }

    fn decompress(self, data: Bytes) -> Result<Bytes, ConnectError> {
        match self {
            Self::Identity => Ok(data),
            Self::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&data[..])
                    .take(MAX_MESSAGE_BYTES as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|error| ConnectError::new(Code::InvalidArgument, format!("gzip: {error}")))?;
                if out.len() > MAX_MESSAGE_BYTES {
                    return Err(too_large());
                }
                Ok(out.into())
            }
        }
    }

    /// `data` compressed with this compression when it is at least
    /// [`COMPRESS_MIN_BYTES`] long, and the compression it went out with.
    fn compress(self, data: Bytes) -> (Self, Bytes) {
        match self {
            Self::Gzip if data.len() >= COMPRESS_MIN_BYTES => (Self::Gzip, gzip(&data)),
            _ => (Self::Identity, data),
        }
    }
}

/// `data` in gzip (RFC 1952) at flate2's default level.
fn gzip(data: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default().into()
}

fn too_large() -> ConnectError {
    ConnectError::new(Code::ResourceExhausted, format!("the request message exceeds {MAX_MESSAGE_BYTES} bytes"))
}

fn truncate(text: &str) -> &str {
    text.char_indices().nth(40).map_or(text, |(end, _)| &text[..end])
}

/// A Connect error: code, message, `google.rpc.Status` details and the metadata sent with it.
#[derive(Debug, Clone, PartialEq)]
struct ConnectError {
    code: Code,
    message: String,
    details: Vec<prost_types::Any>,
}

impl ConnectError {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Vec::new() }
    }

    /// The spec's JSON error: `{"code": "not_found", "message": "...", "details": [{"type": ..., "value": base64}]}`.
    fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), code_name(self.code).into());
        if !self.message.is_empty() {
            error.insert("message".into(), self.message.clone().into());
        }
        if !self.details.is_empty() {
            let details = self
                .details
                .iter()
                .map(|any| {
                    let kind = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
                    serde_json::json!({"type": kind, "value": STANDARD_NO_PAD.encode(&any.value)})
                })
                .collect::<Vec<_>>();
            error.insert("details".into(), details.into());
        }
        error.into()
    }
}

/// The code of a Connect error's `code` name (Connect spec, "Error Codes"), e.g.
/// `invalid_argument`; `unknown` for a name the spec does not define: how a Connect
/// client reads an error body.
pub fn code_of(name: &str) -> Code {
    (0..=16).map(Code::from_i32).find(|code| code_name(*code) == name).unwrap_or(Code::Unknown)
}

/// The Connect name of a code (Connect spec, "Error Codes").
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary Connect error (Connect spec, "Error Codes" table).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC status in `map` (trailers, or headers of a trailers-only answer); `None`
/// when there is no `grpc-status`.
fn grpc_error(map: &HeaderMap) -> Option<Result<(), ConnectError>> {
    let code = map.get("grpc-status")?.to_str().ok().and_then(|code| code.parse::<i32>().ok()).map(Code::from);
    let Some(code) = code else {
        return Some(Err(ConnectError::new(Code::Unknown, "malformed grpc-status")));
    };
    if code == Code::Ok {
        return Some(Ok(()));
    }
    let message = map
        .get("grpc-message")
        .map(|value| percent_encoding::percent_decode(value.as_bytes()).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let details = map
        .get("grpc-status-details-bin")
        .and_then(|value| decode_binary_header(value.as_bytes()))
        .and_then(|bytes| tonic_types::Status::decode(&bytes[..]).ok())
        .map(|status| status.details)
        .unwrap_or_default();
    Some(Err(ConnectError { code, message, details }))
}

/// Base64 with or without padding, standard or URL-safe alphabet (`-bin` headers, GET `message`).
fn decode_binary_header(value: &[u8]) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    STANDARD.decode(value).ok().or_else(|| URL.decode(value).ok())
}

/// Headers that are gRPC framing, not metadata, and do not cross to the Connect side.
fn is_grpc_framing(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("grpc-")
        || matches!(name, "content-type" | "content-length" | "te" | "trailer" | "content-encoding")
}

/// The metadata of `map` (no gRPC framing headers), each name prefixed with `prefix`.
fn metadata(map: &HeaderMap, prefix: &str, into: &mut HeaderMap) {
    for (name, value) in map {
        if is_grpc_framing(name) {
            continue;
        }
        if let Ok(name) = HeaderName::try_from(format!("{prefix}{name}")) {
            into.append(name, value.clone());
        }
    }
}

/// A unary error answer: its HTTP status, the JSON body, `headers` as they are.
fn error_response(status: StatusCode, error: &ConnectError, headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from(error.to_json().to_string()))));
    *response.status_mut() = status;
    *response.headers_mut() = headers.clone();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn unary_error(error: &ConnectError, headers: &HeaderMap) -> Response<Body> {
    error_response(http_status(error.code), error, headers)
}

/// `connect-timeout-ms` (1 to 10 digits, Connect spec) as a duration.
fn parse_timeout_ms(value: &HeaderValue) -> Result<Duration, ConnectError> {
    value
        .to_str()
        .ok()
        .filter(|digits| !digits.is_empty() && digits.len() <= 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u64>().ok())
        .map(Duration::from_millis)
        .ok_or_else(|| {
            ConnectError::new(Code::InvalidArgument, "connect-timeout-ms must be 1 to 10 digits (milliseconds)")
        })
}

/// The headers of the gRPC request made for a Connect call: its metadata, the
/// deadline as `grpc-timeout`, gRPC's content type.
fn grpc_headers(connect: &HeaderMap) -> Result<HeaderMap, ConnectError> {
    if let Some(version) = connect.get("connect-protocol-version")
        && version != "1"
    {
        return Err(ConnectError::new(Code::InvalidArgument, "connect-protocol-version must be 1"));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in connect {
        let skip = name.as_str().starts_with("connect-")
            || name.as_str().starts_with("grpc-")
            || matches!(
                name.as_str(),
                "content-type" | "content-length" | "content-encoding" | "accept-encoding" | "te" | "transfer-encoding"
            );
        if !skip {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(timeout) = connect.get("connect-timeout-ms") {
        headers.insert(timeout::GRPC_TIMEOUT, timeout::encode_timeout(parse_timeout_ms(timeout)?));
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    Ok(headers)
}

/// One gRPC length-prefixed message (uncompressed).
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(message);
    frame.freeze()
}

/// One envelope (Connect streaming; gRPC uses the same shape): flags, the length, the data.
#[derive(Debug, PartialEq)]
struct Envelope {
    flags: u8,
    data: Bytes,
}

/// Takes every complete envelope off the front of `buffer`, leaving a partial one.
///
/// # Errors
/// `resource_exhausted` when one declares more than [`MAX_MESSAGE_BYTES`].
fn take_envelopes(buffer: &mut BytesMut) -> Result<Vec<Envelope>, ConnectError> {
    let mut envelopes = Vec::new();
    while buffer.len() >= 5 {
        let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
        if length > MAX_MESSAGE_BYTES {
            return Err(too_large());
        }
        if buffer.len() < 5 + length {
            break;
        }
        let flags = buffer.get_u8();
        buffer.advance(4);
        envelopes.push(Envelope { flags, data: buffer.split_to(length).freeze() });
    }
    Ok(envelopes)
}

/// Reads a whole request body, at most a little over [`MAX_MESSAGE_BYTES`].
async fn read_body(body: Body) -> Result<Bytes, ConnectError> {
    Limited::new(body, MAX_MESSAGE_BYTES + 5).collect().await.map(|collected| collected.to_bytes()).map_err(|error| {
        if error.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            ConnectError::new(Code::Unknown, format!("reading the request: {error}"))
        }
    })
}

/// The gRPC request for a call with one request message.
fn grpc_request(parts: &http::request::Parts, headers: HeaderMap, message: &[u8]) -> Request<Body> {
    let mut request = Request::new(Body::new(Full::new(grpc_frame(message))));
    *request.method_mut() = Method::POST;
    let path = parts.uri.path().parse().unwrap_or_else(|_| parts.uri.clone());
    *request.uri_mut() = path;
    // The routes below are gRPC, which is HTTP/2 only (tonic-web refuses other HTTP/1.1
    // requests); the connection's own version does not change.
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = headers;
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// The one response message of a unary gRPC answer, with its headers and trailers.
struct UnaryAnswer {
    headers: HeaderMap,
    trailers: HeaderMap,
    result: Result<Bytes, ConnectError>,
}

async fn call_unary<S, ResBody>(mut inner: S, request: Request<Body>) -> Result<UnaryAnswer, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let response = inner.call(request).await?;
    let (parts, body) = response.into_parts();
    // Trailers-only: the status (and every piece of metadata) came in the headers.
    if let Some(status) = grpc_error(&parts.headers) {
        return Ok(UnaryAnswer {
            headers: HeaderMap::new(),
            trailers: parts.headers,
            result: status.and(Err(ConnectError::new(Code::Unimplemented, "no response message"))),
        });
    }
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(error) => {
            let status = tonic::Status::from_error(error.into());
            return Ok(UnaryAnswer {
                headers: parts.headers,
                trailers: HeaderMap::new(),
                result: Err(ConnectError::new(status.code(), status.message())),
            });
        }
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let mut data = BytesMut::from(collected.to_bytes());
    let result = match grpc_error(&trailers) {
        Some(Err(error)) => Err(error),
        None => Err(ConnectError::new(Code::Internal, "the gRPC answer ended without a status")),
        Some(Ok(())) => match take_envelopes(&mut data) {
            Ok(mut messages) if messages.len() == 1 && data.is_empty() => {
                let message = messages.remove(0);
                if message.flags & 1 == 1 {
                    Err(ConnectError::new(Code::Internal, "the gRPC answer was compressed unasked"))
                } else {
                    Ok(message.data)
                }
            }
            Ok(_) => Err(ConnectError::new(Code::Unimplemented, "a unary answer must carry exactly one message")),
            Err(error) => Err(error),
        },
    };
    Ok(UnaryAnswer { headers: parts.headers, trailers, result })
}

/// A unary answer: the message in `codec`, metadata as headers and `trailer-` headers.
fn unary_response(
    answer: UnaryAnswer,
    codec: Codec,
    method: Option<&MethodInfo>,
    compression: Compression,
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    metadata(&answer.headers, "", &mut headers);
    metadata(&answer.trailers, "trailer-", &mut headers);
    let message = match answer.result.and_then(|message| codec.encode_answer(method, message)) {
        Ok(message) => message,
        Err(error) => return unary_error(&error, &headers),
    };
    let (compression, body) = compression.compress(message);
    let mut response = Response::new(Body::new(Full::new(body)));
    *response.headers_mut() = headers;
    let content_type = format!("application/{}", codec.name());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::try_from(content_type).expect("ASCII"));
    if compression == Compression::Gzip {
        response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// A unary Connect `POST` as the gRPC request to make, with the codec of its answer;
/// or the Connect error response that refuses it (boxed: it is large).
async fn prepare_unary(
    request: Request<Body>,
    codec: Codec,
    method: Option<&MethodInfo>,
) -> Result<(Codec, Request<Body>), Box<Response<Body>>> {
    let (parts, body) = request.into_parts();
    let prepared = async {
        // The body first: refused before it is read, an HTTP/1.1 client still sending
        // it sees a broken pipe instead of the answer.
        let body = read_body(body).await?;
        let headers = grpc_headers(&parts.headers)?;
        let encoding = parts.headers.get(header::CONTENT_ENCODING).and_then(|value| value.to_str().ok());
        let compression = Compression::parse(encoding)?;
        let message = compression.decompress(body)?;
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(too_large());
        }
        let message = codec.decode_request(method, message)?;
        Ok((codec, grpc_request(&parts, headers, &message)))
    };
    prepared.await.map_err(|error| Box::new(unary_error(&error, &HeaderMap::new())))
}

/// The query of a Connect `GET`: the message, decoded and decompressed, and its codec.
fn parse_get_query(query: &str) -> Result<(Codec, Bytes), ConnectError> {
    let mut message = None;
    let (mut encoding, mut base64, mut compression) = (None, false, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Query values are form-encoded: `+` is a space.
        let value = value.replace('+', " ");
        let value = percent_encoding::percent_decode_str(&value).collect::<Vec<u8>>();
        match key {
            "message" => message = Some(value),
            "encoding" => encoding = Some(String::from_utf8_lossy(&value).into_owned()),
            "base64" => base64 = value == b"1",
            "compression" => compression = Some(String::from_utf8_lossy(&value).into_owned()),
            _ => {}
        }
    }
    let encoding =
        encoding.ok_or_else(|| ConnectError::new(Code::InvalidArgument, "GET needs an encoding parameter"))?;
    let codec = Codec::parse(&encoding).ok_or_else(|| {
        ConnectError::new(Code::InvalidArgument, format!("unsupported encoding {:?}", truncate(&encoding)))
    })?;
    let message = message.unwrap_or_default();
    let message = if base64 {
        decode_binary_header(&message)
            .ok_or_else(|| ConnectError::new(Code::InvalidArgument, "message is not base64"))?
    } else {
        message
    };
    let message = Compression::parse(compression.as_deref())?.decompress(message.into())?;
    Ok((codec, message))
}

/// A unary Connect `GET` (for methods without side effects only) as the gRPC request
/// to make, with the codec of its answer; or the Connect error response that refuses
/// it (boxed: it is large).
fn prepare_get(
    request: Request<Body>,
    method: Option<&MethodInfo>,
) -> Result<(Codec, Request<Body>), Box<Response<Body>>> {
    let (parts, _) = request.into_parts();
    let prepared = (|| {
        let Some(info) = method else {
            return Err((StatusCode::NOT_FOUND, unknown_method()));
        };
        if !info.no_side_effects {
            let error = ConnectError::new(Code::Unknown, "GET is for methods with idempotency_level NO_SIDE_EFFECTS");
            return Err((StatusCode::METHOD_NOT_ALLOWED, error));
        }
        let (codec, message) =
            parse_get_query(parts.uri.query().unwrap_or_default()).map_err(|e| (http_status(e.code), e))?;
        let headers = grpc_headers(&parts.headers).map_err(|e| (http_status(e.code), e))?;
        let message = codec.decode_request(method, message).map_err(|e| (http_status(e.code), e))?;
        let mut grpc = grpc_request(&parts, headers, &message);
        grpc.extensions_mut().insert(ConnectGet { query: parts.uri.query().unwrap_or_default().to_owned() });
        Ok((codec, grpc))
    })();
    prepared.map_err(|(status, error)| {
        let mut response = error_response(status, &error, &HeaderMap::new());
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        Box::new(response)
    })
}

/// The end-stream message: `{"error": {...}, "metadata": {"name": ["value"]}}`.
fn end_stream(error: Option<&ConnectError>, trailers: &HeaderMap) -> Bytes {
    let mut metadata_json = serde_json::Map::new();
    let mut filtered = HeaderMap::new();
    metadata(trailers, "", &mut filtered);
    for name in filtered.keys() {
        let values = filtered
            .get_all(name)
            .iter()
            .map(|value| serde_json::Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect::<Vec<_>>();
        metadata_json.insert(name.as_str().to_owned(), values.into());
    }
    let mut end = serde_json::Map::new();
    if let Some(error) = error {
        end.insert("error".into(), error.to_json());
    }
    if !metadata_json.is_empty() {
        end.insert("metadata".into(), metadata_json.into());
    }
    serde_json::Value::from(end).to_string().into()
}

fn connect_envelope(flags: u8, data: &[u8]) -> Bytes {
    let mut envelope = BytesMut::with_capacity(5 + data.len());
    envelope.put_u8(flags);
    envelope.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    envelope.put_slice(data);
    envelope.freeze()
}

/// A streaming answer: HTTP 200, the content type, `headers`, then `body`.
fn stream_response(codec: Codec, compression: Compression, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    let content_type = format!("application/connect+{}", codec.name());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::try_from(content_type).expect("ASCII"));
    if compression == Compression::Gzip {
        response.headers_mut().insert("connect-content-encoding", HeaderValue::from_static("gzip"));
    }
    response
}

fn only_end_stream(codec: Codec, error: &ConnectError, trailers: &HeaderMap) -> Response<Body> {
    let end = connect_envelope(2, &end_stream(Some(error), trailers));
    stream_response(codec, Compression::Identity, HeaderMap::new(), Body::new(Full::new(end)))
}

/// A server-streaming (or any enveloped) Connect call.
async fn stream<S, ResBody>(
    mut inner: S,
    request: Request<Body>,
    codec: Codec,
    method: Option<MethodInfo>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let accept = Compression::accepted(parts.headers.get("connect-accept-encoding"));
    let prepared = async {
        // The body first, as for unary calls.
        let mut buffer = BytesMut::from(read_body(body).await?);
        let headers = grpc_headers(&parts.headers)?;
        let encoding = parts.headers.get("connect-content-encoding").and_then(|value| value.to_str().ok());
        let compression = Compression::parse(encoding)?;
        let mut grpc_body = BytesMut::new();
        let envelopes = take_envelopes(&mut buffer)?;
        if !buffer.is_empty() {
            return Err(ConnectError::new(Code::InvalidArgument, "the request ends inside an envelope"));
        }
        // Server streaming is the only streaming this port serves: one request message.
        if envelopes.len() != 1 {
            return Err(ConnectError::new(
                Code::Unimplemented,
                format!("a server-streaming call takes exactly one request message, not {}", envelopes.len()),
            ));
        }
        for envelope in envelopes {
            let data = match (envelope.flags & 1 == 1, compression) {
                (false, _) => envelope.data,
                (true, Compression::Identity) => {
                    return Err(ConnectError::new(
                        Code::Internal,
                        "a compressed message but no connect-content-encoding",
                    ));
                }
                (true, compression) => compression.decompress(envelope.data)?,
            };
            if data.len() > MAX_MESSAGE_BYTES {
                return Err(too_large());
            }
            grpc_body.extend_from_slice(&grpc_frame(&codec.decode_request(method.as_ref(), data)?));
        }
        let mut grpc = grpc_request(&parts, headers, &[]);
        *grpc.body_mut() = Body::new(Full::new(grpc_body.freeze()));
        Ok(grpc)
    };
    let grpc = match prepared.await {
        Ok(grpc) => grpc,
        Err(error) => return Ok(only_end_stream(codec, &error, &HeaderMap::new())),
    };
    let response = inner.call(grpc).await?;
    let (response_parts, body) = response.into_parts();
    if let Some(status) = grpc_error(&response_parts.headers) {
        let error = status.err().unwrap_or_else(|| ConnectError::new(Code::Unknown, "no end of stream"));
        return Ok(only_end_stream(codec, &error, &response_parts.headers));
    }
    let mut headers = HeaderMap::new();
    metadata(&response_parts.headers, "", &mut headers);
    let state = StreamState { body: Box::pin(body), buffer: BytesMut::new(), done: false, codec, accept, method };
    let frames = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let chunk = state.next_chunk().await;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), state))
    });
    Ok(stream_response(codec, accept, headers, Body::new(StreamBody::new(frames.boxed()))))
}

/// Translating a gRPC response body into Connect envelopes as it arrives.
struct StreamState<B> {
    body: std::pin::Pin<Box<B>>,
    buffer: BytesMut,
    done: bool,
    codec: Codec,
    accept: Compression,
    method: Option<MethodInfo>,
}

impl<B> StreamState<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// The next bytes to send: messages, or the end-stream message (then `done`).
    async fn next_chunk(&mut self) -> Bytes {
        loop {
            let frame = match self.body.frame().await {
                None => {
                    return self.finish(
                        Some(ConnectError::new(Code::Internal, "the gRPC answer ended without a status")),
                        &HeaderMap::new(),
                    );
                }
                Some(Err(error)) => {
                    let status = tonic::Status::from_error(error.into());
                    return self.finish(Some(ConnectError::new(status.code(), status.message())), &HeaderMap::new());
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    self.buffer.extend_from_slice(&data);
                    let envelopes = match take_envelopes(&mut self.buffer) {
                        Ok(envelopes) => envelopes,
                        Err(error) => return self.finish(Some(error), &HeaderMap::new()),
                    };
                    let mut out = BytesMut::new();
                    for envelope in envelopes {
                        match self.codec.encode_answer(self.method.as_ref(), envelope.data) {
                            Ok(message) => {
                                let (flags, message) = match self.accept.compress(message) {
                                    (Compression::Gzip, message) => (1, message),
                                    (Compression::Identity, message) => (0, message),
                                };
                                out.extend_from_slice(&connect_envelope(flags, &message));
                            }
                            Err(error) => {
                                out.extend_from_slice(&self.finish(Some(error), &HeaderMap::new()));
                                return out.freeze();
                            }
                        }
                    }
                    if !out.is_empty() {
                        return out.freeze();
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let error = match grpc_error(&trailers) {
                            Some(Ok(())) => None,
                            Some(Err(error)) => Some(error),
                            None => Some(ConnectError::new(Code::Internal, "the gRPC answer ended without a status")),
                        };
                        return self.finish(error, &trailers);
                    }
                }
            }
        }
    }

    fn finish(&mut self, error: Option<ConnectError>, trailers: &HeaderMap) -> Bytes {
        self.done = true;
        connect_envelope(2, &end_stream(error.as_ref(), trailers))
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn every_code_has_the_http_status_of_the_connect_table() {
        let table = [
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
        assert_eq!(code_name(Code::Cancelled), "canceled");
        assert_eq!(code_name(Code::InvalidArgument), "invalid_argument");
    }

    #[test]
    fn every_code_reads_back_from_its_connect_name_and_a_made_up_name_is_unknown() {
        for code in (0..=16).map(Code::from_i32) {
            assert_eq!(code_of(code_name(code)), code);
        }
        assert_eq!(code_of("cancelled"), Code::Unknown, "the spec spells it canceled");
        assert_eq!(code_of(""), Code::Unknown);
    }

    #[test]
    fn envelopes_are_taken_whole_and_a_partial_one_waits() {
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&connect_envelope(0, b"abc"));
        buffer.extend_from_slice(&connect_envelope(2, b"{}"));
        buffer.extend_from_slice(&[0, 0, 0, 0, 9, 1, 2]);
        let envelopes = take_envelopes(&mut buffer).expect("well formed");
        assert_eq!(
            envelopes,
            vec![
                Envelope { flags: 0, data: Bytes::from_static(b"abc") },
                Envelope { flags: 2, data: Bytes::from_static(b"{}") }
            ]
        );
        assert_eq!(&buffer[..], &[0, 0, 0, 0, 9, 1, 2]);
    }

    #[test]
    fn an_envelope_declaring_more_than_the_limit_is_resource_exhausted() {
        let mut buffer = BytesMut::new();
        buffer.put_u8(0);
        buffer.put_u32(u32::try_from(MAX_MESSAGE_BYTES + 1).expect("fits"));
        let error = take_envelopes(&mut buffer).expect_err("too large");
        assert_eq!(error.code, Code::ResourceExhausted);
    }

    #[test]
    fn a_get_query_with_base64_and_gzip_decodes_to_the_message() {
        let compressed = gzip(b"\x0a\x03abc");
        let query = format!(
            "connect=v1&encoding=proto&base64=1&compression=gzip&message={}",
            URL_SAFE_NO_PAD.encode(&compressed)
        );
        let (codec, message) = parse_get_query(&query).expect("valid");
        assert_eq!(codec, Codec::Proto);
        assert_eq!(&message[..], b"\x0a\x03abc");
    }

    #[test]
    fn a_get_query_with_percent_encoded_json_decodes_to_the_message() {
        let (codec, message) =
            parse_get_query("encoding=json&message=%7B%22id%22%3A%22u%201%22%7D&connect=v1").expect("valid");
        assert_eq!(codec, Codec::Json);
        assert_eq!(&message[..], br#"{"id":"u 1"}"#);
    }

    #[test]
    fn a_get_query_without_encoding_is_invalid_argument() {
        let error = parse_get_query("message=abc").expect_err("no encoding");
        assert_eq!(error.code, Code::InvalidArgument);
    }

    #[test]
    fn connect_timeout_ms_becomes_grpc_timeout() {
        let mut connect = HeaderMap::new();
        connect.insert("connect-timeout-ms", HeaderValue::from_static("1500"));
        connect.insert("x-user", HeaderValue::from_static("kept"));
        let grpc = grpc_headers(&connect).expect("valid");
        let timeout = timeout::parse_timeout(grpc.get(timeout::GRPC_TIMEOUT).expect("set")).expect("parses");
        assert_eq!(timeout, Duration::from_millis(1500));
        assert_eq!(grpc.get("x-user").expect("metadata kept"), "kept");
        assert!(grpc.get("connect-timeout-ms").is_none());
    }

    #[test]
    fn a_malformed_connect_timeout_or_protocol_version_is_invalid_argument() {
        for (name, value) in
            [("connect-timeout-ms", "12345678901"), ("connect-timeout-ms", "-1"), ("connect-protocol-version", "2")]
        {
            let mut connect = HeaderMap::new();
            connect.insert(name, HeaderValue::from_static(value));
            let error = grpc_headers(&connect).expect_err(value);
            assert_eq!(error.code, Code::InvalidArgument, "{name}: {value}");
        }
    }

    #[test]
    fn a_grpc_status_with_details_becomes_the_connect_error_json() {
        let detail =
            prost_types::Any { type_url: "type.googleapis.com/google.rpc.BadRequest".into(), value: vec![1, 2, 3] };
        let status = tonic_types::Status { code: 3, message: "bad".into(), details: vec![detail] };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("3"));
        trailers.insert("grpc-message", HeaderValue::from_static("email%20is%20empty"));
        trailers.insert(
            "grpc-status-details-bin",
            HeaderValue::try_from(STANDARD_NO_PAD.encode(status.encode_to_vec())).expect("base64 is ASCII"),
        );
        let error = grpc_error(&trailers).expect("a status").expect_err("not OK");
        assert_eq!(
            error.to_json(),
            serde_json::json!({
                "code": "invalid_argument",
                "message": "email is empty",
                "details": [{"type": "google.rpc.BadRequest", "value": "AQID"}],
            })
        );
    }

    #[test]
    fn content_types_choose_the_protocol_and_unknown_ones_are_unsupported() {
        let kind = |method: Method, content_type: &str| {
            Kind::of(&Request::builder().method(method).header("content-type", content_type).body(()).expect("valid"))
        };
        assert_eq!(kind(Method::POST, "application/grpc"), Kind::Grpc);
        assert_eq!(kind(Method::POST, "application/grpc+proto"), Kind::Grpc);
        assert_eq!(kind(Method::POST, "application/grpc-web+proto"), Kind::GrpcWeb);
        assert_eq!(kind(Method::POST, "application/json"), Kind::Unary(Codec::Json));
        assert_eq!(kind(Method::POST, "application/json; charset=utf-8"), Kind::Unary(Codec::Json));
        assert_eq!(kind(Method::POST, "application/proto"), Kind::Unary(Codec::Proto));
        assert_eq!(kind(Method::POST, "application/connect+json"), Kind::Stream(Codec::Json));
        assert_eq!(kind(Method::POST, "application/xml"), Kind::Unsupported);
        assert_eq!(kind(Method::POST, "text/plain"), Kind::Unsupported);
        assert_eq!(kind(Method::GET, ""), Kind::Get);
    }

    /// `data` gunzipped.
    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).expect("gzip");
        out
    }

    #[tokio::test]
    async fn a_unary_answer_is_gzipped_for_a_client_that_accepts_it_only_from_the_minimum_size() {
        for (size, gzipped) in [(COMPRESS_MIN_BYTES - 1, false), (COMPRESS_MIN_BYTES, true)] {
            let message = Bytes::from(vec![b'a'; size]);
            let answer =
                UnaryAnswer { headers: HeaderMap::new(), trailers: HeaderMap::new(), result: Ok(message.clone()) };
            let response = unary_response(answer, Codec::Proto, None, Compression::Gzip);
            let encoding = response.headers().get(header::CONTENT_ENCODING).cloned();
            let body = response.into_body().collect().await.expect("a body").to_bytes();
            if gzipped {
                assert_eq!(encoding, Some(HeaderValue::from_static("gzip")), "{size} bytes");
                assert_eq!(gunzip(&body), message, "{size} bytes");
            } else {
                assert_eq!(encoding, None, "{size} bytes");
                assert_eq!(body, message, "{size} bytes");
            }
        }
    }

    #[tokio::test]
    async fn streamed_messages_are_gzipped_one_by_one_only_from_the_minimum_size() {
        let (small, large) = (Bytes::from(vec![b's'; 10]), Bytes::from(vec![b'l'; COMPRESS_MIN_BYTES]));
        let mut grpc = BytesMut::new();
        grpc.extend_from_slice(&grpc_frame(&small));
        grpc.extend_from_slice(&grpc_frame(&large));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames =
            futures::stream::iter([Ok::<_, Infallible>(Frame::data(grpc.freeze())), Ok(Frame::trailers(trailers))]);
        let mut state = StreamState {
            body: Box::pin(StreamBody::new(frames)),
            buffer: BytesMut::new(),
            done: false,
            codec: Codec::Proto,
            accept: Compression::Gzip,
            method: None,
        };
        let mut sent = BytesMut::from(state.next_chunk().await);
        let envelopes = take_envelopes(&mut sent).expect("whole envelopes");
        assert_eq!(envelopes.len(), 2, "{envelopes:?}");
        assert_eq!(envelopes[0], Envelope { flags: 0, data: small });
        assert_eq!(envelopes[1].flags, 1);
        assert_eq!(gunzip(&envelopes[1].data), large);
    }

    #[test]
    fn an_unsupported_compression_is_unimplemented() {
        assert_eq!(Compression::parse(Some("br")).expect_err("not supported").code, Code::Unimplemented);
        assert_eq!(Compression::parse(Some("gzip")).expect("supported"), Compression::Gzip);
    }
}
