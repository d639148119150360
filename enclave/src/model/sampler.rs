//! Token selection, `vouch-sampler-2` (trusted side, inside the enclave; also what
//! `vouch replay` runs). Version 2 is version 1's rule over logits first adjusted by the
//! request's logit bias and presence / frequency penalties ([`super::controls`]); with
//! none of those, the two choose the same tokens, so `vouch replay` runs format-3
//! receipts (which name version 1) with this code. Receipts name this algorithm, so it is
//! written out here in full and computed with operations whose results every IEEE-754
//! platform agrees on: no libm (`exp` is the native runtime's own polynomial), no parallel
//! or SIMD sums, a random stream defined by its crate (ChaCha20, `rand_chacha`, whose
//! output is value-stable).
//! candle's `LogitsProcessor` was used before; its softmax and `rand`'s `StdRng` are not
//! promised to stay the same across versions or platforms, which a replay needs.
//!
//! ```text
//!  temperature 0:  argmax (lowest id on ties)
//!  temperature T:  w_i = exp((l_i − max) / T)           f32, in id order
//!                  top_p < 1: keep the largest w_i (ties: lower id first) until their
//!                             f64 sum reaches top_p · Σw; else keep every id
//!                  u = (next_u64 >> 11) · 2⁻⁵³ · Σ kept w    (one draw per token)
//!                  the first kept id (in that order) whose running f64 sum exceeds u
//!  output grammar (response_format; `super::constraint`): before all of the above, every
//!                  id the grammar disallows next is out (no weight, never kept); without
//!                  one, nothing changes
//! ```

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::constraint::Constraint;
use super::controls::LogitAdjust;
use super::logprobs::{token_logprob, TokenLogprob};
use super::native::kernels::exp;
use super::{sampling, ModelError, SamplingParams};

/// The algorithm's name, as receipts commit it. A change to anything above that can
/// change a chosen token is a new version.
pub const SAMPLER_VERSION: &str = "vouch-sampler-2";
/// The version before logit adjustments, named by format-3 receipts; the same choices as
/// [`SAMPLER_VERSION`] when nothing adjusts the logits.
pub const SAMPLER_VERSION_1: &str = "vouch-sampler-1";

/// One request's token selection: its rule and its random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_p: Option<f64>,
    rng: ChaCha20Rng,
    /// Bias and penalties, and the completion's token counts.
    adjust: LogitAdjust,
    /// Scratch: the weights of the current step.
    weights: Vec<f32>,
    order: Vec<u32>,
    /// `top_logprobs` when log-probabilities are returned ([`super::logprobs`]).
    logprobs: Option<u32>,
    /// The last pick's log-probability, until [`Sampler::observe`] takes it.
    pending: Option<TokenLogprob>,
    /// The log-probabilities of the completion's tokens so far.
    scored: Vec<TokenLogprob>,
    /// The output grammar, when the request constrains the output.
    constraint: Option<Constraint>,
    /// Scratch: the logits with every id the grammar disallows at −∞.
    masked: Vec<f32>,
}

impl Sampler {
    /// The sampler for `params` (validated first), its stream seeded with `params.seed`.
    pub fn new(params: &SamplingParams) -> Result<Sampler, ModelError> {
        sampling::validate(params)?;
        // Choice i of n draws from stream i of the seed; a single answer (choice 0) from
        // stream 0, the one ChaCha20Rng starts on.
        let mut rng = ChaCha20Rng::seed_from_u64(params.seed);
        rng.set_stream(u64::from(params.controls.choice_index));
        Ok(Sampler {
            temperature: params.temperature as f32,
            top_p: params.top_p.filter(|p| *p < 1.0),
            rng,
            adjust: LogitAdjust::new(&params.controls),
            weights: Vec::new(),
            order: Vec::new(),
            logprobs: params.controls.logprobs,
            pending: None,
            scored: Vec::new(),
            constraint: None,
            masked: Vec::new(),
        })
    }

    /// Constrains every pick to what `constraint`'s grammar allows next.
    pub fn with_constraint(mut self, constraint: Option<Constraint>) -> Sampler {
        self.constraint = constraint;
        self
    }

    /// Records a token that joined the completion (the penalties count it from now on, and
    /// its log-probability is kept when they are returned).
    pub fn observe(&mut self, id: u32) -> Result<(), ModelError> {
        self.adjust.observe(id);
        if let Some(lp) = self.pending.take().filter(|lp| lp.id == id) {
            self.scored.push(lp);
        }
        match &mut self.constraint {
            Some(c) => c.consume(id),
            None => Ok(()),
        }
    }

    /// The log-probabilities of the observed completion tokens, in order (empty unless the
    /// parameters ask for them).
    pub fn take_logprobs(&mut self) -> Vec<TokenLogprob> {
        std::mem::take(&mut self.scored)
    }

    /// Picks the next token from `logits` (one per vocabulary id), after the bias and
    /// penalties.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, ModelError> {
        let mut logits = self.adjust.apply(logits);
        if logits.is_empty() {
            return Err(ModelError::inference("no logits to sample from"));
        }
        if logits.iter().any(|l| l.is_nan()) {
            return Err(ModelError::inference("the logits contain NaN"));
        }
        let masked = self.constraint.is_some();
        if let Some(c) = &mut self.constraint {
            let out = &mut self.masked;
            out.clear();
            out.resize(logits.len(), f32::NEG_INFINITY);
            c.allowed(|id| {
                if let (Some(m), Some(&l)) = (out.get_mut(id as usize), logits.get(id as usize)) {
                    *m = l;
                }
            })?;
            if out.iter().all(|l| *l == f32::NEG_INFINITY) {
                return Err(ModelError::inference("the output grammar allows no token here"));
            }
            logits = &self.masked;
        }
        let pick = choose(
            self.temperature,
            self.top_p,
            masked,
            &mut self.rng,
            &mut self.weights,
            &mut self.order,
            logits,
        );
        self.pending = self.logprobs.map(|top| token_logprob(logits, pick, top));
        Ok(pick)
    }
}

/// The choice rule over adjusted, NaN-free, non-empty `logits` (the scratch buffers are
/// the sampler's). `masked`: the ids at −∞ are out (the grammar disallows them): they get
/// no weight and are never picked.
fn choose(
    temperature: f32,
    top_p: Option<f64>,
    masked: bool,
    rng: &mut ChaCha20Rng,
    weights: &mut Vec<f32>,
    order: &mut Vec<u32>,
    logits: &[f32],
) -> u32 {
    let best = argmax(logits);
    if temperature == 0.0 {
        return best;
    }
    let max = logits[best as usize];
    let t = temperature;
    weights.clear();
    let out = |l: f32| masked && l == f32::NEG_INFINITY;
    weights.extend(logits.iter().map(|&l| if out(l) { 0.0 } else { exp((l - max) / t) }));
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    order.clear();
    let candidates = (0..logits.len() as u32).filter(|&id| !out(logits[id as usize]));
    match top_p {
        Some(p) => {
            order.extend(candidates);
            let w = &*weights;
            // Largest weight first, lower id first among equals: a total order.
            order.sort_unstable_by(|&a, &b| w[b as usize].total_cmp(&w[a as usize]).then(a.cmp(&b)));
            let target = p * total;
            let mut kept = 0.0f64;
            let mut len = 0;
            for &id in order.iter() {
                kept += f64::from(w[id as usize]);
                len += 1;
                if kept >= target {
                    break;
                }
            }
            order.truncate(len);
        }
        None => order.extend(candidates),
    }
    let kept: f64 = order.iter().map(|&id| f64::from(weights[id as usize])).sum();
    let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) * kept;
    let mut running = 0.0f64;
    for &id in order.iter() {
        running += f64::from(weights[id as usize]);
        if running > u {
            return id;
        }
    }
    // Rounding can leave u at the very top of the range: the last kept id.
    *order.last().unwrap_or(&best)
}

/// The id of the largest logit, the lowest such id on ties.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_p: Option<f64>, seed: u64) -> SamplingParams {
        SamplingParams { temperature, top_p, seed, ..SamplingParams::greedy(1) }
    }

    fn draws(p: &SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(p).unwrap();
        (0..n).map(|_| s.sample(logits).unwrap()).collect()
    }

    #[test]
    fn greedy_takes_the_lowest_id_among_the_largest() {
        let mut s = Sampler::new(&params(0.0, Some(0.5), 9)).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]).unwrap(), 1);
        assert_eq!(s.sample(&[f32::NEG_INFINITY, -5.0]).unwrap(), 1);
    }

    #[test]
    fn the_stream_is_pinned() {
        // vouch-sampler-1's choices for a fixed seed and logits: a change here is a new
        // sampler version (replays of old receipts would fail).
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 17) as f32) * 0.25).collect();
        assert_eq!(
            draws(&params(0.8, None, 42), &logits, 12),
            vec![27, 22, 5, 10, 10, 16, 43, 22, 5, 21, 5, 38]
        );
        assert_eq!(
            draws(&params(0.8, Some(0.5), 42), &logits, 12),
            vec![45, 45, 11, 11, 11, 28, 39, 45, 11, 45, 11, 22]
        );
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.7).sin()).collect();
        let a = draws(&params(1.0, None, 7), &logits, 64);
        assert_eq!(a, draws(&params(1.0, None, 7), &logits, 64));
        assert_ne!(a, draws(&params(1.0, None, 8), &logits, 64));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus_and_sampling_follows_the_weights() {
        // Weights ∝ exp(l): 0.64, 0.24, 0.09, 0.03 (T = 1). top_p 0.7 keeps ids 0 and 1.
        let logits = [2.0f32, 1.0, 0.0, -1.2];
        let picks = draws(&params(1.0, Some(0.7), 3), &logits, 4000);
        assert!(picks.iter().all(|&id| id < 2), "only the nucleus");
        let zeros = picks.iter().filter(|&&id| id == 0).count() as f64 / 4000.0;
        assert!((zeros - 0.73).abs() < 0.03, "id 0 drawn {zeros} of the time, expected ~0.73");
        let all = draws(&params(1.0, None, 3), &logits, 4000);
        let threes = all.iter().filter(|&&id| id == 3).count() as f64 / 4000.0;
        assert!((threes - 0.026).abs() < 0.01, "id 3 drawn {threes} of the time");
    }

    #[test]
    fn bad_logits_are_errors() {
        let mut s = Sampler::new(&params(0.5, None, 1)).unwrap();
        assert!(s.sample(&[]).unwrap_err().to_string().contains("no logits"));
        assert!(s.sample(&[0.0, f32::NAN]).unwrap_err().to_string().contains("NaN"));
        assert!(Sampler::new(&params(-1.0, None, 1)).is_err());
    }
}
