//! Receipt checking and receipt files: the offline half of the client.
//!
//! CLIENT side. A receipt arrives with every answer (`vouch_receipt`, base64 of CBOR);
//! the attestation crate verifies it against AMD's roots and the policy, then
//! `check_exchange` ties it to the exact request bytes the client sent and the text it
//! received. Live, the client additionally requires the receipt's batch claims to name
//! the TLS key and model it attested. `vouch chat --receipt-out` saves everything
//! needed to repeat the check later with `vouch verify`, on another machine, without
//! the enclave.
//!
//! ```text
//!  receipt CBOR ─► ReceiptVerifier (chain, signature, policy, binding, Merkle)
//!        ─► check_exchange(request bytes, output text) ─► model/TLS claims ─► Verdict
//! ```

use crate::policy::ClientPolicy;
use crate::verdict::Verdict;
use base64::Engine;
use serde::{Deserialize, Serialize};
use vouch_attestation::receipt::{ReceiptError, ReceiptVerifier, VerifiedReceipt};
use vouch_attestation::TrustAnchors;

/// Largest receipt file read, in bytes (a receipt is a few KiB; request and output
/// are bounded by the client's body limit).
pub const MAX_RECEIPT_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// Why a receipt was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptCheckError {
    /// The receipt names Vouch's simulated root and the verifier trusts only AMD.
    #[error("the enclave's report is not signed by AMD (simulated root); pass --trust-sim-root to accept a simulated enclave for development")]
    SimulatedNotTrusted,
    /// Cryptographic or policy verification failed.
    #[error("receipt rejected: {0}")]
    Verify(#[from] ReceiptError),
    /// The receipt is authentic but names a model the policy refuses.
    #[error("receipt rejected: {0}")]
    Model(String),
    /// The receipt is authentic but for another TLS key or model than the one attested.
    #[error("receipt is for {field} {actual}, but the attested enclave has {expected}")]
    Binding {
        /// "TLS key" or "model".
        field: &'static str,
        /// Attested value (hex).
        expected: String,
        /// Receipt value (hex).
        actual: String,
    },
    /// The base64 wrapper is malformed.
    #[error("receipt is not valid base64: {0}")]
    Base64(String),
}

/// What a live receipt must match: the attested TLS key and model.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// SHA-256 of the TLS SPKI of the connection the answer came over.
    pub tls_spki_sha256: &'a [u8],
    /// The attested digest of the model the request named (or the default).
    pub model_sha256: &'a [u8],
    /// That model's attested name (checked against the policy's model lists and pins).
    pub model_name: Option<&'a str>,
    /// The answer log the attestation names (claims version 3): a format-5 receipt must
    /// be an entry of exactly this log.
    pub log: Option<&'a vouch_attestation::tlog::LogClaim>,
}

/// Verifies one receipt. With `exchange`, also checks it commits to exactly these
/// request bytes and output text; with `expected`, that it names this TLS key and model.
pub fn check_receipt(
    anchors: &TrustAnchors,
    policy: &ClientPolicy,
    receipt_cbor: &[u8],
    exchange: Option<(&[u8], &str)>,
    expected: Option<Expected<'_>>,
    now: u64,
) -> Result<Verdict, ReceiptCheckError> {
    check_receipt_verified(anchors, policy, receipt_cbor, exchange, expected, now).map(|(verdict, _)| verdict)
}

/// [`check_receipt`], also returning the verified receipt (its leaf: what `vouch replay`
/// re-executes).
pub fn check_receipt_verified(
    anchors: &TrustAnchors,
    policy: &ClientPolicy,
    receipt_cbor: &[u8],
    exchange: Option<(&[u8], &str)>,
    expected: Option<Expected<'_>>,
    now: u64,
) -> Result<(Verdict, VerifiedReceipt), ReceiptCheckError> {
    let mut verifier = ReceiptVerifier::new(anchors.clone(), policy.snp.clone(), now);
    let verified = match verifier.verify(receipt_cbor) {
        Ok(v) => v,
        // "A simulated enclave, and you did not opt in" — said by the platform tag,
        // before any signature was checked.
        Err(ReceiptError::SimulatedNotTrusted) => return Err(ReceiptCheckError::SimulatedNotTrusted),
        Err(e) => return Err(e.into()),
    };
    if let Some((request, output)) = exchange {
        verified.check_exchange(request, output)?;
    }
    let batch = verified.batch();
    let model = &verified.leaf().model_sha256;
    if let Some(exp) = expected {
        if batch.tls_spki_sha256 != exp.tls_spki_sha256 {
            return Err(ReceiptCheckError::Binding {
                field: "TLS key",
                expected: hex::encode(exp.tls_spki_sha256),
                actual: hex::encode(&batch.tls_spki_sha256),
            });
        }
        if model[..] != exp.model_sha256[..] {
            return Err(ReceiptCheckError::Binding {
                field: "model",
                expected: hex::encode(exp.model_sha256),
                actual: hex::encode(model),
            });
        }
        // The attested log, and no other: an enclave cannot answer from a second log.
        let got = verified.checkpoint().map(|c| &c.log);
        if got != exp.log {
            let name = |l: Option<&vouch_attestation::tlog::LogClaim>| match l {
                Some(l) => l.origin.clone(),
                None => "no log".into(),
            };
            return Err(ReceiptCheckError::Binding {
                field: "answer log",
                expected: name(exp.log),
                actual: name(got),
            });
        }
    }
    // The receipt names its model by digest; a live client knows its attested name too.
    policy.check_model(model, expected.and_then(|e| e.model_name)).map_err(ReceiptCheckError::Model)?;
    let verdict = Verdict::from_receipt(&verified, &policy.snp, exchange.is_some());
    Ok((verdict, verified))
}

/// Decodes the `vouch_receipt` field (standard base64).
pub fn decode_receipt_b64(b64: &str) -> Result<Vec<u8>, ReceiptCheckError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| ReceiptCheckError::Base64(e.to_string()))
}

/// The file `vouch chat --receipt-out` writes and `vouch verify` reads.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptFile {
    /// "vouch-receipt-file/1".
    #[serde(default)]
    pub format: String,
    /// The receipt: base64 (standard) of its CBOR, as received in `vouch_receipt`.
    pub receipt: String,
    /// The request body exactly as sent, base64 (standard).
    #[serde(default)]
    pub request_body: Option<String>,
    /// The output text (assistant content; all deltas concatenated when streamed).
    #[serde(default)]
    pub output: Option<String>,
    /// Where the answer came from (informational, not verified).
    #[serde(default)]
    pub url: Option<String>,
    /// The completion's token ids (`vouch_completion_tokens`), which a format-3 receipt
    /// commits to: what `vouch replay` checks in one pass. Not needed to verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<Vec<u32>>,
}

/// Format tag of [`ReceiptFile`].
pub const RECEIPT_FILE_FORMAT: &str = "vouch-receipt-file/1";

/// A receipt file's contents, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedReceipt {
    /// Receipt CBOR.
    pub receipt_cbor: Vec<u8>,
    /// Request body bytes, if present.
    pub request_body: Option<Vec<u8>>,
    /// Output text, if present.
    pub output: Option<String>,
    /// Completion token ids, if present.
    pub completion_tokens: Option<Vec<u32>>,
}

impl ReceiptFile {
    /// Builds a file from a completed exchange.
    pub fn new(
        receipt_b64: &str,
        request_body: &[u8],
        output: &str,
        url: Option<&str>,
        completion_tokens: Option<Vec<u32>>,
    ) -> ReceiptFile {
        ReceiptFile {
            format: RECEIPT_FILE_FORMAT.to_owned(),
            receipt: receipt_b64.to_owned(),
            request_body: Some(base64::engine::general_purpose::STANDARD.encode(request_body)),
            output: Some(output.to_owned()),
            url: url.map(str::to_owned),
            completion_tokens,
        }
    }

    /// Decodes the file's base64 fields (its format tag checked).
    pub fn load(self) -> Result<LoadedReceipt, String> {
        if !self.format.is_empty() && self.format != RECEIPT_FILE_FORMAT {
            return Err(format!("unknown receipt file format {:?}", self.format));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let receipt_cbor =
            b64.decode(self.receipt.trim()).map_err(|e| format!("receipt is not base64: {e}"))?;
        let request_body = match self.request_body {
            Some(r) => Some(b64.decode(r.trim()).map_err(|e| format!("request_body is not base64: {e}"))?),
            None => None,
        };
        Ok(LoadedReceipt {
            receipt_cbor,
            request_body,
            output: self.output,
            completion_tokens: self.completion_tokens,
        })
    }

    /// Parses a receipt file: this JSON format, a bare base64 receipt, or raw CBOR.
    pub fn parse_any(bytes: &[u8]) -> Result<LoadedReceipt, String> {
        let text = std::str::from_utf8(bytes).ok().map(str::trim);
        if let Some(t) = text.filter(|t| t.starts_with('{')) {
            let f: ReceiptFile =
                serde_json::from_str(t).map_err(|e| format!("invalid receipt file JSON: {e}"))?;
            return f.load();
        }
        if let Some(t) = text {
            if let Ok(cbor) = base64::engine::general_purpose::STANDARD.decode(t) {
                return Ok(LoadedReceipt {
                    receipt_cbor: cbor,
                    request_body: None,
                    output: None,
                    completion_tokens: None,
                });
            }
        }
        Ok(LoadedReceipt {
            receipt_cbor: bytes.to_vec(),
            request_body: None,
            output: None,
            completion_tokens: None,
        })
    }
}
