//! Faults: the enclave dies mid-answer, restarts with a new TLS key, the host restarts,
//! start-up meets a missing model or an unusable disk. Clients either get a verified
//! answer or an error — never a partial answer presented as verified — and recover
//! (re-attesting) once the service is back.

// Test code: panicking with a message is the right failure mode, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vouch_e2e::mitm::{seeded_sim_dir, RawResponse};
use vouch_e2e::*;

fn sim_root(sim: &Path) -> String {
    sim.join("sim-ark.pem").to_str().unwrap().to_owned()
}

/// A non-streamed chat through `vouch proxy` at `addr` (plain HTTP on loopback).
fn proxy_chat(addr: &str, prompt: &str) -> RawResponse {
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": prompt}], "max_tokens": 4, "stream": false,
    })
    .to_string();
    plain_http(addr, "POST", "/v1/chat/completions", &body, Duration::from_secs(120))
}

/// Retries `proxy_chat` until it verifies or `limit` passes (the host may take a
/// health-check period to see a restarted enclave). Returns the verdict and attempts.
fn proxy_chat_until_verified(addr: &str, limit: Duration) -> (Value, usize) {
    let deadline = Instant::now() + limit;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = proxy_chat(addr, "Say hi.");
        if r.status == 200 {
            let v: Value = serde_json::from_slice(&r.body).expect("JSON answer");
            assert_eq!(v["vouch_verdict"]["verified"], true, "{v}");
            return (v["vouch_verdict"].clone(), attempts);
        }
        // Anything else must be an error, never an answer.
        assert!(r.status >= 400, "status {}: {}", r.status, r.text());
        assert!(
            Instant::now() < deadline,
            "no verified answer within {limit:?}; last: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_proxy(url: &str, root: &str) -> (Proc, String) {
    let mut p = Proc::spawn(
        &bin("vouch"),
        &["proxy", "--url", url, "--trust-sim-root", root, "--listen", "127.0.0.1:0"],
    );
    let addr = p.wait_for("vouch proxy listening on ", Duration::from_secs(60));
    (p, addr)
}

#[test]
fn enclave_killed_mid_stream_never_yields_a_verified_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (mut enclave, addr) = start_enclave(&sim, &[]);
    let (_host, host_addr) = start_host(&[&addr]);
    let mut child = vouch_command(&[
        "chat",
        "--url",
        &format!("https://{host_addr}"),
        "--trust-sim-root",
        &sim_root(&sim),
    ])
    .args(["--max-tokens", "400", "Write a long story about a lighthouse keeper and a storm."])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // Wait until the answer is visibly streaming, then kill the enclave.
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while printed.len() < 24 {
        let left = deadline.saturating_duration_since(Instant::now());
        printed.extend(rx.recv_timeout(left).expect("the answer never started streaming"));
    }
    enclave.kill();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    printed.extend(rx.try_iter().flatten());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let all = format!("{}{stderr}", String::from_utf8_lossy(&printed));
    assert_eq!(status.code(), Some(2), "{all}");
    assert!(!all.contains("VERIFIED ("), "a partial answer was presented as verified:\n{all}");
    assert!(stderr.contains("the text above is NOT verified"), "{all}");
}

/// A chat answer through the proxy: its text and its verdict.
fn proxy_verdict(addr: &str, body: &Value) -> (String, Value) {
    let (text, last) = proxy_answer(addr, body);
    (text, last["vouch_verdict"].clone())
}

#[test]
fn answers_survive_one_of_two_enclaves_killed_mid_run() {
    const CHATS: usize = 6;
    const PROXIED: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (mut doomed, a1) = start_enclave(&sim, &[]);
    let (_survivor, a2) = start_enclave(&sim, &[]);
    let (_host, host) = start_host(&[&a1, &a2]);
    let url = format!("https://{host}");
    let root = sim_root(&sim);
    let (_proxy, proxy) = start_proxy(&url, &root);
    let prompt = |i: usize| format!("Write a long story about lighthouse keeper number {i} and a storm.");
    // `vouch chat` processes, half of them streamed, each printing into its own buffer.
    let mut chats = Vec::new();
    for i in 0..CHATS {
        let receipt = tmp.path().join(format!("chat-{i}.json"));
        let mut cmd = vouch_command(&["chat", "--url", &url, "--trust-sim-root", &root]);
        cmd.args(["--max-tokens", "96", "--receipt-out", receipt.to_str().unwrap()]);
        if i % 2 == 1 {
            cmd.arg("--no-stream");
        }
        let mut child = cmd.arg(prompt(i)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = printed.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        chats.push((child, printed, reader, receipt));
    }
    // Requests through `vouch proxy`, half of them streamed.
    let bodies: Vec<Value> = (0..PROXIED)
        .map(|i| {
            serde_json::json!({
                "messages": [{"role": "user", "content": prompt(100 + i)}],
                "max_tokens": 96, "stream": i % 2 == 0,
            })
        })
        .collect();
    let proxied: Vec<_> = bodies
        .iter()
        .map(|b| {
            let (addr, b) = (proxy.clone(), b.clone());
            std::thread::spawn(move || proxy_verdict(&addr, &b))
        })
        .collect();
    // Kill one enclave once every streamed chat is visibly under way.
    let deadline = Instant::now() + Duration::from_secs(300);
    while chats.iter().step_by(2).any(|(_, p, _, _)| p.lock().unwrap().len() < 16) {
        assert!(Instant::now() < deadline, "the answers never started streaming");
        std::thread::sleep(Duration::from_millis(20));
    }
    doomed.kill();
    let mut resumed = 0;
    for (i, (mut child, printed, reader, receipt)) in chats.into_iter().enumerate() {
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        let stdout = String::from_utf8(printed.lock().unwrap().clone()).unwrap();
        assert_eq!(status.code(), Some(0), "chat {i}:\n{stdout}\n{stderr}");
        resumed += usize::from(stderr.contains("went away mid-answer"));
        // What was printed is exactly the verified answer, once: no piece repeated or lost.
        let file: Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
        let answer = file["output"].as_str().unwrap();
        assert!(
            stdout.starts_with(&format!("{answer}\n\nVERIFIED")),
            "chat {i} printed other text than its verified answer:\n{stdout}\n--- verified:\n{answer}"
        );
        let out = vouch(&["verify", receipt.to_str().unwrap(), "--trust-sim-root", &root]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    for (i, (t, body)) in proxied.into_iter().zip(&bodies).enumerate() {
        let (text, verdict) = t.join().unwrap();
        assert_eq!(verdict["verified"], true, "proxied {i}: {verdict}");
        resumed += usize::from(verdict.get("resumed").is_some());
        // The whole answer, once: the same request asked again of the survivor gives the same bytes.
        let (again, _) = proxy_answer(
            &proxy,
            &serde_json::json!({
                "messages": body["messages"], "max_tokens": 96, "stream": false,
            }),
        );
        assert_eq!(text, again, "proxied answer {i} was garbled or duplicated");
    }
    assert!(resumed > 0, "no answer was in flight on the killed enclave");
    eprintln!(
        "{} of {} answers were resumed on the surviving enclave; all verified",
        resumed,
        CHATS + PROXIED
    );
}

#[test]
fn enclave_restarted_with_a_new_tls_key_is_re_attested() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let sock = tmp.path().join("enclave.sock");
    let mut first = spawn_unix_enclave(&sim, &sock, &[]);
    let (_host, host_addr) = start_host(&[&format!("unix:{}", sock.display())]);
    let url = format!("https://{host_addr}");
    let root = sim_root(&sim);
    // A long-lived client (it pins the attested key) and a one-shot one.
    let (_proxy, proxy_addr) = start_proxy(&url, &root);
    let (before, _) = proxy_chat_until_verified(&proxy_addr, Duration::from_secs(60));
    let key_before = before["tls_spki_sha256"].as_str().unwrap().to_owned();

    first.kill();
    let _second = spawn_unix_enclave(&sim, &sock, &[]);

    // The proxy sees a new key on its next connection and re-attests before sending.
    let (after, attempts) = proxy_chat_until_verified(&proxy_addr, Duration::from_secs(60));
    let key_after = after["tls_spki_sha256"].as_str().unwrap();
    assert_ne!(key_before, key_after, "the restarted enclave should have a fresh TLS key");
    assert_eq!(before["measurement"], after["measurement"]);
    eprintln!("proxy recovered after {attempts} attempt(s); key {key_before} -> {key_after}");

    // A new client attests the new key.
    let out =
        vouch(&["chat", "--url", &url, "--trust-sim-root", &root, "--max-tokens", "4", "--json", "Say hi."]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["tls_spki_sha256"], key_after, "{v}");
}

#[test]
fn host_restarted_clients_carry_on() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (_enclave, addr) = start_enclave(&sim, &[]);
    let (mut host, host_addr) = start_host(&[&addr]);
    let url = format!("https://{host_addr}");
    let root = sim_root(&sim);
    let (_proxy, proxy_addr) = start_proxy(&url, &root);
    let (before, _) = proxy_chat_until_verified(&proxy_addr, Duration::from_secs(60));

    // The host goes away and comes back on the same address (the port the OS gave it).
    host.kill();
    let mut host = Proc::spawn(&bin("vouch-host"), &["--listen", &host_addr, "--enclave", &addr]);
    host.wait_for("vouch-host listening on ", Duration::from_secs(60));

    // The proxy reconnects; the enclave's key is unchanged, so its pin still holds.
    let (after, _) = proxy_chat_until_verified(&proxy_addr, Duration::from_secs(60));
    assert_eq!(before["tls_spki_sha256"], after["tls_spki_sha256"]);
    // And a new client succeeds.
    let out = vouch(&["chat", "--url", &url, "--trust-sim-root", &root, "--max-tokens", "4", "Say hi."]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("VERIFIED (SIMULATED root, NOT AMD)"), "{}", text(&out));
}

fn serve_once(model: &Path, sim: &Path) -> Output {
    run_bounded(
        Command::new(bin("vouch-enclave")).args([
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--listen",
            "tcp:127.0.0.1:0",
            "--attestation",
            "sim",
            "--sim-dir",
            sim.to_str().unwrap(),
        ]),
        Duration::from_secs(120),
    )
}

fn assert_fails_with(out: &Output, reason: &str) {
    let t = text(out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(reason), "expected {reason:?} in:\n{t}");
    assert!(!t.contains("listening on"), "{t}");
}

#[test]
fn start_up_failures_give_a_clear_message_and_a_nonzero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());

    // Missing model.
    let missing = tmp.path().join("missing.gguf");
    let out = serve_once(&missing, &sim);
    assert_fails_with(
        &out,
        &format!("vouch-enclave: error: model: model file {} not found", missing.display()),
    );

    // Not a model.
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a model").unwrap();
    let out = serve_once(&junk, &sim);
    assert_fails_with(&out, &format!("vouch-enclave: error: model {}: not a GGUF file", junk.display()));

    // A sim dir that cannot be created (its parent is a file; root cannot either).
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("sim");
    let out = serve_once(&model(), &bad);
    assert_fails_with(
        &out,
        &format!(
            "vouch-enclave: error: attestation provider: simulated secure processor: create {}",
            bad.display()
        ),
    );
    assert!(text(&out).contains("Not a directory"), "{}", text(&out));

    // A full disk: writing the root certificate fails with ENOSPC.
    let full = seeded_sim_dir(&tmp.path().join("full"));
    std::os::unix::fs::symlink("/dev/full", full.join("sim-ark.pem")).unwrap();
    let out = serve_once(&model(), &full);
    assert_fails_with(&out, "vouch-enclave: error: attestation provider: simulated secure processor: write ");
    assert!(text(&out).contains("No space left on device"), "{}", text(&out));
}
