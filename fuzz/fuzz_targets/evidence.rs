//! `GET /v1/attestation` evidence (CBOR, from the host): decoding with its size bound,
//! versions, report verification (the TEST-ONLY simulated root is trusted so that
//! genuine-shaped seeds verify to the end), policy, REPORT_DATA binding, claims, nonce.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_attestation::receipt::verify_evidence;
use vouch_attestation::Policy;

fuzz_target!(|data: &[u8]| {
    let policy = vouch_fuzz::deep_policy();
    if let Ok(v) = verify_evidence(vouch_fuzz::anchors_with_sim(), data, &vouch_fuzz::SEED_NONCE, &policy, vouch_fuzz::NOW) {
        let _ = (v.claims(), v.report().is_simulated());
    }
    let _ = verify_evidence(vouch_fuzz::amd(), data, &[0; 32], &policy, vouch_fuzz::NOW);
});
