//! What cross-operator audits cost the user: answer latency through `vouch proxy` with
//! `--audit-rate 0.1` against the same proxy without audits, requests alternating between
//! the two (same enclave, same prompts), so drift hits both alike. The audited proxy
//! re-asks a second enclave (another simulated chip) after each sampled answer has gone out.
//!
//! `bench-audit --bin-dir target/release [--model FILE] [--requests 60] [--tokens 16]
//! [--rate 0.1]` prints p50/p99 per proxy and a final `BENCH_JSON {...}` line. Both
//! enclaves share this machine's cores: an audit competes with the next answer for CPU
//! here, which a second operator's machine would not.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
// a benchmark driver: fail loudly
#![allow(clippy::zombie_processes)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// Shared with the other drivers; this one needs only the flags and process start.
#[allow(dead_code)]
mod support;
use support::{arg, start};

/// One non-streamed answer through the proxy at `addr`; its wall time in ms.
fn ask(addr: &str, prompt: &str, tokens: u32) -> f64 {
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "stream": false,
    })
    .to_string();
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("connect proxy");
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200") && text.contains("\"verified\":true"), "not verified: {text}");
    ms
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let bin = PathBuf::from(arg("--bin-dir", "target/release"));
    let model = arg("--model", "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let requests: usize = arg("--requests", "60").parse().unwrap();
    let tokens: u32 = arg("--tokens", "16").parse().unwrap();
    let rate = arg("--rate", "0.1");
    let tmp = std::env::temp_dir().join(format!("vouch-bench-audit-{}", std::process::id()));
    let (a_dir, b_dir) = (tmp.join("chip-a"), tmp.join("chip-b"));
    let enclave = |dir: &Path| {
        let args = ["serve", "--model", &model, "--listen", "tcp:127.0.0.1:0", "--attestation", "sim"];
        let mut args: Vec<&str> = args.to_vec();
        let dir = dir.to_str().unwrap().to_owned();
        args.extend(["--sim-dir", &dir, "--sim-latency-ms", "8"]);
        let (child, addr) = start(&bin.join("vouch-enclave"), &args, "vouch-enclave listening on ");
        (child, format!("https://{}", addr.trim_start_matches("tcp:")))
    };
    let (mut a, a_url) = enclave(&a_dir);
    // A second chip: the same simulated root and keys, another CHIP_ID.
    std::fs::create_dir_all(&b_dir).unwrap();
    let keys = std::fs::read(a_dir.join("sim-keys.cbor")).unwrap();
    let mut keys: vouch_attestation::sim::SimKeyMaterial =
        vouch_attestation::binding::from_cbor(&keys).unwrap();
    keys.chip_id.iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(b_dir.join("sim-keys.cbor"), vouch_attestation::binding::to_cbor(&keys)).unwrap();
    let (mut b, b_url) = enclave(&b_dir);
    let root = a_dir.join("sim-ark.pem").to_str().unwrap().to_owned();
    let policy = a_dir.join("sim-policy.toml").to_str().unwrap().to_owned();
    let audits = tmp.join("audits").to_str().unwrap().to_owned();
    let proxy = |extra: &[&str]| {
        let mut args = vec![
            "proxy",
            "--url",
            &a_url,
            "--trust-sim-root",
            &root,
            "--policy",
            &policy,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        start(&bin.join("vouch"), &args, "vouch proxy listening on ")
    };
    let (mut plain, plain_addr) = proxy(&[]);
    let (mut audited, audited_addr) =
        proxy(&["--audit-url", &b_url, "--audit-rate", &rate, "--audit-out", &audits]);
    // Warm both paths (attestation, first connection).
    ask(&plain_addr, "Say hi.", 2);
    ask(&audited_addr, "Say hi.", 2);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for i in 0..requests {
        let prompt = format!("Write two sentences about the number {i}.");
        if i % 2 == 0 {
            off.push(ask(&plain_addr, &prompt, tokens));
            on.push(ask(&audited_addr, &prompt, tokens));
        } else {
            on.push(ask(&audited_addr, &prompt, tokens));
            off.push(ask(&plain_addr, &prompt, tokens));
        }
    }
    // How many audits ran (and agreed) on the audited proxy.
    let mut s = std::net::TcpStream::connect(&audited_addr).unwrap();
    write!(s, "GET /v1/vouch/audits HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let summary: serde_json::Value =
        raw.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or_default();
    let (p50_off, p99_off, p50_on, p99_on) = (
        percentile(&mut off, 0.5),
        percentile(&mut off, 0.99),
        percentile(&mut on, 0.5),
        percentile(&mut on, 0.99),
    );
    println!("{requests} answers per proxy, {tokens} tokens each, alternating");
    println!("audit rate 0:    p50 {p50_off:.1} ms  p99 {p99_off:.1} ms");
    println!("audit rate {rate}: p50 {p50_on:.1} ms  p99 {p99_on:.1} ms  audits {}", summary["counts"]);
    println!(
        "BENCH_JSON {{\"audit_rate\":{rate},\"audit_requests\":{requests},\"audit_off_p50_ms\":{p50_off:.1},\"audit_off_p99_ms\":{p99_off:.1},\"audit_on_p50_ms\":{p50_on:.1},\"audit_on_p99_ms\":{p99_on:.1},\"audit_counts\":{}}}",
        summary["counts"]
    );
    for c in [&mut plain, &mut audited, &mut a, &mut b] {
        let _ = c.kill();
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
