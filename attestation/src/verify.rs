//! Cryptographic verification: root → intermediate → VCEK/VLEK → report signature,
//! plus certificate ↔ report consistency. `verify` is cryptography; policy is
//! [`crate::policy`].
//!
//! Verifier side. Roots come only from [`TrustAnchors`]; certificates that arrive
//! with evidence can add intermediates, never a root. Time is an argument.
//!
//! ```text
//!   TrustAnchors (AMD ARKs compiled in | a simulated root, explicitly)
//!        │ verify_chain(leaf, supplied intermediates, CRL, product, now)
//!        ▼
//!   VerifiedChain  ── cache it: one chain serves every report of that chip/TCB
//!        │ verify_report_with_chain(report bytes)
//!        ▼
//!   VerifiedReport ── then policy::validate(&VerifiedReport, &Policy)
//! ```

use crate::cert::{self, AmdCert};
use crate::crl::{verify_crl, VerifiedCrl};
use crate::error::{CertRole, VerifyError};
use crate::product::{Product, Tcb};
use crate::report::{Report, SigningKey};
use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P384_SHA384_FIXED};

/// Where a chain's root came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RootKind {
    /// A genuine AMD ARK compiled into this verifier.
    Amd,
    /// Vouch's SIMULATED secure processor. Not AMD: proves nothing about hardware.
    Simulated,
}

#[derive(Clone, Debug)]
struct Anchor {
    product: Product,
    kind: RootKind,
    ark: AmdCert,
    /// Intermediates trusted alongside the root (AMD's ASK and ASVK).
    intermediates: Vec<(CertRole, AmdCert)>,
}

/// The roots a verifier trusts. Build with [`TrustAnchors::amd`]; a simulated root
/// can be added only through the explicitly dangerous method.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    anchors: Vec<Anchor>,
}

impl TrustAnchors {
    /// AMD's ARKs for Milan, Genoa and Turin (with their ASK and ASVK).
    pub fn amd() -> TrustAnchors {
        let anchors = crate::roots::amd_roots()
            .iter()
            .map(|r| Anchor {
                product: r.product,
                kind: RootKind::Amd,
                ark: r.ark.clone(),
                intermediates: vec![(CertRole::Ask, r.ask.clone()), (CertRole::Asvk, r.asvk.clone())],
            })
            .collect();
        TrustAnchors { anchors }
    }

    /// Adds Vouch's simulated ARK (self-signed; DER or PEM) for `product`. Every report
    /// verified through it is marked [`RootKind::Simulated`]. Use only for development
    /// and tests: it proves nothing about AMD hardware.
    ///
    /// Only a root the simulator made is accepted: its subject must be exactly
    /// `CN=SIMULATED-ARK-<product>` in the organisation [`crate::sim::SIMULATED_MARK`],
    /// and nothing in it may name AMD. A look-alike root (say, one whose subject copies
    /// `CN=ARK-Genoa, O=Advanced Micro Devices`) is refused before its signature is even
    /// looked at, so "trust this sim root" can never be read as "trust this AMD root".
    pub fn dangerous_add_simulated_root(&mut self, ark: &[u8], product: Product) -> Result<(), VerifyError> {
        let ark = cert::certs_from_pem_or_der(ark, CertRole::Ark)?
            .into_iter()
            .next()
            .ok_or(VerifyError::Pem { reason: "no certificate".into() })?;
        let named = simulated_root_product(&ark)?;
        if named != product {
            return Err(VerifyError::NotASimulatedRoot {
                subject: ark.subject().to_owned(),
                reason: format!("it names {named}, not {product}"),
            });
        }
        ark.verify_signed_by(&ark, CertRole::Ark, CertRole::Ark)?;
        if crate::roots::amd_roots().iter().any(|r| r.ark.der() == ark.der()) {
            // Adding AMD's own root as "simulated" would mislabel genuine evidence.
            return Err(VerifyError::UntrustedRoot {
                subject: format!("{} (an AMD root, not simulated)", ark.subject()),
            });
        }
        self.anchors.push(Anchor { product, kind: RootKind::Simulated, ark, intermediates: Vec::new() });
        Ok(())
    }

    /// Only the anchors of one kind: the AMD path never sees a simulated root, and the
    /// simulated path never an AMD one. `None` when no anchor of that kind is trusted.
    pub fn only(&self, kind: RootKind) -> Option<TrustAnchors> {
        let anchors: Vec<Anchor> = self.anchors.iter().filter(|a| a.kind == kind).cloned().collect();
        (!anchors.is_empty()).then_some(TrustAnchors { anchors })
    }

    fn is_anchor(&self, c: &AmdCert) -> bool {
        self.anchors.iter().any(|a| a.ark.der() == c.der())
    }

    fn is_amd_intermediate(&self, c: &AmdCert) -> bool {
        self.anchors
            .iter()
            .filter(|a| a.kind == RootKind::Amd)
            .any(|a| a.intermediates.iter().any(|(_, i)| i.der() == c.der()))
    }
}

/// The product a simulated root names, checking that the simulator made it: subject
/// `CN=SIMULATED-ARK-<Product>`, organisation [`crate::sim::SIMULATED_MARK`], no
/// attribute naming AMD (see [`TrustAnchors::dangerous_add_simulated_root`]).
pub fn simulated_root_product(ark: &AmdCert) -> Result<Product, VerifyError> {
    use const_oid::db::rfc4519::{CN, O};
    let refuse = |reason: &str| VerifyError::NotASimulatedRoot {
        subject: ark.subject().to_owned(),
        reason: reason.to_owned(),
    };
    if ark.subject().to_ascii_lowercase().contains("advanced micro devices") {
        return Err(refuse("its subject names Advanced Micro Devices"));
    }
    let cns = ark.subject_attributes(CN);
    let orgs = ark.subject_attributes(O);
    if orgs != [crate::sim::SIMULATED_MARK] {
        return Err(refuse("its organisation is not Vouch's simulated secure processor"));
    }
    let [cn] = cns.as_slice() else { return Err(refuse("it does not have exactly one common name")) };
    cn.strip_prefix("SIMULATED-ARK-")
        .and_then(Product::from_name)
        .ok_or_else(|| refuse("its common name is not SIMULATED-ARK-<Milan|Genoa|Turin>"))
}

/// A leaf key whose chain to a trusted root verified at a given time.
/// Only [`verify_chain`] constructs it.
#[derive(Clone, Debug)]
pub struct VerifiedChain {
    product: Product,
    root: RootKind,
    signer: SigningKey,
    key: ParsedPublicKey,
    leaf_sha256: [u8; 32],
    spl: Tcb,
    hwid: Option<Vec<u8>>,
    csp_id: Option<String>,
    ark_subject: String,
    intermediate_subject: String,
    crl: Option<VerifiedCrl>,
}

impl VerifiedChain {
    /// The product whose root the chain ends in.
    pub fn product(&self) -> Product {
        self.product
    }
    /// AMD or simulated.
    pub fn root(&self) -> RootKind {
        self.root
    }
    /// VCEK or VLEK.
    pub fn signer(&self) -> SigningKey {
        self.signer
    }
    /// SHA-256 of the leaf certificate DER (a cache key).
    pub fn leaf_sha256(&self) -> [u8; 32] {
        self.leaf_sha256
    }
    /// The leaf's SPL extensions as a TCB.
    pub fn certified_tcb(&self) -> Tcb {
        self.spl
    }
    /// The VCEK hwID (VLEKs have none).
    pub fn hwid(&self) -> Option<&[u8]> {
        self.hwid.as_deref()
    }
    /// The VLEK's CSP_ID extension (the cloud provider), when present; VCEKs have none.
    pub fn csp_id(&self) -> Option<&str> {
        self.csp_id.as_deref()
    }
    /// The verified CRL, when one was supplied.
    pub fn crl(&self) -> Option<&VerifiedCrl> {
        self.crl.as_ref()
    }
    /// ARK subject.
    pub fn ark_subject(&self) -> &str {
        &self.ark_subject
    }
    /// ASK/ASVK subject.
    pub fn intermediate_subject(&self) -> &str {
        &self.intermediate_subject
    }
}

/// A report whose signature verified under a [`VerifiedChain`] and whose fields agree
/// with the certificate. Only this module constructs it.
#[derive(Clone, Debug)]
pub struct VerifiedReport {
    report: Report,
    chain: VerifiedChain,
}

impl VerifiedReport {
    /// The authenticated report.
    pub fn report(&self) -> &Report {
        &self.report
    }
    /// The chain it verified under.
    pub fn chain(&self) -> &VerifiedChain {
        &self.chain
    }
    /// Shorthand for `chain().product()`.
    pub fn product(&self) -> Product {
        self.chain.product
    }
    /// Whether this verification rests on the SIMULATED root.
    pub fn is_simulated(&self) -> bool {
        self.chain.root == RootKind::Simulated
    }
    /// REPORTED_TCB decoded with the product's layout.
    pub fn reported_tcb(&self) -> Tcb {
        Tcb::decode(self.report.reported_tcb_raw(), self.chain.product)
    }
    /// CURRENT_TCB decoded.
    pub fn current_tcb(&self) -> Tcb {
        Tcb::decode(self.report.current_tcb_raw(), self.chain.product)
    }
    /// COMMITTED_TCB decoded.
    pub fn committed_tcb(&self) -> Tcb {
        Tcb::decode(self.report.committed_tcb_raw(), self.chain.product)
    }
    /// LAUNCH_TCB decoded.
    pub fn launch_tcb(&self) -> Tcb {
        Tcb::decode(self.report.launch_tcb_raw(), self.chain.product)
    }
}

/// Where the product was determined from, in order of authority.
fn determine_product(
    report: Option<&Report>,
    leaf: &AmdCert,
    hint: Option<Product>,
) -> Result<Product, VerifyError> {
    let from_cpuid = match report {
        Some(r) => r.cpuid_product()?,
        None => None,
    };
    let from_cert = match leaf.product_name(CertRole::Leaf)? {
        Some(name) => Some(Product::from_name(&name).ok_or_else(|| VerifyError::BadExtension {
            role: CertRole::Leaf,
            oid: cert::OID_PRODUCT_NAME,
            reason: format!("unknown product {name:?}"),
        })?),
        None => None,
    };
    let sources = [(from_cpuid, "report CPUID"), (from_cert, "certificate productName"), (hint, "caller")];
    let mut chosen: Option<(Product, &'static str)> = None;
    for (p, src) in sources {
        let Some(p) = p else { continue };
        match chosen {
            None => chosen = Some((p, src)),
            Some((c, csrc)) if c != p => {
                return Err(VerifyError::ProductMismatch {
                    expected: c,
                    actual: p,
                    source_a: csrc,
                    source_b: src,
                })
            }
            Some(_) => {}
        }
    }
    chosen.map(|(p, _)| p).ok_or(VerifyError::UnknownProduct)
}

/// Inputs for verifying a certificate chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChainInput<'a> {
    /// VCEK or VLEK (DER or PEM).
    pub leaf: &'a [u8],
    /// Certificates supplied with the evidence (PEM bundle or DER), e.g. KDS's
    /// `cert_chain` (ASK then ARK). Roots in it are ignored if they are trusted
    /// anchors and rejected otherwise. When it holds intermediates, they are the only
    /// candidates for the leaf's issuer.
    pub chain: Option<&'a [u8]>,
    /// The ARK's CRL (DER or PEM). Without it the result records "no CRL checked",
    /// which a policy may refuse.
    pub crl: Option<&'a [u8]>,
    /// The product, if the caller knows it.
    pub product: Option<Product>,
}

/// Verifies leaf ← intermediate ← root at `now` (Unix seconds). `report` (if given)
/// contributes its CPUID to product detection.
pub fn verify_chain(
    anchors: &TrustAnchors,
    input: &ChainInput<'_>,
    report: Option<&Report>,
    now: u64,
) -> Result<VerifiedChain, VerifyError> {
    let leaf = cert::certs_from_pem_or_der(input.leaf, CertRole::Leaf)?
        .into_iter()
        .next()
        .ok_or(VerifyError::Pem { reason: "no leaf certificate".into() })?;
    let product = determine_product(report, &leaf, input.product)?;

    // Caller-supplied certificates. They never add a root, and never an AMD
    // intermediate either: for AMD anchors a supplied ASK/ASVK is used only when it is
    // byte-equal to a compiled-in one, so the host cannot pick the intermediate (a
    // retired or revoked one, say). Anything else is kept only as a candidate for a
    // simulated root, and reported as untrusted when there is none.
    let mut supplied_amd = Vec::new();
    let mut supplied = Vec::new();
    if let Some(chain) = input.chain {
        for c in cert::certs_from_pem_or_der(chain, CertRole::Intermediate)? {
            if c.is_self_issued() {
                if !anchors.is_anchor(&c) {
                    return Err(VerifyError::UntrustedRoot { subject: c.subject().to_owned() });
                }
                continue;
            }
            if anchors.is_amd_intermediate(&c) {
                supplied_amd.push(c);
            } else {
                supplied.push(c);
            }
        }
    }

    // Leaf kind from its subject CN, as AMD names them.
    let signer = if leaf.subject().contains("SEV-VLEK") {
        SigningKey::Vlek
    } else if leaf.subject().contains("SEV-VCEK") {
        SigningKey::Vcek
    } else if leaf.has_extension(cert::OID_CSP_ID) {
        SigningKey::Vlek
    } else {
        SigningKey::Vcek
    };
    let (leaf_role, inter_role) = match signer {
        SigningKey::Vcek => (CertRole::Vcek, CertRole::Ask),
        SigningKey::Vlek => (CertRole::Vlek, CertRole::Asvk),
    };

    let mut last_err = None;
    for anchor in anchors.anchors.iter().filter(|a| a.product == product) {
        let candidates: Vec<&AmdCert> = match anchor.kind {
            // What the evidence named, when it named compiled-in ones (a wrong one, e.g.
            // another product's ASK, fails the leaf link); else — nothing supplied, or
            // only certificates that are not AMD's compiled-in ones, which are never
            // used — the compiled-in intermediate of the leaf's kind.
            RootKind::Amd if !supplied_amd.is_empty() => supplied_amd.iter().collect(),
            RootKind::Amd => {
                anchor.intermediates.iter().filter(|(r, _)| *r == inter_role).map(|(_, c)| c).collect()
            }
            RootKind::Simulated => supplied.iter().collect(),
        };
        if candidates.is_empty() && anchor.kind == RootKind::Simulated {
            last_err = Some(VerifyError::MissingIntermediate {
                role: leaf_role,
                expected: inter_role,
                issuer: leaf.issuer().to_owned(),
            });
            continue;
        }
        for inter in candidates {
            match verify_link(anchor, inter, &leaf, leaf_role, inter_role, input.crl, now) {
                Ok(crl) => {
                    return finish_chain(anchor, inter, &leaf, leaf_role, signer, product, crl);
                }
                Err(e) => last_err = Some(e),
            }
        }
    }
    // The leaf chains to no trusted anchor. When the evidence brought an intermediate of
    // its own, say so: that certificate is what the verifier refused to use.
    let has_sim = anchors.anchors.iter().any(|a| a.product == product && a.kind == RootKind::Simulated);
    if let (Some(foreign), true, false) = (supplied.first(), supplied_amd.is_empty(), has_sim) {
        return Err(VerifyError::UntrustedIntermediate {
            role: inter_role,
            subject: foreign.subject().to_owned(),
            serial: foreign.serial_hex(),
        });
    }
    Err(last_err.unwrap_or(VerifyError::MissingIntermediate {
        role: leaf_role,
        expected: inter_role,
        issuer: leaf.issuer().to_owned(),
    }))
}

fn verify_link(
    anchor: &Anchor,
    inter: &AmdCert,
    leaf: &AmdCert,
    leaf_role: CertRole,
    inter_role: CertRole,
    crl: Option<&[u8]>,
    now: u64,
) -> Result<Option<VerifiedCrl>, VerifyError> {
    // Leaf first: a mismatched leaf is the most specific error to report.
    leaf.verify_signed_by(inter, leaf_role, inter_role)?;
    inter.verify_signed_by(&anchor.ark, inter_role, CertRole::Ark)?;
    anchor.ark.check_validity(now, CertRole::Ark)?;
    inter.check_validity(now, inter_role)?;
    leaf.check_validity(now, leaf_role)?;
    if anchor.kind == RootKind::Amd
        && crate::roots::is_revoked_builtin(anchor.product, inter_role, inter.serial())
    {
        return Err(VerifyError::Revoked { role: inter_role, serial: inter.serial_hex() });
    }
    let crl = match crl {
        None => None,
        Some(bytes) => {
            let der = cert::der_from_pem_or_der(bytes)?;
            let crl = verify_crl(&der, &anchor.ark, now)?;
            crl.check_not_revoked(inter, inter_role)?;
            Some(crl)
        }
    };
    Ok(crl)
}

fn finish_chain(
    anchor: &Anchor,
    inter: &AmdCert,
    leaf: &AmdCert,
    role: CertRole,
    signer: SigningKey,
    product: Product,
    crl: Option<VerifiedCrl>,
) -> Result<VerifiedChain, VerifyError> {
    let key_bytes = leaf.p384_public_key(role)?;
    let key = ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key_bytes)
        .map_err(|_| VerifyError::CertificateAlgorithm { role, reason: "P-384 point rejected".into() })?;
    let fmc = if product.has_fmc() { leaf.spl(cert::OID_FMC_SPL, role)? } else { 0 };
    let bl = leaf.spl(cert::OID_BL_SPL, role)?;
    let tee = leaf.spl(cert::OID_TEE_SPL, role)?;
    let snp = leaf.spl(cert::OID_SNP_SPL, role)?;
    let ucode = leaf.spl(cert::OID_UCODE_SPL, role)?;
    let spl = Tcb::decode(Tcb::encode(product, fmc, bl, tee, snp, ucode), product);
    let hwid = match signer {
        SigningKey::Vcek => {
            let h = leaf.hwid().ok_or(VerifyError::MissingExtension { role, oid: cert::OID_HWID })?;
            if h.len() != product.hwid_len() {
                return Err(VerifyError::BadExtension {
                    role,
                    oid: cert::OID_HWID,
                    reason: format!("{} bytes, {product} uses {}", h.len(), product.hwid_len()),
                });
            }
            Some(h.to_vec())
        }
        SigningKey::Vlek => None,
    };
    let csp_id = match signer {
        SigningKey::Vlek => leaf.csp_id(role)?,
        SigningKey::Vcek => None,
    };
    Ok(VerifiedChain {
        product,
        root: anchor.kind,
        signer,
        key,
        leaf_sha256: leaf.sha256(),
        spl,
        hwid,
        csp_id,
        ark_subject: anchor.ark.subject().to_owned(),
        intermediate_subject: inter.subject().to_owned(),
        crl,
    })
}

/// Verifies a report against an already verified chain (the warm path): parse,
/// product/signing-key/TCB/CHIP_ID consistency, then the ECDSA signature over the
/// received bytes `[0, 0x2A0)`.
pub fn verify_report_with_chain(
    chain: &VerifiedChain,
    report_bytes: &[u8],
) -> Result<VerifiedReport, VerifyError> {
    let report = Report::parse(report_bytes)?;
    if let Some(p) = report.cpuid_product()? {
        if p != chain.product {
            return Err(VerifyError::ProductMismatch {
                expected: p,
                actual: chain.product,
                source_a: "report CPUID",
                source_b: "certificate chain",
            });
        }
    }
    if report.signing_key() != chain.signer {
        return Err(VerifyError::SigningKeyMismatch { expected: report.signing_key(), actual: chain.signer });
    }
    // Signature before field comparisons: a report that is not signed by this key
    // gets the most fundamental error, not a derived one.
    let sig = report.signature_rs_be();
    if chain.key.verify_sig(report.signed_bytes(), &sig).is_err() {
        return Err(VerifyError::ReportSignature { signer: chain.signer });
    }
    let reported = Tcb::decode(report.reported_tcb_raw(), chain.product);
    for ((component, r), (_, c)) in reported.components().into_iter().zip(chain.spl.components()) {
        if r != c {
            return Err(VerifyError::TcbMismatch { component, expected: r, actual: c });
        }
    }
    // Reserved TCB bytes are not covered by any SPL; require them to match too.
    if reported.raw != chain.spl.raw {
        return Err(VerifyError::InvalidField {
            field: "REPORTED_TCB",
            reason: format!("reserved bytes differ from the certificate: {:#018x}", reported.raw),
        });
    }
    if let Some(hwid) = &chain.hwid {
        let chip = report.chip_id();
        let n = hwid.len();
        // Turin: CHIP_ID holds the 8-byte hwID followed by 56 zero bytes.
        let rest_zero = chip[n..].iter().all(|&b| b == 0);
        if chip[..n] != hwid[..] || !rest_zero {
            return Err(VerifyError::ChipIdMismatch {
                expected: hex::encode(&chip[..]),
                actual: hex::encode(hwid),
            });
        }
    }
    Ok(VerifiedReport { report, chain: chain.clone() })
}

/// The cold path: parse the report, verify the whole chain at `now`, then the report.
pub fn verify_report(
    anchors: &TrustAnchors,
    report_bytes: &[u8],
    chain: &ChainInput<'_>,
    now: u64,
) -> Result<VerifiedReport, VerifyError> {
    let report = Report::parse(report_bytes)?;
    let verified = verify_chain(anchors, chain, Some(&report), now)?;
    verify_report_with_chain(&verified, report_bytes)
}
