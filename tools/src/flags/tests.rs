//! Tests of the flag table and the Go-`flag`-compatible parser.  Expected
//! texts were printed by the real etcd 3.5.1 binary.

use super::*;

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn parse(a: &[&str]) -> (FlagSet, Result<ArgsOutcome, String>) {
    let mut fs = FlagSet::new();
    let r = fs.parse_args(&args(a));
    (fs, r)
}

fn done(rest: &[&str]) -> Result<ArgsOutcome, String> {
    Ok(ArgsOutcome::Done { rest: args(rest) })
}

/// The flag lines of `etcd --help` as printed by etcd 3.5.1 (name and default).
const ETCD_351_HELP_FLAG_LINES: &[&str] = &[
    "  --name 'default'",
    "  --data-dir '${name}.etcd'",
    "  --wal-dir ''",
    "  --snapshot-count '100000'",
    "  --heartbeat-interval '100'",
    "  --election-timeout '1000'",
    "  --initial-election-tick-advance 'true'",
    "  --listen-peer-urls 'http://localhost:2380'",
    "  --listen-client-urls 'http://localhost:2379'",
    "  --max-snapshots '5'",
    "  --max-wals '5'",
    "  --quota-backend-bytes '0'",
    "  --backend-bbolt-freelist-type 'map'",
    "  --backend-batch-interval ''",
    "  --backend-batch-limit '0'",
    "  --max-txn-ops '128'",
    "  --max-request-bytes '1572864'",
    "  --grpc-keepalive-min-time '5s'",
    "  --grpc-keepalive-interval '2h'",
    "  --grpc-keepalive-timeout '20s'",
    "  --socket-reuse-port 'false'",
    "  --socket-reuse-address 'false'",
    "  --initial-advertise-peer-urls 'http://localhost:2380'",
    "  --initial-cluster 'default=http://localhost:2380'",
    "  --initial-cluster-state 'new'",
    "  --initial-cluster-token 'etcd-cluster'",
    "  --advertise-client-urls 'http://localhost:2379'",
    "  --discovery ''",
    "  --discovery-fallback 'proxy'",
    "  --discovery-proxy ''",
    "  --discovery-srv ''",
    "  --discovery-srv-name ''",
    "  --strict-reconfig-check 'true'",
    "  --pre-vote 'true'",
    "  --auto-compaction-retention '0'",
    "  --auto-compaction-mode 'periodic'",
    "  --enable-v2 'false'",
    "  --v2-deprecation 'not-yet'",
    "  --cert-file ''",
    "  --key-file ''",
    "  --client-cert-auth 'false'",
    "  --client-crl-file ''",
    "  --client-cert-allowed-hostname ''",
    "  --trusted-ca-file ''",
    "  --auto-tls 'false'",
    "  --peer-cert-file ''",
    "  --peer-key-file ''",
    "  --peer-client-cert-auth 'false'",
    "  --peer-trusted-ca-file ''",
    "  --peer-cert-allowed-cn ''",
    "  --peer-cert-allowed-hostname ''",
    "  --peer-auto-tls 'false'",
    "  --self-signed-cert-validity '1'",
    "  --peer-crl-file ''",
    "  --cipher-suites ''",
    "  --cors '*'",
    "  --host-whitelist '*'",
    "  --auth-token 'simple'",
    "  --bcrypt-cost 10",
    "  --auth-token-ttl 300",
    "  --enable-pprof 'false'",
    "  --metrics 'basic'",
    "  --listen-metrics-urls ''",
    "  --logger 'zap'",
    "  --log-outputs 'default'",
    "  --log-level 'info'",
    "  --enable-log-rotation 'false'",
    "  --log-rotation-config-json '{\"maxsize\": 100, \"maxage\": 0, \"maxbackups\": 0, \"localtime\": false, \"compress\": false}'",
    "  --experimental-enable-distributed-tracing 'false'",
    "  --experimental-distributed-tracing-address 'localhost:4317'",
    "  --experimental-distributed-tracing-service-name 'etcd'",
    "  --experimental-distributed-tracing-instance-id ''",
    "  --proxy 'off'",
    "  --proxy-failure-wait 5000",
    "  --proxy-refresh-interval 30000",
    "  --proxy-dial-timeout 1000",
    "  --proxy-write-timeout 5000",
    "  --proxy-read-timeout 0",
    "  --experimental-initial-corrupt-check 'false'",
    "  --experimental-corrupt-check-time '0s'",
    "  --experimental-enable-v2v3 ''",
    "  --experimental-enable-lease-checkpoint 'false'",
    "  --experimental-compaction-batch-limit 1000",
    "  --experimental-peer-skip-client-san-verification 'false'",
    "  --experimental-watch-progress-notify-interval '10m'",
    "  --experimental-warning-apply-duration '100ms'",
    "  --experimental-txn-mode-write-with-shared-buffer 'true'",
    "  --experimental-bootstrap-defrag-threshold-megabytes",
    "  --force-new-cluster 'false'",
    "  --unsafe-no-fsync 'false'",
];

#[test]
fn every_etcd_351_help_line_is_in_ours_in_order() {
    let ours = flags_text();
    let our_lines: Vec<&str> = ours.lines().filter(|l| l.starts_with("  --")).collect();
    let mut pos = 0;
    for want in ETCD_351_HELP_FLAG_LINES {
        match our_lines[pos..].iter().position(|l| l == want) {
            Some(p) => pos += p + 1,
            None => panic!("missing or out of order: {want:?}"),
        }
    }
}

#[test]
fn help_groups_match_etcd() {
    let ours = flags_text();
    let titles: Vec<&str> = ours
        .lines()
        .filter(|l| !l.starts_with(' ') && l.ends_with(':'))
        .collect();
    assert_eq!(
        titles,
        vec![
            "Member:",
            "Clustering:",
            "Security:",
            "Auth:",
            "Profiling and Monitoring:",
            "Logging:",
            "Experimental distributed tracing:",
            "v2 Proxy (to be deprecated in v3.6):",
            "Experimental feature:",
            "Unsafe feature:",
        ]
    );
    // Layout: starts with a blank line, ends with the caution line and a blank line.
    assert!(ours.starts_with("\nMember:\n  --name 'default'\n    "));
    assert!(ours.ends_with("!\n\n"));
    let usage = usage_text();
    assert!(usage.starts_with("Usage:\n\n  etcd [flags]\n    "));
    for cmd in [
        "  etcd --version",
        "  etcd -h | --help",
        "  etcd --config-file",
    ] {
        assert!(usage.contains(&format!("\n{cmd}\n")), "{cmd}");
    }
    assert!(usage.ends_with("\n\n"));
}

#[test]
fn table_is_consistent() {
    let mut names: Vec<&str> = FLAGS.iter().map(|f| f.name).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate flag names");
    for spec in FLAGS {
        // every default parses with the flag's own syntax
        let _ = spec.default_value();
        if spec.group != Group::Hidden {
            assert!(!spec.usage.is_empty(), "{}", spec.name);
        }
    }
    for name in IGNORED {
        assert_eq!(lookup(name).map(|f| f.kind), Some(Kind::Ignored));
    }
    // 109 listed by etcd 3.5's --help (3.5.1 plus later 3.5.x additions)
    let listed = FLAGS.iter().filter(|f| f.group != Group::Hidden).count();
    assert_eq!(listed, 109);
}

#[test]
fn env_names() {
    assert_eq!(
        env_name("initial-cluster-token"),
        "ETCD_INITIAL_CLUSTER_TOKEN"
    );
    assert_eq!(env_name("test.coverprofile"), "ETCD_TEST.COVERPROFILE");
    assert_eq!(lookup("data-dir").unwrap().env_name(), "ETCD_DATA_DIR");
}

#[test]
fn all_value_syntaxes() {
    for a in [
        &["-name", "x"][..],
        &["--name", "x"],
        &["-name=x"],
        &["--name=x"],
    ] {
        let (fs, r) = parse(a);
        assert_eq!(r, done(&[]), "{a:?}");
        assert_eq!(fs.get("name"), &Value::Str("x".into()), "{a:?}");
        assert!(fs.is_set("name"));
    }
    // a value may start with '-' and may contain '='
    let (fs, r) = parse(&["--name", "--weird", "--initial-cluster=a=http://a:1"]);
    assert_eq!(r, done(&[]));
    assert_eq!(fs.get("name").as_str(), "--weird");
    assert_eq!(fs.get("initial-cluster").as_str(), "a=http://a:1");
    // last one wins
    let (fs, _) = parse(&["--name", "a", "--name", "b"]);
    assert_eq!(fs.get("name").as_str(), "b");
    assert_eq!(fs.explicitly_set(), vec!["name"]);
}

#[test]
fn bool_flags() {
    let (fs, r) = parse(&["--enable-pprof"]);
    assert_eq!(r, done(&[]));
    assert!(fs.get("enable-pprof").as_bool());
    let (fs, _) = parse(&["--pre-vote=false", "-strict-reconfig-check=0"]);
    assert!(!fs.get("pre-vote").as_bool());
    assert!(!fs.get("strict-reconfig-check").as_bool());
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        let (fs, _) = parse(&[&format!("--force-new-cluster={t}")]);
        assert!(fs.get("force-new-cluster").as_bool(), "{t}");
    }
    // a bool flag never takes the next argument: it becomes positional
    let (fs, r) = parse(&["--enable-pprof", "false"]);
    assert_eq!(r, done(&["false"]));
    assert!(fs.get("enable-pprof").as_bool());
    // etcd 3.5.1: invalid boolean value "maybe" for -enable-pprof: parse error
    assert_eq!(
        parse(&["--enable-pprof=maybe"]).1,
        Err("invalid boolean value \"maybe\" for -enable-pprof: parse error".into())
    );
}

#[test]
fn end_of_flags() {
    let (fs, r) = parse(&["--name", "a", "--", "--name", "b"]);
    assert_eq!(r, done(&["--name", "b"]));
    assert_eq!(fs.get("name").as_str(), "a");
    assert_eq!(
        parse(&["extra", "--name", "x"]).1,
        done(&["extra", "--name", "x"])
    );
    assert_eq!(parse(&["-"]).1, done(&["-"]));
    assert_eq!(parse(&[]).1, done(&[]));
    // legacy ignored flags behave like bool flags
    assert_eq!(parse(&["--config", "x"]).1, done(&["x"]));
    assert_eq!(parse(&["--v", "--snapshot=anything"]).1, done(&[]));
}

#[test]
fn flag_errors_match_etcd_351() {
    for a in [&["--foo"][..], &["-foo"], &["--foo=1"]] {
        assert_eq!(
            parse(a).1,
            Err("flag provided but not defined: -foo".into()),
            "{a:?}"
        );
    }
    assert_eq!(
        parse(&["--name"]).1,
        Err("flag needs an argument: -name".into())
    );
    assert_eq!(parse(&["-=x"]).1, Err("bad flag syntax: -=x".into()));
    assert_eq!(parse(&["--=x"]).1, Err("bad flag syntax: --=x".into()));
    assert_eq!(parse(&["---x"]).1, Err("bad flag syntax: ---x".into()));
    let cases: &[(&[&str], &str)] = &[
        (&["--snapshot-count", "abc"], "invalid value \"abc\" for flag -snapshot-count: parse error"),
        (&["--snapshot-count=-1"], "invalid value \"-1\" for flag -snapshot-count: parse error"),
        (&["--heartbeat-interval=abc"], "invalid value \"abc\" for flag -heartbeat-interval: parse error"),
        (&["--max-request-bytes", "-1"], "invalid value \"-1\" for flag -max-request-bytes: parse error"),
        (&["--heartbeat-interval", "0x"], "invalid value \"0x\" for flag -heartbeat-interval: parse error"),
        (&["--grpc-keepalive-min-time", "5"], "invalid value \"5\" for flag -grpc-keepalive-min-time: parse error"),
        (&["--initial-cluster-state", "bogus"], "invalid value \"bogus\" for flag -initial-cluster-state: invalid value"),
        (&["--initial-cluster-state="], "invalid value \"\" for flag -initial-cluster-state: invalid value"),
        (&["--discovery-fallback", "bogus"], "invalid value \"bogus\" for flag -discovery-fallback: invalid value"),
        (&["--proxy", "bogus"], "invalid value \"bogus\" for flag -proxy: invalid value"),
        (&["--v2-deprecation", "bogus"], "invalid value \"bogus\" for flag -v2-deprecation: invalid value \"bogus\""),
        (&["--listen-client-urls=foo"], "invalid value \"foo\" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: foo"),
        (&["--listen-client-urls=http://127.0.0.1:2379/path"], "invalid value \"http://127.0.0.1:2379/path\" for flag -listen-client-urls: URL must not contain a path: http://127.0.0.1:2379/path"),
        (&["--cors", "foo"], "invalid value \"foo\" for flag -cors: URL scheme must be http, https, unix, or unixs: foo"),
        (&["--snapshot-count", "99999999999999999999999"], "invalid value \"99999999999999999999999\" for flag -snapshot-count: value out of range"),
        (&["--max-concurrent-streams", "5000000000"], "invalid value \"5000000000\" for flag -max-concurrent-streams: strconv.ParseUint: parsing \"5000000000\": value out of range"),
    ];
    for (a, want) in cases {
        assert_eq!(parse(a).1, Err(want.to_string()), "{a:?}");
    }
}

#[test]
fn go_number_and_duration_syntax() {
    let (fs, r) = parse(&[
        "--snapshot-count",
        "0x10",
        "--max-txn-ops",
        "1_000",
        "--quota-backend-bytes",
        "-5",
        "--grpc-keepalive-min-time",
        "1h5m.5s",
        "--max-concurrent-streams",
        "100",
    ]);
    assert_eq!(r, done(&[]));
    assert_eq!(fs.get("snapshot-count"), &Value::Uint(16));
    assert_eq!(fs.get("max-txn-ops"), &Value::Uint(1000));
    assert_eq!(fs.get("quota-backend-bytes"), &Value::Int(-5));
    assert_eq!(
        fs.get("grpc-keepalive-min-time"),
        &Value::Duration(3_900_500_000_000)
    );
    assert_eq!(fs.get("max-concurrent-streams"), &Value::Uint(100));
}

#[test]
fn list_flags() {
    let (fs, _) = parse(&[
        "--listen-client-urls",
        "http://localhost:2379,http://127.0.0.1:2379,http://localhost:2379",
        "--log-outputs",
        "stdout,stderr,stdout",
        "--cipher-suites",
        "b,a",
        "--host-whitelist",
        "b,a",
    ]);
    assert_eq!(
        fs.get("listen-client-urls").as_list(),
        ["http://127.0.0.1:2379", "http://localhost:2379"]
    );
    assert_eq!(fs.get("log-outputs").as_list(), ["stderr", "stdout"]);
    assert_eq!(fs.get("cipher-suites").as_list(), ["b", "a"]);
    assert_eq!(fs.get("host-whitelist").as_list(), ["a", "b"]);
    // an empty URL list keeps the previous value (etcd's UniqueURLs exception)
    let (fs, _) = parse(&["--listen-client-urls="]);
    assert_eq!(
        fs.get("listen-client-urls").as_list(),
        ["http://localhost:2379"]
    );
    assert!(fs.is_set("listen-client-urls"));
}

#[test]
fn help_requests() {
    for a in [
        &["-h"][..],
        &["--help"],
        &["-help"],
        &["--h"],
        &["-h=false"],
        &["--name", "x", "--help"],
    ] {
        assert_eq!(parse(a).1, Ok(ArgsOutcome::Help), "{a:?}");
    }
    // an error before --help wins
    assert!(parse(&["--foo", "--help"]).1.is_err());
}

#[test]
fn defaults_match_etcd() {
    let fs = FlagSet::new();
    let want: &[(&str, Value)] = &[
        ("name", Value::Str("default".into())),
        ("data-dir", Value::Str(String::new())),
        ("snapshot-count", Value::Uint(100_000)),
        ("heartbeat-interval", Value::Uint(100)),
        ("election-timeout", Value::Uint(1000)),
        (
            "listen-peer-urls",
            Value::Urls(vec!["http://localhost:2380".into()]),
        ),
        (
            "listen-client-urls",
            Value::Urls(vec!["http://localhost:2379".into()]),
        ),
        (
            "initial-advertise-peer-urls",
            Value::Urls(vec!["http://localhost:2380".into()]),
        ),
        (
            "advertise-client-urls",
            Value::Urls(vec!["http://localhost:2379".into()]),
        ),
        (
            "initial-cluster",
            Value::Str("default=http://localhost:2380".into()),
        ),
        ("initial-cluster-token", Value::Str("etcd-cluster".into())),
        ("initial-cluster-state", Value::Str("new".into())),
        ("max-request-bytes", Value::Uint(1_572_864)),
        ("max-txn-ops", Value::Uint(128)),
        ("quota-backend-bytes", Value::Int(0)),
        ("max-concurrent-streams", Value::Uint(u64::from(u32::MAX))),
        (
            "grpc-keepalive-interval",
            Value::Duration(7_200_000_000_000),
        ),
        ("logger", Value::Str("zap".into())),
        ("log-outputs", Value::List(vec!["default".into()])),
        ("log-level", Value::Str("info".into())),
        ("auth-token", Value::Str("simple".into())),
        ("bcrypt-cost", Value::Uint(10)),
        ("auth-token-ttl", Value::Uint(300)),
        ("cors", Value::Urls(vec!["*".into()])),
        ("host-whitelist", Value::List(vec!["*".into()])),
        ("pre-vote", Value::Bool(true)),
        ("strict-reconfig-check", Value::Bool(true)),
        ("enable-grpc-gateway", Value::Bool(true)),
        ("proxy", Value::Str("off".into())),
        ("discovery-fallback", Value::Str("proxy".into())),
    ];
    for (name, v) in want {
        assert_eq!(fs.get(name), v, "{name}");
    }
}

#[test]
fn version_text_shape() {
    let v = version_text();
    let lines: Vec<&str> = v.lines().collect();
    assert_eq!(lines[0], "etcd Version: 3.5.1");
    assert!(lines[1].starts_with("Git SHA: "));
    assert!(lines[2].starts_with("Go Version: "));
    assert!(lines[3].starts_with("Go OS/Arch: linux/"), "{}", lines[3]);
    assert_eq!(lines[4], format!("ferrocd Version: {FERROCD_VERSION}"));
}
