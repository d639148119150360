//! `vouch replay`: re-executes a receipted answer with the same engine and model file and
//! checks it bit for bit — trust that does not rest on the TEE alone.
//!
//! CLIENT side (an auditor's machine). Only a receipt that itself verifies (hardware-signed,
//! policy met, bound to the request and output it carries) is replayed: a mismatch is then
//! evidence against the enclave that signed it, written out as a portable fraud proof that
//! anyone with the model file re-checks with `vouch replay --check`.
//!
//! ```text
//!  receipt file ─► check_receipt (chain, policy, request + output) ─► leaf's ReplaySpec
//!      ─► same engine, sampler, template, tokenizer, model digest? (else: cannot replay)
//!      ─► request ─► prompt ids (digest must match) ; completion ids (digest, text)
//!      ─► model::replay (teacher-forced) ─► MATCH | fraud proof (first diverging token)
//! ```

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use vouch_attestation::receipt::{
    logprobs_sha256, token_ids_sha256, DecodingSpec, LogprobEntry, ReceiptLeaf, ReplaySpec, SEED_FROM_REQUEST,
};
use vouch_attestation::TrustAnchors;
use vouch_enclave::model::{
    replay, replay_by_text, ChatTemplate, CommittedAnswer, Divergence, FinishReason, GenerateRequest, Model,
    ReplayOutcome, SAMPLER_VERSION, SAMPLER_VERSION_1, TEXT_TEMPLATE,
};

use crate::policy::ClientPolicy;
use crate::receipts::{check_receipt_verified, LoadedReceipt, ReceiptCheckError};

/// Format tag of [`FraudProof`].
pub const FRAUD_PROOF_FORMAT: &str = "vouch-fraud-proof/1";

/// Evidence that a hardware-signed answer is not what the committed engine computes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FraudProof {
    /// [`FRAUD_PROOF_FORMAT`].
    pub format: String,
    /// The receipt file replayed (receipt, request body, output, completion token ids).
    pub receipt_file: crate::receipts::ReceiptFile,
    /// SHA-256 of the model file the replay ran (hex); the receipt commits the same.
    pub model_sha256: String,
    /// The engine the receipt commits and the replay ran.
    pub engine: String,
    /// Index in the completion of the first token that differs.
    pub position: usize,
    /// The committed token there (`null`: the committed answer had ended).
    pub committed_token: Option<u32>,
    /// The engine's token there (`null`: the engine's answer ends there).
    pub replayed_token: Option<u32>,
    /// The engine's whole answer: ids, text, finish reason.
    pub replayed_tokens: Vec<u32>,
    /// Its text.
    pub replayed_text: String,
    /// Its finish reason.
    pub replayed_finish_reason: String,
    /// Set when every token matches but the committed log-probabilities do not: the
    /// digest the engine's own give (hex), beside the receipt's `logprobs_sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_logprobs_sha256: Option<String>,
}

/// What a replay found.
#[derive(Debug)]
pub enum ReplayVerdict {
    /// The answer is exactly what the engine computes.
    Match {
        /// Completion tokens checked.
        tokens: usize,
        /// Wall time of the check, in milliseconds.
        ms: f64,
    },
    /// It is not: the proof.
    Fraud(Box<FraudProof>),
}

/// Why a receipt could not be replayed (which is no verdict on the enclave).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The receipt did not verify: nothing it says is evidence of anything.
    #[error("the receipt does not verify, so it proves nothing: {0}")]
    Receipt(#[from] ReceiptCheckError),
    /// The receipt (or this build, or the model file) cannot replay it.
    #[error("cannot replay: {0}")]
    Cannot(String),
    /// The engine refused the request or failed.
    #[error("replay failed: {0}")]
    Engine(#[from] vouch_enclave::model::ModelError),
}

fn cannot(msg: impl Into<String>) -> ReplayError {
    ReplayError::Cannot(msg.into())
}

/// Verifies `loaded` (which must carry its request body and output) and replays it on
/// `model`.
pub fn replay_receipt(
    anchors: &TrustAnchors,
    policy: &ClientPolicy,
    loaded: &LoadedReceipt,
    model: &mut Model,
    now: u64,
) -> Result<ReplayVerdict, ReplayError> {
    let Some(request) = &loaded.request_body else {
        return Err(cannot(
            "the file carries no request body (save answers with --receipt-out, or pass --request FILE)",
        ));
    };
    let output = loaded.output.as_deref();
    // With the output, the receipt is checked against it and the request; without (a bare
    // receipt), against the request alone, and the replay checks the committed output digest.
    let (_, verified) = check_receipt_verified(
        anchors,
        policy,
        &loaded.receipt_cbor,
        output.map(|o| (request.as_slice(), o)),
        None,
        now,
    )?;
    let leaf = verified.leaf().clone();
    if sha2::Sha256::digest(request)[..] != leaf.request_sha256[..] {
        return Err(cannot("the request is not the one the receipt commits (its SHA-256 differs)"));
    }
    let spec = leaf.replay.clone().ok_or_else(|| {
        cannot(format!(
            "the receipt is format {}, which does not commit what a replay needs (engine, sampler, token ids)",
            leaf.version
        ))
    })?;
    check_identity(&spec, &leaf, model)?;
    let req = request_of(request, &leaf, &spec)?;
    let committed_chat = ChatTemplate::from_name(&spec.chat_template).is_some();
    if req.prompt.is_chat() != committed_chat {
        return Err(cannot(format!(
            "the receipt commits template {:?}, but the request is one for {}",
            spec.chat_template,
            if req.prompt.is_chat() { "a chat template".to_owned() } else { format!("{TEXT_TEMPLATE:?}") }
        )));
    }
    match model.template_for(&req.prompt) {
        Ok(t) if t == spec.chat_template => {}
        Ok(t) => {
            return Err(cannot(format!(
                "the receipt commits template {:?}; this model file is served with {t:?}",
                spec.chat_template
            )))
        }
        Err(_) => {
            return Err(cannot(format!(
                "the receipt commits template {:?}; this model file has no chat template Vouch renders",
                spec.chat_template
            )))
        }
    }
    let prompt = model.encode(&req.prompt)?;
    if token_ids_sha256(&prompt)[..] != spec.prompt_tokens_sha256[..] {
        return Err(cannot(
            "the request renders to other prompt tokens than the receipt commits (chat template or tokenizer differ)",
        ));
    }
    let finish = match leaf.finish_reason.as_str() {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        other => return Err(cannot(format!("finish reason {other:?} is not one this engine produces"))),
    };
    let started = Instant::now();
    let (Some(tokens), Some(output)) = (loaded.completion_tokens.clone(), output) else {
        // No token ids (or no output): regenerate step by step and compare digests.
        let committed = CommittedAnswer {
            text: output,
            text_sha256: &leaf.output_sha256,
            ids_sha256: &spec.output_tokens_sha256,
        };
        return Ok(match replay_by_text(model, &req, committed, finish)? {
            ReplayOutcome::Match { logprobs, .. } => {
                // The regenerated ids hash to the committed ones.
                let ids = Vec::new();
                match logprobs_differ(model, &leaf, &logprobs, &ids, finish, loaded, &spec) {
                    Some(p) => ReplayVerdict::Fraud(Box::new(FraudProof { position: logprobs.len(), ..p })),
                    None => ReplayVerdict::Match {
                        tokens: leaf.completion_tokens as usize,
                        ms: started.elapsed().as_secs_f64() * 1e3,
                    },
                }
            }
            ReplayOutcome::Diverged(d) => ReplayVerdict::Fraud(Box::new(proof(loaded, &leaf, &spec, d))),
        });
    };
    if token_ids_sha256(&tokens)[..] != spec.output_tokens_sha256[..] {
        return Err(cannot("the file's completion token ids are not the ones the receipt commits"));
    }
    if !spells(&model.tokenizer().decode(&tokens), output, &req.params.controls.stop) {
        return Err(cannot("the committed token ids do not spell the committed output"));
    }
    match replay(model, &req, &tokens, finish)? {
        ReplayOutcome::Match { logprobs, .. } => {
            if let Some(p) = logprobs_differ(model, &leaf, &logprobs, &tokens, finish, loaded, &spec) {
                return Ok(ReplayVerdict::Fraud(Box::new(p)));
            }
            Ok(ReplayVerdict::Match { tokens: tokens.len(), ms: started.elapsed().as_secs_f64() * 1e3 })
        }
        ReplayOutcome::Diverged(d) => Ok(ReplayVerdict::Fraud(Box::new(proof(loaded, &leaf, &spec, d)))),
    }
}

/// When the leaf commits log-probabilities and the engine's own (for the same, matching
/// tokens) hash otherwise: the proof of that.
fn logprobs_differ(
    model: &Model,
    leaf: &ReceiptLeaf,
    logprobs: &[vouch_enclave::model::TokenLogprob],
    tokens: &[u32],
    finish: FinishReason,
    loaded: &LoadedReceipt,
    spec: &ReplaySpec,
) -> Option<FraudProof> {
    let committed = leaf.logprobs_sha256.as_ref()?;
    let mine = logprobs_digest(model, logprobs);
    if mine[..] == committed[..] {
        return None;
    }
    let d = Divergence {
        position: tokens.len(),
        committed: None,
        replayed: None,
        replayed_tokens: tokens.to_vec(),
        replayed_text: model.tokenizer().decode(tokens),
        replayed_finish: finish,
    };
    Some(FraudProof { replayed_logprobs_sha256: Some(hex::encode(mine)), ..proof(loaded, leaf, spec, d) })
}

/// [`logprobs_sha256`] of the engine's log-probabilities, spelled as a response spells them.
pub fn logprobs_digest(model: &Model, logprobs: &[vouch_enclave::model::TokenLogprob]) -> [u8; 32] {
    let bytes = |id: u32| model.tokenizer().token_bytes(id).to_vec();
    let entries: Vec<LogprobEntry> = logprobs
        .iter()
        .map(|t| LogprobEntry {
            bytes: bytes(t.id),
            logprob: t.logprob,
            top: t.top.iter().map(|&(id, l)| (bytes(id), l)).collect(),
        })
        .collect();
    logprobs_sha256(&entries)
}

/// Re-checks a fraud proof: its receipt must verify and its replay must diverge exactly
/// where and how the proof says. `Ok(true)` when the proof holds.
pub fn check_proof(
    anchors: &TrustAnchors,
    policy: &ClientPolicy,
    proof: &FraudProof,
    model: &mut Model,
    now: u64,
) -> Result<bool, ReplayError> {
    if proof.format != FRAUD_PROOF_FORMAT {
        return Err(cannot(format!("unknown proof format {:?}", proof.format)));
    }
    let loaded = proof.receipt_file.clone().load().map_err(cannot)?;
    Ok(match replay_receipt(anchors, policy, &loaded, model, now)? {
        ReplayVerdict::Match { .. } => false,
        ReplayVerdict::Fraud(p) => {
            (p.position, p.committed_token, p.replayed_token, &p.replayed_logprobs_sha256)
                == (
                    proof.position,
                    proof.committed_token,
                    proof.replayed_token,
                    &proof.replayed_logprobs_sha256,
                )
        }
    })
}

fn check_identity(spec: &ReplaySpec, leaf: &ReceiptLeaf, model: &Model) -> Result<(), ReplayError> {
    let id = model.replay_identity();
    // A format-3 receipt names vouch-sampler-1: version 2 without logit adjustments (all
    // such answers had none) chooses the same tokens.
    let sampler = if leaf.version == 3 && spec.sampler == SAMPLER_VERSION_1 {
        SAMPLER_VERSION_1
    } else {
        SAMPLER_VERSION
    };
    let mine = [("engine", id.engine, spec.engine.as_str()), ("sampler", sampler, spec.sampler.as_str())];
    for (what, have, needed) in mine {
        if have != needed {
            return Err(cannot(format!("the receipt needs {what} {needed:?}; this build has {have:?}")));
        }
    }
    if spec.chat_template != TEXT_TEMPLATE && ChatTemplate::from_name(&spec.chat_template).is_none() {
        let known: Vec<&str> = ChatTemplate::ALL.iter().map(|t| t.name()).chain([TEXT_TEMPLATE]).collect();
        return Err(cannot(format!(
            "the receipt needs chat template {:?}; this build has {}",
            spec.chat_template,
            known.join(", ")
        )));
    }
    if model.digest()[..] != leaf.model_sha256[..] {
        return Err(cannot(format!(
            "the receipt is for model {}; --model is {}",
            hex::encode(&leaf.model_sha256),
            hex::encode(model.digest())
        )));
    }
    if id.tokenizer_sha256[..] != spec.tokenizer_sha256[..] {
        return Err(cannot("the model file's tokenizer differs from the one the receipt commits"));
    }
    Ok(())
}

/// Whether token ids that spell `spelled` can have produced the answer text `output`:
/// the same text, or — when a stop string cut it — `output` followed by the first
/// occurrence of a stop string (and whatever the last token added after it).
fn spells(spelled: &str, output: &str, stop: &[String]) -> bool {
    if spelled == output {
        return stop.iter().all(|s| !spelled.contains(s.as_str()));
    }
    let first_stop = stop.iter().filter_map(|s| spelled.find(s.as_str())).min();
    spelled.starts_with(output) && first_stop == Some(output.len())
}

/// The request as the enclave ran it: the body's messages, with the receipt's committed
/// parameters (which must agree with the body's; the seed is the enclave's when it drew one).
fn request_of(body: &[u8], leaf: &ReceiptLeaf, spec: &ReplaySpec) -> Result<GenerateRequest, ReplayError> {
    let parsed =
        vouch_enclave::request::parse_any_request(body).map_err(|e| cannot(format!("the request: {e}")))?;
    let mut params = parsed.params.clone();
    // The body asks for n choices; the leaf says which one this is.
    params.controls.choice_index = leaf.decoding.as_ref().map_or(0, |d| d.choice_index);
    if spec.seed_source != SEED_FROM_REQUEST {
        if parsed.seed_given {
            return Err(cannot(format!(
                "the receipt says the seed came from the {}, but the request gives one",
                spec.seed_source
            )));
        }
        params.seed = leaf.seed;
    }
    let committed = (leaf.temperature, leaf.top_p, leaf.seed, leaf.max_tokens);
    if (params.temperature, params.top_p, params.seed, params.max_tokens) != committed {
        return Err(cannot(format!(
            "the receipt commits parameters {committed:?}, the request asks {:?}",
            (params.temperature, params.top_p, params.seed, params.max_tokens)
        )));
    }
    // The controls the body asks for must be the ones the receipt commits (format 4), or
    // none at all (format 3: the enclave refused every control then).
    let applied = leaf.decoding.clone().unwrap_or_else(DecodingSpec::unconstrained);
    if params.controls.spec() != applied {
        return Err(cannot(format!(
            "the receipt commits decoding {applied:?}, the request asks {:?}",
            params.controls.spec()
        )));
    }
    Ok(GenerateRequest { prompt: parsed.prompt, params })
}

fn proof(loaded: &LoadedReceipt, leaf: &ReceiptLeaf, spec: &ReplaySpec, d: Divergence) -> FraudProof {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    FraudProof {
        format: FRAUD_PROOF_FORMAT.to_owned(),
        // A bare receipt's proof carries no output either (not an empty one).
        receipt_file: crate::receipts::ReceiptFile {
            output: loaded.output.clone(),
            ..crate::receipts::ReceiptFile::new(
                &b64.encode(&loaded.receipt_cbor),
                loaded.request_body.as_deref().unwrap_or_default(),
                "",
                None,
                loaded.completion_tokens.clone(),
            )
        },
        model_sha256: hex::encode(&leaf.model_sha256),
        engine: spec.engine.clone(),
        position: d.position,
        committed_token: d.committed,
        replayed_token: d.replayed,
        replayed_tokens: d.replayed_tokens,
        replayed_text: d.replayed_text,
        replayed_finish_reason: d.replayed_finish.as_str().to_owned(),
        replayed_logprobs_sha256: None,
    }
}
