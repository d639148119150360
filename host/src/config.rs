//! Settings for `vouch-host`: command-line flags, an optional TOML file, and the defaults,
//! merged into one validated [`Config`] (command line over file over defaults).
//!
//! UNTRUSTED side: these knobs bound the forwarder's resource use (connections, timeouts,
//! health checking). None of them can weaken what a client verifies; a hostile operator
//! can set any of them, and the worst outcome is a denial of service.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::addr::EnclaveAddr;

/// Default bound on simultaneously forwarded client connections. Each costs two sockets and
/// two 64 KiB buffers, so 1024 stays well under a default `ulimit -n` of 4096 with room for
/// health checks and the admin endpoint.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default bound on opening a stream to an enclave. vsock and loopback connect in
/// microseconds; a remote CVM within a second. Two seconds leaves time to fail over.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default idle timeout: no byte in either direction for this long closes the connection.
/// Generous because a model may think for a while before its first token.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default bound on a connection's total lifetime, however busy.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Default period between health checks of each enclave.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Default bound on one health check (a connect).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive failures (health checks or connects) before an enclave is ejected.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 3;
/// Default consecutive successful health checks before an ejected enclave returns.
pub const DEFAULT_HEALTHY_AFTER: u32 = 1;
/// Default time in-flight connections get to finish after SIGTERM/SIGINT.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the settings could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TOML file is not valid, or has an unknown key or a bad value.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (includes line and column).
        source: Box<toml::de::Error>,
    },
    /// No `listen` address on the command line or in the file.
    #[error("no listen address: pass --listen HOST:PORT or set `listen` in the config file")]
    MissingListen,
    /// No enclave on the command line or in the file.
    #[error("no enclave: pass --enclave ADDR (tcp:HOST:PORT, unix:PATH or vsock:CID:PORT) or set `enclaves` in the config file")]
    NoEnclaves,
    /// A numeric setting is out of its valid range.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting's name as in the file.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line flags. Every flag is optional here so that the TOML file can supply it;
/// [`Config::from_sources`] enforces what is required.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "vouch-host",
    version,
    about = "Untrusted forwarder: passes client TLS bytes to Vouch enclaves, unmodified and unread"
)]
pub struct Cli {
    /// Address to accept client connections on (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Enclave to forward to: tcp:HOST:PORT, unix:PATH or vsock:CID:PORT. Repeat for
    /// several; replaces the file's list when given.
    #[arg(long = "enclave", value_name = "ADDR")]
    pub enclaves: Vec<EnclaveAddr>,
    /// Address for the admin endpoint (/healthz, /readyz, /metrics). Off when absent.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// TOML file with any of these settings (flags override it).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Maximum simultaneous client connections; excess ones are closed at once.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Bound on connecting to one enclave, in milliseconds.
    #[arg(long)]
    pub connect_timeout_ms: Option<u64>,
    /// Close a connection idle (no bytes either way) this long, in milliseconds.
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Close any connection older than this, in milliseconds.
    #[arg(long)]
    pub max_lifetime_ms: Option<u64>,
    /// Period between health checks of each enclave, in milliseconds.
    #[arg(long)]
    pub health_interval_ms: Option<u64>,
    /// Bound on one health check, in milliseconds.
    #[arg(long)]
    pub health_timeout_ms: Option<u64>,
    /// Consecutive failures before an enclave is ejected.
    #[arg(long)]
    pub unhealthy_after: Option<u32>,
    /// Consecutive successful checks before an ejected enclave returns.
    #[arg(long)]
    pub healthy_after: Option<u32>,
    /// Time in-flight connections get to finish on SIGTERM/SIGINT, in milliseconds.
    #[arg(long)]
    pub drain_timeout_ms: Option<u64>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The TOML file. Keys mirror the long flags with `_` for `-`; `enclaves` is a list.
/// Unknown keys are an error, so a typo cannot silently leave a default in place.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is documented on the matching `Cli` flag
pub struct FileConfig {
    pub listen: Option<String>,
    #[serde(default)]
    pub enclaves: Vec<EnclaveAddr>,
    pub admin: Option<String>,
    pub max_connections: Option<usize>,
    pub connect_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_lifetime_ms: Option<u64>,
    pub health_interval_ms: Option<u64>,
    pub health_timeout_ms: Option<u64>,
    pub unhealthy_after: Option<u32>,
    pub healthy_after: Option<u32>,
    pub drain_timeout_ms: Option<u64>,
    pub log_format: Option<LogFormat>,
}

impl FileConfig {
    /// Reads and parses a TOML settings file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Parses TOML text; `path` is only for messages.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
    }
}

/// Validated settings the forwarder runs with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Client listen address (as given; `main` binds it).
    pub listen: String,
    /// Enclaves, in the order given (the order breaks ties between equally loaded ones).
    pub enclaves: Vec<EnclaveAddr>,
    /// Admin endpoint address, if any.
    pub admin: Option<String>,
    /// Maximum simultaneous client connections.
    pub max_connections: usize,
    /// Bound on connecting to one enclave.
    pub connect_timeout: Duration,
    /// Idle timeout (no bytes in either direction).
    pub idle_timeout: Duration,
    /// Maximum connection lifetime.
    pub max_lifetime: Duration,
    /// Health-check period.
    pub health_interval: Duration,
    /// Bound on one health check.
    pub health_timeout: Duration,
    /// Consecutive failures before ejection.
    pub unhealthy_after: u32,
    /// Consecutive successes before return.
    pub healthy_after: u32,
    /// Drain deadline on shutdown.
    pub drain_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
}

impl Config {
    /// Settings with defaults for everything but the two required values.
    pub fn new(listen: impl Into<String>, enclaves: Vec<EnclaveAddr>) -> Self {
        Self {
            listen: listen.into(),
            enclaves,
            admin: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            unhealthy_after: DEFAULT_UNHEALTHY_AFTER,
            healthy_after: DEFAULT_HEALTHY_AFTER,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            log_format: LogFormat::Text,
        }
    }

    /// Merges command line over file over defaults, then validates.
    pub fn from_sources(cli: Cli, file: FileConfig) -> Result<Self, ConfigError> {
        let listen = cli.listen.or(file.listen).ok_or(ConfigError::MissingListen)?;
        let enclaves = if cli.enclaves.is_empty() { file.enclaves } else { cli.enclaves };
        let ms =
            |a: Option<u64>, b: Option<u64>, d: Duration| a.or(b).map(Duration::from_millis).unwrap_or(d);
        let config = Self {
            admin: cli.admin.or(file.admin),
            max_connections: cli.max_connections.or(file.max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS),
            connect_timeout: ms(cli.connect_timeout_ms, file.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: ms(cli.idle_timeout_ms, file.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT),
            max_lifetime: ms(cli.max_lifetime_ms, file.max_lifetime_ms, DEFAULT_MAX_LIFETIME),
            health_interval: ms(cli.health_interval_ms, file.health_interval_ms, DEFAULT_HEALTH_INTERVAL),
            health_timeout: ms(cli.health_timeout_ms, file.health_timeout_ms, DEFAULT_HEALTH_TIMEOUT),
            unhealthy_after: cli.unhealthy_after.or(file.unhealthy_after).unwrap_or(DEFAULT_UNHEALTHY_AFTER),
            healthy_after: cli.healthy_after.or(file.healthy_after).unwrap_or(DEFAULT_HEALTHY_AFTER),
            drain_timeout: ms(cli.drain_timeout_ms, file.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT),
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            ..Self::new(listen, enclaves)
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges: zero limits or timeouts would make the forwarder refuse everything
    /// or spin, so they are configuration errors rather than silent surprises.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason| Err(ConfigError::Invalid { name, reason });
        if self.enclaves.is_empty() {
            return Err(ConfigError::NoEnclaves);
        }
        // tokio's semaphore caps permits at usize::MAX >> 3; far beyond any fd limit.
        if self.max_connections == 0 || self.max_connections > 1 << 24 {
            return invalid("max_connections", "must be in 1..=16777216");
        }
        for (name, d) in [
            ("connect_timeout_ms", self.connect_timeout),
            ("idle_timeout_ms", self.idle_timeout),
            ("max_lifetime_ms", self.max_lifetime),
            ("health_interval_ms", self.health_interval),
            ("health_timeout_ms", self.health_timeout),
        ] {
            if d.is_zero() {
                return invalid(name, "must be greater than zero");
            }
        }
        if self.unhealthy_after == 0 {
            return invalid("unhealthy_after", "must be at least 1");
        }
        if self.healthy_after == 0 {
            return invalid("healthy_after", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[test]
    fn cli_overrides_file_overrides_defaults() {
        let file = FileConfig::parse(
            Path::new("t.toml"),
            r#"
                listen = "0.0.0.0:1"
                enclaves = ["vsock:3:8443", "unix:/run/e.sock"]
                admin = "127.0.0.1:9"
                idle_timeout_ms = 5000
                max_connections = 7
                log_format = "json"
            "#,
        )
        .unwrap();
        let cli = Cli::parse_from(["vouch-host", "--listen", "127.0.0.1:2", "--max-connections", "9"]);
        let c = Config::from_sources(cli, file).unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.enclaves.len(), 2);
        assert_eq!(c.admin.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(c.max_connections, 9);
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn cli_enclaves_replace_file_enclaves() {
        let file = FileConfig::parse(
            Path::new("t.toml"),
            r#"listen = "x:1"
               enclaves = ["vsock:3:1"]"#,
        )
        .unwrap();
        let cli = Cli::parse_from(["vouch-host", "--enclave", "tcp:127.0.0.1:5"]);
        let c = Config::from_sources(cli, file).unwrap();
        assert_eq!(c.enclaves, vec!["tcp:127.0.0.1:5".parse().unwrap()]);
    }

    #[test]
    fn missing_and_invalid_settings_are_errors() {
        let cli = Cli::parse_from(["vouch-host", "--enclave", "tcp:a:1"]);
        assert!(matches!(Config::from_sources(cli, FileConfig::default()), Err(ConfigError::MissingListen)));
        let cli = Cli::parse_from(["vouch-host", "--listen", "a:1"]);
        assert!(matches!(Config::from_sources(cli, FileConfig::default()), Err(ConfigError::NoEnclaves)));
        let cli = Cli::parse_from([
            "vouch-host",
            "--listen",
            "a:1",
            "--enclave",
            "tcp:a:1",
            "--idle-timeout-ms",
            "0",
        ]);
        assert!(matches!(
            Config::from_sources(cli, FileConfig::default()),
            Err(ConfigError::Invalid { name: "idle_timeout_ms", .. })
        ));
        assert!(Cli::try_parse_from(["vouch-host", "--enclave", "tcp:a"]).is_err());
    }

    #[test]
    fn file_errors_name_the_problem() {
        assert!(matches!(
            FileConfig::parse(Path::new("t.toml"), "listne = \"a:1\""),
            Err(ConfigError::Parse { .. })
        ));
        let err = FileConfig::parse(Path::new("t.toml"), "enclaves = [\"tcp:a\"]").unwrap_err();
        assert!(err.to_string().contains("no port"), "{err}");
    }
}
