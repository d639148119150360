//! The forwarding path: accept client TCP connections, bound how many are open, pick an
//! enclave (least loaded among healthy, failing over to the next on connect errors),
//! copy bytes both ways until either side is done, then drain on shutdown.
//!
//! UNTRUSTED side: every byte that passes through here is TLS ciphertext between the
//! client and the enclave. The host holds no keys, never parses, logs or alters payload
//! bytes; it only counts them. A client that cannot be served is closed at once: the host
//! cannot speak TLS to it, so an immediate close (plus a log line and a metric) is the
//! clearest refusal available.
//!
//! ```text
//!  client ──TCP──► accept ─► permit? ─no─► close (rejected: connection_limit)
//!                              │yes
//!                              ▼
//!                    candidates (healthy, least loaded) ─none─► close (no_healthy_enclave)
//!                              │ connect ≤ timeout, next on failure ─all fail─► close
//!                              ▼
//!         client ◄══ pump ══► enclave    until EOF both ways | error | idle | lifetime
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::addr::EnclaveStream;
use crate::config::Config;
use crate::metrics::{ErrorKind, Metrics, Rejection};
use crate::pool::{ActiveGuard, Pool};

/// Initial per-direction copy buffer. A TLS record is at most ~16 KiB, so interactive
/// traffic (handshakes, streamed tokens) never needs more, and 1024 idle-ish connections
/// cost 32 MiB.
const COPY_BUF_MIN_BYTES: usize = 16 * 1024;
/// Largest per-direction copy buffer. A direction whose reads keep filling the buffer is
/// a bulk transfer; the buffer doubles up to this size so each read/write pair moves more
/// bytes per syscall (measured: roughly 2x throughput on loopback over 16 KiB).
const COPY_BUF_MAX_BYTES: usize = 256 * 1024;
/// First pause after a failed `accept` (e.g. EMFILE); doubles up to the maximum. Without
/// it, a persistent error would spin a core at 100% while logging as fast as it can.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between `accept` retries.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the forwarding path shares between connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) pool: Arc<Pool>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Accepts until `shutdown` completes, then stops accepting (closing the listener, so new
/// clients are refused by the kernel) and gives in-flight connections until the drain
/// deadline to finish; any still open then are cut.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow without bound.
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => log_join(joined),
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    shared.metrics.connections_total.fetch_add(1, Relaxed);
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        // Closing at once (rather than queueing) keeps the kernel backlog
                        // moving and tells the client now instead of after its timeout.
                        shared.metrics.reject(Rejection::ConnectionLimit);
                        warn!(%peer, limit = shared.config.max_connections,
                            "connection limit reached; closing client connection");
                        drop(client);
                        continue;
                    };
                    next_id = next_id.wrapping_add(1);
                    let open = OpenGuard::new(&shared.metrics);
                    let span = info_span!("conn", id = next_id, %peer);
                    tasks.spawn(
                        handle(client, permit, open, Arc::clone(&shared)).instrument(span),
                    );
                }
                Err(e) => {
                    shared.metrics.error(ErrorKind::Accept);
                    warn!(error = %e, backoff_ms = backoff.as_millis() as u64,
                        "accept failed; backing off");
                    tokio::select! {
                        () = sleep(backoff) => {}
                        () = &mut shutdown => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            },
        }
    }

    // Stop accepting first: from here the kernel refuses new clients outright.
    drop(listener);
    shared.metrics.draining.store(1, Relaxed);
    let drain = shared.config.drain_timeout;
    info!(
        in_flight = tasks.len(),
        deadline_ms = drain.as_millis() as u64,
        "vouch-host draining: stopped accepting, waiting for in-flight connections"
    );
    let drained = timeout(drain, async {
        while let Some(joined) = tasks.join_next().await {
            log_join(joined);
        }
    })
    .await;
    if drained.is_err() {
        let cut = tasks.len();
        warn!(connections = cut, "drain deadline reached; closing remaining connections");
        for _ in 0..cut {
            shared.metrics.error(ErrorKind::DrainAborted);
        }
        tasks.shutdown().await;
    } else {
        info!("all connections drained");
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            error!(error = %e, "connection task panicked");
        }
    }
}

/// Counts a connection in `connections_open` for as long as it lives.
struct OpenGuard(Arc<Metrics>);

impl OpenGuard {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.connections_open.fetch_add(1, Relaxed);
        Self(Arc::clone(metrics))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// Serves one client: choose and connect an enclave, then forward. The peer address and
/// a connection id are in the enclosing span.
async fn handle(client: TcpStream, _permit: OwnedSemaphorePermit, _open: OpenGuard, shared: Arc<Shared>) {
    let started = Instant::now();
    let Some((guard, enclave)) = connect_enclave(&shared).await else {
        return; // already logged and counted; dropping `client` closes it
    };
    let enclave_addr = guard.enclave().addr().to_string();
    // Latency of small TLS records matters more than coalescing; if this fails the
    // connection still works, just slower.
    if let Err(e) = client.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY on client socket");
    }
    debug!(enclave = %enclave_addr, "forwarding");
    let outcome = forward(client, enclave, &shared.config, &shared.metrics).await;
    drop(guard);
    if let Some(kind) = outcome.reason.error_kind() {
        shared.metrics.error(kind);
    }
    info!(
        enclave = %enclave_addr,
        bytes_client_to_enclave = outcome.up,
        bytes_enclave_to_client = outcome.down,
        duration_ms = started.elapsed().as_millis() as u64,
        reason = outcome.reason.as_str(),
        error = outcome.error.as_deref().unwrap_or(""),
        "connection closed"
    );
}

/// Tries healthy enclaves, least loaded first, until one accepts within the connect
/// timeout. Returns `None` (after logging and counting) when none is available.
async fn connect_enclave(shared: &Shared) -> Option<(ActiveGuard, EnclaveStream)> {
    let candidates = shared.pool.candidates();
    if candidates.is_empty() {
        shared.metrics.reject(Rejection::NoHealthyEnclave);
        warn!("no healthy enclave; closing client connection");
        return None;
    }
    let tried = candidates.len();
    for enclave in candidates {
        let guard = enclave.begin();
        match timeout(shared.config.connect_timeout, enclave.addr().connect()).await {
            Ok(Ok(stream)) => {
                shared.pool.record_connect_success(&enclave);
                return Some((guard, stream));
            }
            Ok(Err(e)) => {
                shared.metrics.error(ErrorKind::EnclaveConnect);
                warn!(enclave = %enclave.addr(), error = %e, "enclave connect failed; trying next");
                shared.pool.record_failure(&enclave, &e.to_string());
            }
            Err(_) => {
                shared.metrics.error(ErrorKind::EnclaveConnectTimeout);
                warn!(enclave = %enclave.addr(),
                    timeout_ms = shared.config.connect_timeout.as_millis() as u64,
                    "enclave connect timed out; trying next");
                shared.pool.record_failure(&enclave, "connect timed out");
            }
        }
    }
    shared.metrics.reject(Rejection::EnclaveUnreachable);
    warn!(tried, "no enclave accepted the connection; closing client connection");
    None
}

/// Why a forwarded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    /// Both directions reached EOF.
    Completed,
    /// Reading from or writing to the client failed.
    ClientIo,
    /// Reading from or writing to the enclave failed.
    EnclaveIo,
    /// No bytes either way for the idle timeout.
    Idle,
    /// The connection reached its maximum lifetime.
    Lifetime,
}

impl CloseReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::ClientIo => "client_io_error",
            Self::EnclaveIo => "enclave_io_error",
            Self::Idle => "idle_timeout",
            Self::Lifetime => "lifetime_exceeded",
        }
    }

    fn error_kind(self) -> Option<ErrorKind> {
        match self {
            Self::Completed => None,
            Self::ClientIo => Some(ErrorKind::ClientIo),
            Self::EnclaveIo => Some(ErrorKind::EnclaveIo),
            Self::Idle => Some(ErrorKind::IdleTimeout),
            Self::Lifetime => Some(ErrorKind::LifetimeExceeded),
        }
    }
}

struct Outcome {
    up: u64,
    down: u64,
    reason: CloseReason,
    /// The I/O error's text (never payload), for the log line.
    error: Option<String>,
}

/// Time of the last byte moved in either direction, for the idle timeout. Milliseconds
/// since `start` in an atomic, because both pumps touch it from one task's futures and a
/// `Cell` would make the task `!Send`.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Relaxed);
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            sleep_until(deadline).await;
        }
    }
}

/// An I/O failure in one pump, attributed to the side it happened on.
struct PumpError {
    reason: CloseReason,
    error: std::io::Error,
}

/// Copies bytes `from` → `to` until EOF, then half-closes `to` so the peer sees the same
/// EOF (TLS close_notify and HTTP/1.1 rely on it). Counts bytes as they are written.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    read_side: CloseReason,
    write_side: CloseReason,
    total: &AtomicU64,
    this_conn: &AtomicU64,
    activity: &Activity,
) -> Result<(), PumpError> {
    let mut buf = vec![0u8; COPY_BUF_MIN_BYTES];
    loop {
        let n = from.read(&mut buf).await.map_err(|error| PumpError { reason: read_side, error })?;
        if n == 0 {
            // The peer may already be gone; the other direction will report that.
            if let Err(e) = to.shutdown().await {
                debug!(error = %e, "half-close failed");
            }
            return Ok(());
        }
        activity.touch();
        to.write_all(&buf[..n]).await.map_err(|error| PumpError { reason: write_side, error })?;
        if n == buf.len() && buf.len() < COPY_BUF_MAX_BYTES {
            buf.resize(buf.len() * 2, 0);
        }
        let n = n as u64;
        total.fetch_add(n, Relaxed);
        this_conn.fetch_add(n, Relaxed);
        activity.touch();
    }
}

/// Forwards until both directions are done, one fails, or a timeout fires. Dropping the
/// halves on return closes both sockets.
async fn forward(client: TcpStream, enclave: EnclaveStream, config: &Config, metrics: &Metrics) -> Outcome {
    let (client_r, client_w) = client.into_split();
    let (enclave_r, enclave_w) = enclave.into_split();
    let activity = Activity::new();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let up_pump = pump(
        client_r,
        enclave_w,
        CloseReason::ClientIo,
        CloseReason::EnclaveIo,
        &metrics.bytes_client_to_enclave,
        &up,
        &activity,
    );
    let down_pump = pump(
        enclave_r,
        client_w,
        CloseReason::EnclaveIo,
        CloseReason::ClientIo,
        &metrics.bytes_enclave_to_client,
        &down,
        &activity,
    );
    let (reason, error) = tokio::select! {
        r = async { tokio::try_join!(up_pump, down_pump) } => match r {
            Ok(_) => (CloseReason::Completed, None),
            Err(PumpError { reason, error }) => (reason, Some(error.to_string())),
        },
        () = activity.idle_for(config.idle_timeout) => (CloseReason::Idle, None),
        () = sleep(config.max_lifetime) => (CloseReason::Lifetime, None),
    };
    Outcome { up: up.load(Relaxed), down: down.load(Relaxed), reason, error }
}
