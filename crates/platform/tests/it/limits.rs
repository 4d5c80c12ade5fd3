//! The server stack against hostile clients: idle and surplus connections are closed, streams are capped, undecodable and non-gRPC requests get the spec's answers, reflection lists only what is served, a panicking handler fails only its call, and random input only ever gets valid statuses.

use std::{num::NonZeroU32, pin::Pin, sync::Arc, time::Duration};

use api::orders::v1::{
    CreateOrderRequest, CreateOrderResponse, DeliverOrderRequest, DeliverOrderResponse, GetOrderRequest,
    GetOrderResponse, ListOrdersRequest, ListOrdersResponse, ShipOrderRequest, ShipOrderResponse, WatchOrderRequest,
    WatchOrderResponse,
    order_service_client::OrderServiceClient,
    order_service_server::{OrderService, OrderServiceServer},
};

use api::users::v1::{
    CreateUserRequest, CreateUserResponse, GetUserByEmailRequest, GetUserByEmailResponse, GetUserRequest,
    GetUserResponse,
    user_service_client::UserServiceClient,
    user_service_server::{UserService, UserServiceServer},
};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use platform::{
    auth::{AuthConfig, Authenticator},
    config::ServerConfig,
    observability::metrics::Metrics,
    server::GrpcServer,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{io::AsyncReadExt, net::TcpStream};
use tonic::{Code, Request, Response, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use tower::ServiceExt;

/// A guard against a hung test, far above any real answer.
const DEADLINE: Duration = Duration::from_secs(20);

/// A users service that answers every call with an empty message, except `GetUser`
/// when `panics`.
#[derive(Clone, Copy)]
struct Users {
    panics: bool,
}

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(&self, _: Request<CreateUserRequest>) -> Result<Response<CreateUserResponse>, Status> {
        Ok(Response::new(CreateUserResponse::default()))
    }

    async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        if self.panics {
            panic!("a handler bug");
        }
        Ok(Response::new(GetUserResponse::default()))
    }

    async fn get_user_by_email(
        &self,
        _: Request<GetUserByEmailRequest>,
    ) -> Result<Response<GetUserByEmailResponse>, Status> {
        Ok(Response::new(GetUserByEmailResponse::default()))
    }
}

/// A serving users server; dropping the sender stops it.
struct Running {
    address: String,
    health: platform::server::health::Health,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(config: ServerConfig, users: Users) -> Running {
    let server = GrpcServer::bind(&config, api::FILE_DESCRIPTOR_SET, &Metrics::new())
        .await
        .expect("bind")
        .add_service(UserServiceServer::new(users));
    start(server)
}

fn start(server: GrpcServer) -> Running {
    // These tests are about limits, not callers: serve open, explicitly.
    let server = server.authenticate(Authenticator::new(&AuthConfig::none()).expect("nothing to read"));
    let health = server.health();
    let address = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Running { address, health, _stop: stop }
}

fn config() -> ServerConfig {
    let mut config = ServerConfig::on_port(0);
    config.drain_period = Duration::ZERO;
    config
}

impl Running {
    /// A raw TCP connection to the server.
    async fn connect_tcp(&self) -> TcpStream {
        TcpStream::connect(self.address.trim_start_matches("http://")).await.expect("connect")
    }
}

/// A server whose connections are closed after 200 ms without a call.
async fn serve_with_short_idle_timeout() -> Running {
    let mut config = config();
    config.idle_timeout = Duration::from_millis(200);
    serve(config, Users { panics: false }).await
}

/// Writes the HTTP/2 preface and an empty SETTINGS frame: the connection is HTTP/2,
/// with no call.
async fn start_http2(socket: &mut TcpStream) {
    use tokio::io::AsyncWriteExt;
    socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("write the preface");
    socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("write SETTINGS");
}

async fn channel(address: &str) -> Channel {
    Channel::from_shared(address.to_owned()).expect("a valid address").connect().await.expect("connect")
}

/// Reads from `socket` until the server closes it (end of stream or a reset).
async fn closed_by_server(socket: &mut TcpStream) {
    let mut buffer = [0_u8; 1024];
    loop {
        match tokio::time::timeout(DEADLINE, socket.read(&mut buffer)).await.expect("the server closes it") {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn a_silent_tcp_connection_is_closed_after_the_idle_timeout() {
    let server = serve_with_short_idle_timeout().await;
    let mut socket = server.connect_tcp().await;
    closed_by_server(&mut socket).await;
}

#[tokio::test]
async fn a_connection_with_an_open_stream_outlives_the_idle_timeout() {
    let server = serve_with_short_idle_timeout().await;
    let mut health = HealthClient::new(channel(&server.address).await);
    let mut watching = health.watch(HealthCheckRequest::default()).await.expect("the stream opens").into_inner();
    watching.message().await.expect("a first status").expect("the stream is open");

    // Opened after the stream: once the server closes it, the idle timeout has passed
    // for the streaming connection too.
    let mut silent = server.connect_tcp().await;
    closed_by_server(&mut silent).await;
    server.health.set_serving(false).await;
    let update = watching.message().await.expect("the stream's connection is still open");
    assert_eq!(update.expect("an update").status(), ServingStatus::NotServing);
}

#[tokio::test]
async fn an_http2_connection_that_sends_only_its_preface_is_closed_after_the_idle_timeout() {
    let server = serve_with_short_idle_timeout().await;
    let mut socket = server.connect_tcp().await;
    start_http2(&mut socket).await;
    closed_by_server(&mut socket).await;
}

#[tokio::test]
async fn the_server_advertises_its_limit_of_streams_per_connection() {
    let mut config = config();
    config.http2_max_concurrent_streams = NonZeroU32::new(7).expect("not zero");
    let server = serve(config, Users { panics: false }).await;
    let mut socket = server.connect_tcp().await;
    start_http2(&mut socket).await;
    // The server's first frame is its SETTINGS (RFC 9113 3.4): 9-byte header, then
    // 6-byte entries; SETTINGS_MAX_CONCURRENT_STREAMS is identifier 3.
    let mut header = [0_u8; 9];
    tokio::time::timeout(DEADLINE, socket.read_exact(&mut header)).await.expect("in time").expect("a frame");
    assert_eq!(header[3], 4, "not a SETTINGS frame: {header:?}");
    let length = usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0_u8; length];
    socket.read_exact(&mut payload).await.expect("the settings");
    let advertised = payload
        .chunks_exact(6)
        .find(|entry| entry[..2] == [0, 3])
        .map(|entry| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]));
    assert_eq!(advertised, Some(7));
}

/// An HTTP/2 frame: 9-byte header (RFC 9113 4.1), then `payload`.
fn http2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a small frame").to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A HEADERS frame (END_HEADERS) opening a unary Health Check on `stream`, its header
/// block in HPACK literals (RFC 7541): POST, http, the path, the authority, the gRPC
/// content type and `te: trailers`.
fn health_check_headers(stream: u32, end_stream: bool) -> Vec<u8> {
    let literal = |block: &mut Vec<u8>, value: &[u8]| {
        block.push(u8::try_from(value.len()).expect("a short value"));
        block.extend_from_slice(value);
    };
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table 3 and 6)
    block.push(0x04); // :path, name from the static table (4), value literal
    literal(&mut block, b"/grpc.health.v1.Health/Check");
    block.push(0x01); // :authority (1)
    literal(&mut block, b"localhost");
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (31)
    literal(&mut block, b"application/grpc");
    block.push(0x00); // a new name
    literal(&mut block, b"te");
    literal(&mut block, b"trailers");
    http2_frame(0x1, 0x4 | u8::from(end_stream), stream, &block)
}

/// Over one raw HTTP/2 connection, in one write: `cancelled` calls opened and at once
/// cancelled (HEADERS, then RST_STREAM CANCEL, as a hedged call's loser is), then one
/// whole Health Check. Returns `Ok` when that check gets its response headers, or the
/// error code of the GOAWAY that came instead.
async fn cancel_then_check(server: &Running, cancelled: u32) -> Result<(), u32> {
    use tokio::io::AsyncWriteExt;
    let mut socket = server.connect_tcp().await;
    start_http2(&mut socket).await;
    let mut frames = Vec::new();
    for n in 0..cancelled {
        let stream = 2 * n + 1;
        frames.extend(health_check_headers(stream, false));
        frames.extend(http2_frame(0x3, 0, stream, &0x8_u32.to_be_bytes()));
    }
    let check = 2 * cancelled + 1;
    frames.extend(health_check_headers(check, false));
    frames.extend(http2_frame(0x0, 0x1, check, &[0, 0, 0, 0, 0])); // an empty message, END_STREAM
    socket.write_all(&frames).await.expect("write the calls");
    loop {
        let mut header = [0_u8; 9];
        tokio::time::timeout(DEADLINE, socket.read_exact(&mut header)).await.expect("in time").expect("a frame");
        let length = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0_u8; length];
        socket.read_exact(&mut payload).await.expect("the payload");
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        match header[3] {
            0x1 if stream == check => return Ok(()),
            0x7 => return Err(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]])),
            _ => {}
        }
    }
}

/// ENHANCE_YOUR_CALM (RFC 9113 7): what h2 sends when a peer resets too many streams
/// the server had not yet taken.
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[tokio::test]
async fn a_client_that_cancels_a_hundred_calls_before_the_server_took_them_keeps_its_connection() {
    let server = serve(config(), Users { panics: false }).await;
    assert_eq!(cancel_then_check(&server, 100).await, Ok(()), "no GOAWAY for cancelled calls");
}

#[tokio::test]
async fn more_cancelled_calls_than_http2_max_pending_accept_reset_streams_close_the_connection() {
    let mut config = config();
    config.http2_max_pending_accept_reset_streams = NonZeroU32::new(8).expect("not zero");
    let server = serve(config, Users { panics: false }).await;
    assert_eq!(cancel_then_check(&server, 20).await, Err(ENHANCE_YOUR_CALM), "the rapid-reset guard holds");
    assert_eq!(cancel_then_check(&server, 4).await, Ok(()), "under the limit, served");
}

#[tokio::test]
async fn a_connection_beyond_max_connections_is_closed_while_the_first_is_served() {
    let mut config = config();
    config.max_connections = NonZeroU32::MIN;
    let server = serve(config, Users { panics: false }).await;
    let first = channel(&server.address).await;
    let mut health = HealthClient::new(first);
    health.check(HealthCheckRequest::default()).await.expect("the first connection is served");

    let mut second = server.connect_tcp().await;
    closed_by_server(&mut second).await;
    health.check(HealthCheckRequest::default()).await.expect("the first connection is still served");
}

#[tokio::test]
async fn a_stream_beyond_max_open_streams_is_answered_unavailable() {
    let mut config = config();
    config.max_open_streams = NonZeroU32::MIN;
    let server = serve(config, Users { panics: false }).await;
    let mut health = HealthClient::new(channel(&server.address).await);
    let mut open = health.watch(HealthCheckRequest::default()).await.expect("the first stream opens").into_inner();
    open.message().await.expect("a first status").expect("the stream is open");

    let refused = health.watch(HealthCheckRequest::default()).await.expect_err("no stream is free");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("server.max_open_streams"), "{refused:?}");

    drop(open);
    // Unary calls are not streams: they are still answered.
    health.check(HealthCheckRequest::default()).await.expect("a unary call takes no stream place");
}

/// `message` in gRPC's length-prefixed framing, uncompressed.
fn framed(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).expect("a small message"));
    frame.put_slice(message);
    frame.freeze()
}

/// Sends `body` to `path` with `content_type` over HTTP/2 and returns the HTTP status
/// and the gRPC status (from the headers of a trailers-only answer, or the trailers).
async fn raw_call(
    channel: &Channel,
    path: &str,
    content_type: &str,
    body: Bytes,
) -> (http::StatusCode, Option<Status>) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(body).map_err(|never| match never {})))
        .expect("a valid request");
    let response = tokio::time::timeout(DEADLINE, channel.clone().oneshot(request))
        .await
        .expect("answered in time")
        .expect("an HTTP answer");
    let http_status = response.status();
    if let Some(status) = Status::from_header_map(response.headers()) {
        return (http_status, Some(status));
    }
    let collected = response.into_body().collect().await.expect("the body arrives");
    (http_status, collected.trailers().and_then(Status::from_header_map))
}

const GET_USER: &str = "/users.v1.UserService/GetUser";

#[tokio::test]
async fn an_undecodable_request_is_invalid_argument_and_an_oversize_one_resource_exhausted() {
    let server = serve(config(), Users { panics: false }).await;
    let channel = channel(&server.address).await;
    let bodies: [(&str, Bytes); 3] = [
        // Field 1 (`id`, a string) holding bytes that are not UTF-8.
        ("invalid UTF-8", framed(&[0x0a, 0x02, 0xff, 0xfe])),
        // Field 1 with wire type 5 (fixed32) instead of length-delimited.
        ("wrong wire type", framed(&[0x0d, 1, 2, 3, 4])),
        // Field 1 announcing 5 bytes and carrying 1.
        ("truncated", framed(&[0x0a, 0x05, b'a'])),
    ];
    for (what, body) in bodies {
        let (_, status) = raw_call(&channel, GET_USER, "application/grpc", body).await;
        let status = status.expect("a gRPC status");
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    // A frame header announcing 5 MB, over tonic's 4 MB default limit.
    let mut oversize = BytesMut::new();
    oversize.put_u8(0);
    oversize.put_u32(5 * 1024 * 1024);
    oversize.put_slice(&[0; 16]);
    let (_, status) = raw_call(&channel, GET_USER, "application/grpc", oversize.freeze()).await;
    assert_eq!(status.expect("a gRPC status").code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn a_request_that_is_not_grpc_is_refused_with_415_and_grpc_still_works() {
    let server = serve(config(), Users { panics: false }).await;
    let channel = channel(&server.address).await;
    for content_type in ["text/plain", "application/octet-stream", "application/grpcx"] {
        let (http_status, _) = raw_call(&channel, GET_USER, content_type, framed(&[])).await;
        assert_eq!(http_status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type}");
    }
    let (http_status, status) = raw_call(&channel, GET_USER, "application/grpc+proto", framed(&[])).await;
    assert_eq!(http_status, http::StatusCode::OK);
    assert_eq!(status.expect("a gRPC status").code(), Code::Ok);
}

#[tokio::test]
async fn reflection_lists_only_the_services_the_port_serves() {
    let server = serve(config(), Users { panics: false }).await;
    let mut reflection = ServerReflectionClient::new(channel(&server.address).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        reflection.server_reflection_info(tokio_stream::once(request)).await.expect("reflection answers").into_inner();
    let answer = answers.message().await.expect("an answer").expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    names.sort();
    assert_eq!(names, ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "users.v1.UserService"]);
}

#[tokio::test]
async fn a_panicking_handler_fails_its_call_with_internal_and_the_connection_keeps_serving() {
    let server = serve(config(), Users { panics: true }).await;
    let mut users = UserServiceClient::new(channel(&server.address).await);
    let failed = users.get_user(GetUserRequest { id: "x".into() }).await.expect_err("the handler panics");
    assert_eq!(failed.code(), Code::Internal, "{failed:?}");
    assert!(!failed.message().contains("a handler bug"), "the panic message is not sent: {failed:?}");
    users
        .get_user_by_email(GetUserByEmailRequest { email: "a@example.com".into() })
        .await
        .expect("the same connection serves the next call");
}

/// gRPC's own framing for a gRPC-Web answer: the status from the headers, or from the
/// trailer frame (flag 0x80) in the body.
fn grpc_web_status(headers: &http::HeaderMap, body: &[u8]) -> Option<Code> {
    if let Some(status) = Status::from_header_map(headers) {
        return Some(status.code());
    }
    let mut rest = body;
    while rest.len() >= 5 {
        let flag = rest[0];
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let frame = rest.get(5..5 + length)?;
        if flag & 0x80 != 0 {
            let text = std::str::from_utf8(frame).ok()?;
            let code = text.lines().find_map(|line| line.trim().strip_prefix("grpc-status:"))?;
            return Some(Code::from_i32(code.trim().parse().ok()?));
        }
        rest = &rest[5 + length..];
    }
    None
}

/// A random request body: random bytes framed, random bytes unframed, or a frame whose
/// length or compression flag lies.
fn random_body(rng: &mut StdRng) -> Bytes {
    let length = rng.random_range(0..64);
    let message: Vec<u8> = (0..length).map(|_| rng.random()).collect();
    match rng.random_range(0..4) {
        0 | 1 => framed(&message),
        2 => Bytes::from(message),
        _ => {
            let mut frame = BytesMut::new();
            frame.put_u8(rng.random_range(0..2));
            frame.put_u32(rng.random_range(0..1024));
            frame.put_slice(&message);
            frame.freeze()
        }
    }
}

const PATHS: [&str; 6] = [
    "/users.v1.UserService/GetUser",
    "/users.v1.UserService/CreateUser",
    "/users.v1.UserService/GetUserByEmail",
    "/orders.v1.OrderService/ListOrders",
    "/grpc.health.v1.Health/Check",
    "/no.such.Service/Method",
];

#[tokio::test]
async fn random_requests_over_grpc_and_grpc_web_only_ever_get_valid_statuses() {
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let server = serve(config(), Users { panics: false }).await;
    let channel = channel(&server.address).await;
    for _ in 0..150 {
        let path = PATHS[rng.random_range(0..PATHS.len())];
        let (http_status, status) = raw_call(&channel, path, "application/grpc", random_body(&mut rng)).await;
        assert_eq!(http_status, http::StatusCode::OK, "seed {seed}, {path}");
        let status = status.unwrap_or_else(|| panic!("seed {seed}, {path}: no gRPC status"));
        assert!(status.code() != Code::Unknown, "seed {seed}, {path}: {status:?}");
    }

    // gRPC-Web over HTTP/1.1, as browsers send it.
    let http1 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    for _ in 0..150 {
        let path = PATHS[rng.random_range(0..PATHS.len())];
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("{}{path}", server.address))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(Full::new(random_body(&mut rng)))
            .expect("a valid request");
        let response =
            tokio::time::timeout(DEADLINE, http1.request(request)).await.expect("answered in time").expect("an answer");
        assert_eq!(response.status(), http::StatusCode::OK, "seed {seed}, {path}");
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("the body arrives").to_bytes();
        let code = grpc_web_status(&headers, &body).unwrap_or_else(|| panic!("seed {seed}, {path}: no gRPC status"));
        assert!(code != Code::Unknown, "seed {seed}, {path}: {code:?}");
    }

    let mut health = HealthClient::new(channel);
    health.check(HealthCheckRequest::default()).await.expect("the server still serves");
}

/// An orders service whose ListOrders streams without end, 1 KiB a message, and
/// notifies `dropped` when the server drops such a stream.
struct Flood {
    dropped: Arc<tokio::sync::Notify>,
}

/// Notifies when dropped.
struct NotifyOnDrop(Arc<tokio::sync::Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

type Messages<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl OrderService for Flood {
    type ListOrdersStream = Messages<ListOrdersResponse>;
    type WatchOrderStream = Messages<WatchOrderResponse>;

    async fn create_order(&self, _: Request<CreateOrderRequest>) -> Result<Response<CreateOrderResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_order(&self, _: Request<GetOrderRequest>) -> Result<Response<GetOrderResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn list_orders(&self, _: Request<ListOrdersRequest>) -> Result<Response<Self::ListOrdersStream>, Status> {
        let guard = NotifyOnDrop(self.dropped.clone());
        let messages = futures::stream::repeat_with(move || {
            let _held = &guard;
            Ok(ListOrdersResponse { order: None, next_page_token: "x".repeat(1024) })
        });
        Ok(Response::new(Box::pin(messages)))
    }

    async fn watch_order(&self, _: Request<WatchOrderRequest>) -> Result<Response<Self::WatchOrderStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn ship_order(&self, _: Request<ShipOrderRequest>) -> Result<Response<ShipOrderResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn deliver_order(&self, _: Request<DeliverOrderRequest>) -> Result<Response<DeliverOrderResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

#[tokio::test]
async fn a_stream_whose_client_stops_reading_is_ended_and_gives_up_its_place() {
    let mut config = config();
    config.max_open_streams = NonZeroU32::MIN;
    config.stream_stall_timeout = Duration::from_millis(200);
    let dropped = Arc::new(tokio::sync::Notify::new());
    let server = GrpcServer::bind(&config, api::FILE_DESCRIPTOR_SET, &Metrics::new())
        .await
        .expect("bind")
        .add_service(OrderServiceServer::new(Flood { dropped: dropped.clone() }));
    let server = start(server);
    let mut reader = OrderServiceClient::new(channel(&server.address).await);
    let mut unread = reader.list_orders(ListOrdersRequest::default()).await.expect("the stream opens").into_inner();

    // The client reads nothing: once flow control stops the server, it drops the stream.
    tokio::time::timeout(DEADLINE, dropped.notified()).await.expect("the server drops the unread stream");
    let mut other = OrderServiceClient::new(channel(&server.address).await);
    let mut second = other.list_orders(ListOrdersRequest::default()).await.expect("its place is free").into_inner();
    second.message().await.expect("a message").expect("the stream is open");
    drop(second);

    // Reading again, the first client gets what was on the way, then the reason.
    let ended = loop {
        match unread.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
}
