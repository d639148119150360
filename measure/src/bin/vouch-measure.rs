//! `vouch-measure`: the standalone form of `vouch measure`. Prints the expected SEV-SNP
//! launch measurement(s) of a guest, or a policy-file snippet. Exit 0 on success, 2 on a
//! usage, I/O or input error (the `vouch` convention).

use std::process::ExitCode;

use clap::Parser;
use vouch_measure::cli::{run, MeasureArgs};

/// Compute the expected SEV-SNP launch measurement (agrees with `sev-snp-measure --mode snp`).
#[derive(Debug, Parser)]
#[command(name = "vouch-measure", version, about)]
struct Cli {
    #[command(flatten)]
    args: MeasureArgs,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(&cli.args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vouch-measure: error: {e}");
            ExitCode::from(2)
        }
    }
}
