//! Starts an in-process server on a free loopback port.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(net::kv::KvLimits::default())
    }

    pub fn start_with(kv: net::kv::KvLimits) -> TestServer {
        for _ in 0..20 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
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
                executors: 1,
                pin_executors: false,
                grpc: Default::default(),
                kv: kv.clone(),
                watch: Default::default(),
                node,
                on_ready: Arc::new(move || {
                    let _ = tx.send(());
                }),
            };
            let s = stop.clone();
            let thread = std::thread::spawn(move || net::server::run(opts, s));
            if rx.recv_timeout(Duration::from_secs(10)).is_ok() {
                return TestServer {
                    addr,
                    stop,
                    thread: Some(thread),
                };
            }
            // The port was taken between probing and binding: try another.
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        panic!("could not start a test server");
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the server and returns what `run` returned.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map_or(Ok(()), |t| t.join().expect("server thread panicked"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
