//! `vouch-host` binary: parse settings, set up logging, bind the listener, run until
//! SIGTERM/SIGINT, drain, exit.
//!
//! UNTRUSTED side: this process runs on the operator's machine, outside the enclave. All
//! the work is in the library ([`vouch_host::run`]); this file only wires it up.
//!
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure (e.g. cannot bind),
//! 2 on a usage or configuration error.

#![forbid(unsafe_code)]

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;
use vouch_host::config::{Cli, FileConfig};
use vouch_host::{Config, HostError, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match cli.config.as_deref().map(FileConfig::load).transpose() {
        Ok(file) => file.unwrap_or_default(),
        Err(e) => {
            eprintln!("vouch-host: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_sources(cli, file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vouch-host: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %HostError::Runtime(e), "vouch-host failed");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "vouch-host failed");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Config) -> Result<(), HostError> {
    let listener = TcpListener::bind(&config.listen).await.map_err(|source| HostError::Bind {
        what: "listen",
        addr: config.listen.clone(),
        source,
    })?;
    // Install the handlers before `run` logs readiness, so that a signal sent as soon as
    // the readiness line appears is not lost (the default action would kill us undrained).
    let shutdown = shutdown_signal().map_err(HostError::Signal)?;
    vouch_host::run(config, listener, shutdown).await
}

fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    })
}

/// Logs go to stderr; `RUST_LOG` filters them (default `info`). Payload bytes are never
/// logged at any level.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        _ => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
