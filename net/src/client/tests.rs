//! Client tests against scripted HTTP/2 servers (raw `h2` on loopback, so
//! each test states exactly what the peer sends) and one round trip through
//! our own gRPC server layer.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response};
use prost::Message;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::*;
use crate::grpc::codec::encode_frame;
use crate::pb::etcdserverpb::{PutRequest, PutResponse, ResponseHeader};

fn run<T>(fut: impl Future<Output = T>) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("executor")
        .run(fut)
}

/// What the scripted server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// Starts an HTTP/2 server on loopback that answers every stream with
/// `script(seen, respond)`. Returns its address and the number of
/// connections accepted so far.
fn scripted_server<F>(script: F) -> (String, Rc<Cell<usize>>)
where
    F: Fn(Seen, SendResponse<Bytes>) + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let conns = Rc::new(Cell::new(0));
    let conns2 = conns.clone();
    let script = Rc::new(script);
    glommio::spawn_local(async move {
        while let Ok(stream) = listener.accept().await {
            conns2.set(conns2.get() + 1);
            let script = script.clone();
            glommio::spawn_local(async move {
                let Ok(mut conn) = h2::server::handshake(stream.compat()).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    let script = script.clone();
                    glommio::spawn_local(async move {
                        let seen = read_request(req).await;
                        script(seen, respond);
                    })
                    .detach();
                }
            })
            .detach();
        }
    })
    .detach();
    (addr, conns)
}

async fn read_request(req: Request<RecvStream>) -> Seen {
    let (parts, mut body) = req.into_parts();
    let mut buf = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
    Seen {
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body: Bytes::from(buf),
    }
}

fn grpc_headers() -> Response<()> {
    let mut r = Response::new(());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

fn trailers(code: u32, message: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        h.insert("grpc-message", HeaderValue::from_str(message).unwrap());
    }
    h
}

/// Answers a Put with revision = length of the value, like a tiny server.
fn answer_put(seen: Seen, mut respond: SendResponse<Bytes>) {
    let req = PutRequest::decode(seen.body.slice(5..)).expect("decode put");
    let resp = PutResponse {
        header: Some(ResponseHeader {
            revision: req.value.len() as i64,
            ..Default::default()
        }),
        prev_kv: None,
    };
    let mut tx = respond.send_response(grpc_headers(), false).unwrap();
    tx.send_data(encode_frame(&resp), false).unwrap();
    tx.send_trailers(trailers(0, "")).unwrap();
}

fn put_req(value: &[u8]) -> PutRequest {
    PutRequest {
        key: b"foo".to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

async fn expect_status(addr: &str, cfg: ClientConfig) -> Status {
    let c = Client::connect_with(addr, cfg).await.expect("connect");
    c.put(&put_req(b"v")).await.expect_err("call should fail")
}

#[test]
fn unary_call_sends_grpc_headers_and_reads_message_and_ok_trailers() {
    run(async {
        let seen_cell: Rc<RefCell<Option<Seen>>> = Rc::default();
        let seen2 = seen_cell.clone();
        let (addr, _) = scripted_server(move |seen, respond| {
            *seen2.borrow_mut() = Some(seen.clone());
            answer_put(seen, respond);
        });
        let c = Client::connect(&addr).await.expect("connect");
        let resp = c.put(&put_req(b"hello")).await.expect("put");
        assert_eq!(resp.header.unwrap().revision, 5);

        let seen = seen_cell.borrow().clone().unwrap();
        assert_eq!(seen.path, "/etcdserverpb.KV/Put");
        assert_eq!(seen.headers["content-type"], "application/grpc");
        assert_eq!(seen.headers["te"], "trailers");
        assert!(seen.headers.get("grpc-timeout").is_none());
        // One 5-byte-framed message, nothing else.
        assert_eq!(seen.body[0], 0);
        let len = u32::from_be_bytes([seen.body[1], seen.body[2], seen.body[3], seen.body[4]]);
        assert_eq!(len as usize, seen.body.len() - 5);
    });
}

#[test]
fn trailers_only_error_carries_code_and_percent_decoded_message() {
    run(async {
        let (addr, _) = scripted_server(|_, mut respond| {
            let mut r = grpc_headers();
            r.headers_mut()
                .extend(trailers(9, "etcdserver: 100%25 full"));
            respond.send_response(r, true).unwrap();
        });
        let st = expect_status(&addr, ClientConfig::default()).await;
        assert_eq!(
            st,
            Status::new(Code::FAILED_PRECONDITION, "etcdserver: 100% full")
        );
    });
}

#[test]
fn error_status_in_trailers_after_headers_is_returned() {
    run(async {
        let (addr, _) = scripted_server(|_, mut respond| {
            let mut tx = respond.send_response(grpc_headers(), false).unwrap();
            tx.send_trailers(trailers(
                11,
                "etcdserver: mvcc: required revision is a future revision",
            ))
            .unwrap();
        });
        let st = expect_status(&addr, ClientConfig::default()).await;
        assert_eq!(st.code, Code::OUT_OF_RANGE);
        assert_eq!(
            st.message,
            "etcdserver: mvcc: required revision is a future revision"
        );
    });
}

#[test]
fn ok_without_message_is_internal() {
    run(async {
        let (addr, _) = scripted_server(|_, mut respond| {
            let mut r = grpc_headers();
            r.headers_mut().extend(trailers(0, ""));
            respond.send_response(r, true).unwrap();
        });
        let st = expect_status(&addr, ClientConfig::default()).await;
        assert_eq!(st.code, Code::INTERNAL);
        assert!(st.message.contains("no response message"), "{st}");
    });
}

#[test]
fn two_response_messages_are_a_cardinality_violation() {
    run(async {
        let (addr, _) = scripted_server(|_, mut respond| {
            let mut tx = respond.send_response(grpc_headers(), false).unwrap();
            tx.send_data(encode_frame(&PutResponse::default()), false)
                .unwrap();
            tx.send_data(encode_frame(&PutResponse::default()), false)
                .unwrap();
            tx.send_trailers(trailers(0, "")).unwrap();
        });
        let st = expect_status(&addr, ClientConfig::default()).await;
        assert_eq!(st.code, Code::INTERNAL);
        assert!(st.message.contains("cardinality"), "{st}");
    });
}

#[test]
fn non_200_without_grpc_status_maps_by_http_code() {
    run(async {
        for (http, want) in [
            (404u16, Code::UNIMPLEMENTED),
            (503, Code::UNAVAILABLE),
            (401, Code::UNAUTHENTICATED),
            (415, Code::UNKNOWN),
        ] {
            let (addr, _) = scripted_server(move |_, mut respond| {
                let r = Response::builder().status(http).body(()).unwrap();
                respond.send_response(r, true).unwrap();
            });
            let st = expect_status(&addr, ClientConfig::default()).await;
            assert_eq!(st.code, want, "HTTP {http}: {st}");
        }
    });
}

#[test]
fn stream_reset_maps_by_reason() {
    run(async {
        for (reason, want) in [
            (h2::Reason::REFUSED_STREAM, Code::UNAVAILABLE),
            (h2::Reason::CANCEL, Code::CANCELLED),
            (h2::Reason::ENHANCE_YOUR_CALM, Code::RESOURCE_EXHAUSTED),
            (h2::Reason::INTERNAL_ERROR, Code::INTERNAL),
        ] {
            let (addr, _) = scripted_server(move |_, mut respond| respond.send_reset(reason));
            let st = expect_status(&addr, ClientConfig::default()).await;
            assert_eq!(st.code, want, "{reason:?}: {st}");
        }
    });
}

#[test]
fn missing_trailers_is_internal() {
    run(async {
        let (addr, _) = scripted_server(|_, mut respond| {
            let mut tx = respond.send_response(grpc_headers(), false).unwrap();
            tx.send_data(encode_frame(&PutResponse::default()), true)
                .unwrap();
        });
        let st = expect_status(&addr, ClientConfig::default()).await;
        assert_eq!(
            st,
            Status::internal("server closed the stream without sending trailers")
        );
    });
}

#[test]
fn oversized_response_is_refused_with_resource_exhausted() {
    run(async {
        let (addr, _) = scripted_server(|_, mut respond| {
            let big = PutResponse {
                header: Some(ResponseHeader {
                    member_id: u64::MAX,
                    ..Default::default()
                }),
                prev_kv: None,
            };
            let mut tx = respond.send_response(grpc_headers(), false).unwrap();
            tx.send_data(encode_frame(&big), false).unwrap();
            tx.send_trailers(trailers(0, "")).unwrap();
        });
        let cfg = ClientConfig {
            max_recv_message: 4,
            ..ClientConfig::default()
        };
        let st = expect_status(&addr, cfg).await;
        assert_eq!(st.code, Code::RESOURCE_EXHAUSTED);
    });
}

#[test]
fn deadline_is_sent_as_grpc_timeout_and_enforced_locally() {
    run(async {
        let seen_timeout: Rc<RefCell<Option<String>>> = Rc::default();
        let seen2 = seen_timeout.clone();
        // Never answers: keeps the stream open by leaking `respond`.
        let parked: Rc<RefCell<Vec<SendResponse<Bytes>>>> = Rc::default();
        let parked2 = parked.clone();
        let (addr, _) = scripted_server(move |seen, respond| {
            *seen2.borrow_mut() = seen
                .headers
                .get("grpc-timeout")
                .map(|v| v.to_str().unwrap().to_string());
            parked2.borrow_mut().push(respond);
        });
        let c = Client::connect(&addr).await.expect("connect");
        let opts = CallOptions {
            timeout: Some(Duration::from_millis(50)),
            token: None,
        };
        let t0 = Instant::now();
        let st = c
            .unary_with::<_, PutResponse>(method::KV_PUT, &put_req(b"v"), &opts)
            .await
            .expect_err("deadline");
        assert_eq!(st.code, Code::DEADLINE_EXCEEDED);
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(seen_timeout.borrow().as_deref(), Some("50000000n"));
        // The connection is still usable after an abandoned call.
        assert!(c.closed_reason().is_none());
    });
}

#[test]
fn token_is_sent_as_metadata() {
    run(async {
        let seen_token: Rc<RefCell<Option<String>>> = Rc::default();
        let seen2 = seen_token.clone();
        let (addr, _) = scripted_server(move |seen, respond| {
            *seen2.borrow_mut() = seen
                .headers
                .get("token")
                .map(|v| v.to_str().unwrap().to_string());
            answer_put(seen, respond);
        });
        let c = Client::connect(&addr).await.expect("connect");
        let opts = CallOptions {
            timeout: None,
            token: Some("abc.123".into()),
        };
        c.unary_with::<_, PutResponse>(method::KV_PUT, &put_req(b"v"), &opts)
            .await
            .expect("put");
        assert_eq!(seen_token.borrow().as_deref(), Some("abc.123"));
    });
}

#[test]
fn many_tasks_share_one_connection() {
    run(async {
        let (addr, conns) = scripted_server(answer_put);
        let c = Client::connect(&addr).await.expect("connect");
        let tasks: Vec<_> = (0..64usize)
            .map(|i| {
                let c = c.clone();
                glommio::spawn_local(async move {
                    let value = vec![b'x'; i];
                    c.put(&put_req(&value))
                        .await
                        .map(|r| r.header.unwrap().revision)
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await, Ok(i as i64));
        }
        assert_eq!(conns.get(), 1);
    });
}

#[test]
fn large_request_and_response_cross_flow_control_windows() {
    // 3 MiB each way: above h2's default 64 KiB stream window the server
    // uses, and above our 1 MiB receive window, so both sides must send
    // WINDOW_UPDATEs mid-message.
    run(async {
        let (addr, _) = scripted_server(|seen, mut respond| {
            let req = PutRequest::decode(seen.body.slice(5..)).unwrap();
            let resp = PutResponse {
                header: Some(ResponseHeader {
                    revision: req.value.len() as i64,
                    ..Default::default()
                }),
                prev_kv: Some(crate::pb::mvccpb::KeyValue {
                    value: req.value,
                    ..Default::default()
                }),
            };
            let mut tx = respond.send_response(grpc_headers(), false).unwrap();
            tx.send_data(encode_frame(&resp), false).unwrap();
            tx.send_trailers(trailers(0, "")).unwrap();
        });
        let c = Client::connect(&addr).await.expect("connect");
        let value = vec![7u8; 3 << 20];
        let resp = c.put(&put_req(&value)).await.expect("put");
        assert_eq!(resp.header.unwrap().revision, 3 << 20);
        assert_eq!(resp.prev_kv.unwrap().value, value);
    });
}

#[test]
fn closed_connection_fails_calls_with_unavailable() {
    run(async {
        // Accepts TCP, then closes it before any HTTP/2 byte.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        glommio::spawn_local(async move {
            if let Ok(s) = listener.accept().await {
                drop(s);
            }
        })
        .detach();
        let c = Client::connect(&addr)
            .await
            .expect("connect (handshake is lazy)");
        let st = c.put(&put_req(b"v")).await.expect_err("closed");
        assert_eq!(st.code, Code::UNAVAILABLE, "{st}");
        let st = c.put(&put_req(b"v")).await.expect_err("still closed");
        assert_eq!(st.code, Code::UNAVAILABLE, "{st}");
    });
}

#[test]
fn refused_dial_is_a_dial_error() {
    run(async {
        // Bind then drop to find a port nobody listens on.
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        match Client::connect(&addr).await {
            Err(ClientError::Dial { endpoint, .. }) => assert_eq!(endpoint, addr),
            other => panic!("want Dial error, got {other:?}"),
        }
    });
}

#[test]
fn round_trip_through_our_grpc_server() {
    use crate::grpc::server::{serve_connection, ServerConfig};
    use crate::grpc::{unary, Router};
    run(async {
        let mut router = Router::new();
        router.add(
            method::KV_PUT,
            unary(|req: PutRequest, _| async move {
                Ok(PutResponse {
                    header: Some(ResponseHeader {
                        revision: req.value.len() as i64,
                        ..Default::default()
                    }),
                    prev_kv: None,
                })
            }),
        );
        let router = Rc::new(router);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        glommio::spawn_local(async move {
            while let Ok(s) = listener.accept().await {
                let shutdown = crate::shutdown::Trigger::new();
                glommio::spawn_local(serve_connection(
                    s,
                    router.clone(),
                    Rc::new(ServerConfig::default()),
                    shutdown,
                ))
                .detach();
            }
        })
        .detach();
        let c = Client::connect(&format!("http://{addr}"))
            .await
            .expect("connect");
        let r = c.put(&put_req(b"abc")).await.expect("put");
        assert_eq!(r.header.unwrap().revision, 3);
        let st = c
            .range(&RangeRequest::default())
            .await
            .expect_err("no Range handler");
        assert_eq!(st.code, Code::UNIMPLEMENTED);
        assert_eq!(
            st.message,
            "unknown method Range for service etcdserverpb.KV"
        );
    });
}

#[test]
fn grpc_timeout_uses_finest_unit_that_fits_and_rounds_up() {
    use crate::grpc::server::parse_timeout;
    let cases = [
        (Duration::ZERO, "0n"),
        (Duration::from_nanos(1), "1n"),
        (Duration::from_millis(50), "50000000n"),
        (Duration::from_nanos(99_999_999), "99999999n"),
        (Duration::from_nanos(100_000_001), "100001u"),
        (Duration::from_secs(5), "5000000u"),
        (Duration::from_secs(100_000), "100000S"),
        (Duration::from_secs(720_000_000), "12000000M"),
        (Duration::from_secs(2_000_000 * 3600), "2000000H"),
    ];
    for (d, want) in cases {
        let got = encode_timeout(d);
        assert_eq!(got, want, "{d:?}");
        // The server reads back at least what we asked.
        assert!(parse_timeout(&got).unwrap() >= d, "{d:?} -> {got}");
    }
}

#[test]
fn endpoints_accept_host_port_and_http_urls_only() {
    let (dial, auth) = parse_endpoint("127.0.0.1:2379").unwrap();
    assert_eq!(
        (dial.as_str(), auth.as_str()),
        ("127.0.0.1:2379", "127.0.0.1:2379")
    );
    let (dial, _) = parse_endpoint("http://localhost:2379/").unwrap();
    assert_eq!(dial, "localhost:2379");
    for bad in [
        "https://x:1",
        "unix://x",
        "localhost",
        "x:1/path",
        ":2379",
        "",
    ] {
        assert!(
            matches!(
                parse_endpoint(bad),
                Err(ClientError::InvalidEndpoint { .. })
            ),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn typed_helpers_call_the_etcd_kv_methods() {
    use crate::pb::etcdserverpb::{
        CompactionRequest, DeleteRangeRequest, RangeResponse, TxnRequest,
    };
    run(async {
        let paths: Rc<RefCell<Vec<String>>> = Rc::default();
        let paths2 = paths.clone();
        // Every answer is an empty message: it decodes as any response type.
        let (addr, _) = scripted_server(move |seen, mut respond| {
            paths2.borrow_mut().push(seen.path);
            let mut tx = respond.send_response(grpc_headers(), false).unwrap();
            tx.send_data(encode_frame(&RangeResponse::default()), false)
                .unwrap();
            tx.send_trailers(trailers(0, "")).unwrap();
        });
        let c = Client::connect(&addr).await.expect("connect");
        c.range(&RangeRequest::default()).await.unwrap();
        c.put(&PutRequest::default()).await.unwrap();
        c.delete_range(&DeleteRangeRequest::default())
            .await
            .unwrap();
        c.txn(&TxnRequest::default()).await.unwrap();
        c.compact(&CompactionRequest::default()).await.unwrap();
        assert_eq!(
            *paths.borrow(),
            [
                "/etcdserverpb.KV/Range",
                "/etcdserverpb.KV/Put",
                "/etcdserverpb.KV/DeleteRange",
                "/etcdserverpb.KV/Txn",
                "/etcdserverpb.KV/Compact",
            ]
        );
    });
}
