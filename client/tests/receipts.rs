//! `vouch verify` on receipts built by a TEST-ONLY simulated secure processor: accepted
//! only with `--trust-sim-root` (and then loudly SIMULATED), refused by an AMD-only
//! verifier with the explanatory message, and refused after any flipped byte.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is a test failure

mod common;
use base64::Engine;
use common::*;
use vouch_client::receipts::ReceiptFile;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Setup {
    dir: tempfile::TempDir,
    root: String,
    /// A policy pinning the code identity the receipts' reports carry (09…09).
    policy: String,
    file: String,
    receipt: Vec<u8>,
    request: Vec<u8>,
    output: String,
}

fn setup() -> Setup {
    let sp = sim();
    let dir = tempfile::tempdir().unwrap();
    let (root, policy) = sim_trust_files(&sp, dir.path());
    let request = br#"{"model":"test-model","messages":[{"role":"user","content":"hi"}],"temperature":0.0,"stream":true}"#.to_vec();
    let output = "Hello there!".to_owned();
    let receipt = receipt(&sp, &request, &output, &[1; 32]);
    let file = dir.path().join("receipt.json");
    let f = ReceiptFile::new(&B64.encode(&receipt), &request, &output, Some("https://127.0.0.1:1"), None);
    std::fs::write(&file, serde_json::to_vec_pretty(&f).unwrap()).unwrap();
    Setup { root, policy, file: file.to_string_lossy().into_owned(), dir, receipt, request, output }
}

fn write(s: &Setup, name: &str, receipt: &[u8], request: &[u8], output: &str) -> String {
    let p = s.dir.path().join(name);
    let f = ReceiptFile::new(&B64.encode(receipt), request, output, None, None);
    std::fs::write(&p, serde_json::to_vec(&f).unwrap()).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn simulated_receipt_verifies_only_with_the_sim_root_and_says_so() {
    let s = setup();
    let o = vouch(&["verify", &s.file, "--trust-sim-root", &s.root, "--policy", &s.policy]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("SIMULATED"), "{out}");
    assert!(out.contains("request and output match the receipt"), "{out}");
    assert!(out.contains(&hex::encode(MODEL_SHA256)), "{out}");

    let o = vouch(&["verify", &s.file, "--trust-sim-root", &s.root, "--policy", &s.policy, "--json"]);
    assert_eq!(code(&o), 0);
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["verified"], true);
    assert_eq!(j["simulated"], true);
    assert_eq!(j["root"], "SIMULATED");
    assert_eq!(j["receipt"]["exchange_checked"], true);
    assert_eq!(j["receipt"]["finish_reason"], "stop");
    assert_eq!(j["measurement"], hex::encode([9u8; 48]));

    // AMD only: refused, with the explanation.
    let o = vouch(&["verify", &s.file]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("not signed by AMD (simulated root); pass --trust-sim-root"),
        "{}",
        stderr(&o)
    );
    let o = vouch(&["verify", &s.file, "--json"]);
    assert_eq!(code(&o), 1);
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["verified"], false);
}

#[test]
fn bare_receipts_verify_without_the_exchange() {
    let s = setup();
    for (name, bytes) in [("r.cbor", s.receipt.clone()), ("r.b64", B64.encode(&s.receipt).into_bytes())] {
        let p = s.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let args = ["verify", p.to_str().unwrap(), "--trust-sim-root", &s.root, "--policy", &s.policy];
        // Not an answer: refused unless asked for the receipt alone, which it then says.
        let o = vouch(&args);
        assert_eq!(code(&o), 1, "{name}: {}", stdout(&o));
        assert!(stderr(&o).contains("pass --receipt-only"), "{name}: {}", stderr(&o));
        let o = vouch(&[&args[..], &["--receipt-only"]].concat());
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert!(stdout(&o).lines().next().unwrap_or_default().contains("RECEIPT ONLY"), "{name}");
        assert!(stdout(&o).contains("NOT checked"), "{name}");
    }
}

#[test]
fn every_flipped_byte_region_is_refused() {
    let s = setup();
    // Byte flips across the receipt: leaf, proof/claims, report, certificates.
    let n = s.receipt.len();
    for at in [5, 40, n / 4, n / 3, n / 2, 2 * n / 3, n - 200, n - 2] {
        let mut r = s.receipt.clone();
        r[at] ^= 0x01;
        let p = write(&s, &format!("flip{at}.json"), &r, &s.request, &s.output);
        let o = vouch(&["verify", &p, "--trust-sim-root", &s.root, "--policy", &s.policy]);
        assert_eq!(code(&o), 1, "flip at {at}/{n} accepted: {}", stdout(&o));
        assert!(stderr(&o).contains("NOT VERIFIED"), "{}", stderr(&o));
    }
    // Another request or another output: the exchange check fails.
    let p = write(&s, "req.json", &s.receipt, b"{\"other\":1}", &s.output);
    let o = vouch(&["verify", &p, "--trust-sim-root", &s.root, "--policy", &s.policy]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("request mismatch"), "{}", stderr(&o));
    let p = write(&s, "out.json", &s.receipt, &s.request, "Hello there?");
    let o = vouch(&["verify", &p, "--trust-sim-root", &s.root, "--policy", &s.policy]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("output mismatch"), "{}", stderr(&o));
    // Malformed files.
    let p = s.dir.path().join("garbage.json");
    std::fs::write(&p, "{\"receipt\": \"!!!\"}").unwrap();
    assert_eq!(
        code(&vouch(&["verify", p.to_str().unwrap(), "--trust-sim-root", &s.root, "--policy", &s.policy])),
        1
    );
    std::fs::write(&p, [0xffu8, 0, 1, 2]).unwrap();
    assert_eq!(
        code(&vouch(&["verify", p.to_str().unwrap(), "--trust-sim-root", &s.root, "--policy", &s.policy])),
        1
    );
    // Unreadable file or root: I/O.
    assert_eq!(code(&vouch(&["verify", "/nonexistent/receipt.json"])), 2);
    assert_eq!(code(&vouch(&["verify", &s.file, "--trust-sim-root", "/nonexistent/ark.pem"])), 2);
    // A root file that is not a certificate is a usage error.
    let bad = s.dir.path().join("bad.pem");
    std::fs::write(&bad, "not a cert").unwrap();
    assert_eq!(code(&vouch(&["verify", &s.file, "--trust-sim-root", bad.to_str().unwrap()])), 2);
}

#[test]
fn policy_applies_to_receipts() {
    let s = setup();
    let pol = s.dir.path().join("p.toml");
    std::fs::write(
        &pol,
        format!(
            "accepted_models = [\"{}\"]\n[snp]\nmeasurements = [\"{}\"]\n",
            hex::encode([3u8; 32]),
            hex::encode([9u8; 48])
        ),
    )
    .unwrap();
    let o = vouch(&["verify", &s.file, "--trust-sim-root", &s.root, "--policy", pol.to_str().unwrap()]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("accepted_models"), "{}", stderr(&o));
    std::fs::write(
        &pol,
        format!(
            "accepted_models = [\"{}\"]\n[snp]\nmeasurements = [\"{}\"]\n",
            hex::encode(MODEL_SHA256),
            hex::encode([9u8; 48])
        ),
    )
    .unwrap();
    let o = vouch(&["verify", &s.file, "--trust-sim-root", &s.root, "--policy", pol.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    std::fs::write(&pol, format!("[snp]\nmeasurements = [\"{}\"]\n", hex::encode([8u8; 48]))).unwrap();
    let o = vouch(&["verify", &s.file, "--trust-sim-root", &s.root, "--policy", pol.to_str().unwrap()]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("measurement"), "{}", stderr(&o));
    // No code identity pinned: refused with what to pin, unless --allow-any-code.
    let o = vouch(&["verify", &s.file, "--trust-sim-root", &s.root]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("pins no code identity"), "{}", stderr(&o));
    let o = vouch(&["verify", &s.file, "--trust-sim-root", &s.root, "--allow-any-code"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).lines().next().unwrap_or_default().contains("CODE IDENTITY NOT PINNED"));
}
