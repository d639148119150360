//! One model's speed and memory in-process, the counterpart of
//! `bench/reference/llama_cpp_speed.py` and measured the same way: load time, prefill
//! tokens/s over the first `--prefill` tokens of `bench/reference/text.txt` (one forward
//! pass from an empty cache), greedy decode tokens/s over `--decode` single-token steps
//! after a 64-token prompt (best of `--runs` each, as the llama.cpp script reports), the
//! peak resident set and the KV cache the longest sequence takes. Raw token ids, no chat template, so base models (Gemma 3
//! 270M) run too. One model per process, so the peak RSS is that model's.
//!
//! `cargo run --release -p vouch-enclave --example bench_models -- --model FILE
//! [--threads 1] [--prefill 512] [--decode 128] [--runs 3]`; prints one JSON line
//! (`BENCH_JSON {...}`).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // a benchmark driver: fail loudly

use std::path::PathBuf;
use std::time::Instant;

use vouch_enclave::model::{init_compute_threads, Model, Runtime};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// Tokens of the decode measurement's prompt (as in llama_cpp_speed.py).
const DECODE_PROMPT: usize = 64;

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// A `/proc/self/status` figure in bytes: `VmHWM` (peak resident set) or `VmRSS` (now).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u32
}

fn main() {
    let path = PathBuf::from(arg("--model", "models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let threads: usize = arg("--threads", "1").parse().expect("--threads");
    let prefill: usize = arg("--prefill", "512").parse().expect("--prefill");
    let decode: usize = arg("--decode", "128").parse().expect("--decode");
    let runs: usize = arg("--runs", "3").parse().expect("--runs");
    init_compute_threads(Some(threads));

    let started = Instant::now();
    let mut model = Model::load_with(&path, Runtime::Native).expect("load the model");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let (rss_loaded, peak_loading) = (status_bytes("VmRSS:"), status_bytes("VmHWM:"));
    let text_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/reference/text.txt");
    let text = std::fs::read_to_string(&text_path).expect("bench/reference/text.txt");
    let ids = model.tokenizer().encode_prompt(&text).expect("tokenize");
    assert!(
        ids.len() >= prefill.max(DECODE_PROMPT),
        "the text has {} tokens, fewer than --prefill {prefill}",
        ids.len()
    );
    let prompt = &ids[..prefill];

    let (mut prefill_s, mut decode_s) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut stepper = model.stepper(prefill);
        let t = Instant::now();
        stepper.feed(prompt).expect("prefill");
        prefill_s.push(t.elapsed().as_secs_f64());
        drop(stepper);
        let mut stepper = model.stepper(DECODE_PROMPT + decode);
        let mut logits = stepper.feed(&prompt[..DECODE_PROMPT]).expect("decode prompt");
        let t = Instant::now();
        for _ in 0..decode {
            logits = stepper.feed(&[argmax(&logits)]).expect("decode");
        }
        decode_s.push(t.elapsed().as_secs_f64());
    }
    let (p, d) = (best(&prefill_s), best(&decode_s));
    let kv_bytes = model.kv_bytes_per_position() * prefill.max(DECODE_PROMPT + decode);
    println!(
        "BENCH_JSON {}",
        serde_json::json!({
            "engine": "vouch-native",
            "model": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "file_bytes": model.file_size(),
            "kernel": model.kernel(),
            "threads": threads,
            "load_ms": load_ms,
            "prefill_tokens": prefill,
            "prefill_tok_s": prefill as f64 / p,
            "decode_tokens": decode,
            "decode_tok_s": decode as f64 / d,
            "kv_bytes": kv_bytes,
            "peak_rss_bytes": status_bytes("VmHWM:"),
            // Where memory goes: resident right after loading, and the peak while loading
            // (the parser's and tokenizer's transient copies of the vocabulary).
            "rss_after_load_bytes": rss_loaded,
            "peak_rss_loading_bytes": peak_loading,
            "runs": runs,
        })
    );
}
