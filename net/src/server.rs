//! The client-port server: one glommio executor per core (a setting), each
//! with its own SO_REUSEPORT listener per client URL, serving the etcd
//! services through our gRPC layer.
//!
//! Shutdown: the caller flips `stop` (from a SIGTERM/SIGINT handler); each
//! executor notices within `STOP_POLL`, stops accepting, sends GOAWAY on every
//! connection and waits for in-flight calls up to the grace time.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use glommio::timer::sleep;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::grpc::server::{serve_connection, ServerConfig};
use crate::grpc::{CallInfo, Router};
use crate::kv::{self, KvLimits};
use crate::shutdown::Trigger;
use raftcore::Node;

/// How often an executor checks the process-wide stop flag. Signal handlers
/// cannot wake a glommio executor directly; 100 ms bounds shutdown latency.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Starts the Raft loop on the executor that calls it (the loop's log is
/// executor-local, so it is created there).
pub type RaftStart = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Everything needed to serve clients.
pub struct ServeOptions {
    /// The Raft loop, run on the first executor.
    pub raft: Option<RaftStart>,
    pub client_addrs: Vec<SocketAddr>,
    /// `--listen-peer-urls`: where other members reach our Raft.
    pub peer_addrs: Vec<SocketAddr>,
    /// The other members' peer endpoints, by member ID.
    pub peers: std::collections::HashMap<u64, String>,
    /// Executor threads (one listener each per address).
    pub executors: usize,
    /// Pin each executor to its own CPU (glommio's `MaxSpread`). Off by
    /// default: several members on one host (a test cluster, or the seed
    /// guide's 3 members on one machine) would otherwise all pin their
    /// first executor to the same CPU and share that one core while the
    /// others idle.
    pub pin_executors: bool,
    pub grpc: ServerConfig,
    pub kv: KvLimits,
    pub watch: crate::watch::WatchConfig,
    pub node: Arc<Node>,
    /// Called once, when every executor listens on every address.
    pub on_ready: Arc<dyn Fn() + Send + Sync>,
}

/// Checks that each address is free before the SO_REUSEPORT listeners are
/// made (with SO_REUSEPORT alone a second server would silently share the
/// port instead of failing like etcd does).
fn probe_addrs(addrs: &[SocketAddr]) -> io::Result<()> {
    for a in addrs {
        let l = std::net::TcpListener::bind(a)
            .map_err(|e| io::Error::new(e.kind(), format!("listen tcp {a}: bind: {e}")))?;
        drop(l);
    }
    Ok(())
}

/// A listening socket with SO_REUSEADDR (restart while old connections
/// are in TIME_WAIT) and SO_REUSEPORT (one listener per executor), handed to
/// glommio.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    sk.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("listen tcp {addr}: bind: {e}")))?;
    // etcd's (Go's) default backlog is the kernel's somaxconn; 1024 as glommio.
    sk.listen(1024)?;
    let fd = sk.into_raw_fd();
    // SAFETY: `fd` is a bound, listening TCP socket that we own: `into_raw_fd`
    // gave up the `Socket`'s ownership, and `from_raw_fd` takes it over, so
    // the descriptor is closed exactly once, by the glommio listener.
    #[allow(unsafe_code)]
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    Ok(l)
}

/// Accepts connections on `l` until shutdown; each is served by its own task.
async fn accept_loop(
    l: TcpListener,
    router: Rc<Router>,
    cfg: Rc<ServerConfig>,
    shutdown: Trigger,
    live: Rc<Cell<usize>>,
    http1: Option<Arc<Node>>,
) {
    loop {
        let next = future::or(async { Some(l.accept().await) }, async {
            shutdown.wait().await;
            None
        })
        .await;
        match next {
            None => break,
            Some(Ok(stream)) => {
                live.set(live.get() + 1);
                let (router, cfg, shutdown, live) =
                    (router.clone(), cfg.clone(), shutdown.clone(), live.clone());
                let http1 = http1.clone();
                glommio::spawn_local(async move {
                    match http1 {
                        Some(node) if !is_http2(&stream).await => {
                            crate::http1::serve(stream, node).await
                        }
                        _ => serve_connection(stream, router, cfg, shutdown).await,
                    }
                    live.set(live.get() - 1);
                })
                .detach();
            }
            // EMFILE and friends: back off instead of spinning.
            Some(Err(_)) => sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Whether a new connection speaks HTTP/2 (prior knowledge, as gRPC
/// clients do): its first bytes are the client preface. Waits briefly for
/// them; a silent connection is treated as HTTP/2 (its handshake timeout
/// then applies).
async fn is_http2(stream: &glommio::net::TcpStream) -> bool {
    let mut b = [0u8; 4];
    for _ in 0..50 {
        match stream.peek(&mut b).await {
            Ok(n) if n >= 4 => return &b == b"PRI ",
            Ok(0) => return true,
            Ok(n) if &b[..n] != &b"PRI "[..n] => return false,
            Ok(_) => sleep(Duration::from_millis(10)).await,
            Err(_) => return true,
        }
    }
    true
}

/// Runs the server until `stop` is set and all connections are drained.
pub fn run(opts: ServeOptions, stop: Arc<AtomicBool>) -> io::Result<()> {
    probe_addrs(&opts.client_addrs)?;
    probe_addrs(&opts.peer_addrs)?;
    let n = opts.executors.max(1);
    let ready = Arc::new(AtomicUsize::new(0));
    let ServeOptions {
        raft,
        client_addrs,
        peer_addrs,
        peers,
        grpc,
        kv,
        watch,
        node,
        on_ready,
        ..
    } = opts;
    let raft = Arc::new(Mutex::new(raft));
    let placement = if opts.pin_executors {
        PoolPlacement::MaxSpread(n, None)
    } else {
        PoolPlacement::Unbound(n)
    };
    let handles = LocalExecutorPoolBuilder::new(placement)
        .name("ferrocd")
        // No DMA file I/O on these executors yet; keep the locked memory
        // small so no memlock limit needs raising.
        .io_memory(256 << 10)
        .on_all_shards(move || async move {
            // The first executor to get here runs the Raft loop.
            let start = raft.lock().ok().and_then(|mut r| r.take());
            if let Some(start) = start {
                glommio::spawn_local(start()).detach();
                // The same executor sends Raft messages to the peers.
                glommio::spawn_local(crate::peer::run_transport(node.clone(), peers.clone()))
                    .detach();
            }
            let mut peer_router = Router::new();
            crate::peer::register(&mut peer_router, node.clone());
            crate::cluster::register_peer(&mut peer_router, node.clone());
            crate::lease::register_peer(&mut peer_router, node.clone());
            let peer_router = Rc::new(peer_router);
            let mut router = Router::new();
            kv::register(&mut router, node.clone(), kv.clone());
            crate::watch::register(&mut router, node.clone(), watch.clone());
            crate::maintenance::register(&mut router, node.clone());
            crate::cluster::register(&mut router, node.clone());
            crate::lease::register(&mut router, node.clone());
            crate::v3lock::register(&mut router, node.clone());
            crate::v3election::register(&mut router, node.clone());
            // etcd's interceptors: a learner serves only Status and
            // serializable Range (checked in kv) on the client port; a call
            // with `hasleader: true` metadata is refused while this member
            // has no leader (a Watch stream is also ended when it loses it
            // later: watch.rs).
            let gate_node = node.clone();
            router.set_gate(Rc::new(move |path: &str, info: &CallInfo| {
                if gate_node.is_learner()
                    && path != "/etcdserverpb.Maintenance/Status"
                    && path != "/etcdserverpb.KV/Range"
                {
                    return Err(crate::errors::not_supported_for_learner());
                }
                if info.require_leader && gate_node.leader() == 0 {
                    return Err(crate::errors::no_leader());
                }
                Ok(())
            }));
            let router = Rc::new(router);
            let cfg = Rc::new(grpc.clone());
            let shutdown = Trigger::new();
            let live = Rc::new(Cell::new(0usize));

            let mut listeners = Vec::new();
            for a in &client_addrs {
                listeners.push(listen(*a)?);
            }
            // The peer port serves at once: members need it to elect a leader.
            let mut accept_tasks = Vec::new();
            for a in &peer_addrs {
                let l = listen(*a)?;
                accept_tasks.push(glommio::spawn_local(accept_loop(
                    l,
                    peer_router.clone(),
                    cfg.clone(),
                    shutdown.clone(),
                    live.clone(),
                    None,
                )));
            }
            // Watch the process-wide stop flag.
            {
                let shutdown = shutdown.clone();
                let stop = stop.clone();
                glommio::spawn_local(async move {
                    while !stop.load(Ordering::Relaxed) {
                        sleep(STOP_POLL).await;
                    }
                    shutdown.fire();
                })
                .detach();
            }
            // Serve clients only once the member has a leader and has applied
            // what it recovered, as etcd does; wait as long as it takes (the
            // other members may start later), unless we are told to stop.
            let serving = future::or(
                async {
                    while !node.wait_leader(Duration::from_secs(3600)).await {}
                    true
                },
                async {
                    shutdown.wait().await;
                    false
                },
            )
            .await;
            if serving && ready.fetch_add(1, Ordering::SeqCst) + 1 == n {
                on_ready();
            }
            if !serving {
                listeners.clear();
            }
            for l in listeners {
                accept_tasks.push(glommio::spawn_local(accept_loop(
                    l,
                    router.clone(),
                    cfg.clone(),
                    shutdown.clone(),
                    live.clone(),
                    Some(node.clone()),
                )));
            }
            for t in accept_tasks {
                t.await;
            }
            // Drain: connections close once their calls finish (bounded by
            // the grace time inside serve_connection).
            let give_up = grpc.shutdown_grace + Duration::from_secs(1);
            let _ = future::or(
                async {
                    while live.get() > 0 {
                        sleep(Duration::from_millis(20)).await;
                    }
                },
                async { sleep(give_up).await },
            )
            .await;
            Ok::<(), io::Error>(())
        })
        .map_err(|e| io::Error::other(e.to_string()))?;
    for r in handles.join_all() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
    Ok(())
}
