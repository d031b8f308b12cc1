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

/// mimalloc (v2) instead of glibc malloc: measured 25-35% less server CPU
/// per put at 256 clients; malloc/free were 17% of the put path's samples
/// (BENCHMARKS.md "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc.h's `mi_option_e` (v2 and
/// v3 alike; the Rust binding names no constant for it).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Arenas commit memory as it is used instead of up front: with eager
/// commit (mimalloc's default on Linux) the peak RSS after 100k puts was
/// 63-98 MiB, without it 48-66 MiB, at the same CPU per put (BENCHMARKS.md
/// "Allocator"). `MIMALLOC_ARENA_EAGER_COMMIT` in the environment wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
        // SAFETY: sets a process-wide option; no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    }
}

fn main() {
    tune_allocator();
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

/// `FERROCD_PIN_EXECUTORS=1` pins each executor to its own CPU. Unpinned by
/// default: measured (BENCHMARKS.md "Pinning"), three members on one host
/// all pinned their executor to CPU 0 and shared that core.
fn pin_executors() -> bool {
    std::env::var("FERROCD_PIN_EXECUTORS").is_ok_and(|v| v == "1" || v == "true")
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

/// Reports a bootstrap failure as etcd does (`failed to start etcd`, then
/// fatal `discovery failed`) and exits 1.
fn bootstrap_failed(message: String) -> ! {
    let e = tools::config::ConfigError {
        kind: tools::config::ErrorKind::Bootstrap,
        message,
        notices: Vec::new(),
        env_var: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    e.report(&argv);
    std::process::exit(e.exit_code());
}

/// The peer URLs of every member of `--initial-cluster` but this one, sorted
/// (etcd's `getRemotePeerURLs`).
fn remote_peer_urls(boot: &tools::config::Bootstrap, local: u64) -> Vec<String> {
    let mut v: Vec<String> = boot
        .members
        .iter()
        .filter(|m| m.id != local)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    v.sort();
    v
}

/// etcd's `isMemberBootstrapped`: a running member already lists us with
/// client URLs, i.e. this member started once and published itself; a `new`
/// start from an empty data dir would fork the cluster.
fn check_not_bootstrapped(boot: &tools::config::Bootstrap) {
    let urls = remote_peer_urls(boot, boot.local_member_id);
    if urls.is_empty() {
        return;
    }
    let Ok(remote) = net::cluster::fetch_remote_cluster(&urls, Duration::from_secs(1)) else {
        return;
    };
    if remote
        .members
        .iter()
        .any(|m| m.id == boot.local_member_id && !m.client_urls.is_empty())
    {
        bootstrap_failed(format!(
            "member {:x} has already been bootstrapped",
            boot.local_member_id
        ));
    }
}

/// Joining a running cluster (`--initial-cluster-state existing` with an
/// empty data dir), as etcd: the member list comes from the running
/// members; every member of `--initial-cluster` must match one of them by
/// peer URLs, which gives each its ID; the cluster ID is theirs.
fn join_existing(
    boot: &tools::config::Bootstrap,
    name: &str,
) -> Result<(raftcore::WalMetadata, Vec<raftcore::MemberInfo>), String> {
    let urls = remote_peer_urls(boot, boot.local_member_id);
    let remote = net::cluster::fetch_remote_cluster(&urls, Duration::from_secs(2)).map_err(|e| {
        logging::warn(
            "failed to get cluster from remote peers",
            &[("error", json!(e)), ("peer-urls", json!(urls))],
        );
        "cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs".to_string()
    })?;
    // etcd prints the remote cluster with RaftCluster.String().
    let remote_str = format!(
        "{{ClusterID:{:x} Members:[{}] RemovedMemberIDs:[]}}",
        remote.cluster_id,
        remote
            .members
            .iter()
            .map(|m| format!(
                "&{{ID:{:x} RaftAttributes:{{PeerURLs:[{}] IsLearner:{}}} Attributes:{{Name:{} ClientURLs:[{}]}}}}",
                m.id,
                m.peer_urls.join(" "),
                m.is_learner,
                m.name,
                m.client_urls.join(" ")
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if remote.members.len() != boot.members.len() {
        return Err(format!(
            "error validating peerURLs {remote_str}: member count is unequal"
        ));
    }
    let mut local_id = None;
    for rm in &remote.members {
        let mut ru = rm.peer_urls.clone();
        ru.sort();
        let Some(lm) = boot.members.iter().find(|lm| lm.peer_urls == ru) else {
            return Err(format!(
                "error validating peerURLs {remote_str}: PeerURLs: no match found for existing member ({:x}, {:?}), last resolver error (<nil>)",
                rm.id, rm.peer_urls
            ));
        };
        if lm.name == name {
            local_id = Some(rm.id);
        }
    }
    let member_id = local_id.ok_or_else(|| {
        format!("error validating peerURLs {remote_str}: member count is unequal")
    })?;
    Ok((
        raftcore::WalMetadata {
            cluster_id: remote.cluster_id,
            member_id,
        },
        remote.members,
    ))
}

/// Opens the member's WAL (restart) or creates it with the bootstrap log (a
/// new member) or an empty log (a member joining a running cluster). Returns
/// who we are, the Raft log to start from, and the members known from
/// outside the log (for the peer address book).
fn open_or_bootstrap(
    cfg: &Config,
    wal_dir: &Path,
) -> Result<
    (
        raftcore::WalMetadata,
        raftcore::RecoveredLog,
        Vec<raftcore::MemberInfo>,
    ),
    String,
> {
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
        // The member list comes from the backend and the log; the flags
        // only seed the peer address book (a data dir from before member
        // lists were persisted falls back to them).
        let members = match cfg.bootstrap() {
            Ok(b) => initial_members(cfg, &b),
            Err(_) => Vec::new(),
        };
        return Ok((meta, log, members));
    }
    let boot = match cfg.bootstrap() {
        Ok(b) => b,
        Err(e) => {
            let argv: Vec<String> = std::env::args().collect();
            e.report(&argv);
            std::process::exit(e.exit_code());
        }
    };
    let (meta, log, members) = if cfg.initial_cluster_state == tools::config::ClusterState::Existing
    {
        let (meta, members) =
            join_existing(&boot, &cfg.name).unwrap_or_else(|e| bootstrap_failed(e));
        logging::info(
            "joining an existing cluster",
            &[
                ("local-member-id", json!(format!("{:x}", meta.member_id))),
                ("cluster-id", json!(format!("{:x}", meta.cluster_id))),
            ],
        );
        // An empty log: the leader sends everything from index 1.
        (meta, raftcore::RecoveredLog::default(), members)
    } else {
        check_not_bootstrapped(&boot);
        let meta = raftcore::WalMetadata {
            cluster_id: boot.cluster_id,
            member_id: boot.local_member_id,
        };
        let members = initial_members(cfg, &boot);
        let log = raftcore::wal_log::bootstrap_log_with(&members)
            .map_err(|e| format!("bootstrap: {e}"))?;
        (meta, log, members)
    };
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
    Ok((meta, log, members))
}

/// The members of `--initial-cluster`, with their names.
fn initial_members(_cfg: &Config, boot: &tools::config::Bootstrap) -> Vec<raftcore::MemberInfo> {
    boot.members
        .iter()
        .map(|m| raftcore::MemberInfo {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect()
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
    let restarting = engine::wal::Wal::exists(&wal_dir);
    let (meta, mut log, members) = open_or_bootstrap(cfg, &wal_dir)?;
    let t0 = std::time::Instant::now();
    // Finishes a Raft snapshot installation a crash interrupted (the WAL
    // already starts after it) and removes leftover snapshot files.
    let (db, store, applied) = raftcore::open_backend(&snap_dir, log.snapshot.map(|s| s.0))
        .map_err(|e| format!("cannot open backend {:?}: {e}", snap_dir.join("db")))?;
    logging::info(
        "opened backend",
        &[
            ("path", json!(snap_dir.join("db").display().to_string())),
            ("applied-index", json!(applied.index)),
            ("revision", json!(store.current_revision())),
            ("took", json!(format!("{:?}", t0.elapsed()))),
        ],
    );
    let persisted_members = engine::members::load(&db)
        .map_err(|e| format!("cannot load the member list from the backend: {e}"))?;
    // --force-new-cluster (etcd: only for a member restarting from its data
    // dir): every other member is removed by committed conf changes that
    // are written to the WAL before the member starts.
    let force = matches!(
        cfg.flag("force-new-cluster"),
        Some(tools::flags::Value::Bool(true))
    );
    if force && restarting {
        let added = raftcore::force::force_new_cluster(
            &mut log,
            meta.member_id,
            persisted_members.as_ref(),
            applied.index,
            &members,
        )?;
        let records = raftcore::wal_log::records_for(&added, &log.hard_state);
        let dir = wal_dir.clone();
        let opts = wal_options(cfg);
        on_temp_executor(move || async move {
            let (wal, _) = engine::wal::Wal::open(&dir, opts)
                .await
                .map_err(|e| format!("cannot open wal: {e}"))?;
            wal.append(&records)
                .await
                .map_err(|e| format!("cannot write the forced conf changes: {e}"))?;
            let _ = wal.close().await;
            Ok(())
        })?;
        logging::warn(
            "forcing restart as a single-member cluster (--force-new-cluster)",
            &[
                ("local-member-id", json!(format!("{:x}", meta.member_id))),
                ("removed-members", json!(added.len())),
                ("commit-index", json!(log.hard_state.commit)),
            ],
        );
    }
    logging::info(
        "starting ferrocd",
        &[
            ("name", json!(cfg.name)),
            ("data-dir", json!(cfg.data_dir)),
            ("local-member-id", json!(format!("{:x}", meta.member_id))),
            ("cluster-id", json!(format!("{:x}", meta.cluster_id))),
        ],
    );
    let peers: std::collections::HashMap<u64, String> = members
        .iter()
        .filter(|m| m.id != meta.member_id)
        .filter_map(|m| m.peer_urls.first().map(|u| (m.id, u.clone())))
        .collect();
    // Like etcd, listen on the peer URLs also as a single member.
    let peer_addrs = cfg.listen_peer_addrs().map_err(|e| e.message.clone())?;
    let mut node_cfg = raftcore::NodeConfig::new(meta.cluster_id, meta.member_id);
    // The initial members: the fallback for a data dir written before
    // member lists were persisted, and the seed of the peer address book.
    node_cfg.voters = members.iter().map(|m| m.id).collect();
    node_cfg.members = members.clone();
    node_cfg.strict_reconfig_check = !matches!(
        cfg.flag("strict-reconfig-check"),
        Some(tools::flags::Value::Bool(false))
    );
    node_cfg.initial_election_tick_advance = !matches!(
        cfg.flag("initial-election-tick-advance"),
        Some(tools::flags::Value::Bool(false))
    );
    node_cfg.pre_vote = !matches!(cfg.flag("pre-vote"), Some(tools::flags::Value::Bool(false)));
    node_cfg.name = cfg.name.clone();
    // etcd: 0 means the default for both.
    if cfg.snapshot_count > 0 {
        node_cfg.snapshot_count = cfg.snapshot_count;
    }
    if let Some(tools::flags::Value::Uint(n)) = cfg.flag("experimental-snapshot-catchup-entries") {
        if *n > 0 {
            node_cfg.snapshot_catchup_entries = *n;
        }
    }
    node_cfg.client_urls = cfg.advertise_client_urls.clone();
    node_cfg.heartbeat = Duration::from_millis(cfg.heartbeat_interval_ms.max(1));
    node_cfg.election_ticks = usize::try_from(cfg.election_ticks()).unwrap_or(10);
    // etcd: 5 s + 2 × election timeout.
    node_cfg.quota_bytes = cfg.quota_bytes();
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
        members: persisted_members,
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
            match raft_loop.run(raftcore::WalLog::new(wal)).await {
                Ok(()) => {}
                // etcd: the server stops, logs this, and the process exits 0.
                Err(e @ raftcore::Error::Removed) => {
                    logging::warn("server error", &[("error", json!(e.to_string()))]);
                    logging::warn("data-dir used by this member must be removed", &[]);
                    std::process::exit(0);
                }
                Err(e) => logging::fatal("raft loop failed", &[("error", json!(e.to_string()))]),
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
        pin_executors: pin_executors(),
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
