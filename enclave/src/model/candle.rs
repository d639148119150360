//! The candle reference runtimes (trusted side, inside the enclave; built only with
//! `--features candle`): candle's quantized llama over the file's tensors as stored
//! ([`Runtime::Candle`]) or converted to Q8_0 ([`Runtime::CandleQ8_0`]).
//!
//! They are an independent implementation to compare the native runtime against (the
//! tests do), and a fallback for weight types the native kernels lack. The demo, the guest
//! image and the enclave's default build leave them out: candle is a tensor library the
//! attested code base does not need, and the slowest part of a first build. Without the
//! feature, `candle_absent.rs` stands in and `--runtime candle` is refused at load.

use std::collections::HashMap;
use std::io::Cursor;

use candle_core::quantized::gguf_file::{self, TensorInfo};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use sha2::{Digest, Sha256};

use super::gguf::CandleLoaded;
use super::gguf_file::{Content, Value};
use super::{ModelBytes, ModelError, Runtime};

/// The only architecture the candle runtimes implement (candle's quantized llama).
const SUPPORTED_ARCHITECTURE: &str = "llama";

/// Alignment of tensors in the converted in-memory weight buffer, in bytes (GGUF's default).
const TENSOR_ALIGNMENT: usize = super::gguf_file::DEFAULT_ALIGNMENT as usize;

// candle's quantized llama precomputes rotary embeddings for this many positions: the
// enclave's context limit must not pass it.
const _: () = assert!(super::MAX_CONTEXT_TOKENS <= candle_transformers::models::quantized_llama::MAX_SEQ_LEN);

/// candle's quantized llama, holding its own KV cache (one sequence at a time).
pub(crate) struct CandleModel(ModelWeights);

fn weights_error(e: candle_core::Error) -> ModelError {
    ModelError::Weights { reason: e.to_string() }
}

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

/// Builds `runtime` (a candle one) over `bytes`, whose header (already parsed and checked
/// by [`Content::parse`]) is `content`. `digest` is the file's.
pub(crate) fn load(
    runtime: Runtime,
    content: &Content,
    bytes: ModelBytes,
    digest: [u8; 32],
) -> Result<CandleLoaded, ModelError> {
    let actual = match content.metadata.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    if actual != SUPPORTED_ARCHITECTURE {
        return Err(ModelError::UnsupportedArchitecture { expected: SUPPORTED_ARCHITECTURE, actual });
    }
    let kv_bytes_per_position = kv_bytes_per_position(content);
    // candle reads its own view of the header; ours has checked every extent already.
    let candle_content = gguf_file::Content::read(&mut Cursor::new(&bytes[..]))
        .map_err(|e| ModelError::Malformed { reason: e.to_string() })?;
    let (weights, weights_digest) = match runtime {
        Runtime::CandleQ8_0 => {
            let (content, buffer, weights_digest) = convert_to_q8_0(candle_content, &bytes)?;
            // The original bytes are no longer needed; free them before candle copies the
            // converted tensors, to keep the peak resident set down.
            drop(bytes);
            let weights = ModelWeights::from_gguf(content, &mut Cursor::new(buffer.as_slice()), &Device::Cpu)
                .map_err(weights_error)?;
            (weights, weights_digest)
        }
        _ => {
            let weights = ModelWeights::from_gguf(candle_content, &mut Cursor::new(&bytes[..]), &Device::Cpu)
                .map_err(weights_error)?;
            (weights, digest)
        }
    };
    Ok(CandleLoaded { model: CandleModel(weights), weights_digest, kv_bytes_per_position })
}

impl CandleModel {
    /// Feeds `tokens` at `position` (0: a new sequence, which clears the cache) and
    /// returns the logits after the last of them.
    pub(crate) fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>, ModelError> {
        if position == 0 {
            self.0.clear_kv_cache();
        }
        let input =
            Tensor::new(tokens, &Device::Cpu).and_then(|t| t.unsqueeze(0)).map_err(ModelError::inference)?;
        self.0
            .forward(&input, position)
            .and_then(|l| l.squeeze(0))
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(ModelError::inference)
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
fn convert_to_q8_0(
    content: gguf_file::Content,
    bytes: &[u8],
) -> Result<(gguf_file::Content, Vec<u8>, [u8; 32]), ModelError> {
    let gguf_file::Content { magic, metadata, tensor_infos, tensor_data_offset } = content;
    let mut names: Vec<&String> = tensor_infos.keys().collect();
    names.sort();

    let mut reader = Cursor::new(bytes);
    let mut buffer: Vec<u8> = Vec::new();
    let mut new_infos = HashMap::with_capacity(tensor_infos.len());
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
    let content = gguf_file::Content { magic, metadata, tensor_infos: new_infos, tensor_data_offset: 0 };
    Ok((content, buffer, hasher.finalize().into()))
}
