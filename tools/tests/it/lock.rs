//! Distributed locks and leader election.
//!
//! * Through the real etcdctl 3.5.1 (`etcdctl lock`, `etcdctl elect`, which
//!   run clientv3/concurrency on the client over KV, Lease and Watch): a
//!   waiter blocks until the holder releases, a SIGKILLed holder's lock is
//!   released when its `--ttl 2` session lease expires, and an election
//!   fails over to the second candidate while `elect -l` shows each leader.
//!   Each scenario runs against real etcd and ferrocd and the transcripts
//!   (lease IDs masked) must be equal.
//! * The server-side services `v3lockpb.Lock` and `v3electionpb.Election`
//!   (Lock, Unlock, Campaign, Proclaim, Leader, Resign) called directly
//!   with our gRPC client, step by step against etcd: keys, revisions,
//!   status codes and messages must match, including the clean-up of a
//!   waiter whose deadline passes or whose client cancels (RST_STREAM).
//! * A server stopped while a Lock waits exits cleanly.
//!
//! Observe (server streaming, not reachable through etcdctl) is tested in
//! net/tests/it/observe.rs against an in-process server.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use net::client::{CallOptions, Client};
use net::grpc::Status;
use net::pb::etcdserverpb as pb;
use net::pb::v3electionpb as epb;
use net::pb::v3lockpb as lpb;

use crate::harness::{etcdctl_bin, start_pair, subject_kind, Server};

/// An etcdctl running in the background, its stdout collected.
struct Bg {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Bg {
    fn spawn(endpoint: &str, args: &[&str]) -> Bg {
        let mut cmd = Command::new(etcdctl_bin());
        cmd.env_clear();
        for var in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.env("ETCDCTL_API", "3");
        cmd.arg(format!("--endpoints={endpoint}"));
        cmd.args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn etcdctl");
        let mut pipe = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Bg { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until stdout has at least `lines` lines; false on timeout.
    fn wait_lines(&self, lines: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().lines().count() >= lines {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and still own.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill");
    }

    /// Waits for the process to exit; its exit code (128 + signal if killed).
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(crate::harness::exit_code(st));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces every `<prefix>/<hex lease>` by `<prefix>/<Ln>` (n in order of
/// first appearance).
fn mask_leases(s: &str, prefix: &str) -> String {
    let mut ids: Vec<String> = Vec::new();
    let pat = format!("{prefix}/");
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(&pat) {
        out.push_str(&rest[..i + pat.len()]);
        rest = &rest[i + pat.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len());
        let id = rest[..end].to_string();
        let n = ids.iter().position(|x| *x == id).unwrap_or_else(|| {
            ids.push(id.clone());
            ids.len() - 1
        });
        out.push_str(&format!("<L{n}>"));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Runs `scenario` against etcd and the subject (in parallel) and compares
/// the transcripts.
fn compare(scenario: fn(&Server) -> Vec<String>) {
    let (etcd, subject) = start_pair(subject_kind(), &[]);
    let (want, got) = std::thread::scope(|s| {
        let w = s.spawn(|| scenario(&etcd));
        let g = s.spawn(|| scenario(&subject));
        (w.join().unwrap(), g.join().unwrap())
    });
    if std::env::var_os("FERROCD_IT_DUMP").is_some() {
        eprintln!(
            "etcd:\n{}\n{}:\n{}",
            want.join("\n"),
            subject.kind.label(),
            got.join("\n")
        );
    }
    assert_eq!(
        got,
        want,
        "{} differs from etcd (left: {}, right: etcd)",
        subject.kind.label(),
        subject.kind.label()
    );
}

fn lock_waits_for_release(s: &Server) -> Vec<String> {
    let ep = s.endpoint();
    let mut t = Vec::new();
    let mut a = Bg::spawn(&ep, &["lock", "mylock"]);
    assert!(
        a.wait_lines(1, Duration::from_secs(10)),
        "A never got the lock"
    );
    let b = Bg::spawn(&ep, &["lock", "mylock"]);
    std::thread::sleep(Duration::from_millis(1000));
    t.push(format!("A holds: {}", a.output()));
    t.push(format!("B while A holds: {:?}", b.output()));
    // SIGINT: etcdctl closes its session (revokes the lease) and exits.
    a.signal(libc::SIGINT);
    t.push(format!("A exit: {:?}", a.wait(Duration::from_secs(10))));
    assert!(
        b.wait_lines(1, Duration::from_secs(10)),
        "B never got the lock"
    );
    t.push(format!("B holds: {}", b.output()));
    // Both keys have the lock's prefix, B's is a different lease.
    mask_leases(&t.join("\n"), "mylock")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn lock_waiter_acquires_after_release() {
    compare(lock_waits_for_release);
}

fn lock_holder_killed(s: &Server) -> Vec<String> {
    let ep = s.endpoint();
    let mut t = Vec::new();
    let mut a = Bg::spawn(&ep, &["lock", "--ttl", "2", "klock"]);
    assert!(
        a.wait_lines(1, Duration::from_secs(10)),
        "A never got the lock"
    );
    let b = Bg::spawn(&ep, &["lock", "klock"]);
    std::thread::sleep(Duration::from_millis(500));
    t.push(format!("B while A holds: {:?}", b.output()));
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    t.push(format!("A exit: {:?}", a.wait(Duration::from_secs(10))));
    assert!(
        b.wait_lines(1, Duration::from_secs(15)),
        "B never got the lock after A was killed"
    );
    let waited = killed.elapsed();
    // The session lease (TTL 2 s) has to expire first.
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(10),
        "B got the lock {waited:?} after A was killed"
    );
    t.push(format!("A: {}B: {}", a.output(), b.output()));
    mask_leases(&t.join("\n"), "klock")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn lock_released_when_holder_killed() {
    compare(lock_holder_killed);
}

fn election_failover(s: &Server) -> Vec<String> {
    let ep = s.endpoint();
    let mut t = Vec::new();
    let listen = Bg::spawn(&ep, &["elect", "-l", "myelection"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut p1 = Bg::spawn(&ep, &["elect", "myelection", "p1"]);
    assert!(p1.wait_lines(2, Duration::from_secs(10)), "p1 never led");
    let p2 = Bg::spawn(&ep, &["elect", "myelection", "p2"]);
    assert!(
        listen.wait_lines(2, Duration::from_secs(10)),
        "listener saw nothing"
    );
    std::thread::sleep(Duration::from_millis(1000));
    t.push(format!("p1: {}", p1.output()));
    t.push(format!("p2 while p1 leads: {:?}", p2.output()));
    t.push(format!("listener: {}", listen.output()));
    // SIGINT: p1 resigns and closes its session.
    p1.signal(libc::SIGINT);
    t.push(format!("p1 exit: {:?}", p1.wait(Duration::from_secs(10))));
    assert!(p2.wait_lines(2, Duration::from_secs(10)), "p2 never led");
    assert!(
        listen.wait_lines(4, Duration::from_secs(10)),
        "listener did not see p2"
    );
    t.push(format!("p2: {}", p2.output()));
    t.push(format!("listener: {}", listen.output()));
    mask_leases(&t.join("\n"), "myelection")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn elect_fails_over_and_listener_follows() {
    compare(election_failover);
}

// ---- the gRPC services, called directly ----

fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("executor")
        .run(fut)
}

/// A call's outcome for the transcript: the response through `show`, or
/// the status code and message.
fn outcome<T>(r: Result<T, Status>, show: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => show(v),
        Err(st) => format!("error {} {:?}", st.code.0, st.message),
    }
}

fn rev(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(-1, |h| h.revision)
}

const LOCK: &str = "/v3lockpb.Lock/Lock";
const UNLOCK: &str = "/v3lockpb.Lock/Unlock";
const CAMPAIGN: &str = "/v3electionpb.Election/Campaign";
const PROCLAIM: &str = "/v3electionpb.Election/Proclaim";
const LEADER: &str = "/v3electionpb.Election/Leader";
const RESIGN: &str = "/v3electionpb.Election/Resign";

async fn grant(c: &Client) -> i64 {
    let g: pb::LeaseGrantResponse = c
        .unary(
            "/etcdserverpb.Lease/LeaseGrant",
            &pb::LeaseGrantRequest { ttl: 60, id: 0 },
        )
        .await
        .expect("grant");
    g.id
}

async fn count(c: &Client, prefix: &str) -> i64 {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let r = c
        .range(&pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            ..Default::default()
        })
        .await
        .expect("range");
    r.count
}

fn short() -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_millis(500)),
        ..CallOptions::default()
    }
}

fn no_deadline() -> CallOptions {
    CallOptions {
        timeout: None,
        ..CallOptions::default()
    }
}

fn lock_service_script(s: &Server) -> Vec<String> {
    let ep = s.endpoint();
    let t = run(async move {
        let c = Client::connect(&ep).await.expect("connect");
        let mut t = Vec::new();
        let l1 = grant(&c).await;
        let l2 = grant(&c).await;
        let lock = |name: &str, lease: i64| lpb::LockRequest {
            name: name.as_bytes().to_vec(),
            lease,
        };
        let show = |r: lpb::LockResponse| {
            format!(
                "locked {} rev {}",
                String::from_utf8_lossy(&r.key),
                rev(&r.header)
            )
        };
        let r = c.unary::<_, lpb::LockResponse>(LOCK, &lock("lk", l1)).await;
        let key1 = r.as_ref().map(|r| r.key.clone()).unwrap_or_default();
        t.push(outcome(r, show));
        // A second holder waits; its deadline passes and its key goes away.
        let r = c
            .unary_with::<_, lpb::LockResponse>(LOCK, &lock("lk", l2), &short())
            .await;
        t.push(outcome(r, show));
        glommio::timer::sleep(Duration::from_millis(500)).await;
        t.push(format!("keys under lk/: {}", count(&c, "lk/").await));
        // The same, cancelled by the client (RST_STREAM, no deadline sent).
        let r = glommio::timer::timeout(Duration::from_millis(500), async {
            Ok(
                c.unary_with::<_, lpb::LockResponse>(LOCK, &lock("lk", l2), &no_deadline())
                    .await,
            )
        })
        .await;
        t.push(format!("cancelled: {}", r.is_err()));
        glommio::timer::sleep(Duration::from_millis(500)).await;
        t.push(format!("keys under lk/: {}", count(&c, "lk/").await));
        // Re-entrant with the same lease.
        t.push(outcome(c.unary(LOCK, &lock("lk", l1)).await, show));
        let r = c
            .unary::<_, lpb::UnlockResponse>(UNLOCK, &lpb::UnlockRequest { key: key1 })
            .await;
        t.push(outcome(r, |r| format!("unlocked rev {}", rev(&r.header))));
        t.push(format!("keys under lk/: {}", count(&c, "lk/").await));
        // Now the second lease gets it at once.
        t.push(outcome(c.unary(LOCK, &lock("lk", l2)).await, show));
        // Errors.
        t.push(outcome(c.unary(LOCK, &lock("bad", 0x1234)).await, show));
        let r = c
            .unary::<_, lpb::UnlockResponse>(UNLOCK, &lpb::UnlockRequest { key: Vec::new() })
            .await;
        t.push(outcome(r, |r| format!("unlocked rev {}", rev(&r.header))));
        // Lease 0: the server grants a session lease.
        let r = c
            .unary::<_, lpb::LockResponse>(LOCK, &lock("auto", 0))
            .await;
        // The granted lease ID (and so the key's length) depends on the
        // member ID, which differs between the two servers: compare shape.
        t.push(outcome(r, |r| {
            let key = String::from_utf8_lossy(&r.key).into_owned();
            let lease_hex = key.strip_prefix("auto/").unwrap_or("");
            let lease_ok = u64::from_str_radix(lease_hex, 16).is_ok_and(|l| l > 0);
            format!("locked auto/<lease ok: {lease_ok}> rev {}", rev(&r.header))
        }));
        (t, l1, l2)
    });
    let (mut t, l1, l2) = t;
    for line in t.iter_mut() {
        *line = line
            .replace(&format!("{l1:x}"), "<L1>")
            .replace(&format!("{l2:x}"), "<L2>");
    }
    t
}

#[test]
fn lock_service_matches_etcd() {
    compare(lock_service_script);
}

fn election_service_script(s: &Server) -> Vec<String> {
    let ep = s.endpoint();
    let (mut t, l1, l2) = run(async move {
        let c = Client::connect(&ep).await.expect("connect");
        let mut t = Vec::new();
        let l1 = grant(&c).await;
        let l2 = grant(&c).await;
        let name = b"el".to_vec();
        let campaign = |lease: i64, value: &str| epb::CampaignRequest {
            name: name.clone(),
            lease,
            value: value.as_bytes().to_vec(),
        };
        let show_c = |r: epb::CampaignResponse| {
            let l = r.leader.unwrap_or_default();
            format!(
                "leader {} {} rev {} lease {:x} hdr {}",
                String::from_utf8_lossy(&l.name),
                String::from_utf8_lossy(&l.key),
                l.rev,
                l.lease,
                rev(&r.header)
            )
        };
        let show_l = |r: epb::LeaderResponse| {
            let kv = r.kv.unwrap_or_default();
            format!(
                "kv {} = {} create {} mod {} version {} lease {:x} hdr {}",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease,
                rev(&r.header)
            )
        };
        let leader_req = epb::LeaderRequest { name: name.clone() };
        t.push(outcome(c.unary(LEADER, &leader_req).await, show_l));
        let r = c
            .unary::<_, epb::CampaignResponse>(CAMPAIGN, &campaign(l1, "v1"))
            .await;
        let lk = r.as_ref().ok().and_then(|r| r.leader.clone());
        t.push(outcome(r, show_c));
        // A second candidate waits; its deadline passes and it resigns.
        let r = c
            .unary_with::<_, epb::CampaignResponse>(CAMPAIGN, &campaign(l2, "v2"), &short())
            .await;
        t.push(outcome(r, show_c));
        glommio::timer::sleep(Duration::from_millis(500)).await;
        t.push(format!("keys under el/: {}", count(&c, "el/").await));
        t.push(outcome(c.unary(LEADER, &leader_req).await, show_l));
        let proclaim = |leader: Option<epb::LeaderKey>, v: &str| epb::ProclaimRequest {
            leader,
            value: v.as_bytes().to_vec(),
        };
        let r = c
            .unary::<_, epb::ProclaimResponse>(PROCLAIM, &proclaim(lk.clone(), "v1b"))
            .await;
        t.push(outcome(r, |r| format!("proclaimed hdr {}", rev(&r.header))));
        t.push(outcome(c.unary(LEADER, &leader_req).await, show_l));
        // Campaigning again with the same lease and another value proclaims.
        t.push(outcome(
            c.unary(CAMPAIGN, &campaign(l1, "v1c")).await,
            show_c,
        ));
        t.push(outcome(c.unary(LEADER, &leader_req).await, show_l));
        let r = c
            .unary::<_, epb::ResignResponse>(RESIGN, &epb::ResignRequest { leader: lk.clone() })
            .await;
        t.push(outcome(r, |r| format!("resigned hdr {}", rev(&r.header))));
        t.push(outcome(c.unary(LEADER, &leader_req).await, show_l));
        let r = c
            .unary::<_, epb::ProclaimResponse>(PROCLAIM, &proclaim(lk.clone(), "late"))
            .await;
        t.push(outcome(r, |r| format!("proclaimed hdr {}", rev(&r.header))));
        let r = c
            .unary::<_, epb::ResignResponse>(RESIGN, &epb::ResignRequest { leader: lk })
            .await;
        t.push(outcome(r, |r| format!("resigned hdr {}", rev(&r.header))));
        let r = c
            .unary::<_, epb::ProclaimResponse>(PROCLAIM, &proclaim(None, "x"))
            .await;
        t.push(outcome(r, |r| format!("proclaimed hdr {}", rev(&r.header))));
        let r = c
            .unary::<_, epb::ResignResponse>(RESIGN, &epb::ResignRequest { leader: None })
            .await;
        t.push(outcome(r, |r| format!("resigned hdr {}", rev(&r.header))));
        // The second lease now wins at once.
        t.push(outcome(
            c.unary(CAMPAIGN, &campaign(l2, "v2")).await,
            show_c,
        ));
        t.push(outcome(c.unary(LEADER, &leader_req).await, show_l));
        (t, l1, l2)
    });
    for line in t.iter_mut() {
        *line = line
            .replace(&format!("{l1:x}"), "<L1>")
            .replace(&format!("{l2:x}"), "<L2>");
    }
    t
}

#[test]
fn election_service_matches_etcd() {
    compare(election_service_script);
}

/// A Lock still waiting when the server is stopped neither blocks nor
/// breaks the shutdown (the waiter's cleanup has no executor left).
#[test]
fn server_stops_cleanly_with_a_waiting_lock() {
    let mut s = Server::start(subject_kind(), &[]);
    let ep = s.endpoint();
    let waiter = std::thread::spawn(move || {
        run(async move {
            let c = Client::connect(&ep).await.expect("connect");
            let l1 = grant(&c).await;
            let l2 = grant(&c).await;
            let lock = |lease: i64| lpb::LockRequest {
                name: b"stop".to_vec(),
                lease,
            };
            let _: lpb::LockResponse = c.unary(LOCK, &lock(l1)).await.expect("lock");
            c.unary::<_, lpb::LockResponse>(LOCK, &lock(l2))
                .await
                .map(|_| ())
        })
    });
    std::thread::sleep(Duration::from_millis(1000));
    let st = s
        .terminate(Duration::from_secs(10))
        .expect("server stopped");
    assert!(st.success(), "server exited with {st:?}");
    let r = waiter.join().expect("waiter thread");
    assert!(r.is_err(), "the waiting Lock succeeded: {r:?}");
}
