//! `ferrocd`: the server. Parses etcd's flags, `ETCD_*` variables and
//! `--config-file`, prepares the data dir, and serves clients until SIGTERM
//! or SIGINT.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tools::config::{self, Config};
use tools::{logging, notify};

fn main() {
    let cfg = config::parse_cli();
    if let Err(msg) = run(&cfg) {
        logging::fatal(msg.as_str(), &[]);
    }
}

/// Executor threads. Not an etcd flag, so it is read from our own variable.
/// Default 1: measured on the 2-core machine (BENCHMARKS.md), two executors
/// cost 7x more server CPU per request at 1 client (156 vs 22 us: every
/// request then crosses threads to the Raft loop and back) and 1.4x more at
/// 256 clients, with no throughput gain while the client shares the cores.
fn executors() -> usize {
    std::env::var("FERROCD_EXECUTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

fn flag_duration(cfg: &Config, name: &str, default: Duration) -> Duration {
    match cfg.flag(name) {
        Some(tools::flags::Value::Duration(ns)) if *ns > 0 => Duration::from_nanos(*ns as u64),
        _ => default,
    }
}

/// Creates the data dir layout etcd creates (`<data-dir>/member`, mode 0700).
fn prepare_data_dir(dir: &str) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let member = std::path::Path::new(dir).join("member");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&member)
        .map_err(|e| format!("cannot access data directory {dir:?}: {e}"))
}

fn run(cfg: &Config) -> Result<(), String> {
    let boot = match cfg.bootstrap() {
        Ok(b) => b,
        Err(e) => {
            let argv: Vec<String> = std::env::args().collect();
            e.report(&argv);
            std::process::exit(e.exit_code());
        }
    };
    prepare_data_dir(&cfg.data_dir)?;
    let addrs = cfg.listen_addrs().map_err(|e| e.message.clone())?;
    logging::warn(
        "ferrocd keeps data in memory only in this version; a restart loses all keys",
        &[("data-dir", json!(cfg.data_dir))],
    );
    logging::info(
        "starting ferrocd",
        &[
            ("name", json!(cfg.name)),
            ("data-dir", json!(cfg.data_dir)),
            (
                "local-member-id",
                json!(format!("{:x}", boot.local_member_id)),
            ),
            ("cluster-id", json!(format!("{:x}", boot.cluster_id))),
        ],
    );
    let mut node_cfg = raftcore::NodeConfig::new(boot.cluster_id, boot.local_member_id);
    node_cfg.heartbeat = Duration::from_millis(cfg.heartbeat_interval_ms.max(1));
    node_cfg.election_ticks = usize::try_from(cfg.election_ticks()).unwrap_or(10);
    // etcd: 5 s + 2 × election timeout.
    node_cfg.request_timeout =
        Duration::from_secs(5) + 2 * Duration::from_millis(cfg.election_timeout_ms);
    let (node, raft_loop) =
        raftcore::Node::new(node_cfg).map_err(|e| format!("cannot start raft: {e}"))?;
    let raft: net::server::RaftStart = Box::new(move || {
        Box::pin(async move {
            if let Err(e) = raft_loop.run(raftcore::MemLog::default()).await {
                logging::fatal("raft loop failed", &[("error", json!(e.to_string()))]);
            }
        })
    });
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    let max_request_bytes = usize::try_from(cfg.max_request_bytes).unwrap_or(usize::MAX);
    let grpc = net::grpc::server::ServerConfig {
        // etcd: grpc MaxRecvMsgSize = --max-request-bytes + 512 KiB overhead.
        max_recv_message: max_request_bytes.saturating_add(512 * 1024),
        keepalive_interval: flag_duration(
            cfg,
            "grpc-keepalive-interval",
            Duration::from_secs(7200),
        ),
        keepalive_timeout: flag_duration(cfg, "grpc-keepalive-timeout", Duration::from_secs(20)),
        ..Default::default()
    };
    let kv = net::kv::KvLimits {
        max_txn_ops: usize::try_from(cfg.max_txn_ops).unwrap_or(usize::MAX),
        max_request_bytes,
    };
    let served: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let on_ready = Arc::new(move || {
        for a in &served {
            logging::warn(
                "serving client traffic insecurely; this is strongly discouraged!",
                &[("address", json!(a))],
            );
        }
        logging::info("ready to serve client requests", &[]);
        notify::notify_ready();
    });
    let opts = net::server::ServeOptions {
        raft: Some(raft),
        client_addrs: addrs,
        executors: executors(),
        grpc,
        kv,
        node,
        on_ready,
    };
    net::server::run(opts, stop).map_err(|e| e.to_string())?;
    logging::info("stopped serving; ferrocd exits", &[]);
    Ok(())
}
