//! Command line of the streaming workloads, `watch-latency` (`watch.rs`)
//! and `lease-keepalive` (`lease.rs`): etcd's `tools/benchmark` flag names
//! and defaults (`watch_latency.go`, `lease.go`), plus the global flags they
//! use (`--endpoints` (the first one), `--conns`, `--clients`, `--json`,
//! `--server-pid`, `--dial-timeout`). Both run on one glommio executor: the
//! client is one thread, like etcd's tool is one process.
//!
//! Besides the usual report they print, for `--server-pid`, the server's
//! resident memory (`VmRSS`) and, for watch-latency, its growth per
//! watcher once every watch is created.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::args::parse_duration;
use crate::report::Report;

pub const USAGE: &str = "\
ferrobench [global flags] watch-latency [--put-total 1000] [--put-rate 100]
    [--streams 10] [--watchers-per-stream 10] [--key-size 32] [--val-size 32]
    [--prevkv]
  streams x watchers-per-stream watches on one key prefix; puts of that key
  at --put-rate (open loop); latency = put sent -> event received, one
  sample per (put, watcher). Server CPU per op is per delivered event.
ferrobench [global flags] lease-keepalive [--total 10000]
  every client grants a lease (TTL 100 s), then each request is one
  keep-alive as clientv3's KeepAliveOnce sends it: a new LeaseKeepAlive
  stream, one request, one response, the stream canceled.
";

/// The global flags the streaming workloads use.
#[derive(Clone, Debug)]
pub struct StreamGlobal {
    /// Connection `j` goes to `endpoints[j % len]` (etcd's tool dials its
    /// endpoints round-robin).
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub json: bool,
    pub server_pids: Vec<u32>,
    pub dial_timeout: Duration,
}

/// `watch-latency`: etcd's watch_latency.go flags.
#[derive(Clone, Debug)]
pub struct WatchLatencyArgs {
    pub put_total: u64,
    pub put_rate: f64,
    pub streams: usize,
    pub watchers_per_stream: usize,
    pub key_size: usize,
    pub val_size: usize,
    pub prevkv: bool,
}

/// `lease-keepalive`: etcd's lease.go flags.
#[derive(Clone, Debug)]
pub struct LeaseKeepaliveArgs {
    pub total: u64,
}

pub enum StreamCommand {
    WatchLatency(WatchLatencyArgs),
    LeaseKeepalive(LeaseKeepaliveArgs),
}

/// Extra figures printed after the report.
#[derive(Debug, Default)]
pub struct Extra {
    pub lines: Vec<String>,
    pub json: Vec<(String, serde_json::Value)>,
}

pub(crate) fn parse(argv: &[String]) -> Result<(StreamGlobal, StreamCommand), String> {
    let mut g = StreamGlobal {
        endpoints: vec!["127.0.0.1:2379".into()],
        conns: 1,
        clients: 1,
        json: false,
        server_pids: Vec::new(),
        dial_timeout: Duration::from_secs(5),
    };
    let mut w = WatchLatencyArgs {
        put_total: 1000,
        put_rate: 100.0,
        streams: 10,
        watchers_per_stream: 10,
        key_size: 32,
        val_size: 32,
        prevkv: false,
    };
    let mut l = LeaseKeepaliveArgs { total: 10000 };
    let mut cmd = None;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == "watch-latency" || a == "lease-keepalive" {
            cmd = Some(a.clone());
            continue;
        }
        let Some(flag) = a.strip_prefix("--") else {
            return Err(format!("unexpected argument {a:?}"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        if name == "json" || name == "prevkv" {
            let on = match inline.as_deref() {
                None | Some("true") => true,
                Some("false") => false,
                Some(v) => return Err(format!("--{name}: not a boolean: {v}")),
            };
            if name == "json" {
                g.json = on;
            } else {
                w.prevkv = on;
            }
            continue;
        }
        let v = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("--{name} needs a value"))?,
        };
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("--{name}: not a number: {v:?}"))
        }
        match name.as_str() {
            "endpoints" => {
                g.endpoints = v
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .collect();
                if g.endpoints.is_empty() {
                    return Err("--endpoints: no endpoint".into());
                }
            }
            "conns" => g.conns = num(&name, &v)?,
            "clients" => g.clients = num(&name, &v)?,
            "dial-timeout" => {
                g.dial_timeout =
                    parse_duration(&v).ok_or_else(|| format!("--dial-timeout: {v:?}"))?
            }
            "server-pid" => {
                for p in v.split(',').filter(|p| !p.is_empty()) {
                    g.server_pids.push(num(&name, p)?);
                }
            }
            "put-total" => w.put_total = num(&name, &v)?,
            "put-rate" => w.put_rate = num(&name, &v)?,
            "streams" => w.streams = num(&name, &v)?,
            "watchers-per-stream" => w.watchers_per_stream = num(&name, &v)?,
            "key-size" => w.key_size = num(&name, &v)?,
            "val-size" => w.val_size = num(&name, &v)?,
            "total" => l.total = num(&name, &v)?,
            _ => return Err(format!("unknown flag --{name}")),
        }
    }
    if g.conns == 0 || g.clients == 0 {
        return Err("--conns and --clients must be at least 1".into());
    }
    if w.put_rate <= 0.0 || w.streams == 0 || w.watchers_per_stream == 0 || w.key_size == 0 {
        return Err("--put-rate, --streams, --watchers-per-stream, --key-size must be > 0".into());
    }
    match cmd.as_deref() {
        Some("watch-latency") => Ok((g, StreamCommand::WatchLatency(w))),
        Some("lease-keepalive") => Ok((g, StreamCommand::LeaseKeepalive(l))),
        _ => Err("no command".into()),
    }
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Entry point: `argv` holds the command word and every flag.
pub fn main(argv: &[String]) -> ExitCode {
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (g, cmd) = match parse(argv) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ferrobench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let out: Result<(Report, Extra), String> = match &cmd {
        StreamCommand::WatchLatency(w) => crate::watch::run(&g, w),
        StreamCommand::LeaseKeepalive(l) => crate::lease::run(&g, l),
    };
    let (report, extra) = match out {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ferrobench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut human = report.human();
    for l in &extra.lines {
        human.push_str(l);
        human.push('\n');
    }
    if g.json {
        eprint!("{human}");
        let mut v: serde_json::Value =
            serde_json::from_str(&report.json_line()).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            for (k, x) in extra.json {
                obj.insert(k, x);
            }
        }
        println!("{v}");
    } else {
        print!("{human}");
    }
    let _ = std::io::stdout().flush();
    if report.done() > 0 && report.rec.hist.is_empty() {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
