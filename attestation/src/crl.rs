//! AMD certificate revocation lists (KDS `/vcek/v1/<product>/crl`).
//!
//! Verifier side. An AMD CRL is issued and signed (RSASSA-PSS/SHA-384) by the ARK and
//! lists revoked ASK/ASVK serials. A CRL is only evidence while inside its
//! thisUpdate/nextUpdate window at the time passed in; a stale one is rejected, never
//! silently accepted.

use crate::cert::{check_pss_sha384, tbs_range, verify_pss, AmdCert};
use crate::error::{CertRole, VerifyError};
use der::Decode;

/// A CRL whose signature by an ARK verified and which is current at the time checked.
#[derive(Clone, Debug)]
pub struct VerifiedCrl {
    this_update: u64,
    next_update: u64,
    number: Option<u64>,
    revoked: Vec<Vec<u8>>,
}

impl VerifiedCrl {
    /// thisUpdate, Unix seconds.
    pub fn this_update(&self) -> u64 {
        self.this_update
    }
    /// nextUpdate, Unix seconds.
    pub fn next_update(&self) -> u64 {
        self.next_update
    }
    /// The cRLNumber extension (RFC 5280 §5.2.3; AMD's increase with every issue), when
    /// present and at most 64 bits. Of two current CRLs, prefer the higher number.
    pub fn crl_number(&self) -> Option<u64> {
        self.number
    }
    /// Revoked serial numbers (big-endian bytes as encoded).
    pub fn revoked_serials(&self) -> &[Vec<u8>] {
        &self.revoked
    }
    /// Fails with [`VerifyError::Revoked`] if `cert` is listed.
    pub fn check_not_revoked(&self, cert: &AmdCert, role: CertRole) -> Result<(), VerifyError> {
        if self.revoked.iter().any(|s| normalize(s) == normalize(cert.serial())) {
            return Err(VerifyError::Revoked { role, serial: cert.serial_hex() });
        }
        Ok(())
    }
}

fn normalize(serial: &[u8]) -> &[u8] {
    let first = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    &serial[first..]
}

/// The cRLNumber extension (RFC 5280 §5.2.3), when present and at most 64 bits.
fn crl_number(crl: &x509_cert::crl::CertificateList) -> Option<u64> {
    crl.tbs_cert_list
        .crl_extensions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CRL_NUMBER)
        .and_then(|e| x509_cert::ext::pkix::CrlNumber::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|n| {
            let b = n.0.as_bytes();
            (b.len() <= 8).then(|| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
        })
}

/// (nextUpdate, cRLNumber) of a DER CRL WITHOUT verifying it: for a cache deciding
/// whether to fetch a newer copy. Whatever copy is used is verified by [`verify_crl`].
pub fn unverified_freshness(der: &[u8]) -> (Option<u64>, Option<u64>) {
    match x509_cert::crl::CertificateList::from_der(der) {
        Ok(crl) => (crl.tbs_cert_list.next_update.map(|t| t.to_unix_duration().as_secs()), crl_number(&crl)),
        Err(_) => (None, None),
    }
}

/// Verifies a DER CRL against `ark` at time `now` (Unix seconds).
pub fn verify_crl(der: &[u8], ark: &AmdCert, now: u64) -> Result<VerifiedCrl, VerifyError> {
    let bad = |reason: String| VerifyError::CrlInvalid { reason };
    let crl = x509_cert::crl::CertificateList::from_der(der).map_err(|e| bad(format!("decode: {e}")))?;
    let tbs = tbs_range(der).map_err(|e| bad(format!("decode: {e}")))?;
    let issuer = crl.tbs_cert_list.issuer.to_string();
    if issuer != ark.subject() {
        return Err(bad(format!("issuer {issuer:?} is not the ARK {:?}", ark.subject())));
    }
    check_pss_sha384(&crl.signature_algorithm, CertRole::Crl)?;
    let sig = crl.signature.as_bytes().ok_or_else(|| bad("signature has unused bits".into()))?;
    if !verify_pss(ark.public_key_bytes(), &der[tbs], sig) {
        return Err(bad("signature does not verify under the ARK".into()));
    }
    let this_update = crl.tbs_cert_list.this_update.to_unix_duration().as_secs();
    let next_update = crl
        .tbs_cert_list
        .next_update
        .map(|t| t.to_unix_duration().as_secs())
        .ok_or_else(|| bad("nextUpdate missing".into()))?;
    if now < this_update || now >= next_update {
        return Err(VerifyError::CrlStale { this_update, next_update, now });
    }
    let number = crl_number(&crl);
    let revoked = crl
        .tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.serial_number.as_bytes().to_vec())
        .collect();
    Ok(VerifiedCrl { this_update, next_update, number, revoked })
}
