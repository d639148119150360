//! The one error type at the boundary of the `vouch-host` library.
//!
//! UNTRUSTED side: these are the host's own failures (configuration, sockets, signals).
//! Per-connection I/O errors are not here: they end one connection, are logged and
//! counted (see `metrics::ErrorKind`), and never stop the forwarder.

use crate::config::ConfigError;

/// Why the forwarder could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The settings are incomplete or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening socket could not be bound.
    #[error("cannot bind {what} address {addr}: {source}")]
    Bind {
        /// Which listener (`listen` or `admin`).
        what: &'static str,
        /// The address as configured.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The local address of a bound listener could not be read.
    #[error("cannot read local address of the {what} listener: {source}")]
    LocalAddr {
        /// Which listener.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}
