//! etcd 3.5's command line: the flag table, a parser that behaves like Go's
//! `flag` package (which etcd uses), and the `--help` / `--version` texts.
//!
//! Syntax accepted, exactly as Go's `flag` package does:
//! * `-name value`, `--name value`, `-name=value`, `--name=value`;
//! * bool flags take no separate value: `--flag`, `--flag=true|false|1|0|t|f|...`;
//! * `--` ends the flags; parsing also stops at the first argument that is not
//!   a flag (etcd then refuses it: `'x' is not a valid flag`);
//! * `-h`, `-help`, `--h`, `--help` (with or without `=value`) ask for help.

pub mod goparse;
mod table;
pub mod url;

pub use table::{FLAGS, IGNORED};

use goparse::{parse_bool, parse_duration, parse_int, parse_uint, quote};

/// The etcd release whose behaviour and API ferrocd reproduces (and reports
/// in `--version`).  Every etcd behaviour in this crate was checked against
/// this release's binary.
pub const ETCD_COMPAT_VERSION: &str = "3.5.1";

/// ferrocd's own version.
pub const FERROCD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `--help` section a flag is listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Member,
    Clustering,
    Security,
    Auth,
    Profiling,
    Logging,
    Tracing,
    V2Proxy,
    Experimental,
    Unsafe,
    /// Accepted but not listed by `--help`.
    Hidden,
}

impl Group {
    pub const LISTED: [Group; 10] = [
        Group::Member,
        Group::Clustering,
        Group::Security,
        Group::Auth,
        Group::Profiling,
        Group::Logging,
        Group::Tracing,
        Group::V2Proxy,
        Group::Experimental,
        Group::Unsafe,
    ];

    /// Section title as etcd prints it.
    pub fn title(self) -> &'static str {
        match self {
            Group::Member => "Member:",
            Group::Clustering => "Clustering:",
            Group::Security => "Security:",
            Group::Auth => "Auth:",
            Group::Profiling => "Profiling and Monitoring:",
            Group::Logging => "Logging:",
            Group::Tracing => "Experimental distributed tracing:",
            Group::V2Proxy => "v2 Proxy (to be deprecated in v3.6):",
            Group::Experimental => "Experimental feature:",
            Group::Unsafe => "Unsafe feature:",
            Group::Hidden => "",
        }
    }
}

/// The Go type behind a flag, which decides the accepted syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    /// Go `int` (64-bit): `strconv.ParseInt(s, 0, 64)`.
    Int,
    Int64,
    /// Go `uint` (64-bit): `strconv.ParseUint(s, 0, 64)`.
    Uint,
    Uint64,
    /// etcd's own uint32 flag (`max-concurrent-streams`), which reports raw strconv errors.
    Uint32,
    /// `time.ParseDuration` syntax.
    Duration,
    /// etcd's `UniqueURLs`: comma-separated URLs; an empty value keeps the previous one.
    Urls,
    /// `UniqueURLs` that also accepts `*` (`--cors`).
    CorsUrls,
    /// etcd's `StringsValue`: comma-separated, order kept.
    Strings,
    /// etcd's `UniqueStringsValue`: comma-separated, deduplicated, sorted.
    UniqueStrings,
    /// etcd's `SelectiveStringValue`: one of the listed strings.
    Choice(&'static [&'static str]),
    /// etcd's `SelectiveStringsValue`: comma-separated, each one of the listed strings.
    ChoiceList(&'static [&'static str]),
    /// Old etcd 2 flag: accepted like a bool flag and ignored.
    Ignored,
}

impl Kind {
    /// Go's `IsBoolFlag`: such flags never consume the next argument.
    pub fn is_bool_flag(self) -> bool {
        matches!(self, Kind::Bool | Kind::Ignored)
    }
}

/// Where a flag lives in the `--config-file` YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Yaml {
    /// Top-level key with the flag's name.
    Same,
    /// Top-level key with another name.
    Key(&'static str),
    /// Key inside `client-transport-security`.
    Client(&'static str),
    /// Key inside `peer-transport-security`.
    Peer(&'static str),
    /// Key inside `socket-options`.
    Socket(&'static str),
    /// Not settable from the file.
    None,
}

/// One row of the flag table.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// The value etcd really starts with, in flag syntax.
    pub default: &'static str,
    /// What `--help` prints after the flag name (`'default'`, `10`...); `None`: nothing.
    pub help_default: Option<&'static str>,
    pub group: Group,
    /// Whether ferrocd honours this flag today.
    pub implemented: bool,
    /// ferrocd's description (lines separated by `\n`).
    pub usage: &'static str,
    pub yaml: Yaml,
}

impl FlagSpec {
    /// The `ETCD_*` variable for this flag.
    pub fn env_name(&self) -> String {
        env_name(self.name)
    }

    /// The typed default value.
    pub fn default_value(&self) -> Value {
        match self.kind {
            // The empty "previous value" can never be kept for a non-empty default.
            Kind::Urls if self.default.is_empty() => Value::Urls(Vec::new()),
            Kind::Strings if self.default.is_empty() => Value::List(Vec::new()),
            _ => parse_value(self, &Value::Ignored, self.default)
                .unwrap_or_else(|e| panic!("bad default for --{}: {e}", self.name)),
        }
    }
}

/// Looks a flag up by its exact name.
pub fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.name == name)
}

fn index_of(name: &str) -> Option<usize> {
    FLAGS.iter().position(|f| f.name == name)
}

/// etcd's `flags.FlagToEnv("ETCD", name)`: `ETCD_` + upper case, `-` → `_`.
pub fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.replace('-', "_").to_uppercase())
}

/// A flag's typed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Str(String),
    Int(i64),
    Uint(u64),
    /// Nanoseconds.
    Duration(i64),
    /// Canonical URL strings, sorted and deduplicated.
    Urls(Vec<String>),
    List(Vec<String>),
    Ignored,
}

impl Value {
    /// The value in flag syntax (URL and string lists joined by commas).
    pub fn to_flag_string(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Uint(u) => u.to_string(),
            Value::Duration(d) => goparse::duration_string(*d),
            Value::Urls(v) | Value::List(v) => v.join(","),
            Value::Ignored => String::new(),
        }
    }

    pub fn as_bool(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Value::Str(s) => s,
            _ => "",
        }
    }

    pub fn as_u64(&self) -> u64 {
        match self {
            Value::Uint(u) => *u,
            Value::Int(i) if *i >= 0 => *i as u64,
            _ => 0,
        }
    }

    pub fn as_i64(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            Value::Uint(u) => i64::try_from(*u).unwrap_or(i64::MAX),
            Value::Duration(d) => *d,
            _ => 0,
        }
    }

    pub fn as_list(&self) -> &[String] {
        match self {
            Value::Urls(v) | Value::List(v) => v,
            _ => &[],
        }
    }
}

/// Parses `raw` for a flag the way its Go `flag.Value.Set` does.  `current` is
/// the value before (needed for etcd's URL lists, which keep it on `""`).
/// The error is the text Go prints after `invalid value "raw" for flag -name: `.
pub fn parse_value(spec: &FlagSpec, current: &Value, raw: &str) -> Result<Value, String> {
    Ok(match spec.kind {
        Kind::Bool => Value::Bool(parse_bool(raw).ok_or_else(|| "parse error".to_string())?),
        Kind::Str => Value::Str(raw.to_string()),
        Kind::Int | Kind::Int64 => {
            Value::Int(parse_int(raw, 64).map_err(|e| e.flag_text().to_string())?)
        }
        Kind::Uint | Kind::Uint64 => {
            Value::Uint(parse_uint(raw, 64).map_err(|e| e.flag_text().to_string())?)
        }
        Kind::Uint32 => Value::Uint(parse_uint(raw, 32).map_err(|e| {
            format!(
                "strconv.ParseUint: parsing {}: {}",
                quote(raw),
                e.strconv_text()
            )
        })?),
        Kind::Duration => {
            Value::Duration(parse_duration(raw).ok_or_else(|| "parse error".to_string())?)
        }
        Kind::Urls => {
            if raw.is_empty() {
                current.clone()
            } else {
                Value::Urls(url::unique_urls(raw)?)
            }
        }
        Kind::CorsUrls => {
            if raw == "*" {
                Value::Urls(vec!["*".to_string()])
            } else {
                Value::Urls(url::unique_urls(raw)?)
            }
        }
        Kind::Strings => Value::List(raw.split(',').map(str::to_string).collect()),
        Kind::UniqueStrings => {
            let mut v: Vec<String> = raw.split(',').map(str::to_string).collect();
            v.sort();
            v.dedup();
            Value::List(v)
        }
        Kind::Choice(valids) => {
            if valids.contains(&raw) {
                Value::Str(raw.to_string())
            } else {
                return Err("invalid value".to_string());
            }
        }
        Kind::ChoiceList(valids) => {
            let mut out = Vec::new();
            for part in raw.split(',') {
                if !valids.contains(&part) {
                    return Err(format!("invalid value {}", quote(part)));
                }
                out.push(part.to_string());
            }
            out.sort();
            Value::List(out)
        }
        Kind::Ignored => Value::Ignored,
    })
}

/// What parsing the command line found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsOutcome {
    /// All flags parsed; `rest` holds the arguments after them (etcd refuses any).
    Done { rest: Vec<String> },
    /// `-h` / `--help` was given.
    Help,
}

/// The values of all flags, plus which ones were set explicitly (Go's
/// `FlagSet.Visit` set).
#[derive(Debug, Clone)]
pub struct FlagSet {
    values: Vec<Value>,
    set: Vec<bool>,
    order: Vec<usize>,
}

impl Default for FlagSet {
    fn default() -> Self {
        Self::new()
    }
}

impl FlagSet {
    /// All flags at their defaults, none set.
    pub fn new() -> FlagSet {
        FlagSet {
            values: FLAGS.iter().map(FlagSpec::default_value).collect(),
            set: vec![false; FLAGS.len()],
            order: Vec::new(),
        }
    }

    fn idx(name: &str) -> usize {
        index_of(name).unwrap_or_else(|| panic!("unknown flag name {name:?}"))
    }

    /// The current value of a flag of the table (panics on a name not in the table).
    pub fn get(&self, name: &str) -> &Value {
        &self.values[Self::idx(name)]
    }

    /// Whether the flag was set explicitly (command line, environment or file).
    pub fn is_set(&self, name: &str) -> bool {
        index_of(name).is_some_and(|i| self.set[i])
    }

    /// Names of the explicitly set flags, in the order they were first set.
    pub fn explicitly_set(&self) -> Vec<&'static str> {
        self.order.iter().map(|&i| FLAGS[i].name).collect()
    }

    /// Go's `FlagSet.Set(name, value)`: parses and marks the flag as set.
    /// The error is the `flag.Value.Set` error text.
    pub fn set(&mut self, name: &str, raw: &str) -> Result<(), String> {
        let i = index_of(name).ok_or_else(|| format!("no such flag -{name}"))?;
        self.set_idx(i, raw)
    }

    fn set_idx(&mut self, i: usize, raw: &str) -> Result<(), String> {
        let v = parse_value(&FLAGS[i], &self.values[i], raw)?;
        self.store(i, v);
        Ok(())
    }

    fn store(&mut self, i: usize, v: Value) {
        self.values[i] = v;
        if !self.set[i] {
            self.set[i] = true;
            self.order.push(i);
        }
    }

    /// Stores an already typed value (from the config file) and marks it set.
    pub fn set_value(&mut self, name: &str, v: Value) {
        self.store(Self::idx(name), v);
    }

    /// Overwrites a value without marking the flag as set (etcd's internal adjustments).
    pub fn replace(&mut self, name: &str, v: Value) {
        self.values[Self::idx(name)] = v;
    }

    /// Parses command line arguments (without the program name) like Go's
    /// `FlagSet.Parse` with `ContinueOnError`.  The error is the line Go prints
    /// before the usage text (`flag provided but not defined: -foo`).
    pub fn parse_args(&mut self, args: &[String]) -> Result<ArgsOutcome, String> {
        let mut i = 0;
        while i < args.len() {
            let s = args[i].as_str();
            if s.len() < 2 || !s.starts_with('-') {
                break;
            }
            let mut minuses = 1;
            if s.as_bytes()[1] == b'-' {
                minuses = 2;
                if s.len() == 2 {
                    i += 1;
                    break;
                }
            }
            let body = &s[minuses..];
            if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
                return Err(format!("bad flag syntax: {s}"));
            }
            i += 1;
            let (name, value) = match body.find('=') {
                Some(j) => (&body[..j], Some(&body[j + 1..])),
                None => (body, None),
            };
            let Some(idx) = index_of(name) else {
                if name == "help" || name == "h" {
                    return Ok(ArgsOutcome::Help);
                }
                return Err(format!("flag provided but not defined: -{name}"));
            };
            if FLAGS[idx].kind.is_bool_flag() {
                match value {
                    Some(v) => self.set_idx(idx, v).map_err(|e| {
                        format!("invalid boolean value {} for -{name}: {e}", quote(v))
                    })?,
                    None => self
                        .set_idx(idx, "true")
                        .map_err(|e| format!("invalid boolean flag {name}: {e}"))?,
                }
            } else {
                let v = match value {
                    Some(v) => v,
                    None if i < args.len() => {
                        i += 1;
                        args[i - 1].as_str()
                    }
                    None => return Err(format!("flag needs an argument: -{name}")),
                };
                self.set_idx(idx, v)
                    .map_err(|e| format!("invalid value {} for flag -{name}: {e}", quote(v)))?;
            }
        }
        Ok(ArgsOutcome::Done {
            rest: args[i..].to_vec(),
        })
    }
}

/// The usage summary etcd writes to stderr for `--help` and after a flag
/// error (already ending with the extra blank line Go's `Fprintln` adds).
pub fn usage_text() -> String {
    "Usage:

  etcd [flags]
    Start the server (ferrocd, compatible with etcd v3.5).

  etcd --version
    Print the version information and exit.

  etcd -h | --help
    Print this help and exit.

  etcd --config-file
    Read the server configuration from a YAML file. When a configuration file is given, all other command line flags and ETCD_* environment variables are ignored.

  etcd gateway
    The stateless TCP forwarding gateway (not supported by ferrocd).

  etcd grpc-proxy
    The stateless gRPC L7 reverse proxy (not supported by ferrocd).

"
    .to_string()
}

/// The flag list etcd writes to stdout for `--help`.
pub fn flags_text() -> String {
    let mut out = String::from("\n");
    for group in Group::LISTED {
        out.push_str(group.title());
        out.push('\n');
        for spec in FLAGS.iter().filter(|f| f.group == group) {
            out.push_str("  --");
            out.push_str(spec.name);
            if let Some(d) = spec.help_default {
                out.push(' ');
                out.push_str(d);
            }
            out.push('\n');
            for line in spec.usage.split('\n') {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
            if !spec.implemented {
                out.pop();
                out.push_str(" [not yet in ferrocd]\n");
            }
        }
        out.push('\n');
    }
    out.push_str(
        "CAUTIOUS with unsafe flag! Unsafe flags can break the guarantees of the consensus protocol!\n\n",
    );
    out
}

/// Go's `GOOS/GOARCH` spelling of the platform we run on.
pub fn go_os_arch() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    };
    format!("{}/{}", std::env::consts::OS, arch)
}

/// `--version` output.  The first line is etcd's (scripts parse
/// `etcd Version: X`): it names the etcd release whose API ferrocd serves.
/// The Go line says honestly that there is no Go runtime, and a last line
/// gives ferrocd's own version.
pub fn version_text() -> String {
    format!(
        "etcd Version: {}\nGit SHA: {}\nGo Version: n/a (ferrocd is written in Rust)\nGo OS/Arch: {}\nferrocd Version: {}\n",
        ETCD_COMPAT_VERSION,
        option_env!("FERROCD_GIT_SHA").unwrap_or("unknown"),
        go_os_arch(),
        FERROCD_VERSION
    )
}

#[cfg(test)]
mod tests;
