//! The llama-shaped families for the native runtime (trusted side, inside the enclave):
//! `llama` (Llama 2 and 3, Mistral, SmolLM), `qwen2` and `qwen3`. They share one layer
//! block and differ in a few switches ([`Flavor`]):
//!
//! ```text
//!  x ─► RMSNorm ─► Q,K,V (+ bias: qwen2) ─► per-head RMSNorm of Q, K (qwen3) ─► RoPE
//!    ─► KV cache ─► attention ─► O ─► + ─► RMSNorm ─► gate,up ─► SiLU·up ─► down ─► +
//!  output: RMSNorm ─► output matrix (tied to the embedding when absent)
//! ```
//!
//! RoPE pairs values `2i, 2i+1` in llama (its GGUF converter permutes Q and K for that) and
//! `i, i + head_dim/2` in the Qwen families, as llama.cpp does. Llama 3's long-context
//! scaling arrives as a `rope_freqs` tensor dividing each frequency; a linear
//! `rope.scaling.factor` divides them all. YaRN scaling is refused at load.

use crate::model::gguf_file::Content;

use super::arch::{check_block_widths, embedding_and_output, Architecture, AttnSpec, RopeStyle, Shape};
use super::kernels::{silu_mul, ActBlock, QK};
use super::{
    add_in_place, matrix, meta_f32, meta_usize, quantize_rows, rms_norm_rows, vector, Batch, Matrix,
};
use crate::model::ModelError;

/// What distinguishes one llama-shaped family from another, with its metadata keys.
pub(crate) struct Flavor {
    family: &'static str,
    rope: RopeStyle,
    /// Q, K and V have bias vectors.
    bias: bool,
    /// Q and K are RMS-normed per head before RoPE.
    qk_norm: bool,
    keys: Keys,
}

struct Keys {
    dim: &'static str,
    heads: &'static str,
    kv_heads: &'static str,
    key_length: &'static str,
    rope_dims: &'static str,
    layers: &'static str,
    ffn: &'static str,
    eps: &'static str,
    rope_base: &'static str,
    rope_scaling: &'static str,
    rope_factor: &'static str,
    wildcard: &'static str,
}

macro_rules! keys {
    ($family:literal) => {
        Keys {
            dim: concat!($family, ".embedding_length"),
            heads: concat!($family, ".attention.head_count"),
            kv_heads: concat!($family, ".attention.head_count_kv"),
            key_length: concat!($family, ".attention.key_length"),
            rope_dims: concat!($family, ".rope.dimension_count"),
            layers: concat!($family, ".block_count"),
            ffn: concat!($family, ".feed_forward_length"),
            eps: concat!($family, ".attention.layer_norm_rms_epsilon"),
            rope_base: concat!($family, ".rope.freq_base"),
            rope_scaling: concat!($family, ".rope.scaling.type"),
            rope_factor: concat!($family, ".rope.scaling.factor"),
            wildcard: concat!($family, ".*"),
        }
    };
}

/// Llama 2 and 3, Mistral, SmolLM.
pub(crate) const LLAMA: Flavor = Flavor {
    family: "llama",
    rope: RopeStyle::Interleaved,
    bias: false,
    qk_norm: false,
    keys: keys!("llama"),
};
/// Qwen 2 and 2.5: biased Q, K, V.
pub(crate) const QWEN2: Flavor =
    Flavor { family: "qwen2", rope: RopeStyle::Neox, bias: true, qk_norm: false, keys: keys!("qwen2") };
/// Qwen 3 (dense): per-head Q and K norms.
pub(crate) const QWEN3: Flavor =
    Flavor { family: "qwen3", rope: RopeStyle::Neox, bias: false, qk_norm: true, keys: keys!("qwen3") };

struct Layer {
    attn_norm: Vec<f32>,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    /// Q, K, V biases (qwen2).
    bias: Option<[Vec<f32>; 3]>,
    /// Per-head Q and K norm weights (qwen3).
    qk_norm: Option<[Vec<f32>; 2]>,
    o: Matrix,
    ffn_norm: Vec<f32>,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

/// A llama-shaped model: shape, tensors, rotary frequencies.
pub(crate) struct Llama {
    flavor: &'static Flavor,
    shape: Shape,
    ffn_dim: usize,
    embedding: Matrix,
    output: Matrix,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
}

impl Llama {
    /// Reads the family's metadata and finds every tensor in `bytes`.
    pub(crate) fn load(
        flavor: &'static Flavor,
        content: &Content,
        bytes: &[u8],
    ) -> Result<Llama, ModelError> {
        let k = &flavor.keys;
        let dim = meta_usize(content, k.dim, None)?;
        let heads = meta_usize(content, k.heads, None)?;
        let kv_heads = meta_usize(content, k.kv_heads, Some(heads))?;
        let rope_dims = meta_usize(content, k.rope_dims, Some(dim / heads.max(1)))?;
        let head_dim = meta_usize(content, k.key_length, Some(rope_dims))?;
        let layers = meta_usize(content, k.layers, None)?;
        let ffn_dim = meta_usize(content, k.ffn, None)?;
        let eps = meta_f32(content, k.eps, 1e-5)?;
        let rope_base = meta_f32(content, k.rope_base, 10_000.0)?;
        let invalid = |reason: String| ModelError::InvalidMetadata { key: k.wildcard, reason };
        let rope_scale = match content.metadata.get(k.rope_scaling).and_then(|v| v.to_string().ok()) {
            None => 1.0,
            Some(t) if t == "none" => 1.0,
            Some(t) if t == "linear" => 1.0 / meta_f32(content, k.rope_factor, 1.0)?,
            Some(other) => {
                return Err(invalid(format!(
                    "RoPE scaling {other:?} is not implemented by the native runtime (none and linear are)"
                )))
            }
        };
        if rope_dims != head_dim || head_dim % 2 != 0 {
            return Err(invalid(format!(
                "RoPE over {rope_dims} of {head_dim} head values (partial or odd rotation is not implemented)"
            )));
        }
        if heads % kv_heads != 0 {
            return Err(invalid(format!("{heads} heads is not a multiple of {kv_heads} key/value heads")));
        }
        let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
        check_block_widths(
            k.wildcard,
            &[("embedding length", dim), ("feed-forward length", ffn_dim), ("query width", q_dim)],
        )?;
        let (embedding, output, output_norm) = embedding_and_output(content, bytes, dim)?;
        let vocab = embedding.rows;
        let layers = (0..layers)
            .map(|i| {
                let m = |name: &str, rows, cols| {
                    matrix(content, bytes, &format!("blk.{i}.{name}.weight"), Some(rows), cols)
                };
                let v = |name: &str, len| vector(content, bytes, &format!("blk.{i}.{name}"), len);
                Ok(Layer {
                    attn_norm: v("attn_norm.weight", dim)?,
                    q: m("attn_q", q_dim, dim)?,
                    k: m("attn_k", kv_dim, dim)?,
                    v: m("attn_v", kv_dim, dim)?,
                    bias: match flavor.bias {
                        true => Some([
                            v("attn_q.bias", q_dim)?,
                            v("attn_k.bias", kv_dim)?,
                            v("attn_v.bias", kv_dim)?,
                        ]),
                        false => None,
                    },
                    qk_norm: match flavor.qk_norm {
                        true => {
                            Some([v("attn_q_norm.weight", head_dim)?, v("attn_k_norm.weight", head_dim)?])
                        }
                        false => None,
                    },
                    o: m("attn_output", dim, q_dim)?,
                    ffn_norm: v("ffn_norm.weight", dim)?,
                    gate: m("ffn_gate", ffn_dim, dim)?,
                    up: m("ffn_up", ffn_dim, dim)?,
                    down: m("ffn_down", dim, ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let factors = match content.tensor_infos.contains_key("rope_freqs.weight") {
            true => vector(content, bytes, "rope_freqs.weight", head_dim / 2)?,
            false => vec![1.0; head_dim / 2],
        };
        if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            return Err(weights_error(format!(
                "tensor \"rope_freqs.weight\" holds {bad}, expected positive factors"
            )));
        }
        let inv_freq = (0..head_dim / 2)
            .map(|i| rope_scale / libm::powf(rope_base, (2 * i) as f32 / head_dim as f32) / factors[i])
            .collect();
        let shape = Shape { dim, layers: layers.len(), heads, kv_heads, head_dim, q_dim, kv_dim, vocab, eps };
        Ok(Llama { flavor, shape, ffn_dim, embedding, output, output_norm, layers, inv_freq })
    }
}

fn weights_error(reason: String) -> ModelError {
    ModelError::Weights { reason }
}

/// Adds `bias` to every row of `x`.
fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_in_place(row, bias);
    }
}

impl Architecture for Llama {
    fn family(&self) -> &'static str {
        self.flavor.family
    }

    fn shape(&self) -> &Shape {
        &self.shape
    }

    fn embedding(&self) -> &Matrix {
        &self.embedding
    }

    fn layer(&self, li: usize, batch: &mut Batch<'_, '_>, x: &mut [f32]) -> Result<(), ModelError> {
        let s = &self.shape;
        let (n, dim, q_dim, kv_dim, ffn) = (batch.rows(), s.dim, s.q_dim, s.kv_dim, self.ffn_dim);
        let layer = &self.layers[li];
        let mut xn = vec![0f32; n * dim];
        let mut acts = vec![ActBlock::default(); n * ffn.max(dim).max(q_dim) / QK];
        let mut q = vec![0f32; n * q_dim];
        let mut k = vec![0f32; n * kv_dim];
        let mut v = vec![0f32; n * kv_dim];
        let mut attn = vec![0f32; n * q_dim];
        let mut out = vec![0f32; n * dim];
        let mut scratch = Vec::new();

        rms_norm_rows(x, &layer.attn_norm, s.eps, &mut xn);
        quantize_rows(&xn, dim, &mut acts);
        batch.matmul(&layer.q, &acts, &mut q, &mut scratch)?;
        batch.matmul(&layer.k, &acts, &mut k, &mut scratch)?;
        batch.matmul(&layer.v, &acts, &mut v, &mut scratch)?;
        if let Some([bq, bk, bv]) = &layer.bias {
            add_bias(&mut q, bq);
            add_bias(&mut k, bk);
            add_bias(&mut v, bv);
        }
        if let Some([nq, nk]) = &layer.qk_norm {
            attn.copy_from_slice(&q);
            rms_norm_rows(&attn, nq, s.eps, &mut q);
            let raw = k.clone();
            rms_norm_rows(&raw, nk, s.eps, &mut k);
        }
        batch.rope(&mut q, q_dim, s.head_dim, &self.inv_freq, self.flavor.rope);
        batch.rope(&mut k, kv_dim, s.head_dim, &self.inv_freq, self.flavor.rope);
        batch.attend(li, s, AttnSpec::causal(s.head_dim), &q, &k, &v, &mut attn);
        quantize_rows(&attn, q_dim, &mut acts);
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
