//! The verifier's one error type: every way evidence can fail to be authentic.
//!
//! Verifier side. Each variant names one precise reason, carrying
//! `{ expected, actual }` where a comparison failed, so callers and tests can match the
//! exact cause.

use crate::product::{Product, TcbComponent};
use crate::report::SigningKey;

/// The role a certificate plays in an AMD chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum CertRole {
    /// AMD Root Key (self-signed, per product).
    Ark,
    /// AMD SEV Key: intermediate that certifies VCEKs.
    Ask,
    /// AMD SEV VLEK Key: intermediate that certifies VLEKs.
    Asvk,
    /// Versioned Chip Endorsement Key (leaf).
    Vcek,
    /// Versioned Loaded Endorsement Key (leaf).
    Vlek,
    /// The leaf, before its kind is known.
    Leaf,
    /// An intermediate, before its kind is known.
    Intermediate,
    /// A certificate revocation list.
    Crl,
}

impl std::fmt::Display for CertRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertRole::Ark => "ARK",
            CertRole::Ask => "ASK",
            CertRole::Asvk => "ASVK",
            CertRole::Vcek => "VCEK",
            CertRole::Vlek => "VLEK",
            CertRole::Leaf => "leaf certificate",
            CertRole::Intermediate => "intermediate certificate",
            CertRole::Crl => "CRL",
        })
    }
}

/// Why evidence is not authentic (cryptographic verification failed or the
/// evidence is malformed). Policy violations are reported separately by
/// [`crate::policy::PolicyViolations`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The report is not exactly 1184 bytes.
    #[error("report is {actual} bytes, expected exactly {expected}")]
    ReportLength {
        /// Required length.
        expected: usize,
        /// Received length.
        actual: usize,
    },
    /// Report VERSION is not one this verifier knows (2–5).
    #[error("unsupported report version {version} (supported: 2, 3, 4, 5)")]
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// SIGNATURE_ALGO is not 1 (ECDSA P-384 with SHA-384).
    #[error("unsupported signature algorithm {algorithm} (expected 1, ECDSA P-384/SHA-384)")]
    UnsupportedSignatureAlgorithm {
        /// The algorithm field.
        algorithm: u32,
    },
    /// A reserved or must-be-zero field holds a non-zero byte.
    #[error("reserved field {field} is not zero (first non-zero byte at offset {offset:#x})")]
    ReservedNonZero {
        /// Which field.
        field: &'static str,
        /// Byte offset in the report.
        offset: usize,
    },
    /// A field holds a value the specification does not allow.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// CPUID family/model in a v3+ report names no known product.
    #[error("unknown CPU: family {family:#x} model {model:#x}")]
    UnknownCpuid {
        /// CPUID_FAM_ID.
        family: u8,
        /// CPUID_MOD_ID.
        model: u8,
    },
    /// No product could be determined (v2 report, no productName, no caller hint).
    #[error("cannot determine the AMD product: v2 report without productName; pass --product")]
    UnknownProduct,
    /// Two sources name different products.
    #[error("product mismatch: {source_a} says {expected}, {source_b} says {actual}")]
    ProductMismatch {
        /// The product according to `source_a`.
        expected: Product,
        /// The product according to `source_b`.
        actual: Product,
        /// First source.
        source_a: &'static str,
        /// Second source.
        source_b: &'static str,
    },
    /// A certificate could not be decoded.
    #[error("cannot parse {role}: {reason}")]
    CertificateParse {
        /// Which certificate.
        role: CertRole,
        /// Decoder message.
        reason: String,
    },
    /// A caller-supplied chain contained a self-signed certificate that is not a
    /// trusted root. Chains may add intermediates, never roots.
    #[error("the supplied chain contains an untrusted root ({subject}); roots are compiled in")]
    UntrustedRoot {
        /// Subject of the offending certificate.
        subject: String,
    },
    /// The evidence supplied an intermediate that is not the compiled-in AMD ASK/ASVK.
    /// Intermediates are compiled in; a supplied one is used only when byte-equal to
    /// ours, so the host cannot choose which intermediate a chain goes through.
    #[error("the supplied {role} {subject:?} (serial {serial}) is not AMD's compiled-in {role}; intermediates are compiled in")]
    UntrustedIntermediate {
        /// ASK or ASVK.
        role: CertRole,
        /// Subject of the supplied certificate.
        subject: String,
        /// Its serial number, hex.
        serial: String,
    },
    /// A certificate offered as Vouch's simulated root is not one the simulator made.
    #[error("{subject:?} is not a Vouch simulated root: {reason}")]
    NotASimulatedRoot {
        /// Its subject.
        subject: String,
        /// Why it was refused.
        reason: String,
    },
    /// The certificate's issuer name is not its presumed signer's subject.
    #[error("{role} issuer is {actual:?}, expected {expected:?}")]
    IssuerMismatch {
        /// The certificate being checked.
        role: CertRole,
        /// The subject of the signer.
        expected: String,
        /// The issuer written in the certificate.
        actual: String,
    },
    /// No intermediate with the leaf's issuer name was available.
    #[error("no {expected} found that issued the {role} (issuer {issuer:?})")]
    MissingIntermediate {
        /// The leaf.
        role: CertRole,
        /// The intermediate kind needed.
        expected: CertRole,
        /// The leaf's issuer.
        issuer: String,
    },
    /// The certificate's signature does not verify under its issuer's key.
    #[error("{role} signature does not verify under the {issuer}")]
    CertificateSignature {
        /// The certificate being checked.
        role: CertRole,
        /// Its signer.
        issuer: CertRole,
    },
    /// Signature algorithm other than RSASSA-PSS/SHA-384/MGF1-SHA-384/salt 48.
    #[error("{role} uses an unexpected signature algorithm: {reason}")]
    CertificateAlgorithm {
        /// The certificate.
        role: CertRole,
        /// Detail.
        reason: String,
    },
    /// The certificate is outside its validity window at the time passed in.
    #[error("{role} is not valid at {now}: valid from {not_before} to {not_after}")]
    CertificateExpired {
        /// The certificate.
        role: CertRole,
        /// notBefore, Unix seconds.
        not_before: u64,
        /// notAfter, Unix seconds.
        not_after: u64,
        /// The verification time, Unix seconds.
        now: u64,
    },
    /// A required AMD extension is missing from the VCEK/VLEK.
    #[error("{role} lacks the AMD extension {oid}")]
    MissingExtension {
        /// The certificate.
        role: CertRole,
        /// Dotted OID.
        oid: &'static str,
    },
    /// An AMD extension is malformed.
    #[error("{role} extension {oid} is malformed: {reason}")]
    BadExtension {
        /// The certificate.
        role: CertRole,
        /// Dotted OID.
        oid: &'static str,
        /// Detail.
        reason: String,
    },
    /// FLAGS.SIGNING_KEY disagrees with the kind of certificate supplied.
    #[error("report says it was signed by the {expected}, but the certificate is a {actual}")]
    SigningKeyMismatch {
        /// From the report.
        expected: SigningKey,
        /// From the certificate chain.
        actual: SigningKey,
    },
    /// REPORTED_TCB component differs from the certificate's SPL.
    #[error("REPORTED_TCB {component} is {expected}, the certificate says {actual}")]
    TcbMismatch {
        /// Which component.
        component: TcbComponent,
        /// Value in the report.
        expected: u8,
        /// Value in the certificate.
        actual: u8,
    },
    /// CHIP_ID differs from the VCEK's hwID.
    #[error("CHIP_ID {expected} does not match the VCEK hwID {actual}")]
    ChipIdMismatch {
        /// Report CHIP_ID (hex, significant bytes).
        expected: String,
        /// Certificate hwID (hex).
        actual: String,
    },
    /// The ECDSA P-384 report signature does not verify under the VCEK/VLEK.
    #[error("report signature does not verify under the {signer}")]
    ReportSignature {
        /// VCEK or VLEK.
        signer: SigningKey,
    },
    /// The CRL is not signed by the ARK, malformed, or from another issuer.
    #[error("CRL rejected: {reason}")]
    CrlInvalid {
        /// Detail.
        reason: String,
    },
    /// The CRL is outside its thisUpdate/nextUpdate window.
    #[error("CRL is not current at {now}: thisUpdate {this_update}, nextUpdate {next_update}")]
    CrlStale {
        /// thisUpdate, Unix seconds.
        this_update: u64,
        /// nextUpdate, Unix seconds.
        next_update: u64,
        /// The verification time, Unix seconds.
        now: u64,
    },
    /// A certificate in the chain is revoked.
    #[error("{role} serial {serial} is revoked by the ARK's CRL")]
    Revoked {
        /// The revoked certificate.
        role: CertRole,
        /// Its serial number, hex.
        serial: String,
    },
    /// PEM framing could not be decoded.
    #[error("cannot decode PEM: {reason}")]
    Pem {
        /// Detail.
        reason: String,
    },
}
