//! Server lifecycle as a client/operator sees it: a stopped member can be
//! restarted on the same ports immediately (etcd's Go listeners set
//! SO_REUSEADDR, so server-side TIME_WAIT connections left on the port by
//! the previous process do not block the new bind), and SIGTERM stops a
//! server promptly even with a client connection open.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{free_port, strings, subject_kind, Kind, Server};

/// Start, serve, stop with a client connection open (the server closes
/// first, leaving TIME_WAIT on its own port), restart on the same ports.
fn restart_on_same_port(kind: Kind) {
    let (cp, pp) = (free_port(), free_port());
    let mut first = Server::start_on_ports(kind, cp, pp, &[]);
    for i in 0..3 {
        let out = first.ctl(&strings(&["put", &format!("k{i}"), "v"]), None);
        assert_eq!(out.code, 0, "{} put: {out:?}", kind.label());
    }
    // an idle client connection held across the shutdown
    let mut held = TcpStream::connect(("127.0.0.1", cp)).expect("connect");
    let _ = held.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let t = Instant::now();
    let st = first.terminate(Duration::from_secs(5));
    let took = t.elapsed();
    assert!(
        st.is_some(),
        "{} did not exit within 5 s of SIGTERM while a client connection was open",
        kind.label()
    );
    eprintln!("[it] {} stopped in {took:?}: {}", kind.label(), st.unwrap());
    drop(held);
    drop(first);
    // immediately again, same ports
    let second = Server::start_on_ports(kind, cp, pp, &[]);
    let out = second.ctl(&strings(&["put", "again", "v"]), None);
    assert_eq!(out.code, 0, "{} put after restart: {out:?}", kind.label());
}

#[test]
fn restart_on_same_port_reference_etcd() {
    restart_on_same_port(Kind::Etcd);
}

#[test]
fn restart_on_same_port_immediately() {
    restart_on_same_port(subject_kind());
}
