//! The generation of one answer (trusted side, inside the enclave), as a state machine the
//! caller steps: prompt ids in, text deltas and statistics out. [`generate_blocking`] steps
//! one [`Sequence`] alone; the [`super::Engine`] steps many in shared forward passes. Both
//! run this same code, so an answer is the same whichever way it was produced.
//!
//! ```text
//!  Sequence::new: validate, chat template, context check, seeded sampler
//!  ┌─► input(budget): the next prompt chunk, or the last sampled token
//!  │   (caller runs Model::step over this and other sequences' inputs)
//!  └── advance(logits): sample ─► stop token? budget spent? ─► UTF-8 delta ─► Finished?
//! ```
//!
//! Reproducible: the tokens depend only on the model, the prompt ids and the sampling
//! parameters (with their seed). The native runtime's logits do not depend on how the
//! prompt was split into chunks nor on what shared the step ([`super::native`]); candle's
//! would, so the engine gives candle one sequence at a time and the whole prompt at once.

use std::time::Instant;

use super::controls::AnswerText;
use super::sampler::Sampler;
use super::{
    compute_threads, FinishReason, GenerateRequest, GenerationStats, Model, ModelError, SeqCache, Step,
    MAX_CONTEXT_TOKENS, PREFILL_SCHEDULE,
};

/// Runs one generation to completion, calling `on_delta` with each piece of new text
/// (never empty, always whole UTF-8 characters).
pub fn generate_blocking(
    model: &mut Model,
    req: &GenerateRequest,
    on_delta: impl FnMut(&str),
) -> Result<(FinishReason, GenerationStats), ModelError> {
    generate_cancellable(model, req, on_delta, || false)
}

/// Like [`generate_blocking`], but checks `is_cancelled` before every forward pass and
/// returns [`ModelError::Cancelled`] as soon as it says so.
pub fn generate_cancellable(
    model: &mut Model,
    req: &GenerateRequest,
    mut on_delta: impl FnMut(&str),
    is_cancelled: impl Fn() -> bool,
) -> Result<(FinishReason, GenerationStats), ModelError> {
    let mut seq = Sequence::new(model, req)?;
    seq.reserve_cache(model);
    loop {
        if let Some(finish) = seq.finished() {
            return Ok((finish, seq.into_stats()));
        }
        if is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let (cache, tokens, logits) = seq.input(usize::MAX);
        let fed = tokens.len();
        let mut out = model.step(&mut [Step { cache, tokens, logits }])?;
        seq.advance(model, fed, out.pop().flatten(), &mut on_delta)?;
    }
}

/// One answer being generated.
pub(crate) struct Sequence {
    cache: SeqCache,
    prompt: Vec<u32>,
    /// Prompt tokens already fed.
    fed: usize,
    /// The last sampled token, fed in the next step.
    next: [u32; 1],
    max_tokens: usize,
    sampler: Sampler,
    /// The answer's text: whole characters, held back while a stop string could cut them.
    text: AnswerText,
    stats: GenerationStats,
    finished: Option<FinishReason>,
    started: Option<Instant>,
    decode_started: Option<Instant>,
    decode_forwards: u32,
    /// Steps the prompt took (1: fed whole).
    prefill_steps: u32,
}

impl Sequence {
    /// Validates `req`, renders and tokenizes its prompt and checks that prompt and
    /// completion fit the context. Allocates the KV cache's first positions.
    pub(crate) fn new(model: &Model, req: &GenerateRequest) -> Result<Sequence, ModelError> {
        req.validate()?;
        let params = &req.params;
        let prompt = model.encode(&req.prompt)?;
        if prompt.len() + params.max_tokens as usize > MAX_CONTEXT_TOKENS {
            return Err(ModelError::ContextTooLong {
                prompt_tokens: prompt.len(),
                max_tokens: params.max_tokens,
                limit: MAX_CONTEXT_TOKENS,
            });
        }
        params.controls.check_vocab(model.tokenizer.vocab_size())?;
        let sampler = model.sampler(params)?;
        let stats = GenerationStats {
            prompt_tokens: prompt.len() as u32,
            completion_tokens: 0,
            prompt_token_ids: prompt.clone(),
            completion_token_ids: Vec::new(),
            logprobs: Vec::new(),
            prefill_chunk: PREFILL_SCHEDULE.to_owned(),
            load_ms: model.load_ms,
            queue_ms: 0.0,
            prefill_ms: 0.0,
            decode_ms: 0.0,
            prompt_tokens_per_s: 0.0,
            completion_tokens_per_s: 0.0,
            threads: compute_threads(),
        };
        let max_tokens = params.max_tokens as usize;
        Ok(Sequence {
            cache: model.new_cache(0),
            finished: (max_tokens == 0).then_some(FinishReason::Length),
            prompt,
            fed: 0,
            next: [0],
            max_tokens,
            sampler,
            text: AnswerText::new(&params.controls.stop),
            stats,
            started: None,
            decode_started: None,
            decode_forwards: 0,
            prefill_steps: 0,
        })
    }

    /// Positions the sequence may occupy in its KV cache: prompt plus completion budget.
    pub(crate) fn positions_needed(&self) -> usize {
        self.prompt.len() + self.max_tokens
    }

    /// Sets KV-cache memory aside for the sequence's first positions (see
    /// [`Model::new_cache`]); before that, the cache grows as it fills.
    pub(crate) fn reserve_cache(&mut self, model: &Model) {
        self.cache = model.new_cache(self.positions_needed());
    }

    /// Completion tokens generated so far.
    pub(crate) fn generated(&self) -> usize {
        self.stats.completion_token_ids.len()
    }

    /// Prompt tokens not yet fed (0 once decoding).
    pub(crate) fn prefill_remaining(&self) -> usize {
        self.prompt.len() - self.fed
    }

    /// Why it finished, once it has.
    pub(crate) fn finished(&self) -> Option<FinishReason> {
        self.finished
    }

    /// Bytes its KV cache holds now.
    pub(crate) fn cache_bytes(&self) -> usize {
        self.cache.allocated_bytes()
    }

    /// Sets the time spent waiting before the first step, for the statistics.
    pub(crate) fn set_queue_ms(&mut self, ms: f64) {
        self.stats.queue_ms = ms;
    }

    /// What to feed next: up to `prefill_budget` prompt tokens (at least one) while the
    /// prompt is not all in, else the last sampled token; and whether that step's logits
    /// are needed (only after the prompt's last token and when decoding).
    pub(crate) fn input(&mut self, prefill_budget: usize) -> (&mut SeqCache, &[u32], bool) {
        self.started.get_or_insert_with(Instant::now);
        let remaining = self.prompt.len() - self.fed;
        if remaining > 0 {
            let take = remaining.min(prefill_budget.max(1));
            let chunk = &self.prompt[self.fed..self.fed + take];
            (&mut self.cache, chunk, take == remaining)
        } else {
            (&mut self.cache, &self.next, true)
        }
    }

    /// Takes the result of a step that fed `fed` tokens from [`Sequence::input`]: with the
    /// logits, picks the next token, reports new text through `on_delta` (holding back
    /// what a stop string could still cut), and finishes on the stop token, a stop string
    /// or the completion budget.
    pub(crate) fn advance(
        &mut self,
        model: &Model,
        fed: usize,
        logits: Option<Vec<f32>>,
        on_delta: &mut impl FnMut(&str),
    ) -> Result<(), ModelError> {
        if self.fed < self.prompt.len() {
            self.fed += fed;
            self.prefill_steps += 1;
            if self.fed < self.prompt.len() {
                return Ok(()); // more prompt to come
            }
            if self.prefill_steps > 1 {
                // Recorded as it happened; under the native runtime the split changes no bit.
                self.stats.prefill_chunk = format!("{} chunks", self.prefill_steps);
            }
            let now = Instant::now();
            self.stats.prefill_ms = self.started.map_or(0.0, |s| ms_between(s, now));
            self.decode_started = Some(now);
        } else {
            self.decode_forwards += 1;
        }
        let logits = logits.ok_or_else(|| ModelError::inference("a decoding step returned no logits"))?;
        let next = self.sampler.sample(&logits)?;
        let next = super::lie::tamper(&model.tokenizer, self.stats.completion_token_ids.len(), next);
        if model.tokenizer.is_stop(next) {
            return self.finish(FinishReason::Stop, on_delta);
        }
        self.sampler.observe(next)?;
        self.stats.completion_token_ids.push(next);
        let (delta, stopped) = self.text.push(model.tokenizer.token_bytes(next));
        if !delta.is_empty() {
            on_delta(&delta);
        }
        if stopped {
            return self.end(FinishReason::Stop);
        }
        if self.stats.completion_token_ids.len() >= self.max_tokens {
            return self.finish(FinishReason::Length, on_delta);
        }
        self.next = [next];
        Ok(())
    }

    /// Ends on the stop token or the budget: the last bytes, then what was held back (a
    /// stop string those last bytes complete makes it a "stop").
    fn finish(&mut self, reason: FinishReason, on_delta: &mut impl FnMut(&str)) -> Result<(), ModelError> {
        let (tail, stopped) = self.text.finish();
        if !tail.is_empty() {
            on_delta(&tail);
        }
        self.end(if stopped { FinishReason::Stop } else { reason })
    }

    fn end(&mut self, reason: FinishReason) -> Result<(), ModelError> {
        self.stats.decode_ms = self.decode_started.map_or(0.0, |s| ms_between(s, Instant::now()));
        self.finished = Some(reason);
        // Free the cache now rather than when the sequence is dropped.
        self.cache.release();
        Ok(())
    }

    /// The statistics, once finished.
    pub(crate) fn into_stats(mut self) -> GenerationStats {
        let s = &mut self.stats;
        s.logprobs = self.sampler.take_logprobs();
        s.completion_tokens = s.completion_token_ids.len() as u32;
        s.prompt_tokens_per_s = per_second(s.prompt_tokens, s.prefill_ms);
        s.completion_tokens_per_s = per_second(self.decode_forwards, s.decode_ms);
        self.stats
    }
}

fn ms_between(a: Instant, b: Instant) -> f64 {
    b.duration_since(a).as_secs_f64() * 1e3
}

fn per_second(count: u32, ms: f64) -> f64 {
    if ms > 0.0 {
        f64::from(count) / (ms / 1e3)
    } else {
        0.0
    }
}
