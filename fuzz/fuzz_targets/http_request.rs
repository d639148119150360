//! The enclave's chat request body (`POST /v1/chat/completions`, decrypted inside the
//! enclave). The enclave's parser is private (enclave/src/api.rs `ChatRequest`), so this
//! target mirrors its serde shape and checks field for field, and hashes the body as the
//! receipt does. A pub parsing function in vouch-enclave would let it fuzz the real one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use sha2::Digest;

/// Mirror of `vouch_enclave::model::ChatMessage`.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ChatMessage {
    role: String,
    content: String,
}

/// Mirror of the private `ChatRequest` in enclave/src/api.rs.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ChatRequest {
    model: Option<String>,
    messages: Vec<ChatMessage>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
}

/// Mirrors of the enclave's bounds (enclave/src/api.rs and model::sampling).
const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_TOKENS_CAP: u32 = 2048;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_BODY_BYTES {
        return;
    }
    let _request_sha256: [u8; 32] = sha2::Sha256::digest(data).into();
    let Ok(r) = serde_json::from_slice::<ChatRequest>(data) else { return };
    let max_tokens = r.max_completion_tokens.or(r.max_tokens).unwrap_or(256);
    let _ok = (1..=MAX_TOKENS_CAP).contains(&max_tokens);
    let t = r.temperature.unwrap_or(0.0);
    let _ok = t.is_finite() && (0.0..=2.0).contains(&t);
    if let Some(p) = r.top_p {
        let _ok = p.is_finite() && p > 0.0 && p <= 1.0;
    }
    for m in &r.messages {
        let _ = matches!(m.role.as_str(), "system" | "user" | "assistant");
        let _ = m.content.len();
    }
});
