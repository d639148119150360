//! Shared fixtures of the fuzz targets: trusted anchors (AMD, plus the TEST-ONLY
//! simulated root so that evidence and receipts can verify all the way down), verified
//! chains of the genuine vectors, and the fixed clock.
//!
//! The genuine vectors are not in this repository: they are read from
//! `<repo>/../shared/vectors` and `../shared/vectors-heldout` (overrides
//! `VOUCH_VECTORS_DIR`, `VOUCH_HELDOUT_DIR`), found by the same rule as the tests
//! (`attestation/tests/support/shared_vectors.rs`). Absent, the targets still run: the
//! chains they would have checked against are simply missing.
//!
//! Verifier side: every target feeds attacker-controlled bytes to a decoder the client
//! runs on what the host hands it. A target must never panic, hang or allocate without
//! bound, whatever the input.

#[path = "../../attestation/tests/support/shared_vectors.rs"]
mod shared_vectors;

use shared_vectors::VectorSet;
use std::path::PathBuf;
use std::sync::OnceLock;
use vouch_attestation::binding;
use vouch_attestation::cert::AmdCert;
use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};
use vouch_attestation::{verify_chain, CertRole, ChainInput, TrustAnchors, VerifiedChain};

/// 2026-09-01: inside the validity of the simulated chain and of the committed CRLs.
pub const NOW: u64 = 1_788_220_800;

/// The nonce the committed evidence seeds were fetched with.
pub const SEED_NONCE: [u8; 32] = [0x42; 32];

/// The development vector set (`<repo>/../shared/vectors`), present or not: a fuzz
/// target must not panic, so a missing file reads as empty.
pub fn vectors() -> PathBuf {
    VectorSet::Dev.path()
}

fn sim() -> &'static SimulatedSp {
    static SP: OnceLock<SimulatedSp> = OnceLock::new();
    SP.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../attestation/testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor");
        let keys: SimKeyMaterial =
            binding::from_cbor(&std::fs::read(path).expect("TEST-ONLY sim keys")).expect("sim keys");
        SimulatedSp::from_keys(&keys).expect("sim")
    })
}

/// AMD's roots plus the TEST-ONLY simulated root.
pub fn anchors_with_sim() -> &'static TrustAnchors {
    static A: OnceLock<TrustAnchors> = OnceLock::new();
    A.get_or_init(|| {
        let sp = sim();
        let mut a = TrustAnchors::amd();
        a.dangerous_add_simulated_root(sp.ark_der(), sp.product()).expect("sim root");
        a
    })
}

/// A policy that lets verification run to its end on any authentic input (every
/// product, any code), so the fuzzer reaches the binding, claims and Merkle code; the
/// strict default would stop nearly every input at the policy.
pub fn deep_policy() -> vouch_attestation::Policy {
    vouch_attestation::Policy {
        accepted_products: vec!["milan".into(), "genoa".into(), "turin".into()],
        dangerous_allow_any_code: true,
        ..vouch_attestation::Policy::default()
    }
}

/// One verified simulated report (TEST-ONLY keys), for targets that apply policies.
pub fn sim_report() -> Option<&'static vouch_attestation::VerifiedReport> {
    static R: OnceLock<Option<vouch_attestation::VerifiedReport>> = OnceLock::new();
    R.get_or_init(|| {
        let sp = sim();
        let report = sp.report(&[7; 64], &[0x4d; 48], 0).ok()?;
        let input = ChainInput { leaf: sp.vcek_der(), chain: Some(sp.ask_der()), crl: None, product: None };
        vouch_attestation::verify_report(anchors_with_sim(), &report[..], &input, NOW).ok()
    })
    .as_ref()
}

/// AMD's roots only.
pub fn amd() -> &'static TrustAnchors {
    static A: OnceLock<TrustAnchors> = OnceLock::new();
    A.get_or_init(TrustAnchors::amd)
}

/// Verified chains of every genuine vector's VCEK/VLEK (both sets, whichever are
/// present), each at a time inside its validity, with the chip id it certifies (for
/// picking the right one).
pub fn genuine_chains() -> &'static [VerifiedChain] {
    static C: OnceLock<Vec<VerifiedChain>> = OnceLock::new();
    C.get_or_init(|| {
        let mut out = Vec::new();
        for set in [VectorSet::Dev, VectorSet::Heldout] {
            let dir = set.path();
            let Ok(bytes) = std::fs::read(dir.join("manifest.json")) else { continue };
            let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            for p in manifest["positive"].as_array().into_iter().flatten() {
                let read = |k: &str| std::fs::read(dir.join(p[k].as_str().unwrap_or(""))).unwrap_or_default();
                let leaf = read("leaf_cert");
                let chain = read("chain");
                let Ok(cert) = AmdCert::from_der(&leaf, CertRole::Leaf) else { continue };
                let now = cert.validity().0 + 86_400;
                let input = ChainInput { leaf: &leaf, chain: Some(&chain), crl: None, product: None };
                if let Ok(c) = verify_chain(amd(), &input, None, now) {
                    out.push(c);
                }
            }
        }
        out
    })
}
