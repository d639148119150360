//! The AMD certificates compiled into the verifier (`attestation/roots/*.pem`, served by
//! `roots::amd_roots()`) are the ones other verifiers trust, byte for byte.
//!
//! * ARK and ASK of Milan, Genoa and Turin: the same DER as the copies virtee/sev 8
//!   ships (`sev::certs::snp::builtin::<product>::{ARK, ASK}`, PEM, public with the
//!   pure-Rust `crypto_nossl` backend). sev is a second, independently maintained source:
//!   an edit to our PEMs, or a re-issued AMD root picked up by only one side, fails here.
//! * ASVK (the VLEK intermediate): sev 8 ships none. Each compiled-in ASVK is instead
//!   compared with certificate [0] of the KDS VLEK chain in the shared dev vectors
//!   (`certs/<product>_vlek_cert_chain.pem`, from go-sev-guest's `verify/trust/`; the
//!   vectors' SOURCES.md records that it is the same DER in trustee, Oak and Microsoft's
//!   TAV), whose ARK must be sev's ARK too, and the ASVK must verify under that ARK.
//!   That half needs `../shared/vectors` (see `support/shared_vectors.rs`).
//!
//! The PEMs are decoded here with `pem-rfc7468`, not the verifier's own loader, so a
//! fault in that loader cannot hide a difference.
#![cfg(target_os = "linux")] // sev, like the enclave's use of it, is a Linux dev-dependency
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a test failure

#[path = "support/shared_vectors.rs"]
mod shared_vectors;

use sev::certs::snp::builtin::{genoa, milan, turin};
use sev::certs::snp::Verifiable;
use shared_vectors::{note, Vectors};
use vouch_attestation::roots::amd_roots_for;
use vouch_attestation::{CertRole, Product};

/// sev's copies, per product: (product, ARK PEM, ASK PEM).
const SEV_BUILTIN: [(Product, &[u8], &[u8]); 3] = [
    (Product::Milan, milan::ARK, milan::ASK),
    (Product::Genoa, genoa::ARK, genoa::ASK),
    (Product::Turin, turin::ARK, turin::ASK),
];

/// Every DER certificate in a PEM text, in order (CRLF and LF line endings alike).
fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8(pem.to_vec()).unwrap().replace("\r\n", "\n");
    let end = "-----END CERTIFICATE-----";
    text.split_inclusive(end)
        .filter(|block| block.contains("-----BEGIN CERTIFICATE-----"))
        .map(|block| {
            let block = &block[block.find("-----BEGIN").unwrap()..];
            let (label, der) = pem_rfc7468::decode_vec(block.as_bytes()).unwrap();
            assert_eq!(label, "CERTIFICATE");
            der
        })
        .collect()
}

fn one_cert(pem: &[u8]) -> Vec<u8> {
    let mut certs = pem_certs(pem);
    assert_eq!(certs.len(), 1, "expected exactly one certificate");
    certs.remove(0)
}

#[test]
fn compiled_in_ark_and_ask_equal_virtee_sev_builtin() {
    for (product, sev_ark, sev_ask) in SEV_BUILTIN {
        let ours = amd_roots_for(product).unwrap_or_else(|| panic!("{product}: no compiled-in roots"));
        assert_eq!(ours.ark.der(), one_cert(sev_ark).as_slice(), "{product} ARK differs from sev's");
        assert_eq!(ours.ask.der(), one_cert(sev_ask).as_slice(), "{product} ASK differs from sev's");
        // sev itself accepts its pair (ARK self-signed, ARK signs ASK), so the DER we
        // compared is a chain sev would trust.
        let (ark, ask) = match product {
            Product::Milan => (milan::ark().unwrap(), milan::ask().unwrap()),
            Product::Genoa => (genoa::ark().unwrap(), genoa::ask().unwrap()),
            _ => (turin::ark().unwrap(), turin::ask().unwrap()),
        };
        (&ark, &ark).verify().unwrap_or_else(|e| panic!("{product}: sev rejects its ARK: {e}"));
        (&ark, &ask).verify().unwrap_or_else(|e| panic!("{product}: sev rejects its ASK: {e}"));
    }
    note("roots: compiled-in ARK and ASK of Milan, Genoa, Turin equal virtee/sev 8's builtin copies");
}

#[test]
fn compiled_in_asvk_equals_the_kds_vlek_chain() {
    let Some(dev) = Vectors::dev() else { return };
    for (product, sev_ark, _) in SEV_BUILTIN {
        let ours = amd_roots_for(product).unwrap();
        let rel = format!("certs/{}_vlek_cert_chain.pem", product.to_string().to_lowercase());
        let chain = pem_certs(&dev.read(&rel));
        assert_eq!(chain.len(), 2, "{rel}: expected ASVK then ARK");
        assert_eq!(ours.asvk.der(), chain[0].as_slice(), "{product} ASVK differs from {rel}");
        assert_eq!(chain[1], one_cert(sev_ark), "{rel}: its ARK is not sev's {product} ARK");
        ours.asvk
            .verify_signed_by(&ours.ark, CertRole::Asvk, CertRole::Ark)
            .unwrap_or_else(|e| panic!("{product}: ASVK does not verify under the ARK: {e}"));
    }
    note("roots: compiled-in ASVKs equal the KDS VLEK chains in ../shared/vectors (sev 8 ships no ASVK)");
}
