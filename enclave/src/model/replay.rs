//! Teacher-forced replay (what `vouch replay` runs, on anyone's machine): checks that a
//! committed answer is exactly what this engine, model file and request produce.
//!
//! ```text
//!  messages ─► chat template ─► prompt ids ──┐
//!  committed completion ids ─────────────────┴─► one pass, in chunks: logits after every
//!      position from the prompt's last token on ─► the committed sampler (same seed) picks
//!      at each position ─► equal to the committed id? then the stop / length ending
//!  first difference ─► Divergence (both candidates), and the honest answer regenerated
//! ```
//!
//! Cheaper than generating: the whole answer goes through the model as prompt-like chunks
//! (every weight read once per chunk, not once per token). Sound because the native
//! runtime's logits at a position do not depend on how the tokens were fed (one pass, chunks
//! or one by one; tested in `native`), and the sampler draws one random number per chosen
//! token in order, exactly as generation does.

use super::controls::AnswerText;
use super::{generate_blocking, FinishReason, GenerateRequest, Model, ModelError, Step};

/// Completion tokens fed per teacher-forced pass (bounds the logits held: 64 × vocab f32).
const REPLAY_CHUNK: usize = 64;

/// The result of a replay.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayOutcome {
    /// Every committed token, and the ending, is what the engine produces.
    Match {
        /// The prompt's token ids (as rendered here).
        prompt_tokens: Vec<u32>,
        /// The completion tokens' log-probabilities, when the request asks for them.
        logprobs: Vec<super::TokenLogprob>,
    },
    /// The committed answer differs from the engine's.
    Diverged(Divergence),
}

/// Where and how a committed answer differs from the engine's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Index in the completion of the first token that differs.
    pub position: usize,
    /// The committed token there; `None` where the committed answer had already ended.
    pub committed: Option<u32>,
    /// The engine's token there; `None` where the engine's answer ends (stop token or
    /// budget).
    pub replayed: Option<u32>,
    /// The engine's whole answer to the request: token ids, text and finish reason.
    pub replayed_tokens: Vec<u32>,
    /// Its text.
    pub replayed_text: String,
    /// Its finish reason.
    pub replayed_finish: FinishReason,
}

/// Checks that `committed` (completion token ids, the stop token not included) ending with
/// `finish` is the answer to `req` under this model. Errors are the request's or the
/// engine's (bad parameters, a prompt that does not fit, a non-native runtime), never a
/// verdict.
pub fn replay(
    model: &mut Model,
    req: &GenerateRequest,
    committed: &[u32],
    finish: FinishReason,
) -> Result<ReplayOutcome, ModelError> {
    req.validate()?;
    let prompt = model.encode(&req.prompt)?;
    let max_tokens = req.params.max_tokens as usize;
    if prompt.len() + committed.len().max(max_tokens) > super::MAX_CONTEXT_TOKENS {
        return Err(ModelError::ContextTooLong {
            prompt_tokens: prompt.len(),
            max_tokens: req.params.max_tokens,
            limit: super::MAX_CONTEXT_TOKENS,
        });
    }
    req.params.controls.check_vocab(model.tokenizer.vocab_size())?;
    let mut sampler = model.sampler(&req.params)?;
    // The text as generation spells it, for the stop strings.
    let mut text = AnswerText::new(&req.params.controls.stop);
    let mut cache = model.new_cache(prompt.len() + committed.len());
    let vocab = model.tokenizer.vocab_size();

    // The prompt, all but its last token, as generation's prefill would feed it (only the
    // cache matters here: no logits are computed).
    if prompt.len() > 1 {
        model.step(&mut [Step { cache: &mut cache, tokens: &prompt[..prompt.len() - 1], logits: false }])?;
    }
    // Then the prompt's last token and the committed tokens: the logits after each are the
    // ones generation sampled the next token from.
    let forced: Vec<u32> = prompt[prompt.len() - 1..].iter().chain(committed).copied().collect();
    // Row `p` of these passes holds the logits generation sampled completion position `p`
    // from. At each position the engine either picks the committed token, or ends the
    // answer exactly where and how the committed one ends (a stop token sampled, a stop
    // string completed by the token before, or the budget of max_tokens reached, which
    // samples nothing).
    let mut position = 0;
    let mut divergence = None;
    'passes: for chunk in forced.chunks(REPLAY_CHUNK) {
        let logits = model.logits_after_each(&mut cache, chunk)?;
        for row in logits.chunks_exact(vocab) {
            if position >= max_tokens {
                // The budget ends it; its last bytes may still complete a stop string.
                let ending = if text.finish().1 { FinishReason::Stop } else { FinishReason::Length };
                if !(position == committed.len() && finish == ending) {
                    divergence = Some((position, committed.get(position).copied(), None));
                }
                break 'passes;
            }
            let pick = sampler.sample(row)?;
            let stops = model.tokenizer.is_stop(pick);
            let replayed = (!stops).then_some(pick);
            match committed.get(position) {
                Some(&id) if !stops && pick == id => {
                    sampler.observe(id)?;
                    if text.push(model.tokenizer.token_bytes(id)).1 {
                        // A stop string ends the engine's answer right after this token.
                        if !(position + 1 == committed.len() && finish == FinishReason::Stop) {
                            divergence = Some((position + 1, committed.get(position + 1).copied(), None));
                        }
                        break 'passes;
                    }
                }
                Some(&id) => {
                    divergence = Some((position, Some(id), replayed));
                    break 'passes;
                }
                None => {
                    if !(finish == FinishReason::Stop && stops) {
                        divergence = Some((position, None, replayed));
                    }
                    break 'passes;
                }
            }
            position += 1;
        }
    }
    let Some((position, committed_id, replayed_id)) = divergence else {
        return Ok(ReplayOutcome::Match { prompt_tokens: prompt, logprobs: sampler.take_logprobs() });
    };
    // The engine's own answer, generated the ordinary way.
    let mut text = String::new();
    let (replayed_finish, stats) = generate_blocking(model, req, |d| text.push_str(d))?;
    Ok(ReplayOutcome::Diverged(Divergence {
        position,
        committed: committed_id,
        replayed: replayed_id,
        replayed_tokens: stats.completion_token_ids,
        replayed_text: text,
        replayed_finish,
    }))
}

/// The fallback when the committed token ids are not at hand (a bare receipt and its
/// request, or a file saved without them): the answer is regenerated step by step, the
/// ordinary way (one forward pass per token: slower than [`replay`]). It matches when its
/// token ids hash to `committed.ids_sha256`, its text to `committed.text_sha256` (and
/// equals `committed.text`, when known) and it ends with `finish`. On a difference, the
/// position is the first completion token after which the engine's text is no longer a
/// prefix of the committed text — the token count when the texts agree or the committed
/// text is unknown; the committed token there is unknown (`None`).
pub fn replay_by_text(
    model: &mut Model,
    req: &GenerateRequest,
    committed: CommittedAnswer<'_>,
    finish: FinishReason,
) -> Result<ReplayOutcome, ModelError> {
    use sha2::Digest;
    req.validate()?;
    let mut text = String::new();
    let (replayed_finish, stats) = generate_blocking(model, req, |d| text.push_str(d))?;
    let ids = stats.completion_token_ids;
    let same_ids = vouch_attestation::receipt::token_ids_sha256(&ids)[..] == *committed.ids_sha256;
    let same_text = sha2::Sha256::digest(text.as_bytes())[..] == *committed.text_sha256
        && committed.text.is_none_or(|t| t == text);
    if same_ids && same_text && replayed_finish == finish {
        let prompt = model.encode(&req.prompt)?;
        return Ok(ReplayOutcome::Match { prompt_tokens: prompt, logprobs: stats.logprobs });
    }
    let mut position = ids.len();
    if let Some(committed) = committed.text.map(str::as_bytes) {
        let mut spelled = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            spelled.extend_from_slice(model.tokenizer.token_bytes(id));
            if !committed.starts_with(&spelled) {
                position = i;
                break;
            }
        }
    }
    Ok(ReplayOutcome::Diverged(Divergence {
        position,
        committed: None,
        replayed: ids.get(position).copied(),
        replayed_tokens: ids,
        replayed_text: text,
        replayed_finish,
    }))
}

/// What a receipt commits about an answer whose token ids are not at hand.
#[derive(Debug, Clone, Copy)]
pub struct CommittedAnswer<'a> {
    /// The answer's text, when known.
    pub text: Option<&'a str>,
    /// SHA-256 of its text (the receipt's `output_sha256`).
    pub text_sha256: &'a [u8],
    /// The digest of its token ids (the spec's `output_tokens_sha256`).
    pub ids_sha256: &'a [u8],
}
