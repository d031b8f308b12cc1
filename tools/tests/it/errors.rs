//! Error cases: the gRPC status code and message reach the user through
//! etcdctl's stderr (`{"level":"warn",...,"error":"rpc error: code = X desc =
//! Y"}` followed by `Error: Y`) and its exit code; all three are compared.

use crate::compare::{compare_scenario, ctl, txn};

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

#[test]
fn err_compacted_revision() {
    let steps = vec![
        ctl(&["put", "k", "1"]).ok(),
        ctl(&["put", "k", "2"]).ok(),
        ctl(&["put", "k", "3"]).ok(),
        ctl(&["compaction", "3"]).ok(),
        ctl(&["get", "k", "--rev", "2"])
            .fails_with(COMPACTED)
            .fails_with("code = OutOfRange"),
        ctl(&["get", "k", "--rev", "1", "-w", "json"]).fails_with(COMPACTED),
        ctl(&[
            "get",
            "",
            "--prefix",
            "--rev",
            "2",
            "--count-only",
            "-w",
            "fields",
        ])
        .fails_with(COMPACTED),
        ctl(&["get", "k", "--rev", "3"]).ok(),
        ctl(&["compaction", "2"]).fails_with(COMPACTED),
        ctl(&["compaction", "3"]).fails_with(COMPACTED),
        // a range inside a txn at a compacted revision fails the whole txn
        txn("\nput t 1\nget k --rev 2\n\n\n", &[]).fails_with(COMPACTED),
        txn(
            "value(\"k\") = \"nope\"\n\n\nget k --rev 1\n\n",
            &["-w", "json"],
        )
        .fails_with(COMPACTED),
        // ...and did not apply its put
        ctl(&["get", "t", "-w", "json"]).ok(),
    ];
    compare_scenario("err_compacted_revision", &[], &steps);
}

#[test]
fn err_future_revision() {
    let steps = vec![
        ctl(&["get", "a", "--rev", "1000"])
            .fails_with(FUTURE)
            .fails_with("code = OutOfRange"),
        ctl(&["get", "a", "--rev", "2"]).fails_with(FUTURE),
        ctl(&["put", "a", "1"]).ok(),
        ctl(&["get", "a", "--rev", "2"]).ok(),
        ctl(&["get", "a", "--rev", "3", "-w", "json"]).fails_with(FUTURE),
        ctl(&["get", "", "--prefix", "--rev", "1000", "--keys-only"]).fails_with(FUTURE),
        ctl(&["compaction", "1000"]).fails_with(FUTURE),
        ctl(&["compaction", "3"]).fails_with(FUTURE),
        txn("\nget a --rev 1000\n\n\n", &[]).fails_with(FUTURE),
        txn("\nput b 1\nget a --rev 1000\n\n\n", &["-w", "json"]).fails_with(FUTURE),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
    ];
    compare_scenario("err_future_revision", &[], &steps);
}

#[test]
fn err_too_many_txn_ops() {
    const TOO_MANY: &str = "etcdserver: too many operations in txn request";
    let steps = vec![
        txn("\nput a 1\nput b 2\nput c 3\nput d 4\n\n\n", &[]).fails_with(TOO_MANY).fails_with("code = InvalidArgument"),
        // exactly the limit is fine
        txn("\nput a 1\nput b 2\nput c 3\n\n\n", &[]).ok(),
        // the limit applies per list: 3 success + 3 failure is fine
        txn("value(\"a\") = \"1\"\n\nget a\nget b\nget c\n\nput x 1\nput y 1\nput z 1\n\n", &["-w", "json"]).ok(),
        txn("\nget a\n\nget a\nget b\nget c\nget d\n\n", &[]).fails_with(TOO_MANY),
        txn("value(\"a\") = \"1\"\nvalue(\"a\") = \"1\"\nvalue(\"a\") = \"1\"\nvalue(\"a\") = \"1\"\n\nget a\n\n\n", &[])
            .fails_with(TOO_MANY),
        txn("\nget a\nget b\nget c\nget d\n\n\n", &["-w", "json"]).fails_with(TOO_MANY),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
    ];
    compare_scenario("err_too_many_txn_ops", &["--max-txn-ops", "3"], &steps);
}

#[test]
fn err_duplicate_key_in_txn() {
    const DUP: &str = "etcdserver: duplicate key given in txn request";
    let steps = vec![
        ctl(&["put", "a", "0"]).ok(),
        txn("\nput a 1\nput a 2\n\n\n", &[])
            .fails_with(DUP)
            .fails_with("code = InvalidArgument"),
        txn("\nput a 1\ndel a\n\n\n", &[]).fails_with(DUP),
        txn("\ndel a\nput a 1\n\n\n", &[]).fails_with(DUP),
        // a put inside a deleted range
        txn("\ndel --prefix a\nput ab 1\n\n\n", &[]).fails_with(DUP),
        txn("\nput ab 1\ndel a c\n\n\n", &[]).fails_with(DUP),
        // the failure branch is validated too, even when not taken
        txn("\nput a 1\n\nput b 1\nput b 2\n\n", &[]).fails_with(DUP),
        // allowed: two deletes of the same key, same key in both branches,
        // put + get of the same key
        txn("\ndel a\ndel a\n\n\n", &[]).ok(),
        txn("\nput a 1\n\nput a 2\n\n", &[]).ok(),
        txn("\nput a 3\nget a\n\n\n", &["-w", "json"]).ok(),
        txn("\ndel --prefix a\ndel a\n\n\n", &[]).ok(),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
    ];
    compare_scenario("err_duplicate_key_in_txn", &[], &steps);
}

/// etcdctl happily sends an empty key (`put "" v`), so this is testable
/// black-box.
#[test]
fn err_empty_key() {
    const NOKEY: &str = "etcdserver: key is not provided";
    let steps = vec![
        ctl(&["put", "", "v"])
            .fails_with(NOKEY)
            .fails_with("code = InvalidArgument"),
        ctl(&["get", ""]).fails_with(NOKEY),
        ctl(&["get", "", "-w", "json"]).fails_with(NOKEY),
        ctl(&["del", ""]).fails_with(NOKEY),
        ctl(&["put", "--prev-kv", "", "v", "-w", "json"]).fails_with(NOKEY),
        txn("\nput \"\" v\n\n\n", &[]).fails_with(NOKEY),
        txn("\nget \"\"\n\n\n", &[]).fails_with(NOKEY),
        txn("value(\"\") = \"x\"\n\n\n\n", &[]).fails_with(NOKEY),
        // but an empty key with --prefix / --from-key is the whole keyspace
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
        ctl(&["del", "", "--from-key"]).ok(),
    ];
    compare_scenario("err_empty_key", &[], &steps);
}

#[test]
fn err_request_too_large() {
    const TOO_LARGE: &str = "etcdserver: request is too large";
    let big = "x".repeat(2000);
    let small = "s".repeat(500);
    // larger than max-request-bytes + etcd's 512 KiB gRPC overhead allowance
    // (525312 bytes): rejected by the gRPC layer with ResourceExhausted
    // (the client's own send limit is 2 MiB, so this reaches the server).
    let huge = vec![b'h'; 600_000];
    let steps = vec![
        ctl(&["put", "k", &big])
            .fails_with(TOO_LARGE)
            .fails_with("code = InvalidArgument"),
        ctl(&["put", "k", &small]).ok(),
        ctl(&["put", "k"]).stdin(&big).fails_with(TOO_LARGE),
        txn(
            &format!("\nput k1 {small}\nput k2 {small}\nput k3 {small}\n\n\n"),
            &[],
        )
        .fails_with(TOO_LARGE),
        ctl(&["put", "k"])
            .stdin(&huge)
            .fails_with("code = ResourceExhausted"),
        // reads of large results are not limited by max-request-bytes
        ctl(&["put", "k2", &small]).ok(),
        ctl(&["put", "k3", &small]).ok(),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
    ];
    compare_scenario(
        "err_request_too_large",
        &["--max-request-bytes", "1024"],
        &steps,
    );
}

#[test]
fn err_ignore_value_missing_key() {
    const NOTFOUND: &str = "etcdserver: key not found";
    let steps = vec![
        ctl(&["put", "--ignore-value", "missing"])
            .fails_with(NOTFOUND)
            .fails_with("code = InvalidArgument"),
        ctl(&["put", "--ignore-lease", "missing", "v"]).fails_with(NOTFOUND),
        ctl(&[
            "put",
            "--ignore-value",
            "--prev-kv",
            "missing",
            "-w",
            "json",
        ])
        .fails_with(NOTFOUND),
        txn("\nput --ignore-value missing\n\n\n", &[]).fails_with(NOTFOUND),
        txn(
            "\nput a 1\nput --ignore-lease missing v\n\n\n",
            &["-w", "json"],
        )
        .fails_with(NOTFOUND),
        // nothing was applied
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
        ctl(&["put", "k", "v"]).ok(),
        ctl(&["del", "k"]).ok(),
        ctl(&["put", "--ignore-value", "k"]).fails_with(NOTFOUND),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
    ];
    compare_scenario("err_ignore_value_missing_key", &[], &steps);
}

#[test]
fn err_lease_not_found() {
    const NOLEASE: &str = "etcdserver: requested lease not found";
    let steps = vec![
        ctl(&["put", "--lease=1234", "k", "v"])
            .fails_with(NOLEASE)
            .fails_with("code = NotFound"),
        ctl(&["put", "--lease=1234", "k", "v", "-w", "json"]).fails_with(NOLEASE),
        txn("\nput --lease=1234 k v\n\n\n", &[]).fails_with(NOLEASE),
        ctl(&["put", "k", "v"]).ok(),
        ctl(&["put", "--lease=abcdef", "--prev-kv", "k", "v2"]).fails_with(NOLEASE),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
        // client-side: not a hex lease id
        ctl(&["put", "--lease=xyz", "k", "v"]),
    ];
    compare_scenario("err_lease_not_found", &[], &steps);
}
