//! The `vouch` command line: argument definitions and one function per subcommand.
//!
//! CLIENT side; this is where a person (or a script) meets the verifier. Every command
//! trusts only AMD's compiled-in roots and the `--policy` file, plus a simulated root
//! only when `--trust-sim-root` names one (and then every output says SIMULATED).
//! Exit codes are a contract: 0 verified, 1 verification or policy failure (with the
//! reason), 2 usage or I/O error. `--json` gives machine-readable output on stdout,
//! failures included.

mod verify_proof;

use crate::client::{ChatRequest, ClientConfig, ClientError, VouchClient};
use crate::kds::{Backoff, HttpsFetcher, KdsCache, KdsClient, KDS_BASE};
use crate::policy::{ClientPolicy, PolicyError};
use crate::receipts::{check_receipt, ReceiptCheckError, ReceiptFile};
use crate::report_view::{PolicyApplied, ReportView};
use crate::verdict::SIMULATED_BANNER;
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vouch_attestation::{ChainInput, PolicyViolations, Product, TrustAnchors, VerifyError};

/// Largest input file read (reports, certificates, CRLs are a few KiB).
pub const MAX_INPUT_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// `vouch`: verify AMD SEV-SNP attestation and Vouch receipts.
#[derive(Debug, Parser)]
#[command(name = "vouch", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by commands that judge evidence.
#[derive(Debug, Args, Clone)]
pub struct TrustArgs {
    /// Policy file (TOML; see client/policy.example.toml). Default: strict built-in policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// DANGEROUS: also trust this SIMULATED root (PEM/DER, e.g. <sim-dir>/sim-ark.pem).
    /// For development only; every output then says SIMULATED. Only a root Vouch's
    /// simulator made is accepted (never one that names AMD).
    #[arg(long, value_name = "FILE")]
    pub trust_sim_root: Option<PathBuf>,
    /// DANGEROUS: accept a guest whose code identity the policy does not pin (no
    /// measurement, ID-key or author-key digest, or HOST_DATA): then ANY program in any
    /// guest on genuine hardware passes. Every verdict says CODE IDENTITY NOT PINNED.
    #[arg(long)]
    pub allow_any_code: bool,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a raw SEV-SNP attestation report against AMD's roots and print it decoded.
    VerifyReport(VerifyReportArgs),
    /// Attest a live enclave: fresh nonce, evidence, TLS key binding, policy.
    Attest(AttestArgs),
    /// Ask the attested enclave one question; stream the answer; verify its receipt.
    Chat(ChatArgs),
    /// Verify a saved receipt offline (and the request/output it carries).
    Verify(VerifyArgs),
    /// Local plain-HTTP OpenAI-compatible endpoint that forwards only to a verified enclave.
    Proxy(ProxyArgs),
    /// Re-execute a saved answer with the same engine and model file and compare it bit for
    /// bit: MATCH, or a fraud proof (exit 3). `--check PROOF` re-checks a proof.
    Replay(ReplayArgs),
    /// Check an equivocation proof (a fork of an enclave's answer log, as `chat` and
    /// `proxy` write when they catch one): exit 0 when it holds.
    VerifyProof(verify_proof::VerifyProofArgs),
    /// Compute the expected SEV-SNP launch measurement (OVMF, vCPUs, optional direct boot)
    /// to pin in a policy.
    Measure(vouch_measure::cli::MeasureArgs),
}

/// `vouch verify-report`.
#[derive(Debug, Args)]
pub struct VerifyReportArgs {
    /// The report (1184 bytes raw, or hex / base64 text).
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// VCEK or VLEK certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub vcek: PathBuf,
    /// ASK/ASVK (+ ARK) chain, PEM or DER (default: AMD's, compiled in).
    #[arg(long, value_name = "FILE")]
    pub chain: Option<PathBuf>,
    /// Product (Milan, Genoa, Turin) when the report (v2) and certificate do not say.
    #[arg(long, value_name = "NAME")]
    pub product: Option<String>,
    /// AMD CRL (PEM or DER) to check the intermediate against.
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// Verification time, Unix seconds (default: now).
    #[arg(long, value_name = "UNIX_SECS")]
    pub now: Option<u64>,
    /// Check authenticity only (chain to an AMD root, signature, certificate ↔ report
    /// consistency) and apply NO policy; the output says so. Without it (and without
    /// --policy) the strict built-in policy applies.
    #[arg(long, conflicts_with = "policy")]
    pub authenticity_only: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub trust: TrustArgs,
}

/// Connection options.
#[derive(Debug, Args, Clone)]
pub struct ConnectArgs {
    /// The enclave, https://HOST:PORT (usually vouch-host).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Never contact AMD's KDS (evidence must carry its certificates).
    #[arg(long)]
    pub offline: bool,
    /// Another enclave (or host) to turn to when the current one goes away mid-answer:
    /// it is attested like the first, and the request resent (a stream resumes where it
    /// broke). Repeatable; without it, a resend goes to the same URL (a host's other enclaves).
    #[arg(long, value_name = "URL")]
    pub fallback_url: Vec<String>,
    /// How many times a request is resent after an outage (0: fail at the first).
    #[arg(long, value_name = "N", default_value_t = crate::client::MAX_RESUMES)]
    pub max_resends: u32,
    /// Where the answer-log checkpoints seen are kept, and fork proofs written (default:
    /// $VOUCH_STATE_DIR, else $XDG_STATE_HOME/vouch, else ~/.local/state/vouch).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Keep no checkpoints: a fork between this client's answers goes unnoticed.
    #[arg(long, conflicts_with = "state_dir")]
    pub no_log_state: bool,
}

/// Cross-operator spot checks.
#[derive(Debug, Args, Clone)]
pub struct AuditArgs {
    /// A second, independently attested enclave to re-ask a sample of requests (same
    /// bytes, same committed seed) and compare answers with; it must be on another chip.
    #[arg(long, value_name = "URL")]
    pub audit_url: Option<String>,
    /// Policy for the audit enclave (default: the same as --policy), e.g. to pin another
    /// operator's measurement or chips.
    #[arg(long, value_name = "FILE", requires = "audit_url")]
    pub audit_policy: Option<PathBuf>,
    /// Where mismatch proofs are written.
    #[arg(long, value_name = "DIR", default_value = "vouch-audits", requires = "audit_url")]
    pub audit_out: PathBuf,
    /// Audits running at once; a sampled answer beyond that is recorded as skipped (never
    /// delayed).
    #[arg(long, value_name = "N", default_value_t = crate::audit::MAX_AUDITS_IN_FLIGHT, requires = "audit_url")]
    pub audit_concurrency: usize,
}

/// `vouch attest`.
#[derive(Debug, Args)]
pub struct AttestArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnectArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub trust: TrustArgs,
}

/// `vouch chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnectArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub trust: TrustArgs,
    /// Write {receipt, request body, output} as JSON, for `vouch verify`.
    #[arg(long, value_name = "FILE")]
    pub receipt_out: Option<PathBuf>,
    /// Token budget.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (default 0: greedy, re-checkable).
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub temperature: f64,
    /// Sampling seed.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Model name (default: the attested model).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Ask for one JSON answer instead of a stream.
    #[arg(long)]
    pub no_stream: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditArgs,
    /// The question.
    #[arg(value_name = "PROMPT")]
    pub prompt: String,
}

/// `vouch verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Receipt file (from --receipt-out), or a bare base64/CBOR receipt.
    #[arg(value_name = "RECEIPT_FILE")]
    pub receipt: PathBuf,
    /// Verification time, Unix seconds (default: now).
    #[arg(long, value_name = "UNIX_SECS")]
    pub now: Option<u64>,
    /// Accept a bare receipt (no request body and output to check it against): the
    /// receipt is verified, the answer is NOT. Without it, `verify` exits 0 only when
    /// the exchange was checked.
    #[arg(long)]
    pub receipt_only: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub trust: TrustArgs,
}

/// `vouch replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Receipt file from `vouch chat --receipt-out` (request, output and token ids).
    #[arg(value_name = "RECEIPT_FILE", required_unless_present = "check", conflicts_with = "check")]
    pub receipt: Option<PathBuf>,
    /// Re-check a fraud proof written by an earlier replay instead.
    #[arg(long, value_name = "PROOF")]
    pub check: Option<PathBuf>,
    /// The model file (GGUF) the receipt commits to.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Where to write the fraud proof on a mismatch (default: RECEIPT_FILE.fraud-proof.json).
    #[arg(long, value_name = "FILE")]
    pub proof_out: Option<PathBuf>,
    /// The request body, for a bare receipt (a file from --receipt-out carries it).
    #[arg(long, value_name = "FILE", conflicts_with = "check")]
    pub request: Option<PathBuf>,
    /// Verification time, Unix seconds (default: now).
    #[arg(long, value_name = "UNIX_SECS")]
    pub now: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub trust: TrustArgs,
}

/// `vouch proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnectArgs,
    /// Local address to serve plain HTTP on (keep it on loopback).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub audit: AuditArgs,
    /// Fraction of answers (0..=1) audited on --audit-url.
    #[arg(long, value_name = "R", default_value_t = 0.1, requires = "audit_url")]
    pub audit_rate: f64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub trust: TrustArgs,
}

/// Why a command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The policy file could not be loaded.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The report is not authentic (or is malformed).
    #[error("NOT AUTHENTIC: {0}")]
    NotAuthentic(VerifyError),
    /// The report is authentic but violates the policy.
    #[error("authentic, but REJECTED by policy: {0}")]
    PolicyViolated(PolicyViolations),
    /// The receipt is not valid.
    #[error("NOT VERIFIED: {0}")]
    Receipt(#[from] ReceiptCheckError),
    /// The receipt file is malformed.
    #[error("NOT VERIFIED: {0}")]
    MalformedReceipt(String),
    /// A bare receipt was given without `--receipt-only`: nothing ties it to an answer.
    #[error("NOT VERIFIED: the file carries no request body and output, so no answer was checked against the receipt; pass --receipt-only to verify the receipt alone")]
    ExchangeMissing,
    /// Talking to or verifying the enclave failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// A receipt could not be replayed (or its receipt did not verify).
    #[error("{0}")]
    Replay(#[from] crate::replay::ReplayError),
    /// A replay found the answer is not what the engine computes; the proof is written.
    #[error("MISMATCH: {0}")]
    Fraud(String),
    /// A fraud proof given to `--check` does not hold.
    #[error("the proof does NOT hold: replaying its receipt does not diverge as it says")]
    ReplayProofDoesNotHold,
    /// An equivocation proof given to `verify-proof` does not hold.
    #[error("the proof does NOT hold: {0}")]
    ProofDoesNotHold(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Io { .. } | CliError::Policy(_) => 2,
            CliError::Client(e) if !e.is_verification_failure() => 2,
            CliError::Replay(crate::replay::ReplayError::Receipt(_)) => 1,
            CliError::Replay(_) => 2,
            CliError::Fraud(_) => 3,
            _ => 1,
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    let io = |source| CliError::Io { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_INPUT_FILE_BYTES {
        return Err(CliError::Usage(format!("{}: larger than {MAX_INPUT_FILE_BYTES} bytes", path.display())));
    }
    std::fs::read(path).map_err(io)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The report bytes from a file: raw binary, or hex / base64 text of it.
pub fn decode_report_file(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() == vouch_attestation::report::REPORT_LEN {
        return bytes.to_vec();
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(b) = hex::decode(&compact) {
            return b;
        }
        use base64::Engine;
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(&compact) {
            return b;
        }
    }
    // Anything else goes to the strict parser, which says exactly what is wrong.
    bytes.to_vec()
}

fn load_policy(t: &TrustArgs) -> Result<ClientPolicy, CliError> {
    let mut p = match &t.policy {
        Some(path) => ClientPolicy::load(path)?,
        None => ClientPolicy::default(),
    };
    p.snp.dangerous_allow_any_code = t.allow_any_code;
    Ok(p)
}

/// AMD's roots, plus the simulated root if `--trust-sim-root` names one.
pub fn load_anchors(t: &TrustArgs) -> Result<(TrustAnchors, bool), CliError> {
    let mut anchors = TrustAnchors::amd();
    let Some(path) = &t.trust_sim_root else { return Ok((anchors, false)) };
    let bytes = read_file(path)?;
    let unusable = |e: VerifyError| {
        CliError::Usage(format!("--trust-sim-root {}: not a usable simulated root: {e}", path.display()))
    };
    // The simulated ARK names the one product it imitates ("SIMULATED-ARK-<Product>").
    let ark = vouch_attestation::cert::certs_from_pem_or_der(&bytes, vouch_attestation::CertRole::Ark)
        .map_err(unusable)?
        .into_iter()
        .next()
        .ok_or_else(|| unusable(VerifyError::Pem { reason: "no certificate".into() }))?;
    let product = vouch_attestation::verify::simulated_root_product(&ark).map_err(unusable)?;
    anchors.dangerous_add_simulated_root(&bytes, product).map_err(unusable)?;
    Ok((anchors, true))
}

fn out_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs a parsed command; returns the exit code. Failures are reported here (stderr,
/// and stdout as JSON with `--json`).
pub async fn run(cli: Cli) -> u8 {
    let json = match &cli.command {
        Command::VerifyReport(a) => a.trust.json,
        Command::Attest(a) => a.trust.json,
        Command::Chat(a) => a.trust.json,
        Command::Verify(a) => a.trust.json,
        Command::Proxy(a) => a.trust.json,
        Command::Replay(a) => a.trust.json,
        Command::VerifyProof(a) => a.trust.json,
        Command::Measure(_) => false,
    };
    let r = match cli.command {
        Command::VerifyReport(a) => verify_report(a),
        Command::Attest(a) => attest(a).await,
        Command::Chat(a) => chat(a).await,
        Command::Verify(a) => verify(a),
        Command::Proxy(a) => proxy(a).await,
        Command::Replay(a) => replay_command(a),
        Command::VerifyProof(a) => verify_proof::run(a),
        Command::Measure(a) => vouch_measure::cli::run(&a)
            .map(|out| println!("{out}"))
            .map_err(|e| CliError::Usage(format!("measure: {e}"))),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            let code = e.exit_code();
            if json {
                out_json(&serde_json::json!({"verified": false, "error": e.to_string(), "exit_code": code}));
            }
            eprintln!("vouch: {e}");
            code
        }
    }
}

fn verify_report(a: VerifyReportArgs) -> Result<(), CliError> {
    let product = match &a.product {
        Some(n) => Some(
            Product::from_name(n)
                .ok_or_else(|| CliError::Usage(format!("--product {n:?}: expected Milan, Genoa or Turin")))?,
        ),
        None => None,
    };
    // Strict by default: the built-in policy unless a file is given; no policy at all
    // only when asked for by name.
    let policy = if a.authenticity_only { None } else { Some(load_policy(&a.trust)?) };
    let (anchors, _) = load_anchors(&a.trust)?;
    let report = decode_report_file(&read_file(&a.report)?);
    let vcek = read_file(&a.vcek)?;
    let chain = a.chain.as_deref().map(read_file).transpose()?;
    let crl = a.crl.as_deref().map(read_file).transpose()?;
    let input = ChainInput { leaf: &vcek, chain: chain.as_deref(), crl: crl.as_deref(), product };
    let now = a.now.unwrap_or_else(now_unix);
    let verified =
        vouch_attestation::verify_report(&anchors, &report, &input, now).map_err(CliError::NotAuthentic)?;
    if let Some(p) = &policy {
        vouch_attestation::validate(&verified, &p.snp).map_err(CliError::PolicyViolated)?;
    }
    let applied = match (&policy, &a.trust.policy) {
        (None, _) => PolicyApplied::None,
        (Some(_), Some(path)) => PolicyApplied::File(path.display().to_string()),
        (Some(_), None) => PolicyApplied::BuiltIn,
    };
    let view = ReportView::new(&verified, policy.as_ref().map(|p| &p.snp), applied);
    if a.trust.json {
        out_json(&serde_json::to_value(&view).unwrap_or_default());
    } else {
        print!("{view}");
    }
    Ok(())
}

fn client_config(conn: &ConnectArgs, trust: &TrustArgs) -> Result<ClientConfig, CliError> {
    let mut policy = load_policy(trust)?;
    policy.offline |= conn.offline;
    let (anchors, _) = load_anchors(trust)?;
    let cache = policy.kds_cache_dir.clone().map(KdsCache::new);
    let kds = if policy.offline {
        None
    } else {
        match HttpsFetcher::new() {
            Ok(f) => Some(KdsClient::new(KDS_BASE, Arc::new(f), cache, Backoff::default())),
            Err(e) => {
                tracing::warn!(error = %e, "AMD KDS unavailable; evidence must carry its certificates");
                None
            }
        }
    };
    let mut cfg = ClientConfig::new(&conn.url, policy);
    cfg.fallback_urls = conn.fallback_url.clone();
    cfg.max_resends = conn.max_resends;
    cfg.anchors = anchors;
    cfg.kds = kds;
    cfg.state_dir = match conn.no_log_state {
        true => None,
        false => Some(conn.state_dir.clone().unwrap_or_else(crate::seen::default_state_dir)),
    };
    Ok(cfg)
}

/// The auditor for `--audit-url`, its enclave attested now: it must verify under the
/// audit policy and sit on another chip than `primary`.
async fn auditor(
    a: &AuditArgs,
    conn: &ConnectArgs,
    trust: &TrustArgs,
    primary: &crate::client::Attestation,
    rate: f64,
) -> Result<Option<Arc<crate::audit::Auditor>>, CliError> {
    let Some(url) = &a.audit_url else { return Ok(None) };
    if !(0.0..=1.0).contains(&rate) {
        return Err(CliError::Usage("--audit-rate must be between 0 and 1".into()));
    }
    let trust =
        TrustArgs { policy: a.audit_policy.clone().or_else(|| trust.policy.clone()), ..trust.clone() };
    let audit_conn = ConnectArgs { url: url.clone(), fallback_url: Vec::new(), ..conn.clone() };
    let client = Arc::new(VouchClient::new(client_config(&audit_conn, &trust)?)?);
    let att = client.attest().await?;
    if att.chip_id() == primary.chip_id() {
        return Err(CliError::Usage(format!(
            "--audit-url {url} is on the same chip as --url {}: an audit needs an independent enclave",
            conn.url
        )));
    }
    Ok(Some(Arc::new(crate::audit::Auditor::new(client, rate, a.audit_concurrency, a.audit_out.clone()))))
}

async fn attest(a: AttestArgs) -> Result<(), CliError> {
    let client = VouchClient::new(client_config(&a.conn, &a.trust)?)?;
    let att = client.attest().await?;
    if a.trust.json {
        out_json(&att.verdict().to_json());
    } else {
        print!("{}", att.verdict());
    }
    Ok(())
}

async fn chat(a: ChatArgs) -> Result<(), CliError> {
    if !a.temperature.is_finite() || a.temperature < 0.0 {
        return Err(CliError::Usage("--temperature must be a finite number >= 0".into()));
    }
    let client = VouchClient::new(client_config(&a.conn, &a.trust)?)?;
    let audit = match &a.audit.audit_url {
        Some(_) => {
            let primary = client.attest().await?;
            auditor(&a.audit, &a.conn, &a.trust, &primary, 1.0).await?
        }
        None => None,
    };
    let mut req = ChatRequest::prompt(&a.prompt);
    req.model = a.model.clone();
    req.max_tokens = a.max_tokens;
    req.temperature = a.temperature;
    req.seed = a.seed;
    req.stream = !a.no_stream;
    let json = a.trust.json;
    let mut printed = false;
    let mut on_delta = |d: &str| {
        if !json {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(d.as_bytes());
            let _ = out.flush();
        }
        printed = true;
    };
    let result = client.chat(&req, &mut on_delta).await;
    let out = match result {
        Ok(o) => o,
        Err(e) => {
            if printed && !json {
                println!();
                eprintln!("vouch: the text above is NOT verified");
            }
            return Err(e.into());
        }
    };
    if let Some(path) = &a.receipt_out {
        let body =
            serde_json::to_vec_pretty(&out.receipt_file()).map_err(|e| CliError::Usage(e.to_string()))?;
        std::fs::write(path, body).map_err(|source| CliError::Io { path: path.clone(), source })?;
    }
    if out.resumes > 0 {
        eprintln!(
            "vouch: the enclave went away mid-answer; resent {} time(s), finished and verified by {}",
            out.resumes, out.url
        );
    }
    if json {
        out_json(&serde_json::json!({
            "verified": true,
            "simulated": out.verdict.simulated,
            "text": out.text,
            "finish_reason": out.finish_reason,
            "verdict": out.verdict.to_json(),
            "receipt": out.receipt_b64,
        }));
    } else {
        if !out.streamed {
            print!("{}", out.text);
        }
        println!();
        println!();
        print!("{}", out.verdict);
        if out.verdict.simulated {
            eprintln!("vouch: {SIMULATED_BANNER}");
        }
    }
    // After the answer is out: the audit (the user has the verified answer already).
    if let Some(auditor) = audit {
        audit_line(&auditor.run(1, &out).await, auditor.client().attestation().as_deref(), json)?;
    }
    Ok(())
}

/// Prints an audit's verdict (`vouch chat --audit-url`); a mismatch is exit code 3.
fn audit_line(
    status: &crate::audit::AuditStatus,
    audit: Option<&crate::client::Attestation>,
    json: bool,
) -> Result<(), CliError> {
    use crate::audit::AuditStatus;
    let url = audit.map(|a| a.url().to_owned()).unwrap_or_default();
    if json {
        out_json(&serde_json::json!({"audit": status, "audit_url": url}));
    }
    match status {
        AuditStatus::Agree => {
            if !json {
                println!("AUDIT: {url}, on another chip, signed the same answer (token for token)");
            }
            Ok(())
        }
        AuditStatus::Mismatch { differs, proof } => Err(CliError::Fraud(format!(
            "AUDIT: {url} signed a different answer ({differs} differ): at least one enclave lied; proof {} (vouch replay it to see which)",
            proof.as_deref().unwrap_or("not written")
        ))),
        AuditStatus::Inconclusive { reason } | AuditStatus::Failed { reason } | AuditStatus::Skipped { reason } => {
            eprintln!("vouch: AUDIT not conclusive: {reason}");
            Ok(())
        }
        AuditStatus::Pending => Ok(()),
    }
}

fn verify(a: VerifyArgs) -> Result<(), CliError> {
    let policy = load_policy(&a.trust)?;
    let (anchors, _) = load_anchors(&a.trust)?;
    let bytes = read_file(&a.receipt)?;
    let loaded = ReceiptFile::parse_any(&bytes).map_err(CliError::MalformedReceipt)?;
    let exchange = match (&loaded.request_body, &loaded.output) {
        (Some(r), Some(o)) => Some((r.as_slice(), o.as_str())),
        (None, None) => None,
        _ => {
            return Err(CliError::MalformedReceipt(
                "the file has a request body or an output, not both".into(),
            ))
        }
    };
    if exchange.is_none() && !a.receipt_only {
        return Err(CliError::ExchangeMissing);
    }
    let now = a.now.unwrap_or_else(now_unix);
    let verdict = check_receipt(&anchors, &policy, &loaded.receipt_cbor, exchange, None, now)?;
    if a.trust.json {
        out_json(&verdict.to_json());
    } else {
        print!("{verdict}");
    }
    Ok(())
}

fn replay_command(a: ReplayArgs) -> Result<(), CliError> {
    use crate::replay::{check_proof, replay_receipt, FraudProof, ReplayVerdict};
    let policy = load_policy(&a.trust)?;
    let (anchors, _) = load_anchors(&a.trust)?;
    let now = a.now.unwrap_or_else(now_unix);
    let mut model = vouch_enclave::model::Model::load(&a.model)
        .map_err(|e| CliError::Usage(format!("--model {}: {e}", a.model.display())))?;
    if let Some(path) = &a.check {
        let proof: FraudProof = serde_json::from_slice(&read_file(path)?)
            .map_err(|e| CliError::Usage(format!("{}: not a fraud proof: {e}", path.display())))?;
        if !check_proof(&anchors, &policy, &proof, &mut model, now)? {
            return Err(CliError::ReplayProofDoesNotHold);
        }
        let line = format!(
            "PROOF HOLDS: the hardware-signed answer differs from what engine {} computes at completion token {} (committed {:?}, engine {:?})",
            proof.engine, proof.position, proof.committed_token, proof.replayed_token
        );
        if a.trust.json {
            out_json(&serde_json::json!({"proof_holds": true, "position": proof.position}));
        } else {
            println!("{line}");
        }
        return Ok(());
    }
    let Some(receipt_path) = &a.receipt else {
        return Err(CliError::Usage("give RECEIPT_FILE or --check PROOF".into()));
    };
    let bytes = read_file(receipt_path)?;
    if let Ok(m) = serde_json::from_slice::<crate::audit::MismatchProof>(&bytes) {
        if m.format == crate::audit::MISMATCH_PROOF_FORMAT {
            return replay_mismatch(&anchors, &policy, receipt_path, &m, &mut model, now);
        }
    }
    let mut loaded = ReceiptFile::parse_any(&bytes).map_err(CliError::MalformedReceipt)?;
    if let Some(path) = &a.request {
        let body = read_file(path)?;
        if loaded.request_body.as_ref().is_some_and(|b| *b != body) {
            return Err(CliError::Usage(format!(
                "--request {}: the receipt file carries another request body",
                path.display()
            )));
        }
        loaded.request_body = Some(body);
    }
    match replay_receipt(&anchors, &policy, &loaded, &mut model, now)? {
        ReplayVerdict::Match { tokens, ms } => {
            if a.trust.json {
                out_json(&serde_json::json!({"match": true, "tokens": tokens, "ms": ms}));
            } else {
                println!(
                    "MATCH: all {tokens} completion tokens and the ending are what this engine computes ({ms:.0} ms, {:.0} tok/s)",
                    tokens as f64 / (ms / 1e3).max(1e-9)
                );
            }
            Ok(())
        }
        ReplayVerdict::Fraud(proof) => {
            let out = a.proof_out.clone().unwrap_or_else(|| {
                let mut p = receipt_path.clone().into_os_string();
                p.push(".fraud-proof.json");
                PathBuf::from(p)
            });
            let body = serde_json::to_vec_pretty(&proof).map_err(|e| CliError::Usage(e.to_string()))?;
            std::fs::write(&out, body).map_err(|source| CliError::Io { path: out.clone(), source })?;
            if let Some(mine) = &proof.replayed_logprobs_sha256 {
                return Err(CliError::Fraud(format!(
                    "every token matches, but the receipt's log-probabilities are not the engine's (their digest is {mine}); fraud proof written to {} (check it with vouch replay --check)",
                    out.display()
                )));
            }
            Err(CliError::Fraud(format!(
                "completion token {}: the receipt commits {:?}, the engine computes {:?}; fraud proof written to {} (check it with vouch replay --check)",
                proof.position,
                proof.committed_token,
                proof.replayed_token,
                out.display()
            )))
        }
    }
}

/// `vouch replay` of an audit's mismatch proof: both hardware-signed answers are replayed;
/// the one that is not what the engine computes is the liar (its fraud proof is written).
fn replay_mismatch(
    anchors: &TrustAnchors,
    policy: &ClientPolicy,
    path: &Path,
    m: &crate::audit::MismatchProof,
    model: &mut vouch_enclave::model::Model,
    now: u64,
) -> Result<(), CliError> {
    use crate::replay::{replay_receipt, ReplayVerdict};
    let mut liars = Vec::new();
    for (name, file) in [("primary", &m.primary), ("audit", &m.audit)] {
        let loaded = file.clone().load().map_err(CliError::MalformedReceipt)?;
        match replay_receipt(anchors, policy, &loaded, model, now)? {
            ReplayVerdict::Match { tokens, .. } => {
                println!(
                    "{name} answer ({}): MATCH ({tokens} tokens are what this engine computes)",
                    url_of(file)
                );
            }
            ReplayVerdict::Fraud(proof) => {
                let mut out = path.as_os_str().to_owned();
                out.push(format!(".{name}.fraud-proof.json"));
                let out = PathBuf::from(out);
                let body = serde_json::to_vec_pretty(&proof).map_err(|e| CliError::Usage(e.to_string()))?;
                std::fs::write(&out, body).map_err(|source| CliError::Io { path: out.clone(), source })?;
                println!(
                    "{name} answer ({}): MISMATCH at completion token {} (committed {:?}, engine {:?}); fraud proof {}",
                    url_of(file),
                    proof.position,
                    proof.committed_token,
                    proof.replayed_token,
                    out.display()
                );
                liars.push(name);
            }
        }
    }
    if liars.is_empty() {
        return Err(CliError::Usage(
            "both answers replay as MATCH: they are not answers to the same request under one spec".into(),
        ));
    }
    Err(CliError::Fraud(format!(
        "the {} enclave's answer is not what the engine computes",
        liars.join(" and the ")
    )))
}

fn url_of(f: &ReceiptFile) -> &str {
    f.url.as_deref().unwrap_or("?")
}

async fn proxy(a: ProxyArgs) -> Result<(), CliError> {
    let client = Arc::new(VouchClient::new(client_config(&a.conn, &a.trust)?)?);
    // Attest before listening: a proxy that cannot verify its enclave must not serve.
    let att = client.attest().await?;
    let auditor = auditor(&a.audit, &a.conn, &a.trust, &att, a.audit_rate).await?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|source| CliError::Io { path: PathBuf::from(&a.listen), source })?;
    let addr =
        listener.local_addr().map_err(|source| CliError::Io { path: PathBuf::from(&a.listen), source })?;
    let v = att.verdict();
    let line = format!(
        "vouch proxy listening on {addr} (enclave {} verified: {} root, {} model {}){}",
        a.conn.url,
        v.root,
        v.product,
        v.model_name.as_deref().unwrap_or("?"),
        if v.simulated { " — SIMULATED, NOT AMD" } else { "" }
    );
    let line = match &auditor {
        Some(_) => format!(
            "{line}; auditing {:.0}% of answers on {}",
            a.audit_rate * 100.0,
            a.audit.audit_url.as_deref().unwrap_or("")
        ),
        None => line,
    };
    // On both streams: scripts wait on stdout, people watch stderr.
    println!("{line}");
    let _ = std::io::stdout().flush();
    eprintln!("{line}");
    tracing::info!(%addr, "vouch proxy listening");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crate::proxy::run(listener, crate::proxy::Upstream { client, auditor }, shutdown).await.map_err(|e| {
        CliError::Io { path: PathBuf::from(&a.listen), source: std::io::Error::other(e.to_string()) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_file_decoding() {
        let raw = vec![7u8; vouch_attestation::report::REPORT_LEN];
        assert_eq!(decode_report_file(&raw), raw);
        assert_eq!(decode_report_file(hex::encode(&raw).as_bytes()), raw);
        assert_eq!(decode_report_file(b"\x00\x01"), vec![0, 1]);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
