//! Bad inputs give the exact error variant, never a panic or a silently wrong value.
//! Uses synthetic images only (no external tools needed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step is a failed test"
)]

mod common;

use common::{SynthFirmware, HASHES_RV};
use vouch_measure::{
    launch_measurement, vcpu_signature, Firmware, KernelHashes, LaunchConfig, MeasureError, VmmType,
    MAX_FIRMWARE_BYTES,
};

fn parse(s: &SynthFirmware) -> Result<Firmware, MeasureError> {
    Firmware::parse(s.build())
}

fn milan(vcpus: u32) -> LaunchConfig {
    LaunchConfig::qemu(vcpus, vcpu_signature("EPYC-Milan").unwrap())
}

fn kernel() -> Option<KernelHashes> {
    Some(KernelHashes::from_bytes(b"kernel", Some(b"initrd"), Some("console=ttyS0")).unwrap())
}

#[test]
fn synthetic_firmware_parses_and_measures() {
    let fw = parse(&SynthFirmware::default()).unwrap();
    assert_eq!(fw.sections().len(), 5);
    assert_eq!(fw.gpa(), (1u64 << 32) - 16 * 4096);
    assert_eq!(fw.hashes_table_gpa(), Some(0x80ac00));
    let plain = launch_measurement(&fw, &milan(2)).unwrap();
    let direct = launch_measurement(&fw, &LaunchConfig { kernel_hashes: kernel(), ..milan(2) }).unwrap();
    assert_ne!(plain, direct);
    // Every input that the guest depends on changes the value.
    let other_cmdline = KernelHashes::from_bytes(b"kernel", Some(b"initrd"), Some("console=ttyS1")).unwrap();
    let direct2 =
        launch_measurement(&fw, &LaunchConfig { kernel_hashes: Some(other_cmdline), ..milan(2) }).unwrap();
    assert_ne!(direct, direct2);
    assert_ne!(plain, launch_measurement(&fw, &milan(3)).unwrap());
    assert_ne!(plain, launch_measurement(&fw, &LaunchConfig { guest_features: 0x21, ..milan(2) }).unwrap());
    let genoa = LaunchConfig::qemu(2, vcpu_signature("EPYC-Genoa").unwrap());
    assert_ne!(plain, launch_measurement(&fw, &genoa).unwrap());
}

#[test]
fn firmware_size_errors() {
    assert!(matches!(Firmware::parse(Vec::new()), Err(MeasureError::FirmwareNotPageAligned { len: 0 })));
    assert!(matches!(
        Firmware::parse(vec![0; 5000]),
        Err(MeasureError::FirmwareNotPageAligned { len: 5000 })
    ));
    let big = MAX_FIRMWARE_BYTES + 4096;
    assert!(matches!(
        Firmware::parse(vec![0; big]),
        Err(MeasureError::FirmwareTooLarge { max: MAX_FIRMWARE_BYTES, actual }) if actual == big
    ));
}

#[test]
fn not_an_ovmf_image() {
    assert!(matches!(Firmware::parse(vec![0xff; 8192]), Err(MeasureError::NoFooterTable)));
}

#[test]
fn firmware_without_sev_metadata() {
    let s = SynthFirmware { sections: None, ..Default::default() };
    assert!(matches!(parse(&s), Err(MeasureError::NoSevMetadata)));
}

#[test]
fn malformed_metadata() {
    let s = SynthFirmware { metadata_signature: *b"XSEV", ..Default::default() };
    assert!(matches!(parse(&s), Err(MeasureError::MalformedSevMetadata { .. })));
    let s = SynthFirmware { metadata_version: 2, ..Default::default() };
    assert!(matches!(parse(&s), Err(MeasureError::MalformedSevMetadata { .. })));
}

#[test]
fn unknown_section_type() {
    let s = SynthFirmware {
        sections: Some(vec![(0x800000, 0x1000, 1), (0x801000, 0x1000, 7)]),
        ..Default::default()
    };
    assert!(matches!(parse(&s), Err(MeasureError::UnknownSectionType { index: 1, section_type: 7 })));
}

#[test]
fn misaligned_or_oversized_sections() {
    let s = SynthFirmware { sections: Some(vec![(0x800800, 0x1000, 1)]), ..Default::default() };
    assert!(matches!(parse(&s), Err(MeasureError::BadSection { index: 0, gpa: 0x800800, .. })));
    let s = SynthFirmware { sections: Some(vec![(0x800000, 0x1800, 1)]), ..Default::default() };
    assert!(matches!(parse(&s), Err(MeasureError::BadSection { index: 0, size: 0x1800, .. })));
    let s = SynthFirmware { sections: Some(vec![(0x800000, 0x2000, 2)]), ..Default::default() };
    assert!(matches!(parse(&s), Err(MeasureError::BadSection { index: 0, size: 0x2000, .. })));
}

#[test]
fn missing_reset_block() {
    let s = SynthFirmware { reset_eip: None, ..Default::default() };
    assert!(matches!(parse(&s), Err(MeasureError::NoSevEsResetBlock)));
}

#[test]
fn zero_ap_reset_address_refuses_more_than_one_vcpu() {
    let fw = parse(&SynthFirmware { reset_eip: Some(0), ..Default::default() }).unwrap();
    assert!(launch_measurement(&fw, &milan(1)).is_ok());
    assert!(matches!(launch_measurement(&fw, &milan(2)), Err(MeasureError::NoApResetAddress { vcpus: 2 })));
}

#[test]
fn duplicate_table_entries() {
    let s = SynthFirmware { extra_entries: vec![(HASHES_RV, vec![0; 8])], ..Default::default() };
    assert!(matches!(parse(&s), Err(MeasureError::MalformedFooterTable { .. })));
}

#[test]
fn truncated_footer_table() {
    let mut img = SynthFirmware::default().build();
    let footer_size_at = img.len() - 32 - 18;
    img[footer_size_at..footer_size_at + 2].copy_from_slice(&5u16.to_le_bytes());
    assert!(matches!(Firmware::parse(img.clone()), Err(MeasureError::MalformedFooterTable { .. })));
    img[footer_size_at..footer_size_at + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    // A table larger than what precedes it inside a 64 KiB image is still in range here,
    // but its entries are then garbage: whatever happens, no panic.
    let _ = Firmware::parse(img);
}

#[test]
fn direct_boot_without_kernel_hashes_section() {
    let s = SynthFirmware { sections: Some(vec![(0x800000, 0x1000, 1)]), ..Default::default() };
    let fw = parse(&s).unwrap();
    assert!(matches!(
        launch_measurement(&fw, &LaunchConfig { kernel_hashes: kernel(), ..milan(1) }),
        Err(MeasureError::KernelHashesUnsupported { .. })
    ));
    let s = SynthFirmware { hashes_table_gpa: None, ..Default::default() };
    let fw = parse(&s).unwrap();
    assert!(matches!(
        launch_measurement(&fw, &LaunchConfig { kernel_hashes: kernel(), ..milan(1) }),
        Err(MeasureError::KernelHashesUnsupported { .. })
    ));
}

#[test]
fn hashes_table_outside_its_page() {
    for gpa in [0x80b000, 0x809f00, 0x80af80] {
        let fw = parse(&SynthFirmware { hashes_table_gpa: Some(gpa), ..Default::default() }).unwrap();
        assert!(
            matches!(
                launch_measurement(&fw, &LaunchConfig { kernel_hashes: kernel(), ..milan(1) }),
                Err(MeasureError::HashesTableOutsidePage { page_gpa: 0x80a000, .. })
            ),
            "{gpa:#x}"
        );
    }
}

#[test]
fn vcpu_errors() {
    let fw = parse(&SynthFirmware::default()).unwrap();
    assert!(matches!(launch_measurement(&fw, &milan(0)), Err(MeasureError::BadVcpuCount { vcpus: 0, .. })));
    assert!(matches!(
        launch_measurement(&fw, &milan(5000)),
        Err(MeasureError::BadVcpuCount { vcpus: 5000, .. })
    ));
    let no_sig = LaunchConfig { vcpu_signature: None, ..milan(1) };
    assert!(matches!(
        launch_measurement(&fw, &no_sig),
        Err(MeasureError::MissingVcpuSignature { vmm: "QEMU" })
    ));
    // EC2 does not use the signature.
    assert!(launch_measurement(&fw, &LaunchConfig { vmm: VmmType::Ec2, ..no_sig }).is_ok());
    match vcpu_signature("Skylake-Server") {
        Err(MeasureError::UnknownVcpuType { name, known }) => {
            assert_eq!(name, "Skylake-Server");
            assert!(known.contains("EPYC-Milan"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cli_errors_exit_2_with_a_message() {
    let dir = common::scratch("cli-errors");
    let fw = dir.join("fw.fd");
    std::fs::write(&fw, SynthFirmware { sections: None, ..Default::default() }.build()).unwrap();
    let bin = env!("CARGO_BIN_EXE_vouch-measure");
    let run = |args: &[&str]| std::process::Command::new(bin).args(args).output().unwrap();
    let fw = fw.to_str().unwrap();

    let o = run(&["--ovmf", fw, "--vcpus", "1", "--vcpu-type", "EPYC"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no SEV metadata"));

    let o = run(&["--ovmf", "/nonexistent/OVMF.fd", "--vcpus", "1", "--vcpu-type", "EPYC"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/OVMF.fd"));

    let o = run(&["--ovmf", fw, "--vcpus", "1", "--vcpu-type", "Pentium"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown vCPU type"));

    let o = run(&["--ovmf", fw, "--vcpus", "1", "--vcpu-type", "EPYC", "--vmm-type", "xen"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown VMM type"));

    // --initrd without --kernel is a usage error.
    let o = run(&["--ovmf", fw, "--vcpus", "1", "--vcpu-type", "EPYC", "--initrd", "x"]);
    assert_eq!(o.status.code(), Some(2));
}
