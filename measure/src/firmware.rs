//! Parsing of an OVMF image for what the launch measurement needs: its GUIDed footer table
//! (SEV-ES reset block, SEV hashes table address, SEV metadata offset) and the SEV
//! metadata sections that tell the VMM which pages to add, and how, before launch.
//!
//! The firmware is an input the release pipeline chose, not attacker data at run time,
//! but it is still parsed fully and strictly: lengths are checked before every slice,
//! duplicate table entries and unknown section types are errors. A measurement computed
//! from a firmware we misread would be a wrong pin, which is worse than no pin.
//!
//! ```text
//!   … firmware … | metadata "ASEV" | … | entry … entry | footer entry | 32 bytes (reset vector)
//!                                       └── GUIDed table, parsed backwards from the footer ──┘
//! ```
//! The image is mapped so that it ends at 4 GiB: byte `i` is at GPA `4 GiB - len + i`.
//! Layout as in edk2 `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm` and
//! `OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`, and QEMU `hw/i386/pc_sysfw_ovmf.c`.

use crate::digest::PAGE_BYTES;
use crate::error::MeasureError;

/// A GUID in its on-disk (mixed-endian, "bytes_le") byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds the on-disk bytes of `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6],
            d4[7],
        ])
    }
}

/// Marks the end of the GUIDed table: 96b582de-1fb2-45f7-baea-a366c55a082d.
pub const OVMF_TABLE_FOOTER_GUID: Guid =
    Guid::new(0x96b5_82de, 0x1fb2, 0x45f7, [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]);
/// Address (u32 GPA, u32 size) of the SEV hashes table: 7255371f-3a3b-4b04-927b-1da6efa8d454.
pub const SEV_HASH_TABLE_RV_GUID: Guid =
    Guid::new(0x7255_371f, 0x3a3b, 0x4b04, [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54]);
/// SEV-ES AP reset address (u32): 00f771de-1a7e-4fcb-890e-68c77e2fb44e.
pub const SEV_ES_RESET_BLOCK_GUID: Guid =
    Guid::new(0x00f7_71de, 0x1a7e, 0x4fcb, [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e]);
/// Offset from the end of the image of the SEV metadata (u32):
/// dc886566-984a-4798-a75e-5585a7bf67cc.
pub const OVMF_SEV_METADATA_GUID: Guid =
    Guid::new(0xdc88_6566, 0x984a, 0x4798, [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc]);

/// Bytes after the footer entry: the 16-byte reset vector and padding.
const FOOTER_TRAILER_BYTES: usize = 32;
/// A table entry's header: u16 size (including this header) then the GUID, at its END.
const ENTRY_HEADER_BYTES: usize = 2 + 16;
/// "ASEV" header: signature, u32 size, u32 version, u32 item count.
const METADATA_HEADER_BYTES: usize = 16;
/// One metadata item: u32 GPA, u32 size, u32 type.
const METADATA_ITEM_BYTES: usize = 12;
/// Where the firmware image ends in guest-physical memory.
const FOUR_GIB: u64 = 1 << 32;

/// The kind of an SEV metadata section (`OvmfSevMetadata.asm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SectionType {
    /// Memory the firmware uses early (page tables, GHCB...): pre-validated, zeroed.
    SnpSecMem,
    /// The SNP secrets page.
    SnpSecrets,
    /// The CPUID page.
    Cpuid,
    /// SVSM calling-area page.
    SvsmCaa,
    /// The page holding the SEV hashes table (measured direct boot).
    SnpKernelHashes,
}

impl SectionType {
    fn from_raw(raw: u32) -> Option<SectionType> {
        Some(match raw {
            1 => SectionType::SnpSecMem,
            2 => SectionType::SnpSecrets,
            3 => SectionType::Cpuid,
            4 => SectionType::SvsmCaa,
            0x10 => SectionType::SnpKernelHashes,
            _ => return None,
        })
    }
}

/// One SEV metadata section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// Guest-physical address (page-aligned).
    pub gpa: u32,
    /// Length in bytes (whole pages).
    pub size: u32,
    /// What the VMM does with it.
    pub section_type: SectionType,
}

/// An OVMF image with its SEV information parsed.
#[derive(Clone, Debug)]
pub struct Firmware {
    data: Vec<u8>,
    sections: Vec<Section>,
    ap_reset_eip: u32,
    hashes_table_gpa: Option<u32>,
}

/// Largest accepted firmware image. Edk2's biggest OVMF builds are 4 MiB; the flash
/// window below 4 GiB that QEMU maps is 16 MiB at most. Anything bigger is a wrong file.
pub const MAX_FIRMWARE_BYTES: usize = 16 << 20;

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn malformed_table(reason: impl Into<String>) -> MeasureError {
    MeasureError::MalformedFooterTable { reason: reason.into() }
}

fn malformed_metadata(reason: impl Into<String>) -> MeasureError {
    MeasureError::MalformedSevMetadata { reason: reason.into() }
}

/// Parses the GUIDed table that ends 32 bytes before the end of the image. Returns the
/// entries' (GUID, data) pairs, last entry first.
fn parse_footer_table(data: &[u8]) -> Result<Vec<(Guid, &[u8])>, MeasureError> {
    let footer_start = data
        .len()
        .checked_sub(FOOTER_TRAILER_BYTES + ENTRY_HEADER_BYTES)
        .ok_or(MeasureError::NoFooterTable)?;
    let footer = &data[footer_start..footer_start + ENTRY_HEADER_BYTES];
    if footer[2..18] != OVMF_TABLE_FOOTER_GUID.0 {
        return Err(MeasureError::NoFooterTable);
    }
    let total = usize::from(u16::from_le_bytes([footer[0], footer[1]]));
    let table_len = total
        .checked_sub(ENTRY_HEADER_BYTES)
        .ok_or_else(|| malformed_table(format!("footer entry size {total} is below {ENTRY_HEADER_BYTES}")))?;
    let table_start = footer_start
        .checked_sub(table_len)
        .ok_or_else(|| malformed_table(format!("table of {table_len} bytes runs before the image start")))?;
    let mut rest = &data[table_start..footer_start];
    let mut entries: Vec<(Guid, &[u8])> = Vec::new();
    while rest.len() >= ENTRY_HEADER_BYTES {
        let hdr = &rest[rest.len() - ENTRY_HEADER_BYTES..];
        let size = usize::from(u16::from_le_bytes([hdr[0], hdr[1]]));
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&hdr[2..18]);
        let guid = Guid(guid);
        if size < ENTRY_HEADER_BYTES || size > rest.len() {
            return Err(malformed_table(format!(
                "entry size {size} outside {ENTRY_HEADER_BYTES}..={} ",
                rest.len()
            )));
        }
        let entry_data = &rest[rest.len() - size..rest.len() - ENTRY_HEADER_BYTES];
        if entries.iter().any(|(g, _)| *g == guid) {
            // QEMU takes the first match from the end, other tools the last: refuse
            // rather than guess which one the VMM will use.
            return Err(malformed_table(format!("duplicate entry {:02x?}", guid.0)));
        }
        entries.push((guid, entry_data));
        rest = &rest[..rest.len() - size];
    }
    Ok(entries)
}

fn parse_metadata(data: &[u8], offset_from_end: u32) -> Result<Vec<Section>, MeasureError> {
    let start = data.len().checked_sub(offset_from_end as usize).ok_or_else(|| {
        malformed_metadata(format!("offset {offset_from_end:#x} is before the image start"))
    })?;
    let hdr = data
        .get(start..start + METADATA_HEADER_BYTES)
        .ok_or_else(|| malformed_metadata("header runs past the end of the image"))?;
    if &hdr[0..4] != b"ASEV" {
        return Err(malformed_metadata(format!("signature {:02x?} is not \"ASEV\"", &hdr[0..4])));
    }
    let size = u32_at(hdr, 4).unwrap_or(0) as usize;
    let version = u32_at(hdr, 8).unwrap_or(0);
    let count = u32_at(hdr, 12).unwrap_or(0) as usize;
    if version != 1 {
        return Err(malformed_metadata(format!("version {version}, expected 1")));
    }
    let items = size
        .checked_sub(METADATA_HEADER_BYTES)
        .and_then(|n| data.get(start + METADATA_HEADER_BYTES..start + METADATA_HEADER_BYTES + n))
        .ok_or_else(|| malformed_metadata(format!("size {size} does not fit the image")))?;
    if count.checked_mul(METADATA_ITEM_BYTES).is_none_or(|n| n > items.len()) {
        return Err(malformed_metadata(format!("{count} items do not fit in {size} bytes")));
    }
    let mut sections = Vec::with_capacity(count);
    for (index, item) in items.chunks_exact(METADATA_ITEM_BYTES).take(count).enumerate() {
        let gpa = u32_at(item, 0).unwrap_or(0);
        let size = u32_at(item, 4).unwrap_or(0);
        let raw_type = u32_at(item, 8).unwrap_or(0);
        let section_type = SectionType::from_raw(raw_type)
            .ok_or(MeasureError::UnknownSectionType { index, section_type: raw_type })?;
        let bad = |reason| MeasureError::BadSection { index, gpa, size, reason };
        if !(gpa as usize).is_multiple_of(PAGE_BYTES) {
            return Err(bad("address is not page-aligned"));
        }
        if size == 0 || !(size as usize).is_multiple_of(PAGE_BYTES) {
            return Err(bad("size is not a non-zero multiple of 4096"));
        }
        if u64::from(gpa) + u64::from(size) > FOUR_GIB {
            return Err(bad("section runs past 4 GiB"));
        }
        // The VMM adds exactly one page for these; a different size would mean we measure
        // something other than what QEMU launches.
        let one_page = matches!(
            section_type,
            SectionType::SnpSecrets | SectionType::Cpuid | SectionType::SnpKernelHashes
        );
        if one_page && size as usize != PAGE_BYTES {
            return Err(bad("this section type must be exactly one page"));
        }
        sections.push(Section { gpa, size, section_type });
    }
    Ok(sections)
}

impl Firmware {
    /// Parses an OVMF image. Fails unless it is whole pages, carries the GUIDed footer
    /// table, the SEV-ES reset block and well-formed SEV metadata.
    pub fn parse(data: Vec<u8>) -> Result<Firmware, MeasureError> {
        if data.len() > MAX_FIRMWARE_BYTES {
            return Err(MeasureError::FirmwareTooLarge { max: MAX_FIRMWARE_BYTES, actual: data.len() });
        }
        if data.is_empty() || !data.len().is_multiple_of(PAGE_BYTES) {
            return Err(MeasureError::FirmwareNotPageAligned { len: data.len() });
        }
        let entries = parse_footer_table(&data)?;
        let find = |g: Guid| entries.iter().find(|(eg, _)| *eg == g).map(|(_, d)| *d);

        let ap_reset_eip =
            find(SEV_ES_RESET_BLOCK_GUID).ok_or(MeasureError::NoSevEsResetBlock).and_then(|d| {
                u32_at(d, 0).ok_or_else(|| malformed_table("SEV-ES reset block shorter than 4 bytes"))
            })?;
        let hashes_table_gpa = match find(SEV_HASH_TABLE_RV_GUID) {
            None => None,
            Some(d) => match u32_at(d, 0) {
                None => return Err(malformed_table("SEV hashes table entry shorter than 4 bytes")),
                Some(0) => None,
                Some(gpa) => Some(gpa),
            },
        };
        let metadata_offset =
            find(OVMF_SEV_METADATA_GUID).ok_or(MeasureError::NoSevMetadata).and_then(|d| {
                u32_at(d, 0).ok_or_else(|| malformed_table("SEV metadata entry shorter than 4 bytes"))
            })?;
        let sections = parse_metadata(&data, metadata_offset)?;
        Ok(Firmware { data, sections, ap_reset_eip, hashes_table_gpa })
    }

    /// The raw image.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Guest-physical address of the first byte (the image ends at 4 GiB).
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - self.data.len() as u64
    }

    /// The SEV metadata sections, in table order (the order the VMM adds them).
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The application processors' reset address (from the SEV-ES reset block).
    pub fn ap_reset_eip(&self) -> u32 {
        self.ap_reset_eip
    }

    /// Where the SEV hashes table goes, when the firmware supports measured direct boot.
    pub fn hashes_table_gpa(&self) -> Option<u32> {
        self.hashes_table_gpa
    }

    /// The SNP_KERNEL_HASHES section, when present.
    pub fn kernel_hashes_section(&self) -> Option<Section> {
        self.sections.iter().copied().find(|s| s.section_type == SectionType::SnpKernelHashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_bytes_are_mixed_endian() {
        // uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
        assert_eq!(
            OVMF_TABLE_FOOTER_GUID.0,
            [0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]
        );
    }
}
