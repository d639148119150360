//! The attested HTTPS client: connect, attest, then talk — never the other way round.
//!
//! CLIENT side; everything between here and the enclave (host, hypervisor, network)
//! is the adversary. One TLS 1.3 connection carries `GET /v1/attestation` first; the
//! evidence must verify against AMD's roots (or an explicitly trusted simulated root),
//! satisfy the policy, echo our fresh nonce, and bind the very TLS key this connection
//! presented. Only then is a prompt sent. The attested key is pinned: later
//! connections presenting the same key reuse the attestation (until
//! `max_evidence_age_secs`); a different key is re-attested with a fresh nonce before
//! anything else is sent. Every answer's receipt is verified, tied to the exact
//! request bytes and the received text, and must name the pinned key and model.
//!
//! ```text
//!  TcpStream ─► TLS 1.3 (AcceptAnyServerKey) ─► peer SPKI
//!     ─► GET /v1/attestation?nonce ─► verify_evidence ─► SPKI == claims? ─► pin
//!     ─► POST /v1/chat/completions ─► JSON | SSE ─► receipt ─► check_receipt ─► Verdict
//! ```
//!
//! Every read is bounded in size ([`MAX_BODY_BYTES`], [`MAX_EVIDENCE_BYTES`]) and in
//! time ([`Timeouts`]).

use crate::kds::{hwid_from_chip_id, KdsClient, KdsError};
use crate::policy::ClientPolicy;
use crate::receipts::{check_receipt_verified, decode_receipt_b64, Expected, ReceiptCheckError};
use crate::sse::SseParser;
use crate::tls::{enclave_tls_config, spki_sha256};
use crate::verdict::Verdict;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vouch_attestation::binding::AttestationClaims;
use vouch_attestation::receipt::{
    Evidence, LogprobEntry, Receipt, ReceiptError, ReceiptLeaf, ReportBundle, VerifiedEvidence,
    VerifiedReceipt,
};
use vouch_attestation::{Report, TrustAnchors};

/// Largest response body read from the enclave (chat JSON or a whole SSE stream).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Largest evidence body (the attestation crate refuses anything larger anyway).
pub const MAX_EVIDENCE_BYTES: usize = vouch_attestation::receipt::MAX_ENCODED_BYTES;
/// Idle connections kept for reuse.
const MAX_IDLE_SESSIONS: usize = 8;
/// Chips whose KDS certificates are remembered (one enclave is one chip; a pool a few).
const MAX_COMPLETIONS: usize = 64;

/// What KDS supplied for one key: (VCEK DER, CRL DER), either possibly empty.
type Completion = (Vec<u8>, Vec<u8>);

/// Whose certificates a completion holds: the VCEK is per chip and TCB, the CRL per
/// product and key kind (keyed here by the same chip, so they travel together).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CompletionKey {
    chip_id: [u8; 64],
    reported_tcb: u64,
    vlek: bool,
}

/// Time bounds of each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// The whole attestation exchange (the secure processor takes milliseconds; a slow
    /// host should not hold a client forever).
    pub attestation: Duration,
    /// Until response headers arrive (a non-streamed answer arrives after generation).
    pub response: Duration,
    /// Between two body reads.
    pub read_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            attestation: Duration::from_secs(60),
            response: Duration::from_secs(600),
            read_idle: Duration::from_secs(300),
        }
    }
}

/// Why talking to the enclave failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not `https://host[:port]`.
    #[error("invalid enclave URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// TCP or TLS failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// host:port.
        addr: String,
        /// Detail.
        reason: String,
    },
    /// HTTP framing failed.
    #[error("HTTP error talking to the enclave: {0}")]
    Http(String),
    /// A step took too long.
    #[error("timed out waiting for {what} after {secs} s")]
    Timeout {
        /// Which step.
        what: &'static str,
        /// The bound.
        secs: u64,
    },
    /// A body exceeded its bound.
    #[error("{what} exceeds {limit} bytes")]
    TooLarge {
        /// Which body.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// The enclave answered with an HTTP error (no answer, so nothing to verify).
    #[error("enclave answered HTTP {status}: {message}")]
    Enclave {
        /// HTTP status.
        status: u16,
        /// The error message (OpenAI-style `error.message` when present).
        message: String,
        /// The raw body, for pass-through by the proxy.
        body: Bytes,
    },
    /// The response is not what the protocol says.
    #[error("unexpected response from the enclave: {0}")]
    Protocol(String),
    /// The enclave's evidence names Vouch's simulated root and only AMD is trusted.
    #[error("the enclave's report is not signed by AMD (simulated root); pass --trust-sim-root to accept a simulated enclave for development")]
    SimulatedNotTrusted,
    /// The evidence failed verification (chain, signature, policy, binding, nonce).
    #[error("attestation failed: {0}")]
    Evidence(#[from] ReceiptError),
    /// The evidence binds another TLS key than the one this connection presented
    /// (a man in the middle, or a host relaying someone else's evidence).
    #[error(
        "attestation failed: evidence binds TLS key {attested}, but the connection presented {presented}"
    )]
    TlsKeyMismatch {
        /// Digest in the claims.
        attested: String,
        /// Digest of the connection's certificate.
        presented: String,
    },
    /// The attested model is not one the policy accepts.
    #[error("attestation failed: {0}")]
    ModelRejected(String),
    /// The answer's receipt did not verify.
    #[error("answer NOT verified: {0}")]
    Receipt(#[from] ReceiptCheckError),
    /// The answer carried no receipt.
    #[error("answer NOT verified: the response carries no vouch_receipt")]
    MissingReceipt,
    /// The answer's log checkpoint and one seen before cannot both be in one append-only
    /// log: the enclave identity shows two histories. The proof is portable.
    #[error("answer NOT verified: log {origin} has FORKED — a checkpoint seen before and this answer's cannot both be in one append-only log; equivocation proof written to {} (check it with `vouch verify-proof`)", proof.display())]
    LogFork {
        /// The log.
        origin: String,
        /// The equivocation proof file.
        proof: std::path::PathBuf,
    },
    /// The answer's log checkpoint could not be shown consistent with one seen before,
    /// nor shown to fork from it.
    #[error("answer NOT verified: {0}")]
    LogInconsistent(String),
    /// KDS was needed and failed.
    #[error("cannot complete the evidence from AMD KDS: {0}")]
    Kds(#[from] KdsError),
    /// The answer stream ended before its receipt (the enclave or the path to it went away).
    #[error("the answer stream broke off: {0}")]
    StreamBroken(String),
    /// A resumed answer is not the text already shown: the enclave that took over
    /// regenerated other bytes than the one that broke off.
    #[error("answer NOT verified: the resumed answer differs from the text already shown at byte {at}")]
    ResumeDiverged {
        /// Byte offset of the first difference.
        at: usize,
    },
    /// A choice's log-probabilities, or its place among the choices, are not what its
    /// receipt commits.
    #[error("answer NOT verified: {0}")]
    ChoiceMismatch(String),
}

/// The response's content type ("" when absent or not text): it picks CBOR, JSON or SSE parsing.
fn content_type(headers: &http::HeaderMap) -> String {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// An HTTP-layer error with its whole source chain, so a TLS cause (bad record MAC, a
/// missing close_notify) is not hidden behind hyper's "connection error".
fn http_error(e: &(dyn std::error::Error + 'static)) -> ClientError {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        src = s.source();
    }
    ClientError::Http(msg)
}

impl ClientError {
    /// True when the failure is a verification or policy refusal (exit code 1), as
    /// opposed to I/O, usage or an unavailable enclave (exit code 2).
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            ClientError::SimulatedNotTrusted
                | ClientError::Evidence(_)
                | ClientError::TlsKeyMismatch { .. }
                | ClientError::ModelRejected(_)
                | ClientError::Receipt(_)
                | ClientError::MissingReceipt
                | ClientError::ResumeDiverged { .. }
                | ClientError::ChoiceMismatch(_)
                | ClientError::LogFork { .. }
                | ClientError::LogInconsistent(_)
        )
    }

    /// True when the enclave (or the path to it) went away or could not be reached: the
    /// request may be resent to another enclave. Never true for a refusal, a verification
    /// failure or a request error: those are answers, not outages.
    pub fn is_outage(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Http(_)
            | ClientError::Timeout { .. }
            | ClientError::StreamBroken(_) => true,
            // The host or the enclave says it cannot serve now (5xx).
            ClientError::Enclave { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// How many times one request is resent after an outage before giving up, by default.
pub const MAX_RESUMES: u32 = 3;

/// The pause before the `n`th resend (the host needs a moment to notice a dead enclave).
fn resume_backoff(n: u32) -> Duration {
    Duration::from_millis(200u64 << n.min(4))
}

/// Where the enclave is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal (no brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `https://host[:port][/]`.
    pub fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the enclave is reached over https:// only (TLS terminates inside the enclave)"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        if uri.path_and_query().map(|p| p.as_str()).is_some_and(|p| p != "/" && !p.is_empty()) {
            return Err(bad("give the base URL only, e.g. https://127.0.0.1:8443"));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Endpoint { host, port: uri.port_u16().unwrap_or(443) })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How to reach and judge an enclave.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://host:port` of the enclave (usually through vouch-host).
    pub url: String,
    /// Further enclaves (each attested like the first) to turn to when the current one
    /// goes away mid-answer; tried in order, round robin.
    pub fallback_urls: Vec<String>,
    /// What is acceptable.
    pub policy: ClientPolicy,
    /// Trusted roots: `TrustAnchors::amd()`, plus a simulated root only when asked.
    pub anchors: TrustAnchors,
    /// AMD KDS, for evidence that lacks its VCEK or a required CRL (None: offline).
    pub kds: Option<KdsClient>,
    /// Time bounds.
    pub timeouts: Timeouts,
    /// How many times a request is resent after an outage (default [`MAX_RESUMES`]).
    pub max_resends: u32,
    /// Where the answer-log checkpoints seen are kept ([`crate::seen`]); `None`: not
    /// kept, so no fork between answers is noticed.
    pub state_dir: Option<std::path::PathBuf>,
}

impl ClientConfig {
    /// A configuration trusting only AMD, with `policy`, KDS reachable unless the
    /// policy says offline.
    pub fn new(url: &str, policy: ClientPolicy) -> ClientConfig {
        ClientConfig {
            url: url.to_owned(),
            fallback_urls: Vec::new(),
            policy,
            anchors: TrustAnchors::amd(),
            kds: None,
            timeouts: Timeouts::default(),
            max_resends: MAX_RESUMES,
            state_dir: None,
        }
    }
}

/// A verified attestation: the pinned TLS key and what the evidence said.
#[derive(Clone, Debug)]
pub struct Attestation {
    verdict: Verdict,
    tls_spki_sha256: [u8; 32],
    claims: AttestationClaims,
    chip_id: [u8; 64],
    url: String,
    verified_at: Instant,
}

impl Attestation {
    /// The human/JSON verdict.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }
    /// The pinned key digest.
    pub fn tls_spki_sha256(&self) -> &[u8; 32] {
        &self.tls_spki_sha256
    }
    /// The attested default model's digest (the model a request naming none gets).
    pub fn model_sha256(&self) -> &[u8] {
        &self.claims.model_sha256
    }
    /// The attested default model's name.
    pub fn model_name(&self) -> &str {
        &self.claims.model_name
    }
    /// Every attested model as (name, digest), the default first.
    pub fn models(&self) -> Vec<(&str, &[u8])> {
        self.claims.served()
    }
    /// The attested model a request naming `requested` is answered by, as (name,
    /// digest); `None`: the enclave attests no model of that name.
    pub fn model_for(&self, requested: Option<&str>) -> Option<(&str, &[u8])> {
        self.claims.model_for(requested)
    }
    /// The chip the report comes from (CHIP_ID).
    pub fn chip_id(&self) -> &[u8; 64] {
        &self.chip_id
    }
    /// The URL the attested enclave was reached at.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// One attested HTTP/1.1 connection.
struct Session {
    send: SendRequest<Full<Bytes>>,
    attestation: Arc<Attestation>,
}

/// A chat request (OpenAI subset). Serialised once; those exact bytes are sent and
/// checked against the receipt.
#[derive(Clone, Debug, Serialize)]
pub struct ChatRequest {
    /// Model name; `None` uses the attested model's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Conversation.
    pub messages: Vec<ChatMessage>,
    /// Token budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0: greedy, the default).
    pub temperature: f64,
    /// Sampling seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stream deltas as server-sent events.
    pub stream: bool,
}

/// One chat message.
#[derive(Clone, Debug, Serialize)]
pub struct ChatMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    /// Text.
    pub content: String,
}

impl ChatRequest {
    /// A single user prompt, greedy, streamed.
    pub fn prompt(text: &str) -> ChatRequest {
        ChatRequest {
            model: None,
            messages: vec![ChatMessage { role: "user".into(), content: text.to_owned() }],
            max_tokens: None,
            temperature: 0.0,
            seed: None,
            top_p: None,
            stream: true,
        }
    }
}

/// A verified answer.
#[derive(Clone, Debug)]
pub struct ChatOutcome {
    /// The assistant text (all deltas concatenated when streamed).
    pub text: String,
    /// The finish reason the enclave reported.
    pub finish_reason: Option<String>,
    /// The response JSON (non-streamed) or the final chunk (streamed), as received.
    pub response: serde_json::Value,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// `vouch_receipt` as received (base64).
    pub receipt_b64: String,
    /// The request body bytes exactly as sent.
    pub request_body: Bytes,
    /// The verdict of the receipt (exchange checked, key and model matched).
    pub verdict: Verdict,
    /// The verified receipt's leaf (what was committed: parameters, seed, replay spec).
    pub leaf: ReceiptLeaf,
    /// The chip whose report signed the receipt (CHIP_ID).
    pub chip_id: [u8; 64],
    /// The completion token ids the enclave sent (`vouch_completion_tokens`), if any.
    pub completion_tokens: Option<Vec<u32>>,
    /// How many times the request was resent after an outage before this answer.
    pub resumes: u32,
    /// Where the answering enclave was reached.
    pub url: String,
    /// The API the request went to (an audit re-asks the same one).
    pub api: GenerationApi,
}

impl ChatOutcome {
    /// The file `--receipt-out` writes: everything `vouch verify` and `vouch replay` need.
    pub fn receipt_file(&self) -> crate::receipts::ReceiptFile {
        crate::receipts::ReceiptFile::new(
            &self.receipt_b64,
            &self.request_body,
            &self.text,
            Some(&self.url),
            self.completion_tokens.clone(),
        )
    }
}

/// The Vouch client. Cheap to share behind an `Arc`; connections are pooled.
pub struct VouchClient {
    cfg: ClientConfig,
    completions: Mutex<HashMap<CompletionKey, Completion>>,
    /// The configured enclaves: `url` first, then the fallbacks.
    endpoints: Vec<(String, Endpoint)>,
    /// Index into `endpoints` of the one in use.
    current: std::sync::atomic::AtomicUsize,
    tls: Arc<rustls::ClientConfig>,
    pinned: Mutex<Option<Arc<Attestation>>>,
    idle: Mutex<Vec<Session>>,
    seen: Option<crate::seen::SeenLogs>,
}

impl std::fmt::Debug for VouchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VouchClient").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn timed<T>(
    d: Duration,
    what: &'static str,
    f: impl std::future::Future<Output = T>,
) -> Result<T, ClientError> {
    tokio::time::timeout(d, f).await.map_err(|_| ClientError::Timeout { what, secs: d.as_secs() })
}

/// Reads a whole body with a size bound and an idle timeout.
async fn read_body(
    body: &mut Incoming,
    limit: usize,
    idle: Duration,
    what: &'static str,
) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    while let Some(frame) = timed(idle, what, body.frame()).await? {
        let frame = frame.map_err(|e| http_error(&e))?;
        if let Some(d) = frame.data_ref() {
            if out.len() + d.len() > limit {
                return Err(ClientError::TooLarge { what, limit });
            }
            out.extend_from_slice(d);
        }
    }
    Ok(out)
}

/// The `error.message` of an OpenAI-style error body, else the body text.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned())
}

impl VouchClient {
    /// A client for `cfg` (no connection is made yet).
    pub fn new(cfg: ClientConfig) -> Result<VouchClient, ClientError> {
        let endpoints = std::iter::once(&cfg.url)
            .chain(&cfg.fallback_urls)
            .map(|u| Endpoint::parse(u).map(|e| (u.clone(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = enclave_tls_config()
            .map_err(|e| ClientError::Connect { addr: endpoints[0].1.authority(), reason: e.to_string() })?;
        let seen = match &cfg.state_dir {
            Some(dir) => Some(crate::seen::SeenLogs::open(dir).map_err(ClientError::LogInconsistent)?),
            None => None,
        };
        Ok(VouchClient {
            seen,
            cfg,
            endpoints,
            current: std::sync::atomic::AtomicUsize::new(0),
            tls,
            completions: Mutex::new(HashMap::new()),
            pinned: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The current pinned attestation, if any.
    pub fn attestation(&self) -> Option<Arc<Attestation>> {
        self.pinned.lock().ok().and_then(|p| p.clone())
    }

    /// The enclave in use: its URL and endpoint.
    fn endpoint(&self) -> &(String, Endpoint) {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()]
    }

    /// After an outage: the next configured enclave, when there are several (behind one
    /// host, the same URL reaches the host's other enclaves). Connections to the old one
    /// are not reused; a new connection presenting another key is re-attested first.
    fn fail_over(&self) {
        if self.endpoints.len() > 1 {
            self.current.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Opens a TLS connection; returns the HTTP sender and the presented key's digest.
    async fn connect(&self) -> Result<(SendRequest<Full<Bytes>>, [u8; 32]), ClientError> {
        let endpoint = self.endpoint().1.clone();
        let addr = endpoint.authority();
        let err = |reason: String| ClientError::Connect { addr: addr.clone(), reason };
        let host = endpoint.host.clone();
        let port = endpoint.port;
        let (tls, spki) = timed(self.cfg.timeouts.connect, "TLS connection", async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| err(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| err(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| err(format!("TLS: {e}")))?;
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or_else(|| err("the server presented no certificate".into()))?;
            let spki = spki_sha256(cert.as_ref()).map_err(err)?;
            Ok::<_, ClientError>((tls, spki))
        })
        .await??;
        let (send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| http_error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "enclave connection closed");
            }
        });
        Ok((send, spki))
    }

    fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<http::Request<Full<Bytes>>, ClientError> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.endpoint().1.authority())
            .header(http::header::USER_AGENT, concat!("vouch/", env!("CARGO_PKG_VERSION")));
        if let Some(ct) = content_type {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        b.body(Full::new(body)).map_err(|e| http_error(&e))
    }

    /// Fills in what the evidence lacks from KDS: the VCEK when absent, the CRL when
    /// the policy requires one and the enclave sent none. Returns re-encoded evidence
    /// (the claims bytes are carried verbatim, so the binding is unaffected; anything
    /// added is verified against AMD's roots like the rest).
    async fn complete_evidence(&self, body: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let Ok(mut ev) = vouch_attestation::binding::from_cbor::<Evidence>(&body) else {
            return Ok(body); // verify_evidence reports the precise decoding error
        };
        if !self.complete_bundle(&mut ev.bundle).await? {
            return Ok(body);
        }
        Ok(vouch_attestation::binding::to_cbor(&ev))
    }

    /// The same for a receipt: a host without an extended-report certificate table
    /// ships receipts without a VCEK, and a `require_crl` policy needs the CRL too.
    /// The completed receipt is what the client verifies and what `--receipt-out`
    /// saves, so it verifies later offline. Leaf, proof and batch claims travel
    /// verbatim; only certificates are added. `None`: nothing was missing.
    async fn complete_receipt(&self, cbor: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let Ok(mut r) = vouch_attestation::binding::from_cbor::<Receipt>(cbor) else {
            return Ok(None); // the verifier reports the precise decoding error
        };
        if !self.complete_bundle(&mut r.bundle).await? {
            return Ok(None);
        }
        Ok(Some(vouch_attestation::binding::to_cbor(&r)))
    }

    /// Adds the VCEK and CRL a bundle lacks (see [`Self::complete_evidence`]); returns
    /// whether anything was added. What attestation fetched is remembered, keyed by
    /// chip, TCB and key kind, so the receipts of that enclave reuse it.
    async fn complete_bundle(&self, bundle: &mut ReportBundle) -> Result<bool, ClientError> {
        let needs_vcek = bundle.leaf_cert.is_empty();
        let needs_crl = self.cfg.policy.snp.require_crl && bundle.crl.is_empty();
        if !needs_vcek && !needs_crl {
            return Ok(false);
        }
        let report = Report::parse(&bundle.report).map_err(|e| ClientError::Evidence(e.into()))?;
        // The product: CPUID (v3+); a v2 report without certificates cannot say.
        let product =
            report.cpuid_product().map_err(|e| ClientError::Evidence(e.into()))?.ok_or_else(|| {
                ClientError::Protocol("v2 report without a VCEK: cannot tell the product to fetch one".into())
            })?;
        let signer = report.signing_key();
        let key = CompletionKey {
            chip_id: report.chip_id(),
            reported_tcb: report.reported_tcb_raw(),
            vlek: signer == vouch_attestation::SigningKey::Vlek,
        };
        let memo = self.completions.lock().ok().and_then(|m| m.get(&key).cloned());
        let (mut leaf, mut crl) = memo.unwrap_or_default();
        let kds = match &self.cfg.kds {
            Some(k) if !self.cfg.policy.offline => k.clone(),
            _ => KdsClient::offline(self.cfg.policy.kds_cache_dir.clone().map(crate::kds::KdsCache::new)),
        };
        if needs_vcek && leaf.is_empty() {
            if signer == vouch_attestation::SigningKey::Vlek {
                return Err(KdsError::VlekNotServed.into());
            }
            let tcb = report.tcb(report.reported_tcb_raw(), product);
            let chip = report.chip_id();
            leaf = kds.vcek(product, hwid_from_chip_id(product, &chip), &tcb).await?;
        }
        if needs_crl && crl.is_empty() {
            crl = kds.current_crl(product, signer, now_unix()).await?;
        }
        if needs_vcek {
            bundle.leaf_cert = leaf.clone();
        }
        if needs_crl {
            bundle.crl = crl.clone();
        }
        if let Ok(mut m) = self.completions.lock() {
            if m.len() >= MAX_COMPLETIONS {
                m.clear();
            }
            m.insert(key, (leaf, crl));
        }
        Ok(true)
    }

    /// Runs the attestation exchange on a fresh connection's sender.
    async fn attest_on(
        &self,
        send: &mut SendRequest<Full<Bytes>>,
        spki: [u8; 32],
    ) -> Result<Attestation, ClientError> {
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| ClientError::Protocol("no randomness for the nonce".into()))?;
        let path = format!("/v1/attestation?nonce={}", hex::encode(nonce));
        let req = self.request(http::Method::GET, &path, Bytes::new(), None)?;
        let t = self.cfg.timeouts;
        let body = timed(t.attestation, "attestation evidence", async {
            send.ready().await.map_err(|e| http_error(&e))?;
            let resp = send.send_request(req).await.map_err(|e| http_error(&e))?;
            let status = resp.status();
            let ct = content_type(resp.headers());
            let mut body = resp.into_body();
            let bytes = read_body(&mut body, MAX_EVIDENCE_BYTES, t.read_idle, "attestation evidence").await?;
            if !status.is_success() {
                return Err(ClientError::Enclave {
                    status: status.as_u16(),
                    message: error_message(&bytes),
                    body: bytes.into(),
                });
            }
            if !ct.starts_with("application/cbor") {
                return Err(ClientError::Protocol(format!(
                    "evidence content-type is {ct:?}, expected application/cbor"
                )));
            }
            Ok(bytes)
        })
        .await??;
        let body = self.complete_evidence(body).await?;
        let verified = self.verify_evidence_bytes(&body, &nonce)?;
        let claims = verified.claims();
        if claims.tls_spki_sha256[..] != spki[..] {
            return Err(ClientError::TlsKeyMismatch {
                attested: hex::encode(&claims.tls_spki_sha256),
                presented: hex::encode(spki),
            });
        }
        self.cfg.policy.check_served_models(claims.served()).map_err(ClientError::ModelRejected)?;
        Ok(Attestation {
            verdict: Verdict::from_evidence(&verified, &self.cfg.policy.snp),
            tls_spki_sha256: spki,
            claims: claims.clone(),
            chip_id: verified.report().report().chip_id(),
            url: self.endpoint().0.clone(),
            verified_at: Instant::now(),
        })
    }

    fn verify_evidence_bytes(&self, body: &[u8], nonce: &[u8; 32]) -> Result<VerifiedEvidence, ClientError> {
        match vouch_attestation::receipt::verify_evidence(
            &self.cfg.anchors,
            body,
            nonce,
            &self.cfg.policy.snp,
            now_unix(),
        ) {
            Ok(v) => Ok(v),
            Err(ReceiptError::SimulatedNotTrusted) => Err(ClientError::SimulatedNotTrusted),
            Err(e) => Err(ClientError::Evidence(e)),
        }
    }

    fn fresh(&self, a: &Attestation) -> bool {
        a.verified_at.elapsed() < Duration::from_secs(self.cfg.policy.max_evidence_age_secs)
    }

    /// A connection whose TLS key is attested: reused, or new (attested on the spot
    /// unless it presents the pinned key within the reuse window).
    async fn session(&self) -> Result<Session, ClientError> {
        let pinned = self.attestation();
        if let Some(p) = &pinned {
            if self.fresh(p) {
                let mut idle =
                    self.idle.lock().map_err(|_| ClientError::Protocol("session pool poisoned".into()))?;
                while let Some(s) = idle.pop() {
                    if !s.send.is_closed() && Arc::ptr_eq(&s.attestation, p) {
                        return Ok(s);
                    }
                }
            }
        }
        let (mut send, spki) = self.connect().await?;
        if let Some(p) = pinned.filter(|p| self.fresh(p)) {
            if p.tls_spki_sha256 == spki {
                return Ok(Session { send, attestation: p });
            }
            tracing::warn!(
                pinned = %hex::encode(p.tls_spki_sha256),
                presented = %hex::encode(spki),
                "enclave TLS key changed; re-attesting before sending anything"
            );
        }
        let a = Arc::new(self.attest_on(&mut send, spki).await?);
        self.pin(a.clone());
        Ok(Session { send, attestation: a })
    }

    fn pin(&self, a: Arc<Attestation>) {
        if let Ok(mut p) = self.pinned.lock() {
            *p = Some(a);
        }
        // Connections attested under an older pin are not reused.
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn release(&self, s: Session) {
        if s.send.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE_SESSIONS {
                idle.push(s);
            }
        }
    }

    /// Attests the enclave now, with a fresh nonce on a new connection, and pins its key.
    pub async fn attest(&self) -> Result<Arc<Attestation>, ClientError> {
        let (mut send, spki) = self.connect().await?;
        let a = Arc::new(self.attest_on(&mut send, spki).await?);
        self.pin(a.clone());
        self.release(Session { send, attestation: a.clone() });
        Ok(a)
    }

    /// `GET /v1/models` from the attested enclave (the list is not receipted; it comes
    /// over the attested connection).
    pub async fn models(&self) -> Result<(serde_json::Value, Arc<Attestation>), ClientError> {
        let mut s = self.session().await?;
        let req = self.request(http::Method::GET, "/v1/models", Bytes::new(), None)?;
        let t = self.cfg.timeouts;
        s.send.ready().await.map_err(|e| http_error(&e))?;
        let resp =
            timed(t.response, "model list", s.send.send_request(req)).await?.map_err(|e| http_error(&e))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let bytes = read_body(&mut body, MAX_BODY_BYTES, t.read_idle, "model list").await?;
        if !status.is_success() {
            return Err(ClientError::Enclave {
                status: status.as_u16(),
                message: error_message(&bytes),
                body: bytes.into(),
            });
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("model list: {e}")))?;
        let a = s.attestation.clone();
        check_model_list(&v, &a)?;
        self.release(s);
        Ok((v, a))
    }

    /// Sends a chat request built from `req` and verifies the answer. `on_delta` sees
    /// each streamed piece of text as it arrives — UNVERIFIED until this returns `Ok`.
    /// An outage mid-answer is resumed as in [`Self::chat_raw`]: `on_delta` never sees a
    /// piece of text twice.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        on_delta: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ChatOutcome, ClientError> {
        let mut req = req.clone();
        if req.model.is_none() {
            let name = match self.attestation() {
                Some(a) => a.model_name().to_owned(),
                None => self.attest().await?.model_name().to_owned(),
            };
            req.model = Some(name);
        }
        let body = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let out = self
            .chat_raw(Bytes::from(body), &mut |chunk: &serde_json::Value| {
                if let Some(d) = delta_text(chunk) {
                    on_delta(d);
                }
            })
            .await?;
        // The final chunk may carry text too; it was held back until its receipt verified.
        if out.streamed {
            if let Some(d) = delta_text(&out.response).filter(|d| !d.is_empty()) {
                on_delta(d);
            }
        }
        Ok(out)
    }

    /// Sends `body` (an OpenAI chat request, bytes forwarded unchanged) and verifies
    /// the answer. For streamed answers, `on_chunk` sees every chunk except the final
    /// one (returned in [`ChatOutcome::response`] once its receipt verified).
    ///
    /// When the enclave goes away before the answer is complete (connection lost, stream
    /// cut, host without a healthy enclave), the same bytes are resent — to the next
    /// configured URL, or through the same host to another of its enclaves — after
    /// attesting whichever enclave answers, up to [`MAX_RESUMES`] times. A stream resumes
    /// where it broke: the regenerated text must begin with exactly what `on_chunk`
    /// already saw (else [`ClientError::ResumeDiverged`]); only the rest is passed on, and
    /// the receipt, from the enclave that finished, covers the whole answer. A sampled
    /// request without a seed is resent with the seed the first enclave drew (it names it
    /// in its first chunk; `vouch-seed`), so the regenerated bytes are the same.
    pub async fn chat_raw(
        &self,
        body: Bytes,
        on_chunk: &mut (dyn FnMut(&serde_json::Value) + Send),
    ) -> Result<ChatOutcome, ClientError> {
        self.chat_raw_seeded(body, None, on_chunk).await
    }

    /// [`Self::chat_raw`] with a seed handed over beside the body (`vouch-seed`), for a
    /// sampled request whose body gives none: an audit re-asks another enclave with the
    /// seed the first one drew.
    pub async fn chat_raw_seeded(
        &self,
        body: Bytes,
        seed: Option<u64>,
        on_chunk: &mut (dyn FnMut(&serde_json::Value) + Send),
    ) -> Result<ChatOutcome, ClientError> {
        self.generate_raw(GenerationApi::Chat, body, seed, on_chunk).await
    }

    /// `POST /v1/completions` (legacy completions: a raw-text prompt) with `body` forwarded
    /// unchanged, verified and resumed after an outage exactly as [`Self::chat_raw`]: the
    /// receipt against the request and the choice's `text` (streamed: the concatenated
    /// pieces).
    pub async fn completions_raw(
        &self,
        body: Bytes,
        on_chunk: &mut (dyn FnMut(&serde_json::Value) + Send),
    ) -> Result<ChatOutcome, ClientError> {
        self.generate_raw(GenerationApi::Completions, body, None, on_chunk).await
    }

    /// [`Self::chat_raw_seeded`] on any generation API (the Responses API: as
    /// [`Self::responses_raw`], with the seed handed over).
    pub async fn generate_raw(
        &self,
        api: GenerationApi,
        body: Bytes,
        seed: Option<u64>,
        on_chunk: &mut (dyn FnMut(&serde_json::Value) + Send),
    ) -> Result<ChatOutcome, ClientError> {
        if api == GenerationApi::Responses {
            return self.responses_raw_seeded(body, seed, on_chunk).await;
        }
        let mut resume = Resume { api, emitted: String::new(), forwarded: false, resent: false, seed };
        let mut resumes = 0;
        loop {
            let attempt = async {
                let s = self.session().await?;
                self.exchange(s, body.clone(), &mut resume, on_chunk).await
            };
            match attempt.await {
                Ok(mut out) => {
                    out.resumes = resumes;
                    return Ok(out);
                }
                Err(e) if e.is_outage() && resumes < self.cfg.max_resends => {
                    resumes += 1;
                    tracing::warn!(error = %e, resend = resumes, shown_bytes = resume.emitted.len(),
                        "the enclave went away before the answer was complete; resending to another");
                    self.fail_over();
                    resume.resent = true;
                    tokio::time::sleep(resume_backoff(resumes)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn exchange(
        &self,
        mut s: Session,
        body: Bytes,
        resume: &mut Resume,
        on_chunk: &mut (dyn FnMut(&serde_json::Value) + Send),
    ) -> Result<ChatOutcome, ClientError> {
        let t = self.cfg.timeouts;
        let mut req =
            self.request(http::Method::POST, resume.api.path(), body.clone(), Some("application/json"))?;
        if let Some(seed) = resume.seed {
            req.headers_mut().insert(SEED_HEADER, http::HeaderValue::from(seed));
        }
        s.send.ready().await.map_err(|e| http_error(&e))?;
        let resp =
            timed(t.response, "the answer", s.send.send_request(req)).await?.map_err(|e| http_error(&e))?;
        let status = resp.status();
        let ct = content_type(resp.headers());
        let mut incoming = resp.into_body();
        if !status.is_success() {
            let bytes = read_body(&mut incoming, MAX_BODY_BYTES, t.read_idle, "error body").await?;
            return Err(ClientError::Enclave {
                status: status.as_u16(),
                message: error_message(&bytes),
                body: bytes.into(),
            });
        }
        let att = s.attestation.clone();
        let (text, finish_reason, response, receipt_b64, streamed, logprobs, calls) = if ct
            .starts_with("text/event-stream")
        {
            let (text, finish, last, logprobs, calls) =
                read_stream(&mut incoming, t.read_idle, resume, on_chunk).await?;
            let receipt = last.get("vouch_receipt").and_then(|r| r.as_str()).map(str::to_owned);
            // Tool calls come whole; their raw text (what the receipt covers) is beside the
            // receipt.
            let text = match last.get("vouch_output").and_then(|o| o.as_str()) {
                Some(raw) if text.is_empty() => raw.to_owned(),
                Some(_) => {
                    return Err(ClientError::Protocol("a stream with both text and tool calls".into()))
                }
                None => text,
            };
            (text, finish, last, receipt, true, logprobs, calls)
        } else {
            let bytes = read_body(&mut incoming, MAX_BODY_BYTES, t.read_idle, "the answer").await?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("answer is not JSON: {e}")))?;
            let choice = v.pointer("/choices/0").cloned().unwrap_or_default();
            let text = choice_output(resume.api, &choice, 0)?;
            let finish = v.pointer("/choices/0/finish_reason").and_then(|f| f.as_str()).map(str::to_owned);
            let receipt = v.get("vouch_receipt").and_then(|r| r.as_str()).map(str::to_owned);
            let logprobs = v.pointer("/choices/0/logprobs").cloned().unwrap_or(serde_json::Value::Null);
            let calls = choice.pointer("/message/tool_calls").cloned().unwrap_or_default();
            (text, finish, v, receipt, false, logprobs, calls)
        };
        self.release(s);
        let receipt_b64 = receipt_b64.ok_or(ClientError::MissingReceipt)?;
        let (receipt_b64, verdict, verified) = self.verify_answer(&receipt_b64, &body, &text, &att).await?;
        check_choice(verified.leaf(), 0, &logprobs)?;
        check_tool_calls(&text, &calls, 0)?;
        if !streamed {
            self.check_other_choices(resume.api, &response, &body, &att, verified.leaf()).await?;
        }
        let completion_tokens =
            response.get("vouch_completion_tokens").and_then(|t| serde_json::from_value(t.clone()).ok());
        Ok(ChatOutcome {
            text,
            finish_reason,
            response,
            streamed,
            receipt_b64,
            request_body: body,
            verdict,
            leaf: verified.leaf().clone(),
            chip_id: verified.report().report().chip_id(),
            completion_tokens,
            resumes: 0,
            url: att.url.clone(),
            api: resume.api,
        })
    }
}

/// Checks that every model `/v1/models` lists is one the attestation binds, under the
/// same digest (the list comes over the attested connection; this catches an enclave
/// whose list and claims disagree).
fn check_model_list(list: &serde_json::Value, att: &Attestation) -> Result<(), ClientError> {
    let bad = |m: String| ClientError::Protocol(format!("model list: {m}"));
    let data = list.get("data").and_then(|d| d.as_array()).ok_or_else(|| bad("no data array".into()))?;
    for m in data {
        let id = m.get("id").and_then(|i| i.as_str()).ok_or_else(|| bad("a model has no id".into()))?;
        let listed = m.get("vouch_model_sha256").and_then(|d| d.as_str());
        match att.model_for(Some(id)) {
            Some((_, digest)) if listed == Some(hex::encode(digest).as_str()) => {}
            Some(_) => {
                return Err(bad(format!(
                    "model {id:?} is listed with a digest the attestation does not bind"
                )))
            }
            None => return Err(bad(format!("model {id:?} is listed but not attested"))),
        }
    }
    Ok(())
}

/// The `model` a JSON request body names, if any (a body that is not JSON names none:
/// the enclave refuses it before any model answers).
fn requested_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<String>,
    }
    serde_json::from_slice::<Named>(body).ok()?.model
}

impl VouchClient {
    /// Verifies one answer's receipt (`vouch_receipt` as received, base64), completed from
    /// AMD KDS where it needs to be, against the request `body`, the answer's `output` and
    /// the attested TLS key and model. What the client verified is what it keeps: the
    /// completed receipt (base64) is returned with the verdict.
    async fn verify_answer(
        &self,
        receipt_b64: &str,
        body: &[u8],
        output: &str,
        att: &Attestation,
    ) -> Result<(String, Verdict, VerifiedReceipt), ClientError> {
        let received = decode_receipt_b64(receipt_b64)?;
        let (receipt, receipt_b64) = match self.complete_receipt(&received).await? {
            None => (received, receipt_b64.to_owned()),
            Some(completed) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(&completed);
                (completed, b64)
            }
        };
        // The model that must have answered: the one the request names, as attested.
        let requested = requested_model(body);
        let (model_name, model_sha256) = att.model_for(requested.as_deref()).ok_or_else(|| {
            ClientError::ModelRejected(format!(
                "the request names model {:?}, which the attested enclave does not serve (it serves {:?})",
                requested.as_deref().unwrap_or_default(),
                att.models().iter().map(|(n, _)| *n).collect::<Vec<_>>()
            ))
        })?;
        let (mut verdict, verified) = check_receipt_verified(
            &self.cfg.anchors,
            &self.cfg.policy,
            &receipt,
            Some((body, output)),
            Some(Expected {
                tls_spki_sha256: &att.tls_spki_sha256,
                model_sha256,
                model_name: Some(model_name),
                log: att.claims.log.as_ref(),
            }),
            now_unix(),
        )?;
        verdict.model_name = Some(model_name.to_owned());
        if let Some(w) = self.check_log_growth(&verified).await? {
            verdict.warnings.push(w);
        }
        Ok((receipt_b64, verdict, verified))
    }

    /// Holds the answer's log checkpoint against the ones seen before: consistent growth
    /// is remembered, a fork is refused with a portable proof. When the enclave goes away
    /// before it can prove consistency (an outage, e.g. a drain after this very answer),
    /// the answer stands with a warning and nothing is remembered: the next answer is held
    /// to the same earlier checkpoint, so a fork is caught then.
    async fn check_log_growth(&self, verified: &VerifiedReceipt) -> Result<Option<String>, ClientError> {
        let (Some(seen), Some(cp)) = (&self.seen, verified.checkpoint()) else {
            return Ok(None);
        };
        let fork = |proof| ClientError::LogFork { origin: cp.checkpoint.origin.clone(), proof };
        match seen.classify(cp).map_err(ClientError::LogInconsistent)? {
            crate::seen::Growth::New => Ok(None),
            crate::seen::Growth::Fork(path) => Err(fork(path)),
            crate::seen::Growth::NeedsProof { first, second, seen: before } => {
                let bytes = match self.log_get(&format!("/log/proof/{first}/{second}")).await {
                    Ok(b) => b,
                    // Only the connection failing: an enclave that answers and refuses
                    // (any status) is held to its refusal.
                    Err(e @ (ClientError::Connect { .. } | ClientError::Http(_) | ClientError::Timeout { .. })) => {
                        return Ok(Some(format!(
                            "log {}: consistency with the checkpoint of {} entries seen before is NOT yet checked (the enclave went away: {e}); the next answer is held to it",
                            cp.checkpoint.origin, before.size
                        )))
                    }
                    Err(e) => {
                        return Err(ClientError::LogInconsistent(format!(
                            "log {}: no consistency proof from {first} to {second} entries (a fork or a rollback?): {e}",
                            cp.checkpoint.origin
                        )))
                    }
                };
                let proof: vouch_attestation::tlog::ConsistencyProof =
                    vouch_attestation::binding::from_cbor(&bytes).map_err(ClientError::Protocol)?;
                match seen.settle(cp, &before, &proof).map_err(ClientError::LogInconsistent)? {
                    None => Ok(None),
                    Some(path) => Err(fork(path)),
                }
            }
        }
    }

    /// `GET` of a `/log/` resource from the attested enclave, bounded in size and time.
    pub async fn log_get(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let mut s = self.session().await?;
        let req = self.request(http::Method::GET, path, Bytes::new(), None)?;
        let t = self.cfg.timeouts;
        s.send.ready().await.map_err(|e| http_error(&e))?;
        let resp =
            timed(t.response, "log read", s.send.send_request(req)).await?.map_err(|e| http_error(&e))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let bytes = read_body(&mut body, MAX_BODY_BYTES, t.read_idle, "log read").await?;
        self.release(s);
        if !status.is_success() {
            return Err(ClientError::Enclave {
                status: status.as_u16(),
                message: error_message(&bytes),
                body: bytes.into(),
            });
        }
        Ok(bytes.to_vec())
    }

    /// `POST /v1/responses` (the Responses API) with `body` forwarded unchanged, verified
    /// like a chat answer: the receipt against the request and the raw output
    /// (`vouch_output`), the output items against that output (the message's text, or the
    /// calls it spells), and, streamed, the text deltas against it too. Streamed events go
    /// to `on_event` except the last (`response.completed` / `.incomplete`), which comes
    /// back as [`ChatOutcome::response`]. Not resent after an outage.
    pub async fn responses_raw(
        &self,
        body: Bytes,
        on_event: &mut (dyn FnMut(&serde_json::Value) + Send),
    ) -> Result<ChatOutcome, ClientError> {
        self.responses_raw_seeded(body, None, on_event).await
    }

    async fn responses_raw_seeded(
        &self,
        body: Bytes,
        seed: Option<u64>,
        on_event: &mut (dyn FnMut(&serde_json::Value) + Send),
    ) -> Result<ChatOutcome, ClientError> {
        let t = self.cfg.timeouts;
        let mut s = self.session().await?;
        let mut req = self.request(
            http::Method::POST,
            GenerationApi::Responses.path(),
            body.clone(),
            Some("application/json"),
        )?;
        if let Some(seed) = seed {
            req.headers_mut().insert(SEED_HEADER, http::HeaderValue::from(seed));
        }
        s.send.ready().await.map_err(|e| http_error(&e))?;
        let resp =
            timed(t.response, "the answer", s.send.send_request(req)).await?.map_err(|e| http_error(&e))?;
        let status = resp.status();
        let ct = content_type(resp.headers());
        let mut incoming = resp.into_body();
        if !status.is_success() {
            let bytes = read_body(&mut incoming, MAX_BODY_BYTES, t.read_idle, "error body").await?;
            return Err(ClientError::Enclave {
                status: status.as_u16(),
                message: error_message(&bytes),
                body: bytes.into(),
            });
        }
        let att = s.attestation.clone();
        let (response, deltas, streamed) = if ct.starts_with("text/event-stream") {
            let (last, deltas) = read_response_events(&mut incoming, t.read_idle, on_event).await?;
            (last, Some(deltas), true)
        } else {
            let bytes = read_body(&mut incoming, MAX_BODY_BYTES, t.read_idle, "the answer").await?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(format!("answer is not JSON: {e}")))?;
            (v, None, false)
        };
        self.release(s);
        let output = response
            .get("vouch_output")
            .and_then(|o| o.as_str())
            .ok_or_else(|| ClientError::Protocol("the response carries no vouch_output".into()))?
            .to_owned();
        let received =
            response.get("vouch_receipt").and_then(|r| r.as_str()).ok_or(ClientError::MissingReceipt)?;
        let (receipt_b64, verdict, verified) = self.verify_answer(received, &body, &output, &att).await?;
        check_choice(verified.leaf(), 0, &serde_json::Value::Null)?;
        // The items must say what the verified output says.
        let items = response.get("output").and_then(|o| o.as_array()).cloned().unwrap_or_default();
        let calls: Vec<serde_json::Value> = items
            .iter()
            .filter(|i| i["type"] == "function_call")
            .map(|i| serde_json::json!({"function": {"name": i["name"], "arguments": i["arguments"]}}))
            .collect();
        let texts: Vec<&str> = items
            .iter()
            .filter(|i| i["type"] == "message")
            .flat_map(|i| i["content"].as_array().into_iter().flatten())
            .filter_map(|c| c["text"].as_str())
            .collect();
        if calls.is_empty() {
            if texts.concat() != output {
                return Err(ClientError::ChoiceMismatch(
                    "the response's message text is not its verified output".into(),
                ));
            }
        } else {
            check_tool_calls(&output, &serde_json::Value::Array(calls), 0)?;
        }
        if let Some(deltas) = deltas {
            if !deltas.is_empty() && deltas != texts.concat() {
                return Err(ClientError::ChoiceMismatch(
                    "the streamed text deltas are not the verified output".into(),
                ));
            }
        }
        let completion_tokens =
            response.get("vouch_completion_tokens").and_then(|t| serde_json::from_value(t.clone()).ok());
        let finish_reason = Some(verified.leaf().finish_reason.clone());
        Ok(ChatOutcome {
            text: output,
            finish_reason,
            response,
            streamed,
            receipt_b64,
            request_body: body,
            verdict,
            leaf: verified.leaf().clone(),
            chip_id: verified.report().report().chip_id(),
            completion_tokens,
            resumes: 0,
            url: att.url.clone(),
            api: GenerationApi::Responses,
        })
    }

    /// With `n` > 1 (a whole response), every other choice carries its own receipt: each
    /// must verify against its own text and be choice `i` of the same `n`.
    async fn check_other_choices(
        &self,
        api: GenerationApi,
        response: &serde_json::Value,
        body: &[u8],
        att: &Attestation,
        first: &ReceiptLeaf,
    ) -> Result<(), ClientError> {
        let choices = response.get("choices").and_then(|c| c.as_array()).map_or(&[][..], Vec::as_slice);
        let n = first.decoding.as_ref().map_or(1, |d| d.n) as usize;
        if choices.len() != n {
            return Err(ClientError::ChoiceMismatch(format!(
                "the receipt commits n = {n}, the response has {} choices",
                choices.len()
            )));
        }
        for (i, c) in choices.iter().enumerate().skip(1) {
            let output = choice_output(api, c, i)?;
            check_tool_calls(&output, &c.pointer("/message/tool_calls").cloned().unwrap_or_default(), i)?;
            let text = output.as_str();
            let b64 = c.get("vouch_receipt").and_then(|r| r.as_str()).ok_or(ClientError::MissingReceipt)?;
            let (_, _, verified) = self.verify_answer(b64, body, text, att).await?;
            let logprobs = c.get("logprobs").cloned().unwrap_or(serde_json::Value::Null);
            check_choice(verified.leaf(), i as u32, &logprobs)?;
        }
        Ok(())
    }
}

/// The OpenAI API a generation request goes to: the same verification, in that API's
/// shapes. (The Responses API has its own reader: [`VouchClient::responses_raw`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationApi {
    /// `POST /v1/chat/completions`: `choices[i].message.content`, streamed
    /// `choices[0].delta.content`.
    Chat,
    /// `POST /v1/completions`: `choices[i].text`, streamed too.
    Completions,
    /// `POST /v1/responses`: read by [`VouchClient::responses_raw`] (its events are not
    /// chunks of text; not resent after an outage).
    Responses,
}

impl GenerationApi {
    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            GenerationApi::Chat => "/v1/chat/completions",
            GenerationApi::Completions => "/v1/completions",
            GenerationApi::Responses => "/v1/responses",
        }
    }

    /// Where a streamed chunk carries its piece of text.
    fn delta_pointer(self) -> &'static str {
        match self {
            GenerationApi::Chat => "/choices/0/delta/content",
            GenerationApi::Completions => "/choices/0/text",
            // Never streamed as chunks (see `responses_raw`); no chunk has this.
            GenerationApi::Responses => "/vouch/no-chunks",
        }
    }

    /// A streamed chunk's piece of text.
    pub fn delta_text(self, chunk: &serde_json::Value) -> Option<&str> {
        chunk.pointer(self.delta_pointer()).and_then(|c| c.as_str())
    }

    /// Whether `chunk` (with no text) is the stream's opening chunk: chat's names the
    /// role; completions' is the one empty piece without a finish reason.
    fn is_opening(self, chunk: &serde_json::Value) -> bool {
        match self {
            GenerationApi::Chat => chunk.pointer("/choices/0/delta/role").is_some(),
            GenerationApi::Completions => {
                chunk.pointer("/choices/0/finish_reason").is_some_and(|f| f.is_null())
            }
            GenerationApi::Responses => false,
        }
    }
}

/// A whole response's choice output, as the receipt covers it: the message's text, or,
/// when it carries tool calls instead, their raw text (`vouch_output`); a completion's text.
fn choice_output(api: GenerationApi, choice: &serde_json::Value, i: usize) -> Result<String, ClientError> {
    if api == GenerationApi::Completions {
        return match choice.get("text") {
            Some(serde_json::Value::String(t)) => Ok(t.clone()),
            _ => Err(ClientError::Protocol(format!("answer has no choices[{i}].text"))),
        };
    }
    match choice.pointer("/message/content") {
        Some(serde_json::Value::String(t)) => Ok(t.clone()),
        Some(serde_json::Value::Null) => {
            choice.get("vouch_output").and_then(|o| o.as_str()).map(str::to_owned).ok_or_else(|| {
                ClientError::Protocol(format!("choices[{i}] has neither content nor vouch_output"))
            })
        }
        _ => Err(ClientError::Protocol(format!("answer has no choices[{i}].message.content"))),
    }
}

/// Checks that the `tool_calls` received (`null` when none) are exactly the calls the
/// verified output spells: the same functions, with the same arguments, in order.
fn check_tool_calls(output: &str, calls: &serde_json::Value, i: usize) -> Result<(), ClientError> {
    let received: Vec<(String, String)> = calls
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let get = |p: &str| c.pointer(p).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                    (get("/function/name"), get("/function/arguments"))
                })
                .collect()
        })
        .unwrap_or_default();
    let spelled: Vec<(String, String)> = if received.is_empty() {
        Vec::new()
    } else {
        vouch_enclave::model::tools::parse_tool_calls(output)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.arguments))
            .collect()
    };
    if received != spelled {
        return Err(ClientError::ChoiceMismatch(format!(
            "choice {i}'s tool_calls are not the calls its verified output spells"
        )));
    }
    Ok(())
}

/// Checks that a verified leaf is choice `index` and that `logprobs` (the choice's
/// `logprobs` as received: `null`, or `{"content": [...]}`) is exactly what it commits.
fn check_choice(leaf: &ReceiptLeaf, index: u32, logprobs: &serde_json::Value) -> Result<(), ClientError> {
    let mismatch = |m: String| Err(ClientError::ChoiceMismatch(m));
    let committed_index = leaf.decoding.as_ref().map_or(0, |d| d.choice_index);
    if committed_index != index {
        return mismatch(format!("choice {index} carries the receipt of choice {committed_index}"));
    }
    match (&leaf.logprobs_sha256, logprobs.is_null()) {
        (None, true) => Ok(()),
        (None, false) => {
            mismatch(format!("choice {index} carries log-probabilities its receipt does not commit"))
        }
        (Some(_), true) => {
            mismatch(format!("choice {index}'s receipt commits log-probabilities the response lacks"))
        }
        (Some(digest), false) => {
            let entries = logprob_entries(logprobs)
                .map_err(|e| ClientError::Protocol(format!("choice {index}'s logprobs: {e}")))?;
            if vouch_attestation::receipt::logprobs_sha256(&entries)[..] != digest[..] {
                return mismatch(format!(
                    "choice {index}'s log-probabilities are not the ones its receipt commits"
                ));
            }
            Ok(())
        }
    }
}

/// A response's `logprobs` (`{"content": [{"bytes", "logprob", "top_logprobs": [...]}]}`)
/// as the entries the receipt's digest covers.
pub fn logprob_entries(v: &serde_json::Value) -> Result<Vec<LogprobEntry>, String> {
    fn one(e: &serde_json::Value) -> Result<(Vec<u8>, f64), String> {
        let bytes: Vec<u8> = e
            .get("bytes")
            .and_then(|b| serde_json::from_value(b.clone()).ok())
            .ok_or("an entry without bytes")?;
        let logprob = e.get("logprob").and_then(|l| l.as_f64()).ok_or("an entry without a logprob")?;
        Ok((bytes, logprob))
    }
    let content = v.get("content").and_then(|c| c.as_array()).ok_or("no content list")?;
    content
        .iter()
        .map(|e| {
            let (bytes, logprob) = one(e)?;
            let top = match e.get("top_logprobs").and_then(|t| t.as_array()) {
                Some(t) => t.iter().map(one).collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            Ok(LogprobEntry { bytes, logprob, top })
        })
        .collect()
}

/// The `vouch-seed` request header (see the enclave's API): a seed handed over for a
/// sampled request whose body gives none.
pub const SEED_HEADER: &str = "vouch-seed";

/// What survives from one attempt at an answer to the next.
struct Resume {
    /// The API the answer comes from (where chunks carry their text).
    api: GenerationApi,
    /// The text already passed on (streamed deltas, in order).
    emitted: String,
    /// Whether any chunk was passed on (the opening role chunk counts).
    forwarded: bool,
    /// Whether this is a resent attempt.
    resent: bool,
    /// The seed to hand over (`vouch-seed`): given, or named by the first enclave.
    seed: Option<u64>,
}

impl Resume {
    /// Takes one streamed chunk whose delta made this attempt's text `text` (delta
    /// included): returns the chunk to pass on — unchanged, trimmed to the part not yet
    /// shown, or `None` when all of it was shown by an earlier attempt.
    fn admit(
        &mut self,
        mut chunk: serde_json::Value,
        text: &str,
        delta: &str,
    ) -> Result<Option<serde_json::Value>, ClientError> {
        if delta.is_empty() {
            // The opening (role) chunk is passed on once, not again by a resent attempt;
            // other chunks without text (a finish reason) are passed on.
            let opening = self.api.is_opening(&chunk);
            let again = opening && self.resent && self.forwarded;
            self.forwarded = true;
            return Ok((!again).then_some(chunk));
        }
        let start = text.len() - delta.len();
        let shown = self.emitted.len();
        if text.len() <= shown {
            // Shown by an earlier attempt: it must be the same bytes.
            if self.emitted.as_bytes().get(start..text.len()) != Some(delta.as_bytes()) {
                return Err(ClientError::ResumeDiverged { at: first_difference(&self.emitted, text) });
            }
            return Ok(None);
        }
        // Every earlier chunk of this attempt matched what was shown, so the text before
        // `start` is what was shown up to there; a chunk straddling the break must agree on
        // its shown part, and only the rest is new.
        let fresh = if start < shown {
            if !text.as_bytes().starts_with(self.emitted.as_bytes()) {
                return Err(ClientError::ResumeDiverged { at: first_difference(&self.emitted, text) });
            }
            let rest = delta.get(shown - start..).ok_or(ClientError::ResumeDiverged { at: shown })?;
            if let Some(c) = chunk.pointer_mut(self.api.delta_pointer()) {
                *c = serde_json::Value::String(rest.to_owned());
            }
            rest
        } else {
            delta
        };
        self.emitted.push_str(fresh);
        self.forwarded = true;
        Ok(Some(chunk))
    }
}

/// The first byte offset at which `a` and `b` differ (the shorter length if one is a
/// prefix of the other).
fn first_difference(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

/// `choices[0].delta.content` of a streamed chat chunk.
pub fn delta_text(chunk: &serde_json::Value) -> Option<&str> {
    GenerationApi::Chat.delta_text(chunk)
}

/// Reads a Responses API event stream: every event but the last goes to `on_event`;
/// returns the last one's `response` (`response.completed` or `.incomplete`) and the
/// concatenated `response.output_text.delta` text.
async fn read_response_events(
    body: &mut Incoming,
    idle: Duration,
    on_event: &mut (dyn FnMut(&serde_json::Value) + Send),
) -> Result<(serde_json::Value, String), ClientError> {
    let mut parser = SseParser::new();
    let mut deltas = String::new();
    let mut total = 0usize;
    loop {
        let Some(frame) = timed(idle, "the next streamed event", body.frame()).await? else {
            return Err(ClientError::StreamBroken("the stream ended before response.completed".into()));
        };
        let frame = frame.map_err(|e| http_error(&e))?;
        let Some(data) = frame.data_ref() else { continue };
        total += data.len();
        if total > MAX_BODY_BYTES {
            return Err(ClientError::TooLarge { what: "the streamed answer", limit: MAX_BODY_BYTES });
        }
        for event in parser.push(data).map_err(ClientError::Protocol)? {
            let v: serde_json::Value = serde_json::from_str(&event)
                .map_err(|e| ClientError::Protocol(format!("event is not JSON: {e}")))?;
            match v["type"].as_str().unwrap_or("") {
                "response.completed" | "response.incomplete" => {
                    let response = v.get("response").cloned().unwrap_or_default();
                    return Ok((response, deltas));
                }
                "error" => {
                    let msg = v["message"].as_str().unwrap_or("error").to_owned();
                    return Err(ClientError::Enclave { status: 500, message: msg, body: Bytes::from(event) });
                }
                "response.output_text.delta" => deltas.push_str(v["delta"].as_str().unwrap_or("")),
                _ => {}
            }
            on_event(&v);
        }
    }
}

/// Reads an SSE chat stream: returns the concatenated text, the finish reason and the
/// final chunk (the one carrying `vouch_receipt`); other chunks go to `on_chunk`, except
/// what an earlier attempt already passed on (see [`Resume::admit`]).
async fn read_stream(
    body: &mut Incoming,
    idle: Duration,
    resume: &mut Resume,
    on_chunk: &mut (dyn FnMut(&serde_json::Value) + Send),
) -> Result<(String, Option<String>, serde_json::Value, serde_json::Value, serde_json::Value), ClientError> {
    let mut parser = SseParser::new();
    // choices[0].delta.tool_calls, concatenated (the enclave sends each call whole).
    let mut calls: Vec<serde_json::Value> = Vec::new();
    // choices[0].logprobs, concatenated over the chunks that carry one (null: none did).
    let mut logprobs = serde_json::Value::Null;
    let mut text = String::new();
    let mut finish = None;
    let mut last: Option<serde_json::Value> = None;
    let mut total = 0usize;
    let mut done = false;
    while !done {
        let Some(frame) = timed(idle, "the next streamed chunk", body.frame()).await? else { break };
        let frame = frame.map_err(|e| http_error(&e))?;
        let Some(data) = frame.data_ref() else { continue };
        total += data.len();
        if total > MAX_BODY_BYTES {
            return Err(ClientError::TooLarge { what: "the streamed answer", limit: MAX_BODY_BYTES });
        }
        for event in parser.push(data).map_err(ClientError::Protocol)? {
            if event.trim() == "[DONE]" {
                done = true;
                break;
            }
            if last.is_some() {
                return Err(ClientError::Protocol("chunk after the receipt-carrying final chunk".into()));
            }
            let v: serde_json::Value = serde_json::from_str(&event)
                .map_err(|e| ClientError::Protocol(format!("chunk is not JSON: {e}")))?;
            if v.get("error").is_some() {
                let msg = v.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or("error").to_owned();
                return Err(ClientError::Enclave { status: 500, message: msg, body: Bytes::from(event) });
            }
            if resume.seed.is_none() {
                resume.seed = v.get("vouch_seed").and_then(|s| s.as_str()).and_then(|s| s.parse().ok());
            }
            let delta = resume.api.delta_text(&v).unwrap_or("").to_owned();
            text.push_str(&delta);
            if let Some(f) = v.pointer("/choices/0/finish_reason").and_then(|f| f.as_str()) {
                finish = Some(f.to_owned());
            }
            if let Some(c) = v.pointer("/choices/0/delta/tool_calls").and_then(|c| c.as_array()) {
                calls.extend(c.iter().cloned());
            }
            if let Some(content) = v.pointer("/choices/0/logprobs/content").and_then(|c| c.as_array()) {
                if logprobs.is_null() {
                    logprobs = serde_json::json!({"content": []});
                }
                if let Some(all) = logprobs["content"].as_array_mut() {
                    all.extend(content.iter().cloned());
                }
            }
            if v.get("vouch_receipt").is_some() {
                last = Some(v);
            } else if let Some(c) = resume.admit(v, &text, &delta)? {
                on_chunk(&c);
            }
        }
    }
    if !done {
        return Err(ClientError::StreamBroken("the stream ended without data: [DONE]".into()));
    }
    if !text.starts_with(&resume.emitted) {
        return Err(ClientError::ResumeDiverged { at: first_difference(&resume.emitted, &text) });
    }
    let last = last.ok_or(ClientError::MissingReceipt)?;
    let calls = if calls.is_empty() { serde_json::Value::Null } else { serde_json::Value::Array(calls) };
    Ok((text, finish, last, logprobs, calls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("https://127.0.0.1:8443").unwrap(),
            Endpoint { host: "127.0.0.1".into(), port: 8443 }
        );
        assert_eq!(Endpoint::parse("https://enclave.example/").unwrap().port, 443);
        assert_eq!(Endpoint::parse("https://[::1]:9").unwrap().authority(), "[::1]:9");
        assert!(Endpoint::parse("http://127.0.0.1:8443").is_err());
        assert!(Endpoint::parse("https://h:1/v1/chat").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }

    fn chunk(delta: &str) -> serde_json::Value {
        if delta.is_empty() {
            return serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]});
        }
        serde_json::json!({"choices": [{"index": 0, "delta": {"content": delta}}]})
    }

    /// Feeds `deltas` as one attempt; returns the deltas passed on.
    fn attempt(r: &mut Resume, deltas: &[&str]) -> Result<Vec<String>, ClientError> {
        let mut text = String::new();
        let mut out = Vec::new();
        for d in deltas {
            text.push_str(d);
            if let Some(c) = r.admit(chunk(d), &text, d)? {
                out.push(delta_text(&c).unwrap_or("").to_owned());
            }
        }
        Ok(out)
    }

    #[test]
    fn a_resumed_stream_passes_on_only_what_was_not_shown() {
        let mut r = Resume {
            api: GenerationApi::Chat,
            emitted: String::new(),
            forwarded: false,
            resent: false,
            seed: None,
        };
        assert_eq!(attempt(&mut r, &["", "The cap", "ital"]).unwrap(), ["", "The cap", "ital"]);
        r.resent = true;
        // Regenerated with other chunk boundaries: the opening chunk and the shown bytes are
        // dropped, the chunk straddling the break is trimmed.
        let passed = attempt(&mut r, &["", "The", " capi", "tal of", " France"]).unwrap();
        assert_eq!(passed, [" of", " France"]);
        assert_eq!(r.emitted, "The capital of France");
        // A second break right at a chunk boundary.
        assert_eq!(attempt(&mut r, &["", "The capital of France", " is"]).unwrap(), [" is"]);
        // A chunk without text that is not the opening one (a finish reason) is passed on.
        let finish = serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let text = r.emitted.clone();
        assert_eq!(r.admit(finish.clone(), &text, "").unwrap(), Some(finish));
    }

    #[test]
    fn a_resumed_stream_that_differs_from_what_was_shown_is_refused() {
        let mut r = Resume {
            api: GenerationApi::Chat,
            emitted: "The capital".into(),
            forwarded: true,
            resent: true,
            seed: None,
        };
        let e = attempt(&mut r, &["", "The cop"]).unwrap_err();
        assert!(matches!(e, ClientError::ResumeDiverged { at: 5 }), "{e}");
        assert!(e.is_verification_failure() && !e.is_outage());
        let mut r = Resume {
            api: GenerationApi::Chat,
            emitted: "The capital".into(),
            forwarded: true,
            resent: true,
            seed: None,
        };
        let e = attempt(&mut r, &["", "The capitol is"]).unwrap_err();
        assert!(matches!(e, ClientError::ResumeDiverged { at: 9 }), "{e}");
    }

    #[test]
    fn only_outages_are_resent() {
        let enclave = |status| ClientError::Enclave { status, message: String::new(), body: Bytes::new() };
        assert!(ClientError::StreamBroken("cut".into()).is_outage());
        assert!(ClientError::Http("reset".into()).is_outage());
        assert!(enclave(503).is_outage());
        assert!(!enclave(400).is_outage() && !enclave(429).is_outage());
        assert!(!ClientError::MissingReceipt.is_outage());
        assert!(!ClientError::SimulatedNotTrusted.is_outage());
    }

    #[test]
    fn request_serialises_openai_fields() {
        let mut r = ChatRequest::prompt("hi");
        r.model = Some("m".into());
        r.max_tokens = Some(8);
        let v: serde_json::Value = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(v["messages"][0]["content"], "hi");
        assert_eq!(v["temperature"], 0.0);
        assert_eq!(v["stream"], true);
        assert!(v.get("seed").is_none());
    }
}
