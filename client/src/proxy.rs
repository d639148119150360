//! `vouch proxy`: a local, plain-HTTP, OpenAI-compatible endpoint that forwards only to
//! an enclave it has verified, and verifies every answer on the way back.
//!
//! CLIENT side: it runs on the user's machine (loopback), so unmodified OpenAI SDKs get
//! attestation for free. Requests are forwarded byte for byte (so the receipt's request
//! hash is of exactly what the application sent); each answer's receipt is verified and
//! a `vouch_verdict` field is added — to the JSON body, or to the final chunk of a
//! stream. An answer that fails verification is replaced by a 502 OpenAI-style error
//! (non-streamed); a stream whose receipt fails ends with an error event and no
//! `[DONE]`, so SDKs raise instead of returning unverified text as complete. Streamed
//! deltas are forwarded as they arrive and are only vouched for by the final verdict.
//!
//!
//! An enclave that goes away mid-answer is replaced transparently (the client resends to
//! another and resumes the stream; see [`VouchClient::chat_raw`]). With an [`Auditor`]
//! (`--audit-url`), a sample of answers is re-asked of a second enclave after the answer
//! went out; `vouch_verdict.audit` names the audit, whose verdict is served at
//! `GET /v1/vouch/audits/ID` (all of them, counted: `GET /v1/vouch/audits`).
//!
//! ```text
//!  app ─HTTP─► proxy ─► VouchClient (attested TLS) ─► enclave
//!  app ◄─ answer + vouch_verdict ◄─ check_receipt ◄──┘
//!                          └─(sampled, later)─► Auditor ─► audit enclave
//! ```

use crate::audit::Auditor;
use crate::client::{ClientError, GenerationApi, VouchClient};
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

/// Largest request body accepted from local applications.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Concurrent local connections.
pub const MAX_CONNECTIONS: usize = 256;
/// Time to receive a request body.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The enclave could not be attested at start-up.
    #[error(transparent)]
    Attestation(#[from] ClientError),
    /// Accepting connections failed.
    #[error("proxy listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A response body fed from a channel (streamed answers).
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type ProxyBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// An OpenAI-style error response.
fn error(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "code": status.as_u16()},
        "vouch_verdict": {"verified": false, "reason": message},
    });
    full(status, "application/json", body.to_string())
}

fn client_error(e: &ClientError) -> Response<ProxyBody> {
    match e {
        // The enclave's own error (no answer to verify): pass it through unchanged.
        ClientError::Enclave { status, body, .. } if !body.is_empty() => full(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            "application/json",
            body.clone(),
        ),
        e => error(StatusCode::BAD_GATEWAY, "vouch_verification_error", &e.to_string()),
    }
}

fn sse(v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// What the proxy serves from: the attested enclave and, optionally, the auditor.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The enclave answers come from.
    pub client: Arc<VouchClient>,
    /// Cross-operator spot checks (`--audit-url`), if configured.
    pub auditor: Option<Arc<Auditor>>,
}

impl Upstream {
    /// The answer's `vouch_verdict`, with its audit when one was started.
    fn verdict(&self, out: &crate::client::ChatOutcome) -> serde_json::Value {
        let mut v = out.verdict.to_json();
        if let (Some(a), Some(o)) = (&self.auditor, v.as_object_mut()) {
            if let Some(audit) = a.maybe_audit(out) {
                o.insert("audit".into(), audit);
            }
        }
        if out.resumes > 0 {
            if let Some(o) = v.as_object_mut() {
                o.insert("resumed".into(), out.resumes.into());
            }
        }
        v
    }
}

fn audits(up: &Upstream, path: &str) -> Response<ProxyBody> {
    let Some(a) = &up.auditor else {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this proxy runs no audits (--audit-url)",
        );
    };
    match path.strip_prefix("/v1/vouch/audits").unwrap_or("") {
        "" | "/" => full(StatusCode::OK, "application/json", a.summary().to_string()),
        rest => match rest.trim_start_matches('/').parse::<u64>().ok().and_then(|id| a.record(id)) {
            Some(r) => {
                full(StatusCode::OK, "application/json", serde_json::to_string(&r).unwrap_or_default())
            }
            None => error(StatusCode::NOT_FOUND, "invalid_request_error", "no such audit (or forgotten)"),
        },
    }
}

async fn handle(up: Upstream, req: hyper::Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let client = up.client.clone();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    Ok(match (method, path.as_str()) {
        (Method::GET, "/v1/models") => match client.models().await {
            Ok((mut v, att)) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("vouch_verdict".into(), att.verdict().to_json());
                }
                full(StatusCode::OK, "application/json", v.to_string())
            }
            Err(e) => client_error(&e),
        },
        (Method::POST, "/v1/chat/completions") => chat(up, req.into_body(), GenerationApi::Chat).await,
        (Method::POST, "/v1/completions") => chat(up, req.into_body(), GenerationApi::Completions).await,
        (Method::POST, "/v1/responses") => responses(up, req.into_body()).await,
        (Method::GET, p) if p.starts_with("/v1/vouch/audits") => audits(&up, p),
        (_, "/v1/models" | "/v1/chat/completions" | "/v1/completions" | "/v1/responses") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "invalid_request_error", &format!("no route for {path}")),
    })
}

async fn read_request(body: Incoming) -> Result<Bytes, Response<ProxyBody>> {
    let limited = http_body_util::Limited::new(body, MAX_REQUEST_BYTES);
    match tokio::time::timeout(REQUEST_BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", &e.to_string())),
        Err(_) => Err(error(StatusCode::REQUEST_TIMEOUT, "invalid_request_error", "request body timed out")),
    }
}

enum StreamMsg {
    Chunk(Bytes),
    Done(Box<Result<crate::client::ChatOutcome, ClientError>>),
}

/// `POST /v1/chat/completions` or `/v1/completions`: forwarded unchanged, verified (see
/// [`VouchClient::generate_raw`]), the verdict added to the response (streamed: to the
/// final chunk).
async fn chat(up: Upstream, body: Incoming, api: GenerationApi) -> Response<ProxyBody> {
    let client = up.client.clone();
    let (body, stream) = match read_routed(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if !stream {
        return match client.generate_raw(api, body, None, &mut |_| {}).await {
            Ok(out) => {
                let verdict = up.verdict(&out);
                let mut v = out.response;
                if let Some(o) = v.as_object_mut() {
                    o.insert("vouch_verdict".into(), verdict);
                }
                full(StatusCode::OK, "application/json", v.to_string())
            }
            Err(e) => client_error(&e),
        };
    }
    let (tx, rx) = mpsc::unbounded_channel::<StreamMsg>();
    tokio::spawn(async move {
        let chunk_tx = tx.clone();
        let mut on_chunk = |c: &serde_json::Value| {
            let _ = chunk_tx.send(StreamMsg::Chunk(sse(c)));
        };
        let r = client.generate_raw(api, body, None, &mut on_chunk).await;
        let _ = tx.send(StreamMsg::Done(Box::new(r)));
    });
    relay(rx, move |done| match done {
        Ok(out) => final_events(&up, out),
        Err(e) => {
            tracing::warn!(error = %e, "streamed answer NOT verified");
            sse(&serde_json::json!({
                "error": {"message": e.to_string(), "type": "vouch_verification_error", "code": 502},
                "vouch_verdict": {"verified": false, "reason": e.to_string()},
            }))
        }
    })
    .await
}

/// The body bytes of a generation request, and whether it asks to stream (parsed only to
/// route; the bytes are forwarded unchanged).
async fn read_routed(body: Incoming) -> Result<(Bytes, bool), Response<ProxyBody>> {
    let body = read_request(body).await?;
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => {
            let stream = v.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
            Ok((body, stream))
        }
        Err(e) => {
            Err(error(StatusCode::BAD_REQUEST, "invalid_request_error", &format!("body is not JSON: {e}")))
        }
    }
}

/// Streams what the verifying task sends on `rx`: the passed-on events, then `last` of its
/// outcome (the verified end, or the verification failure). Before anything was passed
/// on, a failure is still a proper HTTP error.
async fn relay(
    mut rx: mpsc::UnboundedReceiver<StreamMsg>,
    last: impl Fn(Result<crate::client::ChatOutcome, ClientError>) -> Bytes + Send + 'static,
) -> Response<ProxyBody> {
    let first = match rx.recv().await {
        Some(StreamMsg::Chunk(b)) => b,
        Some(StreamMsg::Done(done)) => match *done {
            Ok(out) => last(Ok(out)),
            Err(e) => return client_error(&e),
        },
        None => return error(StatusCode::BAD_GATEWAY, "vouch_verification_error", "stream task ended"),
    };
    let (btx, brx) = mpsc::unbounded_channel::<Bytes>();
    let _ = btx.send(first);
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let bytes = match m {
                StreamMsg::Chunk(b) => b,
                StreamMsg::Done(done) => last(*done),
            };
            if btx.send(bytes).is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(ChannelBody(brx).boxed());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    r
}

/// One Responses API event, with its `event:` line.
fn response_event(v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap_or("message")))
}

/// `POST /v1/responses`: forwarded unchanged, verified (see
/// [`VouchClient::responses_raw`]), the verdict added to the response object (streamed:
/// to the last event's).
async fn responses(up: Upstream, body: Incoming) -> Response<ProxyBody> {
    let client = up.client.clone();
    let (body, stream) = match read_routed(body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let finished = |out: crate::client::ChatOutcome| {
        let verdict = out.verdict.to_json();
        let mut v = out.response;
        if let Some(o) = v.as_object_mut() {
            o.insert("vouch_verdict".into(), verdict);
        }
        v
    };
    if !stream {
        return match client.responses_raw(body, &mut |_| {}).await {
            Ok(out) => full(StatusCode::OK, "application/json", finished(out).to_string()),
            Err(e) => client_error(&e),
        };
    }
    let (tx, rx) = mpsc::unbounded_channel::<StreamMsg>();
    tokio::spawn(async move {
        let event_tx = tx.clone();
        let mut on_event = |e: &serde_json::Value| {
            let _ = event_tx.send(StreamMsg::Chunk(response_event(e)));
        };
        let r = client.responses_raw(body, &mut on_event).await;
        let _ = tx.send(StreamMsg::Done(Box::new(r)));
    });
    let last = move |done: Result<crate::client::ChatOutcome, ClientError>| match done {
        Ok(out) => {
            let response = finished(out);
            let kind =
                if response["status"] == "completed" { "response.completed" } else { "response.incomplete" };
            response_event(&serde_json::json!({"type": kind, "response": response}))
        }
        Err(e) => {
            tracing::warn!(error = %e, "streamed response NOT verified");
            response_event(&serde_json::json!({"type": "error", "code": "vouch_verification_error",
                "message": e.to_string(), "vouch_verdict": {"verified": false, "reason": e.to_string()}}))
        }
    };
    relay(rx, last).await
}

/// The verified final chunk with its verdict, then `[DONE]`.
fn final_events(up: &Upstream, out: crate::client::ChatOutcome) -> Bytes {
    let verdict = up.verdict(&out);
    let mut v = out.response;
    if let Some(o) = v.as_object_mut() {
        o.insert("vouch_verdict".into(), verdict);
    }
    let mut b = sse(&v).to_vec();
    b.extend_from_slice(b"data: [DONE]\n\n");
    Bytes::from(b)
}

/// Serves the proxy on `listener` until `shutdown` resolves. The client should already
/// be attested ([`VouchClient::attest`]) so that misconfiguration fails at start-up.
pub async fn run(
    listener: TcpListener,
    upstream: Upstream,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => r?,
        };
        let Ok(permit) = limit.clone().acquire_owned().await else { return Ok(()) };
        let up = upstream.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(up.clone(), req));
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await
            {
                tracing::debug!(%peer, error = %e, "proxy connection ended");
            }
            drop(permit);
        });
    }
}
