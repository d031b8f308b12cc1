use std::sync::atomic::AtomicBool;
use std::sync::Arc;
fn main() {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or("127.0.0.1:2379".into())
        .parse()
        .unwrap();
    let node = Arc::new(raftcore::Node::new(raftcore::NodeConfig {
        cluster_id: 1,
        member_id: 2,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()).unwrap();
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone()).unwrap();
    net::server::run(
        net::server::ServeOptions {
            client_addrs: vec![addr],
            executors: 1,
            grpc: Default::default(),
            kv: Default::default(),
            node,
            on_ready: Arc::new(|| eprintln!("ready")),
        },
        stop,
    )
    .unwrap();
    eprintln!("bye");
}
