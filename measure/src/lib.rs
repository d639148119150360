//! # vouch-measure: the launch measurement a Vouch enclave should have
//!
//! A client pins the enclave's launch MEASUREMENT in its policy. This crate computes that
//! value *before* launch, from public inputs, exactly as the AMD secure processor computes
//! it while the VMM adds the guest's initial pages (SNP_LAUNCH_UPDATE), so a release can
//! publish the value and anyone can recompute it from the released artifacts.
//!
//! ```text
//!  OVMF image ──► firmware pages (NORMAL, one PAGE_INFO per 4 KiB page at 4 GiB - len …)
//!       │
//!       └─ SEV metadata ──► SEC_MEM (ZERO) · SECRETS · CPUID · KERNEL_HASHES page
//!                                                           ▲
//!  kernel, initrd, cmdline ──► SHA-256 each ──► SEV hashes table (measured direct boot)
//!
//!  vCPU count × (type → signature in RDX, VMM type, guest features) ──► VMSA pages
//!
//!  all of the above, in that order ──► SHA-384 PAGE_INFO chain ──► MEASUREMENT (48 bytes)
//! ```
//!
//! It agrees byte for byte with the reference tool `sev-snp-measure` (see
//! `measure/tests/reference.rs`) for the SNP mode with QEMU, EC2 and GCE VMM types.
//!
//! What it does **not** do: it does not verify anything (a measurement is a value for a
//! policy, compared by `vouch-attestation`), it does not cover SEV/SEV-ES (non-SNP)
//! launches, SVSM/paravisor guests (whose measurement is the paravisor's, see
//! `docs/runbook-cloud.md`), or ID blocks. Where the reference tool accepts a firmware
//! that cannot boot as an SNP guest (no SEV metadata) this crate refuses it.

#![forbid(unsafe_code)]

pub mod cli;
pub mod digest;
pub mod error;
pub mod firmware;
pub mod hashes;
pub mod vcpu;
pub mod vmsa;

use std::fmt;
use std::str::FromStr;

pub use digest::{LaunchDigest, PageType, DIGEST_BYTES, PAGE_BYTES};
pub use error::MeasureError;
pub use firmware::{Firmware, Section, SectionType, MAX_FIRMWARE_BYTES};
pub use hashes::KernelHashes;
pub use vcpu::{cpu_signature, vcpu_signature, VCPU_TYPES};
pub use vmsa::VmmType;

/// Largest vCPU count accepted (KVM's maximum on x86).
pub const MAX_VCPUS: u32 = 4096;

/// A 48-byte SEV-SNP launch measurement (the report's MEASUREMENT field).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measurement(pub [u8; DIGEST_BYTES]);

impl Measurement {
    /// Lower-case hex, as in policy files.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Measurement({})", self.to_hex())
    }
}

impl FromStr for Measurement {
    type Err = MeasureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; DIGEST_BYTES];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|e| MeasureError::BadMeasurementHex { reason: format!("{e} (need 96 hex digits)") })?;
        Ok(Measurement(out))
    }
}

/// How the guest is launched, besides its firmware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Number of vCPUs (one VMSA page each).
    pub vcpus: u32,
    /// CPUID signature of the vCPU model (see [`vcpu_signature`]); required for QEMU,
    /// ignored by the EC2 and GCE VMMs.
    pub vcpu_signature: Option<u32>,
    /// Which VMM builds the initial state.
    pub vmm: VmmType,
    /// SEV_FEATURES in each VMSA (QEMU's default 0x1: SNP active).
    pub guest_features: u64,
    /// Measured direct boot (`kernel-hashes=on`): the kernel, initrd and command line.
    pub kernel_hashes: Option<KernelHashes>,
}

impl LaunchConfig {
    /// QEMU defaults: guest features 0x1, no direct boot.
    pub fn qemu(vcpus: u32, vcpu_signature: u32) -> LaunchConfig {
        LaunchConfig {
            vcpus,
            vcpu_signature: Some(vcpu_signature),
            vmm: VmmType::Qemu,
            guest_features: DEFAULT_GUEST_FEATURES,
            kernel_hashes: None,
        }
    }
}

/// SEV_FEATURES that QEMU sets by default (bit 0: SNPActive).
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;

/// The digest after the firmware's own pages only (what `sev-snp-measure --mode
/// snp:ovmf-hash` prints).
pub fn firmware_digest(fw: &Firmware) -> LaunchDigest {
    let mut d = LaunchDigest::new();
    // Firmware::parse guarantees whole pages.
    let whole_pages = d.add_normal_pages(fw.gpa(), fw.data());
    debug_assert!(whole_pages);
    d
}

/// Computes the launch measurement of `fw` launched as `cfg` describes.
pub fn launch_measurement(fw: &Firmware, cfg: &LaunchConfig) -> Result<Measurement, MeasureError> {
    measurement_after_firmware(fw, firmware_digest(fw), cfg)
}

/// Like [`launch_measurement`], continuing from a digest of the firmware pages that was
/// computed once (several vCPU counts, or a published firmware digest).
pub fn measurement_after_firmware(
    fw: &Firmware,
    after_firmware: LaunchDigest,
    cfg: &LaunchConfig,
) -> Result<Measurement, MeasureError> {
    if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
        return Err(MeasureError::BadVcpuCount { vcpus: cfg.vcpus, max: MAX_VCPUS });
    }
    let vcpu_sig = match (cfg.vmm, cfg.vcpu_signature) {
        (_, Some(sig)) => sig,
        (VmmType::Qemu, None) => return Err(MeasureError::MissingVcpuSignature { vmm: cfg.vmm.name() }),
        // The clouds' VMMs put a fixed value in RDX; the signature is not used.
        (_, None) => 0,
    };
    if cfg.vcpus > 1 && fw.ap_reset_eip() == 0 {
        return Err(MeasureError::NoApResetAddress { vcpus: cfg.vcpus });
    }
    // Check direct boot is possible before measuring anything.
    let hashes_page = match &cfg.kernel_hashes {
        None => None,
        Some(h) => {
            let section = fw.kernel_hashes_section().ok_or(MeasureError::KernelHashesUnsupported {
                missing: "SNP_KERNEL_HASHES metadata section",
            })?;
            let table_gpa = fw
                .hashes_table_gpa()
                .ok_or(MeasureError::KernelHashesUnsupported { missing: "SEV hashes table address" })?;
            let page_gpa = u64::from(section.gpa);
            let outside =
                || MeasureError::HashesTableOutsidePage { table_gpa: u64::from(table_gpa), page_gpa };
            let offset = u64::from(table_gpa).checked_sub(page_gpa).filter(|&o| o < PAGE_BYTES as u64);
            let offset = offset.ok_or_else(outside)?;
            Some(h.page(offset as usize).ok_or_else(outside)?)
        }
    };

    let mut d = after_firmware;
    let mut cpuid_pages = Vec::new();
    for s in fw.sections() {
        let gpa = u64::from(s.gpa);
        match s.section_type {
            SectionType::SnpSecMem if cfg.vmm == VmmType::Gce => {
                d.add_contentless_pages(PageType::Unmeasured, gpa, u64::from(s.size))
            }
            SectionType::SnpSecMem | SectionType::SvsmCaa => {
                d.add_contentless_pages(PageType::Zero, gpa, u64::from(s.size))
            }
            SectionType::SnpSecrets => d.add_contentless_pages(PageType::Secrets, gpa, PAGE_BYTES as u64),
            // EC2 adds the CPUID page after all other sections.
            SectionType::Cpuid if cfg.vmm == VmmType::Ec2 => cpuid_pages.push(gpa),
            SectionType::Cpuid => d.add_contentless_pages(PageType::Cpuid, gpa, PAGE_BYTES as u64),
            SectionType::SnpKernelHashes => match &hashes_page {
                Some(page) => {
                    let whole = d.add_normal_pages(gpa, page);
                    debug_assert!(whole);
                }
                None => d.add_contentless_pages(PageType::Zero, gpa, u64::from(s.size)),
            },
        }
    }
    for gpa in cpuid_pages {
        d.add_contentless_pages(PageType::Cpuid, gpa, PAGE_BYTES as u64);
    }

    let bsp = vmsa::build_vmsa(vmsa::BSP_EIP, cfg.guest_features, vcpu_sig, cfg.vmm);
    d.add_vmsa_page(&bsp);
    if cfg.vcpus > 1 {
        let ap = vmsa::build_vmsa(fw.ap_reset_eip(), cfg.guest_features, vcpu_sig, cfg.vmm);
        for _ in 1..cfg.vcpus {
            d.add_vmsa_page(&ap);
        }
    }
    Ok(Measurement(d.current()))
}

/// One measurement with a human description of what it covers, for a policy snippet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMeasurement {
    /// The value.
    pub measurement: Measurement,
    /// What was measured (one line, e.g. "4 vCPUs EPYC-Milan, QEMU, features 0x1").
    pub description: String,
}

/// A TOML snippet for the client policy file: the `[snp]` table's `measurements` key,
/// each value commented with what it covers. Paste it into (or merge it with) the policy
/// file's `[snp]` table.
pub fn policy_snippet(header: &[String], entries: &[DescribedMeasurement]) -> String {
    let mut out = String::from("# Expected SEV-SNP launch measurements, computed by `vouch measure`.\n");
    for line in header {
        out.push_str("# ");
        out.push_str(&line.replace('\n', " "));
        out.push('\n');
    }
    out.push_str("# Merge into the [snp] table of the client policy file.\n[snp]\nmeasurements = [\n");
    for e in entries {
        out.push_str(&format!("    \"{}\", # {}\n", e.measurement, e.description.replace('\n', " ")));
    }
    out.push_str("]\n");
    out
}
