//! The architecture seam of the native runtime (trusted side, inside the enclave): what a
//! model family provides, and the one table that maps `general.architecture` to it.
//!
//! A family is one file implementing [`Architecture`] plus one line in [`load`] (the
//! llama-shaped families share one file and differ by a [`llama::Flavor`]). The
//! runtime ([`super::NativeModel::forward_batch`]) owns everything that is the same for all
//! families: batching, per-sequence KV caches, embedding lookup, the final norm and the
//! output product. A family owns its metadata, its tensors and its layer block, written
//! with the batch's primitives ([`super::Batch`]: matrix products over all rows, RoPE and
//! attention per sequence), so batch invariance holds for every family by construction.

use crate::model::gguf_file::Content;

use super::kernels::{dequantize_row, QK};
use super::llama::{self, Llama};
use super::{matrix, vector, Batch, Matrix, ModelError};

/// Sizes every family shares, read from its metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shape {
    pub(crate) dim: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    /// `heads × head_dim`: width of a row of queries and of attention output (the model
    /// dimension in llama; wider in Gemma 3).
    pub(crate) q_dim: usize,
    /// `kv_heads × head_dim`: values per position per layer in the KV cache, for keys and
    /// again for values.
    pub(crate) kv_dim: usize,
    pub(crate) vocab: usize,
    pub(crate) eps: f32,
}

/// How one layer's attention looks back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AttnSpec {
    /// Multiplies every query·key score (`1/√head_dim` in most families).
    pub(crate) scale: f32,
    /// Sliding window: a query at position `p` sees only the keys at `p − window + 1..=p`
    /// (llama.cpp's standard SWA); `None` sees every earlier position.
    pub(crate) window: Option<usize>,
}

impl AttnSpec {
    /// Every earlier position, scores scaled by `1/√head_dim`.
    pub(crate) fn causal(head_dim: usize) -> AttnSpec {
        AttnSpec { scale: 1.0 / (head_dim as f32).sqrt(), window: None }
    }
}

/// How RoPE pairs a head's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeStyle {
    /// Values `2i` and `2i + 1` (GGUF llama, whose converter permutes Q and K for it).
    Interleaved,
    /// Values `i` and `i + head_dim/2` (GPT-NeoX; Qwen and Gemma).
    Neox,
}

/// One model family's forward pass.
pub(crate) trait Architecture: Send + Sync {
    /// The `general.architecture` value it implements.
    fn family(&self) -> &'static str;

    /// Its sizes.
    fn shape(&self) -> &Shape;

    /// The token embedding matrix.
    fn embedding(&self) -> &Matrix;

    /// Writes `token`'s input row into `out` (`dim` values). By default the embedding row
    /// as stored; families that scale it override this.
    fn embed(&self, bytes: &[u8], token: u32, out: &mut [f32]) {
        let e = self.embedding();
        dequantize_row(e.ty, e.row(bytes, token as usize), out);
    }

    /// Layer `layer` over every row of the batch: reads and updates `x` (`rows × dim`).
    fn layer(&self, layer: usize, batch: &mut Batch<'_, '_>, x: &mut [f32]) -> Result<(), ModelError>;

    /// The final norm's weights and the output (unembedding) matrix.
    fn output(&self) -> (&[f32], &Matrix);
}

/// The tensors every family reads the same way: the token embedding (`token_embd`), the
/// output matrix (`output`, or the embedding again when the file ties them) and the final
/// norm (`output_norm`).
pub(crate) fn embedding_and_output(
    content: &Content,
    bytes: &[u8],
    dim: usize,
) -> Result<(Matrix, Matrix, Vec<f32>), ModelError> {
    let embedding = matrix(content, bytes, "token_embd.weight", None, dim)?;
    let output = if content.tensor_infos.contains_key("output.weight") {
        matrix(content, bytes, "output.weight", Some(embedding.rows), dim)?
    } else {
        embedding
    };
    Ok((embedding, output, vector(content, bytes, "output_norm.weight", dim)?))
}

/// Checks that every named width is whole activation blocks of [`QK`] values.
pub(crate) fn check_block_widths(wildcard: &'static str, widths: &[(&str, usize)]) -> Result<(), ModelError> {
    match widths.iter().find(|(_, n)| n % QK != 0) {
        Some((what, n)) => Err(ModelError::InvalidMetadata {
            key: wildcard,
            reason: format!("{what} {n} is not a multiple of {QK}"),
        }),
        None => Ok(()),
    }
}

/// The family named by the file's `general.architecture`, built over `bytes`.
pub(crate) fn load(content: &Content, bytes: &[u8]) -> Result<Box<dyn Architecture>, ModelError> {
    let family = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("llama");
    match family {
        "llama" => Ok(Box::new(Llama::load(&llama::LLAMA, content, bytes)?)),
        "qwen2" => Ok(Box::new(Llama::load(&llama::QWEN2, content, bytes)?)),
        "qwen3" => Ok(Box::new(Llama::load(&llama::QWEN3, content, bytes)?)),
        "gemma3" => Ok(Box::new(super::gemma3::Gemma3::load(content, bytes)?)),
        other => Err(ModelError::InvalidMetadata {
            key: "general.architecture",
            reason: format!(
                "the native runtime does not implement architecture {other:?} (it implements llama, qwen2, qwen3 and gemma3)"
            ),
        }),
    }
}
