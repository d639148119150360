//! Quantized dot-product kernels of the native runtime (trusted side, inside the enclave):
//! the inner loop every weight matrix goes through, once per output value per token.
//!
//! ```text
//!  f32 activations ──quantize_row──► ActBlock (8-bit, scale d, sum s) ─┐
//!  weight row bytes, exactly as stored in the GGUF (Q4_0 … Q8_0, Q4_K … Q6_K) ┴─► dot ─► f32
//! ```
//!
//! Every kernel exists three times: AVX-512 (F/BW/VL/VNNI) and AVX2+FMA+F16C versions, the
//! fastest the CPU has picked at run time (every SEV-SNP EPYC has AVX2; Genoa and Turin
//! have AVX-512), and a portable scalar version. The scalar one fixes the arithmetic — eight
//! integer partial sums per block, fused multiply-adds into eight lanes per row, one
//! reduction tree — and the SIMD ones perform exactly that arithmetic, lane for lane (the
//! AVX-512 one holds two rows' eight lanes per register rather than using wider lanes), so
//! all three give bit-identical results and an auditor re-running a request on a machine
//! without AVX-512 or AVX2 gets the same tokens. The tests pin that equality.
//! `VOUCH_KERNEL=avx512|avx2|scalar` forces one (benchmarks, audits); a kernel the CPU
//! lacks is refused.
//!
//! This is the one module of the workspace with `unsafe` code: the `std::arch` loads read
//! 4, 16 and 32 bytes inside weight rows and activation blocks whose lengths are checked
//! once per call, before the loop.

#![allow(unsafe_code)]

/// Values per quantization block of the 32-value types (GGUF's `QK4_0 = … = QK8_0 = 32`),
/// and per sub-block of the K-quants: the unit every kernel's integer sums cover, and
/// the size of one activation block.
pub(crate) const QK: usize = 32;

/// Values per super-block of the K-quants (GGUF's `QK_K`).
pub(crate) const QK_K: usize = 256;

/// A weight type the native kernels compute with directly, as stored in the file.
///
/// Every type is read as sub-blocks of 32 values `w = dw·q + m`, with integer `q`: the
/// 32-value types are one sub-block per block; a K-quant super-block of 256 values is
/// eight, each with its own `dw` and `m` made from the super-block's scales (products of
/// an f16 and a 6-bit or 8-bit integer: exact in f32). Q6_K's sub-block has two signed
/// 8-bit scales, one per 16 values, which stay integers: its `q` is `scale·(q6 − 32)`.
/// (The names are GGML's, underscores included, so they grep across both codebases.)
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QType {
    /// 32 × 4-bit, one f16 scale: `w = d·(q − 8)`.
    Q4_0,
    /// 32 × 4-bit, f16 scale and f16 offset: `w = d·q + m`.
    Q4_1,
    /// 32 × 5-bit, one f16 scale: `w = d·(q − 16)`.
    Q5_0,
    /// 32 × 5-bit, f16 scale and f16 offset: `w = d·q + m`.
    Q5_1,
    /// 32 × 8-bit signed, one f16 scale: `w = d·q`.
    Q8_0,
    /// 256 × 4-bit in 8 sub-blocks, each with a 6-bit scale and a 6-bit minimum of the
    /// super-block's f16 `d` and `dmin`: `w = d·sc·q − dmin·mn`.
    Q4_K,
    /// Q4_K with a fifth bit per value.
    Q5_K,
    /// 256 × 6-bit in 16 groups of 16, each with a signed 8-bit scale of the f16 `d`:
    /// `w = d·sc·(q − 32)`.
    Q6_K,
}

impl QType {
    /// Whether the kernels read this type sub-block by sub-block with per-sub-block scale
    /// work (everything but the paired-row Q4_0, Q4_1 and Q8_0).
    pub(crate) fn sub_blocked(self) -> bool {
        !self.pairs_rows()
    }

    /// Bytes of one stored block.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q5_0 => 22,
            QType::Q5_1 => 24,
            QType::Q8_0 => 34,
            QType::Q4_K => 144,
            QType::Q5_K => 176,
            QType::Q6_K => 210,
        }
    }

    /// Values in one stored block: [`QK`] or [`QK_K`].
    pub(crate) fn block_values(self) -> usize {
        match self {
            QType::Q4_K | QType::Q5_K | QType::Q6_K => QK_K,
            _ => QK,
        }
    }

    /// Whether the values carry an offset `m` (the kernels then add `m·Σx` per sub-block).
    pub(crate) fn has_offset(self) -> bool {
        !matches!(self, QType::Q8_0 | QType::Q6_K)
    }

    /// Whether the AVX-512 kernel computes this type two rows per register (the 32-value
    /// types without a fifth bit); the others go row by row, one sub-block at a time.
    pub(crate) fn pairs_rows(self) -> bool {
        matches!(self, QType::Q4_0 | QType::Q4_1 | QType::Q8_0)
    }

    /// Bytes of a row of `cols` values (`cols` a multiple of [`Self::block_values`]).
    pub(crate) fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_values() * self.block_bytes()
    }
}

/// 32 activations quantized to 8 bits: `x ≈ d·q`, with `s = d·Σq` kept for the offset
/// term of Q4_1 (llama.cpp's Q8_1, with f32 instead of f16 scales).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ActBlock {
    pub(crate) d: f32,
    pub(crate) s: f32,
    pub(crate) q: [i8; QK],
}

impl Default for ActBlock {
    fn default() -> Self {
        Self { d: 0.0, s: 0.0, q: [0; QK] }
    }
}

/// Which implementation of the kernels runs. All compute bit-identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/VNNI (and AVX2 + FMA + F16C).
    Avx512,
}

/// The environment variable that forces a kernel (`avx512`, `avx2` or `scalar`).
pub const KERNEL_ENV: &str = "VOUCH_KERNEL";

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 3] = [Kernel::Avx512, Kernel::Avx2, Kernel::Scalar];

    /// The fastest kernel this CPU supports.
    pub fn detect() -> Kernel {
        Kernel::ALL.into_iter().find(|k| k.supported()).unwrap_or(Kernel::Scalar)
    }

    /// The kernel `VOUCH_KERNEL` names, or the fastest this CPU supports when it is unset
    /// or empty. A name that is unknown, or a kernel this CPU lacks, is an error.
    pub fn from_env() -> Result<Kernel, String> {
        match std::env::var(KERNEL_ENV) {
            Ok(name) if !name.is_empty() && name != "auto" => Kernel::named(&name),
            _ => Ok(Kernel::detect()),
        }
    }

    /// The kernel called `name`, if this CPU supports it.
    pub fn named(name: &str) -> Result<Kernel, String> {
        let kernel = Kernel::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("{KERNEL_ENV}={name}: unknown kernel (avx512, avx2, scalar or auto)"))?;
        if kernel.supported() {
            Ok(kernel)
        } else {
            Err(format!("{KERNEL_ENV}={name}: this CPU lacks the instructions the {name} kernel needs"))
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                Kernel::Avx2.supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `"avx512"`, `"avx2"` or `"scalar"`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }
}

/// Reads a little-endian IEEE half at `at` as f32 (exact). Written out rather than taken
/// from `half`, whose conversion checks CPU features on every call: this runs twice per
/// block, millions of times per token.
#[inline(always)]
pub(crate) fn f16_at(bytes: &[u8], at: usize) -> f32 {
    let h = u32::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    let sign = (h & 0x8000) << 16;
    let exponent = (h >> 10) & 0x1F;
    let mantissa = h & 0x3FF;
    match exponent {
        // Zero and subnormals: mantissa · 2⁻²⁴, exact in f32.
        0 => f32::from_bits(sign | (mantissa as f32 * (1.0 / 16_777_216.0)).to_bits()),
        0x1F => f32::from_bits(sign | 0x7F80_0000 | (mantissa << 13)),
        _ => f32::from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13)),
    }
}

/// Quantizes `x` (a multiple of 32 values) into `out` (`x.len() / 32` blocks).
pub(crate) fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in ob.q.iter_mut().zip(xb) {
            // Round half away from zero, written so that it compiles to two instructions on
            // baseline x86-64 (`f32::round` is a libm call there). |v·id| ≤ 127 by
            // construction; `as` saturates (and maps NaN to 0) regardless.
            let scaled = v * id;
            *q = (scaled + 0.5f32.copysign(scaled)) as i32 as i8;
            sum += i32::from(*q);
        }
        ob.d = d;
        ob.s = d * sum as f32;
    }
}

/// Writes the f32 values of one stored row (a token embedding) into `out`.
pub(crate) fn dequantize_row(ty: QType, row: &[u8], out: &mut [f32]) {
    let subs = ty.block_values() / QK;
    for (block, o) in row.chunks_exact(ty.block_bytes()).zip(out.chunks_exact_mut(ty.block_values())) {
        for (j, o) in o.chunks_exact_mut(QK).enumerate().take(subs) {
            let (d, m, quants) = unpack(ty, block, j);
            for (v, &q) in o.iter_mut().zip(&quants) {
                *v = d * q as f32 + m;
            }
        }
    }
}

/// Sub-block `j` of a stored block: its scale `dw`, offset `m` (0 for the types without
/// one) and 32 integer quants, so that value `e` is `dw·q[e] + m`.
#[inline(always)]
pub(crate) fn unpack(ty: QType, block: &[u8], j: usize) -> (f32, f32, [i32; QK]) {
    let mut quants = [0i32; QK];
    match ty {
        QType::Q8_0 => {
            for (w, &q) in quants.iter_mut().zip(&block[2..34]) {
                *w = i32::from(q as i8);
            }
            (f16_at(block, 0), 0.0, quants)
        }
        QType::Q4_0 | QType::Q4_1 => {
            let d = f16_at(block, 0);
            let (m, qs) =
                if ty == QType::Q4_1 { (f16_at(block, 2), &block[4..20]) } else { (-8.0 * d, &block[2..18]) };
            for (e, w) in quants.iter_mut().enumerate() {
                *w = i32::from(nibble(qs, e));
            }
            (d, m, quants)
        }
        QType::Q5_0 | QType::Q5_1 => {
            // Q5_0's `d·(q − 16)` is `d·q + m` with `m = −16·d` (exact).
            let d = f16_at(block, 0);
            let (m, at) = if ty == QType::Q5_1 { (f16_at(block, 2), 4) } else { (-16.0 * d, 2) };
            let high = u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            for (e, w) in quants.iter_mut().enumerate() {
                *w = i32::from(nibble(&block[at + 4..at + 20], e)) | (((high >> e) & 1) << 4) as i32;
            }
            (d, m, quants)
        }
        QType::Q4_K | QType::Q5_K => {
            let (dw, m) = k_scales(block);
            // Sub-blocks 2c and 2c + 1 share 32 bytes: low nibbles, then high ones.
            let qs =
                if ty == QType::Q4_K { &block[16 + 32 * (j / 2)..] } else { &block[48 + 32 * (j / 2)..] };
            let shift = 4 * (j % 2);
            for (l, w) in quants.iter_mut().enumerate() {
                let mut q = i32::from((qs[l] >> shift) & 0x0F);
                if ty == QType::Q5_K {
                    q |= i32::from((block[16 + l] >> j) & 1) << 4;
                }
                *w = q;
            }
            (dw[j], m[j], quants)
        }
        QType::Q6_K => {
            let (ql, qh, scales) = q6k_parts(block, j);
            let shift = 4 * ((j % 4) / 2);
            let high_shift = 2 * (j % 4);
            for (l, w) in quants.iter_mut().enumerate() {
                let q = i32::from((ql[l] >> shift) & 0x0F) | (i32::from((qh[l] >> high_shift) & 3) << 4);
                *w = i32::from(scales[l / 16]) * (q - 32);
            }
            (f16_at(block, 208), 0.0, quants)
        }
    }
}

/// The eight sub-block scales `d·sc` and offsets `−dmin·mn` of a Q4_K / Q5_K super-block
/// (f16 `d` and `dmin`, then twelve bytes packing eight 6-bit scales and minimums).
#[inline(always)]
pub(crate) fn k_scales(block: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let s = &block[4..16];
    let (mut dw, mut m) = ([0f32; 8], [0f32; 8]);
    for j in 0..8 {
        let (sc, mn) = if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
        };
        dw[j] = d * f32::from(sc);
        m[j] = -(dmin * f32::from(mn));
    }
    (dw, m)
}

/// Sub-block `j`'s 32 low-bit bytes, 32 high-bit bytes and two scales in a Q6_K block
/// (`ql[128]`, `qh[64]`, `scales[16]`, f16 `d`). Each 128-value half has 64 `ql` bytes
/// (low nibbles for its sub-blocks 0 and 1, high ones for 2 and 3) and 32 `qh` bytes
/// (two bits for each of its four sub-blocks).
#[inline(always)]
pub(crate) fn q6k_parts(block: &[u8], j: usize) -> (&[u8], &[u8], [i8; 2]) {
    let (half, k) = (j / 4, j % 4);
    let ql = &block[64 * half + 32 * (k % 2)..][..32];
    let qh = &block[128 + 32 * half..][..32];
    let sc = 192 + 8 * half + 2 * k;
    (ql, qh, [block[sc] as i8, block[sc + 1] as i8])
}

/// Element `e` (0..32) of a packed 4-bit block: low nibbles hold 0..16, high ones 16..32.
#[inline(always)]
fn nibble(qs: &[u8], e: usize) -> u8 {
    if e < 16 {
        qs[e] & 0x0F
    } else {
        qs[e - 16] >> 4
    }
}

/// Sums eight lanes in the order the AVX2 reduction does: halves, then pairs, then one.
#[inline(always)]
fn reduce8(a: [f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Dot product of one weight row (as stored) with quantized activations.
#[inline]
pub(crate) fn dot(kernel: Kernel, ty: QType, row: &[u8], act: &[ActBlock]) -> f32 {
    let [value] = dot_rows(kernel, ty, [row], act);
    value
}

/// Dot products of several weight rows with the same activations (each row's result is
/// bit-identical to [`dot`] on that row; several at once are faster).
#[inline]
pub(crate) fn dot_rows<const R: usize>(
    kernel: Kernel,
    ty: QType,
    rows: [&[u8]; R],
    act: &[ActBlock],
) -> [f32; R] {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a SIMD kernel is only ever produced after checking the CPU (`supported`).
        Kernel::Avx2 => unsafe { avx2::dot_rows(ty, rows, act) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx512 => unsafe { avx512::dot_rows(ty, rows, act) },
        _ => rows.map(|row| dot_scalar(ty, row, act)),
    }
}

/// Dot products of `R` weight rows with `T` tokens' activations: `out[r][t]` is
/// bit-identical to [`dot`] on row `r` and `acts[t]` (the AVX-512 and AVX2 kernels share
/// each block's unpacking among the tokens; the scalar one computes token by token).
#[inline]
pub(crate) fn dot_rows_tokens<const R: usize, const T: usize>(
    kernel: Kernel,
    ty: QType,
    rows: [&[u8]; R],
    acts: [&[ActBlock]; T],
) -> [[f32; T]; R] {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512
        && (R.is_multiple_of(2) || !ty.pairs_rows())
        && acts.iter().all(|a| a.len() == acts[0].len())
    {
        // SAFETY: `Kernel::Avx512` is only ever produced after checking the CPU.
        return unsafe { avx512::dot_rows_tokens(ty, rows, acts) };
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 && T > 1 && acts.iter().all(|a| a.len() == acts[0].len()) {
        // SAFETY: `Kernel::Avx2` is only ever produced after checking the CPU.
        return unsafe { avx2::dot_rows_tokens(ty, rows, acts) };
    }
    let mut out = [[0f32; T]; R];
    for (t, act) in acts.iter().enumerate() {
        for (r, value) in dot_rows(kernel, ty, rows, act).into_iter().enumerate() {
            out[r][t] = value;
        }
    }
    out
}

/// The scalar kernel, which fixes the arithmetic every kernel performs: per sub-block,
/// `d = dw·a.d`, each lane `fma(d, isum, lane)` with `isum` the exact integer sum of
/// values `4k..4k+4`, and `offset += m·a.s`; at the end [`reduce8`] plus the offset.
pub(crate) fn dot_scalar(ty: QType, row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = [0f32; 8];
    let mut offset_sum = 0f32;
    let subs = ty.block_values() / QK;
    for (block, acts) in row.chunks_exact(ty.block_bytes()).zip(act.chunks(subs)) {
        for (j, a) in acts.iter().enumerate() {
            let (dw, m, weights) = unpack(ty, block, j);
            let d = dw * a.d;
            if ty.has_offset() {
                offset_sum += m * a.s;
            }
            // Lane k holds values 4k..4k+4, as `madd(maddubs(..))` leaves them (exact integers).
            for ((lane, w), x) in acc.iter_mut().zip(weights.chunks_exact(4)).zip(a.q.chunks_exact(4)) {
                let isum: i32 = w.iter().zip(x).map(|(&w, &x)| w * i32::from(x)).sum();
                *lane = d.mul_add(isum as f32, *lane);
            }
        }
    }
    reduce8(acc) + offset_sum
}

/// f32 dot product in eight fixed lanes, reduced like [`reduce8`], then the tail (the
/// same bits from the scalar and the AVX2 code).
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    reduce8(acc) + tail
}

/// Attention scores of one query head: `scores[p] = (q · key_p)·scale` for the `scores.len()`
/// cached positions, key `p` being `keys[p·stride + offset..][..q.len()]`.
pub(crate) fn attention_scores(
    kernel: Kernel,
    q: &[f32],
    keys: &[f32],
    stride: usize,
    offset: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let hd = q.len();
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a SIMD kernel is only ever produced after checking the CPU (`supported`);
        // AVX-512 CPUs have AVX2.
        Kernel::Avx2 | Kernel::Avx512 => unsafe {
            avx2::attention_scores(q, keys, stride, offset, scale, scores)
        },
        _ => {
            for (p, score) in scores.iter_mut().enumerate() {
                *score = dot_f32(q, &keys[p * stride + offset..p * stride + offset + hd]) * scale;
            }
        }
    }
}

/// `out = Σ_p weights[p]·value_p`, in position order, value `p` being
/// `values[p·stride + offset..][..out.len()]`.
pub(crate) fn attention_values(
    kernel: Kernel,
    weights: &[f32],
    values: &[f32],
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    let hd = out.len();
    out.fill(0.0);
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx2 => unsafe { avx2::attention_values(weights, values, stride, offset, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx512 => unsafe { avx512::attention_values(weights, values, stride, offset, out) },
        _ => {
            for (p, &w) in weights.iter().enumerate() {
                let value = &values[p * stride + offset..p * stride + offset + hd];
                for (o, &v) in out.iter_mut().zip(value) {
                    *o += w * v;
                }
            }
        }
    }
}

/// Asks the CPU to start loading `bytes` into its caches (a hint: no effect on results).
#[inline]
pub(crate) fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch reads nothing architecturally and cannot fault; the address
        // lies inside `bytes` anyway. SSE is part of x86-64's baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Range of [`exp`]'s argument: below, the result would be subnormal; above, infinite.
const EXP_MIN: f32 = -87.336_55;
const EXP_MAX: f32 = 88.376_26;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that `n·LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Minimax polynomial for (eʳ − 1 − r)/r², |r| ≤ ln2/2 (Cephes `expf`).
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// eˣ to about one ulp, written as plain f32 multiplies and adds so that the scalar and
/// the AVX2 versions give the same bits (and every platform does). The argument is
/// clamped to [`EXP_MIN`, `EXP_MAX`]: results never go subnormal or infinite.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let t = x * LOG2_E;
    let n = (t + 0.5f32.copysign(t)) as i32;
    let nf = n as f32;
    let r = (x - nf * LN2_HI) - nf * LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let e = (p * (r * r) + r) + 1.0;
    e * f32::from_bits(((n + 127) as u32) << 23)
}

/// `xs[i] = exp(xs[i] − shift)` for every value (the softmax numerator).
pub(crate) fn exp_shifted(kernel: Kernel, xs: &mut [f32], shift: f32) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a SIMD kernel is only ever produced after checking the CPU (`supported`).
        Kernel::Avx2 => unsafe { avx2::exp_shifted(xs, shift) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx512 => unsafe { avx512::exp_shifted(xs, shift) },
        _ => {
            for x in xs.iter_mut() {
                *x = exp(*x - shift);
            }
        }
    }
}

/// `gate[i] = gate[i] / (1 + exp(−gate[i])) · up[i]` (SiLU of the gate times up).
pub(crate) fn silu_mul(kernel: Kernel, gate: &mut [f32], up: &[f32]) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx2 => unsafe { avx2::silu_mul(gate, up) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Avx512 => unsafe { avx512::silu_mul(gate, up) },
        _ => {
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = *g / (1.0 + exp(-*g)) * u;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    #[test]
    fn f16_conversion_is_exact_for_every_half() {
        for bits in 0..=u16::MAX {
            let ours = f16_at(&bits.to_le_bytes(), 0);
            let theirs = f16::from_bits(bits).to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{bits:#06x}");
            }
        }
    }

    /// A deterministic pseudo-random byte stream (xorshift), so the tests need no RNG crate.
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// Every weight type the kernels compute with.
    const TYPES: [QType; 8] = [
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q5_1,
        QType::Q8_0,
        QType::Q4_K,
        QType::Q5_K,
        QType::Q6_K,
    ];

    /// A row of `blocks` blocks of `ty` with sane f16 scales and random quants (and, for
    /// the K-quants, random sub-block scales).
    fn row(ty: QType, blocks: usize, seed: u64) -> Vec<u8> {
        let mut out = bytes(seed, blocks * ty.block_bytes());
        for (i, block) in out.chunks_exact_mut(ty.block_bytes()).enumerate() {
            let d = f16::from_f32(0.01 + i as f32 * 0.003).to_le_bytes();
            let at = if ty == QType::Q6_K { 208 } else { 0 };
            block[at..at + 2].copy_from_slice(&d);
            if matches!(ty, QType::Q4_1 | QType::Q5_1 | QType::Q4_K | QType::Q5_K) {
                block[2..4].copy_from_slice(&f16::from_f32(-0.05 * i as f32 - 0.001).to_le_bytes());
            }
        }
        out
    }

    /// Activation values for `blocks` blocks of `ty`.
    fn values(ty: QType, blocks: usize) -> usize {
        blocks * ty.block_values()
    }

    fn bits(xs: &[f32]) -> Vec<u32> {
        xs.iter().map(|x| x.to_bits()).collect()
    }

    fn activations(n: usize, seed: u64) -> Vec<f32> {
        bytes(seed, n).iter().map(|&b| (f32::from(b) - 128.0) / 37.0).collect()
    }

    fn quantized(x: &[f32]) -> Vec<ActBlock> {
        let mut out = vec![ActBlock::default(); x.len() / QK];
        quantize_row(x, &mut out);
        out
    }

    /// The plain definition: dequantize both sides, multiply, add in f64.
    fn reference(ty: QType, row: &[u8], act: &[ActBlock]) -> f64 {
        let mut w = vec![0f32; act.len() * QK];
        dequantize_row(ty, row, &mut w);
        let mut sum = 0f64;
        for (b, a) in act.iter().enumerate() {
            for e in 0..QK {
                sum += f64::from(w[b * QK + e]) * f64::from(a.d) * f64::from(a.q[e]);
            }
        }
        sum
    }

    /// Every layout as llama.cpp reads it: blocks dequantized by the `gguf` Python
    /// package (bench/reference/dequant_vectors.py wrote the files).
    #[test]
    fn dequantization_matches_the_gguf_reference() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dequant");
        for ty in TYPES {
            let name = format!("{ty:?}");
            let blocks = std::fs::read(dir.join(format!("{name}.blocks"))).unwrap();
            let expected: Vec<f32> = std::fs::read(dir.join(format!("{name}.f32")))
                .unwrap()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(blocks.len() / ty.block_bytes() * ty.block_values(), expected.len(), "{name}");
            let mut ours = vec![0f32; expected.len()];
            dequantize_row(ty, &blocks, &mut ours);
            for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
                // The reference rounds `d·sc·q − dmin·m` in its own order: one rounding apart.
                assert!((a - b).abs() <= 2e-7 * b.abs().max(1e-3), "{name} value {i}: {a} vs {b}");
            }
            // And a tampered byte changes what is read (the layout is really exercised).
            let mut tampered = blocks.clone();
            let at = if ty == QType::Q6_K { 0 } else { ty.block_bytes() - 1 };
            tampered[at] ^= 0x11;
            dequantize_row(ty, &tampered, &mut ours);
            assert!(ours.iter().zip(&expected).any(|(a, b)| (a - b).abs() > 1e-6), "{name}");
        }
    }

    #[test]
    fn kernels_compute_the_dot_product() {
        for ty in TYPES {
            for seed in 1..20u64 {
                let w = row(ty, 18, seed);
                let act = quantized(&activations(values(ty, 18), seed * 7));
                let expected = reference(ty, &w, &act);
                let got = f64::from(dot(Kernel::detect(), ty, &w, &act));
                assert!(
                    (got - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                    "{ty:?} {got} vs {expected}"
                );
            }
        }
    }

    /// The SIMD kernels this CPU runs (each test compares them with the scalar one).
    fn simd_kernels() -> Vec<Kernel> {
        let kernels: Vec<Kernel> =
            Kernel::ALL.into_iter().filter(|k| *k != Kernel::Scalar && k.supported()).collect();
        if kernels.len() < 2 {
            eprintln!(
                "this CPU runs only {kernels:?} beside the scalar kernel: the others are not compared here"
            );
        }
        kernels
    }

    #[test]
    fn simd_and_scalar_kernels_are_bit_identical() {
        for kernel in simd_kernels() {
            for ty in TYPES {
                for seed in 1..200u64 {
                    let blocks = 1 + (seed as usize % 48);
                    let w = row(ty, blocks, seed);
                    let act = quantized(&activations(values(ty, blocks), seed ^ 0xABCD));
                    let a = dot(kernel, ty, &w, &act);
                    let s = dot_scalar(ty, &w, &act);
                    assert_eq!(a.to_bits(), s.to_bits(), "{ty:?} seed {seed}: {kernel:?} {a} scalar {s}");
                }
            }
        }
    }

    /// Rows `0..R` of `rows` through `dot_rows::<R>`, against each row's scalar result.
    fn check_rows<const R: usize>(kernel: Kernel, ty: QType, rows: &[Vec<u8>], act: &[ActBlock]) {
        let group: [&[u8]; R] = std::array::from_fn(|r| &rows[r][..]);
        for (r, value) in dot_rows(kernel, ty, group, act).iter().enumerate() {
            let expected = dot_scalar(ty, &rows[r], act);
            assert_eq!(value.to_bits(), expected.to_bits(), "{ty:?} {kernel:?} {R} rows: row {r}");
        }
    }

    #[test]
    fn several_rows_at_once_give_each_rows_own_result() {
        for ty in TYPES {
            let rows: Vec<Vec<u8>> = (0..5).map(|i| row(ty, 18, 31 + i)).collect();
            let act = quantized(&activations(values(ty, 18), 5));
            for kernel in Kernel::ALL.into_iter().filter(|k| k.supported()) {
                // Pairs and an odd last row (the AVX-512 kernel holds two rows per register).
                check_rows::<1>(kernel, ty, &rows, &act);
                check_rows::<2>(kernel, ty, &rows, &act);
                check_rows::<3>(kernel, ty, &rows, &act);
                check_rows::<4>(kernel, ty, &rows, &act);
                check_rows::<5>(kernel, ty, &rows, &act);
            }
        }
    }

    /// `dot_rows_tokens::<4, T>` (and `::<3, T>`: an odd row count) against the scalar
    /// result of every row and token.
    fn check_tokens<const T: usize>(kernel: Kernel, ty: QType, rows: &[Vec<u8>], acts: &[Vec<ActBlock>]) {
        check_group::<3, T>(kernel, ty, rows, acts);
        check_group::<4, T>(kernel, ty, rows, acts);
    }

    /// `dot_rows_tokens::<R, T>` on the first `R` rows against the scalar result.
    fn check_group<const R: usize, const T: usize>(
        kernel: Kernel,
        ty: QType,
        rows: &[Vec<u8>],
        acts: &[Vec<ActBlock>],
    ) {
        let tokens: [&[ActBlock]; T] = std::array::from_fn(|t| &acts[t][..]);
        let group: [&[u8]; R] = std::array::from_fn(|r| &rows[r][..]);
        for (r, row) in dot_rows_tokens(kernel, ty, group, tokens).iter().enumerate() {
            for (t, value) in row.iter().enumerate() {
                let expected = dot_scalar(ty, &rows[r], &acts[t]);
                assert_eq!(
                    value.to_bits(),
                    expected.to_bits(),
                    "{ty:?} {kernel:?} {R} rows {T} tokens: row {r} token {t}"
                );
            }
        }
    }

    #[test]
    fn several_tokens_at_once_give_each_tokens_own_result() {
        for ty in TYPES {
            for blocks in [1usize, 18, 48] {
                let rows: Vec<Vec<u8>> = (0..4).map(|i| row(ty, blocks, 77 + i + blocks as u64)).collect();
                let acts: Vec<Vec<ActBlock>> =
                    (0..8).map(|t| quantized(&activations(values(ty, blocks), 900 + t as u64))).collect();
                for kernel in Kernel::ALL.into_iter().filter(|k| k.supported()) {
                    check_tokens::<1>(kernel, ty, &rows, &acts);
                    check_tokens::<2>(kernel, ty, &rows, &acts);
                    check_tokens::<3>(kernel, ty, &rows, &acts);
                    check_tokens::<4>(kernel, ty, &rows, &acts);
                    check_tokens::<5>(kernel, ty, &rows, &acts);
                    // (the tile matmul_rows uses for the sub-block types)
                    check_tokens::<8>(kernel, ty, &rows, &acts);
                }
            }
        }
    }

    #[test]
    fn a_kernel_is_named_only_when_the_cpu_has_it() {
        assert_eq!(Kernel::named("scalar"), Ok(Kernel::Scalar));
        assert_eq!(
            Kernel::named("avx1024").unwrap_err(),
            "VOUCH_KERNEL=avx1024: unknown kernel (avx512, avx2, scalar or auto)"
        );
        for kernel in Kernel::ALL {
            match Kernel::named(kernel.name()) {
                Ok(k) => assert!(k == kernel && kernel.supported()),
                Err(e) => {
                    assert!(!kernel.supported());
                    let tail = format!("this CPU lacks the instructions the {} kernel needs", kernel.name());
                    assert!(e.ends_with(&tail), "{e}");
                }
            }
        }
        assert!(Kernel::detect().supported());
    }

    #[test]
    fn attention_kernels_are_bit_identical_and_correct() {
        let stride = 3 * 64;
        let keys = activations(40 * stride, 3);
        let values = activations(40 * stride, 4);
        for hd in [128usize, 96, 64, 40, 13] {
            let q = &activations(hd, 5)[..hd];
            let kernels: Vec<Kernel> = [Kernel::Scalar].into_iter().chain(simd_kernels()).collect();
            let mut scores = vec![vec![0f32; 40]; kernels.len()];
            let mut outs = vec![vec![0f32; hd]; kernels.len()];
            for (i, &kernel) in kernels.iter().enumerate() {
                attention_scores(kernel, q, &keys, stride, 64, 0.125, &mut scores[i]);
                attention_values(kernel, &scores[0], &values, stride, 64, &mut outs[i]);
                assert_eq!(bits(&scores[i]), bits(&scores[0]), "{kernel:?} hd {hd}");
                assert_eq!(bits(&outs[i]), bits(&outs[0]), "{kernel:?} hd {hd}");
            }
            for p in [0usize, 17, 39] {
                let key = &keys[p * stride + 64..p * stride + 64 + hd];
                let exact: f64 = q.iter().zip(key).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                assert!((f64::from(scores[0][p]) - exact * 0.125).abs() < 1e-4, "hd {hd} p {p}");
            }
            let exact0: f64 =
                (0..40).map(|p| f64::from(scores[0][p]) * f64::from(values[p * stride + 64])).sum();
            assert!((f64::from(outs[0][0]) - exact0).abs() < 1e-3, "hd {hd}");
        }
    }

    #[test]
    fn exp_is_accurate_and_the_same_in_every_kernel() {
        let mut xs: Vec<f32> = (0..200_000).map(|i| -100.0 + i as f32 * 0.001).collect();
        xs.extend([0.0, -0.0, 1.0, -1.0, 88.0, 89.0, -87.0, -88.0, -1e30, 1e30]);
        let mut worst = 0f64;
        for &x in &xs {
            let ours = f64::from(exp(x));
            let clamped = f64::from(x.clamp(EXP_MIN, EXP_MAX));
            let rel = (ours - clamped.exp()).abs() / clamped.exp();
            worst = worst.max(rel);
            assert!(ours.is_finite() && ours > 0.0, "exp({x}) = {ours}");
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);

        let mut scalar = xs.clone();
        exp_shifted(Kernel::Scalar, &mut scalar, 0.25);
        let gate: Vec<f32> = xs.iter().map(|x| x / 7.0).collect();
        let up: Vec<f32> = xs.iter().map(|x| x.sin()).collect();
        let mut a = gate.clone();
        silu_mul(Kernel::Scalar, &mut a, &up);
        for kernel in simd_kernels() {
            let mut simd = xs.clone();
            exp_shifted(kernel, &mut simd, 0.25);
            assert_eq!(bits(&scalar), bits(&simd), "{kernel:?}");
            let mut b = gate.clone();
            silu_mul(kernel, &mut b, &up);
            assert_eq!(bits(&a), bits(&b), "{kernel:?}");
        }
        for ((&y, &g), &u) in a.iter().zip(&gate).zip(&up).take(1000) {
            let exact = f64::from(g) / (1.0 + (-f64::from(g)).exp()) * f64::from(u);
            assert!((f64::from(y) - exact).abs() <= 1e-5 * exact.abs().max(1e-3), "silu({g})·{u}");
        }
    }

    #[test]
    fn extreme_q8_weights_do_not_saturate() {
        // −128 weights against ±127 activations: the largest products the sign trick sees.
        let mut w = vec![0x80u8; 34];
        w[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        let x: Vec<f32> = (0..QK).map(|e| if e % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let act = quantized(&x);
        let expected = reference(QType::Q8_0, &w, &act);
        for kernel in simd_kernels() {
            assert_eq!(f64::from(dot(kernel, QType::Q8_0, &w, &act)), expected, "{kernel:?}");
        }
        assert_eq!(f64::from(dot_scalar(QType::Q8_0, &w, &act)), expected);
    }

    #[test]
    fn quantization_round_trips_within_half_a_step() {
        let x = activations(4 * QK, 99);
        let act = quantized(&x);
        for (b, a) in act.iter().enumerate() {
            let amax = x[b * QK..(b + 1) * QK].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(a.d, amax / 127.0);
            let qsum: i32 = a.q.iter().map(|&q| i32::from(q)).sum();
            assert_eq!(a.s, a.d * qsum as f32);
            for e in 0..QK {
                assert!((a.d * f32::from(a.q[e]) - x[b * QK + e]).abs() <= a.d / 2.0 + 1e-6);
            }
        }
        let zeros = quantized(&[0.0; QK]);
        assert_eq!(zeros[0], ActBlock::default());
    }
}
