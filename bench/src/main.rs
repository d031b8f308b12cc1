//! ferrobench: etcd's benchmark tool (`tools/benchmark`: `put`, `range`,
//! `txn-put`, `txn-mixed`, `stm`) driving etcd or ferrocd through ferrocd's
//! own gRPC client (`net::client`) on glommio executors, with an open-loop
//! mode (`--rate`, `--sweep`: `openloop.rs`, `sweep.rs`) and `compare`
//! (`compare.rs`), which starts real etcd and ferrocd side by side and
//! produces the figures of BENCHMARKS.md:
//!
//! ```sh
//! cargo build --release -p bench -p tools
//! target/release/ferrobench compare --reps 3 --sweep 2000,5000,10000,20000,40000 --out bench-results
//! ```
//!
//! See `args::USAGE` and `compare::USAGE`.
#![forbid(unsafe_code)]

mod args;
mod compare;
mod cpu;
mod keys;
mod lease;
mod openloop;
mod report;
mod run;
mod stm;
mod stream_cmd;
mod sweep;
mod watch;

use std::io::Write;
use std::process::ExitCode;

use args::{Command, ParseError};

/// The same allocator as ferrocd: less load-generator CPU per request on
/// the cores it shares with the servers (the same for etcd and ferrocd).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("compare") {
        return compare::main(&argv[1..]);
    }
    // The streaming workloads have their own command line (stream_cmd.rs).
    if argv
        .iter()
        .any(|a| a == "watch-latency" || a == "lease-keepalive")
    {
        return stream_cmd::main(&argv);
    }
    let args = match args::parse(argv) {
        Ok(a) => a,
        Err(ParseError::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(ParseError::Usage(msg)) => {
            eprintln!("ferrobench: {msg}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    // With --json, stdout carries only the JSON line.
    let json = args.global.json;
    let say = |s: &str| {
        if json {
            eprint!("{s}");
        } else {
            print!("{s}");
        }
    };
    if let Command::Range(r) = &args.command {
        say(if r.serializable {
            "bench with serializable range\n"
        } else {
            "bench with linearizable range\n"
        });
    }
    if !args.global.sweep.is_empty() {
        return sweep_main(&args, json);
    }
    let report = match run::run(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrobench: {e}");
            return ExitCode::FAILURE;
        }
    };
    say(&report.human());
    if json {
        println!("{}", report.json_line());
    }
    let _ = std::io::stdout().flush();
    // Nothing succeeded (server down, every call refused): say so in the
    // exit status too, so scripts can use a 1-request run as a probe.
    if report.done() > 0 && report.rec.hist.is_empty() {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

/// `--sweep`: one run per rate, a table, and the SVG plot.
fn sweep_main(args: &args::Args, json: bool) -> ExitCode {
    let points = sweep::sweep(args, |r| {
        if json {
            println!("{}", r.json_line());
        } else {
            print!("{}", r.human());
        }
    });
    let points = match points {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferrobench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cmd = args.command.name();
    let table = sweep::table(cmd, &points);
    if json {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    let title = format!(
        "ferrobench {cmd}: latency vs throughput ({} clients, {} conns, {})",
        args.global.clients,
        args.global.conns,
        args.global.endpoints.join(",")
    );
    match std::fs::write(&args.global.svg, sweep::svg(&title, &points)) {
        Ok(()) => eprintln!("ferrobench: plot written to {}", args.global.svg),
        Err(e) => {
            eprintln!("ferrobench: writing {}: {e}", args.global.svg);
            return ExitCode::FAILURE;
        }
    }
    let _ = std::io::stdout().flush();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests;
