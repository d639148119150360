//! The official OpenAI Python SDK (`pip install openai`; .ci/run installs it) talks to
//! `vouch proxy`, which forwards only to an enclave it verified and adds its verdict.

use std::process::Command;
use std::time::Duration;
use vouch_e2e::*;

#[test]
fn openai_sdk_through_the_verifying_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let (_enclave, enclave_addr) = start_enclave(&sim, &[]);
    let (_host, host_addr) = start_host(&[&enclave_addr]);
    let root = sim.join("sim-ark.pem");
    let mut proxy = Proc::spawn(
        &bin("vouch"),
        &[
            "proxy",
            "--url",
            &format!("https://{host_addr}"),
            "--listen",
            "127.0.0.1:0",
            "--trust-sim-root",
            root.to_str().unwrap(),
        ],
    );
    let addr = proxy.wait_for("vouch proxy listening on ", Duration::from_secs(60));
    let script = repo().join("tests/python/openai_sdk_check.py");
    let out =
        Command::new("python3").arg(&script).arg(format!("http://{addr}/v1")).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "OpenAI SDK check failed (is `openai` installed? .ci/run installs it):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["text"].as_str().unwrap().contains("Berlin"), "{v}");
    assert_eq!(v["text"], v["stream_text"], "{v}");
    for key in ["verdict", "stream_verdict"] {
        let verdict = &v[key];
        assert_eq!(verdict["verified"], serde_json::json!(true), "{key}: {v}");
        assert!(verdict.to_string().to_lowercase().contains("simulated"), "{key}: {v}");
    }
}
