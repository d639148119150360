//! AMD products (Milan, Genoa, Turin) and their TCB_VERSION layouts.
//!
//! Pure data used on the verifier side: which root a report chains to and how
//! the 64-bit TCB fields of a report are split into security patch levels (SPLs).

use std::fmt;

/// An AMD EPYC product line that has its own SEV-SNP root of trust (ARK).
///
/// Siena and Bergamo have no roots of their own: AMD signs them under Genoa's,
/// so they are reported here as [`Product::Genoa`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Product {
    /// 3rd generation EPYC (Zen 3), family 0x19 models 0x00–0x0F.
    Milan,
    /// 4th generation EPYC (Zen 4) incl. Siena and Bergamo, family 0x19 models 0x10–0x1F, 0xA0–0xAF.
    Genoa,
    /// 5th generation EPYC (Zen 5), family 0x1A models 0x00–0x1F.
    Turin,
}

impl Product {
    /// Every product with compiled-in roots.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The product named by report v3+ CPUID_FAM_ID / CPUID_MOD_ID, if known.
    ///
    /// Mapping per AMD's processor programming references (as also used by
    /// go-sev-guest and virtee/sev).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x1F) => Some(Product::Turin),
            _ => None,
        }
    }

    /// Parses a name as used by AMD's KDS and the VCEK `productName` extension
    /// ("Milan-B0", "Genoa", "Turin"), a user (case-insensitive), and the
    /// Genoa-rooted variants "Siena" and "Bergamo".
    pub fn from_name(name: &str) -> Option<Product> {
        let base = name.split('-').next().unwrap_or(name).to_ascii_lowercase();
        match base.as_str() {
            "milan" => Some(Product::Milan),
            "genoa" | "siena" | "bergamo" => Some(Product::Genoa),
            "turin" => Some(Product::Turin),
            _ => None,
        }
    }

    /// The name AMD's KDS uses in URLs.
    pub fn kds_name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// Length of the hwID in VCEK certificates and KDS URLs: 64 bytes, 8 on Turin.
    pub fn hwid_len(self) -> usize {
        match self {
            Product::Turin => 8,
            _ => 64,
        }
    }

    /// Whether TCB_VERSION carries an FMC (firmware mask code) SPL.
    pub fn has_fmc(self) -> bool {
        matches!(self, Product::Turin)
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kds_name())
    }
}

/// A decoded TCB_VERSION: the security patch level of each firmware component.
///
/// Layout (SEV-SNP ABI, TCB_VERSION): Milan/Genoa `bl[0] tee[1] rsvd[2..6] snp[6] ucode[7]`;
/// Turin `fmc[0] bl[1] tee[2] snp[3] rsvd[4..7] ucode[7]`. Decoding Turin with the
/// Milan layout silently yields wrong SPLs, so the product is always explicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tcb {
    /// The raw 64-bit value as it appears in the report (little-endian on the wire).
    pub raw: u64,
    /// FMC SPL (Turin only).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// CPU microcode SPL.
    pub microcode: u8,
}

impl Tcb {
    /// Decodes `raw` with `product`'s layout.
    pub fn decode(raw: u64, product: Product) -> Tcb {
        let b = raw.to_le_bytes();
        match product {
            Product::Turin => {
                Tcb { raw, fmc: Some(b[0]), bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] }
            }
            Product::Milan | Product::Genoa => {
                Tcb { raw, fmc: None, bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] }
            }
        }
    }

    /// Encodes SPLs into a raw TCB_VERSION with `product`'s layout (reserved bytes zero).
    pub fn encode(product: Product, fmc: u8, bootloader: u8, tee: u8, snp: u8, microcode: u8) -> u64 {
        let mut b = [0u8; 8];
        match product {
            Product::Turin => {
                b[0] = fmc;
                b[1] = bootloader;
                b[2] = tee;
                b[3] = snp;
            }
            Product::Milan | Product::Genoa => {
                b[0] = bootloader;
                b[1] = tee;
                b[6] = snp;
            }
        }
        b[7] = microcode;
        u64::from_le_bytes(b)
    }

    /// Components as `(name, value)` pairs in AMD's order, for display and comparison.
    pub fn components(&self) -> Vec<(TcbComponent, u8)> {
        let mut v = Vec::with_capacity(5);
        if let Some(f) = self.fmc {
            v.push((TcbComponent::Fmc, f));
        }
        v.push((TcbComponent::Bootloader, self.bootloader));
        v.push((TcbComponent::Tee, self.tee));
        v.push((TcbComponent::Snp, self.snp));
        v.push((TcbComponent::Microcode, self.microcode));
        v
    }
}

/// One component of a TCB_VERSION.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcbComponent {
    /// FMC (Turin).
    Fmc,
    /// Boot loader.
    Bootloader,
    /// PSP OS.
    Tee,
    /// SNP firmware.
    Snp,
    /// Microcode.
    Microcode,
}

impl fmt::Display for TcbComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcbComponent::Fmc => "fmc",
            TcbComponent::Bootloader => "bootloader",
            TcbComponent::Tee => "tee",
            TcbComponent::Snp => "snp",
            TcbComponent::Microcode => "microcode",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_mapping() {
        assert_eq!(Product::from_cpuid(0x19, 0x01), Some(Product::Milan));
        assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x19, 0xA0), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
        assert_eq!(Product::from_cpuid(0x17, 0x31), None);
    }

    #[test]
    fn names() {
        assert_eq!(Product::from_name("Milan-B0"), Some(Product::Milan));
        assert_eq!(Product::from_name("siena"), Some(Product::Genoa));
        assert_eq!(Product::from_name("Bergamo"), Some(Product::Genoa));
        assert_eq!(Product::from_name("Venice"), None);
    }

    #[test]
    fn turin_layout_differs_from_milan() {
        let raw = 0x5100000004010101;
        let t = Tcb::decode(raw, Product::Turin);
        assert_eq!((t.fmc, t.bootloader, t.tee, t.snp, t.microcode), (Some(1), 1, 1, 4, 81));
        let m = Tcb::decode(raw, Product::Milan);
        assert_eq!((m.bootloader, m.tee, m.snp, m.microcode), (1, 1, 0, 81));
        assert_eq!(Tcb::encode(Product::Turin, 1, 1, 1, 4, 81), raw);
        assert_eq!(Tcb::encode(Product::Milan, 0, 3, 0, 8, 115), 0x7308000000000003);
    }
}
