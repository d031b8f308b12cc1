//! Bad input at the client port: random bytes, truncated and oversized
//! frames, garbage protobufs, unknown methods. The server must answer each
//! call with an error status (or drop just that connection), never panic, and
//! keep serving other clients and other streams of the same connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::time::Duration;

use bytes::Bytes;
use glommio::net::TcpStream;
use glommio::LocalExecutorBuilder;
use http::Request;
use prost::Message;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::support::TestServer;
use net::pb::etcdserverpb as pb;

/// Deterministic xorshift so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[derive(Debug)]
struct Reply {
    http_status: u16,
    grpc_status: Option<u32>,
    grpc_message: Option<String>,
    body: Vec<u8>,
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

async fn call(
    h2: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut b = Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", content_type)
        .header("te", "trailers");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let req = b.body(()).expect("request");
    let ready = h2.clone().ready().await.expect("connection usable");
    *h2 = ready;
    let (resp, mut tx) = h2.send_request(req, false).expect("send");
    tx.send_data(Bytes::from(body), true).expect("send body");
    let resp = resp.await.expect("response headers");
    let http_status = resp.status().as_u16();
    let mut grpc_status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut grpc_message = resp
        .headers()
        .get("grpc-message")
        .and_then(|v| v.to_str().ok().map(net::grpc::status::percent_decode));
    let mut recv = resp.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    if let Ok(Some(t)) = recv.trailers().await {
        grpc_status = t
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        grpc_message = t
            .get("grpc-message")
            .and_then(|v| v.to_str().ok().map(net::grpc::status::percent_decode));
    }
    Reply {
        http_status,
        grpc_status,
        grpc_message,
        body: data,
    }
}

async fn connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (h2, conn) = h2::client::handshake(tcp.compat())
        .await
        .expect("h2 handshake");
    glommio::spawn_local(async move {
        let _ = conn.await;
    })
    .detach();
    h2
}

fn valid_range(key: &[u8]) -> Vec<u8> {
    frame(
        &pb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

async fn assert_serves(h2: &mut h2::client::SendRequest<Bytes>) {
    let r = call(
        h2,
        "/etcdserverpb.KV/Range",
        "application/grpc",
        &[],
        valid_range(b"k"),
    )
    .await;
    assert_eq!(r.grpc_status, Some(0), "{r:?}");
    assert!(r.body.len() >= 5, "{r:?}");
    let resp = pb::RangeResponse::decode(&r.body[5..]).expect("valid response");
    assert!(resp.header.is_some());
}

fn run_local<F: std::future::Future<Output = ()> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) {
    LocalExecutorBuilder::default()
        .io_memory(256 << 10)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("test body");
}

#[test]
fn malformed_calls_get_error_statuses_and_the_connection_survives() {
    let srv = TestServer::start_with(net::kv::KvLimits {
        max_txn_ops: 128,
        max_request_bytes: 4096,
    });
    let addr = srv.addr;
    run_local(move || async move {
        let mut h2 = connect(addr).await;
        assert_serves(&mut h2).await;
        let kv = "/etcdserverpb.KV/Range";
        let ct = "application/grpc";

        // Unknown method and service.
        let r = call(&mut h2, "/etcdserverpb.KV/Nope", ct, &[], valid_range(b"k")).await;
        assert_eq!(r.grpc_status, Some(12), "{r:?}");
        assert_eq!(
            r.grpc_message.as_deref(),
            Some("unknown method Nope for service etcdserverpb.KV")
        );
        let r = call(&mut h2, "/nope.Svc/X", ct, &[], valid_range(b"k")).await;
        assert_eq!(r.grpc_status, Some(12), "{r:?}");

        // Garbage protobuf in a well-formed frame.
        let r = call(&mut h2, kv, ct, &[], frame(&[0xff, 0xff, 0xff, 0xff, 0x0f])).await;
        assert_eq!(r.grpc_status, Some(13), "{r:?}");

        // Truncated frame: header promises 100 bytes, 10 arrive.
        let mut t = vec![0, 0, 0, 0, 100];
        t.extend_from_slice(&[1; 10]);
        let r = call(&mut h2, kv, ct, &[], t).await;
        assert_eq!(r.grpc_status, Some(13), "{r:?}");

        // Oversized declared length: refused before buffering.
        let r = call(&mut h2, kv, ct, &[], vec![0, 0xff, 0xff, 0xff, 0xff]).await;
        assert_eq!(r.grpc_status, Some(8), "{r:?}");

        // Compressed flag without an encoding.
        let mut c = valid_range(b"k");
        c[0] = 1;
        let r = call(&mut h2, kv, ct, &[], c).await;
        assert_eq!(r.grpc_status, Some(13), "{r:?}");

        // No message at all, and two messages for a unary call.
        let r = call(&mut h2, kv, ct, &[], Vec::new()).await;
        assert_eq!(r.grpc_status, Some(13), "{r:?}");
        let mut two = valid_range(b"a");
        two.extend(valid_range(b"b"));
        let r = call(&mut h2, kv, ct, &[], two).await;
        assert_eq!(r.grpc_status, Some(13), "{r:?}");

        // Wrong content type: plain HTTP error, as grpc-go does.
        let r = call(&mut h2, kv, "text/plain", &[], valid_range(b"k")).await;
        assert_eq!(r.http_status, 415, "{r:?}");

        // Malformed deadline.
        let r = call(
            &mut h2,
            kv,
            ct,
            &[("grpc-timeout", "soon")],
            valid_range(b"k"),
        )
        .await;
        assert_eq!(r.grpc_status, Some(13), "{r:?}");

        // A put larger than --max-request-bytes but within the gRPC limit.
        let big = pb::PutRequest {
            key: b"big".to_vec(),
            value: vec![b'x'; 8000],
            ..Default::default()
        };
        let r = call(
            &mut h2,
            "/etcdserverpb.KV/Put",
            ct,
            &[],
            frame(&big.encode_to_vec()),
        )
        .await;
        assert_eq!(r.grpc_status, Some(3), "{r:?}");
        assert_eq!(
            r.grpc_message.as_deref(),
            Some("etcdserver: request is too large")
        );

        // Random frames and protobufs on every KV method.
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for i in 0..300 {
            let method = ["Range", "Put", "DeleteRange", "Txn", "Compact"][i % 5];
            let n = (rng.next() % 64) as usize;
            let body = match i % 3 {
                0 => rng.bytes(n),
                1 => frame(&rng.bytes(n)),
                _ => {
                    let mut f = frame(&rng.bytes(n));
                    let cut = (rng.next() as usize) % (f.len() + 1);
                    f.truncate(cut);
                    f
                }
            };
            let r = call(
                &mut h2,
                &format!("/etcdserverpb.KV/{method}"),
                ct,
                &[],
                body,
            )
            .await;
            assert!(r.grpc_status.is_some(), "call {i} got no status: {r:?}");
        }
        // Same connection still serves.
        assert_serves(&mut h2).await;
    });
    srv.stop().expect("clean stop");
}

#[test]
fn random_bytes_on_the_socket_do_not_harm_other_clients() {
    let srv = TestServer::start();
    let addr = srv.addr;
    let mut rng = Rng(42);
    for i in 0..100 {
        let mut s = StdTcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = 1 + (rng.next() % 512) as usize;
        let mut junk = rng.bytes(n);
        if i % 4 == 0 {
            // A valid HTTP/2 preface followed by garbage frames.
            let mut v = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            v.append(&mut junk);
            junk = v;
        }
        let _ = s.write_all(&junk);
        let mut buf = [0u8; 4096];
        // The server answers with a GOAWAY or just closes; either way it must
        // not hang forever or crash.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
    run_local(move || async move {
        let mut h2 = connect(addr).await;
        assert_serves(&mut h2).await;
    });
    srv.stop().expect("clean stop");
}

#[test]
fn deadline_is_enforced_for_slow_requests() {
    // A call whose request never completes ends with DEADLINE_EXCEEDED.
    let srv = TestServer::start();
    let addr = srv.addr;
    run_local(move || async move {
        let mut h2 = connect(addr).await;
        let req = Request::builder()
            .method("POST")
            .uri("http://localhost/etcdserverpb.KV/Range")
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "200m")
            .body(())
            .expect("request");
        h2 = h2.ready().await.expect("ready");
        let (resp, mut tx) = h2.send_request(req, false).expect("send");
        // Half a frame, and the stream stays open.
        tx.send_data(Bytes::from_static(&[0, 0, 0, 0, 9, 1]), false)
            .expect("data");
        let resp = resp.await.expect("headers");
        let status = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(status.as_deref(), Some("4"), "{resp:?}");
        assert_serves(&mut h2).await;
    });
    srv.stop().expect("clean stop");
}
