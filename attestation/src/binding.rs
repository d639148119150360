//! The REPORT_DATA binding, shared by the enclave (which asks the secure processor to
//! sign it) and every verifier (which recomputes it).
//!
//! Both sides of the trust boundary call this one function. REPORT_DATA is
//! `SHA-512(domain ‖ 0x00 ‖ claims)` where `claims` are the exact CBOR bytes that
//! travel with the evidence — verifiers hash what they received, never a re-encoding.
//! The domain string carries the purpose and a version, so a report made for one
//! purpose can never be read as another.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

/// Domain of fresh attestation claims (`GET /v1/attestation`).
pub const ATTESTATION_DOMAIN: &str = "vouch/attestation-claims/v1";
/// Domain of receipt batch claims (group commit).
pub const BATCH_DOMAIN: &str = "vouch/receipt-batch/v1";
/// Version written in every receipt batch's claims ([`BatchClaims`]), and in attestation
/// claims of enclaves that serve one model and name no spec (read, no longer written).
pub const CLAIMS_VERSION: u32 = 1;
/// Version of fresh attestation claims: 2 listed every served model with its spec
/// ([`AttestationClaims::models`]); 3 also names the enclave's answer log
/// ([`AttestationClaims::log`]). Versions 1 and 2 are still read.
pub const ATTESTATION_CLAIMS_VERSION: u32 = 3;
/// Version of batch claims that are a checkpoint of the enclave's answer log
/// ([`BatchClaims::log`]; receipt format 5). Version 1 ([`CLAIMS_VERSION`]) batch
/// claims, one tree per batch and model, are still read in format 2–4 receipts.
pub const LOG_BATCH_CLAIMS_VERSION: u32 = 2;

/// Computes the 64-byte REPORT_DATA for `claims_bytes` under `domain`.
pub fn report_data(domain: &str, claims_bytes: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(claims_bytes);
    h.finalize().into()
}

/// One model an enclave serves, as its attestation binds it: the file's digest and how
/// the enclave computes with it and turns requests into tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelClaim {
    /// The name requests select it by (the request's `model` field, case-insensitive).
    pub name: String,
    /// SHA-256 of the model file as loaded.
    #[serde(with = "serde_bytes")]
    pub sha256: Vec<u8>,
    /// `general.architecture` (`llama`, `qwen2`, `qwen3`, `gemma3`).
    pub architecture: String,
    /// The file's tensor types and how many tensors have each (e.g. `q4_k` → 96), by name.
    pub tensor_types: std::collections::BTreeMap<String, u64>,
    /// The engine computing with it (e.g. `vouch-native-1`).
    pub engine: String,
    /// SHA-256 of the tokenizer built from the file (vocabulary, merges, special ids).
    #[serde(with = "serde_bytes")]
    pub tokenizer_sha256: Vec<u8>,
    /// The chat template it is served with (e.g. `chatml-vouch-1`, code in the enclave
    /// binary the measurement covers), or `None`: raw-text prompts only (`/v1/completions`).
    pub chat_template: Option<String>,
}

/// What a fresh attestation binds: the enclave's TLS key, its models, the client's nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationClaims {
    /// [`ATTESTATION_CLAIMS_VERSION`] (or [`CLAIMS_VERSION`] from an older, one-model
    /// enclave: then [`Self::models`] is empty).
    pub version: u32,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the enclave's TLS key.
    #[serde(with = "serde_bytes")]
    pub tls_spki_sha256: Vec<u8>,
    /// SHA-256 of the default model's file (the one a request naming no model gets; in
    /// version 2, `models[0]`).
    #[serde(with = "serde_bytes")]
    pub model_sha256: Vec<u8>,
    /// The default model's name.
    pub model_name: String,
    /// Every model served, the default first (version 2; empty in version 1).
    #[serde(default)]
    pub models: Vec<ModelClaim>,
    /// The client's nonce (32 bytes).
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The enclave software version.
    pub enclave_version: String,
    /// The log every answer is appended to (version 3 on; absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<crate::tlog::LogClaim>,
}

/// What one receipt batch binds. Version 2 ([`LOG_BATCH_CLAIMS_VERSION`]): a checkpoint
/// of the enclave's answer log — its origin and key, size and root — and every model
/// served. Version 1 ([`CLAIMS_VERSION`]): the root of one batch's own tree, and the one
/// model that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchClaims {
    /// [`LOG_BATCH_CLAIMS_VERSION`] (or [`CLAIMS_VERSION`] in format 2–4 receipts).
    pub version: u32,
    /// RFC 6962 Merkle tree head: of the whole log (version 2), of the batch (version 1).
    #[serde(with = "serde_bytes")]
    pub merkle_root: Vec<u8>,
    /// Number of leaves under that head.
    pub tree_size: u64,
    /// SHA-256 of the enclave's TLS SPKI.
    #[serde(with = "serde_bytes")]
    pub tls_spki_sha256: Vec<u8>,
    /// SHA-256 of the model file (version 1; empty in version 2, see [`Self::models`]).
    #[serde(with = "serde_bytes")]
    pub model_sha256: Vec<u8>,
    /// Batch number: since the log began (version 2), since enclave start (version 1).
    pub batch_seq: u64,
    /// Every served model's SHA-256 (version 2): a leaf names one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<serde_bytes::ByteBuf>,
    /// The log this is a checkpoint of (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<crate::tlog::LogClaim>,
}

impl BatchClaims {
    /// Whether `model` (a leaf's model digest) is one this batch's report vouches for.
    pub fn covers_model(&self, model: &[u8]) -> bool {
        match self.version {
            CLAIMS_VERSION => self.model_sha256 == model,
            _ => self.models.iter().any(|m| m.as_slice() == model),
        }
    }

    /// Checks the claims are well formed for their version (`Err` says how not).
    pub fn check(&self) -> Result<(), String> {
        match self.version {
            CLAIMS_VERSION if self.log.is_none() && self.models.is_empty() => Ok(()),
            CLAIMS_VERSION => Err("version-1 batch claims name a log or a model list".into()),
            LOG_BATCH_CLAIMS_VERSION => {
                let log = self.log.as_ref().ok_or("version-2 batch claims name no log")?;
                log.verifier()?;
                if !self.model_sha256.is_empty() || self.models.is_empty() {
                    return Err("version-2 batch claims list their models (and name no single one)".into());
                }
                if self.models.iter().any(|m| m.len() != 32) || self.merkle_root.len() != 32 {
                    return Err("a digest in the batch claims is not 32 bytes".into());
                }
                Ok(())
            }
            v => Err(format!("batch claims version {v} is not read here")),
        }
    }
}

impl AttestationClaims {
    /// Checks that the model list and log are well formed for the version: a log in
    /// version 3 only, with a key its origin names; no models in version 1; in
    /// version 2 on at least one, the default first (equal to `model_name`/`model_sha256`),
    /// 32-byte digests, names distinct ignoring ASCII case. `Err` says what is wrong.
    pub fn check_models(&self) -> Result<(), String> {
        // Version 3 names the answer log; earlier versions cannot.
        match (&self.log, self.version >= 3) {
            (Some(log), true) => {
                log.verifier()?;
            }
            (None, false) => {}
            (None, true) => return Err(format!("version-{} claims name no answer log", self.version)),
            (Some(_), false) => {
                return Err(format!("version-{} claims cannot name an answer log", self.version))
            }
        }
        if self.version == CLAIMS_VERSION {
            return match self.models.is_empty() {
                true => Ok(()),
                false => Err("version-1 claims list models".into()),
            };
        }
        let first = self.models.first().ok_or("no models listed")?;
        if first.name != self.model_name || first.sha256 != self.model_sha256 {
            return Err(format!(
                "the default model {:?} is not the first one listed ({:?})",
                self.model_name, first.name
            ));
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.sha256.len() != 32 || m.tokenizer_sha256.len() != 32 {
                return Err(format!("model {:?}: a digest is not 32 bytes", m.name));
            }
            if self.models[..i].iter().any(|o| o.name.eq_ignore_ascii_case(&m.name)) {
                return Err(format!("model name {:?} is listed twice", m.name));
            }
        }
        Ok(())
    }

    /// Every served model as (name, digest), the default first: the list (version 2),
    /// or the one model version-1 claims name.
    pub fn served(&self) -> Vec<(&str, &[u8])> {
        match self.models.is_empty() {
            true => vec![(self.model_name.as_str(), self.model_sha256.as_slice())],
            false => self.models.iter().map(|m| (m.name.as_str(), m.sha256.as_slice())).collect(),
        }
    }

    /// The served model a request naming `requested` gets (`None`: the default), as
    /// (name, digest); `None` when no served model has that name (ASCII case-insensitive).
    pub fn model_for(&self, requested: Option<&str>) -> Option<(&str, &[u8])> {
        let Some(requested) = requested else {
            return Some((&self.model_name, &self.model_sha256));
        };
        self.served().into_iter().find(|(name, _)| name.eq_ignore_ascii_case(requested))
    }
}

/// Encodes a value to CBOR (the enclave's side; verifiers decode received bytes).
pub fn to_cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Invariant: serialising these plain structs into a Vec cannot fail
    // (ciborium only errors on writer I/O failure, and Vec writes are infallible).
    if ciborium::into_writer(v, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decodes CBOR with a size bound, rejecting trailing bytes.
pub fn from_cbor<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    let mut cursor = std::io::Cursor::new(bytes);
    let v: T = ciborium::from_reader(&mut cursor).map_err(|e| e.to_string())?;
    if cursor.position() as usize != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - cursor.position() as usize));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate() {
        assert_ne!(report_data(ATTESTATION_DOMAIN, b"x"), report_data(BATCH_DOMAIN, b"x"));
        assert_ne!(report_data(ATTESTATION_DOMAIN, b"x"), report_data(ATTESTATION_DOMAIN, b"y"));
    }

    #[test]
    fn cbor_round_trip_and_trailing_rejected() {
        let c = AttestationClaims {
            version: 1,
            tls_spki_sha256: vec![1; 32],
            model_sha256: vec![2; 32],
            model_name: "m".into(),
            models: Vec::new(),
            nonce: vec![3; 32],
            enclave_version: "0.1.0".into(),
            log: None,
        };
        let b = to_cbor(&c);
        assert_eq!(from_cbor::<AttestationClaims>(&b).unwrap(), c);
        let mut t = b.clone();
        t.push(0);
        assert!(from_cbor::<AttestationClaims>(&t).unwrap_err().contains("trailing"));
    }

    fn model(name: &str, digest: u8) -> ModelClaim {
        ModelClaim {
            name: name.into(),
            sha256: vec![digest; 32],
            architecture: "llama".into(),
            tensor_types: [("q4_k".to_owned(), 3)].into(),
            engine: "vouch-native-1".into(),
            tokenizer_sha256: vec![9; 32],
            chat_template: None,
        }
    }

    #[test]
    fn model_lists_are_checked_and_select_by_name() {
        let v2 = AttestationClaims {
            version: 2,
            tls_spki_sha256: vec![1; 32],
            model_sha256: vec![2; 32],
            model_name: "a".into(),
            models: vec![model("a", 2), model("B", 4)],
            nonce: vec![3; 32],
            enclave_version: "x".into(),
            log: None,
        };
        v2.check_models().unwrap();
        // A version-1 reader of these bytes would refuse them on the version; this one
        // reads the list back.
        assert_eq!(from_cbor::<AttestationClaims>(&to_cbor(&v2)).unwrap(), v2);
        assert_eq!(v2.served(), vec![("a", &[2u8; 32][..]), ("B", &[4u8; 32][..])]);
        assert_eq!(v2.model_for(None), Some(("a", &[2u8; 32][..])));
        assert_eq!(v2.model_for(Some("b")), Some(("B", &[4u8; 32][..])));
        assert_eq!(v2.model_for(Some("c")), None);
        let bad = |c: AttestationClaims| c.check_models().unwrap_err();
        assert_eq!(bad(AttestationClaims { models: vec![], ..v2.clone() }), "no models listed");
        assert!(bad(AttestationClaims { model_name: "B".into(), ..v2.clone() }).contains("is not the first"));
        assert!(bad(AttestationClaims { models: vec![model("a", 2), model("A", 5)], ..v2.clone() })
            .contains("listed twice"));
        let mut short = model("a", 2);
        short.tokenizer_sha256.pop();
        assert!(bad(AttestationClaims { models: vec![short], ..v2.clone() }).contains("not 32 bytes"));
        let v1 = AttestationClaims { version: CLAIMS_VERSION, models: vec![], ..v2.clone() };
        v1.check_models().unwrap();
        assert_eq!(v1.served(), vec![("a", &[2u8; 32][..])]);
        assert_eq!(v1.model_for(Some("A")), Some(("a", &[2u8; 32][..])));
        assert_eq!(v1.model_for(Some("B")), None);
        assert_eq!(
            bad(AttestationClaims { version: CLAIMS_VERSION, ..v2.clone() }),
            "version-1 claims list models"
        );
        // Version 3 names the answer log, with a key its origin names; earlier ones cannot.
        let log = crate::tlog::LogClaim::for_key(&[5; 32]);
        let v3 =
            AttestationClaims { version: ATTESTATION_CLAIMS_VERSION, log: Some(log.clone()), ..v2.clone() };
        v3.check_models().unwrap();
        assert_eq!(bad(AttestationClaims { log: None, ..v3.clone() }), "version-3 claims name no answer log");
        assert_eq!(
            bad(AttestationClaims { log: Some(log), ..v2 }),
            "version-2 claims cannot name an answer log"
        );
        let renamed = crate::tlog::LogClaim { origin: "vouch.log/00".into(), key: vec![5; 32] };
        assert!(bad(AttestationClaims { log: Some(renamed), ..v3 }).contains("is not the one its key names"));
    }

    #[test]
    fn batch_claims_are_checked_for_their_version() {
        let v1 = BatchClaims {
            version: CLAIMS_VERSION,
            merkle_root: vec![1; 32],
            tree_size: 1,
            tls_spki_sha256: vec![2; 32],
            model_sha256: vec![3; 32],
            batch_seq: 0,
            models: vec![],
            log: None,
        };
        v1.check().unwrap();
        assert!(v1.covers_model(&[3; 32]) && !v1.covers_model(&[4; 32]));
        let v2 = BatchClaims {
            version: LOG_BATCH_CLAIMS_VERSION,
            model_sha256: vec![],
            models: vec![serde_bytes::ByteBuf::from(vec![3; 32]), serde_bytes::ByteBuf::from(vec![4; 32])],
            log: Some(crate::tlog::LogClaim::for_key(&[5; 32])),
            ..v1.clone()
        };
        v2.check().unwrap();
        assert!(v2.covers_model(&[4; 32]) && !v2.covers_model(&[5; 32]));
        // Version-1 bytes are what format 2-4 receipts carry: no new fields appear in them.
        assert_eq!(from_cbor::<BatchClaims>(&to_cbor(&v1)).unwrap(), v1);
        assert!(!String::from_utf8_lossy(&to_cbor(&v1)).contains("log"));
        let bad = |c: BatchClaims| c.check().unwrap_err();
        assert!(bad(BatchClaims { log: None, ..v2.clone() }).contains("name no log"));
        assert!(bad(BatchClaims { models: vec![], ..v2.clone() }).contains("list their models"));
        assert!(bad(BatchClaims { version: CLAIMS_VERSION, ..v2.clone() }).contains("version-1"));
        assert!(bad(BatchClaims { version: 3, ..v2 }).contains("not read here"));
    }
}
