//! `etcdctl txn` scenarios. Stdin format (etcdctl 3.5 txn_command.go):
//! compares, one per line, then a blank line; success ops (`put`/`get`/`del`
//! with their usual flags), blank line; failure ops, blank line. Compares:
//! `value("k") = "v"`, `version("k") > "0"`, `create("k") = "0"`,
//! `mod("k") < "5"` (also `val`/`ver`/`c`/`m`), operators `= != < >`.
//! NB: a `lease("k") = "0"` compare panics inside etcdctl 3.5.1 itself
//! (client/v3/compare.go mustInt64), so it is not usable here.

use crate::compare::{compare_scenario, ctl, txn, Step};

fn setup() -> Vec<Step> {
    vec![
        ctl(&["put", "a", "1"]).ok(), // rev 2
        ctl(&["put", "b", "x"]).ok(), // rev 3
        ctl(&["put", "b", "y"]).ok(), // rev 4: b = create 3, mod 4, ver 2
    ]
}

/// One txn per compare; success branch reads `a`, failure branch writes a
/// marker, so both the SUCCESS/FAILURE line and the revision are observable.
#[test]
fn txn_compares() {
    let mut steps = setup();
    let compares = [
        r#"value("a") = "1""#,
        r#"value("a") != "1""#,
        r#"value("a") > "0""#,
        r#"value("a") < "0""#,
        r#"value("a") < "10""#, // byte-wise: "1" < "10"
        r#"val("b") = "y""#,
        r#"version("b") = "2""#,
        r#"version("b") > "1""#,
        r#"ver("b") < "2""#,
        r#"version("b") != "2""#,
        r#"version("missing") = "0""#,
        r#"version("missing") > "0""#,
        r#"create("a") = "2""#,
        r#"create("b") > "2""#,
        r#"c("missing") = "0""#,
        r#"create("missing") < "1""#,
        r#"mod("b") = "4""#,
        r#"mod("b") < "5""#,
        r#"m("b") > "100""#,
        r#"mod("missing") = "0""#,
        // a VALUE compare on a missing key always fails in etcd
        r#"value("missing") = """#,
        r#"value("missing") != "x""#,
        r#"value("missing") < "z""#,
    ];
    for (i, c) in compares.iter().enumerate() {
        steps.push(txn(&format!("{c}\n\nget a\n\nput failed {i}\n\n"), &[]).ok());
    }
    steps.extend([
        // several compares: all must hold
        txn(
            "value(\"a\") = \"1\"\nversion(\"b\") = \"2\"\n\nput both yes\n\nput both no\n\n",
            &[],
        )
        .ok(),
        txn(
            "value(\"a\") = \"1\"\nversion(\"b\") = \"9\"\n\nput both yes\n\nput both no\n\n",
            &[],
        )
        .ok(),
        // no compares: success branch
        txn("\nput nocmp 1\n\nput nocmp 0\n\n", &[]).ok(),
        // compare but empty branches
        txn("value(\"a\") = \"1\"\n\n\n\n", &[]).ok(),
        txn("value(\"a\") = \"2\"\n\n\n\n", &[]).ok(),
        // completely empty txn
        txn("\n\n\n", &[]).ok(),
        txn("\n\n\n", &["-w", "json"]).ok(),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
    ]);
    compare_scenario("txn_compares", &[], &steps);
}

#[test]
fn txn_ops_and_output() {
    let mut steps = setup();
    let body_ops = "version(\"a\") > \"0\"\n\n\
                    put c 3\n\
                    get c\n\
                    put --prev-kv a 11\n\
                    get --prefix \"\"\n\
                    del --prev-kv b\n\
                    get b\n\
                    \n\
                    put never 1\n\n";
    steps.extend([
        // writes are visible to later reads of the same txn; one revision per txn
        txn(body_ops, &[]).ok(),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
        txn(body_ops, &["-w", "json"]).ok().out_has("\"succeeded\":true"),
        txn(body_ops, &["-w", "fields"]).ok(),
        txn(body_ops, &["-w", "protobuf"]).ok(),
        // failure branch with output formats
        txn("value(\"a\") = \"nope\"\n\nput never 1\n\nget a\nget --prefix \"\" --keys-only\nput f 1\n\n", &[]).ok(),
        txn("value(\"a\") = \"nope\"\n\nput never 1\n\nget a\nput f 2\n\n", &["-w", "json"]).ok(),
        txn("value(\"a\") = \"nope\"\n\nput never 1\n\nget a\nput f 3\n\n", &["-w", "fields"]).ok(),
        txn("value(\"a\") = \"nope\"\n\nput never 1\n\nget a\nput f 4\n\n", &["-w", "protobuf"]).ok(),
        // read-only txn does not bump the revision
        txn("\nget a\nget f --rev 3\n\n\n", &["-w", "json"]).ok(),
        // gets with options inside txn
        txn("\nget --prefix \"\" --limit 2\nget --from-key f --keys-only\nget --prefix \"\" --count-only\nget a c\n\n\n", &["-w", "json"]).ok(),
        txn("\nget --prefix \"\" --sort-by=VALUE --order=DESCEND\n\n\n", &[]).ok(),
        // deletes inside txn
        txn("\ndel --prefix --prev-kv \"\"\nget --prefix \"\"\n\n\n", &["-w", "json"]).ok(),
        txn("\ndel a\ndel a\n\n\n", &[]).ok(),
        txn("\nput x 1\nput y 2\nput z 3\n\n\n", &["-w", "json"]).ok(),
        txn("\ndel x z\n\n\n", &["-w", "json"]).ok(),
        txn("\ndel --from-key y\n\n\n", &[]).ok(),
        // ignore-value / ignore-lease inside a txn
        txn("\nput q 1\n\n\n", &[]).ok(),
        txn("\nput --ignore-value q\nget q\n\n\n", &["-w", "json"]).ok(),
        ctl(&["get", "", "--prefix", "-w", "json"]).ok(),
        // interactive mode prints prompts on stdout
        ctl(&["txn", "-i"]).stdin("value(\"q\") = \"1\"\n\nget q\n\n\n").ok(),
        // malformed input: client-side errors (same etcdctl; completeness)
        txn("bogus\n\n\n\n", &[]),
        txn("value(\"a\") = \"1\"\n\nput a\n", &[]),
    ]);
    compare_scenario("txn_ops_and_output", &[], &steps);
}
