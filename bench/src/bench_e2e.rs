//! End-to-end cost of attestation: the same prompt and token count generated in-process
//! by `vouch-enclave generate` (no network, no attestation) and through
//! client → vouch-host → vouch-enclave (simulated secure processor with a report
//! latency, TLS, receipt verified by the client), measured in one run. Also reports the
//! enclave's peak memory against the model file size.
//!
//! `bench-e2e --bin-dir target/release --model FILE [--tokens 64] [--runs 3] [--latency-ms 8]`
//! prints a table and a final `BENCH_JSON {...}` line.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
// a benchmark driver: fail loudly
// The benchmark kills and reaps its children at the end of the run (or dies with them).
#![allow(clippy::zombie_processes)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vouch_client::client::ChatRequest;

mod support;
use support::{arg, sim_client, start, vm_kib};

const PROMPT: &str = "Give me three tips for staying healthy.";

/// One in-process generation; returns (tokens/s over prefill+decode, tokens).
fn bare_run(bin_dir: &Path, model: &str, tokens: u32, threads: &str) -> (f64, u64) {
    let out = Command::new(bin_dir.join("vouch-enclave"))
        .args(["generate", "--model", model, "--prompt", PROMPT, "--max-tokens", &tokens.to_string()])
        .args(["--threads", threads, "--json"])
        .output()
        .expect("generate");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("generate --json");
    let ms = v["timings"]["prefill_ms"].as_f64().unwrap_or(0.0)
        + v["timings"]["decode_ms"].as_f64().unwrap_or(0.0);
    let n = v["completion_tokens"].as_u64().unwrap_or(0);
    (n as f64 / (ms / 1000.0), n)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bin_dir = PathBuf::from(arg("--bin-dir", "target/release"));
    let model = arg("--model", "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let tokens: u32 = arg("--tokens", "64").parse().expect("--tokens");
    let runs: usize = arg("--runs", "3").parse().expect("--runs");
    let latency = arg("--latency-ms", "8");
    let threads = arg("--threads", "1");
    let work = std::env::temp_dir().join(format!("vouch-bench-{}", std::process::id()));

    let sim = work.join("sim");
    let (mut enclave, addr) = start(
        &bin_dir.join("vouch-enclave"),
        &[
            "serve",
            "--model",
            &model,
            "--listen",
            "tcp:127.0.0.1:0",
            "--attestation",
            "sim",
            "--sim-dir",
            sim.to_str().unwrap(),
            "--sim-latency-ms",
            &latency,
            "--threads",
            &threads,
        ],
        "vouch-enclave listening on ",
    );
    let (mut host, host_addr) = start(
        &bin_dir.join("vouch-host"),
        &["--listen", "127.0.0.1:0", "--enclave", &addr],
        "vouch-host listening on ",
    );
    let idle_rss = vm_kib(enclave.id(), "VmRSS:");

    let client = sim_client(&sim, &host_addr);
    client.attest().await.expect("attest");
    // Bare and attested runs alternate, so drifting background load hits both alike.
    let (mut bare, mut attested) = (Vec::new(), Vec::new());
    let (mut bare_tokens, mut att_tokens) = (0, 0);
    for _ in 0..runs {
        let (rate, n) = bare_run(&bin_dir, &model, tokens, &threads);
        bare.push(rate);
        bare_tokens = n;
        let mut req = ChatRequest::prompt(PROMPT);
        req.max_tokens = Some(tokens);
        req.stream = false;
        let t = Instant::now();
        let out = client.chat(&req, &mut |_| {}).await.expect("attested chat");
        let secs = t.elapsed().as_secs_f64();
        att_tokens = out.response["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        attested.push(att_tokens as f64 / secs);
    }
    // Load: 8 concurrent answers, then the high-water mark.
    let mut set = tokio::task::JoinSet::new();
    let client = std::sync::Arc::new(client);
    for i in 0..8 {
        let c = client.clone();
        set.spawn(async move {
            let mut req = ChatRequest::prompt(&format!("Count to {i}."));
            req.max_tokens = Some(16);
            let _ = c.chat(&req, &mut |_| {}).await;
        });
    }
    while set.join_next().await.is_some() {}
    let peak_rss = vm_kib(enclave.id(), "VmHWM:");
    let _ = host.kill();
    let _ = enclave.kill();
    let _ = std::fs::remove_dir_all(&work);

    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (b, a) = (med(&mut bare), med(&mut attested));
    let model_mb = std::fs::metadata(&model).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    println!("prompt {PROMPT:?}, {tokens} max tokens, {threads} thread(s), report latency {latency} ms, median of {runs}");
    println!("  bare generate (in-process, prefill+decode)      {b:8.1} tok/s  ({bare_tokens} tokens)");
    println!("  attested (client -> host -> enclave, receipt)  {a:8.1} tok/s  ({att_tokens} tokens)");
    println!("  ratio attested / bare                           {:8.3}   (target >= 0.95)", a / b);
    println!(
        "  enclave RSS idle {:.0} MB, peak {:.0} MB; model file {model_mb:.0} MB ({:.2}x)",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0 / model_mb
    );
    println!(
        "BENCH_JSON {{\"attested_vs_bare_tokens_ratio\":{:.3},\"bare_tokens_per_s\":{b:.1},\"attested_tokens_per_s\":{a:.1},\"enclave_idle_rss_mb\":{:.1},\"enclave_peak_rss_mb\":{:.1},\"model_file_mb\":{model_mb:.1}}}",
        a / b,
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
}
