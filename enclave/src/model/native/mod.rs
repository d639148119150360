//! The native runtime (trusted side, inside the enclave): a forward pass written for this
//! job, computing straight from the GGUF bytes that were hashed into the model digest, for
//! a batch of independent sequences at once.
//!
//! ```text
//!  file bytes (hashed, attested) ── weights referenced in place, never copied or converted
//!
//!  step: sequence A: 1 token (decoding)   ┐
//!        sequence B: 1 token (decoding)   ├─► one matrix of activation rows, one row per token
//!        sequence C: 32 prompt tokens     ┘
//!     ─► embedding rows ─► layers (the architecture's block, e.g. llama.rs):
//!          every weight matrix multiplies all rows in one pass (the weights stream once);
//!          RoPE and attention run per sequence, over that sequence's own KV cache (SeqKv)
//!     ─► final norm ─► output matrix over the last row of each sequence that wants logits
//! ```
//!
//! Why not candle: on a 135M-parameter model candle spends most of a token in per-op
//! overhead and has no SIMD kernel for the shipped Q4_1, and it dequantizes the embedding
//! to f32 (113 MB). Here every matrix product is one call into [`kernels`] over the stored
//! blocks, and resident memory is the file plus the KV caches.
//!
//! Architectures plug in through one seam, [`arch::Architecture`]: a family is one file
//! plus one line in [`arch::load`] ([`llama`] holds llama, qwen2 and qwen3, which differ
//! by a flavor; [`gemma3`] is its own).
//!
//! Determinism and batch invariance: each output value is computed by exactly one thread
//! with one fixed sequence of operations that involves only its own token's row (a matrix
//! product computes `W[r] · x[t]` for each row and token separately; norms, RoPE and
//! attention are per token, over the token's own sequence). `exp` is our own (plain
//! multiplies and adds, vectorized operation for operation) and the few other
//! transcendental calls (RoPE angles, Gemma's GELU table) come from the `libm` crate (pure Rust, identical on
//! every platform). So a sequence's logits do not depend on the thread count, on the SIMD
//! level, on the prefill schedule, or on which other sequences share its batch and when
//! they joined: tests pin all of these bit for bit.

mod arch;
mod gemma3;
pub(crate) mod kernels;
mod llama;
mod pool;

use std::sync::Arc;

use super::gguf_file::{Content, TensorType};

use super::{ModelBytes, ModelError};
use arch::{Architecture, AttnSpec, RopeStyle, Shape};
use kernels::{
    attention_scores, attention_values, dot, dot_f32, dot_rows, dot_rows_tokens, exp_shifted, prefetch,
    quantize_row, ActBlock, Kernel, QType, QK,
};
use pool::Pool;

/// Version of this runtime's arithmetic. Bump it whenever a change can alter a logit bit:
/// a re-run of a request reproduces the tokens only under the same version.
pub const NATIVE_ENGINE_VERSION: &str = "vouch-native-1";

/// Most positions [`SeqKv::reserve`] sets memory aside for up front (SmolLM2-135M: 45 KiB
/// per position, so 22.5 MiB); past it a cache grows as needed.
const RESERVE_POSITIONS: usize = 512;

/// Matrices with fewer rows are not worth sharing out among threads.
const MIN_SHARED_ROWS: usize = 64;

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

/// One sequence's keys and values, per layer: `[position][kv_dim]`.
#[derive(Debug, Default)]
pub(crate) struct SeqKv {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    positions: usize,
}

impl SeqKv {
    /// Positions cached so far.
    #[cfg(test)]
    pub(crate) fn positions(&self) -> usize {
        self.positions
    }

    /// Bytes of memory the cache holds now.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.keys.iter().chain(&self.values).map(|k| k.capacity() * 4).sum()
    }

    /// Sets memory aside for `positions` positions in total (at most [`RESERVE_POSITIONS`]),
    /// so decoding rarely reallocates. The cap keeps a request with a large `max_tokens`
    /// that stops early from holding memory it never uses.
    fn reserve(&mut self, shape: &Shape, positions: usize) {
        if self.keys.is_empty() {
            self.keys = vec![Vec::new(); shape.layers];
            self.values = vec![Vec::new(); shape.layers];
        }
        let want = positions.min(RESERVE_POSITIONS) * shape.kv_dim;
        for k in self.keys.iter_mut().chain(self.values.iter_mut()) {
            k.reserve_exact(want.saturating_sub(k.len()));
        }
    }
}

/// What one sequence contributes to a forward step.
pub(crate) struct SeqStep<'a> {
    /// The sequence's cache; the step's tokens are appended to it.
    pub(crate) kv: &'a mut SeqKv,
    /// Tokens at positions `kv.positions()..`: a prompt chunk, or the one sampled token.
    pub(crate) tokens: &'a [u32],
    /// Whether the logits after the last of `tokens` are wanted (not for a prompt chunk
    /// that is not the prompt's last).
    pub(crate) logits: bool,
}

/// Where the kernels run: which implementation, and on how many threads.
pub(crate) struct Compute {
    kernel: Kernel,
    pool: Option<Pool>,
}

/// A model computing from its GGUF bytes.
pub(crate) struct NativeModel {
    bytes: Arc<ModelBytes>,
    arch: Box<dyn Architecture>,
    compute: Compute,
    /// The cache behind the single-sequence API tests use ([`NativeModel::forward`]).
    #[cfg(test)]
    solo: SeqKv,
}

impl std::fmt::Debug for NativeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeModel")
            .field("family", &self.arch.family())
            .field("shape", self.arch.shape())
            .field("kernel", &self.compute.kernel)
            .finish_non_exhaustive()
    }
}

fn weights_error(reason: String) -> ModelError {
    ModelError::Weights { reason }
}

pub(crate) fn meta_usize(
    content: &Content,
    key: &'static str,
    default: Option<usize>,
) -> Result<usize, ModelError> {
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

pub(crate) fn meta_f32(content: &Content, key: &'static str, default: f32) -> Result<f32, ModelError> {
    match content.metadata.get(key) {
        Some(v) => v.to_f32().ok().filter(|x| x.is_finite() && *x > 0.0).ok_or_else(|| {
            ModelError::InvalidMetadata { key, reason: format!("expected a positive float, got {v:?}") }
        }),
        None => Ok(default),
    }
}

/// Looks up a 2-D quantized tensor and checks its shape and extent.
pub(crate) fn matrix(
    content: &Content,
    bytes: &[u8],
    name: &str,
    rows: Option<usize>,
    cols: usize,
) -> Result<Matrix, ModelError> {
    let info =
        content.tensor_infos.get(name).ok_or_else(|| weights_error(format!("tensor {name:?} is missing")))?;
    let ty = match info.ty {
        TensorType::Q4_0 => QType::Q4_0,
        TensorType::Q4_1 => QType::Q4_1,
        TensorType::Q5_0 => QType::Q5_0,
        TensorType::Q5_1 => QType::Q5_1,
        TensorType::Q8_0 => QType::Q8_0,
        TensorType::Q4_K => QType::Q4_K,
        TensorType::Q5_K => QType::Q5_K,
        TensorType::Q6_K => QType::Q6_K,
        other => {
            return Err(weights_error(format!(
                "tensor {name:?} has type {other}; the native runtime computes with Q4_0, Q4_1, Q5_0, \
                 Q5_1, Q8_0, Q4_K, Q5_K and Q6_K matrices"
            )))
        }
    };
    if !cols.is_multiple_of(ty.block_values()) {
        return Err(weights_error(format!(
            "tensor {name:?}: rows of {cols} values are not whole {ty:?} blocks of {}",
            ty.block_values()
        )));
    }
    let dims = info.dims.as_slice();
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

/// Reads a 1-D tensor of `len` values (norms, biases), stored as F32, F16 or BF16.
pub(crate) fn vector(
    content: &Content,
    bytes: &[u8],
    name: &str,
    len: usize,
) -> Result<Vec<f32>, ModelError> {
    let info =
        content.tensor_infos.get(name).ok_or_else(|| weights_error(format!("tensor {name:?} is missing")))?;
    let width = match info.ty {
        TensorType::F32 => 4,
        TensorType::F16 | TensorType::BF16 => 2,
        other => {
            return Err(weights_error(format!("tensor {name:?} has type {other}, expected F32, F16 or BF16")))
        }
    };
    if info.dims.as_slice() != [len] {
        return Err(weights_error(format!(
            "tensor {name:?} has shape {:?}, expected [{len}]",
            info.dims.as_slice()
        )));
    }
    let offset = tensor_offset(content, name, info.offset)?;
    check_extent(bytes, name, offset, len * width)?;
    let data = &bytes[offset..offset + len * width];
    Ok(match info.ty {
        TensorType::F32 => {
            data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        TensorType::F16 => (0..len).map(|i| kernels::f16_at(data, 2 * i)).collect(),
        _ => data
            .chunks_exact(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect(),
    })
}

impl NativeModel {
    /// Builds the model over `bytes` (the whole GGUF file, already hashed), computing on
    /// `threads` threads. The architecture comes from `general.architecture`.
    pub(crate) fn new(
        content: &Content,
        bytes: ModelBytes,
        threads: usize,
    ) -> Result<NativeModel, ModelError> {
        let arch = arch::load(content, &bytes)?;
        let kernel = Kernel::from_env().map_err(ModelError::Kernel)?;
        let bytes = Arc::new(bytes);
        let pool = if threads > 1 {
            Some(
                Pool::start(Arc::clone(&bytes), threads)
                    .map_err(|e| weights_error(format!("cannot start {threads} compute threads: {e}")))?,
            )
        } else {
            None
        };
        Ok(NativeModel {
            bytes,
            arch,
            compute: Compute { kernel, pool },
            #[cfg(test)]
            solo: SeqKv::default(),
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

    /// Bytes of KV cache one position of one sequence takes (keys and values, f32, every
    /// layer).
    pub(crate) fn kv_bytes_per_position(&self) -> usize {
        let shape = self.arch.shape();
        shape.layers * shape.kv_dim * 2 * std::mem::size_of::<f32>()
    }

    /// A new, empty cache for one sequence, with memory set aside for `positions`.
    pub(crate) fn new_sequence(&self, positions: usize) -> SeqKv {
        let mut kv = SeqKv::default();
        kv.reserve(self.arch.shape(), positions);
        kv
    }

    /// Positions in the single-sequence cache.
    #[cfg(test)]
    pub(crate) fn cached_positions(&self) -> usize {
        self.solo.positions
    }

    /// Forgets the single-sequence cache and returns its memory.
    #[cfg(test)]
    pub(crate) fn clear_kv_cache(&mut self) {
        self.solo = SeqKv::default();
    }

    /// Runs `tokens` through the model at positions `cached_positions()..` of the single
    /// sequence, appending them to its cache, and returns the logits after the last one.
    #[cfg(test)]
    pub(crate) fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let mut kv = std::mem::take(&mut self.solo);
        let result = self.forward_batch(&mut [SeqStep { kv: &mut kv, tokens, logits: true }]);
        self.solo = kv;
        let mut logits = result?;
        logits.pop().flatten().ok_or_else(|| ModelError::inference("no logits for the sequence"))
    }

    /// One forward step for several sequences at once: each step's tokens are appended to
    /// its own cache, and for each step that asks, the logits after its last token are
    /// returned (in step order; `None` for the others). Every sequence's logits are
    /// bit-identical to running it alone. Nothing is appended anywhere when the batch is
    /// refused (an empty step, a token outside the vocabulary).
    pub(crate) fn forward_batch(
        &self,
        steps: &mut [SeqStep<'_>],
    ) -> Result<Vec<Option<Vec<f32>>>, ModelError> {
        self.forward_rows(steps, false)
    }

    /// One sequence's step that returns the logits after every one of its tokens
    /// (`tokens.len() × vocab`, row by row): what a teacher-forced replay checks a whole
    /// answer against in one pass. Each row's logits are bit-identical to those a decode
    /// step at that position computes.
    pub(crate) fn forward_all_logits(&self, kv: &mut SeqKv, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.forward_rows(&mut [SeqStep { kv, tokens, logits: true }], true)?
            .pop()
            .flatten()
            .ok_or_else(|| ModelError::inference("a forward pass returned no logits"))
    }

    /// [`Self::forward_batch`], with the logits of every row (`all_rows`) or of the last.
    fn forward_rows(
        &self,
        steps: &mut [SeqStep<'_>],
        all_rows: bool,
    ) -> Result<Vec<Option<Vec<f32>>>, ModelError> {
        let shape = self.arch.shape();
        for step in steps.iter() {
            if step.tokens.is_empty() {
                return Err(ModelError::inference("forward pass over no tokens"));
            }
            if let Some(&bad) = step.tokens.iter().find(|&&t| t as usize >= shape.vocab) {
                return Err(ModelError::inference(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    shape.vocab
                )));
            }
        }
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let mut spans = Vec::with_capacity(steps.len());
        let mut rows = 0;
        for step in steps.iter_mut() {
            step.kv.reserve(shape, 0); // (only makes the per-layer vectors; growth is amortised)
            spans.push(Span { rows: rows..rows + step.tokens.len(), start: step.kv.positions });
            rows += step.tokens.len();
        }
        let dim = shape.dim;
        let mut x = vec![0f32; rows * dim];
        for (span, step) in spans.iter().zip(steps.iter()) {
            for (t, &token) in span.rows.clone().zip(step.tokens) {
                self.arch.embed(&self.bytes, token, &mut x[t * dim..(t + 1) * dim]);
            }
        }
        let mut batch = Batch {
            compute: &self.compute,
            bytes: &self.bytes,
            steps,
            spans: &spans,
            rows,
            rope_tables: Vec::new(),
        };
        for layer in 0..shape.layers {
            self.arch.layer(layer, &mut batch, &mut x)?;
        }
        for (span, step) in spans.iter().zip(batch.steps.iter_mut()) {
            step.kv.positions += span.rows.len();
        }

        // Logits for the last row (or every row) of each sequence that wants them, in one
        // product.
        let wanted: Vec<(usize, std::ops::Range<usize>)> = (0..spans.len())
            .filter(|&i| batch.steps[i].logits)
            .map(|i| {
                (i, if all_rows { spans[i].rows.clone() } else { spans[i].rows.end - 1..spans[i].rows.end })
            })
            .collect();
        let out_rows: usize = wanted.iter().map(|(_, r)| r.len()).sum();
        let (norm, output) = self.arch.output();
        let mut normed = vec![0f32; out_rows * dim];
        let mut k = 0;
        for (_, rows) in &wanted {
            for row in rows.clone() {
                rms_norm_rows(
                    &x[row * dim..(row + 1) * dim],
                    norm,
                    shape.eps,
                    &mut normed[k * dim..(k + 1) * dim],
                );
                k += 1;
            }
        }
        let mut acts = vec![ActBlock::default(); out_rows * dim / QK];
        quantize_rows(&normed, dim, &mut acts);
        let mut logits = vec![0f32; out_rows * shape.vocab];
        matmul(&self.compute, &self.bytes, output, &acts, out_rows, &mut logits, &mut Vec::new())?;
        let mut per_seq: Vec<Option<Vec<f32>>> = (0..spans.len()).map(|_| None).collect();
        let mut k = 0;
        for (i, rows) in wanted {
            per_seq[i] = Some(logits[k * shape.vocab..(k + rows.len()) * shape.vocab].to_vec());
            k += rows.len();
        }
        Ok(per_seq)
    }
}

/// Rows of the batch's activation matrix belonging to one sequence, and the position of
/// its first row.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    rows: std::ops::Range<usize>,
    start: usize,
}

/// One forward step in flight: what an architecture's block computes with.
pub(crate) struct Batch<'a, 'b> {
    compute: &'a Compute,
    bytes: &'a [u8],
    steps: &'a mut [SeqStep<'b>],
    spans: &'a [Span],
    /// Activation rows in the batch (tokens of all sequences).
    rows: usize,
    /// RoPE cosines and sines per row, keyed by the address of their frequencies.
    rope_tables: Vec<(usize, Vec<f32>, Vec<f32>)>,
}

impl Batch<'_, '_> {
    /// Activation rows in the batch.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The kernel implementation in use.
    pub(crate) fn kernel(&self) -> Kernel {
        self.compute.kernel
    }

    /// `out[t] = W · acts[t]` for every row `t` of the batch.
    pub(crate) fn matmul(
        &self,
        w: &Matrix,
        acts: &[ActBlock],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        matmul(self.compute, self.bytes, w, acts, self.rows, out, scratch)
    }

    /// Rotates every head of `x` (rows of `width` values, heads of `head_dim`) by its
    /// row's position, with inverse frequencies `inv_freq` (GGUF llama's interleaved pairs).
    /// The angles' cosines and sines are computed once per step for each `inv_freq`.
    pub(crate) fn rope(
        &mut self,
        x: &mut [f32],
        width: usize,
        head_dim: usize,
        inv_freq: &[f32],
        style: RopeStyle,
    ) {
        let key = inv_freq.as_ptr() as usize;
        let index = match self.rope_tables.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                let half = inv_freq.len();
                let (mut cos, mut sin) = (vec![0f32; self.rows * half], vec![0f32; self.rows * half]);
                for span in self.spans {
                    for (i, t) in span.rows.clone().enumerate() {
                        let p = (span.start + i) as f32;
                        for (j, &f) in inv_freq.iter().enumerate() {
                            let angle = p * f;
                            cos[t * half + j] = libm::cosf(angle);
                            sin[t * half + j] = libm::sinf(angle);
                        }
                    }
                }
                self.rope_tables.push((key, cos, sin));
                self.rope_tables.len() - 1
            }
        };
        let (_, cos, sin) = &self.rope_tables[index];
        let half = inv_freq.len();
        for t in 0..self.rows {
            let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
            for head in x[t * width..(t + 1) * width].chunks_exact_mut(head_dim) {
                match style {
                    RopeStyle::Interleaved => rope(head, c, s),
                    RopeStyle::Neox => rope_neox(head, c, s),
                }
            }
        }
    }

    /// Appends every sequence's new keys and values (`k`, `v`: rows of `kv_dim`) to its
    /// cache for `layer`, then computes causal grouped-query attention of its queries `q`
    /// over its own cache into `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend(
        &mut self,
        layer: usize,
        shape: &Shape,
        spec: AttnSpec,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) {
        let (dim, kv_dim) = (shape.q_dim, shape.kv_dim);
        for (span, step) in self.spans.iter().zip(self.steps.iter_mut()) {
            let kv = &mut *step.kv;
            kv.keys[layer].extend_from_slice(&k[span.rows.start * kv_dim..span.rows.end * kv_dim]);
            kv.values[layer].extend_from_slice(&v[span.rows.start * kv_dim..span.rows.end * kv_dim]);
            attention(
                self.compute.kernel,
                shape,
                &q[span.rows.start * dim..span.rows.end * dim],
                &kv.keys[layer],
                &kv.values[layer],
                span.start,
                spec,
                &mut out[span.rows.start * dim..span.rows.end * dim],
            );
        }
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
    if n == 0 {
        return Ok(()); // e.g. the output product of a step of mid-prompt chunks only
    }
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
    let end = first_row + rows;
    let mut r = 0;
    while r + 4 <= rows {
        // The weights stream from DRAM once per step, faster than the CPU's prefetchers
        // fetch them unasked: ask for the group after next now (a few KiB ahead).
        let ahead = (first_row + r + 8).min(end);
        prefetch(&bytes[w.offset + ahead * w.row_bytes()..w.offset + (ahead + 4).min(end) * w.row_bytes()]);
        let four = [0, 1, 2, 3].map(|i| w.row(bytes, first_row + r + i));
        let act = |t: usize| &acts[t * blocks..(t + 1) * blocks];
        let mut t = 0;
        // Eight tokens at a time for the sub-block types, whose weights cost more to unpack
        // (a wider tile shares each unpacked sub-block among more tokens); then four at a
        // time where there are four, then what is left in one call.
        while w.ty.sub_blocked() && n - t >= 8 {
            let acts8 = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| act(t + i));
            store(by_row, n, r, t, dot_rows_tokens(kernel, w.ty, four, acts8));
            t += 8;
        }
        while t < n {
            let take = (n - t).min(4);
            match take {
                4 => store(
                    by_row,
                    n,
                    r,
                    t,
                    dot_rows_tokens(kernel, w.ty, four, [act(t), act(t + 1), act(t + 2), act(t + 3)]),
                ),
                3 => store(
                    by_row,
                    n,
                    r,
                    t,
                    dot_rows_tokens(kernel, w.ty, four, [act(t), act(t + 1), act(t + 2)]),
                ),
                2 => store(by_row, n, r, t, dot_rows_tokens(kernel, w.ty, four, [act(t), act(t + 1)])),
                _ => store(by_row, n, r, t, dot_rows(kernel, w.ty, four, act(t)).map(|v| [v])),
            }
            t += take;
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

/// Writes the products of rows `r..r + R` with tokens `t..t + T` into `by_row` (`[r][t]`,
/// `n` tokens per row).
#[inline]
fn store<const R: usize, const T: usize>(
    by_row: &mut [f32],
    n: usize,
    r: usize,
    t: usize,
    values: [[f32; T]; R],
) {
    for (i, row) in values.iter().enumerate() {
        by_row[(r + i) * n + t..(r + i) * n + t + T].copy_from_slice(row);
    }
}

/// Quantizes each `width`-value row of `x` into consecutive blocks of `acts`.
pub(crate) fn quantize_rows(x: &[f32], width: usize, acts: &mut [ActBlock]) {
    let blocks = width / QK;
    for (row, out) in x.chunks_exact(width).zip(acts.chunks_exact_mut(blocks)) {
        quantize_row(row, out);
    }
}

/// RMSNorm of each row of `x` (rows of `w.len()` values), scaled by `w`, into `out`.
pub(crate) fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (row, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = dot_f32(row, row) / dim as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o = v * scale * g;
        }
    }
}

pub(crate) fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Rotates adjacent pairs of one head (GGUF llama's interleaved RoPE).
/// RoPE over the pairs `(i, i + half)`: the first `cos.len()` values with the next as many.
fn rope_neox(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let (first, second) = head.split_at_mut(cos.len());
    for (((a, b), &c), &s) in first.iter_mut().zip(second.iter_mut()).zip(cos).zip(sin) {
        let (x, y) = (*a, *b);
        *a = x * c - y * s;
        *b = x * s + y * c;
    }
}

fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
    }
}

/// Causal grouped-query attention for the `n` new tokens at positions `start..`, over the
/// cache (which already holds them).
#[allow(clippy::too_many_arguments)] // (the batch's parts, each used once; a struct would only rename them)
fn attention(
    kernel: Kernel,
    cfg: &Shape,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start: usize,
    spec: AttnSpec,
    out: &mut [f32],
) {
    let (dim, hd, kv_dim) = (cfg.q_dim, cfg.head_dim, cfg.kv_dim);
    let mut scores = Vec::with_capacity(start + out.len() / dim);
    let group = cfg.heads / cfg.kv_heads;
    let scale = spec.scale;
    for (t, (q_t, out_t)) in q.chunks_exact(dim).zip(out.chunks_exact_mut(dim)).enumerate() {
        // Positions `first..start + t + 1`: all earlier ones, or the window's.
        let end = start + t + 1;
        let first = spec.window.map_or(0, |w| end.saturating_sub(w));
        let visible = end - first;
        let keys = &keys[first * kv_dim..];
        let values = &values[first * kv_dim..];
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
    use std::path::Path;

    use crate::model::gguf_file::{self, Value};

    use super::*;

    /// The real default model (fetched by scripts/fetch-model.sh; the tests fail without it).
    fn load(threads: usize) -> NativeModel {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-model.sh)", path.display()));
        let content = Content::parse(&bytes).unwrap();
        NativeModel::new(&content, bytes.into(), threads).unwrap()
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

        // Every other kernel this CPU runs, the portable scalar one included.
        for kernel in Kernel::ALL.into_iter().filter(|k| k.supported() && *k != Kernel::detect()) {
            one.clear_kv_cache();
            one.set_kernel(kernel);
            assert_eq!(bits(&one.forward(PROMPT).unwrap()), bits(&reference), "{kernel:?}");
            assert_eq!(bits(&one.forward(&[next]).unwrap()), bits(&after), "{kernel:?}");
        }
    }

    /// Sequence `i` of a batch test: its prompt, when it joins (global step), and how many
    /// prompt tokens it feeds per step.
    struct Plan {
        prompt: Vec<u32>,
        joins: usize,
        chunk: usize,
    }

    /// Every logits vector a sequence produces, run alone: the prompt in one pass, then
    /// `decode` greedy tokens one at a time.
    fn solo_logits(model: &mut NativeModel, prompt: &[u32], decode: usize) -> Vec<Vec<u32>> {
        model.clear_kv_cache();
        let mut out = vec![bits(&model.forward(prompt).unwrap())];
        for _ in 0..decode {
            let last = out.last().unwrap();
            let next = argmax_bits(last);
            out.push(bits(&model.forward(&[next]).unwrap()));
        }
        model.clear_kv_cache();
        out
    }

    fn argmax_bits(logits: &[u32]) -> u32 {
        let values: Vec<f32> = logits.iter().map(|b| f32::from_bits(*b)).collect();
        values.iter().enumerate().fold(0, |b, (i, &x)| if x > values[b] { i } else { b }) as u32
    }

    /// Runs the plans together, one `forward_batch` per global step, and returns each
    /// sequence's logits in order.
    fn batched_logits(model: &NativeModel, plans: &[Plan], decode: usize) -> Vec<Vec<Vec<u32>>> {
        let mut kvs: Vec<SeqKv> = plans.iter().map(|p| model.new_sequence(p.prompt.len() + decode)).collect();
        let mut fed = vec![0usize; plans.len()];
        let mut out: Vec<Vec<Vec<u32>>> = vec![Vec::new(); plans.len()];
        let mut next = vec![[0u32; 1]; plans.len()];
        let mut step = 0;
        while out.iter().any(|o| o.len() < decode + 1) {
            let mut members = Vec::new();
            let mut steps = Vec::new();
            for (i, (kv, plan)) in kvs.iter_mut().zip(plans).enumerate() {
                if step < plan.joins || out[i].len() == decode + 1 {
                    continue;
                }
                let tokens: &[u32] = if fed[i] < plan.prompt.len() {
                    let end = (fed[i] + plan.chunk).min(plan.prompt.len());
                    &plan.prompt[fed[i]..end]
                } else {
                    &next[i]
                };
                let logits = fed[i] + tokens.len() >= plan.prompt.len();
                members.push((i, tokens.len()));
                steps.push(SeqStep { kv, tokens, logits });
            }
            let results = model.forward_batch(&mut steps).unwrap();
            drop(steps);
            for ((i, n), logits) in members.into_iter().zip(results) {
                fed[i] += n;
                if let Some(logits) = logits {
                    let b = bits(&logits);
                    next[i] = [argmax_bits(&b)];
                    out[i].push(b);
                }
            }
            step += 1;
        }
        out
    }

    #[test]
    fn a_sequence_computes_the_same_bits_in_any_batch() {
        let decode = 6;
        let plans = vec![
            Plan { prompt: PROMPT.to_vec(), joins: 0, chunk: 7 },
            Plan { prompt: PROMPT[..20].to_vec(), joins: 2, chunk: 64 },
            Plan { prompt: PROMPT[5..].to_vec(), joins: 3, chunk: 1 },
            Plan { prompt: vec![1, 4093, 198, 19556, 17], joins: 9, chunk: 2 },
            // The same prompt as the first, joining later: caches never mix.
            Plan { prompt: PROMPT.to_vec(), joins: 4, chunk: 11 },
        ];
        let mut solo_model = load(1);
        let solo: Vec<_> = plans.iter().map(|p| solo_logits(&mut solo_model, &p.prompt, decode)).collect();
        for threads in [1, 2] {
            let model = load(threads);
            let batched = batched_logits(&model, &plans, decode);
            for (i, (b, s)) in batched.iter().zip(&solo).enumerate() {
                assert_eq!(b.len(), s.len());
                for (k, (x, y)) in b.iter().zip(s).enumerate() {
                    assert!(x == y, "{threads} threads: sequence {i}, logits {k} differ from its solo run");
                }
            }
        }
        // And a batch that is refused leaves every cache as it was.
        let model = load(1);
        let (mut a, mut b) = (model.new_sequence(4), model.new_sequence(4));
        let bad = model.forward_batch(&mut [
            SeqStep { kv: &mut a, tokens: &[1, 2], logits: true },
            SeqStep { kv: &mut b, tokens: &[49_152], logits: true },
        ]);
        assert!(matches!(bad, Err(ModelError::Inference { .. })));
        assert_eq!((a.positions(), b.positions()), (0, 0));
    }

    /// A tensor of the tiny model: name, type, dims (outermost first), data.
    type TinyTensor = (String, TensorType, Vec<usize>, Vec<u8>);

    /// `rows × cols` values of type `ty` (Q8_0, Q4_0, Q4_1, F16 or F32): random quantized
    /// blocks (scales of about 1/256 per quant step, so activations stay of order one), or
    /// ones for the float types (the norms).
    fn tiny_tensor(name: String, ty: TensorType, dims: &[usize], seed: &mut u32) -> TinyTensor {
        let mut next = || {
            *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (*seed >> 8) as u8
        };
        let values: usize = dims.iter().product();
        let scale = |x: u8| half::f16::from_f32((f32::from(x) + 1.0) / 16_384.0).to_le_bytes();
        let mut data = Vec::new();
        match ty {
            TensorType::F32 => (0..values).for_each(|_| data.extend(1f32.to_le_bytes())),
            TensorType::F16 => (0..values).for_each(|_| data.extend(half::f16::ONE.to_le_bytes())),
            _ => {
                for _ in 0..values / 32 {
                    data.extend(scale(next()));
                    if ty == TensorType::Q4_1 {
                        data.extend(half::f16::from_f32(-(f32::from(next()) / 2048.0)).to_le_bytes());
                    }
                    let quants = if ty == TensorType::Q8_0 { 32 } else { 16 };
                    (0..quants).for_each(|_| data.push(next()));
                }
            }
        }
        (name, ty, dims.to_vec(), data)
    }

    /// A tiny random llama GGUF (4 heads of 16 sharing 2 key/value heads, 2 layers,
    /// 64-token vocabulary), with `edit` applied to its tensors and metadata before writing.
    fn tiny_gguf(edit: impl FnOnce(&mut Vec<TinyTensor>, &mut Vec<(String, Value)>)) -> Vec<u8> {
        let (dim, kv, ffn, vocab) = (64usize, 32usize, 128usize, 64usize);
        let mut seed = 7u32;
        let mut tensors = vec![
            tiny_tensor("token_embd.weight".to_owned(), TensorType::Q8_0, &[vocab, dim], &mut seed),
            tiny_tensor("output_norm.weight".to_owned(), TensorType::F32, &[dim], &mut seed),
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
                let ty = if name == "attn_v" { TensorType::Q4_0 } else { TensorType::Q4_1 };
                tensors.push(tiny_tensor(format!("blk.{i}.{name}.weight"), ty, &[rows, cols], &mut seed));
            }
            for norm in ["attn_norm", "ffn_norm"] {
                tensors.push(tiny_tensor(
                    format!("blk.{i}.{norm}.weight"),
                    TensorType::F32,
                    &[dim],
                    &mut seed,
                ));
            }
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
        let meta: Vec<(&str, Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let tens: Vec<(&str, TensorType, &[usize], &[u8])> =
            tensors.iter().map(|(n, ty, d, data)| (n.as_str(), *ty, d.as_slice(), data.as_slice())).collect();
        gguf_file::write(&meta, &tens)
    }

    fn tiny(bytes: Vec<u8>) -> Result<NativeModel, ModelError> {
        let content = Content::parse(&bytes).unwrap();
        NativeModel::new(&content, bytes.into(), 1)
    }

    /// candle reads the file Vouch's writer wrote and computes nearly the same logits.
    #[cfg(feature = "candle")]
    #[test]
    fn tiny_model_agrees_with_candle() {
        use std::io::Cursor;

        use candle_core::quantized::gguf_file;
        use candle_core::{Device, Tensor};
        use candle_transformers::models::quantized_llama::ModelWeights;
        let bytes = tiny_gguf(|_, _| {});
        let tokens = [3u32, 14, 15, 9, 26, 53, 58, 9, 7, 9];
        let mut ours = tiny(bytes.clone()).unwrap();
        let native = ours.forward(&tokens).unwrap();
        let content = gguf_file::Content::read(&mut Cursor::new(&bytes)).unwrap();
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
            let i = t.iter().position(|(n, ..)| n == "blk.1.ffn_up.weight").unwrap();
            t[i] = tiny_tensor(t[i].0.clone(), TensorType::F16, &t[i].2.clone(), &mut 1);
        });
        let err = tiny(f16).unwrap_err().to_string();
        assert!(err.contains("\"blk.1.ffn_up.weight\" has type F16"), "{err}");

        let missing = tiny_gguf(|t, _| t.retain(|(n, ..)| n != "blk.0.attn_k.weight"));
        assert_eq!(
            tiny(missing).unwrap_err().to_string(),
            "cannot build model weights: tensor \"blk.0.attn_k.weight\" is missing"
        );

        let swapped = tiny_gguf(|t, _| {
            let q = t.iter().position(|(n, ..)| n == "blk.0.attn_q.weight").unwrap();
            let k = t.iter().position(|(n, ..)| n == "blk.0.attn_k.weight").unwrap();
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
