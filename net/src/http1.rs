//! HTTP/1.1 on the client port, beside gRPC (etcd serves both on one port):
//! `/health`, `/livez`, `/readyz`, `/version` and `/metrics` with etcd's
//! shapes and metric names. One request per connection (`Connection:
//! close`), which is what probes and scrapers do; the grpc-gateway JSON API
//! (`/v3/...`) is not served yet and answers 404.
//!
//! A connection is HTTP/1.1 when its first bytes are not the HTTP/2 client
//! preface (`PRI * HTTP/2.0`); `server.rs` decides that by peeking.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;
use raftcore::Node;

use crate::maintenance::ETCD_VERSION;

/// Largest request head we read; a probe's is a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Serves one HTTP/1.1 request and closes the connection.
pub async fn serve(mut stream: TcpStream, node: Arc<Node>) {
    let head = future::or(read_head(&mut stream), async {
        sleep(Duration::from_secs(10)).await;
        None
    })
    .await;
    let Some(head) = head else {
        return;
    };
    let (status, ctype, body) = respond(&head, &node).await;
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.close().await;
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !plausible_request_line(&buf) {
            // Not HTTP: close at once instead of waiting for a head that
            // will never come.
            return None;
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

/// Whether `buf` (the first bytes of a connection) can start an HTTP/1.x
/// request line: an upper-case method token, then a space.
fn plausible_request_line(buf: &[u8]) -> bool {
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'A'..=b'Z' if i < 10 => continue,
            b' ' => return i > 0,
            _ => return false,
        }
    }
    true
}

/// `(status line, content type, body)` for a request head.
async fn respond(head: &str, node: &Node) -> (&'static str, &'static str, String) {
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" && method != "HEAD" {
        return (
            "405 Method Not Allowed",
            "text/plain",
            "Method Not Allowed\n".into(),
        );
    }
    match path {
        "/version" => (
            "200 OK",
            "application/json",
            format!(r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"3.5.0"}}"#),
        ),
        "/health" => {
            let serializable = query.split('&').any(|kv| kv == "serializable=true");
            match health(node, serializable).await {
                Ok(()) => (
                    "200 OK",
                    "application/json",
                    r#"{"health":"true","reason":""}"#.into(),
                ),
                Err(reason) => (
                    "503 Service Unavailable",
                    "application/json",
                    format!(r#"{{"health":"false","reason":"{reason}"}}"#),
                ),
            }
        }
        "/livez" => ("200 OK", "text/plain", "ok".into()),
        "/readyz" => match health(node, true).await {
            Ok(()) => ("200 OK", "text/plain", "ok".into()),
            Err(_) => ("503 Service Unavailable", "text/plain", "not ok".into()),
        },
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics(node)),
        _ => ("404 Not Found", "text/plain", "404 page not found\n".into()),
    }
}

/// etcd's health check: a leader exists and a read goes through Raft
/// (linearizable unless `serializable`).
async fn health(node: &Node, serializable: bool) -> Result<(), &'static str> {
    if node.leader() == 0 {
        return Err("RAFT NO LEADER");
    }
    if !serializable {
        let r = future::or(async { node.read_barrier().await.is_ok() }, async {
            sleep(Duration::from_secs(5)).await;
            false
        })
        .await;
        if !r {
            return Err("QGET ERROR");
        }
    }
    Ok(())
}

/// A few of etcd's metrics, under etcd's names, in Prometheus text format.
fn metrics(node: &Node) -> String {
    let rs = node.raft_status();
    let me = node.config().member_id;
    let (db, in_use) = node.backend_size().unwrap_or((0, 0));
    let rev = node.current_revision().unwrap_or(0);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        ));
    };
    gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        u8::from(rs.leader != 0).to_string(),
    );
    gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        u8::from(rs.leader == me).to_string(),
    );
    gauge(
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        u8::from(rs.is_learner).to_string(),
    );
    gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        rs.raft_index.to_string(),
    );
    gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        rs.applied_index.to_string(),
    );
    gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        db.to_string(),
    );
    gauge(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        in_use.to_string(),
    );
    gauge(
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        rev.to_string(),
    );
    gauge(
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        String::new(),
    );
    // etcd reports the member ID as a label of a constant gauge.
    out = out.replace(
        "etcd_server_id \n",
        &format!("etcd_server_id{{server_id=\"{me:x}\"}} 1\n"),
    );
    // Counters by peer, as etcd's rafthttp reports them.
    let st = node.snapshot_stats();
    for (name, help, label, by_peer) in [
        (
            "etcd_network_snapshot_receive_success",
            "Total number of successful snapshot receives",
            "From",
            &st.received,
        ),
        (
            "etcd_network_snapshot_send_success",
            "Total number of successful snapshot sends",
            "To",
            &st.sent,
        ),
    ] {
        // Like Prometheus's Go client: no family until a peer has a value.
        if by_peer.is_empty() {
            continue;
        }
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (peer, n) in by_peer {
            out.push_str(&format!("{name}{{{label}=\"{peer:x}\"}} {n}\n"));
        }
    }
    out
}
