//! Load and bad input: many concurrent clients against one enclave with a small queue
//! (every answer verified or a clean 429, none lost), slowloris connections that must
//! not block anyone else, hostile request bytes that get clear errors — and the
//! enclave's memory stays bounded throughout.

// Test code: panicking with a message is the right failure mode, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vouch_e2e::mitm::{self, block_on, https_raw, parse_response, seeded_sim_dir};
use vouch_e2e::*;

fn sim_root(sim: &Path) -> String {
    sim.join("sim-ark.pem").to_str().unwrap().to_owned()
}

/// Resident set of a process, in KiB (Linux /proc).
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Growth of the enclave's resident set allowed across a test, in KiB. The model and
/// its buffers are resident before the baseline is taken; what remains is allocator
/// slack, per-connection buffers and caches, none of which may grow with traffic.
const RSS_GROWTH_BOUND_KIB: u64 = 96 * 1024;

fn verified_chat(url: &str, root: &str) {
    let out = vouch(&["chat", "--url", url, "--trust-sim-root", root, "--max-tokens", "2", "Say hi."]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("VERIFIED (SIMULATED root, NOT AMD)"), "{}", text(&out));
}

#[derive(Default, Debug)]
struct Tally {
    verified: usize,
    busy: usize,
    lost: Vec<String>,
    batches: BTreeSet<u64>,
    receipts: Vec<std::path::PathBuf>,
    /// Seconds each verified answer took, client process start to exit.
    latencies: Vec<f64>,
}

#[test]
fn sixty_four_concurrent_clients_get_verified_answers_or_clean_429s() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (enclave, addr) = start_enclave(&sim, &["--queue-depth", "4", "--sim-latency-ms", "8"]);
    let (_host, host_addr) = start_host(&[&addr]);
    let url = format!("https://{host_addr}");
    let root = sim_root(&sim);
    verified_chat(&url, &root);
    let rss_before = vm_rss_kib(enclave.pid());

    const CLIENTS: usize = 64;
    let run_for = Duration::from_secs(20);
    let deadline = Instant::now() + run_for;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, root, tally) = (url.clone(), root.clone(), tally.clone());
            let dir = tmp.path().to_owned();
            std::thread::spawn(move || {
                let mut k = 0;
                // Every client makes at least one attempt, then keeps going until the deadline.
                while k == 0 || Instant::now() < deadline {
                    let receipt = dir.join(format!("r-{i}-{k}.json"));
                    let started = Instant::now();
                    let out = vouch_command(&[
                        "chat",
                        "--url",
                        &url,
                        "--trust-sim-root",
                        &root,
                        "--max-tokens",
                        "2",
                        "--json",
                    ])
                    .arg("--receipt-out")
                    .arg(&receipt)
                    .arg(format!("Say the number {i}."))
                    .output()
                    .unwrap();
                    k += 1;
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                    let mut t = tally.lock().unwrap();
                    match out.status.code() {
                        Some(0)
                            if v["verified"] == true
                                && v["verdict"]["receipt"]["exchange_checked"] == true =>
                        {
                            t.verified += 1;
                            t.latencies.push(started.elapsed().as_secs_f64());
                            t.batches.insert(v["verdict"]["receipt"]["batch_seq"].as_u64().unwrap());
                            t.receipts.push(receipt);
                        }
                        Some(2)
                            if v["verified"] == false
                                && v["error"]
                                    .as_str()
                                    .is_some_and(|e| e.starts_with("enclave answered HTTP 429")) =>
                        {
                            t.busy += 1
                        }
                        _ => t.lost.push(format!("client {i}: exit {:?}: {}", out.status.code(), text(&out))),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut t = tally.lock().unwrap();
    t.latencies.sort_by(f64::total_cmp);
    let p = |q: f64| {
        t.latencies.get(((t.latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0)
    };
    eprintln!(
        "{CLIENTS} clients for {run_for:?}: {} verified ({} receipt batches), {} answered 429, {} lost; \
         verified answer latency p50 {:.2} s, p99 {:.2} s",
        t.verified,
        t.batches.len(),
        t.busy,
        t.lost.len(),
        p(0.5),
        p(0.99)
    );
    assert!(t.lost.is_empty(), "answers lost or unverified:\n{}", t.lost.join("\n"));
    assert!(t.verified >= 4, "only {} verified answers", t.verified);
    assert!(t.busy > 0, "a queue of 4 should have pushed back on {CLIENTS} clients");

    // Receipts re-verify offline (a sample: each `vouch verify` checks the chain again).
    for r in t.receipts.iter().step_by((t.receipts.len() / 8).max(1)) {
        let out = vouch(&["verify", r.to_str().unwrap(), "--trust-sim-root", &root]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    // Still serving, memory bounded.
    verified_chat(&url, &root);
    let rss_after = vm_rss_kib(enclave.pid());
    eprintln!("enclave VmRSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + RSS_GROWTH_BOUND_KIB,
        "enclave RSS grew from {rss_before} to {rss_after} KiB"
    );
}

/// One `vouch chat --json` with the given sampling; returns (exit code, JSON output).
fn sampled_chat(
    url: &str,
    root: &str,
    question: &str,
    temperature: &str,
    seed: &str,
    stream: bool,
) -> (Option<i32>, Value) {
    let mut args = vec![
        "chat",
        "--url",
        url,
        "--trust-sim-root",
        root,
        "--max-tokens",
        "24",
        "--temperature",
        temperature,
        "--seed",
        seed,
        "--json",
    ];
    if !stream {
        args.push("--no-stream");
    }
    args.push(question);
    let out = vouch(&args);
    (out.status.code(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// The receipts issued under load verify, and each answer equals the answer the same
/// request gets alone: batching changes nothing a client or an auditor can see.
#[test]
fn answers_under_load_equal_their_solo_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (_enclave, addr) = start_enclave(&sim, &["--max-batch", "8", "--prefill-chunk", "16"]);
    let (_host, host_addr) = start_host(&[&addr]);
    let url = format!("https://{host_addr}");
    let root = sim_root(&sim);
    let requests: Vec<(String, &str, String, bool)> = (0..10)
        .map(|i| {
            let question = format!("Tell me a short story about the number {i}.");
            let temperature = if i % 3 == 0 { "0" } else { "0.8" };
            (question, temperature, (1000 + i).to_string(), i % 2 == 0)
        })
        .collect();
    let solo: Vec<String> = requests
        .iter()
        .map(|(q, t, seed, stream)| {
            let (code, v) = sampled_chat(&url, &root, q, t, seed, *stream);
            assert_eq!(code, Some(0), "solo {q}: {v}");
            v["text"].as_str().unwrap().to_owned()
        })
        .collect();
    let loaded: Vec<_> = requests
        .iter()
        .cloned()
        .map(|(q, t, seed, stream)| {
            let (url, root) = (url.clone(), root.clone());
            std::thread::spawn(move || sampled_chat(&url, &root, &q, t, &seed, stream))
        })
        .collect();
    for (i, (handle, solo)) in loaded.into_iter().zip(&solo).enumerate() {
        let (code, v) = handle.join().unwrap();
        assert_eq!(code, Some(0), "request {i} under load: {v}");
        assert_eq!(v["verified"], true, "request {i}: {v}");
        assert_eq!(v["verdict"]["receipt"]["exchange_checked"], true, "request {i}: {v}");
        assert_eq!(
            v["text"].as_str().unwrap(),
            solo,
            "request {i}: the answer under load differs from its solo answer"
        );
    }
    // The enclave's metrics (inside attested TLS) saw batches of more than one.
    let raw = block_on(https_raw(
        &host_addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    ))
    .unwrap();
    let response = parse_response(&raw);
    assert_eq!(response.status, 200, "{}", response.head);
    let body = String::from_utf8_lossy(&response.body).into_owned();
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("vouch_engine_{name}{{model=\"SmolLM2-135M-Instruct\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
    };
    assert_eq!(value("max_batch"), 8.0);
    assert!(value("batched_sequences_total") > value("steps_total"), "no step held two sequences:\n{body}");
    assert_eq!(value("active_sequences"), 0.0);
    assert_eq!(value("kv_reserved_bytes"), 0.0);
}

/// How a slow connection ended.
#[derive(Debug)]
struct SlowEnd {
    /// When the server closed it (or gave up on it), since the start.
    after: Duration,
    /// What the server sent before closing.
    response: Vec<u8>,
}

/// Opens TLS through `addr`, sends `head` one byte every `gap`, then `body` the same way;
/// returns when the server closes the connection (or after `limit`).
async fn dribble(addr: String, head: Vec<u8>, body: Vec<u8>, gap: Duration, limit: Duration) -> SlowEnd {
    let start = Instant::now();
    let Ok(mut tls) = mitm::tls_connect(&addr).await else {
        return SlowEnd { after: start.elapsed(), response: b"handshake refused".to_vec() };
    };
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let bytes: Vec<u8> = head.into_iter().chain(body).collect();
    let mut next = 0;
    loop {
        if start.elapsed() > limit {
            break;
        }
        tokio::select! {
            r = tls.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(gap) => {
                if next < bytes.len() {
                    if tls.write_all(&bytes[next..next + 1]).await.is_err() || tls.flush().await.is_err() {
                        break;
                    }
                    next += 1;
                }
            }
        }
    }
    SlowEnd { after: start.elapsed(), response }
}

/// A TCP connection that never starts TLS; returns when the other side closes it.
async fn silent(addr: String, limit: Duration) -> Duration {
    let start = Instant::now();
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else { return start.elapsed() };
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(limit, s.read(&mut buf)).await;
    start.elapsed()
}

#[test]
fn slowloris_connections_do_not_block_other_clients_and_are_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (_enclave, addr) = start_enclave(&sim, &[]);
    let (_host, host_addr) = start_host(&[&addr]);
    let url = format!("https://{host_addr}");
    let root = sim_root(&sim);
    let limit = Duration::from_secs(60);

    block_on(async {
        let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n".to_vec();
        let slow_heads: Vec<_> = (0..48)
            .map(|_| {
                tokio::spawn(dribble(
                    host_addr.clone(),
                    head.clone(),
                    Vec::new(),
                    Duration::from_millis(300),
                    limit,
                ))
            })
            .collect();
        // Junk dribbled where a request head should be.
        let slow_junk: Vec<_> = (0..4)
            .map(|_| {
                let body = vec![b' '; 200];
                tokio::spawn(dribble(host_addr.clone(), Vec::new(), body, Duration::from_millis(500), limit))
            })
            .collect();
        // A complete head at once, then the body a byte at a time.
        let fast_head_slow_body: Vec<_> = (0..4)
            .map(|_| {
                let addr = host_addr.clone();
                let head = head.clone();
                tokio::spawn(async move {
                    let start = Instant::now();
                    let mut tls = mitm::tls_connect(&addr).await.unwrap();
                    tls.write_all(&head).await.unwrap();
                    tls.flush().await.unwrap();
                    let mut response = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        tokio::select! {
                            r = tls.read(&mut buf) => match r {
                                Ok(0) | Err(_) => break,
                                Ok(n) => response.extend_from_slice(&buf[..n]),
                            },
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                                if start.elapsed() > limit || tls.write_all(b" ").await.is_err() || tls.flush().await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    SlowEnd { after: start.elapsed(), response }
                })
            })
            .collect();
        let silents: Vec<_> = (0..16).map(|_| tokio::spawn(silent(host_addr.clone(), limit))).collect();

        // Meanwhile a real client is served promptly.
        let started = Instant::now();
        let out = tokio::process::Command::from(vouch_command(&[
            "chat",
            "--url",
            &url,
            "--trust-sim-root",
            &root,
            "--max-tokens",
            "4",
            "Say hi.",
        ]))
        .output()
        .await
        .unwrap();
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        eprintln!("a verified answer during the slowloris took {took:?}");
        assert!(took < Duration::from_secs(30), "the real client waited {took:?}");

        // The enclave cuts the attackers off (handshake/header timeouts 10 s, body 30 s).
        for h in slow_heads {
            let end = h.await.unwrap();
            assert!(end.after < Duration::from_secs(25), "a slow header lived {:?}", end.after);
            let r = parse_response(&end.response);
            assert!(r.status == 0 || r.status == 408, "slow header got {}: {}", r.status, r.text());
        }
        for h in fast_head_slow_body {
            let end = h.await.unwrap();
            assert!(end.after < Duration::from_secs(45), "a slow body lived {:?}", end.after);
            let r = parse_response(&end.response);
            assert_eq!(r.status, 408, "{}", r.text());
            assert!(r.text().contains("request body too slow"), "{}", r.text());
        }
        for h in slow_junk {
            let end = h.await.unwrap();
            assert!(end.after < Duration::from_secs(25), "a slow request lived {:?}", end.after);
        }
        for h in silents {
            let after = h.await.unwrap();
            assert!(after < Duration::from_secs(25), "a silent connection lived {after:?}");
        }
    });
}

/// One hostile request and what it must get.
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
    /// Substring of the body, or "" for none.
    body: &'static str,
}

impl Case {
    /// Whether `r` is the expected outcome. A server that refuses an oversized head may
    /// close while the rest is still being written: no response at all is also a refusal.
    fn accepts(&self, r: &mitm::RawResponse) -> bool {
        (r.status == self.status && r.text().contains(self.body)) || (self.status == 431 && r.status == 0)
    }
}

fn post(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn chat_json(extra: &str) -> Vec<u8> {
    post(format!(r#"{{"messages":[{{"role":"user","content":"hi"}}]{extra}}}"#).as_bytes())
}

#[test]
fn hostile_requests_get_clear_errors_and_memory_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (enclave, addr) = start_enclave(&sim, &[]);
    let (_host, host_addr) = start_host(&[&addr]);
    let url = format!("https://{host_addr}");
    let root = sim_root(&sim);
    verified_chat(&url, &root);
    let rss_before = vm_rss_kib(enclave.pid());

    let nested = format!(r#"{{"messages":{}1{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let many_messages = format!(
        r#"{{"messages":[{}],"max_tokens":1}}"#,
        vec![r#"{"role":"user","content":"hello there"}"#; 20_000].join(",")
    );
    let long_prompt = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}],"max_tokens":1}}"#,
        "lorem ipsum ".repeat(80_000)
    );
    let cases = vec![
        Case { name: "max_tokens 0", raw: chat_json(r#","max_tokens":0"#), status: 400, body: "invalid_max_tokens" },
        Case { name: "max_tokens negative", raw: chat_json(r#","max_tokens":-5"#), status: 400, body: "invalid_json" },
        Case {
            name: "max_tokens past u32",
            raw: chat_json(r#","max_tokens":4294967296"#),
            status: 400,
            body: "invalid_json",
        },
        Case { name: "temperature 1e400", raw: chat_json(r#","temperature":1e400"#), status: 400, body: "invalid_json" },
        Case { name: "temperature negative", raw: chat_json(r#","temperature":-1"#), status: 400, body: "invalid_request" },
        Case { name: "temperature string", raw: chat_json(r#","temperature":"hot""#), status: 400, body: "invalid_json" },
        Case { name: "top_p 7", raw: chat_json(r#","top_p":7"#), status: 400, body: "invalid_request" },
        Case { name: "no messages", raw: post(br#"{"messages":[]}"#), status: 400, body: "invalid_request" },
        Case {
            name: "unknown role",
            raw: post(br#"{"messages":[{"role":"wizard","content":"hi"}]}"#),
            status: 400,
            body: "invalid_request",
        },
        Case {
            name: "content not a string",
            raw: post(br#"{"messages":[{"role":"user","content":{"a":1}}]}"#),
            status: 400,
            body: "invalid_json",
        },
        Case { name: "JSON nested 100000 deep", raw: post(nested.as_bytes()), status: 400, body: "invalid_json" },
        Case { name: "trailing garbage", raw: post(br#"{"messages":[]} {}"#), status: 400, body: "invalid_json" },
        Case { name: "20000 messages", raw: post(many_messages.as_bytes()), status: 400, body: "error" },
        Case { name: "960 KB prompt", raw: post(long_prompt.as_bytes()), status: 400, body: "error" },
        Case {
            name: "GET on chat",
            raw: b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            status: 405,
            body: "method_not_allowed",
        },
        Case {
            name: "bad chunked encoding",
            raw: b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(),
            status: 400,
            body: "",
        },
        Case {
            // hyper bounds a request head's buffer (about 400 KB); past it, 431.
            name: "1 MB header",
            raw: format!("GET /v1/models HTTP/1.1\r\nhost: x\r\nx-junk: {}\r\nconnection: close\r\n\r\n", "a".repeat(1_000_000))
                .into_bytes(),
            status: 431,
            body: "",
        },
        Case {
            name: "1000 headers",
            raw: format!(
                "GET /v1/models HTTP/1.1\r\nhost: x\r\n{}connection: close\r\n\r\n",
                (0..1000).map(|i| format!("x-h{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
            status: 431,
            body: "",
        },
        Case { name: "not HTTP", raw: b"\x00\x01\x02\x03 hello\r\n\r\n".to_vec(), status: 400, body: "" },
    ];

    let mut table = Vec::new();
    let mut wrong = Vec::new();
    let mut rss_rounds = Vec::new();
    let pid = enclave.pid();
    block_on(async {
        // Several rounds: the first pays one-off costs (allocator arenas sized for a
        // 960 KB prompt, tokenizer caches); later rounds must not add to them.
        for round in 0..ROUNDS {
            for c in &cases {
                let raw = https_raw(&host_addr, &c.raw, Duration::from_secs(120)).await.unwrap_or_default();
                let r = parse_response(&raw);
                if round == 0 {
                    table.push(format!(
                        "{:<34} -> {} {}",
                        c.name,
                        r.status,
                        r.text().chars().take(110).collect::<String>()
                    ));
                }
                if !c.accepts(&r) {
                    wrong.push(format!(
                        "{}: expected {} {:?}, got {} {}",
                        c.name,
                        c.status,
                        c.body,
                        r.status,
                        r.text()
                    ));
                }
            }
            rss_rounds.push(vm_rss_kib(pid));
        }
        // Not TLS at all, to the TLS port: dropped, nothing answered in clear.
        let mut s = tokio::net::TcpStream::connect(&host_addr).await.unwrap();
        s.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
        assert!(!mitm::contains(&buf, b"HTTP/1.1 200"), "plain HTTP got an answer");
    });
    eprintln!("hostile requests:\n  {}", table.join("\n  "));
    assert!(wrong.is_empty(), "unexpected outcomes:\n{}", wrong.join("\n"));

    verified_chat(&url, &root);
    let rss_after = vm_rss_kib(enclave.pid());
    eprintln!("enclave VmRSS {rss_before} KiB, after each round {rss_rounds:?}, at the end {rss_after} KiB");
    // One-off growth is bounded ...
    assert!(
        rss_after < rss_before + HOSTILE_RSS_BOUND_KIB,
        "enclave RSS grew from {rss_before} to {rss_after} KiB"
    );
    // ... and repeating the same abuse adds (almost) nothing.
    let steady = rss_rounds[ROUNDS - 1].saturating_sub(rss_rounds[1]);
    assert!(steady < RSS_GROWTH_BOUND_KIB / 2, "RSS kept growing across rounds: {rss_rounds:?}");
}

/// Rounds of hostile requests.
const ROUNDS: usize = 4;
/// One-off growth allowed after the hostile requests: a 960 KB prompt tokenizes to
/// 400 000 tokens before it is refused, and the allocator keeps those pages.
const HOSTILE_RSS_BOUND_KIB: u64 = 256 * 1024;
