//! GGUF loading (trusted side, inside the enclave): read the model file once, hash those
//! bytes (the attested model digest), parse the GGUF header from the same buffer
//! ([`super::gguf_file`]), check that every tensor lies inside the file and that the
//! metadata carries a tokenizer, and hand the bytes to the chosen [`Runtime`]: the native
//! kernels (in place) or, in a build with `--features candle`, candle.
//!
//! Parsing is fully bounded: every tensor's extent is checked against the buffer before any
//! tensor is read, so a truncated file is reported as [`ModelError::Truncated`].

use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::gguf_file::{Content, Value};
use super::native::NativeModel;
use super::tokenizer::GgufTokenizer;
use super::{candle, compute_threads, Model, ModelBytes, ModelError, Weights};

/// Which code computes with the weights.
///
/// [`Runtime::Native`] (the default) is Vouch's own forward pass ([`super::native`]): it
/// computes directly from the file's quantized blocks with SIMD kernels, so what
/// runs is exactly what was hashed, and resident memory is the file plus the KV cache.
/// The two candle runtimes, built only with `--features candle` ([`super::candle`]), are
/// kept as an independent reference implementation (tests compare the native logits
/// against candle's) and for weight types the native kernels lack; a build without the
/// feature refuses them at load ([`ModelError::RuntimeNotBuilt`]). [`Runtime::CandleQ8_0`] re-quantizes every Q4_1, Q5_0 and Q5_1 matrix to Q8_0 at
/// load time, because candle 0.11.1 has only a scalar kernel for those; the conversion is
/// a pure function of the file bytes and [`Model::weights_digest`] hashes its result:
/// SHA-256 over, for each tensor in name order, `u64 name length, name, u64 type-name
/// length, type name (candle's spelling, e.g. "Q8_0"), u32 rank, u64 dims (GGUF order),
/// u64 data length, data` (integers little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// Vouch's native kernels over the weights as stored.
    #[default]
    Native,
    /// candle's quantized llama over the weights as stored.
    Candle,
    /// candle's quantized llama over weights converted to Q8_0 in memory.
    #[serde(rename = "candle-q8_0")]
    CandleQ8_0,
}

impl Runtime {
    /// `"native"`, `"candle"` or `"candle-q8_0"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Runtime::Native => "native",
            Runtime::Candle => "candle",
            Runtime::CandleQ8_0 => "candle-q8_0",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(Runtime::Native),
            "candle" => Ok(Runtime::Candle),
            "candle-q8_0" => Ok(Runtime::CandleQ8_0),
            other => {
                Err(format!("unknown runtime {other:?}: expected \"native\", \"candle\" or \"candle-q8_0\""))
            }
        }
    }
}

/// What a candle runtime's `load` returns (`candle.rs`; never built without the feature):
/// the model, the digest of the weights it computes with, and what one position of its f32
/// KV cache takes.
pub(crate) struct CandleLoaded {
    pub(crate) model: candle::CandleModel,
    pub(crate) weights_digest: [u8; 32],
    pub(crate) kv_bytes_per_position: usize,
}

/// Loads `path` (see [`Model::load_with`]).
pub(crate) fn load(path: &Path, runtime: Runtime) -> Result<Model, ModelError> {
    let started = Instant::now();
    let bytes = ModelBytes::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::NotFound { path: path.to_owned() }
        } else {
            ModelError::Io { path: path.to_owned(), source }
        }
    })?;
    // The digest is over exactly the bytes parsed below: no second read of the file.
    let digest: [u8; 32] = Sha256::digest(&bytes[..]).into();
    let file_size = bytes.len() as u64;

    let content = Content::parse(&bytes)?;
    let tokenizer = GgufTokenizer::from_metadata(&content.metadata)?;
    content.check_extents(file_size)?;
    let stored_format = dominant_matrix_type(&content);
    let name = model_name(&content, path);
    let architecture = match content.metadata.get("general.architecture") {
        Some(Value::String(a)) => a.clone(),
        _ => "unknown".to_owned(),
    };
    let file_template = match content.metadata.get("tokenizer.chat_template") {
        Some(Value::String(t)) => Some(t.as_str()),
        _ => None,
    };
    let chat = super::ChatTemplate::for_model(file_template, &tokenizer);
    if chat.is_none() {
        tracing::info!(
            model = %name,
            file_template = file_template.is_some(),
            "no chat template Vouch renders: served on /v1/completions only"
        );
    }
    let mut tensor_types = std::collections::BTreeMap::<String, u64>::new();
    for info in content.tensor_infos.values() {
        *tensor_types.entry(info.ty.name().to_lowercase()).or_default() += 1;
    }

    let (weights, weights_digest, candle_kv_bytes_per_position) = match runtime {
        Runtime::Native => {
            let model = NativeModel::new(&content, bytes, compute_threads())?;
            (Weights::Native(Box::new(model)), digest, 0)
        }
        Runtime::Candle | Runtime::CandleQ8_0 => {
            let loaded = candle::load(runtime, &content, bytes, digest)?;
            (Weights::Candle(Box::new(loaded.model)), loaded.weights_digest, loaded.kv_bytes_per_position)
        }
    };

    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::info!(
        model = %name,
        digest = %hex::encode(digest),
        runtime = %runtime,
        load_ms,
        "model loaded"
    );
    Ok(Model {
        weights,
        tokenizer,
        digest,
        weights_digest,
        runtime,
        stored_format,
        name,
        architecture,
        chat,
        tensor_types,
        file_size,
        load_ms,
        candle_kv_bytes_per_position,
        grammars: std::sync::OnceLock::new(),
    })
}

/// The quantization type of most 2-D weight matrices, lowercase (e.g. `"q4_1"`).
fn dominant_matrix_type(content: &Content) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for info in content.tensor_infos.values() {
        if info.dims.len() != 2 {
            continue;
        }
        let ty = info.ty.name().to_lowercase();
        match counts.iter_mut().find(|(t, _)| *t == ty) {
            Some((_, n)) => *n += 1,
            None => counts.push((ty, 1)),
        }
    }
    // Ties broken by name so the answer does not depend on HashMap order.
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.into_iter().next().map(|(t, _)| t).unwrap_or_else(|| "none".to_owned())
}

/// The model's display name: the file name up to its first dot
/// ("SmolLM2-135M-Instruct.Q4_1.gguf" → "SmolLM2-135M-Instruct"), else `general.name`.
///
/// The file name comes first because `general.name` in the shipped SmolLM2 file is a
/// training-run label ("Smollm2 135M 8k Lc100K Mix1 Ep2"). The name is only a label: the
/// model's identity is its digest.
fn model_name(content: &Content, path: &Path) -> String {
    let stem =
        path.file_name().and_then(|s| s.to_str()).and_then(|s| s.split('.').next()).filter(|s| !s.is_empty());
    if let Some(stem) = stem {
        return stem.to_owned();
    }
    match content.metadata.get("general.name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.trim().replace(' ', "-"),
        _ => "model".to_owned(),
    }
}
