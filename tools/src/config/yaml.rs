//! `--config-file`: etcd's YAML configuration file.
//!
//! etcd reads it with `sigs.k8s.io/yaml` (YAML → JSON → `encoding/json` into
//! `embed.configYAML`), which gives these rules, reproduced here:
//! * keys are the flag names (`name`, `data-dir`, `listen-client-urls`...),
//!   matched exactly or else case-insensitively; unknown keys are ignored and
//!   `null` values leave the default in place;
//! * TLS settings live under `client-transport-security` /
//!   `peer-transport-security`, socket options under `socket-options`;
//! * URL lists are one comma-separated string, `log-outputs` and
//!   `cipher-suites` are YAML lists, durations are integers (nanoseconds);
//! * a value of the wrong type fails with Go's message, e.g.
//!   `error unmarshaling JSON: while decoding JSON: json: cannot unmarshal
//!   string into Go struct field configYAML.snapshot-count of type uint64`
//!   (keys are checked in sorted order, as the JSON object etcd decodes has
//!   sorted keys).

use serde_yaml::Value as Y;

use super::{ConfigError, ErrorKind};
use crate::flags::url::new_urls;
use crate::flags::{FlagSet, FlagSpec, Kind, Value, Yaml, FLAGS};
use crate::logging::go_io_error;

/// A YAML document read the lenient way go-yaml (used by etcd) reads it:
/// a key given twice keeps its last value instead of failing, and tags are
/// ignored.
struct Loose(Y);

impl<'de> serde::Deserialize<'de> for Loose {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> serde::de::Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Loose, E> {
        Ok(Loose(Y::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Loose, E> {
        Ok(Loose(Y::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Loose, E> {
        Ok(Loose(Y::Number(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Loose, E> {
        Ok(Loose(Y::Number(v.into())))
    }

    fn visit_str<E>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose(Y::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Loose, E> {
        Ok(Loose(Y::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Loose, E> {
        Ok(Loose(Y::Null))
    }

    fn visit_none<E>(self) -> Result<Loose, E> {
        Ok(Loose(Y::Null))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Loose, D::Error> {
        serde::Deserialize::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        let mut out = Vec::new();
        while let Some(Loose(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Loose(Y::Sequence(out)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        let mut out = serde_yaml::Mapping::new();
        while let Some((Loose(k), Loose(v))) = map.next_entry()? {
            out.insert(k, v);
        }
        Ok(Loose(Y::Mapping(out)))
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Loose, A::Error> {
        use serde::de::VariantAccess;
        let (_tag, variant): (String, _) = data.variant()?;
        variant.newtype_variant()
    }
}

const PREFIX: &str = "error unmarshaling JSON: while decoding JSON: json: ";

fn kind_name(v: &Y) -> String {
    match v {
        Y::Null => "null".into(),
        Y::Bool(_) => "bool".into(),
        Y::Number(_) => "number".into(),
        Y::String(_) => "string".into(),
        Y::Sequence(_) => "array".into(),
        Y::Mapping(_) => "object".into(),
        Y::Tagged(t) => kind_name(&t.value),
    }
}

fn untag(v: &Y) -> &Y {
    match v {
        Y::Tagged(t) => untag(&t.value),
        other => other,
    }
}

fn key_string(k: &Y) -> String {
    match untag(k) {
        Y::String(s) => s.clone(),
        Y::Bool(b) => b.to_string(),
        Y::Number(n) => n.to_string(),
        Y::Null => "null".to_string(),
        other => format!("{other:?}"),
    }
}

/// Go's JSON spelling of a number literal (`-1`, `1.5`, `1e+23`).
fn number_literal(n: &serde_yaml::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// The Go field type of a flag in `embed.Config`.
fn go_type(spec: &FlagSpec) -> &'static str {
    match spec.kind {
        Kind::Bool => "bool",
        Kind::Int => "int",
        Kind::Int64 => "int64",
        Kind::Uint => "uint",
        Kind::Uint64 => "uint64",
        Kind::Uint32 => "uint32",
        Kind::Duration => "time.Duration",
        Kind::Strings => "[]string",
        Kind::UniqueStrings if spec.name == "log-outputs" => "[]string",
        _ => "string",
    }
}

struct Mismatch(String);

fn type_error(field: &str, v: &Y, go_type: &str) -> Mismatch {
    Mismatch(format!(
        "{PREFIX}cannot unmarshal {} into Go struct field {field} of type {go_type}",
        kind_name(v)
    ))
}

/// YAML 1.1 booleans that go-yaml (used by etcd) reads as bools.
fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn to_int(field: &str, v: &Y, go_type: &str, min: i128, max: i128) -> Result<i128, Mismatch> {
    let Y::Number(n) = v else {
        return Err(type_error(field, v, go_type));
    };
    let value: Option<i128> = if let Some(i) = n.as_i64() {
        Some(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Some(i128::from(u))
    } else {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1.8e19)
            .map(|f| f as i128)
    };
    match value {
        Some(x) if x >= min && x <= max => Ok(x),
        _ => Err(Mismatch(format!(
            "{PREFIX}cannot unmarshal number {} into Go struct field {field} of type {go_type}",
            number_literal(n)
        ))),
    }
}

fn to_string(field: &str, v: &Y, go_type: &str) -> Result<String, Mismatch> {
    match v {
        Y::String(s) => Ok(s.clone()),
        _ => Err(type_error(field, v, go_type)),
    }
}

fn to_string_list(field: &str, v: &Y) -> Result<Vec<String>, Mismatch> {
    let Y::Sequence(items) = v else {
        return Err(type_error(field, v, "[]string"));
    };
    items
        .iter()
        .map(|item| match untag(item) {
            Y::String(s) => Ok(s.clone()),
            Y::Null => Ok(String::new()),
            other => Err(type_error(field, other, "string")),
        })
        .collect()
}

/// Converts a YAML value for the flag `spec` (field path `field` for errors).
fn convert(spec: &FlagSpec, field: &str, v: &Y) -> Result<Value, Mismatch> {
    let t = go_type(spec);
    Ok(match spec.kind {
        Kind::Bool => match v {
            Y::Bool(b) => Value::Bool(*b),
            Y::String(s) => match yaml11_bool(s) {
                Some(b) => Value::Bool(b),
                None => return Err(type_error(field, v, t)),
            },
            _ => return Err(type_error(field, v, t)),
        },
        Kind::Int | Kind::Int64 => {
            Value::Int(to_int(field, v, t, i128::from(i64::MIN), i128::from(i64::MAX))? as i64)
        }
        Kind::Duration => {
            Value::Duration(to_int(field, v, t, i128::from(i64::MIN), i128::from(i64::MAX))? as i64)
        }
        Kind::Uint | Kind::Uint64 => {
            Value::Uint(to_int(field, v, t, 0, i128::from(u64::MAX))? as u64)
        }
        Kind::Uint32 => Value::Uint(to_int(field, v, t, 0, i128::from(u32::MAX))? as u64),
        Kind::Strings => Value::List(to_string_list(field, v)?),
        Kind::UniqueStrings if spec.name == "log-outputs" => Value::List(to_string_list(field, v)?),
        Kind::UniqueStrings => {
            let s = to_string(field, v, t)?;
            let mut list: Vec<String> = s.split(',').map(str::to_string).collect();
            list.sort();
            list.dedup();
            Value::List(list)
        }
        Kind::ChoiceList(_) => Value::List(vec![to_string(field, v, t)?]),
        // URL lists stay raw text here; `finish_urls` checks them afterwards.
        _ => Value::Str(to_string(field, v, t)?),
    })
}

/// A key of a YAML mapping matched like `encoding/json` does: exact first,
/// then case-insensitively.
fn find<'a, T>(candidates: &'a [(&'static str, T)], key: &str) -> Option<&'a (&'static str, T)> {
    candidates
        .iter()
        .find(|(k, _)| *k == key)
        .or_else(|| candidates.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
}

/// Sorted (key, value) pairs of a mapping; `null` values dropped.
fn entries(map: &serde_yaml::Mapping) -> Vec<(String, &Y)> {
    let mut out: Vec<(String, &Y)> = map
        .iter()
        .map(|(k, v)| (key_string(k), untag(v)))
        .filter(|(_, v)| !matches!(v, Y::Null))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

enum Target {
    Flag(&'static FlagSpec),
    Section(
        fn(&FlagSpec) -> Option<&'static str>,
        &'static str,
        &'static str,
    ),
}

fn client_key(s: &FlagSpec) -> Option<&'static str> {
    match s.yaml {
        Yaml::Client(k) => Some(k),
        _ => None,
    }
}

fn peer_key(s: &FlagSpec) -> Option<&'static str> {
    match s.yaml {
        Yaml::Peer(k) => Some(k),
        _ => None,
    }
}

fn socket_key(s: &FlagSpec) -> Option<&'static str> {
    match s.yaml {
        Yaml::Socket(k) => Some(k),
        _ => None,
    }
}

const PROXY_KEYS: &[&str] = &[
    "proxy",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
    "discovery-fallback",
];

fn top_level_targets() -> Vec<(&'static str, Target)> {
    let mut out: Vec<(&'static str, Target)> = FLAGS
        .iter()
        .filter(|s| !PROXY_KEYS.contains(&s.name))
        .filter_map(|s| match s.yaml {
            Yaml::Same => Some((s.name, Target::Flag(s))),
            Yaml::Key(k) => Some((k, Target::Flag(s))),
            _ => None,
        })
        .collect();
    out.push((
        "client-transport-security",
        Target::Section(client_key, "securityConfig", "embed.securityConfig"),
    ));
    out.push((
        "peer-transport-security",
        Target::Section(peer_key, "securityConfig", "embed.securityConfig"),
    ));
    out.push((
        "socket-options",
        Target::Section(socket_key, "SocketOpts", "transport.SocketOpts"),
    ));
    out
}

/// Keys of `securityConfig` that have no flag here (still type-checked).
const SECTION_EXTRA: &[(&str, ())] = &[("allowed-cn", ()), ("allowed-hostname", ())];

fn apply_section(
    fs: &mut FlagSet,
    section: &str,
    key_of: fn(&FlagSpec) -> Option<&'static str>,
    struct_name: &str,
    go_struct: &str,
    v: &Y,
) -> Result<(), Mismatch> {
    let Y::Mapping(map) = v else {
        return Err(type_error(&format!("configYAML.{section}"), v, go_struct));
    };
    let fields: Vec<(&'static str, &'static FlagSpec)> = FLAGS
        .iter()
        .filter_map(|s| key_of(s).map(|k| (k, s)))
        .collect();
    for (key, val) in entries(map) {
        match find(&fields, &key) {
            Some((field_key, spec)) => {
                let field = format!("{struct_name}.{section}.{field_key}");
                let value = convert(spec, &field, val)?;
                fs.set_value(spec.name, value);
            }
            None => {
                if let Some((extra, _)) = find(SECTION_EXTRA, &key) {
                    to_string_list(&format!("{struct_name}.{section}.{extra}"), val)?;
                }
            }
        }
    }
    Ok(())
}

fn plain(msg: String) -> ConfigError {
    ConfigError::new(ErrorKind::Plain, msg)
}

fn go_log_prefix() -> String {
    // Go's `log` package prefix: local date and time; ferrocd prints UTC.
    let ts = crate::logging::format_ts(std::time::SystemTime::now());
    format!("{} {}", ts[..10].replace('-', "/"), &ts[11..19])
}

/// Reads the configuration file into `fs` (which must hold the defaults).
pub(super) fn load(fs: &mut FlagSet, path: &str) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::verify(format!("open {path}: {}", go_io_error(&e))))?;
    let doc: Y = serde_yaml::from_str::<Loose>(&text)
        .map(|l| l.0)
        .map_err(|e| {
            let text = e.to_string();
            let short = text.split(", while").next().unwrap_or(&text);
            ConfigError::verify(format!("error converting YAML to JSON: yaml: {short}"))
        })?;
    let map = match untag(&doc) {
        Y::Null => serde_yaml::Mapping::new(),
        Y::Mapping(m) => m.clone(),
        other => {
            return Err(ConfigError::verify(format!(
                "{PREFIX}cannot unmarshal {} into Go value of type embed.configYAML",
                kind_name(other)
            )))
        }
    };
    let targets = top_level_targets();
    let items = entries(&map);
    // First pass: embed.configYAML.
    for (key, v) in &items {
        match find(&targets, key) {
            Some((field_key, Target::Flag(spec))) => {
                let field = format!("configYAML.{field_key}");
                let value = convert(spec, &field, v).map_err(|m| ConfigError::verify(m.0))?;
                fs.set_value(spec.name, value);
            }
            Some((section, Target::Section(key_of, struct_name, go_struct))) => {
                apply_section(fs, section, *key_of, struct_name, go_struct, v)
                    .map_err(|m| ConfigError::verify(m.0))?;
            }
            None => {}
        }
    }
    finish_urls(fs)?;
    // Second pass: etcdmain.configProxy (v2 proxy settings).
    for (key, v) in &items {
        let Some(name) = PROXY_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) else {
            continue;
        };
        let Some(spec) = crate::flags::lookup(name) else {
            continue;
        };
        let field = format!("configProxy.{name}");
        let value = convert(spec, &field, v).map_err(|m| ConfigError::verify(m.0))?;
        if let Kind::Choice(valids) = spec.kind {
            let s = value.as_str().to_string();
            if s.is_empty() {
                continue;
            }
            if !valids.contains(&s.as_str()) {
                let what = if *name == "proxy" {
                    "proxyFlag"
                } else {
                    "discovery-fallback flag"
                };
                return Err(plain(format!(
                    "{} unexpected error setting up {what}: invalid value",
                    go_log_prefix()
                )));
            }
        }
        fs.set_value(name, value);
    }
    Ok(())
}

/// etcd's URL handling after unmarshalling: each URL flag given as a string
/// is parsed with `types.NewURLs`; errors end the process with a plain line.
fn finish_urls(fs: &mut FlagSet) -> Result<(), ConfigError> {
    for (name, label) in [
        ("listen-peer-urls", "listen-peer-urls"),
        ("listen-client-urls", "listen-client-urls"),
        ("listen-client-http-urls", "listen-client-http-urls"),
        ("initial-advertise-peer-urls", "initial-advertise-peer-urls"),
        // sic: etcd 3.5 names the wrong flag in this message
        ("advertise-client-urls", "advertise-peer-urls"),
        ("listen-metrics-urls", "listen-metrics-urls"),
        ("cors", "cors"),
    ] {
        let Value::Str(raw) = fs.get(name).clone() else {
            continue;
        };
        if raw.is_empty() || (name == "cors" && raw == "*") {
            let default = crate::flags::lookup(name)
                .map(FlagSpec::default_value)
                .unwrap_or(Value::Urls(Vec::new()));
            fs.replace(name, default);
            continue;
        }
        let parts: Vec<&str> = raw.split(',').collect();
        match new_urls(&parts) {
            Ok(list) => fs.replace(name, Value::Urls(list)),
            Err(e) => return Err(plain(format!("unexpected error setting up {label}: {e}"))),
        }
    }
    Ok(())
}
