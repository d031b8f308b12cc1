//! A tiny structured logger shaped like etcd 3.5's zap JSON output.
//!
//! Each record is one JSON object on one line, keys in zap's order:
//! `{"level":"info","ts":"2021-12-01T10:00:00.000Z","caller":"dir/file.rs:12","msg":"...", <fields>}`
//! (`"logger":"name"` sits between `ts` and `caller` for named loggers, as zap
//! does for etcd's raft lines).  The timestamp is UTC with millisecond
//! precision, the exact shape etcd 3.5.1 prints.  `caller` is the last
//! directory and file of the Rust source plus the line, like zap's short caller.
//!
//! The logger is global and usable from any thread.  Until [`init`] is called
//! it logs `info` and above to stderr, like etcd's bootstrap logger.
//!
//! ```no_run
//! use serde_json::json;
//! tools::logging::info("serving client traffic", &[("address", json!("127.0.0.1:2379"))]);
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::panic::Location;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// zap's levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    DPanic,
    Panic,
    Fatal,
}

impl Level {
    /// Parses a level like zap's `Level.UnmarshalText` (case-insensitive; the
    /// empty string means `info`).  The error is zap's text.
    pub fn parse(s: &str) -> Result<Level, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "info" | "" => Level::Info,
            "warn" => Level::Warn,
            "error" => Level::Error,
            "dpanic" => Level::DPanic,
            "panic" => Level::Panic,
            "fatal" => Level::Fatal,
            _ => {
                return Err(format!(
                    "unrecognized level: {}",
                    crate::flags::goparse::quote(s)
                ))
            }
        })
    }

    /// zap's lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::DPanic => "dpanic",
            Level::Panic => "panic",
            Level::Fatal => "fatal",
        }
    }
}

/// A log record kept for later (e.g. what configuration parsing has to say
/// before the logger is set up).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub level: Level,
    pub caller: String,
    pub msg: String,
    pub fields: Vec<(String, Value)>,
}

impl Entry {
    /// A record whose caller is the code that creates it.
    #[track_caller]
    pub fn new(level: Level, msg: impl Into<String>, fields: &[(&str, Value)]) -> Entry {
        let loc = Location::caller();
        Entry {
            level,
            caller: short_caller(loc.file(), loc.line()),
            msg: msg.into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// Writes the record through the global logger.
    pub fn emit(&self) {
        let fields: Vec<(&str, Value)> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        log_at(self.level, None, &self.caller, &self.msg, &fields);
    }

    /// The JSON line for this record at the given time (no trailing newline).
    pub fn format(&self, ts: SystemTime) -> String {
        let fields: Vec<(&str, Value)> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        format_line(self.level, ts, None, &self.caller, &self.msg, &fields)
    }
}

enum Sink {
    Stderr,
    Stdout,
    File(Mutex<File>),
}

struct State {
    level: Level,
    sinks: Vec<Sink>,
}

fn state() -> &'static RwLock<Arc<State>> {
    static STATE: OnceLock<RwLock<Arc<State>>> = OnceLock::new();
    STATE.get_or_init(|| {
        RwLock::new(Arc::new(State {
            level: Level::Info,
            sinks: vec![Sink::Stderr],
        }))
    })
}

fn current() -> Arc<State> {
    match state().read() {
        Ok(g) => Arc::clone(&g),
        Err(poisoned) => Arc::clone(&poisoned.into_inner()),
    }
}

/// Go-style text of an I/O error (`no such file or directory`).
pub fn go_io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
        None => text,
    }
}

/// Opens the sinks for etcd `--log-outputs` values: `default` and `stderr`
/// (stderr), `stdout`, `/dev/null` (discards everything, whatever else is
/// listed), `systemd/journal` (not supported: stderr), anything else a file
/// opened for appending.  The error is zap's text
/// (`couldn't open sink "x": open x: no such file or directory`).
fn open_sinks(outputs: &[String]) -> Result<Vec<Sink>, String> {
    let mut uniq: Vec<&str> = outputs.iter().map(String::as_str).collect();
    uniq.sort_unstable();
    uniq.dedup();
    if uniq.contains(&"/dev/null") {
        return Ok(Vec::new());
    }
    let mut sinks = Vec::new();
    let mut have_stderr = false;
    for out in uniq {
        match out {
            "default" | "stderr" | "systemd/journal" => {
                if !have_stderr {
                    have_stderr = true;
                    sinks.push(Sink::Stderr);
                }
            }
            "stdout" => sinks.push(Sink::Stdout),
            path => {
                let file = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .map_err(|e| {
                        format!(
                            "couldn't open sink {}: open {}: {}",
                            crate::flags::goparse::quote(path),
                            path,
                            go_io_error(&e)
                        )
                    })?;
                sinks.push(Sink::File(Mutex::new(file)));
            }
        }
    }
    Ok(sinks)
}

/// Checks that the outputs can be opened (files are created, as etcd does).
pub fn check_outputs(outputs: &[String]) -> Result<(), String> {
    open_sinks(outputs).map(|_| ())
}

/// Sets the level and the outputs (etcd `--log-outputs` values) of the global logger.
pub fn init(outputs: &[String], level: Level) -> Result<(), String> {
    let sinks = open_sinks(outputs)?;
    let new = Arc::new(State { level, sinks });
    match state().write() {
        Ok(mut g) => *g = new,
        Err(poisoned) => *poisoned.into_inner() = new,
    }
    Ok(())
}

/// Whether records of this level are written.
pub fn enabled(level: Level) -> bool {
    level >= current().level
}

/// zap's short caller: the last directory and the file name, plus the line.
pub fn short_caller(file: &str, line: u32) -> String {
    let norm = file.replace('\\', "/");
    let parts: Vec<&str> = norm.rsplitn(3, '/').collect();
    let short = match parts.len() {
        0 | 1 => norm.clone(),
        _ => format!("{}/{}", parts[1], parts[0]),
    };
    format!("{short}:{line}")
}

/// `2021-12-01T10:00:00.000Z` (UTC, milliseconds), etcd 3.5.1's `ts` format.
pub fn format_ts(t: SystemTime) -> String {
    let (secs, millis) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(e) => {
            let d = e.duration();
            let mut s = -(d.as_secs() as i64);
            let mut ms = d.subsec_millis();
            if ms > 0 {
                s -= 1;
                ms = 1000 - ms;
            }
            (s, ms)
        }
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// One JSON log line (without the newline).
pub fn format_line(
    level: Level,
    ts: SystemTime,
    logger: Option<&str>,
    caller: &str,
    msg: &str,
    fields: &[(&str, Value)],
) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("{\"level\":");
    line.push_str(&json_str(level.as_str()));
    line.push_str(",\"ts\":");
    line.push_str(&json_str(&format_ts(ts)));
    if let Some(name) = logger {
        line.push_str(",\"logger\":");
        line.push_str(&json_str(name));
    }
    line.push_str(",\"caller\":");
    line.push_str(&json_str(caller));
    line.push_str(",\"msg\":");
    line.push_str(&json_str(msg));
    for (k, v) in fields {
        line.push(',');
        line.push_str(&json_str(k));
        line.push(':');
        line.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "null".to_string()));
    }
    line.push('}');
    line
}

/// Writes one record if its level is enabled.  `logger` is zap's logger name
/// (e.g. `raft`), `caller` the `dir/file:line` text.
pub fn log_at(
    level: Level,
    logger: Option<&str>,
    caller: &str,
    msg: &str,
    fields: &[(&str, Value)],
) {
    let st = current();
    if level < st.level {
        return;
    }
    let mut line = format_line(level, SystemTime::now(), logger, caller, msg, fields);
    line.push('\n');
    for sink in &st.sinks {
        // A failing log write must never take the server down.
        let _ = match sink {
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|_| out.flush())
            }
            Sink::File(f) => match f.lock() {
                Ok(mut f) => f.write_all(line.as_bytes()),
                Err(poisoned) => poisoned.into_inner().write_all(line.as_bytes()),
            },
        };
    }
}

/// Writes a record at `level`; the caller is the calling code.
#[track_caller]
pub fn log(level: Level, msg: &str, fields: &[(&str, Value)]) {
    let loc = Location::caller();
    if enabled(level) {
        log_at(
            level,
            None,
            &short_caller(loc.file(), loc.line()),
            msg,
            fields,
        );
    }
}

/// Writes a record for a named zap logger (`"logger":"raft"`).
#[track_caller]
pub fn log_named(level: Level, logger: &str, msg: &str, fields: &[(&str, Value)]) {
    let loc = Location::caller();
    if enabled(level) {
        log_at(
            level,
            Some(logger),
            &short_caller(loc.file(), loc.line()),
            msg,
            fields,
        );
    }
}

#[track_caller]
pub fn debug(msg: &str, fields: &[(&str, Value)]) {
    log(Level::Debug, msg, fields)
}

#[track_caller]
pub fn info(msg: &str, fields: &[(&str, Value)]) {
    log(Level::Info, msg, fields)
}

#[track_caller]
pub fn warn(msg: &str, fields: &[(&str, Value)]) {
    log(Level::Warn, msg, fields)
}

#[track_caller]
pub fn error(msg: &str, fields: &[(&str, Value)]) {
    log(Level::Error, msg, fields)
}

/// Logs at `fatal` and exits with status 1, like zap's `Fatal`.
#[track_caller]
pub fn fatal(msg: &str, fields: &[(&str, Value)]) -> ! {
    log(Level::Fatal, msg, fields);
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn levels_like_zap() {
        assert_eq!(Level::parse("debug"), Ok(Level::Debug));
        assert_eq!(Level::parse("Debug"), Ok(Level::Debug));
        assert_eq!(Level::parse("WARN"), Ok(Level::Warn));
        assert_eq!(Level::parse(""), Ok(Level::Info));
        assert_eq!(Level::parse("dpanic"), Ok(Level::DPanic));
        assert_eq!(
            Level::parse("warning"),
            Err("unrecognized level: \"warning\"".to_string())
        );
        assert!(Level::Debug < Level::Info && Level::Error < Level::Fatal);
    }

    #[test]
    fn timestamp_shape_matches_etcd_351() {
        // etcd 3.5.1 printed e.g. "ts":"2026-11-28T03:15:05.472Z"
        let t = UNIX_EPOCH + Duration::from_millis(1_795_835_705_472);
        assert_eq!(format_ts(t), "2026-11-28T03:15:05.472Z");
        assert_eq!(format_ts(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_ts(t), "2000-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_638_352_800); // 2021-12-01T10:00:00Z
        assert_eq!(format_ts(t), "2021-12-01T10:00:00.000Z");
    }

    #[test]
    fn line_shape_matches_zap() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_835_705_472);
        let line = format_line(
            Level::Info,
            t,
            None,
            "embed/etcd.go:131",
            "configuring peer listeners",
            &[("listen-peer-urls", json!(["http://127.0.0.1:42380"]))],
        );
        assert_eq!(
            line,
            r#"{"level":"info","ts":"2026-11-28T03:15:05.472Z","caller":"embed/etcd.go:131","msg":"configuring peer listeners","listen-peer-urls":["http://127.0.0.1:42380"]}"#
        );
        let named = format_line(Level::Info, t, Some("raft"), "a/b.rs:1", "x \"y\"", &[]);
        assert_eq!(
            named,
            r#"{"level":"info","ts":"2026-11-28T03:15:05.472Z","logger":"raft","caller":"a/b.rs:1","msg":"x \"y\""}"#
        );
        let v: Value = serde_json::from_str(&named).unwrap();
        assert_eq!(v["msg"], "x \"y\"");
    }

    #[test]
    fn short_caller_keeps_last_dir() {
        assert_eq!(
            short_caller("tools/src/bin/ferrocd.rs", 7),
            "bin/ferrocd.rs:7"
        );
        assert_eq!(short_caller("src/lib.rs", 3), "src/lib.rs:3");
        assert_eq!(short_caller("lib.rs", 3), "lib.rs:3");
        let e = Entry::new(Level::Warn, "m", &[]);
        assert!(e.caller.starts_with("src/logging.rs:"), "{}", e.caller);
    }

    #[test]
    fn sink_errors_like_zap() {
        assert_eq!(
            check_outputs(&["".to_string()]).unwrap_err(),
            "couldn't open sink \"\": open : no such file or directory"
        );
        assert!(check_outputs(&["default".into(), "stdout".into()]).is_ok());
    }

    #[test]
    fn file_output_and_level_filter() {
        let dir = std::env::temp_dir().join(format!("ferrocd-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("etcd.log");
        let _ = std::fs::remove_file(&path);
        let p = path.to_string_lossy().to_string();
        init(std::slice::from_ref(&p), Level::Warn).unwrap();
        info("dropped", &[]);
        let handles: Vec<_> = (0..4)
            .map(|i| std::thread::spawn(move || warn("kept", &[("i", json!(i))])))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        init(&["default".to_string()], Level::Info).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for l in lines {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["level"], "warn");
            assert_eq!(v["msg"], "kept");
            assert!(v["caller"].as_str().unwrap().starts_with("src/logging.rs:"));
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 5);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
