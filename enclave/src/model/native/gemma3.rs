//! The Gemma 3 family for the native runtime (trusted side, inside the enclave): metadata,
//! tensors and the layer block, as llama.cpp computes them.
//!
//! ```text
//!  embedding · √dim
//!  x ─► RMSNorm ─► Q,K,V ─► per-head RMSNorm of Q and K ─► RoPE (NeoX pairs)
//!    ─► attention (sliding window on five layers of six, global on the sixth)
//!    ─► O ─► RMSNorm ─► + ─► RMSNorm ─► GELU(gate)·up ─► down ─► RMSNorm ─► +
//!  output: RMSNorm ─► output matrix (tied to the embedding when absent)
//! ```
//!
//! The global layers rotate with `gemma3.rope.freq_base` (divided by a linear
//! `rope.scaling.factor` when the file has one), the sliding-window layers with base
//! 10 000 and no scaling. Norm weights are used as stored: the GGUF converter has already
//! added Gemma's `1 +`.

use candle_core::quantized::gguf_file::Content;

use super::arch::{Architecture, AttnSpec, RopeStyle, Shape};
use super::kernels::{dequantize_row, exp, ActBlock, QK};
use super::{
    add_in_place, matrix, meta_f32, meta_usize, quantize_rows, rms_norm_rows, vector, Batch, Matrix,
};
use crate::model::ModelError;

/// RoPE base of the sliding-window layers (llama.cpp's `rope_freq_base_train_swa`).
const SWA_ROPE_BASE: f32 = 10_000.0;

/// Every this many layers, the last is global and the others slide (llama.cpp's
/// `set_swa_pattern(6)` for Gemma 3).
const SWA_PATTERN: usize = 6;

struct Layer {
    attn_norm: Vec<f32>,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    o: Matrix,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
    post_ffn_norm: Vec<f32>,
    /// The sliding window, or `None` for a global layer.
    window: Option<usize>,
}

/// A Gemma 3 model: shape, tensors, the two sets of rotary frequencies.
pub(crate) struct Gemma3 {
    shape: Shape,
    ffn_dim: usize,
    embedding: Matrix,
    embed_scale: f32,
    attn_scale: f32,
    output: Matrix,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    global_freq: Vec<f32>,
    local_freq: Vec<f32>,
}

fn inv_freq(head_dim: usize, base: f32, scale: f32) -> Vec<f32> {
    (0..head_dim / 2).map(|i| scale / libm::powf(base, (2 * i) as f32 / head_dim as f32)).collect()
}

impl Gemma3 {
    /// Reads the `gemma3.*` metadata and finds every tensor in `bytes`.
    pub(crate) fn load(content: &Content, bytes: &[u8]) -> Result<Gemma3, ModelError> {
        let dim = meta_usize(content, "gemma3.embedding_length", None)?;
        let layers = meta_usize(content, "gemma3.block_count", None)?;
        let ffn_dim = meta_usize(content, "gemma3.feed_forward_length", None)?;
        let heads = meta_usize(content, "gemma3.attention.head_count", None)?;
        let kv_heads = meta_usize(content, "gemma3.attention.head_count_kv", Some(heads))?;
        let head_dim = meta_usize(content, "gemma3.attention.key_length", Some(dim / heads.max(1)))?;
        let value_dim = meta_usize(content, "gemma3.attention.value_length", Some(head_dim))?;
        let window = meta_usize(content, "gemma3.attention.sliding_window", None)?;
        let eps = meta_f32(content, "gemma3.attention.layer_norm_rms_epsilon", 1e-6)?;
        let rope_base = meta_f32(content, "gemma3.rope.freq_base", 1_000_000.0)?;
        let rope_factor = meta_f32(content, "gemma3.rope.scaling.factor", 1.0)?;
        let invalid = |reason: String| ModelError::InvalidMetadata { key: "gemma3.*", reason };
        if value_dim != head_dim || head_dim % 2 != 0 {
            return Err(invalid(format!(
                "key length {head_dim} and value length {value_dim} must be one even size"
            )));
        }
        if heads % kv_heads != 0 {
            return Err(invalid(format!("{heads} heads is not a multiple of {kv_heads} key/value heads")));
        }
        let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
        for (what, n) in
            [("embedding length", dim), ("feed-forward length", ffn_dim), ("head size", head_dim)]
        {
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
                let v = |name: &str, len| vector(content, bytes, &format!("blk.{i}.{name}.weight"), len);
                Ok(Layer {
                    attn_norm: v("attn_norm", dim)?,
                    q: m("attn_q", q_dim, dim)?,
                    k: m("attn_k", kv_dim, dim)?,
                    v: m("attn_v", kv_dim, dim)?,
                    q_norm: v("attn_q_norm", head_dim)?,
                    k_norm: v("attn_k_norm", head_dim)?,
                    o: m("attn_output", dim, q_dim)?,
                    post_attn_norm: v("post_attention_norm", dim)?,
                    ffn_norm: v("ffn_norm", dim)?,
                    gate: m("ffn_gate", ffn_dim, dim)?,
                    up: m("ffn_up", ffn_dim, dim)?,
                    down: m("ffn_down", dim, ffn_dim)?,
                    post_ffn_norm: v("post_ffw_norm", dim)?,
                    window: (i % SWA_PATTERN < SWA_PATTERN - 1).then_some(window),
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        // llama.cpp scales queries by 1/√(dim / heads) for the 62-layer 27B model and by
        // 1/√head_dim for every other size.
        let attn_scale = if layers.len() == 62 {
            1.0 / ((dim / heads) as f32).sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };
        let shape = Shape { dim, layers: layers.len(), heads, kv_heads, head_dim, q_dim, kv_dim, vocab, eps };
        Ok(Gemma3 {
            shape,
            ffn_dim,
            embedding,
            embed_scale: (dim as f32).sqrt(),
            attn_scale,
            output,
            output_norm,
            layers,
            global_freq: inv_freq(head_dim, rope_base, 1.0 / rope_factor),
            local_freq: inv_freq(head_dim, SWA_ROPE_BASE, 1.0),
        })
    }
}

/// `gate[i] = GELU(gate[i]) · up[i]`, GELU in its tanh form with `tanh(u) = 1 − 2/(e^{2u} + 1)`
/// from the runtime's own `exp` (the same bits on every CPU).
fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
        let tanh = 1.0 - 2.0 / (exp(2.0 * inner) + 1.0);
        *g = 0.5 * x * (1.0 + tanh) * u;
    }
}

impl Architecture for Gemma3 {
    fn family(&self) -> &'static str {
        "gemma3"
    }

    fn shape(&self) -> &Shape {
        &self.shape
    }

    fn embedding(&self) -> &Matrix {
        &self.embedding
    }

    fn embed(&self, bytes: &[u8], token: u32, out: &mut [f32]) {
        let e = &self.embedding;
        dequantize_row(e.ty, e.row(bytes, token as usize), out);
        for v in out.iter_mut() {
            *v *= self.embed_scale;
        }
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
        batch.matmul(&layer.q, &acts, &mut attn, &mut scratch)?;
        rms_norm_rows(&attn, &layer.q_norm, s.eps, &mut q);
        batch.matmul(&layer.k, &acts, &mut v, &mut scratch)?;
        rms_norm_rows(&v, &layer.k_norm, s.eps, &mut k);
        batch.matmul(&layer.v, &acts, &mut v, &mut scratch)?;
        let freq = if layer.window.is_some() { &self.local_freq } else { &self.global_freq };
        batch.rope(&mut q, q_dim, s.head_dim, freq, RopeStyle::Neox);
        batch.rope(&mut k, kv_dim, s.head_dim, freq, RopeStyle::Neox);
        let spec = AttnSpec { scale: self.attn_scale, window: layer.window };
        batch.attend(li, s, spec, &q, &k, &v, &mut attn);
        quantize_rows(&attn, q_dim, &mut acts);
        batch.matmul(&layer.o, &acts, &mut xn, &mut scratch)?;
        rms_norm_rows(&xn, &layer.post_attn_norm, s.eps, &mut out);
        add_in_place(x, &out);

        let mut gate = vec![0f32; n * ffn];
        let mut up = vec![0f32; n * ffn];
        rms_norm_rows(x, &layer.ffn_norm, s.eps, &mut xn);
        quantize_rows(&xn, dim, &mut acts);
        batch.matmul(&layer.gate, &acts, &mut gate, &mut scratch)?;
        batch.matmul(&layer.up, &acts, &mut up, &mut scratch)?;
        gelu_mul(&mut gate, &up);
        quantize_rows(&gate, ffn, &mut acts);
        batch.matmul(&layer.down, &acts, &mut xn, &mut scratch)?;
        rms_norm_rows(&xn, &layer.post_ffn_norm, s.eps, &mut out);
        add_in_place(x, &out);
        Ok(())
    }

    fn output(&self) -> (&[f32], &Matrix) {
        (&self.output_norm, &self.output)
    }
}
