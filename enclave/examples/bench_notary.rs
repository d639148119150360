//! Group commit benchmark: answers per second and reports per second for N concurrent
//! clients that each need a receipt per answer, with a simulated report latency, group
//! commit on and off. The model is left out on purpose (each "answer" is ready at once)
//! so the figure isolates the receipt pipeline; the model's own speed is measured by
//! `scripts/bench-model.sh`.
//!
//! `cargo run --release -p vouch-enclave --example bench_notary [-- SECONDS]`

#![allow(clippy::expect_used)] // a benchmark driver: fail loudly on broken fixtures

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vouch_attestation::binding;
use vouch_attestation::receipt::ReceiptLeaf;
use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};
use vouch_enclave::notary::Notary;
use vouch_enclave::provider::SimProvider;

fn leaf(i: u64) -> Vec<u8> {
    binding::to_cbor(&ReceiptLeaf {
        version: vouch_attestation::receipt::FORMAT_VERSION,
        request_sha256: i.to_le_bytes().repeat(4),
        output_sha256: vec![0; 32],
        finish_reason: "stop".into(),
        temperature: 0.0,
        top_p: None,
        seed: 0,
        max_tokens: 1,
        model_sha256: vec![0; 32],
        prompt_tokens: 1,
        completion_tokens: 1,
        response_id: format!("r{i}"),
        replay: Some(vouch_attestation::receipt::ReplaySpec::for_tests()),
        decoding: Some(vouch_attestation::receipt::DecodingSpec::unconstrained()),
        logprobs_sha256: None,
        salt: Some(i.to_le_bytes().repeat(4)),
    })
}

async fn run(clients: usize, latency_ms: u64, group: bool, secs: f64) -> (f64, f64, f64) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../attestation/testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor"
    );
    let keys: SimKeyMaterial = binding::from_cbor(&std::fs::read(path).expect("keys")).expect("keys");
    let sp = SimulatedSp::from_keys(&keys).expect("sim");
    // Every answer goes to a durable answer log (fsync per batch), as in `serve`.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = vouch_enclave::answer_log::AnswerLog::open(dir.path(), &[1; 32]).expect("log");
    let notary = Notary::start(
        Arc::new(SimProvider::from_simulator(sp, [0; 48], Duration::from_millis(latency_ms))),
        [0; 32],
        vec![[0; 32]],
        log,
        group,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicU64::new(0));
    let max_wait = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (n, stop, answers, max_wait) = (notary.clone(), stop.clone(), answers.clone(), max_wait.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c as u64 * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if n.receipt([0; 32], leaf(i)).await.is_ok() {
                    answers.fetch_add(1, Ordering::Relaxed);
                    max_wait.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let el = start.elapsed().as_secs_f64();
    let a = answers.load(Ordering::Relaxed) as f64 / el;
    let r = notary.stats().reports.load(Ordering::Relaxed) as f64 / el;
    (a, r, max_wait.load(Ordering::Relaxed) as f64 / 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    println!(
        "{:>8} {:>8} {:>6} {:>12} {:>12} {:>12}",
        "clients", "latency", "group", "answers/s", "reports/s", "max wait ms"
    );
    let mut json = Vec::new();
    for latency in [8u64, 50] {
        for clients in [1usize, 8, 32, 64] {
            for group in [true, false] {
                let (a, r, w) = run(clients, latency, group, secs).await;
                println!(
                    "{clients:>8} {latency:>6}ms {:>6} {a:>12.1} {r:>12.1} {w:>12.1}",
                    if group { "on" } else { "off" }
                );
                json.push(format!(
                    "{{\"clients\":{clients},\"latency_ms\":{latency},\"group_commit\":{group},\"answers_per_s\":{a:.1},\"reports_per_s\":{r:.1},\"max_wait_ms\":{w:.1}}}"
                ));
            }
        }
    }
    println!("BENCH_JSON {{\"group_commit\":[{}]}}", json.join(","));
}
