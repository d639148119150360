//! X.509 certificates of AMD's SEV-SNP PKI: ARK, ASK/ASVK and VCEK/VLEK, with AMD's
//! KDS extensions (OID arc 1.3.6.1.4.1.3704.1).
//!
//! Verifier side. Certificates arriving with evidence are untrusted input: this module
//! decodes them, checks the RSASSA-PSS parameters AMD uses, and verifies signatures over
//! the exact to-be-signed bytes received (sliced from the input, not re-encoded).

use crate::error::{CertRole, VerifyError};
use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PSS_2048_8192_SHA384};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode, Reader};
use x509_cert::spki::AlgorithmIdentifierOwned;

/// RSASSA-PSS (RFC 4055).
pub const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// AMD KDS extension: productName (IA5String).
pub const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
/// AMD KDS extension: boot loader SPL (INTEGER).
pub const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
/// AMD KDS extension: TEE SPL.
pub const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
/// AMD KDS extension: SNP SPL.
pub const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
/// AMD KDS extension: microcode SPL.
pub const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
/// AMD KDS extension: FMC SPL (Turin).
pub const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
/// AMD KDS extension: hwID (raw bytes: 64, or 8 on Turin).
pub const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
/// AMD KDS extension: cloud service provider id (VLEK only).
pub const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";

/// RSASSA-PSS-params (RFC 4055 §3.1).
#[derive(der::Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_len: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer: Option<u32>,
}

/// A decoded (not yet trusted) certificate.
#[derive(Clone, Debug)]
pub struct AmdCert {
    der: Vec<u8>,
    tbs: std::ops::Range<usize>,
    inner: x509_cert::Certificate,
    subject: String,
    issuer: String,
}

/// Returns the byte range of the first element inside the outer SEQUENCE of a
/// signed structure (the to-be-signed part of a certificate or CRL).
pub(crate) fn tbs_range(der: &[u8]) -> der::Result<std::ops::Range<usize>> {
    let mut r = der::SliceReader::new(der)?;
    let _outer = der::Header::decode(&mut r)?;
    let start = usize::try_from(r.position())?;
    let inner = der::Header::decode(&mut r)?;
    let body = usize::try_from(r.position())?;
    let end = body + usize::try_from(inner.length)?;
    if end > der.len() {
        return Err(
            der::ErrorKind::Incomplete { expected_len: inner.length, actual_len: r.remaining_len() }.into()
        );
    }
    Ok(start..end)
}

/// Checks that `alg` is RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt:
/// what AMD uses for every certificate and CRL it signs. The trailer field may be
/// present (as `1`, the default) or absent: AMD's certificates carry both encodings.
pub(crate) fn check_pss_sha384(alg: &AlgorithmIdentifierOwned, role: CertRole) -> Result<(), VerifyError> {
    let bad = |reason: String| VerifyError::CertificateAlgorithm { role, reason };
    if alg.oid != OID_RSASSA_PSS {
        return Err(bad(format!("{} is not RSASSA-PSS", alg.oid)));
    }
    let params = alg.parameters.as_ref().ok_or_else(|| bad("PSS parameters missing".into()))?;
    let p: PssParams = params.decode_as().map_err(|e| bad(format!("PSS parameters: {e}")))?;
    if p.hash.as_ref().map(|h| h.oid) != Some(OID_SHA384) {
        return Err(bad("PSS hash is not SHA-384".into()));
    }
    let mgf = p.mask_gen.ok_or_else(|| bad("PSS mask generation function missing".into()))?;
    let mgf_hash: Option<AlgorithmIdentifierOwned> = mgf.parameters.as_ref().and_then(|a| a.decode_as().ok());
    if mgf.oid != OID_MGF1 || mgf_hash.map(|h| h.oid) != Some(OID_SHA384) {
        return Err(bad("PSS mask generation is not MGF1-SHA-384".into()));
    }
    if p.salt_len != Some(48) {
        return Err(bad(format!("PSS salt length {:?}, expected 48", p.salt_len)));
    }
    if !matches!(p.trailer, None | Some(1)) {
        return Err(bad("PSS trailer field is not 1".into()));
    }
    Ok(())
}

/// Verifies an RSASSA-PSS/SHA-384 `signature` over `msg` with an RSA public key
/// given as PKCS#1 RSAPublicKey bytes (the SPKI's BIT STRING contents).
pub(crate) fn verify_pss(rsa_key: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, rsa_key).verify(msg, signature).is_ok()
}

impl AmdCert {
    /// Decodes a DER certificate.
    pub fn from_der(der: &[u8], role: CertRole) -> Result<AmdCert, VerifyError> {
        let err = |e: der::Error| VerifyError::CertificateParse { role, reason: e.to_string() };
        let inner = x509_cert::Certificate::from_der(der).map_err(err)?;
        let tbs = tbs_range(der).map_err(err)?;
        let subject = inner.tbs_certificate.subject.to_string();
        let issuer = inner.tbs_certificate.issuer.to_string();
        Ok(AmdCert { der: der.to_vec(), tbs, inner, subject, issuer })
    }

    /// The DER bytes as received.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// Subject distinguished name (RFC 4514 string).
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// Issuer distinguished name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// Serial number bytes (big-endian, as encoded).
    pub fn serial(&self) -> &[u8] {
        self.inner.tbs_certificate.serial_number.as_bytes()
    }
    /// Serial as hex.
    pub fn serial_hex(&self) -> String {
        hex::encode(self.serial())
    }
    /// The values of every subject attribute of type `oid` (e.g. CN, O), as text. Only
    /// string-typed values are returned; names are compared, never trusted.
    pub fn subject_attributes(&self, oid: ObjectIdentifier) -> Vec<String> {
        self.inner
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|atv| atv.oid == oid)
            .filter_map(|atv| std::str::from_utf8(atv.value.value()).ok().map(str::to_owned))
            .collect()
    }
    /// Whether subject equals issuer.
    pub fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }
    /// The raw subject public key (PKCS#1 RSAPublicKey, or an uncompressed EC point).
    pub fn public_key_bytes(&self) -> &[u8] {
        self.inner.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes()
    }
    /// (notBefore, notAfter) in Unix seconds.
    pub fn validity(&self) -> (u64, u64) {
        let v = &self.inner.tbs_certificate.validity;
        (v.not_before.to_unix_duration().as_secs(), v.not_after.to_unix_duration().as_secs())
    }
    /// Checks the validity window against `now` (Unix seconds).
    pub fn check_validity(&self, now: u64, role: CertRole) -> Result<(), VerifyError> {
        let (not_before, not_after) = self.validity();
        if now < not_before || now > not_after {
            return Err(VerifyError::CertificateExpired { role, not_before, not_after, now });
        }
        Ok(())
    }

    /// Verifies that `issuer` signed this certificate: issuer name, RSASSA-PSS
    /// parameters and signature over the received TBS bytes.
    pub fn verify_signed_by(
        &self,
        issuer: &AmdCert,
        role: CertRole,
        issuer_role: CertRole,
    ) -> Result<(), VerifyError> {
        if self.issuer != issuer.subject {
            return Err(VerifyError::IssuerMismatch {
                role,
                expected: issuer.subject.clone(),
                actual: self.issuer.clone(),
            });
        }
        check_pss_sha384(&self.inner.signature_algorithm, role)?;
        if self.inner.tbs_certificate.signature != self.inner.signature_algorithm {
            return Err(VerifyError::CertificateAlgorithm {
                role,
                reason: "inner and outer signature algorithms differ".into(),
            });
        }
        let sig = self
            .inner
            .signature
            .as_bytes()
            .ok_or(VerifyError::CertificateSignature { role, issuer: issuer_role })?;
        if !verify_pss(issuer.public_key_bytes(), &self.der[self.tbs.clone()], sig) {
            return Err(VerifyError::CertificateSignature { role, issuer: issuer_role });
        }
        Ok(())
    }

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        let exts = self.inner.tbs_certificate.extensions.as_ref()?;
        exts.iter().find(|e| e.extn_id.to_string() == oid).map(|e| e.extn_value.as_bytes())
    }

    /// Whether the certificate carries `oid`.
    pub fn has_extension(&self, oid: &str) -> bool {
        self.extension(oid).is_some()
    }

    /// An SPL extension: a DER INTEGER in 0..=255 (AMD encodes ≥ 0x80 as `02 02 00 xx`).
    pub fn spl(&self, oid: &'static str, role: CertRole) -> Result<u8, VerifyError> {
        let v = self.extension(oid).ok_or(VerifyError::MissingExtension { role, oid })?;
        let bad = |reason: String| VerifyError::BadExtension { role, oid, reason };
        let int = der::asn1::UintRef::from_der(v).map_err(|e| bad(e.to_string()))?;
        match int.as_bytes() {
            [] => Ok(0),
            [b] => Ok(*b),
            other => Err(bad(format!("{} bytes, expected an SPL in 0..=255", other.len()))),
        }
    }

    /// An extension holding an IA5String, if present.
    fn ia5_extension(&self, oid: &'static str, role: CertRole) -> Result<Option<String>, VerifyError> {
        let Some(v) = self.extension(oid) else { return Ok(None) };
        let s = der::asn1::Ia5StringRef::from_der(v).map_err(|e| VerifyError::BadExtension {
            role,
            oid,
            reason: e.to_string(),
        })?;
        Ok(Some(s.as_str().to_owned()))
    }

    /// The productName extension (e.g. "Milan-B0"), if present.
    pub fn product_name(&self, role: CertRole) -> Result<Option<String>, VerifyError> {
        self.ia5_extension(OID_PRODUCT_NAME, role)
    }

    /// The CSP_ID extension of a VLEK (an IA5String naming the cloud provider, e.g.
    /// "CN=cc-us-east-2.amazonaws.com"), if present.
    pub fn csp_id(&self, role: CertRole) -> Result<Option<String>, VerifyError> {
        self.ia5_extension(OID_CSP_ID, role)
    }

    /// The hwID extension: the raw extension value (not an inner OCTET STRING).
    pub fn hwid(&self) -> Option<&[u8]> {
        self.extension(OID_HWID)
    }

    /// The SEC1 uncompressed P-384 public key of a VCEK/VLEK.
    pub fn p384_public_key(&self, role: CertRole) -> Result<&[u8], VerifyError> {
        let spki = &self.inner.tbs_certificate.subject_public_key_info;
        let curve: Option<ObjectIdentifier> =
            spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as().ok());
        if spki.algorithm.oid != OID_EC_PUBLIC_KEY || curve != Some(OID_SECP384R1) {
            return Err(VerifyError::CertificateAlgorithm {
                role,
                reason: "public key is not ECDSA P-384".into(),
            });
        }
        let key = self.public_key_bytes();
        if key.len() != 97 || key[0] != 0x04 {
            return Err(VerifyError::CertificateAlgorithm {
                role,
                reason: "P-384 key is not an uncompressed point".into(),
            });
        }
        Ok(key)
    }

    /// SHA-256 of the DER.
    pub fn sha256(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(&self.der).into()
    }

    /// DER of the SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.inner.tbs_certificate.subject_public_key_info.to_der().unwrap_or_default()
    }
}

/// Decodes every certificate in `input`: PEM (one or more blocks, LF or CRLF) or a
/// single DER certificate.
pub fn certs_from_pem_or_der(input: &[u8], role: CertRole) -> Result<Vec<AmdCert>, VerifyError> {
    let text = std::str::from_utf8(input).ok().filter(|s| s.contains("-----BEGIN"));
    let Some(text) = text else {
        return Ok(vec![AmdCert::from_der(input, role)?]);
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN") {
        let block = &rest[start..];
        let end_marker =
            block.find("-----END").ok_or(VerifyError::Pem { reason: "unterminated PEM block".into() })?;
        let after = &block[end_marker..];
        let close = after[8..]
            .find("-----")
            .map(|i| end_marker + 8 + i + 5)
            .ok_or(VerifyError::Pem { reason: "unterminated PEM END line".into() })?;
        let pem = &block[..close];
        let normalized = pem.replace("\r\n", "\n");
        let (label, der) = pem_rfc7468::decode_vec(normalized.as_bytes())
            .map_err(|e| VerifyError::Pem { reason: e.to_string() })?;
        if label == "CERTIFICATE" {
            out.push(AmdCert::from_der(&der, role)?);
        }
        rest = &block[close..];
    }
    if out.is_empty() {
        return Err(VerifyError::Pem { reason: "no CERTIFICATE block".into() });
    }
    Ok(out)
}

/// Decodes DER or the first PEM block with any label (used for CRLs).
pub fn der_from_pem_or_der(input: &[u8]) -> Result<Vec<u8>, VerifyError> {
    match std::str::from_utf8(input).ok().filter(|s| s.contains("-----BEGIN")) {
        None => Ok(input.to_vec()),
        Some(text) => {
            let text = text.replace("\r\n", "\n");
            let start = text.find("-----BEGIN").unwrap_or(0);
            pem_rfc7468::decode_vec(&text.as_bytes()[start..])
                .map(|(_, der)| der)
                .map_err(|e| VerifyError::Pem { reason: e.to_string() })
        }
    }
}
