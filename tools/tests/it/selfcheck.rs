//! Harness self-validation: a scenario covering every masked output form
//! (json, fields, protobuf, client error log lines) run etcd-vs-etcd must
//! compare equal. Fails if masking is too narrow; the unit tests in
//! `mask.rs` check it is not too wide. (Run the whole suite etcd-vs-etcd with
//! `FERROCD_IT_SUBJECT=etcd`.)

use crate::compare::{compare_scenario_against, ctl, txn};
use crate::harness::Kind;

#[test]
fn harness_selfcheck_etcd_vs_etcd() {
    let steps = vec![
        ctl(&["put", "a", "1", "-w", "json"])
            .ok()
            .out_has("\"cluster_id\":"),
        ctl(&["put", "a", "2", "--prev-kv", "-w", "fields"])
            .ok()
            .out_has("\"MemberID\" : "),
        ctl(&["get", "a", "-w", "protobuf"]).ok(),
        ctl(&["del", "a", "--prev-kv", "-w", "protobuf"]).ok(),
        txn("\nput b 1\nget b\n\n\n", &["-w", "json"])
            .ok()
            .out_has("\"raft_term\":"),
        txn("\nput b 1\nget b\n\n\n", &["-w", "fields"]).ok(),
        txn("\nput b 1\nget b\n\n\n", &["-w", "protobuf"]).ok(),
        ctl(&["get", "b", "--rev", "1000"]).fails_with("future revision"),
    ];
    compare_scenario_against(Kind::Etcd, "harness_selfcheck_etcd_vs_etcd", &[], &steps);
}
