//! `vouch-host`: the untrusted forwarder between Vouch clients and Vouch enclaves.
//!
//! This crate runs on the operator's machine, OUTSIDE the SEV-SNP guest, and is part of
//! the adversary in Vouch's threat model. It is built so that nothing it does matters to
//! a client's security: clients speak TLS that terminates inside the enclave and verify
//! the enclave's attestation themselves, so the host only ever sees ciphertext.
//!
//! ```text
//!   clients ──TCP (TLS ciphertext)──► vouch-host ──tcp | unix | vsock──► vouch-enclave(s)
//!                                       │  accept, limit, pick the least-loaded
//!                                       │  healthy enclave, copy bytes both ways
//!                                       └─ admin: /healthz /readyz /metrics
//! ```
//!
//! What it does: byte-for-byte forwarding with a bound on open connections, idle and
//! lifetime timeouts, a bounded connect to the enclave with fail-over to the next healthy
//! one, periodic health checks with ejection and return, graceful drain on shutdown, and
//! an admin endpoint with Prometheus metrics.
//!
//! What it does NOT do: it holds no keys, terminates no TLS, parses no payload, and never
//! logs payload bytes. It cannot tell a genuine enclave from an impostor (clients do that
//! through attestation), and it cannot send an error message to a refused client (it does
//! not speak the client's TLS): a client that cannot be served — connection limit reached,
//! no healthy enclave, every enclave refusing — is closed immediately, with a log line
//! and a `vouch_host_connections_rejected_total{reason=...}` count.
//!
//! [`run`] is the whole service; `main.rs` only parses settings, sets up logging, binds
//! the listener and waits for SIGTERM/SIGINT.

#![forbid(unsafe_code)]

pub mod addr;
pub mod config;
pub mod error;
pub mod metrics;
pub mod pool;

mod admin;
mod proxy;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

pub use addr::{AddrError, EnclaveAddr};
pub use config::{Config, ConfigError, LogFormat};
pub use error::HostError;

/// Runs the forwarder on `listener` until `shutdown` completes, then drains.
///
/// Order matters: the admin endpoint is bound first and every enclave is checked once, so
/// that when the readiness line `vouch-host listening on ADDR` is logged, `/readyz`
/// already tells the truth and the first client is routed by real health data. After
/// `shutdown`, the listener is closed (new clients are refused), in-flight connections
/// get `config.drain_timeout` to finish, and the function returns `Ok(())`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HostError> {
    config.validate()?;
    let local = listener.local_addr().map_err(|source| HostError::LocalAddr { what: "listen", source })?;
    let metrics = Arc::new(metrics::Metrics::default());
    let pool = Arc::new(pool::Pool::new(&config.enclaves, config.unhealthy_after, config.healthy_after));

    let admin = match &config.admin {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| HostError::Bind {
            what: "admin",
            addr: addr.clone(),
            source,
        })?),
        None => None,
    };

    pool.check_all(config.health_timeout, &metrics).await;

    // Background tasks end with `run`: aborted (health loops never finish on their own).
    let mut background = tokio::task::JoinSet::new();
    for enclave in pool.enclaves() {
        background.spawn(Arc::clone(&pool).health_loop(
            Arc::clone(enclave),
            config.health_interval,
            config.health_timeout,
            Arc::clone(&metrics),
        ));
    }
    if let Some(admin) = admin {
        let addr = admin.local_addr().map_err(|source| HostError::LocalAddr { what: "admin", source })?;
        background.spawn(admin::serve(admin, Arc::clone(&pool), Arc::clone(&metrics)));
        info!("vouch-host admin listening on {addr}");
    }

    info!(
        enclaves = pool.enclaves().len(),
        healthy = pool.healthy_count(),
        max_connections = config.max_connections,
        "vouch-host listening on {local}"
    );
    let shared = Arc::new(proxy::Shared { config, pool, metrics });
    proxy::serve(listener, shared, shutdown).await;
    background.shutdown().await;
    info!("vouch-host stopped");
    Ok(())
}
