//! KV semantics through a client library nobody here wrote: python-etcd3
//! (grpcio + etcd's generated stubs). The script asserts; this test runs it
//! against an in-process server and fails on any assertion or missing
//! dependency (CI installs it: .ci/run).

use std::process::Command;

use crate::support::TestServer;

#[test]
fn python_etcd3_kv_semantics() {
    let srv = TestServer::start_with(net::kv::KvLimits {
        max_txn_ops: 128,
        max_request_bytes: 64 * 1024,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/etcd3_kv.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(srv.endpoint())
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python etcd3 script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ALL OK"), "script did not finish: {stdout}");
    srv.stop().expect("server stops cleanly");
}
