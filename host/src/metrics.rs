//! Counters the forwarder keeps, and their Prometheus text rendering for `GET /metrics`.
//!
//! UNTRUSTED side: metrics describe traffic volume and health only — connection counts,
//! byte counts, error kinds. They never include payload bytes, which are ciphertext anyway.
//! All counters are relaxed atomics: each is independent, and a scrape that sees one
//! counter a few bytes ahead of another is harmless.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::pool::{Enclave, Pool};

/// Why a client connection was closed without being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// `max_connections` were already open.
    ConnectionLimit,
    /// No enclave was healthy when the client arrived.
    NoHealthyEnclave,
    /// Every healthy enclave failed to accept a connection.
    EnclaveUnreachable,
}

impl Rejection {
    const ALL: [Self; 3] = [Self::ConnectionLimit, Self::NoHealthyEnclave, Self::EnclaveUnreachable];

    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionLimit => "connection_limit",
            Self::NoHealthyEnclave => "no_healthy_enclave",
            Self::EnclaveUnreachable => "enclave_unreachable",
        }
    }
}

/// Errors and abnormal closes, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `accept` on the client listener failed (e.g. EMFILE).
    Accept,
    /// Connecting to an enclave failed.
    EnclaveConnect,
    /// Connecting to an enclave took longer than the connect timeout.
    EnclaveConnectTimeout,
    /// Reading from or writing to a client failed.
    ClientIo,
    /// Reading from or writing to an enclave failed.
    EnclaveIo,
    /// A connection saw no bytes for the idle timeout.
    IdleTimeout,
    /// A connection outlived the maximum lifetime.
    LifetimeExceeded,
    /// A connection was still open at the drain deadline and was cut.
    DrainAborted,
    /// A health check failed or timed out.
    HealthCheck,
    /// An admin request was malformed, too large or too slow.
    AdminRequest,
}

impl ErrorKind {
    const ALL: [Self; 10] = [
        Self::Accept,
        Self::EnclaveConnect,
        Self::EnclaveConnectTimeout,
        Self::ClientIo,
        Self::EnclaveIo,
        Self::IdleTimeout,
        Self::LifetimeExceeded,
        Self::DrainAborted,
        Self::HealthCheck,
        Self::AdminRequest,
    ];

    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::EnclaveConnect => "enclave_connect",
            Self::EnclaveConnectTimeout => "enclave_connect_timeout",
            Self::ClientIo => "client_io",
            Self::EnclaveIo => "enclave_io",
            Self::IdleTimeout => "idle_timeout",
            Self::LifetimeExceeded => "lifetime_exceeded",
            Self::DrainAborted => "drain_aborted",
            Self::HealthCheck => "health_check",
            Self::AdminRequest => "admin_request",
        }
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client connections accepted by the listener (forwarded or not).
    pub connections_total: AtomicU64,
    /// Client connections currently being forwarded (or connecting to an enclave).
    pub connections_open: AtomicU64,
    /// Bytes read from clients and written to enclaves.
    pub bytes_client_to_enclave: AtomicU64,
    /// Bytes read from enclaves and written to clients.
    pub bytes_enclave_to_client: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// 1 while draining after a shutdown signal.
    pub draining: AtomicU64,
}

impl Metrics {
    /// Counts one rejected connection.
    pub fn reject(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts one error.
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// Renders all metrics, including per-enclave ones from `pool`, in the Prometheus text
    /// exposition format (version 0.0.4).
    pub fn render(&self, pool: &Pool) -> String {
        let mut out = String::with_capacity(4096);
        let section = |out: &mut String, name: &str, kind: &str, help: &str| {
            // Writing to a String cannot fail; the same holds for every `let _ =` below.
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        section(
            &mut out,
            "vouch_host_connections_open",
            "gauge",
            "Client connections currently being forwarded.",
        );
        let _ = writeln!(out, "vouch_host_connections_open {}", self.connections_open.load(Relaxed));
        section(
            &mut out,
            "vouch_host_connections_total",
            "counter",
            "Client connections accepted by the listener, forwarded or not.",
        );
        let _ = writeln!(out, "vouch_host_connections_total {}", self.connections_total.load(Relaxed));
        section(
            &mut out,
            "vouch_host_connections_rejected_total",
            "counter",
            "Client connections closed at once without forwarding, by reason.",
        );
        for why in Rejection::ALL {
            let _ = writeln!(
                out,
                "vouch_host_connections_rejected_total{{reason=\"{}\"}} {}",
                why.as_str(),
                self.rejected[why as usize].load(Relaxed)
            );
        }
        section(&mut out, "vouch_host_bytes_total", "counter", "Bytes forwarded, by direction.");
        let _ = writeln!(
            out,
            "vouch_host_bytes_total{{direction=\"client_to_enclave\"}} {}",
            self.bytes_client_to_enclave.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "vouch_host_bytes_total{{direction=\"enclave_to_client\"}} {}",
            self.bytes_enclave_to_client.load(Relaxed)
        );
        section(
            &mut out,
            "vouch_host_errors_total",
            "counter",
            "Errors and abnormal connection closes, by kind.",
        );
        for kind in ErrorKind::ALL {
            let _ = writeln!(
                out,
                "vouch_host_errors_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.errors[kind as usize].load(Relaxed)
            );
        }
        section(
            &mut out,
            "vouch_host_draining",
            "gauge",
            "1 while draining connections after a shutdown signal.",
        );
        let _ = writeln!(out, "vouch_host_draining {}", self.draining.load(Relaxed));
        section(&mut out, "vouch_host_enclaves_healthy", "gauge", "Number of enclaves currently healthy.");
        let _ = writeln!(out, "vouch_host_enclaves_healthy {}", pool.healthy_count());

        let enclaves = pool.enclaves();
        /// (name, type, help, value of one enclave)
        type Family = (&'static str, &'static str, &'static str, fn(&Enclave) -> u64);
        let per_enclave: [Family; 4] = [
            ("vouch_host_enclave_healthy", "gauge", "1 if the enclave is in rotation, 0 if ejected.", |e| {
                u64::from(e.is_healthy())
            }),
            (
                "vouch_host_enclave_active_connections",
                "gauge",
                "Client connections currently forwarded to the enclave.",
                |e| e.active(),
            ),
            (
                "vouch_host_enclave_connections_total",
                "counter",
                "Client connections forwarded to the enclave.",
                |e| e.connections_total(),
            ),
            (
                "vouch_host_enclave_consecutive_failures",
                "gauge",
                "Consecutive failed health checks or connects.",
                |e| u64::from(e.consecutive_failures()),
            ),
        ];
        for (name, kind, help, value) in per_enclave {
            section(&mut out, name, kind, help);
            for e in enclaves {
                let _ = writeln!(
                    out,
                    "{name}{{enclave=\"{}\"}} {}",
                    escape_label(&e.addr().to_string()),
                    value(e)
                );
            }
        }
        out
    }
}

/// Escapes a Prometheus label value (backslash, double quote, newline). Unix socket paths
/// come from the operator and may contain any of them.
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label("unix:/a\"b\\c\nd"), "unix:/a\\\"b\\\\c\\nd");
    }
}
