//! Partitions of a 3-member cluster through the fault-injecting proxies,
//! driven by the real etcdctl 3.5.1:
//!
//! * the isolated member (the leader in one variant, a follower in the
//!   other) refuses linearizable reads and writes with etcd's error, while
//!   serializable reads still answer there from its own (old) state, and
//!   `endpoint status` on it reports "etcdserver: no leader" as etcd does;
//! * the other two keep (or elect) a leader among themselves and serve
//!   writes and linearizable reads;
//! * after healing, all three converge to one leader, equal Raft indexes in
//!   `endpoint status` and identical `endpoint hashkv`, and the isolated
//!   member reads the majority's writes.
//!
//! What etcd 3.5.1 answers on the minority side (measured with these tests
//! under `FERROCD_IT_SUBJECT=etcd`): the request waits until the client's
//! deadline; etcdctl prints `Error: context deadline exceeded` (put: the
//! client's own deadline) or `Error: rpc error: code = Unknown desc =
//! context deadline exceeded` (get: the server's copy of the deadline), so
//! the tests require "context deadline exceeded" in etcdctl's error line.

use std::time::{Duration, Instant};

use crate::faultcluster::FaultCluster;
use crate::harness::{etcdctl_with_timeouts, strings, subject_kind, CtlOutput};
use crate::netfault::Mode;

fn text(o: &CtlOutput) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        o.code,
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

fn stdout(o: &CtlOutput) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// etcdctl failed the way it fails against a minority etcd member.
#[track_caller]
fn assert_minority_refusal(o: &CtlOutput, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("Error: "))
        .unwrap_or_default();
    assert!(
        o.code != 0 && line.contains("context deadline exceeded"),
        "{what} on the isolated member must fail like etcd's (\"context deadline exceeded\"):\n{}",
        text(o)
    );
}

fn partition_scenario(isolate_leader: bool, mode: Mode) {
    let kind = subject_kind();
    let c = FaultCluster::start(kind, &[]);
    let leader = c.wait_converged(&[0, 1, 2], Duration::from_secs(30));
    let o = c.ctl(leader, &["put", "k", "before"]);
    assert_eq!((o.code, stdout(&o).as_str()), (0, "OK"), "{}", text(&o));
    // Everyone has applied "before" (a linearizable read on each).
    for i in 0..3 {
        let o = c.ctl(i, &["get", "k", "--print-value-only"]);
        assert_eq!(stdout(&o), "before", "member {i}: {}", text(&o));
    }

    let victim = if isolate_leader {
        leader
    } else {
        (leader + 1) % 3
    };
    let rest: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    eprintln!(
        "[partition] {}: leader m{}, isolating m{} ({mode:?})",
        kind.label(),
        leader + 1,
        victim + 1
    );
    c.net.isolate(victim, mode);

    // The majority keeps or elects a leader among itself and serves.
    let maj_leader = c.wait_converged(&rest, Duration::from_secs(30));
    assert_ne!(maj_leader, victim);
    for (n, &i) in rest.iter().enumerate() {
        let v = format!("during-{n}");
        let o = c.ctl(i, &["put", "k", &v]);
        assert_eq!(
            (o.code, stdout(&o).as_str()),
            (0, "OK"),
            "put on majority member {i}: {}\n{}",
            text(&o),
            c.logs()
        );
        for &j in &rest {
            let o = c.ctl(j, &["get", "k", "--print-value-only"]);
            assert_eq!(stdout(&o), v, "linearizable get on majority member {j}");
        }
    }
    let latest = format!("during-{}", rest.len() - 1);

    // The minority member: no leader reported (once its election timeout
    // passed; an isolated leader steps down by check-quorum).
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = c.status(victim).unwrap_or_else(|| {
            let o = c.ctl_timeout(victim, &["endpoint", "status", "-w", "json"], "3s");
            panic!(
                "endpoint status on the isolated member: {}\n{}",
                text(&o),
                c.logs()
            )
        });
        if st.leader == 0 {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "isolated member still reports leader {:x}: {st:?}\n{}",
            st.leader,
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        st.errors,
        vec!["etcdserver: no leader".to_string()],
        "endpoint status errors on the isolated member"
    );
    // Linearizable reads and writes are refused (etcd's answer)...
    let o = c.ctl_timeout(victim, &["put", "k", "minority"], "3s");
    assert_minority_refusal(&o, "put");
    let o = c.ctl_timeout(victim, &["get", "k"], "3s");
    assert_minority_refusal(&o, "linearizable get");
    let o = etcdctl_with_timeouts(
        Some(&c.ep(victim)),
        &strings(&["txn"]),
        Some(b"value(\"k\") = \"before\"\n\nput k cas\n\n\n"),
        "3s",
        "2s",
    );
    assert_minority_refusal(&o, "compare-and-swap txn");
    // ...serializable reads answer from the member's own state: the value
    // from before the partition (it cannot know the majority's writes).
    let o = c.ctl_timeout(
        victim,
        &["get", "k", "--print-value-only", "--consistency=s"],
        "3s",
    );
    assert_eq!(
        (o.code, stdout(&o).as_str()),
        (0, "before"),
        "serializable get on the isolated member: {}",
        text(&o)
    );

    // Heal: one leader, equal Raft indexes, identical key spaces.
    c.net.heal();
    let healed_leader = c.wait_converged(&[0, 1, 2], Duration::from_secs(60));
    eprintln!(
        "[partition] healed; leader m{} at term {} (majority had m{})",
        healed_leader + 1,
        c.status(healed_leader).map_or(0, |s| s.raft_term),
        maj_leader + 1
    );
    let o = c.ctl(victim, &["get", "k", "--print-value-only"]);
    assert_eq!(
        stdout(&o),
        latest,
        "linearizable get on the healed member: {}",
        text(&o)
    );
    // A write after healing reaches everyone.
    let o = c.ctl(victim, &["put", "k", "after"]);
    assert_eq!(o.code, 0, "put on the healed member: {}", text(&o));
    c.wait_converged(&[0, 1, 2], Duration::from_secs(30));
    c.wait_same_hashkv(Duration::from_secs(20));
    for i in 0..3 {
        let o = c.ctl(i, &["get", "k", "--print-value-only", "--consistency=s"]);
        assert_eq!(stdout(&o), "after", "serializable get on {i} after healing");
    }
}

#[test]
fn partition_isolated_follower_blackholed() {
    partition_scenario(false, Mode::Blackhole);
}

#[test]
fn partition_isolated_leader_refused() {
    partition_scenario(true, Mode::Refuse);
}
