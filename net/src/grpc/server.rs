//! Serving gRPC over HTTP/2 connections (`h2` through `tokio_util::compat`
//! on glommio sockets; no tokio runtime).
//!
//! One task per connection drives the `h2` connection (accepting streams is
//! what moves its I/O) and one task per stream runs the call. Errors of one
//! call end that stream with a status; they never touch the connection.
//! Connection errors (bad preface, protocol violations) end that connection
//! only.
//!
//! Invariant: every stream we accept ends with a `grpc-status` (trailers or a
//! trailers-only response) unless the peer reset it first.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future;
use glommio::net::TcpStream;
use glommio::timer::sleep;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::codec::{Decoded, Decoder};
use super::{CallInfo, Code, Handler, Router, Status};
use crate::shutdown::Trigger;

/// Limits and timers of the gRPC server. Defaults are etcd 3.5's.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request message accepted. etcd: `--max-request-bytes` +
    /// 512 KiB of gRPC overhead (embed: `grpcOverheadBytes`). Stops a client
    /// from making us buffer arbitrarily large messages.
    pub max_recv_message: usize,
    /// Server-to-client keepalive ping period (`--grpc-keepalive-interval`, 2h).
    pub keepalive_interval: Duration,
    /// Time to wait for the ping's ack before closing the connection
    /// (`--grpc-keepalive-timeout`, 20s). Detects dead peers.
    pub keepalive_timeout: Duration,
    /// Streams per connection (`--max-concurrent-streams`, etcd: 2^32-1).
    pub max_concurrent_streams: u32,
    /// A connection must finish the HTTP/2 preface within this time, so idle
    /// half-open sockets cannot pile up.
    pub handshake_timeout: Duration,
    /// After shutdown starts, connections get this long to finish their calls.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_recv_message: 1536 * 1024 + 512 * 1024,
            keepalive_interval: Duration::from_secs(2 * 60 * 60),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: u32::MAX,
            handshake_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves one accepted TCP connection until it closes or shutdown completes.
pub async fn serve_connection(
    stream: TcpStream,
    router: Rc<Router>,
    cfg: Rc<ServerConfig>,
    shutdown: Trigger,
) {
    let _ = stream.set_nodelay(true);
    let io = stream.compat();
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 22)
        .max_frame_size(1 << 14)
        .max_header_list_size(16 << 20)
        .handshake::<_, Bytes>(io);
    // A connection that has not finished its preface is dropped on shutdown
    // at once: it has no calls to drain.
    let conn = future::or(
        async { Some(handshake.await) },
        future::or(
            async {
                sleep(cfg.handshake_timeout).await;
                None
            },
            async {
                shutdown.wait().await;
                None
            },
        ),
    )
    .await;
    let mut conn = match conn {
        Some(Ok(c)) => c,
        _ => return,
    };

    // Keepalive: ping every interval; a ping left unanswered past the
    // timeout closes the connection.
    let close = Trigger::new();
    if let Some(mut pp) = conn.ping_pong() {
        let close = close.clone();
        let (interval, timeout) = (cfg.keepalive_interval, cfg.keepalive_timeout);
        glommio::spawn_local(async move {
            loop {
                sleep(interval).await;
                let ok = future::or(async { pp.ping(h2::Ping::opaque()).await.is_ok() }, async {
                    sleep(timeout).await;
                    false
                })
                .await;
                if !ok {
                    close.fire();
                    return;
                }
            }
        })
        .detach();
    }

    // Calls running on this connection.
    let active = Rc::new(Cell::new(0usize));
    enum Ev<T> {
        Stream(Option<Result<T, h2::Error>>),
        Shutdown,
        Close,
    }
    loop {
        let ev = future::or(
            async { Ev::Stream(conn.accept().await) },
            future::or(
                async {
                    shutdown.wait().await;
                    Ev::Shutdown
                },
                async {
                    close.wait().await;
                    Ev::Close
                },
            ),
        )
        .await;
        match ev {
            Ev::Stream(Some(Ok((req, respond)))) => {
                spawn_call(req, respond, &router, &cfg, &active);
            }
            Ev::Stream(Some(Err(_))) | Ev::Stream(None) => break,
            Ev::Close => {
                conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                let _ = future::or(async { while conn.accept().await.is_some() {} }, async {
                    sleep(Duration::from_millis(100)).await;
                })
                .await;
                break;
            }
            Ev::Shutdown => {
                // GOAWAY, then let in-flight calls finish within the grace
                // time. An idle connection closes at once (h2 would wait for
                // the peer to ack its shutdown ping, which an idle or dead
                // peer never does).
                conn.graceful_shutdown();
                let grace = cfg.shutdown_grace;
                let _ = future::or(
                    async {
                        while let Some(Ok((req, respond))) = conn.accept().await {
                            spawn_call(req, respond, &router, &cfg, &active);
                        }
                    },
                    future::or(async { sleep(grace).await }, async {
                        // Give the GOAWAY a moment to be written, then stop
                        // as soon as no call is running.
                        sleep(Duration::from_millis(20)).await;
                        while active.get() > 0 {
                            sleep(Duration::from_millis(10)).await;
                        }
                    }),
                )
                .await;
                break;
            }
        }
    }
    close.fire();
}

fn spawn_call(
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    router: &Rc<Router>,
    cfg: &Rc<ServerConfig>,
    active: &Rc<Cell<usize>>,
) {
    let (router, max, active) = (router.clone(), cfg.max_recv_message, active.clone());
    active.set(active.get() + 1);
    glommio::spawn_local(async move {
        // glommio polls a new task at once; yield first, so the connection
        // takes every request already read before the calls run and queue
        // their responses, which it then writes with one send. Run inline,
        // each call's response went out in its own send: h2 flushes
        // whenever the connection is polled for the next request (one
        // `sendto` per request at 256 clients).
        futures_lite::future::yield_now().await;
        handle_stream(req, respond, router, max).await;
        active.set(active.get() - 1);
    })
    .detach();
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H M S m u n).
pub fn parse_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (num, unit) = v.split_at(v.len() - 1);
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

async fn handle_stream(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    router: Rc<Router>,
    max_recv: usize,
) {
    let (parts, recv) = req.into_parts();
    if parts.method != http::Method::POST {
        let _ = respond.send_response(
            Response::builder().status(405).body(()).unwrap_or_default(),
            true,
        );
        return;
    }
    let is_grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if !is_grpc {
        let _ = respond.send_response(
            Response::builder().status(415).body(()).unwrap_or_default(),
            true,
        );
        return;
    }
    let deadline = match parts.headers.get("grpc-timeout").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => match parse_timeout(v) {
            Some(d) => Some(d),
            None => {
                send_status(
                    &mut respond,
                    &Status::internal(format!("malformed grpc-timeout: {v}")),
                );
                return;
            }
        },
        Some(Err(_)) => {
            send_status(&mut respond, &Status::internal("malformed grpc-timeout"));
            return;
        }
    };
    let info = CallInfo {
        authorization: parts
            .headers
            .get("authorization")
            .or_else(|| parts.headers.get("token"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        request_len: 0,
        require_leader: parts
            .headers
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true"),
    };
    let handler = match router.route(parts.uri.path(), &info) {
        Ok(h) => h.clone(),
        Err(st) => {
            send_status(&mut respond, &st);
            return;
        }
    };
    let mut rx = RequestStream {
        recv,
        dec: Decoder::new(max_recv),
        eof: false,
    };
    match handler {
        Handler::Unary(f) => {
            let call = async {
                let body = rx.read_unary().await?;
                let info = CallInfo {
                    request_len: body.len(),
                    ..info
                };
                f(body, info).await
            };
            // A client that resets the stream (cancels the call) is not
            // waiting any more: drop the handler, as grpc-go cancels the
            // handler's context (long waits such as Lock clean up on drop).
            let result = {
                let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
                future::or(with_deadline(deadline, call), async {
                    let _ = reset.await;
                    Err(Status::new(Code::CANCELLED, "context canceled"))
                })
                .await
            };
            match result {
                Ok(frame) => {
                    let headers = ok_headers();
                    match respond.send_response(headers, false) {
                        Ok(mut tx) => {
                            let _ = tx.send_data(frame, false);
                            let _ = tx.send_trailers(status_trailers(&Status::new(Code::OK, "")));
                        }
                        Err(_) => {}
                    }
                }
                Err(st) => send_status(&mut respond, &st),
            }
        }
        Handler::Streaming(f) => {
            let state = Rc::new(RefCell::new(SinkState {
                respond: Some(respond),
                stream: None,
                done: false,
            }));
            let sink = ResponseSink {
                state: state.clone(),
            };
            let result = with_deadline(deadline, f(rx, sink, info)).await;
            let mut st = state.borrow_mut();
            let status = match result {
                Ok(()) => Status::new(Code::OK, ""),
                Err(s) => s,
            };
            st.finish(&status);
        }
    }
}

async fn with_deadline<T, F>(deadline: Option<Duration>, fut: F) -> Result<T, Status>
where
    F: std::future::Future<Output = Result<T, Status>>,
{
    match deadline {
        None => fut.await,
        Some(d) => {
            future::or(fut, async move {
                sleep(d).await;
                Err(Status::new(
                    Code::DEADLINE_EXCEEDED,
                    "context deadline exceeded",
                ))
            })
            .await
        }
    }
}

fn ok_headers() -> Response<()> {
    let mut r = Response::new(());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

fn status_trailers(st: &Status) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(st.code.0));
    if !st.message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&st.encoded_message()) {
            h.insert("grpc-message", v);
        }
    }
    h
}

/// Ends a call that sent no message with a trailers-only response.
fn send_status(respond: &mut SendResponse<Bytes>, st: &Status) {
    let mut r = ok_headers();
    r.headers_mut().extend(status_trailers(st));
    let _ = respond.send_response(r, true);
}

/// The request half of a call: decoded messages in order.
pub struct RequestStream {
    recv: RecvStream,
    dec: Decoder,
    eof: bool,
}

impl RequestStream {
    /// The next message body, `None` once the client half-closed cleanly.
    pub async fn next_raw(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if let Decoded::Message(m) = self.dec.decode()? {
                return Ok(Some(m));
            }
            if self.eof {
                if self.dec.is_empty() {
                    return Ok(None);
                }
                return Err(Status::internal("grpc: truncated message at end of stream"));
            }
            match self.recv.data().await {
                Some(Ok(chunk)) => {
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    self.dec.push(&chunk);
                }
                Some(Err(e)) => {
                    return Err(Status::new(Code::CANCELLED, format!("stream error: {e}")));
                }
                None => self.eof = true,
            }
        }
    }

    /// The next message decoded as `T`.
    pub async fn next<T: prost::Message + Default>(&mut self) -> Result<Option<T>, Status> {
        match self.next_raw().await? {
            None => Ok(None),
            Some(b) => T::decode(b)
                .map(Some)
                .map_err(|e| Status::internal(format!("grpc: error unmarshalling request: {e}"))),
        }
    }

    async fn read_unary(&mut self) -> Result<Bytes, Status> {
        let Some(body) = self.next_raw().await? else {
            return Err(Status::internal("grpc: request message not received"));
        };
        // Drain to the end of stream: a second message is a client bug.
        if self.next_raw().await?.is_some() {
            return Err(Status::internal(
                "grpc: too many request messages for unary call",
            ));
        }
        Ok(body)
    }
}

struct SinkState {
    respond: Option<SendResponse<Bytes>>,
    stream: Option<SendStream<Bytes>>,
    done: bool,
}

impl SinkState {
    fn finish(&mut self, st: &Status) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(mut tx) = self.stream.take() {
            let _ = tx.send_trailers(status_trailers(st));
        } else if let Some(mut r) = self.respond.take() {
            send_status(&mut r, st);
        }
    }
}

/// The response half of a streaming call. Cloneable so that tasks of the call
/// can send; sends wait for HTTP/2 flow-control capacity, so a slow reader
/// slows the sender instead of growing our buffers.
#[derive(Clone)]
pub struct ResponseSink {
    state: Rc<RefCell<SinkState>>,
}

impl ResponseSink {
    /// Sends one message. Fails with CANCELLED if the client went away.
    pub async fn send<T: prost::Message>(&self, msg: &T) -> Result<(), Status> {
        let frame = super::codec::encode_frame(msg);
        self.send_frame(frame).await
    }

    pub async fn send_frame(&self, frame: Bytes) -> Result<(), Status> {
        {
            let mut st = self.state.borrow_mut();
            if st.done {
                return Err(Status::new(Code::CANCELLED, "stream finished"));
            }
            if st.stream.is_none() {
                let Some(mut r) = st.respond.take() else {
                    return Err(Status::new(Code::CANCELLED, "stream finished"));
                };
                let tx = r
                    .send_response(ok_headers(), false)
                    .map_err(|e| Status::new(Code::CANCELLED, e.to_string()))?;
                st.stream = Some(tx);
            }
            if let Some(tx) = st.stream.as_mut() {
                tx.reserve_capacity(frame.len());
            }
        }
        // Wait until the peer's window has room for at least part of it.
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let Some(tx) = st.stream.as_mut() else {
                return Poll::Ready(Err(Status::new(Code::CANCELLED, "stream finished")));
            };
            if tx.capacity() > 0 {
                return Poll::Ready(Ok(()));
            }
            match tx.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => {
                    Poll::Ready(Err(Status::new(Code::CANCELLED, e.to_string())))
                }
                Poll::Ready(None) => {
                    Poll::Ready(Err(Status::new(Code::CANCELLED, "stream closed")))
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        let mut st = self.state.borrow_mut();
        match st.stream.as_mut() {
            Some(tx) => tx
                .send_data(frame, false)
                .map_err(|e| Status::new(Code::CANCELLED, e.to_string())),
            None => Err(Status::new(Code::CANCELLED, "stream finished")),
        }
    }

    /// Resolves when the client resets the stream or the connection goes
    /// away (or the call already finished). For calls that can sit idle
    /// after the client's half-close, e.g. a watch: nothing else would tell
    /// them the client is gone. Do not poll it while a `send` is waiting:
    /// h2 keeps one send-side waker per stream.
    pub async fn closed(&self) {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.done {
                return Poll::Ready(());
            }
            if let Some(tx) = st.stream.as_mut() {
                return tx.poll_reset(cx).map(|_| ());
            }
            match st.respond.as_mut() {
                Some(r) => r.poll_reset(cx).map(|_| ()),
                None => Poll::Ready(()),
            }
        })
        .await
    }

    /// Ends the call now with `status` (later sends fail).
    pub fn finish(&self, status: &Status) {
        self.state.borrow_mut().finish(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_timeout("123456789S"), None);
        assert_eq!(parse_timeout("S"), None);
        assert_eq!(parse_timeout("1x"), None);
        assert_eq!(parse_timeout("-1S"), None);
    }
}
