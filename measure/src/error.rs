//! The one error type of this crate. Every input — firmware bytes, vCPU names, file paths —
//! comes from an operator or a release pipeline, not from an attacker at run time; still,
//! nothing here panics on bad input: a malformed firmware is an error value that says what
//! is wrong, so a release script fails loudly instead of publishing a wrong measurement.

use std::path::PathBuf;

/// Why a launch measurement could not be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// A file (firmware, kernel, initrd) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The firmware is empty or its length is not a whole number of 4 KiB pages
    /// (SNP_LAUNCH_UPDATE measures whole pages).
    #[error("firmware length {len} bytes is not a non-zero multiple of 4096")]
    FirmwareNotPageAligned {
        /// The firmware's length in bytes.
        len: usize,
    },
    /// The firmware is larger than anything that fits below 4 GiB next to the rest of the
    /// guest's memory map.
    #[error("firmware is {actual} bytes; at most {max} are accepted")]
    FirmwareTooLarge {
        /// The limit, [`crate::MAX_FIRMWARE_BYTES`].
        max: usize,
        /// The firmware's length.
        actual: usize,
    },
    /// The firmware does not end with OVMF's GUIDed footer table, so it carries no SEV
    /// information at all (not an OVMF build, or not the firmware volume containing the
    /// reset vector).
    #[error("firmware has no OVMF GUIDed footer table (is this an OVMF image with the reset vector?)")]
    NoFooterTable,
    /// The OVMF footer table is present but inconsistent.
    #[error("malformed OVMF footer table: {reason}")]
    MalformedFooterTable {
        /// What is inconsistent.
        reason: String,
    },
    /// The firmware has no SEV metadata (GUID dc886566-…), so it cannot tell the VMM which
    /// pages to pre-validate: it cannot boot as an SEV-SNP guest. Build OVMF with SEV
    /// support (edk2 `OvmfPkgX64` since 2022, or `AmdSev/AmdSevX64.dsc`).
    #[error(
        "firmware has no SEV metadata section table (OVMF built without SEV-SNP support; \
         use an OVMF with SEV-SNP metadata, e.g. edk2 AmdSevX64 or a recent OvmfX64)"
    )]
    NoSevMetadata,
    /// The SEV metadata ("ASEV" table) is present but malformed.
    #[error("malformed SEV metadata: {reason}")]
    MalformedSevMetadata {
        /// What is wrong.
        reason: String,
    },
    /// A metadata section has a type this crate does not know how to measure.
    #[error("SEV metadata section {index} has unknown type {section_type:#x}")]
    UnknownSectionType {
        /// Position in the metadata table.
        index: usize,
        /// The raw type.
        section_type: u32,
    },
    /// A metadata section's address or length is not page-aligned, or it has a length
    /// other than the one page its type requires.
    #[error("SEV metadata section {index} (gpa {gpa:#x}, size {size:#x}): {reason}")]
    BadSection {
        /// Position in the metadata table.
        index: usize,
        /// Its guest-physical address.
        gpa: u32,
        /// Its length in bytes.
        size: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The firmware has no SEV-ES reset block, which gives the application processors'
    /// reset address (needed for their VMSAs).
    #[error("firmware has no SEV-ES reset block (GUID 00f771de-…) in its footer table")]
    NoSevEsResetBlock,
    /// More than one vCPU was asked for, but the firmware's AP reset address is 0.
    #[error("firmware's SEV-ES AP reset address is 0; it cannot start {vcpus} vCPUs")]
    NoApResetAddress {
        /// The requested vCPU count.
        vcpus: u32,
    },
    /// A kernel was given (measured direct boot) but the firmware has no
    /// SNP_KERNEL_HASHES section or no SEV hashes table address: QEMU would refuse to
    /// launch with `kernel-hashes=on`. Use OVMF built from `OvmfPkg/AmdSev/AmdSevX64.dsc`.
    #[error(
        "a kernel was given but the firmware has no {missing} (measured direct boot needs \
         OVMF built from OvmfPkg/AmdSev/AmdSevX64.dsc)"
    )]
    KernelHashesUnsupported {
        /// What the firmware lacks.
        missing: &'static str,
    },
    /// The SEV hashes table does not fit in the page of the SNP_KERNEL_HASHES section.
    #[error(
        "SEV hashes table at gpa {table_gpa:#x} does not lie inside the kernel hashes page at {page_gpa:#x}"
    )]
    HashesTableOutsidePage {
        /// Where the footer table says the hashes table is.
        table_gpa: u64,
        /// The SNP_KERNEL_HASHES page.
        page_gpa: u64,
    },
    /// The vCPU count is 0 or above [`crate::MAX_VCPUS`].
    #[error("vCPU count {vcpus} is out of range 1..={max}")]
    BadVcpuCount {
        /// The requested count.
        vcpus: u32,
        /// The limit.
        max: u32,
    },
    /// The vCPU type is not one of QEMU's AMD EPYC models.
    #[error("unknown vCPU type {name:?}; known: {known}")]
    UnknownVcpuType {
        /// What was asked for.
        name: String,
        /// The accepted names, comma-separated.
        known: String,
    },
    /// The VMM puts the vCPU signature in RDX (QEMU), but none was given.
    #[error("the {vmm} VMM needs a vCPU type or signature (e.g. --vcpu-type EPYC-Milan)")]
    MissingVcpuSignature {
        /// The VMM.
        vmm: &'static str,
    },
    /// The VMM type is not known.
    #[error("unknown VMM type {name:?}; known: QEMU, EC2, GCE")]
    UnknownVmmType {
        /// What was asked for.
        name: String,
    },
    /// The kernel command line contains a NUL byte, which QEMU cannot pass (it appends
    /// exactly one terminating NUL, and that is what is hashed).
    #[error("kernel command line contains a NUL byte")]
    CommandLineHasNul,
    /// A measurement string is not 96 hex digits.
    #[error("bad measurement hex: {reason}")]
    BadMeasurementHex {
        /// What is wrong.
        reason: String,
    },
}
