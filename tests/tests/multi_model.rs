#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Several models in one enclave, end to end: a models file (name, path, pinned digest)
//! serves SmolLM2 (chat) and the tiny qwen3 test model (no chat template: completions
//! only); the attestation lists both; `/v1/models` lists both through `vouch proxy`; the
//! request's `model` selects; each answer's receipt names the model that answered (by
//! digest) and the verdict by name; a client policy pins per-model digests; a models file
//! whose digest does not match refuses to start.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vouch_e2e::*;

const TINY: &str = "tiny-qwen3";
const CHAT: &str = "smollm2";

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read model")))
}

fn tiny_model() -> std::path::PathBuf {
    repo().join("enclave/testdata/tiny/qwen3.Q4_K_M.gguf")
}

/// A models file in `dir` serving SmolLM2 (the default) and the tiny qwen3 model, the
/// latter expected to hash to `tiny_sha256`.
fn models_file(dir: &Path, tiny_sha256: &str) -> std::path::PathBuf {
    let text = format!(
        "[[model]]\nname = \"{CHAT}\"\npath = \"{}\"\nsha256 = \"{}\"\n\n\
         [[model]]\nname = \"{TINY}\"\npath = \"{}\"\nsha256 = \"{tiny_sha256}\"\nkv_budget_mib = 16\n",
        model().display(),
        sha256_hex(&model()),
        tiny_model().display(),
    );
    let path = dir.join("models.toml");
    std::fs::write(&path, text).expect("write models file");
    path
}

fn serve_args<'a>(models: &'a str, sim: &'a str) -> Vec<&'a str> {
    vec!["serve", "--models", models, "--listen", "tcp:127.0.0.1:0", "--attestation", "sim", "--sim-dir", sim]
}

fn post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = plain_http(addr, "POST", path, &body.to_string(), Duration::from_secs(300));
    let v = serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("JSON from {path}: {}", r.text()));
    (r.status, v)
}

#[test]
fn one_enclave_serves_two_models_and_each_answer_names_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let sim_s = sim.to_str().unwrap().to_owned();
    let (chat_sha, tiny_sha) = (sha256_hex(&model()), sha256_hex(&tiny_model()));

    // A digest that does not match refuses to start, naming the model and both digests.
    let wrong = models_file(tmp.path(), &"00".repeat(32));
    let out = std::process::Command::new(bin("vouch-enclave"))
        .args(serve_args(wrong.to_str().unwrap(), &sim_s))
        .output()
        .expect("run vouch-enclave");
    let said = text(&out);
    assert!(!out.status.success(), "started with a wrong digest: {said}");
    assert!(
        said.contains(&format!(
            "model \"{TINY}\" ({}): SHA-256 mismatch: expected {}, the file has {tiny_sha}; refusing to start",
            tiny_model().display(),
            "00".repeat(32)
        )),
        "{said}"
    );

    let file = models_file(tmp.path(), &tiny_sha);
    let mut enclave = Proc::spawn(&bin("vouch-enclave"), &serve_args(file.to_str().unwrap(), &sim_s));
    let enclave_addr = enclave.wait_for("vouch-enclave listening on ", Duration::from_secs(300));
    let startup = enclave.output();
    assert!(
        startup.contains("2 models") && startup.contains(&format!("the first ({CHAT}) is the default")),
        "{startup}"
    );
    let (_host, host_addr) = start_host(&[&enclave_addr]);

    // The attestation lists both models, the default first, each with its spec.
    let root = sim.join("sim-ark.pem");
    let url = format!("https://{host_addr}");
    let attest = |extra: &[&str]| {
        let mut args = vec!["attest", "--url", &url, "--trust-sim-root", root.to_str().unwrap()];
        args.extend_from_slice(extra);
        vouch(&args)
    };
    let out = attest(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("verdict JSON");
    assert_eq!(verdict["model_name"], CHAT);
    let served: Vec<(&str, &str, &str, &Value)> = verdict["served_models"]
        .as_array()
        .expect("served_models")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["sha256"].as_str().unwrap(),
                m["architecture"].as_str().unwrap(),
                &m["chat_template"],
            )
        })
        .collect();
    assert_eq!(
        served,
        vec![
            (CHAT, chat_sha.as_str(), "llama", &json!("chatml-vouch-1")),
            (TINY, tiny_sha.as_str(), "qwen3", &Value::Null)
        ]
    );

    // Through the proxy (the simulated enclave's own policy: code identity pinned).
    let sim_policy = sim.join("sim-policy.toml");
    let (_proxy, addr) = start_proxy(&host_addr, &sim, &["--policy", sim_policy.to_str().unwrap()]);
    let r = plain_http(&addr, "GET", "/v1/models", "", Duration::from_secs(60));
    assert_eq!(r.status, 200, "{}", r.text());
    let list: Value = serde_json::from_slice(&r.body).unwrap();
    let ids: Vec<(&str, &str)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["vouch_model_sha256"].as_str().unwrap()))
        .collect();
    assert_eq!(ids, vec![(CHAT, chat_sha.as_str()), (TINY, tiny_sha.as_str())]);
    assert_eq!(list["data"][1]["vouch_spec"]["endpoints"], json!(["/v1/completions"]));
    assert_eq!(list["data"][1]["vouch_spec"]["tensor_types"]["q4_k"].as_u64().map(|n| n > 0), Some(true));

    // No model named: the default answers, and the verdict says so.
    let (status, v) = post(
        &addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["vouch_verdict"]["model_name"], CHAT);
    assert_eq!(v["vouch_verdict"]["model_sha256"], chat_sha);

    // The tiny model, selected by name (any ASCII case), answers a completion: its
    // receipt names its digest, and re-verifies offline saying the same.
    let (status, v) = post(
        &addr,
        "/v1/completions",
        &json!({"model": "TINY-Qwen3", "prompt": "the quick brown", "max_tokens": 5}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], TINY);
    assert_eq!(v["vouch_verdict"]["model_name"], TINY);
    assert_eq!(v["vouch_verdict"]["model_sha256"], tiny_sha);
    let receipt = tmp.path().join("tiny.receipt");
    std::fs::write(&receipt, v["vouch_receipt"].as_str().unwrap()).unwrap();
    let out = vouch(&[
        "verify",
        receipt.to_str().unwrap(),
        "--receipt-only",
        "--trust-sim-root",
        root.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline["model_sha256"], tiny_sha);

    // Chat to the template-less model, and an unknown model, are the enclave's own errors.
    let (status, v) = post(
        &addr,
        "/v1/chat/completions",
        &json!({"model": TINY, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("no_chat_template")), "{v}");
    let (status, v) = post(&addr, "/v1/completions", &json!({"model": "gpt-4", "prompt": "x"}));
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("model_not_found")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(TINY), "{v}");

    // Per-model pins: SmolLM2 pinned to its digest, the tiny model to another. SmolLM2
    // answers; the tiny model's answer is refused by the client, with the reason.
    let pinned = tmp.path().join("pinned.toml");
    let base = std::fs::read_to_string(&sim_policy).unwrap();
    std::fs::write(
        &pinned,
        format!("{base}\n[model_pins]\n{CHAT} = \"{chat_sha}\"\n{TINY} = \"{}\"\n", "11".repeat(32)),
    )
    .unwrap();
    let (_pinned_proxy, pinned_addr) = start_proxy(&host_addr, &sim, &["--policy", pinned.to_str().unwrap()]);
    let (status, v) =
        post(&pinned_addr, "/v1/completions", &json!({"model": CHAT, "prompt": "Hello", "max_tokens": 3}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["vouch_verdict"]["model_name"], CHAT);
    let (status, v) =
        post(&pinned_addr, "/v1/completions", &json!({"model": TINY, "prompt": "the", "max_tokens": 3}));
    assert_eq!(status, 502, "{v}");
    let reason = v["vouch_verdict"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "model \"{TINY}\" has digest {tiny_sha}, but the policy's model_pins pin it to {}",
            "11".repeat(32)
        )),
        "{reason}"
    );
    assert!(v.get("choices").is_none(), "a refused answer must not be relayed: {v}");

    // A policy pinning only models this enclave does not serve refuses the attestation.
    let none = tmp.path().join("none.toml");
    std::fs::write(&none, format!("{base}\n[model_pins]\nother = \"{chat_sha}\"\n")).unwrap();
    let out = attest(&["--policy", none.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no served model is acceptable"), "{}", text(&out));
}
