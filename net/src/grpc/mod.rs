//! ferrocd's own gRPC layer over `h2`.
//!
//! * `codec`: 5-byte length-prefixed message framing.
//! * `status`: status codes and the percent-encoded `grpc-message`.
//! * `server`: serving HTTP/2 connections: routing by `:path`, unary and
//!   bidirectional-streaming calls, trailers, `grpc-timeout` deadlines,
//!   receive limits, keepalive pings and graceful shutdown.
//!
//! A handler sees decoded messages and returns a message or a `Status`;
//! everything about HTTP/2 stays here.

pub mod codec;
pub mod server;
pub mod status;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;

pub use status::{Code, Status};

pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// Per-call facts a handler may need.
#[derive(Clone, Debug, Default)]
pub struct CallInfo {
    /// The `authorization` metadata (etcd's auth token), if any.
    pub authorization: Option<String>,
    /// Size of the encoded request message (unary calls).
    pub request_len: usize,
    /// The `hasleader: true` metadata (clientv3's `WithRequireLeader`): the
    /// call must fail while this member has no leader.
    pub require_leader: bool,
}

type UnaryFn = dyn Fn(Bytes, CallInfo) -> LocalBoxFuture<Result<Bytes, Status>>;
type StreamFn = dyn Fn(
    server::RequestStream,
    server::ResponseSink,
    CallInfo,
) -> LocalBoxFuture<Result<(), Status>>;

/// How a method is served.
#[derive(Clone)]
pub enum Handler {
    /// One request message, one response message.
    Unary(Rc<UnaryFn>),
    /// Any number of messages each way (bidirectional or server streaming).
    Streaming(Rc<StreamFn>),
}

/// Wraps a typed unary handler: decodes the request, encodes the response.
pub fn unary<Req, Resp, F, Fut>(f: F) -> Handler
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
    F: Fn(Req, CallInfo) -> Fut + 'static,
    Fut: Future<Output = Result<Resp, Status>> + 'static,
{
    let f = Rc::new(f);
    Handler::Unary(Rc::new(move |body: Bytes, info: CallInfo| {
        let f = f.clone();
        Box::pin(async move {
            let req = Req::decode(body)
                .map_err(|e| Status::internal(format!("grpc: error unmarshalling request: {e}")))?;
            let resp = f(req, info).await?;
            Ok(codec::encode_frame(&resp))
        }) as LocalBoxFuture<_>
    }))
}

/// Wraps a streaming handler.
pub fn streaming<F, Fut>(f: F) -> Handler
where
    F: Fn(server::RequestStream, server::ResponseSink, CallInfo) -> Fut + 'static,
    Fut: Future<Output = Result<(), Status>> + 'static,
{
    Handler::Streaming(Rc::new(move |rx, tx, info| Box::pin(f(rx, tx, info))))
}

/// Decides per call path and metadata whether a registered method may be
/// called now (e.g. a learner refuses most of them; a require-leader call
/// is refused without a leader).
pub type Gate = Rc<dyn Fn(&str, &CallInfo) -> Result<(), Status>>;

/// Maps `/package.Service/Method` paths to handlers.
#[derive(Clone, Default)]
pub struct Router {
    methods: HashMap<String, Handler>,
    gate: Option<Gate>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Registers `handler` at `path` (e.g. `/etcdserverpb.KV/Range`).
    pub fn add(&mut self, path: &str, handler: Handler) -> &mut Router {
        self.methods.insert(path.to_string(), handler);
        self
    }

    /// Consults `gate` before every call of a registered method.
    pub fn set_gate(&mut self, gate: Gate) -> &mut Router {
        self.gate = Some(gate);
        self
    }

    /// Finds the handler, or the status grpc-go answers for an unknown one
    /// (or the gate's refusal).
    pub fn route(&self, path: &str, info: &CallInfo) -> Result<&Handler, Status> {
        if let Some(h) = self.methods.get(path) {
            if let Some(g) = &self.gate {
                g(path, info)?;
            }
            return Ok(h);
        }
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.rsplit_once('/'))
        else {
            return Err(Status::unimplemented(format!(
                "malformed method name: {path:?}"
            )));
        };
        let prefix = format!("/{service}/");
        if self.methods.keys().any(|k| k.starts_with(&prefix)) {
            Err(Status::unimplemented(format!(
                "unknown method {method} for service {service}"
            )))
        } else {
            Err(Status::unimplemented(format!("unknown service {service}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_method_and_service_are_unimplemented() {
        let mut r = Router::new();
        r.add(
            "/etcdserverpb.KV/Range",
            unary(|_: (), _| async { Ok::<(), Status>(()) }),
        );
        assert!(r
            .route("/etcdserverpb.KV/Range", &CallInfo::default())
            .is_ok());
        let e = r
            .route("/etcdserverpb.KV/Nope", &CallInfo::default())
            .err()
            .unwrap();
        assert_eq!(e.code, Code::UNIMPLEMENTED);
        assert_eq!(e.message, "unknown method Nope for service etcdserverpb.KV");
        let e = r.route("/x.Y/Z", &CallInfo::default()).err().unwrap();
        assert_eq!(e.message, "unknown service x.Y");
        let e = r.route("nonsense", &CallInfo::default()).err().unwrap();
        assert_eq!(e.code, Code::UNIMPLEMENTED);
    }
}
