//! Measured direct boot: the SEV hashes table. With `kernel-hashes=on`, QEMU hashes the
//! kernel, initrd and command line it loads (SHA-256 each), writes the table into the
//! firmware page the SNP_KERNEL_HASHES section names, and that page is measured as a
//! NORMAL page. OVMF later refuses to boot anything whose hashes differ, so the launch
//! measurement covers all three.
//!
//! Table layout (QEMU `target/i386/sev.c`, `SevHashTable`; all packed, little-endian):
//!
//! ```text
//!  0x00 GUID 9438d606-4f22-4cc9-b479-a793d411fd21   u16 length = 0xa8 (168)
//!  0x12 GUID 97d02dd8-…-e7714d36ab2a (cmdline)        u16 0x32   SHA-256(cmdline ‖ NUL)
//!  0x44 GUID 44baf731-…-e29169781d   (initrd)         u16 0x32   SHA-256(initrd or "")
//!  0x76 GUID 4de79437-…-d5b172d2045b (kernel)         u16 0x32   SHA-256(kernel)
//!  0xa8 8 zero bytes (padded to a multiple of 16: 0xb0)
//! ```
//! The page holds the table at the table GPA's offset within the page, zeros elsewhere.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::digest::PAGE_BYTES;
use crate::error::MeasureError;
use crate::firmware::Guid;

/// Table header: 9438d606-4f22-4cc9-b479-a793d411fd21.
pub const SEV_HASH_TABLE_HEADER_GUID: Guid =
    Guid::new(0x9438_d606, 0x4f22, 0x4cc9, [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21]);
/// Kernel entry: 4de79437-abd2-427f-b835-d5b172d2045b.
pub const SEV_KERNEL_ENTRY_GUID: Guid =
    Guid::new(0x4de7_9437, 0xabd2, 0x427f, [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b]);
/// Initrd entry: 44baf731-3a2f-4bd7-9af1-41e29169781d.
pub const SEV_INITRD_ENTRY_GUID: Guid =
    Guid::new(0x44ba_f731, 0x3a2f, 0x4bd7, [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d]);
/// Command-line entry: 97d02dd8-bd20-4c94-aa78-e7714d36ab2a.
pub const SEV_CMDLINE_ENTRY_GUID: Guid =
    Guid::new(0x97d0_2dd8, 0xbd20, 0x4c94, [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a]);

const ENTRY_BYTES: usize = 16 + 2 + 32;
const TABLE_BYTES: usize = 16 + 2 + 3 * ENTRY_BYTES;
/// The table as QEMU writes it, padded to 16 bytes.
pub const PADDED_TABLE_BYTES: usize = (TABLE_BYTES + 15) & !15;

/// The three SHA-256 digests of measured direct boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel image file.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd file (of the empty string without one).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line followed by one NUL byte (just NUL without one).
    pub cmdline: [u8; 32],
}

fn sha256_file(path: &Path) -> Result<[u8; 32], MeasureError> {
    let io = |source| MeasureError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    // Stream: an initrd carrying a model can be gigabytes.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// SHA-256 of the command line as QEMU passes it: the bytes, then one NUL.
pub fn cmdline_hash(cmdline: Option<&str>) -> Result<[u8; 32], MeasureError> {
    let text = cmdline.unwrap_or("");
    if text.as_bytes().contains(&0) {
        return Err(MeasureError::CommandLineHasNul);
    }
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update([0u8]);
    Ok(h.finalize().into())
}

impl KernelHashes {
    /// Hashes in-memory kernel, initrd and command line.
    pub fn from_bytes(
        kernel: &[u8],
        initrd: Option<&[u8]>,
        cmdline: Option<&str>,
    ) -> Result<Self, MeasureError> {
        Ok(KernelHashes {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or(&[])).into(),
            cmdline: cmdline_hash(cmdline)?,
        })
    }

    /// Hashes kernel and initrd files (streamed) and the command line.
    pub fn from_files(
        kernel: &Path,
        initrd: Option<&Path>,
        cmdline: Option<&str>,
    ) -> Result<Self, MeasureError> {
        Ok(KernelHashes {
            kernel: sha256_file(kernel)?,
            initrd: match initrd {
                Some(p) => sha256_file(p)?,
                None => Sha256::digest([]).into(),
            },
            cmdline: cmdline_hash(cmdline)?,
        })
    }

    /// The padded SEV hashes table, byte for byte as QEMU writes it.
    pub fn table(&self) -> [u8; PADDED_TABLE_BYTES] {
        let mut t = [0u8; PADDED_TABLE_BYTES];
        t[0..16].copy_from_slice(&SEV_HASH_TABLE_HEADER_GUID.0);
        t[16..18].copy_from_slice(&(TABLE_BYTES as u16).to_le_bytes());
        let entries = [
            (SEV_CMDLINE_ENTRY_GUID, &self.cmdline),
            (SEV_INITRD_ENTRY_GUID, &self.initrd),
            (SEV_KERNEL_ENTRY_GUID, &self.kernel),
        ];
        for (i, (guid, hash)) in entries.into_iter().enumerate() {
            let at = 18 + i * ENTRY_BYTES;
            t[at..at + 16].copy_from_slice(&guid.0);
            t[at + 16..at + 18].copy_from_slice(&(ENTRY_BYTES as u16).to_le_bytes());
            t[at + 18..at + 50].copy_from_slice(hash);
        }
        t
    }

    /// The page that is measured: the table at `offset` within a zero page. `None` when
    /// the table would not fit in the page.
    pub fn page(&self, offset: usize) -> Option<[u8; PAGE_BYTES]> {
        let end = offset.checked_add(PADDED_TABLE_BYTES).filter(|&e| e <= PAGE_BYTES)?;
        let mut page = [0u8; PAGE_BYTES];
        page[offset..end].copy_from_slice(&self.table());
        Some(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        assert_eq!(TABLE_BYTES, 168);
        assert_eq!(PADDED_TABLE_BYTES, 176);
        let h = KernelHashes { kernel: [3; 32], initrd: [2; 32], cmdline: [1; 32] };
        let t = h.table();
        assert_eq!(&t[16..18], &[168, 0]);
        assert_eq!(&t[18..34], &SEV_CMDLINE_ENTRY_GUID.0);
        assert_eq!(&t[34..36], &[50, 0]);
        assert_eq!(&t[36..68], &[1; 32]);
        assert_eq!(&t[68..84], &SEV_INITRD_ENTRY_GUID.0);
        assert_eq!(&t[86..118], &[2; 32]);
        assert_eq!(&t[118..134], &SEV_KERNEL_ENTRY_GUID.0);
        assert_eq!(&t[136..168], &[3; 32]);
        assert_eq!(&t[168..], &[0; 8]);
    }

    #[test]
    fn cmdline_is_hashed_with_one_nul() {
        assert_eq!(cmdline_hash(Some("a b")).unwrap(), <[u8; 32]>::from(Sha256::digest(b"a b\0")));
        assert_eq!(cmdline_hash(None).unwrap(), cmdline_hash(Some("")).unwrap());
        assert!(matches!(cmdline_hash(Some("a\0b")), Err(MeasureError::CommandLineHasNul)));
    }

    #[test]
    fn page_places_table_at_offset_and_refuses_overflow() {
        let h = KernelHashes::from_bytes(b"k", None, None).unwrap();
        let p = h.page(0xc00).unwrap();
        assert_eq!(&p[0xc00..0xc00 + PADDED_TABLE_BYTES], &h.table());
        assert!(p[..0xc00].iter().all(|&b| b == 0));
        assert!(h.page(PAGE_BYTES - 100).is_none());
    }
}
