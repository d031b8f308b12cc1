//! Online defrag through the real etcdctl 3.5.1, side by side with real
//! etcd 3.5.1: `etcdctl defrag` prints the same thing, `etcdctl endpoint
//! status` shows dbSize shrinking after put + delete + compact + defrag,
//! and a python-etcd3 writer keeps getting acknowledged puts while ferrocd
//! defragments (etcd blocks every write for the duration: etcd#9222). After
//! a restart every acknowledged key is still there.
//!
//! The load: `tests/python/defrag_load.py` (`fill`: 20 000 puts of 1 KiB in
//! txns, every other key deleted; `write`: one put at a time, each ack
//! logged with its start and end time). The defrag window is the wall time
//! of the `etcdctl defrag` process; acks that both started and ended inside
//! it were served while the file was being rewritten. The numbers are
//! printed (`[defrag] ...`) for BENCHMARKS.md; `DEFRAG_KEYS` changes the
//! fill size.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::{strings, subject_kind, CtlOutput, Kind, Server};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/defrag_load.py")
}

fn python(args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.arg(script())
        .args(args)
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python");
    c
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn ok(out: &CtlOutput, what: &str) -> String {
    assert_eq!(
        out.code,
        0,
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(dbSize, dbSizeInUse)` from `etcdctl endpoint status -w json`.
fn db_size(s: &Server) -> (i64, i64) {
    let out = ok(
        &s.ctl(&strings(&["endpoint", "status", "-w", "json"]), None),
        "endpoint status",
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let st = &v[0]["Status"];
    (
        st["dbSize"].as_i64().unwrap_or_else(|| panic!("{out}")),
        st["dbSizeInUse"]
            .as_i64()
            .unwrap_or_else(|| panic!("{out}")),
    )
}

struct Writer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Writer {
    fn start(endpoint: &str, acklog: &Path) -> Writer {
        let mut child = python(&[endpoint, "write", acklog.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with `pip install etcd3==0.12.0 protobuf==3.20.3 grpcio`");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut w = Writer {
            child,
            stdin,
            stdout,
        };
        assert_eq!(w.line(), "started");
        w
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        assert!(!l.is_empty(), "defrag_load.py write exited early");
        l.trim().to_string()
    }

    /// Stops the writer; `(acked, failed)`.
    fn stop(mut self) -> (u64, u64) {
        writeln!(self.stdin, "stop").unwrap();
        let l = self.line();
        let _ = self.child.wait();
        let num = |k: &str| -> u64 {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad writer answer {l:?}"))
        };
        (num("acked="), num("failed="))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One acknowledged put: key, start, end (seconds since the epoch).
struct Ack {
    key: String,
    start: f64,
    end: f64,
}

fn read_acks(path: &Path) -> Vec<Ack> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "bad ack line {l:?}");
            Ack {
                key: f[0].to_string(),
                start: f[1].parse().unwrap(),
                end: f[2].parse().unwrap(),
            }
        })
        .collect()
}

struct Outcome {
    compact_out: String,
    defrag_out: String,
    before: (i64, i64),
    after: (i64, i64),
    window: f64,
    acks_inside: usize,
    max_latency_overlapping: f64,
    acked: u64,
    failed: u64,
}

fn run(server: &mut Server, keys: usize) -> Outcome {
    let label = server.kind.label();
    let ep = server.endpoint();
    let out = python(&[&ep, "fill", &keys.to_string(), "1024"])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{label}: fill failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rev = stdout
        .trim()
        .strip_prefix("rev ")
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    let compact_out = ok(&server.ctl(&strings(&["compact", &rev]), None), "compact");
    // Let a checkpoint write the compaction to the file (ferrocd writes the
    // B-tree in the background, every 100 ms).
    std::thread::sleep(Duration::from_millis(500));
    let before = db_size(server);
    let acklog = server.dir.join("acks.log");
    let writer = Writer::start(&ep, &acklog);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = now();
    let defrag = server.ctl(&strings(&["defrag"]), None);
    let t1 = now();
    std::thread::sleep(Duration::from_millis(500));
    let (acked, failed) = writer.stop();
    let defrag_out = ok(&defrag, "defrag");
    let after = db_size(server);
    let acks = read_acks(&acklog);
    assert_eq!(acks.len() as u64, acked, "{label}: ack log vs count");
    let acks_inside = acks.iter().filter(|a| a.start >= t0 && a.end <= t1).count();
    let max_latency_overlapping = acks
        .iter()
        .filter(|a| a.end >= t0 && a.start <= t1)
        .map(|a| a.end - a.start)
        .fold(0.0, f64::max);
    let pct = |mut v: Vec<f64>, p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let during: Vec<f64> = acks
        .iter()
        .filter(|a| a.end >= t0 && a.start <= t1)
        .map(|a| (a.end - a.start) * 1e3)
        .collect();
    let outside: Vec<f64> = acks
        .iter()
        .filter(|a| !(a.end >= t0 && a.start <= t1))
        .map(|a| (a.end - a.start) * 1e3)
        .collect();
    eprintln!(
        "[defrag] {label}: keys={keys} dbSize {} -> {} (in use {} -> {}), etcdctl defrag wall {:.3} s, \
         acks inside the window {acks_inside}, longest put overlapping it {:.3} s, acked {acked}, failed {failed}; \
         put latency ms during (n={}) p50 {:.2} p99 {:.2}, outside (n={}) p50 {:.2} p99 {:.2}",
        before.0,
        after.0,
        before.1,
        after.1,
        t1 - t0,
        max_latency_overlapping,
        during.len(),
        pct(during.clone(), 0.5),
        pct(during, 0.99),
        outside.len(),
        pct(outside.clone(), 0.5),
        pct(outside, 0.99),
    );
    // Every acknowledged key survives a restart.
    server.restart();
    let keys_out = ok(
        &server.ctl(&strings(&["get", "w/", "--prefix", "--keys-only"]), None),
        "get w/",
    );
    let present: std::collections::HashSet<&str> =
        keys_out.lines().filter(|l| !l.is_empty()).collect();
    for a in &acks {
        assert!(
            present.contains(a.key.as_str()),
            "{label}: acknowledged {} lost after defrag + restart",
            a.key
        );
    }
    let fill_out = ok(
        &server.ctl(&strings(&["get", "f/", "--prefix", "--keys-only"]), None),
        "get f/",
    );
    let fill_keys = fill_out.lines().filter(|l| !l.is_empty()).count();
    assert_eq!(
        fill_keys,
        keys.div_ceil(2),
        "{label}: fill keys after restart"
    );
    Outcome {
        compact_out,
        defrag_out,
        before,
        after,
        window: t1 - t0,
        acks_inside,
        max_latency_overlapping,
        acked,
        failed,
    }
}

#[test]
fn defrag_online_matches_etcd_output_shrinks_the_file_and_does_not_block_writes() {
    let keys: usize = std::env::var("DEFRAG_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (mut etcd, mut subject) = crate::harness::start_pair(subject_kind(), &[]);
    let e = run(&mut etcd, keys);
    let s = run(&mut subject, keys);
    // etcdctl prints the same, up to the endpoint.
    let mask = |o: &str, srv: &Server| o.replace(&srv.endpoint(), "<endpoint>");
    assert_eq!(mask(&s.defrag_out, &subject), mask(&e.defrag_out, &etcd));
    assert!(
        s.defrag_out
            .starts_with("Finished defragmenting etcd member["),
        "{}",
        s.defrag_out
    );
    assert_eq!(s.compact_out, e.compact_out);
    for (o, label) in [(&e, "etcd"), (&s, subject.kind.label())] {
        assert!(
            o.after.0 < o.before.0,
            "{label}: dbSize did not shrink: {:?} -> {:?}",
            o.before,
            o.after
        );
        assert!(o.after.1 <= o.after.0, "{label}: {:?}", o.after);
    }
    if subject.kind == Kind::Ferrocd {
        // Writes went on while the file was rewritten: puts were
        // acknowledged inside the defrag window, none failed.
        assert_eq!(s.failed, 0);
        assert!(
            s.acks_inside > 0,
            "no put was acknowledged during the defrag ({:.3} s window, longest put {:.3} s, \
             {} acked in all)",
            s.window,
            s.max_latency_overlapping,
            s.acked
        );
    }
}
