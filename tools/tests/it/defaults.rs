//! Zero-flag start-up: `ferrocd` in an empty working directory must behave
//! like `etcd` does: serve on the default endpoint 127.0.0.1:2379, keep its
//! data in `./default.etcd`, and stop by itself on SIGTERM.
//!
//! These are the only tests that use the fixed ports 2379/2380; all other
//! tests use free ephemeral ports. A cross-process file lock serialises them
//! (nextest runs tests as separate processes). When the etcd reference runs
//! first, ferrocd starts on a 2379 that still has TIME_WAIT connections
//! from etcd, which etcd itself tolerates (SO_REUSEADDR); see `lifecycle.rs`
//! for the deterministic test of that.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::harness::{
    etcdctl, fresh_temp_dir, port_is_free, send_signal, spawn_server, strings, tail, wait_timeout,
    FileLock, Kind,
};

const PORT_WAIT: Duration = Duration::from_secs(15);
const READY: Duration = Duration::from_secs(10);
const EXIT: Duration = Duration::from_secs(5);

struct Guard {
    child: Option<Child>,
    log: std::path::PathBuf,
    dir: std::path::PathBuf,
    label: &'static str,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "\n---- {} log ({}) ----\n{}---- end ----",
                self.label,
                self.log.display(),
                tail(&self.log, 150)
            );
        }
        if std::env::var_os("FERROCD_IT_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn wait_default_ports_free() {
    let deadline = Instant::now() + PORT_WAIT;
    while !(port_is_free(2379) && port_is_free(2380)) {
        assert!(
            Instant::now() < deadline,
            "127.0.0.1:2379 or :2380 stayed busy for {PORT_WAIT:?}: another etcd/ferrocd is running \
             outside this test suite; stop it (e.g. `ss -ltnp | grep -E ':(2379|2380)'`) and re-run"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `kind` with no flags in an empty cwd and returns its exit status
/// after SIGTERM.
fn run_without_flags(kind: Kind) -> ExitStatus {
    let _lock = FileLock::acquire("ferrocd-it-default-ports-2379.lock");
    wait_default_ports_free();

    let dir = fresh_temp_dir(&format!("defaults-{}", kind.label()));
    let cwd = dir.join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let log = dir.join("server.log"); // outside cwd: cwd starts empty
    let child = spawn_server(kind.bin(), &[], &cwd, &log);
    let mut g = Guard {
        child: Some(child),
        log,
        dir,
        label: kind.label(),
    };

    // Ready: etcdctl with NO --endpoints (its default is 127.0.0.1:2379).
    let deadline = Instant::now() + READY;
    loop {
        if let Some(st) = g.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "{} without flags exited early: {st} (see its log below; an \"address already in use\" \
                 here means something outside this suite took 127.0.0.1:2379/2380 meanwhile)",
                kind.label()
            );
        }
        let out =
            crate::harness::etcdctl_with_timeouts(None, &strings(&["get", "x"]), None, "2s", "1s");
        if out.code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} without flags did not serve etcdctl on the default endpoint 127.0.0.1:2379 within {READY:?}; \
             last etcdctl stderr: {}\n(if another etcd/ferrocd was started on 127.0.0.1:2379 outside this suite \
             meanwhile, this failure is not meaningful: re-run)",
            kind.label(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A write and a read on the default endpoint.
    let put = etcdctl(None, &strings(&["put", "defaults-key", "v"]), None);
    assert_eq!(put.code, 0, "put on default endpoint: {put:?}");
    let get = etcdctl(
        None,
        &strings(&["get", "defaults-key", "--print-value-only"]),
        None,
    );
    assert_eq!(
        (get.code, get.stdout.as_slice()),
        (0, b"v\n".as_slice()),
        "get: {get:?}"
    );

    let data = cwd.join("default.etcd");
    assert!(
        Path::new(&data).is_dir(),
        "{} without flags did not create ./default.etcd in its working dir; cwd holds: {:?}",
        kind.label(),
        std::fs::read_dir(&cwd)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );

    let started = Instant::now();
    send_signal(g.child.as_ref().unwrap(), libc::SIGTERM);
    let st = wait_timeout(g.child.as_mut().unwrap(), EXIT);
    let st =
        st.unwrap_or_else(|| panic!("{} did not exit within {EXIT:?} of SIGTERM", kind.label()));
    g.child = None;
    eprintln!(
        "[it] {} exited {:?} after SIGTERM: {st}",
        kind.label(),
        started.elapsed()
    );
    st
}

#[test]
fn fresh_folder_defaults() {
    let st = run_without_flags(Kind::Ferrocd);
    assert_eq!(
        st.code(),
        Some(0),
        "ferrocd must exit with status 0 after SIGTERM, got {st}"
    );
}

/// The same check against real etcd, validating the test itself. Note: etcd
/// 3.5.1 does NOT exit 0 on SIGTERM: after its graceful shutdown it re-raises
/// the signal (pkg/osutil/interrupt_unix.go), so its wait status is "killed by
/// SIGTERM" (a shell shows 143).
#[test]
fn fresh_folder_defaults_reference_etcd() {
    use std::os::unix::process::ExitStatusExt;
    let st = run_without_flags(Kind::Etcd);
    assert!(
        st.code() == Some(0) || st.signal() == Some(libc::SIGTERM),
        "etcd after SIGTERM: {st}"
    );
}
