//! Policy validation: is an authentic report one this verifier accepts?
//!
//! Verifier side, after [`crate::verify`]. Cryptography says *who* signed; policy says
//! whether *what they signed* is acceptable. [`validate`] is fail-closed and collects
//! every violation, not just the first; [`warnings`] lists what an accepted verdict
//! must still say out loud. The checks are those of go-sev-guest's `validate` package
//! and more:
//!
//! ```text
//!   code identity  measurement | ID key | author key (+ AUTHOR_KEY_EN) | HOST_DATA: one is required
//!   product        Genoa, Turin by default; Milan only if listed (its reports can be forged)
//!   guest POLICY   DEBUG, MIGRATE_MA, CXL_ALLOW forbidden; SMT … PAGE_SWAP_DISABLE rules; min ABI
//!   PLATFORM_INFO  reserved bits zero; SMT_EN … TIO_EN rules (ALIAS_CHECK_COMPLETE = BadRAM)
//!   TCB            min per product (reported, committed, launch); certificate TCB <= CURRENT_TCB;
//!                  committed firmware; min build and API version; v5 mitigation vectors
//!   identity pins  FAMILY_ID, IMAGE_ID, REPORT_ID, REPORT_ID_MA, REPORT_DATA, VMPL, GUEST_SVN
//!   hardware       CHIP_ID allow/deny lists (AMD never revokes a VCEK), VLEK and its CSP_ID, CRL
//! ```
//!
//! [`Policy::default`] is the strict baseline; it refuses every report until the policy
//! pins a code identity (or the caller sets [`Policy::dangerous_allow_any_code`], which
//! no policy file can).

mod rules;
mod violation;

pub use rules::{BitRule, GuestPolicyRules, Hex, MajorMinor, PlatformInfoRules};
pub use violation::{PolicyViolations, Violation, Warning, MILAN_FORGEABLE};

use crate::product::{Product, Tcb, TcbComponent};
use crate::report::{platform_info_bits, policy_bits, SigningKey};
use crate::verify::VerifiedReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Minimum security patch levels; unset components are not constrained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// Minimum FMC SPL (Turin).
    pub fmc: Option<u8>,
    /// Minimum boot loader SPL.
    pub bootloader: Option<u8>,
    /// Minimum PSP OS SPL.
    pub tee: Option<u8>,
    /// Minimum SNP firmware SPL.
    pub snp: Option<u8>,
    /// Minimum microcode SPL.
    pub microcode: Option<u8>,
}

/// What a verifier accepts: the `[snp]` table of a policy file. Unknown keys are errors,
/// so a typo never relaxes a check. Each field says its default and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Accept a policy that pins no code identity (see [`Policy::pins_code_identity`]).
    /// Default false. Not readable from a policy file (`#[serde(skip)]`): only the CLI
    /// flag `--allow-any-code` sets it, so the choice is visible where it is made, and the
    /// verdict carries [`Warning::CodeIdentityNotPinned`].
    #[serde(skip)]
    pub dangerous_allow_any_code: bool,
    /// `accepted_products = ["genoa", "turin"]`: the products whose reports are accepted
    /// (case-insensitive "milan", "genoa", "turin"). Default empty, meaning Genoa and
    /// Turin — or, when `min_tcb` is non-empty, only the products it names. Milan is
    /// accepted only when listed here: software alone extracts its root VCEK seed
    /// ([`MILAN_FORGEABLE`]).
    pub accepted_products: Vec<String>,
    /// `allow_debug`: accept guests whose policy allows debugging (the host can read
    /// their memory). Default false.
    pub allow_debug: bool,
    /// `allow_migration_agent`: accept guests that may be associated with a migration
    /// agent (which can export their memory). Default false.
    pub allow_migration_agent: bool,
    /// `allow_smt`: accept guests whose policy allows SMT. Default true. `false` is
    /// shorthand for `guest_policy.smt = "forbid"`.
    pub allow_smt: bool,
    /// `[snp.guest_policy]`: rules for the other guest POLICY bits. Default: CXL_ALLOW
    /// forbidden (guest memory outside the SoC), everything else either way.
    pub guest_policy: GuestPolicyRules,
    /// `min_guest_policy_abi = "1.51"`: minimum ABI version the guest policy demands of
    /// firmware (POLICY bits 15:8 major, 7:0 minor). Default none.
    pub min_guest_policy_abi: Option<MajorMinor>,
    /// `[snp.platform_info]`: rules for PLATFORM_INFO bits; reserved bits must be zero
    /// whatever the rules. Default: nothing required (require `alias_check_complete`
    /// where firmware supports it).
    pub platform_info: PlatformInfoRules,
    /// `allow_provisional_firmware`: accept firmware that is running but not committed
    /// (COMMITTED != CURRENT), which the host can roll back. Default false.
    pub allow_provisional_firmware: bool,
    /// `[snp.min_tcb.<product>]`: minimum TCB per product ("milan", "genoa", "turin"),
    /// applied to the reported, committed and launch TCBs. Default none (a verdict then
    /// carries [`Warning::NoTcbFloor`]). A non-empty table also limits the accepted
    /// products when `accepted_products` is empty.
    pub min_tcb: BTreeMap<String, MinTcb>,
    /// `min_build = 21`: minimum firmware build (CURRENT_BUILD and COMMITTED_BUILD,
    /// report offsets 0x1E8 and 0x1EC). Builds restart with each version, so pair it
    /// with `min_version`. Default none.
    pub min_build: Option<u8>,
    /// `min_version = "1.55"`: minimum firmware API version (CURRENT and COMMITTED
    /// MAJOR.MINOR). Default none.
    pub min_version: Option<MajorMinor>,
    /// `required_mitigations = 3`: bits that must all be set in both LAUNCH_MIT_VECTOR
    /// and CURRENT_MIT_VECTOR (report v5, offsets 0x1F8 and 0x200). Reports older than v5
    /// cannot show them and are refused when this is non-zero. Default 0.
    pub required_mitigations: u64,
    /// `min_guest_svn`: minimum GUEST_SVN. Default none.
    pub min_guest_svn: Option<u32>,
    /// `vmpl`: required VMPL (0 = the most privileged level, where the enclave runs).
    /// Default 0.
    pub vmpl: Option<u32>,
    /// `measurements`: accepted launch measurements (48-byte hex). Default empty (any) —
    /// but some code identity must be pinned.
    pub measurements: Vec<Hex<48>>,
    /// `host_data`: required HOST_DATA (32-byte hex). Chosen by whoever launches the
    /// guest, so it identifies code only when the launcher is trusted to set it so.
    /// Default none.
    pub host_data: Option<Hex<32>>,
    /// `id_key_digests`: accepted ID key digests (48-byte hex). An all-zero entry is a
    /// violation (it stands for "no ID block"). Default empty (any).
    pub id_key_digests: Vec<Hex<48>>,
    /// `author_key_digests`: accepted author key digests (48-byte hex). When non-empty,
    /// the report's FLAGS.AUTHOR_KEY_EN must be set; an all-zero entry is a violation.
    /// Default empty (any).
    pub author_key_digests: Vec<Hex<48>>,
    /// `family_id`: required FAMILY_ID from the ID block (16-byte hex). Default none.
    pub family_id: Option<Hex<16>>,
    /// `image_id`: required IMAGE_ID from the ID block (16-byte hex). Default none.
    pub image_id: Option<Hex<16>>,
    /// `report_id`: required REPORT_ID (32-byte hex): pins one guest instance. Default none.
    pub report_id: Option<Hex<32>>,
    /// `report_id_ma`: required REPORT_ID_MA (32-byte hex; all 0xFF without a migration
    /// agent). Default none.
    pub report_id_ma: Option<Hex<32>>,
    /// `report_data`: required REPORT_DATA (normally set by the protocol, not a file).
    pub report_data: Option<Hex<64>>,
    /// `allowed_chip_ids`: when non-empty, only these CHIP_IDs (64-byte hex; Turin: the
    /// 8-byte hwID then 56 zero bytes) are accepted. Default empty (any).
    pub allowed_chip_ids: Vec<Hex<64>>,
    /// `denied_chip_ids`: CHIP_IDs refused even if allowed. AMD never revokes a VCEK, so a
    /// chip known to be compromised can only be refused here. A masked (all-zero)
    /// CHIP_ID is refused while either list is non-empty. Default empty.
    pub denied_chip_ids: Vec<Hex<64>>,
    /// `require_crl`: refuse evidence whose ASK/ASVK was not checked against a current
    /// CRL. Default false (the verdict then carries [`Warning::CrlNotChecked`]).
    pub require_crl: bool,
    /// `allow_vlek`: accept VLEK-signed reports (cloud providers such as AWS sign with a
    /// VLEK). Default true.
    pub allow_vlek: bool,
    /// `accepted_csp_ids = ["CN=cc-us-east-2.amazonaws.com"]`: when non-empty, a VLEK
    /// report is accepted only if its VLEK certificate's CSP_ID extension
    /// (1.3.6.1.4.1.3704.1.5) is listed, exactly. No effect on VCEK reports. Default empty.
    pub accepted_csp_ids: Vec<String>,
    /// `min_report_version`: minimum report version (2, 3 or 5). Default 2.
    pub min_report_version: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            dangerous_allow_any_code: false,
            accepted_products: Vec::new(),
            allow_debug: false,
            allow_migration_agent: false,
            allow_smt: true,
            guest_policy: GuestPolicyRules::default(),
            min_guest_policy_abi: None,
            platform_info: PlatformInfoRules::default(),
            allow_provisional_firmware: false,
            min_tcb: BTreeMap::new(),
            min_build: None,
            min_version: None,
            required_mitigations: 0,
            min_guest_svn: None,
            vmpl: Some(0),
            measurements: Vec::new(),
            host_data: None,
            id_key_digests: Vec::new(),
            author_key_digests: Vec::new(),
            family_id: None,
            image_id: None,
            report_id: None,
            report_id_ma: None,
            report_data: None,
            allowed_chip_ids: Vec::new(),
            denied_chip_ids: Vec::new(),
            require_crl: false,
            allow_vlek: true,
            accepted_csp_ids: Vec::new(),
            min_report_version: 2,
        }
    }
}

impl Policy {
    /// Whether the policy pins what code runs: a measurement, an ID-key or author-key
    /// digest, or HOST_DATA.
    pub fn pins_code_identity(&self) -> bool {
        !self.measurements.is_empty()
            || !self.id_key_digests.is_empty()
            || !self.author_key_digests.is_empty()
            || self.host_data.is_some()
    }

    /// Whether `product` is accepted, and if not, why.
    fn product_verdict(&self, product: Product) -> Result<(), &'static str> {
        let names = |n: &String| Product::from_name(n) == Some(product);
        if !self.accepted_products.is_empty() {
            return if self.accepted_products.iter().any(names) {
                Ok(())
            } else if product == Product::Milan {
                Err(MILAN_FORGEABLE)
            } else {
                Err("it is not listed in accepted_products")
            };
        }
        if product == Product::Milan {
            return Err(MILAN_FORGEABLE);
        }
        if !self.min_tcb.is_empty() && !self.min_tcb.keys().any(names) {
            return Err("min_tcb names other products and accepted_products is empty");
        }
        Ok(())
    }

    fn has_tcb_floor(&self, product: Product) -> bool {
        self.min_tcb.keys().any(|n| Product::from_name(n) == Some(product))
    }
}

fn check_min(out: &mut Vec<Violation>, which: &'static str, tcb: &Tcb, min: &MinTcb) {
    for (component, actual) in tcb.components() {
        let minimum = match component {
            TcbComponent::Fmc => min.fmc,
            TcbComponent::Bootloader => min.bootloader,
            TcbComponent::Tee => min.tee,
            TcbComponent::Snp => min.snp,
            TcbComponent::Microcode => min.microcode,
        };
        if let Some(minimum) = minimum {
            if actual < minimum {
                out.push(Violation::TcbTooLow { which, component, minimum, actual });
            }
        }
    }
}

/// Applies one bit rule; `forbidden`/`required` build the violation from the bit's name.
fn check_bit(
    out: &mut Vec<Violation>,
    value: u64,
    (bit, mask, rule): (&'static str, u64, BitRule),
    forbidden: fn(&'static str) -> Violation,
    required: fn(&'static str) -> Violation,
) {
    let set = value & mask != 0;
    match rule {
        BitRule::Forbid if set => out.push(forbidden(bit)),
        BitRule::Require if !set => out.push(required(bit)),
        _ => {}
    }
}

/// The VLEK certificate's CSP_ID (VCEK chains have none).
fn vlek_csp_id(v: &VerifiedReport) -> Option<&str> {
    v.chain().csp_id()
}

/// The signer checks: VLEK allowed at all, and if so, by an accepted cloud provider.
fn check_signer(out: &mut Vec<Violation>, signer: SigningKey, csp_id: Option<&str>, policy: &Policy) {
    if signer != SigningKey::Vlek {
        return;
    }
    if !policy.allow_vlek {
        out.push(Violation::VlekNotAllowed);
    } else if !policy.accepted_csp_ids.is_empty()
        && !csp_id.is_some_and(|c| policy.accepted_csp_ids.iter().any(|a| a == c))
    {
        out.push(Violation::CspIdNotAccepted { actual: csp_id.map(str::to_owned) });
    }
}

fn check_pin<const N: usize>(
    out: &mut Vec<Violation>,
    pin: &Option<Hex<N>>,
    actual: [u8; N],
    make: fn(String, String) -> Violation,
) {
    if let Some(p) = pin {
        if p.0 != actual {
            out.push(make(hex::encode(p.0), hex::encode(actual)));
        }
    }
}

fn check_chip_id(out: &mut Vec<Violation>, chip: [u8; 64], policy: &Policy) {
    for (field, list) in
        [("allowed_chip_ids", &policy.allowed_chip_ids), ("denied_chip_ids", &policy.denied_chip_ids)]
    {
        if list.iter().any(Hex::is_zero) {
            out.push(Violation::ZeroValuePinned { field });
        }
    }
    if policy.allowed_chip_ids.is_empty() && policy.denied_chip_ids.is_empty() {
        return;
    }
    if chip.iter().all(|&b| b == 0) {
        // Masked (MASK_CHIP_ID; possible with a VLEK): a denied chip could hide here.
        out.push(Violation::ChipIdMasked);
    } else if policy.denied_chip_ids.iter().any(|d| d.0 == chip) {
        out.push(Violation::ChipIdDenied { chip_id: hex::encode(chip) });
    } else if !policy.allowed_chip_ids.is_empty() && !policy.allowed_chip_ids.iter().any(|a| a.0 == chip) {
        out.push(Violation::ChipIdNotAllowed { chip_id: hex::encode(chip) });
    }
}

/// Checks `v` against `policy`, collecting every violation.
pub fn validate(v: &VerifiedReport, policy: &Policy) -> Result<(), PolicyViolations> {
    let r = v.report();
    let mut out = Vec::new();

    // What code, on what hardware: the two questions a verdict exists to answer.
    if !policy.pins_code_identity() && !policy.dangerous_allow_any_code {
        out.push(Violation::CodeIdentityNotPinned { measurement: hex::encode(r.measurement()) });
    }
    for name in &policy.accepted_products {
        if Product::from_name(name).is_none() {
            out.push(Violation::UnknownPolicyProduct(name.clone()));
        }
    }
    if let Err(reason) = policy.product_verdict(v.product()) {
        out.push(Violation::ProductNotAccepted { product: v.product(), reason });
    }

    // Guest policy.
    let gp = r.policy();
    if gp & policy_bits::DEBUG != 0 && !policy.allow_debug {
        out.push(Violation::DebugAllowed);
    }
    if gp & policy_bits::MIGRATE_MA != 0 && !policy.allow_migration_agent {
        out.push(Violation::MigrationAgentAllowed);
    }
    let forbid = |bit| Violation::GuestPolicyForbidden { bit };
    let require = |bit| Violation::GuestPolicyRequired { bit };
    for rule in policy.guest_policy.rules() {
        check_bit(&mut out, gp, rule, forbid, require);
    }
    if !policy.allow_smt && gp & policy_bits::SMT != 0 && policy.guest_policy.smt != BitRule::Forbid {
        out.push(Violation::GuestPolicyForbidden { bit: "SMT" });
    }
    if let Some(minimum) = policy.min_guest_policy_abi {
        let (major, minor) = r.policy_abi();
        let actual = MajorMinor { major, minor };
        if actual < minimum {
            out.push(Violation::GuestPolicyAbiTooLow { minimum, actual });
        }
    }

    // Platform.
    let pi = r.platform_info();
    if pi & !platform_info_bits::KNOWN != 0 {
        out.push(Violation::PlatformInfoReserved { bits: pi & !platform_info_bits::KNOWN });
    }
    let forbid = |bit| Violation::PlatformInfoForbidden { bit };
    let require = |bit| Violation::PlatformInfoRequired { bit };
    for rule in policy.platform_info.rules() {
        check_bit(&mut out, pi, rule, forbid, require);
    }
    if r.version() < policy.min_report_version {
        out.push(Violation::ReportVersion { minimum: policy.min_report_version, actual: r.version() });
    }

    // TCB and firmware.
    for (name, min) in &policy.min_tcb {
        match Product::from_name(name) {
            None => out.push(Violation::UnknownPolicyProduct(name.clone())),
            Some(p) if p == v.product() => {
                check_min(&mut out, "reported", &v.reported_tcb(), min);
                check_min(&mut out, "committed", &v.committed_tcb(), min);
                check_min(&mut out, "launch", &v.launch_tcb(), min);
            }
            Some(_) => {}
        }
    }
    // A key certified for newer firmware than is running means the report's TCB claims
    // are not to be believed (go-sev-guest checks the same). Components pair up: both
    // sides are decoded with the chain's product layout.
    let certified = v.chain().certified_tcb().components();
    for ((component, certified), (_, current)) in certified.into_iter().zip(v.current_tcb().components()) {
        if certified > current {
            out.push(Violation::CertifiedTcbAboveCurrent { component, certified, current });
        }
    }
    if !policy.allow_provisional_firmware
        && (r.committed_tcb_raw() != r.current_tcb_raw() || r.committed_version() != r.current_version())
    {
        out.push(Violation::ProvisionalFirmware {
            committed: format!("{:#018x} ({})", r.committed_tcb_raw(), r.committed_version()),
            current: format!("{:#018x} ({})", r.current_tcb_raw(), r.current_version()),
        });
    }
    for (which, fw) in [("current", r.current_version()), ("committed", r.committed_version())] {
        if let Some(minimum) = policy.min_build {
            if fw.build < minimum {
                out.push(Violation::FirmwareBuildTooLow { which, minimum, actual: fw.build });
            }
        }
        if let Some(minimum) = policy.min_version {
            let actual = MajorMinor { major: fw.major, minor: fw.minor };
            if actual < minimum {
                out.push(Violation::FirmwareVersionTooLow { which, minimum, actual });
            }
        }
    }
    let required = policy.required_mitigations;
    if required != 0 {
        match (r.launch_mit_vector(), r.current_mit_vector()) {
            (Some(launch), Some(current)) => {
                for (which, actual) in [("launch", launch), ("current", current)] {
                    if actual & required != required {
                        out.push(Violation::MitigationsMissing { which, required, actual });
                    }
                }
            }
            _ => out.push(Violation::MitigationsUnavailable { version: r.version(), required }),
        }
    }
    if let Some(min) = policy.min_guest_svn {
        if r.guest_svn() < min {
            out.push(Violation::GuestSvnTooLow { minimum: min, actual: r.guest_svn() });
        }
    }
    if let Some(expected) = policy.vmpl {
        if r.vmpl() != expected {
            out.push(Violation::Vmpl { expected, actual: r.vmpl() });
        }
    }

    // Code and instance identity.
    if !policy.measurements.is_empty() && !policy.measurements.iter().any(|m| m.0 == r.measurement()) {
        out.push(Violation::Measurement { actual: hex::encode(r.measurement()) });
    }
    check_pin(&mut out, &policy.host_data, r.host_data(), |expected, actual| Violation::HostData {
        expected,
        actual,
    });
    for (field, list) in
        [("id_key_digests", &policy.id_key_digests), ("author_key_digests", &policy.author_key_digests)]
    {
        if list.iter().any(Hex::is_zero) {
            out.push(Violation::ZeroValuePinned { field });
        }
    }
    if !policy.id_key_digests.is_empty() && !policy.id_key_digests.iter().any(|d| d.0 == r.id_key_digest()) {
        out.push(Violation::IdKey { actual: hex::encode(r.id_key_digest()) });
    }
    if !policy.author_key_digests.is_empty() {
        if !r.author_key_en() {
            out.push(Violation::AuthorKeyNotEnabled);
        }
        if !policy.author_key_digests.iter().any(|d| d.0 == r.author_key_digest()) {
            out.push(Violation::AuthorKey { actual: hex::encode(r.author_key_digest()) });
        }
    }
    check_pin(&mut out, &policy.family_id, r.family_id(), |expected, actual| Violation::FamilyId {
        expected,
        actual,
    });
    check_pin(&mut out, &policy.image_id, r.image_id(), |expected, actual| Violation::ImageId {
        expected,
        actual,
    });
    check_pin(&mut out, &policy.report_id, r.report_id(), |expected, actual| Violation::ReportId {
        expected,
        actual,
    });
    check_pin(&mut out, &policy.report_id_ma, r.report_id_ma(), |expected, actual| Violation::ReportIdMa {
        expected,
        actual,
    });
    check_pin(&mut out, &policy.report_data, r.report_data(), |expected, actual| Violation::ReportData {
        expected,
        actual,
    });

    // Hardware and signer.
    check_chip_id(&mut out, r.chip_id(), policy);
    if policy.require_crl && v.chain().crl().is_none() {
        out.push(Violation::CrlRequired);
    }
    check_signer(&mut out, v.chain().signer(), vlek_csp_id(v), policy);

    if out.is_empty() {
        Ok(())
    } else {
        Err(PolicyViolations(out))
    }
}

/// What a verdict on `v` under `policy` must say in its first lines, whether or not
/// [`validate`] accepts it: the policy's own weak spots for this report.
pub fn warnings(v: &VerifiedReport, policy: &Policy) -> Vec<Warning> {
    let mut out = Vec::new();
    if !policy.pins_code_identity() && policy.dangerous_allow_any_code {
        out.push(Warning::CodeIdentityNotPinned { measurement: hex::encode(v.report().measurement()) });
    }
    if v.product() == Product::Milan && policy.product_verdict(Product::Milan).is_ok() {
        out.push(Warning::MilanForgeable);
    }
    if !policy.has_tcb_floor(v.product()) {
        out.push(Warning::NoTcbFloor { product: v.product() });
    }
    if v.chain().crl().is_none() {
        out.push(Warning::CrlNotChecked);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer_violations(signer: SigningKey, csp: Option<&str>, policy: &Policy) -> Vec<Violation> {
        let mut out = Vec::new();
        check_signer(&mut out, signer, csp, policy);
        out
    }

    #[test]
    fn vlek_signer_needs_allow_vlek_and_a_listed_csp_id() {
        let aws = "CN=cc-us-east-2.amazonaws.com";
        let p = Policy::default();
        assert_eq!(signer_violations(SigningKey::Vlek, Some(aws), &p), vec![]);
        let p = Policy { allow_vlek: false, ..Policy::default() };
        assert_eq!(signer_violations(SigningKey::Vlek, Some(aws), &p), vec![Violation::VlekNotAllowed]);
        assert_eq!(signer_violations(SigningKey::Vcek, None, &p), vec![]);

        let p = Policy { accepted_csp_ids: vec![aws.into()], ..Policy::default() };
        assert_eq!(signer_violations(SigningKey::Vlek, Some(aws), &p), vec![]);
        assert_eq!(
            signer_violations(SigningKey::Vlek, Some("CN=other.example"), &p),
            vec![Violation::CspIdNotAccepted { actual: Some("CN=other.example".into()) }]
        );
        // Unknown CSP_ID: refused, never assumed.
        assert_eq!(
            signer_violations(SigningKey::Vlek, None, &p),
            vec![Violation::CspIdNotAccepted { actual: None }]
        );
        // Matching is exact: a prefix or different case is another provider.
        assert_eq!(signer_violations(SigningKey::Vlek, Some("cn=cc-us-east-2.amazonaws.com"), &p).len(), 1);
        // VCEK reports carry no CSP_ID and are unaffected.
        assert_eq!(signer_violations(SigningKey::Vcek, None, &p), vec![]);
    }

    #[test]
    fn product_rules() {
        let p = Policy::default();
        assert_eq!(p.product_verdict(Product::Genoa), Ok(()));
        assert_eq!(p.product_verdict(Product::Turin), Ok(()));
        assert_eq!(p.product_verdict(Product::Milan), Err(MILAN_FORGEABLE));

        let mut p = Policy::default();
        p.min_tcb.insert("Genoa".into(), MinTcb::default());
        assert_eq!(p.product_verdict(Product::Genoa), Ok(()));
        assert!(p.product_verdict(Product::Turin).is_err());
        p.min_tcb.insert("milan".into(), MinTcb::default());
        assert_eq!(p.product_verdict(Product::Milan), Err(MILAN_FORGEABLE));

        let p = Policy { accepted_products: vec!["MILAN".into()], ..Policy::default() };
        assert_eq!(p.product_verdict(Product::Milan), Ok(()));
        assert!(p.product_verdict(Product::Genoa).is_err());
        assert!(p.product_verdict(Product::Turin).is_err());
    }

    #[test]
    fn policy_files_cannot_allow_any_code_or_use_unknown_keys() {
        let e = serde_json::from_str::<Policy>(r#"{"dangerous_allow_any_code": true}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert!(serde_json::from_str::<Policy>(r#"{"allow_smtt": false}"#).is_err());
        assert!(serde_json::from_str::<Policy>(r#"{"guest_policy": {"smt": "maybe"}}"#).is_err());
        assert!(serde_json::from_str::<Policy>(r#"{"platform_info": {"alias_check": "require"}}"#).is_err());
        let p: Policy = serde_json::from_str(
            r#"{"guest_policy": {"smt": "forbid"}, "platform_info": {"alias_check_complete": "require"},
                "min_version": "1.55", "min_guest_policy_abi": "0.31", "accepted_products": ["genoa"]}"#,
        )
        .unwrap();
        assert_eq!(p.guest_policy.smt, BitRule::Forbid);
        // Unset keys of a table keep their defaults (CXL stays forbidden).
        assert_eq!(p.guest_policy.cxl_allow, BitRule::Forbid);
        assert_eq!(p.platform_info.alias_check_complete, BitRule::Require);
        assert_eq!(p.min_version, Some(MajorMinor { major: 1, minor: 55 }));
        assert!(!p.dangerous_allow_any_code);
        assert!(serde_json::from_str::<Policy>(r#"{"min_version": "1.55.2"}"#).is_err());
    }

    #[test]
    fn pins_code_identity_counts_each_pin() {
        assert!(!Policy::default().pins_code_identity());
        let d = Hex([1; 48]);
        assert!(Policy { measurements: vec![d], ..Policy::default() }.pins_code_identity());
        assert!(Policy { id_key_digests: vec![d], ..Policy::default() }.pins_code_identity());
        assert!(Policy { author_key_digests: vec![d], ..Policy::default() }.pins_code_identity());
        assert!(Policy { host_data: Some(Hex([0; 32])), ..Policy::default() }.pins_code_identity());
        // Neither the danger switch nor other pins count as code identity.
        let p = Policy { dangerous_allow_any_code: true, family_id: Some(Hex([1; 16])), ..Policy::default() };
        assert!(!p.pins_code_identity());
    }
}
