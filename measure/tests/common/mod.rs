//! Test helpers: a builder for small synthetic OVMF-like images (footer table, SEV-ES
//! reset block, hashes-table address, "ASEV" metadata) so parsing and error paths are
//! tested without a real firmware, and the paths of the external references.
#![allow(dead_code, clippy::expect_used, reason = "shared by several test binaries; test code")]

use std::path::PathBuf;

/// Sections as (gpa, size, type).
pub type Sections = Vec<(u32, u32, u32)>;

/// GUIDs in on-disk byte order.
pub const FOOTER: [u8; 16] =
    guid(0x96b5_82de, 0x1fb2, 0x45f7, [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]);
pub const HASHES_RV: [u8; 16] =
    guid(0x7255_371f, 0x3a3b, 0x4b04, [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54]);
pub const RESET_BLOCK: [u8; 16] =
    guid(0x00f7_71de, 0x1a7e, 0x4fcb, [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e]);
pub const METADATA: [u8; 16] =
    guid(0xdc88_6566, 0x984a, 0x4798, [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc]);

pub const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]]
}

/// A synthetic firmware description; `build` lays it out like OVMF does.
#[derive(Clone)]
pub struct SynthFirmware {
    pub pages: usize,
    pub reset_eip: Option<u32>,
    pub hashes_table_gpa: Option<u32>,
    pub sections: Option<Sections>,
    pub metadata_signature: [u8; 4],
    pub metadata_version: u32,
    /// Extra raw table entries (guid, data).
    pub extra_entries: Vec<([u8; 16], Vec<u8>)>,
}

impl Default for SynthFirmware {
    fn default() -> Self {
        SynthFirmware {
            pages: 16,
            reset_eip: Some(0x0080_b004),
            hashes_table_gpa: Some(0x0080_ac00),
            sections: Some(vec![
                (0x0080_0000, 0x9000, 1),
                (0x0080_a000, 0x1000, 0x10),
                (0x0080_d000, 0x1000, 2),
                (0x0080_e000, 0x1000, 3),
                (0x0080_f000, 0x2000, 4),
            ]),
            metadata_signature: *b"ASEV",
            metadata_version: 1,
            extra_entries: Vec::new(),
        }
    }
}

impl SynthFirmware {
    pub fn build(&self) -> Vec<u8> {
        let len = self.pages * 4096;
        // Deterministic non-zero filler so firmware pages hash differently.
        let mut img: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        // Metadata at offset 0x100 from the start.
        let meta_at = 0x100;
        if let Some(sections) = &self.sections {
            let size = 16 + 12 * sections.len();
            img[meta_at..meta_at + 4].copy_from_slice(&self.metadata_signature);
            img[meta_at + 4..meta_at + 8].copy_from_slice(&(size as u32).to_le_bytes());
            img[meta_at + 8..meta_at + 12].copy_from_slice(&self.metadata_version.to_le_bytes());
            img[meta_at + 12..meta_at + 16].copy_from_slice(&(sections.len() as u32).to_le_bytes());
            for (i, (gpa, sz, ty)) in sections.iter().enumerate() {
                let at = meta_at + 16 + 12 * i;
                img[at..at + 4].copy_from_slice(&gpa.to_le_bytes());
                img[at + 4..at + 8].copy_from_slice(&sz.to_le_bytes());
                img[at + 8..at + 12].copy_from_slice(&ty.to_le_bytes());
            }
        }
        // Entries, in file order (the parser walks them backwards from the footer).
        let mut entries: Vec<([u8; 16], Vec<u8>)> = self.extra_entries.clone();
        if let Some(eip) = self.reset_eip {
            entries.push((RESET_BLOCK, eip.to_le_bytes().to_vec()));
        }
        if let Some(gpa) = self.hashes_table_gpa {
            let mut d = gpa.to_le_bytes().to_vec();
            d.extend_from_slice(&0x400u32.to_le_bytes());
            entries.push((HASHES_RV, d));
        }
        if self.sections.is_some() {
            entries.push((METADATA, ((len - meta_at) as u32).to_le_bytes().to_vec()));
        }
        let mut table = Vec::new();
        for (g, d) in &entries {
            table.extend_from_slice(d);
            table.extend_from_slice(&((d.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(g);
        }
        table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(&FOOTER);
        let end = len - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        img
    }
}

/// Debian's OVMF image with SEV-SNP metadata (package `ovmf`), or $VOUCH_OVMF.
pub fn debian_ovmf() -> PathBuf {
    let p = std::env::var_os("VOUCH_OVMF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/ovmf/OVMF.fd"));
    assert!(
        p.is_file(),
        "{} not found: install Debian's OVMF firmware with `bash scripts/install-measure-deps.sh` \
         (apt-get install -y ovmf), or point VOUCH_OVMF at an OVMF.fd with SEV metadata",
        p.display()
    );
    p
}

/// A scratch directory for this test binary.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vouch-measure-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}
