//! The native llama runtime (trusted side, inside the enclave): a forward pass written for
//! this job, computing straight from the GGUF bytes that were hashed into the model digest.
//!
//! ```text
//!  file bytes (hashed, attested) ── weights referenced in place, never copied or converted
//!  token ids ─► embedding rows ─► 30 × [ RMSNorm ─► Q,K,V ─► RoPE ─► KV cache ─► attention
//!                                       ─► O ─► + ─► RMSNorm ─► gate,up ─► SiLU·up ─► down ─► + ]
//!            ─► RMSNorm ─► output matrix (tied to the embedding when absent) ─► logits
//! ```
//!
//! Why not candle: on a 135M-parameter model candle spends most of a token in per-op
//! overhead and has no SIMD kernel for the shipped Q4_1, and it dequantizes the embedding
//! to f32 (113 MB). Here every matrix-vector product is one call into [`kernels`] over the
//! stored blocks, scratch buffers are reused, and resident memory is the file plus the KV
//! cache.
//!
//! Determinism: each output value is computed by exactly one thread with one fixed
//! sequence of operations; `exp` is our own (plain multiplies and adds, vectorized
//! operation for operation) and the few other transcendental calls (RoPE angles) come
//! from the `libm` crate (pure Rust, identical on every platform). So the logits do not depend on the thread count,
//! on AVX2 versus scalar kernels, or on the prefill schedule: a prompt processed in one
//! batch gives the same bits as the same prompt fed one token at a time (a test pins it).

pub(crate) mod kernels;
mod pool;

use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;

use super::ModelError;
use kernels::{
    attention_scores, attention_values, dequantize_row, dot, dot_f32, dot_rows, exp_shifted, quantize_row,
    silu_mul, ActBlock, Kernel, QType, QK,
};
use pool::Pool;

/// Version of this runtime's arithmetic. Bump it whenever a change can alter a logit bit:
/// a re-run of a request reproduces the tokens only under the same version.
pub const NATIVE_ENGINE_VERSION: &str = "vouch-native-1";

/// Most positions [`NativeLlama::reserve`] sets KV-cache memory aside for up front
/// (SmolLM2-135M: 46 KB per position, so 23 MB).
const RESERVE_POSITIONS: usize = 512;

/// Matrices with fewer rows are not worth sharing out among threads.
const MIN_SHARED_ROWS: usize = 64;

/// Shape and hyper-parameters, from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub(crate) dim: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) ffn_dim: usize,
    pub(crate) vocab: usize,
    pub(crate) eps: f32,
    pub(crate) rope_base: f32,
}

impl Config {
    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// A weight matrix: `rows` rows of `cols` values, stored at `offset` in the file bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matrix {
    ty: QType,
    rows: usize,
    cols: usize,
    offset: usize,
}

impl Matrix {
    fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols)
    }

    fn row<'a>(&self, bytes: &'a [u8], r: usize) -> &'a [u8] {
        let len = self.row_bytes();
        &bytes[self.offset + r * len..self.offset + (r + 1) * len]
    }
}

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

/// Keys and values of every position so far, per layer: `[position][kv_dim]`.
#[derive(Default)]
struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

/// Where the kernels run: which implementation, and on how many threads.
struct Compute {
    kernel: Kernel,
    pool: Option<Pool>,
}

/// A llama model computing from its GGUF bytes.
pub(crate) struct NativeLlama {
    bytes: Arc<Vec<u8>>,
    cfg: Config,
    embedding: Matrix,
    output: Matrix,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
    compute: Compute,
    cache: KvCache,
}

impl std::fmt::Debug for NativeLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeLlama")
            .field("cfg", &self.cfg)
            .field("kernel", &self.compute.kernel)
            .finish_non_exhaustive()
    }
}

fn weights_error(reason: String) -> ModelError {
    ModelError::Weights { reason }
}

fn meta_usize(content: &Content, key: &'static str, default: Option<usize>) -> Result<usize, ModelError> {
    match content.metadata.get(key) {
        Some(v) => v
            .to_u64()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .or_else(|| v.to_u32().ok().map(|n| n as usize))
            .filter(|n| *n > 0)
            .ok_or_else(|| ModelError::InvalidMetadata {
                key,
                reason: format!("expected a positive integer, got {v:?}"),
            }),
        None => default.ok_or(ModelError::MissingMetadata { key }),
    }
}

fn meta_f32(content: &Content, key: &'static str, default: f32) -> Result<f32, ModelError> {
    match content.metadata.get(key) {
        Some(v) => v.to_f32().ok().filter(|x| x.is_finite() && *x > 0.0).ok_or_else(|| {
            ModelError::InvalidMetadata { key, reason: format!("expected a positive float, got {v:?}") }
        }),
        None => Ok(default),
    }
}

impl Config {
    fn from_metadata(content: &Content) -> Result<Config, ModelError> {
        let dim = meta_usize(content, "llama.embedding_length", None)?;
        let heads = meta_usize(content, "llama.attention.head_count", None)?;
        let kv_heads = meta_usize(content, "llama.attention.head_count_kv", Some(heads))?;
        let head_dim = meta_usize(content, "llama.rope.dimension_count", Some(dim / heads.max(1)))?;
        let cfg = Config {
            dim,
            layers: meta_usize(content, "llama.block_count", None)?,
            heads,
            kv_heads,
            head_dim,
            ffn_dim: meta_usize(content, "llama.feed_forward_length", None)?,
            vocab: 0,
            eps: meta_f32(content, "llama.attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_base: meta_f32(content, "llama.rope.freq_base", 10_000.0)?,
        };
        let invalid = |reason: String| ModelError::InvalidMetadata { key: "llama.*", reason };
        if heads.checked_mul(head_dim) != Some(dim) || head_dim % 2 != 0 {
            return Err(invalid(format!(
                "{heads} heads × {head_dim} does not make dimension {dim} (or is odd)"
            )));
        }
        if heads % kv_heads != 0 {
            return Err(invalid(format!("{heads} heads is not a multiple of {kv_heads} key/value heads")));
        }
        for (what, n) in
            [("embedding length", dim), ("feed-forward length", cfg.ffn_dim), ("kv dim", cfg.kv_dim())]
        {
            if n % QK != 0 {
                return Err(invalid(format!("{what} {n} is not a multiple of {QK}")));
            }
        }
        Ok(cfg)
    }
}

/// Looks up a 2-D quantized tensor and checks its shape and extent.
fn matrix(
    content: &Content,
    bytes: &[u8],
    name: &str,
    rows: Option<usize>,
    cols: usize,
) -> Result<Matrix, ModelError> {
    let info =
        content.tensor_infos.get(name).ok_or_else(|| weights_error(format!("tensor {name:?} is missing")))?;
    let ty = match info.ggml_dtype {
        GgmlDType::Q4_0 => QType::Q4_0,
        GgmlDType::Q4_1 => QType::Q4_1,
        GgmlDType::Q8_0 => QType::Q8_0,
        other => {
            return Err(weights_error(format!(
                "tensor {name:?} has type {other:?}; the native runtime computes with Q4_0, Q4_1 and Q8_0 \
                 (use --runtime candle for other types)"
            )))
        }
    };
    let dims = info.shape.dims();
    let (actual_rows, actual_cols) = match dims {
        [r, c] => (*r, *c),
        _ => return Err(weights_error(format!("tensor {name:?} has shape {dims:?}, expected 2-D"))),
    };
    if actual_cols != cols || rows.is_some_and(|r| r != actual_rows) {
        return Err(weights_error(format!(
            "tensor {name:?} has shape {dims:?}, expected [{}, {cols}]",
            rows.map_or("any".to_owned(), |r| r.to_string())
        )));
    }
    let m = Matrix { ty, rows: actual_rows, cols, offset: tensor_offset(content, name, info.offset)? };
    check_extent(bytes, name, m.offset, m.rows * m.row_bytes())?;
    Ok(m)
}

fn tensor_offset(content: &Content, name: &str, offset: u64) -> Result<usize, ModelError> {
    content
        .tensor_data_offset
        .checked_add(offset)
        .and_then(|o| usize::try_from(o).ok())
        .ok_or_else(|| weights_error(format!("tensor {name:?}: offset overflows")))
}

fn check_extent(bytes: &[u8], name: &str, offset: usize, len: usize) -> Result<(), ModelError> {
    match offset.checked_add(len) {
        Some(end) if end <= bytes.len() => Ok(()),
        _ => Err(ModelError::Truncated {
            actual_len: bytes.len() as u64,
            needed: format!("tensor {name:?} needs bytes {offset}..{offset}+{len}"),
        }),
    }
}

/// Reads a 1-D f32 tensor of `len` values (the norms).
fn vector(content: &Content, bytes: &[u8], name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    let info =
        content.tensor_infos.get(name).ok_or_else(|| weights_error(format!("tensor {name:?} is missing")))?;
    if info.ggml_dtype != GgmlDType::F32 || info.shape.dims() != [len] {
        return Err(weights_error(format!(
            "tensor {name:?} is {:?} {:?}, expected F32 [{len}]",
            info.ggml_dtype,
            info.shape.dims()
        )));
    }
    let offset = tensor_offset(content, name, info.offset)?;
    check_extent(bytes, name, offset, len * 4)?;
    Ok(bytes[offset..offset + len * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl NativeLlama {
    /// Builds the model over `bytes` (the whole GGUF file, already hashed), computing on
    /// `threads` threads.
    pub(crate) fn new(content: &Content, bytes: Vec<u8>, threads: usize) -> Result<NativeLlama, ModelError> {
        let mut cfg = Config::from_metadata(content)?;
        let embedding = matrix(content, &bytes, "token_embd.weight", None, cfg.dim)?;
        cfg.vocab = embedding.rows;
        let output = if content.tensor_infos.contains_key("output.weight") {
            matrix(content, &bytes, "output.weight", Some(cfg.vocab), cfg.dim)?
        } else {
            embedding
        };
        let output_norm = vector(content, &bytes, "output_norm.weight", cfg.dim)?;
        let (dim, kv, ffn) = (cfg.dim, cfg.kv_dim(), cfg.ffn_dim);
        let layers = (0..cfg.layers)
            .map(|i| {
                let m = |name: &str, rows, cols| {
                    matrix(content, &bytes, &format!("blk.{i}.{name}.weight"), Some(rows), cols)
                };
                let v = |name: &str| vector(content, &bytes, &format!("blk.{i}.{name}.weight"), dim);
                Ok(Layer {
                    attn_norm: v("attn_norm")?,
                    q: m("attn_q", dim, dim)?,
                    k: m("attn_k", kv, dim)?,
                    v: m("attn_v", kv, dim)?,
                    o: m("attn_output", dim, dim)?,
                    ffn_norm: v("ffn_norm")?,
                    gate: m("ffn_gate", ffn, dim)?,
                    up: m("ffn_up", ffn, dim)?,
                    down: m("ffn_down", dim, ffn)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let inv_freq = (0..cfg.head_dim / 2)
            .map(|i| 1.0 / libm::powf(cfg.rope_base, (2 * i) as f32 / cfg.head_dim as f32))
            .collect();
        let bytes = Arc::new(bytes);
        let pool = if threads > 1 {
            Some(
                Pool::start(Arc::clone(&bytes), threads)
                    .map_err(|e| weights_error(format!("cannot start {threads} compute threads: {e}")))?,
            )
        } else {
            None
        };
        let cache = KvCache { keys: vec![Vec::new(); cfg.layers], values: vec![Vec::new(); cfg.layers] };
        Ok(NativeLlama {
            bytes,
            cfg,
            embedding,
            output,
            output_norm,
            layers,
            inv_freq,
            compute: Compute { kernel: Kernel::detect(), pool },
            cache,
        })
    }

    /// The kernel implementation in use.
    pub(crate) fn kernel(&self) -> Kernel {
        self.compute.kernel
    }

    /// Forces a kernel implementation (tests compare them).
    #[cfg(test)]
    pub(crate) fn set_kernel(&mut self, kernel: Kernel) {
        self.compute.kernel = kernel;
    }

    /// Number of tokens in the vocabulary (rows of the output matrix).
    pub(crate) fn vocab(&self) -> usize {
        self.cfg.vocab
    }

    /// Positions currently in the KV cache.
    pub(crate) fn cached_positions(&self) -> usize {
        self.cache.keys.first().map_or(0, |k| k.len() / self.cfg.kv_dim())
    }

    /// Forgets every cached position and returns the cache's memory.
    pub(crate) fn clear_kv_cache(&mut self) {
        for k in self.cache.keys.iter_mut().chain(self.cache.values.iter_mut()) {
            *k = Vec::new();
        }
    }

    /// Reserves cache memory for `positions` positions in total (at most
    /// [`RESERVE_POSITIONS`]), so the decode loop rarely reallocates the cache. The cap
    /// keeps a request with a large `max_tokens` that stops early from holding memory it
    /// never uses; past it the cache grows as needed.
    pub(crate) fn reserve(&mut self, positions: usize) {
        let want = positions.min(RESERVE_POSITIONS) * self.cfg.kv_dim();
        for k in self.cache.keys.iter_mut().chain(self.cache.values.iter_mut()) {
            k.reserve_exact(want.saturating_sub(k.len()));
        }
    }

    /// Runs `tokens` through the model at positions `cached_positions()..`, appending them
    /// to the KV cache, and returns the logits after the last one.
    pub(crate) fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.cfg;
        let n = tokens.len();
        if n == 0 {
            return Err(ModelError::inference("forward pass over no tokens"));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
            return Err(ModelError::inference(format!(
                "token id {bad} is outside the vocabulary of {}",
                cfg.vocab
            )));
        }
        let start = self.cached_positions();
        let (dim, kv_dim, ffn, hd) = (cfg.dim, cfg.kv_dim(), cfg.ffn_dim, cfg.head_dim);

        let mut x = vec![0f32; n * dim];
        for (t, &token) in tokens.iter().enumerate() {
            dequantize_row(
                self.embedding.ty,
                self.embedding.row(&self.bytes, token as usize),
                &mut x[t * dim..(t + 1) * dim],
            );
        }
        let (cos, sin) = rope_tables(&self.inv_freq, start, n);

        let mut xn = vec![0f32; n * dim];
        let mut acts = vec![ActBlock::default(); n * ffn.max(dim) / QK];
        let mut q = vec![0f32; n * dim];
        let mut k = vec![0f32; n * kv_dim];
        let mut v = vec![0f32; n * kv_dim];
        let mut attn = vec![0f32; n * dim];
        let mut out = vec![0f32; n * dim];
        let mut gate = vec![0f32; n * ffn];
        let mut up = vec![0f32; n * ffn];
        let mut scratch = vec![0f32; n * ffn.max(dim)];

        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&x, &layer.attn_norm, cfg.eps, &mut xn);
            quantize_rows(&xn, dim, &mut acts);
            let c = &self.compute;
            matmul(c, &self.bytes, &layer.q, &acts, n, &mut q, &mut scratch)?;
            matmul(c, &self.bytes, &layer.k, &acts, n, &mut k, &mut scratch)?;
            matmul(c, &self.bytes, &layer.v, &acts, n, &mut v, &mut scratch)?;
            for t in 0..n {
                let (ct, st) = (&cos[t * hd / 2..(t + 1) * hd / 2], &sin[t * hd / 2..(t + 1) * hd / 2]);
                for head in q[t * dim..(t + 1) * dim].chunks_exact_mut(hd) {
                    rope(head, ct, st);
                }
                for head in k[t * kv_dim..(t + 1) * kv_dim].chunks_exact_mut(hd) {
                    rope(head, ct, st);
                }
            }
            self.cache.keys[li].extend_from_slice(&k);
            self.cache.values[li].extend_from_slice(&v);
            attention(
                self.compute.kernel,
                cfg,
                &q,
                &self.cache.keys[li],
                &self.cache.values[li],
                start,
                &mut attn,
            );
            quantize_rows(&attn, dim, &mut acts);
            matmul(c, &self.bytes, &layer.o, &acts, n, &mut out, &mut scratch)?;
            add_in_place(&mut x, &out);

            rms_norm_rows(&x, &layer.ffn_norm, cfg.eps, &mut xn);
            quantize_rows(&xn, dim, &mut acts);
            matmul(c, &self.bytes, &layer.gate, &acts, n, &mut gate, &mut scratch)?;
            matmul(c, &self.bytes, &layer.up, &acts, n, &mut up, &mut scratch)?;
            silu_mul(self.compute.kernel, &mut gate, &up);
            quantize_rows(&gate, ffn, &mut acts);
            matmul(c, &self.bytes, &layer.down, &acts, n, &mut out, &mut scratch)?;
            add_in_place(&mut x, &out);
        }

        let last = &x[(n - 1) * dim..];
        let mut normed = vec![0f32; dim];
        rms_norm_rows(last, &self.output_norm, cfg.eps, &mut normed);
        let mut final_acts = vec![ActBlock::default(); dim / QK];
        quantize_row(&normed, &mut final_acts);
        let mut logits = vec![0f32; cfg.vocab];
        let mut logit_scratch = Vec::new();
        matmul(&self.compute, &self.bytes, &self.output, &final_acts, 1, &mut logits, &mut logit_scratch)?;
        Ok(logits)
    }
}

/// `out[t][r] = W[r] · acts[t]` for `n` tokens. With a pool, rows are shared out among
/// its threads; each value is computed by one thread, the same way whatever the split.
fn matmul(
    c: &Compute,
    bytes: &[u8],
    w: &Matrix,
    acts: &[ActBlock],
    n: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) -> Result<(), ModelError> {
    let acts = &acts[..n * (w.cols / QK)];
    if let Some(pool) = &c.pool {
        if w.rows >= MIN_SHARED_ROWS {
            return pool.matmul(c.kernel, w, acts, n, out, scratch);
        }
    }
    matmul_range(c.kernel, bytes, w, acts, n, 0..w.rows, out, scratch);
    Ok(())
}

/// Rows `rows` of `W · acts`, written token-major into `out` (`[t][w.rows]`): directly
/// for one token, else computed row-major in `scratch` and scattered.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_range(
    kernel: Kernel,
    bytes: &[u8],
    w: &Matrix,
    acts: &[ActBlock],
    n: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    if n == 1 {
        matmul_rows(kernel, bytes, w, acts, 1, rows.start, &mut out[rows]);
    } else {
        let len = rows.len() * n;
        scratch.resize(len, 0.0);
        matmul_rows(kernel, bytes, w, acts, n, rows.start, &mut scratch[..len]);
        scatter_rows(&scratch[..len], n, rows.start, w.rows, out);
    }
}

/// Copies rows `first_row..` of a product computed row-major (`[r][t]`, `n` tokens) into
/// `out`, which is token-major (`[t][r]`, `rows` rows per token).
pub(crate) fn scatter_rows(by_row: &[f32], n: usize, first_row: usize, rows: usize, out: &mut [f32]) {
    for (k, values) in by_row.chunks_exact(n).enumerate() {
        for (t, &v) in values.iter().enumerate() {
            out[t * rows + first_row + k] = v;
        }
    }
}

/// Rows `first_row..first_row + by_row.len() / n` of `W · acts`, row-major (`[r][t]`),
/// four rows at a time.
pub(crate) fn matmul_rows(
    kernel: Kernel,
    bytes: &[u8],
    w: &Matrix,
    acts: &[ActBlock],
    n: usize,
    first_row: usize,
    by_row: &mut [f32],
) {
    let blocks = w.cols / QK;
    let rows = by_row.len() / n;
    let mut r = 0;
    while r + 4 <= rows {
        let four = [0, 1, 2, 3].map(|i| w.row(bytes, first_row + r + i));
        for t in 0..n {
            let values = dot_rows(kernel, w.ty, four, &acts[t * blocks..(t + 1) * blocks]);
            for (i, v) in values.into_iter().enumerate() {
                by_row[(r + i) * n + t] = v;
            }
        }
        r += 4;
    }
    for r in r..rows {
        let row = w.row(bytes, first_row + r);
        for t in 0..n {
            by_row[r * n + t] = dot(kernel, w.ty, row, &acts[t * blocks..(t + 1) * blocks]);
        }
    }
}

/// Quantizes each `width`-value row of `x` into consecutive blocks of `acts`.
fn quantize_rows(x: &[f32], width: usize, acts: &mut [ActBlock]) {
    let blocks = width / QK;
    for (row, out) in x.chunks_exact(width).zip(acts.chunks_exact_mut(blocks)) {
        quantize_row(row, out);
    }
}

/// RMSNorm of each row of `x` (rows of `w.len()` values), scaled by `w`, into `out`.
fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (row, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = dot_f32(row, row) / dim as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o = v * scale * g;
        }
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// cos and sin of every rotary angle for positions `start..start + n`: `[t][i]`.
fn rope_tables(inv_freq: &[f32], start: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(n * inv_freq.len());
    let mut sin = Vec::with_capacity(n * inv_freq.len());
    for p in start..start + n {
        for &f in inv_freq {
            let angle = p as f32 * f;
            cos.push(libm::cosf(angle));
            sin.push(libm::sinf(angle));
        }
    }
    (cos, sin)
}

/// Rotates adjacent pairs of one head (GGUF llama's interleaved RoPE).
fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

/// Causal grouped-query attention for the `n` new tokens at positions `start..`, over the
/// cache (which already holds them).
fn attention(
    kernel: Kernel,
    cfg: &Config,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start: usize,
    out: &mut [f32],
) {
    let mut scores = Vec::with_capacity(start + out.len() / cfg.dim);
    let (dim, hd, kv_dim) = (cfg.dim, cfg.head_dim, cfg.kv_dim());
    let group = cfg.heads / cfg.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    for (t, (q_t, out_t)) in q.chunks_exact(dim).zip(out.chunks_exact_mut(dim)).enumerate() {
        let visible = start + t + 1;
        for (h, (q_h, o_h)) in q_t.chunks_exact(hd).zip(out_t.chunks_exact_mut(hd)).enumerate() {
            let kv_off = (h / group) * hd;
            scores.clear();
            scores.resize(visible, 0.0);
            attention_scores(kernel, q_h, keys, kv_dim, kv_off, scale, &mut scores);
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            exp_shifted(kernel, &mut scores, max);
            // Summed in order, on one lane: the same bits from either kernel.
            let sum = scores.iter().fold(0f32, |acc, &s| acc + s);
            let inv = 1.0 / sum;
            for s in scores.iter_mut() {
                *s *= inv;
            }
            attention_values(kernel, &scores, values, kv_dim, kv_off, o_h);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::path::Path;

    use candle_core::quantized::gguf_file::Value;

    use super::*;

    /// The real default model (fetched by scripts/fetch-model.sh; the tests fail without it).
    fn load(threads: usize) -> NativeLlama {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-model.sh)", path.display()));
        let content = Content::read(&mut Cursor::new(&bytes)).unwrap();
        NativeLlama::new(&content, bytes, threads).unwrap()
    }

    /// The chat prompt "What is the capital of France?" with the default system prompt, as
    /// token ids (pinned against llama.cpp's tokenization in tests/model_real.rs).
    const PROMPT: &[u32] = &[
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
        8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
    ];

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn logits_do_not_depend_on_threads_kernel_or_prefill_schedule() {
        let mut one = load(1);
        let reference = one.forward(PROMPT).unwrap();
        assert_eq!(one.cached_positions(), PROMPT.len());
        let next =
            reference.iter().enumerate().fold(0, |b, (i, &x)| if x > reference[b] { i } else { b }) as u32;
        let after = one.forward(&[next]).unwrap();

        // The same prompt one token at a time: the same bits at the end.
        one.clear_kv_cache();
        let mut stepwise = Vec::new();
        for &t in PROMPT {
            stepwise = one.forward(&[t]).unwrap();
        }
        assert_eq!(bits(&stepwise), bits(&reference));

        // In chunks of 5 (an uneven split), then the next token: the same again.
        one.clear_kv_cache();
        let mut chunked = Vec::new();
        for chunk in PROMPT.chunks(5) {
            chunked = one.forward(chunk).unwrap();
        }
        assert_eq!(bits(&chunked), bits(&reference));
        assert_eq!(bits(&one.forward(&[next]).unwrap()), bits(&after));

        // Two and three compute threads, for the prompt and for one more token.
        for threads in [2, 3] {
            let mut many = load(threads);
            assert_eq!(bits(&many.forward(PROMPT).unwrap()), bits(&reference), "{threads} threads");
            assert_eq!(bits(&many.forward(&[next]).unwrap()), bits(&after), "{threads} threads");
        }

        // The portable scalar kernels.
        one.clear_kv_cache();
        one.set_kernel(Kernel::Scalar);
        assert_eq!(bits(&one.forward(PROMPT).unwrap()), bits(&reference));
    }

    /// A tiny random llama GGUF (4 heads of 16 sharing 2 key/value heads, 2 layers,
    /// 64-token vocabulary), with `edit` applied to its tensors and metadata before writing.
    fn tiny_gguf(
        edit: impl FnOnce(&mut Vec<(String, candle_core::quantized::QTensor)>, &mut Vec<(String, Value)>),
    ) -> Vec<u8> {
        use candle_core::quantized::QTensor;
        use candle_core::{Device, Tensor};
        let (dim, kv, ffn, vocab) = (64usize, 32usize, 128usize, 64usize);
        let mut seed = 7u32;
        let mut random = |rows: usize, cols: usize, ty: GgmlDType| {
            let values: Vec<f32> = (0..rows * cols)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect();
            let t = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
            QTensor::quantize(&t, ty).unwrap()
        };
        let norm = |n: usize| {
            QTensor::quantize(
                &Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap(),
                GgmlDType::F32,
            )
            .unwrap()
        };
        let mut tensors = vec![
            ("token_embd.weight".to_owned(), random(vocab, dim, GgmlDType::Q8_0)),
            ("output_norm.weight".to_owned(), norm(dim)),
        ];
        for i in 0..2 {
            for (name, rows, cols) in [
                ("attn_q", dim, dim),
                ("attn_k", kv, dim),
                ("attn_v", kv, dim),
                ("attn_output", dim, dim),
                ("ffn_gate", ffn, dim),
                ("ffn_up", ffn, dim),
                ("ffn_down", dim, ffn),
            ] {
                let ty = if name == "attn_v" { GgmlDType::Q4_0 } else { GgmlDType::Q4_1 };
                tensors.push((format!("blk.{i}.{name}.weight"), random(rows, cols, ty)));
            }
            tensors.push((format!("blk.{i}.attn_norm.weight"), norm(dim)));
            tensors.push((format!("blk.{i}.ffn_norm.weight"), norm(dim)));
        }
        let mut metadata = vec![
            ("general.architecture".to_owned(), Value::String("llama".to_owned())),
            ("llama.embedding_length".to_owned(), Value::U32(dim as u32)),
            ("llama.block_count".to_owned(), Value::U32(2)),
            ("llama.feed_forward_length".to_owned(), Value::U32(ffn as u32)),
            ("llama.attention.head_count".to_owned(), Value::U32(4)),
            ("llama.attention.head_count_kv".to_owned(), Value::U32(2)),
            ("llama.rope.dimension_count".to_owned(), Value::U32(16)),
            ("llama.attention.layer_norm_rms_epsilon".to_owned(), Value::F32(1e-5)),
            ("llama.rope.freq_base".to_owned(), Value::F32(10_000.0)),
        ];
        edit(&mut tensors, &mut metadata);
        let mut out = Cursor::new(Vec::new());
        let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tens: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        candle_core::quantized::gguf_file::write(&mut out, &meta, &tens).unwrap();
        out.into_inner()
    }

    fn tiny(bytes: Vec<u8>) -> Result<NativeLlama, ModelError> {
        let content = Content::read(&mut Cursor::new(&bytes)).unwrap();
        NativeLlama::new(&content, bytes, 1)
    }

    #[test]
    fn tiny_model_agrees_with_candle() {
        use candle_core::{Device, Tensor};
        use candle_transformers::models::quantized_llama::ModelWeights;
        let bytes = tiny_gguf(|_, _| {});
        let tokens = [3u32, 14, 15, 9, 26, 53, 58, 9, 7, 9];
        let mut ours = tiny(bytes.clone()).unwrap();
        let native = ours.forward(&tokens).unwrap();
        let content = Content::read(&mut Cursor::new(&bytes)).unwrap();
        let mut candle = ModelWeights::from_gguf(content, &mut Cursor::new(&bytes), &Device::Cpu).unwrap();
        let input = Tensor::new(&tokens[..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let reference: Vec<f32> = candle.forward(&input, 0).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
        assert_eq!(native.len(), 64);
        let worst = native.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = reference.iter().fold(0f32, |m, x| m.max(x.abs()));
        // Random weights, two layers: only activation rounding separates the two (measured
        // 0.14 of 6.5); a sign error in RoPE gives 3.3, a wrong head-to-KV mapping 9.6.
        assert!(worst < 0.05 * scale, "max |native - candle| {worst}, max |logit| {scale}");
    }

    #[test]
    fn unusable_tensors_and_metadata_are_refused_by_name() {
        let f16 = tiny_gguf(|t, _| {
            let i = t.iter().position(|(n, _)| n == "blk.1.ffn_up.weight").unwrap();
            let dense = t[i].1.dequantize(&candle_core::Device::Cpu).unwrap();
            t[i].1 = candle_core::quantized::QTensor::quantize(&dense, GgmlDType::F16).unwrap();
        });
        let err = tiny(f16).unwrap_err().to_string();
        assert!(err.contains("\"blk.1.ffn_up.weight\" has type F16"), "{err}");

        let missing = tiny_gguf(|t, _| t.retain(|(n, _)| n != "blk.0.attn_k.weight"));
        assert_eq!(
            tiny(missing).unwrap_err().to_string(),
            "cannot build model weights: tensor \"blk.0.attn_k.weight\" is missing"
        );

        let swapped = tiny_gguf(|t, _| {
            let q = t.iter().position(|(n, _)| n == "blk.0.attn_q.weight").unwrap();
            let k = t.iter().position(|(n, _)| n == "blk.0.attn_k.weight").unwrap();
            let (a, b) = (t[q].0.clone(), t[k].0.clone());
            t[q].0 = b;
            t[k].0 = a;
        });
        let err = tiny(swapped).unwrap_err().to_string();
        assert!(err.contains("\"blk.0.attn_q.weight\" has shape [32, 64], expected [64, 64]"), "{err}");

        let heads = tiny_gguf(|_, m| m.retain(|(k, _)| k != "llama.attention.head_count"));
        assert!(matches!(
            tiny(heads),
            Err(ModelError::MissingMetadata { key: "llama.attention.head_count" })
        ));

        let uneven = tiny_gguf(|_, m| {
            m.retain(|(k, _)| k != "llama.attention.head_count_kv");
            m.push(("llama.attention.head_count_kv".to_owned(), Value::U32(3)));
        });
        assert!(matches!(tiny(uneven), Err(ModelError::InvalidMetadata { .. })));
    }

    #[test]
    fn bad_tokens_are_errors() {
        let mut model = load(1);
        assert!(matches!(model.forward(&[]), Err(ModelError::Inference { .. })));
        let err = model.forward(&[1, 49_152]).unwrap_err();
        assert_eq!(err.to_string(), "inference failed: token id 49152 is outside the vocabulary of 49152");
        assert_eq!(model.cached_positions(), 0, "a refused call leaves the cache untouched");
    }
}
