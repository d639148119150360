//! The enclave's generation request bodies (`POST /v1/chat/completions`, `/v1/responses`
//! and `/v1/completions`, decrypted inside the enclave): the very parsers the API runs,
//! `vouch_enclave::request::parse_any_request` and each endpoint's (pure functions), plus the hash the receipt commits and the engine's own request
//! validation of whatever the parser accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::Digest;
use vouch_enclave::model::GenerateRequest;
use vouch_enclave::request::{
    parse_any_request, parse_chat_request, parse_completions_request, parse_responses_request,
};

/// The enclave reads at most this much (enclave/src/api.rs `MAX_BODY_BYTES`).
const MAX_BODY_BYTES: usize = vouch_enclave::api::MAX_BODY_BYTES;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_BODY_BYTES {
        return;
    }
    let _request_sha256: [u8; 32] = sha2::Sha256::digest(data).into();
    for parsed in [
        parse_chat_request(data),
        parse_responses_request(data),
        parse_completions_request(data),
        parse_any_request(data),
    ] {
        match parsed {
            Ok(r) => {
                assert!((1..=vouch_enclave::request::MAX_TOKENS_CAP).contains(&r.params.max_tokens));
                let g = GenerateRequest { prompt: r.prompt, params: r.params };
                let _ = g.validate();
            }
            Err(e) => {
                let _ = (e.code(), e.param(), e.to_string());
            }
        }
    }
});
