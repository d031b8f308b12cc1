//! kill -9 durability loop, black-box, with a client library nobody here
//! wrote (python-etcd3 writes, the real etcdctl reads).
//!
//! The promise under test: every acknowledged put survives a crash at any
//! instant, with the revision it was acknowledged with, and nothing
//! unacknowledged is invented.
//!
//! One ferrocd member keeps one data dir for the whole test (history
//! accumulates). Each iteration: `tests/python/crash_writer.py` (one long-lived
//! process, 8 threads) puts unique keys `u/ITER/THREAD/SEQ` and overwrites
//! shared keys `s/K`, logging every put that returned OK as `key value
//! revision` (flushed per line); after a seeded random delay the server gets
//! SIGKILL, the writers stop, the server restarts on the same ports and data
//! dir, and a linearizable `etcdctl get` checks (see `verify`):
//! - every acked unique key is there with its value, `mod_revision` =
//!   `create_revision` = the acked revision, version 1;
//! - every shared key's value was attempted by some writer, its
//!   `mod_revision` is >= every revision acked for it, and equals the acked
//!   revision when that value was acked;
//! - every key/value in the store was attempted (nothing invented), no two
//!   acks share a revision, a revision some ack owns holds that ack's put;
//! - the store revision is >= every acked revision and never goes back;
//!   every put acked in iteration i got a revision above the one read before
//!   it (a restart never re-issues a revision);
//! - a unique key seen by any earlier verification read (acked or not; a
//!   linearizable read only returns committed writes) is still there.
//!
//! Every iteration checks the round just killed, the one before, one random
//! older round and the shared keys; every 5th iteration (and the last) checks
//! the whole key space, so a crash that damages old history is caught within
//! 5 iterations while the check cost stays about linear in the history.
//!
//! Knobs: `FERROCD_CRASH_ITERATIONS` (default 50), `FERROCD_CRASH_SEED`
//! (replays the kill delays and the writers' key/value choices; timing still
//! differs), `FERROCD_CRASH_FULL_EVERY` (whole-key-space check every N
//! iterations; default max(5, iterations / 20)),
//! `FERROCD_CRASH_RECOVERY_CYCLES` (default 4). `FERROCD_BIN` tests another
//! ferrocd build; `FERROCD_IT_KEEP_TMP=1` keeps the data dir and logs (kept
//! anyway on failure). Long run:
//! `FERROCD_CRASH_ITERATIONS=2000 cargo nextest run -p tools --test it --no-capture crash`.
//!
//! Validated against planted bugs (local patches, never committed; run with
//! `FERROCD_BIN=<patched build>`): `WalLog::append` returning before the WAL
//! append is durable (acks before the write) fails both tests in the first
//! iteration with LOST keys; recovery dropping the last WAL entry fails the
//! loop within ~15 iterations and the start-up test within 4 cycles.
//!
//! Only process crashes are simulated (kill -9): data in the page cache
//! survives, so this does not test fsync placement (engine::wal's own crash
//! tests cut files at the durable position for that). It catches acking
//! before the WAL write was issued, replay/recovery that loses or reorders
//! entries, torn-tail repair that truncates acknowledged data, revisions
//! re-issued after a restart, and a member that cannot restart after being
//! killed at some instant of its start-up.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{
    etcdctl_with_timeouts, ferrocd_bin, fresh_temp_dir, port_is_free, send_signal, spawn_server,
    strings, tail, wait_timeout,
};

const DEFAULT_ITERATIONS: usize = 50;
/// Uniform kill delay after the writers started, in ms.
const KILL_DELAY_MS: (u64, u64) = (20, 400);
/// A debug build replays a grown WAL slowly; generous.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const WRITER_TIMEOUT: Duration = Duration::from_secs(60);
/// ferrocd's log line once it serves clients (etcd logs the same).
const READY_LINE: &str = "ready to serve client requests";

fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok().filter(|v| !v.is_empty())?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

// ---------------------------------------------------------------------------
// Seeded randomness (splitmix64; no dependency)
// ---------------------------------------------------------------------------

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed(test: &str) -> u64 {
    let s = env_num("FERROCD_CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000_000
    });
    eprintln!("[crash] {test}: seed {s} (replay the kill delays with FERROCD_CRASH_SEED={s})");
    s
}

/// A free loopback port for a member that must get the same ports back after
/// every crash: outside the kernel's ephemeral range (32768-60999 here), so
/// neither `free_port()` users nor the source port of some outgoing connection
/// can take it while the member is down; never handed out twice by this
/// process.
pub fn stable_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    static RNG: OnceLock<Mutex<Rng>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    let rng = RNG.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Mutex::new(Rng(t ^ (u64::from(std::process::id()) << 32)))
    });
    loop {
        let p = rng.lock().unwrap().range(10_000, 32_000) as u16;
        if port_is_free(p) && used.lock().unwrap().insert(p) {
            return p;
        }
    }
}

// ---------------------------------------------------------------------------
// The member: one data dir and fixed ports for the whole test
// ---------------------------------------------------------------------------

struct Member {
    dir: PathBuf,
    log: PathBuf,
    client_port: u16,
    args: Vec<String>,
    child: Option<Child>,
    spawned_at: Instant,
    /// Length of the (appended) server log when the current process started.
    log_offset: u64,
    starts: usize,
}

impl Member {
    fn new(tag: &str) -> Member {
        let dir = fresh_temp_dir(tag);
        let (client_port, peer_port) = (stable_port(), stable_port());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let args = strings(&[
            "--name",
            "crash",
            "--data-dir",
            dir.join("data").to_str().unwrap(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("crash={peer_url}"),
        ]);
        Member {
            log: dir.join("server.log"),
            dir,
            client_port,
            args,
            child: None,
            spawned_at: Instant::now(),
            log_offset: 0,
            starts: 0,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "member already running");
        self.log_offset = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        self.starts += 1;
        self.spawned_at = Instant::now();
        self.child = Some(spawn_server(
            ferrocd_bin(),
            &self.args,
            &self.dir,
            &self.log,
        ));
    }

    /// What the current process logged so far.
    fn log_since_spawn(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            if f.seek(SeekFrom::Start(self.log_offset)).is_ok() {
                let _ = f.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn failure(&self, what: &str) -> String {
        let what = if self
            .log_since_spawn()
            .contains("stopped serving; ferrocd exits")
        {
            format!(
                "{what}\nNOTE: ferrocd logged a graceful stop: it got SIGTERM/SIGINT, which this \
                 test never sends (a stray signal from another process on this machine?)"
            )
        } else {
            what.to_string()
        };
        format!(
            "{what}\ncommand: {} {}\ndata dir kept: {}\n---- server log (last 60 lines) ----\n{}",
            ferrocd_bin().display(),
            self.args.join(" "),
            self.dir.display(),
            tail(&self.log, 60)
        )
    }

    /// Ready = the member logged that it serves clients (what it also tells
    /// systemd with READY=1), and then a linearizable `etcdctl get` succeeds.
    /// Watching the log instead of probing with etcdctl in a loop saves
    /// ~0.2 s per restart (an etcdctl probe that dials before the listener
    /// exists waits out grpc-go's 1 s reconnect backoff). Returns the time
    /// from spawn to the ready line (seen within 5 ms; not the etcdctl
    /// probe's own ~40 ms, so that kill windows drawn from it fall inside
    /// the start-up); `Err` if the process exited.
    fn wait_ready(&mut self) -> Result<Duration, String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let logged_ready;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("ferrocd exited during start-up: {st}"));
            }
            if self.log_since_spawn().contains(READY_LINE) {
                logged_ready = self.spawned_at.elapsed();
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}",
                    self.failure(&format!(
                        "did not log {READY_LINE:?} within {READY_TIMEOUT:?}"
                    ))
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        loop {
            let out = etcdctl_with_timeouts(
                Some(&self.endpoint()),
                &strings(&["get", "x"]),
                None,
                "3s",
                "1s",
            );
            if out.code == 0 {
                return Ok(logged_ready);
            }
            if Instant::now() > deadline {
                panic!(
                    "{}",
                    self.failure(&format!(
                        "logged {READY_LINE:?} but `etcdctl get x` still fails after \
                         {READY_TIMEOUT:?}: exit {}: {}",
                        out.code,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Spawns and waits until ready. Retries only when the member could not
    /// bind its ports (something else held one for a moment while it was
    /// down; the ports are outside the ephemeral range to make that rare).
    fn start(&mut self) -> Duration {
        for attempt in 1.. {
            self.spawn();
            match self.wait_ready() {
                Ok(took) => return took,
                Err(why) => {
                    let log = self.log_since_spawn();
                    let clash = [
                        "address already in use",
                        "Address already in use",
                        "AddrInUse",
                    ]
                    .iter()
                    .any(|s| log.contains(s));
                    if !clash || attempt == 20 {
                        panic!("{}", self.failure(&why));
                    }
                    eprintln!("[crash] port clash at start (attempt {attempt}), retrying: {why}");
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        unreachable!()
    }

    /// SIGKILL; the process must still have been running (a server that died
    /// on its own is a failure, not a crash we made).
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("member not running");
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "{}",
                self.failure(&format!("ferrocd died on its own before the kill: {st}"))
            );
        }
        send_signal(&child, libc::SIGKILL);
        let st = wait_timeout(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("ferrocd pid {} survived SIGKILL for 10 s", child.id()));
        use std::os::unix::process::ExitStatusExt;
        if st.signal() != Some(libc::SIGKILL) {
            panic!(
                "{}",
                self.failure(&format!(
                    "ferrocd exited on its own ({st}) just before SIGKILL"
                ))
            );
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() || std::env::var_os("FERROCD_IT_KEEP_TMP").is_some() {
            eprintln!(
                "[crash] kept {} (data dir, server.log, ack logs)",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// The writer: tests/python/crash_writer.py, driven over stdin/stdout
// ---------------------------------------------------------------------------

struct Writer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Writer {
    fn spawn(dir: &Path) -> Writer {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/python/crash_writer.py"
        );
        let stderr = dir.join("writer.stderr");
        let mut child = Command::new("python3")
            .arg(script)
            .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run python3 ({e}); the crash test needs python3 with \
                     `pip install etcd3==0.12.0 protobuf==3.20.3 grpcio`"
                )
            });
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Writer {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        let sent = writeln!(self.stdin, "{line}").and_then(|_| self.stdin.flush());
        match sent
            .ok()
            .and_then(|_| self.lines.recv_timeout(WRITER_TIMEOUT).ok())
        {
            Some(answer) => answer,
            None => {
                let _ = self.child.kill();
                panic!(
                    "crash_writer.py did not answer {line:?} (needs python3 with \
                     `pip install etcd3==0.12.0 protobuf==3.20.3 grpcio`)\n---- its stderr ----\n{}",
                    tail(&self.stderr, 40)
                );
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `stopped acked=N failed=M attempted=K errors=...` → (N, M, K, errors).
fn parse_stopped(s: &str) -> (usize, usize, usize, String) {
    let mut acked = None;
    let mut failed = None;
    let mut attempted = None;
    let mut errors = String::new();
    for w in s.split_whitespace().skip(1) {
        match w.split_once('=') {
            Some(("acked", n)) => acked = n.parse().ok(),
            Some(("failed", n)) => failed = n.parse().ok(),
            Some(("attempted", n)) => attempted = n.parse().ok(),
            Some(("errors", e)) => errors = e.to_string(),
            _ => {}
        }
    }
    match (s.starts_with("stopped "), acked, failed, attempted) {
        (true, Some(a), Some(f), Some(t)) => (a, f, t, errors),
        _ => panic!("unexpected answer from crash_writer.py: {s:?}"),
    }
}

// ---------------------------------------------------------------------------
// What the writers were told, and the checks
// ---------------------------------------------------------------------------

type Val = Rc<str>;

fn short(v: &str) -> String {
    if v.len() <= 28 {
        v.to_string()
    } else {
        format!("{}…({} bytes)", &v[..28], v.len())
    }
}

fn is_unique(key: &str) -> bool {
    key.starts_with("u/")
}

#[derive(Default)]
struct History {
    /// Unique key → (value, acked revision, iteration).
    unique_acks: HashMap<String, (Val, i64, usize)>,
    /// Shared key → every acked (revision, value).
    shared_acks: HashMap<String, Vec<(i64, Val)>>,
    /// Acked revision → (key, value): one put is one revision.
    rev_owner: HashMap<i64, (String, Val)>,
    /// Key → every value a writer attempted (acked or not).
    attempted: HashMap<String, HashSet<Val>>,
    /// Unique keys a verification read returned (acked or not): committed,
    /// so they must stay. Key → (value, mod_revision).
    observed: HashMap<String, (Val, i64)>,
    max_acked_rev: i64,
    /// Store revision seen by the last verification read.
    last_revision: i64,
    total_acked: usize,
    /// Iterations with at least one ack.
    rounds_with_acks: usize,
}

impl History {
    /// Loads round `iter`'s logs; returns (acked lines, violations).
    fn load_round(&mut self, iter: usize, acklog: &Path) -> (usize, i64, Vec<String>) {
        let mut bad = Vec::new();
        let attempts = fs::read_to_string(format!("{}.attempts", acklog.display()))
            .unwrap_or_else(|e| panic!("read {}.attempts: {e}", acklog.display()));
        for line in attempts.lines() {
            let (k, v) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad attempts line {line:?}"));
            self.attempted
                .entry(k.to_string())
                .or_default()
                .insert(Val::from(v));
        }
        let acks = fs::read_to_string(acklog).unwrap_or_default();
        let mut n = 0;
        let mut last = 0;
        for line in acks.lines() {
            let mut it = line.split(' ');
            let (Some(k), Some(v), Some(r), None) = (it.next(), it.next(), it.next(), it.next())
            else {
                panic!("bad ack line {line:?} in {}", acklog.display());
            };
            let rev: i64 = r
                .parse()
                .unwrap_or_else(|_| panic!("bad ack line {line:?}"));
            let v = self
                .attempted
                .get(k)
                .and_then(|s| s.get(v).cloned())
                .unwrap_or_else(|| panic!("ack of a put never logged as attempted: {line:?}"));
            n += 1;
            last = last.max(rev);
            if rev <= self.last_revision {
                bad.push(format!(
                    "iteration {iter}: put {k}={} was acked with revision {rev}, but the store \
                     was already at revision {} before this round (a revision re-issued after \
                     a restart: something committed was lost)",
                    short(&v),
                    self.last_revision
                ));
            }
            if let Some((ok, ov)) = self.rev_owner.get(&rev) {
                bad.push(format!(
                    "revision {rev} acked twice: {ok}={} and {k}={} (iteration {iter})",
                    short(ov),
                    short(&v)
                ));
            }
            self.rev_owner.insert(rev, (k.to_string(), v.clone()));
            self.max_acked_rev = self.max_acked_rev.max(rev);
            if is_unique(k) {
                if let Some(prev) = self.unique_acks.insert(k.to_string(), (v, rev, iter)) {
                    bad.push(format!(
                        "unique key {k} acked twice (revisions {} and {rev})",
                        prev.1
                    ));
                }
            } else {
                self.shared_acks
                    .entry(k.to_string())
                    .or_default()
                    .push((rev, v));
            }
        }
        self.total_acked += n;
        if n > 0 {
            self.rounds_with_acks += 1;
        }
        (n, last, bad)
    }
}

struct Kv {
    value: Val,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
}

struct Snapshot {
    revision: i64,
    kvs: HashMap<String, Kv>,
}

fn b64decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 {c:?}"),
        }
    }
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Keys per etcdctl call: bounds the JSON a single read produces.
const PAGE: usize = 20_000;

/// The end of the range of keys starting with `prefix` (ASCII prefixes).
fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    let last = b.pop().expect("non-empty prefix");
    assert!(last < 0x7f, "ASCII prefixes only");
    b.push(last + 1);
    String::from_utf8(b).unwrap()
}

/// Every key under `prefix` ("" = the whole key space) through etcdctl, as
/// JSON, in pages of `PAGE` keys: a linearizable first page, the next ones
/// at the first page's revision (one consistent snapshot).
fn read_range(m: &Member, prefix: &str) -> Snapshot {
    let mut start = prefix.to_string();
    let mut revision = 0i64;
    let mut kvs = HashMap::new();
    loop {
        let mut args = strings(&["get", &start]);
        if prefix.is_empty() {
            args.push("--from-key".into());
        } else {
            args.push(prefix_end(prefix));
        }
        args.extend(strings(&["--limit", &PAGE.to_string(), "-w", "json"]));
        if revision > 0 {
            args.push(format!("--rev={revision}"));
        }
        let out = etcdctl_with_timeouts(Some(&m.endpoint()), &args, None, "25s", "2s");
        assert_eq!(
            out.code,
            0,
            "{}",
            m.failure(&format!(
                "etcdctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "etcdctl json: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let num = |v: &serde_json::Value, f: &str| v.get(f).and_then(|x| x.as_i64()).unwrap_or(0);
        if revision == 0 {
            revision = num(&j["header"], "revision");
        }
        let list = j
            .get("kvs")
            .and_then(|k| k.as_array())
            .cloned()
            .unwrap_or_default();
        let more = j.get("more").and_then(|x| x.as_bool()).unwrap_or(false);
        let mut last = None;
        for kv in &list {
            let key = String::from_utf8(b64decode(kv["key"].as_str().unwrap_or(""))).unwrap();
            let value = String::from_utf8_lossy(&b64decode(kv["value"].as_str().unwrap_or("")))
                .into_owned();
            last = Some(key.clone());
            // The next page starts at the last key again (the command line
            // cannot carry `key + "\0"`); it is the same key-value.
            kvs.entry(key).or_insert(Kv {
                value: Val::from(value),
                create_revision: num(kv, "create_revision"),
                mod_revision: num(kv, "mod_revision"),
                version: num(kv, "version"),
            });
        }
        match last {
            Some(k) if more => start = k,
            _ => break,
        }
    }
    Snapshot { revision, kvs }
}

/// Which part of the key space a verification reads.
enum Scope {
    Everything,
    Prefixes(Vec<String>),
}

impl Scope {
    fn covers(&self, key: &str) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Prefixes(ps) => ps.iter().any(|p| key.starts_with(p.as_str())),
        }
    }
}

/// Reads `scope` and checks it against everything acked so far. Returns the
/// number of keys read and the violations.
fn verify(m: &Member, h: &mut History, scope: &Scope) -> (usize, Vec<String>) {
    let mut snap = Snapshot {
        revision: i64::MAX,
        kvs: HashMap::new(),
    };
    let prefixes = match scope {
        Scope::Everything => vec![String::new()],
        Scope::Prefixes(ps) => ps.clone(),
    };
    for p in &prefixes {
        let s = read_range(m, p);
        snap.revision = snap.revision.min(s.revision);
        snap.kvs.extend(s.kvs);
    }
    let mut bad = Vec::new();
    let rev = snap.revision;
    if rev < h.max_acked_rev {
        bad.push(format!(
            "store revision {rev} < acked revision {} (of {})",
            h.max_acked_rev,
            h.rev_owner
                .get(&h.max_acked_rev)
                .map(|o| o.0.as_str())
                .unwrap_or("?")
        ));
    }
    if rev < h.last_revision {
        bad.push(format!(
            "store revision went back from {} (read before the last crash) to {rev}",
            h.last_revision
        ));
    }
    // Acked unique keys: exactly as acknowledged.
    for (k, (v, r, iter)) in &h.unique_acks {
        if !scope.covers(k) {
            continue;
        }
        match snap.kvs.get(k) {
            None => bad.push(format!(
                "LOST: {k}={} acked with revision {r} in iteration {iter} is missing",
                short(v)
            )),
            Some(kv) => {
                if kv.value != *v {
                    bad.push(format!(
                        "{k}: acked value {} (revision {r}, iteration {iter}), found {}",
                        short(v),
                        short(&kv.value)
                    ));
                }
                if (kv.mod_revision, kv.create_revision, kv.version) != (*r, *r, 1) {
                    bad.push(format!(
                        "{k}: acked with revision {r} (iteration {iter}); found mod_revision {} \
                         create_revision {} version {}",
                        kv.mod_revision, kv.create_revision, kv.version
                    ));
                }
            }
        }
    }
    // Shared keys: the last acked write or a later attempted one.
    for (k, acks) in &h.shared_acks {
        if !scope.covers(k) {
            continue;
        }
        let (max_rev, max_val) = acks.iter().max_by_key(|a| a.0).unwrap();
        match snap.kvs.get(k) {
            None => bad.push(format!(
                "LOST: shared key {k} (last acked {}={} at revision {max_rev}) is missing",
                k,
                short(max_val)
            )),
            Some(kv) => {
                if kv.mod_revision < *max_rev {
                    bad.push(format!(
                        "{k}: mod_revision {} ({}) is older than the acked put at revision \
                         {max_rev} ({})",
                        kv.mod_revision,
                        short(&kv.value),
                        short(max_val)
                    ));
                }
                if let Some((r, _)) = acks.iter().find(|a| a.1 == kv.value) {
                    if *r != kv.mod_revision {
                        bad.push(format!(
                            "{k}: value {} was acked with revision {r}, found with mod_revision {}",
                            short(&kv.value),
                            kv.mod_revision
                        ));
                    }
                }
            }
        }
    }
    // Nothing invented; revisions are owned by one put each.
    let mut mod_revs: HashMap<i64, &str> = HashMap::new();
    for (k, kv) in &snap.kvs {
        if !h.attempted.get(k).is_some_and(|s| s.contains(&kv.value)) {
            bad.push(format!(
                "INVENTED: {k}={} (mod_revision {}) was never attempted by a writer",
                short(&kv.value),
                kv.mod_revision
            ));
        }
        if kv.mod_revision > rev || kv.mod_revision < 2 {
            bad.push(format!(
                "{k}: mod_revision {} outside [2, store revision {rev}]",
                kv.mod_revision
            ));
        }
        if let Some(other) = mod_revs.insert(kv.mod_revision, k) {
            bad.push(format!(
                "{k} and {other} share mod_revision {}",
                kv.mod_revision
            ));
        }
        if let Some((ok, ov)) = h.rev_owner.get(&kv.mod_revision) {
            if ok != k || *ov != kv.value {
                bad.push(format!(
                    "revision {} was acked for {ok}={}, but the store has {k}={} there",
                    kv.mod_revision,
                    short(ov),
                    short(&kv.value)
                ));
            }
        }
    }
    // What an earlier read saw stays (unique keys are never rewritten).
    for (k, (v, r)) in &h.observed {
        if !scope.covers(k) {
            continue;
        }
        match snap.kvs.get(k) {
            Some(kv) if kv.value == *v && kv.mod_revision == *r => {}
            found => bad.push(format!(
                "{k}={} at revision {r} was returned by an earlier linearizable read, now {}",
                short(v),
                match found {
                    None => "missing".to_string(),
                    Some(kv) => format!("{} at {}", short(&kv.value), kv.mod_revision),
                }
            )),
        }
    }
    for (k, kv) in &snap.kvs {
        if is_unique(k) {
            h.observed
                .insert(k.clone(), (kv.value.clone(), kv.mod_revision));
        }
    }
    h.last_revision = h.last_revision.max(rev);
    (snap.kvs.len(), bad)
}

fn fail_on(m: &Member, seed: u64, iter: usize, bad: &[String]) {
    if bad.is_empty() {
        return;
    }
    let mut msg = format!(
        "DURABILITY VIOLATION (seed {seed}, iteration {iter}; {} problems, first 20):\n",
        bad.len()
    );
    for b in bad.iter().take(20) {
        msg.push_str("  - ");
        msg.push_str(b);
        msg.push('\n');
    }
    panic!("{}", m.failure(&msg));
}

fn full_every(iterations: usize) -> usize {
    env_num("FERROCD_CRASH_FULL_EVERY")
        .map(|n| n.max(1) as usize)
        .unwrap_or_else(|| (iterations / 20).max(5))
}

/// One round of writes killed at a random moment; returns
/// (acked, failed, last acked revision, kill delay ms).
fn crashed_round(
    m: &mut Member,
    w: &mut Writer,
    h: &mut History,
    rng: &mut Rng,
    seed: u64,
    iter: usize,
    delay_ms: (u64, u64),
) -> (usize, usize, i64, u64) {
    let acklog = m.dir.join(format!("acks-{iter:05}.log"));
    let delay = rng.range(delay_ms.0, delay_ms.1);
    let ans = w.cmd(&format!(
        "round {iter} {} {} {}",
        m.endpoint(),
        acklog.display(),
        seed.wrapping_add(iter as u64)
    ));
    assert_eq!(ans, "started", "crash_writer.py: {ans}");
    std::thread::sleep(Duration::from_millis(delay));
    m.kill9();
    let (acked, failed, _attempted, _errors) = parse_stopped(&w.cmd("stop"));
    let (lines, last, bad) = h.load_round(iter, &acklog);
    assert_eq!(
        lines, acked,
        "ack log of iteration {iter} has {lines} lines, writer says {acked}"
    );
    fail_on(m, seed, iter, &bad);
    (acked, failed, last, delay)
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// SIGKILL at a random moment while 8 writers put; restart; everything
/// acknowledged is there with its revision. ≥ 50 iterations on one data dir.
#[test]
fn kill9_loop_keeps_every_acknowledged_put() {
    let t0 = Instant::now();
    let iterations = env_num("FERROCD_CRASH_ITERATIONS")
        .map(|n| n as usize)
        .unwrap_or(DEFAULT_ITERATIONS);
    assert!(iterations > 0);
    let seed = seed("kill9_loop");
    let mut rng = Rng(seed);
    let full = full_every(iterations);
    let mut m = Member::new("crash");
    let mut w = Writer::spawn(&m.dir);
    let boot = m.start();
    let mut h = History::default();
    let (_, bad) = verify(&m, &mut h, &Scope::Everything);
    fail_on(&m, seed, 0, &bad);
    eprintln!(
        "[crash] {iterations} iterations, full check every {full}; ferrocd {} on {}; first start \
         {:.2} s",
        ferrocd_bin().display(),
        m.endpoint(),
        boot.as_secs_f64()
    );
    let mut restart_total = Duration::ZERO;
    let mut verify_total = Duration::ZERO;
    for iter in 1..=iterations {
        let (acked, failed, last, delay) =
            crashed_round(&mut m, &mut w, &mut h, &mut rng, seed, iter, KILL_DELAY_MS);
        let took = m.start();
        restart_total += took;
        let scope = if iter % full == 0 || iter == iterations {
            Scope::Everything
        } else {
            let older = rng.range(1, iter as u64) as usize;
            Scope::Prefixes(vec![
                format!("u/{iter:05}/"),
                format!("u/{:05}/", iter - 1),
                format!("u/{older:05}/"),
                "s/".to_string(),
            ])
        };
        let tv = Instant::now();
        let (keys, bad) = verify(&m, &mut h, &scope);
        fail_on(&m, seed, iter, &bad);
        verify_total += tv.elapsed();
        eprintln!(
            "[crash] iter {iter}/{iterations}: killed after {delay} ms; acked {acked} (failed \
             {failed}), total {}; last acked rev {last}; store rev {} after restart in {:.2} s; \
             checked {} ({keys} keys)",
            h.total_acked,
            h.last_revision,
            took.as_secs_f64(),
            if matches!(scope, Scope::Everything) {
                "all"
            } else {
                "recent"
            },
        );
    }
    let torn = fs::read_to_string(&m.log)
        .unwrap_or_default()
        .matches("torn WAL tail")
        .count();
    eprintln!(
        "[crash] done: seed {seed}, {iterations} kill -9s, {} puts acked (in {} rounds), {} unique \
         keys observed, store revision {}, torn tails repaired {torn}; {:.1} s in all: restarts {:.1} s, \
         checks {:.1} s",
        h.total_acked,
        h.rounds_with_acks,
        h.observed.len(),
        h.last_revision,
        t0.elapsed().as_secs_f64(),
        restart_total.as_secs_f64(),
        verify_total.as_secs_f64()
    );
    // Not vacuous: the kills must have interrupted real write traffic.
    assert!(
        h.total_acked >= 100.max(iterations),
        "only {} puts acked in {iterations} iterations: the test proved nothing",
        h.total_acked
    );
    assert!(
        h.shared_acks.values().map(Vec::len).sum::<usize>() >= 10,
        "too few overwrites of shared keys were acked"
    );
    assert!(
        h.rounds_with_acks * 2 >= iterations,
        "only {} of {iterations} rounds acked anything",
        h.rounds_with_acks
    );
}

/// SIGKILL during start-up: during the very first bootstrap, then, with
/// history in the WAL, repeatedly at random instants of recovery (WAL
/// replay, election, before/around ready). After each burst the member
/// must start and hold every acknowledged put.
#[test]
fn kill9_during_startup_and_recovery_keeps_every_acknowledged_put() {
    let t0 = Instant::now();
    let seed = seed("kill9_recovery");
    let mut rng = Rng(seed ^ 0x5eed);
    let cycles = env_num("FERROCD_CRASH_RECOVERY_CYCLES").unwrap_or(4) as usize;
    let kills_per_cycle = 3;
    let mut m = Member::new("crash-recovery");
    let mut w = Writer::spawn(&m.dir);
    let mut h = History::default();
    // (phase reached at the kill) → count
    let mut phases: HashMap<&'static str, usize> = HashMap::new();
    let mut before_ready = 0;
    let mut burst = |m: &mut Member, rng: &mut Rng, window: Duration, label: &str| {
        for k in 0..kills_per_cycle {
            m.spawn();
            let delay = rng.range(0, window.as_millis().max(1) as u64);
            std::thread::sleep(Duration::from_millis(delay));
            m.kill9();
            let log = m.log_since_spawn();
            // Informational only (log messages may change): how far the
            // start-up had got, from what the member logged.
            let phase = if log.contains(READY_LINE) {
                "after ready"
            } else if log.contains("starting ferrocd") {
                "raft start, replay, election"
            } else if log.contains("opened backend") {
                "opening or creating the WAL"
            } else {
                "before the backend was open"
            };
            if phase != "after ready" {
                before_ready += 1;
            }
            *phases.entry(phase).or_default() += 1;
            eprintln!("[crash] {label} kill {k}: {delay} ms after spawn ({phase})");
        }
    };
    // The very first start: killed while creating the data dir and WAL, at
    // instants drawn from how long a first start takes here (a throwaway
    // member in its own dir).
    let first_start = {
        let mut probe = Member::new("crash-recovery-probe");
        let took = probe.start();
        probe.kill9();
        took
    };
    burst(&mut m, &mut rng, first_start, "bootstrap");
    let mut ready = m.start();
    let (_, bad) = verify(&m, &mut h, &Scope::Everything);
    fail_on(&m, seed, 0, &bad);
    for cycle in 1..=cycles {
        let (acked, _, last, delay) =
            crashed_round(&mut m, &mut w, &mut h, &mut rng, seed, cycle, (50, 300));
        eprintln!(
            "[crash] cycle {cycle}: round killed after {delay} ms, acked {acked} (last rev {last})"
        );
        burst(&mut m, &mut rng, ready, &format!("cycle {cycle}"));
        ready = m.start();
        let (keys, bad) = verify(&m, &mut h, &Scope::Everything);
        fail_on(&m, seed, cycle, &bad);
        eprintln!(
            "[crash] cycle {cycle}: started in {:.2} s after {kills_per_cycle} start-up kills; \
             all {} acked puts verified ({keys} keys, store rev {})",
            ready.as_secs_f64(),
            h.total_acked,
            h.last_revision
        );
    }
    eprintln!(
        "[crash] done: seed {seed}, {} start-up kills by phase {phases:?}, {} puts acked, {:.1} s",
        (cycles + 1) * kills_per_cycle,
        h.total_acked,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        h.total_acked >= 100,
        "only {} puts acked: the test proved nothing",
        h.total_acked
    );
    assert!(
        before_ready >= (cycles + 1) * kills_per_cycle / 2,
        "only {before_ready} start-up kills landed before the member was ready"
    );
}
