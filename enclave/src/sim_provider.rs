//! The SIMULATED secure processor as an attestation provider (cargo feature `sim`).
//!
//! Enclave side, but NOT a root of trust: the simulator's keys live in a file that
//! whoever runs the machine can read. It exists for development, CI and demos on
//! machines without SEV-SNP, and is compiled only into builds that ask for it
//! (`--features sim`); the guest image is built without it. Its evidence is tagged
//! platform `sim`, which verifiers check against the simulated root alone.
//!
//! The key directory holds `sim-keys.cbor` (secret), `sim-ark.pem` (the root, for
//! clients that choose to trust it) and `sim-policy.toml`: a client policy pinning the
//! code identity this simulated enclave reports (the SHA-384 of its binary, standing in
//! for a launch measurement), so a demo client can pin code without `--allow-any-code`.

use crate::provider::{AttestationProvider, ProviderError, ReportWithCerts};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vouch_attestation::receipt::{Platform, ReportBundle};
use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};
use vouch_attestation::Product;

/// File names in the simulator's key directory.
pub const SIM_KEYS_FILE: &str = "sim-keys.cbor";
/// The simulated root certificate, for clients that choose to trust it.
pub const SIM_ARK_FILE: &str = "sim-ark.pem";
/// A client policy pinning this simulated enclave's code identity (see the module docs).
pub const SIM_POLICY_FILE: &str = "sim-policy.toml";

/// The simulated secure processor.
pub struct SimProvider {
    sp: SimulatedSp,
    measurement: [u8; 48],
    latency: Duration,
    vmpl: u32,
}

impl std::fmt::Debug for SimProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimProvider").field("latency", &self.latency).finish_non_exhaustive()
    }
}

/// SHA-384 of the running executable: the simulator's stand-in for a launch measurement
/// (on real hardware the firmware measures the guest image at launch).
pub fn binary_measurement() -> Result<[u8; 48], ProviderError> {
    use sha2::Digest;
    let exe = std::env::current_exe().map_err(|e| ProviderError::Sim(format!("current_exe: {e}")))?;
    let bytes =
        std::fs::read(&exe).map_err(|e| ProviderError::Sim(format!("read {}: {e}", exe.display())))?;
    Ok(sha2::Sha384::digest(&bytes).into())
}

impl SimProvider {
    /// Loads the simulator's keys from `dir`, creating them when missing, and writes
    /// `dir/sim-ark.pem`. Key generation (RSA-4096) takes a few seconds, once. It reports
    /// `measurement` as MEASUREMENT, or [`binary_measurement`] when `None`; the policy it
    /// writes pins that value.
    pub fn open(
        dir: &Path,
        product: Product,
        latency: Duration,
        measurement: Option<[u8; 48]>,
    ) -> Result<SimProvider, ProviderError> {
        let err = |what: &str, p: &Path, e: std::io::Error| {
            ProviderError::Sim(format!("{what} {}: {e}", p.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| err("create", dir, e))?;
        let keys_path = dir.join(SIM_KEYS_FILE);
        let keys: SimKeyMaterial = match std::fs::read(&keys_path) {
            Ok(bytes) => vouch_attestation::binding::from_cbor(&bytes)
                .map_err(|e| ProviderError::Sim(format!("{}: {e}", keys_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(dir = %dir.display(), "generating simulated secure processor keys (RSA-4096, once)");
                let k = SimKeyMaterial::generate(product).map_err(|e| ProviderError::Sim(e.to_string()))?;
                write_private(&keys_path, &vouch_attestation::binding::to_cbor(&k))
                    .map_err(|e| err("write", &keys_path, e))?;
                k
            }
            Err(e) => return Err(err("read", &keys_path, e)),
        };
        if keys.product != product {
            return Err(ProviderError::Sim(format!(
                "{} imitates {}, but --sim-product is {product}: pass --sim-product {} or use a new --sim-dir",
                keys_path.display(),
                keys.product,
                keys.product.to_string().to_lowercase()
            )));
        }
        let sp = SimulatedSp::from_keys(&keys).map_err(|e| ProviderError::Sim(e.to_string()))?;
        let measurement = match measurement {
            Some(m) => m,
            None => binary_measurement()?,
        };
        let ark_path = dir.join(SIM_ARK_FILE);
        std::fs::write(&ark_path, sp.ark_pem()).map_err(|e| err("write", &ark_path, e))?;
        let policy_path = dir.join(SIM_POLICY_FILE);
        write_replacing(&policy_path, sim_policy(&sp, &measurement).as_bytes())
            .map_err(|e| err("write", &policy_path, e))?;
        Ok(SimProvider { sp, measurement, latency, vmpl: 0 })
    }

    /// A provider around an already loaded simulator (tests and benchmarks use the
    /// committed TEST-ONLY keys this way).
    pub fn from_simulator(sp: SimulatedSp, measurement: [u8; 48], latency: Duration) -> SimProvider {
        SimProvider { sp, measurement, latency, vmpl: 0 }
    }

    /// The simulated launch measurement.
    pub fn measurement(&self) -> [u8; 48] {
        self.measurement
    }

    /// Path of the root certificate inside `dir`.
    pub fn ark_path(dir: &Path) -> PathBuf {
        dir.join(SIM_ARK_FILE)
    }
}

/// The client policy a simulated enclave publishes: it pins the code identity (the
/// measurement) and the TCB this simulator reports, so a demo client verifies with a
/// pinned identity and a TCB floor instead of `--allow-any-code`.
pub fn sim_policy(sp: &SimulatedSp, measurement: &[u8; 48]) -> String {
    let product = sp.product();
    let tcb = vouch_attestation::Tcb::decode(sp.tcb(), product);
    let fmc = tcb.fmc.map(|f| format!("fmc = {f}\n")).unwrap_or_default();
    format!(
        "# Written by `vouch-enclave serve --attestation sim` (SIMULATED secure processor, NOT AMD).\n\
         # It pins the code identity this simulated enclave reports: the SHA-384 of the\n\
         # vouch-enclave binary, standing in for a launch measurement. Use it only together\n\
         # with --trust-sim-root; a real deployment pins what `vouch measure` computes for\n\
         # its guest image (see client/policy.example.toml).\n\
         [snp]\n\
         measurements = [\"{}\"]\n\
         \n\
         # The TCB the simulator reports, as the floor.\n\
         [snp.min_tcb.{}]\n\
         {fmc}bootloader = {}\ntee = {}\nsnp = {}\nmicrocode = {}\n",
        hex::encode(measurement),
        product.to_string().to_lowercase(),
        tcb.bootloader,
        tcb.tee,
        tcb.snp,
        tcb.microcode,
    )
}

/// Writes a public file whole: to a temporary name, then renamed over the old one, so
/// a client reading it while another enclave starts never sees half of it.
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl AttestationProvider for SimProvider {
    fn kind(&self) -> &'static str {
        "sim"
    }
    fn platform(&self) -> Platform {
        Platform::Sim
    }
    fn report(&self, report_data: &[u8; 64]) -> Result<ReportWithCerts, ProviderError> {
        if !self.latency.is_zero() {
            // Imitates the secure processor's round trip (~8 ms measured on SNP guests).
            std::thread::sleep(self.latency);
        }
        let report = self
            .sp
            .report(report_data, &self.measurement, self.vmpl)
            .map_err(|e| ProviderError::Sim(e.to_string()))?;
        Ok(ReportBundle {
            report: report.to_vec(),
            leaf_cert: self.sp.vcek_der().to_vec(),
            chain: self.sp.ask_der().to_vec(),
            crl: Vec::new(),
        })
    }
    fn derived_key(&self, context: &[u8]) -> Result<[u8; 32], ProviderError> {
        Ok(self.sp.derived_key(&self.measurement, context))
    }
}
