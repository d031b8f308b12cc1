//! Results of a run: latencies in an HDR histogram (µs, 3 significant
//! digits: a reported percentile is within 0.1% of the exact one), error
//! counts, wall time and CPU time; printed like etcd's `pkg/report` (Summary,
//! Response time histogram, Latency distribution, Error distribution) and as
//! one JSON line for scripts.
//!
//! Workloads with several kinds of request (txn-mixed's reads and writes)
//! also record each kind in its own histogram (`kinds`); every request is
//! in the main histogram too. `counters` hold workload events that are not
//! errors (CAS and STM retries, reads and writes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// etcd's percentile list (`pkg/report`: pctls).
pub const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

/// Largest latency recorded exactly: one hour. Slower requests are clamped
/// (counted, at this value).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What one executor (or the whole run, after merging) measured.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Latencies of successful requests, µs.
    pub hist: Histogram<u64>,
    /// Failed requests by error text.
    pub errors: BTreeMap<String, u64>,
    /// Latencies by request kind (a subset of `hist`), µs.
    pub kinds: BTreeMap<String, Histogram<u64>>,
    /// Workload events that are not errors (e.g. `cas_retries`).
    pub counters: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            // Bounds are valid constants: low 1 >= 1, high >= 2 * low, sigfig 3 <= 5.
            hist: new_histogram(),
            errors: BTreeMap::new(),
            kinds: BTreeMap::new(),
            counters: BTreeMap::new(),
        }
    }

    /// Records one successful request. A latency under 1 µs counts as 1 µs.
    pub fn ok(&mut self, latency: Duration) {
        self.hist.saturating_record(clamp_us(latency));
    }

    /// Records one successful request of a kind (also in the main histogram).
    pub fn ok_kind(&mut self, kind: &str, latency: Duration) {
        self.ok(latency);
        if !self.kinds.contains_key(kind) {
            self.kinds.insert(kind.to_string(), new_histogram());
        }
        if let Some(h) = self.kinds.get_mut(kind) {
            h.saturating_record(clamp_us(latency));
        }
    }

    /// Adds `n` to a counter.
    pub fn count(&mut self, what: &str, n: u64) {
        *self.counters.entry(what.to_string()).or_insert(0) += n;
    }

    pub fn err(&mut self, what: String) {
        *self.errors.entry(what).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.hist.add(&other.hist);
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        for (k, h) in &other.kinds {
            let mine = self.kinds.entry(k.clone()).or_insert_with(new_histogram);
            let _ = mine.add(h);
        }
        for (k, v) in &other.counters {
            *self.counters.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are valid constants: low 1 >= 1, high >= 2 * low, sigfig 3 <= 5.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("histogram bounds")
}

fn clamp_us(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US)
}

/// Percentile of a histogram, 0 when empty.
pub fn pct(h: &Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_percentile(p)
    }
}

/// CPU time spent during the run, in µs, if it could be read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuUse {
    pub client_us: Option<f64>,
    pub server_us: Option<f64>,
}

/// Everything printed about one run.
#[derive(Clone, Debug)]
pub struct Report {
    pub cmd: String,
    pub total: u64,
    pub clients: usize,
    pub conns: usize,
    pub executors: usize,
    pub duration: Duration,
    pub rec: Recorder,
    pub cpu: CpuUse,
    /// Open-loop target rate (`--rate`); `None` for a closed loop.
    pub rate: Option<f64>,
}

/// Latency summary of one request kind in the JSON line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KindStats {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// The `--json` line. Field names are a contract with scripts: keep them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JsonLine {
    pub cmd: String,
    pub total: u64,
    pub clients: usize,
    pub conns: usize,
    pub executors: usize,
    pub duration_s: f64,
    /// Successful requests per second of wall time.
    pub rps: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub errors: u64,
    /// utime+stime of ferrobench itself per request (ok + failed); null if
    /// /proc could not be read.
    pub client_cpu_us_per_op: Option<f64>,
    /// utime+stime of the `--server-pid` processes per request; null
    /// without `--server-pid`.
    pub server_cpu_us_per_op: Option<f64>,
    /// Open-loop target rate, requests/s; null for a closed loop. With a
    /// rate, latencies count from each request's due time.
    pub rate: Option<f64>,
    /// Per request kind (txn-mixed: `read`, `write`); `{}` otherwise.
    pub kinds: BTreeMap<String, KindStats>,
    /// Workload counters (e.g. `cas_retries`, `stm_retries`); `{}` if none.
    pub counters: BTreeMap<String, u64>,
}

fn per_op(us: Option<f64>, ops: u64) -> Option<f64> {
    us.filter(|_| ops > 0).map(|u| u / ops as f64)
}

impl Report {
    /// Requests that finished, successfully or not.
    pub fn done(&self) -> u64 {
        self.rec.hist.len() + self.rec.error_count()
    }

    /// Successful requests per second; 0 for an empty or instant run.
    pub fn rps(&self) -> f64 {
        let s = self.duration.as_secs_f64();
        if s > 0.0 {
            self.rec.hist.len() as f64 / s
        } else {
            0.0
        }
    }

    pub fn percentile_us(&self, p: f64) -> u64 {
        pct(&self.rec.hist, p)
    }

    pub fn json(&self) -> JsonLine {
        JsonLine {
            cmd: self.cmd.clone(),
            total: self.total,
            clients: self.clients,
            conns: self.conns,
            executors: self.executors,
            duration_s: self.duration.as_secs_f64(),
            rps: self.rps(),
            p50_us: self.percentile_us(50.0),
            p90_us: self.percentile_us(90.0),
            p99_us: self.percentile_us(99.0),
            p999_us: self.percentile_us(99.9),
            max_us: if self.rec.hist.is_empty() {
                0
            } else {
                self.rec.hist.max()
            },
            errors: self.rec.error_count(),
            client_cpu_us_per_op: per_op(self.cpu.client_us, self.done()),
            server_cpu_us_per_op: per_op(self.cpu.server_us, self.done()),
            rate: self.rate,
            kinds: self
                .rec
                .kinds
                .iter()
                .map(|(k, h)| {
                    let st = KindStats {
                        count: h.len(),
                        p50_us: pct(h, 50.0),
                        p99_us: pct(h, 99.0),
                        max_us: if h.is_empty() { 0 } else { h.max() },
                    };
                    (k.clone(), st)
                })
                .collect(),
            counters: self.rec.counters.clone(),
        }
    }

    pub fn json_line(&self) -> String {
        // A struct of numbers and strings always serializes.
        serde_json::to_string(&self.json()).unwrap_or_default()
    }

    /// The human summary, laid out like etcd's benchmark output (seconds
    /// with 4 decimals, latencies in ms), plus CPU per request.
    pub fn human(&self) -> String {
        let h = &self.rec.hist;
        let secs = |us: f64| us / 1e6;
        let mut s = String::new();
        if !h.is_empty() {
            let _ = writeln!(s, "\nSummary:");
            let _ = writeln!(s, "  Total:\t{:.4} secs.", self.duration.as_secs_f64());
            let _ = writeln!(s, "  Slowest:\t{:.4} secs.", secs(h.max() as f64));
            let _ = writeln!(s, "  Fastest:\t{:.4} secs.", secs(h.min() as f64));
            let _ = writeln!(s, "  Average:\t{:.4} secs.", secs(h.mean()));
            let _ = writeln!(s, "  Stddev:\t{:.4} secs.", secs(h.stdev()));
            let _ = writeln!(s, "  Requests/sec:\t{:.4}", self.rps());
            s.push_str(&self.histogram_text());
            let _ = writeln!(s, "\nLatency distribution:");
            for p in PERCENTILES {
                let _ = writeln!(s, "  {p}% in {:.3} ms.", self.percentile_us(p) as f64 / 1e3);
            }
        }
        let done = self.done();
        let _ = writeln!(
            s,
            "\nRun: {} {} requests, {} clients, {} conns, {} executors",
            self.cmd, done, self.clients, self.conns, self.executors
        );
        if let Some(c) = per_op(self.cpu.client_us, done) {
            let _ = writeln!(s, "  Client CPU:\t{c:.1} µs/request");
        }
        if let Some(c) = per_op(self.cpu.server_us, done) {
            let _ = writeln!(s, "  Server CPU:\t{c:.1} µs/request");
        }
        if let Some(r) = self.rate {
            let _ = writeln!(
                s,
                "  Open loop:\ttarget {r:.0} req/s, achieved {:.0} req/s (latency from each request's due time)",
                self.rps()
            );
        }
        for (k, st) in self.json().kinds {
            let _ = writeln!(
                s,
                "  {k}:\t{} requests, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                st.count,
                st.p50_us as f64 / 1e3,
                st.p99_us as f64 / 1e3,
                st.max_us as f64 / 1e3
            );
        }
        for (k, n) in &self.rec.counters {
            let _ = writeln!(s, "  {k}:\t{n}");
        }
        if !self.rec.errors.is_empty() {
            let _ = writeln!(s, "\nError distribution:");
            for (e, n) in &self.rec.errors {
                let _ = writeln!(s, "  [{n}]\t{e}");
            }
        }
        s
    }

    /// etcd's 10-bucket response time histogram (bucket bounds in seconds).
    fn histogram_text(&self) -> String {
        let h = &self.rec.hist;
        let (lo, hi) = (h.min(), h.max());
        let step = (hi - lo) as f64 / 10.0;
        let bounds: Vec<f64> = (0..=10)
            .map(|i| {
                if i == 10 {
                    hi as f64
                } else {
                    lo as f64 + step * i as f64
                }
            })
            .collect();
        let mut counts = [0u64; 11];
        for v in h.iter_recorded() {
            let x = h.highest_equivalent(v.value_iterated_to()) as f64;
            let x = x.min(hi as f64);
            let b = bounds.iter().position(|&b| x <= b).unwrap_or(10);
            counts[b] += v.count_at_value();
        }
        let most = counts.iter().copied().max().unwrap_or(0).max(1);
        let mut s = String::from("\nResponse time histogram:\n");
        for (b, c) in bounds.iter().zip(counts) {
            let bar = "∎".repeat((c * 40 / most) as usize);
            let _ = writeln!(s, "  {:.4} [{c}]\t|{bar}", b / 1e6);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_of(lat_us: impl IntoIterator<Item = u64>, duration: Duration) -> Report {
        let mut rec = Recorder::new();
        for us in lat_us {
            rec.ok(Duration::from_micros(us));
        }
        Report {
            cmd: "put".into(),
            total: rec.hist.len(),
            clients: 16,
            conns: 4,
            executors: 1,
            duration,
            rec,
            cpu: CpuUse {
                client_us: Some(50_000.0),
                server_us: None,
            },
            rate: None,
        }
    }

    fn within(got: u64, want: u64) -> bool {
        // 3 significant digits: within 0.1% (+1 for rounding).
        got.abs_diff(want) <= want / 1000 + 1
    }

    #[test]
    fn percentiles_of_uniform_latencies_are_exact_within_precision() {
        let r = report_of(1..=1000, Duration::from_secs(1));
        for (p, want) in [
            (10.0, 100),
            (50.0, 500),
            (90.0, 900),
            (99.0, 990),
            (99.9, 999),
        ] {
            assert!(
                within(r.percentile_us(p), want),
                "p{p}: {}",
                r.percentile_us(p)
            );
        }
        assert_eq!(r.rec.hist.max(), 1000);
        assert_eq!(r.rec.hist.min(), 1);
        // Mean 500.5, population stddev sqrt((1000^2-1)/12) = 288.67.
        assert!(
            (r.rec.hist.mean() - 500.5).abs() < 1.0,
            "{}",
            r.rec.hist.mean()
        );
        assert!(
            (r.rec.hist.stdev() - 288.67).abs() < 1.0,
            "{}",
            r.rec.hist.stdev()
        );
        assert_eq!(r.rps(), 1000.0);
    }

    #[test]
    fn tail_latency_is_not_hidden_by_the_median() {
        // 990 fast requests and 10 slow ones: p99 is still fast, p99.9 and
        // max see the slow ones.
        let lat = std::iter::repeat_n(200, 990).chain(std::iter::repeat_n(50_000, 10));
        let r = report_of(lat, Duration::from_millis(500));
        assert!(within(r.percentile_us(50.0), 200));
        assert!(within(r.percentile_us(99.0), 200));
        assert!(within(r.percentile_us(99.9), 50_000));
        assert!(within(r.json().max_us, 50_000));
        assert_eq!(r.rps(), 2000.0);
    }

    #[test]
    fn sub_microsecond_and_huge_latencies_are_clamped_not_lost() {
        let mut rec = Recorder::new();
        rec.ok(Duration::from_nanos(10));
        rec.ok(Duration::from_secs(10_000));
        assert_eq!(rec.hist.len(), 2);
        assert_eq!(rec.hist.min(), 1);
        assert!(within(rec.hist.max(), MAX_LATENCY_US));
    }

    #[test]
    fn merging_recorders_adds_counts_and_errors() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.ok(Duration::from_micros(10));
        b.ok(Duration::from_micros(20));
        a.err("x".into());
        b.err("x".into());
        b.err("y".into());
        a.merge(&b);
        assert_eq!(a.hist.len(), 2);
        assert_eq!(a.errors["x"], 2);
        assert_eq!(a.error_count(), 3);
    }

    #[test]
    fn json_line_has_the_documented_fields_and_types() {
        let mut r = report_of(1..=100, Duration::from_millis(100));
        r.rec.err("rpc error: code = Unavailable desc = x".into());
        r.cpu.server_us = Some(10_100.0);
        let line = r.json_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let o = v.as_object().unwrap();
        assert!(o["cmd"].is_string());
        for k in [
            "total",
            "clients",
            "conns",
            "executors",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
        ] {
            assert!(o[k].is_u64(), "{k} should be an integer: {}", o[k]);
        }
        for k in [
            "duration_s",
            "rps",
            "client_cpu_us_per_op",
            "server_cpu_us_per_op",
        ] {
            assert!(o[k].is_f64(), "{k} should be a float: {}", o[k]);
        }
        assert!(o["rate"].is_null(), "closed loop: {line}");
        assert_eq!(o["kinds"], serde_json::json!({}));
        assert_eq!(o["counters"], serde_json::json!({}));
        assert_eq!(o.len(), 18, "unexpected field set: {line}");
        assert_eq!(o["cmd"], "put");
        assert_eq!(o["errors"], 1);
        // 101 requests done (100 ok + 1 error): CPU per request.
        assert!((o["client_cpu_us_per_op"].as_f64().unwrap() - 50_000.0 / 101.0).abs() < 1e-9);
        assert!((o["server_cpu_us_per_op"].as_f64().unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(o["rps"].as_f64().unwrap(), 1000.0);
        // And it reads back into the same struct.
        let back: JsonLine = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r.json());
    }

    #[test]
    fn empty_run_reports_zeros_and_null_cpu_not_nan() {
        let mut r = report_of([], Duration::ZERO);
        r.cpu = CpuUse::default();
        let v: serde_json::Value = serde_json::from_str(&r.json_line()).unwrap();
        assert_eq!(v["rps"].as_f64(), Some(0.0));
        assert_eq!(v["p99_us"].as_u64(), Some(0));
        assert!(v["client_cpu_us_per_op"].is_null());
        assert!(v["server_cpu_us_per_op"].is_null());
        assert!(!r.human().contains("NaN"));
    }

    #[test]
    fn human_summary_has_etcds_sections() {
        let mut r = report_of(1..=1000, Duration::from_secs(2));
        r.rec.err("boom".into());
        let s = r.human();
        for needle in [
            "Summary:",
            "  Total:\t2.0000 secs.",
            "  Slowest:\t0.0010 secs.",
            "  Fastest:\t0.0000 secs.",
            "  Requests/sec:\t500.0000",
            "Response time histogram:",
            "Latency distribution:",
            "  10% in 0.100 ms.",
            // 99.9% of 1000 lands on the 1000th value (etcd's index
            // ceil(p*(n+1)/100)-1 = 999 picks it too).
            "  99.9% in 1.000 ms.",
            "Client CPU:\t50.0 µs/request",
            "Error distribution:\n  [1]\tboom",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
        }
        // The histogram's buckets hold every request.
        let counted: u64 = s
            .lines()
            .filter(|l| l.contains('|'))
            .filter_map(|l| l.split_once(" [").and_then(|(_, r)| r.split_once(']')))
            .filter_map(|(n, _)| n.parse::<u64>().ok())
            .sum();
        assert_eq!(counted, 1000);
    }

    #[test]
    fn json_schema_of_open_loop_kinds_and_counters() {
        let mut r = report_of([], Duration::from_secs(1));
        for us in 1..=100 {
            r.rec.ok_kind("read", Duration::from_micros(us));
        }
        for us in [1000, 2000] {
            r.rec.ok_kind("write", Duration::from_micros(us));
        }
        r.rec.count("cas_retries", 3);
        r.rate = Some(5000.0);
        let line = r.json_line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["rate"].as_f64(), Some(5000.0));
        // Kinds are also in the main histogram.
        assert_eq!(r.rec.hist.len(), 102);
        let read = &v["kinds"]["read"];
        let write = &v["kinds"]["write"];
        let kind_fields = ["count", "p50_us", "p99_us", "max_us"];
        for k in [read, write] {
            let o = k.as_object().unwrap();
            assert_eq!(o.len(), 4, "{k}");
            for f in kind_fields {
                assert!(o[f].is_u64(), "{f}: {k}");
            }
        }
        assert_eq!(read["count"], 100);
        assert!(within(read["p50_us"].as_u64().unwrap(), 50));
        assert_eq!(read["max_us"], 100);
        assert_eq!(write["count"], 2);
        assert!(within(write["max_us"].as_u64().unwrap(), 2000));
        assert_eq!(v["counters"]["cas_retries"], 3);
        let back: JsonLine = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r.json());
        let h = r.human();
        assert!(h.contains("Open loop:\ttarget 5000 req/s"), "{h}");
        assert!(h.contains("cas_retries:\t3"), "{h}");
        assert!(h.contains("read:\t100 requests"), "{h}");
    }

    #[test]
    fn merge_adds_kinds_and_counters() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.ok_kind("read", Duration::from_micros(5));
        b.ok_kind("read", Duration::from_micros(7));
        b.ok_kind("write", Duration::from_micros(9));
        a.count("x", 1);
        b.count("x", 2);
        a.merge(&b);
        assert_eq!(a.kinds["read"].len(), 2);
        assert_eq!(a.kinds["write"].len(), 1);
        assert_eq!(a.hist.len(), 3);
        assert_eq!(a.counters["x"], 3);
    }

    #[test]
    fn percentiles_count_every_queued_request_not_only_the_stalled_one() {
        // Histogram math behind coordinated-omission correction: a 100 ms
        // stall at 1000 req/s with 1 client. Closed loop records one 100 ms
        // sample; open loop records the 100 queued requests with latencies
        // 100, 99, ..., 1 ms. Both over 1000 requests of 1 ms otherwise.
        let mut closed = Recorder::new();
        let mut open = Recorder::new();
        for _ in 0..900 {
            closed.ok(Duration::from_millis(1));
            open.ok(Duration::from_millis(1));
        }
        closed.ok(Duration::from_millis(100));
        for q in 0..100u64 {
            open.ok(Duration::from_millis(100 - q));
        }
        for _ in 0..99 {
            closed.ok(Duration::from_millis(1));
        }
        assert_eq!(closed.hist.len(), 1000);
        assert_eq!(open.hist.len(), 1000);
        assert!(
            within(pct(&closed.hist, 99.0), 1000),
            "closed p99 hides the stall"
        );
        // Open loop: the top 10% are the queue: p99 is ~90 ms, p95 ~50 ms.
        assert!(
            within(pct(&open.hist, 99.0), 90_000),
            "{}",
            pct(&open.hist, 99.0)
        );
        assert!(
            within(pct(&open.hist, 95.0), 50_000),
            "{}",
            pct(&open.hist, 95.0)
        );
        assert!(pct(&open.hist, 99.0) > 50 * pct(&closed.hist, 99.0));
    }
}
