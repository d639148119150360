//! Policy validation: is an authentic report one this verifier accepts?
//!
//! Verifier side, after [`crate::verify`]. Cryptography says *who* signed; policy
//! says whether *what they signed* is acceptable: debug and migration forbidden by
//! default, SMT, minimum TCB per product and component, provisional firmware, guest
//! SVN, VMPL, measurements, HOST_DATA, ID/author keys, REPORT_DATA, CRL required.
//! Every violation is reported, not just the first.

use crate::product::{Product, Tcb, TcbComponent};
use crate::report::policy_bits;
use crate::verify::VerifiedReport;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Fixed-length bytes written as hex in policy files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> From<Hex<N>> for String {
    fn from(h: Hex<N>) -> String {
        hex::encode(h.0)
    }
}

impl<const N: usize> std::str::FromStr for Hex<N> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = hex::decode(s.trim()).map_err(|e| format!("bad hex: {e}"))?;
        let a: [u8; N] = v.try_into().map_err(|v: Vec<u8>| format!("{} bytes, expected {N}", v.len()))?;
        Ok(Hex(a))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Minimum security patch levels; unset components are not constrained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// Minimum FMC SPL (Turin).
    pub fmc: Option<u8>,
    /// Minimum boot loader SPL.
    pub bootloader: Option<u8>,
    /// Minimum PSP OS SPL.
    pub tee: Option<u8>,
    /// Minimum SNP firmware SPL.
    pub snp: Option<u8>,
    /// Minimum microcode SPL.
    pub microcode: Option<u8>,
}

/// What a verifier accepts. `Policy::default()` is the strict baseline: no debug, no
/// migration agent, VMPL 0, current firmware committed, any measurement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Accept guests whose policy allows debugging (the host can read their memory).
    pub allow_debug: bool,
    /// Accept guests that may be associated with a migration agent.
    pub allow_migration_agent: bool,
    /// Accept guests whose policy allows SMT (sibling hyperthreads; side channels).
    pub allow_smt: bool,
    /// Accept firmware that is running but not committed (COMMITTED != CURRENT).
    pub allow_provisional_firmware: bool,
    /// Minimum TCB per product ("milan", "genoa", "turin"); applied to the reported,
    /// committed and launch TCBs.
    pub min_tcb: BTreeMap<String, MinTcb>,
    /// Minimum GUEST_SVN.
    pub min_guest_svn: Option<u32>,
    /// Required VMPL (0 = the most privileged level, where the enclave runs).
    pub vmpl: Option<u32>,
    /// Accepted launch measurements (empty: any).
    pub measurements: Vec<Hex<48>>,
    /// Required HOST_DATA.
    pub host_data: Option<Hex<32>>,
    /// Accepted ID key digests (empty: any).
    pub id_key_digests: Vec<Hex<48>>,
    /// Accepted author key digests (empty: any).
    pub author_key_digests: Vec<Hex<48>>,
    /// Required REPORT_DATA (normally set by the protocol, not a file).
    pub report_data: Option<Hex<64>>,
    /// Refuse evidence whose ASK/ASVK was not checked against a current CRL.
    pub require_crl: bool,
    /// Accept VLEK-signed reports (cloud providers such as AWS sign with VLEK).
    pub allow_vlek: bool,
    /// Minimum report version (2, 3 or 5).
    pub min_report_version: u32,
    /// DANGEROUS: accept reports whose code identity the policy does not pin. Never
    /// read from a file; only `--allow-any-code` sets it.
    #[serde(skip)]
    pub dangerous_allow_any_code: bool,
}

impl Policy {
    /// Whether the policy pins code identity: a measurement, an ID or author key
    /// digest, or HOST_DATA.
    pub fn pins_code_identity(&self) -> bool {
        !self.measurements.is_empty()
            || !self.id_key_digests.is_empty()
            || !self.author_key_digests.is_empty()
            || self.host_data.is_some()
    }
}

/// Something a verdict must say even though the report was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Warning {
    /// The policy pins no code identity and `dangerous_allow_any_code` let it pass.
    CodeIdentityNotPinned,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::CodeIdentityNotPinned => f.write_str("CODE IDENTITY NOT PINNED: any program in any guest on this platform would pass"),
        }
    }
}

/// The warnings a verdict on `v` under `policy` must carry.
pub fn warnings(_v: &VerifiedReport, policy: &Policy) -> Vec<Warning> {
    let mut out = Vec::new();
    if !policy.pins_code_identity() {
        out.push(Warning::CodeIdentityNotPinned);
    }
    out
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_debug: false,
            allow_migration_agent: false,
            allow_smt: true,
            allow_provisional_firmware: false,
            min_tcb: BTreeMap::new(),
            min_guest_svn: None,
            vmpl: Some(0),
            measurements: Vec::new(),
            host_data: None,
            id_key_digests: Vec::new(),
            author_key_digests: Vec::new(),
            report_data: None,
            require_crl: false,
            allow_vlek: true,
            min_report_version: 2,
            dangerous_allow_any_code: false,
        }
    }
}

/// One way a report fails a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Guest policy allows debugging.
    #[error("guest policy allows DEBUG")]
    DebugAllowed,
    /// Guest policy allows a migration agent.
    #[error("guest policy allows a migration agent")]
    MigrationAgentAllowed,
    /// Guest policy allows SMT and the verifier forbids it.
    #[error("guest policy allows SMT")]
    SmtAllowed,
    /// A TCB component is below the minimum.
    #[error("{which} TCB {component} is {actual}, minimum {minimum}")]
    TcbTooLow {
        /// "reported", "committed" or "launch".
        which: &'static str,
        /// Component.
        component: TcbComponent,
        /// Minimum.
        minimum: u8,
        /// Actual.
        actual: u8,
    },
    /// COMMITTED differs from CURRENT (firmware not committed).
    #[error("provisional firmware: committed {committed} != current {current}")]
    ProvisionalFirmware {
        /// Committed TCB and version.
        committed: String,
        /// Current TCB and version.
        current: String,
    },
    /// GUEST_SVN below the minimum.
    #[error("GUEST_SVN {actual} < minimum {minimum}")]
    GuestSvnTooLow {
        /// Minimum.
        minimum: u32,
        /// Actual.
        actual: u32,
    },
    /// Wrong VMPL.
    #[error("VMPL is {actual}, expected {expected}")]
    Vmpl {
        /// Expected.
        expected: u32,
        /// Actual.
        actual: u32,
    },
    /// MEASUREMENT not in the accepted list.
    #[error("measurement {actual} is not accepted")]
    Measurement {
        /// Hex.
        actual: String,
    },
    /// HOST_DATA differs.
    #[error("HOST_DATA {actual} != expected {expected}")]
    HostData {
        /// Hex.
        expected: String,
        /// Hex.
        actual: String,
    },
    /// ID key digest not accepted.
    #[error("ID key digest {actual} is not accepted")]
    IdKey {
        /// Hex.
        actual: String,
    },
    /// Author key digest not accepted.
    #[error("author key digest {actual} is not accepted")]
    AuthorKey {
        /// Hex.
        actual: String,
    },
    /// REPORT_DATA differs.
    #[error("REPORT_DATA {actual} != expected {expected}")]
    ReportData {
        /// Hex.
        expected: String,
        /// Hex.
        actual: String,
    },
    /// No CRL was checked.
    #[error("no current CRL was checked and the policy requires one")]
    CrlRequired,
    /// VLEK-signed and VLEK not allowed.
    #[error("report is VLEK-signed and the policy accepts only VCEK")]
    VlekNotAllowed,
    /// Report version too old.
    #[error("report version {actual} < minimum {minimum}")]
    ReportVersion {
        /// Minimum.
        minimum: u32,
        /// Actual.
        actual: u32,
    },
    /// The policy pins no code identity.
    #[error("the policy pins no code identity: pin the launch measurement (this report's is {measurement}), an ID-key or author-key digest, or HOST_DATA — or pass --allow-any-code to accept any code")]
    CodeIdentityNotPinned {
        /// The report's measurement (hex), to pin.
        measurement: String,
    },
    /// Unknown product key in `min_tcb`.
    #[error("policy names unknown product {0:?} in min_tcb")]
    UnknownPolicyProduct(String),
}

/// All violations of one validation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy violated: {}", .0.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "))]
pub struct PolicyViolations(pub Vec<Violation>);

fn check_min(out: &mut Vec<Violation>, which: &'static str, tcb: &Tcb, min: &MinTcb) {
    for (component, actual) in tcb.components() {
        let minimum = match component {
            TcbComponent::Fmc => min.fmc,
            TcbComponent::Bootloader => min.bootloader,
            TcbComponent::Tee => min.tee,
            TcbComponent::Snp => min.snp,
            TcbComponent::Microcode => min.microcode,
        };
        if let Some(minimum) = minimum {
            if actual < minimum {
                out.push(Violation::TcbTooLow { which, component, minimum, actual });
            }
        }
    }
}

/// Checks `v` against `policy`, collecting every violation.
pub fn validate(v: &VerifiedReport, policy: &Policy) -> Result<(), PolicyViolations> {
    let r = v.report();
    let mut out = Vec::new();
    let gp = r.policy();
    if gp & policy_bits::DEBUG != 0 && !policy.allow_debug {
        out.push(Violation::DebugAllowed);
    }
    if gp & policy_bits::MIGRATE_MA != 0 && !policy.allow_migration_agent {
        out.push(Violation::MigrationAgentAllowed);
    }
    if gp & policy_bits::SMT != 0 && !policy.allow_smt {
        out.push(Violation::SmtAllowed);
    }
    if r.version() < policy.min_report_version {
        out.push(Violation::ReportVersion { minimum: policy.min_report_version, actual: r.version() });
    }
    for (name, min) in &policy.min_tcb {
        match Product::from_name(name) {
            None => out.push(Violation::UnknownPolicyProduct(name.clone())),
            Some(p) if p == v.product() => {
                check_min(&mut out, "reported", &v.reported_tcb(), min);
                check_min(&mut out, "committed", &v.committed_tcb(), min);
                check_min(&mut out, "launch", &v.launch_tcb(), min);
            }
            Some(_) => {}
        }
    }
    if !policy.allow_provisional_firmware
        && (r.committed_tcb_raw() != r.current_tcb_raw() || r.committed_version() != r.current_version())
    {
        out.push(Violation::ProvisionalFirmware {
            committed: format!("{:#018x} ({})", r.committed_tcb_raw(), r.committed_version()),
            current: format!("{:#018x} ({})", r.current_tcb_raw(), r.current_version()),
        });
    }
    if let Some(min) = policy.min_guest_svn {
        if r.guest_svn() < min {
            out.push(Violation::GuestSvnTooLow { minimum: min, actual: r.guest_svn() });
        }
    }
    if let Some(expected) = policy.vmpl {
        if r.vmpl() != expected {
            out.push(Violation::Vmpl { expected, actual: r.vmpl() });
        }
    }
    if !policy.measurements.is_empty() && !policy.measurements.iter().any(|m| m.0 == r.measurement()) {
        out.push(Violation::Measurement { actual: hex::encode(r.measurement()) });
    }
    if let Some(h) = &policy.host_data {
        if h.0 != r.host_data() {
            out.push(Violation::HostData { expected: hex::encode(h.0), actual: hex::encode(r.host_data()) });
        }
    }
    if !policy.id_key_digests.is_empty() && !policy.id_key_digests.iter().any(|d| d.0 == r.id_key_digest()) {
        out.push(Violation::IdKey { actual: hex::encode(r.id_key_digest()) });
    }
    if !policy.author_key_digests.is_empty()
        && !policy.author_key_digests.iter().any(|d| d.0 == r.author_key_digest())
    {
        out.push(Violation::AuthorKey { actual: hex::encode(r.author_key_digest()) });
    }
    if let Some(d) = &policy.report_data {
        if d.0 != r.report_data() {
            out.push(Violation::ReportData {
                expected: hex::encode(d.0),
                actual: hex::encode(r.report_data()),
            });
        }
    }
    if policy.require_crl && v.chain().crl().is_none() {
        out.push(Violation::CrlRequired);
    }
    if !policy.allow_vlek && v.chain().signer() == crate::report::SigningKey::Vlek {
        out.push(Violation::VlekNotAllowed);
    }
    if !policy.pins_code_identity() && !policy.dangerous_allow_any_code {
        out.push(Violation::CodeIdentityNotPinned { measurement: hex::encode(r.measurement()) });
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(PolicyViolations(out))
    }
}
