//! Membership changes on a 3-member ferrocd cluster on loopback, driven by
//! the real etcdctl 3.5.1, following the seed guide: replace a member
//! (member remove, the removed member stops itself, wipe, member add, start
//! with `--initial-cluster-state existing`, catch-up, equal `endpoint
//! hashkv`), the "member has already been bootstrapped" refusal, a learner
//! added then promoted (refused while it is not in sync), member update;
//! and the Cluster service's errors compared with a real etcd 3.5.1.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{ctl_when_healthy, Cluster};
use crate::harness::{
    etcdctl, start_pair, strings, subject_kind, tail, wait_timeout, CtlOutput, Server,
};

/// `member list -w json` through member `i`: (cluster ID, members as
/// (id, name, peer URLs, client URLs, is learner)).
type Row = (u64, String, Vec<String>, Vec<String>, bool);

fn list_json(ep: &str) -> Option<(u64, Vec<Row>)> {
    let out = etcdctl(Some(ep), &strings(&["member", "list", "-w", "json"]), None);
    if out.code != 0 {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let cid = v["header"]["cluster_id"].as_u64()?;
    let strs = |x: &Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let rows = v["members"]
        .as_array()?
        .iter()
        .map(|m| {
            (
                m["ID"].as_u64().unwrap_or(0),
                m["name"].as_str().unwrap_or("").to_string(),
                strs(&m["peerURLs"]),
                strs(&m["clientURLs"]),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    Some((cid, rows))
}

/// Polls `f` for up to `secs` seconds.
fn eventually<T>(secs: u64, what: &str, c: &Cluster, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn started_everywhere(c: &Cluster, via: usize, n: usize) {
    eventually(20, "every member started in member list", c, || {
        let (_, rows) = list_json(&c.ep(via))?;
        (rows.len() == n && rows.iter().all(|r| !r.1.is_empty() && !r.3.is_empty())).then_some(())
    });
}

fn ctl_full(ep: &str, args: &[&str]) -> CtlOutput {
    etcdctl(Some(ep), &strings(args), None)
}

fn stdout(o: &CtlOutput) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &CtlOutput) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The value of `KEY="..."` in `member add`'s output.
fn env_line(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=\"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
        .to_string()
}

fn hashes(c: &Cluster, members: &[usize]) -> Vec<u64> {
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

#[test]
fn replace_a_member_like_the_seed_guide() {
    let mut c = Cluster::start();
    let leader = c.wait_converged(&[0, 1, 2]);
    for k in 0..30 {
        let (code, _) = c.ctl(leader, &["put", &format!("before{k:02}"), &format!("v{k}")]);
        assert_eq!(code, 0, "put:\n{}", c.logs());
    }
    started_everywhere(&c, leader, 3);
    let victim = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let (cid, rows) = list_json(&c.ep(other)).expect("member list");
    let old_id = rows
        .iter()
        .find(|r| r.1 == c.members[victim].name)
        .expect("victim listed")
        .0;

    // 1. member remove: etcdctl's message; the removed member stops itself
    //    with etcd's message and exit status 0.
    let out = ctl_when_healthy(&c.ep(other), &["member", "remove", &format!("{old_id:x}")]);
    assert_eq!(out.code, 0, "member remove: {}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("Member {old_id:16x} removed from cluster {cid:16x}")
    );
    let mut child = c.members[victim].child.take().expect("victim running");
    let st = wait_timeout(&mut child, Duration::from_secs(30));
    if st.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = tail(&c.members[victim].dir.join("server.log"), 30);
    assert!(
        st.is_some_and(|s| s.success()),
        "the removed member did not exit 0 by itself ({st:?}):\n{log}"
    );
    assert!(
        log.contains("the member has been permanently removed from the cluster"),
        "{log}"
    );
    let (_, rows) = list_json(&c.ep(other)).expect("member list");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.0 != old_id));
    // Writes go on with two members.
    let (code, _) = c.ctl(other, &["put", "during", "two-members"]);
    assert_eq!(code, 0);

    // Restarted from its old data dir, the removed member stops again
    // (peers refuse it, or its own data says so), like etcd.
    c.spawn(victim);
    let mut child = c.members[victim].child.take().expect("victim running");
    let st = wait_timeout(&mut child, Duration::from_secs(30));
    if st.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = tail(&c.members[victim].dir.join("server.log"), 30);
    assert!(
        st.is_some_and(|s| s.success()),
        "the restarted removed member did not stop by itself ({st:?}):\n{log}"
    );
    assert!(
        log.matches("the member has been permanently removed from the cluster")
            .count()
            >= 2,
        "{log}"
    );

    // 2. Wipe its data dir. Joining before `member add` is refused, as
    //    etcd refuses it.
    std::fs::remove_dir_all(c.members[victim].dir.join("data")).expect("wipe");
    c.spawn_with(victim, &c.initial.clone(), "existing");
    let mut child = c.members[victim].child.take().expect("victim running");
    let st = wait_timeout(&mut child, Duration::from_secs(30));
    if st.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = tail(&c.members[victim].dir.join("server.log"), 5);
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains("discovery failed")
            && log.contains("error validating peerURLs {ClusterID:")
            && log.contains("member count is unequal"),
        "{log}"
    );
    std::fs::remove_dir_all(c.members[victim].dir.join("data")).expect("wipe");
    //    member add with the same peer URL.
    let name = c.members[victim].name.clone();
    let peer_url = format!("http://127.0.0.1:{}", c.members[victim].peer);
    let out = ctl_when_healthy(
        &c.ep(other),
        &["member", "add", &name, "--peer-urls", &peer_url],
    );
    assert_eq!(out.code, 0, "member add: {}\n{}", stderr(&out), c.logs());
    let text = stdout(&out);
    let first = text.lines().next().unwrap_or("");
    let new_id = u64::from_str_radix(
        first
            .strip_prefix("Member ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("x"),
        16,
    )
    .unwrap_or_else(|_| panic!("member add output:\n{text}"));
    assert_eq!(
        first,
        format!("Member {new_id:16x} added to cluster {cid:16x}")
    );
    assert_ne!(new_id, old_id, "a new ID");
    assert_eq!(env_line(&text, "ETCD_NAME"), name);
    assert_eq!(
        env_line(&text, "ETCD_INITIAL_ADVERTISE_PEER_URLS"),
        peer_url
    );
    assert_eq!(env_line(&text, "ETCD_INITIAL_CLUSTER_STATE"), "existing");
    let initial = env_line(&text, "ETCD_INITIAL_CLUSTER");
    let mut got: Vec<&str> = initial.split(',').collect();
    got.sort();
    let mut want: Vec<String> = c
        .members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Not started yet: listed without a name.
    let (_, rows) = list_json(&c.ep(leader)).expect("member list");
    assert!(rows.iter().any(|r| r.0 == new_id && r.1.is_empty()));

    // 3. Start it with --initial-cluster-state existing: it joins with the
    //    new ID, catches up from the leader and serves.
    c.spawn_with(victim, &initial, "existing");
    c.wait_converged(&[0, 1, 2]);
    assert_eq!(c.status(victim).expect("status").0, new_id);
    started_everywhere(&c, victim, 3);
    let (code, out) = c.ctl(
        victim,
        &["get", "before07", "--print-value-only", "--consistency=s"],
    );
    assert_eq!((code, out.trim()), (0, "v7"), "caught up:\n{}", c.logs());
    let (code, _) = c.ctl(victim, &["put", "after", "join"]);
    assert_eq!(code, 0);
    let (code, out) = c.ctl(leader, &["get", "after", "--print-value-only"]);
    assert_eq!((code, out.trim()), (0, "join"));
    c.wait_converged(&[0, 1, 2]);
    let h = hashes(&c, &[0, 1, 2]);
    assert!(h.iter().all(|x| *x == h[0]), "hashkv differs: {h:?}");

    // member list -w table: three started members, the new ID, etcd's columns.
    let (code, table) = c.ctl(leader, &["member", "list", "-w", "table"]);
    assert_eq!(code, 0);
    let table = collapse(&table);
    assert!(
        table.contains("| ID | STATUS | NAME | PEER ADDRS | CLIENT ADDRS | IS LEARNER |"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "| {new_id:x} | started | {name} | {peer_url} | http://127.0.0.1:{} | false |",
            c.members[victim].client
        )),
        "{table}"
    );
    assert!(!table.contains(&format!("{old_id:x}")), "{table}");

    // 4. A restart from its data dir ignores the initial-* flags.
    c.kill(victim);
    c.spawn_with(victim, "bogus=http://127.0.0.1:1", "new");
    c.wait_converged(&[0, 1, 2]);
    assert_eq!(c.status(victim).expect("status").0, new_id);
    // The whole cluster restarts (the original members with their original
    // flags, which still name the removed ID): the member list comes from
    // each member's data dir, unchanged.
    let (_, before) = list_json(&c.ep(leader)).expect("member list");
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_converged(&[0, 1, 2]);
    for i in 0..3 {
        let (_, after) = eventually(20, "member list after a full restart", &c, || {
            list_json(&c.ep(i))
        });
        assert_eq!(after, before, "member {i} after a full restart");
    }
    let (code, out) = c.ctl(victim, &["get", "after", "--print-value-only"]);
    assert_eq!((code, out.trim()), (0, "join"));

    // 5. The seed's "member has already been bootstrapped": a member whose
    //    data dir was wiped, started again with state `new` while the others
    //    run, refuses like etcd.
    let other_id = c.status(other).expect("status").0;
    c.kill(other);
    std::fs::remove_dir_all(c.members[other].dir.join("data")).expect("wipe");
    // The original flags (the replacement reused the removed member's name
    // and peer URL).
    let original = c.initial.clone();
    c.spawn_with(other, &original, "new");
    let mut child = c.members[other].child.take().expect("running");
    let st = wait_timeout(&mut child, Duration::from_secs(30));
    if st.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = tail(&c.members[other].dir.join("server.log"), 10);
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "member {other_id:x} has already been bootstrapped"
        )) && log.contains("discovery failed"),
        "{log}"
    );

    // 6. Quorum protection (--strict-reconfig-check) with `other` down:
    //    adding a member, or removing a running one, could lose quorum;
    //    refused with etcd's error.
    let live: Vec<usize> = (0..3).filter(|&i| i != other).collect();
    let l = c.wait_converged(&live);
    let running = live.iter().copied().find(|&i| i != l).expect("a follower");
    let running_id = c.status(running).expect("status").0;
    for args in [
        vec![
            "member".to_string(),
            "add".into(),
            "m9".into(),
            "--peer-urls".into(),
            "http://127.0.0.19:9".into(),
        ],
        vec![
            "member".to_string(),
            "remove".into(),
            format!("{running_id:x}"),
        ],
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = eventually(20, "refused as unhealthy", &c, || {
            let out = ctl_full(&c.ep(l), &a);
            let e = stderr(&out);
            (out.code != 0 && e.contains("Error: etcdserver: unhealthy cluster")).then_some(e)
        });
        assert!(!text.is_empty());
    }
    let (_, rows) = list_json(&c.ep(l)).expect("member list");
    assert_eq!(rows.len(), 3, "nothing changed: {rows:?}");
}

#[test]
fn learner_is_added_refused_while_behind_then_promoted_and_updated() {
    let mut c = Cluster::start();
    let leader = c.wait_converged(&[0, 1, 2]);
    started_everywhere(&c, leader, 3);
    let follower = (leader + 1) % 3;
    for k in 0..20 {
        let (code, _) = c.ctl(leader, &["put", &format!("k{k}"), "v"]);
        assert_eq!(code, 0);
    }
    let (cid, _) = list_json(&c.ep(leader)).expect("list");
    let l = c.add_slot("m4");
    let peer_url = format!("http://127.0.0.1:{}", c.members[l].peer);
    let out = ctl_when_healthy(
        &c.ep(follower),
        &["member", "add", "m4", "--learner", "--peer-urls", &peer_url],
    );
    assert_eq!(out.code, 0, "member add --learner: {}", stderr(&out));
    let text = stdout(&out);
    let lid = u64::from_str_radix(text.split_whitespace().nth(1).unwrap_or("x"), 16)
        .unwrap_or_else(|_| panic!("{text}"));
    assert!(
        text.starts_with(&format!("Member {lid:16x} added to cluster {cid:16x}")),
        "{text}"
    );
    let initial = env_line(&text, "ETCD_INITIAL_CLUSTER");

    // Not started, so not in sync: refused, by the leader and through a
    // follower (forwarded to the leader).
    for via in [leader, follower] {
        let out = ctl_full(&c.ep(via), &["member", "promote", &format!("{lid:x}")]);
        assert_ne!(out.code, 0);
        assert!(
            stderr(&out).contains(
                "Error: etcdserver: can only promote a learner member which is in sync with leader"
            ),
            "via {via}: {}",
            stderr(&out)
        );
    }
    let vid = c.status(follower).expect("status").0;
    let out = ctl_full(&c.ep(follower), &["member", "promote", &format!("{vid:x}")]);
    assert!(
        stderr(&out).contains("Error: etcdserver: can only promote a learner member\n"),
        "{}",
        stderr(&out)
    );
    let out = ctl_when_healthy(
        &c.ep(leader),
        &[
            "member",
            "add",
            "m5",
            "--learner",
            "--peer-urls",
            "http://127.0.0.1:9",
        ],
    );
    assert!(
        stderr(&out).contains("Error: etcdserver: too many learner members in cluster"),
        "{}",
        stderr(&out)
    );

    // Start the learner: it catches up and serves serializable reads; the
    // table shows it as a started learner.
    c.spawn_with(l, &initial, "existing");
    c.wait_converged(&[0, 1, 2, l]);
    eventually(20, "learner listed as started", &c, || {
        let (code, t) = c.ctl(leader, &["member", "list", "-w", "table"]);
        let t = collapse(&t);
        (code == 0
            && t.contains(&format!("| {lid:x} | started | m4 | {peer_url} |"))
            && t.contains("| true |"))
        .then_some(())
    });
    let (code, out) = c.ctl(l, &["get", "k7", "--print-value-only", "--consistency=s"]);
    assert_eq!((code, out.trim()), (0, "v"));
    let (code, out) = c.ctl(l, &["endpoint", "status", "-w", "json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"isLearner\":true"), "{out}");
    // Like etcd, a learner serves only Status and serializable reads.
    for args in [&["put", "k", "x"][..], &["get", "k7"], &["member", "list"]] {
        let out = ctl_full(&c.ep(l), args);
        assert!(
            stderr(&out).contains("Error: etcdserver: rpc not supported for learner"),
            "{args:?} on a learner: {}",
            stderr(&out)
        );
    }

    // In sync now: promote (through a follower) succeeds with etcdctl's text.
    let text = eventually(30, "promote succeeds", &c, || {
        let out = ctl_full(&c.ep(follower), &["member", "promote", &format!("{lid:x}")]);
        (out.code == 0).then(|| stdout(&out))
    });
    assert_eq!(
        text.trim(),
        format!("Member {lid:16x} promoted in cluster {cid:16x}")
    );
    let (_, rows) = list_json(&c.ep(leader)).expect("list");
    assert!(rows.iter().all(|r| !r.4), "no learner left: {rows:?}");
    // A four-voter cluster: the promoted member takes writes.
    // (once it has applied its promotion itself)
    eventually(20, "the promoted member takes writes", &c, || {
        (c.ctl(l, &["put", "from", "promoted"]).0 == 0).then_some(())
    });
    c.wait_converged(&[0, 1, 2, l]);

    // member update: new peer URL; the member restarts listening on it and
    // the cluster reaches it there.
    let new_peer = crate::harness::free_port();
    let new_url = format!("http://127.0.0.1:{new_peer}");
    let out = ctl_when_healthy(
        &c.ep(leader),
        &[
            "member",
            "update",
            &format!("{lid:x}"),
            "--peer-urls",
            &new_url,
        ],
    );
    assert_eq!(out.code, 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("Member {lid:16x} updated in cluster {cid:16x}")
    );
    c.kill(l);
    c.members[l].peer = new_peer;
    c.spawn_with(l, &initial, "existing");
    let (code, _) = c.ctl(leader, &["put", "after", "update"]);
    assert_eq!(code, 0);
    c.wait_converged(&[0, 1, 2, l]);
    let (_, rows) = list_json(&c.ep(follower)).expect("list");
    assert!(
        rows.iter()
            .any(|r| r.0 == lid && r.2 == vec![new_url.clone()]),
        "{rows:?}"
    );
    let h = hashes(&c, &[0, 1, 2, l]);
    assert!(h.iter().all(|x| *x == h[0]), "hashkv differs: {h:?}");
}

/// Runs of spaces as one space, runs of `-` as one `-` (table column
/// widths depend on the lengths of IDs, names and URLs).
fn collapse(s: &str) -> String {
    s.lines()
        .map(|l| {
            let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut out = String::new();
            for ch in l.chars() {
                if !(ch == '-' && out.ends_with('-')) {
                    out.push(ch);
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces what legitimately differs between two single-member servers
/// (member IDs, cluster ID, names, ports) with placeholders.
fn masked(text: &str, subs: &[(String, String)]) -> String {
    let mut t = text.to_string();
    for (from, to) in subs {
        t = t.replace(from.as_str(), to);
    }
    // etcdctl's client log lines carry timestamps: keep only the result.
    t.lines()
        .filter(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The Cluster service's answers, etcd 3.5.1 vs the subject, both single
/// members: every error text and the outputs of successful changes.
#[test]
fn cluster_service_errors_match_etcd() {
    let (etcd, subject) = start_pair(subject_kind(), &[]);
    let run = |s: &Server| -> Vec<(i32, String, String)> {
        let ep = s.endpoint();
        let (cid, rows) = list_json(&ep).expect("member list");
        let me = rows[0].clone();
        // Members that never run: loopback addresses on the discard port,
        // where no server of a concurrent test can be listening (the
        // leader's transport does try to reach them).
        let p = |n: u16| format!("http://127.0.0.{}:9", 10 + n);
        let mut subs = vec![
            (format!("{cid:x}"), "<cluster>".to_string()),
            (format!("{:x}", me.0), "<self>".to_string()),
            (me.1.clone(), "<name>".to_string()),
            (me.2[0].clone(), "<self-peer>".to_string()),
            (me.3[0].clone(), "<self-client>".to_string()),
        ];
        for n in 1..8 {
            subs.push((p(n), format!("<peer{n}>")));
        }
        let mut out = Vec::new();
        let mut step = |args: Vec<String>, subs: &mut Vec<(String, String)>| {
            let o = etcdctl(Some(&ep), &args, None);
            let so = stdout(&o);
            // A new member's ID (any long hex token not known yet, in the
            // default or the table output) becomes a placeholder.
            for tok in so.split(|c: char| c.is_whitespace() || c == '|' || c == ',') {
                let is_id = tok.len() >= 12 && tok.chars().all(|c| c.is_ascii_hexdigit());
                if is_id && !subs.iter().any(|(f, _)| f == tok) {
                    let n = subs.len();
                    subs.push((tok.to_string(), format!("<new{n}>")));
                }
            }
            out.push((o.code, masked(&so, subs), masked(&stderr(&o), subs)));
        };
        let a = |v: &[&str]| strings(v);
        step(a(&["member", "remove", "1234"]), &mut subs);
        step(
            a(&["member", "update", "1234", "--peer-urls", &p(1)]),
            &mut subs,
        );
        step(a(&["member", "promote", &format!("{:x}", me.0)]), &mut subs);
        step(a(&["member", "promote", "1234"]), &mut subs);
        step(a(&["member", "add", "x", "--peer-urls", "foo"]), &mut subs);
        step(
            a(&["member", "add", "x", "--peer-urls", "http://127.0.0.1"]),
            &mut subs,
        );
        step(
            a(&["member", "add", "x", "--peer-urls", &me.2[0]]),
            &mut subs,
        );
        step(
            a(&["member", "add", "l1", "--learner", "--peer-urls", &p(1)]),
            &mut subs,
        );
        let (_, rows) = list_json(&ep).expect("list");
        let lid = rows.iter().find(|r| r.4).expect("learner").0;
        step(
            a(&["member", "add", "l2", "--learner", "--peer-urls", &p(2)]),
            &mut subs,
        );
        step(a(&["member", "promote", &format!("{lid:x}")]), &mut subs);
        step(
            a(&["member", "promote", &format!("{lid:x}"), "-w", "table"]),
            &mut subs,
        );
        step(a(&["member", "list"]), &mut subs);
        step(a(&["member", "list", "-w", "table"]), &mut subs);
        step(
            a(&[
                "member",
                "update",
                &format!("{lid:x}"),
                "--peer-urls",
                &p(3),
            ]),
            &mut subs,
        );
        step(a(&["member", "list", "-w", "table"]), &mut subs);
        step(
            a(&[
                "member",
                "update",
                &format!("{lid:x}"),
                "--peer-urls",
                &p(4),
                "-w",
                "table",
            ]),
            &mut subs,
        );
        step(a(&["member", "remove", &format!("{lid:x}")]), &mut subs);
        step(a(&["member", "remove", &format!("{lid:x}")]), &mut subs);
        step(
            a(&[
                "member",
                "add",
                "l1",
                "--learner",
                "--peer-urls",
                &p(5),
                "-w",
                "table",
            ]),
            &mut subs,
        );
        let (_, rows) = list_json(&ep).expect("list");
        let lid = rows.iter().find(|r| r.4).expect("learner").0;
        step(
            a(&["member", "remove", &format!("{lid:x}"), "-w", "table"]),
            &mut subs,
        );
        // A second voter may join a one-member cluster; a third may not
        // while the second has not started (strict reconfig check).
        step(a(&["member", "add", "v2", "--peer-urls", &p(6)]), &mut subs);
        step(a(&["member", "add", "v3", "--peer-urls", &p(7)]), &mut subs);
        out
    };
    let want = run(&etcd);
    let got = run(&subject);
    assert_eq!(want.len(), got.len());
    let mut update_deviations = 0;
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        // etcdctl prints members in ID order; IDs differ between the two
        // servers, so compare `member add`'s ETCD_INITIAL_CLUSTER and the
        // plain list as sets of lines / entries.
        let norm = |s: &str| {
            let mut lines: Vec<String> = collapse(s)
                .lines()
                .map(|l| {
                    if let Some(v) = l.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
                        let mut parts: Vec<&str> = v.trim_end_matches('"').split(',').collect();
                        parts.sort();
                        format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","))
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            if !s.contains("ETCD_NAME") {
                lines.sort();
            }
            lines
        };
        let (wl, gl) = (norm(&w.1), norm(&g.1));
        // etcd 3.5.1's MemberUpdate replaces the member's raft attributes
        // whole and so lists an updated learner as a voter while Raft keeps
        // it a learner (it can then never be promoted). ferrocd keeps the
        // flag; that one cell is the only difference allowed.
        let learner_flag_bug = wl.len() == gl.len()
            && wl != gl
            && wl.iter().zip(&gl).all(|(a, b)| {
                a == b || (a.contains("unstarted") && *a == b.replace("| true |", "| false |"))
            });
        if learner_flag_bug {
            update_deviations += 1;
            continue;
        }
        assert_eq!(
            (w.0, wl, norm(&w.2)),
            (g.0, gl, norm(&g.2)),
            "step {i}: etcd (left) vs subject (right)"
        );
    }
    assert!(
        update_deviations >= 1,
        "the etcd 3.5.1 update/learner difference was not observed; revisit the allowance"
    );
    // The scenario really exercised the errors it claims to (bad URLs are
    // refused by etcdctl itself, before any request).
    let all: String = want.iter().map(|w| w.2.clone()).collect();
    for e in [
        "etcdserver: member not found",
        "etcdserver: can only promote a learner member",
        "etcdserver: can only promote a learner member which is in sync with leader",
        "etcdserver: Peer URLs already exists",
        "etcdserver: too many learner members in cluster",
        "etcdserver: re-configuration failed due to not enough started members",
    ] {
        assert!(all.contains(e), "etcd never said {e:?}:\n{all}");
    }
}
