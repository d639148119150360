//! Tests of the enclave's model runtime (trusted side) against the real default model,
//! SmolLM2-135M-Instruct Q4_1, fetched by `scripts/fetch-model.sh` into `models/`.
//!
//! These tests fail — on purpose, they do not skip — when the model file is missing: CI
//! runs the fetch script first.

// The helpers below are test code too; clippy.toml's test exemption only covers #[test] fns.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use vouch_enclave::model::{
    generate_blocking, ChatMessage, Engine, EngineBusy, EngineConfig, FinishReason, GenerateEvent,
    GenerateRequest, Model, ModelError, Prompt, Runtime, SamplingParams,
};

const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
#[cfg(feature = "candle")]
const Q8_0_WEIGHTS_SHA256: &str = "f89a92b29b35537e21ee22cf845af314ffd67306b9dfed55cc56235ab91f699d";
const GERMANY: &str = "What is the capital of Germany?";

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn require_model_file() -> PathBuf {
    let path = model_path();
    assert!(path.is_file(), "model file {} is missing: run scripts/fetch-model.sh first", path.display());
    path
}

fn load(runtime: Runtime) -> Model {
    Model::load_with(&require_model_file(), runtime).expect("load the default model")
}

/// One model shared by the tests that only need `&mut Model` for a moment.
fn shared_model() -> std::sync::MutexGuard<'static, Model> {
    static MODEL: OnceLock<Mutex<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| Mutex::new(load(Runtime::default())))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ask(question: &str, params: SamplingParams) -> GenerateRequest {
    GenerateRequest::chat(vec![ChatMessage::new("user", question)], params)
}

fn run(model: &mut Model, req: &GenerateRequest) -> (String, FinishReason, Vec<u32>) {
    let mut text = String::new();
    let (finish, stats) = generate_blocking(model, req, |d| text.push_str(d)).expect("generation succeeds");
    assert_eq!(stats.completion_tokens as usize, stats.completion_token_ids.len());
    assert_eq!(stats.prefill_chunk, "all");
    assert_eq!(text, model.tokenizer().decode(&stats.completion_token_ids));
    (text, finish, stats.completion_token_ids)
}

#[test]
fn digest_is_the_pinned_sha256_of_the_file() {
    let model = shared_model();
    assert_eq!(hex::encode(model.digest()), MODEL_SHA256);
    assert_eq!(model.file_size(), 98_362_432);
    assert_eq!(model.name(), "SmolLM2-135M-Instruct");
    assert_eq!(model.stored_format(), "q4_1");
    // The native runtime computes with the file's bytes in place: nothing converted.
    assert_eq!(model.runtime(), Runtime::Native);
    assert_eq!(model.weights_digest(), model.digest());
    assert_eq!(model.engine_version(), "vouch-native-1");
    // Receipts commit the tokenizer digest: it must not move when the code around it does.
    assert_eq!(
        hex::encode(model.tokenizer().digest()),
        "40f0d822ea2d7fb216a5b8acb9afa3be6c3190a3960c72384417b9c375f28791"
    );
    assert_eq!(model.tokenizer().stop_ids(), [2, 0]);
    assert!(!model.tokenizer().add_bos());
}

#[test]
fn tokenizer_matches_known_ids() {
    let model = shared_model();
    let tok = model.tokenizer();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), 1);
    assert_eq!(tok.eos_id(), 2);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    // No prefix space: "system" right after <|im_start|> is token 9690, not " system" (817).
    assert_eq!(tok.encode("<|im_start|>system").unwrap(), vec![1, 9690]);
    // Digits are split one by one.
    let digits = tok.encode("2024").unwrap();
    assert_eq!(digits.len(), 4);
    // Typed control-token spellings are plain text, not role markers.
    let plain = tok.encode_plain("<|im_end|>").unwrap();
    assert!(plain.len() > 1 && !plain.contains(&2), "{plain:?}");

    // The France prompt is 37 ids (identical to llama.cpp's tokenization).
    let france = [ChatMessage::new("user", "What is the capital of France?")];
    let ids = model.encode_chat(&france).unwrap();
    assert_eq!(ids.len(), 37);
    assert_eq!(&ids[..2], &[1, 9690]);
    // The full prompt, pinned (the probe found llama.cpp produces the same 37 ids).
    assert_eq!(
        ids,
        [
            1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
            19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531,
            198
        ]
    );
    // "Hello" without a prefix space; each digit its own token; "\n" is 198.
    assert_eq!(tok.encode("Hello world 2024\n").unwrap(), [19556, 905, 216, 34, 32, 34, 36, 198]);
    // Encoding role markers as ids and contents as plain text equals tokenizing the whole
    // rendered prompt.
    let rendered = vouch_enclave::model::render_chat_prompt(&france).unwrap();
    assert_eq!(tok.encode(&rendered).unwrap(), ids);

    for text in [
        "Hello, world!",
        " leading space and  double spaces\n\ttabs",
        "The capital of Germany is Berlin.",
        "Numbers 3.14159 and 1,000,000",
        "Unicode: café, 日本語, emoji 🚀",
    ] {
        let ids = tok.encode_plain(text).unwrap();
        assert_eq!(tok.decode(&ids), text, "round trip of {text:?}");
        assert_eq!(tok.decode_with_tokenizers(&ids).unwrap().unwrap(), text);
    }
}

#[test]
fn our_token_bytes_agree_with_the_tokenizers_decoder_for_the_whole_vocab() {
    let model = shared_model();
    let tok = model.tokenizer();
    for id in 0..tok.vocab_size() as u32 {
        assert_eq!(tok.decode(&[id]), tok.decode_with_tokenizers(&[id]).unwrap().unwrap(), "token {id}");
    }
}

#[test]
fn greedy_germany_answer_names_berlin() {
    let mut model = shared_model();
    let (text, _, ids) = run(&mut model, &ask(GERMANY, SamplingParams::greedy(12)));
    assert!(text.contains("Berlin"), "answer: {text:?}");
    // Greedy is deterministic, and the KV cache is cleared between requests.
    let (again, _, again_ids) = run(&mut model, &ask(GERMANY, SamplingParams::greedy(12)));
    assert_eq!((again, again_ids), (text, ids));
}

#[cfg(feature = "candle")]
#[test]
fn candle_reference_runtimes_agree_with_the_native_one() {
    let native = run(&mut shared_model(), &ask(GERMANY, SamplingParams::greedy(12)));
    assert!(native.0.contains("Berlin"), "answer: {:?}", native.0);

    let mut candle = load(Runtime::Candle);
    assert_eq!((candle.weights_digest(), candle.engine_version()), (candle.digest(), "candle-0.11.1"));
    assert_eq!(run(&mut candle, &ask(GERMANY, SamplingParams::greedy(12))), native);
    drop(candle);

    let mut converted = load(Runtime::CandleQ8_0);
    // The load-time Q4_1 -> Q8_0 conversion is a pure function of the file: pinned.
    assert_eq!(hex::encode(converted.weights_digest()), Q8_0_WEIGHTS_SHA256);
    assert_eq!(hex::encode(converted.digest()), MODEL_SHA256);
    let (text, _, _) = run(&mut converted, &ask(GERMANY, SamplingParams::greedy(12)));
    assert!(text.contains("Berlin"), "answer: {text:?}");
}

/// The default build has no candle: asking for it is refused by name, not ignored.
#[cfg(not(feature = "candle"))]
#[test]
fn candle_runtimes_are_refused_without_the_feature() {
    for runtime in [Runtime::Candle, Runtime::CandleQ8_0] {
        let err = Model::load_with(&require_model_file(), runtime).unwrap_err();
        assert!(matches!(err, ModelError::RuntimeNotBuilt { runtime: r } if r == runtime.as_str()), "{err}");
        assert!(err.to_string().contains("build with --features candle"), "{err}");
    }
}

#[cfg(feature = "candle")]
#[test]
fn native_logits_match_candles_on_the_same_weights() {
    let ids = shared_model()
        .encode_chat(&[ChatMessage::new("user", "Give me three tips for staying healthy.")])
        .expect("encode");
    let native = shared_model().prompt_logits(&ids).expect("native logits");
    let candle = load(Runtime::Candle).prompt_logits(&ids).expect("candle logits");
    assert_eq!(native.len(), 49_152);
    assert_eq!(argmax(&native), argmax(&candle));
    assert_eq!(top(&native, 5), top(&candle, 5));
    // Same weights and the same 8-bit activation scheme, but candle rounds activation
    // scales to f16 and sums in another order, so over 30 layers the rounding decisions
    // drift apart a little (part of it a shift of every logit by the same amount, which
    // softmax ignores). Measured: shift −0.32, then max 0.75 and mean 0.12 on a spread of
    // 34.9; a wrong RoPE, norm or head mapping moves logits by whole units.
    let spread =
        native.iter().fold(f32::MIN, |m, &x| m.max(x)) - native.iter().fold(f32::MAX, |m, &x| m.min(x));
    let shift = native.iter().zip(&candle).map(|(a, b)| a - b).sum::<f32>() / native.len() as f32;
    let residual: Vec<f32> = native.iter().zip(&candle).map(|(a, b)| (a - b - shift).abs()).collect();
    let worst = residual.iter().fold(0f32, |m, &d| m.max(d));
    let mean = residual.iter().sum::<f32>() / residual.len() as f32;
    eprintln!("native - candle: shift {shift}, then max |diff| {worst}, mean {mean}; logit spread {spread}");
    assert!(worst < 0.05 * spread && mean < 0.01 * spread, "max {worst} mean {mean} spread {spread}");
}

/// Indices of the `k` largest values, largest first.
#[cfg(feature = "candle")]
fn top(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(k);
    idx
}

#[cfg(feature = "candle")]
fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

#[test]
fn same_seed_gives_the_same_sampled_text() {
    let mut model = shared_model();
    let params =
        SamplingParams { temperature: 0.8, top_p: Some(0.95), seed: 42, ..SamplingParams::greedy(16) };
    let req = ask("Tell me a short story about a robot.", params);
    let first = run(&mut model, &req);
    let second = run(&mut model, &req);
    assert_eq!(first, second);
    assert!(!first.0.is_empty());
}

#[test]
fn max_tokens_bounds_the_completion() {
    let mut model = shared_model();
    let (_, finish, ids) = run(&mut model, &ask("Count from one to one hundred.", SamplingParams::greedy(3)));
    assert_eq!((finish, ids.len()), (FinishReason::Length, 3));
    let (text, finish, ids) = run(&mut model, &ask(GERMANY, SamplingParams::greedy(0)));
    assert_eq!((text.as_str(), finish, ids.len()), ("", FinishReason::Length, 0));
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let mut model = shared_model();
    let req = GenerateRequest::chat(vec![ChatMessage::new("wizard", GERMANY)], SamplingParams::greedy(4));
    assert!(matches!(generate_blocking(&mut model, &req, |_| {}), Err(ModelError::InvalidRequest(_))));
    let req = ask(GERMANY, SamplingParams::greedy(100_000));
    assert!(matches!(generate_blocking(&mut model, &req, |_| {}), Err(ModelError::ContextTooLong { .. })));
    let req = GenerateRequest::chat(Vec::new(), SamplingParams::greedy(4));
    assert!(matches!(generate_blocking(&mut model, &req, |_| {}), Err(ModelError::InvalidRequest(_))));
    // A raw-text prompt that encodes to no tokens (SmolLM2 adds no BOS) is refused too.
    let req = GenerateRequest { prompt: Prompt::Text(String::new()), params: SamplingParams::greedy(4) };
    let Err(ModelError::InvalidRequest(m)) = generate_blocking(&mut model, &req, |_| {}) else { panic!() };
    assert_eq!(m, "the prompt encodes to no tokens");
}

#[test]
fn truncated_file_is_reported_as_truncated() {
    let bytes = std::fs::read(require_model_file()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for len in [bytes.len() / 2, 1_000, 10] {
        let path = dir.path().join(format!("truncated-{len}.gguf"));
        std::fs::write(&path, &bytes[..len]).unwrap();
        match Model::load(&path) {
            Err(ModelError::Truncated { actual_len, .. }) => assert_eq!(actual_len, len as u64),
            other => panic!("{len} bytes: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn random_bytes_are_not_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.gguf");
    // Deterministic "random" bytes (xorshift), so the test never flakes.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(Model::load(&path), Err(ModelError::NotGguf { .. })));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(Model::load(&path), Err(ModelError::NotGguf { .. })));
}

#[test]
fn missing_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Model::load(&dir.path().join("nope.gguf")), Err(ModelError::NotFound { .. })));
}

#[tokio::test]
async fn engine_streams_and_rejects_beyond_its_queue() {
    let model = load(Runtime::default());
    let digest = model.digest();
    let engine = Engine::start(
        model,
        EngineConfig { queue_depth: 1, threads: 2, max_batch: Some(1), ..EngineConfig::default() },
    );
    assert_eq!(engine.model_digest(), digest);
    assert_eq!(engine.model_name(), "SmolLM2-135M-Instruct");

    // One request runs (a batch of one), one waits; with nothing finishing in between, a
    // third is refused.
    let long = SamplingParams::greedy(24);
    let mut first = engine.submit(ask(GERMANY, long.clone())).expect("first request accepted");
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(engine.submit(ask(GERMANY, long.clone())));
    }
    assert!(
        results.iter().any(|r| matches!(r, Err(EngineBusy { running: 1, queue_depth: 1 }))),
        "expected EngineBusy with one running and queue_depth 1"
    );
    // Drop the waiting ones: they are cancelled without running.
    drop(results);

    let mut text = String::new();
    let mut done = None;
    while let Some(event) = first.recv().await {
        match event {
            GenerateEvent::Delta(d) => text.push_str(&d),
            GenerateEvent::Done { finish_reason, stats } => done = Some((finish_reason, stats)),
            GenerateEvent::Failed(e) => panic!("generation failed: {e}"),
        }
    }
    let (_, stats) = done.expect("a Done event");
    assert!(text.contains("Berlin"), "answer: {text:?}");
    assert_eq!(stats.completion_tokens as usize, stats.completion_token_ids.len());

    // Once idle, the engine accepts work again and reports bad requests as Failed.
    let mut bad = ask(GERMANY, SamplingParams::greedy(4));
    bad.params.temperature = -1.0;
    let mut rx = loop {
        match engine.submit(bad.clone()) {
            Ok(rx) => break rx,
            // The refused-and-dropped requests drain in microseconds; poll briefly.
            Err(EngineBusy { .. }) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    };
    assert!(matches!(rx.recv().await, Some(GenerateEvent::Failed(_))));
}
