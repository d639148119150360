//! The llama family for the native runtime (trusted side, inside the enclave): metadata,
//! tensors and the layer block.
//!
//! ```text
//!  x ─► RMSNorm ─► Q,K,V ─► RoPE ─► KV cache ─► attention ─► O ─► + ─► RMSNorm
//!    ─► gate,up ─► SiLU·up ─► down ─► +
//!  output: RMSNorm ─► output matrix (tied to the embedding when absent)
//! ```

use candle_core::quantized::gguf_file::Content;

use super::arch::{Architecture, AttnSpec, RopeStyle, Shape};
use super::kernels::{silu_mul, ActBlock, QK};
use super::{
    add_in_place, matrix, meta_f32, meta_usize, quantize_rows, rms_norm_rows, vector, Batch, Matrix,
};
use crate::model::ModelError;

struct Layer {
    attn_norm: Vec<f32>,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    o: Matrix,
    ffn_norm: Vec<f32>,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

/// A llama model: shape, tensors, rotary frequencies.
pub(crate) struct Llama {
    shape: Shape,
    ffn_dim: usize,
    embedding: Matrix,
    output: Matrix,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
}

impl Llama {
    /// Reads the `llama.*` metadata and finds every tensor in `bytes`.
    pub(crate) fn load(content: &Content, bytes: &[u8]) -> Result<Llama, ModelError> {
        let dim = meta_usize(content, "llama.embedding_length", None)?;
        let heads = meta_usize(content, "llama.attention.head_count", None)?;
        let kv_heads = meta_usize(content, "llama.attention.head_count_kv", Some(heads))?;
        let head_dim = meta_usize(content, "llama.rope.dimension_count", Some(dim / heads.max(1)))?;
        let layers = meta_usize(content, "llama.block_count", None)?;
        let ffn_dim = meta_usize(content, "llama.feed_forward_length", None)?;
        let eps = meta_f32(content, "llama.attention.layer_norm_rms_epsilon", 1e-5)?;
        let rope_base = meta_f32(content, "llama.rope.freq_base", 10_000.0)?;
        let invalid = |reason: String| ModelError::InvalidMetadata { key: "llama.*", reason };
        if heads.checked_mul(head_dim) != Some(dim) || head_dim % 2 != 0 {
            return Err(invalid(format!(
                "{heads} heads × {head_dim} does not make dimension {dim} (or is odd)"
            )));
        }
        if heads % kv_heads != 0 {
            return Err(invalid(format!("{heads} heads is not a multiple of {kv_heads} key/value heads")));
        }
        let kv_dim = kv_heads * head_dim;
        for (what, n) in [("embedding length", dim), ("feed-forward length", ffn_dim), ("kv dim", kv_dim)] {
            if n % QK != 0 {
                return Err(invalid(format!("{what} {n} is not a multiple of {QK}")));
            }
        }
        let embedding = matrix(content, bytes, "token_embd.weight", None, dim)?;
        let vocab = embedding.rows;
        let output = if content.tensor_infos.contains_key("output.weight") {
            matrix(content, bytes, "output.weight", Some(vocab), dim)?
        } else {
            embedding
        };
        let output_norm = vector(content, bytes, "output_norm.weight", dim)?;
        let layers = (0..layers)
            .map(|i| {
                let m = |name: &str, rows, cols| {
                    matrix(content, bytes, &format!("blk.{i}.{name}.weight"), Some(rows), cols)
                };
                let v = |name: &str| vector(content, bytes, &format!("blk.{i}.{name}.weight"), dim);
                Ok(Layer {
                    attn_norm: v("attn_norm")?,
                    q: m("attn_q", dim, dim)?,
                    k: m("attn_k", kv_dim, dim)?,
                    v: m("attn_v", kv_dim, dim)?,
                    o: m("attn_output", dim, dim)?,
                    ffn_norm: v("ffn_norm")?,
                    gate: m("ffn_gate", ffn_dim, dim)?,
                    up: m("ffn_up", ffn_dim, dim)?,
                    down: m("ffn_down", dim, ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / libm::powf(rope_base, (2 * i) as f32 / head_dim as f32))
            .collect();
        let shape =
            Shape { dim, layers: layers.len(), heads, kv_heads, head_dim, q_dim: dim, kv_dim, vocab, eps };
        Ok(Llama { shape, ffn_dim, embedding, output, output_norm, layers, inv_freq })
    }
}

impl Architecture for Llama {
    fn family(&self) -> &'static str {
        "llama"
    }

    fn shape(&self) -> &Shape {
        &self.shape
    }

    fn embedding(&self) -> &Matrix {
        &self.embedding
    }

    fn layer(&self, li: usize, batch: &mut Batch<'_, '_>, x: &mut [f32]) -> Result<(), ModelError> {
        let s = &self.shape;
        let (n, dim, kv_dim, ffn) = (batch.rows(), s.dim, s.kv_dim, self.ffn_dim);
        let layer = &self.layers[li];
        let mut xn = vec![0f32; n * dim];
        let mut acts = vec![ActBlock::default(); n * ffn.max(dim) / QK];
        let mut q = vec![0f32; n * dim];
        let mut k = vec![0f32; n * kv_dim];
        let mut v = vec![0f32; n * kv_dim];
        let mut attn = vec![0f32; n * dim];
        let mut out = vec![0f32; n * dim];
        let mut scratch = Vec::new();

        rms_norm_rows(x, &layer.attn_norm, s.eps, &mut xn);
        quantize_rows(&xn, dim, &mut acts);
        batch.matmul(&layer.q, &acts, &mut q, &mut scratch)?;
        batch.matmul(&layer.k, &acts, &mut k, &mut scratch)?;
        batch.matmul(&layer.v, &acts, &mut v, &mut scratch)?;
        batch.rope(&mut q, dim, s.head_dim, &self.inv_freq, RopeStyle::Interleaved);
        batch.rope(&mut k, kv_dim, s.head_dim, &self.inv_freq, RopeStyle::Interleaved);
        batch.attend(li, s, AttnSpec::causal(s.head_dim), &q, &k, &v, &mut attn);
        quantize_rows(&attn, dim, &mut acts);
        batch.matmul(&layer.o, &acts, &mut out, &mut scratch)?;
        add_in_place(x, &out);

        let mut gate = vec![0f32; n * ffn];
        let mut up = vec![0f32; n * ffn];
        rms_norm_rows(x, &layer.ffn_norm, s.eps, &mut xn);
        quantize_rows(&xn, dim, &mut acts);
        batch.matmul(&layer.gate, &acts, &mut gate, &mut scratch)?;
        batch.matmul(&layer.up, &acts, &mut up, &mut scratch)?;
        silu_mul(batch.kernel(), &mut gate, &up);
        quantize_rows(&gate, ffn, &mut acts);
        batch.matmul(&layer.down, &acts, &mut out, &mut scratch)?;
        add_in_place(x, &out);
        Ok(())
    }

    fn output(&self) -> (&[f32], &Matrix) {
        (&self.output_norm, &self.output)
    }
}
