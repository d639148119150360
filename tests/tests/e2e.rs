//! The whole system on loopback: real enclave (sim attestation), real host, real client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a test failure

use base64::Engine;
use std::process::Command;
use vouch_e2e::*;

fn sim_root(dir: &std::path::Path) -> String {
    dir.join("sim-ark.pem").to_str().unwrap().to_owned()
}

#[test]
fn chat_through_host_verifies_and_the_receipt_reverifies_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let (_enclave, enclave_addr) = start_enclave(&sim, &["--sim-latency-ms", "8"]);
    let (_host, host_addr) = start_host(&[&enclave_addr]);
    let url = format!("https://{host_addr}");
    let root = sim_root(&sim);
    let receipt = tmp.path().join("receipt.json");
    let receipt_s = receipt.to_str().unwrap();

    let out = vouch(&[
        "chat",
        "--url",
        &url,
        "--trust-sim-root",
        &root,
        "--receipt-out",
        receipt_s,
        "--max-tokens",
        "24",
        "What is the capital of Germany?",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("Berlin"), "{t}");
    assert!(t.contains("SIMULATED"), "{t}");

    let out = vouch(&["verify", receipt_s, "--trust-sim-root", &root]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("SIMULATED"));

    // Offline, a verifier that trusts only AMD refuses it.
    let out = vouch(&["verify", receipt_s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // Altered output text: refused.
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    let orig = file.clone();
    file["output"] = serde_json::json!("The capital of Germany is Bonn.");
    std::fs::write(&receipt, serde_json::to_vec(&file).unwrap()).unwrap();
    let out = vouch(&["verify", receipt_s, "--trust-sim-root", &root]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // Altered request bytes: refused.
    let mut file = orig.clone();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut req = b64.decode(file["request_body"].as_str().unwrap()).unwrap();
    let n = req.len();
    req[n / 2] ^= 0x20;
    file["request_body"] = serde_json::json!(b64.encode(&req));
    std::fs::write(&receipt, serde_json::to_vec(&file).unwrap()).unwrap();
    let out = vouch(&["verify", receipt_s, "--trust-sim-root", &root]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // Any single byte of the receipt (leaf, proof, claims, report, certificates): refused.
    let cbor = b64.decode(orig["receipt"].as_str().unwrap()).unwrap();
    for pos in [20, cbor.len() / 4, cbor.len() / 2, 3 * cbor.len() / 4, cbor.len() - 40] {
        let mut bad = cbor.clone();
        bad[pos] ^= 0x01;
        let mut file = orig.clone();
        file["receipt"] = serde_json::json!(b64.encode(&bad));
        std::fs::write(&receipt, serde_json::to_vec(&file).unwrap()).unwrap();
        let out = vouch(&["verify", receipt_s, "--trust-sim-root", &root]);
        assert_eq!(out.status.code(), Some(1), "byte {pos}: {}", text(&out));
    }
}

#[test]
fn a_client_trusting_only_amd_refuses_the_simulated_enclave() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let (_enclave, enclave_addr) = start_enclave(&sim, &[]);
    let (_host, host_addr) = start_host(&[&enclave_addr]);
    let url = format!("https://{host_addr}");
    let out = vouch(&["attest", "--url", &url]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.to_lowercase().contains("simulated") || t.contains("AMD"), "{t}");
    let out = vouch(&["chat", "--url", &url, "What is 2+2?"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // With the sim root, attestation succeeds and says SIMULATED; --json parses.
    let out = vouch(&["attest", "--url", &url, "--trust-sim-root", &sim_root(&sim), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.to_string().contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        "{v}"
    );
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sk", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl is required by the end-to-end tests (.ci/run installs it)");
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn bad_input_gets_openai_errors_and_the_service_stays_up() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let (_enclave, enclave_addr) = start_enclave(&sim, &[]);
    let (_host, host_addr) = start_host(&[&enclave_addr]);
    let chat = format!("https://{host_addr}/v1/chat/completions");

    let (code, body) = curl(&["-d", "{not json", &chat]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (code, body) =
        curl(&["-d", r#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#, &chat]);
    assert_eq!(code, 404, "{body}");
    let (code, body) =
        curl(&["-d", r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1000000}"#, &chat]);
    assert_eq!(code, 400, "{body}");
    let big = tmp.path().join("big.json");
    std::fs::write(&big, vec![b' '; 2 * 1024 * 1024]).unwrap();
    let (code, body) = curl(&["--data-binary", &format!("@{}", big.display()), &chat]);
    assert_eq!(code, 413, "{body}");
    let bad_utf8 = tmp.path().join("bad.json");
    std::fs::write(&bad_utf8, b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}").unwrap();
    let (code, body) = curl(&["--data-binary", &format!("@{}", bad_utf8.display()), &chat]);
    assert_eq!(code, 400, "{body}");
    let (code, _) = curl(&[&format!("https://{host_addr}/v1/attestation?nonce=zz")]);
    assert_eq!(code, 400);
    let (code, _) = curl(&[&format!("https://{host_addr}/nope")]);
    assert_eq!(code, 404);

    // Still serving, and the answer verifies.
    let out = vouch(&[
        "chat",
        "--url",
        &format!("https://{host_addr}"),
        "--trust-sim-root",
        &sim_root(&sim),
        "--max-tokens",
        "8",
        "What is the capital of Germany?",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn concurrent_clients_all_get_verified_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let (_enclave, enclave_addr) = start_enclave(&sim, &["--sim-latency-ms", "50", "--queue-depth", "64"]);
    let (_host, host_addr) = start_host(&[&enclave_addr]);
    let url = format!("https://{host_addr}");
    let root = sim_root(&sim);
    let n = 12;
    let procs: Vec<_> = (0..n)
        .map(|i| {
            let f = tmp.path().join(format!("c{i}.json"));
            vouch_command(&["chat", "--url", &url, "--trust-sim-root", &root, "--max-tokens", "2"])
                .arg("--receipt-out")
                .arg(&f)
                .arg(format!("Say the number {i}."))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut seqs = std::collections::BTreeSet::new();
    for (i, p) in procs.into_iter().enumerate() {
        let out = p.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "client {i}: {}", text(&out));
        let f: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tmp.path().join(format!("c{i}.json"))).unwrap()).unwrap();
        let cbor = base64::engine::general_purpose::STANDARD.decode(f["receipt"].as_str().unwrap()).unwrap();
        let r: vouch_attestation::receipt::Receipt = vouch_attestation::binding::from_cbor(&cbor).unwrap();
        let b: vouch_attestation::binding::BatchClaims =
            vouch_attestation::binding::from_cbor(&r.batch_claims).unwrap();
        seqs.insert(b.batch_seq);
    }
    assert!(seqs.len() <= n, "{seqs:?}");
    eprintln!("{n} concurrent answers shared {} receipt batches", seqs.len());
}

#[test]
fn a_given_sim_measurement_is_what_the_enclave_reports_and_a_client_pins() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    // What `vouch measure` would compute for a dev VM's image, handed to the simulator.
    let measurement = "5e".repeat(48);
    let (_enclave, addr) = start_enclave(&sim, &["--sim-measurement", &measurement]);
    let url = format!("https://{}", addr.trim_start_matches("tcp:"));
    let root = sim_root(&sim);
    // The policy the simulator wrote pins it, and the evidence reports it.
    let policy = std::fs::read_to_string(sim.join("sim-policy.toml")).unwrap();
    assert!(policy.contains(&measurement), "{policy}");
    let out = vouch(&["attest", "--url", &url, "--trust-sim-root", &root]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&measurement), "{}", text(&out));
    // A client pinning any other measurement (here: this binary's own hash) is refused.
    let other = tmp.path().join("other.toml");
    std::fs::write(&other, policy.replace(&measurement, &"a1".repeat(48))).unwrap();
    let out =
        vouch(&["attest", "--url", &url, "--trust-sim-root", &root, "--policy", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).to_lowercase().contains("measurement"), "{}", text(&out));
}
