//! `ferrocd`: the server. Parses etcd's flags, `ETCD_*` variables and
//! `--config-file`, prepares the data dir, and serves clients until SIGTERM
//! or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tools::config::{self, Config};
use tools::{logging, notify};

fn main() {
    // Test builds only: arm the failpoints named in FAILPOINTS (planted
    // bugs for the fault tests); kept for the life of the process.
    #[cfg(feature = "failpoints")]
    let _failpoints = {
        let s = fail::FailScenario::setup();
        if let Ok(v) = std::env::var("FAILPOINTS") {
            eprintln!("ferrocd: FAILPOINTS armed: {v}");
        }
        s
    };
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

/// Runs `f` on a short-lived glommio executor (the WAL does its I/O through
/// glommio) and returns its result.
fn on_temp_executor<T, F, Fut>(f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .name("ferrocd-recover")
        .spawn(f)
        .map_err(|e| format!("cannot start executor: {e}"))?
        .join()
        .map_err(|e| format!("executor failed: {e}"))?
}

fn wal_options(cfg: &Config) -> engine::wal::WalOptions {
    let mut o = engine::wal::WalOptions::default();
    if let Some(tools::flags::Value::Uint(n)) = cfg.flag("max-wals") {
        o.max_wals = usize::try_from(*n).unwrap_or(usize::MAX).max(1);
    }
    o
}

/// Opens the member's WAL (restart) or creates it with the bootstrap log (a
/// new member). Returns who we are and the Raft log to start from.
fn open_or_bootstrap(
    cfg: &Config,
    wal_dir: &Path,
) -> Result<(raftcore::WalMetadata, raftcore::RecoveredLog), String> {
    let dir = wal_dir.to_path_buf();
    let opts = wal_options(cfg);
    if engine::wal::Wal::exists(&dir) {
        let (meta, log, torn) = on_temp_executor(move || async move {
            let (wal, rec) = engine::wal::Wal::open(&dir, opts)
                .await
                .map_err(|e| format!("cannot open wal: {e}"))?;
            let _ = wal.close().await;
            let (meta, log) = raftcore::wal_log::recover(&rec).map_err(|e| format!("wal: {e}"))?;
            Ok((meta, log, rec.torn_tail.map(|t| t.what)))
        })?;
        if let Some(what) = torn {
            logging::warn("repaired a torn WAL tail", &[("what", json!(what))]);
        }
        logging::info(
            "restarting member from its data dir; --initial-cluster flags are ignored",
            &[
                ("wal-dir", json!(wal_dir.display().to_string())),
                ("entries", json!(log.entries.len())),
                ("commit-index", json!(log.hard_state.commit)),
            ],
        );
        return Ok((meta, log));
    }
    let boot = match cfg.bootstrap() {
        Ok(b) => b,
        Err(e) => {
            let argv: Vec<String> = std::env::args().collect();
            e.report(&argv);
            std::process::exit(e.exit_code());
        }
    };
    let meta = raftcore::WalMetadata {
        cluster_id: boot.cluster_id,
        member_id: boot.local_member_id,
    };
    let ids: Vec<u64> = boot.members.iter().map(|m| m.id).collect();
    let log = raftcore::wal_log::bootstrap_log(&ids).map_err(|e| format!("bootstrap: {e}"))?;
    let records = raftcore::wal_log::records_of(&log);
    let m = meta.encode();
    on_temp_executor(move || async move {
        let wal = engine::wal::Wal::create(&dir, &m, opts)
            .await
            .map_err(|e| format!("cannot create wal: {e}"))?;
        wal.append(&records)
            .await
            .map_err(|e| format!("cannot write bootstrap log: {e}"))?;
        let _ = wal.close().await;
        Ok(())
    })?;
    Ok((meta, log))
}

fn run(cfg: &Config) -> Result<(), String> {
    prepare_data_dir(&cfg.data_dir)?;
    let wal_dir = if cfg.wal_dir.is_empty() {
        Path::new(&cfg.data_dir).join("member").join("wal")
    } else {
        PathBuf::from(&cfg.wal_dir)
    };
    let addrs = cfg.listen_addrs().map_err(|e| e.message.clone())?;
    // The B-tree file, as etcd's bbolt file: <data-dir>/member/snap/db.
    let snap_dir = Path::new(&cfg.data_dir).join("member").join("snap");
    std::fs::create_dir_all(&snap_dir).map_err(|e| format!("cannot create {snap_dir:?}: {e}"))?;
    let t0 = std::time::Instant::now();
    let db = engine::btree::Db::open(snap_dir.join("db"), engine::btree::Options::default())
        .map_err(|e| format!("cannot open backend {:?}: {e}", snap_dir.join("db")))?;
    let (store, applied) =
        engine::mvcc::load(&db).map_err(|e| format!("cannot load backend: {e}"))?;
    logging::info(
        "opened backend",
        &[
            ("path", json!(snap_dir.join("db").display().to_string())),
            ("applied-index", json!(applied.index)),
            ("revision", json!(store.current_revision())),
            ("took", json!(format!("{:?}", t0.elapsed()))),
        ],
    );
    let (meta, log) = open_or_bootstrap(cfg, &wal_dir)?;
    logging::info(
        "starting ferrocd",
        &[
            ("name", json!(cfg.name)),
            ("data-dir", json!(cfg.data_dir)),
            ("local-member-id", json!(format!("{:x}", meta.member_id))),
            ("cluster-id", json!(format!("{:x}", meta.cluster_id))),
        ],
    );
    // The members and their peer URLs. etcd keeps them in its store and
    // ignores --initial-cluster on restart; ferrocd does not persist the
    // member list yet, so it reads --initial-cluster every time.
    let members = match cfg.bootstrap() {
        Ok(b) => b.members,
        Err(e) => {
            logging::warn(
                "cannot read the member list from --initial-cluster; running as a single member",
                &[("error", json!(e.message))],
            );
            Vec::new()
        }
    };
    let peers: std::collections::HashMap<u64, String> = members
        .iter()
        .filter(|m| m.id != meta.member_id)
        .filter_map(|m| m.peer_urls.first().map(|u| (m.id, u.clone())))
        .collect();
    // Like etcd, listen on the peer URLs also as a single member.
    let peer_addrs = cfg.listen_peer_addrs().map_err(|e| e.message.clone())?;
    let mut node_cfg = raftcore::NodeConfig::new(meta.cluster_id, meta.member_id);
    node_cfg.voters = members.iter().map(|m| m.id).collect();
    node_cfg.members = members
        .iter()
        .map(|m| raftcore::MemberInfo {
            id: m.id,
            name: if m.id == meta.member_id {
                cfg.name.clone()
            } else {
                String::new()
            },
            peer_urls: m.peer_urls.clone(),
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect();
    node_cfg.name = cfg.name.clone();
    node_cfg.client_urls = cfg.advertise_client_urls.clone();
    node_cfg.heartbeat = Duration::from_millis(cfg.heartbeat_interval_ms.max(1));
    node_cfg.election_ticks = usize::try_from(cfg.election_ticks()).unwrap_or(10);
    // etcd: 5 s + 2 × election timeout.
    node_cfg.request_timeout =
        Duration::from_secs(5) + 2 * Duration::from_millis(cfg.election_timeout_ms);
    let ckpt = raftcore::CheckpointConfig {
        interval: flag_duration(cfg, "backend-batch-interval", Duration::from_millis(100)),
        limit: match cfg.flag("backend-batch-limit") {
            Some(tools::flags::Value::Int(n)) if *n > 0 => *n as u64,
            Some(tools::flags::Value::Uint(n)) if *n > 0 => *n,
            _ => 10_000,
        },
    };
    let rec = raftcore::Recovered {
        store,
        applied,
        backend: Some((Arc::new(db), ckpt)),
    };
    let (node, raft_loop) = raftcore::Node::start_with(node_cfg, log, rec)
        .map_err(|e| format!("cannot start raft: {e}"))?;
    let opts = wal_options(cfg);
    let raft: net::server::RaftStart = Box::new(move || {
        Box::pin(async move {
            let wal = match engine::wal::Wal::open(&wal_dir, opts).await {
                Ok((wal, _)) => wal,
                Err(e) => logging::fatal("cannot open wal", &[("error", json!(e.to_string()))]),
            };
            if let Err(e) = raft_loop.run(raftcore::WalLog::new(wal)).await {
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
    let mut progress_notify_interval = flag_duration(
        cfg,
        "experimental-watch-progress-notify-interval",
        net::watch::WatchConfig::default().progress_notify_interval,
    );
    if progress_notify_interval < net::watch::MIN_PROGRESS_NOTIFY_INTERVAL {
        logging::warn(
            "adjusting watch progress notify interval to minimum period",
            &[("min-watch-progress-notify-interval", json!("100ms"))],
        );
        progress_notify_interval = net::watch::MIN_PROGRESS_NOTIFY_INTERVAL;
    }
    let watch = net::watch::WatchConfig {
        progress_notify_interval,
        // etcd's watch server: --max-request-bytes + grpcOverheadBytes.
        fragment_bytes: max_request_bytes.saturating_add(512 * 1024),
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
        peer_addrs,
        peers,
        executors: executors(),
        grpc,
        kv,
        watch,
        node,
        on_ready,
    };
    net::server::run(opts, stop).map_err(|e| e.to_string())?;
    logging::info("stopped serving; ferrocd exits", &[]);
    Ok(())
}
