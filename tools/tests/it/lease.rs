//! The Lease service through the real etcdctl 3.5.1: grant, list,
//! timetolive (with keys), keep-alive (once and streaming), revoke with
//! attached keys, `put --lease`, expiry of a short lease, leases across a
//! restart, and a 3-member cluster where followers forward keep-alives and
//! TimeToLive to the leader.
//!
//! Lease IDs are chosen by each server, so scenarios name them `{L0}`,
//! `{L1}`, ... (the IDs granted so far, in order, by this server) and every
//! ID is masked as `<L0>`, ... in both servers' outputs before the step by
//! step comparison of `compare::check`. Remaining TTLs depend on timing:
//! each is checked to be within a few seconds of the granted TTL, then
//! masked.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::compare::{check, ctl, txn, Side, Step};
use crate::harness::{
    etcdctl, etcdctl_bin, ferrocd_bin, free_port, fresh_temp_dir, spawn_server, start_pair,
    strings, subject_kind, tail, CtlOutput, Kind, Server,
};

/// Replaces `{Ln}` by the n-th granted ID (hex, as etcdctl takes it).
fn substitute(s: &str, ids: &[i64]) -> String {
    let mut out = s.to_string();
    for (i, id) in ids.iter().enumerate() {
        out = out.replace(&format!("{{L{i}}}"), &format!("{id:016x}"));
    }
    out
}

fn replace_all(b: &[u8], from: &str, to: &str) -> Vec<u8> {
    String::from_utf8_lossy(b).replace(from, to).into_bytes()
}

/// The number after `key` in `s` (optionally negative), if any.
fn number_after(s: &str, key: &str) -> Option<i64> {
    let i = s.find(key)? + key.len();
    let rest = &s[i..];
    let end = rest
        .char_indices()
        .find(|(j, c)| !(c.is_ascii_digit() || (*j == 0 && *c == '-')))
        .map_or(rest.len(), |(j, _)| j);
    rest[..end].parse().ok()
}

/// Checks a live lease's remaining TTL against its granted TTL and masks
/// it: `remaining(Ns)` in simple output, `"ttl":N` in JSON.
fn mask_remaining(stdout: &[u8], label: &str, step: &str) -> Vec<u8> {
    let s = String::from_utf8_lossy(stdout).into_owned();
    for (granted_key, rem_key, rem_end) in [
        ("granted with TTL(", "remaining(", "s)"),
        ("\"granted-ttl\":", "\"ttl\":", ","),
    ] {
        let (Some(granted), Some(rem)) = (number_after(&s, granted_key), number_after(&s, rem_key))
        else {
            continue;
        };
        if rem < 0 {
            continue;
        }
        assert!(
            rem <= granted && rem >= granted - 5,
            "{label}: `{step}` reports {rem} s remaining of {granted} s:\n{s}"
        );
        return s
            .replacen(
                &format!("{rem_key}{rem}{rem_end}"),
                &format!("{rem_key}<ttl>{rem_end}"),
                1,
            )
            .into_bytes();
    }
    stdout.to_vec()
}

/// Sorts the attached keys of a TimeToLive output (etcd lists them in Go
/// map order, which varies from run to run; ferrocd sorts them).
fn sort_keys(stdout: &[u8]) -> Vec<u8> {
    let mut s = String::from_utf8_lossy(stdout).into_owned();
    for (open, close, sep) in [("attached keys([", "])", " "), ("\"keys\":[", "]", ",")] {
        let Some(i) = s.find(open).map(|i| i + open.len()) else {
            continue;
        };
        let Some(n) = s[i..].find(close) else {
            continue;
        };
        let mut keys: Vec<&str> = s[i..i + n].split(sep).collect();
        keys.sort_unstable();
        let sorted = keys.join(sep);
        s.replace_range(i..i + n, &sorted);
    }
    s.into_bytes()
}

/// Runs `steps` on `server`, capturing granted IDs and masking them.
fn run_lease_steps(server: &Server, steps: &[Step]) -> Vec<CtlOutput> {
    let mut ids: Vec<i64> = Vec::new();
    let mut outs = Vec::new();
    for step in steps {
        let args: Vec<String> = step.args.iter().map(|a| substitute(a, &ids)).collect();
        let stdin = step
            .stdin
            .as_ref()
            .map(|b| substitute(&String::from_utf8_lossy(b), &ids).into_bytes());
        let mut out = server.ctl(&args, stdin.as_deref());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if args.len() >= 2 && args[0] == "lease" && args[1] == "grant" && out.code == 0 {
            let id = if text.starts_with('{') {
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["ID"].as_i64())
            } else {
                let hex = text.split_whitespace().nth(1).unwrap_or_default();
                i64::from_str_radix(hex, 16).ok()
            };
            let id =
                id.unwrap_or_else(|| panic!("{}: grant printed {text:?}", server.kind.label()));
            ids.push(id);
        }
        if args.len() >= 2 && args[0] == "lease" && args[1] == "timetolive" {
            out.stdout = mask_remaining(&out.stdout, server.kind.label(), &step.display());
            out.stdout = sort_keys(&out.stdout);
        }
        for (i, id) in ids.iter().enumerate() {
            let tag = format!("<L{i}>");
            out.stdout = replace_all(&out.stdout, &format!("{id:016x}"), &tag);
            out.stdout = replace_all(&out.stdout, &id.to_string(), &tag);
            out.stderr = replace_all(&out.stderr, &format!("{id:016x}"), &tag);
        }
        outs.push(out);
    }
    outs
}

/// As `compare::compare_scenario`, with lease IDs substituted and masked.
fn compare_lease_scenario(name: &str, steps: &[Step]) {
    let (reference, subject) = start_pair(subject_kind(), &[]);
    let (r_out, s_out) = std::thread::scope(|sc| {
        let r = sc.spawn(|| run_lease_steps(&reference, steps));
        let s = sc.spawn(|| run_lease_steps(&subject, steps));
        (r.join().unwrap(), s.join().unwrap())
    });
    let r = Side {
        label: "etcd",
        endpoint: reference.endpoint(),
        outputs: r_out,
    };
    let s = Side {
        label: subject.kind.label(),
        endpoint: subject.endpoint(),
        outputs: s_out,
    };
    if let Err(msg) = check(name, &[], steps, &r, &s) {
        panic!("{msg}");
    }
}

const NOT_FOUND: &str = "etcdserver: requested lease not found";

#[test]
fn lease_grant_list_timetolive_keepalive_revoke() {
    let all = ["get", "", "--prefix", "-w", "json"];
    let steps = vec![
        ctl(&["lease", "list"]).ok(),
        ctl(&["lease", "grant", "1000"])
            .ok()
            .out_has("granted with TTL(1000s)"),
        ctl(&["lease", "grant", "600"]).ok(),
        ctl(&["lease", "grant", "800", "-w", "json"]).ok(),
        ctl(&["put", "--lease={L0}", "a", "1"]).ok(),
        ctl(&["put", "--lease={L0}", "b", "2"]).ok(),
        ctl(&["put", "--lease={L1}", "c", "3"]).ok(),
        ctl(&["put", "d", "4"]).ok(),
        ctl(&all).ok(),
        // soonest expiry first
        ctl(&["lease", "list"]).ok().out_has("found 3 leases"),
        ctl(&["lease", "list", "-w", "json"]).ok(),
        ctl(&["lease", "timetolive", "{L0}", "--keys"])
            .ok()
            .out_has("attached keys([a b])"),
        ctl(&["lease", "timetolive", "{L0}", "--keys", "-w", "json"]).ok(),
        ctl(&["lease", "timetolive", "{L1}"]).ok(),
        ctl(&["lease", "timetolive", "{L2}", "--keys"]).ok(),
        // a put with another lease moves the key; --ignore-lease keeps it;
        // a put without a lease detaches it
        ctl(&["put", "--lease={L1}", "a", "5"]).ok(),
        ctl(&["lease", "timetolive", "{L0}", "--keys"]).ok(),
        ctl(&["lease", "timetolive", "{L1}", "--keys"]).ok(),
        ctl(&["put", "--ignore-lease", "a", "6"]).ok(),
        ctl(&["get", "a", "-w", "json"]).ok(),
        ctl(&["put", "b", "7"]).ok(),
        ctl(&["lease", "timetolive", "{L0}", "--keys"])
            .ok()
            .out_has("attached keys([])"),
        ctl(&["lease", "keep-alive", "--once", "{L1}"])
            .ok()
            .out_has("keepalived with TTL(600)"),
        ctl(&["lease", "keep-alive", "--once", "{L1}", "-w", "json"]).ok(),
        // txn: only the branch that runs is checked for unknown leases
        txn(
            "\nput --lease={L2} t 1\n\nput --lease=123456 t 2\n\n",
            &["-w", "json"],
        )
        .ok(),
        txn("\nput --lease=123456 t 2\n\n\n", &[]).fails_with(NOT_FOUND),
        ctl(&["lease", "timetolive", "{L2}", "--keys"]).ok(),
        // revoke deletes every attached key, in one revision
        ctl(&["lease", "revoke", "{L1}"]).ok(),
        ctl(&all).ok(),
        ctl(&["lease", "revoke", "{L1}"]).fails_with(NOT_FOUND),
        ctl(&["lease", "timetolive", "{L1}"])
            .ok()
            .out_has("already expired"),
        ctl(&["lease", "timetolive", "{L1}", "-w", "json"]).ok(),
        ctl(&["lease", "keep-alive", "--once", "{L1}"]).code(2),
        ctl(&["put", "--lease={L1}", "x", "1"]).fails_with(NOT_FOUND),
        ctl(&["lease", "list"]).ok(),
        // deleting a key detaches it
        ctl(&["del", "t"]).ok(),
        ctl(&["lease", "timetolive", "{L2}", "--keys"]).ok(),
        ctl(&["lease", "revoke", "{L0}", "-w", "json"]).ok(),
        ctl(&["lease", "revoke", "{L2}"]).ok(),
        ctl(&["lease", "list"]).ok().out_has("found 0 leases"),
        ctl(&all).ok(),
    ];
    compare_lease_scenario("lease_grant_list_timetolive_keepalive_revoke", &steps);
}

#[test]
fn lease_grant_ttl_rules_and_errors() {
    let steps = vec![
        // below etcd's minimum TTL (ceil(1.5 × election timeout) = 2 s)
        ctl(&["lease", "grant", "1"]).ok().out_has("TTL(2s)"),
        ctl(&["lease", "grant", "9000000000"]).ok(),
        ctl(&["lease", "grant", "9000000001"])
            .fails_with("etcdserver: too large lease TTL")
            .fails_with("code = OutOfRange"),
        ctl(&["lease", "revoke", "1234"])
            .fails_with(NOT_FOUND)
            .fails_with("code = NotFound"),
        ctl(&["lease", "timetolive", "1234"]).ok(),
        ctl(&["lease", "timetolive", "1234", "--keys", "-w", "json"]).ok(),
        ctl(&["lease", "keep-alive", "--once", "1234"]).code(2),
        // (the 2 s lease {L0} is left to expire)
        ctl(&["lease", "revoke", "{L1}"]).ok(),
    ];
    compare_lease_scenario("lease_grant_ttl_rules_and_errors", &steps);
}

// ---------------------------------------------------------------------------
// Timing: expiry, streaming keep-alive, restart
// ---------------------------------------------------------------------------

fn ctl_ok(server: &Server, args: &[&str]) -> String {
    let out = server.ctl(&strings(args), None);
    assert_eq!(
        out.code,
        0,
        "{}: etcdctl {args:?}: {}",
        server.kind.label(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn grant(server: &Server, ttl: &str) -> String {
    let out = ctl_ok(server, &["lease", "grant", ttl]);
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn revision(server: &Server) -> i64 {
    let out = ctl_ok(server, &["get", "", "--prefix", "-w", "json"]);
    let v: Value = serde_json::from_str(&out).expect("json");
    v["header"]["revision"].as_i64().expect("revision")
}

/// A 2 s lease with two keys expires on its own: the keys go in one
/// revision, within a bounded time, on etcd and on the subject alike.
fn short_lease_expires(server: &Server) -> (Duration, i64) {
    let id = grant(server, "2");
    ctl_ok(server, &["put", &format!("--lease={id}"), "e1", "v"]);
    ctl_ok(server, &["put", &format!("--lease={id}"), "e2", "v"]);
    ctl_ok(server, &["put", "stay", "v"]);
    let before = revision(server);
    let t0 = Instant::now();
    loop {
        let out = ctl_ok(server, &["get", "e", "--prefix", "-w", "json"]);
        let v: Value = serde_json::from_str(&out).expect("json");
        if v["count"].as_i64().unwrap_or(0) == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{}: a 2 s lease still holds its keys after {:?}",
            server.kind.label(),
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t0.elapsed();
    let out = ctl_ok(server, &["lease", "timetolive", &id]);
    assert!(out.contains("already expired"), "{out}");
    assert!(ctl_ok(server, &["lease", "list"]).starts_with("found 0 leases"));
    assert!(ctl_ok(server, &["get", "stay"]).contains("stay"));
    (took, revision(server) - before)
}

#[test]
fn short_lease_expires_with_its_keys_in_one_revision() {
    let (reference, subject) = start_pair(subject_kind(), &[]);
    let (r, s) = std::thread::scope(|sc| {
        let r = sc.spawn(|| short_lease_expires(&reference));
        let s = sc.spawn(|| short_lease_expires(&subject));
        (r.join().unwrap(), s.join().unwrap())
    });
    eprintln!(
        "[it] 2 s lease expired after {:?} (etcd) / {:?} (subject)",
        r.0, s.0
    );
    assert_eq!(r.1, 1, "etcd: one revision for the expiry");
    assert_eq!(s.1, 1, "subject: one revision for the expiry");
    assert!(s.0 < Duration::from_secs(5), "subject took {:?}", s.0);
}

/// `etcdctl lease keep-alive` (one stream, a renewal every TTL/3) keeps a
/// 2 s lease alive; once the lease is revoked elsewhere the next answer has
/// TTL 0 and etcdctl ends with "expired or revoked".
fn streaming_keep_alive(server: &Server) -> String {
    let id = grant(server, "2");
    ctl_ok(server, &["put", &format!("--lease={id}"), "held", "v"]);
    let mut cmd = Command::new(etcdctl_bin());
    // A clean environment (etcdctl reads ETCDCTL_* as flags), as the harness.
    cmd.env_clear();
    for var in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let mut child: Child = cmd
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint()))
        .args(["lease", "keep-alive", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    std::thread::sleep(Duration::from_millis(4000));
    let alive = ctl_ok(server, &["get", "held", "-w", "json"]);
    let ttl = ctl_ok(server, &["lease", "timetolive", &id]);
    ctl_ok(server, &["lease", "revoke", &id]);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        status.is_some_and(|s| s.success()),
        "{}: keep-alive did not end after the revoke ({status:?}):\n{stdout}\n{}",
        server.kind.label(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&alive).expect("json");
    assert_eq!(
        v["count"].as_i64(),
        Some(1),
        "{}: key expired",
        server.kind.label()
    );
    assert!(!ttl.contains("already expired"), "{ttl}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() >= 4,
        "{}: expected several renewals:\n{stdout}",
        server.kind.label()
    );
    // Every renewal but the last reports the TTL; the end is etcdctl's.
    let last = lines.last().copied().unwrap_or_default();
    format!(
        "{}\n{}",
        lines[0].replace(&id, "<id>"),
        last.replace(&id, "<id>")
    )
}

#[test]
fn streaming_keep_alive_holds_a_short_lease_until_it_is_revoked() {
    let (reference, subject) = start_pair(subject_kind(), &[]);
    let (r, s) = std::thread::scope(|sc| {
        let r = sc.spawn(|| streaming_keep_alive(&reference));
        let s = sc.spawn(|| streaming_keep_alive(&subject));
        (r.join().unwrap(), s.join().unwrap())
    });
    assert_eq!(
        r,
        "lease <id> keepalived with TTL(2)\nlease <id> expired or revoked."
    );
    assert_eq!(s, r);
}

/// A second process on the same data dir and ports, killed on drop.
struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_ready(server: &Server) {
    let t0 = Instant::now();
    loop {
        if server.ctl(&strings(&["get", "x"]), None).code == 0 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{} did not come back:\n{}",
            server.kind.label(),
            tail(&server.log, 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Leases, their TTLs and attached keys survive a restart (a lease that
/// was never checkpointed starts again from its TTL plus one election
/// timeout, as in etcd); the lease still works afterwards.
fn leases_survive_restart(kind: Kind) -> Vec<String> {
    let mut server = Server::start(kind, &[]);
    let a = grant(&server, "1000");
    let b = grant(&server, "500");
    ctl_ok(&server, &["put", &format!("--lease={a}"), "k1", "v"]);
    ctl_ok(&server, &["put", &format!("--lease={a}"), "k2", "v"]);
    ctl_ok(&server, &["put", &format!("--lease={b}"), "k3", "v"]);
    ctl_ok(&server, &["lease", "revoke", &b]);
    let rev = revision(&server);
    assert!(
        server.terminate(Duration::from_secs(10)).is_some(),
        "{} did not stop",
        kind.label()
    );
    let _again = Restarted(spawn_server(
        kind.bin(),
        &server.args,
        &server.dir,
        &server.log,
    ));
    wait_ready(&server);
    let mut seen = vec![
        ctl_ok(&server, &["lease", "list"]).replace(&a, "<a>"),
        String::from_utf8_lossy(&sort_keys(&mask_remaining(
            ctl_ok(&server, &["lease", "timetolive", &a, "--keys"]).as_bytes(),
            kind.label(),
            "lease timetolive --keys after restart",
        )))
        .replace(&a, "<a>"),
        ctl_ok(&server, &["lease", "timetolive", &b]).replace(&b, "<b>"),
        ctl_ok(&server, &["lease", "keep-alive", "--once", &a]).replace(&a, "<a>"),
    ];
    assert_eq!(
        revision(&server),
        rev,
        "{}: revision after restart",
        kind.label()
    );
    ctl_ok(&server, &["lease", "revoke", &a]);
    seen.push(ctl_ok(&server, &["get", "k", "--prefix", "--keys-only"]));
    seen.push(format!("revoke made revision {}", revision(&server) - rev));
    seen
}

#[test]
fn leases_and_attached_keys_survive_a_restart() {
    let (r, s) = std::thread::scope(|sc| {
        let r = sc.spawn(|| leases_survive_restart(Kind::Etcd));
        let s = sc.spawn(|| leases_survive_restart(subject_kind()));
        (r.join().unwrap(), s.join().unwrap())
    });
    assert_eq!(s, r);
    assert_eq!(
        r[1].trim(),
        "lease <a> granted with TTL(1000s), remaining(<ttl>s), attached keys([k1 k2])"
    );
}

// ---------------------------------------------------------------------------
// Three members: followers forward to the leader
// ---------------------------------------------------------------------------

struct Three {
    children: Vec<Child>,
    clients: Vec<u16>,
    root: std::path::PathBuf,
}

impl Three {
    fn start() -> Three {
        let root = fresh_temp_dir("lease3");
        let names = ["l1", "l2", "l3"];
        let ports: Vec<(u16, u16)> = names.iter().map(|_| (free_port(), free_port())).collect();
        let initial = names
            .iter()
            .zip(&ports)
            .map(|(n, (_, p))| format!("{n}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (n, (c, p)) in names.iter().zip(&ports) {
            let dir = root.join(n);
            std::fs::create_dir_all(&dir).expect("dir");
            let c = format!("http://127.0.0.1:{c}");
            let p = format!("http://127.0.0.1:{p}");
            let args = strings(&[
                "--name",
                n,
                "--data-dir",
                &dir.join("data").display().to_string(),
                "--listen-client-urls",
                &c,
                "--advertise-client-urls",
                &c,
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
                "--initial-cluster",
                &initial,
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ]);
            children.push(spawn_server(
                ferrocd_bin(),
                &args,
                &dir,
                &dir.join("server.log"),
            ));
        }
        Three {
            children,
            clients: ports.iter().map(|(c, _)| *c).collect(),
            root,
        }
    }

    fn ctl(&self, i: usize, args: &[&str]) -> CtlOutput {
        etcdctl(
            Some(&format!("127.0.0.1:{}", self.clients[i])),
            &strings(args),
            None,
        )
    }

    fn ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.ctl(i, args);
        assert_eq!(
            out.code,
            0,
            "member {i}: etcdctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self) -> String {
        ["l1", "l2", "l3"]
            .iter()
            .map(|n| {
                format!(
                    "---- {n} ----\n{}",
                    tail(&self.root.join(n).join("server.log"), 15)
                )
            })
            .collect()
    }

    /// The leader's position, once every member reports the same one.
    fn leader(&self) -> usize {
        let t0 = Instant::now();
        loop {
            let st: Vec<Option<(u64, u64)>> = (0..3)
                .map(|i| {
                    let out = self.ctl(i, &["endpoint", "status", "-w", "json"]);
                    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                    let s = &v.get(0)?["Status"];
                    Some((s["header"]["member_id"].as_u64()?, s["leader"].as_u64()?))
                })
                .collect();
            if st.iter().all(Option::is_some) {
                let st: Vec<(u64, u64)> = st.into_iter().flatten().collect();
                let l = st[0].1;
                if l != 0 && st.iter().all(|s| s.1 == l) {
                    if let Some(p) = st.iter().position(|s| s.0 == l) {
                        return p;
                    }
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no leader:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Three {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("FERROCD_IT_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[test]
fn three_members_followers_forward_keepalive_and_timetolive() {
    let c = Three::start();
    let leader = c.leader();
    let f = (leader + 1) % 3;
    let g = (leader + 2) % 3;
    // Granted through a follower (its proposal reaches the leader via Raft).
    let out = c.ok(f, &["lease", "grant", "600"]);
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    c.ok(g, &["put", &format!("--lease={id}"), "fk", "v"]);
    for i in 0..3 {
        let list = c.ok(i, &["lease", "list"]);
        assert!(list.contains(&id), "member {i}: {list}");
    }
    // TimeToLive and keep-alive through followers are answered by the leader.
    for i in [f, g, leader] {
        let ttl = c.ok(i, &["lease", "timetolive", &id, "--keys"]);
        assert!(
            ttl.contains("granted with TTL(600s)") && ttl.contains("attached keys([fk])"),
            "member {i}: {ttl}"
        );
        assert!(
            !ttl.contains("remaining(9223372036s)"),
            "a follower's forever: {ttl}"
        );
        let ka = c.ok(i, &["lease", "keep-alive", "--once", &id]);
        assert_eq!(ka.trim(), format!("lease {id} keepalived with TTL(600)"));
    }
    let gone = c.ctl(f, &["lease", "keep-alive", "--once", "1234"]);
    assert_eq!(gone.code, 2, "{gone:?}");
    let ttl = c.ok(f, &["lease", "timetolive", "1234"]);
    assert_eq!(ttl.trim(), "lease 0000000000001234 already expired");
    // A short lease granted through a follower expires by the leader's
    // decision; its key disappears on every member.
    let out = c.ok(g, &["lease", "grant", "2"]);
    let short = out
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    c.ok(f, &["put", &format!("--lease={short}"), "sk", "v"]);
    let t0 = Instant::now();
    for i in 0..3 {
        loop {
            let n = c.ok(i, &["get", "sk", "-w", "json"]);
            let v: Value = serde_json::from_str(&n).expect("json");
            if v["count"].as_i64().unwrap_or(0) == 0 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "member {i} still has the key of an expired lease\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Revoke through a follower deletes the key everywhere.
    c.ok(f, &["lease", "revoke", &id]);
    for i in 0..3 {
        let n = c.ok(i, &["get", "fk", "-w", "json"]);
        let v: Value = serde_json::from_str(&n).expect("json");
        assert_eq!(v["count"].as_i64().unwrap_or(0), 0, "member {i}");
        assert!(c.ok(i, &["lease", "list"]).starts_with("found 0 leases"));
    }
}
