//! The launch digest: the SHA-384 chain the AMD secure processor extends once per page
//! the hypervisor adds with SNP_LAUNCH_UPDATE, and which ends up as the report's
//! MEASUREMENT. Pure arithmetic over public inputs — no trust decision is made here.
//!
//! ```text
//!  digest_0 = 48 zero bytes
//!  digest_i = SHA-384( PAGE_INFO_i )          PAGE_INFO_i = digest_{i-1} ‖ contents_i ‖ …
//!  MEASUREMENT = digest_n
//! ```
//!
//! PAGE_INFO layout (SEV-SNP Firmware ABI specification, SNP_LAUNCH_UPDATE, "Layout of
//! the PAGE_INFO structure"; 0x70 bytes):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0x00 | 48 | DIGEST_CUR — the digest so far |
//! | 0x30 | 48 | CONTENTS — SHA-384 of the page for NORMAL and VMSA pages, else zero |
//! | 0x60 |  2 | LENGTH = 0x70 |
//! | 0x62 |  1 | PAGE_TYPE |
//! | 0x63 |  1 | IMI_PAGE (0: not an incoming-migration-image page) |
//! | 0x64 |  1 | VMPL3_PERMS (0) |
//! | 0x65 |  1 | VMPL2_PERMS (0) |
//! | 0x66 |  1 | VMPL1_PERMS (0) |
//! | 0x67 |  1 | reserved (0) |
//! | 0x68 |  8 | GPA — guest-physical address of the page |

use sha2::{Digest, Sha384};

/// Size of a guest page; SNP measures whole pages.
pub const PAGE_BYTES: usize = 4096;

/// Size of the launch digest and of a report's MEASUREMENT (SHA-384).
pub const DIGEST_BYTES: usize = 48;

/// Length of the PAGE_INFO structure that is hashed per page.
const PAGE_INFO_BYTES: usize = 0x70;

/// The GPA recorded for VMSA pages: the firmware records them at GPA `u64::MAX`, page-
/// aligned and with the bits above 51 cleared.
pub const VMSA_GPA: u64 = 0x0000_FFFF_FFFF_F000;

/// PAGE_TYPE values of SNP_LAUNCH_UPDATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// Ordinary page whose contents are measured (firmware, hashes table).
    Normal = 0x01,
    /// A vCPU's initial register state (VMSA); its contents are measured.
    Vmsa = 0x02,
    /// A page the firmware zeroes; contents not hashed (zero in PAGE_INFO).
    Zero = 0x03,
    /// A page added without measuring its contents.
    Unmeasured = 0x04,
    /// The secrets page the secure processor fills (VMPCKs).
    Secrets = 0x05,
    /// The CPUID page the secure processor checks.
    Cpuid = 0x06,
}

/// A launch digest being extended page by page, as the secure processor does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchDigest {
    current: [u8; DIGEST_BYTES],
}

impl Default for LaunchDigest {
    fn default() -> Self {
        LaunchDigest::new()
    }
}

impl LaunchDigest {
    /// A fresh digest (48 zero bytes), as at SNP_LAUNCH_START.
    pub fn new() -> LaunchDigest {
        LaunchDigest { current: [0; DIGEST_BYTES] }
    }

    /// Continues from a known digest (e.g. a published hash of the firmware pages alone).
    pub fn from_seed(seed: [u8; DIGEST_BYTES]) -> LaunchDigest {
        LaunchDigest { current: seed }
    }

    /// The digest so far.
    pub fn current(&self) -> [u8; DIGEST_BYTES] {
        self.current
    }

    /// Extends the digest with one PAGE_INFO.
    pub fn extend(&mut self, page_type: PageType, gpa: u64, contents: &[u8; DIGEST_BYTES]) {
        let mut info = [0u8; PAGE_INFO_BYTES];
        info[0x00..0x30].copy_from_slice(&self.current);
        info[0x30..0x60].copy_from_slice(contents);
        info[0x60..0x62].copy_from_slice(&(PAGE_INFO_BYTES as u16).to_le_bytes());
        info[0x62] = page_type as u8;
        // 0x63 IMI_PAGE, 0x64..0x67 VMPL3/2/1 permissions and reserved: all zero.
        info[0x68..0x70].copy_from_slice(&gpa.to_le_bytes());
        self.current = Sha384::digest(info).into();
    }

    /// Measures `data` as consecutive NORMAL pages starting at `gpa`. `data` must be whole
    /// pages; callers check that (a partial page is a caller bug, reported as `false`).
    #[must_use]
    pub fn add_normal_pages(&mut self, gpa: u64, data: &[u8]) -> bool {
        if !data.len().is_multiple_of(PAGE_BYTES) {
            return false;
        }
        for (i, page) in data.chunks_exact(PAGE_BYTES).enumerate() {
            let contents: [u8; DIGEST_BYTES] = Sha384::digest(page).into();
            self.extend(PageType::Normal, gpa + (i * PAGE_BYTES) as u64, &contents);
        }
        true
    }

    /// Adds `len` bytes of pages at `gpa` whose contents are not hashed (ZERO or
    /// UNMEASURED, or a single SECRETS/CPUID page).
    pub fn add_contentless_pages(&mut self, page_type: PageType, gpa: u64, len: u64) {
        let zero = [0u8; DIGEST_BYTES];
        let mut offset = 0;
        while offset < len {
            self.extend(page_type, gpa + offset, &zero);
            offset += PAGE_BYTES as u64;
        }
    }

    /// Measures one VMSA page (at [`VMSA_GPA`]).
    pub fn add_vmsa_page(&mut self, vmsa: &[u8; PAGE_BYTES]) {
        let contents: [u8; DIGEST_BYTES] = Sha384::digest(vmsa).into();
        self.extend(PageType::Vmsa, VMSA_GPA, &contents);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recomputes one PAGE_INFO hash by hand, writing the structure field by field.
    fn manual(prev: &[u8; 48], contents: &[u8; 48], page_type: u8, gpa: u64) -> [u8; 48] {
        let mut v = Vec::new();
        v.extend_from_slice(prev);
        v.extend_from_slice(contents);
        v.extend_from_slice(&[0x70, 0x00]);
        v.push(page_type);
        v.extend_from_slice(&[0, 0, 0, 0, 0]);
        v.extend_from_slice(&gpa.to_le_bytes());
        assert_eq!(v.len(), 0x70);
        Sha384::digest(&v).into()
    }

    #[test]
    fn one_normal_page_matches_hand_built_page_info() {
        let page = [0xA5u8; PAGE_BYTES];
        let mut d = LaunchDigest::new();
        assert!(d.add_normal_pages(0xFFE0_0000, &page));
        let contents: [u8; 48] = Sha384::digest(page).into();
        assert_eq!(d.current(), manual(&[0; 48], &contents, 1, 0xFFE0_0000));
    }

    #[test]
    fn chaining_is_ordered_and_uses_each_gpa() {
        let mut data = vec![0u8; 3 * PAGE_BYTES];
        data[PAGE_BYTES] = 1;
        data[2 * PAGE_BYTES] = 2;
        let mut d = LaunchDigest::new();
        assert!(d.add_normal_pages(0x1000, &data));

        let mut expect = [0u8; 48];
        for i in 0..3 {
            let c: [u8; 48] = Sha384::digest(&data[i * PAGE_BYTES..(i + 1) * PAGE_BYTES]).into();
            expect = manual(&expect, &c, 1, 0x1000 + (i * PAGE_BYTES) as u64);
        }
        assert_eq!(d.current(), expect);

        // Same pages, another base address: another digest.
        let mut other = LaunchDigest::new();
        assert!(other.add_normal_pages(0x2000, &data));
        assert_ne!(other.current(), expect);
    }

    #[test]
    fn contentless_pages_record_type_and_gpa_with_zero_contents() {
        let mut d = LaunchDigest::new();
        d.add_contentless_pages(PageType::Zero, 0x80_0000, 0x2000);
        d.add_contentless_pages(PageType::Secrets, 0x80_d000, 0x1000);
        d.add_contentless_pages(PageType::Cpuid, 0x80_e000, 0x1000);
        d.add_contentless_pages(PageType::Unmeasured, 0x90_0000, 0x1000);
        let z = [0u8; 48];
        let mut e = manual(&z, &z, 3, 0x80_0000);
        e = manual(&e, &z, 3, 0x80_1000);
        e = manual(&e, &z, 5, 0x80_d000);
        e = manual(&e, &z, 6, 0x80_e000);
        e = manual(&e, &z, 4, 0x90_0000);
        assert_eq!(d.current(), e);
    }

    #[test]
    fn vmsa_page_uses_the_vmsa_gpa() {
        let vmsa = [7u8; PAGE_BYTES];
        let mut d = LaunchDigest::from_seed([9; 48]);
        d.add_vmsa_page(&vmsa);
        let c: [u8; 48] = Sha384::digest(vmsa).into();
        assert_eq!(d.current(), manual(&[9; 48], &c, 2, 0xFFFF_FFFF_F000));
    }

    #[test]
    fn partial_pages_are_refused_without_changing_the_digest() {
        let mut d = LaunchDigest::new();
        assert!(!d.add_normal_pages(0, &[0u8; 100]));
        assert_eq!(d.current(), [0; 48]);
    }
}
