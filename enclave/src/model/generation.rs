//! The generation loop (trusted side, inside the enclave): prompt ids in, text deltas and
//! statistics out. Used directly by `vouch-enclave generate` and by the [`super::Engine`]
//! thread.
//!
//! Schedule, fixed so that results are reproducible: clear the KV cache; run the whole
//! prompt through the model in one forward pass ([`PREFILL_SCHEDULE`] = "all"); then pick a
//! token, stop if it is a stop token or the budget is spent, otherwise feed it back one
//! token at a time.

use std::time::Instant;

use super::chat::encode_chat_prompt;
use super::sampling::logits_processor;
use super::utf8::Utf8Stream;
use super::{
    compute_threads, FinishReason, GenerateRequest, GenerationStats, Model, ModelError, MAX_CONTEXT_TOKENS,
    PREFILL_SCHEDULE,
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
    req.validate()?;
    let params = &req.params;
    let prompt_ids = encode_chat_prompt(&model.tokenizer, &req.messages)?;
    if prompt_ids.len() + params.max_tokens as usize > MAX_CONTEXT_TOKENS {
        return Err(ModelError::ContextTooLong {
            prompt_tokens: prompt_ids.len(),
            max_tokens: params.max_tokens,
            limit: MAX_CONTEXT_TOKENS,
        });
    }
    let mut sampler = logits_processor(params)?;

    let mut stats = GenerationStats {
        prompt_tokens: prompt_ids.len() as u32,
        completion_tokens: 0,
        prompt_token_ids: prompt_ids.clone(),
        completion_token_ids: Vec::new(),
        prefill_chunk: PREFILL_SCHEDULE.to_owned(),
        load_ms: model.load_ms,
        queue_ms: 0.0,
        prefill_ms: 0.0,
        decode_ms: 0.0,
        prompt_tokens_per_s: 0.0,
        completion_tokens_per_s: 0.0,
        threads: compute_threads(),
    };
    if params.max_tokens == 0 {
        return Ok((FinishReason::Length, stats));
    }
    if is_cancelled() {
        return Err(ModelError::Cancelled);
    }

    // A previous request (or a failed one) may have left state behind.
    model.start_sequence(prompt_ids.len() + params.max_tokens as usize);

    let prefill_started = Instant::now();
    let mut logits = model.forward(&prompt_ids, 0)?;
    stats.prefill_ms = prefill_started.elapsed().as_secs_f64() * 1e3;

    let decode_started = Instant::now();
    let mut decode_forwards = 0u32;
    let mut text = Utf8Stream::new();
    let mut position = prompt_ids.len();
    let finish = loop {
        let next = sampler.sample(&logits).map_err(ModelError::inference)?;
        if model.tokenizer.is_stop(next) {
            break FinishReason::Stop;
        }
        stats.completion_token_ids.push(next);
        let delta = text.push(model.tokenizer.token_bytes(next));
        if !delta.is_empty() {
            on_delta(&delta);
        }
        if stats.completion_token_ids.len() >= params.max_tokens as usize {
            break FinishReason::Length;
        }
        if is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        logits = model.forward(&[next], position)?;
        position += 1;
        decode_forwards += 1;
    };
    let tail = text.finish();
    if !tail.is_empty() {
        on_delta(&tail);
    }
    stats.decode_ms = decode_started.elapsed().as_secs_f64() * 1e3;
    // Free the cache now rather than holding it until the next request.
    model.end_sequence();

    stats.completion_tokens = stats.completion_token_ids.len() as u32;
    stats.prompt_tokens_per_s = per_second(stats.prompt_tokens, stats.prefill_ms);
    stats.completion_tokens_per_s = per_second(decode_forwards, stats.decode_ms);
    Ok((finish, stats))
}

fn per_second(count: u32, ms: f64) -> f64 {
    if ms > 0.0 {
        f64::from(count) / (ms / 1e3)
    } else {
        0.0
    }
}
