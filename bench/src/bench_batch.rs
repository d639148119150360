//! Continuous batching, end to end: aggregate decode tokens/s (prefill excluded, see
//! `concurrent`) with 1, 2, 4, 8 and 16
//! concurrent streams through client → vouch-host → vouch-enclave (attested TLS, every
//! receipt verified by the client), time to first token for a request arriving while 8
//! streams run versus arriving at an idle enclave, and the enclave's peak memory at batch
//! 8 and 16 against the model file plus the KV budget.
//!
//! `bench-batch --bin-dir target/release --model FILE [--tokens 64] [--threads 2]
//! [--kv-budget-mib 1024] [--probes 10] [--levels 1,2,4,8,16]` prints a table and a final
//! `BENCH_JSON {...}` line.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
// a benchmark driver: fail loudly
#![allow(clippy::zombie_processes)]

use std::path::PathBuf;

use std::sync::Arc;
use std::time::{Duration, Instant};
use vouch_client::client::{ChatRequest, VouchClient};

mod support;
use support::{arg, sim_client, start, vm_kib};

/// Resets the process's peak-RSS mark (Linux: write 5 to clear_refs).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

const TOPICS: [&str; 16] = [
    "the ocean",
    "mountains",
    "a city at night",
    "the history of bread",
    "trains",
    "the moon",
    "forests",
    "rain",
    "a library",
    "bees",
    "the desert",
    "winter",
    "music",
    "rivers",
    "clocks",
    "volcanoes",
];

fn request(i: usize, tokens: u32, stream: bool) -> ChatRequest {
    let mut req =
        ChatRequest::prompt(&format!("Write a long, detailed essay about {}.", TOPICS[i % TOPICS.len()]));
    req.max_tokens = Some(tokens);
    req.stream = stream;
    req
}

/// `n` concurrent verified chats; returns (completion tokens in all, wall seconds, decode
/// tokens/s). The decode rate is end to end and excludes prefill: it counts the deltas
/// (≈ tokens) that reach the client while all `n` streams are decoding — from the last
/// stream's first delta to the first stream's last — over that window.
async fn concurrent(client: &Arc<VouchClient>, n: usize, tokens: u32) -> (u64, f64, f64) {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let c = client.clone();
        set.spawn(async move {
            let mut arrivals = Vec::new();
            let out = c
                .chat(&request(i, tokens, true), &mut |delta| {
                    if !delta.is_empty() {
                        arrivals.push(Instant::now());
                    }
                })
                .await
                .expect("verified chat");
            (out.response["usage"]["completion_tokens"].as_u64().unwrap_or(0), arrivals)
        });
    }
    let mut total = 0;
    let mut streams = Vec::new();
    while let Some(r) = set.join_next().await {
        let (n, arrivals) = r.unwrap();
        total += n;
        streams.push(arrivals);
    }
    let all_in = streams.iter().filter_map(|a| a.first()).max().copied();
    let first_out = streams.iter().filter_map(|a| a.last()).min().copied();
    let rate = match (all_in, first_out) {
        (Some(a), Some(b)) if b > a => {
            let inside = streams.iter().flatten().filter(|t| **t > a && **t <= b).count();
            inside as f64 / b.duration_since(a).as_secs_f64()
        }
        _ => 0.0,
    };
    (total, started.elapsed().as_secs_f64(), rate)
}

/// Time to the first streamed delta of one verified chat, in ms.
async fn ttft(client: &VouchClient, i: usize) -> f64 {
    let started = Instant::now();
    let mut first = None;
    client
        .chat(&request(i, 8, true), &mut |delta| {
            if !delta.is_empty() {
                first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
            }
        })
        .await
        .expect("verified chat");
    first.unwrap_or_else(|| started.elapsed().as_secs_f64() * 1e3)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bin_dir = PathBuf::from(arg("--bin-dir", "target/release"));
    let model = arg("--model", "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let tokens: u32 = arg("--tokens", "64").parse().expect("--tokens");
    let threads = arg("--threads", "2");
    let budget = arg("--kv-budget-mib", "1024");
    let probes: usize = arg("--probes", "10").parse().expect("--probes");
    let levels: Vec<usize> =
        arg("--levels", "1,2,4,8,16").split(',').map(|l| l.parse().expect("--levels")).collect();
    let work = std::env::temp_dir().join(format!("vouch-bench-batch-{}", std::process::id()));
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
            "--threads",
            &threads,
            "--max-batch",
            "16",
            "--queue-depth",
            "64",
            "--kv-budget-mib",
            &budget,
        ],
        "vouch-enclave listening on ",
    );
    let (mut host, host_addr) = start(
        &bin_dir.join("vouch-host"),
        &["--listen", "127.0.0.1:0", "--enclave", &addr],
        "vouch-host listening on ",
    );
    let client = Arc::new(sim_client(&sim, &host_addr));
    client.attest().await.expect("attest");
    let _ = concurrent(&client, 1, 8).await; // warm up

    println!(
        "{tokens} tokens per stream, {threads} thread(s), streamed, every receipt verified by the client"
    );
    let mut rates = Vec::new();
    let mut peaks = Vec::new();
    for &n in &levels {
        reset_peak(enclave.id());
        let (total, secs, rate) = concurrent(&client, n, tokens).await;
        rates.push((n, rate));
        peaks.push((n, vm_kib(enclave.id(), "VmHWM:")));
        println!(
            "  {n:2} concurrent streams: {rate:7.1} decode tok/s aggregate, {:.2}x one stream ({total} tokens in {secs:.2} s \
             with prefill: {:.1} tok/s)",
            rate / rates[0].1,
            total as f64 / secs
        );
    }

    // Time to first token: idle, then while 8 streams decode.
    let mut idle = Vec::new();
    for i in 0..probes {
        idle.push(ttft(&client, i).await);
    }
    let background = {
        let c = client.clone();
        tokio::spawn(async move { concurrent(&c, 8, tokens.max(128) * 2).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut busy = Vec::new();
    for i in 0..probes {
        busy.push(ttft(&client, i).await);
    }
    background.await.unwrap();
    let (idle50, idle99) = (percentile(&mut idle, 0.5), percentile(&mut idle, 0.99));
    let (busy50, busy99) = (percentile(&mut busy, 0.5), percentile(&mut busy, 0.99));
    println!("  time to first token, idle enclave:        p50 {idle50:6.1} ms  p99 {idle99:6.1} ms ({probes} probes)");
    println!("  time to first token, 8 streams running:   p50 {busy50:6.1} ms  p99 {busy99:6.1} ms");

    let model_mb = std::fs::metadata(&model).map(|m| m.len() as f64 / 1048576.0).unwrap_or(0.0);
    let budget_mb: f64 = budget.parse().unwrap_or(0.0);
    for (n, kib) in &peaks {
        println!(
            "  peak enclave RSS at {n:2} streams: {:.0} MiB (model file {model_mb:.0} MiB + KV budget {budget_mb:.0} MiB = {:.0} MiB)",
            *kib as f64 / 1024.0,
            model_mb + budget_mb
        );
    }
    let _ = host.kill();
    let _ = enclave.kill();
    let _ = std::fs::remove_dir_all(&work);

    let rate_at = |n: usize| rates.iter().find(|(k, _)| *k == n).map_or(0.0, |(_, r)| *r);
    let peak_at = |n: usize| peaks.iter().find(|(k, _)| *k == n).map_or(0.0, |(_, k)| *k as f64 / 1024.0);
    let mut json = format!("\"threads\":{threads},\"tokens\":{tokens}");
    for (n, r) in &rates {
        json += &format!(",\"streams_{n}_tokens_per_s\":{r:.1}");
    }
    json += &format!(
        ",\"batch8_vs_single\":{:.2},\"ttft_idle_p50_ms\":{idle50:.1},\"ttft_idle_p99_ms\":{idle99:.1},\"ttft_busy_p50_ms\":{busy50:.1},\"ttft_busy_p99_ms\":{busy99:.1},\"peak_rss_8_mib\":{:.0},\"peak_rss_16_mib\":{:.0},\"model_file_mib\":{model_mb:.0},\"kv_budget_mib\":{budget_mb:.0}",
        rate_at(8) / rate_at(1).max(1e-9),
        peak_at(8),
        peak_at(16)
    );
    println!("BENCH_JSON {{{json}}}");
}
