//! Scenario runner: the same list of etcdctl invocations against a fresh real
//! etcd and a fresh subject (ferrocd), compared step by step after masking
//! (see `mask.rs`).

use crate::harness::{start_pair, subject_kind, CtlOutput, Kind, Server};
use crate::mask;

#[derive(Clone, Debug)]
pub struct Step {
    pub args: Vec<String>,
    pub stdin: Option<Vec<u8>>,
    /// Sanity expectations checked on the REFERENCE (etcd) output, so a
    /// scenario cannot silently stop testing what it claims to test.
    pub expect_code: Option<i32>,
    pub expect_stdout: Vec<String>,
    pub expect_stderr: Vec<String>,
}

impl Step {
    pub fn new(args: &[&str]) -> Step {
        Step {
            args: args.iter().map(|s| s.to_string()).collect(),
            stdin: None,
            expect_code: None,
            expect_stdout: vec![],
            expect_stderr: vec![],
        }
    }
    pub fn stdin(mut self, input: impl AsRef<[u8]>) -> Step {
        self.stdin = Some(input.as_ref().to_vec());
        self
    }
    /// etcd must exit 0.
    pub fn ok(mut self) -> Step {
        self.expect_code = Some(0);
        self
    }
    /// etcd must exit non-zero with `needle` on stderr.
    pub fn fails_with(mut self, needle: &str) -> Step {
        self.expect_code = Some(1);
        self.expect_stderr.push(needle.to_string());
        self
    }
    pub fn code(mut self, code: i32) -> Step {
        self.expect_code = Some(code);
        self
    }
    pub fn out_has(mut self, needle: &str) -> Step {
        self.expect_stdout.push(needle.to_string());
        self
    }
    fn is_protobuf(&self) -> bool {
        let a = &self.args;
        a.iter()
            .any(|x| x == "-wprotobuf" || x == "--write-out=protobuf" || x == "-w=protobuf")
            || a.windows(2)
                .any(|w| (w[0] == "-w" || w[0] == "--write-out") && w[1] == "protobuf")
    }
    pub fn display(&self) -> String {
        let mut s = String::from("etcdctl");
        for a in &self.args {
            s.push(' ');
            s.push_str(&shell_quote(a));
        }
        if let Some(input) = &self.stdin {
            if input.len() > 300 {
                s.push_str(&format!(" <<< ({} bytes of stdin)", input.len()));
            } else {
                s.push_str(&format!(" <<< {:?}", String::from_utf8_lossy(input)));
            }
        }
        s
    }
}

/// `etcdctl <args>`.
pub fn ctl(args: &[&str]) -> Step {
    Step::new(args)
}

/// `etcdctl txn <extra>` with `body` on stdin.
pub fn txn(body: &str, extra: &[&str]) -> Step {
    let mut args = vec!["txn"];
    args.extend_from_slice(extra);
    Step::new(&args).stdin(body)
}

fn shell_quote(a: &str) -> String {
    if a.len() > 120 {
        return format!("'<{} bytes: {}...>'", a.len(), &a[..20.min(a.len())]);
    }
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@%".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Masked, comparable form of one step's result.
#[derive(Debug, PartialEq, Eq)]
struct Masked {
    code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn masked(step: &Step, out: &CtlOutput, endpoint: &str) -> Masked {
    let stdout = if step.is_protobuf() {
        mask::mask_protobuf_header(&out.stdout)
    } else {
        mask::mask_text_ids(&out.stdout)
    };
    Masked {
        code: out.code,
        stdout,
        stderr: mask::mask_client_noise(&out.stderr, endpoint),
    }
}

fn show(bytes: &[u8], binary: bool) -> String {
    if bytes.is_empty() {
        return "    (empty)\n".to_string();
    }
    let text = if binary {
        bytes.escape_ascii().to_string()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    };
    let mut s = String::new();
    for l in text.split_inclusive('\n') {
        s.push_str("    | ");
        s.push_str(l);
    }
    if !text.ends_with('\n') {
        s.push_str("⏎(no trailing newline)\n");
    }
    s
}

fn first_diff_line(a: &[u8], b: &[u8]) -> String {
    let a = String::from_utf8_lossy(a);
    let b = String::from_utf8_lossy(b);
    let (al, bl): (Vec<_>, Vec<_>) = (a.lines().collect(), b.lines().collect());
    for i in 0..al.len().max(bl.len()) {
        let (x, y) = (al.get(i), bl.get(i));
        if x != y {
            return format!(
                "    first difference at line {}:\n      etcd:    {:?}\n      subject: {:?}\n",
                i + 1,
                x.copied().unwrap_or("<missing>"),
                y.copied().unwrap_or("<missing>")
            );
        }
    }
    "    (lines equal; difference in trailing newline/bytes)\n".to_string()
}

/// Run all steps sequentially on one server.
pub fn run_steps(server: &Server, steps: &[Step]) -> Vec<CtlOutput> {
    steps
        .iter()
        .map(|s| server.ctl(&s.args, s.stdin.as_deref()))
        .collect()
}

/// Run `steps` against a fresh etcd and a fresh subject, both started with
/// the standard flags plus `server_args`, and assert equal masked outputs.
pub fn compare_scenario(name: &str, server_args: &[&str], steps: &[Step]) {
    compare_scenario_against(subject_kind(), name, server_args, steps)
}

/// As `compare_scenario`, with an explicit subject (the self-check uses etcd).
pub fn compare_scenario_against(subject: Kind, name: &str, server_args: &[&str], steps: &[Step]) {
    let (reference, subject) = start_pair(subject, server_args);
    let (r_out, s_out) = std::thread::scope(|sc| {
        let r = sc.spawn(|| run_steps(&reference, steps));
        let s = sc.spawn(|| run_steps(&subject, steps));
        (r.join().unwrap(), s.join().unwrap())
    });
    let r = Side {
        label: "etcd",
        endpoint: reference.endpoint(),
        outputs: r_out,
    };
    let s = Side {
        label: subject.kind.label(),
        endpoint: subject.endpoint(),
        outputs: s_out,
    };
    if std::env::var_os("FERROCD_IT_DUMP").is_some() {
        eprintln!("{}", dump(name, server_args, steps, &r, &s));
    }
    if let Err(msg) = check(name, server_args, steps, &r, &s) {
        panic!("{msg}");
    }
}

/// One server's results for a scenario.
pub struct Side {
    pub label: &'static str,
    pub endpoint: String,
    pub outputs: Vec<CtlOutput>,
}

fn dump(name: &str, server_args: &[&str], steps: &[Step], r: &Side, s: &Side) -> String {
    let mut d = format!("\n######## scenario {name} (server args {server_args:?})\n");
    for (i, step) in steps.iter().enumerate() {
        let a = masked(step, &r.outputs[i], &r.endpoint);
        let b = masked(step, &s.outputs[i], &s.endpoint);
        let bin = step.is_protobuf();
        d.push_str(&format!(
            "== step {i}: {}\n  etcd exit {}\n{}{}",
            step.display(),
            a.code,
            show(&a.stdout, bin),
            show(&a.stderr, false)
        ));
        if a != b {
            d.push_str(&format!(
                "  {} exit {} (DIFFERENT)\n{}{}",
                s.label,
                b.code,
                show(&b.stdout, bin),
                show(&b.stderr, false)
            ));
        }
    }
    d
}

/// Sanity expectations on the reference, then the step-by-step comparison.
pub fn check(
    name: &str,
    server_args: &[&str],
    steps: &[Step],
    r: &Side,
    s: &Side,
) -> Result<(), String> {
    // 1. Sanity of the scenario itself, on the reference.
    let mut bad_scenario = String::new();
    for (i, (step, out)) in steps.iter().zip(&r.outputs).enumerate() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut problems = vec![];
        if let Some(c) = step.expect_code {
            if out.code != c {
                problems.push(format!("exit code {} (expected {c})", out.code));
            }
        }
        for n in &step.expect_stdout {
            if !stdout.contains(n.as_str()) {
                problems.push(format!("stdout lacks {n:?}"));
            }
        }
        for n in &step.expect_stderr {
            if !stderr.contains(n.as_str()) {
                problems.push(format!("stderr lacks {n:?}"));
            }
        }
        if !problems.is_empty() {
            bad_scenario.push_str(&format!(
                "  step {i}: {}\n    {}\n    stdout:\n{}    stderr:\n{}",
                step.display(),
                problems.join("; "),
                show(&out.stdout, step.is_protobuf()),
                show(&out.stderr, false)
            ));
        }
    }
    if !bad_scenario.is_empty() {
        return Err(format!(
            "\nSCENARIO `{name}` IS BROKEN: the reference etcd did not behave as the scenario expects \
             (harness/scenario bug, not a subject bug):\n{bad_scenario}"
        ));
    }

    // 2. Step-by-step comparison.
    let mut report = String::new();
    let mut mismatches = 0;
    for (i, step) in steps.iter().enumerate() {
        let a = masked(step, &r.outputs[i], &r.endpoint);
        let b = masked(step, &s.outputs[i], &s.endpoint);
        if a == b {
            continue;
        }
        mismatches += 1;
        let bin = step.is_protobuf();
        report.push_str(&format!("\n== step {i}: {}\n", step.display()));
        if a.code != b.code {
            report.push_str(&format!(
                "  exit code: etcd {} vs {} {}\n",
                a.code, s.label, b.code
            ));
        } else {
            report.push_str(&format!("  exit code: {} (same)\n", a.code));
        }
        for (what, x, y) in [
            ("stdout", &a.stdout, &b.stdout),
            ("stderr", &a.stderr, &b.stderr),
        ] {
            if x == y {
                report.push_str(&format!("  {what}: same\n"));
            } else {
                report.push_str(&format!(
                    "  {what} etcd:\n{}  {what} {}:\n{}{}",
                    show(x, bin && what == "stdout"),
                    s.label,
                    show(y, bin && what == "stdout"),
                    first_diff_line(x, y)
                ));
            }
        }
    }
    if mismatches > 0 {
        let mut all = String::new();
        for (i, step) in steps.iter().enumerate() {
            all.push_str(&format!("  {i:>3}: {}\n", step.display()));
        }
        return Err(format!(
            "\nSCENARIO `{name}`: {mismatches} of {} steps differ between etcd and {} \
             (masked: cluster_id/member_id/raft_term, etcdctl log ts/ptr/endpoint)\n\
             server args: {server_args:?}\nall steps:\n{all}{report}\n",
            steps.len(),
            s.label,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: i32, stdout: &str, stderr: &str) -> CtlOutput {
        CtlOutput {
            code,
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    fn sides(a: Vec<CtlOutput>, b: Vec<CtlOutput>) -> (Side, Side) {
        (
            Side {
                label: "etcd",
                endpoint: "127.0.0.1:1111".into(),
                outputs: a,
            },
            Side {
                label: "ferrocd",
                endpoint: "127.0.0.1:2222".into(),
                outputs: b,
            },
        )
    }

    const ERR_A: &str = r#"{"level":"warn","ts":"2026-11-28T03:19:41.042Z","logger":"etcd-client","caller":"v3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"etcd-endpoints://0xc000394380/127.0.0.1:1111","attempt":0,"error":"rpc error: code = OutOfRange desc = etcdserver: mvcc: required revision is a future revision"}
Error: etcdserver: mvcc: required revision is a future revision
"#;

    #[test]
    fn check_accepts_id_and_noise_differences_only() {
        let steps = [
            ctl(&["get", "a", "-w", "json"]).ok(),
            ctl(&["get", "a", "--rev", "9"]).fails_with("future"),
        ];
        let err_b = ERR_A
            .replace("03:19:41.042Z", "03:19:45.999Z")
            .replace("0xc000394380", "0xc00001e000")
            .replace("127.0.0.1:1111", "127.0.0.1:2222");
        let (r, s) = sides(
            vec![
                out(
                    0,
                    r#"{"header":{"cluster_id":11,"member_id":22,"revision":1,"raft_term":2}}"#,
                    "",
                ),
                out(1, "", ERR_A),
            ],
            vec![
                out(
                    0,
                    r#"{"header":{"cluster_id":33,"member_id":44,"revision":1,"raft_term":5}}"#,
                    "",
                ),
                out(1, "", &err_b),
            ],
        );
        check("t", &[], &steps, &r, &s).unwrap();
    }

    #[test]
    fn check_rejects_real_differences() {
        let steps = [
            ctl(&["get", "a", "-w", "json"]),
            ctl(&["get", "a", "--rev", "9"]),
        ];
        let err_b = &ERR_A.replace("127.0.0.1:1111", "127.0.0.1:2222");
        let base = vec![
            out(0, r#"{"header":{"cluster_id":11,"revision":1}}"#, ""),
            out(1, "", ERR_A),
        ];
        // sanity: identical apart from the endpoint
        let (r, s) = sides(base.clone(), vec![base[0].clone(), out(1, "", err_b)]);
        check("t", &[], &steps, &r, &s).unwrap();
        let variants = [
            // revision differs
            vec![
                out(0, r#"{"header":{"cluster_id":11,"revision":2}}"#, ""),
                out(1, "", err_b),
            ],
            // a zero id became non-zero (e.g. filled in a nested header)
            vec![
                out(
                    0,
                    r#"{"header":{"cluster_id":11,"revision":1,"raft_term":3}}"#,
                    "",
                ),
                out(1, "", err_b),
            ],
            // exit code differs
            vec![
                out(0, r#"{"header":{"cluster_id":11,"revision":1}}"#, ""),
                out(2, "", err_b),
            ],
            // grpc code differs
            vec![
                out(0, r#"{"header":{"cluster_id":11,"revision":1}}"#, ""),
                out(1, "", &err_b.replace("OutOfRange", "InvalidArgument")),
            ],
        ];
        for v in variants {
            let (r, s) = sides(base.clone(), v);
            let err = check("t", &[], &steps, &r, &s).unwrap_err();
            assert!(err.contains("1 of 2 steps differ"), "{err}");
        }
    }

    #[test]
    fn check_flags_broken_scenarios() {
        let steps = [ctl(&["get", "a"]).fails_with("future")];
        let (r, s) = sides(vec![out(0, "", "")], vec![out(0, "", "")]);
        let err = check("t", &[], &steps, &r, &s).unwrap_err();
        assert!(err.contains("IS BROKEN"), "{err}");
    }
}
