//! The initial vCPU state (VMSA pages) that the VMM hands the secure processor at launch,
//! one per vCPU, each measured as a VMSA page. The bootstrap processor starts at the
//! architectural reset vector 0xFFFF_FFF0; application processors start at the firmware's
//! SEV-ES reset address. Register values are those KVM/QEMU (or the cloud's VMM) set at
//! reset; they are public constants, and any difference changes the measurement.
//!
//! Offsets are those of the SEV-ES save area (AMD APM Vol. 2, Table B-4 "VMSA Layout,
//! State Save Area for SEV-ES"; Linux `struct sev_es_save_area`).

use crate::digest::PAGE_BYTES;

/// The VMM that builds the VMSAs. They differ in a few reset-state registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmmType {
    /// QEMU/KVM (bare metal, Azure-style self-managed hosts, most clouds' nested setups).
    Qemu,
    /// AWS EC2 (Nitro hypervisor): EDX = 0x600, different segment attributes, and the
    /// CPUID page is added after the other metadata sections.
    Ec2,
    /// Google Compute Engine: SEC_MEM pages unmeasured, its own PAT.
    Gce,
}

impl VmmType {
    /// Parses `QEMU`, `EC2` or `GCE` (any case).
    pub fn parse(name: &str) -> Option<VmmType> {
        match name.to_ascii_lowercase().as_str() {
            "qemu" => Some(VmmType::Qemu),
            "ec2" => Some(VmmType::Ec2),
            "gce" => Some(VmmType::Gce),
            _ => None,
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            VmmType::Qemu => "QEMU",
            VmmType::Ec2 => "EC2",
            VmmType::Gce => "GCE",
        }
    }
}

/// Reset vector of the bootstrap processor.
pub const BSP_EIP: u32 = 0xFFFF_FFF0;

// VMSA field offsets (APM Vol. 2 Table B-4).
const OFF_ES: usize = 0x000;
const OFF_CS: usize = 0x010;
const OFF_SS: usize = 0x020;
const OFF_DS: usize = 0x030;
const OFF_FS: usize = 0x040;
const OFF_GS: usize = 0x050;
const OFF_GDTR: usize = 0x060;
const OFF_LDTR: usize = 0x070;
const OFF_IDTR: usize = 0x080;
const OFF_TR: usize = 0x090;
const OFF_EFER: usize = 0x0D0;
const OFF_CR4: usize = 0x148;
const OFF_CR0: usize = 0x158;
const OFF_DR7: usize = 0x160;
const OFF_DR6: usize = 0x168;
const OFF_RFLAGS: usize = 0x170;
const OFF_RIP: usize = 0x178;
const OFF_G_PAT: usize = 0x268;
const OFF_RDX: usize = 0x310;
const OFF_SEV_FEATURES: usize = 0x3B0;
const OFF_XCR0: usize = 0x3E8;
const OFF_MXCSR: usize = 0x408;
const OFF_X87_FCW: usize = 0x410;

/// The architectural PAT reset value (APM Vol. 2 §A.3).
const PAT_RESET: u64 = 0x0007_0406_0007_0406;

struct Page([u8; PAGE_BYTES]);

impl Page {
    fn put(&mut self, off: usize, bytes: &[u8]) {
        self.0[off..off + bytes.len()].copy_from_slice(bytes);
    }
    fn u16(&mut self, off: usize, v: u16) {
        self.put(off, &v.to_le_bytes());
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.put(off, &v.to_le_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.put(off, &v.to_le_bytes());
    }
    /// A VMCB segment: u16 selector, u16 attributes, u32 limit, u64 base.
    fn seg(&mut self, off: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
        self.u16(off, selector);
        self.u16(off + 2, attrib);
        self.u32(off + 4, limit);
        self.u64(off + 8, base);
    }
}

/// Builds one VMSA page for a vCPU starting at `eip`.
///
/// `vcpu_sig` is CPUID Fn0000_0001_EAX, which QEMU puts in RDX at reset; the clouds' VMMs
/// put 0x600 there instead and ignore it.
pub fn build_vmsa(eip: u32, sev_features: u64, vcpu_sig: u32, vmm: VmmType) -> [u8; PAGE_BYTES] {
    let mut cs_flags = 0x9b;
    let mut ss_flags = 0x93;
    let mut tr_flags = 0x8b;
    let mut g_pat = PAT_RESET;
    let (rdx, mxcsr, fcw) = match vmm {
        VmmType::Qemu => (u64::from(vcpu_sig), 0x1f80, 0x37f),
        VmmType::Ec2 => {
            if eip == BSP_EIP {
                cs_flags = 0x9a;
            }
            ss_flags = 0x92;
            tr_flags = 0x83;
            (0x600, 0, 0)
        }
        VmmType::Gce => {
            g_pat = 0x0007_0106; // GCE's hypervisor sets its own PAT.
            (0x600, 0, 0)
        }
    };

    let mut p = Page([0; PAGE_BYTES]);
    p.seg(OFF_ES, 0, 0x93, 0xffff, 0);
    p.seg(OFF_CS, 0xf000, cs_flags, 0xffff, u64::from(eip & 0xffff_0000));
    p.seg(OFF_SS, 0, ss_flags, 0xffff, 0);
    p.seg(OFF_DS, 0, 0x93, 0xffff, 0);
    p.seg(OFF_FS, 0, 0x93, 0xffff, 0);
    p.seg(OFF_GS, 0, 0x93, 0xffff, 0);
    p.seg(OFF_GDTR, 0, 0, 0xffff, 0);
    p.seg(OFF_LDTR, 0, 0x82, 0xffff, 0);
    p.seg(OFF_IDTR, 0, 0, 0xffff, 0);
    p.seg(OFF_TR, 0, tr_flags, 0xffff, 0);
    p.u64(OFF_EFER, 0x1000); // EFER.SVME, which KVM sets
    p.u64(OFF_CR4, 0x40); // CR4.MCE, which KVM sets
    p.u64(OFF_CR0, 0x10); // CR0.ET
    p.u64(OFF_DR7, 0x400);
    p.u64(OFF_DR6, 0xffff_0ff0);
    p.u64(OFF_RFLAGS, 0x2);
    p.u64(OFF_RIP, u64::from(eip & 0xffff));
    p.u64(OFF_G_PAT, g_pat);
    p.u64(OFF_RDX, rdx);
    p.u64(OFF_SEV_FEATURES, sev_features);
    p.u64(OFF_XCR0, 0x1);
    p.u32(OFF_MXCSR, mxcsr);
    p.u16(OFF_X87_FCW, fcw);
    p.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsp_vmsa_fields() {
        let v = build_vmsa(BSP_EIP, 0x1, 0x00a00f11, VmmType::Qemu);
        assert_eq!(
            &v[OFF_CS..OFF_CS + 16],
            &[0x00, 0xf0, 0x9b, 0, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(&v[OFF_RIP..OFF_RIP + 8], &0xfff0u64.to_le_bytes());
        assert_eq!(&v[OFF_RDX..OFF_RDX + 8], &0x00a00f11u64.to_le_bytes());
        assert_eq!(&v[OFF_SEV_FEATURES..OFF_SEV_FEATURES + 8], &1u64.to_le_bytes());
        assert_eq!(&v[OFF_MXCSR..OFF_MXCSR + 4], &0x1f80u32.to_le_bytes());
    }

    #[test]
    fn ec2_ignores_the_signature() {
        assert_eq!(build_vmsa(BSP_EIP, 1, 0x1234, VmmType::Ec2), build_vmsa(BSP_EIP, 1, 0, VmmType::Ec2));
        assert_ne!(build_vmsa(BSP_EIP, 1, 0x600, VmmType::Ec2), build_vmsa(BSP_EIP, 1, 0x600, VmmType::Qemu));
    }
}
