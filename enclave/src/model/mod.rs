//! The enclave's model runtime (trusted side): everything between "a model file on disk"
//! and "a stream of text deltas plus the numbers a receipt commits to".
//!
//! This module runs inside the SEV-SNP guest. It loads a GGUF file, hashes the exact bytes
//! it parses (that SHA-256 is the *model digest* the attestation binds), builds the
//! tokenizer from the file's own metadata (byte-level BPE, or SentencePiece: [`spm`]),
//! renders the ChatML prompt, and runs the forward pass on the CPU — by default Vouch's own
//! kernels over the bytes as hashed, for the llama, qwen2, qwen3 and gemma3 families
//! ([`native`]), or, in a build with `--features candle`, candle's quantized llama as a reference
//! ([`Runtime`]):
//!
//! ```text
//!  model file ──read once──► bytes ──SHA-256──► Model::digest()        (attested)
//!                              │
//!                              ├─ parse GGUF (gguf_file) ─► metadata ─► tokenizer (tokenizer)
//!                              └─ same bytes ─► native runtime (in place)  | candle (copy; --features candle)
//!
//!  GenerateRequest ─► chat template (chat) ─► prompt ids ─► Sequence (generation):
//!        prompt chunks, then one token per step ─► Model::step (alone, or batched with other
//!        sequences by the Engine) ─► logits ─► sampling ─► token ─► UTF-8 bytes (utf8) ─► deltas
//! ```
//!
//! What this module does not do: networking, attestation, receipts, HTTP. The [`Engine`]
//! is the one piece meant for the async server: it owns the model on a dedicated OS thread
//! and batches requests continuously, so CPU-heavy inference never blocks the async runtime.
//!
//! Determinism: the same binary, weights, prompt ids and sampling parameters (including the
//! seed) give the same tokens, run after run: every sequence has its own KV cache, started
//! empty, and the kernels use integer dot products. The native runtime goes further: its
//! logits do not depend on the thread count, the SIMD level, the prefill schedule or what
//! else shares the batch (see [`native`]); the candle runtimes run one sequence at a time
//! with the whole prompt at once ([`PREFILL_SCHEDULE`]).

mod bytes;
#[cfg_attr(not(feature = "candle"), path = "candle_absent.rs")]
mod candle;
mod chat;
pub mod constraint;
mod controls;
mod engine;
mod error;
mod generation;
mod gguf;
pub mod gguf_file;
pub mod lie;
pub mod logprobs;
pub mod native;
mod packed;
mod replay;
mod sampler;
mod sampling;
mod spm;
mod threads;
mod tokenizer;
pub mod tools;
mod utf8;

use std::path::Path;

pub(crate) use bytes::ModelBytes;

use serde::{Deserialize, Serialize};

pub use chat::{
    render_chat_prompt, ChatTemplate, Role, CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT, GEMMA_TEMPLATE,
    LLAMA3_TEMPLATE, TEXT_TEMPLATE,
};
pub use controls::DecodingControls;
pub use engine::{
    Engine, EngineBusy, EngineConfig, EngineMetrics, GenerateEvent, DEFAULT_KV_BUDGET_MIB,
    DEFAULT_PREFILL_CHUNK,
};
pub use error::ModelError;
pub use generation::{generate_blocking, generate_cancellable};
pub use gguf::Runtime;
pub use logprobs::TokenLogprob;
pub use replay::{replay, replay_by_text, CommittedAnswer, Divergence, ReplayOutcome};
pub use sampler::{Sampler, SAMPLER_VERSION, SAMPLER_VERSION_1};
pub use threads::{compute_threads, init_compute_threads};
pub use tokenizer::GgufTokenizer;
pub use utf8::Utf8Stream;

/// The candle runtimes' engine version (see [`Model::engine_version`]).
pub const CANDLE_ENGINE_VERSION: &str = "candle-0.11.1";

/// The prefill schedule of a prompt fed whole: one forward pass. Under the candle runtimes
/// another split (e.g. chunks of 8 tokens) changes the logits bits and can change the text,
/// so the engine always feeds candle whole prompts; the native runtime gives the same bits
/// for any split (tested), and when the engine feeds a prompt in chunks while others decode,
/// the statistics say `"N chunks"` instead (informational there).
pub const PREFILL_SCHEDULE: &str = "all";

/// The longest sequence (prompt + completion, in tokens) the model code supports (candle's
/// quantized llama precomputes rotary embeddings for as many positions; `candle.rs` checks).
pub const MAX_CONTEXT_TOKENS: usize = 4096;

/// The weights and the code that computes with them.
enum Weights {
    Native(Box<native::NativeModel>),
    /// Only with `--features candle`; without it the type has no values.
    Candle(Box<candle::CandleModel>),
}

/// One sequence fed incrementally (see [`Model::stepper`]).
pub struct Stepper<'m> {
    model: &'m mut Model,
    cache: SeqCache,
    fed: usize,
}

impl Stepper<'_> {
    /// Appends `ids` to the sequence and returns the logits after the last of them.
    pub fn feed(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        if ids.is_empty() || self.fed + ids.len() > MAX_CONTEXT_TOKENS {
            return Err(ModelError::InvalidRequest(format!(
                "{} more tokens after {}: expected 1 to {} in all",
                ids.len(),
                self.fed,
                MAX_CONTEXT_TOKENS
            )));
        }
        let mut logits =
            self.model.step(&mut [Step { cache: &mut self.cache, tokens: ids, logits: true }])?;
        self.fed += ids.len();
        logits.pop().flatten().ok_or_else(|| ModelError::inference("no logits"))
    }
}

/// A loaded model: weights, tokenizer and the digest of the exact file bytes they came from.
///
/// A `Model` is used by one thread at a time (`&mut self` for generation: it owns the KV
/// cache). Share it across requests through an [`Engine`].
pub struct Model {
    weights: Weights,
    tokenizer: GgufTokenizer,
    digest: [u8; 32],
    weights_digest: [u8; 32],
    runtime: Runtime,
    stored_format: String,
    name: String,
    /// `general.architecture`.
    architecture: String,
    /// The chat template it is served with (from the file's own; `None`: completions only).
    chat: Option<ChatTemplate>,
    /// Tensor type name → how many tensors have it.
    tensor_types: std::collections::BTreeMap<String, u64>,
    file_size: u64,
    load_ms: f64,
    /// What one position of candle's f32 KV cache takes (unused by the native runtime).
    candle_kv_bytes_per_position: usize,
    /// The grammar compiler over this vocabulary, built on first use.
    grammars: std::sync::OnceLock<Result<constraint::Grammars, String>>,
}

/// One sequence's KV cache, in the form its runtime keeps it.
#[derive(Debug)]
pub(crate) enum SeqCache {
    /// The native runtime's per-sequence cache.
    Native(native::SeqKv),
    /// candle keeps the cache inside the model (one sequence at a time); this counts the
    /// positions fed so far.
    Candle {
        /// Tokens fed so far.
        positions: usize,
    },
}

impl SeqCache {
    /// Bytes the cache holds now (0 for candle, which does not say).
    pub(crate) fn allocated_bytes(&self) -> usize {
        match self {
            SeqCache::Native(kv) => kv.allocated_bytes(),
            SeqCache::Candle { .. } => 0,
        }
    }

    /// Returns the cache's memory (a finished sequence keeps no positions).
    pub(crate) fn release(&mut self) {
        if let SeqCache::Native(kv) = self {
            *kv = native::SeqKv::default();
        }
    }
}

/// What one sequence feeds into a forward step ([`Model::step`]).
pub(crate) struct Step<'a> {
    pub(crate) cache: &'a mut SeqCache,
    pub(crate) tokens: &'a [u32],
    pub(crate) logits: bool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("digest", &hex::encode(self.digest))
            .field("file_size", &self.file_size)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a GGUF model for the default runtime ([`Runtime::Native`]).
    ///
    /// The file is read into memory once; the digest is the SHA-256 of those bytes and the
    /// model is parsed from the same buffer, so the digest covers exactly what was loaded.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        Self::load_with(path, Runtime::default())
    }

    /// Loads a GGUF model for `runtime`. The file digest does not depend on the runtime.
    pub fn load_with(path: &Path, runtime: Runtime) -> Result<Model, ModelError> {
        init_compute_threads(None);
        gguf::load(path, runtime)
    }

    /// SHA-256 of the model file's bytes, exactly as loaded. This is the digest that
    /// attestation claims and receipts commit to.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// SHA-256 over the weights as they sit in memory: the file digest, except under
    /// [`Runtime::CandleQ8_0`], which converts them (see [`Runtime`] for the encoding).
    pub fn weights_digest(&self) -> [u8; 32] {
        self.weights_digest
    }

    /// The runtime computing with the weights.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The inference engine and its version, as recorded in transcripts. A re-run of a
    /// request gives the same tokens under the same engine version.
    pub fn engine_version(&self) -> &'static str {
        match self.weights {
            Weights::Native(_) => native::NATIVE_ENGINE_VERSION,
            Weights::Candle(_) => CANDLE_ENGINE_VERSION,
        }
    }

    /// What receipts commit about how this model turns requests into tokens.
    pub fn replay_identity(&self) -> ReplayIdentity {
        ReplayIdentity {
            engine: self.engine_version(),
            sampler: SAMPLER_VERSION,
            tokenizer_sha256: self.tokenizer.digest(),
            stop_token_ids: self.tokenizer.stop_ids().to_vec(),
        }
    }

    /// The kernel implementation: `"avx512"`, `"avx2"` or `"scalar"` for the native runtime
    /// (they give identical bits), `"candle"` otherwise.
    pub fn kernel(&self) -> &'static str {
        match &self.weights {
            Weights::Native(llama) => llama.kernel().name(),
            Weights::Candle(_) => "candle",
        }
    }

    /// The logits after `ids` (already templated token ids), computed from an empty KV
    /// cache in one forward pass. For auditors and tests comparing runtimes; generation
    /// goes through [`generate_blocking`] or the [`Engine`].
    pub fn prompt_logits(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        if ids.is_empty() || ids.len() > MAX_CONTEXT_TOKENS {
            return Err(ModelError::InvalidRequest(format!(
                "{} prompt tokens: expected 1 to {MAX_CONTEXT_TOKENS}",
                ids.len()
            )));
        }
        let mut cache = self.new_cache(ids.len());
        let mut logits = self.step(&mut [Step { cache: &mut cache, tokens: ids, logits: true }])?;
        logits.pop().flatten().ok_or_else(|| ModelError::inference("no logits"))
    }

    /// The logits after each of `ids` (`ids.len() × vocab`, row `i` predicting token
    /// `i + 1`), from an empty KV cache: the teacher-forced comparison with a reference
    /// runtime. Native runtime only (see [`Self::logits_after_each`]).
    pub fn teacher_forced_logits(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        if ids.is_empty() || ids.len() > MAX_CONTEXT_TOKENS {
            return Err(ModelError::InvalidRequest(format!(
                "{} tokens: expected 1 to {MAX_CONTEXT_TOKENS}",
                ids.len()
            )));
        }
        let mut cache = self.new_cache(ids.len());
        self.logits_after_each(&mut cache, ids)
    }

    /// Drives one sequence token by token, without sampler or engine: benchmarks and
    /// tools that time prefill and decode on raw token ids. Room for `positions` tokens is
    /// set aside up front.
    pub fn stepper(&mut self, positions: usize) -> Stepper<'_> {
        let cache = self.new_cache(positions.min(MAX_CONTEXT_TOKENS));
        Stepper { model: self, cache, fed: 0 }
    }

    /// Whether several sequences can share one forward step (the native runtime; candle's
    /// models hold one KV cache).
    pub fn batches(&self) -> bool {
        matches!(self.weights, Weights::Native(_))
    }

    /// Bytes of KV cache one position of one sequence takes. For candle, which allocates
    /// its own cache, the same figure for its f32 cache of this shape.
    pub fn kv_bytes_per_position(&self) -> usize {
        match &self.weights {
            Weights::Native(model) => model.kv_bytes_per_position(),
            Weights::Candle(_) => self.candle_kv_bytes_per_position,
        }
    }

    /// A new, empty KV cache for one sequence of up to `positions` tokens.
    /// Feeds `tokens` to `cache` and returns the logits after each of them (`tokens.len() ×
    /// vocab`). Native runtime only: candle's logits depend on how tokens are fed, so a
    /// teacher-forced check of its answers would prove nothing.
    pub(crate) fn logits_after_each(
        &mut self,
        cache: &mut SeqCache,
        tokens: &[u32],
    ) -> Result<Vec<f32>, ModelError> {
        match (&self.weights, cache) {
            (Weights::Native(model), SeqCache::Native(kv)) => model.forward_all_logits(kv, tokens),
            _ => Err(ModelError::inference("replay needs the native runtime (--runtime native)")),
        }
    }

    pub(crate) fn new_cache(&self, positions: usize) -> SeqCache {
        match &self.weights {
            Weights::Native(model) => SeqCache::Native(model.new_sequence(positions)),
            Weights::Candle(_) => SeqCache::Candle { positions: 0 },
        }
    }

    /// One forward step: each step's tokens go into its sequence's cache, and the logits
    /// after the last token of each step that asks are returned (in order; `None` for the
    /// others). Under the native runtime every sequence's logits are bit-identical to
    /// running it alone; candle takes one step at a time.
    pub(crate) fn step(&mut self, steps: &mut [Step<'_>]) -> Result<Vec<Option<Vec<f32>>>, ModelError> {
        match &mut self.weights {
            Weights::Native(model) => {
                let mut native_steps = Vec::with_capacity(steps.len());
                for step in steps.iter_mut() {
                    let SeqCache::Native(kv) = &mut *step.cache else {
                        return Err(ModelError::inference("a candle cache given to the native runtime"));
                    };
                    native_steps.push(native::SeqStep { kv, tokens: step.tokens, logits: step.logits });
                }
                model.forward_batch(&mut native_steps)
            }
            Weights::Candle(model) => {
                let [step] = steps else {
                    return Err(ModelError::inference("the candle runtime runs one sequence per step"));
                };
                let SeqCache::Candle { positions } = &mut *step.cache else {
                    return Err(ModelError::inference("a native cache given to the candle runtime"));
                };
                let logits = model.forward(step.tokens, *positions)?;
                *positions += step.tokens.len();
                Ok(vec![step.logits.then_some(logits)])
            }
        }
    }

    /// A short description of the quantization types stored in the file, e.g. `"q4_1"`
    /// (the dominant type of the 2-D weight matrices).
    pub fn stored_format(&self) -> &str {
        &self.stored_format
    }

    /// The model's name: the file name up to its first dot (e.g. `SmolLM2-135M-Instruct`),
    /// else `general.name` from the metadata. A label only; the digest is the identity.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Serves the model under `name` instead of the one taken from its file (a models
    /// file names each model).
    pub fn with_name(mut self, name: impl Into<String>) -> Model {
        self.name = name.into();
        self
    }

    /// `general.architecture` (`llama`, `qwen2`, `qwen3`, `gemma3`).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// What attestation claims bind about this model: name, digest, architecture, tensor
    /// types, engine, tokenizer digest and chat template.
    pub fn claim(&self) -> vouch_attestation::binding::ModelClaim {
        vouch_attestation::binding::ModelClaim {
            name: self.name.clone(),
            sha256: self.digest.to_vec(),
            architecture: self.architecture.clone(),
            tensor_types: self.tensor_types.clone(),
            engine: self.engine_version().to_owned(),
            tokenizer_sha256: self.tokenizer.digest().to_vec(),
            chat_template: self.chat_template().map(str::to_owned),
        }
    }

    /// Size of the model file in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Wall-clock time spent in [`Model::load`], in milliseconds (read, hash, parse,
    /// tokenizer, conversion).
    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// The prompt token ids the model would see for `messages` (chat template applied).
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, ModelError> {
        self.chat.ok_or(ModelError::NoChatTemplate)?.encode(&self.tokenizer, messages)
    }

    /// The prompt token ids the model sees for `prompt`: the chat template's, or the raw
    /// text's ([`TEXT_TEMPLATE`]). Never empty.
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>, ModelError> {
        let ids = match prompt {
            Prompt::Chat(messages) => self.encode_chat(messages)?,
            Prompt::Text(text) => self.tokenizer.encode_prompt(text)?,
        };
        if ids.is_empty() {
            return Err(ModelError::InvalidRequest("the prompt encodes to no tokens".to_owned()));
        }
        Ok(ids)
    }

    /// The name of the chat template this model is served with ([`ChatTemplate`], picked
    /// by the file's own template), or `None` when the file has none Vouch renders: such a
    /// model (a base model, say) answers raw-text prompts only (`/v1/completions`).
    pub fn chat_template(&self) -> Option<&'static str> {
        self.chat.map(ChatTemplate::name)
    }

    /// The template name a receipt commits for `prompt` on this model: its chat
    /// template's for a conversation ([`ModelError::NoChatTemplate`] without one),
    /// [`TEXT_TEMPLATE`] for raw text.
    pub fn template_for(&self, prompt: &Prompt) -> Result<&'static str, ModelError> {
        match prompt {
            Prompt::Chat(_) => self.chat_template().ok_or(ModelError::NoChatTemplate),
            Prompt::Text(_) => Ok(TEXT_TEMPLATE),
        }
    }

    /// The tokenizer built from the file's metadata.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The grammar compiler over this model's vocabulary (built on first use).
    pub fn grammars(&self) -> Result<&constraint::Grammars, ModelError> {
        self.grammars
            .get_or_init(|| constraint::Grammars::new(&self.tokenizer).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| ModelError::inference(e.clone()))
    }

    /// The sampler of one answer under `params`: seeded, and constrained by its output
    /// grammar when it has one.
    pub(crate) fn sampler(&self, params: &SamplingParams) -> Result<Sampler, ModelError> {
        let c = &params.controls;
        let constraint = match (&c.response_format, &c.tools) {
            (Some(format), _) => Some(self.grammars()?.matcher(format)?),
            (None, Some(tools)) => self.grammars()?.tool_matcher(tools)?,
            (None, None) => None,
        };
        Ok(Sampler::new(params)?.with_constraint(constraint))
    }
}

/// One chat message, OpenAI-style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `"system"`, `"user"` or `"assistant"` (see [`Role`]).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// How a model turns requests into tokens, as receipts commit it (see
/// `vouch_attestation::receipt::ReplaySpec`; the template is the request's own,
/// [`Prompt::template`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayIdentity {
    /// [`Model::engine_version`].
    pub engine: &'static str,
    /// [`SAMPLER_VERSION`].
    pub sampler: &'static str,
    /// [`GgufTokenizer::digest`].
    pub tokenizer_sha256: [u8; 32],
    /// The ids an answer stops at.
    pub stop_token_ids: Vec<u32>,
}

/// How to pick tokens. Greedy when `temperature == 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy (argmax). Must be finite and `>= 0`.
    pub temperature: f64,
    /// Nucleus sampling threshold in `(0, 1]`; `None` (or `1`) samples from all tokens.
    /// Ignored when greedy.
    pub top_p: Option<f64>,
    /// Seed of the sampler's RNG; identical request + seed gives identical tokens.
    pub seed: u64,
    /// Maximum number of completion tokens (the stop token is not counted).
    pub max_tokens: u32,
    /// Stop strings, penalties and logit bias (none by default).
    #[serde(default)]
    pub controls: DecodingControls,
}

impl SamplingParams {
    /// Greedy decoding with the given token budget.
    pub fn greedy(max_tokens: u32) -> Self {
        Self { temperature: 0.0, top_p: None, seed: 0, max_tokens, controls: DecodingControls::default() }
    }

    /// Checks the parameters without running anything.
    pub fn validate(&self) -> Result<(), ModelError> {
        sampling::validate(self)
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model produced its end-of-turn token.
    Stop,
    /// `max_tokens` completion tokens were produced.
    Length,
}

impl FinishReason {
    /// The OpenAI spelling: `"stop"` or `"length"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a generation did and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    /// Number of prompt tokens (after the chat template).
    pub prompt_tokens: u32,
    /// Number of completion tokens (the stop token is not counted).
    pub completion_tokens: u32,
    /// The prompt's token ids, exactly as fed to the model.
    pub prompt_token_ids: Vec<u32>,
    /// The completion's token ids (without the stop token).
    pub completion_token_ids: Vec<u32>,
    /// Their log-probabilities, when the request asked for them (else empty).
    pub logprobs: Vec<TokenLogprob>,
    /// The prefill schedule ([`PREFILL_SCHEDULE`]).
    pub prefill_chunk: String,
    /// Time the model took to load, in milliseconds (the same for every request).
    pub load_ms: f64,
    /// Time spent waiting in the engine's queue, in milliseconds (0 outside the engine).
    pub queue_ms: f64,
    /// Time of the prefill forward pass, in milliseconds.
    pub prefill_ms: f64,
    /// Time of the decode loop (sampling + one forward per further token), in milliseconds.
    pub decode_ms: f64,
    /// Prompt tokens per second during prefill.
    pub prompt_tokens_per_s: f64,
    /// Generated tokens per second during decode (decode forwards / decode time).
    pub completion_tokens_per_s: f64,
    /// Compute threads candle used.
    pub threads: usize,
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prompt {
    /// A conversation, rendered by the model's chat template ([`ChatTemplate`]).
    Chat(Vec<ChatMessage>),
    /// Raw text, continued as it stands ([`TEXT_TEMPLATE`]; `POST /v1/completions`).
    Text(String),
}

impl Prompt {
    /// Whether it is a conversation (rendered by the model's chat template).
    pub fn is_chat(&self) -> bool {
        matches!(self, Prompt::Chat(_))
    }

    /// The conversation's messages (none for raw text).
    pub fn messages(&self) -> &[ChatMessage] {
        match self {
            Prompt::Chat(m) => m,
            Prompt::Text(_) => &[],
        }
    }
}

/// A request to generate one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The conversation or text to continue.
    pub prompt: Prompt,
    /// Sampling parameters.
    pub params: SamplingParams,
}

impl GenerateRequest {
    /// A chat request.
    pub fn chat(messages: Vec<ChatMessage>, params: SamplingParams) -> Self {
        Self { prompt: Prompt::Chat(messages), params }
    }

    /// Checks the roles and parameters without tokenizing (the context-length check needs
    /// the tokenizer and happens when the request runs).
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Prompt::Chat(messages) = &self.prompt {
            chat::validate_messages(messages)?;
        }
        self.params.validate()
    }
}

/// Lowercase hex of a digest.
pub fn hex_digest(digest: &[u8; 32]) -> String {
    hex::encode(digest)
}
