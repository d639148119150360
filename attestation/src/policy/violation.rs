//! What [`super::validate`] and [`super::warnings`] report: every way an authentic
//! report can fail a policy, and what a verdict should say even when it passes.
//!
//! Verifier side. Messages are one sentence each and name what to change.

use super::rules::MajorMinor;
use crate::product::{Product, TcbComponent};

/// Why a Milan report is refused unless `accepted_products` lists "milan".
pub const MILAN_FORGEABLE: &str = "EPYC Milan's root VCEK seed can be extracted by software alone \
     (MilanLaunchy + BadFuse, arXiv 2605.12990 \"Insecure Despite Proven Updated\", May 2026), \
     so a Milan host can forge reports for any TCB; list \"milan\" in accepted_products to accept it anyway";

/// One way a report fails a policy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The policy pins no code identity, so any guest code would be accepted.
    #[error(
        "the policy pins no code identity: pin the launch measurement (this report's is {measurement}), \
         an ID-key or author-key digest, or HOST_DATA — or pass --allow-any-code to accept any code"
    )]
    CodeIdentityNotPinned {
        /// This report's MEASUREMENT, hex, ready to paste into `measurements`.
        measurement: String,
    },
    /// The report's product is not accepted (see `Policy::accepted_products`).
    #[error("{product} reports are not accepted: {reason}")]
    ProductNotAccepted {
        /// The report's product.
        product: Product,
        /// Why (for Milan: the key-extraction attack).
        reason: &'static str,
    },
    /// Guest policy allows debugging.
    #[error("guest policy allows DEBUG")]
    DebugAllowed,
    /// Guest policy allows a migration agent.
    #[error("guest policy allows a migration agent")]
    MigrationAgentAllowed,
    /// A guest POLICY bit is set that the policy forbids.
    #[error("guest policy sets {bit}, which the policy forbids")]
    GuestPolicyForbidden {
        /// Spec name of the bit, e.g. "SMT".
        bit: &'static str,
    },
    /// A guest POLICY bit is clear that the policy requires.
    #[error("guest policy does not set {bit}, which the policy requires")]
    GuestPolicyRequired {
        /// Spec name of the bit.
        bit: &'static str,
    },
    /// The guest policy's ABI (POLICY bits 15:0) is below the minimum.
    #[error("guest policy ABI {actual} < minimum {minimum}")]
    GuestPolicyAbiTooLow {
        /// Minimum.
        minimum: MajorMinor,
        /// From POLICY.
        actual: MajorMinor,
    },
    /// PLATFORM_INFO has reserved bits set (a platform this verifier does not understand).
    #[error("PLATFORM_INFO has reserved bits {bits:#x} set")]
    PlatformInfoReserved {
        /// The reserved bits that are set.
        bits: u64,
    },
    /// A PLATFORM_INFO bit is set that the policy forbids.
    #[error("PLATFORM_INFO sets {bit}, which the policy forbids")]
    PlatformInfoForbidden {
        /// Spec name of the bit.
        bit: &'static str,
    },
    /// A PLATFORM_INFO bit is clear that the policy requires.
    #[error("PLATFORM_INFO does not set {bit}, which the policy requires")]
    PlatformInfoRequired {
        /// Spec name of the bit.
        bit: &'static str,
    },
    /// A TCB component is below the minimum.
    #[error("{which} TCB {component} is {actual}, minimum {minimum}")]
    TcbTooLow {
        /// "reported", "committed" or "launch".
        which: &'static str,
        /// Component.
        component: TcbComponent,
        /// Minimum.
        minimum: u8,
        /// Actual.
        actual: u8,
    },
    /// The certificate (VCEK/VLEK) certifies a TCB component above CURRENT_TCB: the
    /// key claims firmware newer than the firmware running.
    #[error("the certificate's {component} SPL {certified} exceeds CURRENT_TCB's {current}")]
    CertifiedTcbAboveCurrent {
        /// Component.
        component: TcbComponent,
        /// From the certificate.
        certified: u8,
        /// From CURRENT_TCB.
        current: u8,
    },
    /// COMMITTED differs from CURRENT (firmware not committed).
    #[error("provisional firmware: committed {committed} != current {current}")]
    ProvisionalFirmware {
        /// Committed TCB and version.
        committed: String,
        /// Current TCB and version.
        current: String,
    },
    /// A firmware build number is below the minimum.
    #[error("{which} firmware build {actual} < minimum {minimum}")]
    FirmwareBuildTooLow {
        /// "current" or "committed".
        which: &'static str,
        /// Minimum.
        minimum: u8,
        /// Actual.
        actual: u8,
    },
    /// A firmware API version is below the minimum.
    #[error("{which} firmware version {actual} < minimum {minimum}")]
    FirmwareVersionTooLow {
        /// "current" or "committed".
        which: &'static str,
        /// Minimum.
        minimum: MajorMinor,
        /// Actual.
        actual: MajorMinor,
    },
    /// A mitigation vector lacks required bits.
    #[error("{which} mitigation vector {actual:#x} lacks required bits {:#x}", required & !actual)]
    MitigationsMissing {
        /// "launch" or "current".
        which: &'static str,
        /// `required_mitigations`.
        required: u64,
        /// The report's vector.
        actual: u64,
    },
    /// Mitigations are required but the report predates mitigation vectors.
    #[error("report version {version} < 5 cannot show mitigations, and the policy requires {required:#x}")]
    MitigationsUnavailable {
        /// The report version.
        version: u32,
        /// `required_mitigations`.
        required: u64,
    },
    /// GUEST_SVN below the minimum.
    #[error("GUEST_SVN {actual} < minimum {minimum}")]
    GuestSvnTooLow {
        /// Minimum.
        minimum: u32,
        /// Actual.
        actual: u32,
    },
    /// Wrong VMPL.
    #[error("VMPL is {actual}, expected {expected}")]
    Vmpl {
        /// Expected.
        expected: u32,
        /// Actual.
        actual: u32,
    },
    /// MEASUREMENT not in the accepted list.
    #[error("measurement {actual} is not accepted")]
    Measurement {
        /// Hex.
        actual: String,
    },
    /// HOST_DATA differs.
    #[error("HOST_DATA {actual} != expected {expected}")]
    HostData {
        /// Hex.
        expected: String,
        /// Hex.
        actual: String,
    },
    /// ID key digest not accepted.
    #[error("ID key digest {actual} is not accepted")]
    IdKey {
        /// Hex.
        actual: String,
    },
    /// Author key digest not accepted.
    #[error("author key digest {actual} is not accepted")]
    AuthorKey {
        /// Hex.
        actual: String,
    },
    /// Author key digests are pinned but the report says no author key signed its ID block.
    #[error("author_key_digests are pinned but the report's FLAGS.AUTHOR_KEY_EN is clear")]
    AuthorKeyNotEnabled,
    /// The policy pins an all-zero digest or chip id, which stands for "none" in a report.
    #[error("the policy lists an all-zero value in {field}, which matches reports without one; remove it")]
    ZeroValuePinned {
        /// The policy field.
        field: &'static str,
    },
    /// FAMILY_ID differs.
    #[error("FAMILY_ID {actual} != expected {expected}")]
    FamilyId {
        /// Hex.
        expected: String,
        /// Hex.
        actual: String,
    },
    /// IMAGE_ID differs.
    #[error("IMAGE_ID {actual} != expected {expected}")]
    ImageId {
        /// Hex.
        expected: String,
        /// Hex.
        actual: String,
    },
    /// REPORT_ID differs.
    #[error("REPORT_ID {actual} != expected {expected}")]
    ReportId {
        /// Hex.
        expected: String,
        /// Hex.
        actual: String,
    },
    /// REPORT_ID_MA differs.
    #[error("REPORT_ID_MA {actual} != expected {expected}")]
    ReportIdMa {
        /// Hex.
        expected: String,
        /// Hex.
        actual: String,
    },
    /// REPORT_DATA differs.
    #[error("REPORT_DATA {actual} != expected {expected}")]
    ReportData {
        /// Hex.
        expected: String,
        /// Hex.
        actual: String,
    },
    /// CHIP_ID is on the deny list.
    #[error("CHIP_ID {chip_id} is denied by the policy")]
    ChipIdDenied {
        /// Hex.
        chip_id: String,
    },
    /// CHIP_ID is not on a non-empty allow list.
    #[error("CHIP_ID {chip_id} is not in allowed_chip_ids")]
    ChipIdNotAllowed {
        /// Hex.
        chip_id: String,
    },
    /// CHIP_ID is masked (all zero), so chip allow/deny lists cannot be applied.
    #[error("CHIP_ID is masked (all zero), so allowed_chip_ids/denied_chip_ids cannot be checked")]
    ChipIdMasked,
    /// No CRL was checked.
    #[error("no current CRL was checked and the policy requires one")]
    CrlRequired,
    /// VLEK-signed and VLEK not allowed.
    #[error("report is VLEK-signed and the policy accepts only VCEK")]
    VlekNotAllowed,
    /// VLEK-signed by a cloud provider whose CSP_ID is not accepted (or unknown).
    #[error("VLEK CSP_ID {} is not in accepted_csp_ids", .actual.as_deref().unwrap_or("(unavailable)"))]
    CspIdNotAccepted {
        /// The VLEK certificate's CSP_ID, when known.
        actual: Option<String>,
    },
    /// Report version too old.
    #[error("report version {actual} < minimum {minimum}")]
    ReportVersion {
        /// Minimum.
        minimum: u32,
        /// Actual.
        actual: u32,
    },
    /// A product name in `min_tcb` or `accepted_products` is unknown.
    #[error("policy names unknown product {0:?} (known: milan, genoa, turin)")]
    UnknownPolicyProduct(String),
}

/// All violations of one validation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy violated: {}", .0.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "))]
pub struct PolicyViolations(pub Vec<Violation>);

/// Something a verdict must say even though the policy accepted the report: each is a
/// choice the policy made that weakens what the verdict proves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum Warning {
    /// The policy pins no code identity and `dangerous_allow_any_code` accepted that.
    CodeIdentityNotPinned {
        /// This report's MEASUREMENT, hex.
        measurement: String,
    },
    /// A Milan report was accepted (listed in `accepted_products`) though Milan reports
    /// can be forged.
    MilanForgeable,
    /// `min_tcb` sets no floor for this report's product: any TCB is accepted.
    NoTcbFloor {
        /// The report's product.
        product: Product,
    },
    /// No CRL was checked: a revoked ASK/ASVK would go unnoticed.
    CrlNotChecked,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::CodeIdentityNotPinned { measurement } => write!(
                f,
                "CODE IDENTITY NOT PINNED (--allow-any-code): any program in any guest would \
                 pass; this report's measurement is {measurement}"
            ),
            Warning::MilanForgeable => write!(
                f,
                "Milan report accepted, but Milan reports can be forged by the host \
                 (MilanLaunchy + BadFuse, arXiv 2605.12990 \"Insecure Despite Proven Updated\")"
            ),
            Warning::NoTcbFloor { product } => write!(
                f,
                "no minimum TCB for {product}: any firmware is accepted \
                 (set [snp.min_tcb.{}])",
                product.kds_name().to_ascii_lowercase()
            ),
            Warning::CrlNotChecked => {
                f.write_str("no CRL was checked: a revoked AMD intermediate would go unnoticed")
            }
        }
    }
}
