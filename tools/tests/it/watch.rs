//! Watch through the real etcdctl 3.5.1: the same sequence against a fresh
//! real etcd 3.5.1 and a fresh ferrocd, watch output compared after masking
//! IDs and term (`mask`).
//!
//! Live watches run as background `etcdctl watch` processes. A watch is
//! known to be established once it printed a progress notification: both
//! servers run with `--experimental-watch-progress-notify-interval=100ms`
//! and the watches pass `--progress-notify`. That also tests progress
//! notifications; their timing differs between runs, so the comparison drops
//! them (lines `progress notify: N` and the JSON of an empty response) after
//! checking that a notification with the final store revision arrived.
//! Every wait is bounded; a watch that never shows what it should fails
//! the test with both outputs.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::compare::{compare_scenario, ctl};
use crate::harness::{etcdctl_bin, exit_code, start_pair, subject_kind, CtlOutput, Server};
use crate::mask::{mask_client_noise, mask_text_ids};

const PROGRESS_FLAG: &str = "--experimental-watch-progress-notify-interval=100ms";
/// Upper bound for any one wait on a watch's output.
const WAIT: Duration = Duration::from_secs(15);

/// A background `etcdctl watch`.
struct BgWatch {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn pump(mut r: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl BgWatch {
    fn start(server: &Server, args: &[&str]) -> BgWatch {
        let mut cmd = Command::new(etcdctl_bin());
        cmd.env_clear();
        for var in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", server.endpoint()))
            .arg("--dial-timeout=3s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn etcdctl watch");
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stdout.take().unwrap(), out.clone()),
            pump(child.stderr.take().unwrap(), err.clone()),
        ];
        BgWatch {
            stdin: child.stdin.take(),
            child,
            out,
            err,
            readers,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits until stdout contains `needle`; false after `WAIT`.
    fn wait_for(&self, needle: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.stdout().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to etcdctl");
        stdin.flush().expect("flush");
    }

    fn stop(mut self) -> CtlOutput {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait etcdctl");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stdout = self.out.lock().unwrap().clone();
        let stderr = self.err.lock().unwrap().clone();
        CtlOutput {
            code: exit_code(status),
            stdout,
            stderr,
        }
    }
}

/// Drops progress notifications (their number depends on timing).
fn without_progress(stdout: &str) -> String {
    stdout
        .lines()
        .filter(|l| {
            let empty = |events: &str| {
                l.contains(&format!(
                    r#""Events":{events},"CompactRevision":0,"Canceled":false,"Created":false"#
                ))
            };
            !l.starts_with("progress notify: ") && !empty("[]") && !empty("null")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// One background watch of a live scenario.
struct Spec {
    args: &'static [&'static str],
    /// Printed once everything the steps cause has arrived.
    done: &'static str,
}

/// What one server produced: masked watch outputs, and problems seen.
struct Run {
    outputs: Vec<String>,
    raw: Vec<String>,
    problems: Vec<String>,
}

/// Setup, then the watches (each established), then the steps, then waits
/// until every watch printed its `done` needle and a progress notification
/// with the final revision.
fn live_run(server: &Server, setup: &[Vec<String>], specs: &[Spec], steps: &[Vec<String>]) -> Run {
    let mut problems = Vec::new();
    for s in setup {
        let o = run_step(server, s);
        if o.code != 0 {
            problems.push(format!("setup {s:?} failed: {o:?}"));
        }
    }
    let mut watches = Vec::new();
    for spec in specs {
        let w = BgWatch::start(server, spec.args);
        if !w.wait_for("progress notify: ") {
            problems.push(format!("{:?}: no progress notification", spec.args));
        }
        watches.push(w);
    }
    for s in steps {
        let o = run_step(server, s);
        if o.code != 0 {
            problems.push(format!("step {s:?} failed: {o:?}"));
        }
    }
    let rev = server.ctl(&crate::harness::strings(&["get", "x", "-w", "json"]), None);
    let rev: serde_json::Value = serde_json::from_slice(&rev.stdout).unwrap_or_default();
    let rev = rev["header"]["revision"].as_i64().unwrap_or(-1);
    for (spec, w) in specs.iter().zip(&watches) {
        if !w.wait_for(spec.done) {
            problems.push(format!("{:?}: never printed {:?}", spec.args, spec.done));
        }
        // A quiet watcher is told the final revision (after the tick that
        // follows its last events, which etcd elides).
        let last = format!("progress notify: {rev}\n");
        if !w.wait_for(&last) {
            problems.push(format!("{:?}: no {last:?}", spec.args));
        }
    }
    let mut outputs = Vec::new();
    let mut raw = Vec::new();
    for w in watches {
        let o = w.stop();
        let text = String::from_utf8_lossy(&mask_text_ids(&o.stdout)).into_owned();
        let err =
            String::from_utf8_lossy(&mask_client_noise(&o.stderr, &server.endpoint())).into_owned();
        raw.push(format!("{text}\n[stderr]\n{err}"));
        outputs.push(without_progress(&text));
    }
    Run {
        outputs,
        raw,
        problems,
    }
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A step that runs `etcdctl txn` with `body` on stdin.
fn txn_step(body: &str) -> Vec<String> {
    vec![TXN.to_string(), body.to_string()]
}
const TXN: &str = "@txn";

fn run_step(server: &Server, step: &[String]) -> CtlOutput {
    match step {
        [marker, body] if marker == TXN => server.ctl(&args(&["txn"]), Some(body.as_bytes())),
        _ => server.ctl(step, None),
    }
}

/// Runs a live scenario on etcd and the subject and compares.
fn compare_live(name: &str, setup: &[Vec<String>], specs: &[Spec], steps: &[Vec<String>]) {
    let (etcd, subject) = start_pair(subject_kind(), &[PROGRESS_FLAG]);
    let (r, s) = std::thread::scope(|sc| {
        let r = sc.spawn(|| live_run(&etcd, setup, specs, steps));
        let s = sc.spawn(|| live_run(&subject, setup, specs, steps));
        (r.join().unwrap(), s.join().unwrap())
    });
    let mut report = String::new();
    if !r.problems.is_empty() {
        report.push_str(&format!("etcd (the scenario is wrong): {:?}\n", r.problems));
    }
    if !s.problems.is_empty() {
        report.push_str(&format!("{}: {:?}\n", subject.kind.label(), s.problems));
    }
    for (i, spec) in specs.iter().enumerate() {
        if r.outputs[i] != s.outputs[i] {
            report.push_str(&format!(
                "watch {:?} differs\n--- etcd\n{}--- {}\n{}",
                spec.args,
                r.outputs[i],
                subject.kind.label(),
                s.outputs[i]
            ));
        }
    }
    if !report.is_empty() || std::env::var_os("FERROCD_IT_DUMP").is_some() {
        let mut dump = String::new();
        for (i, spec) in specs.iter().enumerate() {
            dump.push_str(&format!(
                "== {:?}\n-- etcd (raw)\n{}\n-- subject (raw)\n{}\n",
                spec.args, r.raw[i], s.raw[i]
            ));
        }
        if report.is_empty() {
            eprintln!("scenario {name}\n{dump}");
        } else {
            panic!("scenario {name}:\n{report}\n{dump}");
        }
    }
}

#[test]
fn live_watches_see_puts_txns_and_deletes_like_etcd() {
    let setup = [args(&["put", "k0", "zero"])];
    let specs = [
        // prefix, previous values, JSON (headers, revisions, event grouping)
        Spec {
            args: &[
                "watch",
                "--prefix",
                "k",
                "--prev-kv",
                "--progress-notify",
                "-w",
                "json",
            ],
            done: r#""key":"azk=""#, // "k9"
        },
        // one key, simple output
        Spec {
            args: &["watch", "k1", "--progress-notify"],
            done: "DELETE\nk1\n",
        },
        // a range [k2, k4)
        Spec {
            args: &["watch", "k2", "k4", "--progress-notify", "-w", "json"],
            done: r#""type":1,"kv":{"key":"azM=""#, // delete of "k3"
        },
        // every key (from-key "\0"), previous values, simple output
        Spec {
            args: &["watch", "--prefix", "", "--prev-kv", "--progress-notify"],
            done: "PUT\nk9\nend\n",
        },
    ];
    let steps = [
        args(&["put", "k1", "one"]),
        args(&["put", "k2", "two"]),
        args(&["put", "other", "x"]),
        args(&["put", "k1", "uno"]),
        // one txn: all its events in one response, in order
        txn_step("\nput k3 three\nput k2 deux\nput zz y\n\n\n"),
        args(&["del", "k", "--prefix"]),
        args(&["put", "k9", "end"]),
    ];
    compare_live("live", &setup, &specs, &steps);
}

#[test]
fn history_from_a_revision_matches_etcd() {
    let setup = [
        args(&["put", "a", "1"]),
        args(&["put", "b", "1"]),
        args(&["put", "a", "2"]),
        txn_step("\nput a 3\nput b 2\nput c 1\n\n\n"),
        args(&["del", "b"]),
        args(&["put", "zz", "no"]),
    ];
    let specs = [
        Spec {
            args: &[
                "watch",
                "--rev",
                "2",
                "--prefix",
                "",
                "-w",
                "json",
                "--progress-notify",
            ],
            done: r#""key":"eno=""#, // "zz"
        },
        Spec {
            args: &[
                "watch",
                "--rev",
                "3",
                "a",
                "c",
                "--prev-kv",
                "--progress-notify",
            ],
            // [a, c): not c; everything from revision 3 on, then live
            done: "a\nfuture\n",
        },
        // a future start revision: nothing until the store gets there
        Spec {
            args: &[
                "watch",
                "--rev",
                "9",
                "a",
                "--progress-notify",
                "-w",
                "json",
            ],
            done: r#""value":"ZnV0dXJl""#, // "future"
        },
    ];
    let steps = [
        args(&["put", "a", "now"]),    // 8: not seen by the --rev 9 watch
        args(&["put", "a", "future"]), // 9
    ];
    compare_live("history", &setup, &specs, &steps);
}

#[test]
fn interactive_progress_request_is_answered_like_etcd() {
    let (etcd, subject) = start_pair(subject_kind(), &[]);
    let run = |server: &Server| {
        server.ctl(&args(&["put", "a", "1"]), None);
        let mut w = BgWatch::start(server, &["watch", "-i"]);
        w.send_line("watch a");
        // The create is asynchronous; a progress request before it would
        // have no watcher to be delivered to. Retry until one arrives.
        let deadline = Instant::now() + WAIT;
        let mut ok = false;
        while Instant::now() < deadline {
            w.send_line("progress");
            std::thread::sleep(Duration::from_millis(200));
            if w.stdout().contains("progress notify: 2\n") {
                ok = true;
                break;
            }
        }
        server.ctl(&args(&["put", "a", "2"]), None);
        let got_event = w.wait_for("PUT\na\n2\n");
        let out = w.stop();
        (
            ok,
            got_event,
            without_progress(&String::from_utf8_lossy(&out.stdout)),
        )
    };
    let (r, s) = std::thread::scope(|sc| {
        let r = sc.spawn(|| run(&etcd));
        let s = sc.spawn(|| run(&subject));
        (r.join().unwrap(), s.join().unwrap())
    });
    assert_eq!(r, (true, true, "PUT\na\n2\n".to_string()), "etcd");
    assert_eq!(s, r, "{}", subject.kind.label());
}

#[test]
fn watch_from_a_compacted_revision_is_canceled_like_etcd() {
    compare_scenario(
        "watch_compacted",
        &[],
        &[
            ctl(&["put", "a", "1"]).ok(),
            ctl(&["put", "a", "2"]).ok(),
            ctl(&["put", "a", "3"]).ok(),
            ctl(&["compaction", "3"]).ok(),
            // etcdctl exits (code 5, ExitInterrupted) once the server
            // cancels the watch.
            ctl(&["watch", "--rev", "2", "a"])
                .fails_with(
                    "watch was canceled (etcdserver: mvcc: required revision has been compacted)",
                )
                .code(5),
            ctl(&["watch", "--rev", "1", "a", "-w", "json"]).code(5),
            ctl(&["watch", "--rev", "2", "--prefix", "", "-w", "json"]).code(5),
        ],
    );
}
