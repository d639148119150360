//! GGUF loading (trusted side, inside the enclave): read the model file once, hash those
//! bytes (the attested model digest), parse the GGUF header from the same buffer, check
//! that it is a complete llama model with a tokenizer, and hand the bytes to the chosen
//! [`Runtime`]: the native kernels (in place) or candle (optionally converted to Q8_0).
//!
//! Parsing is fully bounded: every tensor's extent is checked against the buffer before any
//! tensor is read, so a truncated file is reported as [`ModelError::Truncated`] instead of
//! failing deep inside candle.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use candle_transformers::models::quantized_llama::ModelWeights;
use sha2::{Digest, Sha256};

use super::native::NativeModel;
use super::tokenizer::GgufTokenizer;
use super::{compute_threads, Model, ModelBytes, ModelError, Weights};

/// The only architecture the candle runtimes implement (candle's quantized llama).
const SUPPORTED_ARCHITECTURE: &str = "llama";

/// What one position of an f32 KV cache takes for this model's shape (keys and values,
/// every layer), from the `llama.*` metadata; 0 when the metadata does not say.
fn kv_bytes_per_position(content: &Content) -> usize {
    let get = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok()).map(|n| n as usize);
    let (Some(layers), Some(dim), Some(heads)) =
        (get("llama.block_count"), get("llama.embedding_length"), get("llama.attention.head_count"))
    else {
        return 0;
    };
    let kv_heads = get("llama.attention.head_count_kv").unwrap_or(heads);
    layers * (dim / heads.max(1)) * kv_heads * 2 * std::mem::size_of::<f32>()
}

/// The GGUF magic, as the first four bytes of the file.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// Alignment of tensors in the converted in-memory weight buffer, in bytes (GGUF's default).
const TENSOR_ALIGNMENT: usize = 32;

/// Which code computes with the weights.
///
/// [`Runtime::Native`] (the default) is Vouch's own forward pass ([`super::native`]): it
/// computes directly from the file's Q4_0 / Q4_1 / Q8_0 blocks with SIMD kernels, so what
/// runs is exactly what was hashed, and resident memory is the file plus the KV cache.
/// The two candle runtimes are kept as an independent reference implementation (tests
/// compare the native logits against candle's) and for weight types the native kernels
/// lack. [`Runtime::CandleQ8_0`] re-quantizes every Q4_1, Q5_0 and Q5_1 matrix to Q8_0 at
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

/// A reader over the loaded bytes that remembers whether the parser ran off the end, so a
/// short header is reported as truncation rather than as a generic parse error.
struct EofTrackingReader<'a> {
    inner: Cursor<&'a [u8]>,
    hit_eof: bool,
}

impl Read for EofTrackingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n < buf.len() {
            self.hit_eof = true;
        }
        Ok(n)
    }
}

impl Seek for EofTrackingReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
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

    let content = parse_header(&bytes)?;
    if runtime != Runtime::Native {
        // The native runtime names the families it implements itself (`arch::load`).
        check_candle_architecture(&content)?;
    }
    let tokenizer = GgufTokenizer::from_metadata(&content.metadata)?;
    check_tensor_extents(&content, file_size)?;
    let stored_format = dominant_matrix_type(&content);
    let name = model_name(&content, path);
    let candle_kv_bytes_per_position = kv_bytes_per_position(&content);

    let (weights, weights_digest) = match runtime {
        Runtime::Native => {
            let llama = NativeModel::new(&content, bytes, compute_threads())?;
            (Weights::Native(Box::new(llama)), digest)
        }
        Runtime::Candle => {
            let mut reader = Cursor::new(&bytes[..]);
            let weights =
                ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).map_err(weights_error)?;
            (Weights::Candle(Box::new(weights)), digest)
        }
        Runtime::CandleQ8_0 => {
            let (content, buffer, weights_digest) = convert_to_q8_0(content, &bytes)?;
            // The original bytes are no longer needed; free them before candle copies the
            // converted tensors, to keep the peak resident set down.
            drop(bytes);
            let mut reader = Cursor::new(buffer.as_slice());
            let weights =
                ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).map_err(weights_error)?;
            (Weights::Candle(Box::new(weights)), weights_digest)
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
        file_size,
        load_ms,
        candle_kv_bytes_per_position,
        grammars: std::sync::OnceLock::new(),
    })
}

fn weights_error(e: candle_core::Error) -> ModelError {
    ModelError::Weights { reason: e.to_string() }
}

/// Parses the GGUF header (metadata and tensor directory) from the loaded bytes.
fn parse_header(bytes: &[u8]) -> Result<Content, ModelError> {
    if bytes.len() < GGUF_MAGIC.len() || &bytes[..GGUF_MAGIC.len()] != GGUF_MAGIC {
        return Err(ModelError::NotGguf {
            actual_magic: hex::encode(&bytes[..bytes.len().min(GGUF_MAGIC.len())]),
        });
    }
    let mut reader = EofTrackingReader { inner: Cursor::new(bytes), hit_eof: false };
    Content::read(&mut reader).map_err(|e| {
        let reason = e.to_string();
        // candle checks declared sizes against the remaining bytes before allocating and
        // says so with "remaining"; a short read is the other way a truncated header shows.
        if reader.hit_eof || reason.contains("remaining") {
            ModelError::Truncated {
                actual_len: bytes.len() as u64,
                needed: format!("the header ends early ({reason})"),
            }
        } else {
            ModelError::Malformed { reason }
        }
    })
}

fn check_candle_architecture(content: &Content) -> Result<(), ModelError> {
    let actual = match content.metadata.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    if actual != SUPPORTED_ARCHITECTURE {
        return Err(ModelError::UnsupportedArchitecture { expected: SUPPORTED_ARCHITECTURE, actual });
    }
    Ok(())
}

/// Size in bytes of a tensor's data, or `None` when its element count is not a whole
/// number of blocks or the size overflows.
fn tensor_size(info: &TensorInfo) -> Option<u64> {
    let elems = info.shape.elem_count();
    let block = info.ggml_dtype.block_size();
    if block == 0 || !elems.is_multiple_of(block) {
        return None;
    }
    u64::try_from((elems / block).checked_mul(info.ggml_dtype.type_size())?).ok()
}

/// Checks that every tensor lies inside the file, before anything is read.
fn check_tensor_extents(content: &Content, file_len: u64) -> Result<(), ModelError> {
    let mut needed_len = content.tensor_data_offset;
    for (name, info) in &content.tensor_infos {
        let size = tensor_size(info).ok_or_else(|| ModelError::Malformed {
            reason: format!(
                "tensor {name:?}: {} elements of type {:?} is not a whole number of blocks",
                info.shape.elem_count(),
                info.ggml_dtype
            ),
        })?;
        let end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|start| start.checked_add(size))
            .ok_or_else(|| ModelError::Malformed {
                reason: format!("tensor {name:?}: offset {} overflows", info.offset),
            })?;
        needed_len = needed_len.max(end);
    }
    if needed_len > file_len {
        return Err(ModelError::Truncated {
            actual_len: file_len,
            needed: format!("its tensors need {needed_len} bytes"),
        });
    }
    Ok(())
}

/// The quantization type of most 2-D weight matrices, lowercase (e.g. `"q4_1"`).
fn dominant_matrix_type(content: &Content) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for info in content.tensor_infos.values() {
        if info.shape.rank() != 2 {
            continue;
        }
        let ty = format!("{:?}", info.ggml_dtype).to_lowercase();
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

/// Whether a tensor of this type is re-quantized by [`Runtime::CandleQ8_0`]: the 32-value
/// block types that candle 0.11.1 only has scalar kernels for.
fn converts_to_q8_0(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

/// Re-quantizes the slow block types to Q8_0 and lays every tensor out in a fresh buffer.
/// Returns a header pointing into that buffer (tensor data offset 0), the buffer, and the
/// weights digest described on [`Runtime`].
fn convert_to_q8_0(content: Content, bytes: &[u8]) -> Result<(Content, Vec<u8>, [u8; 32]), ModelError> {
    let Content { magic, metadata, tensor_infos, tensor_data_offset } = content;
    let mut names: Vec<&String> = tensor_infos.keys().collect();
    names.sort();

    let mut reader = Cursor::new(bytes);
    let mut buffer: Vec<u8> = Vec::new();
    let mut new_infos = std::collections::HashMap::with_capacity(tensor_infos.len());
    let mut hasher = Sha256::new();
    for name in names {
        let Some(info) = tensor_infos.get(name) else {
            continue;
        };
        let tensor = info.read(&mut reader, tensor_data_offset, &Device::Cpu).map_err(weights_error)?;
        let tensor = if converts_to_q8_0(info.ggml_dtype) {
            let dense = tensor.dequantize(&Device::Cpu).map_err(weights_error)?;
            QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(weights_error)?
        } else {
            tensor
        };
        let data = tensor.data().map_err(weights_error)?;
        let dims = tensor.shape().dims();
        let dtype = tensor.dtype();

        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        let type_name = format!("{dtype:?}");
        hasher.update((type_name.len() as u64).to_le_bytes());
        hasher.update(type_name.as_bytes());
        hasher.update((dims.len() as u32).to_le_bytes());
        for &d in dims.iter().rev() {
            hasher.update((d as u64).to_le_bytes());
        }
        hasher.update((data.len() as u64).to_le_bytes());
        hasher.update(&data);

        let offset = buffer.len().div_ceil(TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT;
        buffer.resize(offset, 0);
        buffer.extend_from_slice(&data);
        new_infos.insert(
            name.clone(),
            TensorInfo { ggml_dtype: dtype, shape: tensor.shape().clone(), offset: offset as u64 },
        );
    }
    let content = Content { magic, metadata, tensor_infos: new_infos, tensor_data_offset: 0 };
    Ok((content, buffer, hasher.finalize().into()))
}
