//! KV API scenarios (put / get / del / compaction), compared etcd vs subject.

use crate::compare::{compare_scenario, ctl, Step};

fn puts(kvs: &[(&str, &str)]) -> Vec<Step> {
    kvs.iter().map(|(k, v)| ctl(&["put", k, v]).ok()).collect()
}

#[test]
fn put_get_basics() {
    let mut steps = vec![
        ctl(&["get", "a"]).ok(),
        ctl(&["get", "a", "-w", "json"])
            .ok()
            .out_has("\"revision\":1"),
        ctl(&["put", "a", "1"]).ok().out_has("OK"),
        ctl(&["get", "a"]).ok(),
        ctl(&["put", "a", "2"]).ok(),
        ctl(&["get", "a", "-w", "json"])
            .ok()
            .out_has("\"version\":2"),
        ctl(&["get", "missing"]).ok(),
        ctl(&["get", "missing", "-w", "json"]).ok(),
        ctl(&["put", "b", "hello world"]).ok(),
        ctl(&["put", "key with spaces", "v"]).ok(),
        ctl(&["put", "ключ", "значение ✓"]).ok(),
        // value from stdin (etcdctl reads it when no value argument is given)
        ctl(&["put", "c"]).stdin("multi\nline\nvalue\n").ok(),
        ctl(&["get", "c"]).ok(),
        ctl(&["get", "c", "-w", "json"]).ok(),
        // empty value: JSON omits "value"
        ctl(&["put", "e", ""]).ok(),
        ctl(&["get", "e", "-w", "json"]).ok(),
        ctl(&["get", "e", "-w", "fields"]).ok(),
        // value that looks like a flag
        ctl(&["put", "--", "dash", "-v"]).ok(),
        ctl(&["get", "dash"]).ok(),
        // explicit range [a, c)
        ctl(&["get", "a", "c"]).ok(),
        ctl(&["get", "a", "c", "-w", "json"]).ok(),
        // range with end <= key
        ctl(&["get", "c", "a"]).ok(),
        ctl(&["get", "a", "a"]).ok(),
        ctl(&["get", "a", "-w", "fields"]).ok(),
        ctl(&["get", "a", "--hex"]).ok(),
        ctl(&["get", "", "--prefix"]).ok(),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
        ctl(&["get", "a", "--consistency=s"]).ok(),
        ctl(&["get", "a", "--consistency=l", "-w", "json"]).ok(),
    ];
    // same key many times: version/mod_revision bookkeeping
    for i in 0..5 {
        steps.push(ctl(&["put", "a", &format!("v{i}")]).ok());
    }
    steps.push(ctl(&["get", "", "--prefix", "-w", "json"]).ok());
    compare_scenario("put_get_basics", &[], &steps);
}

fn range_fixture() -> Vec<Step> {
    puts(&[
        ("foo", "0"),
        ("foo/a", "1"),
        ("foo/b", "2"),
        ("foo/c", "3"),
        ("fop", "4"),
        ("a", "5"),
        ("zoo", "6"),
        ("foo0", "7"),
    ])
}

#[test]
fn get_prefix_from_key_limit() {
    let mut steps = range_fixture();
    steps.extend([
        ctl(&["get", "foo", "--prefix"]).ok(),
        ctl(&["get", "foo/", "--prefix"]).ok(),
        ctl(&["get", "foo/", "--prefix", "-w", "json"]).ok(),
        ctl(&["get", "nothing", "--prefix", "-w", "json"]).ok(),
        ctl(&["get", "foo", "--prefix", "--limit", "2"]).ok(),
        ctl(&["get", "foo", "--prefix", "--limit", "2", "-w", "json"])
            .ok()
            .out_has("\"more\":true"),
        ctl(&["get", "foo", "--prefix", "--limit", "2", "-w", "fields"]).ok(),
        ctl(&["get", "foo", "--prefix", "--limit", "5", "-w", "json"]).ok(),
        ctl(&["get", "foo", "--prefix", "--limit", "6", "-w", "json"]).ok(),
        ctl(&["get", "foo", "--prefix", "--limit", "0", "-w", "json"]).ok(),
        ctl(&["get", "foo", "--prefix", "--limit", "-1"]),
        ctl(&["get", "foo", "--from-key"]).ok(),
        ctl(&["get", "foo/b", "--from-key", "--limit", "2", "-w", "json"]).ok(),
        ctl(&["get", "", "--from-key"]).ok(),
        ctl(&["get", "", "--from-key", "-w", "json"]).ok(),
        ctl(&["get", "zzz", "--from-key", "-w", "json"]).ok(),
        ctl(&["get", "", "--prefix", "--limit", "3", "-w", "json"]).ok(),
        ctl(&["get", "foo", "--prefix", "--count-only", "-w", "fields"]).ok(),
        // client-side: --count-only needs -w fields
        ctl(&["get", "foo", "--prefix", "--count-only"]).code(128),
        ctl(&[
            "get",
            "foo",
            "--prefix",
            "--count-only",
            "--limit",
            "1",
            "-w",
            "fields",
        ])
        .ok(),
        ctl(&["get", "", "--from-key", "--count-only", "-w", "fields"]).ok(),
        ctl(&["get", "foo", "--prefix", "--keys-only"]).ok(),
        ctl(&["get", "foo", "--prefix", "--keys-only", "-w", "json"]).ok(),
        ctl(&["get", "foo", "--prefix", "--keys-only", "-w", "fields"]).ok(),
        ctl(&[
            "get",
            "foo",
            "--prefix",
            "--keys-only",
            "--limit",
            "1",
            "-w",
            "json",
        ])
        .ok(),
        ctl(&["get", "foo", "--prefix", "--print-value-only"]).ok(),
        ctl(&[
            "get",
            "foo",
            "--prefix",
            "--print-value-only",
            "--keys-only",
        ]),
        ctl(&["get", "foo", "fop"]).ok(),
        ctl(&["get", "foo", "fop", "--limit", "1", "-w", "json"]).ok(),
        ctl(&["get", "fop", "foo"]).ok(),
        ctl(&["get", "foo", "--prefix", "--rev", "0", "-w", "json"]).ok(),
        // client-side: mutually exclusive
        ctl(&[
            "get",
            "foo",
            "--prefix",
            "--keys-only",
            "--count-only",
            "-w",
            "fields",
        ])
        .code(128),
    ]);
    compare_scenario("get_prefix_from_key_limit", &[], &steps);
}

#[test]
fn get_sort_orders() {
    // Distinct orders for every sort target, with ties (VALUE "1" for c and
    // d, VERSION 1 for c/d/e): tie order is observable and must match too.
    let mut steps = puts(&[
        ("b", "3"), // rev 2
        ("a", "2"), // rev 3
        ("c", "1"), // rev 4
        ("a", "5"), // rev 5: a = create 3, mod 5, ver 2, value 5
        ("b", "0"), // rev 6
        ("b", "9"), // rev 7: b = create 2, mod 7, ver 3, value 9
        ("e", "4"), // rev 8
        ("d", "1"), // rev 9
    ]);
    for target in ["KEY", "VERSION", "CREATE", "MODIFY", "VALUE"] {
        for order in ["ASCEND", "DESCEND"] {
            steps.push(ctl(&["get", "", "--prefix", "--sort-by", target, "--order", order]).ok());
            steps.push(
                ctl(&[
                    "get",
                    "",
                    "--prefix",
                    "--sort-by",
                    target,
                    "--order",
                    order,
                    "--limit",
                    "2",
                    "-w",
                    "json",
                ])
                .ok(),
            );
        }
        // sort target without explicit order
        steps.push(ctl(&["get", "", "--prefix", "--sort-by", target, "--keys-only"]).ok());
    }
    steps.extend([
        // order without target
        ctl(&["get", "", "--prefix", "--order", "DESCEND"]).ok(),
        ctl(&[
            "get", "", "--prefix", "--order", "ASCEND", "--limit", "3", "-w", "json",
        ])
        .ok(),
        ctl(&[
            "get", "", "--prefix", "--order", "DESCEND", "--limit", "3", "-w", "json",
        ])
        .ok(),
        ctl(&[
            "get",
            "b",
            "--from-key",
            "--sort-by",
            "VALUE",
            "--order",
            "DESCEND",
            "--keys-only",
        ])
        .ok(),
        ctl(&[
            "get",
            "a",
            "d",
            "--sort-by",
            "MODIFY",
            "--order",
            "DESCEND",
            "-w",
            "json",
        ])
        .ok(),
        ctl(&[
            "get",
            "",
            "--prefix",
            "--sort-by",
            "CREATE",
            "--order",
            "DESCEND",
            "--rev",
            "6",
            "-w",
            "json",
        ])
        .ok(),
        ctl(&[
            "get",
            "",
            "--prefix",
            "--sort-by",
            "VERSION",
            "--order",
            "DESCEND",
            "--count-only",
            "-w",
            "fields",
        ])
        .ok(),
        // client-side validation (same etcdctl binary; included for completeness)
        ctl(&["get", "", "--prefix", "--sort-by", "bogus"]),
        ctl(&["get", "", "--prefix", "--order", "bogus"]),
    ]);
    compare_scenario("get_sort_orders", &[], &steps);
}

#[test]
fn get_rev_historical() {
    let mut steps = puts(&[("k", "v1"), ("k", "v2"), ("j", "x")]); // revs 2,3,4
    steps.push(ctl(&["del", "k"]).ok()); // rev 5
    steps.push(ctl(&["put", "k", "v3"]).ok()); // rev 6
    for rev in ["1", "2", "3", "4", "5", "6"] {
        steps.push(ctl(&["get", "k", "--rev", rev]).ok());
        steps.push(ctl(&["get", "", "--prefix", "--rev", rev, "-w", "json"]).ok());
    }
    steps.extend([
        ctl(&["get", "k", "--rev", "3", "-w", "fields"]).ok(),
        ctl(&["get", "k", "--rev", "0"]).ok(),
        ctl(&["get", "k", "--rev", "-1"]),
        ctl(&[
            "get",
            "",
            "--from-key",
            "--rev",
            "6",
            "--sort-by",
            "MODIFY",
            "--order",
            "DESCEND",
        ])
        .ok(),
        ctl(&[
            "get",
            "",
            "--prefix",
            "--rev",
            "4",
            "--count-only",
            "-w",
            "fields",
        ])
        .ok(),
        ctl(&[
            "get",
            "",
            "--prefix",
            "--rev",
            "4",
            "--keys-only",
            "--limit",
            "1",
            "-w",
            "json",
        ])
        .ok(),
        ctl(&["get", "k", "--rev", "6", "-w", "protobuf"]).ok(),
        ctl(&["get", "k", "--rev", "7"]).fails_with("required revision is a future revision"),
    ]);
    compare_scenario("get_rev_historical", &[], &steps);
}

#[test]
fn output_formats() {
    let steps = vec![
        ctl(&["put", "a", "1", "-w", "json"]).ok(),
        ctl(&["put", "a", "2", "-w", "fields"]).ok(),
        ctl(&["put", "a", "3", "-w", "protobuf"]).ok(),
        ctl(&["put", "a", "4", "--prev-kv", "-w", "json"]).ok(),
        ctl(&["put", "a", "5", "--prev-kv", "-w", "fields"]).ok(),
        ctl(&["put", "a", "6", "--prev-kv", "-w", "protobuf"]).ok(),
        ctl(&["put", "b", "1", "--prev-kv", "-w", "json"]).ok(),
        ctl(&["get", "a", "-w", "json"]).ok(),
        ctl(&["get", "a", "-w", "fields"]).ok(),
        ctl(&["get", "a", "-w", "protobuf"]).ok(),
        ctl(&["get", "", "--prefix", "-w", "protobuf"]).ok(),
        ctl(&["get", "", "--prefix", "--limit", "1", "-w", "fields"]).ok(),
        ctl(&["get", "missing", "-w", "json"]).ok(),
        ctl(&["get", "missing", "-w", "fields"]).ok(),
        ctl(&["get", "missing", "-w", "protobuf"]).ok(),
        ctl(&["get", "a", "-w", "table"]),
        ctl(&["del", "missing", "-w", "json"]).ok(),
        ctl(&["del", "missing", "-w", "fields"]).ok(),
        ctl(&["del", "a", "--prev-kv", "-w", "json"]).ok(),
        ctl(&["del", "b", "--prev-kv", "-w", "fields"]).ok(),
        ctl(&["put", "c", "1"]).ok(),
        ctl(&["del", "c", "-w", "protobuf"]).ok(),
        ctl(&["put", "c", "2"]).ok(),
        ctl(&["del", "c", "--prev-kv", "-w", "protobuf"]).ok(),
        ctl(&["compaction", "3", "-w", "json"]).ok(),
        ctl(&["compaction", "4", "-w", "fields"]).ok(),
        ctl(&["compaction", "5", "-w", "protobuf"]).ok(),
        ctl(&["get", "", "--from-key", "-w", "json"]).ok(),
    ];
    compare_scenario("output_formats", &[], &steps);
}

#[test]
fn put_flags() {
    let steps = vec![
        ctl(&["put", "--prev-kv", "k", "v1"]).ok(),
        ctl(&["put", "--prev-kv", "k", "v2"]).ok().out_has("v1"),
        ctl(&["put", "--prev-kv", "k", "v3", "-w", "json"])
            .ok()
            .out_has("prev_kv"),
        ctl(&["put", "--ignore-value", "k"]).ok(),
        ctl(&["get", "k", "-w", "json"]).ok(),
        ctl(&["put", "--ignore-value", "--prev-kv", "k", "-w", "json"]).ok(),
        ctl(&["put", "--ignore-lease", "k", "v4"]).ok(),
        ctl(&["get", "k", "-w", "json"]).ok(),
        ctl(&[
            "put",
            "--ignore-lease",
            "--prev-kv",
            "k",
            "v5",
            "-w",
            "json",
        ])
        .ok(),
        ctl(&["put", "--ignore-value", "--ignore-lease", "k"]).ok(),
        ctl(&["get", "k", "-w", "fields"]).ok(),
        // both a value and --ignore-value: client-side error
        ctl(&["put", "--ignore-value", "k", "v"]),
        ctl(&["put", "--lease", "0", "k", "v6"]).ok(),
        ctl(&["get", "k", "-w", "json"]).ok(),
        ctl(&["put", "k"]).stdin("from stdin").ok(),
        // empty stdin is not a value: client-side usage error
        ctl(&["put", "k"]).stdin("").code(128),
        ctl(&["get", "k", "-w", "json"]).ok(),
    ];
    compare_scenario("put_flags", &[], &steps);
}

#[test]
fn del_variants() {
    let mut steps = puts(&[
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("d", "4"),
        ("foo", "5"),
        ("foo1", "6"),
        ("foo2", "7"),
        ("x", "8"),
        ("xa", "9"),
        ("y", "10"),
        ("z", "11"),
    ]);
    steps.extend([
        ctl(&["del", "zzz"]).ok().out_has("0"),
        ctl(&["del", "zzz", "-w", "json"]).ok(),
        ctl(&["del", "a"]).ok().out_has("1"),
        ctl(&["del", "a", "--prev-kv"]).ok(),
        ctl(&["del", "b", "--prev-kv"]).ok(),
        ctl(&["del", "foo", "--prefix", "--prev-kv", "-w", "json"]).ok(),
        ctl(&["del", "foo", "--prefix"]).ok(),
        ctl(&["del", "nothing", "--prefix", "-w", "json"]).ok(),
        ctl(&["del", "x", "y"]).ok(),
        ctl(&["get", "", "--prefix"]).ok(),
        ctl(&["del", "z", "y", "--prev-kv"]).ok(),
        ctl(&["del", "d", "--from-key", "--prev-kv"]).ok(),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
        ctl(&["put", "p", "1"]).ok(),
        ctl(&["put", "q", "2"]).ok(),
        ctl(&["del", "", "--from-key", "-w", "json"]).ok(),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
        ctl(&["del", "", "--prefix"]).ok(),
        ctl(&["get", "", "--from-key", "-w", "json"]).ok(),
        // deleting a key that was deleted: historical reads still see it
        ctl(&["get", "c", "--rev", "4"]).ok(),
        ctl(&["get", "c", "--rev", "20", "-w", "json"]).ok(),
    ]);
    compare_scenario("del_variants", &[], &steps);
}

#[test]
fn compaction_and_historical() {
    let mut steps = puts(&[
        ("k", "v1"),
        ("k", "v2"),
        ("k", "v3"),
        ("k", "v4"),
        ("k", "v5"),
    ]); // revs 2..6
    steps.extend([
        ctl(&["compaction", "4"])
            .ok()
            .out_has("compacted revision 4"),
        ctl(&["get", "k", "--rev", "3"]).fails_with("required revision has been compacted"),
        ctl(&["get", "k", "--rev", "3", "-w", "json"])
            .fails_with("required revision has been compacted"),
        ctl(&["get", "k", "--rev", "4"]).ok(),
        ctl(&["get", "k", "--rev", "5", "-w", "json"]).ok(),
        ctl(&["get", "k", "-w", "json"]).ok(),
        ctl(&["compaction", "4"]).fails_with("required revision has been compacted"),
        ctl(&["compaction", "3"]).fails_with("required revision has been compacted"),
        ctl(&["compaction", "100"]).fails_with("required revision is a future revision"),
        ctl(&["compaction", "6", "--physical"]).ok(),
        ctl(&["get", "k", "--rev", "5"]).fails_with("required revision has been compacted"),
        ctl(&["get", "k", "--rev", "6"]).ok(),
        ctl(&["put", "k", "v6"]).ok(),
        ctl(&["get", "k", "--rev", "7", "-w", "json"]).ok(),
        ctl(&["get", "k", "-w", "json"]).ok(),
        ctl(&["del", "k"]).ok(),
        ctl(&["compaction", "8"]).ok(),
        ctl(&["get", "k", "--rev", "8", "-w", "json"]).ok(),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
    ]);
    compare_scenario("compaction_and_historical", &[], &steps);
}
