//! Shared test helpers: the real `vouch` binary, the genuine vectors (found outside the
//! repository, in `../shared`), and a TEST-ONLY
//! simulated secure processor that builds evidence and receipts the way the enclave does.
#![allow(dead_code)] // each test binary uses a subset
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use sha2::Digest;
use std::path::PathBuf;
use std::process::{Command, Output};
use vouch_attestation::binding::{self, AttestationClaims, BatchClaims};
use vouch_attestation::merkle;
use vouch_attestation::receipt::{Evidence, Receipt, ReceiptLeaf, ReportBundle};
use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};

/// The verification time the vectors need (their certificates and CRLs are time-bounded).
pub const NOW: u64 = 1_788_220_800;

pub fn vouch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args(args)
        .env("RUST_LOG", "off")
        .env("VOUCH_STATE_DIR", fresh_state_dir())
        .output()
        .unwrap()
}

/// A state directory no `vouch` of this test process has used: every fake enclave here
/// signs one-leaf logs with the same test key, which a shared store would rightly see
/// as forks of one log.
pub fn fresh_state_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("vouch-client-test-state-{}-{n}", std::process::id()))
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The genuine vectors live outside the repository (`<workspace>/../shared/vectors`); the
/// attestation crate's locator is the one rule, included here. A test that needs them
/// starts with `let Some(dv) = Vectors::dev() else { return };` (absent: it fails naming
/// the path, or skips with `VOUCH_ALLOW_MISSING_VECTORS=1`).
#[path = "../../../attestation/tests/support/shared_vectors.rs"]
mod shared_vectors;
#[allow(unused_imports)] // test binaries that use no vectors (live, receipts) include this too
pub use shared_vectors::Vectors;

/// The TEST-ONLY simulated chain committed in the attestation crate.
pub fn sim() -> SimulatedSp {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor");
    let keys: SimKeyMaterial = binding::from_cbor(&std::fs::read(path).unwrap()).unwrap();
    SimulatedSp::from_keys(&keys).unwrap()
}

/// Writes the simulated root (`sim-ark.pem`) and a policy pinning the code identity the
/// test reports carry (09…09, `pinned.toml`) into `dir`; returns their paths.
#[allow(dead_code)] // not every test binary verifies through the CLI
pub fn sim_trust_files(sp: &SimulatedSp, dir: &std::path::Path) -> (String, String) {
    let root = dir.join("sim-ark.pem");
    std::fs::write(&root, sp.ark_pem()).unwrap();
    let policy = dir.join("pinned.toml");
    std::fs::write(&policy, format!("[snp]\nmeasurements = [\"{}\"]\n", hex::encode([9u8; 48]))).unwrap();
    (root.to_string_lossy().into_owned(), policy.to_string_lossy().into_owned())
}

pub fn bundle(sp: &SimulatedSp, report: &[u8]) -> ReportBundle {
    ReportBundle {
        report: report.to_vec(),
        leaf_cert: sp.vcek_der().to_vec(),
        chain: sp.ask_der().to_vec(),
        crl: vec![],
    }
}

pub const MODEL_SHA256: [u8; 32] = [2; 32];
/// The seed of the test enclave's answer-log key.
pub const LOG_SEED: [u8; 32] = [7; 32];

/// The test enclave's answer log (origin and key) and its signer.
pub fn log_signer() -> (vouch_attestation::note::NoteSigner, vouch_attestation::tlog::LogClaim) {
    use vouch_attestation::note::NoteSigner;
    let key = NoteSigner::from_seed("k", &LOG_SEED).unwrap().verifier().key;
    let claim = vouch_attestation::tlog::LogClaim::for_key(&key);
    (NoteSigner::from_seed(&claim.origin, &LOG_SEED).unwrap(), claim)
}
pub const MODEL_NAME: &str = "test-model";

/// Evidence as the enclave returns it for `nonce`, binding `spki_sha256`.
pub fn evidence(sp: &SimulatedSp, nonce: &[u8], spki_sha256: &[u8]) -> Vec<u8> {
    let claims = AttestationClaims {
        version: binding::ATTESTATION_CLAIMS_VERSION,
        tls_spki_sha256: spki_sha256.to_vec(),
        model_sha256: MODEL_SHA256.to_vec(),
        model_name: MODEL_NAME.into(),
        models: vec![binding::ModelClaim {
            name: MODEL_NAME.into(),
            sha256: MODEL_SHA256.to_vec(),
            architecture: "llama".into(),
            tensor_types: [("q4_1".to_owned(), 1)].into(),
            engine: "vouch-native-1".into(),
            tokenizer_sha256: vec![8; 32],
            chat_template: Some("chatml-vouch-1".into()),
        }],
        nonce: nonce.to_vec(),
        enclave_version: "0.1.0-test".into(),
        log: Some(log_signer().1),
    };
    let cb = binding::to_cbor(&claims);
    let report = sp.report(&binding::report_data(binding::ATTESTATION_DOMAIN, &cb), &[9; 48], 0).unwrap();
    binding::to_cbor(&Evidence {
        version: vouch_attestation::receipt::FORMAT_VERSION,
        platform: "sim".into(),
        bundle: bundle(sp, &report[..]),
        claims: cb,
    })
}

/// A one-answer batch receipt for exactly `request` and `output`.
pub fn receipt(sp: &SimulatedSp, request: &[u8], output: &str, spki_sha256: &[u8]) -> Vec<u8> {
    let leaf = ReceiptLeaf {
        version: vouch_attestation::receipt::FORMAT_VERSION,
        request_sha256: sha2::Sha256::digest(request).to_vec(),
        output_sha256: sha2::Sha256::digest(output.as_bytes()).to_vec(),
        finish_reason: "stop".into(),
        temperature: 0.0,
        top_p: None,
        seed: 0,
        max_tokens: 16,
        model_sha256: MODEL_SHA256.to_vec(),
        prompt_tokens: 5,
        completion_tokens: 3,
        response_id: "chatcmpl-test".into(),
        replay: Some(vouch_attestation::receipt::ReplaySpec::for_tests()),
        decoding: Some(vouch_attestation::receipt::DecodingSpec::unconstrained()),
        logprobs_sha256: None,
        salt: Some(vec![5; 32]),
    };
    receipt_for_leaf(sp, &leaf, spki_sha256)
}

/// A receipt for exactly this leaf, the only entry of a one-leaf answer log whose
/// checkpoint's report names the leaf's model.
#[allow(dead_code)] // not every test binary signs its own leaves
pub fn receipt_for_leaf(sp: &SimulatedSp, leaf: &ReceiptLeaf, spki_sha256: &[u8]) -> Vec<u8> {
    let model_sha256 = leaf.model_sha256.clone();
    if leaf.version < 5 {
        return legacy_receipt_for_leaf(sp, leaf, spki_sha256);
    }
    let leaf = binding::to_cbor(leaf);
    let hashes = vec![merkle::leaf_hash(&leaf)];
    let (signer, log) = log_signer();
    let head = vouch_attestation::tlog::Checkpoint {
        origin: log.origin.clone(),
        size: 1,
        root: merkle::root(&hashes),
    };
    let note = signer.sign(&head.body()).unwrap().to_bytes();
    let claims = BatchClaims {
        version: binding::LOG_BATCH_CLAIMS_VERSION,
        merkle_root: merkle::root(&hashes).to_vec(),
        tree_size: 1,
        tls_spki_sha256: spki_sha256.to_vec(),
        model_sha256: vec![],
        batch_seq: 0,
        models: vec![serde_bytes::ByteBuf::from(model_sha256)],
        log: Some(log),
    };
    let cb = binding::to_cbor(&claims);
    let report = sp.report(&binding::report_data(binding::BATCH_DOMAIN, &cb), &[9; 48], 0).unwrap();
    binding::to_cbor(&Receipt {
        version: vouch_attestation::receipt::FORMAT_VERSION,
        platform: "sim".into(),
        leaf,
        leaf_index: 0,
        proof: vec![],
        batch_claims: cb,
        bundle: bundle(sp, &report[..]),
        checkpoint: Some(note),
    })
}

/// A format 2-4 receipt (one tree per batch, before the answer log) for this leaf.
fn legacy_receipt_for_leaf(sp: &SimulatedSp, leaf: &ReceiptLeaf, spki_sha256: &[u8]) -> Vec<u8> {
    let version = leaf.version;
    let model_sha256 = leaf.model_sha256.clone();
    let leaf = binding::to_cbor(leaf);
    let hashes = vec![merkle::leaf_hash(&leaf)];
    let claims = BatchClaims {
        version: binding::CLAIMS_VERSION,
        merkle_root: merkle::root(&hashes).to_vec(),
        tree_size: 1,
        tls_spki_sha256: spki_sha256.to_vec(),
        model_sha256,
        batch_seq: 0,
        models: vec![],
        log: None,
    };
    let cb = binding::to_cbor(&claims);
    let report = sp.report(&binding::report_data(binding::BATCH_DOMAIN, &cb), &[9; 48], 0).unwrap();
    binding::to_cbor(&Receipt {
        version,
        platform: "sim".into(),
        leaf,
        leaf_index: 0,
        proof: vec![],
        batch_claims: cb,
        bundle: bundle(sp, &report[..]),
        checkpoint: None,
    })
}
