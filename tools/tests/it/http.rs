//! HTTP/1.1 endpoints on the client port, compared with real etcd 3.5.1:
//! /health, /version, /metrics (etcd's names), on the same port as gRPC.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{Kind, Server};

fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body.trim().to_string())
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn health_version_and_metrics_match_etcd() {
    let etcd = Server::start(Kind::Etcd, &[]);
    let ferrocd = Server::start(Kind::Ferrocd, &[]);
    for path in ["/health", "/health?serializable=true", "/version"] {
        let e = get(etcd.client_port, path);
        let f = get(ferrocd.client_port, path);
        assert_eq!(e.0, 200, "etcd {path}: {e:?}");
        assert_eq!(f, e, "{path}");
    }
    for s in [&etcd, &ferrocd] {
        let (code, body) = get(s.client_port, "/metrics");
        assert_eq!(code, 200);
        for line in ["etcd_server_has_leader 1", "etcd_server_is_leader 1"] {
            assert!(
                body.lines().any(|l| l == line),
                "{}: no {line:?} in /metrics",
                s.kind.label()
            );
        }
        assert!(body.contains("etcd_mvcc_db_total_size_in_bytes"));
    }
    let (code, _) = get(ferrocd.client_port, "/nope");
    assert_eq!(code, 404);
}
