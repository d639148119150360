//! Certificates that arrive with evidence (VCEK/VLEK, ASK, chains; PEM or DER): every
//! AmdCert method, a signature check against a genuine ARK, and a whole chain
//! verification with the input as the leaf and as the supplied chain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_attestation::cert::{self, AmdCert};
use vouch_attestation::{verify_chain, CertRole, ChainInput, Product};

fuzz_target!(|data: &[u8]| {
    let _ = cert::der_from_pem_or_der(data);
    if let Ok(certs) = cert::certs_from_pem_or_der(data, CertRole::Leaf) {
        let ark = &vouch_attestation::roots::amd_roots()[0].ark;
        for c in certs.iter().take(8) {
            exercise(c, ark);
        }
    }
    let now = vouch_fuzz::NOW;
    let input = ChainInput { leaf: data, chain: None, crl: None, product: None };
    let _ = verify_chain(vouch_fuzz::amd(), &input, None, now);
    // The input as the supplied chain of a genuine leaf.
    let leaf = std::fs::read(vouch_fuzz::vectors().join("reports/milan_v2_virtee.vcek.der")).unwrap_or_default();
    let input = ChainInput { leaf: &leaf, chain: Some(data), crl: None, product: Some(Product::Milan) };
    let _ = verify_chain(vouch_fuzz::amd(), &input, None, now);
});

fn exercise(c: &AmdCert, ark: &AmdCert) {
    let role = CertRole::Leaf;
    let _ = (c.der(), c.subject(), c.issuer(), c.serial(), c.serial_hex(), c.is_self_issued());
    let _ = (c.public_key_bytes(), c.validity(), c.check_validity(vouch_fuzz::NOW, role), c.sha256(), c.spki_der());
    for oid in [
        cert::OID_BL_SPL,
        cert::OID_TEE_SPL,
        cert::OID_SNP_SPL,
        cert::OID_UCODE_SPL,
        cert::OID_FMC_SPL,
    ] {
        let _ = c.spl(oid, role);
    }
    let _ = (c.has_extension(cert::OID_CSP_ID), c.product_name(role), c.hwid(), c.p384_public_key(role));
    let _ = c.verify_signed_by(ark, CertRole::Ask, CertRole::Ark);
    let _ = c.verify_signed_by(c, CertRole::Ark, CertRole::Ark);
}
