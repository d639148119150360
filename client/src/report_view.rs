//! `vouch verify-report`: check a raw SEV-SNP report and show it to a person.
//!
//! CLIENT side, offline. Inputs are files (report, VCEK/VLEK, optional chain, CRL,
//! policy); trust comes only from the compiled-in AMD roots (or a simulated root the
//! caller names explicitly). The decoded view is built from a `VerifiedReport`, so
//! nothing is printed as a fact unless its signature verified.

use serde::Serialize;
use vouch_attestation::policy::warnings;
use vouch_attestation::report::policy_bits;
use vouch_attestation::{Policy, RootKind, Tcb, VerifiedReport};

/// Which policy `verify-report` applied.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PolicyApplied {
    /// None: `--authenticity-only`.
    None,
    /// The strict built-in policy (no `--policy`).
    BuiltIn,
    /// The policy file at this path.
    File(String),
}

/// Guest policy bits, decoded.
#[derive(Clone, Debug, Serialize)]
pub struct GuestPolicyView {
    /// Raw POLICY.
    pub raw: String,
    /// Minimum ABI major.
    pub abi_major: u8,
    /// Minimum ABI minor.
    pub abi_minor: u8,
    /// SMT allowed.
    pub smt: bool,
    /// Migration agent allowed.
    pub migrate_ma: bool,
    /// Debugging allowed.
    pub debug: bool,
    /// Single socket only.
    pub single_socket: bool,
    /// CXL allowed.
    pub cxl_allow: bool,
    /// AES-256-XTS required.
    pub mem_aes_256_xts: bool,
    /// RAPL disabled.
    pub rapl_dis: bool,
    /// Ciphertext hiding required.
    pub ciphertext_hiding: bool,
    /// Page swap disabled.
    pub page_swap_disable: bool,
}

/// The four TCB fields.
#[derive(Clone, Debug, Serialize)]
pub struct TcbView {
    /// REPORTED_TCB (what the VCEK is derived from).
    pub reported: Tcb,
    /// CURRENT_TCB.
    pub current: Tcb,
    /// COMMITTED_TCB.
    pub committed: Tcb,
    /// LAUNCH_TCB.
    pub launch: Tcb,
}

/// CRL status.
#[derive(Clone, Debug, Serialize)]
pub struct CrlView {
    /// Whether a CRL was supplied and verified.
    pub checked: bool,
    /// thisUpdate (Unix seconds).
    pub this_update: Option<u64>,
    /// nextUpdate (Unix seconds).
    pub next_update: Option<u64>,
    /// Number of revoked serials listed.
    pub revoked_entries: Option<usize>,
}

/// A verified report, decoded for display.
#[derive(Clone, Debug, Serialize)]
pub struct ReportView {
    /// Always true (failures are errors).
    pub verified: bool,
    /// Whether the root is Vouch's simulated one.
    pub simulated: bool,
    /// "AMD" or "SIMULATED".
    pub root: &'static str,
    /// Product.
    pub product: String,
    /// Report VERSION.
    pub version: u32,
    /// VCEK or VLEK.
    pub signer: String,
    /// ARK subject.
    pub ark: String,
    /// ASK/ASVK subject.
    pub intermediate: String,
    /// TCBs.
    pub tcb: TcbView,
    /// Firmware version, current.
    pub firmware_current: String,
    /// Firmware version, committed.
    pub firmware_committed: String,
    /// Guest policy.
    pub guest_policy: GuestPolicyView,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// VMPL.
    pub vmpl: u32,
    /// MEASUREMENT (hex).
    pub measurement: String,
    /// REPORT_DATA (hex).
    pub report_data: String,
    /// HOST_DATA (hex).
    pub host_data: String,
    /// ID_KEY_DIGEST (hex).
    pub id_key_digest: String,
    /// AUTHOR_KEY_DIGEST (hex).
    pub author_key_digest: String,
    /// FAMILY_ID (hex).
    pub family_id: String,
    /// IMAGE_ID (hex).
    pub image_id: String,
    /// REPORT_ID (hex).
    pub report_id: String,
    /// REPORT_ID_MA (hex).
    pub report_id_ma: String,
    /// CHIP_ID (hex).
    pub chip_id: String,
    /// PLATFORM_INFO.
    pub platform_info: String,
    /// FLAGS.AUTHOR_KEY_EN.
    pub author_key_en: bool,
    /// FLAGS.MASK_CHIP_KEY.
    pub mask_chip_key: bool,
    /// CPUID family/model/stepping (v3+), hex.
    pub cpuid: Option<String>,
    /// LAUNCH_MIT_VECTOR (v5+).
    pub launch_mit_vector: Option<String>,
    /// CURRENT_MIT_VECTOR (v5+).
    pub current_mit_vector: Option<String>,
    /// CRL status.
    pub crl: CrlView,
    /// Which policy was applied (and passed): none, the built-in one, or a file.
    pub policy: PolicyApplied,
    /// False when a policy was applied that pins no code identity (`--allow-any-code`).
    /// True with no policy at all: nothing was judged, which `policy` says.
    pub code_identity_pinned: bool,
    /// What the output must say although the report passed (code identity not
    /// pinned, Milan, no TCB floor, CRL not checked...). Empty with no policy.
    pub warnings: Vec<String>,
}

impl ReportView {
    /// Decodes a verified report.
    pub fn new(v: &VerifiedReport, policy: Option<&Policy>, applied: PolicyApplied) -> ReportView {
        let r = v.report();
        let p = r.policy();
        let (abi_major, abi_minor) = r.policy_abi();
        let bit = |b: u64| p & b != 0;
        let simulated = v.chain().root() == RootKind::Simulated;
        let crl = v.chain().crl();
        ReportView {
            verified: true,
            simulated,
            root: if simulated { "SIMULATED" } else { "AMD" },
            product: v.product().to_string(),
            version: r.version(),
            signer: v.chain().signer().to_string(),
            ark: v.chain().ark_subject().to_owned(),
            intermediate: v.chain().intermediate_subject().to_owned(),
            tcb: TcbView {
                reported: v.reported_tcb(),
                current: v.current_tcb(),
                committed: v.committed_tcb(),
                launch: v.launch_tcb(),
            },
            firmware_current: r.current_version().to_string(),
            firmware_committed: r.committed_version().to_string(),
            guest_policy: GuestPolicyView {
                raw: format!("{p:#018x}"),
                abi_major,
                abi_minor,
                smt: bit(policy_bits::SMT),
                migrate_ma: bit(policy_bits::MIGRATE_MA),
                debug: bit(policy_bits::DEBUG),
                single_socket: bit(policy_bits::SINGLE_SOCKET),
                cxl_allow: bit(policy_bits::CXL_ALLOW),
                mem_aes_256_xts: bit(policy_bits::MEM_AES_256_XTS),
                rapl_dis: bit(policy_bits::RAPL_DIS),
                ciphertext_hiding: bit(policy_bits::CIPHERTEXT_HIDING),
                page_swap_disable: bit(policy_bits::PAGE_SWAP_DISABLE),
            },
            guest_svn: r.guest_svn(),
            vmpl: r.vmpl(),
            measurement: hex::encode(r.measurement()),
            report_data: hex::encode(r.report_data()),
            host_data: hex::encode(r.host_data()),
            id_key_digest: hex::encode(r.id_key_digest()),
            author_key_digest: hex::encode(r.author_key_digest()),
            family_id: hex::encode(r.family_id()),
            image_id: hex::encode(r.image_id()),
            report_id: hex::encode(r.report_id()),
            report_id_ma: hex::encode(r.report_id_ma()),
            chip_id: hex::encode(r.chip_id()),
            platform_info: format!("{:#018x}", r.platform_info()),
            author_key_en: r.author_key_en(),
            mask_chip_key: r.mask_chip_key(),
            cpuid: r.cpuid().map(|(f, m, s)| format!("family {f:#04x} model {m:#04x} stepping {s:#04x}")),
            launch_mit_vector: r.launch_mit_vector().map(|x| format!("{x:#018x}")),
            current_mit_vector: r.current_mit_vector().map(|x| format!("{x:#018x}")),
            crl: CrlView {
                checked: crl.is_some(),
                this_update: crl.map(|c| c.this_update()),
                next_update: crl.map(|c| c.next_update()),
                revoked_entries: crl.map(|c| c.revoked_serials().len()),
            },
            warnings: policy
                .map(|p| warnings(v, p).iter().map(|w| w.to_string()).collect())
                .unwrap_or_default(),
            code_identity_pinned: policy.is_none_or(|p| p.pins_code_identity()),
            policy: applied,
        }
    }
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl std::fmt::Display for ReportView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::verdict::{tcb_line, SIMULATED_BANNER};
        let verdict = match &self.policy {
            PolicyApplied::None => "AUTHENTIC (authenticity only: NO POLICY APPLIED)",
            _ => "VERIFIED",
        };
        let unpinned = if self.code_identity_pinned { "" } else { " — CODE IDENTITY NOT PINNED" };
        if self.simulated {
            writeln!(f, "{verdict} (SIMULATED root, NOT AMD){unpinned}")?;
            writeln!(f, "  !! {SIMULATED_BANNER}")?;
        } else {
            writeln!(
                f,
                "{verdict}: report signed by a genuine AMD {} ({}){unpinned}",
                self.product, self.signer
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "  !! {w}")?;
        }
        writeln!(f, "  product        {}", self.product)?;
        writeln!(f, "  version        {}", self.version)?;
        writeln!(f, "  signer         {}", self.signer)?;
        writeln!(f, "  root           {} ({})", self.root, self.ark)?;
        writeln!(f, "  intermediate   {}", self.intermediate)?;
        if let Some(c) = &self.cpuid {
            writeln!(f, "  cpuid          {c}")?;
        }
        writeln!(f, "  TCB reported   {}", tcb_line(&self.tcb.reported))?;
        writeln!(f, "  TCB current    {}", tcb_line(&self.tcb.current))?;
        writeln!(f, "  TCB committed  {}", tcb_line(&self.tcb.committed))?;
        writeln!(f, "  TCB launch     {}", tcb_line(&self.tcb.launch))?;
        writeln!(
            f,
            "  firmware       current {}, committed {}",
            self.firmware_current, self.firmware_committed
        )?;
        let g = &self.guest_policy;
        writeln!(
            f,
            "  guest policy   {} debug={} migrate_ma={} smt={} single_socket={} abi>={}.{}",
            g.raw,
            yn(g.debug),
            yn(g.migrate_ma),
            yn(g.smt),
            yn(g.single_socket),
            g.abi_major,
            g.abi_minor
        )?;
        writeln!(
            f,
            "                 cxl_allow={} mem_aes_256_xts={} rapl_dis={} ciphertext_hiding={} page_swap_disable={}",
            yn(g.cxl_allow),
            yn(g.mem_aes_256_xts),
            yn(g.rapl_dis),
            yn(g.ciphertext_hiding),
            yn(g.page_swap_disable)
        )?;
        writeln!(f, "  guest svn      {}", self.guest_svn)?;
        writeln!(f, "  vmpl           {}", self.vmpl)?;
        writeln!(f, "  measurement    {}", self.measurement)?;
        writeln!(f, "  report data    {}", self.report_data)?;
        writeln!(f, "  host data      {}", self.host_data)?;
        writeln!(f, "  id key         {}", self.id_key_digest)?;
        writeln!(f, "  author key     {} (enabled: {})", self.author_key_digest, yn(self.author_key_en))?;
        writeln!(f, "  family id      {}", self.family_id)?;
        writeln!(f, "  image id       {}", self.image_id)?;
        writeln!(f, "  report id      {}", self.report_id)?;
        writeln!(f, "  report id ma   {}", self.report_id_ma)?;
        writeln!(
            f,
            "  chip id        {}{}",
            self.chip_id,
            if self.mask_chip_key { " (masked)" } else { "" }
        )?;
        writeln!(f, "  platform info  {}", self.platform_info)?;
        if let (Some(l), Some(c)) = (&self.launch_mit_vector, &self.current_mit_vector) {
            writeln!(f, "  mitigations    launch {l}, current {c}")?;
        }
        match (self.crl.checked, self.crl.this_update, self.crl.next_update) {
            (true, Some(t), Some(n)) => writeln!(
                f,
                "  CRL            checked: intermediate not revoked (thisUpdate {t}, nextUpdate {n}, {} entries)",
                self.crl.revoked_entries.unwrap_or(0)
            )?,
            _ => writeln!(f, "  CRL            not checked (pass --crl FILE)")?,
        }
        match &self.policy {
            PolicyApplied::None => writeln!(
                f,
                "  policy         NONE applied (--authenticity-only): debug, TCB, measurement... not judged"
            )?,
            PolicyApplied::BuiltIn => writeln!(f, "  policy         strict built-in policy: passed")?,
            PolicyApplied::File(p) => writeln!(f, "  policy         {p}: passed")?,
        }
        Ok(())
    }
}
