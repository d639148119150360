//! The client's policy file: what this verifier accepts, loaded from TOML.
//!
//! CLIENT side of the trust boundary. Together with AMD's compiled-in roots, this file
//! is everything the client trusts. It wraps the attestation crate's
//! [`vouch_attestation::Policy`] (the `[snp]` table: debug, migration agent, TCB
//! minimums, measurements...) and adds what only a client decides: which model digests
//! are acceptable, how long an attestation may be reused, whether a CRL is required,
//! and whether the client may talk to AMD's KDS at all. Unknown keys are errors, so a
//! typo never silently relaxes a check. See `client/policy.example.toml`.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use vouch_attestation::policy::Hex;
use vouch_attestation::Policy;

/// Largest policy file read, in bytes (a policy is a few hundred bytes).
pub const MAX_POLICY_FILE_BYTES: u64 = 1024 * 1024;

/// Default reuse window of a verified attestation, in seconds.
pub const DEFAULT_MAX_EVIDENCE_AGE_SECS: u64 = 300;

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_POLICY_FILE_BYTES`].
    #[error("policy file {path} is {actual} bytes, at most {limit} allowed")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        actual: u64,
        /// The limit.
        limit: u64,
    },
    /// The TOML is malformed or names unknown keys.
    #[error("invalid policy {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The values are well-formed but inconsistent.
    #[error("invalid policy {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The on-disk shape (see `policy.example.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    accepted_models: Vec<Hex<32>>,
    #[serde(default)]
    accepted_model_names: Vec<String>,
    #[serde(default)]
    model_pins: std::collections::BTreeMap<String, Hex<32>>,
    max_evidence_age_secs: Option<u64>,
    #[serde(default)]
    require_crl: bool,
    #[serde(default)]
    offline: bool,
    kds_cache_dir: Option<PathBuf>,
    #[serde(default)]
    snp: Policy,
}

/// Everything the client accepts. [`ClientPolicy::default`] is strict: the
/// attestation crate's strict SNP baseline (no debug, no migration agent, VMPL 0,
/// committed firmware), attestations reused for at most five minutes, any model
/// digest (the verdict always shows which one; pin it with `accepted_models`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPolicy {
    /// SNP report policy, checked on every report (evidence and receipts).
    pub snp: Policy,
    /// Accepted SHA-256 digests of the model file (empty: any model).
    pub accepted_models: Vec<[u8; 32]>,
    /// Accepted model names as served (empty: any name).
    pub accepted_model_names: Vec<String>,
    /// Per-model pins, by served name (ASCII case-insensitive): when any are set, only
    /// these models are accepted, each with exactly its digest (empty: no pins).
    pub model_pins: Vec<(String, [u8; 32])>,
    /// How long a verified attestation (and its pinned TLS key) may be reused before
    /// the client asks for fresh evidence, in seconds.
    pub max_evidence_age_secs: u64,
    /// Never contact AMD's KDS; evidence must carry every certificate (and CRL, when
    /// required) itself.
    pub offline: bool,
    /// Where fetched KDS certificates are cached (None: no cache).
    pub kds_cache_dir: Option<PathBuf>,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            snp: Policy::default(),
            accepted_models: Vec::new(),
            accepted_model_names: Vec::new(),
            model_pins: Vec::new(),
            max_evidence_age_secs: DEFAULT_MAX_EVIDENCE_AGE_SECS,
            offline: false,
            kds_cache_dir: None,
        }
    }
}

impl ClientPolicy {
    /// Parses policy TOML; `path` only labels errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<ClientPolicy, PolicyError> {
        let f: PolicyFile = toml::from_str(text)
            .map_err(|e| PolicyError::Parse { path: path.to_owned(), reason: e.to_string() })?;
        let mut snp = f.snp;
        // One switch, two spellings: either place turning it on makes it required.
        snp.require_crl |= f.require_crl;
        for name in snp.min_tcb.keys() {
            if vouch_attestation::Product::from_name(name).is_none() {
                return Err(PolicyError::Invalid {
                    path: path.to_owned(),
                    reason: format!("unknown product {name:?} in [snp.min_tcb] (milan, genoa, turin)"),
                });
            }
        }
        let pins_models =
            !f.accepted_models.is_empty() || !f.accepted_model_names.is_empty() || !f.model_pins.is_empty();
        if pins_models && !snp.pins_code_identity() {
            // A model digest is a claim the enclave's own code makes: unpinned code can
            // claim any model, so such a policy would look strict and check nothing.
            return Err(PolicyError::Invalid {
                path: path.to_owned(),
                reason: "it pins models but no code identity, and any code can claim any model: pin the \
                         launch measurement in [snp] measurements (from `vouch measure`), or id_key_digests, \
                         author_key_digests or host_data"
                    .into(),
            });
        }
        let mut names: Vec<String> = f.model_pins.keys().map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        if names.len() != f.model_pins.len() {
            return Err(PolicyError::Invalid {
                path: path.to_owned(),
                reason: "[model_pins] names a model twice (names are compared ignoring ASCII case)".into(),
            });
        }
        let max_age = f.max_evidence_age_secs.unwrap_or(DEFAULT_MAX_EVIDENCE_AGE_SECS);
        if max_age == 0 {
            return Err(PolicyError::Invalid {
                path: path.to_owned(),
                reason: "max_evidence_age_secs must be at least 1".into(),
            });
        }
        Ok(ClientPolicy {
            snp,
            accepted_models: f.accepted_models.into_iter().map(|h| h.0).collect(),
            accepted_model_names: f.accepted_model_names,
            model_pins: f.model_pins.into_iter().map(|(name, h)| (name, h.0)).collect(),
            max_evidence_age_secs: max_age,
            offline: f.offline,
            kds_cache_dir: f.kds_cache_dir,
        })
    }

    /// Reads and parses a policy file (bounded in size).
    pub fn load(path: &Path) -> Result<ClientPolicy, PolicyError> {
        let io = |source| PolicyError::Io { path: path.to_owned(), source };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_POLICY_FILE_BYTES {
            return Err(PolicyError::TooLarge {
                path: path.to_owned(),
                actual: len,
                limit: MAX_POLICY_FILE_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        ClientPolicy::from_toml(&text, path)
    }

    /// Checks a model digest and name against the accepted lists and pins; the error
    /// says why. `name` is `None` where it is not known (a receipt checked on its own
    /// names its model by digest only): then a pin matches on the digest alone.
    pub fn check_model(&self, digest: &[u8], name: Option<&str>) -> Result<(), String> {
        if !self.accepted_models.is_empty() && !self.accepted_models.iter().any(|m| m[..] == *digest) {
            return Err(format!(
                "model digest {} is not in the policy's accepted_models",
                hex::encode(digest)
            ));
        }
        if let Some(name) = name {
            if !self.accepted_model_names.is_empty() && !self.accepted_model_names.iter().any(|n| n == name) {
                return Err(format!("model name {name:?} is not in the policy's accepted_model_names"));
            }
        }
        if self.model_pins.is_empty() {
            return Ok(());
        }
        match name {
            Some(name) => match self.model_pins.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                Some((_, pin)) if pin[..] == *digest => Ok(()),
                Some((_, pin)) => Err(format!(
                    "model {name:?} has digest {}, but the policy's model_pins pin it to {}",
                    hex::encode(digest),
                    hex::encode(pin)
                )),
                None => Err(format!("model {name:?} is not in the policy's model_pins")),
            },
            None if self.model_pins.iter().any(|(_, pin)| pin[..] == *digest) => Ok(()),
            None => {
                Err(format!("model digest {} is not pinned in the policy's model_pins", hex::encode(digest)))
            }
        }
    }

    /// Checks an attestation's served models, `(name, digest)`: it is acceptable when
    /// at least one of them is (each answer is checked against its own model again);
    /// the error gives every model's reason.
    pub fn check_served_models<'a>(
        &self,
        served: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), String> {
        let mut reasons = Vec::new();
        for (name, digest) in served {
            match self.check_model(digest, Some(name)) {
                Ok(()) => return Ok(()),
                Err(e) => reasons.push(e),
            }
        }
        Err(match reasons.len() {
            0 => "the attestation lists no model".to_owned(),
            1 => reasons.remove(0),
            _ => format!("no served model is acceptable: {}", reasons.join("; ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_policy_parses() {
        let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policy.example.toml"));
        let policy = ClientPolicy::load(p).unwrap();
        assert!(!policy.snp.allow_debug);
        assert_eq!(policy.accepted_models.len(), 1);
        assert!(policy.snp.min_tcb.contains_key("milan"));
        assert!(policy.snp.pins_code_identity(), "the example must pin code");
        // Milan has a floor but is not accepted: that takes accepted_products.
        assert!(policy.snp.accepted_products.is_empty());
    }

    #[test]
    fn defaults_are_strict_and_typos_rejected() {
        let p = ClientPolicy::from_toml("", Path::new("x")).unwrap();
        assert_eq!(p, ClientPolicy::default());
        assert!(!p.snp.allow_debug && !p.snp.allow_migration_agent);
        assert_eq!(p.snp.vmpl, Some(0));
        let e = ClientPolicy::from_toml("alow_debug = true", Path::new("x")).unwrap_err();
        assert!(matches!(e, PolicyError::Parse { .. }), "{e}");
        let e = ClientPolicy::from_toml("[snp]\nalow_debug = true", Path::new("x")).unwrap_err();
        assert!(matches!(e, PolicyError::Parse { .. }), "{e}");
        let e = ClientPolicy::from_toml("accepted_models = [\"abcd\"]", Path::new("x")).unwrap_err();
        assert!(matches!(e, PolicyError::Parse { .. }), "{e}");
        let e = ClientPolicy::from_toml("[snp.min_tcb.venice]\nsnp = 1", Path::new("x")).unwrap_err();
        assert!(matches!(e, PolicyError::Invalid { .. }), "{e}");
    }

    #[test]
    fn models_without_code_identity_are_refused_at_load() {
        let model = format!("accepted_models = [\"{}\"]\n", "ab".repeat(32));
        let e = ClientPolicy::from_toml(&model, Path::new("x")).unwrap_err();
        assert!(
            matches!(&e, PolicyError::Invalid { reason, .. } if reason.contains("pins models but no code identity")),
            "{e}"
        );
        let e = ClientPolicy::from_toml("accepted_model_names = [\"m\"]", Path::new("x")).unwrap_err();
        assert!(matches!(e, PolicyError::Invalid { .. }), "{e}");
        let pinned = format!("{model}[snp]\nmeasurements = [\"{}\"]\n", "cd".repeat(48));
        let p = ClientPolicy::from_toml(&pinned, Path::new("x")).unwrap();
        assert!(p.snp.pins_code_identity());
        assert_eq!(p.accepted_models, vec![[0xab; 32]]);
    }

    #[test]
    fn top_level_require_crl_turns_on_the_snp_check() {
        let p = ClientPolicy::from_toml("require_crl = true", Path::new("x")).unwrap();
        assert!(p.snp.require_crl);
    }

    #[test]
    fn model_check() {
        let d = [7u8; 32];
        let p = ClientPolicy { accepted_models: vec![d], ..Default::default() };
        assert!(p.check_model(&d, Some("m")).is_ok());
        assert!(p.check_model(&[8; 32], Some("m")).unwrap_err().contains("accepted_models"));
        let p = ClientPolicy { accepted_model_names: vec!["a".into()], ..Default::default() };
        assert_eq!(
            p.check_model(&d, Some("b")).unwrap_err(),
            "model name \"b\" is not in the policy's accepted_model_names"
        );
    }

    #[test]
    fn model_pins_pin_each_name_to_its_digest() {
        let text = format!(
            "[model_pins]\nsmollm2 = \"{}\"\ngemma = \"{}\"\n[snp]\nmeasurements = [\"{}\"]\n",
            "07".repeat(32),
            "08".repeat(32),
            "cd".repeat(48)
        );
        let p = ClientPolicy::from_toml(&text, Path::new("x")).unwrap();
        assert_eq!(p.model_pins.len(), 2);
        assert!(p.check_model(&[7; 32], Some("SmolLM2")).is_ok());
        assert!(p.check_model(&[8; 32], Some("gemma")).is_ok());
        assert_eq!(
            p.check_model(&[8; 32], Some("smollm2")).unwrap_err(),
            format!(
                "model \"smollm2\" has digest {}, but the policy's model_pins pin it to {}",
                "08".repeat(32),
                "07".repeat(32)
            )
        );
        assert_eq!(
            p.check_model(&[7; 32], Some("other")).unwrap_err(),
            "model \"other\" is not in the policy's model_pins"
        );
        // A receipt alone names its model by digest: any pinned digest passes, others not.
        assert!(p.check_model(&[8; 32], None).is_ok());
        assert!(p.check_model(&[9; 32], None).unwrap_err().contains("is not pinned"));
        // An attestation is acceptable when one served model is; the error lists all.
        let (seven, nine) = ([7u8; 32], [9u8; 32]);
        assert!(p.check_served_models([("x", &nine[..]), ("smollm2", &seven[..])]).is_ok());
        let e = p.check_served_models([("x", &nine[..]), ("gemma", &nine[..])]).unwrap_err();
        assert!(e.starts_with("no served model is acceptable: model \"x\""), "{e}");
        // Pins need a code identity, like every model pin; a name pinned twice is refused.
        let e = ClientPolicy::from_toml(&text[..text.find("[snp]").unwrap()], Path::new("x")).unwrap_err();
        assert!(
            matches!(&e, PolicyError::Invalid { reason, .. } if reason.contains("no code identity")),
            "{e}"
        );
        let twice = text.replace("gemma", "SMOLLM2");
        let e = ClientPolicy::from_toml(&twice, Path::new("x")).unwrap_err();
        assert!(matches!(&e, PolicyError::Invalid { reason, .. } if reason.contains("twice")), "{e}");
    }
}
