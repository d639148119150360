//! The AVX2 + FMA + F16C kernels (trusted side, inside the enclave): each function performs
//! exactly the arithmetic of its scalar twin in [`super`], eight lanes at a time, so the two
//! give bit-identical results. Only reached through [`super::Kernel::Avx2`], which
//! [`super::Kernel::detect`] produces after checking the CPU.

use std::arch::x86_64::*;

use super::{k_scales, ActBlock, QType, EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2_E};

/// Eight `super::exp`s, operation for operation.
#[target_feature(enable = "avx2")]
#[inline]
fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)), _mm256_set1_ps(EXP_MAX));
    let t = _mm256_mul_ps(x, _mm256_set1_ps(LOG2_E));
    let half = _mm256_or_ps(_mm256_and_ps(t, _mm256_set1_ps(-0.0)), _mm256_set1_ps(0.5));
    let n = _mm256_cvttps_epi32(_mm256_add_ps(t, half));
    let nf = _mm256_cvtepi32_ps(n);
    let r = _mm256_sub_ps(
        _mm256_sub_ps(x, _mm256_mul_ps(nf, _mm256_set1_ps(LN2_HI))),
        _mm256_mul_ps(nf, _mm256_set1_ps(LN2_LO)),
    );
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
    }
    let e = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1.0));
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
    _mm256_mul_ps(e, scale)
}

/// `super::exp_shifted`, eight at a time.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn exp_shifted(xs: &mut [f32], shift: f32) {
    let s = _mm256_set1_ps(shift);
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` holds 8 floats.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), s))) };
    }
    for x in chunks.into_remainder() {
        *x = super::exp(*x - shift);
    }
}

/// `super::silu_mul`, eight at a time.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n ≤ both lengths.
        unsafe {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let y =
                _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up.as_ptr().add(i)));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), y);
        }
        i += 8;
    }
    for (g, &u) in gate[i..n].iter_mut().zip(&up[i..n]) {
        *g = *g / (1.0 + super::exp(-*g)) * u;
    }
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;
pub(super) const Q5_0: u8 = 3;
pub(super) const Q5_1: u8 = 4;
pub(super) const Q4_K: u8 = 5;
pub(super) const Q5_K: u8 = 6;
pub(super) const Q6_K: u8 = 7;

/// `dot_f32` with one 8-lane register: multiply, then add (no fusing), same tree.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n ≤ both lengths.
        let (x, y) = unsafe { (_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i))) };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(x, y));
        i += 8;
    }
    let mut tail = 0f32;
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        tail += x * y;
    }
    hsum(acc) + tail
}

/// `super::attention_scores` in one call: no per-position dispatch.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn attention_scores(
    q: &[f32],
    keys: &[f32],
    stride: usize,
    offset: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let hd = q.len();
    for (p, score) in scores.iter_mut().enumerate() {
        *score = dot_f32(q, &keys[p * stride + offset..p * stride + offset + hd]) * scale;
    }
}

/// `super::attention_values` (on a zeroed `out`), 32 outputs at a time held in
/// registers across all positions; each output still sums its products in position
/// order, multiply then add.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn attention_values(
    weights: &[f32],
    values: &[f32],
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    let hd = out.len();
    let full = hd / 32 * 32;
    for c in (0..full).step_by(32) {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (p, &w) in weights.iter().enumerate() {
            let value = &values[p * stride + offset + c..p * stride + offset + c + 32];
            let wv = _mm256_set1_ps(w);
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: `value` holds 32 floats; lane group j reads 8 from 8·j.
                let v = unsafe { _mm256_loadu_ps(value.as_ptr().add(8 * j)) };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, v));
            }
        }
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: `out` holds `hd` ≥ c + 32 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * j), *a) };
        }
    }
    if full < hd {
        for (p, &w) in weights.iter().enumerate() {
            let value = &values[p * stride + offset + full..p * stride + offset + hd];
            for (o, &v) in out[full..].iter_mut().zip(value) {
                *o += w * v;
            }
        }
    }
}

/// Sums eight lanes: halves, then pairs, then one (`reduce8`'s order). The AVX-512 kernels
/// reduce each row's eight lanes with it too.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn hsum(acc: __m256) -> f32 {
    let halves = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)))
}

/// Dispatches on the weight type once per call, so the block loop has no branches.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_rows<const R: usize>(ty: QType, rows: [&[u8]; R], act: &[ActBlock]) -> [f32; R] {
    // SAFETY: the caller guarantees the CPU features.
    unsafe {
        match ty {
            QType::Q4_0 => dot_rows_typed::<R, Q4_0>(rows, act),
            QType::Q4_1 => dot_rows_typed::<R, Q4_1>(rows, act),
            QType::Q8_0 => dot_rows_typed::<R, Q8_0>(rows, act),
            QType::Q5_0 => rows.map(|row| dot_sub_tokens::<1, Q5_0>(row, [act])[0]),
            QType::Q5_1 => rows.map(|row| dot_sub_tokens::<1, Q5_1>(row, [act])[0]),
            QType::Q4_K => rows.map(|row| dot_sub_tokens::<1, Q4_K>(row, [act])[0]),
            QType::Q5_K => rows.map(|row| dot_sub_tokens::<1, Q5_K>(row, [act])[0]),
            QType::Q6_K => rows.map(|row| dot_sub_tokens::<1, Q6_K>(row, [act])[0]),
        }
    }
}

/// Dot products of `R` weight rows of type `TY` with the same activations, interleaved
/// so that the rows' accumulators form `R` independent dependency chains and each
/// activation block is loaded once. Each row's arithmetic is exactly `dot_scalar`'s.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_rows_typed<const R: usize, const TY: u8>(rows: [&[u8]; R], act: &[ActBlock]) -> [f32; R] {
    let bb = match TY {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    };
    let ones = _mm256_set1_epi16(1);
    let low_nibbles = _mm256_set1_epi8(0x0F);
    // Lane 1 of the scales becomes the Q4 offset m: Q4_1 stores it next to d; Q4_0's
    // is −8·d, made by multiplying the broadcast d by (1, −8).
    let q4_0_offset = _mm_setr_ps(1.0, -8.0, 0.0, 0.0);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut offsets = [_mm_setzero_ps(); R];
    // Every block read below lies inside these slices (the one bounds check per row).
    let rows = rows.map(|row| row[..act.len() * bb].as_ptr());
    for (b, a) in act.iter().enumerate() {
        // SAFETY: `a.q` is 32 bytes; loadu has no alignment requirement.
        let y = unsafe { _mm256_loadu_si256(a.q.as_ptr().cast()) };
        let act_scales = _mm_setr_ps(a.d, a.s, 0.0, 0.0);
        for r in 0..R {
            // SAFETY: block `b` of a row of `act.len()` blocks: in bounds (checked above).
            let block = unsafe { rows[r].add(b * bb) };
            // SAFETY: every block type is at least 18 bytes; unaligned read.
            let half_pair = unsafe { block.cast::<i32>().read_unaligned() };
            let mut scales = _mm_cvtph_ps(_mm_cvtsi32_si128(half_pair));
            let products = if TY == Q8_0 {
                // SAFETY: a Q8_0 block is 34 bytes: 32 quants from byte 2.
                let x = unsafe { _mm256_loadu_si256(block.add(2).cast()) };
                // u8 × i8 multiply: |x| times y with x's sign. |−128| = 128 as u8,
                // and no pair sum can saturate i16 because |y| ≤ 127.
                _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
            } else {
                let start = if TY == Q4_1 { 4 } else { 2 };
                if TY == Q4_0 {
                    scales = _mm_mul_ps(_mm_broadcastss_ps(scales), q4_0_offset);
                }
                // SAFETY: a Q4 block holds 16 packed bytes from `start`.
                let packed = unsafe { _mm_loadu_si128(block.add(start).cast()) };
                let high = _mm_srli_epi16(packed, 4);
                _mm256_maddubs_epi16(_mm256_and_si256(_mm256_set_m128i(high, packed), low_nibbles), y)
            };
            // (d·a.d, m·a.s): lane 0 scales this block's sums, lane 1 accumulates the
            // offset term exactly as the scalar kernel's `offset_sum += m * a.s`.
            let scaled = _mm_mul_ps(scales, act_scales);
            if TY != Q8_0 {
                offsets[r] = _mm_add_ps(offsets[r], scaled);
            }
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(products, ones));
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(scaled), sums, acc[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        let offset = if TY == Q8_0 { 0.0 } else { _mm_cvtss_f32(_mm_shuffle_ps(offsets[r], offsets[r], 1)) };
        out[r] = hsum(acc[r]) + offset;
    }
    out
}

/// [`dot_rows`] for `T` tokens at once: `out[r][t]` is row `r` times activations `acts[t]`,
/// bit-identical to `dot_scalar` on that row and token. Row by row, each block is unpacked
/// and its scales converted once for all `T` tokens (a batched step, a prompt's tokens or
/// a replay's are then cheaper per token than `T` single-token products). One row at a
/// time, not two: with two rows' `T` accumulators the 16 registers spill (measured: the
/// single-row loop replays 20% faster). Every `acts[t]` has the same length.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_rows_tokens<const R: usize, const T: usize>(
    ty: QType,
    rows: [&[u8]; R],
    acts: [&[ActBlock]; T],
) -> [[f32; T]; R] {
    // SAFETY: the caller guarantees the CPU features.
    unsafe {
        match ty {
            QType::Q4_0 => dot_rows_tokens_typed::<R, T, Q4_0>(rows, acts),
            QType::Q4_1 => dot_rows_tokens_typed::<R, T, Q4_1>(rows, acts),
            QType::Q8_0 => dot_rows_tokens_typed::<R, T, Q8_0>(rows, acts),
            QType::Q5_0 => rows.map(|row| dot_sub_tokens::<T, Q5_0>(row, acts)),
            QType::Q5_1 => rows.map(|row| dot_sub_tokens::<T, Q5_1>(row, acts)),
            QType::Q4_K => rows.map(|row| dot_sub_tokens::<T, Q4_K>(row, acts)),
            QType::Q5_K => rows.map(|row| dot_sub_tokens::<T, Q5_K>(row, acts)),
            QType::Q6_K => rows.map(|row| dot_sub_tokens::<T, Q6_K>(row, acts)),
        }
    }
}

/// See [`dot_rows_tokens`]. Per row, token and block the arithmetic is `dot_scalar`'s:
/// `d = dw·a.d` (one f32 product), the lanes' `fma(d, isum, acc)`, and `offset += m·a.s`
/// as a separate f32 product and sum.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_rows_tokens_typed<const R: usize, const T: usize, const TY: u8>(
    rows: [&[u8]; R],
    acts: [&[ActBlock]; T],
) -> [[f32; T]; R] {
    let bb = match TY {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    };
    let blocks = acts[0].len();
    let ones = _mm256_set1_epi16(1);
    let low_nibbles = _mm256_set1_epi8(0x0F);
    // Every block read below lies inside these slices (one bounds check per row and token).
    let rows = rows.map(|row| row[..blocks * bb].as_ptr());
    let acts = acts.map(|a| a[..blocks].as_ptr());
    let mut out = [[0f32; T]; R];
    for (r, row) in rows.into_iter().enumerate() {
        let mut acc = [_mm256_setzero_ps(); T];
        let mut offsets = [0f32; T];
        for b in 0..blocks {
            // SAFETY: block `b` of a row of `blocks` blocks (checked above); every block
            // type is at least 18 bytes; unaligned reads.
            let block = unsafe { row.add(b * bb) };
            let half_pair = unsafe { block.cast::<i32>().read_unaligned() };
            let scales = _mm_cvtph_ps(_mm_cvtsi32_si128(half_pair));
            let dw = _mm_cvtss_f32(scales);
            // The Q4 offset m: Q4_1 stores it next to d; Q4_0's is −8·d.
            let m = match TY {
                Q4_0 => dw * -8.0,
                Q4_1 => _mm_cvtss_f32(_mm_shuffle_ps(scales, scales, 1)),
                _ => 0.0,
            };
            // The weights, unpacked once for every token: Q4 nibbles as u8, or Q8 quants'
            // magnitudes (their signs go onto each token's activations).
            let (w, signs) = if TY == Q8_0 {
                // SAFETY: a Q8_0 block is 34 bytes: 32 quants from byte 2.
                let x = unsafe { _mm256_loadu_si256(block.add(2).cast()) };
                (_mm256_sign_epi8(x, x), x)
            } else {
                let start = if TY == Q4_1 { 4 } else { 2 };
                // SAFETY: a Q4 block holds 16 packed bytes from `start`.
                let packed = unsafe { _mm_loadu_si128(block.add(start).cast()) };
                let high = _mm_srli_epi16(packed, 4);
                (_mm256_and_si256(_mm256_set_m128i(high, packed), low_nibbles), low_nibbles)
            };
            for t in 0..T {
                // SAFETY: activation block `b` of `blocks` (checked above).
                let a = unsafe { &*acts[t].add(b) };
                // SAFETY: `a.q` is 32 bytes; loadu has no alignment requirement.
                let y = unsafe { _mm256_loadu_si256(a.q.as_ptr().cast()) };
                let y = if TY == Q8_0 { _mm256_sign_epi8(y, signs) } else { y };
                let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w, y), ones));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), sums, acc[t]);
                if TY != Q8_0 {
                    offsets[t] += m * a.s;
                }
            }
        }
        for t in 0..T {
            out[r][t] = hsum(acc[t]) + offsets[t];
        }
    }
    out
}

/// Bytes of one stored block of the sub-block types.
pub(super) const fn sub_block_bytes(ty: u8) -> usize {
    match ty {
        Q5_0 => 22,
        Q5_1 => 24,
        Q4_K => 144,
        Q5_K => 176,
        _ => 210,
    }
}

/// Sub-blocks of 32 values in one stored block.
pub(super) const fn sub_blocks(ty: u8) -> usize {
    match ty {
        Q5_0 | Q5_1 => 1,
        _ => 8,
    }
}

/// 32 bytes, each 0x10 where the matching bit of `bits` is set, else 0 (the fifth bit
/// of 32 Q5 values).
#[target_feature(enable = "avx2")]
#[inline]
fn fifth_bits(bits: u32) -> __m256i {
    // Byte i takes byte i / 8 of `bits`, then keeps bit i % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The 32 quants of sub-block `j` of `block`, in value order, as `super::unpack` makes
/// them: unsigned bytes for the Q5 and Q4_K / Q5_K types, and `q6 − 32` as signed bytes
/// for Q6_K (its two group scales are applied to the integer sums, see
/// [`dot_sub_tokens`]).
///
/// # Safety
/// The CPU must support AVX2; `block` holds one whole block of type `TY`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn sub_quants<const TY: u8>(block: &[u8], j: usize) -> __m256i {
    let p = block[..sub_block_bytes(TY)].as_ptr();
    let low = _mm256_set1_epi8(0x0F);
    // SAFETY (every read): inside the block, whose length was checked above.
    unsafe {
        match TY {
            Q5_0 | Q5_1 => {
                let at = if TY == Q5_1 { 4 } else { 2 };
                let packed = _mm_loadu_si128(p.add(at + 4).cast());
                let nibbles = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low);
                _mm256_or_si256(nibbles, fifth_bits(p.add(at).cast::<u32>().read_unaligned()))
            }
            Q4_K | Q5_K => {
                let base = if TY == Q4_K { 16 } else { 48 };
                let packed = _mm256_loadu_si256(p.add(base + 32 * (j / 2)).cast());
                let q =
                    _mm256_and_si256(_mm256_srl_epi16(packed, _mm_cvtsi32_si128(4 * (j % 2) as i32)), low);
                if TY == Q4_K {
                    q
                } else {
                    let high = _mm256_loadu_si256(p.add(16).cast());
                    let bit = _mm256_and_si256(
                        _mm256_srl_epi16(high, _mm_cvtsi32_si128(j as i32)),
                        _mm256_set1_epi8(1),
                    );
                    _mm256_or_si256(q, _mm256_slli_epi16(bit, 4))
                }
            }
            _ => {
                let (half, k) = (j / 4, j % 4);
                let ql = _mm256_loadu_si256(p.add(64 * half + 32 * (k % 2)).cast());
                let ql = _mm256_and_si256(_mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (k / 2) as i32)), low);
                let qh = _mm256_loadu_si256(p.add(128 + 32 * half).cast());
                let qh = _mm256_and_si256(
                    _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32)),
                    _mm256_set1_epi8(3),
                );
                _mm256_sub_epi8(_mm256_or_si256(ql, _mm256_slli_epi16(qh, 4)), _mm256_set1_epi8(32))
            }
        }
    }
}

/// Sub-block `j`'s scale `dw` and offset `m`, from the block's scales (decoded once per
/// block into `k`: `super::k_scales` for Q4_K / Q5_K).
#[inline(always)]
pub(super) fn sub_scale<const TY: u8>(block: &[u8], k: &([f32; 8], [f32; 8]), j: usize) -> (f32, f32) {
    match TY {
        Q5_0 => {
            let d = super::f16_at(block, 0);
            (d, -16.0 * d)
        }
        Q5_1 => (super::f16_at(block, 0), super::f16_at(block, 2)),
        Q4_K | Q5_K => (k.0[j], k.1[j]),
        _ => (super::f16_at(block, 208), 0.0),
    }
}

/// Q6_K sub-block `j`'s two group scales, as the multipliers of its integer lanes
/// (lanes 0–3 sum values 0..16, lanes 4–7 values 16..32).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn q6k_lane_scales(block: &[u8], j: usize) -> __m256i {
    let (_, _, [a, b]) = super::q6k_parts(block, j);
    let (a, b) = (i32::from(a), i32::from(b));
    _mm256_setr_epi32(a, a, a, a, b, b, b, b)
}

/// One weight row of a sub-block type `TY` times `T` tokens' activations: each sub-block
/// is unpacked once for all tokens. Per token the arithmetic is exactly `dot_scalar`'s.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; every `acts[t]` has the row's sub-block count.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn dot_sub_tokens<const T: usize, const TY: u8>(
    row: &[u8],
    acts: [&[ActBlock]; T],
) -> [f32; T] {
    let (bb, subs) = (sub_block_bytes(TY), sub_blocks(TY));
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    let mut offsets = [0f32; T];
    let no_scales = ([0f32; 8], [0f32; 8]);
    for (b, block) in row.chunks_exact(bb).enumerate() {
        let k = if TY == Q4_K || TY == Q5_K { k_scales(block) } else { no_scales };
        for j in 0..subs {
            // SAFETY: `block` is one whole block; the caller guarantees the CPU features.
            let w = unsafe { sub_quants::<TY>(block, j) };
            let (dw, m) = sub_scale::<TY>(block, &k, j);
            let magnitudes = if TY == Q6_K { _mm256_sign_epi8(w, w) } else { w };
            let lane_scales = if TY == Q6_K { q6k_lane_scales(block, j) } else { _mm256_setzero_si256() };
            for t in 0..T {
                let a = &acts[t][b * subs + j];
                // SAFETY: `a.q` is 32 bytes; loadu has no alignment requirement.
                let y = unsafe { _mm256_loadu_si256(a.q.as_ptr().cast()) };
                let y = if TY == Q6_K { _mm256_sign_epi8(y, w) } else { y };
                let mut sums = _mm256_madd_epi16(_mm256_maddubs_epi16(magnitudes, y), ones);
                if TY == Q6_K {
                    sums = _mm256_mullo_epi32(sums, lane_scales);
                } else {
                    offsets[t] += m * a.s;
                }
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), _mm256_cvtepi32_ps(sums), acc[t]);
            }
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum(acc[t]) + offsets[t];
    }
    out
}
