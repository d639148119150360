//! Evidence and receipts: what travels from the enclave to clients and auditors, and
//! how a verifier checks it offline.
//!
//! Both sides: the enclave builds these values; verifiers decode untrusted CBOR and
//! check everything — chain, report signature, policy, REPORT_DATA binding, Merkle
//! inclusion, and the request/output hashes — needing nothing but the receipt, the
//! trusted roots, a policy and a time.
//!
//! ```text
//!  receipt ─► report + certs ─► verify_report ─► VerifiedReport ─► policy
//!     │                                               │ REPORT_DATA
//!     ├─ batch claims bytes ── binding::report_data ──┘ (must match)
//!     │        │ merkle_root
//!     └─ leaf bytes + proof ── merkle::root_from_proof ─┘ (must match)
//! ```

use crate::binding::{self, AttestationClaims, BatchClaims};
use crate::error::VerifyError;
use crate::merkle;
use crate::policy::{validate, Policy, PolicyViolations};
use crate::tlog::{self, Checkpoint, CheckpointEvidence, LogClaim};
use crate::verify::{
    verify_report, verify_report_with_chain, ChainInput, RootKind, TrustAnchors, VerifiedChain,
    VerifiedReport,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Receipt and evidence format version.
///
/// - 1: the first format. It did not say which kind of secure processor made the
///   report, so it is refused ([`ReceiptError::UnsupportedVersion`]) rather than guessed.
/// - 2: adds the `platform` tag ([`Platform`]) to evidence and receipts. Still read:
///   such receipts verify as before, but their leaves carry no [`ReplaySpec`], so they
///   cannot be replayed.
/// - 3: receipt leaves carry a [`ReplaySpec`]: everything a re-execution needs beyond
///   the request bytes (engine, sampler, seed origin, tokenizer, chat template, prompt and
///   output token ids, stop tokens). Still read and replayed; such answers were decoded
///   with no stop strings, penalties, bias or constraint (the enclave refused those).
/// - 4: leaves also carry a [`DecodingSpec`]: the effective generation spec, every
///   request parameter that influenced which tokens were chosen or where the answer
///   ended (stop strings, penalties, logit bias, choices, logprobs, output constraint,
///   tools).
/// - 5: receipts are entries of the enclave's answer log ([`crate::tlog`]): the leaf
///   carries a fresh 32-byte salt (returned only in the receipt, so the public log
///   reveals nothing about the request or answer), the index and proof lead to a
///   checkpoint of the whole log (version-2 batch claims naming the log's origin and key
///   and every served model), and the receipt carries that checkpoint's signed note.
///   Formats 2 to 4 are still read and verify as before (one tree per batch).
pub const FORMAT_VERSION: u32 = 5;

/// The oldest format this verifier reads.
pub const OLDEST_READ_VERSION: u32 = 2;

/// Which kind of secure processor produced a piece of evidence, as carried on the wire
/// (`platform`). The tag only routes: evidence tagged `snp` is checked against AMD's
/// roots alone and evidence tagged `sim` against the simulated root alone, so relabelling
/// gains nothing — a simulated report never verifies on the AMD path, by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Platform {
    /// AMD SEV-SNP hardware (`/dev/sev-guest`).
    Snp,
    /// Vouch's simulated secure processor (development, CI, demos): NOT hardware.
    Sim,
}

impl Platform {
    /// The wire tag.
    pub fn tag(self) -> &'static str {
        match self {
            Platform::Snp => "snp",
            Platform::Sim => "sim",
        }
    }

    /// Parses a wire tag; unknown platforms (e.g. a future `tdx`) are refused by name.
    pub fn from_tag(tag: &str) -> Result<Platform, ReceiptError> {
        match tag {
            "snp" => Ok(Platform::Snp),
            "sim" => Ok(Platform::Sim),
            other => Err(ReceiptError::UnknownPlatform(other.to_owned())),
        }
    }

    /// The kind of root this platform's evidence must chain to.
    pub fn root_kind(self) -> RootKind {
        match self {
            Platform::Snp => RootKind::Amd,
            Platform::Sim => RootKind::Simulated,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.tag())
    }
}

/// The anchors that may verify evidence of `platform` (see [`Platform`]); when none of
/// its kind is trusted, the refusal says so before any signature is checked.
fn anchors_for(anchors: &TrustAnchors, platform: Platform) -> Result<TrustAnchors, ReceiptError> {
    anchors.only(platform.root_kind()).ok_or_else(|| match platform {
        Platform::Sim => ReceiptError::SimulatedNotTrusted,
        Platform::Snp => VerifyError::UntrustedRoot { subject: "no AMD root is trusted".into() }.into(),
    })
}
/// Upper bound on an encoded receipt or evidence; anything larger is refused unread.
pub const MAX_ENCODED_BYTES: usize = 64 * 1024;
/// Upper bound on a Merkle proof's length (2^64 leaves).
pub const MAX_PROOF_LEN: usize = 64;

/// Certificates and report as sent by the enclave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBundle {
    /// The raw 1184-byte report.
    #[serde(with = "serde_bytes")]
    pub report: Vec<u8>,
    /// VCEK or VLEK, DER.
    #[serde(with = "serde_bytes")]
    pub leaf_cert: Vec<u8>,
    /// Intermediates (and optionally the ARK), DER certificates concatenated as PEM
    /// or empty when the verifier's compiled-in ones apply.
    #[serde(with = "serde_bytes")]
    pub chain: Vec<u8>,
    /// The ARK's CRL (DER) if the enclave had one.
    #[serde(with = "serde_bytes")]
    pub crl: Vec<u8>,
}

impl ReportBundle {
    fn chain_input(&self) -> ChainInput<'_> {
        ChainInput {
            leaf: &self.leaf_cert,
            chain: (!self.chain.is_empty()).then_some(self.chain.as_slice()),
            crl: (!self.crl.is_empty()).then_some(self.crl.as_slice()),
            product: None,
        }
    }
}

/// `GET /v1/attestation` response body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// [`Platform`] tag: `snp` or `sim`.
    pub platform: String,
    /// Report and certificates.
    pub bundle: ReportBundle,
    /// CBOR [`AttestationClaims`], exactly the bytes hashed into REPORT_DATA.
    #[serde(with = "serde_bytes")]
    pub claims: Vec<u8>,
}

/// What a receipt leaf commits to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptLeaf {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// SHA-256 of the request body bytes exactly as received.
    #[serde(with = "serde_bytes")]
    pub request_sha256: Vec<u8>,
    /// SHA-256 of the output text (UTF-8; all deltas concatenated when streamed).
    #[serde(with = "serde_bytes")]
    pub output_sha256: Vec<u8>,
    /// "stop" or "length".
    pub finish_reason: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus sampling threshold, if used.
    pub top_p: Option<f64>,
    /// Sampling seed.
    pub seed: u64,
    /// Maximum new tokens.
    pub max_tokens: u32,
    /// SHA-256 of the model file.
    #[serde(with = "serde_bytes")]
    pub model_sha256: Vec<u8>,
    /// Prompt and completion token counts.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Enclave-side id of the response (`chatcmpl-…`).
    pub response_id: String,
    /// What a replay needs (format 3 on; absent in format 2 leaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySpec>,
    /// The effective generation spec (format 4 on; absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding: Option<DecodingSpec>,
    /// [`logprobs_sha256`] of the log-probabilities returned with the answer: present
    /// exactly when the decoding spec says they were (`logprobs`), absent otherwise (so a
    /// leaf without them is encoded as format 4 always was).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub logprobs_sha256: Option<Vec<u8>>,
    /// 32 fresh random bytes (format 5 on): without them the leaf's hash in the public
    /// log cannot be recomputed from a guessed request and answer.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub salt: Option<Vec<u8>>,
}

/// The effective generation spec a format-4 leaf commits, beyond the temperature, top_p,
/// seed and max_tokens the leaf has always carried: everything in the request that
/// influenced decoding, as the enclave applied it, so a verifier sees exactly what was
/// applied and a replay applies the same. A request parameter the enclave does not apply
/// is refused before anything is generated, never left out of here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodingSpec {
    /// Stop strings (at most 4), in request order. The answer's text ends just before the
    /// first place any of them occurs; finish reason "stop".
    pub stop: Vec<String>,
    /// Subtracted once from the logit of every token already in the completion.
    pub presence_penalty: f64,
    /// Subtracted from a token's logit once per occurrence in the completion.
    pub frequency_penalty: f64,
    /// Added to the logit of a token id: (id, bias) pairs, ascending id, each id once.
    pub logit_bias: Vec<(u32, f64)>,
    /// Choices the request asked for (`n`).
    pub n: u32,
    /// Which of them this leaf is (0-based).
    pub choice_index: u32,
    /// `top_logprobs` when log-probabilities were returned (0: the chosen token's only);
    /// `None` when they were not.
    pub logprobs: Option<u32>,
    /// `text`, `json_object` or `json_schema`: the output constraint.
    pub response_format: String,
    /// SHA-256 of the grammar the output was constrained by (`None`: unconstrained).
    #[serde(with = "serde_bytes")]
    pub grammar_sha256: Option<Vec<u8>>,
    /// SHA-256 of the tool definitions offered (`None`: no tools).
    #[serde(with = "serde_bytes")]
    pub tools_sha256: Option<Vec<u8>>,
}

impl DecodingSpec {
    /// What a format-3 answer was decoded with: nothing beyond temperature, top_p, seed
    /// and max_tokens (the enclave refused every other control).
    pub fn unconstrained() -> DecodingSpec {
        DecodingSpec {
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            n: 1,
            choice_index: 0,
            logprobs: None,
            response_format: "text".into(),
            grammar_sha256: None,
            tools_sha256: None,
        }
    }

    /// The structural rules a verifier holds every committed spec to.
    fn check(&self) -> Result<(), String> {
        if self.stop.len() > MAX_STOP_STRINGS || self.stop.iter().any(String::is_empty) {
            return Err(format!("stop must be at most {MAX_STOP_STRINGS} non-empty strings"));
        }
        if !self.logit_bias.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err("logit_bias ids must be strictly ascending".into());
        }
        if self.n == 0 || self.choice_index >= self.n {
            return Err(format!("choice {} of n = {}", self.choice_index, self.n));
        }
        if !RESPONSE_FORMATS.contains(&self.response_format.as_str()) {
            return Err(format!("unknown response_format {:?}", self.response_format));
        }
        if (self.response_format == "text") != self.grammar_sha256.is_none() {
            return Err("a grammar digest goes with a constrained response_format, and only with one".into());
        }
        for d in [&self.grammar_sha256, &self.tools_sha256].into_iter().flatten() {
            if d.len() != 32 {
                return Err("digests are 32 bytes".into());
            }
        }
        Ok(())
    }
}

/// Most stop strings a request may give (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// The output constraints a [`DecodingSpec`] may name.
pub const RESPONSE_FORMATS: [&str; 3] = ["text", "json_object", "json_schema"];

/// Seed origin: the request gave it.
pub const SEED_FROM_REQUEST: &str = "request";
/// Seed origin: the request gave none and sampled at temperature > 0, so the enclave drew
/// one (committed here, so a replay uses it).
pub const SEED_FROM_ENCLAVE: &str = "enclave";
/// Seed origin: the request body gave none and sampled at temperature > 0, and the client
/// handed one over beside it (the `vouch-seed` header): the seed an earlier enclave drew for
/// the same request, when a broken stream is resumed or an answer is audited on a second
/// enclave. As for [`SEED_FROM_ENCLAVE`], the committed seed is the one a replay uses.
pub const SEED_FROM_CLIENT: &str = "client";
/// Every seed origin a leaf may name.
pub const SEED_SOURCES: [&str; 3] = [SEED_FROM_REQUEST, SEED_FROM_ENCLAVE, SEED_FROM_CLIENT];

/// Everything a re-execution of an answer needs beyond the request bytes, as committed in
/// a format-3 leaf. With the same engine version and model file, a replay of the request
/// under this spec reproduces the committed token ids bit for bit (`vouch replay`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySpec {
    /// The inference engine and its version (e.g. `vouch-native-1`).
    pub engine: String,
    /// The token-selection algorithm and its version (e.g. `vouch-sampler-1`).
    pub sampler: String,
    /// One of [`SEED_SOURCES`]; the seed is the leaf's `seed`.
    pub seed_source: String,
    /// SHA-256 of the tokenizer as loaded (vocabulary, merges, pre-tokenizer, stop ids).
    #[serde(with = "serde_bytes")]
    pub tokenizer_sha256: Vec<u8>,
    /// The chat template that turned the messages into prompt text (e.g. `chatml-vouch-1`).
    pub chat_template: String,
    /// [`token_ids_sha256`] of the prompt token ids: the exact rendering.
    #[serde(with = "serde_bytes")]
    pub prompt_tokens_sha256: Vec<u8>,
    /// [`token_ids_sha256`] of the completion token ids (the stop token not included).
    #[serde(with = "serde_bytes")]
    pub output_tokens_sha256: Vec<u8>,
    /// The token ids that end an answer with finish reason "stop".
    pub stop_token_ids: Vec<u32>,
}

impl ReplaySpec {
    /// A well-formed spec naming no real engine (empty digests): for tests and benchmarks
    /// that need format-3 leaves. `vouch replay` refuses it (unknown engine).
    #[doc(hidden)]
    pub fn for_tests() -> ReplaySpec {
        ReplaySpec {
            engine: "test-engine".into(),
            sampler: "test-sampler".into(),
            seed_source: SEED_FROM_REQUEST.into(),
            tokenizer_sha256: vec![0; 32],
            chat_template: "test-template".into(),
            prompt_tokens_sha256: vec![0; 32],
            output_tokens_sha256: vec![0; 32],
            stop_token_ids: vec![2],
        }
    }
}

/// SHA-256 of token ids, each as 4 little-endian bytes.
pub fn token_ids_sha256(ids: &[u32]) -> [u8; 32] {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize().into()
}

/// One completion token's log-probability as a response spells it: the token's bytes, its
/// log-probability, and the alternatives' (bytes, log-probability), most likely first.
#[derive(Clone, Debug, PartialEq)]
pub struct LogprobEntry {
    /// The token's bytes.
    pub bytes: Vec<u8>,
    /// Its log-probability.
    pub logprob: f64,
    /// `top_logprobs` alternatives.
    pub top: Vec<(Vec<u8>, f64)>,
}

/// The digest a leaf commits of an answer's log-probabilities (`logprobs_sha256`): for each
/// token in order, its bytes (u32 LE length, then the bytes), its log-probability (the f64's
/// bits, LE), the number of alternatives (u32 LE), then each alternative's bytes and
/// log-probability alike. Computed from what the response's `logprobs.content` carries
/// (`bytes` and `logprob` of each entry and of its `top_logprobs`), so a client checks it
/// without the model, and a replay recomputes it with the model.
pub fn logprobs_sha256(entries: &[LogprobEntry]) -> [u8; 32] {
    fn put(h: &mut Sha256, bytes: &[u8], logprob: f64) {
        h.update((bytes.len() as u32).to_le_bytes());
        h.update(bytes);
        h.update(logprob.to_bits().to_le_bytes());
    }
    let mut h = Sha256::new();
    for e in entries {
        put(&mut h, &e.bytes, e.logprob);
        h.update((e.top.len() as u32).to_le_bytes());
        for (bytes, logprob) in &e.top {
            put(&mut h, bytes, *logprob);
        }
    }
    h.finalize().into()
}

/// A receipt: one answer's leaf, its inclusion proof, and the batch evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// [`Platform`] tag: `snp` or `sim`.
    pub platform: String,
    /// CBOR [`ReceiptLeaf`].
    #[serde(with = "serde_bytes")]
    pub leaf: Vec<u8>,
    /// Leaf index: in the log (format 5), in the batch tree (before).
    pub leaf_index: u64,
    /// RFC 6962 audit path.
    pub proof: Vec<serde_bytes::ByteBuf>,
    /// CBOR [`BatchClaims`], exactly the bytes hashed into REPORT_DATA.
    #[serde(with = "serde_bytes")]
    pub batch_claims: Vec<u8>,
    /// Report and certificates.
    pub bundle: ReportBundle,
    /// The signed checkpoint note the proof leads to (format 5 on).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub checkpoint: Option<Vec<u8>>,
}

impl Receipt {
    /// The checkpoint evidence inside a format-5 receipt (unverified).
    pub fn checkpoint_evidence(&self) -> Option<CheckpointEvidence> {
        Some(CheckpointEvidence {
            version: self.version,
            platform: self.platform.clone(),
            checkpoint: self.checkpoint.clone()?,
            batch_claims: self.batch_claims.clone(),
            bundle: self.bundle.clone(),
        })
    }
}

/// Why a receipt or evidence was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not decodable, too large, or of an unknown version.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// Detail.
        reason: String,
    },
    /// The evidence is from an older or newer format than this verifier reads.
    #[error(
        "{what} format version {actual} is not supported (this verifier reads versions 2 to {expected}{hint})"
    )]
    UnsupportedVersion {
        /// Which structure.
        what: &'static str,
        /// [`FORMAT_VERSION`].
        expected: u32,
        /// The version carried.
        actual: u32,
        /// Why, for known old versions.
        hint: &'static str,
    },
    /// The platform tag names a TEE this verifier does not support.
    #[error("platform {0:?} is not supported by this verifier (known: snp, sim)")]
    UnknownPlatform(String),
    /// The evidence is from Vouch's SIMULATED secure processor and no simulated root
    /// is trusted. Refused before any signature is checked.
    #[error("the evidence is from Vouch's SIMULATED secure processor (platform \"sim\"), not AMD hardware, and no simulated root is trusted")]
    SimulatedNotTrusted,
    /// The report or its chain failed verification.
    #[error("attestation report: {0}")]
    Report(#[from] VerifyError),
    /// The report is authentic but the policy refuses it.
    #[error("{0}")]
    Policy(#[from] PolicyViolations),
    /// REPORT_DATA is not the hash of the claims carried.
    #[error("REPORT_DATA does not bind these claims")]
    BindingMismatch,
    /// The leaf is not in the tree the report signed.
    #[error("Merkle inclusion proof does not lead to the signed root")]
    MerkleProof,
    /// The log checkpoint is not the attested one, or its signature fails.
    #[error("log checkpoint: {0}")]
    Checkpoint(String),
    /// A claim differs from what the verifier expected.
    #[error("{field} mismatch: expected {expected}, got {actual}")]
    ClaimMismatch {
        /// Which claim.
        field: &'static str,
        /// Expected (hex or text).
        expected: String,
        /// Actual.
        actual: String,
    },
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &'static str) -> Result<T, ReceiptError> {
    if bytes.len() > MAX_ENCODED_BYTES {
        return Err(ReceiptError::Malformed {
            what,
            reason: format!("{} bytes > {MAX_ENCODED_BYTES}", bytes.len()),
        });
    }
    binding::from_cbor(bytes).map_err(|reason| ReceiptError::Malformed { what, reason })
}

fn check_version(v: u32, what: &'static str) -> Result<(), ReceiptError> {
    if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&v) {
        let hint = match v {
            1 => "; version 1 did not say whether hardware or the simulator made it — ask the enclave for a fresh receipt",
            _ => "",
        };
        return Err(ReceiptError::UnsupportedVersion { what, expected: FORMAT_VERSION, actual: v, hint });
    }
    Ok(())
}

/// Refuses a leaf of format `version` that carries `what` when its format (`since` on)
/// has none, or lacks it when its format has one.
fn spec_goes_with(version: u32, since: u32, carried: bool, what: &str) -> Result<(), ReceiptError> {
    if (version >= since) == carried {
        return Ok(());
    }
    let verb = if carried { "must not carry" } else { "must carry" };
    Err(ReceiptError::Malformed {
        what: "receipt leaf",
        reason: format!("a format {version} leaf {verb} {what}"),
    })
}

/// Evidence whose report verified, met the policy, and binds these claims.
#[derive(Clone, Debug)]
pub struct VerifiedEvidence {
    platform: Platform,
    report: VerifiedReport,
    claims: AttestationClaims,
}

impl VerifiedEvidence {
    /// The platform whose roots it verified under.
    pub fn platform(&self) -> Platform {
        self.platform
    }
    /// The verified report.
    pub fn report(&self) -> &VerifiedReport {
        &self.report
    }
    /// The bound claims.
    pub fn claims(&self) -> &AttestationClaims {
        &self.claims
    }
}

/// Verifies `GET /v1/attestation` evidence for the nonce the client sent.
pub fn verify_evidence(
    anchors: &TrustAnchors,
    evidence_cbor: &[u8],
    nonce: &[u8; 32],
    policy: &Policy,
    now: u64,
) -> Result<VerifiedEvidence, ReceiptError> {
    let ev: Evidence = decode(evidence_cbor, "evidence")?;
    check_version(ev.version, "evidence")?;
    let platform = Platform::from_tag(&ev.platform)?;
    let anchors = anchors_for(anchors, platform)?;
    let report = verify_report(&anchors, &ev.bundle.report, &ev.bundle.chain_input(), now)?;
    validate(&report, policy)?;
    if binding::report_data(binding::ATTESTATION_DOMAIN, &ev.claims) != report.report().report_data() {
        return Err(ReceiptError::BindingMismatch);
    }
    let claims: AttestationClaims = decode(&ev.claims, "attestation claims")?;
    // Versions 1 (one model, no spec) and 2 (no log) from older enclaves are read too.
    if !(binding::CLAIMS_VERSION..=binding::ATTESTATION_CLAIMS_VERSION).contains(&claims.version) {
        return Err(ReceiptError::UnsupportedVersion {
            what: "attestation claims",
            expected: binding::ATTESTATION_CLAIMS_VERSION,
            actual: claims.version,
            hint: "",
        });
    }
    claims.check_models().map_err(|reason| ReceiptError::Malformed { what: "attestation claims", reason })?;
    if claims.nonce != nonce {
        return Err(ReceiptError::ClaimMismatch {
            field: "nonce",
            expected: hex::encode(nonce),
            actual: hex::encode(&claims.nonce),
        });
    }
    Ok(VerifiedEvidence { platform, report, claims })
}

/// A receipt that verified end to end.
#[derive(Clone, Debug)]
pub struct VerifiedReceipt {
    leaf: ReceiptLeaf,
    batch: BatchClaims,
    report: VerifiedReport,
    checkpoint: Option<VerifiedCheckpoint>,
    leaf_index: u64,
}

impl VerifiedReceipt {
    /// The committed leaf.
    pub fn leaf(&self) -> &ReceiptLeaf {
        &self.leaf
    }
    /// The batch claims.
    pub fn batch(&self) -> &BatchClaims {
        &self.batch
    }
    /// The report that signed the batch.
    pub fn report(&self) -> &VerifiedReport {
        &self.report
    }
    /// The attested log checkpoint the leaf is in (format 5 on; `None` before).
    pub fn checkpoint(&self) -> Option<&VerifiedCheckpoint> {
        self.checkpoint.as_ref()
    }
    /// The leaf's index (in the log from format 5 on, in its batch before).
    pub fn leaf_index(&self) -> u64 {
        self.leaf_index
    }
    /// Checks that this receipt is for exactly `request_body` and `output_text`.
    pub fn check_exchange(&self, request_body: &[u8], output_text: &str) -> Result<(), ReceiptError> {
        let req: [u8; 32] = Sha256::digest(request_body).into();
        if self.leaf.request_sha256 != req {
            return Err(ReceiptError::ClaimMismatch {
                field: "request",
                expected: hex::encode(req),
                actual: hex::encode(&self.leaf.request_sha256),
            });
        }
        let out: [u8; 32] = Sha256::digest(output_text.as_bytes()).into();
        if self.leaf.output_sha256 != out {
            return Err(ReceiptError::ClaimMismatch {
                field: "output",
                expected: hex::encode(out),
                actual: hex::encode(&self.leaf.output_sha256),
            });
        }
        Ok(())
    }
}

/// A log checkpoint whose signature verified under the log key a verified report binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// Origin, size and root.
    pub checkpoint: Checkpoint,
    /// The log (origin and key) as the report binds it.
    pub log: LogClaim,
    /// The evidence it verified from (kept whole, so it can be shown to others).
    pub evidence: CheckpointEvidence,
    /// The report's launch measurement.
    pub measurement: [u8; 48],
    /// The report's chip id.
    pub chip_id: Vec<u8>,
}

/// Verifies receipts, caching each batch's verified report so that auditing many
/// receipts pays the chain and signature once per batch.
#[derive(Debug)]
pub struct ReceiptVerifier {
    anchors: TrustAnchors,
    policy: Policy,
    now: u64,
    chains: HashMap<[u8; 32], VerifiedChain>,
    batches: HashMap<[u8; 32], Batch>,
}

/// A batch's verdict, cached by the verifier.
#[derive(Clone, Debug)]
struct Batch {
    report: VerifiedReport,
    claims: BatchClaims,
    checkpoint: Option<VerifiedCheckpoint>,
}

impl ReceiptVerifier {
    /// A verifier with these roots, this policy, at time `now` (Unix seconds).
    pub fn new(anchors: TrustAnchors, policy: Policy, now: u64) -> ReceiptVerifier {
        ReceiptVerifier { anchors, policy, now, chains: HashMap::new(), batches: HashMap::new() }
    }

    /// Verifies one encoded receipt.
    pub fn verify(&mut self, receipt_cbor: &[u8]) -> Result<VerifiedReceipt, ReceiptError> {
        let r: Receipt = decode(receipt_cbor, "receipt")?;
        check_version(r.version, "receipt")?;
        let platform = Platform::from_tag(&r.platform)?;
        if r.proof.len() > MAX_PROOF_LEN {
            return Err(ReceiptError::Malformed { what: "receipt", reason: "proof too long".into() });
        }
        // Format 5 receipts lead to a log checkpoint, and only they carry one.
        if (r.version >= 5) != r.checkpoint.is_some() {
            let verb = if r.checkpoint.is_some() { "must not carry" } else { "must carry" };
            return Err(ReceiptError::Malformed {
                what: "receipt",
                reason: format!("a format {} receipt {verb} a log checkpoint", r.version),
            });
        }
        let batch = self.batch(
            &r.platform,
            platform,
            &r.bundle,
            &r.batch_claims,
            r.checkpoint.as_deref(),
            r.version,
        )?;
        let leaf_hash = merkle::leaf_hash(&r.leaf);
        let proof: Vec<merkle::Hash> = r
            .proof
            .iter()
            .map(|p| <[u8; 32]>::try_from(p.as_slice()))
            .collect::<Result<_, _>>()
            .map_err(|_| ReceiptError::MerkleProof)?;
        let claims = &batch.claims;
        let root = merkle::root_from_proof(&leaf_hash, r.leaf_index, claims.tree_size, &proof)
            .ok_or(ReceiptError::MerkleProof)?;
        if root[..] != claims.merkle_root[..] {
            return Err(ReceiptError::MerkleProof);
        }
        let leaf: ReceiptLeaf = decode(&r.leaf, "receipt leaf")?;
        check_version(leaf.version, "receipt leaf")?;
        // A log entry is a salted format-5 leaf, and a format-5 leaf is only ever a log
        // entry: neither is read as the other.
        if (leaf.version >= 5) != (r.version >= 5) {
            return Err(ReceiptError::Malformed {
                what: "receipt",
                reason: format!("a format {} receipt cannot carry a format {} leaf", r.version, leaf.version),
            });
        }
        // Format 3 leaves on commit a replay spec, format 4 ones on a decoding spec,
        // format 5 ones a salt, and older ones cannot: a leaf that says otherwise is
        // refused rather than read as the other format.
        spec_goes_with(leaf.version, 3, leaf.replay.is_some(), "a replay spec")?;
        spec_goes_with(leaf.version, 4, leaf.decoding.is_some(), "a decoding spec")?;
        spec_goes_with(leaf.version, 5, leaf.salt.is_some(), "a salt")?;
        if leaf.salt.as_ref().is_some_and(|s| s.len() != 32) {
            return Err(ReceiptError::Malformed {
                what: "receipt leaf",
                reason: "the salt is not 32 bytes".into(),
            });
        }
        if let Some(d) = &leaf.decoding {
            d.check()
                .map_err(|reason| ReceiptError::Malformed { what: "receipt leaf decoding spec", reason })?;
        }
        // A log-probability digest goes with a spec that says they were returned, and only
        // with one.
        let returned = leaf.decoding.as_ref().is_some_and(|d| d.logprobs.is_some());
        if returned != leaf.logprobs_sha256.is_some()
            || leaf.logprobs_sha256.as_ref().is_some_and(|d| d.len() != 32)
        {
            return Err(ReceiptError::Malformed {
                what: "receipt leaf",
                reason: "a 32-byte logprobs digest goes with a spec returning log-probabilities, and only with one"
                    .into(),
            });
        }
        if let Some(spec) = &leaf.replay {
            if !SEED_SOURCES.contains(&spec.seed_source.as_str()) {
                return Err(ReceiptError::Malformed {
                    what: "receipt leaf",
                    reason: format!("unknown seed source {:?}", spec.seed_source),
                });
            }
        }
        if !claims.covers_model(&leaf.model_sha256) {
            let expected = match claims.models.is_empty() {
                true => hex::encode(&claims.model_sha256),
                false => format!(
                    "one of {}",
                    claims.models.iter().map(|m| hex::encode(m.as_slice())).collect::<Vec<_>>().join(", ")
                ),
            };
            return Err(ReceiptError::ClaimMismatch {
                field: "model",
                expected,
                actual: hex::encode(&leaf.model_sha256),
            });
        }
        Ok(VerifiedReceipt {
            leaf,
            batch: batch.claims,
            report: batch.report,
            checkpoint: batch.checkpoint,
            leaf_index: r.leaf_index,
        })
    }

    /// Verifies a log checkpoint's evidence (`/log/evidence/SIZE`, either half of an
    /// equivocation proof): report, policy, binding, and the note's signature by the log
    /// key the report binds.
    pub fn verify_checkpoint(&mut self, ev: &CheckpointEvidence) -> Result<VerifiedCheckpoint, ReceiptError> {
        check_version(ev.version, "checkpoint evidence")?;
        if ev.version < 5 {
            return Err(ReceiptError::UnsupportedVersion {
                what: "checkpoint evidence",
                expected: FORMAT_VERSION,
                actual: ev.version,
                hint: "; log checkpoints begin with format 5",
            });
        }
        let platform = Platform::from_tag(&ev.platform)?;
        let batch = self.batch(
            &ev.platform,
            platform,
            &ev.bundle,
            &ev.batch_claims,
            Some(&ev.checkpoint),
            ev.version,
        )?;
        batch.checkpoint.ok_or_else(|| ReceiptError::Checkpoint("no checkpoint".into()))
    }

    /// The cached verdict on one batch: report, policy, binding, claims, checkpoint.
    fn batch(
        &mut self,
        tag: &str,
        platform: Platform,
        bundle: &ReportBundle,
        claims_bytes: &[u8],
        note: Option<&[u8]>,
        version: u32,
    ) -> Result<Batch, ReceiptError> {
        // Cache key: everything that determines the batch verdict.
        let key = cache_key(&[
            tag.as_bytes(),
            &bundle.report,
            &bundle.leaf_cert,
            &bundle.chain,
            &bundle.crl,
            claims_bytes,
            note.unwrap_or(b"-"),
            &version.to_le_bytes(),
        ]);
        if let Some(b) = self.batches.get(&key) {
            return Ok(b.clone());
        }
        // Once per batch (the result is cached), so the filtered copy costs nothing.
        let anchors = anchors_for(&self.anchors, platform)?;
        let leaf_key = cache_key(&[tag.as_bytes(), &bundle.leaf_cert, &bundle.chain, &bundle.crl]);
        let report = match self.chains.get(&leaf_key) {
            Some(chain) => verify_report_with_chain(chain, &bundle.report)?,
            None => {
                let v = verify_report(&anchors, &bundle.report, &bundle.chain_input(), self.now)?;
                self.chains.insert(leaf_key, v.chain().clone());
                v
            }
        };
        validate(&report, &self.policy)?;
        if binding::report_data(binding::BATCH_DOMAIN, claims_bytes) != report.report().report_data() {
            return Err(ReceiptError::BindingMismatch);
        }
        let claims: BatchClaims = decode(claims_bytes, "batch claims")?;
        // Format 5 batches are log checkpoints (claims version 2); earlier ones are not.
        let expected = if version >= 5 { binding::LOG_BATCH_CLAIMS_VERSION } else { binding::CLAIMS_VERSION };
        if claims.version != expected {
            return Err(ReceiptError::UnsupportedVersion {
                what: "batch claims",
                expected,
                actual: claims.version,
                hint: "",
            });
        }
        claims.check().map_err(|reason| ReceiptError::Malformed { what: "batch claims", reason })?;
        let checkpoint = match (&claims.log, note) {
            (Some(log), Some(note)) => {
                let cp = tlog::check_note(note, log, claims.tree_size, &claims.merkle_root)
                    .map_err(ReceiptError::Checkpoint)?;
                Some(VerifiedCheckpoint {
                    checkpoint: cp,
                    log: log.clone(),
                    evidence: CheckpointEvidence {
                        version,
                        platform: tag.to_owned(),
                        checkpoint: note.to_vec(),
                        batch_claims: claims_bytes.to_vec(),
                        bundle: bundle.clone(),
                    },
                    measurement: report.report().measurement(),
                    chip_id: report.report().chip_id().to_vec(),
                })
            }
            _ => None,
        };
        let b = Batch { report, claims, checkpoint };
        self.batches.insert(key, b.clone());
        Ok(b)
    }
}

/// SHA-256 over length-prefixed parts: an unambiguous cache key for a tuple of byte strings.
fn cache_key(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Verifies one receipt without caching.
pub fn verify_receipt(
    anchors: &TrustAnchors,
    receipt_cbor: &[u8],
    policy: &Policy,
    now: u64,
) -> Result<VerifiedReceipt, ReceiptError> {
    ReceiptVerifier::new(anchors.clone(), policy.clone(), now).verify(receipt_cbor)
}
