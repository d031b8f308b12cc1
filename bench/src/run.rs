//! Running a benchmark: executors, connections, clients.
//!
//! * `--executors E` glommio executors, executor `e` pinned to CPU
//!   `e % online CPUs`. Connection `j` lives on executor `j % E` (an h2
//!   connection is `Rc`-shared and cannot cross threads); client `i` uses
//!   connection `i % conns` as etcd's `mustCreateClients` does, so it runs
//!   as a task on that connection's executor. With fewer conns than
//!   executors the extra executors would idle, so E is capped at conns.
//! * Connection `j` dials endpoint `j % endpoints`.
//! * Work: etcd feeds one channel that all clients drain; here every client
//!   takes the next request number from one shared atomic counter, which
//!   gives the same "whoever is free takes the next request" behaviour
//!   across executors without a channel.
//! * Timing: executors connect first and meet at a barrier; the main thread
//!   then reads the CPU counters and the start time and releases them. The
//!   run ends at the last request's completion; CPU is read after the
//!   executors are joined (their teardown is a few connection closes).
//! * `--rate`: request `n` is due at `start + n / rate` (the start time the
//!   main thread publishes before releasing the executors) and its latency
//!   counts from then (`openloop.rs`). Without it each request counts from
//!   its send, as etcd's tool.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use net::client::{Client, ClientConfig};
use net::pb::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};

use crate::args::{Args, Command};
use crate::cpu;
use crate::keys::{key_bytes, KeyGen};
use crate::openloop::{self, Schedule};
use crate::report::{CpuUse, Recorder, Report};
use crate::stm::{self, Revisions};

/// Locked memory glommio registers per executor. We do no file I/O, so keep
/// it small: the 10 MiB default needs a raised memlock limit (DESIGN.md,
/// glommio pitfall 3).
const IO_MEMORY: usize = 256 << 10;

/// Why a run could not be done at all (per-request failures are counted in
/// the report instead).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Connect(#[from] net::client::ClientError),
    #[error("executor: {0}")]
    Executor(String),
}

/// Everything an executor needs, `Send` so it crosses into the thread.
#[derive(Clone)]
struct Plan {
    args: Args,
    executors: usize,
    next: Arc<AtomicU64>,
    ready: Arc<Barrier>,
    go: Arc<Barrier>,
    /// Random bytes of the put value, the same for every request (etcd
    /// makes one value per run too).
    value: Vec<u8>,
    /// Open-loop schedule (`--rate`).
    schedule: Option<Schedule>,
    /// The run's start, set by the main thread before it releases `go`.
    start: Arc<OnceLock<Instant>>,
}

impl Plan {
    /// The next request number, or `None` once the total is reached, and
    /// the time its latency counts from (waiting until it is due when the
    /// run is open-loop).
    async fn next(&self) -> Option<(u64, Instant)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n >= self.args.command.total() {
            return None;
        }
        let sched = self
            .schedule
            .and_then(|s| self.start.get().map(|&start| (s, start)));
        Some((n, openloop::begin(sched, n).await))
    }
}

struct ExecutorResult {
    rec: Recorder,
    /// When this executor's last request finished.
    last_done: Option<Instant>,
}

/// Runs the benchmark described by `args`.
pub fn run(args: &Args) -> Result<Report, RunError> {
    let g = &args.global;
    let executors = g.executors.min(g.conns).max(1);
    if executors < g.executors {
        eprintln!(
            "ferrobench: --executors {} capped at --conns {}",
            g.executors, g.conns
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let val_size = match &args.command {
        Command::Put(p)
        | Command::TxnPut(crate::args::TxnPutArgs { put: p, .. })
        | Command::TxnMixed(crate::args::TxnMixedArgs { put: p, .. }) => p.val_size,
        Command::Stm(s) => s.val_size,
        Command::Range(_) => 0,
    };
    let mut value = vec![0u8; val_size];
    fastrand::Rng::new().fill(&mut value);
    let plan = Plan {
        args: args.clone(),
        executors,
        next: Arc::new(AtomicU64::new(0)),
        ready: Arc::new(Barrier::new(executors + 1)),
        go: Arc::new(Barrier::new(executors + 1)),
        value,
        schedule: g.rate.map(Schedule::new),
        start: Arc::new(OnceLock::new()),
    };

    let mut handles = Vec::with_capacity(executors);
    for e in 0..executors {
        let plan = plan.clone();
        let h = LocalExecutorBuilder::new(Placement::Fixed(e % cpus))
            .name(&format!("ferrobench-{e}"))
            .io_memory(IO_MEMORY)
            .spawn(move || async move { executor_main(e, plan).await })
            .map_err(|err| RunError::Executor(err.to_string()))?;
        handles.push(h);
    }

    // Every executor has connected (or failed) before we start the clock.
    plan.ready.wait();
    let cpu_before = read_cpu(&g.server_pids);
    let start = Instant::now();
    // Published before `go`: the barrier orders it before the executors'
    // first request.
    let _ = plan.start.set(start);
    plan.go.wait();
    let progress = Progress::start(plan.next.clone(), args.command.total());

    let mut rec = Recorder::new();
    let mut last_done = None::<Instant>;
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => {
                rec.merge(&r.rec);
                last_done = last_done.max(r.last_done);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(RunError::Executor(e.to_string()));
            }
        }
    }
    let cpu_after = read_cpu(&g.server_pids);
    drop(progress);
    if let Some(e) = first_err {
        return Err(e);
    }
    let duration = last_done.map_or(Duration::ZERO, |t| t.saturating_duration_since(start));
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    Ok(Report {
        cmd: args.command.name().to_string(),
        total: args.command.total(),
        clients: g.clients,
        conns: g.conns,
        executors,
        duration,
        rec,
        cpu: CpuUse {
            client_us: diff(cpu_before.client_us, cpu_after.client_us),
            server_us: diff(cpu_before.server_us, cpu_after.server_us),
        },
        rate: g.rate,
    })
}

/// A progress line on stderr (only when stderr is a terminal, so scripts
/// and `--json` pipelines see nothing): requests started so far, once a
/// second, erased when the run ends.
struct Progress {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(next: Arc<AtomicU64>, total: u64) -> Progress {
        use std::io::IsTerminal;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let mut shown = false;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if t0.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    let n = next.load(Ordering::Relaxed).min(total);
                    let width = 40u64;
                    let filled = (n * width).checked_div(total).unwrap_or(width);
                    eprint!(
                        "\r [{}{}] {n}/{total}",
                        "#".repeat(filled as usize),
                        ".".repeat((width - filled) as usize)
                    );
                    shown = true;
                }
                if shown {
                    eprint!("\r{}\r", " ".repeat(70));
                }
            })
        });
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn read_cpu(server_pids: &[u32]) -> CpuUse {
    let server_us = if server_pids.is_empty() {
        None
    } else {
        match cpu::processes_cpu_us(server_pids) {
            Ok(us) => Some(us),
            Err(e) => {
                eprintln!("ferrobench: reading server CPU time: {e}");
                None
            }
        }
    };
    CpuUse {
        client_us: cpu::process_cpu_us(None).ok(),
        server_us,
    }
}

async fn executor_main(e: usize, plan: Plan) -> Result<ExecutorResult, RunError> {
    let g = &plan.args.global;
    let cfg = ClientConfig {
        connect_timeout: g.dial_timeout,
        ..ClientConfig::default()
    };
    // Connections of this executor, by global connection number.
    let mut conns: Vec<(usize, Client)> = Vec::new();
    let mut connect_err = None;
    for j in (e..g.conns).step_by(plan.executors) {
        let ep = &g.endpoints[j % g.endpoints.len()];
        match Client::connect_with(ep, cfg.clone()).await {
            Ok(c) => conns.push((j, c)),
            Err(err) => {
                connect_err = Some(err);
                break;
            }
        }
    }
    if connect_err.is_some() {
        // Stop the other executors' clients before they start: no request
        // number is below the total any more.
        plan.next.store(u64::MAX / 2, Ordering::Relaxed);
    }
    // Always meet the main thread at both barriers, even after a failure,
    // or it would wait forever. (The barrier also orders the store above
    // before every executor's first `fetch_add`.)
    plan.ready.wait();
    plan.go.wait();
    if let Some(err) = connect_err {
        return Err(err.into());
    }

    let rec = Rc::new(RefCell::new(Recorder::new()));
    let last_done = Rc::new(RefCell::new(None::<Instant>));
    let revs: Rc<Revisions> = Rc::default();
    let mut tasks = Vec::new();
    for i in 0..g.clients {
        let j = i % g.conns;
        let Some((_, client)) = conns.iter().find(|(n, _)| *n == j) else {
            continue; // another executor's connection
        };
        let (client, rec, last_done, plan, revs) = (
            client.clone(),
            rec.clone(),
            last_done.clone(),
            plan.clone(),
            revs.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            client_loop(i, client, plan, rec, last_done, revs).await;
        }));
    }
    for t in tasks {
        t.await;
    }
    let rec = rec.borrow().clone();
    let last_done = *last_done.borrow();
    Ok(ExecutorResult { rec, last_done })
}

/// One benchmark client: takes request numbers until the total is reached.
async fn client_loop(
    i: usize,
    client: Client,
    plan: Plan,
    rec: Rc<RefCell<Recorder>>,
    last_done: Rc<RefCell<Option<Instant>>>,
    revs: Rc<Revisions>,
) {
    let seed = fastrand::u64(..) ^ i as u64;
    let done = |t0: Instant, r: Result<(), String>, kind: Option<&str>| {
        let now = Instant::now();
        let lat = openloop::latency(t0, now);
        match (r, kind) {
            (Ok(()), Some(k)) => rec.borrow_mut().ok_kind(k, lat),
            (Ok(()), None) => rec.borrow_mut().ok(lat),
            (Err(e), _) => rec.borrow_mut().err(e),
        }
        *last_done.borrow_mut() = Some(now);
    };
    match &plan.args.command {
        Command::Put(p) => {
            let mut keys = KeyGen::new(p.key_space_size, p.sequential_keys, seed);
            while let Some((n, t0)) = plan.next().await {
                let req = PutRequest {
                    key: key_bytes(keys.key_number(n), p.key_size),
                    value: plan.value.clone(),
                    ..PutRequest::default()
                };
                let r = client.put(&req).await.map(drop);
                done(t0, r.map_err(|s| s.to_string()), None);
            }
        }
        Command::TxnPut(t) => {
            let p = &t.put;
            let mut keys = KeyGen::new(p.key_space_size, p.sequential_keys, seed);
            while let Some((n, t0)) = plan.next().await {
                // Distinct keys within one txn (etcd refuses duplicates).
                let mut seen = std::collections::HashSet::new();
                let ks: Vec<Vec<u8>> = (0..t.txn_ops as u64)
                    .map(|j| keys.key_number(n.wrapping_mul(t.txn_ops as u64).wrapping_add(j)))
                    .filter(|k| seen.insert(*k))
                    .map(|k| key_bytes(k, p.key_size))
                    .collect();
                let r = if t.cas {
                    match stm::cas_put(&client, &ks, &plan.value, &revs).await {
                        Ok(retries) => {
                            if retries > 0 {
                                rec.borrow_mut().count("cas_retries", retries);
                            }
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    let req = TxnRequest {
                        success: ks
                            .into_iter()
                            .map(|key| RequestOp {
                                request: Some(request_op::Request::RequestPut(PutRequest {
                                    key,
                                    value: plan.value.clone(),
                                    ..PutRequest::default()
                                })),
                            })
                            .collect(),
                        ..TxnRequest::default()
                    };
                    client.txn(&req).await.map(drop).map_err(|s| s.to_string())
                };
                done(t0, r, None);
            }
        }
        Command::Range(r) => {
            let req = RangeRequest {
                key: r.key.as_bytes().to_vec(),
                range_end: r.end.as_bytes().to_vec(),
                serializable: r.serializable,
                ..RangeRequest::default()
            };
            while let Some((_, t0)) = plan.next().await {
                let res = client.range(&req).await.map(drop);
                done(t0, res.map_err(|s| s.to_string()), None);
            }
        }
        Command::TxnMixed(m) => {
            let mut rng = fastrand::Rng::with_seed(seed);
            let read_p = m.rw_ratio / (1.0 + m.rw_ratio);
            let read = RangeRequest {
                key: m.key.clone(),
                range_end: m.end.clone(),
                limit: m.limit,
                serializable: m.serializable,
                ..RangeRequest::default()
            };
            while let Some((n, t0)) = plan.next().await {
                let is_read = rng.f64() < read_p;
                let op = if is_read {
                    stm::op_range(read.clone())
                } else {
                    // etcd: binary.PutVarint(k, i % keySpaceSize).
                    RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: m.write_key(n),
                            value: plan.value.clone(),
                            ..PutRequest::default()
                        })),
                    }
                };
                let req = TxnRequest {
                    success: vec![op],
                    ..TxnRequest::default()
                };
                let r = client.txn(&req).await.map(drop).map_err(|s| s.to_string());
                done(t0, r, Some(if is_read { "read" } else { "write" }));
            }
        }
        Command::Stm(a) => {
            let mut rng = fastrand::Rng::with_seed(seed);
            while let Some((_, t0)) = plan.next().await {
                let keys = stm::stm_keys(&mut rng, a.keys, a.keys_per_txn);
                let r = match stm::stm_txn(&client, a, &keys, &plan.value).await {
                    Ok(retries) => {
                        if retries > 0 {
                            rec.borrow_mut().count("stm_retries", retries);
                        }
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                };
                done(t0, r, None);
            }
        }
    }
}
