//! Byte-for-byte agreement with the reference implementation, `sev-snp-measure` (PyPI,
//! pinned in `scripts/install-measure-deps.sh`), on Debian's OVMF (`apt-get install ovmf`).
//!
//! Debian's OVMF.fd (OvmfPkgX64) carries SEV-SNP metadata but no SNP_KERNEL_HASHES
//! section, so measured direct boot is compared on a copy patched to have one (one
//! SNP_SEC_MEM section retyped to a kernel-hashes page and the hashes-table address set),
//! and on a synthetic image; both are fed to both implementations.
//!
//! These tests FAIL (never skip) when OVMF or sev-snp-measure is missing: run
//! `bash scripts/install-measure-deps.sh`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step is a failed test"
)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{debian_ovmf, scratch, SynthFirmware};
use vouch_measure::{
    launch_measurement, vcpu_signature, Firmware, KernelHashes, LaunchConfig, Measurement, VmmType,
};

/// The version pinned in scripts/install-measure-deps.sh.
const REFERENCE_VERSION: &str = "0.0.13";

/// Runs the reference library over many configurations in one Python process.
const REFERENCE_DRIVER: &str = r#"
import sys, json, importlib.metadata
try:
    from sevsnpmeasure import guest, vmm_types
    from sevsnpmeasure.sev_mode import SevMode
except ImportError as e:
    print("MISSING", e)
    sys.exit(0)
print("VERSION", importlib.metadata.version("sev-snp-measure"))
for line in sys.stdin:
    c = json.loads(line)
    try:
        ld = guest.calc_launch_digest(SevMode.SEV_SNP, c["vcpus"], c["sig"], c["ovmf"], c["kernel"],
                                      c["initrd"], c["append"], c["features"], "",
                                      vmm_types.VMMType[c["vmm"]])
        print(ld.hex())
    except Exception as e:
        print("ERR", type(e).__name__, str(e).replace("\n", " "))
"#;

#[derive(Clone, Debug)]
struct Case {
    ovmf: PathBuf,
    vcpus: u32,
    vcpu_type: Option<&'static str>,
    vmm: VmmType,
    features: u64,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
}

impl Case {
    fn qemu(ovmf: &Path, vcpus: u32, vcpu_type: &'static str) -> Case {
        Case {
            ovmf: ovmf.to_path_buf(),
            vcpus,
            vcpu_type: Some(vcpu_type),
            vmm: VmmType::Qemu,
            features: 1,
            kernel: None,
            initrd: None,
            append: None,
        }
    }

    fn ours(&self) -> Measurement {
        let fw = Firmware::parse(std::fs::read(&self.ovmf).unwrap()).unwrap();
        let kernel_hashes = self
            .kernel
            .as_ref()
            .map(|k| KernelHashes::from_files(k, self.initrd.as_deref(), self.append.as_deref()).unwrap());
        let cfg = LaunchConfig {
            vcpus: self.vcpus,
            vcpu_signature: self.vcpu_type.map(|t| vcpu_signature(t).unwrap()),
            vmm: self.vmm,
            guest_features: self.features,
            kernel_hashes,
        };
        launch_measurement(&fw, &cfg).unwrap_or_else(|e| panic!("{self:?}: {e}"))
    }

    fn json(&self) -> String {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        serde_json::json!({
            "ovmf": self.ovmf.display().to_string(),
            "vcpus": self.vcpus,
            "sig": self.vcpu_type.map(|t| vcpu_signature(t).unwrap()).unwrap_or(0),
            "vmm": match self.vmm { VmmType::Qemu => "QEMU", VmmType::Ec2 => "ec2", _ => "gce" },
            "features": self.features,
            "kernel": path(&self.kernel),
            "initrd": path(&self.initrd),
            "append": self.append,
        })
        .to_string()
    }
}

/// Reference measurements (or "ERR ..." lines) for `cases`, in order.
fn reference(cases: &[Case]) -> Vec<String> {
    let mut child = Command::new("python3")
        .args(["-c", REFERENCE_DRIVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed to run the reference sev-snp-measure");
    {
        let mut stdin = child.stdin.take().unwrap();
        for c in cases {
            writeln!(stdin, "{}", c.json()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    assert!(
        !first.starts_with("MISSING"),
        "the reference tool is not installed ({first}): run `bash scripts/install-measure-deps.sh` \
         (pip install sev-snp-measure=={REFERENCE_VERSION})"
    );
    assert_eq!(
        first,
        format!("VERSION {REFERENCE_VERSION}"),
        "unexpected sev-snp-measure version; install the pinned one: \
         pip install sev-snp-measure=={REFERENCE_VERSION}"
    );
    let results: Vec<String> = lines.map(str::to_owned).collect();
    assert_eq!(results.len(), cases.len(), "reference output: {text}");
    results
}

fn assert_agree(cases: &[Case]) {
    let refs = reference(cases);
    let mut failures = Vec::new();
    for (case, r) in cases.iter().zip(&refs) {
        let ours = case.ours().to_hex();
        if &ours != r {
            failures.push(format!("{case:?}\n  ours      {ours}\n  reference {r}"));
        } else {
            eprintln!(
                "agree: {} vcpus={} {:?} {:?} features={:#x} kernel={}  {ours}",
                case.ovmf.file_name().unwrap().to_string_lossy(),
                case.vcpus,
                case.vcpu_type,
                case.vmm,
                case.features,
                case.kernel.is_some()
            );
        }
    }
    assert!(failures.is_empty(), "{} of {} disagree:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Debian's OVMF with one SNP_SEC_MEM section retyped to SNP_KERNEL_HASHES and the SEV
/// hashes table placed at offset 0xc00 of that page.
fn patched_for_direct_boot(dir: &Path) -> PathBuf {
    let mut d = std::fs::read(debian_ovmf()).unwrap();
    let find_last = |needle: &[u8], d: &[u8]| {
        let hits: Vec<usize> =
            d.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
        assert_eq!(hits.len(), 1, "expected one {needle:02x?} in Debian's OVMF");
        hits[0]
    };
    let meta = find_last(b"ASEV", &d);
    let item1 = meta + 16 + 12;
    let gpa = u32::from_le_bytes(d[item1..item1 + 4].try_into().unwrap());
    d[item1 + 4..item1 + 8].copy_from_slice(&0x1000u32.to_le_bytes());
    d[item1 + 8..item1 + 12].copy_from_slice(&0x10u32.to_le_bytes());
    let rv = find_last(&common::HASHES_RV, &d);
    // Entry data (u32 gpa, u32 size) precedes the u16 size and the GUID.
    let data_at = rv - 2 - 8;
    d[data_at..data_at + 4].copy_from_slice(&(gpa + 0xc00).to_le_bytes());
    d[data_at + 4..data_at + 8].copy_from_slice(&0x400u32.to_le_bytes());
    let p = dir.join("OVMF-kernel-hashes.fd");
    std::fs::write(&p, d).unwrap();
    p
}

fn dummy_boot_files(dir: &Path) -> (PathBuf, PathBuf) {
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    std::fs::write(&kernel, b"MZ not really a kernel\n").unwrap();
    std::fs::write(&initrd, (0..5000u32).map(|i| (i % 253) as u8).collect::<Vec<u8>>()).unwrap();
    (kernel, initrd)
}

#[test]
fn debian_ovmf_vcpu_counts_and_types_agree() {
    let ovmf = debian_ovmf();
    let mut cases = Vec::new();
    for vcpus in [1, 2, 4] {
        for t in ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"] {
            cases.push(Case::qemu(&ovmf, vcpus, t));
        }
    }
    for t in ["EPYC", "EPYC-Rome", "EPYC-Turin"] {
        cases.push(Case::qemu(&ovmf, 8, t));
    }
    // Other guest features (e.g. SNPActive | DebugSwap = 0x21).
    cases.push(Case { features: 0x21, ..Case::qemu(&ovmf, 2, "EPYC-Milan") });
    assert_agree(&cases);
}

#[test]
fn debian_ovmf_cloud_vmm_types_agree() {
    let ovmf = debian_ovmf();
    let mut cases = Vec::new();
    for vcpus in [1, 2, 4] {
        cases.push(Case { vmm: VmmType::Ec2, vcpu_type: None, ..Case::qemu(&ovmf, vcpus, "EPYC") });
        cases.push(Case { vmm: VmmType::Gce, vcpu_type: None, ..Case::qemu(&ovmf, vcpus, "EPYC") });
    }
    assert_agree(&cases);
}

#[test]
fn measured_direct_boot_agrees() {
    let dir = scratch("direct-boot");
    let ovmf = patched_for_direct_boot(&dir);
    let (kernel, initrd) = dummy_boot_files(&dir);
    let cmdline = "console=ttyS0 ro dm-mod.create=\"vouch-model,,,ro,0 8 verity 1 /dev/vda /dev/vda 4096 4096 1 1 sha256 00 -\"";
    let mut cases = Vec::new();
    for (vcpus, t) in [(1, "EPYC-v4"), (2, "EPYC-Milan"), (4, "EPYC-Genoa")] {
        // Without a kernel the hashes page is a zero page.
        cases.push(Case::qemu(&ovmf, vcpus, t));
        cases.push(Case { kernel: Some(kernel.clone()), ..Case::qemu(&ovmf, vcpus, t) });
        cases.push(Case {
            kernel: Some(kernel.clone()),
            initrd: Some(initrd.clone()),
            ..Case::qemu(&ovmf, vcpus, t)
        });
        cases.push(Case {
            kernel: Some(kernel.clone()),
            initrd: Some(initrd.clone()),
            append: Some(cmdline.to_owned()),
            ..Case::qemu(&ovmf, vcpus, t)
        });
    }
    cases.push(Case {
        kernel: Some(kernel.clone()),
        initrd: Some(initrd.clone()),
        append: Some("console=ttyS0".into()),
        vmm: VmmType::Ec2,
        vcpu_type: None,
        ..Case::qemu(&ovmf, 2, "EPYC")
    });
    assert_agree(&cases);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn synthetic_firmware_agrees() {
    // SVSM_CAA and SNP_KERNEL_HASHES sections, a hashes table at offset 0xc00, and a small
    // image at another base address: exercises paths Debian's image does not.
    let dir = scratch("synthetic");
    let fw = dir.join("synthetic.fd");
    std::fs::write(&fw, SynthFirmware::default().build()).unwrap();
    let (kernel, initrd) = dummy_boot_files(&dir);
    let cases = vec![
        Case::qemu(&fw, 1, "EPYC-Milan"),
        Case::qemu(&fw, 3, "EPYC-Genoa"),
        Case {
            kernel: Some(kernel),
            initrd: Some(initrd),
            append: Some("a=b".into()),
            ..Case::qemu(&fw, 2, "EPYC-v4")
        },
    ];
    assert_agree(&cases);
}

#[test]
fn cli_matches_reference_cli() {
    // The binary and `sev-snp-measure` run as commands, same flags.
    let ovmf = debian_ovmf();
    let flags = ["--ovmf", ovmf.to_str().unwrap(), "--vcpus", "4", "--vcpu-type", "EPYC-Milan"];
    let ours = Command::new(env!("CARGO_BIN_EXE_vouch-measure")).args(flags).output().unwrap();
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    let theirs = Command::new("python3")
        .args(["-m", "sevsnpmeasure.cli", "--mode", "snp"])
        .args(flags)
        .output()
        .expect("python3 with sev-snp-measure (bash scripts/install-measure-deps.sh)");
    assert!(
        theirs.status.success(),
        "sev-snp-measure failed (install: bash scripts/install-measure-deps.sh): {}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    assert_eq!(String::from_utf8(ours.stdout).unwrap(), String::from_utf8(theirs.stdout).unwrap());
}

#[test]
fn policy_snippet_parses_as_the_attestation_policy() {
    let ovmf = debian_ovmf();
    let out = Command::new(env!("CARGO_BIN_EXE_vouch-measure"))
        .args(["--ovmf", ovmf.to_str().unwrap(), "--vcpus", "1,2,4", "--vcpu-type", "EPYC-Genoa"])
        .args(["--output-format", "policy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snippet = String::from_utf8(out.stdout).unwrap();

    #[derive(serde::Deserialize)]
    struct PolicyFile {
        snp: vouch_attestation::policy::Policy,
    }
    let parsed: PolicyFile = toml::from_str(&snippet).unwrap_or_else(|e| panic!("{e}\n{snippet}"));
    let expected: Vec<[u8; 48]> =
        [1, 2, 4].iter().map(|&n| Case::qemu(&ovmf, n, "EPYC-Genoa").ours().0).collect();
    let got: Vec<[u8; 48]> = parsed.snp.measurements.iter().map(|h| h.0).collect();
    assert_eq!(got, expected, "{snippet}");
}
