//! vCPU models: QEMU's `-cpu` names for AMD EPYC and the CPUID signature (family, model,
//! stepping) each puts in the bootstrap VMSA. The guest's vCPU type is thus part of the
//! measurement: a guest launched with `-cpu EPYC-Milan` and one with `-cpu EPYC-v4`
//! measure differently even on the same host.

use crate::error::MeasureError;

/// CPUID Fn0000_0001_EAX for a family/model/stepping (AMD CPUID specification #25481).
pub const fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf { (0xf, (family - 0xf) & 0xff) } else { (family, 0) };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

const EPYC: u32 = cpu_signature(23, 1, 2);
const ROME: u32 = cpu_signature(23, 49, 0);
const MILAN: u32 = cpu_signature(25, 1, 1);
const GENOA: u32 = cpu_signature(25, 17, 0);
const TURIN: u32 = cpu_signature(26, 0, 0);

/// QEMU's AMD EPYC CPU models (`builtin_x86_defs`) and their signatures.
pub const VCPU_TYPES: &[(&str, u32)] = &[
    ("EPYC", EPYC),
    ("EPYC-v1", EPYC),
    ("EPYC-v2", EPYC),
    ("EPYC-IBPB", EPYC),
    ("EPYC-v3", EPYC),
    ("EPYC-v4", EPYC),
    ("EPYC-Rome", ROME),
    ("EPYC-Rome-v1", ROME),
    ("EPYC-Rome-v2", ROME),
    ("EPYC-Rome-v3", ROME),
    ("EPYC-Milan", MILAN),
    ("EPYC-Milan-v1", MILAN),
    ("EPYC-Milan-v2", MILAN),
    ("EPYC-Genoa", GENOA),
    ("EPYC-Genoa-v1", GENOA),
    ("EPYC-Turin", TURIN),
];

/// The signature of a QEMU vCPU type name (exact, case-insensitive).
pub fn vcpu_signature(name: &str) -> Result<u32, MeasureError> {
    VCPU_TYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, sig)| sig).ok_or_else(|| {
        MeasureError::UnknownVcpuType {
            name: name.to_owned(),
            known: VCPU_TYPES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(vcpu_signature("EPYC-v4").unwrap(), 0x0080_0f12);
        assert_eq!(vcpu_signature("epyc-milan").unwrap(), 0x00a0_0f11);
        assert_eq!(vcpu_signature("EPYC-Genoa").unwrap(), 0x00a1_0f10);
        assert!(matches!(vcpu_signature("Skylake"), Err(MeasureError::UnknownVcpuType { .. })));
    }
}
