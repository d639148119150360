//! Attestation providers: where the enclave's reports come from.
//!
//! Trusted side (inside the guest). One trait, three implementations:
//! - `ConfigFsTsmProvider` (`crate::tsm_provider`): the AMD secure processor through the
//!   kernel's configfs-tsm report interface (Linux ≥ 6.7), preferred when present;
//! - [`SevGuestProvider`]: the AMD secure processor through `/dev/sev-guest` (the `sev`
//!   crate's SNP_GET_EXT_REPORT ioctl), with the certificate table the host installed —
//!   the fallback for older guest kernels;
//! - `SimProvider` (`crate::sim_provider`, only with the cargo feature `sim`): Vouch's
//!   simulated secure processor for machines without SEV-SNP. Its measurement is derived
//!   from the enclave binary; its root is not AMD's. Production builds (the guest image)
//!   leave the feature off, so they cannot start in sim mode at all.
//!
//! Providers are blocking: the receipts task calls them from a blocking thread and is
//! their only caller, so requests to the secure processor are serialised.

#[cfg(target_os = "linux")]
use std::time::Duration;
use vouch_attestation::receipt::{Platform, ReportBundle};

/// A report and the certificates a verifier needs.
pub type ReportWithCerts = ReportBundle;

/// Why a report could not be obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// `/dev/sev-guest` is missing or unusable.
    #[error("SEV-SNP guest device unavailable: {0}")]
    Device(String),
    /// The secure processor refused or failed the request.
    #[error("secure processor request failed: {0}")]
    Firmware(String),
    /// The simulator's key directory could not be used.
    #[error("simulated secure processor: {0}")]
    Sim(String),
}

/// Something that produces signed attestation reports over 64 bytes of REPORT_DATA.
pub trait AttestationProvider: Send + Sync {
    /// "configfs-tsm", "sev-guest" or "sim".
    fn kind(&self) -> &'static str;
    /// The platform tag its evidence carries (verifiers pick their roots by it).
    fn platform(&self) -> Platform;
    /// A report binding `report_data`, with certificates.
    fn report(&self, report_data: &[u8; 64]) -> Result<ReportWithCerts, ProviderError>;
    /// A 32-byte secret for `context` that only this code identity on this chip can
    /// derive, the same after every restart: on SEV-SNP the MSG_KEY_REQ derived key
    /// (VCEK-rooted, mixing in the launch measurement and guest policy), hashed with the
    /// context. The answer log's signing key comes from it.
    fn derived_key(&self, context: &[u8]) -> Result<[u8; 32], ProviderError> {
        let _ = context;
        Err(ProviderError::Device(format!("the {} provider cannot derive keys", self.kind())))
    }
}

/// Hashes a secure-processor derived key with the purpose it is used for.
pub fn key_for_context(derived: &[u8; 32], context: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"vouch/derived-key/v1\0");
    h.update(derived);
    h.update(context);
    h.finalize().into()
}

/// The SEV-SNP MSG_KEY_REQ derived key through `/dev/sev-guest`: VCEK root, launch
/// measurement and guest policy mixed in, at `vmpl`.
#[cfg(target_os = "linux")]
pub fn sev_derived_key(
    fw: &mut sev::firmware::guest::Firmware,
    vmpl: u32,
    context: &[u8],
) -> Result<[u8; 32], ProviderError> {
    use sev::firmware::guest::{DerivedKey, GuestFieldSelect};
    let mut fields = GuestFieldSelect::default();
    fields.set_measurement(true);
    fields.set_guest_policy(true);
    let key = fw
        .get_derived_key(Some(1), DerivedKey::new(false, fields, vmpl, 0, 0, None))
        .map_err(|e| ProviderError::Firmware(format!("MSG_KEY_REQ: {e}")))?;
    Ok(key_for_context(&key, context))
}

#[cfg(feature = "sim")]
pub use crate::sim_provider::{
    binary_measurement, SimProvider, SIM_ARK_FILE, SIM_KEYS_FILE, SIM_POLICY_FILE,
};

/// The AMD secure processor via `/dev/sev-guest`.
#[cfg(target_os = "linux")]
pub struct SevGuestProvider {
    fw: std::sync::Mutex<sev::firmware::guest::Firmware>,
    vmpl: u32,
}

#[cfg(target_os = "linux")]
impl std::fmt::Debug for SevGuestProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SevGuestProvider").field("vmpl", &self.vmpl).finish_non_exhaustive()
    }
}

/// Attempts before giving up on a busy secure processor.
pub const SEV_RETRIES: u32 = 8;

/// Whether an ioctl failure is transient (another guest process raced us, or a signal).
pub fn is_transient(os_error: Option<i32>) -> bool {
    const EINTR: i32 = 4;
    const EAGAIN: i32 = 11;
    const EBUSY: i32 = 16;
    matches!(os_error, Some(EINTR | EAGAIN | EBUSY))
}

/// Splits the host-installed certificate table into leaf, chain (PEM) and CRL. A VLEK,
/// when present, is preferred: if the host provisioned one, the firmware signs with it.
pub fn split_cert_table(entries: &[(String, Vec<u8>)]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let find = |kind: &str| entries.iter().find(|(k, _)| k == kind).map(|(_, d)| d.clone());
    let leaf = find("VLEK").or_else(|| find("VCEK"))?;
    let mut chain = Vec::new();
    for kind in ["ASK", "ARK"] {
        if let Some(der) = find(kind) {
            if let Ok(pem) = pem_encode(&der) {
                chain.extend_from_slice(pem.as_bytes());
            }
        }
    }
    Some((leaf, chain, find("CRL").unwrap_or_default()))
}

fn pem_encode(der: &[u8]) -> Result<String, String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).map_err(|e| e.to_string())?);
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    Ok(out)
}

#[cfg(target_os = "linux")]
impl SevGuestProvider {
    /// Opens `/dev/sev-guest`; reports are requested at `vmpl` (0 for the enclave).
    pub fn open(vmpl: u32) -> Result<SevGuestProvider, ProviderError> {
        let fw = sev::firmware::guest::Firmware::open()
            .map_err(|e| ProviderError::Device(format!("/dev/sev-guest: {e}")))?;
        Ok(SevGuestProvider { fw: std::sync::Mutex::new(fw), vmpl })
    }
}

#[cfg(target_os = "linux")]
impl AttestationProvider for SevGuestProvider {
    fn kind(&self) -> &'static str {
        "sev-guest"
    }
    fn platform(&self) -> Platform {
        Platform::Snp
    }
    fn report(&self, report_data: &[u8; 64]) -> Result<ReportWithCerts, ProviderError> {
        use sev::error::UserApiError;
        let mut fw = self.fw.lock().map_err(|_| ProviderError::Device("device lock poisoned".into()))?;
        let mut delay = Duration::from_millis(2);
        let mut attempt = 0;
        let (report, certs) = loop {
            attempt += 1;
            match fw.get_ext_report(None, Some(*report_data), Some(self.vmpl)) {
                Ok(v) => break v,
                Err(UserApiError::IOError(e)) if is_transient(e.raw_os_error()) && attempt < SEV_RETRIES => {
                    tracing::debug!(attempt, error = %e, "secure processor busy; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(ProviderError::Firmware(e.to_string())),
            }
        };
        let entries: Vec<(String, Vec<u8>)> = certs
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| {
                use sev::firmware::host::CertType;
                let kind = match e.cert_type {
                    CertType::ARK => "ARK",
                    CertType::ASK => "ASK",
                    CertType::VCEK => "VCEK",
                    CertType::VLEK => "VLEK",
                    CertType::CRL => "CRL",
                    _ => return None,
                };
                Some((kind.to_string(), e.data))
            })
            .collect();
        // Without a host-installed table the verifier fetches the VCEK from AMD's KDS.
        let (leaf_cert, chain, crl) = split_cert_table(&entries).unwrap_or_default();
        Ok(ReportBundle { report, leaf_cert, chain, crl })
    }
    fn derived_key(&self, context: &[u8]) -> Result<[u8; 32], ProviderError> {
        let mut fw = self.fw.lock().map_err(|_| ProviderError::Device("device lock poisoned".into()))?;
        sev_derived_key(&mut fw, self.vmpl, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        assert!(is_transient(Some(16)));
        assert!(is_transient(Some(4)));
        assert!(!is_transient(Some(2)));
        assert!(!is_transient(None));
    }

    #[test]
    fn cert_table_prefers_vlek_and_orders_chain() {
        let t = vec![
            ("ARK".to_string(), vec![1]),
            ("VCEK".to_string(), vec![2]),
            ("ASK".to_string(), vec![3]),
            ("VLEK".to_string(), vec![4]),
            ("CRL".to_string(), vec![5]),
        ];
        let (leaf, chain, crl) = split_cert_table(&t).unwrap();
        assert_eq!(leaf, vec![4]);
        assert_eq!(crl, vec![5]);
        let s = String::from_utf8(chain).unwrap();
        assert_eq!(s.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(split_cert_table(&[("ARK".into(), vec![1])]).is_none());
    }

    #[test]
    #[ignore = "needs an SEV-SNP guest with /dev/sev-guest"]
    fn sev_guest_report_on_hardware() {
        let p = SevGuestProvider::open(0).unwrap();
        let r = p.report(&[1; 64]).unwrap();
        assert_eq!(r.report.len(), 1184);
    }

    #[test]
    fn sev_guest_missing_device_is_a_clear_error() {
        if std::path::Path::new("/dev/sev-guest").exists() {
            return;
        }
        let e = SevGuestProvider::open(0).unwrap_err();
        assert!(e.to_string().contains("/dev/sev-guest"), "{e}");
    }
}
