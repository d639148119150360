//! The inference engine for the async server (trusted side, inside the enclave): one OS
//! thread owns the model and decodes many requests together, continuously batched.
//!
//! ```text
//!  async handlers ──submit()──► channel ──► model thread: Scheduler
//!       ▲  EngineBusy when max_batch + queue_depth       waiting (FIFO) ──admit while a slot
//!       │  requests are already in flight                 and KV budget allow──► active
//!       │                                                 step: one forward pass over every
//!       │                                                   active sequence (1 token each when
//!       │                                                   decoding, a prompt chunk when joining)
//!       └──────── tokio mpsc Receiver<GenerateEvent> ◄──── sample, deltas, Done / Failed
//! ```
//!
//! Why this shape: a forward pass is milliseconds of pure CPU, which must not run on the
//! async runtime's workers. Batching: a step multiplies every weight matrix with the rows
//! of all active sequences, so the weights stream from memory once per step for all of
//! them. New requests join between steps; a joining prompt is fed in chunks of at most
//! `prefill_chunk` tokens per step while others decode, so running streams never stall for
//! a whole long prompt. A finished or cancelled sequence (its receiver dropped) frees its
//! slot and its KV reservation at once.
//!
//! Memory: each admitted request reserves KV cache for prompt + `max_tokens` positions
//! against `kv_budget_bytes`; one that does not fit now waits, one that can never fit fails
//! with a message saying so. The caches therefore never outgrow the budget, whatever the
//! load. Overload is an immediate, explicit [`EngineBusy`] (HTTP 429) instead of unbounded
//! memory and latency.
//!
//! Batch invariance: under the native runtime a sequence's logits, hence its tokens, are
//! bit-identical whatever shares its steps and whenever it joined (see `native`), so an
//! auditor re-running a request alone gets the answer it got under load. The candle
//! runtime cannot batch: there `max_batch` is 1 and prompts go in whole.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tokio_mpsc;

use super::generation::Sequence;
use super::{
    init_compute_threads, FinishReason, GenerateRequest, GenerationStats, Model, ReplayIdentity, Step,
    MAX_CONTEXT_TOKENS,
};

/// Default KV-cache budget, in MiB, when none is configured.
pub const DEFAULT_KV_BUDGET_MIB: usize = 1024;

/// Fewest sequences decoded together by default, whatever the budget says.
pub const MIN_DEFAULT_MAX_BATCH: usize = 8;

/// Most sequences decoded together by default.
pub const MAX_DEFAULT_MAX_BATCH: usize = 32;

/// Positions per sequence the default `max_batch` is sized for (the default request is
/// a short prompt plus 256 tokens; a budget fits this many such sequences).
const TYPICAL_POSITIONS: usize = 1024;

/// Default most prompt tokens fed per step while other sequences decode.
pub const DEFAULT_PREFILL_CHUNK: usize = 64;

/// Window over which the engine's recent tokens/s is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Sizing of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Requests that may wait for a batch slot (or KV memory) beyond the `max_batch`
    /// running ones; `submit` fails with [`EngineBusy`] beyond. `0`: no waiting at all.
    pub queue_depth: usize,
    /// Compute threads. Process-wide and fixed on first use (see [`init_compute_threads`]);
    /// if the count is already in force and differs, the engine logs a warning and keeps
    /// the one in force.
    pub threads: usize,
    /// Most sequences in one forward step; `None`: what the KV budget fits at
    /// [`TYPICAL_POSITIONS`] each, clamped to [`MIN_DEFAULT_MAX_BATCH`]..=[`MAX_DEFAULT_MAX_BATCH`].
    /// Always 1 under the candle runtime.
    pub max_batch: Option<usize>,
    /// KV-cache memory all sequences together may reserve, in bytes.
    pub kv_budget_bytes: usize,
    /// Most prompt tokens fed per step while other sequences decode (a prompt arriving at an
    /// idle engine goes in whole).
    pub prefill_chunk: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            queue_depth: 16,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            max_batch: None,
            kv_budget_bytes: DEFAULT_KV_BUDGET_MIB << 20,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
        }
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
    /// Generation failed (bad request, context too long, larger than the KV budget,
    /// internal error); the last event.
    Failed(String),
}

/// Too many requests are in flight: this one was not accepted. Retry later (HTTP 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("model engine busy: {running} requests running and {queue_depth} waiting")]
pub struct EngineBusy {
    /// The batch size (requests running at once).
    pub running: usize,
    /// The configured queue depth.
    pub queue_depth: usize,
}

/// A snapshot of the engine's state and counters (served as the enclave's `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineMetrics {
    /// Most sequences per step.
    pub max_batch: usize,
    /// Sequences in the batch now.
    pub active: usize,
    /// Requests accepted and waiting for a slot or KV memory.
    pub queued: usize,
    /// The configured queue depth.
    pub queue_depth: usize,
    /// KV-cache budget, bytes.
    pub kv_budget_bytes: usize,
    /// KV cache reserved by the active sequences (prompt + max_tokens each), bytes.
    pub kv_reserved_bytes: usize,
    /// KV cache actually allocated by the active sequences, bytes.
    pub kv_allocated_bytes: usize,
    /// KV cache per position of one sequence, bytes.
    pub kv_bytes_per_position: usize,
    /// Forward steps run.
    pub steps_total: u64,
    /// Sequence-steps run (sum of the batch occupancy over all steps).
    pub batched_sequences_total: u64,
    /// Prompt tokens fed.
    pub prompt_tokens_total: u64,
    /// Completion tokens generated.
    pub completion_tokens_total: u64,
    /// Requests finished (done, failed or cancelled).
    pub requests_finished_total: u64,
    /// Requests refused with [`EngineBusy`].
    pub requests_rejected_total: u64,
    /// Completion tokens per second over the last ten seconds.
    pub completion_tokens_per_s: f64,
}

struct Job {
    request: GenerateRequest,
    events: tokio_mpsc::Sender<GenerateEvent>,
    enqueued: Instant,
}

#[derive(Default)]
struct Counters {
    active: AtomicUsize,
    kv_reserved: AtomicUsize,
    kv_allocated: AtomicUsize,
    steps: AtomicU64,
    batched: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    finished: AtomicU64,
    rejected: AtomicU64,
    /// (when, completion tokens) of the steps within [`RATE_WINDOW`].
    recent: Mutex<VecDeque<(Instant, u32)>>,
}

struct Shared {
    jobs: Sender<Job>,
    /// Requests accepted and not yet finished (running or waiting).
    in_flight: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    model_digest: [u8; 32],
    model_name: String,
    replay: ReplayIdentity,
    /// [`Model::chat_template`].
    chat_template: Option<&'static str>,
    /// [`Model::claim`].
    claim: vouch_attestation::binding::ModelClaim,
    queue_depth: usize,
    max_batch: usize,
    kv_budget_bytes: usize,
    kv_bytes_per_position: usize,
    threads: usize,
    /// Every token's bytes, by id (how responses spell log-probabilities).
    token_bytes: Arc<super::packed::Packed>,
    /// The end-of-sequence id (where an output grammar lets an answer end).
    eos_id: u32,
    /// The grammar compiler over the vocabulary, to check a request's output format
    /// before it is queued (built on first use).
    grammars: std::sync::OnceLock<Result<super::constraint::Grammars, String>>,
}

/// Handle to the model thread. Cheap to clone; the thread exits when the last handle is
/// dropped and every request has finished.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model_name", &self.shared.model_name)
            .field("max_batch", &self.shared.max_batch)
            .field("queue_depth", &self.shared.queue_depth)
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

/// The batch size for `cfg` and `model`: 1 when the runtime cannot batch, else the
/// configured value, else what the budget fits.
fn max_batch_for(cfg: &EngineConfig, model: &Model) -> usize {
    if !model.batches() {
        return 1;
    }
    cfg.max_batch
        .unwrap_or_else(|| {
            let per_sequence = model.kv_bytes_per_position().max(1) * TYPICAL_POSITIONS;
            (cfg.kv_budget_bytes / per_sequence).clamp(MIN_DEFAULT_MAX_BATCH, MAX_DEFAULT_MAX_BATCH)
        })
        .max(1)
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
        let max_batch = max_batch_for(&cfg, &model);
        let (jobs, rx) = mpsc::channel::<Job>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            jobs,
            in_flight: Arc::clone(&in_flight),
            counters: Arc::clone(&counters),
            model_digest: model.digest(),
            model_name: model.name().to_owned(),
            replay: model.replay_identity(),
            chat_template: model.chat_template(),
            claim: model.claim(),
            queue_depth: cfg.queue_depth,
            max_batch,
            kv_budget_bytes: cfg.kv_budget_bytes,
            kv_bytes_per_position: model.kv_bytes_per_position(),
            threads,
            token_bytes: model.tokenizer().token_bytes_table(),
            eos_id: model.tokenizer().eos_id(),
            grammars: std::sync::OnceLock::new(),
        });
        let prefill_chunk = if model.batches() { cfg.prefill_chunk.max(1) } else { usize::MAX };
        let mut scheduler = Scheduler::new(
            model,
            SchedulerConfig { max_batch, kv_budget_bytes: cfg.kv_budget_bytes, prefill_chunk },
            counters,
        );
        scheduler.in_flight = Some(in_flight);
        let worker = move || scheduler.run(&rx);
        if let Err(e) = std::thread::Builder::new().name("vouch-model".to_owned()).spawn(worker) {
            // Without the thread every submit would wait forever; the closed channel makes
            // them fail instead, and the error is logged.
            tracing::error!(error = %e, "cannot spawn the model thread");
        }
        Engine { shared }
    }

    /// Queues a request without blocking. Events arrive on the returned receiver; drop it
    /// to cancel. Fails with [`EngineBusy`] when `max_batch + queue_depth` requests are
    /// already in flight.
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<tokio_mpsc::Receiver<GenerateEvent>, EngineBusy> {
        let s = &*self.shared;
        let limit = s.max_batch + s.queue_depth;
        let busy = || {
            s.counters.rejected.fetch_add(1, Ordering::Relaxed);
            EngineBusy { running: s.max_batch, queue_depth: s.queue_depth }
        };
        if s.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1))
            .is_err()
        {
            return Err(busy());
        }
        // Room for one delta per token, a final flush and Done: the model thread never
        // blocks on a slow reader.
        let capacity = (request.params.max_tokens as usize).min(MAX_CONTEXT_TOKENS) + 3;
        let (events, receiver) = tokio_mpsc::channel(capacity);
        let job = Job { request, events, enqueued: Instant::now() };
        let sent = s.jobs.send(job);
        if sent.is_err() {
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(busy());
        }
        Ok(receiver)
    }

    /// SHA-256 of the model file, as loaded.
    pub fn model_digest(&self) -> [u8; 32] {
        self.shared.model_digest
    }

    /// The model's name.
    pub fn model_name(&self) -> &str {
        &self.shared.model_name
    }

    /// What attestation claims bind about the model ([`Model::claim`]).
    pub fn claim(&self) -> &vouch_attestation::binding::ModelClaim {
        &self.shared.claim
    }

    /// The chat template the model is served with; `None`: raw-text prompts only
    /// (`/v1/completions`). See [`Model::chat_template`].
    pub fn chat_template(&self) -> Option<&'static str> {
        self.shared.chat_template
    }

    /// Checks that the output grammar of `controls` (response_format or tools) compiles
    /// (the same compiler the model thread runs), so that a bad schema is refused before
    /// anything is queued.
    pub fn check_output_format(&self, controls: &super::DecodingControls) -> Result<(), super::ModelError> {
        let s = &*self.shared;
        let grammars = s.grammars.get_or_init(|| {
            super::constraint::Grammars::from_vocabulary(s.token_bytes.len() as u32, s.eos_id, |id| {
                s.token_bytes.get(id as usize)
            })
            .map_err(|e| e.to_string())
        });
        let grammars = grammars.as_ref().map_err(|e| super::ModelError::inference(e.clone()))?;
        if let Some(format) = &controls.response_format {
            grammars.matcher(format)?;
        }
        if let Some(tools) = &controls.tools {
            grammars.tool_matcher(tools)?;
        }
        Ok(())
    }

    /// The bytes of token `id` (empty for an id outside the vocabulary).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.shared.token_bytes.get(id as usize)
    }

    /// What a replay of this engine's answers needs to know about it.
    pub fn replay_identity(&self) -> &ReplayIdentity {
        &self.shared.replay
    }

    /// Requests accepted but not yet running.
    pub fn queued(&self) -> usize {
        let s = &*self.shared;
        s.in_flight.load(Ordering::SeqCst).saturating_sub(s.counters.active.load(Ordering::SeqCst))
    }

    /// The configured queue depth.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue_depth
    }

    /// Most sequences decoded together.
    pub fn max_batch(&self) -> usize {
        self.shared.max_batch
    }

    /// The KV-cache budget in bytes.
    pub fn kv_budget_bytes(&self) -> usize {
        self.shared.kv_budget_bytes
    }

    /// KV cache one position of one sequence takes, in bytes.
    pub fn kv_bytes_per_position(&self) -> usize {
        self.shared.kv_bytes_per_position
    }

    /// The compute thread count in force.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// The engine's state and counters now.
    pub fn metrics(&self) -> EngineMetrics {
        let s = &*self.shared;
        let c = &*s.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let completion_tokens_per_s = {
            let mut recent = c.recent.lock().unwrap_or_else(PoisonError::into_inner);
            prune(&mut recent, Instant::now());
            f64::from(recent.iter().map(|(_, n)| n).sum::<u32>()) / RATE_WINDOW.as_secs_f64()
        };
        EngineMetrics {
            max_batch: s.max_batch,
            active: c.active.load(Ordering::Relaxed),
            queued: self.queued(),
            queue_depth: s.queue_depth,
            kv_budget_bytes: s.kv_budget_bytes,
            kv_reserved_bytes: c.kv_reserved.load(Ordering::Relaxed),
            kv_allocated_bytes: c.kv_allocated.load(Ordering::Relaxed),
            kv_bytes_per_position: s.kv_bytes_per_position,
            steps_total: load(&c.steps),
            batched_sequences_total: load(&c.batched),
            prompt_tokens_total: load(&c.prompt_tokens),
            completion_tokens_total: load(&c.completion_tokens),
            requests_finished_total: load(&c.finished),
            requests_rejected_total: load(&c.rejected),
            completion_tokens_per_s,
        }
    }
}

fn prune(recent: &mut VecDeque<(Instant, u32)>, now: Instant) {
    while recent.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
        recent.pop_front();
    }
}

fn send(events: &tokio_mpsc::Sender<GenerateEvent>, event: GenerateEvent) {
    // The channel is sized so it cannot be full; a closed channel means the client left.
    let _ = events.try_send(event);
}

/// The scheduler's sizing.
#[derive(Debug, Clone, Copy)]
struct SchedulerConfig {
    max_batch: usize,
    kv_budget_bytes: usize,
    prefill_chunk: usize,
}

/// A request in the batch.
struct Active {
    seq: Sequence,
    events: tokio_mpsc::Sender<GenerateEvent>,
    reserved: usize,
}

/// The model thread's state: the waiting queue, the batch, the KV reservations. Driven by
/// [`Scheduler::run`], or step by step in tests.
struct Scheduler {
    model: Model,
    cfg: SchedulerConfig,
    waiting: VecDeque<Job>,
    /// The front of the queue, tokenized, when it had to wait for KV memory.
    head: Option<(Job, Sequence)>,
    active: Vec<Active>,
    kv_reserved: usize,
    counters: Arc<Counters>,
    /// Decremented as each request finishes (shared with [`Engine::submit`]).
    in_flight: Option<Arc<AtomicUsize>>,
}

impl Scheduler {
    fn new(model: Model, cfg: SchedulerConfig, counters: Arc<Counters>) -> Scheduler {
        Scheduler {
            model,
            cfg,
            waiting: VecDeque::new(),
            head: None,
            active: Vec::new(),
            kv_reserved: 0,
            counters,
            in_flight: None,
        }
    }

    /// Serves jobs from `jobs` until every sender is gone and nothing is left to do.
    fn run(&mut self, jobs: &Receiver<Job>) {
        loop {
            if self.active.is_empty() && self.waiting.is_empty() && self.head.is_none() {
                match jobs.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => break,
                }
            }
            // Whatever else has arrived joins the queue now, between steps.
            while let Ok(job) = jobs.try_recv() {
                self.waiting.push_back(job);
            }
            // A panic anywhere in admitting or stepping (tokenizer, sampler, runtime) must
            // not take the engine down: the requests in hand fail, the engine goes on.
            let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.admit();
                // With nothing running, admit has failed what could never fit: wait for more.
                if !self.active.is_empty() {
                    self.step();
                }
            }));
            if stepped.is_err() {
                tracing::error!("the model runtime panicked");
                self.fail_all("internal error in the model runtime");
            }
        }
        tracing::debug!("model thread exiting: engine dropped");
    }

    /// Fails every running request and the prepared head of the queue.
    fn fail_all(&mut self, message: &str) {
        while !self.active.is_empty() {
            let a = self.retire(self.active.len() - 1);
            send(&a.events, GenerateEvent::Failed(message.to_owned()));
        }
        if let Some((job, _)) = self.head.take() {
            send(&job.events, GenerateEvent::Failed(message.to_owned()));
            self.finished_one();
        }
        self.publish();
    }

    fn finished_one(&self) {
        self.counters.finished.fetch_add(1, Ordering::Relaxed);
        if let Some(in_flight) = &self.in_flight {
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Moves waiting jobs into the batch, in arrival order, while a slot is free and the
    /// head of the queue fits the KV budget. A job whose client left is dropped; one that
    /// is invalid or could never fit is failed. The head's prompt is tokenized once, when
    /// it first reaches the front.
    fn admit(&mut self) {
        let per_position = self.model.kv_bytes_per_position();
        // Requests whose clients left while waiting leave the queue at once, wherever they
        // are in it, so they do not count against the queue's bound.
        let before = self.waiting.len();
        self.waiting.retain(|job| !job.events.is_closed());
        for _ in self.waiting.len()..before {
            self.finished_one();
        }
        while self.active.len() < self.cfg.max_batch {
            let (job, seq) = match self.head.take() {
                Some(prepared) => prepared,
                None => {
                    let Some(job) = self.waiting.pop_front() else { break };
                    match Sequence::new(&self.model, &job.request) {
                        Ok(seq) => (job, seq),
                        Err(e) => {
                            send(&job.events, GenerateEvent::Failed(e.to_string()));
                            self.finished_one();
                            continue;
                        }
                    }
                }
            };
            if job.events.is_closed() {
                self.finished_one();
                continue;
            }
            let reserved = seq.positions_needed() * per_position;
            if reserved > self.cfg.kv_budget_bytes {
                send(
                    &job.events,
                    GenerateEvent::Failed(format!(
                        "the request needs a KV cache of {} positions ({:.1} MiB: prompt plus max_tokens), more \
                         than this enclave's whole KV budget of {:.1} MiB ({} positions); lower max_tokens or \
                         shorten the prompt",
                        seq.positions_needed(),
                        reserved as f64 / 1_048_576.0,
                        self.cfg.kv_budget_bytes as f64 / 1_048_576.0,
                        self.cfg.kv_budget_bytes / per_position.max(1),
                    )),
                );
                self.finished_one();
                continue;
            }
            if self.kv_reserved + reserved > self.cfg.kv_budget_bytes {
                self.head = Some((job, seq));
                break; // waits until running sequences free memory
            }
            let mut seq = seq;
            seq.set_queue_ms(job.enqueued.elapsed().as_secs_f64() * 1e3);
            seq.reserve_cache(&self.model);
            self.kv_reserved += reserved;
            self.active.push(Active { seq, events: job.events, reserved });
        }
        self.publish();
    }

    fn publish(&self) {
        let c = &*self.counters;
        c.active.store(self.active.len(), Ordering::Relaxed);
        c.kv_reserved.store(self.kv_reserved, Ordering::Relaxed);
        c.kv_allocated.store(self.active.iter().map(|a| a.seq.cache_bytes()).sum(), Ordering::Relaxed);
    }

    /// Removes active sequence `i`, returning its KV reservation.
    fn retire(&mut self, i: usize) -> Active {
        let a = self.active.swap_remove(i);
        self.kv_reserved -= a.reserved;
        self.finished_one();
        a
    }

    /// One forward step over the batch, then sampling and events for each sequence.
    fn step(&mut self) {
        // Cancelled (receiver dropped) and already finished (max_tokens 0) sequences leave.
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].events.is_closed() {
                tracing::debug!("generation cancelled by the client");
                self.retire(i);
            } else {
                i += 1;
            }
        }
        self.report_finished();
        if self.active.is_empty() {
            self.publish();
            return;
        }

        // Prompt tokens go in whole when nothing is decoding, else at most prefill_chunk
        // per step, shared out in arrival order.
        let decoding = self.active.iter().any(|a| a.seq.prefill_remaining() == 0);
        let mut prefill_budget = if decoding { self.cfg.prefill_chunk } else { usize::MAX };
        let mut fed = Vec::with_capacity(self.active.len());
        let mut members = Vec::with_capacity(self.active.len());
        let mut steps = Vec::with_capacity(self.active.len());
        let mut prompt_fed = 0;
        for (i, a) in self.active.iter_mut().enumerate() {
            let remaining = a.seq.prefill_remaining();
            if remaining > 0 && prefill_budget == 0 {
                continue; // its prompt goes on in a later step
            }
            let (cache, tokens, logits) = a.seq.input(prefill_budget);
            if remaining > 0 {
                prefill_budget = prefill_budget.saturating_sub(tokens.len());
                prompt_fed += tokens.len();
            }
            fed.push(tokens.len());
            members.push(i);
            steps.push(Step { cache, tokens, logits });
        }
        let model = &mut self.model;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| model.step(&mut steps)));
        drop(steps);
        self.counters.steps.fetch_add(1, Ordering::Relaxed);
        self.counters.batched.fetch_add(members.len() as u64, Ordering::Relaxed);
        self.counters.prompt_tokens.fetch_add(prompt_fed as u64, Ordering::Relaxed);

        let logits = match outcome {
            Ok(Ok(logits)) => logits,
            failure => {
                let message = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => {
                        tracing::error!("the model runtime panicked");
                        "internal error in the model runtime".to_owned()
                    }
                };
                // The step's sequences cannot go on (their caches may hold part of it).
                for &i in members.iter().rev() {
                    let a = self.retire(i);
                    send(&a.events, GenerateEvent::Failed(message.clone()));
                }
                self.publish();
                return;
            }
        };

        let mut generated = 0u32;
        let mut failed = Vec::new();
        for ((&i, &n), logits) in members.iter().zip(&fed).zip(logits) {
            let a = &mut self.active[i];
            let before = a.seq.generated();
            let events = &a.events;
            let advanced = a.seq.advance(&self.model, n, logits, &mut |delta| {
                send(events, GenerateEvent::Delta(delta.to_owned()))
            });
            generated += (a.seq.generated() - before) as u32;
            if let Err(e) = advanced {
                failed.push((i, e.to_string()));
            }
        }
        failed.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (i, message) in failed {
            let a = self.retire(i);
            send(&a.events, GenerateEvent::Failed(message));
        }
        self.counters.completion_tokens.fetch_add(u64::from(generated), Ordering::Relaxed);
        {
            let now = Instant::now();
            let mut recent = self.counters.recent.lock().unwrap_or_else(PoisonError::into_inner);
            prune(&mut recent, now);
            recent.push_back((now, generated));
        }
        // Finished sequences report and leave now, freeing their slots for the next admit.
        self.report_finished();
        self.publish();
    }

    /// Sends Done for every finished sequence and retires it.
    fn report_finished(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if let Some(finish_reason) = self.active[i].seq.finished() {
                let a = self.retire(i);
                send(&a.events, GenerateEvent::Done { finish_reason, stats: a.seq.into_stats() });
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::model::{generate_blocking, ChatMessage, DecodingControls, SamplingParams};

    /// The real default model (fetched by scripts/fetch-model.sh; the tests fail without it).
    fn model() -> Model {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        Model::load(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-model.sh)", path.display()))
    }

    const QUESTIONS: [&str; 6] = [
        "What is the capital of France?",
        "Name three colours.",
        "Write a haiku about the sea.",
        "What is 12 times 7?",
        "Say hello in Spanish.",
        "Why is the sky blue? Answer in one long sentence with many details about light and air.",
    ];

    fn job(request: GenerateRequest) -> (Job, tokio_mpsc::Receiver<GenerateEvent>) {
        let (events, rx) = tokio_mpsc::channel(request.params.max_tokens as usize + 3);
        (Job { request, events, enqueued: Instant::now() }, rx)
    }

    /// What a receiver has so far: text, and the outcome once the last event came.
    #[derive(Default)]
    struct Answer {
        text: String,
        outcome: Option<Result<(FinishReason, Vec<u32>), String>>,
    }

    fn drain(rx: &mut tokio_mpsc::Receiver<GenerateEvent>, answer: &mut Answer) {
        while let Ok(event) = rx.try_recv() {
            match event {
                GenerateEvent::Delta(d) => answer.text.push_str(&d),
                GenerateEvent::Done { finish_reason, stats } => {
                    answer.outcome = Some(Ok((finish_reason, stats.completion_token_ids)))
                }
                GenerateEvent::Failed(e) => answer.outcome = Some(Err(e)),
            }
        }
    }

    fn random_request(rng: &mut StdRng) -> GenerateRequest {
        let question = QUESTIONS[rng.random_range(0..QUESTIONS.len())];
        let max_tokens = rng.random_range(0..=20);
        let mut params = match rng.random_range(0..3) {
            0 => SamplingParams::greedy(max_tokens),
            1 => {
                SamplingParams { temperature: 0.9, seed: rng.random(), ..SamplingParams::greedy(max_tokens) }
            }
            _ => SamplingParams {
                temperature: 1.3,
                top_p: Some(0.8),
                seed: rng.random(),
                ..SamplingParams::greedy(max_tokens)
            },
        };
        // Half of them with decoding controls: a stop string, penalties, a bias.
        if rng.random_bool(0.5) {
            params.controls = DecodingControls {
                stop: [" the", ".", "\n", "a"][..rng.random_range(0..=2)]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                presence_penalty: [0.0, 0.7][rng.random_range(0..2)],
                frequency_penalty: [0.0, -0.5, 1.5][rng.random_range(0..3)],
                logit_bias: if rng.random_bool(0.5) {
                    vec![(rng.random_range(0..1000), 8.0)]
                } else {
                    Vec::new()
                },
                // Choice 0 or 1 of two, log-probabilities, a JSON output grammar.
                n: 2,
                choice_index: rng.random_range(0..2),
                logprobs: rng.random_bool(0.3).then_some(2),
                response_format: rng
                    .random_bool(0.25)
                    .then(super::super::constraint::OutputFormat::json_object),
                tools: None,
            };
        }
        GenerateRequest::chat(vec![ChatMessage::new("user", question)], params)
    }

    /// The property: random mixes of prompts, sampling settings (greedy and seeded
    /// temperature > 0; stop strings, penalties, bias, choice index, logprobs, a JSON
    /// grammar), arrival steps, batch sizes,
    /// prefill chunks and KV budgets (tight enough that requests wait for memory); every answer equals its solo run, token for
    /// token, and the reservations never exceed the budget. The seed is printed; set
    /// VOUCH_BATCH_SEED to replay a failure.
    #[test]
    fn answers_in_random_batches_equal_their_solo_answers() {
        let seed = std::env::var("VOUCH_BATCH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_201);
        println!("VOUCH_BATCH_SEED={seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut model = model();
        let per_position = model.kv_bytes_per_position();
        let mut waited_for_memory = 0;
        for case in 0..10 {
            let requests: Vec<(GenerateRequest, usize)> = (0..rng.random_range(2..=6))
                .map(|_| (random_request(&mut rng), rng.random_range(0..12)))
                .collect();
            let solo: Vec<(String, FinishReason, Vec<u32>)> = requests
                .iter()
                .map(|(r, _)| {
                    let mut text = String::new();
                    let (finish, stats) = generate_blocking(&mut model, r, |d| text.push_str(d)).unwrap();
                    (text, finish, stats.completion_token_ids)
                })
                .collect();
            let most = requests
                .iter()
                .map(|(r, _)| Sequence::new(&model, r).unwrap().positions_needed())
                .max()
                .unwrap();
            let cfg = SchedulerConfig {
                max_batch: rng.random_range(1..=5),
                kv_budget_bytes: most * per_position * rng.random_range(1..=3),
                prefill_chunk: [1, 3, 16, 64][rng.random_range(0..4)],
            };
            let mut s = Scheduler::new(model, cfg, Arc::new(Counters::default()));
            let mut receivers = Vec::new();
            let mut answers: Vec<Answer> = requests.iter().map(|_| Answer::default()).collect();
            // Arrival order is receiver order; this maps it back to request index.
            let mut arrived: Vec<usize> = (0..requests.len()).collect();
            arrived.sort_by_key(|&i| (requests[i].1, i));
            let mut step = 0;
            while answers.iter().any(|a| a.outcome.is_none()) {
                for (r, arrives) in &requests {
                    if *arrives == step {
                        let (job, rx) = job(r.clone());
                        s.waiting.push_back(job);
                        receivers.push((receivers.len(), rx));
                    }
                }
                s.admit();
                assert!(s.kv_reserved <= cfg.kv_budget_bytes, "case {case}: reservations exceed the budget");
                if s.head.is_some() {
                    waited_for_memory += 1;
                }
                s.step();
                for (k, rx) in receivers.iter_mut() {
                    drain(rx, &mut answers[arrived[*k]]);
                }
                step += 1;
                assert!(step < 10_000, "case {case}: no progress");
            }
            for (i, (answer, (text, finish, ids))) in answers.iter().zip(&solo).enumerate() {
                let (got_finish, got_ids) = answer.outcome.clone().unwrap().unwrap();
                assert_eq!(
                    (&answer.text, got_finish, &got_ids),
                    (text, *finish, ids),
                    "case {case}, request {i} ({:?}) under {cfg:?}",
                    requests[i]
                );
            }
            assert_eq!(s.kv_reserved, 0);
            model = s.model;
        }
        assert!(waited_for_memory > 0, "no case made a request wait for KV memory");
    }

    #[test]
    fn a_request_larger_than_the_budget_fails_and_cancelled_ones_free_their_slot() {
        let model = model();
        let per_position = model.kv_bytes_per_position();
        let cfg = SchedulerConfig { max_batch: 1, kv_budget_bytes: 100 * per_position, prefill_chunk: 64 };
        let mut s = Scheduler::new(model, cfg, Arc::new(Counters::default()));
        let ask = |max_tokens| {
            GenerateRequest::chat(
                vec![ChatMessage::new("user", QUESTIONS[0])],
                SamplingParams::greedy(max_tokens),
            )
        };
        let (big, mut big_rx) = job(ask(200));
        s.waiting.push_back(big);
        s.admit();
        let Ok(GenerateEvent::Failed(message)) = big_rx.try_recv() else { panic!("expected a failure") };
        assert!(message.contains("more than this enclave's whole KV budget of"), "{message}");
        assert!(message.contains("(100 positions)"), "{message}");

        // One runs; the second waits for the slot; cancelling the first lets it in.
        let (first, first_rx) = job(ask(10));
        let (second, mut second_rx) = job(ask(3));
        s.waiting.extend([first, second]);
        s.admit();
        s.step();
        assert_eq!((s.active.len(), s.waiting.len()), (1, 1));
        drop(first_rx);
        s.step();
        assert!(s.active.is_empty(), "a cancelled sequence leaves at the next step");
        s.admit();
        assert_eq!(s.active.len(), 1);
        while s.active.len() == 1 {
            s.step();
        }
        let mut answer = Answer::default();
        drain(&mut second_rx, &mut answer);
        assert!(matches!(answer.outcome, Some(Ok((FinishReason::Length, ref ids))) if ids.len() == 3));
        assert_eq!(s.kv_reserved, 0);

        // A request whose client left while it waited behind others leaves the queue at
        // the next admit, not when it reaches the front.
        let finished = s.counters.finished.load(Ordering::Relaxed);
        let ((a, _a_rx), (b, b_rx), (c, _c_rx)) = (job(ask(5)), job(ask(5)), job(ask(5)));
        s.waiting.extend([a, b, c]);
        s.admit();
        assert_eq!((s.active.len(), s.waiting.len()), (1, 2));
        drop(b_rx);
        s.admit();
        assert_eq!(s.waiting.len(), 1);
        assert_eq!(s.counters.finished.load(Ordering::Relaxed), finished + 1);
    }
}
