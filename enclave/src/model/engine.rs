//! The inference engine for the async server (trusted side, inside the enclave): one OS
//! thread owns the model and runs requests one at a time, fed by a bounded queue.
//!
//! ```text
//!  async handlers ──submit()──► [ bounded queue, depth N ] ──► model thread ──► events
//!       ▲   EngineBusy when full (non-blocking)                 (owns Model,     │
//!       └──────────────── tokio mpsc Receiver<GenerateEvent> ◄── KV cache) ◄────┘
//! ```
//!
//! Why this shape: a forward pass is milliseconds of pure CPU, which must not run on the
//! async runtime's workers; the model has one KV cache, so requests are serialised anyway;
//! and a bounded queue turns overload into an immediate, explicit [`EngineBusy`] (HTTP 503)
//! instead of unbounded memory and latency. Dropping the event receiver cancels the request:
//! the thread checks between tokens and moves on.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc as tokio_mpsc;

use super::{
    generate_cancellable, init_compute_threads, FinishReason, GenerateRequest, GenerationStats, Model,
    ModelError, MAX_CONTEXT_TOKENS,
};

/// Sizing of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Requests that may wait while one runs; `submit` fails with [`EngineBusy`] beyond.
    /// `0` means no waiting at all: a request is accepted only while the thread is idle.
    pub queue_depth: usize,
    /// candle compute threads. Process-wide and fixed on first use (see
    /// [`init_compute_threads`]); if the count is already in force and differs, the engine
    /// logs a warning and keeps the one in force.
    pub threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { queue_depth: 16, threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) }
    }
}

/// Something the model thread reports about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerateEvent {
    /// New text: whole UTF-8 characters, never empty.
    Delta(String),
    /// Generation finished; always the last event of a successful request.
    Done {
        /// Why it stopped.
        finish_reason: FinishReason,
        /// Counts, prompt ids, timings.
        stats: GenerationStats,
    },
    /// Generation failed (bad request, context too long, internal error); the last event.
    Failed(String),
}

/// The queue is full: the request was not accepted. Retry later (HTTP 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("model engine busy: {queue_depth} requests already waiting")]
pub struct EngineBusy {
    /// The configured queue depth.
    pub queue_depth: usize,
}

struct Job {
    request: GenerateRequest,
    events: tokio_mpsc::Sender<GenerateEvent>,
    enqueued: Instant,
}

struct Shared {
    jobs: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    model_digest: [u8; 32],
    model_name: String,
    queue_depth: usize,
    threads: usize,
}

/// Handle to the model thread. Cheap to clone; the thread exits when the last handle is
/// dropped and the queue has drained.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model_name", &self.shared.model_name)
            .field("queue_depth", &self.shared.queue_depth)
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the model thread. The model moves into it.
    pub fn start(model: Model, cfg: EngineConfig) -> Engine {
        let threads = init_compute_threads(Some(cfg.threads));
        if threads != cfg.threads {
            tracing::warn!(
                requested = cfg.threads,
                in_force = threads,
                "compute thread count was already fixed for this process; keeping it"
            );
        }
        let (jobs, rx) = mpsc::sync_channel::<Job>(cfg.queue_depth);
        let queued = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            jobs,
            queued: Arc::clone(&queued),
            model_digest: model.digest(),
            model_name: model.name().to_owned(),
            queue_depth: cfg.queue_depth,
            threads,
        });
        let worker = move || run_model_thread(model, rx, queued);
        if let Err(e) = std::thread::Builder::new().name("vouch-model".to_owned()).spawn(worker) {
            // Without the thread every submit would wait forever; the closed queue makes
            // them fail with EngineBusy instead, and the error is logged.
            tracing::error!(error = %e, "cannot spawn the model thread");
        }
        Engine { shared }
    }

    /// Queues a request without blocking. Events arrive on the returned receiver; drop it
    /// to cancel. Fails with [`EngineBusy`] when `queue_depth` requests are already waiting.
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<tokio_mpsc::Receiver<GenerateEvent>, EngineBusy> {
        // Room for one delta per token, a final flush and Done: the model thread never
        // blocks on a slow reader.
        let capacity = (request.params.max_tokens as usize).min(MAX_CONTEXT_TOKENS) + 3;
        let (events, receiver) = tokio_mpsc::channel(capacity);
        let job = Job { request, events, enqueued: Instant::now() };
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        match self.shared.jobs.try_send(job) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                Err(EngineBusy { queue_depth: self.shared.queue_depth })
            }
        }
    }

    /// SHA-256 of the model file, as loaded.
    pub fn model_digest(&self) -> [u8; 32] {
        self.shared.model_digest
    }

    /// The model's name.
    pub fn model_name(&self) -> &str {
        &self.shared.model_name
    }

    /// Requests accepted but not yet started.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// The configured queue depth.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue_depth
    }

    /// The compute thread count in force.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }
}

fn send(events: &tokio_mpsc::Sender<GenerateEvent>, event: GenerateEvent) {
    // The channel is sized so it cannot be full; a closed channel means the client left.
    let _ = events.try_send(event);
}

fn run_model_thread(mut model: Model, jobs: mpsc::Receiver<Job>, queued: Arc<AtomicUsize>) {
    while let Ok(job) = jobs.recv() {
        queued.fetch_sub(1, Ordering::SeqCst);
        if job.events.is_closed() {
            continue; // the client left while waiting
        }
        let queue_ms = job.enqueued.elapsed().as_secs_f64() * 1e3;
        let events = &job.events;
        // A panic inside candle must not take the engine down: report it and go on (the
        // next request starts by clearing the KV cache).
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            generate_cancellable(
                &mut model,
                &job.request,
                |delta| send(events, GenerateEvent::Delta(delta.to_owned())),
                || events.is_closed(),
            )
        }));
        match outcome {
            Ok(Ok((finish_reason, mut stats))) => {
                stats.queue_ms = queue_ms;
                send(events, GenerateEvent::Done { finish_reason, stats });
            }
            Ok(Err(ModelError::Cancelled)) => {
                tracing::debug!("generation cancelled by the client");
            }
            Ok(Err(e)) => send(events, GenerateEvent::Failed(e.to_string())),
            Err(_) => {
                tracing::error!("the model runtime panicked");
                send(events, GenerateEvent::Failed("internal error in the model runtime".to_owned()));
            }
        }
    }
    tracing::debug!("model thread exiting: engine dropped");
}
