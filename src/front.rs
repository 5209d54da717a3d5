//! Serving one front (the REST gateway or the gRPC API) on a [`Limited`] listener: HTTP/1 and
//! HTTP/2 connections (gRPC: HTTP/2 only) driven by hyper, with the timeouts that keep idle or
//! slow peers from holding the door shut:
//!
//! - a **handshake timeout**: a connection must send its first request's headers within it;
//! - an HTTP/1 **header-read timeout** for every request's headers;
//! - an **idle timeout**: a connection with no request in flight (an HTTP/1 keep-alive, an
//!   HTTP/2 connection without open streams) is closed gracefully after it (a GOAWAY for
//!   HTTP/2; clients reconnect on their next call);
//! - HTTP/2 **keepalive pings**, so that a peer that vanished is noticed even while a stream
//!   (an executor's watch) stays open;
//! - a **body read timeout with a minimum rate** ([`Paced`]): once a request's headers are in,
//!   its body must follow, within the timeout plus a second per [`MIN_BODY_RATE`] bytes (a
//!   REST body whole; a gRPC call's first message, and each later message once begun: an open
//!   stream may wait between messages, as an executor's report stream does), or the request
//!   fails; and at most [`MAX_WAITING_STREAMS`] streams of one connection may be waiting for the
//!   rest of a message at once.
//!
//! Each request carries the peer's address (tonic's `TcpConnectInfo`, axum's `ConnectInfo`).
//! A malformed HTTP/1 request, which hyper answers itself with an empty 400, gets the contract's
//! JSON error body instead (see [`JsonParseErrors`]).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::connections::Limited;

/// The limits and timeouts of a front's connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections each front holds open.
    pub max_connections: usize,
    /// Connections each front holds open from one IP address.
    pub max_per_peer: usize,
    /// Time from accepting a connection to its first request's headers.
    pub handshake_timeout: Duration,
    /// Time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Time an HTTP/1 request's headers may take to arrive.
    pub header_read_timeout: Duration,
    /// How often an HTTP/2 connection is pinged, and how long the peer has to answer.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Concurrent requests (streams) one HTTP/2 connection may have open; a client past it
    /// waits for one to end (HTTP/2 flow control), so one client cannot pile up unbounded work.
    pub max_streams: u32,
    /// Time a request's body (or a gRPC message) may take to arrive, plus a second per
    /// [`MIN_BODY_RATE`] bytes of it.
    pub body_read_timeout: Duration,
}

/// The slowest a body may arrive once its read timeout has passed: bytes per second.
pub const MIN_BODY_RATE: u64 = 64 << 10;
/// Streams of one connection that may wait at once for the rest of a message.
pub const MAX_WAITING_STREAMS: usize = 128;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1_024,
            max_per_peer: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_streams: 256,
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Which protocols a front speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2 (prior knowledge): the REST gateway.
    Http1And2,
    /// HTTP/2 only: gRPC.
    Http2,
}

/// What a front serves: a cloneable service answering every request (an axum router, tonic's
/// routes).
pub trait FrontService<B>:
    tower::Service<
        Request<Body>,
        Response = Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> FrontService<B> for S where
    S: tower::Service<
            Request<Body>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The body of a front's responses.
pub trait ResponseBody:
    http_body::Body<Data = axum::body::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<
            Data = axum::body::Bytes,
            Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        > + Send
        + 'static
{
}

/// How long a connection told to close at shutdown may take to finish what it is doing.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long an idle connection told to close (an HTTP/2 GOAWAY) may take to go.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `service` on `listener` until `stop` turns true; then stops accepting, asks every
/// connection to close gracefully, and returns once all have closed.
/// With `tls`, every connection first completes a TLS handshake (within the handshake timeout)
/// or is closed: the front speaks TLS only.
pub async fn serve<S, B>(
    listener: Limited,
    service: S,
    protocols: Protocols,
    limits: ConnectionLimits,
    tls: Option<Arc<crate::tls::Tls>>,
    mut stop: watch::Receiver<bool>,
) where
    S: FrontService<B>,
    B: ResponseBody,
{
    let local = listener.local_addr().ok();
    let builder = Arc::new(builder(protocols, &limits));
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let connection = Connection {
            peer,
            local,
            limits,
            framing: match protocols {
                Protocols::Http1And2 => Framing::Whole,
                Protocols::Http2 => Framing::Grpc,
            },
            stop: stop.clone(),
        };
        let (builder, service, tls) = (builder.clone(), service.clone(), tls.clone());
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return connection.start(&builder, protocols, io, service).await;
            };
            let front = match protocols {
                Protocols::Http1And2 => crate::tls::Front::Rest,
                Protocols::Http2 => crate::tls::Front::Grpc,
            };
            let handshake = tls.acceptor(front).accept(io);
            match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(Ok(stream)) => connection.start(&builder, protocols, stream, service).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "no TLS handshake within the handshake timeout"),
            }
        });
    }
    listener.drained().await;
}

fn builder(
    protocols: Protocols,
    limits: &ConnectionLimits,
) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.keepalive_interval))
        .keep_alive_timeout(limits.keepalive_timeout)
        .max_concurrent_streams(limits.max_streams);
    match protocols {
        Protocols::Http1And2 => builder,
        Protocols::Http2 => builder.http2_only(),
    }
}

/// One accepted connection.
struct Connection {
    peer: SocketAddr,
    local: Option<SocketAddr>,
    limits: ConnectionLimits,
    framing: Framing,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// Serves the connection with the front's protocols.
    async fn start<I, S, B>(
        self,
        builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
        protocols: Protocols,
        io: I,
        service: S,
    ) where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: FrontService<B>,
        B: ResponseBody,
    {
        match protocols {
            Protocols::Http1And2 => self.run(builder, JsonParseErrors::new(io), service).await,
            Protocols::Http2 => self.run(builder, io, service).await,
        }
    }

    async fn run<I, S, B>(
        mut self,
        builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
        io: I,
        service: S,
    ) where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: FrontService<B>,
        B: ResponseBody,
    {
        let activity = Arc::new(Activity::new());
        let (peer, local, limits) = (self.peer, self.local, self.limits);
        let counter = activity.clone();
        let framing = self.framing;
        let hyper_service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                let extensions = request.extensions_mut();
                extensions.insert(tonic::transport::server::TcpConnectInfo {
                    local_addr: local,
                    remote_addr: Some(peer),
                });
                extensions.insert(axum::extract::ConnectInfo(peer));
                let in_flight = InFlight::start(&counter);
                let body = request.map(|body| {
                    Body::new(Paced::new(
                        body,
                        framing,
                        limits.body_read_timeout,
                        &counter,
                    ))
                });
                let call = service.clone().oneshot(body);
                async move {
                    let response = call.await?;
                    Ok::<_, Infallible>(response.map(|body| Tracked {
                        body,
                        _in_flight: in_flight,
                    }))
                }
            });
        let connection = builder.serve_connection(TokioIo::new(io), hyper_service);
        tokio::pin!(connection);
        let idle = idle(&activity, self.limits);
        tokio::pin!(idle);
        let grace = tokio::select! {
            result = connection.as_mut() => {
                log_end(peer, result);
                return;
            }
            idle = &mut idle => match idle {
                // It never sent a request: there is nothing to finish, and a connection that
                // has not done its handshake cannot be closed gracefully.
                Idle::BeforeFirstRequest => {
                    tracing::debug!(%peer, "no request within the handshake timeout; closing");
                    return;
                }
                Idle::BetweenRequests => IDLE_CLOSE_GRACE,
            },
            _ = self.stop.wait_for(|stop| *stop) => CLOSE_GRACE,
        };
        connection.as_mut().graceful_shutdown();
        if let Ok(result) = tokio::time::timeout(grace, connection).await {
            log_end(peer, result);
        }
    }
}

fn log_end(peer: SocketAddr, result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Requests in flight on a connection, how many have started, and when the last one ended.
/// Atomics, so that a request costs no wake-up of the connection's idle timer.
struct Activity {
    opened: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Requests waiting for the rest of a body or message.
    waiting: AtomicUsize,
    started: AtomicU64,
    /// Milliseconds from `opened` to the end of the last request.
    last_end_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
        }
    }

    /// When the connection is idle if nothing happens before: `None` while a request is in
    /// flight. The kind says which timeout applies.
    fn idle_at(&self, limits: &ConnectionLimits) -> (Option<tokio::time::Instant>, Idle) {
        if self.started.load(Ordering::Acquire) == 0 {
            return (
                Some(self.opened + limits.handshake_timeout),
                Idle::BeforeFirstRequest,
            );
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return (None, Idle::BetweenRequests);
        }
        let last_end = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        (
            Some(self.opened + last_end + limits.idle_timeout),
            Idle::BetweenRequests,
        )
    }
}

/// How a connection came to be idle.
enum Idle {
    BeforeFirstRequest,
    BetweenRequests,
}

/// Resolves once the connection has been without a request in flight for the idle timeout (or,
/// before its first request, for the handshake timeout). One timer, re-armed only when it
/// fires.
async fn idle(activity: &Activity, limits: ConnectionLimits) -> Idle {
    loop {
        let now = tokio::time::Instant::now();
        match activity.idle_at(&limits) {
            (Some(at), idle) if at <= now => return idle,
            (Some(at), _) => tokio::time::sleep_until(at).await,
            (None, _) => tokio::time::sleep(limits.idle_timeout).await,
        }
    }
}

/// A request in flight, counted until its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.started.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let since = self.0.opened.elapsed().as_millis() as u64;
        self.0.last_end_ms.fetch_max(since, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is done.
    struct Tracked<B> {
        #[pin]
        body: B,
        _in_flight: InFlight,
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// How a front's request bodies are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// A REST body: all of it within the read timeout (and rate).
    Whole,
    /// gRPC messages (a flag byte, a 4-byte big-endian length, the message): the first one, and
    /// each later one once begun, within the read timeout (and rate); between messages a
    /// stream may wait.
    Grpc,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// A request body that must keep arriving (see the module's documentation).
    struct Paced<B> {
        #[pin]
        body: B,
        framing: Framing,
        timeout: Duration,
        activity: Arc<Activity>,
        // When the part that must arrive now (the body, or the current message) began, and
        // its bytes so far.
        began: tokio::time::Instant,
        received: u64,
        // gRPC: bytes of the current message's 5-byte header seen, and of its payload still to
        // come; `None` between messages (after the first).
        header: usize,
        length: [u8; 4],
        remaining: Option<u64>,
        waiting: bool,
        #[pin]
        deadline: Option<tokio::time::Sleep>,
    }

    impl<B> PinnedDrop for Paced<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.waiting {
                this.activity.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl<B> Paced<B> {
    fn new(body: B, framing: Framing, timeout: Duration, activity: &Arc<Activity>) -> Paced<B> {
        Paced {
            body,
            framing,
            timeout,
            activity: activity.clone(),
            began: tokio::time::Instant::now(),
            received: 0,
            header: 0,
            length: [0; 4],
            remaining: Some(0),
            waiting: false,
            deadline: None,
        }
    }
}

impl<B> http_body::Body for Paced<B>
where
    B: http_body::Body<Data = axum::body::Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = axum::body::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        match this.body.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                if std::mem::take(this.waiting) {
                    this.activity.waiting.fetch_sub(1, Ordering::AcqRel);
                }
                this.deadline.set(None);
                if let Some(Ok(frame)) = &frame
                    && let Some(data) = frame.data_ref()
                {
                    *this.received += data.len() as u64;
                    if *this.framing == Framing::Grpc {
                        grpc_progress(
                            data,
                            this.header,
                            this.length,
                            this.remaining,
                            this.began,
                            this.received,
                        );
                    }
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            // Waiting between gRPC messages is allowed.
            Poll::Pending if this.remaining.is_none() => Poll::Pending,
            Poll::Pending => {
                if !*this.waiting {
                    let waiting = this.activity.waiting.fetch_add(1, Ordering::AcqRel) + 1;
                    *this.waiting = true;
                    if waiting > MAX_WAITING_STREAMS {
                        return Poll::Ready(Some(Err(format!(
                            "more than {MAX_WAITING_STREAMS} requests of this connection are waiting for their data"
                        )
                        .into())));
                    }
                }
                if this.deadline.is_none() {
                    let allowed = *this.timeout
                        + Duration::from_secs_f64(*this.received as f64 / MIN_BODY_RATE as f64);
                    this.deadline
                        .set(Some(tokio::time::sleep_until(*this.began + allowed)));
                }
                match this.deadline.as_pin_mut().map(|deadline| deadline.poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Some(Err(format!(
                        "the request's data did not arrive within {} s (plus a second per {} KiB)",
                        this.timeout.as_secs_f64(),
                        MIN_BODY_RATE >> 10
                    )
                    .into()))),
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Follows gRPC's message framing through `data`: which message the bytes belong to, and
/// where the next one begins (its clock starts with its first byte).
fn grpc_progress(
    mut data: &[u8],
    header: &mut usize,
    length: &mut [u8; 4],
    remaining: &mut Option<u64>,
    began: &mut tokio::time::Instant,
    received: &mut u64,
) {
    while !data.is_empty() {
        match remaining {
            // Between messages: this byte begins the next one.
            None => {
                *remaining = Some(0);
                *header = 0;
                *began = tokio::time::Instant::now();
                *received = data.len() as u64;
            }
            // In the 5-byte header.
            Some(0) if *header < 5 => {
                if *header > 0 {
                    length[*header - 1] = data[0];
                }
                *header += 1;
                data = &data[1..];
                if *header == 5 {
                    let payload = u64::from(u32::from_be_bytes(*length));
                    *remaining = if payload == 0 { None } else { Some(payload) };
                }
            }
            Some(left) => {
                let taken = (*left).min(data.len() as u64);
                *left -= taken;
                data = &data[taken as usize..];
                if *left == 0 {
                    *remaining = None;
                }
            }
        }
    }
}

/// An HTTP/1 connection's I/O that replaces hyper's own answer to a request it cannot parse (a
/// bad request line, header or `Content-Length`: an empty `400`, `414` or `431` with
/// `connection: close` and `content-length: 0`, written just before the connection closes) with
/// the same status and the contract's JSON error body. runledger's own answers always carry a
/// body, so the empty one is recognisable.
pub struct JsonParseErrors<I> {
    io: I,
    /// Bytes still to write in place of hyper's answer.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<I> JsonParseErrors<I> {
    pub fn new(io: I) -> Self {
        JsonParseErrors {
            io,
            replacement: None,
        }
    }
}

/// The JSON answer to write instead of `head`, if `head` is hyper's answer to a malformed
/// request.
pub fn replace_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let (status_line, rest) = text.split_once("\r\n")?;
    let lower = rest.to_ascii_lowercase();
    if !lower.ends_with("\r\n\r\n")
        || !lower.contains("connection: close\r\n")
        || !lower.contains("content-length: 0\r\n")
        || lower.contains("content-type:")
    {
        return None;
    }
    let (code, detail) = match status_line {
        "HTTP/1.1 400 Bad Request" | "HTTP/1.0 400 Bad Request" => (
            400,
            "the request is not well-formed HTTP/1.1 (its request line, a header, or its Content-Length); nothing was done",
        ),
        "HTTP/1.1 414 URI Too Long" | "HTTP/1.0 414 URI Too Long" => (
            414,
            "the request's URI is over the size limit; nothing was done",
        ),
        "HTTP/1.1 431 Request Header Fields Too Large"
        | "HTTP/1.0 431 Request Header Fields Too Large" => (
            431,
            "the request's headers are over the size limit; nothing was done",
        ),
        _ => return None,
    };
    let status = axum::http::StatusCode::from_u16(code).ok()?;
    let body = serde_json::to_vec(&crate::error::ErrorBody {
        code,
        message: status.canonical_reason().unwrap_or("error").to_lowercase(),
        errors: vec![detail.to_string()],
    })
    .ok()?;
    let mut out = format!(
        "{status_line}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<I: AsyncWrite + Unpin> JsonParseErrors<I> {
    /// Writes what is left of a replacement; ready once there is nothing left.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonParseErrors<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement(cx))?;
        if let Some(replacement) = replace_parse_error(buf) {
            self.replacement = Some((replacement, 0));
            // Claimed as written; the replacement goes out before anything else.
            let _ = self.poll_replacement(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && replace_parse_error(only).is_some()
        {
            return self.poll_write(cx, only);
        }
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_parse_error_answers_become_json() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 20:10:16 GMT\r\n\r\n";
        let replaced = String::from_utf8(replace_parse_error(hyper).unwrap()).unwrap();
        let (head, body) = replaced.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], 400);
        assert!(
            body["errors"][0]
                .as_str()
                .unwrap()
                .contains("Content-Length")
        );
        // runledger's own answers are left alone.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert!(replace_parse_error(ours).is_none());
        assert!(replace_parse_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
