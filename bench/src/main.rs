//! ferrobench: etcd's benchmark tool (`tools/benchmark`: `put`, `range`)
//! driving etcd or ferrocd through ferrocd's own gRPC client (`net::client`)
//! on glommio executors. See `args::USAGE`.
#![forbid(unsafe_code)]

mod args;
mod cpu;
mod keys;
mod report;
mod run;

use std::io::Write;
use std::process::ExitCode;

use args::{Command, ParseError};

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
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

#[cfg(test)]
mod tests;
