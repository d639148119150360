//! Replay verification vs generation on the same answer: the answer is generated (the
//! ordinary way: prefill, then one forward pass per token), then checked with `replay`
//! (prefill, then the whole answer teacher-forced in chunks). Both are timed end to end,
//! same model, same threads, same process, interleaved over `--runs`; prints the medians
//! as completion tokens/s and their ratio. Greedy and sampled (temperature 0.8) answers.
//!
//! `cargo run --release -p vouch-enclave --example bench_replay -- [--model FILE]
//! [--threads 1] [--tokens 256] [--runs 5]`; one JSON line per sampling mode.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // a benchmark driver: fail loudly

use std::path::PathBuf;
use std::time::Instant;
use vouch_enclave::model::{
    generate_blocking, replay, ChatMessage, FinishReason, GenerateRequest, Model, Prompt, ReplayOutcome,
    SamplingParams,
};

const QUESTION: &str = "Write a long, detailed essay about the ocean.";

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let model_path = PathBuf::from(arg("--model", "models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let threads: usize = arg("--threads", "1").parse().expect("--threads");
    let tokens: u32 = arg("--tokens", "256").parse().expect("--tokens");
    let runs: usize = arg("--runs", "5").parse().expect("--runs");
    vouch_enclave::model::init_compute_threads(Some(threads));
    let mut model = Model::load(&model_path).expect("model");
    let kernel = model.kernel();
    for (mode, temperature, seed) in [("greedy", 0.0, 0), ("sampled", 0.8, 1234)] {
        let req = GenerateRequest {
            prompt: Prompt::Chat(vec![ChatMessage::new("user", QUESTION)]),
            params: SamplingParams { temperature, seed, ..SamplingParams::greedy(tokens) },
        };
        let (mut gen_ms, mut replay_ms) = (Vec::new(), Vec::new());
        let mut n = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let (finish, stats) = generate_blocking(&mut model, &req, |_| {}).expect("generate");
            gen_ms.push(t.elapsed().as_secs_f64() * 1e3);
            n = stats.completion_token_ids.len();
            let t = Instant::now();
            let outcome = replay(&mut model, &req, &stats.completion_token_ids, finish).expect("replay");
            replay_ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(
                matches!(outcome, ReplayOutcome::Match { .. }),
                "an honest answer did not replay: {outcome:?}"
            );
            assert!(finish == FinishReason::Length || n > 0);
        }
        let (g, r) = (median(&mut gen_ms), median(&mut replay_ms));
        let rate = |ms: f64| n as f64 / (ms / 1e3);
        println!(
            "BENCH_JSON {{\"bench\":\"replay\",\"mode\":\"{mode}\",\"kernel\":\"{kernel}\",\"threads\":{threads},\"completion_tokens\":{n},\"generate_ms\":{g:.1},\"replay_ms\":{r:.1},\"generate_tok_s\":{:.1},\"replay_tok_s\":{:.1},\"replay_speedup\":{:.2}}}",
            rate(g),
            rate(r),
            g / r
        );
    }
}
