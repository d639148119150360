//! Verdicts: what the client concluded, for people and for programs.
//!
//! CLIENT side, at the end of the data flow. A [`Verdict`] is built only from values
//! the attestation crate verified (`VerifiedEvidence`, `VerifiedReceipt`) — it has no
//! public constructor — so holding one means the checks ran. It prints as a short
//! human summary (`Display`) or serialises to JSON (the CLI's `--json`, the proxy's
//! `vouch_verdict` field). A simulated root is never hidden: `simulated` is a field,
//! and the human form says SIMULATED on its first line.

use serde::Serialize;
use vouch_attestation::policy::{warnings, Warning};
use vouch_attestation::receipt::{VerifiedEvidence, VerifiedReceipt};
use vouch_attestation::{Policy, RootKind, Tcb, VerifiedReport};

/// What a receipt committed to (present when the verdict is about an answer).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReceiptFacts {
    /// Enclave-side response id.
    pub response_id: String,
    /// "stop" or "length".
    pub finish_reason: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus threshold.
    pub top_p: Option<f64>,
    /// Sampling seed.
    pub seed: u64,
    /// Token budget.
    pub max_tokens: u32,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Batch number the receipt's report signed (the log's checkpoint number from
    /// format 5 on).
    pub batch_seq: u64,
    /// Receipts in that batch (format 5 on: entries in the log at that checkpoint).
    pub batch_size: u64,
    /// The answer log the receipt is an entry of (format 5 on): origin, entry index and
    /// the attested checkpoint's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogFacts>,
    /// SHA-256 of the request body (hex).
    pub request_sha256: String,
    /// SHA-256 of the output text (hex).
    pub output_sha256: String,
    /// Whether the request body and output text were checked against the receipt.
    pub exchange_checked: bool,
}

/// Where a receipt sits in its enclave's answer log.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LogFacts {
    /// The log's origin (`vouch.log/…`).
    pub origin: String,
    /// The entry's index.
    pub index: u64,
    /// The size of the attested checkpoint the entry's proof leads to.
    pub checkpoint_size: u64,
    /// That checkpoint's root (hex).
    pub checkpoint_root: String,
}

/// One model an attestation lists, as the verdict shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ServedModel {
    /// The name requests select it by.
    pub name: String,
    /// SHA-256 of its file (hex).
    pub sha256: String,
    /// Its GGUF architecture.
    pub architecture: String,
    /// Its chat template (`None`: `/v1/completions` only).
    pub chat_template: Option<String>,
}

/// The outcome of a successful verification. `#[non_exhaustive]`: only this crate
/// builds one, from verified values.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Verdict {
    /// The first line of the human form, e.g. `VERIFIED (AMD root)` or
    /// `VERIFIED (AMD root) — CODE IDENTITY NOT PINNED`: what a reader must see first.
    pub headline: String,
    /// Always true: failed verifications are errors, not verdicts.
    pub verified: bool,
    /// False when the policy pinned no code identity (`--allow-any-code`): then any
    /// program in any guest on genuine hardware would have produced this verdict.
    pub code_identity_pinned: bool,
    /// What the verdict must say even though everything verified (code identity not
    /// pinned, Milan, no TCB floor, CRL not checked...), most important first.
    pub warnings: Vec<String>,
    /// For answer verdicts: whether the request body and output text were checked
    /// against the receipt (false: the receipt alone, `--receipt-only`).
    pub exchange_checked: Option<bool>,
    /// True when the report chains to Vouch's SIMULATED root, not to AMD.
    pub simulated: bool,
    /// "AMD" or "SIMULATED".
    pub root: &'static str,
    /// Milan, Genoa or Turin.
    pub product: String,
    /// VCEK or VLEK.
    pub signer: String,
    /// Report VERSION.
    pub report_version: u32,
    /// REPORTED_TCB by component.
    pub tcb: Tcb,
    /// Launch MEASUREMENT (hex).
    pub measurement: String,
    /// CHIP_ID (hex).
    pub chip_id: String,
    /// Whether an AMD CRL was checked.
    pub crl_checked: bool,
    /// Model name as served: the default model's (attestation), the answering model's
    /// (a live answer); `None` for a receipt checked on its own (it names its model by
    /// digest).
    pub model_name: Option<String>,
    /// Every model the attestation lists, the default first (attestation only; empty
    /// from a one-model enclave of claims version 1, and for answers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub served_models: Vec<ServedModel>,
    /// SHA-256 of the model file (hex).
    pub model_sha256: String,
    /// Enclave software version (attestation only).
    pub enclave_version: Option<String>,
    /// SHA-256 of the enclave TLS key's SPKI (hex).
    pub tls_spki_sha256: String,
    /// Receipt facts, for answer verdicts.
    pub receipt: Option<ReceiptFacts>,
}

fn base(r: &VerifiedReport, policy: &Policy, model_sha256: &[u8], tls_spki_sha256: &[u8]) -> Verdict {
    let rep = r.report();
    let simulated = r.chain().root() == RootKind::Simulated;
    let found = warnings(r, policy);
    let code_identity_pinned = !found.iter().any(|w| matches!(w, Warning::CodeIdentityNotPinned { .. }));
    let mut headline =
        String::from(if simulated { "VERIFIED (SIMULATED root, NOT AMD)" } else { "VERIFIED (AMD root)" });
    if !code_identity_pinned {
        headline.push_str(" — CODE IDENTITY NOT PINNED");
    }
    Verdict {
        headline,
        verified: true,
        code_identity_pinned,
        warnings: found.iter().map(|w| w.to_string()).collect(),
        exchange_checked: None,
        simulated,
        root: if simulated { "SIMULATED" } else { "AMD" },
        product: r.product().to_string(),
        signer: r.chain().signer().to_string(),
        report_version: rep.version(),
        tcb: r.reported_tcb(),
        measurement: hex::encode(rep.measurement()),
        chip_id: hex::encode(rep.chip_id()),
        crl_checked: r.chain().crl().is_some(),
        model_name: None,
        served_models: Vec::new(),
        model_sha256: hex::encode(model_sha256),
        enclave_version: None,
        tls_spki_sha256: hex::encode(tls_spki_sha256),
        receipt: None,
    }
}

impl Verdict {
    /// The verdict of fresh, verified evidence.
    pub(crate) fn from_evidence(e: &VerifiedEvidence, policy: &Policy) -> Verdict {
        let c = e.claims();
        let mut v = base(e.report(), policy, &c.model_sha256, &c.tls_spki_sha256);
        v.model_name = Some(c.model_name.clone());
        v.served_models = c
            .models
            .iter()
            .map(|m| ServedModel {
                name: m.name.clone(),
                sha256: hex::encode(&m.sha256),
                architecture: m.architecture.clone(),
                chat_template: m.chat_template.clone(),
            })
            .collect();
        v.enclave_version = Some(c.enclave_version.clone());
        v
    }

    /// The verdict of a verified receipt; `exchange_checked` says whether
    /// `check_exchange` ran too.
    pub(crate) fn from_receipt(r: &VerifiedReceipt, policy: &Policy, exchange_checked: bool) -> Verdict {
        let b = r.batch();
        let l = r.leaf();
        // The leaf names its model; the verifier checked the report vouches for it.
        let mut v = base(r.report(), policy, &l.model_sha256, &b.tls_spki_sha256);
        v.exchange_checked = Some(exchange_checked);
        if !exchange_checked {
            v.headline.push_str(" — RECEIPT ONLY: no answer was checked against it");
        }
        v.receipt = Some(ReceiptFacts {
            response_id: l.response_id.clone(),
            finish_reason: l.finish_reason.clone(),
            temperature: l.temperature,
            top_p: l.top_p,
            seed: l.seed,
            max_tokens: l.max_tokens,
            prompt_tokens: l.prompt_tokens,
            completion_tokens: l.completion_tokens,
            batch_seq: b.batch_seq,
            batch_size: b.tree_size,
            log: r.checkpoint().map(|c| LogFacts {
                origin: c.checkpoint.origin.clone(),
                index: r.leaf_index(),
                checkpoint_size: c.checkpoint.size,
                checkpoint_root: hex::encode(c.checkpoint.root),
            }),
            request_sha256: hex::encode(&l.request_sha256),
            output_sha256: hex::encode(&l.output_sha256),
            exchange_checked,
        });
        v
    }

    /// As a JSON value (infallible for this plain struct).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// One TCB as `fmc=.. bl=.. tee=.. snp=.. ucode=..`.
pub fn tcb_line(t: &Tcb) -> String {
    let mut s = String::new();
    if let Some(f) = t.fmc {
        s.push_str(&format!("fmc={f} "));
    }
    s.push_str(&format!(
        "bl={} tee={} snp={} ucode={} ({:#018x})",
        t.bootloader, t.tee, t.snp, t.microcode, t.raw
    ));
    s
}

/// The warning every simulated output carries.
pub const SIMULATED_BANNER: &str =
    "SIMULATED: this enclave's report is signed by Vouch's simulated secure processor, NOT by AMD hardware. It proves nothing about confidentiality; development use only.";

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.headline)?;
        if self.simulated {
            writeln!(f, "  !! {SIMULATED_BANNER}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  !! {w}")?;
        }
        writeln!(
            f,
            "  product      {} ({}-signed, report v{})",
            self.product, self.signer, self.report_version
        )?;
        writeln!(f, "  TCB          {}", tcb_line(&self.tcb))?;
        writeln!(f, "  measurement  {}", self.measurement)?;
        match &self.model_name {
            Some(n) => writeln!(f, "  model        {n} (sha256 {})", self.model_sha256)?,
            None => writeln!(f, "  model        sha256 {}", self.model_sha256)?,
        }
        if self.served_models.len() > 1 {
            for m in &self.served_models {
                let serves = m.chat_template.as_deref().unwrap_or("completions only");
                writeln!(f, "  serves       {} {} ({serves}, sha256 {})", m.name, m.architecture, m.sha256)?;
            }
        }
        if let Some(v) = &self.enclave_version {
            writeln!(f, "  enclave      vouch-enclave {v}")?;
        }
        writeln!(f, "  TLS key      sha256 {}", self.tls_spki_sha256)?;
        writeln!(f, "  chip id      {}", self.chip_id)?;
        writeln!(f, "  CRL          {}", if self.crl_checked { "checked" } else { "not checked" })?;
        if let Some(r) = &self.receipt {
            match &r.log {
                Some(log) => writeln!(
                    f,
                    "  receipt      {} finish={} tokens={}+{} log entry #{} of {} ({}, checkpoint #{})",
                    r.response_id,
                    r.finish_reason,
                    r.prompt_tokens,
                    r.completion_tokens,
                    log.index,
                    log.checkpoint_size,
                    log.origin,
                    r.batch_seq
                )?,
                None => writeln!(
                    f,
                    "  receipt      {} finish={} tokens={}+{} batch #{} ({} answers)",
                    r.response_id,
                    r.finish_reason,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.batch_seq,
                    r.batch_size
                )?,
            }
            writeln!(
                f,
                "  sampling     temperature={} seed={} max_tokens={}{}",
                r.temperature,
                r.seed,
                r.max_tokens,
                r.top_p.map(|p| format!(" top_p={p}")).unwrap_or_default()
            )?;
            writeln!(
                f,
                "  exchange     {}",
                if r.exchange_checked {
                    "request and output match the receipt"
                } else {
                    "NOT checked (no request/output supplied)"
                }
            )?;
        }
        Ok(())
    }
}
