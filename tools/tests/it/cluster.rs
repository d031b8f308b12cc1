//! A 3-member ferrocd cluster on loopback, driven by the real etcdctl 3.5.1:
//! one leader and equal Raft indexes, writes through any member readable
//! on all (linearizable and serializable), and failover: SIGKILL the
//! leader, a new one is elected, writes go on, the killed member restarts
//! from its data dir and catches up.
//!
//! `Cluster` is shared with other modules (`lease_failover`), which may also
//! start it with the real etcd.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    etcdctl, free_port, fresh_temp_dir, spawn_server, strings, tail, CtlOutput, Kind,
};

pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) client: u16,
    pub(crate) peer: u16,
    pub(crate) dir: PathBuf,
    pub(crate) child: Option<Child>,
}

pub(crate) struct Cluster {
    pub(crate) members: Vec<Member>,
    pub(crate) initial: String,
    bin: &'static Path,
    extra: Vec<String>,
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        Cluster::start_kind(Kind::Ferrocd, &[])
    }

    /// Three members of `kind` (ferrocd or the real etcd) with the
    /// standard flags plus `extra`.
    pub(crate) fn start_kind(kind: Kind, extra: &[&str]) -> Cluster {
        let root = fresh_temp_dir("cluster3");
        let members: Vec<Member> = ["m1", "m2", "m3"]
            .iter()
            .map(|n| Member {
                name: n.to_string(),
                client: free_port(),
                peer: free_port(),
                dir: root.join(n),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            members,
            initial,
            bin: kind.bin(),
            extra: strings(extra),
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    pub(crate) fn spawn(&mut self, i: usize) {
        let initial = self.initial.clone();
        self.spawn_with(i, &initial, "new");
    }

    /// A slot for one more member (not started), in the same temp root.
    pub(crate) fn add_slot(&mut self, name: &str) -> usize {
        let root = self.members[0].dir.parent().expect("root").to_path_buf();
        self.members.push(Member {
            name: name.to_string(),
            client: free_port(),
            peer: free_port(),
            dir: root.join(name),
            child: None,
        });
        self.members.len() - 1
    }

    /// Starts member `i` with `--initial-cluster initial` and
    /// `--initial-cluster-state state`.
    pub(crate) fn spawn_with(&mut self, i: usize, initial: &str, state: &str) {
        let m = &self.members[i];
        std::fs::create_dir_all(&m.dir).expect("member dir");
        let c = format!("http://127.0.0.1:{}", m.client);
        let p = format!("http://127.0.0.1:{}", m.peer);
        let args = strings(&[
            "--name",
            &m.name,
            "--data-dir",
            &m.dir.join("data").display().to_string(),
            "--listen-client-urls",
            &c,
            "--advertise-client-urls",
            &c,
            "--listen-peer-urls",
            &p,
            "--initial-advertise-peer-urls",
            &p,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            "it-cluster",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ]);
        let args = [args, self.extra.clone()].concat();
        let child = spawn_server(self.bin, &args, &m.dir, &m.dir.join("server.log"));
        self.members[i].child = Some(child);
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn ep(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client)
    }

    pub(crate) fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "---- {} ----\n{}",
                    m.name,
                    tail(&m.dir.join("server.log"), 15)
                )
            })
            .collect()
    }

    /// `endpoint status -w json` of member `i`: (member_id, leader, raft_index, raft_term).
    pub(crate) fn status(&self, i: usize) -> Option<(u64, u64, u64, u64)> {
        let out = etcdctl(
            Some(&self.ep(i)),
            &strings(&["endpoint", "status", "-w", "json"]),
            None,
        );
        if out.code != 0 {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let s = &v.get(0)?["Status"];
        Some((
            s["header"]["member_id"].as_u64()?,
            s["leader"].as_u64()?,
            s["raftIndex"].as_u64()?,
            s["raftTerm"].as_u64()?,
        ))
    }

    /// Waits until the given members agree on one leader among them and on
    /// the Raft index; returns the leader's position.
    pub(crate) fn wait_converged(&self, live: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st: Vec<_> = live.iter().map(|&i| self.status(i)).collect();
            if st.iter().all(Option::is_some) {
                let st: Vec<_> = st.into_iter().flatten().collect();
                let leader = st[0].1;
                let agreed = leader != 0
                    && st.iter().all(|s| s.1 == leader)
                    && st.iter().all(|s| s.2 == st[0].2);
                let pos = st.iter().position(|s| s.0 == leader);
                if let (true, Some(p)) = (agreed, pos) {
                    return live[p];
                }
            }
            assert!(
                Instant::now() < deadline,
                "members {live:?} did not converge:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn ctl(&self, i: usize, args: &[&str]) -> (i32, String) {
        let out = etcdctl(Some(&self.ep(i)), &strings(args), None);
        (out.code, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ctl`, retried while member `i` answers "unhealthy cluster" (see
    /// [`ctl_when_healthy`]).
    pub(crate) fn ctl_when_healthy(&self, i: usize, args: &[&str]) -> (i32, String) {
        let out = ctl_when_healthy(&self.ep(i), args);
        (out.code, String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// etcdctl on `ep`, retried while the member answers "etcdserver:
/// unhealthy cluster": like etcd, a member lets membership change only once
/// every voter has been reachable for 5 s, which right after start-up (or a
/// restart) is not yet the case. An operator retries the same way.
pub(crate) fn ctl_when_healthy(ep: &str, args: &[&str]) -> CtlOutput {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let out = etcdctl(Some(ep), &strings(args), None);
        if !String::from_utf8_lossy(&out.stderr).contains("etcdserver: unhealthy cluster")
            || Instant::now() > deadline
        {
            return out;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::env::var_os("FERROCD_IT_KEEP_TMP").is_none() {
            if let Some(m) = self.members.first() {
                if let Some(root) = m.dir.parent() {
                    let _ = std::fs::remove_dir_all(root);
                }
            }
        }
    }
}

#[test]
fn three_members_one_leader_replicate_and_fail_over() {
    let mut c = Cluster::start();
    c.wait_converged(&[0, 1, 2]);

    // A write through every member is readable on every member, both ways.
    for i in 0..3 {
        let (code, out) = c.ctl(i, &["put", &format!("k{i}"), &format!("v{i}")]);
        assert_eq!(
            (code, out.trim()),
            (0, "OK"),
            "put via member {i}:\n{}",
            c.logs()
        );
    }
    for i in 0..3 {
        for k in 0..3 {
            let key = format!("k{k}");
            let (code, out) = c.ctl(i, &["get", &key, "--print-value-only"]);
            assert_eq!(
                (code, out.trim().to_string()),
                (0, format!("v{k}")),
                "linearizable get on {i}"
            );
            let (code, out) = c.ctl(i, &["get", &key, "--print-value-only", "--consistency=s"]);
            assert_eq!(code, 0);
            // A serializable read may lag, but not for long.
            if out.trim() != format!("v{k}") {
                std::thread::sleep(Duration::from_millis(300));
                let (_, out) = c.ctl(i, &["get", &key, "--print-value-only", "--consistency=s"]);
                assert_eq!(out.trim(), format!("v{k}"), "serializable get on {i}");
            }
        }
    }
    let leader = c.wait_converged(&[0, 1, 2]);

    // member list: every member with its name, peer and client URLs, once
    // each has published itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = c.ctl((leader + 1) % 3, &["member", "list", "-w", "table"]);
        assert_eq!(code, 0);
        let complete = c.members.iter().all(|m| {
            out.lines().any(|l| {
                l.contains(&format!(" {} ", m.name))
                    && l.contains(&format!("http://127.0.0.1:{}", m.peer))
                    && l.contains(&format!("http://127.0.0.1:{}", m.client))
                    && l.contains("started")
            })
        });
        if complete {
            break;
        }
        assert!(Instant::now() < deadline, "member list incomplete:\n{out}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // move-leader hands leadership to a follower.
    let target = (leader + 1) % 3;
    let target_id = c.status(target).expect("status").0;
    let (code, out) = c.ctl(leader, &["move-leader", &format!("{target_id:x}")]);
    assert_eq!(code, 0, "move-leader: {out}\n{}", c.logs());
    assert!(out.contains("Leadership transferred"), "{out}");
    let leader = c.wait_converged(&[0, 1, 2]);
    assert_eq!(leader, target);

    // Failover: SIGKILL the leader; the other two elect a new one and serve.
    c.kill(leader);
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = c.wait_converged(&rest);
    assert_ne!(new_leader, leader);
    let (code, _) = c.ctl(rest[0], &["put", "after-failover", "yes"]);
    assert_eq!(code, 0, "write after failover:\n{}", c.logs());
    let (code, out) = c.ctl(rest[1], &["get", "after-failover", "--print-value-only"]);
    assert_eq!((code, out.trim()), (0, "yes"));

    // The killed member restarts from its data dir and catches up.
    c.spawn(leader);
    c.wait_converged(&[0, 1, 2]);
    let (code, out) = c.ctl(
        leader,
        &[
            "get",
            "after-failover",
            "--print-value-only",
            "--consistency=s",
        ],
    );
    assert_eq!(
        (code, out.trim()),
        (0, "yes"),
        "restarted member caught up:\n{}",
        c.logs()
    );
    for k in 0..3 {
        let (_, out) = c.ctl(
            leader,
            &[
                "get",
                &format!("k{k}"),
                "--print-value-only",
                "--consistency=s",
            ],
        );
        assert_eq!(out.trim(), format!("v{k}"));
    }

    // All members hold the same key space: `endpoint hashkv` agrees.
    let hashes: Vec<u64> = (0..3)
        .map(|i| {
            let (code, out) = c.ctl(i, &["endpoint", "hashkv", "-w", "json"]);
            assert_eq!(code, 0, "hashkv on {i}: {out}");
            let v: Value = serde_json::from_str(&out).expect("hashkv json");
            v[0]["HashKV"]["hash"].as_u64().expect("hash")
        })
        .collect();
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "hashkv differs: {hashes:?}"
    );
}

/// One HTTP/1.1 GET on the client port; returns the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `n` puts of `bulk/%05d` (one Raft entry each) through member `i`, by a
/// python-etcd3 client.
fn bulk_put(c: &Cluster, i: usize, n: usize) {
    let script = "import etcd3, sys\n\
                  c = etcd3.client(host='127.0.0.1', port=int(sys.argv[1]), timeout=20)\n\
                  for i in range(int(sys.argv[2])):\n    c.put('bulk/%05d' % i, 'v' * 100)\n";
    let out = std::process::Command::new("python3")
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .args([
            "-c",
            script,
            &c.members[i].client.to_string(),
            &n.to_string(),
        ])
        .output()
        .expect("python3 with etcd3");
    assert!(
        out.status.success(),
        "python-etcd3 writer: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
}

/// etcd's `etcd_network_snapshot_receive_success` of member `i`, summed
/// over senders (from its /metrics).
fn snapshots_received(c: &Cluster, i: usize) -> u64 {
    http_get(c.members[i].client, "/metrics")
        .lines()
        .filter(|l| l.starts_with("etcd_network_snapshot_receive_success{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `endpoint hashkv` of every member, by the real etcdctl.
fn hashkvs(c: &Cluster) -> Vec<u64> {
    hashkvs_of(c, &[0, 1, 2])
}

fn hashkvs_of(c: &Cluster, members: &[usize]) -> Vec<u64> {
    members
        .iter()
        .map(|&i| {
            let (code, out) = c.ctl(i, &["endpoint", "hashkv", "-w", "json"]);
            assert_eq!(code, 0, "hashkv on {i}: {out}");
            let v: Value = serde_json::from_str(&out).expect("hashkv json");
            v[0]["HashKV"]["hash"].as_u64().expect("hash")
        })
        .collect()
}

/// Failover with a compacted log: SIGKILL the leader, write far more than
/// the others keep for it (`--snapshot-count 50
/// --experimental-snapshot-catchup-entries 10`, python-etcd3 writer), then
/// restart it: it catches up from a snapshot streamed over the peer port
/// (etcd's `etcd_network_snapshot_receive_success` counts it), and the real
/// etcdctl's `endpoint status` and `endpoint hashkv` agree on all members,
/// also after it restarts again from the installed snapshot.
#[test]
fn a_killed_member_catches_up_from_a_snapshot() {
    let mut c = Cluster::start_kind(
        Kind::Ferrocd,
        &[
            "--snapshot-count",
            "50",
            "--experimental-snapshot-catchup-entries",
            "10",
        ],
    );
    let leader = c.wait_converged(&[0, 1, 2]);
    let (code, _) = c.ctl(leader, &["put", "before", "kill"]);
    assert_eq!(code, 0);
    c.kill(leader);
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    c.wait_converged(&rest);

    // 600 puts (one Raft entry each) through a surviving member.
    bulk_put(&c, rest[0], 600);

    c.spawn(leader);
    c.wait_converged(&[0, 1, 2]);
    let received = snapshots_received(&c, leader);
    assert!(
        received >= 1,
        "the restarted member did not catch up from a snapshot\n{}",
        c.logs()
    );
    let (code, out) = c.ctl(
        leader,
        &[
            "get",
            "bulk/",
            "--prefix",
            "--limit",
            "1",
            "-w",
            "json",
            "--consistency=s",
        ],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["count"].as_u64(), Some(600), "{out}");
    let hashes = hashkvs(&c);
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "hashkv differs: {hashes:?}"
    );

    // Writes replicate to it normally afterwards, and it restarts from the
    // installed snapshot plus its WAL.
    let (code, _) = c.ctl(rest[0], &["put", "after", "snapshot"]);
    assert_eq!(code, 0);
    c.kill(leader);
    c.spawn(leader);
    c.wait_converged(&[0, 1, 2]);
    let (code, out) = c.ctl(
        leader,
        &["get", "after", "--print-value-only", "--consistency=s"],
    );
    assert_eq!((code, out.trim()), (0, "snapshot"), "{}", c.logs());
    let hashes = hashkvs(&c);
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "hashkv differs: {hashes:?}"
    );
}

/// A learner added after the leader compacted its log joins from a
/// snapshot (whose configuration lists it as a learner and whose image
/// carries the member list), is promoted once in sync, and all four members
/// agree on `endpoint hashkv` (real etcdctl 3.5.1).
#[test]
fn a_learner_added_after_compaction_joins_from_a_snapshot() {
    let mut c = Cluster::start_kind(
        Kind::Ferrocd,
        &[
            "--snapshot-count",
            "50",
            "--experimental-snapshot-catchup-entries",
            "10",
        ],
    );
    let leader = c.wait_converged(&[0, 1, 2]);
    bulk_put(&c, leader, 300);
    let l = c.add_slot("m4");
    let peer_url = format!("http://127.0.0.1:{}", c.members[l].peer);
    let (code, out) = c.ctl_when_healthy(
        leader,
        &["member", "add", "m4", "--learner", "--peer-urls", &peer_url],
    );
    assert_eq!(code, 0, "member add --learner: {out}\n{}", c.logs());
    let lid = u64::from_str_radix(out.split_whitespace().nth(1).unwrap_or("x"), 16)
        .unwrap_or_else(|_| panic!("{out}"));
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("{out}"));
    c.spawn_with(l, &initial, "existing");
    c.wait_converged(&[0, 1, 2, l]);
    assert!(
        snapshots_received(&c, l) >= 1,
        "the learner did not join from a snapshot\n{}",
        c.logs()
    );
    let (code, out) = c.ctl(
        l,
        &["get", "bulk/00299", "--print-value-only", "--consistency=s"],
    );
    assert_eq!((code, out.trim().len()), (0, 100), "{out}");
    // In sync: the leader promotes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out) = c.ctl(leader, &["member", "promote", &format!("{lid:x}")]);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "promote: {out}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, _) = c.ctl(l, &["put", "after", "promote"]);
    assert_eq!(code, 0, "{}", c.logs());
    c.wait_converged(&[0, 1, 2, l]);
    let hashes = hashkvs_of(&c, &[0, 1, 2, l]);
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "hashkv differs: {hashes:?}"
    );
}

/// `--force-new-cluster` on a member of a stopped 3-member cluster: it
/// comes back alone with its data and cluster ID, takes writes, and stays
/// alone when restarted without the flag. The same scenario runs on real
/// etcd 3.5.1 first, so the expectations are etcd's.
#[test]
fn force_new_cluster_restarts_one_member_alone_with_its_data() {
    for kind in [Kind::Etcd, crate::harness::subject_kind()] {
        let mut c = Cluster::start_kind(kind, &[]);
        c.wait_converged(&[0, 1, 2]);
        for i in 0..5 {
            let (code, out) = c.ctl(i % 3, &["put", &format!("fk{i}"), &format!("v{i}")]);
            assert_eq!((code, out.trim()), (0, "OK"), "{}", kind.label());
        }
        let cluster_id = |c: &Cluster| {
            let (_, out) = c.ctl(0, &["member", "list", "-w", "json"]);
            let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            (
                v["header"]["cluster_id"].clone(),
                v["members"].as_array().map_or(0, Vec::len),
            )
        };
        let (id_before, n) = cluster_id(&c);
        assert_eq!(n, 3, "{}", kind.label());
        // The forced member keeps only what it has committed itself: wait
        // until it has applied the last put (a serializable read on it),
        // then a little for its next hard state to be saved.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, out) = c.ctl(0, &["get", "fk4", "--print-value-only", "--consistency=s"]);
            if out.trim() == "v4" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: m1 never applied fk4",
                kind.label()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..3 {
            c.kill(i);
        }
        c.extra.push("--force-new-cluster".into());
        c.spawn(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, out) = c.ctl(0, &["put", "after", "force"]);
            if code == 0 && out.trim() == "OK" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no write after --force-new-cluster\n{}",
                kind.label(),
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(cluster_id(&c), (id_before.clone(), 1), "{}", kind.label());
        let (code, out) = c.ctl(0, &["get", "fk", "--prefix", "--keys-only"]);
        assert_eq!(code, 0);
        assert_eq!(out.split_whitespace().count(), 5, "{}: {out}", kind.label());
        // Without the flag it stays a single-member cluster.
        c.kill(0);
        c.extra.clear();
        c.spawn(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, out) = c.ctl(0, &["get", "after", "--print-value-only"]);
            if code == 0 && out.trim() == "force" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: restart\n{}",
                kind.label(),
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(cluster_id(&c), (id_before, 1), "{}", kind.label());
    }
}
