//! Command line of ferrobench: etcd's `tools/benchmark` flags (names and
//! defaults of `root.go`, `put.go`, `range.go`, `txn_put.go`,
//! `txn_mixed.go`, `stm.go`), plus ours: `--executors`, `--json`,
//! `--server-pid`, `--sweep`, `--svg`, and `compare` (see `compare.rs`).
//!
//! `--rate` keeps etcd's name but not its meaning: etcd's is a token-bucket
//! cap on a closed loop (latency timed from when the request is sent, so a
//! stalled server hides its queue); ours is an open loop that measures from
//! the intended start time (`openloop.rs`).
//!
//! Like cobra's persistent flags, global flags may stand before or after the
//! command. Both `--flag value` and `--flag=value` work; a boolean flag takes
//! no value (`--json`) or an explicit one (`--json=false`).

use std::time::Duration;

pub const USAGE: &str = "\
ferrobench: etcd's benchmark tool on ferrocd's own gRPC client

Usage:
  ferrobench [global flags] put [--total N] [--key-size N] [--val-size N]
                                [--key-space-size N] [--sequential-keys]
  ferrobench [global flags] range KEY [END] [--total N] [--consistency l|s]
  ferrobench [global flags] txn-put [put flags] [--txn-ops N] [--cas]
  ferrobench [global flags] txn-mixed [KEY [END]] [put flags] [--rw-ratio F]
                                [--limit N] [--end-key K] [--consistency l|s]
                                [--key-prefix P]
  ferrobench [global flags] stm [--keys N] [--keys-per-txn N] [--isolation c|r|s|ss]
                                [--txn-wr-percent P] [--val-size N] [--total N]
  ferrobench [global flags] watch-latency|lease-keepalive ...
                                          (see `ferrobench watch-latency --help`)
  ferrobench compare [compare flags]      (see `ferrobench compare --help`)

Global flags:
  --endpoints LIST     comma-separated gRPC endpoints (default 127.0.0.1:2379)
  --conns N            total number of gRPC connections (default 1)
  --clients N          total number of concurrent clients (default 1)
  --executors N        glommio executors, pinned to CPUs round-robin (default 1)
  --dial-timeout DUR   bound on connect + HTTP/2 handshake, e.g. 2s, 500ms (default 5s)
  --json               print one JSON line on stdout (the summary goes to stderr)
  --server-pid PIDS    server process(es) whose CPU time to report (repeatable, comma list)
  --rate R             open loop: request n is due at start + n/R seconds and its
                       latency is timed from then (coordinated omission corrected)
  --sweep R1,R2,..     run the workload once per open-loop rate, print a
                       latency-vs-throughput table and write an SVG plot
  --svg FILE           where --sweep writes its plot (default ferrobench-sweep.svg)

Exit status: 0 done (failed requests are counted in the report), 2 usage
error, 1 could not run (e.g. connect failed), 3 every request failed.

put flags (etcd defaults):
  --total 10000  --key-size 8  --val-size 8  --key-space-size 1  --sequential-keys

range flags (etcd defaults):
  --total 10000  --consistency l   (l: linearizable, s: serializable)

txn-put: put flags, --txn-ops 1 (puts per txn); --cas makes each txn a
  compare-and-swap (etcd main's txn-put: If mod_revision(k) == last seen,
  Then put, Else get; retried until it succeeds).
txn-mixed (etcd defaults): --rw-ratio 1 (reads per write) --limit 1000
  --end-key \"\" --consistency l; reads are txns of one range over all keys
  (etcd: OpGet(\"\", WithPrefix, WithLimit)), writes are txns of one put of
  key i % key-space-size. Ours: --key-prefix P puts P before every written
  key (P + key-size bytes) and reads [P, end of prefix P) unless KEY/END say
  otherwise: etcd's workload on a key space of its own.
stm (etcd defaults): --keys 1 --keys-per-txn 1 --isolation r --txn-wr-percent 50
  --val-size 8; one request = one STM transaction (reads, then a commit
  txn; retried on conflict), 16-byte keys.
";

/// Flags every command shares.
#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub executors: usize,
    pub dial_timeout: Duration,
    pub json: bool,
    pub server_pids: Vec<u32>,
    /// Open-loop rate in requests per second (`--rate`); `None`: closed loop.
    pub rate: Option<f64>,
    /// `--sweep`: open-loop rates to run one after another.
    pub sweep: Vec<f64>,
    /// `--svg`: where the sweep's plot goes.
    pub svg: String,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            conns: 1,
            clients: 1,
            executors: 1,
            dial_timeout: Duration::from_secs(5),
            json: false,
            server_pids: Vec::new(),
            rate: None,
            sweep: Vec::new(),
            svg: "ferrobench-sweep.svg".to_string(),
        }
    }
}

/// `put`: etcd's put.go.
#[derive(Clone, Debug, PartialEq)]
pub struct PutArgs {
    pub total: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space_size: u64,
    pub sequential_keys: bool,
}

impl Default for PutArgs {
    fn default() -> Self {
        PutArgs {
            total: 10000,
            key_size: 8,
            val_size: 8,
            key_space_size: 1,
            sequential_keys: false,
        }
    }
}

/// `txn-put`: etcd's txn_put.go: each request is one txn of `txn_ops`
/// puts (no compares).
#[derive(Clone, Debug, PartialEq)]
pub struct TxnPutArgs {
    pub put: PutArgs,
    pub txn_ops: usize,
    /// `--cas`: compare-and-swap txns (etcd main's txn-put).
    pub cas: bool,
}

/// `txn-mixed`: etcd's txn_mixed.go.
#[derive(Clone, Debug, PartialEq)]
pub struct TxnMixedArgs {
    /// Writes: keys, values, key space (etcd's write key is `i % key-space`).
    pub put: PutArgs,
    /// Reads per write (`--rw-ratio`): a request reads with probability
    /// `rw / (1 + rw)`.
    pub rw_ratio: f64,
    /// `--key-prefix` (ours, not etcd's): written before every write key;
    /// empty by default, as etcd.
    pub key_prefix: Vec<u8>,
    /// Read range: `[key, end)`, etcd's default `[\0, \0)`: every key;
    /// with a key prefix, every key with that prefix.
    pub key: Vec<u8>,
    pub end: Vec<u8>,
    pub limit: i64,
    pub serializable: bool,
}

impl TxnMixedArgs {
    /// The key the write of request `i` puts: etcd's `PutVarint(k, i %
    /// key-space-size)` in `--key-size` bytes, after the key prefix.
    pub fn write_key(&self, i: u64) -> Vec<u8> {
        let mut k = self.key_prefix.clone();
        k.extend(crate::keys::key_bytes(
            i % self.put.key_space_size.max(1),
            self.put.key_size,
        ));
        k
    }
}

/// STM isolation levels (etcd's `--isolation` letters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// `c`: read committed: no conflict checks at commit.
    ReadCommitted,
    /// `r`: repeatable reads: commit iff every read key is unchanged.
    RepeatableReads,
    /// `s`: serializable: reads at the first read's revision, commit iff
    /// every read key is unchanged.
    Serializable,
    /// `ss`: serializable snapshot: as `s`, and no written key changed
    /// after the first read.
    SerializableSnapshot,
}

/// `stm`: etcd's stm.go.
#[derive(Clone, Debug, PartialEq)]
pub struct StmArgs {
    pub total: u64,
    pub keys: u64,
    pub keys_per_txn: usize,
    pub isolation: Isolation,
    pub write_percent: u32,
    pub val_size: usize,
}

/// `range`: etcd's range.go.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeArgs {
    pub key: String,
    pub end: String,
    pub total: u64,
    /// `s` (serializable) rather than `l` (linearizable).
    pub serializable: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Put(PutArgs),
    TxnPut(TxnPutArgs),
    Range(RangeArgs),
    TxnMixed(TxnMixedArgs),
    Stm(StmArgs),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put(_) => "put",
            Command::TxnPut(_) => "txn-put",
            Command::Range(_) => "range",
            Command::TxnMixed(_) => "txn-mixed",
            Command::Stm(_) => "stm",
        }
    }

    pub fn total(&self) -> u64 {
        match self {
            Command::Put(p) => p.total,
            Command::TxnPut(t) => t.put.total,
            Command::Range(r) => r.total,
            Command::TxnMixed(m) => m.put.total,
            Command::Stm(s) => s.total,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    pub global: Global,
    pub command: Command,
}

/// What parsing can end in besides `Args`.
#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// `-h` / `--help`: print the usage and exit 0.
    Help,
    /// A usage error, with the message to print before the usage.
    Usage(String),
}

fn usage<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError::Usage(msg.into()))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, ParseError> {
    v.trim()
        .parse()
        .or_else(|_| usage(format!("invalid argument {v:?} for \"--{flag}\" flag")))
}

fn boolean(flag: &str, v: Option<&str>) -> Result<bool, ParseError> {
    match v {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => usage(format!("invalid argument {v:?} for \"--{flag}\" flag")),
    }
}

/// Parses Go-style durations of one unit: `500ms`, `2s`, `1m`, `250us`.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Flags that take no value unless given with `=`.
const BOOL_FLAGS: [&str; 3] = ["json", "sequential-keys", "cas"];

/// A rate: positive and finite.
fn rate(flag: &str, v: &str) -> Result<f64, ParseError> {
    let r: f64 = number(flag, v)?;
    if !(r.is_finite() && r > 0.0) {
        return usage(format!("--{flag} must be a positive number, got {v:?}"));
    }
    Ok(r)
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(argv: I) -> Result<Args, ParseError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
    let mut global = Global::default();
    // Flags are collected first and applied once the command is known, so
    // a command's flag may stand before the command name too.
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    let mut positionals: Vec<String> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if a == "-h" || a == "--help" || a == "help" {
            return Err(ParseError::Help);
        }
        if a == "--" {
            positionals.extend(argv[i..].iter().cloned());
            break;
        }
        let Some(body) = a.strip_prefix("--") else {
            positionals.push(a.clone());
            continue;
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None if BOOL_FLAGS.contains(&body) => (body.to_string(), None),
            None => {
                let Some(v) = argv.get(i) else {
                    return usage(format!("flag needs an argument: --{body}"));
                };
                i += 1;
                (body.to_string(), Some(v.clone()))
            }
        };
        flags.push((name, value));
    }

    let mut positionals = positionals.into_iter();
    let command_name = match positionals.next() {
        Some(c) => c,
        None => return usage("no command given (put, range, txn-put, txn-mixed, stm)"),
    };
    let rest: Vec<String> = positionals.collect();
    let mut put = PutArgs::default();
    let mut range = RangeArgs {
        key: String::new(),
        end: String::new(),
        total: 10000,
        serializable: false,
    };
    let mut consistency = "l".to_string();
    let mut txn_ops: usize = 1;
    let mut cas = false;
    let mut rw_ratio = 1.0f64;
    let mut limit: i64 = 1000;
    let mut end_key: Option<String> = None;
    let mut key_prefix = String::new();
    let mut stm = StmArgs {
        total: 10000,
        keys: 1,
        keys_per_txn: 1,
        isolation: Isolation::RepeatableReads,
        write_percent: 50,
        val_size: 8,
    };
    let mut isolation = "r".to_string();

    for (name, value) in flags {
        let v = value.as_deref();
        let need = |v: Option<&str>| -> Result<String, ParseError> {
            v.map(str::to_string)
                .ok_or_else(|| ParseError::Usage(format!("flag needs an argument: --{name}")))
        };
        match (command_name.as_str(), name.as_str()) {
            (_, "endpoints") => {
                let list = need(v)?;
                global.endpoints = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                if global.endpoints.is_empty() {
                    return usage("--endpoints is empty");
                }
            }
            (_, "conns") => global.conns = number(&name, &need(v)?)?,
            (_, "clients") => global.clients = number(&name, &need(v)?)?,
            (_, "executors") => global.executors = number(&name, &need(v)?)?,
            (_, "dial-timeout") => {
                let s = need(v)?;
                global.dial_timeout = parse_duration(&s).ok_or_else(|| {
                    ParseError::Usage(format!("invalid duration {s:?} for \"--dial-timeout\""))
                })?;
            }
            (_, "json") => global.json = boolean(&name, v)?,
            (_, "server-pid") => {
                for p in need(v)?.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    global.server_pids.push(number(&name, p)?);
                }
            }
            (_, "rate") => global.rate = Some(rate(&name, &need(v)?)?),
            (_, "sweep") => {
                for r in need(v)?.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    global.sweep.push(rate(&name, r)?);
                }
            }
            (_, "svg") => global.svg = need(v)?,
            ("put" | "txn-put" | "txn-mixed", "total") => put.total = number(&name, &need(v)?)?,
            ("put" | "txn-put" | "txn-mixed", "key-size") => {
                put.key_size = number(&name, &need(v)?)?
            }
            ("put" | "txn-put" | "txn-mixed", "val-size") => {
                put.val_size = number(&name, &need(v)?)?
            }
            ("txn-put", "txn-ops") => txn_ops = number(&name, &need(v)?)?,
            ("txn-put", "cas") => cas = boolean(&name, v)?,
            ("txn-mixed", "rw-ratio") => {
                rw_ratio = number(&name, &need(v)?)?;
                if !(rw_ratio.is_finite() && rw_ratio >= 0.0) {
                    return usage(format!("--rw-ratio must be >= 0, got {rw_ratio}"));
                }
            }
            ("txn-mixed", "limit") => limit = number(&name, &need(v)?)?,
            ("txn-mixed", "end-key") => end_key = Some(need(v)?),
            ("txn-mixed", "key-prefix") => key_prefix = need(v)?,
            ("txn-mixed", "consistency") => consistency = need(v)?,
            ("stm", "total") => stm.total = number(&name, &need(v)?)?,
            ("stm", "keys") => {
                let n: i64 = number(&name, &need(v)?)?;
                if n <= 0 {
                    return usage(format!("expected positive --keys, got ({n})"));
                }
                stm.keys = n as u64;
            }
            ("stm", "keys-per-txn") => stm.keys_per_txn = number(&name, &need(v)?)?,
            ("stm", "txn-wr-percent") => {
                let n: i64 = number(&name, &need(v)?)?;
                if !(0..=100).contains(&n) {
                    return usage(format!("expected [0, 100] --txn-wr-percent, got ({n})"));
                }
                stm.write_percent = n as u32;
            }
            ("stm", "isolation") => isolation = need(v)?,
            ("stm", "val-size") => stm.val_size = number(&name, &need(v)?)?,
            ("stm", "stm-locker") => {
                let l = need(v)?;
                if l != "stm" {
                    return usage(format!("--stm-locker {l:?}: only \"stm\" is implemented"));
                }
            }
            ("put" | "txn-put" | "txn-mixed", "key-space-size") => {
                // etcd: "expected positive --key-space-size".
                let n: i64 = number(&name, &need(v)?)?;
                if n <= 0 {
                    return usage(format!("expected positive --key-space-size, got ({n})"));
                }
                put.key_space_size = n as u64;
            }
            ("put", "sequential-keys") => put.sequential_keys = boolean(&name, v)?,
            ("range", "total") => range.total = number(&name, &need(v)?)?,
            ("range", "consistency") => consistency = need(v)?,
            _ => return usage(format!("unknown flag: --{name}")),
        }
    }
    for (flag, n) in [
        ("conns", global.conns),
        ("clients", global.clients),
        ("executors", global.executors),
    ] {
        if n == 0 {
            return usage(format!("--{flag} must be at least 1"));
        }
    }
    if global.rate.is_some() && !global.sweep.is_empty() {
        return usage("--rate and --sweep exclude each other (--sweep sets the rate of each run)");
    }

    let command = match command_name.as_str() {
        "put" => {
            if !rest.is_empty() {
                return usage(format!("put takes no arguments, got {rest:?}"));
            }
            crate::keys::check_key_size(put.key_size, put.key_space_size)
                .map_err(ParseError::Usage)?;
            Command::Put(put)
        }
        "txn-put" => {
            if !rest.is_empty() {
                return usage(format!("txn-put takes no arguments, got {rest:?}"));
            }
            if txn_ops == 0 {
                return usage("--txn-ops must be at least 1");
            }
            // etcd's default key space for txn-put is the total (txn_put.go).
            if put.key_space_size == 1 {
                put.key_space_size = put.total.saturating_mul(txn_ops as u64).max(1);
            }
            crate::keys::check_key_size(put.key_size, put.key_space_size)
                .map_err(ParseError::Usage)?;
            Command::TxnPut(TxnPutArgs { put, txn_ops, cas })
        }
        "txn-mixed" => {
            if rest.len() > 2 {
                return usage("txn-mixed takes an optional KEY and END");
            }
            crate::keys::check_key_size(put.key_size, put.key_space_size)
                .map_err(ParseError::Usage)?;
            // etcd reads OpGet("", WithPrefix): key and end are both "\0",
            // i.e. every key; with --key-prefix P, OpGet(P, WithPrefix).
            // A KEY [END] or --end-key narrows it.
            let key_prefix = key_prefix.into_bytes();
            let (default_key, default_end) = if key_prefix.is_empty() {
                (vec![0], vec![0])
            } else {
                (key_prefix.clone(), crate::keys::prefix_end(&key_prefix))
            };
            let key = rest.first().map_or(default_key, |k| k.as_bytes().to_vec());
            let end = match (rest.get(1), end_key) {
                (Some(e), _) => e.as_bytes().to_vec(),
                (None, Some(e)) if !e.is_empty() => e.into_bytes(),
                (None, _) if rest.is_empty() => default_end,
                _ => vec![0],
            };
            Command::TxnMixed(TxnMixedArgs {
                put,
                key_prefix,
                rw_ratio,
                key,
                end,
                limit,
                serializable: match consistency.as_str() {
                    "l" => false,
                    "s" => true,
                    other => return usage(format!("--consistency must be l or s, got {other:?}")),
                },
            })
        }
        "stm" => {
            if !rest.is_empty() {
                return usage(format!("stm takes no arguments, got {rest:?}"));
            }
            stm.isolation = match isolation.as_str() {
                "c" => Isolation::ReadCommitted,
                "r" => Isolation::RepeatableReads,
                "s" => Isolation::Serializable,
                "ss" => Isolation::SerializableSnapshot,
                other => return usage(format!("--isolation must be c, r, s or ss, got {other:?}")),
            };
            if stm.keys_per_txn as u64 > stm.keys {
                return usage(format!(
                    "expected --keys-per-txn between 0 and {}, got ({})",
                    stm.keys, stm.keys_per_txn
                ));
            }
            crate::keys::check_key_size(crate::stm::KEY_SIZE, stm.keys)
                .map_err(ParseError::Usage)?;
            Command::Stm(stm)
        }
        "range" => {
            if rest.is_empty() || rest.len() > 2 {
                return usage("range takes KEY and an optional END");
            }
            range.key = rest[0].clone();
            range.end = rest.get(1).cloned().unwrap_or_default();
            range.serializable = match consistency.as_str() {
                "l" => false,
                "s" => true,
                other => return usage(format!("--consistency must be l or s, got {other:?}")),
            };
            Command::Range(range)
        }
        other => return usage(format!("unknown command {other:?}")),
    };
    Ok(Args { global, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, ParseError> {
        parse(s.split_whitespace())
    }

    #[test]
    fn defaults_match_etcd_benchmark() {
        let a = p("put").unwrap();
        assert_eq!(a.global, Global::default());
        assert_eq!(a.global.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(
            (a.global.conns, a.global.clients, a.global.executors),
            (1, 1, 1)
        );
        assert_eq!(
            a.command,
            Command::Put(PutArgs {
                total: 10000,
                key_size: 8,
                val_size: 8,
                key_space_size: 1,
                sequential_keys: false
            })
        );
        let a = p("range foo").unwrap();
        assert_eq!(
            a.command,
            Command::Range(RangeArgs {
                key: "foo".into(),
                end: String::new(),
                total: 10000,
                serializable: false
            })
        );
    }

    #[test]
    fn flags_take_space_or_equals_and_globals_go_anywhere() {
        let a = p("--endpoints=a:1,b:2 put --conns 4 --clients=16 --total 2000 --sequential-keys --key-space-size 100000 --json")
            .unwrap();
        assert_eq!(a.global.endpoints, ["a:1", "b:2"]);
        assert_eq!((a.global.conns, a.global.clients), (4, 16));
        assert!(a.global.json);
        let Command::Put(put) = a.command else {
            panic!()
        };
        assert_eq!(put.total, 2000);
        assert!(put.sequential_keys);
        assert_eq!(put.key_space_size, 100000);
        // A command flag before the command name also works.
        let a = p("--total 7 range k").unwrap();
        assert_eq!(a.command.total(), 7);
        assert!(!p("put --json=false").unwrap().global.json);
    }

    #[test]
    fn range_takes_key_optional_end_and_consistency() {
        let a = p("range foo fop --consistency s --total 2000").unwrap();
        let Command::Range(r) = a.command else {
            panic!()
        };
        assert_eq!((r.key.as_str(), r.end.as_str()), ("foo", "fop"));
        assert!(r.serializable);
        assert_eq!(r.total, 2000);
        assert!(matches!(p("range"), Err(ParseError::Usage(_))));
        assert!(matches!(p("range a b c"), Err(ParseError::Usage(_))));
        assert!(matches!(
            p("range a --consistency x"),
            Err(ParseError::Usage(_))
        ));
    }

    #[test]
    fn server_pids_are_repeatable_and_comma_separated() {
        let a = p("put --server-pid 10,11 --server-pid=12").unwrap();
        assert_eq!(a.global.server_pids, [10, 11, 12]);
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for bad in [
            "",
            "get foo",
            "put --nope 1",
            "put --total",
            "put --total x",
            "put --conns 0",
            "put --key-space-size 0",
            "put --key-space-size -3",
            "put extra",
            "range k --key-size 3",
            "put --key-size 1 --key-space-size 1000",
            "put --dial-timeout 5parsecs",
        ] {
            assert!(
                matches!(p(bad), Err(ParseError::Usage(_))),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(p("put --help"), Err(ParseError::Help));
    }

    #[test]
    fn durations_use_go_units() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn txn_mixed_reads_every_key_or_its_key_prefix() {
        let mixed = |s: &str| match p(s).unwrap().command {
            Command::TxnMixed(m) => m,
            other => panic!("not txn-mixed: {other:?}"),
        };
        // etcd: writes PutVarint(i % key-space-size), reads every key.
        let m = mixed("txn-mixed --key-space-size 100");
        assert_eq!((m.key.as_slice(), m.end.as_slice()), (&[0][..], &[0][..]));
        assert_eq!(m.write_key(101), [2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!((m.rw_ratio, m.limit, m.serializable), (1.0, 1000, false));
        // A key prefix goes before every written key and is the read range.
        let m = mixed("txn-mixed --key-space-size 100 --key-prefix mixed/");
        assert_eq!(m.write_key(101), b"mixed/\x02\0\0\0\0\0\0\0");
        assert_eq!(
            (m.key.as_slice(), m.end.as_slice()),
            (&b"mixed/"[..], &b"mixed0"[..])
        );
        assert!((0..100).all(|i| {
            let k = m.write_key(i);
            m.key <= k && k < m.end
        }));
        // KEY [END] and --end-key still choose the read range.
        let m = mixed("txn-mixed a c --key-prefix mixed/");
        assert_eq!((m.key.as_slice(), m.end.as_slice()), (&b"a"[..], &b"c"[..]));
        let m = mixed("txn-mixed a --key-prefix mixed/");
        assert_eq!((m.key.as_slice(), m.end.as_slice()), (&b"a"[..], &[0][..]));
        let m = mixed("txn-mixed --end-key z --key-prefix mixed/");
        assert_eq!(
            (m.key.as_slice(), m.end.as_slice()),
            (&b"mixed/"[..], &b"z"[..])
        );
        assert!(p("put --key-prefix x").is_err(), "txn-mixed's flag");
    }

    #[test]
    fn txn_put_takes_put_flags_and_txn_ops() {
        let a = p("txn-put --total 10 --txn-ops 4 --val-size 16").unwrap();
        let Command::TxnPut(t) = a.command else {
            panic!("not txn-put")
        };
        assert_eq!((t.put.total, t.txn_ops, t.put.val_size), (10, 4, 16));
        assert_eq!(t.put.key_space_size, 40, "etcd's default key space: total");
        assert!(p("txn-put --txn-ops 0").is_err());
        assert!(p("txn-put extra").is_err());
        assert!(
            p("put --txn-ops 2").is_err(),
            "--txn-ops belongs to txn-put"
        );
    }
}
