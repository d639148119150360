//! The OpenAI-compatible HTTP API, served inside attested TLS.
//!
//! Trusted side. Requests arrive already decrypted by the enclave's own TLS; the host
//! never sees them. Every answer carries `vouch_receipt` (base64 CBOR receipt) committing
//! to the request bytes exactly as received, the output text, the sampling parameters and
//! the model digest. Bad input gets an OpenAI-style error and never disturbs other
//! requests; a full model queue answers 429 with Retry-After.

use crate::model::{Engine, GenerateEvent, GenerateRequest, GenerationStats, SamplingParams, TokenLogprob};
use crate::notary::Notary;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
mod completions;
mod responses;

use vouch_attestation::binding::{self, AttestationClaims, ATTESTATION_CLAIMS_VERSION};
use vouch_attestation::receipt::{
    logprobs_sha256, token_ids_sha256, LogprobEntry, ReceiptLeaf, ReplaySpec, FORMAT_VERSION,
    SEED_FROM_CLIENT, SEED_FROM_ENCLAVE, SEED_FROM_REQUEST,
};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Time allowed to receive a whole request body (slow clients are cut off).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub use crate::request::{DEFAULT_MAX_TOKENS, MAX_PROMPT_BYTES, MAX_TOKENS_CAP};
/// The enclave software version bound into evidence.
pub const ENCLAVE_VERSION: &str = concat!("vouch-enclave/", env!("CARGO_PKG_VERSION"));

/// Response body type.
pub type Body = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The served models' engines, the default first.
    pub models: crate::models::Models,
    /// The secure-processor owner.
    pub notary: Notary,
    /// SHA-256 of the TLS SPKI.
    pub tls_spki_sha256: [u8; 32],
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// An OpenAI-style error response.
pub fn error(status: StatusCode, kind: &str, code: &str, message: impl Into<String>) -> Response<Body> {
    let body = json!({"error": {"message": message.into(), "type": kind, "code": code, "param": null}});
    full(status, "application/json", body.to_string())
}

/// [`error`] naming the request field at fault (`error.param`), as OpenAI does.
fn error_with_param(status: StatusCode, code: &str, param: &str, message: String) -> Response<Body> {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "code": code, "param": param}});
    full(status, "application/json", body.to_string())
}

fn json_response(v: &Value) -> Response<Body> {
    full(StatusCode::OK, "application/json", v.to_string())
}

/// Routes one request.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/v1/models") => models(&state),
        (&Method::GET, "/v1/attestation") => attestation(&state, req.uri().query()).await,
        (&Method::POST, "/v1/chat/completions") => chat(state, req, Endpoint::Chat).await,
        (&Method::POST, "/v1/responses") => chat(state, req, Endpoint::Responses).await,
        (&Method::POST, "/v1/completions") => chat(state, req, Endpoint::Completions).await,
        (&Method::GET, p) if p.starts_with("/log/") => log_get(&state, p).await,
        (&Method::GET, "/healthz") => full(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/metrics") => full(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render_all_metrics(&state.models),
        ),
        (
            _,
            "/v1/models"
            | "/v1/attestation"
            | "/v1/chat/completions"
            | "/v1/responses"
            | "/v1/completions"
            | "/metrics",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "method not allowed",
        ),
        _ => error(StatusCode::NOT_FOUND, "invalid_request_error", "not_found", format!("no route {path}")),
    };
    Ok(resp)
}

/// The answer log, read-only (C2SP tlog-tiles layout under `/log/`): `checkpoint` (the
/// latest signed note), `tile/L/N[.p/W]` (hash tiles), and Vouch's own `evidence/SIZE`
/// (CBOR [`vouch_attestation::tlog::CheckpointEvidence`]: the checkpoint at SIZE with its
/// hardware report) and `proof/FIRST/SECOND` (CBOR
/// [`vouch_attestation::tlog::ConsistencyProof`]). Everything served is checkable: the
/// notes are signed by the attested log key, the tiles hash up to signed roots.
async fn log_get(state: &AppState, path: &str) -> Response<Body> {
    enum Got {
        Note(Option<Vec<u8>>),
        Tile(Vec<u8>, bool),
        Cbor(Vec<u8>),
    }
    let rest = path.trim_start_matches("/log/").to_owned();
    let log = std::sync::Arc::clone(state.notary.log());
    let got = tokio::task::spawn_blocking(move || {
        let log =
            log.lock().map_err(|_| crate::answer_log::LogError::Store("the log lock is poisoned".into()))?;
        let num = |s: &str| {
            s.parse::<u64>().map_err(|_| crate::answer_log::LogError::NotFound(format!("bad number {s:?}")))
        };
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["checkpoint"] => Ok(Got::Note(log.latest_note().map(<[u8]>::to_vec))),
            ["evidence", size] => Ok(Got::Cbor(log.evidence(num(size)?)?)),
            ["proof", first, second] => Ok(Got::Cbor(vouch_attestation::binding::to_cbor(
                &log.consistency(num(first)?, num(second)?)?,
            ))),
            ["tile", _, ..] => {
                let tile_path = rest.strip_prefix("tile/").unwrap_or_default();
                Ok(Got::Tile(log.tile(tile_path)?, tile_path.contains(".p/")))
            }
            _ => Err(crate::answer_log::LogError::NotFound(format!("no log resource {rest:?}"))),
        }
    })
    .await;
    let with_cache = |mut r: Response<Body>, cache: &'static str| {
        r.headers_mut().insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static(cache));
        r
    };
    match got {
        Ok(Ok(Got::Note(Some(note)))) => {
            with_cache(full(StatusCode::OK, "text/plain; charset=utf-8", note), "no-cache")
        }
        Ok(Ok(Got::Note(None))) => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "empty_log",
            "the log has no checkpoint yet",
        ),
        Ok(Ok(Got::Tile(bytes, partial))) => with_cache(
            full(StatusCode::OK, "application/octet-stream", bytes),
            if partial { "no-cache" } else { "public, max-age=31536000, immutable" },
        ),
        Ok(Ok(Got::Cbor(bytes))) => {
            with_cache(full(StatusCode::OK, "application/cbor", bytes), "public, max-age=31536000, immutable")
        }
        Ok(Err(crate::answer_log::LogError::NotFound(m))) => {
            error(StatusCode::NOT_FOUND, "invalid_request_error", "not_found", m)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "answer log read failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "log_failed",
                "the answer log could not be read",
            )
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "log_failed", e.to_string()),
    }
}

/// Every served model's [`render_metrics`].
fn render_all_metrics(models: &crate::models::Models) -> String {
    let all: Vec<(&str, crate::model::EngineMetrics)> =
        models.iter().map(|e| (e.model_name(), e.metrics())).collect();
    render_metrics(&all)
}

/// The engines' state in the Prometheus text format, one series per model (label
/// `model`). Served inside attested TLS, so the host (which only forwards bytes) cannot
/// read or alter it; it says how busy the enclave is, never what it computes.
pub fn render_metrics(models: &[(&str, crate::model::EngineMetrics)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    type Value = dyn Fn(&crate::model::EngineMetrics) -> String;
    let mut metric = |name: &str, kind: &str, help: &str, value: &Value| {
        let _ = writeln!(out, "# HELP vouch_engine_{name} {help}\n# TYPE vouch_engine_{name} {kind}");
        for (model, m) in models {
            // Model names are printable (see crate::models); quotes and backslashes escaped.
            let label = model.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "vouch_engine_{name}{{model=\"{label}\"}} {}", value(m));
        }
    };
    metric("max_batch", "gauge", "Most sequences decoded in one forward step.", &|m| m.max_batch.to_string());
    metric("active_sequences", "gauge", "Sequences in the batch now.", &|m| m.active.to_string());
    metric("queued_requests", "gauge", "Requests waiting for a slot or KV memory.", &|m| {
        m.queued.to_string()
    });
    metric("queue_depth", "gauge", "Requests that may wait beyond the batch.", &|m| {
        m.queue_depth.to_string()
    });
    metric("kv_budget_bytes", "gauge", "KV-cache budget.", &|m| m.kv_budget_bytes.to_string());
    metric("kv_reserved_bytes", "gauge", "KV cache reserved by running requests.", &|m| {
        m.kv_reserved_bytes.to_string()
    });
    metric("kv_allocated_bytes", "gauge", "KV cache allocated by running requests.", &|m| {
        m.kv_allocated_bytes.to_string()
    });
    metric("kv_bytes_per_position", "gauge", "KV cache per position of one sequence.", &|m| {
        m.kv_bytes_per_position.to_string()
    });
    metric("steps_total", "counter", "Forward steps run.", &|m| m.steps_total.to_string());
    metric("batched_sequences_total", "counter", "Sum over steps of the sequences in the step.", &|m| {
        m.batched_sequences_total.to_string()
    });
    metric("prompt_tokens_total", "counter", "Prompt tokens fed.", &|m| m.prompt_tokens_total.to_string());
    metric("completion_tokens_total", "counter", "Completion tokens generated.", &|m| {
        m.completion_tokens_total.to_string()
    });
    metric("requests_finished_total", "counter", "Requests finished, failed or cancelled.", &|m| {
        m.requests_finished_total.to_string()
    });
    metric("requests_rejected_total", "counter", "Requests refused as busy (429).", &|m| {
        m.requests_rejected_total.to_string()
    });
    metric(
        "completion_tokens_per_second",
        "gauge",
        "Completion tokens per second over the last 10 s.",
        &|m| format!("{:.3}", m.completion_tokens_per_s),
    );
    out
}

/// `GET /v1/models`: every served model, the default first, with what the attestation
/// binds about it (`vouch_model_sha256` and `vouch_spec`).
fn models(state: &AppState) -> Response<Body> {
    let data: Vec<Value> = state
        .models
        .iter()
        .map(|e| {
            let c = e.claim();
            json!({
                "id": e.model_name(),
                "object": "model",
                "created": 0,
                "owned_by": "vouch",
                "vouch_model_sha256": hex::encode(e.model_digest()),
                "vouch_spec": {
                    "architecture": c.architecture,
                    "tensor_types": c.tensor_types,
                    "engine": c.engine,
                    "tokenizer_sha256": hex::encode(&c.tokenizer_sha256),
                    "chat_template": c.chat_template,
                    "endpoints": if c.chat_template.is_some() {
                        json!(["/v1/chat/completions", "/v1/responses", "/v1/completions"])
                    } else {
                        json!(["/v1/completions"])
                    },
                },
            })
        })
        .collect();
    json_response(&json!({"object": "list", "data": data}))
}

async fn attestation(state: &AppState, query: Option<&str>) -> Response<Body> {
    let nonce = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("nonce="))
        .and_then(|h| hex::decode(h).ok())
        .filter(|n| n.len() == 32);
    let Some(nonce) = nonce else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "bad_nonce",
            "nonce must be 64 hex characters",
        );
    };
    let default = state.models.default_engine();
    let claims = AttestationClaims {
        version: ATTESTATION_CLAIMS_VERSION,
        tls_spki_sha256: state.tls_spki_sha256.to_vec(),
        model_sha256: default.model_digest().to_vec(),
        model_name: default.model_name().to_owned(),
        models: state.models.iter().map(|e| e.claim().clone()).collect(),
        nonce,
        enclave_version: ENCLAVE_VERSION.to_owned(),
        log: Some(state.notary.log_claim().clone()),
    };
    match state.notary.evidence(binding::to_cbor(&claims)).await {
        Ok(ev) => full(StatusCode::OK, "application/cbor", ev),
        Err(e) => {
            tracing::error!(error = %e, "attestation failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "attestation_failed",
                "attestation report unavailable",
            )
        }
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        )
    };
    // A declared length over the limit is refused before any of the body is read: the
    // client (waiting on `Expect: 100-continue`, or still sending) gets the 413 instead of
    // a connection reset racing it. Bodies without a declared length are cut off below.
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "timeout",
            "request body too slow",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, "invalid_request_error", "bad_body", e.to_string())),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn response_id(endpoint: Endpoint) -> String {
    let mut b = [0u8; 12];
    // A failure leaves zeros: the id is informational, uniqueness is best effort.
    let _ = aws_lc_rs::rand::fill(&mut b);
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl-",
        Endpoint::Responses => "resp_",
        Endpoint::Completions => "cmpl-",
    };
    format!("{prefix}{}", hex::encode(b))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The `vouch-seed` header: a seed the client hands over for a sampled request whose body
/// gives none (the one an earlier enclave drew for the same request, to resume its broken
/// stream or audit its answer here). Decimal u64.
pub const SEED_HEADER: &str = "vouch-seed";

/// The `vouch-seed` header's value: `Ok(None)` when absent, `Err(())` when not a number.
fn seed_header(req: &Request<Incoming>) -> Result<Option<u64>, ()> {
    let Some(v) = req.headers().get(SEED_HEADER) else { return Ok(None) };
    v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).map(Some).ok_or(())
}

/// Which OpenAI API a generation request came in on: the same checked request and
/// receipts, in that API's shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses` (the Responses API).
    Responses,
    /// `POST /v1/completions` (legacy completions: a raw-text prompt).
    Completions,
}

async fn chat(state: Arc<AppState>, req: Request<Incoming>, endpoint: Endpoint) -> Response<Body> {
    let Ok(header_seed) = seed_header(&req) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_seed_header",
            format!("the {SEED_HEADER} header must be a decimal integer below 2^64"),
        );
    };
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed = match endpoint {
        Endpoint::Chat => crate::request::parse_chat_request(&body),
        Endpoint::Responses => crate::request::parse_responses_request(&body),
        Endpoint::Completions => crate::request::parse_completions_request(&body),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            return match e.param() {
                Some(param) => error_with_param(StatusCode::BAD_REQUEST, e.code(), param, e.to_string()),
                None => error(StatusCode::BAD_REQUEST, "invalid_request_error", e.code(), e.to_string()),
            }
        }
    };
    let Some(engine) = state.models.select(parsed.model.as_deref()).cloned() else {
        return error_with_param(
            StatusCode::NOT_FOUND,
            "model_not_found",
            "model",
            format!(
                "model {:?} is not served here; this enclave serves {:?}",
                parsed.model.as_deref().unwrap_or_default(),
                state.models.names()
            ),
        );
    };
    let template = match parsed.prompt.is_chat() {
        true => engine.chat_template(),
        false => Some(crate::model::TEXT_TEMPLATE),
    };
    let Some(template) = template else {
        return error_with_param(
            StatusCode::BAD_REQUEST,
            "no_chat_template",
            "messages",
            format!(
                "model {:?} has no chat template this server knows; send raw text to /v1/completions",
                engine.model_name()
            ),
        );
    };
    let mut params = parsed.params.clone();
    if parsed.seed_given && header_seed.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_seed_header",
            format!("the request gives a seed; the {SEED_HEADER} header is only for requests that do not"),
        );
    }
    // A sampled request without a seed gets a fresh one, drawn here and committed in the
    // receipt, so that its answer is both unpredictable and replayable — unless the client
    // hands over the one an earlier enclave drew. At temperature 0 no seed is used.
    let seed_source = if parsed.seed_given || params.temperature == 0.0 {
        SEED_FROM_REQUEST
    } else if let Some(seed) = header_seed {
        params.seed = seed;
        SEED_FROM_CLIENT
    } else {
        let mut b = [0u8; 8];
        if aws_lc_rs::rand::fill(&mut b).is_err() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "rng_failed",
                "no randomness for a seed",
            );
        }
        params.seed = u64::from_le_bytes(b);
        SEED_FROM_ENCLAVE
    };
    let c = &params.controls;
    if c.response_format.is_some() || c.tools.is_some() {
        if let Err(e) = engine.check_output_format(c) {
            let param = if c.response_format.is_some() { "response_format" } else { "tools" };
            return error_with_param(StatusCode::BAD_REQUEST, "invalid_value", param, e.to_string());
        }
    }
    // Choice i of n is its own sequence (batched with the others by the engine), drawing
    // from random stream i of the seed, with its own leaf and receipt.
    let mut choices = Vec::new();
    for i in 0..params.controls.n {
        let mut p = params.clone();
        p.controls.choice_index = i;
        let request = GenerateRequest { prompt: parsed.prompt.clone(), params: p };
        if let Err(e) = request.validate() {
            return error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request", e.to_string());
        }
        match engine.submit(request) {
            Ok(rx) => choices.push(rx),
            Err(busy) => {
                // The choices already submitted are cancelled as their receivers drop.
                let mut r =
                    error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "busy", busy.to_string());
                r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                return r;
            }
        }
    }
    let ctx = Exchange {
        state,
        engine,
        template,
        request_sha256: Sha256::digest(&body).into(),
        params,
        seed_source,
        include_usage: parsed.include_usage,
        id: response_id(endpoint),
        created: unix_now(),
        endpoint,
    };
    if parsed.stream {
        // Streams have one choice (the request parser refuses n > 1 with stream).
        match choices.pop() {
            Some(events) if endpoint == Endpoint::Responses => responses::stream(ctx, events),
            Some(events) if endpoint == Endpoint::Completions => completions::stream(ctx, events),
            Some(events) => stream_response(ctx, events),
            None => error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_request", "no choices"),
        }
    } else {
        whole_response(ctx, choices).await
    }
}

struct Exchange {
    state: Arc<AppState>,
    /// The engine of the model the request selected.
    engine: Engine,
    /// The prompt's template, as the receipt commits it.
    template: &'static str,
    request_sha256: [u8; 32],
    params: SamplingParams,
    seed_source: &'static str,
    /// `stream_options.include_usage`: usage and receipt come in a last chunk of their own,
    /// with no choices, after the chunk that gives the finish reason.
    include_usage: bool,
    id: String,
    created: u64,
    endpoint: Endpoint,
}

impl Exchange {
    /// Whether the model may call tools in this answer.
    fn tools_callable(&self) -> bool {
        self.params.controls.tools.as_ref().is_some_and(crate::model::tools::ToolSpec::callable)
    }

    /// OpenAI's `tool_calls` for choice `choice`'s output, when it may call tools and the
    /// output is calls (ids are the response id's, the choice's and the call's index).
    fn tool_calls(&self, choice: usize, output: &str) -> Option<Value> {
        if !self.tools_callable() {
            return None;
        }
        let calls = crate::model::tools::parse_tool_calls(output)?;
        let id =
            ["chatcmpl-", "resp_", "cmpl-"].iter().find_map(|p| self.id.strip_prefix(p)).unwrap_or(&self.id);
        Some(
            calls
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    json!({"id": format!("call_{id}_{choice}_{k}"), "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect(),
        )
    }

    /// Choice `choice`'s message and finish reason: its text, or its tool calls (finish
    /// `tool_calls`).
    fn message(&self, choice: usize, output: &str, finish: &'static str) -> (Value, &'static str) {
        match self.tool_calls(choice, output) {
            Some(calls) => (json!({"role": "assistant", "content": null, "tool_calls": calls}), "tool_calls"),
            None => (json!({"role": "assistant", "content": output}), finish),
        }
    }

    /// The seed as a decimal string (JSON numbers lose precision above 2^53 in many
    /// clients) when the request did not give it; `None` otherwise.
    fn disclosed_seed(&self) -> Option<String> {
        (self.seed_source != SEED_FROM_REQUEST).then(|| self.params.seed.to_string())
    }

    /// The receipt of choice `choice_index`.
    async fn receipt(
        &self,
        choice_index: u32,
        output: &str,
        finish_reason: &str,
        stats: &GenerationStats,
    ) -> Result<String, String> {
        let mut controls = self.params.controls.clone();
        controls.choice_index = choice_index;
        let id = self.engine.replay_identity();
        // The salt keeps the public log from revealing the request or the answer: never
        // zeros, so no randomness means no receipt.
        let mut salt = [0u8; 32];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| "no randomness for the receipt's salt".to_owned())?;
        let leaf = ReceiptLeaf {
            version: FORMAT_VERSION,
            request_sha256: self.request_sha256.to_vec(),
            output_sha256: Sha256::digest(output.as_bytes()).to_vec(),
            finish_reason: finish_reason.to_owned(),
            temperature: self.params.temperature,
            top_p: self.params.top_p,
            seed: self.params.seed,
            max_tokens: self.params.max_tokens,
            model_sha256: self.engine.model_digest().to_vec(),
            prompt_tokens: stats.prompt_tokens,
            completion_tokens: stats.completion_tokens,
            response_id: self.id.clone(),
            replay: Some(ReplaySpec {
                engine: id.engine.to_owned(),
                sampler: id.sampler.to_owned(),
                seed_source: self.seed_source.to_owned(),
                tokenizer_sha256: id.tokenizer_sha256.to_vec(),
                chat_template: self.template.to_owned(),
                prompt_tokens_sha256: token_ids_sha256(&stats.prompt_token_ids).to_vec(),
                output_tokens_sha256: token_ids_sha256(&stats.completion_token_ids).to_vec(),
                stop_token_ids: id.stop_token_ids.clone(),
            }),
            logprobs_sha256: controls
                .logprobs
                .map(|_| logprobs_sha256(&logprob_entries(&self.engine, &stats.logprobs)).to_vec()),
            decoding: Some(controls.spec()),
            salt: Some(salt.to_vec()),
        };
        let receipt = self
            .state
            .notary
            .receipt(self.engine.model_digest(), binding::to_cbor(&leaf))
            .await
            .map_err(|e| e.to_string())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(receipt))
    }
}

/// The response's `logprobs` of one choice: OpenAI's shape (`content`: token, logprob,
/// bytes, top_logprobs), or `null` when the request did not ask for them.
fn logprobs_json(engine: &Engine, asked: bool, logprobs: &[TokenLogprob]) -> Value {
    if !asked {
        return Value::Null;
    }
    let entry = |bytes: &[u8], logprob: f64| json!({"token": String::from_utf8_lossy(bytes), "logprob": logprob, "bytes": bytes});
    let content: Vec<Value> = logprob_entries(engine, logprobs)
        .iter()
        .map(|e| {
            let mut v = entry(&e.bytes, e.logprob);
            v["top_logprobs"] = e.top.iter().map(|(b, l)| entry(b, *l)).collect();
            v
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// The log-probabilities as the response spells them (token bytes, not ids): what the
/// receipt's digest covers.
fn logprob_entries(engine: &Engine, logprobs: &[TokenLogprob]) -> Vec<LogprobEntry> {
    let bytes = |id: u32| engine.token_bytes(id).to_vec();
    logprobs
        .iter()
        .map(|t| LogprobEntry {
            bytes: bytes(t.id),
            logprob: t.logprob,
            top: t.top.iter().map(|&(id, l)| (bytes(id), l)).collect(),
        })
        .collect()
}

/// One finished choice of a whole (non-streamed) response.
struct Finished {
    text: String,
    finish_reason: &'static str,
    stats: GenerationStats,
    receipt: String,
}

async fn whole_response(ctx: Exchange, choices: Vec<mpsc::Receiver<GenerateEvent>>) -> Response<Body> {
    let mut done = Vec::with_capacity(choices.len());
    // The engine runs every choice at once; their channels hold a whole answer, so they
    // are read one after the other.
    for (i, mut events) in choices.into_iter().enumerate() {
        let mut text = String::new();
        let finished = loop {
            match events.recv().await {
                Some(GenerateEvent::Delta(d)) => text.push_str(&d),
                Some(GenerateEvent::Failed(msg)) => {
                    return error(StatusCode::BAD_REQUEST, "invalid_request_error", "generation_failed", msg)
                }
                Some(GenerateEvent::Done { finish_reason, stats }) => break (finish_reason.as_str(), stats),
                None => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "engine_stopped",
                        "the model engine stopped",
                    )
                }
            }
        };
        let (finish_reason, stats) = finished;
        let receipt = match ctx.receipt(i as u32, &text, finish_reason, &stats).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "receipt failed");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "receipt_failed",
                    "receipt unavailable",
                );
            }
        };
        done.push(Finished { text, finish_reason, stats, receipt });
    }
    let asked_logprobs = ctx.params.controls.logprobs.is_some();
    let several = done.len() > 1;
    let choices: Vec<Value> = done
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (message, finish) = ctx.message(i, &c.text, c.finish_reason);
            let mut v = json!({
                "index": i,
                "message": message,
                "finish_reason": finish,
                "logprobs": logprobs_json(&ctx.engine, asked_logprobs, &c.stats.logprobs),
            });
            if v["message"]["content"].is_null() {
                // The calls' raw text: what the receipt's output digest covers.
                v["vouch_output"] = json!(c.text);
            }
            // With several choices each carries its own receipt; the top-level ones are
            // choice 0's (what a client reading one choice checks).
            if several {
                v["vouch_receipt"] = json!(c.receipt);
                v["vouch_completion_tokens"] = json!(c.stats.completion_token_ids);
            }
            v
        })
        .collect();
    let Some(first) = done.first() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "no_choices", "no choices");
    };
    if ctx.endpoint == Endpoint::Completions {
        return json_response(&completions::response(&ctx, &done));
    }
    if ctx.endpoint == Endpoint::Responses {
        return json_response(&responses::response(
            &ctx,
            &first.text,
            first.finish_reason,
            &first.stats,
            &first.receipt,
        ));
    }
    let completion_tokens: u32 = done.iter().map(|c| c.stats.completion_tokens).sum();
    let prompt_tokens = first.stats.prompt_tokens;
    json_response(&json!({
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.engine.model_name(),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "vouch_receipt": first.receipt,
        "vouch_completion_tokens": first.stats.completion_token_ids,
        "vouch_seed": ctx.disclosed_seed(),
    }))
}

/// A `text/event-stream` response whose body is what arrives on `rx`, until it closes.
fn event_stream(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    r
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn stream_response(ctx: Exchange, mut events: mpsc::Receiver<GenerateEvent>) -> Response<Body> {
    // A small buffer: if the client stops reading, generation pauses, then is cancelled
    // when the connection goes away (the send fails and `events` is dropped).
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let model = ctx.engine.model_name().to_owned();
        let chunk = |delta: Value, finish: Value| {
            json!({
                "id": ctx.id, "object": "chat.completion.chunk", "created": ctx.created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
        };
        // The first chunk names a seed the request did not give: a client whose stream
        // breaks resends it (`vouch-seed`) so that another enclave regenerates the same bytes.
        let mut first = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
        if let Some(seed) = ctx.disclosed_seed() {
            first["vouch_seed"] = json!(seed);
        }
        if tx.send(sse(&first)).await.is_err() {
            return;
        }
        let mut text = String::new();
        // An answer that may call tools is held back while it may still be calls (it
        // begins with "<"): calls are sent whole, as tool_calls, when it ends.
        let mut holding = ctx.tools_callable();
        while let Some(ev) = events.recv().await {
            match ev {
                GenerateEvent::Delta(d) => {
                    text.push_str(&d);
                    if holding {
                        if text.starts_with('<') {
                            continue;
                        }
                        holding = false;
                        if tx.send(sse(&chunk(json!({"content": text}), Value::Null))).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    if tx.send(sse(&chunk(json!({"content": d}), Value::Null))).await.is_err() {
                        return;
                    }
                }
                GenerateEvent::Failed(msg) => {
                    let _ = tx.send(sse(&json!({"error": {"message": msg, "type": "server_error", "code": "generation_failed"}}))).await;
                    return;
                }
                GenerateEvent::Done { finish_reason, stats } => {
                    let mut finish = finish_reason.as_str();
                    let mut output_shown = true;
                    if holding && !text.is_empty() {
                        let delta = match ctx.tool_calls(0, &text) {
                            Some(calls) => {
                                finish = "tool_calls";
                                output_shown = false;
                                let indexed: Vec<Value> = calls
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .enumerate()
                                    .map(|(k, c)| {
                                        let mut c = c.clone();
                                        c["index"] = json!(k);
                                        c
                                    })
                                    .collect();
                                json!({"tool_calls": indexed})
                            }
                            None => json!({"content": text}),
                        };
                        if tx.send(sse(&chunk(delta, Value::Null))).await.is_err() {
                            return;
                        }
                    }
                    let mut last = chunk(json!({}), json!(finish));
                    // The log-probabilities come whole with the choice's finishing chunk.
                    if ctx.params.controls.logprobs.is_some() {
                        last["choices"][0]["logprobs"] = logprobs_json(&ctx.engine, true, &stats.logprobs);
                    }
                    if ctx.include_usage {
                        if tx.send(sse(&last)).await.is_err() {
                            return;
                        }
                        last["choices"] = json!([]);
                    }
                    match ctx.receipt(0, &text, finish_reason.as_str(), &stats).await {
                        Ok(r) => {
                            last["vouch_receipt"] = json!(r);
                            last["vouch_completion_tokens"] = json!(stats.completion_token_ids);
                            if !output_shown {
                                // The calls' raw text: what the receipt's output digest covers.
                                last["vouch_output"] = json!(text);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "receipt failed");
                            let _ = tx.send(sse(&json!({"error": {"message": "receipt unavailable", "type": "server_error", "code": "receipt_failed"}}))).await;
                            return;
                        }
                    }
                    last["usage"] = json!({
                        "prompt_tokens": stats.prompt_tokens,
                        "completion_tokens": stats.completion_tokens,
                        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
                    });
                    let _ = tx.send(sse(&last)).await;
                    let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                    return;
                }
            }
        }
    });
    event_stream(rx)
}
