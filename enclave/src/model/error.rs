//! The model runtime's one error type (trusted side, inside the enclave): every way loading
//! a model file or running a generation can fail, as a value — the runtime never panics on
//! bad input.

use std::path::PathBuf;

/// Why a model could not be loaded or a generation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model file does not exist.
    #[error("model file {path} not found (run scripts/fetch-model.sh to fetch the default model)")]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The model file exists but could not be read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The path that was read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic: it is not a GGUF file at all.
    #[error("not a GGUF file: first bytes are {actual_magic}, expected 47475546 (\"GGUF\")")]
    NotGguf {
        /// The first (up to) four bytes, hex.
        actual_magic: String,
    },
    /// The file is a GGUF file but ends before the data its header describes.
    #[error("GGUF file is truncated: {actual_len} bytes, {needed}")]
    Truncated {
        /// The file's length in bytes.
        actual_len: u64,
        /// What was still needed, e.g. "header ends early" or "needs 98362432 bytes".
        needed: String,
    },
    /// The file has the GGUF magic but its structure is invalid (bad version, type, count).
    #[error("malformed GGUF file: {reason}")]
    Malformed {
        /// What the parser rejected.
        reason: String,
    },
    /// `general.architecture` is not one this runtime implements.
    #[error("unsupported model architecture {actual:?}: expected {expected:?}")]
    UnsupportedArchitecture {
        /// The architecture this runtime supports.
        expected: &'static str,
        /// The architecture named in the file (empty when absent).
        actual: String,
    },
    /// The model's vocabulary lacks the ChatML markers the chat template needs (a base
    /// model such as Gemma 3 270M, or another family's template).
    #[error(
        "this model has no ChatML chat template (no <|im_start|>/<|im_end|> tokens); the enclave \
         renders only ChatML, so it cannot serve chat requests with this model"
    )]
    NoChatTemplate,
    /// A metadata key the runtime needs (mostly the tokenizer) is missing.
    #[error("GGUF metadata key {key:?} is missing")]
    MissingMetadata {
        /// The missing key.
        key: &'static str,
    },
    /// A metadata key is present but has the wrong type or an unusable value.
    #[error("GGUF metadata key {key:?} is invalid: {reason}")]
    InvalidMetadata {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer model named in the file is neither byte-level BPE (`gpt2`) nor
    /// SentencePiece (`llama`).
    #[error("unsupported tokenizer model {actual:?}: expected {expected}")]
    UnsupportedTokenizer {
        /// The tokenizer models this runtime supports.
        expected: &'static str,
        /// The tokenizer model named in the file.
        actual: String,
    },
    /// The tokenizer could not be built or failed to encode.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// `VOUCH_KERNEL` names a kernel that does not exist or that this CPU cannot run.
    #[error("cannot pick the compute kernel: {0}")]
    Kernel(String),
    /// The runtime asked for is not compiled into this binary (candle's, without
    /// `--features candle`).
    #[error(
        "this vouch-enclave was built without the {runtime} runtime: candle is the optional reference \
         runtime (build with --features candle), the native runtime is always there"
    )]
    RuntimeNotBuilt {
        /// The runtime's name (`"candle"`, `"candle-q8_0"`).
        runtime: &'static str,
    },
    /// The weights cannot be used: a tensor missing, of the wrong shape, or of a type the
    /// runtime does not compute with.
    #[error("cannot build model weights: {reason}")]
    Weights {
        /// What went wrong.
        reason: String,
    },
    /// The request is unusable (no messages, unknown role, bad sampling parameters).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Prompt plus `max_tokens` exceed what the model can attend to.
    #[error("context too long: {prompt_tokens} prompt tokens + max_tokens {max_tokens} > limit {limit}")]
    ContextTooLong {
        /// Prompt tokens after the chat template.
        prompt_tokens: usize,
        /// Requested completion budget.
        max_tokens: u32,
        /// The model's maximum sequence length.
        limit: usize,
    },
    /// A forward pass or sampling failed.
    #[error("inference failed: {reason}")]
    Inference {
        /// What went wrong.
        reason: String,
    },
    /// The caller cancelled the generation (e.g. the client went away).
    #[error("generation cancelled")]
    Cancelled,
}

impl ModelError {
    pub(crate) fn inference(e: impl std::fmt::Display) -> Self {
        ModelError::Inference { reason: e.to_string() }
    }
}
