//! Command-line arguments of `vouch measure` (and the standalone `vouch-measure`), with
//! the flags of the reference tool `sev-snp-measure` so a release script can call either.
//! [`run`] returns the text to print; the binary only prints it and maps errors to exit
//! codes.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sha2::{Digest, Sha256};

use crate::{
    firmware_digest, measurement_after_firmware, policy_snippet, vcpu_signature, DescribedMeasurement,
    Firmware, KernelHashes, LaunchConfig, MeasureError, VmmType, DEFAULT_GUEST_FEATURES,
};

/// What to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One 96-digit hex measurement per line.
    Hex,
    /// A TOML snippet for the client policy file (`[snp] measurements = [...]`).
    Policy,
}

/// Compute the expected SEV-SNP launch measurement of a guest.
#[derive(Clone, Debug, Args)]
pub struct MeasureArgs {
    /// OVMF firmware image with SEV-SNP metadata (e.g. OVMF.fd, or AmdSev's OVMF.fd for
    /// measured direct boot).
    #[arg(long, value_name = "PATH")]
    pub ovmf: PathBuf,
    /// Kernel for measured direct boot (QEMU `-kernel` with `kernel-hashes=on`).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initrd for measured direct boot.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (QEMU `-append`), exactly as passed.
    #[arg(long, value_name = "CMDLINE", requires = "kernel", allow_hyphen_values = true)]
    pub append: Option<String>,
    /// Read the kernel command line from a file (trailing newline stripped).
    #[arg(long, value_name = "PATH", requires = "kernel", conflicts_with = "append")]
    pub append_file: Option<PathBuf>,
    /// Number of vCPUs; several (comma-separated) give one measurement each.
    #[arg(long, value_name = "N", value_delimiter = ',', required = true)]
    pub vcpus: Vec<u32>,
    /// QEMU vCPU model (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin...).
    #[arg(long, value_name = "CPUTYPE", conflicts_with_all = ["vcpu_sig", "vcpu_family"])]
    pub vcpu_type: Option<String>,
    /// vCPU signature (CPUID Fn0000_0001_EAX), e.g. 0xa00f11.
    #[arg(long, value_name = "VALUE", value_parser = parse_u32, conflicts_with = "vcpu_family")]
    pub vcpu_sig: Option<u32>,
    /// vCPU family (with --vcpu-model and --vcpu-stepping).
    #[arg(long, requires_all = ["vcpu_model", "vcpu_stepping"])]
    pub vcpu_family: Option<u32>,
    /// vCPU model.
    #[arg(long, requires = "vcpu_family")]
    pub vcpu_model: Option<u32>,
    /// vCPU stepping.
    #[arg(long, requires = "vcpu_family")]
    pub vcpu_stepping: Option<u32>,
    /// VMM that launches the guest: QEMU, EC2 or GCE.
    #[arg(long, value_name = "VMMTYPE", default_value = "QEMU")]
    pub vmm_type: String,
    /// SEV_FEATURES of the guest's VMSAs (hex or decimal).
    #[arg(long, value_name = "VALUE", value_parser = parse_u64, default_value = "0x1")]
    pub guest_features: u64,
    /// Output: hex, or a policy-file snippet.
    #[arg(long, value_enum, default_value = "hex")]
    pub output_format: OutputFormat,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

fn parse_u32(s: &str) -> Result<u32, String> {
    parse_u64(s).and_then(|v| u32::try_from(v).map_err(|e| format!("{s:?}: {e}")))
}

fn read(path: &PathBuf) -> Result<Vec<u8>, MeasureError> {
    std::fs::read(path).map_err(|source| MeasureError::Io { path: path.clone(), source })
}

fn short(h: &[u8]) -> String {
    hex::encode(h)
}

/// Computes the measurements the arguments ask for and renders them.
pub fn run(args: &MeasureArgs) -> Result<String, MeasureError> {
    let vmm = VmmType::parse(&args.vmm_type)
        .ok_or_else(|| MeasureError::UnknownVmmType { name: args.vmm_type.clone() })?;
    let (vcpu_sig, vcpu_label) = match (&args.vcpu_type, args.vcpu_sig, args.vcpu_family) {
        (Some(name), _, _) => (Some(vcpu_signature(name)?), name.clone()),
        (None, Some(sig), _) => (Some(sig), format!("signature {sig:#x}")),
        (None, None, Some(family)) => {
            let sig =
                crate::cpu_signature(family, args.vcpu_model.unwrap_or(0), args.vcpu_stepping.unwrap_or(0));
            (Some(sig), format!("signature {sig:#x}"))
        }
        (None, None, None) => (None, "vCPU signature unused".to_owned()),
    };

    let fw_bytes = read(&args.ovmf)?;
    let fw_sha256 = Sha256::digest(&fw_bytes);
    let fw = Firmware::parse(fw_bytes)?;
    let mut header = vec![format!("firmware {} sha256 {}", args.ovmf.display(), short(&fw_sha256))];

    let cmdline = match (&args.append, &args.append_file) {
        (Some(a), _) => Some(a.clone()),
        (None, Some(p)) => {
            let text = String::from_utf8(read(p)?).map_err(|e| MeasureError::Io {
                path: p.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            Some(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        (None, None) => None,
    };
    let kernel_hashes = match &args.kernel {
        None => None,
        Some(k) => {
            let h = KernelHashes::from_files(k, args.initrd.as_deref(), cmdline.as_deref())?;
            header.push(format!("kernel {} sha256 {}", k.display(), short(&h.kernel)));
            match &args.initrd {
                Some(i) => header.push(format!("initrd {} sha256 {}", i.display(), short(&h.initrd))),
                None => header.push("no initrd".to_owned()),
            }
            header.push(format!("cmdline {:?}", cmdline.as_deref().unwrap_or("")));
            Some(h)
        }
    };

    let after_fw = firmware_digest(&fw);
    let mut entries = Vec::new();
    for &vcpus in &args.vcpus {
        let cfg = LaunchConfig {
            vcpus,
            vcpu_signature: vcpu_sig,
            vmm,
            guest_features: args.guest_features,
            kernel_hashes,
        };
        let measurement = measurement_after_firmware(&fw, after_fw.clone(), &cfg)?;
        let features = if args.guest_features == DEFAULT_GUEST_FEATURES {
            String::new()
        } else {
            format!(", guest features {:#x}", args.guest_features)
        };
        entries.push(DescribedMeasurement {
            measurement,
            description: format!("{vcpus} vCPU(s), {vcpu_label}, VMM {}{features}", vmm.name()),
        });
    }
    Ok(match args.output_format {
        OutputFormat::Hex => entries.iter().map(|e| format!("{}\n", e.measurement)).collect(),
        OutputFormat::Policy => policy_snippet(&header, &entries),
    })
}
