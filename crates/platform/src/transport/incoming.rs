//! The connections a server accepts and the calls it holds open: a connection limit, back-off when accepting fails, an idle timeout, a cap on open streams.
//!
//! - [`Incoming`] accepts at most `server.max_connections` connections at once (one
//!   beyond it is closed at once, so its client tries another replica instead of
//!   waiting), sets TCP_NODELAY on each, and when `accept` fails for want of resources
//!   (EMFILE, ENFILE, ENOBUFS, ENOMEM) waits before trying again, 5 ms doubling to 1 s
//!   as Go's `net/http` server does, logging once per burst instead of spinning.
//! - Each [`Connection`] is closed once it has had no call open for
//!   `server.idle_timeout`: a silent TCP socket, an HTTP/2 connection that sent only
//!   its preface (or only PINGs), an HTTP/1.1 client that never finishes its headers.
//!   [`TrackCallsLayer`] tells the connection which calls are open.
//! - [`StreamLimitLayer`] caps the streaming calls open in the process
//!   (`server.max_open_streams`), answering UNAVAILABLE beyond it, and ends a stream
//!   whose client stops reading (`server.stream_stall_timeout`), freeing its place,
//!   its handler's stream and what it buffered.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use crate::{
    support::gate::{Gate, GateLayer, Pass},
    support::methods::{MethodKind, Methods},
};
use bytes::Bytes;
use futures::{Stream, task::AtomicWaker};
use http::{Request, Response};
use http_body::Frame;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tonic::{
    Status,
    body::Body,
    transport::server::{Connected, TcpConnectInfo},
};

/// The first wait after `accept` fails for want of resources.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// The longest wait between attempts to accept.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Something that accepts connections: a [`TcpListener`], or a fake in tests.
pub trait Accept {
    /// The accepted connection.
    type Io;

    /// Polls for the next connection and its peer address.
    ///
    /// # Errors
    /// What `accept(2)` reports.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Io, SocketAddr)>>;

    /// The address connections arrive at, when there is one.
    fn local_addr(&self) -> Option<SocketAddr>;
}

impl Accept for TcpListener {
    type Io = TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let (stream, peer) = ready!(TcpListener::poll_accept(self, cx))?;
        // tonic sets TCP_NODELAY only on listeners it binds itself; without it, small
        // HTTP/2 frames (a unary response's headers, message and trailers) wait for the
        // client's delayed ACK (~40 ms, Nagle).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        Poll::Ready(Ok((stream, peer)))
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        TcpListener::local_addr(self).ok()
    }
}

/// The stream of connections a server serves (see the module docs).
pub struct Incoming<A> {
    listener: A,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
    backoff: Option<Pin<Box<Sleep>>>,
    next_delay: Duration,
    /// Accept is failing (logged once until a connection is accepted again).
    failing: bool,
    /// Connections are being closed at the limit (logged once until one is taken).
    refusing: bool,
}

impl<A: Accept> Incoming<A> {
    /// Accepts from `listener`, keeping at most `max_connections` open, each closed
    /// after `idle_timeout` without an open call.
    pub fn new(listener: A, max_connections: usize, idle_timeout: Duration) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(max_connections)),
            idle_timeout,
            backoff: None,
            next_delay: FIRST_BACKOFF,
            failing: false,
            refusing: false,
        }
    }
}

/// Whether `error` concerns only the one connection being accepted (the peer reset it
/// before it was accepted), so the next can be accepted at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

impl<A> Stream for Incoming<A>
where
    A: Accept + Unpin,
    A::Io: Unpin,
{
    type Item = io::Result<Connection<A::Io>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(backoff) = &mut this.backoff {
                ready!(backoff.as_mut().poll(cx));
                this.backoff = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((io, peer)) => {
                    this.next_delay = FIRST_BACKOFF;
                    if std::mem::take(&mut this.failing) {
                        tracing::info!("accepting connections again");
                    }
                    let Ok(permit) = this.permits.clone().try_acquire_owned() else {
                        if !std::mem::replace(&mut this.refusing, true) {
                            tracing::warn!(
                                "at the limit of open connections (server.max_connections): closing new ones at once"
                            );
                        }
                        continue;
                    };
                    this.refusing = false;
                    let info = TcpConnectInfo { local_addr: this.listener.local_addr(), remote_addr: Some(peer) };
                    return Poll::Ready(Some(Ok(Connection::new(io, info, permit, this.idle_timeout))));
                }
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    if !std::mem::replace(&mut this.failing, true) {
                        tracing::error!(%error, "accepting connections fails; retrying with back-off (logged once)");
                    }
                    this.backoff = Some(Box::pin(tokio::time::sleep(this.next_delay)));
                    this.next_delay = (this.next_delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// The calls open on one connection, and since when it has had none.
#[derive(Debug)]
struct Activity {
    /// Open calls, and the instant the last one ended (or the connection opened).
    state: Mutex<(usize, Instant)>,
    /// The connection's reader, woken when its last call ends so it restarts its timer.
    reader: AtomicWaker,
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Instant)> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open call on a [`Connection`] (see [`TrackCalls`]); dropping it ends the call.
#[derive(Debug)]
pub struct OpenCall(Arc<Activity>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.0 -= 1;
        if state.0 == 0 {
            state.1 = Instant::now();
            drop(state);
            self.0.reader.wake();
        }
    }
}

/// What each request on a [`Connection`] carries in its extensions: the addresses
/// (also inserted as tonic's `TcpConnectInfo`, so `Request::remote_addr` works) and
/// the connection's open calls, for [`TrackCallsLayer`].
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

impl ConnectionInfo {
    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.tcp.remote_addr
    }
}

/// An accepted connection: holds its place under `server.max_connections` and ends
/// (reads as closed by the peer) after `server.idle_timeout` without an open call.
pub struct Connection<Io> {
    io: Io,
    info: ConnectionInfo,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl<Io> Connection<Io> {
    fn new(io: Io, tcp: TcpConnectInfo, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        let now = Instant::now();
        let activity = Arc::new(Activity { state: Mutex::new((0, now)), reader: AtomicWaker::new() });
        Self {
            io,
            info: ConnectionInfo { tcp, activity },
            idle_timeout,
            timer: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            _permit: permit,
        }
    }

    /// The accepted socket.
    pub fn get_ref(&self) -> &Io {
        &self.io
    }

    /// Whether the connection has had no open call for the idle timeout; if not yet,
    /// arms the timer to wake the reader when it will have.
    fn idle(&mut self, cx: &mut Context<'_>) -> bool {
        self.info.activity.reader.register(cx.waker());
        let (open, since) = *self.info.activity.lock();
        if open > 0 {
            return false;
        }
        let deadline = since + self.idle_timeout;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

impl<Io> Connected for Connection<Io> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Connection<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.idle(cx) {
            tracing::debug!(
                peer = ?self.info.tcp.remote_addr,
                "closing a connection with no open call for server.idle_timeout"
            );
            // End of stream: the HTTP server closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Connection<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Counts each call as open on its [`Connection`] from its request until its response
/// body ends (or is dropped), so the connection's idle timeout only runs between calls.
/// Also inserts tonic's `TcpConnectInfo`, which [`ConnectionInfo`] replaces.
pub type TrackCallsLayer = GateLayer<TrackCalls>;

/// The check [`TrackCallsLayer`] puts in front of a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackCalls;

impl<B> Gate<B, Body> for TrackCalls {
    type Pass = Option<OpenCall>;

    fn admit(&self, request: &mut Request<B>) -> Result<Option<OpenCall>, Response<Body>> {
        Ok(request.extensions().get::<ConnectionInfo>().cloned().map(|info| {
            request.extensions_mut().insert(info.tcp);
            info.activity.lock().0 += 1;
            OpenCall(info.activity)
        }))
    }
}

impl Pass<Body> for Option<OpenCall> {
    fn finish(self, response: Response<Body>) -> Response<Body> {
        match self {
            Some(call) => hold_until_answered(response, call),
            None => response,
        }
    }
}

/// Caps the streaming calls (client, server or bidirectional streams) open at once in
/// the process: one beyond the cap is answered UNAVAILABLE at once, so the client can
/// try another replica. A stream holds its place until its response ends, or until
/// its client has not taken the next message for `stall_timeout`: then the stream is
/// ended with RESOURCE_EXHAUSTED (when the client reads again) and everything behind
/// it is dropped at once. What a stalled stream holds meanwhile is bounded by the
/// HTTP/2 flow-control window and one message.
pub type StreamLimitLayer = GateLayer<StreamLimit>;

impl StreamLimitLayer {
    /// At most `max_open_streams` streaming calls to `methods` at once, each ended
    /// after `stall_timeout` waiting for its client to read.
    pub fn new(methods: Methods, max_open_streams: usize, stall_timeout: Duration) -> Self {
        Self::from(StreamLimit { methods, permits: Arc::new(Semaphore::new(max_open_streams)), stall_timeout })
    }
}

/// The check [`StreamLimitLayer`] puts in front of a service.
#[derive(Debug, Clone)]
pub struct StreamLimit {
    methods: Methods,
    permits: Arc<Semaphore>,
    stall_timeout: Duration,
}

impl<B> Gate<B, Body> for StreamLimit {
    type Pass = Option<StreamPermit>;

    fn admit(&self, request: &mut Request<B>) -> Result<Option<StreamPermit>, Response<Body>> {
        let streaming = self.methods.get(request.uri().path()).is_some_and(|method| method.kind != MethodKind::Unary);
        if !streaming {
            return Ok(None);
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(StreamPermit { permit, stall_timeout: self.stall_timeout })),
            Err(_) => {
                let refused =
                    Status::unavailable("the server is at its limit of open streams (server.max_open_streams)");
                Err(refused.into_http())
            }
        }
    }
}

/// A streaming call's place under [`StreamLimit`]'s cap, held until its response
/// ends or stalls.
#[derive(Debug)]
pub struct StreamPermit {
    permit: OwnedSemaphorePermit,
    stall_timeout: Duration,
}

impl Pass<Body> for Option<StreamPermit> {
    fn finish(self, response: Response<Body>) -> Response<Body> {
        match self {
            // A trailers-only answer (a refusal: shed, unauthenticated, …) has no
            // stream to pump, and must stay trailers-only: hyper sends the status in
            // one HEADERS frame with END_STREAM only while the body says it is
            // empty, and clients read a status in headers without END_STREAM as
            // the start of a response that never got its trailers (INTERNAL).
            Some(_) if is_trailers_only(&response) => response,
            Some(StreamPermit { permit, stall_timeout }) => pump(response, permit, stall_timeout),
            None => response,
        }
    }
}

/// Whether `response` is a gRPC trailers-only answer: its status already in the headers
/// ("Trailers-Only", gRPC over HTTP/2, PROTOCOL-HTTP2.md) and nothing to follow.
fn is_trailers_only(response: &Response<Body>) -> bool {
    response.headers().contains_key("grpc-status") && http_body::Body::is_end_stream(response.body())
}

/// `response` with its body moved by a task of its own through a one-message channel,
/// so a client that stops reading is noticed: when the next message cannot be handed
/// over within `stall_timeout`, the task drops the body (the handler's stream, with
/// whatever it holds) and `permit`, and the response ends with RESOURCE_EXHAUSTED.
fn pump(response: Response<Body>, permit: OwnedSemaphorePermit, stall_timeout: Duration) -> Response<Body> {
    use http_body_util::BodyExt;
    use tracing::Instrument;

    let (parts, mut body) = response.into_parts();
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let stalled = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let stalled = stalled.clone();
        async move {
            let _permit = permit;
            loop {
                let frame = tokio::select! {
                    frame = body.frame() => frame,
                    () = sender.closed() => return,
                };
                let Some(frame) = frame else { return };
                match tokio::time::timeout(stall_timeout, sender.send(frame)).await {
                    Ok(Ok(())) => {}
                    // The client went away.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!("ending a stream whose client stopped reading (server.stream_stall_timeout)");
                        stalled.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
        // The handler's stream is polled here now: keep its log lines in the call's span.
        .instrument(tracing::Span::current())
    });
    Response::from_parts(parts, Body::new(Pumped { receiver, stalled, ended: false }))
}

/// The client's side of [`pump`]'s channel.
struct Pumped {
    receiver: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Status>>,
    stalled: Arc<AtomicBool>,
    ended: bool,
}

impl http_body::Body for Pumped {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(frame) = ready!(self.receiver.poll_recv(cx)) {
            return Poll::Ready(Some(frame));
        }
        self.ended = true;
        if !self.stalled.load(Ordering::SeqCst) {
            return Poll::Ready(None);
        }
        let status =
            Status::resource_exhausted("the stream was ended: its client did not read (server.stream_stall_timeout)");
        let mut trailers = http::HeaderMap::new();
        let _ = status.add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

/// `response` with `guard` dropped only when its body ends or is dropped.
fn hold_until_answered<G: Send + Sync + 'static>(response: Response<Body>, guard: G) -> Response<Body> {
    response.map(|body| Body::new(Held { body, guard }))
}

pin_project_lite::pin_project! {
    /// A response body holding a guard as long as it lives.
    struct Held<G> {
        #[pin]
        body: Body,
        guard: G,
    }
}

impl<G> http_body::Body for Held<G> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, sync::atomic::AtomicUsize};

    use futures::FutureExt;
    use tokio::io::DuplexStream;
    use tokio_stream::StreamExt;
    use tower::{Layer, Service};

    use super::*;

    /// Hands out the results it was given, in order, then waits forever.
    struct Scripted {
        results: VecDeque<io::Result<DuplexStream>>,
        attempts: Arc<AtomicUsize>,
    }

    impl Accept for Scripted {
        type Io = DuplexStream;

        fn poll_accept(&mut self, _: &mut Context<'_>) -> Poll<io::Result<(DuplexStream, SocketAddr)>> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            match self.results.pop_front() {
                Some(result) => Poll::Ready(result.map(|io| (io, SocketAddr::from(([192, 0, 2, 1], 4000))))),
                None => Poll::Pending,
            }
        }

        fn local_addr(&self) -> Option<SocketAddr> {
            None
        }
    }

    fn scripted(results: Vec<io::Result<DuplexStream>>) -> (Scripted, Arc<AtomicUsize>) {
        let attempts = Arc::new(AtomicUsize::new(0));
        (Scripted { results: results.into(), attempts: attempts.clone() }, attempts)
    }

    fn emfile() -> io::Result<DuplexStream> {
        Err(io::Error::from_raw_os_error(24))
    }

    fn connected() -> io::Result<DuplexStream> {
        Ok(tokio::io::duplex(64).0)
    }

    #[tokio::test(start_paused = true)]
    async fn accept_failing_for_want_of_file_descriptors_backs_off_instead_of_spinning() {
        let (listener, attempts) = scripted(vec![emfile(), emfile(), emfile(), emfile(), connected()]);
        let mut incoming = Incoming::new(listener, 10, Duration::from_secs(60));
        let started = Instant::now();
        incoming.next().await.expect("the stream goes on").expect("a connection after the failures");
        // One attempt per failure and one that succeeded: no attempts in between.
        assert_eq!(attempts.load(Ordering::SeqCst), 5);
        // 5 + 10 + 20 + 40 ms of waiting between the attempts.
        assert!(started.elapsed() >= Duration::from_millis(75), "waited {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_reset_before_accept_is_skipped_without_waiting() {
        let reset = Err(io::Error::from(io::ErrorKind::ConnectionAborted));
        let (listener, _) = scripted(vec![reset, connected()]);
        let mut incoming = Incoming::new(listener, 10, Duration::from_secs(60));
        let started = Instant::now();
        incoming.next().await.expect("the stream goes on").expect("the next connection");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_back_off_grows_to_a_second_and_no_further() {
        let mut results: Vec<_> = (0..12).map(|_| emfile()).collect();
        results.push(connected());
        let (listener, _) = scripted(results);
        let mut incoming = Incoming::new(listener, 10, Duration::from_secs(60));
        let started = Instant::now();
        incoming.next().await.expect("the stream goes on").expect("a connection after the failures");
        // 5, 10, ... 640 ms (8 waits, 1275 ms), then 4 waits of 1 s.
        assert_eq!(started.elapsed(), Duration::from_millis(1275 + 4000));
    }

    #[tokio::test]
    async fn a_streaming_call_refused_trailers_only_stays_trailers_only_and_frees_its_place() {
        use tower::ServiceExt;
        let methods = Methods::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET]).expect("decodes");
        // What the load shedder, authentication or a rate limit answer below this layer.
        let refusing = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Status::unavailable("shed").into_http::<Body>())
        });
        let mut service = StreamLimitLayer::new(methods, 1, Duration::from_secs(5)).layer(refusing);
        for attempt in 0..2 {
            let watch = Request::builder().uri("/grpc.health.v1.Health/Watch").body(Body::empty()).expect("a request");
            let response = service.ready().await.expect("ready").call(watch).await.expect("infallible");
            let status = Status::from_header_map(response.headers()).expect("the status in the headers");
            assert_eq!(status.code(), tonic::Code::Unavailable, "attempt {attempt}: the refusal itself");
            assert!(
                http_body::Body::is_end_stream(response.body()),
                "attempt {attempt}: the body must say it is empty, or hyper sends the status without END_STREAM"
            );
        }
    }

    #[tokio::test]
    async fn a_connection_beyond_the_limit_is_closed_at_once_and_one_after_a_close_is_served() {
        let shared = Arc::new(Mutex::new(VecDeque::from([connected(), connected()])));
        let attempts = Arc::new(AtomicUsize::new(0));
        let listener = Shared { queue: shared.clone(), attempts: attempts.clone() };
        let mut incoming = Incoming::new(listener, 1, Duration::from_secs(60));
        let first = incoming.next().await.expect("the stream goes on").expect("the first connection");
        assert!(incoming.next().now_or_never().is_none(), "the second is not handed out");
        assert_eq!(attempts.load(Ordering::SeqCst), 3, "the second was accepted (and closed)");
        drop(first);
        shared.lock().expect("not poisoned").push_back(connected());
        let next = incoming.next().now_or_never().expect("a place is free again");
        assert!(next.expect("the stream goes on").is_ok());
    }

    /// [`Scripted`] whose queue the test can add to.
    struct Shared {
        queue: Arc<Mutex<VecDeque<io::Result<DuplexStream>>>>,
        attempts: Arc<AtomicUsize>,
    }

    impl Accept for Shared {
        type Io = DuplexStream;

        fn poll_accept(&mut self, _: &mut Context<'_>) -> Poll<io::Result<(DuplexStream, SocketAddr)>> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            match self.queue.lock().expect("not poisoned").pop_front() {
                Some(result) => Poll::Ready(result.map(|io| (io, SocketAddr::from(([192, 0, 2, 1], 4000))))),
                None => Poll::Pending,
            }
        }

        fn local_addr(&self) -> Option<SocketAddr> {
            None
        }
    }
}
