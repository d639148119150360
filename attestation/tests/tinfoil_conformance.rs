//! A peer's conformance suite as an external check of this verifier: the SEV-SNP cases
//! of tinfoilsh/tinfoil-conformance (data only, kept beside the checkout in
//! `../shared/conformance/tinfoil`, never committed here; see its SOURCES.md).
//!
//! Each case names a report (gzipped), a VCEK, a verification time, optional pins and the
//! expected verdict (accept, or one of a few rejection codes). Cases on AMD's real chain
//! must come out exactly as the suite says, rejection code included. The synthetic cases
//! (6xx, 7xx) replace AMD's root with one whose names imitate AMD's (`CN=ARK-Genoa,
//! O=Advanced Micro Devices`): Vouch trusts no root that arrives with evidence, so every
//! one of them is refused — a deliberate divergence from the suite's "accept" on 604 —
//! and the look-alike root is refused as a simulated root too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use base64::Engine as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use vouch_attestation::policy::{Hex, MinTcb};
use vouch_attestation::{
    validate, verify_report, CertRole, ChainInput, Policy, TrustAnchors, VerifyError, Violation,
};

/// Where the suite lives: `VOUCH_CONFORMANCE_DIR`, else `<repo>/../shared/conformance/tinfoil`.
fn suite() -> Option<PathBuf> {
    let dir = std::env::var_os("VOUCH_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/tinfoil"));
    if dir.join("SOURCES.md").exists() {
        return Some(dir);
    }
    if std::env::var_os("VOUCH_ALLOW_MISSING_VECTORS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: tinfoil conformance suite not found at {}", dir.display());
        return None;
    }
    panic!(
        "tinfoil conformance suite not found at {} (it lives in ../shared beside the checkout; \
         set VOUCH_CONFORMANCE_DIR, or VOUCH_ALLOW_MISSING_VECTORS=1 to skip)",
        dir.display()
    );
}

struct Case {
    name: String,
    input: serde_json::Value,
    expected: serde_json::Value,
}

fn cases(dir: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    for stage in ["attestation-sev", "verify-full"] {
        let mut names: Vec<_> =
            std::fs::read_dir(dir.join(stage)).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for case in names {
            let read = |f: &str| -> serde_json::Value {
                serde_json::from_slice(&std::fs::read(case.join(f)).unwrap()).unwrap()
            };
            let mut input = read("input.json");
            // verify-full wraps the SEV block and pins the measurement as register 0.
            if let Some(block) = input.get("attestation_sev").cloned() {
                let mut block = block;
                if let Some(m) = input.pointer("/pinned_measurement/registers/0").cloned() {
                    block["policy"]["expected_measurement_hex"] = m;
                }
                input = block;
            }
            out.push(Case {
                name: case.file_name().unwrap().to_string_lossy().into_owned(),
                input,
                expected: read("expected.json"),
            });
        }
    }
    out
}

fn b64(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// The suite's policy block as a Vouch policy. The suite's "no pins" means "authenticity
/// and spec defaults only", which Vouch spells `dangerous_allow_any_code`.
fn policy_of(p: &serde_json::Value) -> Policy {
    let hex_of = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let mut policy = Policy::default();
    if let Some(m) = hex_of("expected_measurement_hex") {
        policy.measurements = vec![m.parse::<Hex<48>>().unwrap()];
    }
    if let Some(h) = hex_of("expected_host_data_hex") {
        policy.host_data = Some(h.parse().unwrap());
    }
    if let Some(r) = hex_of("expected_report_data_hex") {
        policy.report_data = Some(r.parse().unwrap());
    }
    if let Some(k) = hex_of("expected_id_key_digest_hex") {
        policy.id_key_digests = vec![k.parse().unwrap()];
    }
    if let Some(k) = hex_of("expected_author_key_digest_hex") {
        policy.author_key_digests = vec![k.parse().unwrap()];
    }
    let spl = |k: &str| p.get(k).and_then(|v| v.as_u64()).map(|v| u8::try_from(v).unwrap());
    let min = MinTcb {
        bootloader: spl("min_tcb_bl_spl"),
        tee: spl("min_tcb_tee_spl"),
        snp: spl("min_tcb_snp_spl"),
        microcode: spl("min_tcb_ucode_spl"),
        ..MinTcb::default()
    };
    if min != MinTcb::default() {
        policy.min_tcb.insert("genoa".into(), min);
    }
    policy.dangerous_allow_any_code = !policy.pins_code_identity();
    policy
}

/// The suite's rejection code for a Vouch error.
fn code_of_error(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::UnsupportedVersion { .. } => "WRONG_REPORT_VERSION",
        // The strict parser: a field that the (claimed) version does not allow.
        VerifyError::ReservedNonZero { .. }
        | VerifyError::InvalidField { .. }
        | VerifyError::UnsupportedSignatureAlgorithm { .. } => "REPORT_FORMAT_UNSUPPORTED",
        VerifyError::ReportLength { .. } => "REPORT_TRUNCATED",
        VerifyError::ReportSignature { .. } => "REPORT_SIGNATURE_INVALID",
        VerifyError::CertificateExpired { role: CertRole::Vcek, .. } => "VCEK_EXPIRED",
        VerifyError::ChipIdMismatch { .. } => "VCEK_HWID_MISMATCH",
        VerifyError::TcbMismatch { .. } => "VCEK_TCB_MISMATCH",
        _ => "VCEK_CHAIN_INVALID",
    }
}

fn code_of_violation(v: &Violation) -> &'static str {
    match v {
        Violation::Measurement { .. } => "MEASUREMENT_MISMATCH",
        Violation::HostData { .. } => "HOST_DATA_MISMATCH",
        Violation::ReportData { .. } => "REPORT_DATA_MISMATCH",
        Violation::IdKey { .. } => "ID_KEY_DIGEST_MISMATCH",
        Violation::AuthorKey { .. } | Violation::AuthorKeyNotEnabled => "AUTHOR_KEY_DIGEST_MISMATCH",
        Violation::TcbTooLow { .. } => "TCB_OUT_OF_DATE",
        Violation::DebugAllowed => "GUEST_POLICY_DEBUG_SET",
        Violation::MigrationAgentAllowed => "GUEST_POLICY_MIGRATE_MA_SET",
        _ => "OTHER_POLICY_VIOLATION",
    }
}

fn expected_codes(e: &serde_json::Value) -> Vec<String> {
    match e.pointer("/rejection/code") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a.iter().map(|c| c.as_str().unwrap().to_owned()).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn tinfoil_sev_snp_cases_on_amds_chain_agree_and_look_alike_roots_are_refused() {
    let Some(dir) = suite() else { return };
    let all = cases(&dir);
    assert_eq!(all.len(), 28, "the suite's SEV-SNP cases (SOURCES.md)");
    let (mut agreed, mut synthetic) = (0, 0);
    for c in &all {
        let report = gunzip(&b64(&c.input["attestation_doc_b64"]));
        let vcek = b64(&c.input["vcek_der_b64"]);
        let now = c.input["expiration_check_date_unix"].as_u64().unwrap();
        let policy = policy_of(c.input.get("policy").unwrap_or(&serde_json::Value::Null));
        let accepted = c.expected["accepted"].as_bool().unwrap();

        if let Some(ark) = c.input.get("amd_root_ca_pem").and_then(|v| v.as_str()) {
            // A replacement root arrived with the evidence. It is not one of AMD's roots,
            // so the chain cannot verify — whatever the suite expects.
            let ask = c.input["ask_pem"].as_str().unwrap();
            let chain = format!("{ask}{ark}");
            let input = ChainInput { leaf: &vcek, chain: Some(chain.as_bytes()), crl: None, product: None };
            verify_report(&TrustAnchors::amd(), &report, &input, now)
                .expect_err(&format!("{}: a root that arrived with the evidence was trusted", c.name));
            // Whatever the report, its chain ends in a root that is not AMD's.
            let err = vouch_attestation::verify_chain(&TrustAnchors::amd(), &input, None, now).unwrap_err();
            assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{}: {err:?}", c.name);
            // Nor can it be passed off as a simulated root: it names AMD.
            let mut anchors = TrustAnchors::amd();
            for product in vouch_attestation::Product::ALL {
                let err = anchors.dangerous_add_simulated_root(ark.as_bytes(), product).unwrap_err();
                assert!(matches!(err, VerifyError::NotASimulatedRoot { .. }), "{}: {err:?}", c.name);
            }
            synthetic += 1;
            continue;
        }

        let input = ChainInput { leaf: &vcek, chain: None, crl: None, product: None };
        if c.name == "461-all-pins-match" {
            // Divergence: the suite pins ID_KEY_DIGEST and AUTHOR_KEY_DIGEST as all zeros
            // (this guest has no ID block) and accepts. Vouch refuses a zero digest as a
            // pin — it matches every guest launched without an ID block, so it pins
            // nothing — and an author-key pin without AUTHOR_KEY_EN. Everything else the
            // case pins must still match.
            let v = verify_report(&TrustAnchors::amd(), &report, &input, now).unwrap();
            let err = validate(&v, &policy).unwrap_err();
            assert!(
                err.0
                    .iter()
                    .all(|v| matches!(v, Violation::ZeroValuePinned { .. } | Violation::AuthorKeyNotEnabled)),
                "{}: {err}",
                c.name
            );
            let honest = Policy { id_key_digests: vec![], author_key_digests: vec![], ..policy.clone() };
            validate(&v, &honest).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            agreed += 1;
            continue;
        }
        let verdict = verify_report(&TrustAnchors::amd(), &report, &input, now)
            .map_err(|e| vec![code_of_error(&e)])
            .and_then(|v| {
                validate(&v, &policy).map_err(|p| p.0.iter().map(code_of_violation).collect::<Vec<_>>())
            });
        match (verdict, accepted) {
            (Ok(()), true) => {}
            (Err(codes), false) => {
                let want = expected_codes(&c.expected);
                assert!(
                    codes.iter().any(|c| want.iter().any(|w| w == c)),
                    "{}: refused with {codes:?}, the suite expects one of {want:?}",
                    c.name
                );
            }
            (Ok(()), false) => {
                panic!("{}: accepted, the suite expects {:?}", c.name, expected_codes(&c.expected))
            }
            (Err(codes), true) => panic!("{}: refused with {codes:?}, the suite accepts it", c.name),
        }
        agreed += 1;
    }
    let _ = writeln!(
        std::io::stderr(),
        "tinfoil conformance: {agreed} cases on AMD's chain agree; {synthetic} synthetic-root cases refused"
    );
    assert_eq!(agreed + synthetic, all.len());
    assert_eq!(synthetic, 9);
}
