//! The `ferrocd` server configuration, built the way etcd 3.5's `etcd`
//! command builds it (server/etcdmain/config.go, server/embed/config.go):
//!
//! 1. the command line is parsed like Go's `flag` package (errors: exit 2);
//! 2. `--version` / `--help` end there;
//! 3. with `--config-file` (or `ETCD_CONFIG_FILE`) the YAML file is the whole
//!    configuration: other flags and `ETCD_*` variables are ignored;
//! 4. otherwise every flag not given on the command line is taken from its
//!    `ETCD_*` variable; an `ETCD_*` variable for a flag that *was* given is a
//!    fatal conflict, unknown `ETCD_*` variables are warned about;
//! 5. the result is validated with etcd's error texts.
//!
//! Entry points: [`Config::parse`] (pure, for tests and embedding) and
//! [`parse_cli`] (prints, logs and exits like etcd; what `main` calls).

mod bootstrap;
mod yaml;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::json;

use crate::flags::goparse::quote;
use crate::flags::url::{split_host_port, GoUrl};
use crate::flags::{self, ArgsOutcome, FlagSet, Kind, Value, FLAGS};
use crate::logging::{self, Entry, Level};

pub use bootstrap::{cluster_id, member_id, member_id_at, Bootstrap, BootstrapMember};

/// etcd's default `--initial-cluster`, computed from the default name and
/// default advertised peer URL.
pub const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";

/// etcd's backend quota when `--quota-backend-bytes` is 0 (2 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

const ERR_UNSET_ADVERTISE: &str =
    "--advertise-client-urls is required when --listen-client-urls is set explicitly";
const ERR_CONFLICT_BOOTSTRAP: &str = "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"";
const ERR_LOG_ROTATION_OUTPUT: &str =
    "--log-outputs requires a single file path when --log-rotate-config-json is defined";
const ERR_ENV_CONFLICT: &str = "conflicting environment variable is shadowed by corresponding command-line flag (either unset environment variable or disable flag))";
const MAX_ELECTION_MS: u64 = 50_000;
const MIN_RAFT_CONN_TIMEOUT_NS: i64 = 5_000_000_000;

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// The server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--name` (default `default`).
    pub name: String,
    /// `--data-dir`; `<name>.etcd` when not given.
    pub data_dir: String,
    /// `--wal-dir` (empty: inside the data directory).
    pub wal_dir: String,
    /// `--listen-client-urls`, canonical, sorted, deduplicated.
    pub listen_client_urls: Vec<String>,
    /// `--advertise-client-urls`, canonical and sorted.
    pub advertise_client_urls: Vec<String>,
    /// `--listen-peer-urls`.
    pub listen_peer_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--listen-metrics-urls`.
    pub listen_metrics_urls: Vec<String>,
    /// `--initial-cluster` as text (`name=url,...`); when only `--name` was
    /// changed it is `<name>=<initial-advertise-peer-urls>` like etcd.  Parse
    /// it with [`Config::initial_cluster_map`] or [`Config::bootstrap`].
    pub initial_cluster: String,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--max-request-bytes` (default 1572864).
    pub max_request_bytes: u64,
    /// `--max-txn-ops` (default 128).
    pub max_txn_ops: u64,
    /// `--quota-backend-bytes` as given (0: 2 GiB; negative: no quota); see [`Config::quota_bytes`].
    pub quota_backend_bytes: i64,
    /// `--snapshot-count` (default 100000).
    pub snapshot_count: u64,
    /// `--heartbeat-interval` in milliseconds (default 100).
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` in milliseconds (default 1000).
    pub election_timeout_ms: u64,
    /// `--logger` (always `zap` after validation).
    pub logger: String,
    /// `--log-outputs` (default `["default"]`, which means stderr).
    pub log_outputs: Vec<String>,
    /// `--log-level`.
    pub log_level: Level,
    /// The configuration file used, if any.
    pub config_file: Option<String>,
    /// Flags the user set (command line, `ETCD_*` or file) to a non-default
    /// value that ferrocd does not implement yet; log one warning for each.
    pub unsupported_set: Vec<String>,
    /// What etcd logs while reading `ETCD_*` variables, to be written with the
    /// bootstrap (stderr) logger before anything else.
    pub env_notices: Vec<Entry>,
    /// What etcd logs right after its logger is set up (config file loaded,
    /// defaulted data dir); `Running:` goes between the two lists.
    pub notices: Vec<Entry>,
    flags: FlagSet,
}

/// What [`Config::parse`] found.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// Start the server.
    Run(Box<Config>),
    /// `-h` / `--help`: write `stderr` to stderr, `stdout` to stdout, exit 0.
    Help { stdout: String, stderr: String },
    /// `--version`: write it to stdout, exit 0.
    Version(String),
}

/// How etcd reports a configuration error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Go `flag` package error: the line, then the usage text, on stderr; exit 2.
    Flag,
    /// etcd's `failed to verify flags` warning; exit 1.
    Verify,
    /// An `ETCD_*` variable shadowed by a command line flag: fatal log line; exit 1.
    EnvConflict,
    /// A plain line on stderr; exit 1 (etcd's `os.Exit`/`log.Fatalf` paths).
    Plain,
    /// Bootstrap check failed (`failed to start etcd` + fatal `discovery failed`); exit 1.
    Bootstrap,
    /// Something etcd supports and ferrocd does not (yet): one fatal-level
    /// `unsupported configuration` line; exit 1.
    Unsupported,
}

/// A configuration error with etcd's exact message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub kind: ErrorKind,
    pub message: String,
    /// Log records produced before the error (e.g. `ETCD_*` warnings), to be
    /// written first.
    pub notices: Vec<Entry>,
    /// For [`ErrorKind::EnvConflict`]: the shadowed variable (`ETCD_NAME`).
    pub env_var: Option<String>,
}

impl ConfigError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind,
            message: message.into(),
            notices: Vec::new(),
            env_var: None,
        }
    }

    fn verify(message: impl Into<String>) -> ConfigError {
        Self::new(ErrorKind::Verify, message)
    }

    fn with_notices(mut self, notices: Vec<Entry>) -> ConfigError {
        self.notices = notices;
        self
    }

    /// etcd's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Flag => 2,
            _ => 1,
        }
    }

    /// Writes what etcd writes for this error to stderr (through the global
    /// logger for log lines).  `argv` is the whole command line, program name
    /// included, for etcd's `Running:` line.  Does not exit.
    pub fn report(&self, argv: &[String]) {
        for n in &self.notices {
            n.emit();
        }
        match self.kind {
            ErrorKind::Flag => {
                eprint!("{}\n{}", self.message, flags::usage_text());
            }
            ErrorKind::Plain => eprintln!("{}", self.message),
            ErrorKind::Unsupported => logging::log(
                Level::Fatal,
                "unsupported configuration",
                &[("error", json!(self.message))],
            ),
            ErrorKind::Verify => {
                logging::info("Running: ", &[("args", json!(argv))]);
                logging::warn("failed to verify flags", &[("error", json!(self.message))]);
                if self.message == ERR_UNSET_ADVERTISE {
                    logging::warn(
                        "advertise client URLs are not set",
                        &[("error", json!(self.message))],
                    );
                }
            }
            ErrorKind::EnvConflict => logging::log(
                Level::Fatal,
                &self.message,
                &[("environment-variable", json!(self.env_var))],
            ),
            ErrorKind::Bootstrap => {
                logging::warn("failed to start etcd", &[("error", json!(self.message))]);
                logging::log(
                    Level::Fatal,
                    "discovery failed",
                    &[("error", json!(self.message))],
                );
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    CommandLine,
    File,
}

fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Config {
    /// Parses the command line (`args` without the program name) and the
    /// environment (`env`, e.g. `std::env::vars()`) like etcd 3.5.
    pub fn parse(args: &[String], env: &[(String, String)]) -> Result<Parsed, ConfigError> {
        if let Some(cmd) = args.first() {
            if cmd == "gateway" || cmd == "grpc-proxy" {
                return Err(ConfigError::new(
                    ErrorKind::Plain,
                    format!("'etcd {cmd}' is not supported by ferrocd"),
                ));
            }
        }
        let mut fs = FlagSet::new();
        match fs.parse_args(args) {
            Err(line) => return Err(ConfigError::new(ErrorKind::Flag, line)),
            Ok(ArgsOutcome::Help) => {
                return Ok(Parsed::Help {
                    stdout: flags::flags_text(),
                    stderr: flags::usage_text(),
                })
            }
            Ok(ArgsOutcome::Done { rest }) => {
                if let Some(first) = rest.first() {
                    return Err(ConfigError::verify(format!(
                        "'{first}' is not a valid flag"
                    )));
                }
            }
        }
        if fs.get("version").as_bool() {
            return Ok(Parsed::Version(flags::version_text()));
        }

        let mut config_file = fs.get("config-file").as_str().to_string();
        if config_file.is_empty() {
            config_file = env_get(env, "ETCD_CONFIG_FILE").unwrap_or("").to_string();
        }
        let mut env_notices = Vec::new();
        let source = if config_file.is_empty() {
            apply_env(&mut fs, env, &mut env_notices)
                .map_err(|e| e.with_notices(env_notices.clone()))?;
            Source::CommandLine
        } else {
            fs = FlagSet::new();
            yaml::load(&mut fs, &config_file)?;
            Source::File
        };
        let cfg = build(fs, source, config_file, env_notices.clone())
            .map_err(|e| e.with_notices(env_notices))?;
        Ok(Parsed::Run(Box::new(cfg)))
    }

    /// The effective value of any flag of the table (defaults included), for
    /// features that have no typed field yet.  `None` for unknown names.
    pub fn flag(&self, name: &str) -> Option<&Value> {
        flags::lookup(name).map(|_| self.flags.get(name))
    }

    /// Whether a flag was set explicitly (command line, `ETCD_*` or file).
    pub fn is_set(&self, name: &str) -> bool {
        self.flags.is_set(name)
    }

    /// The backend quota in bytes: `None` when disabled (negative value),
    /// 2 GiB when 0.
    pub fn quota_bytes(&self) -> Option<u64> {
        match self.quota_backend_bytes {
            q if q < 0 => None,
            0 => Some(DEFAULT_QUOTA_BYTES),
            q => Some(q as u64),
        }
    }

    /// Election timeout in heartbeat ticks (etcd's `ElectionTicks`).
    pub fn election_ticks(&self) -> u64 {
        self.election_timeout_ms / self.heartbeat_interval_ms.max(1)
    }

    /// Socket addresses for `--listen-client-urls`.
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        urls_to_socket_addrs(&self.listen_client_urls)
    }

    /// Socket addresses for `--listen-peer-urls`.
    pub fn listen_peer_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        urls_to_socket_addrs(&self.listen_peer_urls)
    }

    /// Sets up the global logger from `--log-outputs` / `--log-level`.
    pub fn init_logging(&self) -> Result<(), ConfigError> {
        logging::init(&self.log_outputs, self.log_level).map_err(ConfigError::verify)
    }

    /// Logs what etcd logs once its logger is set up, in etcd's order:
    /// `loaded server configuration` (config file only), `Running:` with
    /// `argv`, the other [`Config::notices`], then one warning per flag in
    /// [`Config::unsupported_set`].  [`Config::env_notices`] are not included:
    /// write them before [`Config::init_logging`].  [`parse_cli`] does it all.
    pub fn log_startup(&self, argv: &[String]) {
        for n in &self.notices {
            if n.msg.starts_with("loaded server configuration") {
                n.emit();
            }
        }
        logging::info("Running: ", &[("args", json!(argv))]);
        for n in &self.notices {
            if !n.msg.starts_with("loaded server configuration") {
                n.emit();
            }
        }
        for name in &self.unsupported_set {
            let value = self.flags.get(name).to_flag_string();
            logging::warn(
                "flag is not supported by ferrocd yet; ignoring it",
                &[("flag", json!(name)), ("value", json!(value))],
            );
        }
    }
}

/// etcd's `flags.SetFlagsFromEnv` + `verifyEnv` (and the special
/// `ETCD_VERSION` rule of `configFromCmdLine`).
fn apply_env(
    fs: &mut FlagSet,
    env: &[(String, String)],
    notices: &mut Vec<Entry>,
) -> Result<(), ConfigError> {
    let mut version_unset = false;
    if let Some(v) = env_get(env, "ETCD_VERSION").filter(|v| !v.is_empty()) {
        notices.push(Entry::new(
            Level::Warn,
            "cannot set special environment variable",
            &[("key", json!("ETCD_VERSION")), ("value", json!(v))],
        ));
        version_unset = true;
    }
    let already: HashSet<String> = fs
        .explicitly_set()
        .into_iter()
        .map(flags::env_name)
        .collect();
    let mut used: HashSet<String> = HashSet::new();
    let mut last_err: Option<String> = None;
    let mut names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
    names.sort_unstable();
    for name in names {
        let key = flags::env_name(name);
        if already.contains(&key) || (version_unset && key == "ETCD_VERSION") {
            continue;
        }
        let Some(val) = env_get(env, &key).filter(|v| !v.is_empty()) else {
            continue;
        };
        used.insert(key.clone());
        match fs.set(name, val) {
            Err(e) => last_err = Some(format!("invalid value {} for {key}: {e}", quote(val))),
            Ok(()) => notices.push(Entry::new(
                Level::Info,
                "recognized and used environment variable",
                &[
                    ("variable-name", json!(key)),
                    ("variable-value", json!(val)),
                ],
            )),
        }
    }
    for (k, v) in env {
        if version_unset && k == "ETCD_VERSION" {
            continue;
        }
        if used.contains(k) {
            continue;
        }
        if already.contains(k) {
            let mut e = ConfigError::new(ErrorKind::EnvConflict, ERR_ENV_CONFLICT);
            e.env_var = Some(k.clone());
            return Err(e);
        }
        if k.starts_with("ETCD_") {
            notices.push(Entry::new(
                Level::Warn,
                "unrecognized environment variable",
                &[("environment-variable", json!(format!("{k}={v}")))],
            ));
        }
    }
    match last_err {
        Some(e) => Err(ConfigError::verify(e)),
        None => Ok(()),
    }
}

fn urls(fs: &FlagSet, name: &str) -> Vec<String> {
    fs.get(name).as_list().to_vec()
}

fn build(
    mut fs: FlagSet,
    source: Source,
    config_file: String,
    mut env_notices: Vec<Entry>,
) -> Result<Config, ConfigError> {
    let mut notices = Vec::new();
    let mut advertise_unset = false;
    let discovery_set =
        !fs.get("discovery").as_str().is_empty() || !fs.get("discovery-srv").as_str().is_empty();
    match source {
        Source::CommandLine => {
            for name in ["raft-read-timeout", "raft-write-timeout"] {
                if fs.get(name).as_i64() < MIN_RAFT_CONN_TIMEOUT_NS {
                    fs.replace(name, Value::Duration(MIN_RAFT_CONN_TIMEOUT_NS));
                    env_notices.push(Entry::new(
                        Level::Info,
                        format!("{name} increased to minimum value: 5s"),
                        &[],
                    ));
                }
            }
            advertise_unset =
                fs.is_set("listen-client-urls") && !fs.is_set("advertise-client-urls");
            if (discovery_set || !fs.get("discovery-srv-name").as_str().is_empty())
                && !fs.is_set("initial-cluster")
            {
                fs.replace("initial-cluster", Value::Str(String::new()));
            }
        }
        Source::File => {
            if discovery_set && fs.get("initial-cluster").as_str() == DEFAULT_INITIAL_CLUSTER {
                fs.replace("initial-cluster", Value::Str(String::new()));
            }
            if fs.get("initial-cluster-state").as_str().is_empty() {
                fs.replace("initial-cluster-state", Value::Str("new".into()));
            }
            if fs.get("self-signed-cert-validity").as_u64() == 0 {
                fs.replace("self-signed-cert-validity", Value::Uint(1));
            }
        }
    }

    let log_level = validate(&fs, advertise_unset, source)?;

    if fs.get("proxy").as_str() != "off" {
        return Err(ConfigError::new(
            ErrorKind::Unsupported,
            format!(
                "v2 proxy mode (--proxy={}) is not supported by ferrocd",
                fs.get("proxy").as_str()
            ),
        ));
    }

    let name = fs.get("name").as_str().to_string();
    let advertise_peer = urls(&fs, "initial-advertise-peer-urls");
    let mut initial_cluster = fs.get("initial-cluster").as_str().to_string();
    // UpdateDefaultClusterFromName: `etcd --name foo` alone bootstraps `foo=<peer urls>`.
    if name != "default" && initial_cluster == DEFAULT_INITIAL_CLUSTER {
        initial_cluster = initial_cluster_from_name(&name, &advertise_peer);
    }
    let mut data_dir = fs.get("data-dir").as_str().to_string();
    if data_dir.is_empty() {
        data_dir = format!("{name}.etcd");
        notices.push(Entry::new(
            Level::Warn,
            "'data-dir' was empty; using default",
            &[("data-dir", json!(data_dir))],
        ));
    }
    if source == Source::File {
        notices.insert(
            0,
            Entry::new(
                Level::Info,
                "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided",
                &[("path", json!(config_file))],
            ),
        );
    }
    if fs
        .get("log-outputs")
        .as_list()
        .iter()
        .any(|o| o == "systemd/journal")
    {
        notices.push(Entry::new(
            Level::Warn,
            "log output 'systemd/journal' is not supported by ferrocd yet; logging to stderr",
            &[],
        ));
    }

    let unsupported_set = fs
        .explicitly_set()
        .into_iter()
        .filter(|n| {
            let spec = flags::lookup(n).filter(|s| !s.implemented && s.kind != Kind::Ignored);
            spec.is_some_and(|s| *fs.get(n) != s.default_value())
        })
        .map(str::to_string)
        .collect();

    let state = match fs.get("initial-cluster-state").as_str() {
        "existing" => ClusterState::Existing,
        _ => ClusterState::New,
    };
    let mut log_outputs = fs.get("log-outputs").as_list().to_vec();
    if log_outputs.is_empty() {
        log_outputs.push("default".to_string());
    }
    Ok(Config {
        name,
        data_dir,
        wal_dir: fs.get("wal-dir").as_str().to_string(),
        listen_client_urls: urls(&fs, "listen-client-urls"),
        advertise_client_urls: if advertise_unset {
            Vec::new()
        } else {
            urls(&fs, "advertise-client-urls")
        },
        listen_peer_urls: urls(&fs, "listen-peer-urls"),
        initial_advertise_peer_urls: advertise_peer,
        listen_metrics_urls: urls(&fs, "listen-metrics-urls"),
        initial_cluster,
        initial_cluster_token: fs.get("initial-cluster-token").as_str().to_string(),
        initial_cluster_state: state,
        max_request_bytes: fs.get("max-request-bytes").as_u64(),
        max_txn_ops: fs.get("max-txn-ops").as_u64(),
        quota_backend_bytes: fs.get("quota-backend-bytes").as_i64(),
        snapshot_count: fs.get("snapshot-count").as_u64(),
        heartbeat_interval_ms: fs.get("heartbeat-interval").as_u64(),
        election_timeout_ms: fs.get("election-timeout").as_u64(),
        logger: fs.get("logger").as_str().to_string(),
        log_outputs,
        log_level,
        config_file: if config_file.is_empty() {
            None
        } else {
            Some(config_file)
        },
        unsupported_set,
        env_notices,
        notices,
        flags: fs,
    })
}

/// etcd's `InitialClusterFromName`.
fn initial_cluster_from_name(name: &str, advertise_peer: &[String]) -> String {
    let n = if name.is_empty() { "default" } else { name };
    advertise_peer
        .iter()
        .map(|u| format!("{n}={u}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// etcd 3.5.1's `embed.Config.Validate` (with the etcdmain proxy exception);
/// returns the parsed log level.
fn validate(fs: &FlagSet, advertise_unset: bool, source: Source) -> Result<Level, ConfigError> {
    let level = validate_logging(fs)?;
    for name in [
        "listen-peer-urls",
        "listen-client-urls",
        "listen-client-http-urls",
        "listen-metrics-urls",
    ] {
        check_bind_urls(fs.get(name).as_list()).map_err(ConfigError::verify)?;
    }
    for (name, flag) in [
        (
            "initial-advertise-peer-urls",
            "--initial-advertise-peer-urls",
        ),
        ("advertise-client-urls", "--advertise-client-urls"),
    ] {
        if advertise_unset && name == "advertise-client-urls" {
            continue;
        }
        let list = fs.get(name).as_list();
        if let Err(e) = check_host_urls(list) {
            return Err(ConfigError::verify(format!(
                "{flag} {} must be \"host:port\" ({e})",
                quote(&list.join(","))
            )));
        }
    }
    let n_set = [
        !fs.get("discovery").as_str().is_empty(),
        !fs.get("initial-cluster").as_str().is_empty(),
        !fs.get("discovery-srv").as_str().is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let state = fs.get("initial-cluster-state").as_str();
    if state != "new" && state != "existing" {
        return Err(ConfigError::verify(format!(
            "unexpected clusterState {}",
            quote(state)
        )));
    }
    if n_set > 1 {
        return Err(ConfigError::verify(ERR_CONFLICT_BOOTSTRAP));
    }
    let tick = fs.get("heartbeat-interval").as_u64();
    let election = fs.get("election-timeout").as_u64();
    if tick == 0 {
        return Err(ConfigError::verify(format!(
            "--heartbeat-interval must be >0 (set to {tick}ms)"
        )));
    }
    if election == 0 {
        return Err(ConfigError::verify(format!(
            "--election-timeout must be >0 (set to {election}ms)"
        )));
    }
    if tick.saturating_mul(5) > election {
        return Err(ConfigError::verify(format!(
            "--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{tick}ms]"
        )));
    }
    if election > MAX_ELECTION_MS {
        return Err(ConfigError::verify(format!(
            "--election-timeout[{election}ms] is too long, and should be set less than {MAX_ELECTION_MS}ms"
        )));
    }
    if advertise_unset {
        // etcdmain lets this pass only when the process may become a v2 proxy.
        let may_be_proxy = fs.get("proxy").as_str() != "off"
            || (!fs.get("discovery").as_str().is_empty()
                && fs.get("discovery-fallback").as_str() == "proxy");
        if !(source == Source::CommandLine && may_be_proxy) {
            return Err(ConfigError::verify(ERR_UNSET_ADVERTISE));
        }
    }
    match fs.get("auto-compaction-mode").as_str() {
        "" | "periodic" | "revision" => {}
        other => {
            return Err(ConfigError::verify(format!(
                "unknown auto-compaction-mode {}",
                quote(other)
            )))
        }
    }
    Ok(level)
}

/// `setupLogging` checks, in etcd's order.
fn validate_logging(fs: &FlagSet) -> Result<Level, ConfigError> {
    match fs.get("logger").as_str() {
        "zap" => {}
        "capnslog" => {
            return Err(ConfigError::verify("--logger=capnslog is removed in v3.5"));
        }
        other => {
            return Err(ConfigError::verify(format!(
                "unknown logger option {}",
                quote(other)
            )))
        }
    }
    let mut outputs = fs.get("log-outputs").as_list().to_vec();
    if outputs.is_empty() {
        outputs.push("default".to_string());
    }
    if outputs.len() > 1 && outputs.iter().any(|o| o == "default") {
        return Err(ConfigError::verify(
            "multi logoutput for \"default\" is not supported yet",
        ));
    }
    if fs.get("enable-log-rotation").as_bool() {
        let files = outputs
            .iter()
            .filter(|o| !matches!(o.as_str(), "default" | "stderr" | "stdout"))
            .count();
        if (outputs.len() == 1 && files == 0) || files > 1 {
            return Err(ConfigError::verify(ERR_LOG_ROTATION_OUTPUT));
        }
        check_rotation_json(fs.get("log-rotation-config-json").as_str())
            .map_err(ConfigError::verify)?;
    }
    if outputs.iter().any(|o| o == "systemd/journal")
        && outputs.len() > 1
        && outputs.iter().any(|o| o != "default")
    {
        return Err(ConfigError::verify(format!(
            "running with systemd/journal but other '--log-outputs' values ({}) are configured with 'default'; override 'default' value with something else",
            crate::flags::goparse::quote_list(&outputs)
        )));
    }
    // etcd 3.5.1 panics here; ferrocd reports zap's message as an error instead.
    let level = Level::parse(fs.get("log-level").as_str()).map_err(ConfigError::verify)?;
    logging::check_outputs(&outputs).map_err(ConfigError::verify)?;
    Ok(level)
}

fn check_rotation_json(text: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("improperly formatted log rotation config: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err(format!(
            "invalid log rotation config: json: cannot unmarshal {} into Go value of type embed.logRotationConfig",
            json_kind(&v)
        ));
    };
    for (k, val) in obj {
        let want_int = matches!(k.as_str(), "maxsize" | "maxage" | "maxbackups");
        let want_bool = matches!(k.as_str(), "localtime" | "compress");
        let ok = (want_int && val.is_i64()) || (want_bool && val.is_boolean()) || val.is_null();
        if (want_int || want_bool) && !ok {
            return Err(format!(
                "invalid log rotation config: json: cannot unmarshal {} into Go struct field logRotationConfig.{k} of type {}",
                json_kind(val),
                if want_int { "int" } else { "bool" }
            ));
        }
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn url_host(u: &str) -> String {
    GoUrl::parse(u).map(|p| p.host).unwrap_or_default()
}

/// etcd's `checkBindURLs`: listen URLs need an IP (or `localhost`).
fn check_bind_urls(list: &[String]) -> Result<(), String> {
    for u in list {
        let parsed = GoUrl::parse(u).unwrap_or_default();
        if parsed.scheme == "unix" || parsed.scheme == "unixs" {
            continue;
        }
        let (host, _) = split_host_port(&parsed.host)?;
        if host == "localhost" {
            continue;
        }
        if host.parse::<IpAddr>().is_err() {
            return Err(format!("expected IP in URL for binding ({u})"));
        }
    }
    Ok(())
}

/// etcd's `checkHostURLs`: advertised URLs need a non-empty host.
fn check_host_urls(list: &[String]) -> Result<(), String> {
    for u in list {
        let (host, _) = split_host_port(&url_host(u))?;
        if host.is_empty() {
            return Err(format!("unexpected empty host ({u})"));
        }
    }
    Ok(())
}

/// Turns listen URLs into socket addresses: `localhost` is 127.0.0.1, IPs are
/// used as they are, an empty port is 0; duplicates are dropped.  `https` /
/// `unixs` (TLS) and `unix` sockets are not supported yet.
pub fn urls_to_socket_addrs(list: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for u in list {
        let parsed = GoUrl::parse(u).map_err(ConfigError::verify)?;
        match parsed.scheme.as_str() {
            "http" => {}
            "https" | "unixs" => {
                return Err(ConfigError::new(
                    ErrorKind::Unsupported,
                    format!("TLS not supported yet: {u}"),
                ))
            }
            _ => {
                return Err(ConfigError::new(
                    ErrorKind::Unsupported,
                    format!("unix sockets not supported yet: {u}"),
                ))
            }
        }
        let (host, port) = split_host_port(&parsed.host).map_err(ConfigError::verify)?;
        let ip: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else if host.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            host.parse()
                .map_err(|_| ConfigError::verify(format!("expected IP in URL for binding ({u})")))?
        };
        let port: u16 = if port.is_empty() {
            0
        } else {
            port.parse().map_err(|_| {
                ConfigError::new(
                    ErrorKind::Bootstrap,
                    format!("listen tcp: address {port}: invalid port"),
                )
            })?
        };
        let addr = SocketAddr::new(ip, port);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

/// What `main` calls: parses `std::env::args()` / `std::env::vars()` and
/// behaves like etcd: prints help/version and exits 0, reports errors and
/// exits with etcd's status, otherwise sets up logging, logs the startup
/// lines and returns the configuration.
pub fn parse_cli() -> Config {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    parse_cli_from(&argv, &env)
}

/// [`parse_cli`] with an explicit command line (program name first) and environment.
pub fn parse_cli_from(argv: &[String], env: &[(String, String)]) -> Config {
    let args = argv.get(1..).unwrap_or(&[]);
    match Config::parse(args, env) {
        Ok(Parsed::Help { stdout, stderr }) => {
            eprint!("{stderr}");
            print!("{stdout}");
            std::process::exit(0)
        }
        Ok(Parsed::Version(v)) => {
            print!("{v}");
            std::process::exit(0)
        }
        Err(e) => {
            e.report(argv);
            std::process::exit(e.exit_code())
        }
        Ok(Parsed::Run(cfg)) => {
            for n in &cfg.env_notices {
                n.emit();
            }
            if let Err(e) = cfg.init_logging() {
                e.report(argv);
                std::process::exit(e.exit_code());
            }
            cfg.log_startup(argv);
            *cfg
        }
    }
}

#[cfg(test)]
mod tests;
