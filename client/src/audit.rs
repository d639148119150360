//! Cross-operator spot checks: a sample of the answers the proxy relays is asked again of a
//! second, independently attested enclave (another chip; its own policy may pin another
//! operator), with the same request bytes and the same committed seed, and the two
//! hardware-signed answers are compared.
//!
//! CLIENT side (`vouch proxy --audit-url URL --audit-rate R`). The native runtime is
//! bit-deterministic, so two honest enclaves running the same engine and model file give
//! the same token ids for the same request and spec. Two signed answers that differ are a
//! portable proof that at least one enclave lied ([`MismatchProof`]); `vouch replay` on the
//! proof then tells which. Audits run after the user's answer has gone out, on their own
//! tasks and with their own concurrency bound, so they never delay it; their verdicts are
//! kept (bounded) and served by the proxy at `/v1/vouch/audits/ID`.
//!
//! ```text
//!  verified answer ─► sampled (rate R)? ─► vouch_verdict.audit = {id, status: pending}
//!      └─(task)─► audit enclave: same bytes + vouch-seed ─► verified answer
//!            ─► compare(spec, parameters, token ids, text) ─► agree | MISMATCH (proof file)
//!                                                            | inconclusive | failed
//! ```

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use vouch_attestation::receipt::{ReceiptLeaf, SEED_FROM_REQUEST};

use crate::client::{ChatOutcome, VouchClient};
use crate::receipts::ReceiptFile;

/// Format tag of [`MismatchProof`].
pub const MISMATCH_PROOF_FORMAT: &str = "vouch-audit-mismatch/1";
/// Audits running at once by default; a sampled answer beyond that is recorded as skipped.
pub const MAX_AUDITS_IN_FLIGHT: usize = 4;
/// Audit records kept (the oldest are forgotten first).
pub const MAX_AUDIT_RECORDS: usize = 4096;

/// Two hardware-signed answers to the same request under the same spec that differ: at
/// least one of the two enclaves lied. `vouch replay PROOF --model FILE` tells which.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MismatchProof {
    /// [`MISMATCH_PROOF_FORMAT`].
    pub format: String,
    /// What differs (e.g. "completion token ids").
    pub differs: String,
    /// The answer the user got.
    pub primary: ReceiptFile,
    /// The audit enclave's answer.
    pub audit: ReceiptFile,
}

/// The outcome of one audit.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AuditStatus {
    /// Sent; no answer yet.
    Pending,
    /// Both enclaves signed the same token ids and text.
    Agree,
    /// They signed different answers to the same request and spec.
    Mismatch {
        /// What differs.
        differs: String,
        /// Where the proof was written, if it was.
        proof: Option<String>,
    },
    /// The two answers cannot be compared (another engine or model, the same chip...).
    Inconclusive {
        /// Why.
        reason: String,
    },
    /// The audit enclave gave no verified answer.
    Failed {
        /// Why.
        reason: String,
    },
    /// Sampled, but not sent: every audit slot was busy.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One audit's record, as served at `/v1/vouch/audits/ID`.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// Its id (counts up from 1 per proxy run).
    pub id: u64,
    /// The audited answer's enclave-side response id.
    pub response_id: String,
    /// The outcome.
    #[serde(flatten)]
    pub status: AuditStatus,
}

/// What two verified answers to the same request bytes say about each other.
pub fn compare(primary: &ChatOutcome, audit: &ChatOutcome) -> AuditStatus {
    if primary.chip_id == audit.chip_id {
        return AuditStatus::Inconclusive { reason: "both answers come from the same chip".into() };
    }
    compare_leaves(&primary.leaf, &audit.leaf)
}

/// [`compare`] on the committed leaves: first what must be equal for the answers to be
/// comparable, then what two honest enclaves must agree on.
pub fn compare_leaves(p: &ReceiptLeaf, a: &ReceiptLeaf) -> AuditStatus {
    let inconclusive = |reason: String| AuditStatus::Inconclusive { reason };
    if p.request_sha256 != a.request_sha256 {
        return inconclusive("the receipts are for different request bytes".into());
    }
    let (Some(ps), Some(as_)) = (&p.replay, &a.replay) else {
        return inconclusive("a receipt is older than format 3 and commits no replay spec".into());
    };
    let same_setup = [
        ("engine", ps.engine == as_.engine),
        ("sampler", ps.sampler == as_.sampler),
        ("chat template", ps.chat_template == as_.chat_template),
        ("tokenizer", ps.tokenizer_sha256 == as_.tokenizer_sha256),
        ("model", p.model_sha256 == a.model_sha256),
        ("stop tokens", ps.stop_token_ids == as_.stop_token_ids),
        (
            "sampling parameters",
            (p.temperature, p.top_p, p.max_tokens) == (a.temperature, a.top_p, a.max_tokens),
        ),
        ("seed", p.seed == a.seed || p.temperature == 0.0),
        ("decoding spec (stop strings, penalties, bias)", p.decoding == a.decoding),
    ];
    if let Some((what, _)) = same_setup.iter().find(|(_, same)| !same) {
        return inconclusive(format!("the two enclaves ran with a different {what}"));
    }
    // Same engine, tokenizer, template and request bytes: everything below is determined.
    let determined = [
        ("prompt token ids", ps.prompt_tokens_sha256 == as_.prompt_tokens_sha256),
        ("completion token ids", ps.output_tokens_sha256 == as_.output_tokens_sha256),
        ("output text", p.output_sha256 == a.output_sha256),
        ("finish reason", p.finish_reason == a.finish_reason),
    ];
    match determined.iter().find(|(_, same)| !same) {
        Some((what, _)) => AuditStatus::Mismatch { differs: (*what).to_owned(), proof: None },
        None => AuditStatus::Agree,
    }
}

/// The seed to hand the audit enclave: the committed one, when the request gave none.
fn handed_seed(leaf: &ReceiptLeaf) -> Option<u64> {
    leaf.replay.as_ref().filter(|s| s.seed_source != SEED_FROM_REQUEST).map(|_| leaf.seed)
}

/// The auditor: the attested audit enclave, the sampling rate and the records.
pub struct Auditor {
    client: Arc<VouchClient>,
    rate: f64,
    out_dir: PathBuf,
    slots: Arc<Semaphore>,
    concurrency: usize,
    next_id: AtomicU64,
    records: Mutex<VecDeque<AuditRecord>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("rate", &self.rate).finish_non_exhaustive()
    }
}

/// A uniform draw in [0, 1) from the system's randomness (1.0 when there is none, so
/// an unsampled answer is the failure mode, never an unannounced audit).
fn uniform() -> f64 {
    let mut b = [0u8; 8];
    match aws_lc_rs::rand::fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 1.0,
    }
}

impl Auditor {
    /// An auditor sending a fraction `rate` (0..=1) of answers to `client`, at most
    /// `concurrency` at once, writing mismatch proofs into `out_dir`.
    pub fn new(client: Arc<VouchClient>, rate: f64, concurrency: usize, out_dir: PathBuf) -> Auditor {
        Auditor {
            client,
            rate,
            out_dir,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
            next_id: AtomicU64::new(1),
            records: Mutex::new(VecDeque::new()),
        }
    }

    /// The audit enclave's client.
    pub fn client(&self) -> &Arc<VouchClient> {
        &self.client
    }

    fn set(&self, id: u64, status: AuditStatus) {
        if let Ok(mut r) = self.records.lock() {
            if let Some(rec) = r.iter_mut().find(|r| r.id == id) {
                rec.status = status;
            }
        }
    }

    /// One record, by id.
    pub fn record(&self, id: u64) -> Option<AuditRecord> {
        self.records.lock().ok()?.iter().find(|r| r.id == id).cloned()
    }

    /// Counts of the kept records by status, and the mismatches themselves.
    pub fn summary(&self) -> serde_json::Value {
        let Ok(records) = self.records.lock() else { return serde_json::Value::Null };
        let mut counts = std::collections::BTreeMap::<&str, u64>::new();
        for r in records.iter() {
            let k = match r.status {
                AuditStatus::Pending => "pending",
                AuditStatus::Agree => "agree",
                AuditStatus::Mismatch { .. } => "mismatch",
                AuditStatus::Inconclusive { .. } => "inconclusive",
                AuditStatus::Failed { .. } => "failed",
                AuditStatus::Skipped { .. } => "skipped",
            };
            *counts.entry(k).or_default() += 1;
        }
        let mismatches: Vec<_> =
            records.iter().filter(|r| matches!(r.status, AuditStatus::Mismatch { .. })).collect();
        serde_json::json!({"rate": self.rate, "counts": counts, "mismatches": mismatches})
    }

    /// Decides whether to audit `answer` and, if so, starts the audit on its own task.
    /// Returns the `audit` part of the answer's `vouch_verdict` (`None`: not sampled).
    pub fn maybe_audit(self: &Arc<Self>, answer: &ChatOutcome) -> Option<serde_json::Value> {
        if self.rate <= 0.0 || uniform() >= self.rate {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let permit = self.slots.clone().try_acquire_owned().ok();
        let status = match permit {
            Some(_) => AuditStatus::Pending,
            None => AuditStatus::Skipped { reason: format!("{} audits already running", self.concurrency) },
        };
        if let Ok(mut r) = self.records.lock() {
            if r.len() >= MAX_AUDIT_RECORDS {
                r.pop_front();
            }
            r.push_back(AuditRecord {
                id,
                response_id: answer.leaf.response_id.clone(),
                status: status.clone(),
            });
        }
        let view = serde_json::json!({"id": id, "status": status, "url": format!("/v1/vouch/audits/{id}")});
        if let Some(permit) = permit {
            let me = Arc::clone(self);
            let primary = answer.clone();
            tokio::spawn(async move {
                let status = me.run(id, &primary).await;
                if matches!(status, AuditStatus::Mismatch { .. }) {
                    tracing::error!(id, response = %primary.leaf.response_id, ?status,
                        "AUDIT MISMATCH: two enclaves signed different answers to the same request");
                } else {
                    tracing::info!(id, ?status, "audit finished");
                }
                me.set(id, status);
                drop(permit);
            });
        }
        Some(view)
    }

    /// Re-asks the audit enclave and compares (the proof written on a mismatch).
    pub async fn run(&self, id: u64, primary: &ChatOutcome) -> AuditStatus {
        let body = Bytes::clone(&primary.request_body);
        let seed = handed_seed(&primary.leaf);
        let audit = match self.client.generate_raw(primary.api, body, seed, &mut |_| {}).await {
            Ok(a) => a,
            Err(e) => return AuditStatus::Failed { reason: e.to_string() },
        };
        match compare(primary, &audit) {
            AuditStatus::Mismatch { differs, .. } => {
                let proof = MismatchProof {
                    format: MISMATCH_PROOF_FORMAT.to_owned(),
                    differs: differs.clone(),
                    primary: primary.receipt_file(),
                    audit: audit.receipt_file(),
                };
                let path = self.out_dir.join(format!("audit-mismatch-{}-{id}.json", std::process::id()));
                let written =
                    serde_json::to_vec_pretty(&proof).map_err(std::io::Error::other).and_then(|b| {
                        std::fs::create_dir_all(&self.out_dir).and_then(|()| std::fs::write(&path, b))
                    });
                match written {
                    Ok(()) => AuditStatus::Mismatch { differs, proof: Some(path.display().to_string()) },
                    Err(e) => {
                        tracing::error!(error = %e, path = %path.display(), "cannot write the mismatch proof");
                        AuditStatus::Mismatch { differs, proof: None }
                    }
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_attestation::receipt::{ReplaySpec, FORMAT_VERSION, SEED_FROM_ENCLAVE};

    fn leaf() -> ReceiptLeaf {
        ReceiptLeaf {
            version: FORMAT_VERSION,
            request_sha256: vec![1; 32],
            output_sha256: vec![2; 32],
            finish_reason: "length".into(),
            temperature: 0.7,
            top_p: None,
            seed: 42,
            max_tokens: 16,
            model_sha256: vec![3; 32],
            prompt_tokens: 10,
            completion_tokens: 16,
            response_id: "chatcmpl-a".into(),
            replay: Some(ReplaySpec { seed_source: SEED_FROM_ENCLAVE.into(), ..ReplaySpec::for_tests() }),
            decoding: Some(vouch_attestation::receipt::DecodingSpec::unconstrained()),
            logprobs_sha256: None,
            salt: Some(vec![4; 32]),
        }
    }

    fn with_spec(f: impl Fn(&mut ReplaySpec)) -> ReceiptLeaf {
        let mut l = leaf();
        if let Some(s) = l.replay.as_mut() {
            f(s);
        }
        l
    }

    #[test]
    fn the_same_answer_agrees_whatever_the_response_id_and_seed_source() {
        // Each enclave salts its own log entry: salts never make two answers differ.
        let other = ReceiptLeaf { response_id: "chatcmpl-b".into(), salt: Some(vec![5; 32]), ..leaf() };
        assert_eq!(compare_leaves(&leaf(), &other), AuditStatus::Agree);
        let handed = with_spec(|s| s.seed_source = "client".into());
        assert_eq!(compare_leaves(&leaf(), &handed), AuditStatus::Agree);
    }

    #[test]
    fn different_signed_answers_to_one_request_and_spec_are_a_mismatch() {
        let mismatch = |differs: &str| AuditStatus::Mismatch { differs: differs.into(), proof: None };
        let tokens = with_spec(|s| s.output_tokens_sha256 = vec![9; 32]);
        assert_eq!(compare_leaves(&leaf(), &tokens), mismatch("completion token ids"));
        let prompt = with_spec(|s| s.prompt_tokens_sha256 = vec![9; 32]);
        assert_eq!(compare_leaves(&leaf(), &prompt), mismatch("prompt token ids"));
        let text = ReceiptLeaf { output_sha256: vec![9; 32], ..leaf() };
        assert_eq!(compare_leaves(&leaf(), &text), mismatch("output text"));
        let finish = ReceiptLeaf { finish_reason: "stop".into(), ..leaf() };
        assert_eq!(compare_leaves(&leaf(), &finish), mismatch("finish reason"));
    }

    #[test]
    fn answers_under_different_setups_are_not_compared() {
        let reason = |s: AuditStatus| match s {
            AuditStatus::Inconclusive { reason } => reason,
            other => panic!("expected inconclusive, got {other:?}"),
        };
        let engine = with_spec(|s| s.engine = "other".into());
        assert_eq!(reason(compare_leaves(&leaf(), &engine)), "the two enclaves ran with a different engine");
        let seed = ReceiptLeaf { seed: 43, ..leaf() };
        assert_eq!(reason(compare_leaves(&leaf(), &seed)), "the two enclaves ran with a different seed");
        // At temperature 0 the seed decides nothing.
        let greedy = ReceiptLeaf { temperature: 0.0, ..leaf() };
        assert_eq!(compare_leaves(&greedy, &ReceiptLeaf { seed: 43, ..greedy.clone() }), AuditStatus::Agree);
        let model = ReceiptLeaf { model_sha256: vec![8; 32], ..leaf() };
        assert_eq!(reason(compare_leaves(&leaf(), &model)), "the two enclaves ran with a different model");
        let request = ReceiptLeaf { request_sha256: vec![8; 32], ..leaf() };
        assert_eq!(reason(compare_leaves(&leaf(), &request)), "the receipts are for different request bytes");
        let v2 = ReceiptLeaf { version: 2, replay: None, decoding: None, ..leaf() };
        assert!(reason(compare_leaves(&v2, &leaf())).contains("older than format 3"));
    }

    #[test]
    fn the_committed_seed_is_handed_over_only_when_the_request_gave_none() {
        assert_eq!(handed_seed(&leaf()), Some(42));
        assert_eq!(handed_seed(&with_spec(|s| s.seed_source = SEED_FROM_REQUEST.into())), None);
    }
}
