//! The second leg of trust, end to end: a lying enclave (the test build's
//! `VOUCH_TEST_LIE_AFTER`, which alters one completion token per answer and still signs
//! receipts for it) is caught by the proxy's cross-operator audit and by `vouch replay`,
//! every time; two honest enclaves on different chips are never flagged, over 200
//! randomised requests (greedy and sampled, seeded and not, streamed and not), and every one
//! of those answers replays as MATCH.

// Test code: panicking with a message is the right failure mode, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde_json::Value;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vouch_client::receipts::ReceiptFile;
use vouch_e2e::mitm::{parse_response, second_chip_sim_dir, seeded_sim_dir, RawResponse};
use vouch_e2e::*;

fn sim_root(sim: &Path) -> String {
    sim.join("sim-ark.pem").to_str().unwrap().to_owned()
}

/// A plain-HTTP request to the proxy at `addr`; the whole response.
fn http(addr: &str, method: &str, path: &str, body: &str) -> RawResponse {
    plain_http(addr, method, path, body, Duration::from_secs(300))
}

/// A verified answer through the proxy: (text, the final JSON — the whole answer, or the
/// stream's receipt-carrying last chunk — and its vouch_verdict).
fn chat(addr: &str, body: &Value) -> (String, Value) {
    let (text, last) = proxy_answer(addr, body);
    assert_eq!(last["vouch_verdict"]["verified"], true, "{last}");
    (text, last)
}

/// Polls an audit until it is no longer pending.
fn audit_result(addr: &str, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = http(addr, "GET", &format!("/v1/vouch/audits/{id}"), "");
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        if v["status"] != "pending" {
            return v;
        }
        assert!(Instant::now() < deadline, "audit {id} still pending");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_proxy(primary: &str, audit: &str, root: &str, out: &Path) -> (Proc, String) {
    let mut p = Proc::spawn(
        &bin("vouch"),
        &[
            "proxy",
            "--audit-concurrency",
            "256",
            "--url",
            primary,
            "--audit-url",
            audit,
            "--audit-rate",
            "1",
            "--audit-out",
            out.to_str().unwrap(),
            "--trust-sim-root",
            root,
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let addr = p.wait_for("vouch proxy listening on ", Duration::from_secs(120));
    (p, addr)
}

fn url(tcp: &str) -> String {
    format!("https://{}", tcp.trim_start_matches("tcp:"))
}

fn request(prompt: &str, max_tokens: u32, temperature: f64, seed: Option<u64>, stream: bool) -> Value {
    let mut v = serde_json::json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens, "temperature": temperature, "stream": stream,
    });
    if let Some(s) = seed {
        v["seed"] = s.into();
    }
    v
}

/// The receipt file of an answer the proxy relayed (the request bytes are the body sent).
fn receipt_file(body: &Value, text: &str, last: &Value) -> ReceiptFile {
    let tokens = serde_json::from_value(last["vouch_completion_tokens"].clone()).ok();
    ReceiptFile::new(last["vouch_receipt"].as_str().unwrap(), body.to_string().as_bytes(), text, None, tokens)
}

#[test]
fn a_lying_enclave_is_caught_by_the_audit_and_by_replay_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let sim_a = seeded_sim_dir(tmp.path());
    let sim_b = second_chip_sim_dir(tmp.path());
    let (_liar, liar) = start_enclave_env(&sim_a, &[], &[("VOUCH_TEST_LIE_AFTER", "2")]);
    let (_honest, honest) = start_enclave(&sim_b, &[]);
    let audits = tmp.path().join("audits");
    let root = sim_root(&sim_a);
    let (_proxy, addr) = start_proxy(&url(&liar), &url(&honest), &root, &audits);
    let prompt = "Describe a lighthouse in three sentences.";
    let cases = [
        request(prompt, 12, 0.0, None, false),
        request(prompt, 12, 0.0, None, true),
        request(prompt, 12, 0.8, Some(7), true),
        // No seed: the liar draws one; the audit enclave is handed it (vouch-seed).
        request(prompt, 12, 0.9, None, false),
    ];
    for (i, body) in cases.iter().enumerate() {
        // The lie is hardware-signed: the answer verifies.
        let (text, last) = chat(&addr, body);
        let id = last["vouch_verdict"]["audit"]["id"].as_u64().expect("every answer is audited");
        let result = audit_result(&addr, id);
        assert_eq!(result["status"], "mismatch", "case {i}: {result}");
        assert_eq!(result["differs"], "completion token ids", "case {i}: {result}");
        let proof = PathBuf::from(result["proof"].as_str().expect("proof written"));
        // Replaying the mismatch tells which enclave lied.
        let out = vouch(&[
            "replay",
            proof.to_str().unwrap(),
            "--model",
            model().to_str().unwrap(),
            "--trust-sim-root",
            &root,
        ]);
        let said = text_of(&out);
        assert_eq!(out.status.code(), Some(3), "case {i}: {said}");
        assert!(said.contains("primary answer") && said.contains("MISMATCH at completion token 2"), "{said}");
        assert!(said.contains("audit answer") && said.contains("MATCH (12 tokens"), "{said}");
        // And the user's own receipt, replayed alone, gives a fraud proof that holds.
        let file = tmp.path().join(format!("answer-{i}.json"));
        std::fs::write(&file, serde_json::to_vec(&receipt_file(body, &text, &last)).unwrap()).unwrap();
        let fraud = tmp.path().join(format!("answer-{i}.fraud.json"));
        let model_path = model();
        let replay = |extra: &[&str]| {
            let mut args = vec!["replay", "--model", model_path.to_str().unwrap(), "--trust-sim-root", &root];
            args.extend_from_slice(extra);
            vouch(&args)
        };
        let out = replay(&[file.to_str().unwrap(), "--proof-out", fraud.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "case {i}: {}", text_of(&out));
        assert!(text_of(&out).contains("MISMATCH: completion token 2"), "{}", text_of(&out));
        let out = replay(&["--check", fraud.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "case {i}: {}", text_of(&out));
        assert!(text_of(&out).contains("PROOF HOLDS"), "{}", text_of(&out));
    }
}

fn text_of(o: &std::process::Output) -> String {
    text(o)
}

/// A small deterministic generator for the randomised requests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "river", "mountain", "why", "sky", "blue", "explain", "a", "short", "poem", "about", "the", "sea",
    "list", "three", "fruits", "what", "is", "rust", "count", "to", "five", "story", "cat", "robot",
];

#[test]
fn honest_enclaves_are_never_flagged_over_two_hundred_randomised_requests() {
    const REQUESTS: usize = 200;
    const CLIENTS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let sim_a = seeded_sim_dir(tmp.path());
    let sim_b = second_chip_sim_dir(tmp.path());
    let (_a, a) = start_enclave(&sim_a, &[]);
    let (_b, b) = start_enclave(&sim_b, &[]);
    let root = sim_root(&sim_a);
    let (_proxy, addr) = start_proxy(&url(&a), &url(&b), &root, &tmp.path().join("audits"));
    let started = Instant::now();
    let answers: Vec<(Value, ReceiptFile, Value)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|w| {
                let addr = addr.clone();
                s.spawn(move || {
                    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                    let mut out = Vec::new();
                    for _ in 0..REQUESTS / CLIENTS {
                        let words: Vec<&str> = (0..2 + rng.next() % 8).map(|_| *rng.pick(WORDS)).collect();
                        let temperature = *rng.pick(&[0.0, 0.5, 0.9, 1.3]);
                        let seed = rng.next().is_multiple_of(2).then(|| rng.next());
                        let stream = rng.next().is_multiple_of(2);
                        let mut body =
                            request(&words.join(" "), 1 + (rng.next() % 8) as u32, temperature, seed, stream);
                        if rng.next().is_multiple_of(4) {
                            body["top_p"] = 0.9.into();
                        }
                        let (text, last) = chat(&addr, &body);
                        let id = last["vouch_verdict"]["audit"]["id"].as_u64().expect("audited");
                        out.push((receipt_file(&body, &text, &last), id, body));
                    }
                    out
                })
            })
            .collect();
        let sent: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        // The audits ran beside the answers; their verdicts, once all are in.
        sent.into_iter().map(|(f, id, b)| (b, f, audit_result(&addr, id))).collect()
    });
    let served = started.elapsed();
    assert_eq!(answers.len(), REQUESTS);
    for (body, _, audit) in &answers {
        assert_eq!(audit["status"], "agree", "an honest answer was flagged: {audit}\n{body}");
    }
    // The randomisation covers every kind of request.
    let count = |f: &dyn Fn(&Value) -> bool| answers.iter().filter(|(b, _, _)| f(b)).count();
    let sampled = |b: &Value| b["temperature"].as_f64().unwrap() > 0.0;
    let kinds = [
        ("streamed", count(&|b| b["stream"] == true)),
        ("sampled with a seed", count(&|b| sampled(b) && b.get("seed").is_some())),
        ("sampled without a seed", count(&|b| sampled(b) && b.get("seed").is_none())),
        ("greedy", count(&|b| !sampled(b))),
    ];
    for (kind, n) in kinds {
        assert!(n >= 10, "only {n} {kind} requests among {REQUESTS}");
    }
    let summary: Value = serde_json::from_slice(&http(&addr, "GET", "/v1/vouch/audits", "").body).unwrap();
    assert_eq!(summary["counts"]["agree"], REQUESTS as u64, "{summary}");
    assert!(summary["mismatches"].as_array().unwrap().is_empty(), "{summary}");
    // Every answer replays, bit for bit, on this machine's engine.
    let trust = vouch_client::cli::TrustArgs {
        policy: Some(sim_a.join("sim-policy.toml")),
        trust_sim_root: Some(PathBuf::from(&root)),
        allow_any_code: false,
        json: false,
    };
    let (anchors, _) = vouch_client::cli::load_anchors(&trust).unwrap();
    let policy = vouch_client::policy::ClientPolicy::load(&sim_a.join("sim-policy.toml")).unwrap();
    let mut engine = vouch_enclave::model::Model::load(&model()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let replay_started = Instant::now();
    let mut tokens = 0;
    for (_, file, _) in &answers {
        let loaded = file.clone().load().unwrap();
        match vouch_client::replay::replay_receipt(&anchors, &policy, &loaded, &mut engine, now).unwrap() {
            vouch_client::replay::ReplayVerdict::Match { tokens: n, .. } => tokens += n,
            vouch_client::replay::ReplayVerdict::Fraud(p) => panic!("an honest answer failed replay: {p:?}"),
        }
    }
    eprintln!(
        "{REQUESTS} randomised answers ({kinds:?}): served and audited in {:.1} s, all agree; \
         {tokens} completion tokens replayed in {:.1} s, all MATCH",
        served.as_secs_f64(),
        replay_started.elapsed().as_secs_f64()
    );
}

/// `POST /v1/chat/completions` straight to the enclave at `tcp_addr`, with extra headers.
fn enclave_chat(tcp_addr: &str, body: &Value, headers: &str) -> RawResponse {
    let body = body.to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: vouch-enclave\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n{body}",
        body.len()
    );
    let addr = tcp_addr.trim_start_matches("tcp:").to_owned();
    let raw = vouch_e2e::mitm::block_on(vouch_e2e::mitm::https_raw(
        &addr,
        req.as_bytes(),
        Duration::from_secs(120),
    ))
    .expect("enclave answered");
    parse_response(&raw)
}

#[test]
fn a_handed_over_seed_regenerates_the_same_answer_and_a_bad_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_e, addr) = start_enclave(&seeded_sim_dir(tmp.path()), &[]);
    let sampled = request("Name a colour.", 8, 1.2, None, false);
    let first = enclave_chat(&addr, &sampled, "");
    assert_eq!(first.status, 200, "{}", first.text());
    let first: Value = serde_json::from_slice(&first.body).unwrap();
    let seed = first["vouch_seed"].as_str().expect("a drawn seed is disclosed").to_owned();
    let again = enclave_chat(&addr, &sampled, &format!("vouch-seed: {seed}\r\n"));
    let again: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(again["choices"][0]["message"]["content"], first["choices"][0]["message"]["content"]);
    assert_eq!(again["vouch_completion_tokens"], first["vouch_completion_tokens"]);
    assert_eq!(again["vouch_seed"], seed.as_str());
    // A request that gives its own seed gets none disclosed, and cannot be handed another.
    let seeded = request("Name a colour.", 8, 1.2, Some(5), false);
    let r = enclave_chat(&addr, &seeded, "");
    assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap()["vouch_seed"], Value::Null);
    for (body, header) in [
        (&seeded, "vouch-seed: 7\r\n"),
        (&sampled, "vouch-seed: seven\r\n"),
        (&sampled, "vouch-seed: -1\r\n"),
    ] {
        let r = enclave_chat(&addr, body, header);
        assert_eq!(r.status, 400, "{header}: {}", r.text());
        let e: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(e["error"]["code"], "invalid_seed_header", "{e}");
    }
}
