//! `vouch`: the Vouch client's command line (CLIENT side; trusts only AMD's roots and
//! its policy). Thin by design: parse arguments, set up logging, run, exit. All the
//! work is in the `vouch_client` library (`cli::run`).
//!
//! Exit codes: 0 verified, 1 verification or policy failure, 2 usage or I/O error
//! (clap's usage errors exit 2 too).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `parse` exits 2 on usage errors and 0 for --help/--version.
    let cli = vouch_client::cli::Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    // Offline commands (verify-report, verify, measure) do no network I/O: a
    // current-thread runtime spares them worker-thread start-up, which is most of a
    // whole-process verification's cost.
    let offline = matches!(
        cli.command,
        vouch_client::cli::Command::VerifyReport(_)
            | vouch_client::cli::Command::Verify(_)
            | vouch_client::cli::Command::Measure(_)
    );
    let built = if offline {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vouch: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    ExitCode::from(runtime.block_on(vouch_client::cli::run(cli)))
}
