//! AMD CRLs (from KDS, through the host): decoding, issuer, RSASSA-PSS signature under
//! each genuine ARK, time window, and revocation lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_attestation::cert;
use vouch_attestation::crl::verify_crl;
use vouch_attestation::CertRole;

fuzz_target!(|data: &[u8]| {
    let der = cert::der_from_pem_or_der(data).unwrap_or_else(|_| data.to_vec());
    for roots in vouch_attestation::roots::amd_roots() {
        if let Ok(crl) = verify_crl(&der, &roots.ark, vouch_fuzz::NOW) {
            let _ = (crl.this_update(), crl.next_update(), crl.revoked_serials());
            let _ = crl.check_not_revoked(&roots.ask, CertRole::Ask);
            let _ = crl.check_not_revoked(&roots.asvk, CertRole::Asvk);
        }
    }
});
