//! Log-probabilities of the chosen tokens (`logprobs` / `top_logprobs`), trusted side and
//! in `vouch replay`. Receipts commit a digest of them, so they are computed with
//! operations every IEEE-754 platform agrees on, as the sampler is: the runtime's own
//! `exp`, sums in id order in f64, and [`ln`] below (basic f64 operations only; the
//! platform's `log` is not promised to round alike everywhere).
//!
//! ```text
//!  l: the logits the sampler chose from (after logit bias and penalties, before the
//!     temperature and top_p: the model's distribution as the request adjusted it)
//!  m = max l ;  s = Σ_i exp(l_i − m)  (f32 exp, f64 sum, in id order)
//!  logprob(i) = (l_i − m) − ln s      (f64)
//!  top k: the k largest l_i, larger first, lower id first among equals
//! ```

use super::native::kernels::exp;

/// Most alternatives per position (`top_logprobs`; OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// One completion token's log-probability and its most likely alternatives.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenLogprob {
    /// The chosen token.
    pub id: u32,
    /// Its log-probability.
    pub logprob: f64,
    /// The `top_logprobs` most likely tokens there: (id, log-probability), most likely first.
    pub top: Vec<(u32, f64)>,
}

/// The natural logarithm of a finite `x > 0`, from basic f64 operations only: with
/// `x = m · 2^e`, `m` in `[√½, √2)`, `ln x = e · ln 2 + 2 atanh(t)`, `t = (m − 1)/(m + 1)`,
/// the series to `t^25` (|t| ≤ 0.172: the first term left out is below 2⁻⁶⁰ of the sum).
/// Subnormal inputs are scaled first. Non-positive or non-finite input gives NaN.
pub fn ln(x: f64) -> f64 {
    if !(x > 0.0 && x.is_finite()) {
        return f64::NAN;
    }
    let (mut x, mut e) = (x, 0i64);
    if x < f64::MIN_POSITIVE {
        x *= (1u64 << 54) as f64;
        e -= 54;
    }
    let bits = x.to_bits();
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    // Horner over 1/(2k+1), k = 12 down to 0.
    let mut series = 0.0f64;
    for k in (0..=12u32).rev() {
        series = series * t2 + 1.0 / f64::from(2 * k + 1);
    }
    e as f64 * std::f64::consts::LN_2 + 2.0 * t * series
}

/// The log-probability of `chosen` under `logits`, with the `top` most likely tokens.
pub fn token_logprob(logits: &[f32], chosen: u32, top: u32) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(exp(l - max))).sum();
    let log_sum = ln(sum);
    let logprob = |id: u32| f64::from(logits[id as usize] - max) - log_sum;
    // The `top` largest, kept sorted (larger first, lower id first among equals).
    let k = (top.min(MAX_TOP_LOGPROBS) as usize).min(logits.len());
    let mut best: Vec<u32> = Vec::with_capacity(k + 1);
    if k > 0 {
        for (id, &l) in logits.iter().enumerate() {
            // An id the output grammar ruled out (−∞) is no alternative.
            if l == f32::NEG_INFINITY || (best.len() == k && l <= logits[best[k - 1] as usize]) {
                continue;
            }
            let at = best.partition_point(|&b| logits[b as usize] >= l);
            best.insert(at, id as u32);
            best.truncate(k);
        }
    }
    TokenLogprob {
        id: chosen,
        logprob: logprob(chosen),
        top: best.into_iter().map(|id| (id, logprob(id))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_agrees_with_the_platform_to_the_last_bits() {
        for x in [1.0, 2.0, 0.5, 1.5, 10.0, 49152.0, 1e-300, 5e-324, 1.7e308, std::f64::consts::E, 0.999_999]
        {
            let (ours, std) = (ln(x), x.ln());
            assert!(
                (ours - std).abs() <= 4.0 * f64::EPSILON * std.abs().max(1.0),
                "ln({x}) = {ours}, std {std}"
            );
        }
        assert_eq!(ln(1.0), 0.0);
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(ln(bad).is_nan(), "ln({bad})");
        }
    }

    #[test]
    fn logprobs_are_a_normalised_log_softmax_with_ordered_alternatives() {
        let logits = [1.0f32, 3.0, 3.0, -2.0, 0.5];
        let lp = token_logprob(&logits, 4, 3);
        let total: f64 = (0..5).map(|i| token_logprob(&logits, i, 0).logprob.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "probabilities sum to {total}");
        // Ties: the lower id first; then the next largest.
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(lp.top[0].1, lp.top[1].1);
        assert!(lp.top[0].1 > lp.top[2].1 && lp.top[2].1 > lp.logprob);
        let expected =
            (0.5f64 - 3.0) - (1.0 + 1.0 + (-2.0f64).exp() + (-5.0f64).exp() + (-2.5f64).exp()).ln();
        assert!((lp.logprob - expected).abs() < 1e-6, "{} vs {expected}", lp.logprob);
        // More alternatives than tokens, or more than the cap: bounded.
        assert_eq!(token_logprob(&logits, 0, 20).top.len(), 5);
        assert_eq!(token_logprob(&vec![0.0; 100], 0, 50).top.len(), MAX_TOP_LOGPROBS as usize);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
    }
}
