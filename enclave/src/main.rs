//! `vouch-enclave` command line (trusted side: runs inside the SEV-SNP guest). Parses
//! arguments, sets up logging and hands over to the library; nothing else lives here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vouch_enclave::generate::{self, GenerateArgs};

/// Vouch enclave: attested LLM inference inside an AMD SEV-SNP guest.
#[derive(Debug, Parser)]
#[command(name = "vouch-enclave", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the model in-process on one prompt: no network, no attestation.
    Generate(GenerateArgs),
    /// Serve the attested OpenAI-compatible API over TLS terminated in the enclave.
    Serve(vouch_enclave::serve::ServeArgs),
}

fn serve(args: vouch_enclave::serve::ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    vouch_enclave::model::lie::check_environment()?;
    // candle sizes its thread pools once per process from the environment: fix the
    // count before any thread (tokio's included) exists.
    vouch_enclave::model::init_compute_threads(args.threads);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(vouch_enclave::serve::run(args, vouch_enclave::serve::shutdown_signal()))?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so that stdout carries only the generated text / JSON.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Generate(args) => generate::run(args).map_err(Into::into),
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vouch-enclave: error: {e}");
            ExitCode::FAILURE
        }
    }
}
