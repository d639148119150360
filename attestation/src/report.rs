//! SEV-SNP ATTESTATION_REPORT parsing (SEV-SNP ABI specification, "ATTESTATION_REPORT
//! Structure", report versions 2, 3 and 5).
//!
//! Untrusted bytes enter here. Parsing is total and strict: exact length, known
//! version, signature algorithm 1, reserved fields zero. A parsed [`Report`] is *not*
//! authentic; only [`crate::verify`] turns it into a [`crate::VerifiedReport`].
//! The parsed value keeps the exact received bytes, so the signature is checked over
//! what arrived, never over a re-encoding.

use crate::error::VerifyError;
use crate::product::{Product, Tcb};

/// Size of an ATTESTATION_REPORT in bytes (0x4A0).
pub const REPORT_LEN: usize = 0x4A0;
/// End of the signed region: the signature covers bytes `[0, 0x2A0)`.
pub const SIGNED_LEN: usize = 0x2A0;
/// Length of each of R and S in the signature field (little-endian, zero-padded).
pub const SIG_COMPONENT_LEN: usize = 72;
/// Significant bytes of a P-384 scalar.
pub const P384_SCALAR_LEN: usize = 48;

// Field offsets (ABI spec, Table "ATTESTATION_REPORT Structure").
const OFF_VERSION: usize = 0x000;
const OFF_GUEST_SVN: usize = 0x004;
const OFF_POLICY: usize = 0x008;
const OFF_FAMILY_ID: usize = 0x010;
const OFF_IMAGE_ID: usize = 0x020;
const OFF_VMPL: usize = 0x030;
const OFF_SIG_ALGO: usize = 0x034;
const OFF_CURRENT_TCB: usize = 0x038;
const OFF_PLATFORM_INFO: usize = 0x040;
const OFF_FLAGS: usize = 0x048;
const OFF_REPORT_DATA: usize = 0x050;
const OFF_MEASUREMENT: usize = 0x090;
const OFF_HOST_DATA: usize = 0x0C0;
const OFF_ID_KEY_DIGEST: usize = 0x0E0;
const OFF_AUTHOR_KEY_DIGEST: usize = 0x110;
const OFF_REPORT_ID: usize = 0x140;
const OFF_REPORT_ID_MA: usize = 0x160;
const OFF_REPORTED_TCB: usize = 0x180;
const OFF_CPUID_FAM: usize = 0x188;
const OFF_CPUID_MOD: usize = 0x189;
const OFF_CPUID_STEP: usize = 0x18A;
const OFF_CHIP_ID: usize = 0x1A0;
const OFF_COMMITTED_TCB: usize = 0x1E0;
const OFF_CURRENT_BUILD: usize = 0x1E8;
const OFF_COMMITTED_BUILD: usize = 0x1EC;
const OFF_LAUNCH_TCB: usize = 0x1F0;
const OFF_LAUNCH_MIT: usize = 0x1F8;
const OFF_CURRENT_MIT: usize = 0x200;
const OFF_SIGNATURE: usize = 0x2A0;

/// Guest policy bit positions (ABI spec, "Guest Policy Structure").
pub mod policy_bits {
    /// SMT allowed.
    pub const SMT: u64 = 1 << 16;
    /// Reserved, must be one.
    pub const RESERVED_MBO: u64 = 1 << 17;
    /// Association with a migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Debugging allowed (the hypervisor can read guest memory).
    pub const DEBUG: u64 = 1 << 19;
    /// Guest may run on a single socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// CXL may be populated with guest memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// AES-256-XTS memory encryption required.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// RAPL must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Ciphertext hiding required.
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    /// Page swap disabled.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
}

/// PLATFORM_INFO bit positions (report offset 0x40; ABI spec, Table "ATTESTATION_REPORT
/// Structure", field PLATFORM_INFO; same numbering as go-sev-guest `abi.SnpPlatformInfo`).
/// Bits 63:8 are reserved.
pub mod platform_info_bits {
    /// SMT is enabled on the host.
    pub const SMT_EN: u64 = 1 << 0;
    /// Transparent SME is enabled.
    pub const TSME_EN: u64 = 1 << 1;
    /// The platform uses ECC memory (reported when firmware supports ECC reporting).
    pub const ECC_EN: u64 = 1 << 2;
    /// RAPL (power-based side channel) is disabled.
    pub const RAPL_DIS: u64 = 1 << 3;
    /// Ciphertext hiding is enabled for DRAM.
    pub const CIPHERTEXT_HIDING_EN: u64 = 1 << 4;
    /// Alias detection has completed since the last reset and found no aliasing
    /// addresses: the BadRAM mitigation (AMD-SB-3015, CVE-2024-21944).
    pub const ALIAS_CHECK_COMPLETE: u64 = 1 << 5;
    /// The IOMMU write-buffer fix is in effect (AMD-SB-3016; set by Turin firmware).
    pub const IOMMU_WRITE_SAFE: u64 = 1 << 6;
    /// SEV-TIO (trusted I/O) is enabled.
    pub const TIO_EN: u64 = 1 << 7;
    /// Every bit a published ABI revision defines; the rest are reserved.
    pub const KNOWN: u64 = 0xff;
}

/// FLAGS bit positions (report offset 0x48; ABI spec, Table "ATTESTATION_REPORT
/// Structure", field FLAGS; go-sev-guest `abi.ParseSignerInfo`).
pub mod flag_bits {
    /// AUTHOR_KEY_EN: the ID block was signed by an author key (AUTHOR_KEY_DIGEST valid).
    pub const AUTHOR_KEY_EN: u32 = 1 << 0;
    /// MASK_CHIP_KEY: the host masked CHIP_ID (reported as zeros).
    pub const MASK_CHIP_KEY: u32 = 1 << 1;
    /// SIGNING_KEY = VLEK (bits 4:2 hold 1).
    pub const SIGNING_KEY_VLEK: u32 = 1 << 2;
}

/// Which key signed a report (FLAGS.SIGNING_KEY, bits 4:2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key: per chip and TCB, certified by the ASK.
    Vcek,
    /// Versioned Loaded Endorsement Key: per cloud provider, certified by the ASVK.
    Vlek,
}

impl std::fmt::Display for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
        })
    }
}

/// A firmware version as reported (major.minor.build).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FirmwareVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Build.
    pub build: u8,
}

impl std::fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)
    }
}

/// A structurally valid, NOT yet authenticated, attestation report.
#[derive(Clone, Debug)]
pub struct Report {
    raw: Box<[u8; REPORT_LEN]>,
}

fn u32_at(b: &[u8; REPORT_LEN], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8; REPORT_LEN], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn zero(b: &[u8], range: std::ops::Range<usize>, field: &'static str) -> Result<(), VerifyError> {
    match b[range.clone()].iter().position(|&x| x != 0) {
        None => Ok(()),
        Some(i) => Err(VerifyError::ReservedNonZero { field, offset: range.start + i }),
    }
}

impl Report {
    /// Parses `bytes` strictly. Exactly [`REPORT_LEN`] bytes, no trailing data.
    pub fn parse(bytes: &[u8]) -> Result<Report, VerifyError> {
        if bytes.len() != REPORT_LEN {
            return Err(VerifyError::ReportLength { expected: REPORT_LEN, actual: bytes.len() });
        }
        let mut raw = Box::new([0u8; REPORT_LEN]);
        raw.copy_from_slice(bytes);
        let b = &*raw;
        let version = u32_at(b, OFF_VERSION);
        // Version 4 has version 3's layout (it only signals newer firmware semantics;
        // virtee/sev parses 3 and 4 alike and GCP Milan hosts emit it). 6+ is unknown
        // and rejected rather than guessed.
        if !matches!(version, 2..=5) {
            return Err(VerifyError::UnsupportedVersion { version });
        }
        let algo = u32_at(b, OFF_SIG_ALGO);
        if algo != 1 {
            return Err(VerifyError::UnsupportedSignatureAlgorithm { algorithm: algo });
        }
        let vmpl = u32_at(b, OFF_VMPL);
        if vmpl > 3 {
            return Err(VerifyError::InvalidField { field: "VMPL", reason: format!("{vmpl} > 3") });
        }
        let flags = u32_at(b, OFF_FLAGS);
        if flags >> 5 != 0 {
            return Err(VerifyError::ReservedNonZero { field: "FLAGS[31:5]", offset: OFF_FLAGS });
        }
        if (flags >> 2) & 0b111 > 1 {
            return Err(VerifyError::InvalidField {
                field: "FLAGS.SIGNING_KEY",
                reason: format!("{} is neither VCEK (0) nor VLEK (1)", (flags >> 2) & 0b111),
            });
        }
        let policy = u64_at(b, OFF_POLICY);
        if policy & policy_bits::RESERVED_MBO == 0 {
            return Err(VerifyError::InvalidField {
                field: "POLICY",
                reason: "reserved bit 17 must be one".into(),
            });
        }
        // Bits 63:26 are reserved in every published ABI revision.
        if policy >> 26 != 0 {
            return Err(VerifyError::ReservedNonZero { field: "POLICY[63:26]", offset: OFF_POLICY });
        }
        zero(b, 0x04C..0x050, "reserved after FLAGS")?;
        if version >= 3 {
            zero(b, 0x18B..0x1A0, "reserved after CPUID")?;
        } else {
            zero(b, 0x188..0x1A0, "reserved (v2 has no CPUID)")?;
        }
        zero(b, 0x1EB..0x1EC, "reserved after CURRENT version")?;
        zero(b, 0x1EF..0x1F0, "reserved after COMMITTED version")?;
        if version >= 5 {
            zero(b, 0x208..SIGNED_LEN, "reserved before SIGNATURE")?;
        } else {
            zero(b, OFF_LAUNCH_MIT..SIGNED_LEN, "reserved before SIGNATURE (v2-v4)")?;
        }
        let sig = OFF_SIGNATURE;
        zero(b, sig + P384_SCALAR_LEN..sig + SIG_COMPONENT_LEN, "SIGNATURE.R padding")?;
        zero(
            b,
            sig + SIG_COMPONENT_LEN + P384_SCALAR_LEN..sig + 2 * SIG_COMPONENT_LEN,
            "SIGNATURE.S padding",
        )?;
        zero(b, sig + 2 * SIG_COMPONENT_LEN..REPORT_LEN, "reserved after SIGNATURE")?;
        Ok(Report { raw })
    }

    /// The exact bytes received.
    pub fn as_bytes(&self) -> &[u8; REPORT_LEN] {
        &self.raw
    }
    /// The signed region `[0, 0x2A0)`.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }
    /// The signature as big-endian `r || s` (96 bytes), the fixed encoding ECDSA
    /// libraries take. The zero padding was checked at parse time.
    pub fn signature_rs_be(&self) -> [u8; 2 * P384_SCALAR_LEN] {
        let mut out = [0u8; 2 * P384_SCALAR_LEN];
        for i in 0..P384_SCALAR_LEN {
            out[i] = self.raw[OFF_SIGNATURE + P384_SCALAR_LEN - 1 - i];
            out[P384_SCALAR_LEN + i] = self.raw[OFF_SIGNATURE + SIG_COMPONENT_LEN + P384_SCALAR_LEN - 1 - i];
        }
        out
    }
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.raw[off..off + N]);
        a
    }
    /// VERSION.
    pub fn version(&self) -> u32 {
        u32_at(&self.raw, OFF_VERSION)
    }
    /// GUEST_SVN.
    pub fn guest_svn(&self) -> u32 {
        u32_at(&self.raw, OFF_GUEST_SVN)
    }
    /// POLICY (raw guest policy).
    pub fn policy(&self) -> u64 {
        u64_at(&self.raw, OFF_POLICY)
    }
    /// ABI major and minor the guest policy requires.
    pub fn policy_abi(&self) -> (u8, u8) {
        let p = self.policy();
        (((p >> 8) & 0xff) as u8, (p & 0xff) as u8)
    }
    /// FAMILY_ID.
    pub fn family_id(&self) -> [u8; 16] {
        self.arr(OFF_FAMILY_ID)
    }
    /// IMAGE_ID.
    pub fn image_id(&self) -> [u8; 16] {
        self.arr(OFF_IMAGE_ID)
    }
    /// VMPL the report was requested at.
    pub fn vmpl(&self) -> u32 {
        u32_at(&self.raw, OFF_VMPL)
    }
    /// CURRENT_TCB, raw.
    pub fn current_tcb_raw(&self) -> u64 {
        u64_at(&self.raw, OFF_CURRENT_TCB)
    }
    /// REPORTED_TCB, raw (the TCB the VCEK is derived from).
    pub fn reported_tcb_raw(&self) -> u64 {
        u64_at(&self.raw, OFF_REPORTED_TCB)
    }
    /// COMMITTED_TCB, raw.
    pub fn committed_tcb_raw(&self) -> u64 {
        u64_at(&self.raw, OFF_COMMITTED_TCB)
    }
    /// LAUNCH_TCB, raw.
    pub fn launch_tcb_raw(&self) -> u64 {
        u64_at(&self.raw, OFF_LAUNCH_TCB)
    }
    /// PLATFORM_INFO.
    pub fn platform_info(&self) -> u64 {
        u64_at(&self.raw, OFF_PLATFORM_INFO)
    }
    /// FLAGS.
    pub fn flags(&self) -> u32 {
        u32_at(&self.raw, OFF_FLAGS)
    }
    /// FLAGS.AUTHOR_KEY_EN.
    pub fn author_key_en(&self) -> bool {
        self.flags() & 1 != 0
    }
    /// FLAGS.MASK_CHIP_KEY.
    pub fn mask_chip_key(&self) -> bool {
        self.flags() & 2 != 0
    }
    /// FLAGS.SIGNING_KEY (validated at parse time to be 0 or 1).
    pub fn signing_key(&self) -> SigningKey {
        if (self.flags() >> 2) & 0b111 == 1 {
            SigningKey::Vlek
        } else {
            SigningKey::Vcek
        }
    }
    /// REPORT_DATA: the 64 bytes the guest asked to be bound.
    pub fn report_data(&self) -> [u8; 64] {
        self.arr(OFF_REPORT_DATA)
    }
    /// MEASUREMENT: the launch digest.
    pub fn measurement(&self) -> [u8; 48] {
        self.arr(OFF_MEASUREMENT)
    }
    /// HOST_DATA.
    pub fn host_data(&self) -> [u8; 32] {
        self.arr(OFF_HOST_DATA)
    }
    /// ID_KEY_DIGEST.
    pub fn id_key_digest(&self) -> [u8; 48] {
        self.arr(OFF_ID_KEY_DIGEST)
    }
    /// AUTHOR_KEY_DIGEST.
    pub fn author_key_digest(&self) -> [u8; 48] {
        self.arr(OFF_AUTHOR_KEY_DIGEST)
    }
    /// REPORT_ID.
    pub fn report_id(&self) -> [u8; 32] {
        self.arr(OFF_REPORT_ID)
    }
    /// REPORT_ID_MA.
    pub fn report_id_ma(&self) -> [u8; 32] {
        self.arr(OFF_REPORT_ID_MA)
    }
    /// CHIP_ID (all zero when MASK_CHIP_ID is set).
    pub fn chip_id(&self) -> [u8; 64] {
        self.arr(OFF_CHIP_ID)
    }
    /// CPUID family, model, stepping (v3+).
    pub fn cpuid(&self) -> Option<(u8, u8, u8)> {
        (self.version() >= 3)
            .then(|| (self.raw[OFF_CPUID_FAM], self.raw[OFF_CPUID_MOD], self.raw[OFF_CPUID_STEP]))
    }
    /// CURRENT firmware version.
    pub fn current_version(&self) -> FirmwareVersion {
        let o = OFF_CURRENT_BUILD;
        FirmwareVersion { build: self.raw[o], minor: self.raw[o + 1], major: self.raw[o + 2] }
    }
    /// COMMITTED firmware version.
    pub fn committed_version(&self) -> FirmwareVersion {
        let o = OFF_COMMITTED_BUILD;
        FirmwareVersion { build: self.raw[o], minor: self.raw[o + 1], major: self.raw[o + 2] }
    }
    /// LAUNCH_MIT_VECTOR (v5+).
    pub fn launch_mit_vector(&self) -> Option<u64> {
        (self.version() >= 5).then(|| u64_at(&self.raw, OFF_LAUNCH_MIT))
    }
    /// CURRENT_MIT_VECTOR (v5+).
    pub fn current_mit_vector(&self) -> Option<u64> {
        (self.version() >= 5).then(|| u64_at(&self.raw, OFF_CURRENT_MIT))
    }
    /// The product named by CPUID (v3+). `Err` for v3+ with an unknown family/model.
    pub fn cpuid_product(&self) -> Result<Option<Product>, VerifyError> {
        match self.cpuid() {
            None => Ok(None),
            Some((family, model, _)) => Product::from_cpuid(family, model)
                .map(Some)
                .ok_or(VerifyError::UnknownCpuid { family, model }),
        }
    }
    /// Decodes a raw TCB field of this report with `product`'s layout.
    pub fn tcb(&self, raw: u64, product: Product) -> Tcb {
        Tcb::decode(raw, product)
    }
}

/// Builds report bytes; used by the simulated secure processor so that simulated
/// reports go through exactly the same parser as genuine ones.
#[derive(Clone, Debug)]
pub struct ReportBuilder {
    raw: Box<[u8; REPORT_LEN]>,
}

impl ReportBuilder {
    /// A version-5 report body for `product` with sane defaults (policy: SMT allowed,
    /// reserved bit set, ABI 0.31; VMPL 0; VCEK signer).
    pub fn new(product: Product) -> ReportBuilder {
        let mut r = ReportBuilder { raw: Box::new([0u8; REPORT_LEN]) };
        r.put_u32(OFF_VERSION, 5);
        r.put_u64(OFF_POLICY, policy_bits::SMT | policy_bits::RESERVED_MBO | 0x1f);
        r.put_u32(OFF_SIG_ALGO, 1);
        let (fam, model, step) = match product {
            Product::Milan => (0x19, 0x01, 0x01),
            Product::Genoa => (0x19, 0x11, 0x01),
            Product::Turin => (0x1A, 0x02, 0x01),
        };
        r.raw[OFF_CPUID_FAM] = fam;
        r.raw[OFF_CPUID_MOD] = model;
        r.raw[OFF_CPUID_STEP] = step;
        r
    }
    fn put_u32(&mut self, off: usize, v: u32) {
        self.raw[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, off: usize, v: u64) {
        self.raw[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets POLICY.
    pub fn policy(mut self, v: u64) -> Self {
        self.put_u64(OFF_POLICY, v);
        self
    }
    /// Sets GUEST_SVN.
    pub fn guest_svn(mut self, v: u32) -> Self {
        self.put_u32(OFF_GUEST_SVN, v);
        self
    }
    /// Sets VMPL.
    pub fn vmpl(mut self, v: u32) -> Self {
        self.put_u32(OFF_VMPL, v);
        self
    }
    /// Sets VERSION (the builder starts at 5; 2–5 are valid).
    pub fn version(mut self, v: u32) -> Self {
        self.put_u32(OFF_VERSION, v);
        self
    }
    /// Sets FAMILY_ID.
    pub fn family_id(mut self, v: &[u8; 16]) -> Self {
        self.raw[OFF_FAMILY_ID..OFF_FAMILY_ID + 16].copy_from_slice(v);
        self
    }
    /// Sets IMAGE_ID.
    pub fn image_id(mut self, v: &[u8; 16]) -> Self {
        self.raw[OFF_IMAGE_ID..OFF_IMAGE_ID + 16].copy_from_slice(v);
        self
    }
    /// Sets FLAGS (see [`flag_bits`]).
    pub fn flags(mut self, v: u32) -> Self {
        self.put_u32(OFF_FLAGS, v);
        self
    }
    /// Sets ID_KEY_DIGEST.
    pub fn id_key_digest(mut self, v: &[u8; 48]) -> Self {
        self.raw[OFF_ID_KEY_DIGEST..OFF_ID_KEY_DIGEST + 48].copy_from_slice(v);
        self
    }
    /// Sets AUTHOR_KEY_DIGEST.
    pub fn author_key_digest(mut self, v: &[u8; 48]) -> Self {
        self.raw[OFF_AUTHOR_KEY_DIGEST..OFF_AUTHOR_KEY_DIGEST + 48].copy_from_slice(v);
        self
    }
    /// Sets REPORT_ID_MA (call after [`ReportBuilder::report_id`], which sets it to all 0xFF).
    pub fn report_id_ma(mut self, v: &[u8; 32]) -> Self {
        self.raw[OFF_REPORT_ID_MA..OFF_REPORT_ID_MA + 32].copy_from_slice(v);
        self
    }
    /// Sets CURRENT_TCB only (call after [`ReportBuilder::tcb`]).
    pub fn current_tcb(mut self, raw: u64) -> Self {
        self.put_u64(OFF_CURRENT_TCB, raw);
        self
    }
    /// Sets LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR (meaningful in version 5 only; the
    /// parser requires these bytes to be zero in older versions).
    pub fn mitigations(mut self, launch: u64, current: u64) -> Self {
        self.put_u64(OFF_LAUNCH_MIT, launch);
        self.put_u64(OFF_CURRENT_MIT, current);
        self
    }
    /// Sets all four TCB fields (current, reported, committed, launch) to `raw`.
    pub fn tcb(mut self, raw: u64) -> Self {
        for off in [OFF_CURRENT_TCB, OFF_REPORTED_TCB, OFF_COMMITTED_TCB, OFF_LAUNCH_TCB] {
            self.put_u64(off, raw);
        }
        self
    }
    /// Sets PLATFORM_INFO.
    pub fn platform_info(mut self, v: u64) -> Self {
        self.put_u64(OFF_PLATFORM_INFO, v);
        self
    }
    /// Sets REPORT_DATA.
    pub fn report_data(mut self, v: &[u8; 64]) -> Self {
        self.raw[OFF_REPORT_DATA..OFF_REPORT_DATA + 64].copy_from_slice(v);
        self
    }
    /// Sets MEASUREMENT.
    pub fn measurement(mut self, v: &[u8; 48]) -> Self {
        self.raw[OFF_MEASUREMENT..OFF_MEASUREMENT + 48].copy_from_slice(v);
        self
    }
    /// Sets HOST_DATA.
    pub fn host_data(mut self, v: &[u8; 32]) -> Self {
        self.raw[OFF_HOST_DATA..OFF_HOST_DATA + 32].copy_from_slice(v);
        self
    }
    /// Sets REPORT_ID.
    pub fn report_id(mut self, v: &[u8; 32]) -> Self {
        self.raw[OFF_REPORT_ID..OFF_REPORT_ID + 32].copy_from_slice(v);
        self.raw[OFF_REPORT_ID_MA..OFF_REPORT_ID_MA + 32].fill(0xff);
        self
    }
    /// Sets CHIP_ID.
    pub fn chip_id(mut self, v: &[u8; 64]) -> Self {
        self.raw[OFF_CHIP_ID..OFF_CHIP_ID + 64].copy_from_slice(v);
        self
    }
    /// Sets the CURRENT and COMMITTED firmware versions.
    pub fn firmware(mut self, v: FirmwareVersion) -> Self {
        for o in [OFF_CURRENT_BUILD, OFF_COMMITTED_BUILD] {
            self.raw[o] = v.build;
            self.raw[o + 1] = v.minor;
            self.raw[o + 2] = v.major;
        }
        self
    }
    /// The signed region, to be signed by the caller's key.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }
    /// Installs a big-endian `r || s` signature (96 bytes) and returns the report bytes.
    pub fn finish(mut self, rs_be: &[u8; 2 * P384_SCALAR_LEN]) -> Box<[u8; REPORT_LEN]> {
        for i in 0..P384_SCALAR_LEN {
            self.raw[OFF_SIGNATURE + i] = rs_be[P384_SCALAR_LEN - 1 - i];
            self.raw[OFF_SIGNATURE + SIG_COMPONENT_LEN + i] = rs_be[2 * P384_SCALAR_LEN - 1 - i];
        }
        self.raw
    }
}
