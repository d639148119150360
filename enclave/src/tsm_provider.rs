//! The configfs-tsm attestation provider (trusted side, inside the guest): SEV-SNP reports
//! through the kernel's generic TSM report interface (Linux ≥ 6.7), which go-sev-guest
//! prefers over the `/dev/sev-guest` ioctl.
//!
//! ```text
//!  mkdir <root>/vouch-<pid>-<n>      one entry per request (the kernel fills in its files)
//!  read  provider                    must be "sev_guest"
//!  read  generation                  g0
//!  write privlevel                   the VMPL asked for (checked against privlevel_floor)
//!  write inblob                      REPORT_DATA (64 bytes)
//!  read  outblob, auxblob            the signed report; the host's certificate table
//!  read  generation                  g0 + writes, or another writer raced us: retry
//!  rmdir the entry
//! ```
//!
//! The report read back is checked before it is used: its REPORT_DATA must be the bytes
//! written and its VMPL the level asked for (a stale or foreign report is refused, not
//! signed over). The auxblob is the GHCB certificate table (GUID, offset, length entries,
//! ended by a zero GUID), parsed here with every offset bounded: the `sev` crate's own
//! parser follows raw pointers without bounds and would read past a short table. A
//! missing or empty auxblob means the host installed no certificates (the verifier then
//! fetches the VCEK from AMD's KDS); a malformed one is an error.
//!
//! File access goes through [`TsmFs`], so the logic is tested against a fake kernel that
//! races generations, truncates auxblobs and answers at the wrong VMPL.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use vouch_attestation::receipt::{Platform, ReportBundle};

use crate::provider::{split_cert_table, AttestationProvider, ProviderError};

/// Where the kernel exposes TSM reports.
pub const DEFAULT_TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";

/// Attempts when other writers keep changing the entry's generation.
pub const GENERATION_RETRIES: u32 = 8;

/// Size of an SEV-SNP attestation report.
const REPORT_LEN: usize = 1184;
/// Offsets of the report fields the provider checks.
const VMPL_OFFSET: usize = 0x30;
const REPORT_DATA_OFFSET: usize = 0x50;

/// One certificate-table entry: GUID (16 bytes, in the order the GUID string spells
/// them), offset and length (u32, little-endian) of the certificate in the table.
const TABLE_ENTRY_LEN: usize = 24;

/// A report (outblob) and the certificate table (auxblob) read from one entry.
type Blobs = (Vec<u8>, Vec<u8>);

/// The certificate kinds a table entry may name, by GUID.
const CERT_GUIDS: [(&str, &str); 5] = [
    ("ARK", "c0b406a4-a803-4952-9743-3fb6014cd0ae"),
    ("ASK", "4ab7b379-bbac-4fe4-a02f-05aef327c782"),
    ("VCEK", "63da758d-e664-4564-adc5-f4b93be8accd"),
    ("VLEK", "a8074bc2-a25a-483e-aae6-39c045a0b8a1"),
    ("CRL", "92f81bc3-5811-4d3d-97ff-d19f88dc67ea"),
];

/// The file operations the provider needs, relative to the report directory.
pub trait TsmFs: Send + Sync {
    /// Creates entry `name` (the kernel populates its attribute files).
    fn create(&self, name: &str) -> std::io::Result<()>;
    /// Reads attribute `file` of entry `name`; `Ok(None)` when it does not exist.
    fn read(&self, name: &str, file: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Writes attribute `file` of entry `name`.
    fn write(&self, name: &str, file: &str, data: &[u8]) -> std::io::Result<()>;
    /// Removes entry `name`.
    fn remove(&self, name: &str) -> std::io::Result<()>;
}

/// The real configfs tree under a root directory.
#[derive(Debug, Clone)]
pub struct DirFs {
    root: PathBuf,
}

impl DirFs {
    /// The tree at `root` (normally [`DEFAULT_TSM_REPORT_DIR`]).
    pub fn new(root: impl Into<PathBuf>) -> DirFs {
        DirFs { root: root.into() }
    }
}

impl TsmFs for DirFs {
    fn create(&self, name: &str) -> std::io::Result<()> {
        std::fs::create_dir(self.root.join(name))
    }
    fn read(&self, name: &str, file: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.root.join(name).join(file)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn write(&self, name: &str, file: &str, data: &[u8]) -> std::io::Result<()> {
        std::fs::write(self.root.join(name).join(file), data)
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        std::fs::remove_dir(self.root.join(name))
    }
}

/// SEV-SNP reports through configfs-tsm.
pub struct ConfigFsTsmProvider {
    fs: Box<dyn TsmFs>,
    vmpl: u32,
    next: AtomicU64,
    /// Serialises requests: one entry at a time from this process.
    lock: Mutex<()>,
}

impl std::fmt::Debug for ConfigFsTsmProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFsTsmProvider").field("vmpl", &self.vmpl).finish_non_exhaustive()
    }
}

fn io(what: &str, e: std::io::Error) -> ProviderError {
    ProviderError::Device(format!("configfs-tsm {what}: {e}"))
}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).trim().to_owned())
}

impl ConfigFsTsmProvider {
    /// Uses the tree at `root` if it is there and its provider is `sev_guest` (checked
    /// with a throw-away entry); reports are requested at `vmpl`.
    pub fn open(root: &Path, vmpl: u32) -> Result<ConfigFsTsmProvider, ProviderError> {
        if !root.is_dir() {
            return Err(ProviderError::Device(format!(
                "{} is not a directory (configfs-tsm absent)",
                root.display()
            )));
        }
        Self::with_fs(Box::new(DirFs::new(root)), vmpl)
    }

    /// Uses `fs` as the report directory (tests pass a fake kernel).
    pub fn with_fs(fs: Box<dyn TsmFs>, vmpl: u32) -> Result<ConfigFsTsmProvider, ProviderError> {
        let p = ConfigFsTsmProvider { fs, vmpl, next: AtomicU64::new(0), lock: Mutex::new(()) };
        let name = p.entry_name();
        p.fs.create(&name).map_err(|e| io("cannot create a report entry", e))?;
        let checked = p.check_entry(&name);
        let _ = p.fs.remove(&name);
        checked.map(|()| p)
    }

    fn entry_name(&self) -> String {
        format!("vouch-{}-{}", std::process::id(), self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The entry's provider is `sev_guest` and it allows our VMPL.
    fn check_entry(&self, name: &str) -> Result<(), ProviderError> {
        let provider = text(self.fs.read(name, "provider").map_err(|e| io("provider", e))?);
        if provider.as_deref() != Some("sev_guest") {
            return Err(ProviderError::Device(format!(
                "configfs-tsm provider is {}, not sev_guest",
                provider.map_or("missing".to_owned(), |p| format!("{p:?}"))
            )));
        }
        if let Some(floor) =
            text(self.fs.read(name, "privlevel_floor").map_err(|e| io("privlevel_floor", e))?)
        {
            let floor: u32 = floor
                .parse()
                .map_err(|_| ProviderError::Device(format!("privlevel_floor {floor:?} is not a number")))?;
            if self.vmpl < floor {
                return Err(ProviderError::Device(format!(
                    "VMPL {} requested, but this guest's privlevel_floor is {floor}",
                    self.vmpl
                )));
            }
        }
        Ok(())
    }

    fn generation(&self, name: &str) -> Result<u64, ProviderError> {
        let g = text(self.fs.read(name, "generation").map_err(|e| io("generation", e))?)
            .ok_or_else(|| ProviderError::Device("configfs-tsm entry has no generation".into()))?;
        g.parse().map_err(|_| ProviderError::Device(format!("configfs-tsm generation {g:?} is not a number")))
    }

    /// One attempt on entry `name`: `Ok(None)` when another writer changed the entry.
    fn attempt(&self, name: &str, report_data: &[u8; 64]) -> Result<Option<Blobs>, ProviderError> {
        let before = self.generation(name)?;
        self.fs.write(name, "privlevel", self.vmpl.to_string().as_bytes()).map_err(|e| io("privlevel", e))?;
        self.fs.write(name, "inblob", report_data).map_err(|e| io("inblob", e))?;
        let report = self
            .fs
            .read(name, "outblob")
            .map_err(|e| ProviderError::Firmware(format!("configfs-tsm outblob: {e}")))?
            .ok_or_else(|| ProviderError::Firmware("configfs-tsm entry has no outblob".into()))?;
        let aux = self.fs.read(name, "auxblob").map_err(|e| io("auxblob", e))?.unwrap_or_default();
        if self.generation(name)? != before + 2 {
            return Ok(None);
        }
        Ok(Some((report, aux)))
    }
}

/// Checks that `report` is an SNP report over `report_data` at `vmpl`.
fn check_report(report: &[u8], report_data: &[u8; 64], vmpl: u32) -> Result<(), ProviderError> {
    if report.len() != REPORT_LEN {
        return Err(ProviderError::Firmware(format!(
            "configfs-tsm outblob is {} bytes, not an SEV-SNP report ({REPORT_LEN})",
            report.len()
        )));
    }
    let got = u32::from_le_bytes([
        report[VMPL_OFFSET],
        report[VMPL_OFFSET + 1],
        report[VMPL_OFFSET + 2],
        report[VMPL_OFFSET + 3],
    ]);
    if got != vmpl {
        return Err(ProviderError::Firmware(format!(
            "the report is at VMPL {got}, VMPL {vmpl} was requested"
        )));
    }
    if report[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64] != report_data[..] {
        return Err(ProviderError::Firmware(
            "the report's REPORT_DATA is not what was written (a stale or foreign report)".into(),
        ));
    }
    Ok(())
}

fn guid_bytes(guid: &str) -> [u8; 16] {
    let hex: String = guid.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

/// Parses a GHCB certificate table into (kind, DER) entries. Unknown GUIDs are skipped;
/// an empty table is none; a table without its terminating zero entry, or an entry
/// pointing outside the table, is an error.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ProviderError> {
    let malformed =
        |why: String| ProviderError::Firmware(format!("malformed certificate table (auxblob): {why}"));
    let mut entries = Vec::new();
    if table.is_empty() {
        return Ok(entries);
    }
    for i in 0.. {
        let at = i * TABLE_ENTRY_LEN;
        let Some(entry) = table.get(at..at + TABLE_ENTRY_LEN) else {
            return Err(malformed(format!(
                "{} bytes end inside entry {i}, before the terminating entry",
                table.len()
            )));
        };
        let guid = &entry[..16];
        if guid.iter().all(|b| *b == 0) {
            break;
        }
        let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) as usize;
        let length = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        let data = offset.checked_add(length).and_then(|end| table.get(offset..end)).ok_or_else(|| {
            malformed(format!("entry {i} points at {offset}+{length}, past the {} bytes", table.len()))
        })?;
        if let Some((kind, _)) = CERT_GUIDS.iter().find(|(_, g)| guid_bytes(g) == guid) {
            entries.push(((*kind).to_owned(), data.to_vec()));
        }
    }
    Ok(entries)
}

/// Builds a certificate table from (kind, DER) entries (the inverse of
/// [`parse_cert_table`], for tests and fakes).
pub fn build_cert_table(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let header = (entries.len() + 1) * TABLE_ENTRY_LEN;
    let mut table = Vec::new();
    let mut data = Vec::new();
    for (kind, der) in entries {
        let guid = CERT_GUIDS.iter().find(|(k, _)| k == kind).map_or([0xFF; 16], |(_, g)| guid_bytes(g));
        table.extend_from_slice(&guid);
        table.extend_from_slice(&((header + data.len()) as u32).to_le_bytes());
        table.extend_from_slice(&(der.len() as u32).to_le_bytes());
        data.extend_from_slice(der);
    }
    table.extend_from_slice(&[0u8; TABLE_ENTRY_LEN]);
    table.extend_from_slice(&data);
    table
}

impl AttestationProvider for ConfigFsTsmProvider {
    fn kind(&self) -> &'static str {
        "configfs-tsm"
    }
    fn platform(&self) -> Platform {
        Platform::Snp
    }
    /// configfs-tsm has no key interface: the derived key comes from `/dev/sev-guest`.
    #[cfg(target_os = "linux")]
    fn derived_key(&self, context: &[u8]) -> Result<[u8; 32], ProviderError> {
        let mut fw = sev::firmware::guest::Firmware::open()
            .map_err(|e| ProviderError::Device(format!("/dev/sev-guest (for the derived key): {e}")))?;
        crate::provider::sev_derived_key(&mut fw, self.vmpl, context)
    }
    fn report(&self, report_data: &[u8; 64]) -> Result<ReportBundle, ProviderError> {
        let _one_at_a_time =
            self.lock.lock().map_err(|_| ProviderError::Device("configfs-tsm lock poisoned".into()))?;
        let name = self.entry_name();
        self.fs.create(&name).map_err(|e| io("cannot create a report entry", e))?;
        let outcome = (|| {
            self.check_entry(&name)?;
            for attempt in 1..=GENERATION_RETRIES {
                if let Some((report, aux)) = self.attempt(&name, report_data)? {
                    check_report(&report, report_data, self.vmpl)?;
                    let entries = parse_cert_table(&aux)?;
                    let (leaf_cert, chain, crl) = split_cert_table(&entries).unwrap_or_default();
                    return Ok(ReportBundle { report, leaf_cert, chain, crl });
                }
                tracing::debug!(attempt, "configfs-tsm entry changed by another writer; retrying");
            }
            Err(ProviderError::Firmware(format!(
                "configfs-tsm: another writer changed the report entry in each of {GENERATION_RETRIES} attempts"
            )))
        })();
        if let Err(e) = self.fs.remove(&name) {
            tracing::warn!(error = %e, "cannot remove the configfs-tsm entry");
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A fake kernel: entries are maps of attribute files; writes bump the generation;
    /// reading outblob produces a report over the last inblob at the last privlevel.
    #[derive(Default)]
    struct FakeKernel {
        entries: Mutex<HashMap<String, HashMap<String, Vec<u8>>>>,
        provider: &'static str,
        floor: u32,
        /// Another writer bumps the generation during this many outblob reads.
        races: AtomicUsize,
        /// The auxblob every entry returns (`None`: the file is absent).
        auxblob: Option<Vec<u8>>,
        /// The report's VMPL is this instead of the requested level.
        wrong_vmpl: Option<u32>,
    }

    impl FakeKernel {
        fn new() -> FakeKernel {
            FakeKernel { provider: "sev_guest", ..FakeKernel::default() }
        }
    }

    fn bump(files: &mut HashMap<String, Vec<u8>>) {
        let g: u64 = String::from_utf8_lossy(&files["generation"]).trim().parse().unwrap();
        files.insert("generation".into(), format!("{}\n", g + 1).into_bytes());
    }

    impl TsmFs for FakeKernel {
        fn create(&self, name: &str) -> std::io::Result<()> {
            let mut files = HashMap::new();
            files.insert("provider".to_owned(), format!("{}\n", self.provider).into_bytes());
            files.insert("privlevel_floor".to_owned(), format!("{}\n", self.floor).into_bytes());
            files.insert("generation".to_owned(), b"0\n".to_vec());
            if let Some(aux) = &self.auxblob {
                files.insert("auxblob".to_owned(), aux.clone());
            }
            self.entries.lock().unwrap().insert(name.to_owned(), files);
            Ok(())
        }
        fn read(&self, name: &str, file: &str) -> std::io::Result<Option<Vec<u8>>> {
            let mut entries = self.entries.lock().unwrap();
            let files = entries.get_mut(name).ok_or(std::io::ErrorKind::NotFound)?;
            if file == "outblob" {
                let mut report = vec![0u8; REPORT_LEN];
                let level: u32 = String::from_utf8_lossy(&files["privlevel"]).parse().unwrap();
                let vmpl = self.wrong_vmpl.unwrap_or(level);
                report[VMPL_OFFSET..VMPL_OFFSET + 4].copy_from_slice(&vmpl.to_le_bytes());
                report[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64].copy_from_slice(&files["inblob"]);
                if self.races.load(Ordering::SeqCst) > 0 {
                    self.races.fetch_sub(1, Ordering::SeqCst);
                    bump(files);
                }
                return Ok(Some(report));
            }
            Ok(files.get(file).cloned())
        }
        fn write(&self, name: &str, file: &str, data: &[u8]) -> std::io::Result<()> {
            let mut entries = self.entries.lock().unwrap();
            let files = entries.get_mut(name).ok_or(std::io::ErrorKind::NotFound)?;
            files.insert(file.to_owned(), data.to_vec());
            bump(files);
            Ok(())
        }
        fn remove(&self, name: &str) -> std::io::Result<()> {
            self.entries.lock().unwrap().remove(name).map(|_| ()).ok_or(std::io::ErrorKind::NotFound.into())
        }
    }

    fn provider(kernel: FakeKernel, vmpl: u32) -> Result<ConfigFsTsmProvider, ProviderError> {
        ConfigFsTsmProvider::with_fs(Box::new(kernel), vmpl)
    }

    #[test]
    fn a_report_with_the_hosts_certificates() {
        let mut kernel = FakeKernel::new();
        kernel.auxblob = Some(build_cert_table(&[
            ("VCEK", b"vcek-der"),
            ("ASK", b"ask"),
            ("ARK", b"ark"),
            ("CRL", b"crl"),
        ]));
        let p = provider(kernel, 0).unwrap();
        let bundle = p.report(&[7; 64]).unwrap();
        assert_eq!(bundle.report[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64], [7; 64]);
        assert_eq!(bundle.leaf_cert, b"vcek-der");
        assert_eq!(bundle.crl, b"crl");
        assert_eq!(String::from_utf8(bundle.chain).unwrap().matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(p.kind(), "configfs-tsm");
    }

    #[test]
    fn generation_races_are_retried_then_refused() {
        let kernel = FakeKernel::new();
        kernel.races.store(3, Ordering::SeqCst);
        let p = provider(kernel, 0).unwrap();
        assert_eq!(
            p.report(&[1; 64]).unwrap().report[REPORT_DATA_OFFSET],
            1,
            "three races, then a clean read"
        );

        let kernel = FakeKernel::new();
        kernel.races.store(usize::MAX, Ordering::SeqCst);
        let err = provider(kernel, 0).unwrap().report(&[1; 64]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "secure processor request failed: configfs-tsm: another writer changed the report entry in each of \
                 {GENERATION_RETRIES} attempts"
            )
        );
    }

    #[test]
    fn a_missing_auxblob_means_no_certificates_and_a_short_one_is_refused() {
        let bundle = provider(FakeKernel::new(), 0).unwrap().report(&[2; 64]).unwrap();
        assert!(bundle.leaf_cert.is_empty() && bundle.chain.is_empty());

        let table = build_cert_table(&[("VCEK", b"vcek-der")]);
        for cut in [table.len() - 1, 30, 10] {
            let mut kernel = FakeKernel::new();
            kernel.auxblob = Some(table[..cut].to_vec());
            let err = provider(kernel, 0).unwrap().report(&[2; 64]).unwrap_err().to_string();
            assert!(err.contains("malformed certificate table (auxblob)"), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn a_report_at_another_vmpl_or_below_the_floor_is_refused() {
        let mut kernel = FakeKernel::new();
        kernel.wrong_vmpl = Some(2);
        let err = provider(kernel, 1).unwrap().report(&[3; 64]).unwrap_err().to_string();
        assert_eq!(err, "secure processor request failed: the report is at VMPL 2, VMPL 1 was requested");

        let mut kernel = FakeKernel::new();
        kernel.floor = 2;
        let err = provider(kernel, 0).unwrap_err().to_string();
        assert_eq!(
            err,
            "SEV-SNP guest device unavailable: VMPL 0 requested, but this guest's privlevel_floor is 2"
        );
    }

    #[test]
    fn a_provider_that_is_not_sev_guest_is_refused() {
        let mut kernel = FakeKernel::new();
        kernel.provider = "tdx_guest";
        let err = provider(kernel, 0).unwrap_err().to_string();
        assert_eq!(
            err,
            "SEV-SNP guest device unavailable: configfs-tsm provider is \"tdx_guest\", not sev_guest"
        );
    }

    #[test]
    fn an_absent_tree_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ConfigFsTsmProvider::open(&dir.path().join("tsm/report"), 0).unwrap_err().to_string();
        assert!(err.contains("is not a directory (configfs-tsm absent)"), "{err}");
        // A plain directory is not configfs: its new entries have no provider file.
        let err = ConfigFsTsmProvider::open(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("configfs-tsm provider is missing, not sev_guest"), "{err}");
    }

    #[test]
    fn entries_are_removed_after_each_request() {
        let kernel = std::sync::Arc::new(FakeKernel::new());
        struct Shared(std::sync::Arc<FakeKernel>);
        impl TsmFs for Shared {
            fn create(&self, n: &str) -> std::io::Result<()> {
                self.0.create(n)
            }
            fn read(&self, n: &str, f: &str) -> std::io::Result<Option<Vec<u8>>> {
                self.0.read(n, f)
            }
            fn write(&self, n: &str, f: &str, d: &[u8]) -> std::io::Result<()> {
                self.0.write(n, f, d)
            }
            fn remove(&self, n: &str) -> std::io::Result<()> {
                self.0.remove(n)
            }
        }
        let p = ConfigFsTsmProvider::with_fs(Box::new(Shared(kernel.clone())), 0).unwrap();
        p.report(&[4; 64]).unwrap();
        let _ = p.report(&[5; 64]);
        assert!(kernel.entries.lock().unwrap().is_empty());
    }
}
