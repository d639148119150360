//! The set of enclaves: health state, active-connection counts, least-loaded selection,
//! ejection after consecutive failures, and the periodic health checks that bring an
//! ejected enclave back.
//!
//! UNTRUSTED side: "healthy" here only means "accepts a connection" (TCP, unix or vsock
//! connect within a timeout). It says nothing about whether the enclave is genuine; the
//! client decides that from attestation. The host cannot look further because it holds
//! no TLS keys — by design.
//!
//! ```text
//!            health loop (one per enclave)          client connection
//!                 │ connect ok / fail                    │ candidates(): healthy,
//!                 ▼                                      ▼ fewest active first
//!   Enclave { healthy, consecutive_failures, active } ◄── begin() → ActiveGuard
//!                 ▲                                      │ connect fail → record_failure
//!                 └──────────────────────────────────────┘ (N in a row → ejected)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::addr::EnclaveAddr;
use crate::metrics::{ErrorKind, Metrics};

/// One enclave and what the host knows about it.
#[derive(Debug)]
pub struct Enclave {
    addr: EnclaveAddr,
    /// In rotation. Starts false: an enclave is used only after a check succeeded.
    healthy: AtomicBool,
    /// Set after the first health check, which decides the initial state by itself.
    checked: AtomicBool,
    consecutive_failures: AtomicU32,
    consecutive_successes: AtomicU32,
    active: AtomicU64,
    connections_total: AtomicU64,
}

impl Enclave {
    fn new(addr: EnclaveAddr) -> Self {
        Self {
            addr,
            healthy: AtomicBool::new(false),
            checked: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            consecutive_successes: AtomicU32::new(0),
            active: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
        }
    }

    /// Where the enclave listens.
    pub fn addr(&self) -> &EnclaveAddr {
        &self.addr
    }

    /// Whether the enclave is in rotation.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Client connections currently assigned to this enclave (including ones connecting).
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Client connections successfully forwarded to this enclave so far.
    pub fn connections_total(&self) -> u64 {
        self.connections_total.load(Relaxed)
    }

    /// Consecutive failed health checks or connects.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    /// Marks a connection as assigned to this enclave until the guard drops. Taken BEFORE
    /// connecting so that clients arriving together spread out instead of all seeing the
    /// same least-loaded enclave.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Relaxed);
        ActiveGuard { enclave: Arc::clone(self) }
    }
}

/// Holds one unit of an enclave's active-connection count.
#[derive(Debug)]
pub struct ActiveGuard {
    enclave: Arc<Enclave>,
}

impl ActiveGuard {
    /// The enclave this connection is assigned to.
    pub fn enclave(&self) -> &Arc<Enclave> {
        &self.enclave
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.enclave.active.fetch_sub(1, Relaxed);
    }
}

/// All enclaves plus the ejection policy.
#[derive(Debug)]
pub struct Pool {
    enclaves: Vec<Arc<Enclave>>,
    unhealthy_after: u32,
    healthy_after: u32,
    /// Rotates the starting point among equally loaded enclaves.
    rotation: AtomicUsize,
}

impl Pool {
    /// A pool over `addrs`, all initially out of rotation until checked.
    pub fn new(addrs: &[EnclaveAddr], unhealthy_after: u32, healthy_after: u32) -> Self {
        Self {
            enclaves: addrs.iter().cloned().map(Enclave::new).map(Arc::new).collect(),
            unhealthy_after: unhealthy_after.max(1),
            healthy_after: healthy_after.max(1),
            rotation: AtomicUsize::new(0),
        }
    }

    /// All enclaves in configuration order.
    pub fn enclaves(&self) -> &[Arc<Enclave>] {
        &self.enclaves
    }

    /// Number of enclaves in rotation.
    pub fn healthy_count(&self) -> usize {
        self.enclaves.iter().filter(|e| e.is_healthy()).count()
    }

    /// Healthy enclaves to try, in order: fewest active connections first; ties are broken
    /// by a rotating start so equal enclaves share the load. Empty if none is healthy.
    pub fn candidates(&self) -> Vec<Arc<Enclave>> {
        let n = self.enclaves.len();
        let start = self.rotation.fetch_add(1, Relaxed) % n.max(1);
        let mut order: Vec<(u64, usize, &Arc<Enclave>)> = self
            .enclaves
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_healthy())
            .map(|(i, e)| (e.active(), (i + n - start) % n, e))
            .collect();
        order.sort_unstable_by_key(|&(active, rank, _)| (active, rank));
        order.into_iter().map(|(_, _, e)| Arc::clone(e)).collect()
    }

    /// Records a failed connect or health check; ejects after `unhealthy_after` in a row.
    pub fn record_failure(&self, enclave: &Enclave, reason: &str) {
        enclave.consecutive_successes.store(0, Relaxed);
        let failures = enclave.consecutive_failures.fetch_add(1, Relaxed).saturating_add(1);
        let first_check = !enclave.checked.swap(true, Relaxed);
        if first_check {
            warn!(enclave = %enclave.addr, reason, "enclave unreachable at startup; not in rotation");
        } else if failures >= self.unhealthy_after && enclave.healthy.swap(false, Relaxed) {
            warn!(enclave = %enclave.addr, failures, reason, "enclave ejected after consecutive failures");
        } else {
            debug!(enclave = %enclave.addr, failures, reason, "enclave check or connect failed");
        }
    }

    /// Records a successful health check; an ejected enclave returns after
    /// `healthy_after` in a row (the very first check decides on its own).
    pub fn record_check_success(&self, enclave: &Enclave) {
        enclave.consecutive_failures.store(0, Relaxed);
        let successes = enclave.consecutive_successes.fetch_add(1, Relaxed).saturating_add(1);
        let first_check = !enclave.checked.swap(true, Relaxed);
        if (first_check || successes >= self.healthy_after) && !enclave.healthy.swap(true, Relaxed) {
            if first_check {
                info!(enclave = %enclave.addr, "enclave healthy");
            } else {
                info!(enclave = %enclave.addr, successes, "enclave healthy again; back in rotation");
            }
        }
    }

    /// Records a successful client connect: the failure streak is broken. (Only health
    /// checks bring an ejected enclave back; clients are never routed to one.)
    pub fn record_connect_success(&self, enclave: &Enclave) {
        enclave.consecutive_failures.store(0, Relaxed);
        enclave.connections_total.fetch_add(1, Relaxed);
    }

    /// One health check: a connect within `check_timeout`, then close at once. The enclave
    /// sees a connection that ends before a TLS ClientHello; it must treat that as routine.
    pub async fn check(&self, enclave: &Enclave, check_timeout: Duration, metrics: &Metrics) {
        match timeout(check_timeout, enclave.addr.connect()).await {
            Ok(Ok(stream)) => {
                drop(stream);
                self.record_check_success(enclave);
            }
            Ok(Err(e)) => {
                metrics.error(ErrorKind::HealthCheck);
                self.record_failure(enclave, &e.to_string());
            }
            Err(_) => {
                metrics.error(ErrorKind::HealthCheck);
                self.record_failure(enclave, "health check timed out");
            }
        }
    }

    /// Checks every enclave once, concurrently; returns when all checks are done (each is
    /// bounded by `check_timeout`).
    pub async fn check_all(self: &Arc<Self>, check_timeout: Duration, metrics: &Arc<Metrics>) {
        let mut set = tokio::task::JoinSet::new();
        for enclave in &self.enclaves {
            let (pool, enclave, metrics) = (Arc::clone(self), Arc::clone(enclave), Arc::clone(metrics));
            set.spawn(async move { pool.check(&enclave, check_timeout, &metrics).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// Checks `enclave` every `interval`, forever (the caller aborts the task on shutdown).
    pub async fn health_loop(
        self: Arc<Self>,
        enclave: Arc<Enclave>,
        interval: Duration,
        check_timeout: Duration,
        metrics: Arc<Metrics>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        // After a stall, check once and carry on; a burst of catch-up checks says nothing new.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the startup round covered it
        loop {
            ticker.tick().await;
            self.check(&enclave, check_timeout, &metrics).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16, unhealthy_after: u32, healthy_after: u32) -> Pool {
        let addrs: Vec<EnclaveAddr> =
            (1..=n).map(|p| format!("tcp:127.0.0.1:{p}").parse().unwrap()).collect();
        Pool::new(&addrs, unhealthy_after, healthy_after)
    }

    #[test]
    fn starts_unhealthy_and_first_check_decides() {
        let p = pool(2, 3, 2);
        assert_eq!(p.healthy_count(), 0);
        assert!(p.candidates().is_empty());
        p.record_check_success(&p.enclaves()[0]);
        p.record_failure(&p.enclaves()[1], "refused");
        assert!(p.enclaves()[0].is_healthy());
        assert!(!p.enclaves()[1].is_healthy());
        // The second enclave needs `healthy_after` successes now.
        p.record_check_success(&p.enclaves()[1]);
        assert!(!p.enclaves()[1].is_healthy());
        p.record_check_success(&p.enclaves()[1]);
        assert!(p.enclaves()[1].is_healthy());
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let p = pool(1, 3, 1);
        let e = &p.enclaves()[0];
        p.record_check_success(e);
        p.record_failure(e, "x");
        p.record_failure(e, "x");
        p.record_connect_success(e); // breaks the streak
        p.record_failure(e, "x");
        p.record_failure(e, "x");
        assert!(e.is_healthy());
        p.record_failure(e, "x");
        assert!(!e.is_healthy());
        p.record_check_success(e);
        assert!(e.is_healthy());
    }

    #[test]
    fn least_loaded_first_and_ties_rotate() {
        let p = pool(3, 1, 1);
        for e in p.enclaves() {
            p.record_check_success(e);
        }
        let _g1 = p.enclaves()[0].begin();
        let _g2 = p.enclaves()[0].begin();
        let _g3 = p.enclaves()[1].begin();
        let c = p.candidates();
        assert_eq!(c[0].addr(), p.enclaves()[2].addr());
        assert_eq!(c[1].addr(), p.enclaves()[1].addr());
        assert_eq!(c[2].addr(), p.enclaves()[0].addr());
        drop((_g1, _g2, _g3));
        let firsts: std::collections::HashSet<String> =
            (0..3).map(|_| p.candidates()[0].addr().to_string()).collect();
        assert_eq!(firsts.len(), 3, "ties should rotate");
        assert_eq!(p.enclaves()[0].active(), 0);
    }
}
