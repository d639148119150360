//! The guest recipe (guest/): builds the initramfs here with a dummy enclave binary,
//! checks its exact contents and reproducibility, builds the dm-verity model disk, and
//! checks that the command line the measurement covers carries the verity root hash —
//! and that build-guest.sh's published measurement is the one this crate computes for
//! exactly those bytes.
//!
//! Needs python3 and veritysetup (`bash scripts/install-measure-deps.sh`); fails, never
//! skips, without them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{scratch, SynthFirmware};
use vouch_measure::{launch_measurement, vcpu_signature, Firmware, KernelHashes, LaunchConfig};

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest")
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CpioEntry {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

/// Parses a newc archive fully: magic, hex fields, 4-byte alignment, trailer, nothing after.
fn parse_newc(bytes: &[u8]) -> BTreeMap<String, CpioEntry> {
    let mut out = BTreeMap::new();
    let mut at = 0usize;
    let align = |n: usize| (n + 3) & !3;
    loop {
        let h = &bytes[at..at + 110];
        assert_eq!(&h[..6], b"070701", "newc magic at {at}");
        let field = |i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16).unwrap()
        };
        let (mode, uid, gid, mtime, size, rmaj, rmin, namesize) = (
            field(1),
            field(2),
            field(3),
            field(5),
            field(6) as usize,
            field(9),
            field(10),
            field(11) as usize,
        );
        let name_start = at + 110;
        let name = std::str::from_utf8(&bytes[name_start..name_start + namesize - 1]).unwrap().to_owned();
        assert_eq!(bytes[name_start + namesize - 1], 0);
        let data_start = align(name_start + namesize);
        let data = bytes[data_start..data_start + size].to_vec();
        at = align(data_start + size);
        if name == "TRAILER!!!" {
            break;
        }
        assert!(out
            .insert(name.clone(), CpioEntry { mode, uid, gid, mtime, rdev: (rmaj, rmin), data })
            .is_none());
    }
    assert_eq!(at, bytes.len(), "trailing bytes after the cpio trailer");
    out
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Inputs {
    enclave: PathBuf,
    busybox: PathBuf,
    model: PathBuf,
    kernel: PathBuf,
    ovmf: PathBuf,
}

fn inputs(dir: &Path) -> Inputs {
    let i = Inputs {
        enclave: dir.join("vouch-enclave"),
        busybox: dir.join("busybox"),
        model: dir.join("model.gguf"),
        kernel: dir.join("vmlinuz"),
        ovmf: dir.join("OVMF-snp.fd"),
    };
    std::fs::write(&i.enclave, b"\x7fELF dummy vouch-enclave for the recipe test\n").unwrap();
    std::fs::write(&i.busybox, b"\x7fELF dummy busybox\n").unwrap();
    std::fs::write(&i.model, (0..10_000u32).map(|n| (n * 31 % 256) as u8).collect::<Vec<_>>()).unwrap();
    std::fs::write(&i.kernel, b"MZ dummy bzImage\n").unwrap();
    // A synthetic firmware with an SNP_KERNEL_HASHES section (measured direct boot).
    std::fs::write(&i.ovmf, SynthFirmware::default().build()).unwrap();
    i
}

fn build_initrd(i: &Inputs, out: &Path, with_model: bool) -> Vec<u8> {
    let mut cmd = Command::new("bash");
    cmd.arg(guest_dir().join("build-initrd.sh"))
        .arg("--enclave")
        .arg(&i.enclave)
        .arg("--busybox")
        .arg(&i.busybox)
        .arg("--out")
        .arg(out)
        .env_remove("SOURCE_DATE_EPOCH");
    if with_model {
        cmd.arg("--model").arg(&i.model);
    }
    run(&mut cmd);
    std::fs::read(out).unwrap()
}

#[test]
fn initrd_contents_are_exact_and_reproducible() {
    let dir = scratch("initrd");
    let i = inputs(&dir);
    let bytes = build_initrd(&i, &dir.join("initrd.cpio"), true);
    let entries = parse_newc(&bytes);

    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/acpid",
            "bin/busybox",
            "bin/cat",
            "bin/head",
            "bin/insmod",
            "bin/ip",
            "bin/kill",
            "bin/mkdir",
            "bin/modprobe",
            "bin/mount",
            "bin/poweroff",
            "bin/sed",
            "bin/sh",
            "bin/sleep",
            "bin/sync",
            "bin/tr",
            "bin/vouch-enclave",
            "bin/wc",
            "dev",
            "dev/console",
            "etc",
            "etc/acpi",
            "etc/acpi/PWRF",
            "etc/acpi/PWRF/00000080",
            "etc/vouch",
            "etc/vouch/enclave.args",
            "init",
            "lib",
            "model",
            "model/model.gguf",
            "proc",
            "run",
            "sys",
        ]
    );
    let file = |n: &str| &entries[n];
    assert_eq!(file("init").data, std::fs::read(guest_dir().join("init")).unwrap());
    assert_eq!(file("init").mode, 0o100755);
    assert_eq!(file("bin/vouch-enclave").data, std::fs::read(&i.enclave).unwrap());
    assert_eq!(file("bin/vouch-enclave").mode, 0o100755);
    assert_eq!(file("bin/busybox").data, std::fs::read(&i.busybox).unwrap());
    assert_eq!(file("bin/sh").mode, 0o120777);
    assert_eq!(file("bin/sh").data, b"busybox");
    assert_eq!(file("etc/vouch/enclave.args").data, std::fs::read(guest_dir().join("enclave.args")).unwrap());
    // The power-button handler that turns QEMU's system_powerdown into the enclave's SIGTERM.
    assert_eq!(file("etc/acpi/PWRF/00000080").data, std::fs::read(guest_dir().join("power-button")).unwrap());
    assert_eq!(file("etc/acpi/PWRF/00000080").mode, 0o100755);
    assert_eq!(file("model/model.gguf").data, std::fs::read(&i.model).unwrap());
    assert_eq!(file("model/model.gguf").mode, 0o100444);
    assert_eq!(file("dev/console").mode, 0o020600);
    assert_eq!(file("dev/console").rdev, (5, 1));
    assert_eq!(file("etc").mode, 0o040755);
    // Nothing from the build machine leaks in: owners root, mtime SOURCE_DATE_EPOCH (0).
    for (name, e) in &entries {
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{name}");
    }

    // Same inputs, another path and another time: same bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = build_initrd(&i, &dir.join("again.cpio"), true);
    assert_eq!(bytes, again, "initrd build is not reproducible");
    let sha = std::fs::read_to_string(dir.join("initrd.cpio.sha256")).unwrap();
    assert_eq!(sha.trim(), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));

    // Without --model there is no /model.
    let small = parse_newc(&build_initrd(&i, &dir.join("small.cpio"), false));
    assert!(!small.contains_key("model") && !small.contains_key("model/model.gguf"));
}

fn build_guest(i: &Inputs, out: &Path, on_disk: bool) -> (String, Vec<String>) {
    let mut cmd = Command::new("bash");
    cmd.arg(guest_dir().join("build-guest.sh"))
        .args(["--vcpus", "1,4", "--vcpu-type", "EPYC-Milan"])
        .arg("--enclave")
        .arg(&i.enclave)
        .arg("--busybox")
        .arg(&i.busybox)
        .arg("--kernel")
        .arg(&i.kernel)
        .arg("--ovmf")
        .arg(&i.ovmf)
        .arg("--model")
        .arg(&i.model)
        .arg("--out")
        .arg(out)
        .env("VOUCH_MEASURE", env!("CARGO_BIN_EXE_vouch-measure"))
        .env_remove("SOURCE_DATE_EPOCH");
    if on_disk {
        cmd.arg("--model-on-disk");
    }
    run(&mut cmd);
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    let published: Vec<String> =
        std::fs::read_to_string(out.join("measurement.txt")).unwrap().lines().map(str::to_owned).collect();
    (cmdline, published)
}

/// What this crate computes for the exact files build-guest.sh wrote.
fn expected(i: &Inputs, out: &Path, cmdline: &str) -> Vec<String> {
    let fw = Firmware::parse(std::fs::read(&i.ovmf).unwrap()).unwrap();
    let hashes = KernelHashes::from_files(&i.kernel, Some(&out.join("initrd.cpio")), Some(cmdline)).unwrap();
    [1, 4]
        .iter()
        .map(|&vcpus| {
            let cfg = LaunchConfig {
                kernel_hashes: Some(hashes),
                ..LaunchConfig::qemu(vcpus, vcpu_signature("EPYC-Milan").unwrap())
            };
            launch_measurement(&fw, &cfg).unwrap().to_hex()
        })
        .collect()
}

fn verity_env(out: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(out.join("model-verity.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn model_in_initrd_guest_measurement_covers_initrd_and_cmdline() {
    let dir = scratch("guest-initrd");
    let i = inputs(&dir);
    let out = dir.join("out");
    let (cmdline, published) = build_guest(&i, &out, false);
    assert_eq!(cmdline, "console=ttyS0 panic=-1 rdinit=/init vouch.model=initrd");
    assert_eq!(published, expected(&i, &out, &cmdline));
    let policy = std::fs::read_to_string(out.join("policy.toml")).unwrap();
    assert!(published.iter().all(|m| policy.contains(m.as_str())), "{policy}");
    assert!(!out.join("model-disk.img").exists());
}

#[test]
fn model_on_verity_disk_root_hash_is_on_the_measured_cmdline() {
    assert!(
        Command::new("veritysetup").arg("--version").output().is_ok_and(|o| o.status.success()),
        "veritysetup not found: run `bash scripts/install-measure-deps.sh` (apt-get install cryptsetup-bin)"
    );
    let dir = scratch("guest-verity");
    let i = inputs(&dir);
    let out = dir.join("out");
    let (cmdline, published) = build_guest(&i, &out, true);
    let env = verity_env(&out);
    let root = &env["VERITY_ROOT_HASH"];
    let salt = &env["VERITY_SALT"];
    assert_eq!(root.len(), 64);
    assert_eq!(env["MODEL_BYTES"], "10000");
    assert_eq!(env["VERITY_DATA_BLOCKS"], "3");
    assert_eq!(
        cmdline,
        format!(
            "console=ttyS0 panic=-1 rdinit=/init dm-mod.create=\"vouch-model,,,ro,0 24 verity 1 /dev/vda \
             /dev/vda 4096 4096 3 3 sha256 {root} {salt}\" dm-mod.waitfor=/dev/vda vouch.model=verity \
             vouch.model_bytes=10000"
        )
    );
    // The model is on the disk, not in the initrd.
    let initrd = parse_newc(&std::fs::read(out.join("initrd.cpio")).unwrap());
    assert!(!initrd.contains_key("model/model.gguf"));
    // The disk verifies against the root hash that is on the command line.
    run(Command::new("veritysetup")
        .args(["verify", "--no-superblock", "--data-blocks=3", "--hash-offset=12288"])
        .arg(format!("--salt={salt}"))
        .arg(out.join("model-disk.img"))
        .arg(out.join("model-disk.img"))
        .arg(root));
    let disk = std::fs::read(out.join("model-disk.img")).unwrap();
    assert_eq!(&disk[..10_000], &std::fs::read(&i.model).unwrap()[..]);
    // The published measurement is this crate's value for these exact bytes.
    assert_eq!(published, expected(&i, &out, &cmdline));

    // Another model (one byte changed) → another root hash → another command line →
    // another measurement, with the same initrd.
    let mut m = std::fs::read(&i.model).unwrap();
    m[5000] ^= 1;
    std::fs::write(&i.model, m).unwrap();
    let out2 = dir.join("out2");
    let (cmdline2, published2) = build_guest(&i, &out2, true);
    assert_ne!(verity_env(&out2)["VERITY_ROOT_HASH"], *root);
    assert_eq!(
        std::fs::read(out.join("initrd.cpio")).unwrap(),
        std::fs::read(out2.join("initrd.cpio")).unwrap()
    );
    assert_ne!(cmdline, cmdline2);
    assert_ne!(published, published2);
}

#[test]
fn guest_scripts_parse() {
    let g = guest_dir();
    run(Command::new("sh").arg("-n").arg(g.join("init")));
    for s in ["build-initrd.sh", "build-model-disk.sh", "build-guest.sh", "launch-qemu.sh"] {
        run(Command::new("bash").arg("-n").arg(g.join(s)));
    }
    // The launch script asks QEMU for what the measurement assumes.
    let launch = std::fs::read_to_string(g.join("launch-qemu.sh")).unwrap();
    for needle in
        ["confidential-guest-support=sev0", "sev-snp-guest", "kernel-hashes=on", "vhost-vsock-pci,guest-cid="]
    {
        assert!(launch.contains(needle), "launch-qemu.sh lacks {needle}");
    }
}
