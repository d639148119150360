//! `policy::validate` and `policy::warnings` against signed reports: simulated ones
//! built field by field (Genoa, Turin and Milan keys from the committed TEST-ONLY sim
//! chain) and genuine AWS VLEK reports. Every option has a negative test that expects
//! the exact violation list.

#![allow(clippy::unwrap_used, clippy::panic)] // Test helpers: a failed unwrap is a failed test.

#[path = "support/shared_vectors.rs"]
mod shared_vectors;

use shared_vectors::Vectors;
use std::path::PathBuf;
use vouch_attestation::binding;
use vouch_attestation::policy::{BitRule, Hex, MinTcb, MILAN_FORGEABLE};
use vouch_attestation::report::{
    flag_bits, platform_info_bits as pi, policy_bits as gp, FirmwareVersion, ReportBuilder,
};
use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};
use vouch_attestation::*;

const NOW: u64 = 1_788_220_800;
/// The launch measurement every simulated report here carries (and `pinned()` pins).
const M: [u8; 48] = [0x4d; 48];
/// The policy ABI ReportBuilder writes (POLICY bits 15:0 = 0x001f).
const SIM_ABI: &str = "0.31";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed TEST-ONLY sim keys, re-issued as `product`'s chain (the keys do not
/// depend on the product; the certificates and CPUID do).
fn sp(product: Product) -> SimulatedSp {
    let bytes =
        std::fs::read(manifest_dir().join("testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor")).unwrap();
    let mut k: SimKeyMaterial = binding::from_cbor(&bytes).unwrap();
    k.product = product;
    k.tcb = Tcb::encode(product, 1, 9, 0, 22, 0xd5);
    if product == Product::Turin {
        k.chip_id[8..].fill(0); // Turin: 8-byte hwID, then zeros.
    }
    SimulatedSp::from_keys(&k).unwrap()
}

/// A well-formed report body, as `SimulatedSp::report` makes it.
fn body(sp: &SimulatedSp) -> ReportBuilder {
    ReportBuilder::new(sp.product())
        .tcb(sp.tcb())
        .platform_info(pi::SMT_EN | pi::ECC_EN | pi::ALIAS_CHECK_COMPLETE)
        .measurement(&M)
        .report_id(&[0x11; 32])
        .chip_id(&sp.chip_id())
        .firmware(FirmwareVersion { major: 1, minor: 55, build: 42 })
}

fn verified_with_crl(sp: &SimulatedSp, b: ReportBuilder, crl: Option<&[u8]>) -> VerifiedReport {
    let mut anchors = TrustAnchors::amd();
    anchors.dangerous_add_simulated_root(sp.ark_der(), sp.product()).unwrap();
    let input = ChainInput { leaf: sp.vcek_der(), chain: Some(sp.ask_der()), crl, product: None };
    verify_report(&anchors, &sp.sign(b).unwrap()[..], &input, NOW).unwrap()
}

fn verified(sp: &SimulatedSp, b: ReportBuilder) -> VerifiedReport {
    verified_with_crl(sp, b, None)
}

/// The default policy with the sim measurement pinned.
fn pinned() -> Policy {
    Policy { measurements: vec![Hex(M)], ..Policy::default() }
}

fn violations(v: &VerifiedReport, p: &Policy) -> Vec<Violation> {
    match validate(v, p) {
        Ok(()) => vec![],
        Err(e) => e.0,
    }
}

#[test]
fn default_policy_refuses_unpinned_code_and_milan_and_accepts_pinned_genoa_and_turin() {
    let genoa = sp(Product::Genoa);
    let v = verified(&genoa, body(&genoa));
    let err = violations(&v, &Policy::default());
    assert_eq!(err, vec![Violation::CodeIdentityNotPinned { measurement: hex::encode(M) }]);
    let msg = err[0].to_string();
    assert!(msg.contains(&hex::encode(M)) && msg.contains("--allow-any-code"), "{msg}");
    validate(&v, &pinned()).unwrap();

    let turin = sp(Product::Turin);
    validate(&verified(&turin, body(&turin)), &pinned()).unwrap();

    let milan = sp(Product::Milan);
    let v = verified(&milan, body(&milan));
    let err = violations(&v, &pinned());
    assert_eq!(err, vec![Violation::ProductNotAccepted { product: Product::Milan, reason: MILAN_FORGEABLE }]);
    let msg = err[0].to_string();
    assert!(msg.contains("MilanLaunchy") && msg.contains("2605.12990"), "{msg}");
    // Both at once: every violation is reported.
    assert_eq!(violations(&v, &Policy::default()).len(), 2);
}

#[test]
fn allow_any_code_accepts_unpinned_code_with_a_warning() {
    let sp = sp(Product::Genoa);
    let v = verified(&sp, body(&sp));
    let p = Policy { dangerous_allow_any_code: true, ..Policy::default() };
    validate(&v, &p).unwrap();
    let w = warnings(&v, &p);
    assert_eq!(w[0], Warning::CodeIdentityNotPinned { measurement: hex::encode(M) });
    assert!(w[0].to_string().contains("--allow-any-code"));
    assert!(!warnings(&v, &pinned()).iter().any(|w| matches!(w, Warning::CodeIdentityNotPinned { .. })));
    // Each other kind of code pin satisfies the requirement on its own.
    let p = Policy { host_data: Some(Hex([0; 32])), ..Policy::default() };
    validate(&v, &p).unwrap();
}

#[test]
fn accepted_products_and_min_tcb_decide_the_products() {
    let (milan, genoa, turin) = (sp(Product::Milan), sp(Product::Genoa), sp(Product::Turin));
    let (vm, vg, vt) =
        (verified(&milan, body(&milan)), verified(&genoa, body(&genoa)), verified(&turin, body(&turin)));

    // Listed Milan is accepted, with a warning naming the attack.
    let p = Policy { accepted_products: vec!["Milan".into()], ..pinned() };
    validate(&vm, &p).unwrap();
    let w = warnings(&vm, &p);
    assert!(w.contains(&Warning::MilanForgeable), "{w:?}");
    assert!(Warning::MilanForgeable.to_string().contains("2605.12990"));
    assert_eq!(
        violations(&vg, &p),
        vec![Violation::ProductNotAccepted {
            product: Product::Genoa,
            reason: "it is not listed in accepted_products"
        }]
    );
    assert!(!warnings(&vg, &pinned()).contains(&Warning::MilanForgeable));

    // min_tcb names Genoa only: Turin is refused, and naming Milan there is not enough.
    let mut p = pinned();
    p.min_tcb.insert("genoa".into(), MinTcb::default());
    p.min_tcb.insert("milan".into(), MinTcb::default());
    validate(&vg, &p).unwrap();
    assert!(matches!(
        violations(&vt, &p)[..],
        [Violation::ProductNotAccepted { product: Product::Turin, .. }]
    ));
    assert_eq!(
        violations(&vm, &p),
        vec![Violation::ProductNotAccepted { product: Product::Milan, reason: MILAN_FORGEABLE }]
    );

    // Unknown names are violations, never ignored.
    let p = Policy { accepted_products: vec!["turin".into(), "venice".into()], ..pinned() };
    assert_eq!(violations(&vt, &p), vec![Violation::UnknownPolicyProduct("venice".into())]);
}

#[test]
fn warnings_name_missing_tcb_floor_and_crl() {
    let sp = sp(Product::Genoa);
    let v = verified(&sp, body(&sp));
    assert_eq!(
        warnings(&v, &pinned()),
        vec![Warning::NoTcbFloor { product: Product::Genoa }, Warning::CrlNotChecked]
    );
    let mut p = pinned();
    p.min_tcb.insert("genoa".into(), MinTcb { snp: Some(22), ..MinTcb::default() });
    let day = 86_400;
    let crl = sp.crl(&[], NOW - day, NOW + day).unwrap();
    let v = verified_with_crl(&sp, body(&sp), Some(&crl));
    assert_eq!(warnings(&v, &p), vec![]);
    validate(&v, &p).unwrap();
}

#[test]
fn guest_policy_bit_rules() {
    let sp = sp(Product::Genoa);
    let abi = 0x1f;
    let rules = [
        ("SMT", gp::SMT),
        ("SINGLE_SOCKET", gp::SINGLE_SOCKET),
        ("CXL_ALLOW", gp::CXL_ALLOW),
        ("MEM_AES_256_XTS", gp::MEM_AES_256_XTS),
        ("RAPL_DIS", gp::RAPL_DIS),
        ("CIPHERTEXT_HIDING", gp::CIPHERTEXT_HIDING),
        ("PAGE_SWAP_DISABLE", gp::PAGE_SWAP_DISABLE),
    ];
    let set_rule = |p: &mut Policy, bit: &str, rule: BitRule| {
        let g = &mut p.guest_policy;
        *match bit {
            "SMT" => &mut g.smt,
            "SINGLE_SOCKET" => &mut g.single_socket,
            "CXL_ALLOW" => &mut g.cxl_allow,
            "MEM_AES_256_XTS" => &mut g.mem_aes_256_xts,
            "RAPL_DIS" => &mut g.rapl_dis,
            "CIPHERTEXT_HIDING" => &mut g.ciphertext_hiding,
            _ => &mut g.page_swap_disable,
        } = rule;
    };
    for (bit, mask) in rules {
        let with = verified(&sp, body(&sp).policy(gp::RESERVED_MBO | abi | mask));
        let without = verified(&sp, body(&sp).policy(gp::RESERVED_MBO | abi));
        let mut p = pinned();
        set_rule(&mut p, bit, BitRule::Forbid);
        assert_eq!(violations(&with, &p), vec![Violation::GuestPolicyForbidden { bit }], "{bit}");
        assert_eq!(violations(&without, &p), vec![], "{bit}");
        set_rule(&mut p, bit, BitRule::Require);
        assert_eq!(violations(&without, &p), vec![Violation::GuestPolicyRequired { bit }], "{bit}");
        assert_eq!(violations(&with, &p), vec![], "{bit}");
        set_rule(&mut p, bit, BitRule::Allow);
        assert_eq!((violations(&with, &p), violations(&without, &p)), (vec![], vec![]), "{bit}");
    }
    // Defaults: CXL forbidden, SMT allowed; allow_smt = false forbids SMT.
    let cxl = verified(&sp, body(&sp).policy(gp::RESERVED_MBO | gp::SMT | gp::CXL_ALLOW));
    assert_eq!(violations(&cxl, &pinned()), vec![Violation::GuestPolicyForbidden { bit: "CXL_ALLOW" }]);
    let smt = verified(&sp, body(&sp));
    validate(&smt, &pinned()).unwrap();
    let p = Policy { allow_smt: false, ..pinned() };
    assert_eq!(violations(&smt, &p), vec![Violation::GuestPolicyForbidden { bit: "SMT" }]);
    // DEBUG and MIGRATE_MA keep their switches and defaults.
    let dbg = verified(&sp, body(&sp).policy(gp::RESERVED_MBO | gp::DEBUG | gp::MIGRATE_MA));
    assert_eq!(violations(&dbg, &pinned()), vec![Violation::DebugAllowed, Violation::MigrationAgentAllowed]);
    let p = Policy { allow_debug: true, allow_migration_agent: true, ..pinned() };
    validate(&dbg, &p).unwrap();
}

#[test]
fn minimum_guest_policy_abi() {
    let sp = sp(Product::Genoa);
    let v = verified(&sp, body(&sp));
    let at = |s: &str| Policy { min_guest_policy_abi: Some(s.parse().unwrap()), ..pinned() };
    validate(&v, &at(SIM_ABI)).unwrap();
    validate(&v, &at("0.0")).unwrap();
    for minimum in ["0.32", "1.0"] {
        assert_eq!(
            violations(&v, &at(minimum)),
            vec![Violation::GuestPolicyAbiTooLow {
                minimum: minimum.parse().unwrap(),
                actual: SIM_ABI.parse().unwrap()
            }]
        );
    }
}

#[test]
fn platform_info_reserved_bits_and_rules() {
    let sp = sp(Product::Genoa);
    let v = verified(&sp, body(&sp).platform_info(pi::SMT_EN | 1 << 8 | 1 << 63));
    assert_eq!(violations(&v, &pinned()), vec![Violation::PlatformInfoReserved { bits: 1 << 8 | 1 << 63 }]);
    // Bits 6 and 7 are defined (genuine Turin reports set bit 6), not reserved.
    validate(&verified(&sp, body(&sp).platform_info(pi::IOMMU_WRITE_SAFE | pi::TIO_EN)), &pinned()).unwrap();

    let names = [
        "SMT_EN",
        "TSME_EN",
        "ECC_EN",
        "RAPL_DIS",
        "CIPHERTEXT_HIDING_EN",
        "ALIAS_CHECK_COMPLETE",
        "IOMMU_WRITE_SAFE",
        "TIO_EN",
    ];
    for (i, bit) in names.into_iter().enumerate() {
        let mask = 1u64 << i;
        let with = verified(&sp, body(&sp).platform_info(mask));
        let without = verified(&sp, body(&sp).platform_info(0));
        let mut p = pinned();
        let set = |p: &mut Policy, rule| {
            let r = &mut p.platform_info;
            *[
                &mut r.smt_en,
                &mut r.tsme_en,
                &mut r.ecc_en,
                &mut r.rapl_dis,
                &mut r.ciphertext_hiding_en,
                &mut r.alias_check_complete,
                &mut r.iommu_write_safe,
                &mut r.tio_en,
            ][i] = rule;
        };
        validate(&with, &p).unwrap();
        validate(&without, &p).unwrap();
        set(&mut p, BitRule::Forbid);
        assert_eq!(violations(&with, &p), vec![Violation::PlatformInfoForbidden { bit }]);
        assert_eq!(violations(&without, &p), vec![]);
        set(&mut p, BitRule::Require);
        assert_eq!(violations(&without, &p), vec![Violation::PlatformInfoRequired { bit }]);
        assert_eq!(violations(&with, &p), vec![]);
    }
}

#[test]
fn minimum_firmware_build_and_version() {
    let sp = sp(Product::Genoa);
    let v = verified(&sp, body(&sp)); // 1.55.42
    validate(&v, &Policy { min_build: Some(42), min_version: Some("1.55".parse().unwrap()), ..pinned() })
        .unwrap();
    assert_eq!(
        violations(&v, &Policy { min_build: Some(43), ..pinned() }),
        vec![
            Violation::FirmwareBuildTooLow { which: "current", minimum: 43, actual: 42 },
            Violation::FirmwareBuildTooLow { which: "committed", minimum: 43, actual: 42 },
        ]
    );
    let (minimum, actual) = ("1.56".parse().unwrap(), "1.55".parse().unwrap());
    assert_eq!(
        violations(&v, &Policy { min_version: Some(minimum), ..pinned() }),
        vec![
            Violation::FirmwareVersionTooLow { which: "current", minimum, actual },
            Violation::FirmwareVersionTooLow { which: "committed", minimum, actual },
        ]
    );
}

#[test]
fn required_mitigations_in_both_vectors_and_only_in_v5() {
    let sp = sp(Product::Genoa);
    let v = verified(&sp, body(&sp).mitigations(0b111, 0b101));
    validate(&v, &Policy { required_mitigations: 0b101, ..pinned() }).unwrap();
    assert_eq!(
        violations(&v, &Policy { required_mitigations: 0b011, ..pinned() }),
        vec![Violation::MitigationsMissing { which: "current", required: 0b011, actual: 0b101 }]
    );
    let v = verified(&sp, body(&sp).mitigations(0b001, 0b011));
    assert_eq!(
        violations(&v, &Policy { required_mitigations: 0b010, ..pinned() }),
        vec![Violation::MitigationsMissing { which: "launch", required: 0b010, actual: 0b001 }]
    );
    let v3 = verified(&sp, body(&sp).version(3));
    validate(&v3, &pinned()).unwrap();
    assert_eq!(
        violations(&v3, &Policy { required_mitigations: 1, ..pinned() }),
        vec![Violation::MitigationsUnavailable { version: 3, required: 1 }]
    );
}

#[test]
fn certified_tcb_may_not_exceed_current_tcb() {
    let sp = sp(Product::Genoa);
    let lower = Tcb::encode(Product::Genoa, 0, 9, 0, 21, 0xd5);
    let v = verified(&sp, body(&sp).current_tcb(lower));
    let err = violations(&v, &pinned());
    assert_eq!(
        err[0],
        Violation::CertifiedTcbAboveCurrent { component: TcbComponent::Snp, certified: 22, current: 21 }
    );
    // COMMITTED (22) != CURRENT (21) as well; allowing provisional firmware leaves only the TCB claim.
    assert!(matches!(err[1..], [Violation::ProvisionalFirmware { .. }]), "{err:?}");
    let p = Policy { allow_provisional_firmware: true, ..pinned() };
    assert_eq!(violations(&v, &p).len(), 1);
    // A current TCB above the certified one is fine (REPORTED_TCB may lag).
    let higher = Tcb::encode(Product::Genoa, 0, 9, 0, 23, 0xd5);
    validate(&verified(&sp, body(&sp).current_tcb(higher)), &p).unwrap();
}

#[test]
fn id_block_and_instance_pins() {
    let sp = sp(Product::Genoa);
    let v = verified(&sp, body(&sp).family_id(&[1; 16]).image_id(&[2; 16]).report_id_ma(&[3; 32]));
    let p = Policy {
        family_id: Some(Hex([1; 16])),
        image_id: Some(Hex([2; 16])),
        report_id: Some(Hex([0x11; 32])),
        report_id_ma: Some(Hex([3; 32])),
        ..pinned()
    };
    validate(&v, &p).unwrap();
    let p = Policy {
        family_id: Some(Hex([9; 16])),
        image_id: Some(Hex([9; 16])),
        report_id: Some(Hex([9; 32])),
        report_id_ma: Some(Hex([9; 32])),
        ..pinned()
    };
    let h = |b: &[u8]| hex::encode(b);
    assert_eq!(
        violations(&v, &p),
        vec![
            Violation::FamilyId { expected: h(&[9; 16]), actual: h(&[1; 16]) },
            Violation::ImageId { expected: h(&[9; 16]), actual: h(&[2; 16]) },
            Violation::ReportId { expected: h(&[9; 32]), actual: h(&[0x11; 32]) },
            Violation::ReportIdMa { expected: h(&[9; 32]), actual: h(&[3; 32]) },
        ]
    );
}

#[test]
fn author_key_pins_need_author_key_en_and_zero_pins_are_refused() {
    let sp = sp(Product::Genoa);
    let d = [0xad; 48];
    // The digest matches but FLAGS.AUTHOR_KEY_EN is clear.
    let v = verified(&sp, body(&sp).author_key_digest(&d));
    let p = Policy { author_key_digests: vec![Hex(d)], ..Policy::default() };
    assert_eq!(violations(&v, &p), vec![Violation::AuthorKeyNotEnabled]);
    let v = verified(&sp, body(&sp).author_key_digest(&d).flags(flag_bits::AUTHOR_KEY_EN));
    validate(&v, &p).unwrap();

    // A report without an author key has a zero digest; a zero pin must never match it.
    let plain = verified(&sp, body(&sp));
    let p = Policy { author_key_digests: vec![Hex([0; 48])], ..Policy::default() };
    assert_eq!(
        violations(&plain, &p),
        vec![Violation::ZeroValuePinned { field: "author_key_digests" }, Violation::AuthorKeyNotEnabled]
    );
    // Likewise for ID keys: a zero pin is refused, a real one must match.
    let p = Policy { id_key_digests: vec![Hex([0; 48])], ..Policy::default() };
    assert_eq!(violations(&plain, &p), vec![Violation::ZeroValuePinned { field: "id_key_digests" }]);
    let p = Policy { id_key_digests: vec![Hex([0x1d; 48])], ..Policy::default() };
    assert_eq!(violations(&plain, &p), vec![Violation::IdKey { actual: hex::encode([0; 48]) }]);
    validate(&verified(&sp, body(&sp).id_key_digest(&[0x1d; 48])), &p).unwrap();
}

#[test]
fn chip_id_allow_and_deny_lists() {
    let sp = sp(Product::Genoa);
    let v = verified(&sp, body(&sp));
    let chip = sp.chip_id();
    let other = Hex([7; 64]);
    validate(&v, &Policy { allowed_chip_ids: vec![other, Hex(chip)], ..pinned() }).unwrap();
    validate(&v, &Policy { denied_chip_ids: vec![other], ..pinned() }).unwrap();
    assert_eq!(
        violations(&v, &Policy { allowed_chip_ids: vec![other], ..pinned() }),
        vec![Violation::ChipIdNotAllowed { chip_id: hex::encode(chip) }]
    );
    // Deny wins over allow.
    let p = Policy { allowed_chip_ids: vec![Hex(chip)], denied_chip_ids: vec![Hex(chip)], ..pinned() };
    assert_eq!(violations(&v, &p), vec![Violation::ChipIdDenied { chip_id: hex::encode(chip) }]);
    // A zero entry would match masked chips.
    let p = Policy { allowed_chip_ids: vec![Hex([0; 64]), Hex(chip)], ..pinned() };
    assert_eq!(violations(&v, &p), vec![Violation::ZeroValuePinned { field: "allowed_chip_ids" }]);
}

/// A genuine AWS VLEK report (Milan, masked CHIP_ID), checked at its leaf's validity;
/// `None` when the vectors are absent and skipping was asked for.
fn aws_vlek() -> Option<VerifiedReport> {
    let dv = Vectors::dev()?;
    let report = dv.read("reports/milan_v3_vlek_aws_trustee.bin");
    let leaf = dv.read("reports/milan_v3_vlek_aws_trustee.vlek.der");
    let chain = dv.read("certs/milan_vlek_cert_chain.pem");
    let input = ChainInput { leaf: &leaf, chain: Some(&chain), ..Default::default() };
    // 2024-12-11T00:00:00Z, the day after the VLEK's notBefore.
    Some(verify_report(&TrustAnchors::amd(), &report, &input, 1_733_875_200).unwrap())
}

#[test]
fn vlek_reports_follow_allow_vlek_csp_ids_and_chip_lists() {
    let Some(v) = aws_vlek() else { return };
    let base = Policy {
        accepted_products: vec!["milan".into()],
        measurements: vec![Hex(v.report().measurement())],
        // This AWS guest runs at VMPL 1 under an SVSM on uncommitted firmware.
        vmpl: Some(1),
        allow_provisional_firmware: true,
        ..Policy::default()
    };
    validate(&v, &base).unwrap();
    assert_eq!(
        violations(&v, &Policy { allow_vlek: false, ..base.clone() }),
        vec![Violation::VlekNotAllowed]
    );
    let p = Policy { accepted_csp_ids: vec!["CN=nobody.example".into()], ..base.clone() };
    assert!(matches!(violations(&v, &p)[..], [Violation::CspIdNotAccepted { .. }]));
    assert_eq!(
        violations(&v, &p),
        vec![Violation::CspIdNotAccepted { actual: Some("CN=cc-us-east-2.amazonaws.com".into()) }]
    );
    let p = Policy { accepted_csp_ids: vec!["CN=cc-us-east-2.amazonaws.com".into()], ..base.clone() };
    validate(&v, &p).unwrap();
    // Masked CHIP_ID: a chip list cannot be applied, so it refuses.
    let p = Policy { denied_chip_ids: vec![Hex([7; 64])], ..base };
    assert_eq!(violations(&v, &p), vec![Violation::ChipIdMasked]);
}

/// The new checks refuse nothing genuine: every positive vector passes once its
/// measurement is pinned and the knobs genuine fleets differ on (debug, VMPL,
/// provisional firmware, Milan) are opened.
#[test]
fn every_genuine_vector_passes_the_new_checks() {
    let sets: Vec<Vectors> = [Vectors::dev(), Vectors::heldout()].into_iter().flatten().collect();
    let mut checked = 0;
    for dv in &sets {
        let manifest = dv.manifest();
        let positives = manifest["positive"].as_array().unwrap();
        assert!(positives.len() >= 20);
        for entry in positives {
            check_genuine(dv, entry);
            checked += 1;
        }
    }
    shared_vectors::note(&format!("policy: {checked} genuine reports pass the new checks"));
}

fn check_genuine(dv: &Vectors, entry: &serde_json::Value) {
    let read = |p: &str| dv.read(p);
    {
        let name = entry["name"].as_str().unwrap();
        let report = read(entry["report"].as_str().unwrap());
        let leaf = read(entry["leaf_cert"].as_str().unwrap());
        let chain = read(entry["chain"].as_str().unwrap());
        let input = ChainInput { leaf: &leaf, chain: Some(&chain), ..Default::default() };
        let anchors = TrustAnchors::amd();
        // At 2026-09-01, or else the day after the leaf's notBefore (from its JSON).
        let v = verify_report(&anchors, &report, &input, NOW).or_else(|_| {
            let json = dv.fields_of(entry);
            let nb = json["leaf_cert"]["not_before"].as_str().unwrap();
            verify_report(&anchors, &report, &input, unix_day(nb) + 86_400)
        });
        let v = v.unwrap_or_else(|e| panic!("{name}: {e}"));
        let p = Policy {
            accepted_products: vec!["milan".into(), "genoa".into(), "turin".into()],
            measurements: vec![Hex(v.report().measurement())],
            allow_debug: true,
            allow_provisional_firmware: true,
            vmpl: None,
            ..Policy::default()
        };
        validate(&v, &p).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// "YYYY-MM-DD…" to Unix seconds at midnight UTC (days from civil).
fn unix_day(s: &str) -> u64 {
    let (y, m, d): (i64, i64, i64) =
        (s[0..4].parse().unwrap(), s[5..7].parse().unwrap(), s[8..10].parse().unwrap());
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    ((era * 146_097 + doe - 719_468) * 86_400) as u64
}
