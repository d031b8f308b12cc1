//! ferrobench end to end against an in-process server built from our gRPC
//! server layer (`net::grpc`) with trivial KV handlers: proves the run loop,
//! the request counts, the key generation on the wire and the report.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use net::grpc::server::{serve_connection, ServerConfig};
use net::grpc::{unary, Router, Status};
use net::pb::etcdserverpb::{PutRequest, PutResponse, RangeRequest, RangeResponse};
use net::pb::mvccpb::KeyValue;

use crate::args;
use crate::run::{run, RunError};

#[derive(Default)]
struct Seen {
    put_keys: Vec<Vec<u8>>,
    put_value_lens: BTreeSet<usize>,
    ranges: Vec<RangeRequest>,
}

/// A server thread answering Put and Range; stops when dropped.
struct TestServer {
    addr: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

impl TestServer {
    fn start() -> TestServer {
        TestServer::start_stalling(None)
    }

    /// With `Some((n, d))`, the `n`-th Put (0-based) is answered only after
    /// `d`: a server stall.
    fn start_stalling(stall: Option<(usize, Duration)>) -> TestServer {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(move || async move {
                let mut router = Router::new();
                let s = seen2.clone();
                let puts = Rc::new(AtomicUsize::new(0));
                router.add(
                    "/etcdserverpb.KV/Put",
                    unary(move |req: PutRequest, _| {
                        let s = s.clone();
                        let i = puts.fetch_add(1, Ordering::Relaxed);
                        async move {
                            if let Some((n, d)) = stall {
                                if i == n {
                                    glommio::timer::sleep(d).await;
                                }
                            }
                            let mut s = s.lock().unwrap();
                            s.put_value_lens.insert(req.value.len());
                            s.put_keys.push(req.key);
                            Ok::<_, Status>(PutResponse::default())
                        }
                    }),
                );
                let s = seen2.clone();
                router.add(
                    "/etcdserverpb.KV/Range",
                    unary(move |req: RangeRequest, _| {
                        let s = s.clone();
                        async move {
                            let kv = KeyValue {
                                key: req.key.clone(),
                                value: b"bar".to_vec(),
                                ..KeyValue::default()
                            };
                            s.lock().unwrap().ranges.push(req);
                            Ok::<_, Status>(RangeResponse {
                                kvs: vec![kv],
                                count: 1,
                                ..RangeResponse::default()
                            })
                        }
                    }),
                );
                let router = Rc::new(router);
                let cfg = Rc::new(ServerConfig::default());
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                tx.send(listener.local_addr().unwrap().to_string()).unwrap();
                let shutdown = net::shutdown::Trigger::new();
                loop {
                    let next = future::or(async { Some(listener.accept().await) }, async {
                        while !stop2.load(Ordering::Relaxed) {
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                        None
                    })
                    .await;
                    match next {
                        Some(Ok(s)) => {
                            let conn =
                                serve_connection(s, router.clone(), cfg.clone(), shutdown.clone());
                            glommio::spawn_local(conn).detach();
                        }
                        Some(Err(_)) | None => break,
                    }
                }
                shutdown.fire();
            })
            .unwrap();
        let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        TestServer {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn parse(line: &str) -> args::Args {
    args::parse(line.split_whitespace()).unwrap()
}

#[test]
fn put_runs_total_requests_over_conns_and_executors() {
    let srv = TestServer::start();
    let a = parse(&format!(
        "put --endpoints {} --total 500 --clients 16 --conns 4 --executors 2 \
         --sequential-keys --key-space-size 100 --key-size 8 --val-size 32",
        srv.addr
    ));
    let r = run(&a).unwrap();
    assert_eq!(r.rec.error_count(), 0, "{:?}", r.rec.errors);
    assert_eq!(r.rec.hist.len(), 500);
    assert_eq!(r.executors, 2);
    assert!(r.duration > Duration::ZERO);
    let j = r.json();
    assert_eq!((j.total, j.clients, j.conns), (500, 16, 4));
    assert!(j.rps > 0.0 && j.p50_us > 0 && j.max_us >= j.p99_us);
    assert!(j.client_cpu_us_per_op.is_some());
    assert!(j.server_cpu_us_per_op.is_none());

    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen.put_keys.len(), 500);
    // Sequential keys over a key space of 100: every key 5 times, each 8
    // bytes, the value 32 bytes.
    let distinct: BTreeSet<&Vec<u8>> = seen.put_keys.iter().collect();
    assert_eq!(distinct.len(), 100);
    assert!(seen.put_keys.iter().all(|k| k.len() == 8));
    assert_eq!(seen.put_value_lens, BTreeSet::from([32]));
    assert!(distinct.contains(&crate::keys::key_bytes(99, 8)));
}

#[test]
fn range_sends_key_end_and_consistency() {
    let srv = TestServer::start();
    let a = parse(&format!(
        "range foo fop --endpoints {} --total 50 --clients 3 --consistency s --server-pid {}",
        srv.addr,
        std::process::id()
    ));
    let r = run(&a).unwrap();
    assert_eq!(r.rec.hist.len(), 50);
    // The "server" is this process: its CPU time is measured too.
    assert!(r.json().server_cpu_us_per_op.is_some());
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen.ranges.len(), 50);
    assert!(seen
        .ranges
        .iter()
        .all(|q| q.key == b"foo" && q.range_end == b"fop" && q.serializable));
}

#[test]
fn unreachable_endpoint_fails_the_run_with_a_connect_error() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string(); // listener dropped: nobody listens there now
    let a = parse(&format!(
        "put --endpoints {addr} --total 10 --conns 2 --executors 2"
    ));
    match run(&a) {
        Err(RunError::Connect(_)) => {}
        other => panic!("want a connect error, got {:?}", other.map(|r| r.json())),
    }
}

/// Latencies of a run at or above `at`.
fn count_at_least(r: &crate::report::Report, at: Duration) -> u64 {
    let at = at.as_micros() as u64;
    r.rec
        .hist
        .iter_recorded()
        .filter(|v| v.value_iterated_to() >= at)
        .map(|v| v.count_at_value())
        .sum()
}

#[test]
fn open_loop_shows_the_requests_queued_behind_a_stall() {
    // One client, 500 puts/s, the 50th put stalls the server for 400 ms.
    // The requests due during the stall cannot be sent until it ends, so
    // every one due in its first 200 ms (about 100 of them) has at least
    // 200 ms of latency counted from its due time. A slower machine only
    // adds to that.
    let stall = Some((50, Duration::from_millis(400)));
    let srv = TestServer::start_stalling(stall);
    let a = parse(&format!(
        "put --endpoints {} --total 400 --rate 500",
        srv.addr
    ));
    let open = run(&a).unwrap();
    assert_eq!(open.rec.hist.len(), 400);
    assert_eq!(open.json().rate, Some(500.0));
    let slow_open = count_at_least(&open, Duration::from_millis(200));
    assert!(slow_open >= 50, "open loop: {slow_open} requests >= 200 ms");
    // Never sent before due: the last is due at 399/500 s.
    assert!(
        open.duration >= Duration::from_millis(798),
        "{:?}",
        open.duration
    );

    // The same stall in a closed loop: only the stalled request itself is
    // that slow (coordinated omission hides the queue).
    let srv = TestServer::start_stalling(stall);
    let a = parse(&format!("put --endpoints {} --total 400", srv.addr));
    let closed = run(&a).unwrap();
    let slow_closed = count_at_least(&closed, Duration::from_millis(200));
    assert!(slow_closed >= 1, "the stalled request itself");
    assert!(
        slow_closed < slow_open,
        "closed {slow_closed} vs open {slow_open}"
    );
}

#[test]
fn open_loop_paces_requests_over_many_clients_and_executors() {
    let srv = TestServer::start();
    let a = parse(&format!(
        "put --endpoints {} --total 300 --clients 16 --conns 4 --executors 2 --rate 1000",
        srv.addr
    ));
    let r = run(&a).unwrap();
    assert_eq!(r.rec.hist.len() + r.rec.error_count(), 300);
    assert_eq!(r.rec.error_count(), 0, "{:?}", r.rec.errors);
    // The last request is due at 299 ms and none is sent early.
    assert!(r.duration >= Duration::from_millis(299), "{:?}", r.duration);
    assert_eq!(srv.seen.lock().unwrap().put_keys.len(), 300);
}

#[test]
fn sweep_runs_each_rate_and_plots_them() {
    let srv = TestServer::start();
    let a = parse(&format!(
        "range foo --endpoints {} --total 100 --clients 4 --sweep 500,1000,2000",
        srv.addr
    ));
    let mut rates = Vec::new();
    let points = crate::sweep::sweep(&a, |r| rates.push(r.rate)).unwrap();
    assert_eq!(rates, [Some(500.0), Some(1000.0), Some(2000.0)]);
    assert_eq!(points.len(), 3);
    assert!(points.iter().all(|p| p.achieved_rps > 0.0 && p.errors == 0));
    assert_eq!(srv.seen.lock().unwrap().ranges.len(), 300);
    let svg = crate::sweep::svg("t", &points);
    assert_eq!(svg.matches("<circle").count(), 9);
}
