//! A hostile host gains nothing: the real client and enclave, with `vouch_e2e::mitm`
//! standing where `vouch-host` would. Every attack is refused by the client with a
//! specific reason, and no plaintext prompt ever reaches a forwarder.
//!
//! Cases (see also LIMITATIONS.md):
//! - MITM with its own TLS certificate relaying real evidence → TLS-key binding.
//! - Old evidence replayed for a new nonce (plaintext, and raw ciphertext) → nonce / TLS.
//! - Evidence forged with the (stolen) simulated keys: debug guest, VMPL, migration
//!   agent, report-version downgrade → the exact policy violation; AMD-only → refused.
//! - A receipt swapped between two requests → request/output mismatch.
//! - A different model behind the same measurement → refused by a model-pinning policy.
//! - Truncated, duplicated, reordered, dropped or flipped records → an error, never a
//!   verified answer.

// Test code: panicking with a message is the right failure mode, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use base64::Engine;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vouch_attestation::binding::{self, AttestationClaims, ATTESTATION_DOMAIN};
use vouch_attestation::receipt::{verify_evidence, Evidence, ReceiptError, ReportBundle};
use vouch_attestation::report::{policy_bits, FirmwareVersion, ReportBuilder, REPORT_LEN, SIGNED_LEN};
use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};
use vouch_attestation::{Policy, PolicyViolations, TrustAnchors, Violation};
use vouch_e2e::mitm::{
    self, block_on, contains, seeded_sim_dir, tcp_addr, HttpResponse, Identity, Mitm, Tamper,
};
use vouch_e2e::*;

/// A prompt no forwarder may ever see in clear.
const SECRET_PROMPT: &str = "My locker code is TANGERINE-4417. Reply with one word.";
const SECRET_MARK: &[u8] = b"TANGERINE-4417";

fn sim_root(sim: &Path) -> String {
    sim.join("sim-ark.pem").to_str().unwrap().to_owned()
}

fn url_of(addr: &str) -> String {
    format!("https://{}", tcp_addr(addr))
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// `vouch attest --json` directly against the enclave: its verdict.
fn attest_json(url: &str, root: &str, extra: &[&str]) -> Value {
    let mut args = vec!["attest", "--url", url, "--trust-sim-root", root, "--json"];
    args.extend_from_slice(extra);
    let out = vouch(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    json_of(&out)
}

/// Asserts that `out` is a refusal with exit code `code` whose message contains `reason`,
/// and that nothing claims a verified answer.
fn assert_refused(out: &std::process::Output, code: i32, reason: &str) {
    let t = text(out);
    assert_eq!(out.status.code(), Some(code), "expected exit {code} ({reason}); got:\n{t}");
    assert!(t.contains(reason), "expected reason {reason:?} in:\n{t}");
    assert!(!t.contains("VERIFIED ("), "a refusal printed a verdict:\n{t}");
    assert!(!t.contains("\"verified\": true"), "a refusal printed a verdict:\n{t}");
}

#[test]
fn mitm_with_its_own_certificate_relaying_real_evidence_is_refused_before_the_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (_enclave, addr) = start_enclave(&sim, &[]);
    let root = sim_root(&sim);
    let genuine = attest_json(&url_of(&addr), &root, &[]);
    let enclave_key = genuine["tls_spki_sha256"].as_str().unwrap().to_owned();

    let m = Mitm::terminate(&addr);
    let mitm_key = hex::encode(m.spki_sha256().unwrap());
    let reason = format!("evidence binds TLS key {enclave_key}, but the connection presented {mitm_key}");
    let out = vouch(&["attest", "--url", &m.url(), "--trust-sim-root", &root]);
    assert_refused(&out, 1, &reason);
    let out =
        vouch(&["chat", "--url", &m.url(), "--trust-sim-root", &root, "--max-tokens", "4", SECRET_PROMPT]);
    assert_refused(&out, 1, &reason);

    // The MITM read the (harmless) attestation request in clear, relayed the real
    // evidence for the client's own nonce — and never got the prompt: the client sends
    // nothing else until the key it is talking to is attested.
    let seen = m.seen();
    assert!(
        contains(&seen, b"GET /v1/attestation?nonce="),
        "the MITM should have seen the attestation request"
    );
    assert!(!contains(&seen, SECRET_MARK), "the prompt reached the MITM");
    assert!(!contains(&seen, b"POST "), "a request was sent over an unattested key");
}

#[test]
fn replayed_evidence_for_a_new_nonce_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (_enclave, addr) = start_enclave(&sim, &[]);
    let root = sim_root(&sim);

    // Evidence the host obtained earlier, for a nonce of its choosing.
    let old_nonce = [0x42u8; 32];
    let old = block_on(mitm::https_get(&addr, &format!("/v1/attestation?nonce={}", hex::encode(old_nonce))))
        .unwrap();
    assert_eq!(old.status, 200, "{}", old.text());
    let evidence = old.body.clone();
    let fake = Mitm::serve(Identity::generate(), move |req| {
        if req.path.starts_with("/v1/attestation") {
            HttpResponse { status: 200, content_type: "application/cbor".into(), body: evidence.clone() }
        } else {
            HttpResponse { status: 404, content_type: "text/plain".into(), body: b"no".to_vec() }
        }
    });
    let out = vouch(&["attest", "--url", &fake.url(), "--trust-sim-root", &root]);
    assert_refused(&out, 1, "attestation failed: nonce mismatch: expected ");
    assert!(text(&out).contains(&format!("got {}", hex::encode(old_nonce))), "{}", text(&out));

    // Raw replay: a genuine session's enclave→client bytes, recorded by a forwarder,
    // sent to a new client. Its handshake cannot complete (fresh key shares).
    let relay = Mitm::relay(&addr);
    let out = vouch(&["attest", "--url", &relay.url(), "--trust-sim-root", &root]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_, recorded) = relay.connection(0);
    assert!(recorded.len() > 2000, "recorded only {} bytes", recorded.len());
    let replay = Mitm::replay(recorded);
    let out = vouch(&["attest", "--url", &replay.url(), "--trust-sim-root", &root]);
    assert_refused(&out, 2, "TLS");
}

/// The TEST-ONLY simulated secure processor the enclave under test also uses.
fn test_sp() -> (SimulatedSp, SimKeyMaterial) {
    let keys: SimKeyMaterial =
        binding::from_cbor(&std::fs::read(mitm::test_only_sim_keys()).unwrap()).unwrap();
    (SimulatedSp::from_keys(&keys).unwrap(), keys)
}

/// What a forged report claims.
#[derive(Clone, Copy, Debug)]
struct Forge {
    version: u32,
    policy: u64,
    vmpl: u32,
}

const HONEST: Forge =
    Forge { version: 5, policy: policy_bits::SMT | policy_bits::RESERVED_MBO | 0x1f, vmpl: 0 };

/// A report signed with the simulated VCEK; versions below 5 are re-signed here since
/// the builder writes version 5.
fn forge_report(sp: &SimulatedSp, keys: &SimKeyMaterial, rd: &[u8; 64], f: Forge) -> Vec<u8> {
    let b = ReportBuilder::new(sp.product())
        .tcb(sp.tcb())
        .vmpl(f.vmpl)
        .policy(f.policy)
        .report_data(rd)
        .measurement(&[0x11; 48])
        .chip_id(&sp.chip_id())
        .firmware(FirmwareVersion { major: 1, minor: 55, build: 42 });
    if f.version == 5 {
        return sp.sign(b).unwrap().to_vec();
    }
    let mut raw = b.finish(&[0; 96]).to_vec();
    raw[..4].copy_from_slice(&f.version.to_le_bytes());
    if f.version == 2 {
        raw[0x188..0x18B].fill(0); // v2 has no CPUID fields
    }
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &keys.vcek_pkcs8).unwrap();
    let sig = key.sign(&aws_lc_rs::rand::SystemRandom::new(), &raw[..SIGNED_LEN]).unwrap();
    let rs = sig.as_ref();
    // SNP stores r and s little-endian in 72-byte fields.
    for i in 0..48 {
        raw[SIGNED_LEN + i] = rs[47 - i];
        raw[SIGNED_LEN + 72 + i] = rs[95 - i];
    }
    assert_eq!(raw.len(), REPORT_LEN);
    raw
}

/// Evidence binding `spki` and `nonce`, with a forged report.
fn forge_evidence(
    sp: &SimulatedSp,
    keys: &SimKeyMaterial,
    spki: &[u8; 32],
    nonce: Vec<u8>,
    f: Forge,
) -> Vec<u8> {
    let claims = AttestationClaims {
        version: 1,
        tls_spki_sha256: spki.to_vec(),
        model_sha256: vec![0xAB; 32],
        model_name: "SmolLM2-135M-Instruct".into(),
        models: Vec::new(),
        nonce,
        enclave_version: "vouch-enclave/0.1.0".into(),
        log: None,
    };
    let claims = binding::to_cbor(&claims);
    let rd = binding::report_data(ATTESTATION_DOMAIN, &claims);
    let bundle = ReportBundle {
        report: forge_report(sp, keys, &rd, f),
        leaf_cert: sp.vcek_der().to_vec(),
        chain: sp.ask_der().to_vec(),
        crl: vec![],
    };
    binding::to_cbor(&Evidence {
        version: vouch_attestation::receipt::FORMAT_VERSION,
        platform: "sim".into(),
        bundle,
        claims,
    })
}

/// A fake enclave: the host's own TLS key, and evidence forged with the simulated keys
/// for the client's nonce and that key — everything a verifier checks, except what
/// only hardware can make true.
fn forged_enclave(f: Forge) -> Mitm {
    let (sp, keys) = test_sp();
    let (sp, keys) = (Arc::new(sp), Arc::new(keys));
    let id = Identity::generate();
    let spki = id.spki_sha256;
    Mitm::serve(id, move |req| {
        let nonce = req.path.split_once("nonce=").and_then(|(_, h)| hex::decode(h).ok());
        match nonce {
            Some(n) if req.path.starts_with("/v1/attestation") => HttpResponse {
                status: 200,
                content_type: "application/cbor".into(),
                body: forge_evidence(&sp, &keys, &spki, n, f),
            },
            _ => HttpResponse { status: 404, content_type: "text/plain".into(), body: b"no".to_vec() },
        }
    })
}

#[test]
fn forged_simulated_evidence_is_refused_for_debug_vmpl_migration_and_version_downgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let (sp, keys) = test_sp();
    let root = tmp.path().join("sim-ark.pem");
    std::fs::write(&root, sp.ark_pem()).unwrap();
    let root = root.to_str().unwrap();
    let policy = |name: &str, toml: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, toml).unwrap();
        p.to_str().unwrap().to_owned()
    };
    // The forged reports claim measurement 11…11: the code identity these clients pin
    // (the default sim-policy.toml lookup of `vouch()` finds this one).
    let forged_measurement = hex::encode([0x11u8; 48]);
    policy("sim-policy.toml", &format!("[snp]\nmeasurements = [\"{forged_measurement}\"]\n"));
    let min_v5 = policy(
        "min-v5.toml",
        &format!("[snp]\nmin_report_version = 5\nmeasurements = [\"{forged_measurement}\"]\n"),
    );

    // The control: a host holding the simulator's keys forges evidence for its OWN TLS
    // key that a sim-trusting client accepts. The simulated root proves nothing (and
    // every such verdict says so).
    let fake = forged_enclave(HONEST);
    let out = vouch(&["attest", "--url", &fake.url(), "--trust-sim-root", root]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("VERIFIED (SIMULATED root, NOT AMD)"), "{}", text(&out));
    // A client that trusts only AMD refuses it.
    let out = vouch(&["attest", "--url", &fake.url()]);
    assert_refused(&out, 1, "the enclave's report is not signed by AMD (simulated root)");

    // Debug guest: the host can read its memory.
    let debug = forged_enclave(Forge { policy: HONEST.policy | policy_bits::DEBUG, ..HONEST });
    let out = vouch(&["attest", "--url", &debug.url(), "--trust-sim-root", root]);
    assert_refused(&out, 1, "attestation failed: policy violated: guest policy allows DEBUG");

    // VMPL 1 and a migration agent: both reported, not just the first.
    let weak = forged_enclave(Forge { policy: HONEST.policy | policy_bits::MIGRATE_MA, vmpl: 1, ..HONEST });
    let out = vouch(&["attest", "--url", &weak.url(), "--trust-sim-root", root]);
    assert_refused(
        &out,
        1,
        "attestation failed: policy violated: guest policy allows a migration agent; VMPL is 1, expected 0",
    );

    // Downgrade to an older report format: visible in the verdict, refused by a policy
    // that pins the version.
    for version in [2u32, 3] {
        let old = forged_enclave(Forge { version, ..HONEST });
        let v = attest_json(&old.url(), root, &[]);
        assert_eq!(v["report_version"], version, "{v}");
        let out = vouch(&["attest", "--url", &old.url(), "--trust-sim-root", root, "--policy", &min_v5]);
        assert_refused(&out, 1, &format!("policy violated: report version {version} < minimum 5"));
    }

    // The same refusals as exact library errors.
    let mut anchors = TrustAnchors::amd();
    anchors.dangerous_add_simulated_root(sp.ark_der(), sp.product()).unwrap();
    let nonce = [9u8; 32];
    let now = 1_788_220_800;
    let pinned =
        Policy { measurements: vec![vouch_attestation::policy::Hex([0x11; 48])], ..Policy::default() };
    let strict = Policy { min_report_version: 5, ..pinned.clone() };
    let ev = forge_evidence(&sp, &keys, &[1; 32], nonce.to_vec(), Forge { version: 2, ..HONEST });
    assert_eq!(
        verify_evidence(&anchors, &ev, &nonce, &strict, now).unwrap_err(),
        ReceiptError::Policy(PolicyViolations(vec![Violation::ReportVersion { minimum: 5, actual: 2 }]))
    );
    let ev = forge_evidence(
        &sp,
        &keys,
        &[1; 32],
        nonce.to_vec(),
        Forge { policy: HONEST.policy | policy_bits::DEBUG, ..HONEST },
    );
    assert_eq!(
        verify_evidence(&anchors, &ev, &nonce, &pinned, now).unwrap_err(),
        ReceiptError::Policy(PolicyViolations(vec![Violation::DebugAllowed]))
    );
    // The default policy also says the code identity is not pinned, with the value.
    assert_eq!(
        verify_evidence(&anchors, &ev, &nonce, &Policy::default(), now).unwrap_err(),
        ReceiptError::Policy(PolicyViolations(vec![
            Violation::CodeIdentityNotPinned { measurement: forged_measurement.clone() },
            Violation::DebugAllowed,
        ]))
    );
    let ev = forge_evidence(&sp, &keys, &[1; 32], nonce.to_vec(), HONEST);
    assert_eq!(
        verify_evidence(&TrustAnchors::amd(), &ev, &nonce, &pinned, now).unwrap_err(),
        ReceiptError::SimulatedNotTrusted
    );
    // An unknown future version is not guessed at.
    let mut ev: Evidence =
        binding::from_cbor(&forge_evidence(&sp, &keys, &[1; 32], nonce.to_vec(), HONEST)).unwrap();
    ev.bundle.report[0] = 6;
    assert!(matches!(
        verify_evidence(&anchors, &binding::to_cbor(&ev), &nonce, &pinned, now).unwrap_err(),
        ReceiptError::Report(vouch_attestation::VerifyError::UnsupportedVersion { version: 6 })
    ));
}

fn write_receipt_file(path: &Path, receipt: &Value, request_body: &Value, output: &Value) {
    let f = serde_json::json!({
        "format": "vouch-receipt-file/1", "receipt": receipt, "request_body": request_body, "output": output,
    });
    std::fs::write(path, serde_json::to_vec(&f).unwrap()).unwrap();
}

#[test]
fn receipts_swapped_between_requests_are_refused_and_the_host_sees_only_ciphertext() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (_enclave, addr) = start_enclave(&sim, &[]);
    // What the real vouch-host sends and receives on its enclave link is recorded.
    let tap = Mitm::relay(&addr);
    let (_host, host_addr) = start_host(&[&format!("tcp:{}", tap.addr())]);
    let url = format!("https://{host_addr}");
    let root = sim_root(&sim);
    let chat = |prompt: &str, file: &str| {
        let f = tmp.path().join(file);
        let out = vouch(&[
            "chat",
            "--url",
            &url,
            "--trust-sim-root",
            &root,
            "--max-tokens",
            "6",
            "--json",
            "--receipt-out",
            f.to_str().unwrap(),
            prompt,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let answer = json_of(&out)["text"].as_str().unwrap().to_owned();
        (serde_json::from_slice::<Value>(&std::fs::read(&f).unwrap()).unwrap(), answer)
    };
    let (a, answer_a) = chat(SECRET_PROMPT, "a.json");
    let (b, _) = chat("Name a fruit.", "b.json");

    // The host only ever saw TLS: no prompt, no answer.
    let seen = tap.seen();
    assert!(seen.len() > 4000, "the tap saw only {} bytes", seen.len());
    assert!(tap.events().iter().any(|e| e.content_type == mitm::APPLICATION_DATA));
    assert!(!contains(&seen, SECRET_MARK), "the prompt crossed the host in clear");
    if answer_a.trim().len() >= 6 {
        assert!(!contains(&seen, answer_a.trim().as_bytes()), "the answer crossed the host in clear");
    }

    let swapped = tmp.path().join("swapped.json");
    let verify = |file: &Path, extra: &[&str]| {
        let mut args = vec!["verify", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        vouch(&args)
    };
    // A's receipt presented for B's request and answer.
    write_receipt_file(&swapped, &a["receipt"], &b["request_body"], &b["output"]);
    assert_refused(
        &verify(&swapped, &["--trust-sim-root", &root]),
        1,
        "NOT VERIFIED: receipt rejected: request mismatch",
    );
    // A's receipt, A's request, B's answer.
    write_receipt_file(&swapped, &a["receipt"], &a["request_body"], &b["output"]);
    assert_refused(
        &verify(&swapped, &["--trust-sim-root", &root]),
        1,
        "NOT VERIFIED: receipt rejected: output mismatch",
    );
    // A's receipt for B's request with A's answer.
    write_receipt_file(&swapped, &a["receipt"], &b["request_body"], &a["output"]);
    assert_refused(
        &verify(&swapped, &["--trust-sim-root", &root]),
        1,
        "NOT VERIFIED: receipt rejected: request mismatch",
    );
    // B's leaf with A's batch evidence (when they were in different batches).
    let b64 = base64::engine::general_purpose::STANDARD;
    let ra: vouch_attestation::receipt::Receipt =
        binding::from_cbor(&b64.decode(a["receipt"].as_str().unwrap()).unwrap()).unwrap();
    let rb: vouch_attestation::receipt::Receipt =
        binding::from_cbor(&b64.decode(b["receipt"].as_str().unwrap()).unwrap()).unwrap();
    let mut mixed = rb.clone();
    mixed.batch_claims = ra.batch_claims.clone();
    mixed.bundle = ra.bundle.clone();
    // B's own checkpoint is not the one A's report attests.
    let encoded = Value::String(b64.encode(binding::to_cbor(&mixed)));
    write_receipt_file(&swapped, &encoded, &b["request_body"], &b["output"]);
    assert_refused(
        &verify(&swapped, &["--trust-sim-root", &root]),
        1,
        "NOT VERIFIED: receipt rejected: log checkpoint: the checkpoint",
    );
    // With A's checkpoint too, B's leaf is not in A's tree.
    mixed.checkpoint = ra.checkpoint.clone();
    let mixed = Value::String(b64.encode(binding::to_cbor(&mixed)));
    write_receipt_file(&swapped, &mixed, &b["request_body"], &b["output"]);
    assert_refused(
        &verify(&swapped, &["--trust-sim-root", &root]),
        1,
        "NOT VERIFIED: receipt rejected: Merkle inclusion proof does not lead to the signed root",
    );
    // Untouched, each verifies; a verifier trusting only AMD refuses them.
    let fa = tmp.path().join("a.json");
    let out = verify(&fa, &["--trust-sim-root", &root]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("request and output match the receipt"), "{}", text(&out));
    assert_refused(&verify(&fa, &[]), 1, "the enclave's report is not signed by AMD (simulated root)");
}

/// Starts an enclave serving `model` with the given sim dir.
fn start_enclave_with_model(sim: &Path, model: &Path) -> (Proc, String) {
    let mut p = Proc::spawn(
        &bin("vouch-enclave"),
        &[
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--listen",
            "tcp:127.0.0.1:0",
            "--attestation",
            "sim",
            "--sim-dir",
            sim.to_str().unwrap(),
        ],
    );
    let addr = p.wait_for("vouch-enclave listening on ", Duration::from_secs(300));
    (p, addr)
}

#[test]
fn a_different_model_behind_the_same_measurement_is_refused_by_a_model_pinning_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    // A copy of the model with one weight byte changed: it still loads and answers.
    let swapped = tmp.path().join("swapped.gguf");
    let mut bytes = std::fs::read(model()).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x10;
    std::fs::write(&swapped, &bytes).unwrap();
    drop(bytes);

    let (mut genuine, genuine_addr) = start_enclave(&sim, &[]);
    let measurement = genuine.wait_for("simulated launch measurement ", Duration::from_secs(5));
    let (_other, other_addr) = start_enclave_with_model(&sim, &swapped);
    let root = sim_root(&sim);

    let policy = |name: &str, toml: String| {
        let p = tmp.path().join(name);
        std::fs::write(&p, toml).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let by_measurement = policy("measurement.toml", format!("[snp]\nmeasurements = [\"{measurement}\"]\n"));
    let a = attest_json(&url_of(&genuine_addr), &root, &["--policy", &by_measurement]);
    let b = attest_json(&url_of(&other_addr), &root, &["--policy", &by_measurement]);
    // Same launch measurement, same chip: the measurement does not cover the model.
    assert_eq!(a["measurement"], b["measurement"]);
    assert_ne!(a["model_sha256"], b["model_sha256"]);
    let genuine_model = a["model_sha256"].as_str().unwrap();
    let other_model = b["model_sha256"].as_str().unwrap();

    let pinned = policy(
        "pinned.toml",
        format!("accepted_models = [\"{genuine_model}\"]\n[snp]\nmeasurements = [\"{measurement}\"]\n"),
    );
    attest_json(&url_of(&genuine_addr), &root, &["--policy", &pinned]);
    let reason = format!("model digest {other_model} is not in the policy's accepted_models");
    let out =
        vouch(&["attest", "--url", &url_of(&other_addr), "--trust-sim-root", &root, "--policy", &pinned]);
    assert_refused(&out, 1, &format!("attestation failed: {reason}"));
    let out = vouch(&[
        "chat",
        "--url",
        &url_of(&other_addr),
        "--trust-sim-root",
        &root,
        "--policy",
        &pinned,
        "--max-tokens",
        "4",
        "Hi",
    ]);
    assert_refused(&out, 1, &format!("attestation failed: {reason}"));

    // Its receipts, obtained under the looser policy, are refused offline by the pinned one.
    let receipt = tmp.path().join("other.json");
    let out = vouch(&[
        "chat",
        "--url",
        &url_of(&other_addr),
        "--trust-sim-root",
        &root,
        "--policy",
        &by_measurement,
        "--max-tokens",
        "4",
        "--receipt-out",
        receipt.to_str().unwrap(),
        "Hi",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = vouch(&["verify", receipt.to_str().unwrap(), "--trust-sim-root", &root, "--policy", &pinned]);
    assert_refused(&out, 1, &format!("NOT VERIFIED: receipt rejected: {reason}"));
}

#[test]
fn tampered_records_never_yield_a_verified_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (_enclave, addr) = start_enclave(&sim, &[]);
    let root = sim_root(&sim);
    // One connection, no resends: each tampering is judged on the connection it hit (a
    // resend would open another, whose records the index below does not name).
    let chat = |url: &str, json: bool| {
        let mut args =
            vec!["chat", "--url", url, "--trust-sim-root", &root, "--max-tokens", "12", "--max-resends", "0"];
        if json {
            args.push("--json");
        }
        args.push(SECRET_PROMPT);
        vouch(&args)
    };

    // A clean pass through a plain forwarder, to learn where the answer's records are.
    let clean = Mitm::relay(&addr);
    let out = chat(&clean.url(), true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let answer = json_of(&out)["text"].as_str().unwrap().to_owned();
    let seen = clean.seen();
    assert!(!contains(&seen, SECRET_MARK), "the prompt crossed the forwarder in clear");
    if answer.trim().len() >= 6 {
        assert!(!contains(&seen, answer.trim().as_bytes()), "the answer crossed the forwarder in clear");
    }
    // Client application records: 0 Finished, 1 GET /v1/attestation, 2 POST. The first
    // enclave record after the GET is the evidence (or a session ticket racing it); the
    // first after the POST starts the answer.
    let events: Vec<_> = clean.events().into_iter().filter(|e| e.conn == 0).collect();
    let first_enclave_record_after = |client_app: usize| {
        let at = events
            .iter()
            .position(|e| e.dir == mitm::Dir::ToEnclave && e.app_index == Some(client_app))
            .expect("client record");
        events[at..]
            .iter()
            .find(|e| e.dir == mitm::Dir::ToClient)
            .and_then(|e| e.app_index)
            .expect("enclave record")
    };
    let evidence_at = first_enclave_record_after(1);
    let answer_at = first_enclave_record_after(2);
    let total = events.iter().filter(|e| e.dir == mitm::Dir::ToClient && e.app_index.is_some()).count();
    assert!(total >= answer_at + 6, "answer records {answer_at}..{total}: too few to tamper mid-stream");
    let mid = answer_at + 3;

    let mut table = Vec::new();
    for tamper in [
        Tamper::Flip(evidence_at),
        Tamper::Flip(mid),
        Tamper::Truncate(mid),
        Tamper::Duplicate(mid),
        Tamper::Reorder(mid),
        Tamper::Drop(mid),
        Tamper::Truncate(total - 3),
        Tamper::Truncate(total - 2),
        Tamper::Flip(total - 3),
    ] {
        let m = Mitm::tamper(&addr, tamper);
        let out = chat(&m.url(), true);
        let t = text(&out);
        assert_ne!(out.status.code(), Some(0), "{tamper:?} gave a verified answer:\n{t}");
        let v = json_of(&out);
        assert_eq!(v["verified"], false, "{tamper:?}: {v}");
        let err = v["error"].as_str().unwrap().to_owned();
        // TLS authenticates every record: corruption, loss, duplication and reordering
        // are caught by the record layer (or the stream ends early), long before a
        // receipt could be checked. The client reports it as an I/O failure (exit 2).
        // (Its message does not yet name the TLS cause; see LIMITATIONS.md.)
        assert_eq!(out.status.code(), Some(2), "{tamper:?}: {t}");
        assert!(
            err.starts_with("HTTP error talking to the enclave: "),
            "{tamper:?}: unexpected reason {err}"
        );
        table.push(format!("{tamper:?} -> exit {:?}: {err}", out.status.code()));
    }
    eprintln!("tampering outcomes:\n  {}", table.join("\n  "));

    // Without --json the partial text is printed as it streams, then disowned.
    let m = Mitm::tamper(&addr, Tamper::Truncate(mid));
    let out = chat(&m.url(), false);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(!t.contains("VERIFIED ("), "{t}");
    assert!(t.contains("the text above is NOT verified"), "{t}");
}
