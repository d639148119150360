//! The REPORT_DATA binding, shared by the enclave (which asks the secure processor to
//! sign it) and every verifier (which recomputes it).
//!
//! Both sides of the trust boundary call this one function. REPORT_DATA is
//! `SHA-512(domain ‖ 0x00 ‖ claims)` where `claims` are the exact CBOR bytes that
//! travel with the evidence — verifiers hash what they received, never a re-encoding.
//! The domain string carries the purpose and a version, so a report made for one
//! purpose can never be read as another.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

/// Domain of fresh attestation claims (`GET /v1/attestation`).
pub const ATTESTATION_DOMAIN: &str = "vouch/attestation-claims/v1";
/// Domain of receipt batch claims (group commit).
pub const BATCH_DOMAIN: &str = "vouch/receipt-batch/v1";
/// Version written in every claims structure.
pub const CLAIMS_VERSION: u32 = 1;

/// Computes the 64-byte REPORT_DATA for `claims_bytes` under `domain`.
pub fn report_data(domain: &str, claims_bytes: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(claims_bytes);
    h.finalize().into()
}

/// What a fresh attestation binds: the enclave's TLS key, its model, the client's nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationClaims {
    /// [`CLAIMS_VERSION`].
    pub version: u32,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the enclave's TLS key.
    #[serde(with = "serde_bytes")]
    pub tls_spki_sha256: Vec<u8>,
    /// SHA-256 of the model file as loaded.
    #[serde(with = "serde_bytes")]
    pub model_sha256: Vec<u8>,
    /// The model's name as served.
    pub model_name: String,
    /// The client's nonce (32 bytes).
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The enclave software version.
    pub enclave_version: String,
}

/// What one receipt batch binds: the Merkle root over its receipts, and the key and
/// model that produced them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchClaims {
    /// [`CLAIMS_VERSION`].
    pub version: u32,
    /// RFC 6962 Merkle tree head over the batch's receipt leaves.
    #[serde(with = "serde_bytes")]
    pub merkle_root: Vec<u8>,
    /// Number of leaves in the batch.
    pub tree_size: u64,
    /// SHA-256 of the enclave's TLS SPKI.
    #[serde(with = "serde_bytes")]
    pub tls_spki_sha256: Vec<u8>,
    /// SHA-256 of the model file.
    #[serde(with = "serde_bytes")]
    pub model_sha256: Vec<u8>,
    /// Monotonic batch number since enclave start.
    pub batch_seq: u64,
}

/// Encodes a value to CBOR (the enclave's side; verifiers decode received bytes).
pub fn to_cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Invariant: serialising these plain structs into a Vec cannot fail
    // (ciborium only errors on writer I/O failure, and Vec writes are infallible).
    if ciborium::into_writer(v, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decodes CBOR with a size bound, rejecting trailing bytes.
pub fn from_cbor<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    let mut cursor = std::io::Cursor::new(bytes);
    let v: T = ciborium::from_reader(&mut cursor).map_err(|e| e.to_string())?;
    if cursor.position() as usize != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - cursor.position() as usize));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate() {
        assert_ne!(report_data(ATTESTATION_DOMAIN, b"x"), report_data(BATCH_DOMAIN, b"x"));
        assert_ne!(report_data(ATTESTATION_DOMAIN, b"x"), report_data(ATTESTATION_DOMAIN, b"y"));
    }

    #[test]
    fn cbor_round_trip_and_trailing_rejected() {
        let c = AttestationClaims {
            version: 1,
            tls_spki_sha256: vec![1; 32],
            model_sha256: vec![2; 32],
            model_name: "m".into(),
            nonce: vec![3; 32],
            enclave_version: "0.1.0".into(),
        };
        let b = to_cbor(&c);
        assert_eq!(from_cbor::<AttestationClaims>(&b).unwrap(), c);
        let mut t = b.clone();
        t.push(0);
        assert!(from_cbor::<AttestationClaims>(&t).unwrap_err().contains("trailing"));
    }
}
