//! An etcd v3 client over our own gRPC layer: one HTTP/2 connection (`h2`
//! through `tokio_util::compat` on a glommio socket, no tokio runtime), shared
//! by every task of the executor that opened it.
//!
//! * [`Client::connect`] dials, sets TCP_NODELAY, does the HTTP/2 handshake and
//!   spawns the task that drives the connection (`glommio::spawn_local`), so
//!   it must be called inside a glommio executor, and the client stays on it
//!   (`Rc` inside: cheap to clone, not `Send`).
//! * [`Client::unary`] runs one unary call: `content-type: application/grpc`,
//!   `te: trailers`, optional `grpc-timeout`; it reads the single response
//!   message and the `grpc-status` / `grpc-message` trailers (or a
//!   trailers-only response). The typed helpers ([`Client::range`],
//!   [`Client::put`], ...) are thin wrappers.
//!
//! Errors are kept apart as STYLE.md asks: [`ClientError`] is about the
//! connection (dial, handshake); a call's outcome is a [`Status`]. A call
//! that fails because the connection went away (GOAWAY, I/O error, closed)
//! ends with UNAVAILABLE, as in grpc-go, so callers can tell "retry
//! elsewhere" from an answer of the server. A stream reset by the peer maps
//! to the code the gRPC HTTP/2 spec gives for its reason
//! (PROTOCOL-HTTP2.md, "Errors"), and a non-200 HTTP status without a
//! `grpc-status` maps as in `http-grpc-status-mapping.md`.
//!
//! * [`Client::streaming`] opens a bidirectional streaming call (Watch,
//!   LeaseKeepAlive): a [`StreamTx`] that sends messages and a [`StreamRx`]
//!   that reads them until the server's status ends the call; dropping both
//!   resets the stream (CANCEL), as a canceled grpc-go call does.
//!
//! Not here yet: TLS, keepalive pings, several endpoints / balancing. Flow control: the whole
//! request frame is handed to `h2` at once; `h2` queues what the peer's window
//! does not admit yet and sends it as WINDOW_UPDATEs arrive.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future;
use glommio::net::TcpStream;
use glommio::timer::sleep;
use h2::client::SendRequest;
use h2::{Reason, RecvStream};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::grpc::codec::{encode_frame, Decoded, Decoder};
use crate::grpc::status::percent_decode;
use crate::grpc::{Code, Status};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

/// gRPC method paths of etcd's KV service (`rpc.proto`, service `KV` in
/// package `etcdserverpb`). The server's router registers the same strings.
pub mod method {
    pub const KV_RANGE: &str = "/etcdserverpb.KV/Range";
    pub const KV_PUT: &str = "/etcdserverpb.KV/Put";
    pub const KV_DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
    pub const KV_TXN: &str = "/etcdserverpb.KV/Txn";
    pub const KV_COMPACT: &str = "/etcdserverpb.KV/Compact";
}

/// Settings of one client connection.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Bound on dial + HTTP/2 handshake. etcdctl's `--dial-timeout` is 2s;
    /// we allow more because a loaded 2-core machine can be slow to accept.
    pub connect_timeout: Duration,
    /// Deadline of calls that set none themselves, sent as `grpc-timeout` and
    /// enforced here too. `None`: no deadline (etcd's clientv3 default).
    pub default_timeout: Option<Duration>,
    /// Largest response message accepted; the decoder refuses a bigger
    /// declared length before buffering it. etcd's clientv3 default
    /// (`defaultMaxCallRecvMsgSize`) is `math.MaxInt32`.
    pub max_recv_message: usize,
    /// HTTP/2 stream receive window. 1 MiB, as our server: a Range answer of
    /// a few hundred KiB then needs no WINDOW_UPDATE round trip.
    pub initial_window_size: u32,
    /// HTTP/2 connection receive window (shared by all concurrent calls).
    pub initial_connection_window_size: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            default_timeout: None,
            max_recv_message: i32::MAX as usize,
            initial_window_size: 1 << 20,
            initial_connection_window_size: 1 << 22,
        }
    }
}

/// Per-call settings.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Deadline of this call (overrides [`ClientConfig::default_timeout`]).
    pub timeout: Option<Duration>,
    /// etcd's auth token, sent as the `token` metadata (what clientv3 sends;
    /// our server also reads `authorization`).
    pub token: Option<String>,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not `host:port` or `http://host:port`.
    #[error("invalid endpoint {endpoint:?}: {why}")]
    InvalidEndpoint { endpoint: String, why: &'static str },
    /// The TCP connection failed (refused, unreachable, ...).
    #[error("dial {endpoint}: {source}")]
    Dial { endpoint: String, source: io::Error },
    /// Dial and handshake did not finish within `connect_timeout`.
    #[error("dial {endpoint}: timed out after {after:?}")]
    Timeout { endpoint: String, after: Duration },
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake with {endpoint}: {source}")]
    Handshake { endpoint: String, source: h2::Error },
}

/// A connection to one etcd endpoint. Clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

struct Inner {
    send: SendRequest<Bytes>,
    scheme: Scheme,
    authority: Authority,
    cfg: ClientConfig,
    /// Set by the connection task when the connection ends: `Some(reason)`.
    closed: Rc<RefCell<Option<String>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("authority", &self.inner.authority)
            .field("closed", &self.inner.closed.borrow())
            .finish()
    }
}

/// Splits an etcd endpoint (`127.0.0.1:2379`, `http://localhost:2379`,
/// `localhost:2379/`) into the `host:port` to dial and the HTTP/2 authority.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, Authority), ClientError> {
    let invalid = |why| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        why,
    };
    let rest = endpoint.trim();
    let rest = if let Some(r) = rest.strip_prefix("http://") {
        r
    } else if rest.starts_with("https://") || rest.starts_with("unixs://") {
        return Err(invalid("TLS is not supported by this client yet"));
    } else if rest.contains("://") {
        return Err(invalid("scheme must be http"));
    } else {
        rest
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err(invalid("an endpoint has no path"));
    }
    let authority = Authority::try_from(hostport).map_err(|_| invalid("not host:port"))?;
    if authority.port_u16().is_none() || authority.host().is_empty() {
        return Err(invalid("not host:port"));
    }
    Ok((hostport.to_string(), authority))
}

impl Client {
    /// Opens one HTTP/2 connection to `endpoint` with default settings.
    /// Must run inside a glommio executor.
    pub async fn connect(endpoint: &str) -> Result<Client, ClientError> {
        Client::connect_with(endpoint, ClientConfig::default()).await
    }

    /// Opens one HTTP/2 connection to `endpoint`.
    pub async fn connect_with(endpoint: &str, cfg: ClientConfig) -> Result<Client, ClientError> {
        let (hostport, authority) = parse_endpoint(endpoint)?;
        let after = cfg.connect_timeout;
        let dial = async {
            let stream =
                TcpStream::connect(hostport.as_str())
                    .await
                    .map_err(|e| ClientError::Dial {
                        endpoint: endpoint.to_string(),
                        source: e.into(),
                    })?;
            // One request is a few small frames: Nagle would hold them back
            // waiting for the ACK of the previous call.
            stream.set_nodelay(true).map_err(|e| ClientError::Dial {
                endpoint: endpoint.to_string(),
                source: e.into(),
            })?;
            h2::client::Builder::new()
                .initial_window_size(cfg.initial_window_size)
                .initial_connection_window_size(cfg.initial_connection_window_size)
                .enable_push(false)
                .handshake::<_, Bytes>(stream.compat())
                .await
                .map_err(|source| ClientError::Handshake {
                    endpoint: endpoint.to_string(),
                    source,
                })
        };
        let (send, conn) = future::or(dial, async {
            sleep(after).await;
            Err(ClientError::Timeout {
                endpoint: endpoint.to_string(),
                after,
            })
        })
        .await?;
        let closed = Rc::new(RefCell::new(None));
        let closed_by_task = closed.clone();
        // Driving `conn` is what reads and writes the socket. It ends when
        // the peer closes, on a connection error, or once every clone of
        // `send` is dropped and no stream is open (then h2 sends GOAWAY).
        glommio::spawn_local(async move {
            let why = match conn.await {
                Ok(()) => "connection closed".to_string(),
                Err(e) => format!("connection error: {e}"),
            };
            *closed_by_task.borrow_mut() = Some(why);
        })
        .detach();
        Ok(Client {
            inner: Rc::new(Inner {
                send,
                scheme: Scheme::HTTP,
                authority,
                cfg,
                closed,
            }),
        })
    }

    /// The `host:port` this client talks to.
    pub fn authority(&self) -> &str {
        self.inner.authority.as_str()
    }

    /// Why the connection ended, once it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.closed.borrow().clone()
    }

    /// One unary call with the client's default deadline.
    pub async fn unary<Req, Resp>(&self, path: &str, req: &Req) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.unary_with(path, req, &CallOptions::default()).await
    }

    /// One unary call.
    pub async fn unary_with<Req, Resp>(
        &self,
        path: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let timeout = opts.timeout.or(self.inner.cfg.default_timeout);
        let body = self.call_raw(path, encode_frame(req), timeout, opts.token.as_deref());
        let body = match timeout {
            None => body.await?,
            // The server enforces `grpc-timeout` too; enforcing it here also
            // covers a server that never answers. Dropping the call's h2
            // handles resets the stream (RST_STREAM CANCEL).
            Some(d) => {
                future::or(body, async move {
                    sleep(d).await;
                    Err(Status::new(
                        Code::DEADLINE_EXCEEDED,
                        "context deadline exceeded",
                    ))
                })
                .await?
            }
        };
        Resp::decode(body).map_err(|e| {
            Status::internal(format!(
                "grpc: failed to unmarshal the received message: {e}"
            ))
        })
    }

    /// Sends one framed request message and returns the body of the single
    /// response message once the call ended with status OK.
    async fn call_raw(
        &self,
        path: &str,
        frame: Bytes,
        timeout: Option<Duration>,
        token: Option<&str>,
    ) -> Result<Bytes, Status> {
        let inner = &*self.inner;
        let request = build_request(inner, path, timeout, token)?;
        // `ready` waits while the server's MAX_CONCURRENT_STREAMS is reached.
        let mut send = inner
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| self.connection_status(&e))?;
        let (response, mut tx) = send
            .send_request(request, false)
            .map_err(|e| self.connection_status(&e))?;
        tx.send_data(frame, true).map_err(|e| h2_status(&e))?;
        let response = response.await.map_err(|e| h2_status(&e))?;
        read_unary_response(response, inner.cfg.max_recv_message).await
    }

    fn connection_status(&self, e: &h2::Error) -> Status {
        if let Some(why) = self.closed_reason() {
            return Status::new(
                Code::UNAVAILABLE,
                format!("connection to {} closed: {why}", self.inner.authority),
            );
        }
        h2_status(e)
    }

    /// Opens a bidirectional streaming call on `path` (optionally with the
    /// `hasleader: true` metadata of clientv3's `WithRequireLeader`).
    pub async fn streaming(
        &self,
        path: &str,
        require_leader: bool,
    ) -> Result<(StreamTx, StreamRx), Status> {
        let inner = &*self.inner;
        let mut request = build_request(inner, path, None, None)?;
        if require_leader {
            request
                .headers_mut()
                .insert("hasleader", HeaderValue::from_static("true"));
        }
        let mut send = inner
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| self.connection_status(&e))?;
        let (response, tx) = send
            .send_request(request, false)
            .map_err(|e| self.connection_status(&e))?;
        Ok((
            StreamTx(tx),
            StreamRx {
                state: RxState::Headers(response),
                dec: Decoder::new(inner.cfg.max_recv_message),
            },
        ))
    }

    /// `KV.Range`.
    pub async fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Status> {
        self.unary(method::KV_RANGE, req).await
    }

    /// `KV.Put`.
    pub async fn put(&self, req: &PutRequest) -> Result<PutResponse, Status> {
        self.unary(method::KV_PUT, req).await
    }

    /// `KV.DeleteRange`.
    pub async fn delete_range(
        &self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Status> {
        self.unary(method::KV_DELETE_RANGE, req).await
    }

    /// `KV.Txn`.
    pub async fn txn(&self, req: &TxnRequest) -> Result<TxnResponse, Status> {
        self.unary(method::KV_TXN, req).await
    }

    /// `KV.Compact`.
    pub async fn compact(&self, req: &CompactionRequest) -> Result<CompactionResponse, Status> {
        self.unary(method::KV_COMPACT, req).await
    }
}

/// The sending half of a streaming call.
pub struct StreamTx(h2::SendStream<Bytes>);

impl StreamTx {
    /// Queues one message (h2 sends it as the peer's window allows).
    pub fn send<M: prost::Message>(&mut self, msg: &M) -> Result<(), Status> {
        self.0
            .send_data(encode_frame(msg), false)
            .map_err(|e| h2_status(&e))
    }

    /// Half-closes the call (no more messages).
    pub fn finish(&mut self) -> Result<(), Status> {
        self.0
            .send_data(Bytes::new(), true)
            .map_err(|e| h2_status(&e))
    }
}

enum RxState {
    Headers(h2::client::ResponseFuture),
    Body(RecvStream),
    Done,
}

/// The receiving half of a streaming call.
pub struct StreamRx {
    state: RxState,
    dec: Decoder,
}

impl StreamRx {
    /// The next message; `Ok(None)` once the call ended with status OK, the
    /// call's status otherwise.
    pub async fn next<M: prost::Message + Default>(&mut self) -> Result<Option<M>, Status> {
        loop {
            if let Decoded::Message(m) = self.dec.decode()? {
                return M::decode(m).map(Some).map_err(|e| {
                    Status::internal(format!(
                        "grpc: failed to unmarshal the received message: {e}"
                    ))
                });
            }
            match std::mem::replace(&mut self.state, RxState::Done) {
                RxState::Done => return Ok(None),
                RxState::Headers(response) => {
                    let response = response.await.map_err(|e| h2_status(&e))?;
                    let (parts, body) = response.into_parts();
                    if let Some(st) = status_from_headers(&parts.headers) {
                        let st = st?;
                        return if st.code == Code::OK {
                            Ok(None)
                        } else {
                            Err(st)
                        };
                    }
                    if parts.status != http::StatusCode::OK {
                        return Err(status_from_http(parts.status));
                    }
                    self.state = RxState::Body(body);
                }
                RxState::Body(mut body) => match body.data().await {
                    Some(chunk) => {
                        let chunk = chunk.map_err(|e| h2_status(&e))?;
                        let _ = body.flow_control().release_capacity(chunk.len());
                        self.dec.push(&chunk);
                        self.state = RxState::Body(body);
                    }
                    None => {
                        let trailers = body.trailers().await.map_err(|e| h2_status(&e))?;
                        return match trailers.as_ref().and_then(status_from_headers) {
                            Some(st) => {
                                let st = st?;
                                if st.code == Code::OK {
                                    Ok(None)
                                } else {
                                    Err(st)
                                }
                            }
                            None => Err(Status::internal(
                                "server closed the stream without sending trailers",
                            )),
                        };
                    }
                },
            }
        }
    }
}

fn build_request(
    inner: &Inner,
    path: &str,
    timeout: Option<Duration>,
    token: Option<&str>,
) -> Result<Request<()>, Status> {
    let path_and_query = PathAndQuery::try_from(path)
        .map_err(|_| Status::internal(format!("malformed method name: {path:?}")))?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(inner.scheme.clone());
    parts.authority = Some(inner.authority.clone());
    parts.path_and_query = Some(path_and_query);
    let uri = Uri::from_parts(parts)
        .map_err(|_| Status::internal(format!("malformed method name: {path:?}")))?;
    let mut request = Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("ferrocd-net/", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(d) = timeout {
        if let Ok(v) = HeaderValue::from_str(&encode_timeout(d)) {
            headers.insert("grpc-timeout", v);
        }
    }
    if let Some(t) = token {
        let v = HeaderValue::from_str(t)
            .map_err(|_| Status::invalid_argument("auth token is not a valid header value"))?;
        headers.insert("token", v);
    }
    Ok(request)
}

/// Reads a unary call's response: headers, one message, trailers.
async fn read_unary_response(
    response: Response<RecvStream>,
    max_recv: usize,
) -> Result<Bytes, Status> {
    let (parts, mut body) = response.into_parts();
    // Trailers-only response: the status is in the headers (and the stream
    // ended with them). gRPC servers answer errors this way.
    if let Some(st) = status_from_headers(&parts.headers) {
        let st = st?;
        if st.code != Code::OK {
            return Err(st);
        }
        if body.is_end_stream() {
            return Err(no_message());
        }
    }
    if parts.status != http::StatusCode::OK {
        return Err(status_from_http(parts.status));
    }
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return Err(Status::internal(format!(
            "transport: received unexpected content-type {content_type:?}"
        )));
    }
    let mut dec = Decoder::new(max_recv);
    let mut message = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| h2_status(&e))?;
        // Give the window back at once: the bytes are now ours to buffer,
        // bounded by `max_recv` through the decoder.
        let _ = body.flow_control().release_capacity(chunk.len());
        dec.push(&chunk);
        while let Decoded::Message(m) = dec.decode()? {
            if message.is_some() {
                return Err(Status::internal(
                    "grpc: cardinality violation: expected <EOF> for non server-streaming RPCs, but received another message",
                ));
            }
            message = Some(m);
        }
    }
    let trailers = body.trailers().await.map_err(|e| h2_status(&e))?;
    let status = match trailers.as_ref().and_then(status_from_headers) {
        Some(st) => st?,
        None => {
            return Err(Status::internal(
                "server closed the stream without sending trailers",
            ))
        }
    };
    if status.code != Code::OK {
        return Err(status);
    }
    if !dec.is_empty() {
        return Err(Status::internal("grpc: truncated message at end of stream"));
    }
    message.ok_or_else(no_message)
}

fn no_message() -> Status {
    Status::internal(
        "grpc: cardinality violation: received no response message from non-server-streaming RPC",
    )
}

/// The status in `grpc-status` / `grpc-message`, if `grpc-status` is present.
/// A malformed `grpc-status` is itself an INTERNAL status.
fn status_from_headers(headers: &HeaderMap) -> Option<Result<Status, Status>> {
    let raw = headers.get("grpc-status")?;
    let code = match raw.to_str().ok().and_then(|s| s.parse::<u32>().ok()) {
        Some(c) => Code(c),
        None => {
            return Some(Err(Status::internal(format!(
                "transport: malformed grpc-status: {raw:?}"
            ))))
        }
    };
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(&String::from_utf8_lossy(v.as_bytes())))
        .unwrap_or_default();
    Some(Ok(Status::new(code, message)))
}

/// gRPC's `http-grpc-status-mapping.md`, for responses without grpc-status.
fn status_from_http(status: http::StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::INTERNAL,
        401 => Code::UNAUTHENTICATED,
        403 => Code::PERMISSION_DENIED,
        404 => Code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => Code::UNAVAILABLE,
        _ => Code::UNKNOWN,
    };
    Status::new(
        code,
        format!("unexpected HTTP status code received from server: {status}"),
    )
}

/// Maps an `h2` error of one call to a status. A stream reset maps by its
/// reason (gRPC PROTOCOL-HTTP2.md, "Errors"); the connection going away
/// (GOAWAY, I/O) is UNAVAILABLE, as grpc-go reports it.
fn h2_status(e: &h2::Error) -> Status {
    if e.is_reset() {
        let code = match e.reason() {
            Some(Reason::REFUSED_STREAM) => Code::UNAVAILABLE,
            Some(Reason::CANCEL) => Code::CANCELLED,
            Some(Reason::ENHANCE_YOUR_CALM) => Code::RESOURCE_EXHAUSTED,
            Some(Reason::INADEQUATE_SECURITY) => Code::PERMISSION_DENIED,
            _ => Code::INTERNAL,
        };
        return Status::new(code, format!("stream terminated by RST_STREAM: {e}"));
    }
    Status::new(Code::UNAVAILABLE, format!("transport: {e}"))
}

/// Encodes a `grpc-timeout` value: at most 8 digits, in the finest unit that
/// fits (as grpc-go's `encodeTimeout`), rounding up so the server never sees
/// a shorter deadline than asked.
pub fn encode_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let ns = d.as_nanos();
    if ns == 0 {
        return "0n".to_string();
    }
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60 * 1_000_000_000, 'M'),
        (3600 * 1_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let n = ns.div_ceil(per);
        if n <= MAX {
            return format!("{n}{unit}");
        }
    }
    format!("{MAX}H")
}

#[cfg(test)]
mod tests;
