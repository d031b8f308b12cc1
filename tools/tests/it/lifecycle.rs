//! Server lifecycle as a client/operator sees it:
//! - SIGTERM stops the server promptly even while a client connection is
//!   open (etcd 3.5.1: ~0.1 s);
//! - a stopped member can be restarted on the same ports immediately, and
//!   ferrocd can take over the ports of an etcd that just stopped.
//!   etcd's Go listeners set SO_REUSEADDR, so the TIME_WAIT connections the
//!   previous process left on its own port (it closed them first) do not
//!   block the new bind.
//!
//! Each property also runs against real etcd (`*_reference_etcd`) to
//! validate the test.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{free_port, strings, subject_kind, Kind, Server};

/// etcd needs ~0.1 s; this is generous.
const PROMPT_STOP: Duration = Duration::from_secs(3);

fn serve_some(server: &Server) {
    for i in 0..3 {
        let out = server.ctl(&strings(&["put", &format!("k{i}"), "v"]), None);
        assert_eq!(out.code, 0, "{} put: {out:?}", server.kind.label());
    }
}

/// An idle client connection (HTTP/2 preface sent, nothing else).
fn hold_connection(server: &Server) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", server.client_port)).expect("connect");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("write preface");
    std::thread::sleep(Duration::from_millis(200));
    s
}

fn stop_with_open_connection(kind: Kind, limit: Duration) {
    let mut server = Server::start(kind, &[]);
    serve_some(&server);
    let held = hold_connection(&server);
    let t = Instant::now();
    let st = server.terminate(Duration::from_secs(10));
    let took = t.elapsed();
    drop(held);
    let st = st.unwrap_or_else(|| {
        panic!(
            "{} did not exit within 10 s of SIGTERM while an idle client connection was open",
            kind.label()
        )
    });
    eprintln!(
        "[it] {} stopped in {took:?} ({st}) with an idle client connection open",
        kind.label()
    );
    assert!(
        took <= limit,
        "{} took {took:?} to exit after SIGTERM with an idle client connection open \
         (limit {limit:?}; etcd 3.5.1 closes such connections and exits in ~0.1 s)",
        kind.label()
    );
}

/// `first` serves on two ports and is stopped while a client is connected
/// (so it closes first, leaving TIME_WAIT on its port); `second` must then
/// start on the same ports at once.
fn restart_on_same_port(first: Kind, second: Kind) {
    let (cp, pp) = (free_port(), free_port());
    let mut a = Server::start_on_ports(first, cp, pp, &[]);
    serve_some(&a);
    let held = hold_connection(&a);
    let st = a.terminate(Duration::from_secs(10));
    assert!(
        st.is_some(),
        "{} did not exit within 10 s of SIGTERM",
        first.label()
    );
    drop(held);
    drop(a);
    // immediately, same ports
    let b = Server::start_on_ports(second, cp, pp, &[]);
    let out = b.ctl(&strings(&["put", "again", "v"]), None);
    assert_eq!(out.code, 0, "{} put after restart: {out:?}", second.label());
}

#[test]
fn sigterm_with_idle_client_connection() {
    stop_with_open_connection(subject_kind(), PROMPT_STOP);
}

#[test]
fn sigterm_with_idle_client_connection_reference_etcd() {
    stop_with_open_connection(Kind::Etcd, PROMPT_STOP);
}

#[test]
fn restart_on_same_port_immediately() {
    restart_on_same_port(subject_kind(), subject_kind());
}

/// The drop-in migration: stop etcd, start ferrocd on the same ports.
#[test]
fn replace_etcd_on_same_port_immediately() {
    restart_on_same_port(Kind::Etcd, subject_kind());
}

/// The rollback: stop ferrocd, start etcd on the same ports (etcd binds
/// with SO_REUSEADDR only, so this fails for ~60 s if ferrocd's listening
/// socket, and hence its TIME_WAIT connections, lack SO_REUSEADDR).
#[test]
fn replace_ferrocd_by_etcd_on_same_port_immediately() {
    restart_on_same_port(subject_kind(), Kind::Etcd);
}

#[test]
fn restart_on_same_port_immediately_reference_etcd() {
    restart_on_same_port(Kind::Etcd, Kind::Etcd);
}
