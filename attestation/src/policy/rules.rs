//! The small value types a policy file is written in: hex pins, `major.minor`
//! versions, and per-bit rules for the report's POLICY and PLATFORM_INFO fields.
//!
//! Verifier side; pure data with their TOML spellings. [`super::validate`] applies them.

use crate::report::{platform_info_bits as pi, policy_bits as gp};
use serde::{Deserialize, Deserializer, Serialize};

/// Fixed-length bytes written as hex in policy files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> Hex<N> {
    /// Whether every byte is zero (a digest pin of zeros matches "no key", never a key).
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

impl<const N: usize> From<Hex<N>> for String {
    fn from(h: Hex<N>) -> String {
        hex::encode(h.0)
    }
}

impl<const N: usize> std::str::FromStr for Hex<N> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = hex::decode(s.trim()).map_err(|e| format!("bad hex: {e}"))?;
        let a: [u8; N] = v.try_into().map_err(|v: Vec<u8>| format!("{} bytes, expected {N}", v.len()))?;
        Ok(Hex(a))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A `major.minor` version, written `"1.55"` in policy files. Orders by major, then minor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct MajorMinor {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
}

impl std::fmt::Display for MajorMinor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl From<MajorMinor> for String {
    fn from(v: MajorMinor) -> String {
        v.to_string()
    }
}

impl std::str::FromStr for MajorMinor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not MAJOR.MINOR (each 0-255), e.g. \"1.55\"");
        let (major, minor) = s.trim().split_once('.').ok_or_else(bad)?;
        let num = |p: &str| if p.bytes().all(|b| b.is_ascii_digit()) { p.parse::<u8>().ok() } else { None };
        Ok(MajorMinor { major: num(major).ok_or_else(bad)?, minor: num(minor).ok_or_else(bad)? })
    }
}

impl<'de> Deserialize<'de> for MajorMinor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a policy demands of one report bit: `"allow"` (either value), `"require"`
/// (must be set) or `"forbid"` (must be clear).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitRule {
    /// Either value is accepted.
    #[default]
    Allow,
    /// The bit must be set.
    Require,
    /// The bit must be clear.
    Forbid,
}

/// Rules for bits of the guest POLICY field (ABI spec, "Guest Policy Structure"; the
/// guest owner chose them at launch and firmware enforces them). DEBUG and MIGRATE_MA
/// are governed by `allow_debug` / `allow_migration_agent`.
///
/// ```toml
/// [snp.guest_policy]
/// smt = "allow"            # "allow" | "require" | "forbid"
/// cxl_allow = "forbid"
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuestPolicyRules {
    /// SMT (bit 16): the guest may run on hosts with SMT enabled. Default `"allow"`: most
    /// clouds run SMT, and sibling-thread side channels are listed in LIMITATIONS.md.
    pub smt: BitRule,
    /// SINGLE_SOCKET (bit 20): the guest may run on one socket only. Default `"allow"`.
    pub single_socket: BitRule,
    /// CXL_ALLOW (bit 21): CXL devices or memory may hold guest memory, outside the
    /// SoC's protection. Default `"forbid"`.
    pub cxl_allow: BitRule,
    /// MEM_AES_256_XTS (bit 22): AES-256-XTS memory encryption required. Default `"allow"`.
    pub mem_aes_256_xts: BitRule,
    /// RAPL_DIS (bit 23): the power-based side channel RAPL must be disabled. Default `"allow"`.
    pub rapl_dis: BitRule,
    /// CIPHERTEXT_HIDING (bit 24): ciphertext hiding for DRAM required (CipherLeaks).
    /// Default `"allow"`.
    pub ciphertext_hiding: BitRule,
    /// PAGE_SWAP_DISABLE (bit 25): the host may not page-move or swap guest pages.
    /// Default `"allow"`.
    pub page_swap_disable: BitRule,
}

impl Default for GuestPolicyRules {
    fn default() -> Self {
        GuestPolicyRules {
            smt: BitRule::Allow,
            single_socket: BitRule::Allow,
            cxl_allow: BitRule::Forbid,
            mem_aes_256_xts: BitRule::Allow,
            rapl_dis: BitRule::Allow,
            ciphertext_hiding: BitRule::Allow,
            page_swap_disable: BitRule::Allow,
        }
    }
}

impl GuestPolicyRules {
    /// `(spec name, bit mask, rule)` for every governed bit.
    pub fn rules(&self) -> [(&'static str, u64, BitRule); 7] {
        [
            ("SMT", gp::SMT, self.smt),
            ("SINGLE_SOCKET", gp::SINGLE_SOCKET, self.single_socket),
            ("CXL_ALLOW", gp::CXL_ALLOW, self.cxl_allow),
            ("MEM_AES_256_XTS", gp::MEM_AES_256_XTS, self.mem_aes_256_xts),
            ("RAPL_DIS", gp::RAPL_DIS, self.rapl_dis),
            ("CIPHERTEXT_HIDING", gp::CIPHERTEXT_HIDING, self.ciphertext_hiding),
            ("PAGE_SWAP_DISABLE", gp::PAGE_SWAP_DISABLE, self.page_swap_disable),
        ]
    }
}

/// Rules for bits of PLATFORM_INFO (report offset 0x40: what the host platform had
/// enabled when the report was signed). Every default is `"allow"`; reserved bits must be
/// zero regardless.
///
/// Where the firmware reports it (SNP firmware with the BadRAM fix, AMD-SB-3015), set
/// `alias_check_complete = "require"`: without it a host with aliased DIMMs can read and
/// replay guest memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformInfoRules {
    /// SMT_EN (bit 0): SMT enabled on the host. Default `"allow"`.
    pub smt_en: BitRule,
    /// TSME_EN (bit 1): transparent SME enabled. Default `"allow"`.
    pub tsme_en: BitRule,
    /// ECC_EN (bit 2): ECC memory in use. Default `"allow"`.
    pub ecc_en: BitRule,
    /// RAPL_DIS (bit 3): RAPL disabled. Default `"allow"`.
    pub rapl_dis: BitRule,
    /// CIPHERTEXT_HIDING_EN (bit 4): ciphertext hiding enabled for DRAM. Default `"allow"`.
    pub ciphertext_hiding_en: BitRule,
    /// ALIAS_CHECK_COMPLETE (bit 5): the BadRAM alias check ran and passed. Default
    /// `"allow"` (older firmware never sets it); require it where firmware supports it.
    pub alias_check_complete: BitRule,
    /// IOMMU_WRITE_SAFE (bit 6; AMD-SB-3016). Default `"allow"`.
    pub iommu_write_safe: BitRule,
    /// TIO_EN (bit 7): SEV-TIO enabled. Default `"allow"`.
    pub tio_en: BitRule,
}

impl PlatformInfoRules {
    /// `(spec name, bit mask, rule)` for every defined bit.
    pub fn rules(&self) -> [(&'static str, u64, BitRule); 8] {
        [
            ("SMT_EN", pi::SMT_EN, self.smt_en),
            ("TSME_EN", pi::TSME_EN, self.tsme_en),
            ("ECC_EN", pi::ECC_EN, self.ecc_en),
            ("RAPL_DIS", pi::RAPL_DIS, self.rapl_dis),
            ("CIPHERTEXT_HIDING_EN", pi::CIPHERTEXT_HIDING_EN, self.ciphertext_hiding_en),
            ("ALIAS_CHECK_COMPLETE", pi::ALIAS_CHECK_COMPLETE, self.alias_check_complete),
            ("IOMMU_WRITE_SAFE", pi::IOMMU_WRITE_SAFE, self.iommu_write_safe),
            ("TIO_EN", pi::TIO_EN, self.tio_en),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_parses_strictly_and_orders() {
        let v: MajorMinor = "1.55".parse().unwrap();
        assert_eq!(v, MajorMinor { major: 1, minor: 55 });
        assert!("1.9".parse::<MajorMinor>().unwrap() < v);
        assert!("2.0".parse::<MajorMinor>().unwrap() > v);
        for bad in ["1", "1.", ".5", "1.55.3", "1.256", "-1.2", "a.b", "1.+5"] {
            assert!(bad.parse::<MajorMinor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bit_rules_are_distinct_and_match_the_spec_masks() {
        let g = GuestPolicyRules::default().rules();
        let masks: u64 = g.iter().map(|r| r.1).fold(0, |a, m| a | m);
        // SMT (bit 16) and bits 20..=25; DEBUG/MIGRATE_MA have their own switches.
        assert_eq!(masks, gp::SMT | 0x3f << 20);
        assert_eq!(
            g.iter().filter(|r| r.2 == BitRule::Forbid).map(|r| r.0).collect::<Vec<_>>(),
            ["CXL_ALLOW"]
        );
        let p = PlatformInfoRules::default().rules();
        assert_eq!(p.iter().map(|r| r.1).fold(0, |a, m| a | m), pi::KNOWN);
    }
}
