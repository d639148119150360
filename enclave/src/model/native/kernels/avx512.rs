//! The AVX-512 (F, BW, VL, VNNI) kernels (trusted side, inside the enclave): each function
//! performs exactly the arithmetic of its scalar twin in [`super`], so all three kernel
//! sets give bit-identical results. Only reached through [`super::Kernel::Avx512`], which
//! [`super::Kernel::detect`] produces after checking the CPU (Genoa and Turin have it).
//!
//! The scalar contract is eight f32 lanes per weight row, lane `k` accumulating the exact
//! integer sum of values `4k..4k+4` of each block scaled by one fused multiply-add. A
//! 512-bit register holds two rows' eight lanes side by side, so each row keeps its own
//! lanes and its own order of operations; VNNI's `vpdpbusd` forms the four-product integer
//! sums in one instruction where AVX2 needs `maddubs` and `madd` (both exact here: no sum
//! comes near i16 or i32 limits). Attention values and the element-wise functions are 16
//! independent outputs at a time, each computed as the scalar code computes it.

use std::arch::x86_64::*;

use super::avx2::{self, hsum, q6k_lane_scales, sub_block_bytes, sub_blocks, sub_quants, sub_scale};
use super::avx2::{Q4_K, Q5_0, Q5_1, Q5_K, Q6_K};
use super::{k_scales, ActBlock, QType, EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2_E};

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// Sixteen `super::exp`s, operation for operation (as `avx2::exp8`).
#[target_feature(enable = "avx512f")]
#[inline]
fn exp16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_MIN)), _mm512_set1_ps(EXP_MAX));
    let t = _mm512_mul_ps(x, _mm512_set1_ps(LOG2_E));
    let sign = _mm512_and_si512(_mm512_castps_si512(t), _mm512_set1_epi32(i32::MIN));
    let half = _mm512_castsi512_ps(_mm512_or_si512(sign, _mm512_castps_si512(_mm512_set1_ps(0.5))));
    let n = _mm512_cvttps_epi32(_mm512_add_ps(t, half));
    let nf = _mm512_cvtepi32_ps(n);
    let r = _mm512_sub_ps(
        _mm512_sub_ps(x, _mm512_mul_ps(nf, _mm512_set1_ps(LN2_HI))),
        _mm512_mul_ps(nf, _mm512_set1_ps(LN2_LO)),
    );
    let mut p = _mm512_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c));
    }
    let e = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1.0));
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23));
    _mm512_mul_ps(e, scale)
}

/// `super::exp_shifted`, sixteen at a time.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp_shifted(xs: &mut [f32], shift: f32) {
    let s = _mm512_set1_ps(shift);
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        // SAFETY: `c` holds 16 floats.
        unsafe { _mm512_storeu_ps(c.as_mut_ptr(), exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), s))) };
    }
    for x in chunks.into_remainder() {
        *x = super::exp(*x - shift);
    }
}

/// `super::silu_mul`, sixteen at a time.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n ≤ both lengths.
        unsafe {
            let g = _mm512_loadu_ps(gate.as_ptr().add(i));
            let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let y =
                _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up.as_ptr().add(i)));
            _mm512_storeu_ps(gate.as_mut_ptr().add(i), y);
        }
        i += 16;
    }
    for (g, &u) in gate[i..n].iter_mut().zip(&up[i..n]) {
        *g = *g / (1.0 + super::exp(-*g)) * u;
    }
}

/// `super::attention_values` (on a zeroed `out`), 64 outputs at a time held in registers
/// across all positions; each output sums its products in position order, multiply then
/// add. A head narrower than 64 values goes to the AVX2 version.
///
/// # Safety
/// The CPU must support AVX-512F and AVX2.
#[target_feature(enable = "avx512f,avx2")]
pub(super) unsafe fn attention_values(
    weights: &[f32],
    values: &[f32],
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    let hd = out.len();
    let full = hd / 64 * 64;
    for c in (0..full).step_by(64) {
        let mut acc = [_mm512_setzero_ps(); 4];
        for (p, &w) in weights.iter().enumerate() {
            let value = &values[p * stride + offset + c..p * stride + offset + c + 64];
            let wv = _mm512_set1_ps(w);
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: `value` holds 64 floats; lane group j reads 16 from 16·j.
                let v = unsafe { _mm512_loadu_ps(value.as_ptr().add(16 * j)) };
                *a = _mm512_add_ps(*a, _mm512_mul_ps(wv, v));
            }
        }
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: `out` holds `hd` ≥ c + 64 floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(c + 16 * j), *a) };
        }
    }
    if full < hd {
        // SAFETY: the caller guarantees AVX2 (every AVX-512 CPU has it).
        unsafe { avx2::attention_values(weights, values, stride, offset + full, &mut out[full..]) };
    }
}

/// Dot products of `R` weight rows with the same activations: an even number of rows in
/// pairs through [`dot_rows_tokens`] (one token), an odd number row by row, each in a
/// 256-bit register; the sub-block types row by row through [`dot_sub_tokens`]. Each row's arithmetic is exactly `dot_scalar`'s.
///
/// # Safety
/// The CPU must support AVX-512F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot_rows<const R: usize>(ty: QType, rows: [&[u8]; R], act: &[ActBlock]) -> [f32; R] {
    // SAFETY: the caller guarantees the CPU features.
    unsafe {
        if R.is_multiple_of(2) || !ty.pairs_rows() {
            return dot_rows_tokens::<R, 1>(ty, rows, [act]).map(|[value]| value);
        }
        rows.map(|row| match ty {
            QType::Q4_0 => dot_row_typed::<Q4_0>(row, act),
            QType::Q4_1 => dot_row_typed::<Q4_1>(row, act),
            QType::Q8_0 => dot_row_typed::<Q8_0>(row, act),
            QType::Q5_0 => dot_sub_tokens::<1, Q5_0>(row, [act])[0],
            QType::Q5_1 => dot_sub_tokens::<1, Q5_1>(row, [act])[0],
            QType::Q4_K => dot_sub_tokens::<1, Q4_K>(row, [act])[0],
            QType::Q5_K => dot_sub_tokens::<1, Q5_K>(row, [act])[0],
            QType::Q6_K => dot_sub_tokens::<1, Q6_K>(row, [act])[0],
        })
    }
}

/// The 32 weight quants of one block as bytes in value order (what `vpdpbusd` multiplies
/// with the activations' 32 bytes): unsigned 0..16 for Q4, `|q|` for Q8_0.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
unsafe fn quants256<const TY: u8>(block: *const u8) -> __m256i {
    if TY == Q8_0 {
        // SAFETY: a Q8_0 block is 34 bytes: 32 quants from byte 2.
        _mm256_abs_epi8(unsafe { _mm256_loadu_si256(block.add(2).cast()) })
    } else {
        let start = if TY == Q4_1 { 4 } else { 2 };
        // SAFETY: a Q4 block holds 16 packed bytes from `start`.
        let packed = unsafe { _mm_loadu_si128(block.add(start).cast()) };
        let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }
}

/// The activations with each Q8_0 weight's sign moved onto them (so that `|w|·(±y)` is
/// `w·y`); the activations themselves for Q4.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
unsafe fn signed_act<const TY: u8>(block: *const u8, y: __m256i) -> __m256i {
    if TY == Q8_0 {
        // SAFETY: as in `quants256`.
        let x = unsafe { _mm256_loadu_si256(block.add(2).cast()) };
        _mm256_mask_sub_epi8(y, _mm256_movepi8_mask(x), _mm256_setzero_si256(), y)
    } else {
        y
    }
}

/// One weight row of type `TY` times the activations, in one 256-bit register: exactly
/// `dot_scalar`'s arithmetic.
///
/// # Safety
/// The CPU must support AVX-512F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn dot_row_typed<const TY: u8>(row: &[u8], act: &[ActBlock]) -> f32 {
    let bb = match TY {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    };
    // Q4_0's offset is −8·d: the broadcast d times (1, −8).
    let q4_0_offset = _mm_setr_ps(1.0, -8.0, 1.0, -8.0);
    let mut acc = _mm256_setzero_ps();
    let mut offset = _mm_setzero_ps();
    // Every block read below lies inside this slice (the one bounds check).
    let row = row[..act.len() * bb].as_ptr();
    for (b, a) in act.iter().enumerate() {
        // SAFETY: block `b` of a row of `act.len()` blocks: in bounds (checked above); every
        // block type is at least 18 bytes; `a.q` is 32 bytes; the reads are unaligned.
        unsafe {
            let block = row.add(b * bb);
            let y = _mm256_loadu_si256(a.q.as_ptr().cast());
            let mut scales = _mm_cvtph_ps(_mm_cvtsi32_si128(block.cast::<i32>().read_unaligned()));
            if TY == Q4_0 {
                scales = _mm_mul_ps(_mm_moveldup_ps(scales), q4_0_offset);
            }
            // (d·a.d, m·a.s): the block scale, and the offset term exactly as the scalar
            // kernel's `offset_sum += m * a.s`.
            let scaled = _mm_mul_ps(scales, _mm_setr_ps(a.d, a.s, 0.0, 0.0));
            if TY != Q8_0 {
                offset = _mm_add_ps(offset, scaled);
            }
            let products = _mm256_dpbusd_epi32(
                _mm256_setzero_si256(),
                quants256::<TY>(block),
                signed_act::<TY>(block, y),
            );
            acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(scaled), _mm256_cvtepi32_ps(products), acc);
        }
    }
    let m = if TY == Q8_0 { 0.0 } else { _mm_cvtss_f32(_mm_shuffle_ps(offset, offset, 1)) };
    hsum(acc) + m
}

/// [`dot_rows`] for `T` tokens at once: `out[r][t]` is row `r` times activations `acts[t]`,
/// bit-identical to `dot_scalar` on that row and token. Each pair of weight rows is
/// unpacked and its scales converted once per block for all `T` tokens, which is what makes
/// a batched step (several sequences, or a prompt's tokens) cheaper per token than `T`
/// single-token products. `R` must be even; every `acts[t]` has the same length.
///
/// # Safety
/// The CPU must support AVX-512F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
            QType::Q5_0 => sub_rows_tokens::<R, T, Q5_0>(rows, acts),
            QType::Q5_1 => sub_rows_tokens::<R, T, Q5_1>(rows, acts),
            QType::Q4_K => sub_rows_tokens::<R, T, Q4_K>(rows, acts),
            QType::Q5_K => sub_rows_tokens::<R, T, Q5_K>(rows, acts),
            QType::Q6_K => sub_rows_tokens::<R, T, Q6_K>(rows, acts),
        }
    }
}

/// See [`dot_rows_tokens`].
///
/// # Safety
/// The CPU must support AVX-512F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn dot_rows_tokens_typed<const R: usize, const T: usize, const TY: u8>(
    rows: [&[u8]; R],
    acts: [&[ActBlock]; T],
) -> [[f32; T]; R] {
    debug_assert!(R.is_multiple_of(2), "rows go in pairs (the dispatcher sends only even R)");
    let bb = match TY {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    };
    let blocks = acts[0].len();
    let q4_0_offset = _mm_setr_ps(1.0, -8.0, 1.0, -8.0);
    let pair_scale = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    // [A, A, B, B] by 64-bit lanes, then the high nibbles of the second and fourth copies.
    let spread = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);
    let nibble_shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
    let low_nibbles = _mm512_set1_epi8(0x0F);
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut offsets = [[_mm_setzero_ps(); T]; R];
    // Every block read below lies inside these slices (one bounds check per row and token).
    let rows = rows.map(|row| row[..blocks * bb].as_ptr());
    let acts = acts.map(|a| a[..blocks].as_ptr());
    for b in 0..blocks {
        let mut ys = [_mm512_setzero_si512(); T];
        let mut act_scales = [_mm_setzero_ps(); T];
        let mut act_d = [_mm512_setzero_ps(); T];
        for t in 0..T {
            // SAFETY: block `b` of `blocks` (checked above); `q` is 32 bytes, read unaligned.
            let a = unsafe { &*acts[t].add(b) };
            ys[t] = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(a.q.as_ptr().cast()) });
            act_scales[t] = _mm_setr_ps(a.d, a.s, a.d, a.s);
            act_d[t] = _mm512_set1_ps(a.d);
        }
        for p in 0..R / 2 {
            // SAFETY: block `b` of rows of `blocks` blocks: in bounds (checked above); every
            // block type is at least 18 bytes, and the reads are unaligned.
            let (lo, hi) = unsafe { (rows[2 * p].add(b * bb), rows[2 * p + 1].add(b * bb)) };
            let (w, negative) = if TY == Q8_0 {
                // SAFETY: a Q8_0 block is 34 bytes: 32 quants from byte 2.
                let raw = unsafe {
                    _mm512_inserti64x4(
                        _mm512_castsi256_si512(_mm256_loadu_si256(lo.add(2).cast())),
                        _mm256_loadu_si256(hi.add(2).cast()),
                        1,
                    )
                };
                (_mm512_abs_epi8(raw), _mm512_movepi8_mask(raw))
            } else {
                let start = if TY == Q4_1 { 4 } else { 2 };
                // SAFETY: a Q4 block holds 16 packed bytes from `start`.
                let packed = unsafe {
                    _mm256_set_m128i(
                        _mm_loadu_si128(hi.add(start).cast()),
                        _mm_loadu_si128(lo.add(start).cast()),
                    )
                };
                let copies = _mm512_permutexvar_epi64(spread, _mm512_castsi256_si512(packed));
                (_mm512_and_si512(_mm512_srlv_epi64(copies, nibble_shift), low_nibbles), 0)
            };
            // SAFETY: the first four bytes of each block (its f16 scale, and offset or quants).
            let halves = unsafe {
                _mm_unpacklo_epi32(
                    _mm_cvtsi32_si128(lo.cast::<i32>().read_unaligned()),
                    _mm_cvtsi32_si128(hi.cast::<i32>().read_unaligned()),
                )
            };
            // (d, m) of the low row, then of the high row.
            let mut scales = _mm_cvtph_ps(halves);
            if TY == Q4_0 {
                scales = _mm_mul_ps(_mm_moveldup_ps(scales), q4_0_offset);
            }
            let weight_d = _mm512_permutexvar_ps(pair_scale, _mm512_castps128_ps512(scales));
            for t in 0..T {
                let y = if TY == Q8_0 {
                    _mm512_mask_sub_epi8(ys[t], negative, _mm512_setzero_si512(), ys[t])
                } else {
                    ys[t]
                };
                let sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, y));
                if TY != Q8_0 {
                    // (m·a.s) in lanes 1 and 3, as the scalar kernel's `offset_sum += m * a.s`.
                    offsets[p][t] = _mm_add_ps(offsets[p][t], _mm_mul_ps(scales, act_scales[t]));
                }
                // d·a.d, one product per lane: the scalar kernel's `d = dw * a.d`.
                acc[p][t] = _mm512_fmadd_ps(_mm512_mul_ps(weight_d, act_d[t]), sums, acc[p][t]);
            }
        }
    }
    let mut out = [[0f32; T]; R];
    for p in 0..R / 2 {
        for t in 0..T {
            let (a, o) = (acc[p][t], offsets[p][t]);
            let lo = _mm512_castps512_ps256(a);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
            let (m_lo, m_hi) = if TY == Q8_0 {
                (0.0, 0.0)
            } else {
                (_mm_cvtss_f32(_mm_shuffle_ps(o, o, 1)), _mm_cvtss_f32(_mm_shuffle_ps(o, o, 3)))
            };
            out[2 * p][t] = hsum(lo) + m_lo;
            out[2 * p + 1][t] = hsum(hi) + m_hi;
        }
    }
    out
}

/// The sub-block types' rows: in pairs through [`dot_sub_pair_tokens`] (two rows in one
/// 512-bit register), an odd last row through [`dot_sub_tokens`].
///
/// # Safety
/// As [`dot_sub_tokens`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn sub_rows_tokens<const R: usize, const T: usize, const TY: u8>(
    rows: [&[u8]; R],
    acts: [&[ActBlock]; T],
) -> [[f32; T]; R] {
    let mut out = [[0f32; T]; R];
    let mut r = 0;
    while r + 2 <= R {
        // SAFETY: as this function's.
        [out[r], out[r + 1]] = unsafe { dot_sub_pair_tokens::<T, TY>(rows[r], rows[r + 1], acts) };
        r += 2;
    }
    if r < R {
        // SAFETY: as this function's.
        out[r] = unsafe { dot_sub_tokens::<T, TY>(rows[r], acts) };
    }
    out
}

/// [`dot_sub_tokens`] for two rows of the same length at once: row `a`'s eight lanes in
/// the low half of each register and row `b`'s in the high half, so every row keeps the
/// scalar kernel's lanes and order of operations while each `vpdpbusd`, conversion and
/// fused multiply-add serves both.
///
/// # Safety
/// As [`dot_sub_tokens`]; `a` and `b` have the same length.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn dot_sub_pair_tokens<const T: usize, const TY: u8>(
    a: &[u8],
    b: &[u8],
    acts: [&[ActBlock]; T],
) -> [[f32; T]; 2] {
    let (bb, subs) = (sub_block_bytes(TY), sub_blocks(TY));
    let mut acc = [_mm512_setzero_ps(); T];
    let mut offsets = [[0f32; T]; 2];
    let no_scales = ([0f32; 8], [0f32; 8]);
    for (blk, (block_a, block_b)) in a.chunks_exact(bb).zip(b.chunks_exact(bb)).enumerate() {
        let (ka, kb) = if TY == Q4_K || TY == Q5_K {
            (k_scales(block_a), k_scales(block_b))
        } else {
            (no_scales, no_scales)
        };
        for j in 0..subs {
            // SAFETY: each block is one whole block; the caller guarantees the CPU features.
            let w = unsafe {
                _mm512_inserti64x4(
                    _mm512_castsi256_si512(sub_quants::<TY>(block_a, j)),
                    sub_quants::<TY>(block_b, j),
                    1,
                )
            };
            let ((dwa, ma), (dwb, mb)) = (sub_scale::<TY>(block_a, &ka, j), sub_scale::<TY>(block_b, &kb, j));
            let dw = _mm512_castpd_ps(_mm512_insertf64x4(
                _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(dwa))),
                _mm256_castps_pd(_mm256_set1_ps(dwb)),
                1,
            ));
            let (magnitudes, negative) =
                if TY == Q6_K { (_mm512_abs_epi8(w), _mm512_movepi8_mask(w)) } else { (w, 0) };
            let lane_scales = if TY == Q6_K {
                _mm512_inserti64x4(
                    _mm512_castsi256_si512(q6k_lane_scales(block_a, j)),
                    q6k_lane_scales(block_b, j),
                    1,
                )
            } else {
                _mm512_setzero_si512()
            };
            for t in 0..T {
                let act = &acts[t][blk * subs + j];
                // SAFETY: `act.q` is 32 bytes; loadu has no alignment requirement.
                let y = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(act.q.as_ptr().cast()) });
                let y =
                    if TY == Q6_K { _mm512_mask_sub_epi8(y, negative, _mm512_setzero_si512(), y) } else { y };
                let mut sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), magnitudes, y);
                if TY == Q6_K {
                    sums = _mm512_mullo_epi32(sums, lane_scales);
                } else {
                    offsets[0][t] += ma * act.s;
                    offsets[1][t] += mb * act.s;
                }
                // d = dw·a.d per row, one product per lane, as the scalar kernel's.
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(act.d));
                acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sums), acc[t]);
            }
        }
    }
    let mut out = [[0f32; T]; 2];
    for t in 0..T {
        let lo = _mm512_castps512_ps256(acc[t]);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[t]), 1));
        out[0][t] = hsum(lo) + offsets[0][t];
        out[1][t] = hsum(hi) + offsets[1][t];
    }
    out
}

/// `avx2::dot_sub_tokens` with VNNI: one `vpdpbusd` forms each lane's four-product
/// integer sum (Q6_K's signed quants as magnitudes, their signs moved onto the
/// activations). Per token the arithmetic is exactly `dot_scalar`'s.
///
/// # Safety
/// The CPU must support AVX-512F/BW/VL/VNNI, AVX2, FMA and F16C; every `acts[t]` has the
/// row's sub-block count.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn dot_sub_tokens<const T: usize, const TY: u8>(row: &[u8], acts: [&[ActBlock]; T]) -> [f32; T] {
    let (bb, subs) = (sub_block_bytes(TY), sub_blocks(TY));
    let mut acc = [_mm256_setzero_ps(); T];
    let mut offsets = [0f32; T];
    let no_scales = ([0f32; 8], [0f32; 8]);
    for (b, block) in row.chunks_exact(bb).enumerate() {
        let k = if TY == Q4_K || TY == Q5_K { k_scales(block) } else { no_scales };
        for j in 0..subs {
            // SAFETY: `block` is one whole block; the caller guarantees the CPU features.
            let w = unsafe { sub_quants::<TY>(block, j) };
            let (dw, m) = sub_scale::<TY>(block, &k, j);
            let (magnitudes, negative) =
                if TY == Q6_K { (_mm256_abs_epi8(w), _mm256_movepi8_mask(w)) } else { (w, 0) };
            let lane_scales = if TY == Q6_K { q6k_lane_scales(block, j) } else { _mm256_setzero_si256() };
            for t in 0..T {
                let a = &acts[t][b * subs + j];
                // SAFETY: `a.q` is 32 bytes; loadu has no alignment requirement.
                let y = unsafe { _mm256_loadu_si256(a.q.as_ptr().cast()) };
                let y =
                    if TY == Q6_K { _mm256_mask_sub_epi8(y, negative, _mm256_setzero_si256(), y) } else { y };
                let mut sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), magnitudes, y);
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
