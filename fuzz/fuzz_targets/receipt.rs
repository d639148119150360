//! Receipts (CBOR, base64 in `vouch_receipt` or a receipt file): decoding, versions,
//! proof bounds, batch verification (cached across inputs, as an auditor's
//! ReceiptVerifier would), Merkle inclusion, leaf decoding and the exchange check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use std::sync::OnceLock;
use vouch_attestation::receipt::{verify_receipt, ReceiptVerifier};
use vouch_attestation::Policy;

fn verifier() -> &'static Mutex<ReceiptVerifier> {
    static V: OnceLock<Mutex<ReceiptVerifier>> = OnceLock::new();
    V.get_or_init(|| {
        Mutex::new(ReceiptVerifier::new(vouch_fuzz::anchors_with_sim().clone(), vouch_fuzz::deep_policy(), vouch_fuzz::NOW))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut v = verifier().lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(r) = v.verify(data) {
        let _ = r.check_exchange(b"{}", "");
        let _ = (r.leaf(), r.batch(), r.report().is_simulated());
    }
    drop(v);
    // The uncached path with AMD roots only (the simulated seeds fail at the chain).
    let _ = verify_receipt(vouch_fuzz::amd(), data, &Policy::default(), vouch_fuzz::NOW);
    let _ = verify_receipt(vouch_fuzz::amd(), data, &vouch_fuzz::deep_policy(), vouch_fuzz::NOW);
});
