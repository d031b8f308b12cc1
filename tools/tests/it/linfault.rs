//! Linearizability under faults (issue 4; etcd 3.5.0-3.5.2 fail this kind
//! of test, etcd#13766).
//!
//! A 3-member ferrocd cluster behind the fault-injecting proxies; clients
//! of a real client library (python-etcd3, `tests/python/lin_client.py`: one
//! process per member, `THREADS` threads each) issue puts, linearizable gets
//! and compare-and-swap txns on a few keys and record every operation with
//! CLOCK_MONOTONIC times, while a seeded nemesis, one fault at a time, at
//! random moments and targets (the leader half of the time):
//! * SIGKILLs a member and restarts it from its data dir after a while,
//! * SIGSTOPs a member and SIGCONTs it after a while,
//! * isolates a member through the proxies (connections refused or
//!   blackholed) and heals.
//! Afterwards every fault is undone, one final linearizable get per key is
//! added to the history (so a lost write at the very end is seen), the
//! members must converge (one leader, equal Raft indexes, identical
//! `endpoint hashkv`), and [`crate::linearizability`] must accept the
//! history. A violation prints the stuck point; histories are kept.
//!
//! `linearizable_with_snapshot_catch_up_under_faults` runs the same with
//! `--snapshot-count 200 --experimental-snapshot-catchup-entries 20`, so
//! lagging members catch up from Raft snapshots (the run prints how many
//! each member sent and received since its last start, from `/metrics`).
//!
//! Knobs: `FERROCD_LIN_SECONDS` (workload length, default 45; e.g. 600 for
//! a long run), `FERROCD_IT_SUBJECT=etcd` (the same test against a real etcd
//! 3.5.1 cluster), `FERROCD_LIN_SEED` (replays the nemesis schedule and the
//! clients' choices; timing still differs), `FERROCD_IT_KEEP_TMP=1`.
//!
//! The pipeline can fail: with `--features failpoints`,
//! `planted_stale_reads_are_caught` arms `raftcore::read_barrier::skip`
//! (linearizable reads served from local state without ReadIndex) and
//! requires the checker to reject the history of the same workload with
//! isolations of followers:
//! `cargo nextest run -p tools --features failpoints --test it planted`.
//! Measured: the checker rejects every key's history, the first stale read
//! within the first second (followers serving local state lag the leader by
//! a few ms even without a partition).
//!
//! Not covered by a planted bug here: "ack before fsync" cannot show under
//! SIGKILL (the page cache survives a process crash); engine::wal's crash
//! tests cut files at the durable position for that.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::crash::Rng;
use crate::faultcluster::FaultCluster;
use crate::harness::{etcdctl_with_timeouts, strings, subject_kind, tail, wait_timeout, Kind};
use crate::linearizability::{self, History, Operation, Verdict};
use crate::netfault::Mode;

const KEYS: usize = 4;
const THREADS: usize = 2;

fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok().filter(|v| !v.is_empty())?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// CLOCK_MONOTONIC in ns: python's `time.monotonic_ns()`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

struct Clients {
    procs: Vec<(Child, PathBuf)>,
    histories: Vec<PathBuf>,
}

impl Clients {
    fn spawn(c: &FaultCluster, dir: &Path, seconds: u64, seed: u64) -> Clients {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/lin_client.py");
        let mut procs = Vec::new();
        let mut histories = Vec::new();
        for i in 0..3 {
            let hist = dir.join(format!("history-m{}.jsonl", i + 1));
            let stderr = dir.join(format!("client-m{}.stderr", i + 1));
            let child = Command::new("python3")
                .arg(script)
                .args([
                    c.ep(i),
                    hist.display().to_string(),
                    (100 * (i + 1)).to_string(),
                    THREADS.to_string(),
                    KEYS.to_string(),
                    seconds.to_string(),
                    (seed + i as u64).to_string(),
                ])
                .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run python3 ({e}); this test needs python3 with \
                         `pip install etcd3==0.12.0 protobuf==3.20.3 grpcio`"
                    )
                });
            procs.push((child, stderr));
            histories.push(hist);
        }
        Clients { procs, histories }
    }

    /// Waits for every client process to finish its run.
    fn wait(&mut self, timeout: Duration) {
        for (child, stderr) in &mut self.procs {
            let st = wait_timeout(child, timeout).unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "lin_client.py did not finish within {timeout:?}\n{}",
                    tail(stderr, 30)
                )
            });
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                use std::io::Read;
                let _ = o.read_to_string(&mut out);
            }
            assert!(
                st.success() && out.starts_with("done "),
                "lin_client.py failed ({st}): {out}\n---- stderr ----\n{}",
                tail(stderr, 40)
            );
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for (child, _) in &mut self.procs {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[derive(Default, Debug)]
struct Stats {
    ops: usize,
    ok: usize,
    indeterminate: usize,
    cas_ok: usize,
    cas_failed: usize,
    gets: usize,
}

/// Reads the clients' JSON-lines histories (call lines, then ret lines; a
/// call without a ret is indeterminate).
fn load_history(paths: &[PathBuf], history: &mut History, stats: &mut Stats) {
    for p in paths {
        let f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
        let mut calls: HashMap<(u64, u64), Value> = HashMap::new();
        let mut done: Vec<(Value, Value)> = Vec::new();
        for (n, line) in BufReader::new(f).lines().enumerate() {
            let line = line.expect("read history");
            // A client killed mid-write leaves a torn last line at worst.
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                panic!("{}:{}: not JSON: {line:?}", p.display(), n + 1);
            };
            let id = (v["client"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
            match v["ev"].as_str() {
                Some("call") => {
                    calls.insert(id, v);
                }
                Some("ret") => {
                    let call = calls
                        .remove(&id)
                        .unwrap_or_else(|| panic!("{}: ret without call {id:?}", p.display()));
                    done.push((call, v));
                }
                other => panic!("{}: unknown event {other:?}", p.display()),
            }
        }
        for call in calls.into_values() {
            done.push((call, Value::Null));
        }
        for (call, ret) in done {
            let s = |v: &Value| v.as_str().map(String::from);
            let ret_ns = ret["ret"].as_u64();
            let kind = match call["op"].as_str() {
                Some("get") => {
                    stats.gets += 1;
                    linearizability::Kind::Get {
                        result: s(&ret["result"]),
                    }
                }
                Some("put") => linearizability::Kind::Put {
                    value: s(&call["value"]).expect("put value"),
                },
                Some("cas") => {
                    let succeeded = ret["succeeded"].as_bool();
                    if ret_ns.is_some() {
                        match succeeded {
                            Some(true) => stats.cas_ok += 1,
                            _ => stats.cas_failed += 1,
                        }
                    }
                    linearizability::Kind::Cas {
                        expected: s(&call["expected"]).expect("cas expected"),
                        new: s(&call["value"]).expect("cas value"),
                        succeeded,
                    }
                }
                other => panic!("unknown op {other:?}"),
            };
            stats.ops += 1;
            if ret_ns.is_some() {
                stats.ok += 1;
            } else {
                stats.indeterminate += 1;
            }
            history.push(Operation {
                client: call["client"].as_u64().unwrap(),
                key: s(&call["key"]).unwrap(),
                kind,
                call: call["call"].as_u64().unwrap(),
                ret: ret_ns,
            });
        }
    }
}

// ---------------------------------------------------------------------------
// The nemesis
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Faults {
    /// Kills, stops and partitions, on any member.
    All,
    /// Partitions of followers only (the planted stale-read bug shows there).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    IsolateFollowers,
}

/// The member every member agrees leads, if they do right now.
fn current_leader(c: &FaultCluster) -> Option<usize> {
    let mut leader = None;
    for i in 0..3 {
        let st = c.status(i)?;
        if st.leader == 0 {
            return None;
        }
        if st.id == st.leader {
            leader = Some(i);
        }
    }
    leader
}

/// Runs faults until `until`; returns counts of (kills, stops, isolations).
fn nemesis(c: &mut FaultCluster, rng: &mut Rng, faults: Faults, until: Instant) -> [usize; 3] {
    let mut done = [0usize; 3];
    sleep_ms(1500);
    while Instant::now() + Duration::from_secs(3) < until {
        c.assert_alive();
        let leader = current_leader(c);
        let target = match (faults, leader) {
            (Faults::IsolateFollowers, Some(l)) => (l + 1 + rng.range(0, 1) as usize) % 3,
            (Faults::IsolateFollowers, None) => {
                sleep_ms(200);
                continue;
            }
            (Faults::All, Some(l)) if rng.range(0, 1) == 0 => l,
            (Faults::All, _) => rng.range(0, 2) as usize,
        };
        let what = match faults {
            Faults::All => rng.range(0, 2),
            Faults::IsolateFollowers => 2,
        };
        let is_leader = leader == Some(target);
        match what {
            0 => {
                let down = rng.range(200, 2500);
                eprintln!(
                    "[lin] SIGKILL m{} (leader: {is_leader}), restart after {down} ms",
                    target + 1
                );
                c.kill9(target);
                sleep_ms(down);
                c.spawn(target);
            }
            1 => {
                let down = rng.range(300, 3000);
                eprintln!(
                    "[lin] SIGSTOP m{} (leader: {is_leader}) for {down} ms",
                    target + 1
                );
                c.sigstop(target);
                sleep_ms(down);
                c.sigcont(target);
            }
            _ => {
                let down = rng.range(800, 3500);
                let mode = if rng.range(0, 1) == 0 {
                    Mode::Refuse
                } else {
                    Mode::Blackhole
                };
                eprintln!(
                    "[lin] isolate m{} (leader: {is_leader}, {mode:?}) for {down} ms",
                    target + 1
                );
                c.net.isolate(target, mode);
                sleep_ms(down);
                c.net.heal();
            }
        }
        done[what as usize] += 1;
        // Let the cluster recover a little before the next fault (a second
        // fault on top of a member still catching up can cost the quorum;
        // that is allowed, only slower).
        sleep_ms(rng.range(500, 2500));
    }
    done
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

struct Outcome {
    verdict: Verdict,
    stats: Stats,
    faults: [usize; 3],
    dir: PathBuf,
}

/// `violation_expected`: a planted bug; keep the data only otherwise.
fn run(
    faults: Faults,
    envs: &[(&str, &str)],
    extra: &[&str],
    seconds: u64,
    tag: &str,
    violation_expected: bool,
) -> Outcome {
    let seed = env_num("FERROCD_LIN_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000_000
    });
    eprintln!("[lin] {tag}: seed {seed} (replay with FERROCD_LIN_SEED={seed}), {seconds} s");
    let mut rng = Rng(seed);
    let kind = if envs.is_empty() && extra.is_empty() {
        subject_kind()
    } else {
        Kind::Ferrocd
    };
    eprintln!("[lin] {tag}: cluster of {}", kind.label());
    let mut c = FaultCluster::start_with(kind, envs, extra);
    c.wait_converged(&[0, 1, 2], Duration::from_secs(60));
    let dir = c.root.join("histories");
    fs::create_dir_all(&dir).unwrap();

    let mut clients = Clients::spawn(&c, &dir, seconds, seed);
    let until = Instant::now() + Duration::from_secs(seconds);
    let counts = nemesis(&mut c, &mut rng, faults, until);
    // Undo everything; let the clients finish.
    c.net.heal();
    clients.wait(Duration::from_secs(seconds + 60));
    c.assert_alive();

    // Converged: one leader, equal Raft indexes, identical key spaces.
    c.wait_converged(&[0, 1, 2], Duration::from_secs(60));
    c.wait_same_hashkv(Duration::from_secs(30));

    let mut history = History::default();
    let mut stats = Stats::default();
    load_history(&clients.histories, &mut history, &mut stats);
    // Final linearizable reads, one per key, on rotating members.
    for k in 0..KEYS {
        let key = format!("lin/{k}");
        let call = monotonic_ns();
        let out = etcdctl_with_timeouts(
            Some(&c.ep(k % 3)),
            &strings(&["get", &key, "-w", "json"]),
            None,
            "10s",
            "2s",
        );
        let ret = monotonic_ns();
        assert_eq!(
            out.code,
            0,
            "final get {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("get json");
        let result = v["kvs"].get(0).map(|kv| {
            let b64 = kv["value"].as_str().expect("value");
            String::from_utf8(base64_decode(b64)).expect("utf-8 value")
        });
        history.push(Operation {
            client: 9999,
            key,
            kind: linearizability::Kind::Get { result },
            call,
            ret: Some(ret),
        });
    }
    let snapshots: Vec<(f64, f64)> = (0..3)
        .map(|i| {
            (
                c.metric_sum(i, "etcd_network_snapshot_send_success"),
                c.metric_sum(i, "etcd_network_snapshot_receive_success"),
            )
        })
        .collect();
    eprintln!("[lin] {tag}: Raft snapshots (sent, received) by member since its last start: {snapshots:?}");
    let started = Instant::now();
    let verdict = linearizability::check(&history);
    eprintln!(
        "[lin] {tag}: {} faults (kill, stop, isolate) = {counts:?}; {stats:?}; checked in {:?}: {}",
        counts.iter().sum::<usize>(),
        started.elapsed(),
        if verdict.is_linearizable() {
            "linearizable".to_string()
        } else {
            verdict.to_string()
        }
    );
    let keep = c.root.clone();
    if verdict.is_linearizable() == violation_expected {
        // Keep the histories and logs for inspection.
        c.keep = true;
    }
    Outcome {
        verdict,
        stats,
        faults: counts,
        dir: keep,
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &ch in s.as_bytes() {
        if ch == b'=' {
            break;
        }
        let v = T.iter().position(|&t| t == ch).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn linearizable_under_kills_stops_and_partitions() {
    let seconds = env_num("FERROCD_LIN_SECONDS").unwrap_or(45);
    let o = run(Faults::All, &[], &[], seconds, "faults", false);
    assert!(
        o.verdict.is_linearizable(),
        "history not proven linearizable (kept in {}):\n{}",
        o.dir.display(),
        o.verdict
    );
    // The run must have exercised something.
    assert!(
        o.faults.iter().sum::<usize>() >= 3,
        "too few faults: {:?}",
        o.faults
    );
    assert!(
        o.stats.ok >= 200 && o.stats.cas_ok >= 5 && o.stats.gets >= 50,
        "too little completed work to mean anything: {:?}",
        o.stats
    );
}

/// The same with tiny Raft logs: a snapshot every 200 entries keeping 20
/// for catch-up, so members that were killed, stopped or cut off catch up
/// from a snapshot image of the leader's B-tree instead of log entries.
#[test]
fn linearizable_with_snapshot_catch_up_under_faults() {
    let seconds = env_num("FERROCD_LIN_SECONDS").unwrap_or(45);
    let o = run(
        Faults::All,
        &[],
        &[
            "--snapshot-count",
            "200",
            "--experimental-snapshot-catchup-entries",
            "20",
        ],
        seconds,
        "faults + snapshots",
        false,
    );
    assert!(
        o.verdict.is_linearizable(),
        "history not proven linearizable (kept in {}):\n{}",
        o.dir.display(),
        o.verdict
    );
    assert!(
        o.stats.ok >= 200 && o.stats.cas_ok >= 5 && o.stats.gets >= 50,
        "too little completed work to mean anything: {:?}",
        o.stats
    );
}

/// The planted bug (linearizable reads served locally, no ReadIndex) must
/// be caught by the same workload and checker.
#[cfg(feature = "failpoints")]
#[test]
fn planted_stale_reads_are_caught() {
    let seconds = env_num("FERROCD_LIN_SECONDS").unwrap_or(30);
    let o = run(
        Faults::IsolateFollowers,
        &[("FAILPOINTS", "raftcore::read_barrier::skip=return")],
        &[],
        seconds,
        "planted stale reads",
        true,
    );
    assert!(
        o.verdict.is_violation(),
        "the checker did not flag the planted stale-read bug: {} ({:?}, faults {:?})",
        o.verdict,
        o.stats,
        o.faults
    );
}

#[test]
fn base64_decoder() {
    assert_eq!(base64_decode("MTAxLTQy"), b"101-42");
    assert_eq!(base64_decode("YQ=="), b"a");
    assert_eq!(base64_decode("YWI="), b"ab");
}
