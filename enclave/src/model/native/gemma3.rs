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
//! `rope.scaling.factor` when the file has one), the sliding-window layers with
//! `gemma3.rope.freq_base_swa` (10 000 when absent) and no scaling. A sliding layer's query
//! at position `p` sees keys `p − window + 1..=p`. Queries are scaled by `1/√key_length`
//! (`1/√(dim/heads)` for the 62-layer 27B). Norm weights are used as stored: the GGUF
//! converter has already added Gemma's `1 +`. GELU is the tanh form through an f16 table,
//! as llama.cpp's CPU backend computes it ([`gelu_table`]).

use crate::model::gguf_file::{Content, Value};

use super::arch::{check_block_widths, embedding_and_output, Architecture, AttnSpec, RopeStyle, Shape};
use half::f16;

use super::kernels::{dequantize_row, ActBlock, QK};
use super::{
    add_in_place, matrix, meta_f32, meta_usize, quantize_rows, rms_norm_rows, vector, Batch, Matrix,
};
use crate::model::ModelError;

/// RoPE base of the sliding-window layers when `gemma3.rope.freq_base_swa` is absent
/// (llama.cpp's default `rope_freq_base_train_swa`).
const SWA_ROPE_BASE: f32 = 10_000.0;

/// When `gemma3.attention.sliding_window_pattern` is absent: of every six layers, the
/// last is global and the others slide (llama.cpp's `load_swa_pattern(6)`).
const SWA_PATTERN: usize = 6;

const SWA_PATTERN_KEY: &str = "gemma3.attention.sliding_window_pattern";

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
    gelu: Vec<u16>,
}

fn inv_freq(head_dim: usize, base: f32, scale: f32) -> Vec<f32> {
    (0..head_dim / 2).map(|i| scale / libm::powf(base, (2 * i) as f32 / head_dim as f32)).collect()
}

/// Which layers slide: `gemma3.attention.sliding_window_pattern` as one flag per layer, or
/// as a period `n` (layer `i` slides unless `i % n == n − 1`; 0: all slide).
fn swa_layers(pattern: Option<&Value>, layers: usize) -> Result<Vec<bool>, ModelError> {
    let invalid = |reason: String| ModelError::InvalidMetadata { key: SWA_PATTERN_KEY, reason };
    let period = match pattern {
        None => SWA_PATTERN,
        Some(v @ Value::Array(_)) => {
            let flags = v.to_bools().map_err(|e| invalid(e.to_string()))?;
            if flags.len() != layers {
                return Err(invalid(format!("{} flags for {layers} layers", flags.len())));
            }
            return Ok(flags.to_vec());
        }
        Some(v) => v.to_u32().map_err(|e| invalid(e.to_string()))? as usize,
    };
    Ok((0..layers).map(|i| period == 0 || i % period < period - 1).collect())
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
        let swa_rope_base = meta_f32(content, "gemma3.rope.freq_base_swa", SWA_ROPE_BASE)?;
        let sliding = swa_layers(content.metadata.get(SWA_PATTERN_KEY), layers)?;
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
        check_block_widths(
            "gemma3.*",
            &[("embedding length", dim), ("feed-forward length", ffn_dim), ("head size", head_dim)],
        )?;
        let (embedding, output, output_norm) = embedding_and_output(content, bytes, dim)?;
        let vocab = embedding.rows;
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
                    window: sliding[i].then_some(window),
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
            local_freq: inv_freq(head_dim, swa_rope_base, 1.0),
            gelu: gelu_table(),
        })
    }
}

/// GELU in its tanh form, tabulated as llama.cpp's CPU backend computes it: the input
/// rounded to f16, `0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))` in f32 (libm's `tanhf`:
/// the same bits on every CPU), the result rounded to f16. One entry per f16 bit pattern.
fn gelu_table() -> Vec<u16> {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    (0..=u16::MAX)
        .map(|bits| {
            let x = f16::from_bits(bits).to_f32();
            let y = 0.5 * x * (1.0 + libm::tanhf(SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)));
            f16::from_f32(y).to_bits()
        })
        .collect()
}

/// `gate[i] = GELU(gate[i]) · up[i]` through [`gelu_table`]; beyond ±10, where the f16
/// table saturates, GELU is 0 below and the identity above (as in llama.cpp).
fn gelu_mul(table: &[u16], gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        let gelu = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x
        } else {
            f16::from_bits(table[f16::from_f32(x).to_bits() as usize]).to_f32()
        };
        *g = gelu * u;
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
        gelu_mul(&self.gelu, &mut gate, &up);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf_file::Array;

    #[test]
    fn every_sixth_layer_is_global_unless_the_file_says_otherwise() {
        let globals = |v: Option<&Value>, n| -> Vec<usize> {
            swa_layers(v, n).unwrap().iter().enumerate().filter(|(_, s)| !**s).map(|(i, _)| i).collect()
        };
        assert_eq!(globals(None, 18), [5, 11, 17]);
        assert_eq!(globals(Some(&Value::U32(4)), 8), [3, 7]);
        assert_eq!(globals(Some(&Value::U32(0)), 3), Vec::<usize>::new());
        let flags = Value::Array(Array::Bool(vec![true, false]));
        assert_eq!(globals(Some(&flags), 2), [1]);
        let err = swa_layers(Some(&flags), 3).unwrap_err();
        assert!(err.to_string().contains("2 flags for 3 layers"), "{err}");
    }

    #[test]
    fn gelu_rounds_through_f16_like_llama_cpp() {
        let table = gelu_table();
        let mut gate = vec![1.0, -1.0, 0.1, 3.3, -12.0, 11.0, 0.0];
        gelu_mul(&table, &mut gate, &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0]);
        // GELU(1) = 0.841192, GELU(−1) = −0.158808, as f16.
        assert_eq!(gate[0], f16::from_f32(0.841_192).to_f32());
        assert_eq!(gate[1], f16::from_f32(-0.158_808).to_f32());
        // 0.1 is first rounded to f16 (0.099975586), then GELU, then rounded again.
        let x = f16::from_f32(0.1).to_f32();
        let y = 0.5 * x * (1.0 + libm::tanhf(0.797_884_6 * x * (1.0 + 0.044_715 * x * x)));
        assert_eq!(gate[2], f16::from_f32(y).to_f32());
        assert!((gate[3] - 3.298_4).abs() < 4e-3, "{}", gate[3]);
        assert_eq!(&gate[4..], [0.0, 11.0, 0.0]);
    }
}
