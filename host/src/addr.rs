//! Enclave addresses (`tcp:HOST:PORT`, `unix:PATH`, `vsock:CID:PORT`) and the one
//! stream type the forwarder speaks to an enclave over.
//!
//! UNTRUSTED side: this module lives in `vouch-host`. An address only says where to send
//! ciphertext; nothing here authenticates the enclave — the client does that through TLS
//! and attestation, end to end, past this process.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_vsock::{VsockAddr, VsockStream};

/// Why an enclave address string could not be parsed.
///
/// Every variant carries the offending input so the message on the command line points at
/// what the operator typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The string has no `SCHEME:` prefix.
    #[error("enclave address {input:?} has no scheme; expected tcp:HOST:PORT, unix:PATH or vsock:CID:PORT")]
    MissingScheme {
        /// The address as given.
        input: String,
    },
    /// The scheme is not one of `tcp`, `unix`, `vsock`.
    #[error("enclave address {input:?} has unknown scheme {scheme:?}; expected tcp, unix or vsock")]
    UnknownScheme {
        /// The address as given.
        input: String,
        /// The scheme found before the first `:`.
        scheme: String,
    },
    /// `tcp:` or `vsock:` without a `:PORT` part.
    #[error("enclave address {input:?} has no port; expected {expected}")]
    MissingPort {
        /// The address as given.
        input: String,
        /// The expected shape for this scheme.
        expected: &'static str,
    },
    /// The port is not a number in range for the scheme.
    #[error("enclave address {input:?} has invalid port {port:?} (expected an integer in 1..={max})")]
    InvalidPort {
        /// The address as given.
        input: String,
        /// The port text found.
        port: String,
        /// The largest valid port for the scheme.
        max: u64,
    },
    /// `tcp:` with an empty host.
    #[error("enclave address {input:?} has an empty host")]
    EmptyHost {
        /// The address as given.
        input: String,
    },
    /// `unix:` with an empty path.
    #[error("enclave address {input:?} has an empty socket path")]
    EmptyPath {
        /// The address as given.
        input: String,
    },
    /// `vsock:` with a CID that is not a 32-bit unsigned integer.
    #[error("enclave address {input:?} has invalid vsock CID {cid:?} (expected an unsigned 32-bit integer)")]
    InvalidCid {
        /// The address as given.
        input: String,
        /// The CID text found.
        cid: String,
    },
}

/// Where an enclave listens. Parsed from `tcp:HOST:PORT`, `unix:PATH` or `vsock:CID:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EnclaveAddr {
    /// TCP (development, or a confidential VM on another machine). `host` may be a name,
    /// an IPv4 address or a bracketed IPv6 address; names resolve at each connect.
    Tcp {
        /// Host name or address, without IPv6 brackets.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket (development, tests).
    Unix {
        /// Filesystem path of the socket.
        path: PathBuf,
    },
    /// AF_VSOCK (a confidential VM on this machine).
    Vsock {
        /// Context id of the guest.
        cid: u32,
        /// vsock port.
        port: u32,
    },
}

impl FromStr for EnclaveAddr {
    type Err = AddrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let owned = || input.to_owned();
        let (scheme, rest) =
            input.split_once(':').ok_or_else(|| AddrError::MissingScheme { input: owned() })?;
        match scheme {
            "tcp" => {
                const SHAPE: &str = "tcp:HOST:PORT";
                // Split at the LAST colon so that bracketed IPv6 hosts keep theirs.
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or(AddrError::MissingPort { input: owned(), expected: SHAPE })?;
                let port = parse_port(input, port, u64::from(u16::MAX))?;
                let port = u16::try_from(port).map_err(|_| AddrError::InvalidPort {
                    input: owned(),
                    port: port.to_string(),
                    max: u64::from(u16::MAX),
                })?;
                let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
                if host.is_empty() {
                    return Err(AddrError::EmptyHost { input: owned() });
                }
                Ok(Self::Tcp { host: host.to_owned(), port })
            }
            "unix" => {
                if rest.is_empty() {
                    return Err(AddrError::EmptyPath { input: owned() });
                }
                Ok(Self::Unix { path: PathBuf::from(rest) })
            }
            "vsock" => {
                const SHAPE: &str = "vsock:CID:PORT";
                let (cid, port) =
                    rest.split_once(':').ok_or(AddrError::MissingPort { input: owned(), expected: SHAPE })?;
                let cid = cid
                    .parse::<u32>()
                    .map_err(|_| AddrError::InvalidCid { input: owned(), cid: cid.to_owned() })?;
                let port = parse_port(input, port, u64::from(u32::MAX))?;
                let port = u32::try_from(port).map_err(|_| AddrError::InvalidPort {
                    input: owned(),
                    port: port.to_string(),
                    max: u64::from(u32::MAX),
                })?;
                Ok(Self::Vsock { cid, port })
            }
            other => Err(AddrError::UnknownScheme { input: owned(), scheme: other.to_owned() }),
        }
    }
}

/// Parses a port in `1..=max`; port 0 is refused because nothing can be connected to it.
fn parse_port(input: &str, port: &str, max: u64) -> Result<u64, AddrError> {
    match port.parse::<u64>() {
        Ok(p) if (1..=max).contains(&p) => Ok(p),
        _ => Err(AddrError::InvalidPort { input: input.to_owned(), port: port.to_owned(), max }),
    }
}

impl fmt::Display for EnclaveAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Self::Unix { path } => write!(f, "unix:{}", path.display()),
            Self::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for EnclaveAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The read half of an enclave stream, whatever its transport.
pub type EnclaveReader = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of an enclave stream, whatever its transport.
pub type EnclaveWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A connected stream to an enclave.
///
/// An enum rather than a boxed trait object so each transport splits into owned halves
/// without a lock (`tokio::io::split` would add one per read and write).
#[derive(Debug)]
#[non_exhaustive]
pub enum EnclaveStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
    /// AF_VSOCK.
    Vsock(VsockStream),
}

impl EnclaveStream {
    /// Splits into independently owned read and write halves.
    pub fn into_split(self) -> (EnclaveReader, EnclaveWriter) {
        match self {
            Self::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Self::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Self::Vsock(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        }
    }
}

impl EnclaveAddr {
    /// Opens a stream to the enclave. No timeout here: callers bound it (the forwarder
    /// with its connect timeout, the health checker with its check timeout).
    pub async fn connect(&self) -> std::io::Result<EnclaveStream> {
        match self {
            Self::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                // Small request/response exchanges (TLS handshakes, SSE chunks) must not
                // wait for Nagle's algorithm.
                s.set_nodelay(true)?;
                Ok(EnclaveStream::Tcp(s))
            }
            Self::Unix { path } => Ok(EnclaveStream::Unix(UnixStream::connect(path).await?)),
            Self::Vsock { cid, port } => {
                Ok(EnclaveStream::Vsock(VsockStream::connect(VsockAddr::new(*cid, *port)).await?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<EnclaveAddr, AddrError> {
        s.parse()
    }

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            p("tcp:127.0.0.1:8443").unwrap(),
            EnclaveAddr::Tcp { host: "127.0.0.1".into(), port: 8443 }
        );
        assert_eq!(p("tcp:[::1]:9").unwrap(), EnclaveAddr::Tcp { host: "::1".into(), port: 9 });
        assert_eq!(
            p("tcp:enclave.local:1").unwrap(),
            EnclaveAddr::Tcp { host: "enclave.local".into(), port: 1 }
        );
        assert_eq!(p("unix:/run/vouch.sock").unwrap(), EnclaveAddr::Unix { path: "/run/vouch.sock".into() });
        assert_eq!(p("vsock:3:8443").unwrap(), EnclaveAddr::Vsock { cid: 3, port: 8443 });
    }

    #[test]
    fn display_round_trips() {
        for s in ["tcp:127.0.0.1:8443", "tcp:[::1]:9", "unix:/tmp/a b.sock", "vsock:3:4294967295"] {
            assert_eq!(p(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_addresses_with_exact_variant() {
        assert!(matches!(p("127.0.0.1"), Err(AddrError::MissingScheme { .. })));
        assert!(matches!(
            p("http:x:1"),
            Err(AddrError::UnknownScheme { scheme, .. }) if scheme == "http"
        ));
        assert!(matches!(p("tcp:localhost"), Err(AddrError::MissingPort { .. })));
        assert!(matches!(p("tcp:localhost:0"), Err(AddrError::InvalidPort { .. })));
        assert!(matches!(p("tcp:localhost:65536"), Err(AddrError::InvalidPort { max: 65535, .. })));
        assert!(matches!(p("tcp::80"), Err(AddrError::EmptyHost { .. })));
        assert!(matches!(p("unix:"), Err(AddrError::EmptyPath { .. })));
        assert!(matches!(p("vsock:x:1"), Err(AddrError::InvalidCid { .. })));
        assert!(matches!(p("vsock:3"), Err(AddrError::MissingPort { .. })));
        assert!(matches!(p("vsock:3:abc"), Err(AddrError::InvalidPort { .. })));
    }
}
