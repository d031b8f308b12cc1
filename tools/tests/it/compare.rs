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

fn masked(step: &Step, out: &CtlOutput, server: &Server) -> Masked {
    let stdout = if step.is_protobuf() {
        mask::mask_protobuf_header(&out.stdout)
    } else {
        mask::mask_text_ids(&out.stdout)
    };
    Masked {
        code: out.code,
        stdout,
        stderr: mask::mask_client_noise(&out.stderr, &server.endpoint()),
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

    if std::env::var_os("FERROCD_IT_DUMP").is_some() {
        let mut d = format!("\n######## scenario {name} (server args {server_args:?})\n");
        for (i, step) in steps.iter().enumerate() {
            let a = masked(step, &r_out[i], &reference);
            let b = masked(step, &s_out[i], &subject);
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
                    subject.kind.label(),
                    b.code,
                    show(&b.stdout, bin),
                    show(&b.stderr, false)
                ));
            }
        }
        eprintln!("{d}");
    }

    // 1. Sanity of the scenario itself, on the reference.
    let mut bad_scenario = String::new();
    for (i, (step, out)) in steps.iter().zip(&r_out).enumerate() {
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
    assert!(
        bad_scenario.is_empty(),
        "\nSCENARIO `{name}` IS BROKEN: the reference etcd did not behave as the scenario expects \
         (harness/scenario bug, not a subject bug):\n{bad_scenario}"
    );

    // 2. Step-by-step comparison.
    let mut report = String::new();
    let mut mismatches = 0;
    for (i, step) in steps.iter().enumerate() {
        let a = masked(step, &r_out[i], &reference);
        let b = masked(step, &s_out[i], &subject);
        if a == b {
            continue;
        }
        mismatches += 1;
        let bin = step.is_protobuf();
        report.push_str(&format!("\n== step {i}: {}\n", step.display()));
        if a.code != b.code {
            report.push_str(&format!(
                "  exit code: etcd {} vs {} {}\n",
                a.code,
                subject.kind.label(),
                b.code
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
                    subject.kind.label(),
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
        panic!(
            "\nSCENARIO `{name}`: {mismatches} of {} steps differ between etcd and {} \
             (masked: cluster_id/member_id/raft_term, etcdctl log ts/ptr/endpoint)\n\
             server args: {:?}\nall steps:\n{all}{report}\n",
            steps.len(),
            subject.kind.label(),
            server_args
        );
    }
}
