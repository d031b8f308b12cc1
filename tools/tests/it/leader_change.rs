//! Leader changes on a 3-member cluster of the real binaries, seen through
//! real clients:
//! * a lease keeps its remaining TTL across `etcdctl move-leader` and a
//!   SIGKILL of the leader (etcd v3.5 gives a lease shorter than its 5 min
//!   checkpoint interval its full TTL again on every leader change,
//!   etcd#9888), and its key stays until the lease expires;
//! * a watch opened with `hasleader: true` (clientv3's WithRequireLeader,
//!   through python grpcio) is ended with etcd's "etcdserver: no leader"
//!   when its member loses the leader, as real etcd 3.5.1 does in the same
//!   scenario; a plain watch stays open; a new require-leader watch, Range
//!   and LeaseKeepAlive are refused with the same error. Likewise an open
//!   require-leader LeaseKeepAlive and v3election Observe stream are ended
//!   (etcd's stream interceptor covers every stream), a plain Observe
//!   stays open, and a new require-leader Observe is refused.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::Cluster;
use crate::harness::{subject_kind, Kind};

fn ok(c: &Cluster, i: usize, args: &[&str]) -> String {
    let (code, out) = c.ctl(i, args);
    assert_eq!(code, 0, "member {i}: etcdctl {args:?}: {out}\n{}", c.logs());
    out
}

/// `lease timetolive` remaining seconds, asked of member `i`.
fn remaining(c: &Cluster, i: usize, id: &str) -> i64 {
    let out = ok(c, i, &["lease", "timetolive", id, "-w", "json"]);
    let v: Value = serde_json::from_str(&out).expect("timetolive json");
    v["ttl"]
        .as_i64()
        .unwrap_or_else(|| panic!("no ttl in {out}"))
}

fn key_count(c: &Cluster, i: usize, key: &str) -> i64 {
    let out = ok(c, i, &["get", key, "-w", "json", "--consistency=s"]);
    let v: Value = serde_json::from_str(&out).expect("get json");
    v["count"].as_i64().unwrap_or(0)
}

const TTL: i64 = 20;
/// Slack for etcdctl round trips, rounding up to whole seconds and the new
/// leader's grace of one election timeout (0.5 s here).
const SLACK: i64 = 3;

#[test]
fn lease_remaining_ttl_survives_move_leader_and_a_killed_leader() {
    let mut c = Cluster::start_kind(subject_kind(), &[]);
    let leader = c.wait_converged(&[0, 1, 2]);
    let out = ok(&c, leader, &["lease", "grant", &TTL.to_string()]);
    let granted = Instant::now();
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    ok(&c, leader, &["put", &format!("--lease={id}"), "held", "v"]);
    let left = |at: Instant| TTL - i64::try_from(at.duration_since(granted).as_secs()).unwrap_or(0);

    // A third of the TTL passes; then leadership moves to a follower.
    std::thread::sleep(Duration::from_secs(7));
    let target = (leader + 1) % 3;
    let target_id = c.status(target).expect("status").0;
    let (code, out) = c.ctl(leader, &["move-leader", &format!("{target_id:x}")]);
    assert_eq!(code, 0, "move-leader: {out}\n{}", c.logs());
    let new_leader = c.wait_converged(&[0, 1, 2]);
    assert_eq!(new_leader, target);
    let now = Instant::now();
    let r1 = remaining(&c, new_leader, &id);
    eprintln!(
        "[it] after move-leader: remaining {r1} s, expected about {}",
        left(now)
    );
    assert!(
        r1 <= left(now) + SLACK && r1 >= left(now) - SLACK,
        "after move-leader the lease has {r1} s left; granted {TTL} s about {:?} ago \
         (reset to its full TTL?)\n{}",
        now.duration_since(granted),
        c.logs()
    );
    // Asked through a follower (forwarded to the leader): the same.
    let r1f = remaining(&c, leader, &id);
    assert!(
        r1f <= r1 && r1f >= r1 - SLACK,
        "via follower: {r1f} vs {r1}"
    );

    // SIGKILL the new leader: the next one starts the lease from what was
    // left at the handover's checkpoint, not from the full TTL.
    std::thread::sleep(Duration::from_secs(2));
    c.kill(new_leader);
    let rest: Vec<usize> = (0..3).filter(|&i| i != new_leader).collect();
    let third = c.wait_converged(&rest);
    let now = Instant::now();
    let r2 = remaining(&c, third, &id);
    eprintln!("[it] after SIGKILL of the leader: remaining {r2} s (before: {r1} s)");
    assert!(
        r2 <= r1 + SLACK && r2 < TTL - SLACK,
        "after the leader was killed the lease has {r2} s left (had {r1} s, full TTL {TTL} s)\n{}",
        c.logs()
    );
    // The key stays while the lease lives, then goes with it.
    assert_eq!(key_count(&c, third, "held"), 1, "key gone too early");
    let expires = now + Duration::from_secs(u64::try_from(r2).unwrap_or(0));
    let deadline = expires + Duration::from_secs(10);
    loop {
        let n = key_count(&c, third, "held");
        let t = Instant::now();
        if n == 0 {
            assert!(
                t + Duration::from_secs(u64::try_from(SLACK).unwrap_or(0)) >= expires,
                "key removed {:?} before the lease's end",
                expires - t
            );
            break;
        }
        assert!(t < deadline, "the lease's key outlived it\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ok(&c, rest[0], &["lease", "timetolive", &id]);
    assert!(out.contains("already expired"), "{out}");
}

fn run_require_leader(kind: Kind) -> Value {
    let mut c = Cluster::start_kind(kind, &[]);
    c.wait_converged(&[0, 1, 2]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/require_leader.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(c.ep(0))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 require_leader.py");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "READY", "{}: {first}\n{}", kind.label(), c.logs());
    c.kill(1);
    c.kill(2);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"GO\n").expect("write");
    stdin.flush().expect("flush");
    let out = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = child.wait();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{}: {e}: {out:?}", kind.label()))
}

#[test]
fn require_leader_watch_ends_with_no_leader_like_etcd() {
    let (r, s) = std::thread::scope(|sc| {
        let r = sc.spawn(|| run_require_leader(Kind::Etcd));
        let s = sc.spawn(|| run_require_leader(subject_kind()));
        (r.join().unwrap(), s.join().unwrap())
    });
    eprintln!("[it] require-leader: etcd {r}\n[it] subject {s}");
    let shape = |v: &Value| {
        let streams = (
            v["require_leader"]["end"].clone(),
            v["require_leader"]["code"].clone(),
            v["require_leader"]["details"].clone(),
            v["plain"]["end"].clone(),
            v["new_require_leader"]["end"].clone(),
            v["new_require_leader"]["code"].clone(),
            v["new_require_leader"]["details"].clone(),
            v["new_require_leader"]["created"].clone(),
            v["range"].clone(),
            v["keepalive"].clone(),
            v["open_keepalive"].clone(),
        );
        let observe = (
            v["observe"].clone(),
            v["plain_observe"]["end"].clone(),
            v["new_observe"].clone(),
        );
        (streams, observe)
    };
    let no_leader = serde_json::json!({
        "end": "error", "code": "UNAVAILABLE", "details": "etcdserver: no leader"
    });
    let want_streams = (
        Value::from("error"),
        Value::from("UNAVAILABLE"),
        Value::from("etcdserver: no leader"),
        Value::from("open"),
        Value::from("error"),
        Value::from("UNAVAILABLE"),
        Value::from("etcdserver: no leader"),
        Value::from(false),
        no_leader.clone(),
        no_leader.clone(),
        no_leader.clone(),
    );
    let want_observe = (
        no_leader,
        Value::from("open"),
        serde_json::json!({
            "end": "error", "code": "UNAVAILABLE", "details": "etcdserver: no leader",
            "seen": false
        }),
    );
    let want = (want_streams, want_observe);
    assert_eq!(shape(&r), want, "etcd (the scenario is wrong): {r}");
    assert_eq!(shape(&s), want, "subject: {s}");
}
