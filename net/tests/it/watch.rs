//! The Watch service over real sockets: python-etcd3's watch API (a client
//! stack we did not write), and a raw HTTP/2 client for what no client
//! library exposes: client-chosen and duplicate ids, progress requests,
//! fragments, a client that stops reading, and clean-up when the client
//! goes away.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::net::TcpStream;
use glommio::timer::sleep;
use glommio::LocalExecutorBuilder;
use http::Request;
use prost::Message;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::support::TestServer;
use net::pb::etcdserverpb as pb;
use net::watch::WatchConfig;
use raftcore::Node;

#[test]
fn python_etcd3_watch_semantics() {
    let srv = TestServer::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/etcd3_watch.py"
    );
    let out = Command::new("timeout")
        .arg("120")
        .arg("python3")
        .arg(script)
        .arg(srv.endpoint())
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python etcd3 watch script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ALL OK"), "script did not finish: {stdout}");
    srv.stop().expect("server stops cleanly");
}

// ---- an in-process server that keeps a handle on its node ----

struct Server {
    addr: SocketAddr,
    node: Arc<Node>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// A server with `executors` executor threads: with more than one, the
    /// Raft loop and a stream usually live on different threads, so every
    /// wake-up from the hub crosses threads.
    fn start(watch: WatchConfig, executors: usize) -> Server {
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, rx) = mpsc::channel();
            let (node, raft_loop) =
                raftcore::Node::new(raftcore::NodeConfig::new(0x1234, 0x5678)).expect("node");
            let opts = net::server::ServeOptions {
                raft: Some(Box::new(move || {
                    Box::pin(async move {
                        let _ = raft_loop.run(raftcore::MemLog::default()).await;
                    })
                })),
                client_addrs: vec![addr],
                peer_addrs: Vec::new(),
                peers: Default::default(),
                executors,
                pin_executors: false,
                grpc: Default::default(),
                kv: Default::default(),
                watch: watch.clone(),
                node: node.clone(),
                on_ready: Arc::new(move || {
                    let _ = tx.send(());
                }),
            };
            let s = stop.clone();
            let thread = std::thread::spawn(move || net::server::run(opts, s));
            if rx.recv_timeout(Duration::from_secs(10)).is_ok() {
                return Server {
                    addr,
                    node,
                    stop,
                    thread: Some(thread),
                };
            }
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        panic!("could not start a test server");
    }

    fn watchers(&self) -> usize {
        self.node.watch_hub().hub().stats().watchers
    }

    /// Waits (bounded) until the hub has `n` watchers.
    fn wait_watchers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.watchers() != n {
            assert!(
                Instant::now() < deadline,
                "hub has {} watchers, expected {n}",
                self.watchers()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

async fn connect(addr: SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (h2, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .initial_connection_window_size(window)
        .handshake(tcp.compat())
        .await
        .expect("h2 handshake");
    glommio::spawn_local(async move {
        let _ = conn.await;
    })
    .detach();
    h2
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    future::or(async { Some(f.await) }, async {
        sleep(Duration::from_secs(15)).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out: {what}"))
}

/// One Watch call, driven frame by frame.
struct Call {
    tx: h2::SendStream<Bytes>,
    resp: Option<h2::client::ResponseFuture>,
    rx: Option<h2::RecvStream>,
    buf: Vec<u8>,
    /// Release flow-control capacity as data arrives (a reading client).
    reading: bool,
}

impl Call {
    async fn open(h2: &mut h2::client::SendRequest<Bytes>) -> Call {
        let req = Request::builder()
            .method("POST")
            .uri("http://localhost/etcdserverpb.Watch/Watch")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let ready = h2.clone().ready().await.expect("connection usable");
        *h2 = ready;
        let (resp, tx) = h2.send_request(req, false).expect("send request");
        Call {
            tx,
            resp: Some(resp),
            rx: None,
            buf: Vec::new(),
            reading: true,
        }
    }

    fn send(&mut self, req: pb::WatchRequest) {
        let body = req.encode_to_vec();
        let mut f = vec![0u8];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&body);
        self.tx.send_data(Bytes::from(f), false).expect("send");
    }

    fn create(&mut self, c: pb::WatchCreateRequest) {
        self.send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(c)),
        });
    }

    async fn recv(&mut self) -> pb::WatchResponse {
        within("watch response", self.recv_inner()).await
    }

    async fn recv_inner(&mut self) -> pb::WatchResponse {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= 5 + len {
                    let msg: Vec<u8> = self.buf.drain(..5 + len).skip(5).collect();
                    return pb::WatchResponse::decode(msg.as_slice()).expect("response");
                }
            }
            if self.rx.is_none() {
                let resp = self.resp.take().expect("response future").await;
                self.rx = Some(resp.expect("response headers").into_body());
            }
            let rx = self.rx.as_mut().expect("body");
            let chunk = rx.data().await.expect("stream open").expect("data");
            if self.reading {
                let _ = rx.flow_control().release_capacity(chunk.len());
            }
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Starts reading (releasing flow-control capacity), including what
    /// arrived unreleased before.
    fn start_reading(&mut self) {
        self.reading = true;
    }
}

fn key_create(key: &str, end: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

async fn put(c: &net::client::Client, k: &str, v: &[u8]) -> i64 {
    c.put(&pb::PutRequest {
        key: k.into(),
        value: v.to_vec(),
        ..Default::default()
    })
    .await
    .expect("put")
    .header
    .expect("header")
    .revision
}

#[test]
fn ids_duplicates_cancel_and_progress_requests_follow_etcd() {
    let srv = Server::start(WatchConfig::default(), 1);
    let addr = srv.addr;
    run_local(move || async move {
        let kv = net::client::Client::connect(&addr.to_string())
            .await
            .expect("client");
        put(&kv, "a", b"1").await; // 2
        let mut h2 = connect(addr, 1 << 20).await;
        let mut w = Call::open(&mut h2).await;
        // Server-assigned ids start at 0; the created header has the
        // store revision.
        w.create(key_create("a", ""));
        let r = w.recv().await;
        assert!(r.created && !r.canceled, "{r:?}");
        assert_eq!((r.watch_id, r.header.as_ref().unwrap().revision), (0, 2));
        let h = r.header.unwrap();
        assert_eq!((h.cluster_id, h.member_id), (0x1234, 0x5678));
        // A client-chosen id, then the same id again.
        w.create(pb::WatchCreateRequest {
            watch_id: 7,
            ..key_create("a", "")
        });
        assert_eq!(w.recv().await.watch_id, 7);
        w.create(pb::WatchCreateRequest {
            watch_id: 7,
            ..key_create("b", "")
        });
        let r = w.recv().await;
        assert!(r.created && r.canceled && r.watch_id == -1, "{r:?}");
        assert_eq!(
            r.cancel_reason,
            "mvcc: duplicate watch ID provided on the WatchStream"
        );
        // An empty range.
        w.create(key_create("b", "a"));
        let r = w.recv().await;
        assert!(r.created && r.canceled && r.watch_id == -1, "{r:?}");
        assert_eq!(r.cancel_reason, "mvcc: watcher range is empty");
        // The next auto id skips nothing but what is taken.
        w.create(key_create("", "\0"));
        assert_eq!(w.recv().await.watch_id, 1);
        // Cancel: a canceled response; an unknown id: nothing at all, so
        // the next response is the progress response.
        w.send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest { watch_id: 7 },
            )),
        });
        let r = w.recv().await;
        assert!(r.canceled && !r.created && r.watch_id == 7, "{r:?}");
        w.send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest { watch_id: 99 },
            )),
        });
        w.send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                pb::WatchProgressRequest {},
            )),
        });
        let r = w.recv().await;
        assert_eq!(r.watch_id, -1, "{r:?}");
        assert!(!r.created && !r.canceled && r.events.is_empty());
        assert_eq!(r.header.unwrap().revision, 2);
        // Events go to watchers 0 and 1 only.
        put(&kv, "a", b"2").await; // 3
        let mut ids = vec![w.recv().await.watch_id, w.recv().await.watch_id];
        ids.sort();
        assert_eq!(ids, vec![0, 1]);
    });
}

#[test]
fn fragment_splits_a_large_revision_only_when_asked() {
    let srv = Server::start(
        WatchConfig {
            fragment_bytes: 2000,
            ..WatchConfig::default()
        },
        1,
    );
    let addr = srv.addr;
    run_local(move || async move {
        let kv = net::client::Client::connect(&addr.to_string())
            .await
            .expect("client");
        let mut h2 = connect(addr, 1 << 20).await;
        let mut w = Call::open(&mut h2).await;
        w.create(pb::WatchCreateRequest {
            fragment: true,
            ..key_create("f/", "f0")
        });
        assert_eq!(w.recv().await.watch_id, 0);
        w.create(key_create("f/", "f0"));
        assert_eq!(w.recv().await.watch_id, 1);
        let ops = (0..10)
            .map(|i| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: format!("f/{i}").into(),
                    value: vec![b'v'; 500],
                    ..Default::default()
                })),
            })
            .collect();
        let rev = kv
            .txn(&pb::TxnRequest {
                success: ops,
                ..Default::default()
            })
            .await
            .expect("txn")
            .header
            .unwrap()
            .revision;
        let (mut parts, mut whole) = (Vec::new(), Vec::new());
        while parts.last().is_none_or(|p: &pb::WatchResponse| p.fragment) || whole.is_empty() {
            let r = w.recv().await;
            assert_eq!(r.header.as_ref().unwrap().revision, rev);
            match r.watch_id {
                0 => parts.push(r),
                1 => whole.push(r),
                other => panic!("unexpected watch id {other}"),
            }
        }
        assert!(parts.len() > 2, "{} parts", parts.len());
        for p in &parts {
            assert!(p.encoded_len() < 2000 || p.events.len() == 1);
        }
        let keys = |rs: &[pb::WatchResponse]| -> Vec<Vec<u8>> {
            rs.iter()
                .flat_map(|r| r.events.iter().map(|e| e.kv.as_ref().unwrap().key.clone()))
                .collect()
        };
        let want: Vec<Vec<u8>> = (0..10).map(|i| format!("f/{i}").into_bytes()).collect();
        assert_eq!(keys(&parts), want);
        assert_eq!(whole.len(), 1, "no fragment unless asked");
        assert!(!whole[0].fragment);
        assert_eq!(keys(&whole), want);
    });
}

#[test]
fn a_client_that_stops_reading_blocks_no_writer_and_misses_nothing() {
    let srv = Server::start(WatchConfig::default(), 2);
    let addr = srv.addr;
    let node = srv.node.clone();
    run_local(move || async move {
        let kv = net::client::Client::connect(&addr.to_string())
            .await
            .expect("client");
        // The slow client: a small window it never releases until later.
        let mut slow_conn = connect(addr, 16 << 10).await;
        let mut slow = Call::open(&mut slow_conn).await;
        slow.create(key_create("s/", "s0"));
        assert_eq!(slow.recv().await.watch_id, 0);
        slow.reading = false;
        let mut fast_conn = connect(addr, 1 << 20).await;
        let mut fast = Call::open(&mut fast_conn).await;
        fast.create(key_create("s/", "s0"));
        assert_eq!(fast.recv().await.watch_id, 0);

        const N: i64 = 400;
        let value = vec![b'x'; 1024];
        let mut first = 0;
        for i in 0..N {
            let rev = within(
                "put while a watcher is stuck",
                put(&kv, &format!("s/{}", i % 13), &value),
            )
            .await;
            if i == 0 {
                first = rev;
            }
            // The fast watcher sees each revision live, one response each.
            let r = fast.recv().await;
            assert_eq!(r.events.len(), 1);
            assert_eq!(r.header.unwrap().revision, rev);
        }
        let st = node.watch_hub().hub().stats();
        assert!(st.unsynced >= 1, "the stuck watcher went unsynced: {st:?}");
        assert!(st.queued <= 128, "{st:?}");
        // Now it reads: every event exactly once, in order.
        slow.start_reading();
        let mut revs = Vec::new();
        while revs.len() < N as usize {
            let r = slow.recv().await;
            let h = r.header.unwrap().revision;
            for e in r.events {
                let m = e.kv.unwrap().mod_revision;
                assert!(m <= h, "event {m} after header {h}");
                revs.push(m);
            }
        }
        assert_eq!(revs, (first..first + N).collect::<Vec<_>>());
        let st = node.watch_hub().hub().stats();
        assert_eq!(st.unsynced, 0, "{st:?}");
    });
}

#[test]
fn watchers_are_freed_when_the_client_resets_or_disconnects() {
    let srv = Server::start(WatchConfig::default(), 1);
    let addr = srv.addr;
    let (to_test, from_client) = mpsc::channel::<&'static str>();
    let (to_client, from_test) = mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        run_local(move || async move {
            let kv = net::client::Client::connect(&addr.to_string())
                .await
                .expect("client");
            let mut h2 = connect(addr, 1 << 20).await;
            let mut a = Call::open(&mut h2).await;
            a.create(key_create("a", ""));
            a.create(key_create("b", ""));
            a.recv().await;
            a.recv().await;
            let mut b = Call::open(&mut h2).await;
            b.create(key_create("a", ""));
            b.recv().await;
            // Half-close: etcd keeps the call (and its watchers) alive.
            a.tx.send_data(Bytes::new(), true).expect("half-close");
            put(&kv, "a", b"1").await;
            assert_eq!(a.recv().await.events.len(), 1);
            b.recv().await;
            to_test.send("3 watchers").unwrap();
            let _ = within("test", async {
                while from_test.try_recv().is_err() {
                    sleep(Duration::from_millis(10)).await
                }
            })
            .await;
            // Reset one call: its watcher goes.
            b.tx.send_reset(h2::Reason::CANCEL);
            to_test.send("reset").unwrap();
            let _ = within("test", async {
                while from_test.try_recv().is_err() {
                    sleep(Duration::from_millis(10)).await
                }
            })
            .await;
            // Close the connection: the half-closed call's watchers go.
            drop(a);
            drop(h2);
            to_test.send("closed").unwrap();
        });
    });
    assert_eq!(
        from_client.recv_timeout(Duration::from_secs(20)),
        Ok("3 watchers")
    );
    srv.wait_watchers(3);
    to_client.send(()).unwrap();
    assert_eq!(
        from_client.recv_timeout(Duration::from_secs(20)),
        Ok("reset")
    );
    srv.wait_watchers(2);
    to_client.send(()).unwrap();
    assert_eq!(
        from_client.recv_timeout(Duration::from_secs(20)),
        Ok("closed")
    );
    client.join().expect("client thread");
    srv.wait_watchers(0);
}
