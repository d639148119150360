//! The simulated secure processor, evidence binding and receipts, end to end through
//! the same verifier genuine reports use — plus every tamper we can think of.

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::PathBuf;
use vouch_attestation::binding::{self, AttestationClaims, BatchClaims};
use vouch_attestation::receipt::*;
use vouch_attestation::report::ReportBuilder;
use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};
use vouch_attestation::*;

const NOW: u64 = 1_788_220_800;

/// A TEST-ONLY simulated chain, committed so tests do not generate RSA-4096 keys.
fn sim() -> SimulatedSp {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor");
    let keys: SimKeyMaterial = match std::fs::read(&path) {
        Ok(b) => binding::from_cbor(&b).unwrap(),
        Err(_) => {
            let k = SimKeyMaterial::generate(Product::Genoa).unwrap();
            std::fs::write(&path, binding::to_cbor(&k)).unwrap();
            k
        }
    };
    // Genoa: the default policy refuses Milan (its reports can be forged; see
    // policy::MILAN_FORGEABLE).
    assert_eq!(keys.product, Product::Genoa, "regenerate {}", path.display());
    SimulatedSp::from_keys(&keys).unwrap()
}

/// The default policy with the measurements these tests' reports carry pinned (the
/// default refuses a policy that pins no code identity).
fn pinned() -> Policy {
    Policy { measurements: vec![policy::Hex([0; 48]), policy::Hex([9; 48])], ..Policy::default() }
}

fn anchors(sp: &SimulatedSp) -> TrustAnchors {
    let mut a = TrustAnchors::amd();
    a.dangerous_add_simulated_root(sp.ark_der(), sp.product()).unwrap();
    a
}

fn input(sp: &SimulatedSp) -> ChainInput<'_> {
    ChainInput { leaf: sp.vcek_der(), chain: Some(sp.ask_der()), crl: None, product: None }
}

#[test]
fn simulated_reports_verify_only_when_the_sim_root_is_trusted() {
    let sp = sim();
    let report = sp.report(&[7; 64], &[9; 48], 0).unwrap();
    let v = verify_report(&anchors(&sp), &report[..], &input(&sp), NOW).unwrap();
    assert!(v.is_simulated());
    assert_eq!(v.report().report_data(), [7; 64]);
    validate(&v, &pinned()).unwrap();

    // AMD roots only: the supplied sim ASK is not AMD's compiled-in ASK, so it is never
    // tried (intermediates are compiled in); without it, AMD's ASK is not the issuer.
    let amd = TrustAnchors::amd();
    let err = verify_report(&amd, &report[..], &input(&sp), NOW).unwrap_err();
    assert!(
        matches!(&err, VerifyError::UntrustedIntermediate { role: CertRole::Ask, serial, .. } if serial == "010001"),
        "{err:?}"
    );
    let bare = ChainInput { leaf: sp.vcek_der(), ..Default::default() };
    let err = verify_report(&amd, &report[..], &bare, NOW).unwrap_err();
    assert!(matches!(err, VerifyError::IssuerMismatch { role: CertRole::Vcek, .. }), "{err:?}");
    // Supplying the sim ARK in a chain does not make it trusted.
    let chain = sp.chain_pem();
    let with_root = ChainInput { leaf: sp.vcek_der(), chain: Some(chain.as_bytes()), ..Default::default() };
    let err = verify_report(&amd, &report[..], &with_root, NOW).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err:?}");
}

#[test]
fn amd_root_cannot_be_added_as_simulated() {
    let mut a = TrustAnchors::amd();
    let ark = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("roots/ark_milan.pem")).unwrap();
    // Refused on its name before its signature is looked at: it names AMD.
    let err = a.dangerous_add_simulated_root(&ark, Product::Milan).unwrap_err();
    assert!(
        matches!(&err, VerifyError::NotASimulatedRoot { reason, .. } if reason.contains("Advanced Micro Devices")),
        "{err:?}"
    );
    // The simulator's own root, but for a product it does not name.
    let sp = sim();
    let err = a.dangerous_add_simulated_root(sp.ark_der(), Product::Turin).unwrap_err();
    assert!(
        matches!(&err, VerifyError::NotASimulatedRoot { reason, .. } if reason.contains("names Genoa, not Turin")),
        "{err:?}"
    );
    a.dangerous_add_simulated_root(sp.ark_der(), Product::Genoa).unwrap();
}

#[test]
fn signed_but_inconsistent_reports_are_refused() {
    let sp = sim();
    let a = anchors(&sp);
    // REPORTED_TCB differs from the VCEK's SPLs, though correctly signed.
    let mut tcb = Tcb::decode(sp.tcb(), sp.product());
    tcb.snp += 1;
    let raw = Tcb::encode(sp.product(), 0, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode);
    let r = sp.sign(ReportBuilder::new(sp.product()).tcb(raw).chip_id(&sp.chip_id())).unwrap();
    let err = verify_report(&a, &r[..], &input(&sp), NOW).unwrap_err();
    assert_eq!(
        err,
        VerifyError::TcbMismatch { component: TcbComponent::Snp, expected: tcb.snp, actual: tcb.snp - 1 }
    );
    // CHIP_ID differs from the hwID.
    let mut chip = sp.chip_id();
    chip[0] ^= 1;
    let r = sp.sign(ReportBuilder::new(sp.product()).tcb(sp.tcb()).chip_id(&chip)).unwrap();
    assert!(matches!(verify_report(&a, &r[..], &input(&sp), NOW), Err(VerifyError::ChipIdMismatch { .. })));
    // Debug guest: authentic, but the default policy refuses it.
    let r = sp
        .sign(
            ReportBuilder::new(sp.product())
                .tcb(sp.tcb())
                .chip_id(&sp.chip_id())
                .policy(0x30000 | report::policy_bits::DEBUG),
        )
        .unwrap();
    let v = verify_report(&a, &r[..], &input(&sp), NOW).unwrap();
    assert_eq!(validate(&v, &pinned()).unwrap_err().0, vec![Violation::DebugAllowed]);
}

#[test]
fn revoked_ask_is_refused_and_crl_window_is_enforced() {
    let sp = sim();
    let a = anchors(&sp);
    let report = sp.report(&[0; 64], &[0; 48], 0).unwrap();
    let day = 86_400;
    let good = sp.crl(&[], NOW - day, NOW + day).unwrap();
    let inp = ChainInput { crl: Some(&good), ..input(&sp) };
    let v = verify_report(&a, &report[..], &inp, NOW).unwrap();
    assert!(v.chain().crl().is_some());

    let revoked = sp.crl(&[&[0x01, 0x00, 0x01]], NOW - day, NOW + day).unwrap();
    let inp = ChainInput { crl: Some(&revoked), ..input(&sp) };
    assert_eq!(
        verify_report(&a, &report[..], &inp, NOW).unwrap_err(),
        VerifyError::Revoked { role: CertRole::Ask, serial: "010001".into() }
    );
    let inp = ChainInput { crl: Some(&good), ..input(&sp) };
    assert!(matches!(verify_report(&a, &report[..], &inp, NOW + 2 * day), Err(VerifyError::CrlStale { .. })));
    assert!(matches!(verify_report(&a, &report[..], &inp, NOW - 2 * day), Err(VerifyError::CrlStale { .. })));
    let mut forged = good.clone();
    let n = forged.len();
    forged[n - 1] ^= 1;
    let inp = ChainInput { crl: Some(&forged), ..input(&sp) };
    assert!(matches!(verify_report(&a, &report[..], &inp, NOW), Err(VerifyError::CrlInvalid { .. })));
}

fn bundle(sp: &SimulatedSp, report: &[u8]) -> ReportBundle {
    ReportBundle {
        report: report.to_vec(),
        leaf_cert: sp.vcek_der().to_vec(),
        chain: sp.ask_der().to_vec(),
        crl: vec![],
    }
}

#[test]
fn evidence_binds_nonce_key_and_model() {
    let sp = sim();
    let a = anchors(&sp);
    let nonce = [5u8; 32];
    let claims = AttestationClaims {
        version: 1,
        tls_spki_sha256: vec![1; 32],
        model_sha256: vec![2; 32],
        model_name: "m".into(),
        models: Vec::new(),
        nonce: nonce.to_vec(),
        enclave_version: "0.1.0".into(),
        log: None,
    };
    let claims_bytes = binding::to_cbor(&claims);
    let rd = binding::report_data(binding::ATTESTATION_DOMAIN, &claims_bytes);
    let report = sp.report(&rd, &[0; 48], 0).unwrap();
    let ev = Evidence {
        version: vouch_attestation::receipt::FORMAT_VERSION,
        platform: "sim".into(),
        bundle: bundle(&sp, &report[..]),
        claims: claims_bytes.clone(),
    };
    let enc = binding::to_cbor(&ev);
    let v = verify_evidence(&a, &enc, &nonce, &pinned(), NOW).unwrap();
    assert_eq!(v.claims(), &claims);
    // Another nonce: replayed evidence.
    assert!(matches!(
        verify_evidence(&a, &enc, &[6; 32], &pinned(), NOW),
        Err(ReceiptError::ClaimMismatch { field: "nonce", .. })
    ));
    // Claims swapped for others (e.g. a MITM's TLS key): binding fails.
    let mut other = claims.clone();
    other.tls_spki_sha256 = vec![9; 32];
    let ev2 = Evidence { claims: binding::to_cbor(&other), ..ev.clone() };
    assert_eq!(
        verify_evidence(&a, &binding::to_cbor(&ev2), &nonce, &pinned(), NOW).unwrap_err(),
        ReceiptError::BindingMismatch
    );
    // AMD-only verifier refuses the simulated evidence by its platform tag, before
    // any signature is checked.
    assert!(matches!(
        verify_evidence(&TrustAnchors::amd(), &enc, &nonce, &pinned(), NOW),
        Err(ReceiptError::SimulatedNotTrusted)
    ));
    // Garbage and oversize.
    assert!(matches!(
        verify_evidence(&a, b"\xff\x00", &nonce, &pinned(), NOW),
        Err(ReceiptError::Malformed { .. })
    ));
    let big = vec![0u8; MAX_ENCODED_BYTES + 1];
    assert!(matches!(verify_evidence(&a, &big, &nonce, &pinned(), NOW), Err(ReceiptError::Malformed { .. })));
}

/// The last format before the answer log: one tree per batch, unsalted leaves.
const LEGACY: u32 = 4;

/// A format-4 leaf (the tests of formats 2 to 4 build on it).
fn leaf(i: u32) -> ReceiptLeaf {
    use sha2::Digest;
    ReceiptLeaf {
        version: LEGACY,
        request_sha256: sha2::Sha256::digest(format!("request {i}")).to_vec(),
        output_sha256: sha2::Sha256::digest(format!("output {i}")).to_vec(),
        finish_reason: "stop".into(),
        temperature: 0.0,
        top_p: None,
        seed: 0,
        max_tokens: 64,
        model_sha256: vec![2; 32],
        prompt_tokens: 10,
        completion_tokens: 5,
        response_id: format!("chatcmpl-{i}"),
        replay: Some(vouch_attestation::receipt::ReplaySpec::for_tests()),
        decoding: Some(vouch_attestation::receipt::DecodingSpec::unconstrained()),
        logprobs_sha256: None,
        salt: None,
    }
}

fn batch(sp: &SimulatedSp, n: u32) -> Vec<Vec<u8>> {
    batch_of(sp, (0..n).map(leaf).collect())
}

/// A signed format-4 batch of exactly these leaves.
fn batch_of(sp: &SimulatedSp, leaves: Vec<ReceiptLeaf>) -> Vec<Vec<u8>> {
    let n = leaves.len() as u32;
    let leaves: Vec<Vec<u8>> = leaves.iter().map(binding::to_cbor).collect();
    let hashes: Vec<_> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
    let root = merkle::root(&hashes);
    let claims = BatchClaims {
        version: 1,
        merkle_root: root.to_vec(),
        tree_size: n as u64,
        tls_spki_sha256: vec![1; 32],
        model_sha256: vec![2; 32],
        batch_seq: 3,
        models: vec![],
        log: None,
    };
    let cb = binding::to_cbor(&claims);
    let report = sp.report(&binding::report_data(binding::BATCH_DOMAIN, &cb), &[0; 48], 0).unwrap();
    (0..n as usize)
        .map(|i| {
            binding::to_cbor(&Receipt {
                version: LEGACY,
                platform: "sim".into(),
                leaf: leaves[i].clone(),
                leaf_index: i as u64,
                proof: merkle::inclusion_proof(&hashes, i)
                    .into_iter()
                    .map(|h| serde_bytes::ByteBuf::from(h.to_vec()))
                    .collect(),
                batch_claims: cb.clone(),
                bundle: bundle(sp, &report[..]),
                checkpoint: None,
            })
        })
        .collect()
}

#[test]
fn receipts_verify_offline_and_every_tamper_fails() {
    let sp = sim();
    let a = anchors(&sp);
    let receipts = batch(&sp, 5);
    let mut verifier = ReceiptVerifier::new(a.clone(), pinned(), NOW);
    for (i, r) in receipts.iter().enumerate() {
        let v = verifier.verify(r).unwrap();
        v.check_exchange(format!("request {i}").as_bytes(), &format!("output {i}")).unwrap();
        assert!(matches!(
            v.check_exchange(format!("request {i}").as_bytes(), "output X"),
            Err(ReceiptError::ClaimMismatch { field: "output", .. })
        ));
        assert!(matches!(
            v.check_exchange(b"other request", &format!("output {i}")),
            Err(ReceiptError::ClaimMismatch { field: "request", .. })
        ));
        assert!(v.report().is_simulated());
    }
    let decoded: Receipt = binding::from_cbor(&receipts[2]).unwrap();
    let check = |r: &Receipt| verify_receipt(&a, &binding::to_cbor(r), &pinned(), NOW);

    // Leaf swapped with another receipt's leaf: the proof no longer leads to the root.
    let mut r = decoded.clone();
    r.leaf = binding::from_cbor::<Receipt>(&receipts[3]).unwrap().leaf;
    assert_eq!(check(&r).unwrap_err(), ReceiptError::MerkleProof);
    // One byte of the leaf.
    let mut r = decoded.clone();
    let n = r.leaf.len();
    r.leaf[n - 1] ^= 1;
    assert_eq!(check(&r).unwrap_err(), ReceiptError::MerkleProof);
    // One byte of the proof.
    let mut r = decoded.clone();
    r.proof[0][0] ^= 1;
    assert_eq!(check(&r).unwrap_err(), ReceiptError::MerkleProof);
    // Index.
    let mut r = decoded.clone();
    r.leaf_index = 1;
    assert_eq!(check(&r).unwrap_err(), ReceiptError::MerkleProof);
    // Batch claims.
    let mut r = decoded.clone();
    let n = r.batch_claims.len();
    r.batch_claims[n - 1] ^= 1;
    assert_eq!(check(&r).unwrap_err(), ReceiptError::BindingMismatch);
    // Report measurement (signature).
    let mut r = decoded.clone();
    r.bundle.report[0x90] ^= 1;
    assert!(matches!(check(&r).unwrap_err(), ReceiptError::Report(VerifyError::ReportSignature { .. })));
    // Report from a different batch.
    let other: Receipt = binding::from_cbor(&batch(&sp, 2)[0]).unwrap();
    let mut r = decoded.clone();
    r.bundle.report = other.bundle.report.clone();
    assert_eq!(check(&r).unwrap_err(), ReceiptError::BindingMismatch);
    // Certificate byte.
    let mut r = decoded.clone();
    let n = r.bundle.leaf_cert.len();
    r.bundle.leaf_cert[n - 10] ^= 1;
    assert!(matches!(check(&r).unwrap_err(), ReceiptError::Report(_)));
    // Versions: format 1 (no platform tag) is refused by name, never guessed at.
    let mut r = decoded.clone();
    r.version = 1;
    assert!(matches!(
        check(&r).unwrap_err(),
        ReceiptError::UnsupportedVersion { actual: 1, expected: FORMAT_VERSION, .. }
    ));
    let mut r = decoded.clone();
    r.version = FORMAT_VERSION + 1;
    assert!(matches!(check(&r).unwrap_err(), ReceiptError::UnsupportedVersion { .. }));
    // A format-4 receipt relabelled format 5: it carries no checkpoint, so it is refused
    // rather than read as a log entry.
    let mut r = decoded.clone();
    r.version = 5;
    assert_eq!(
        check(&r).unwrap_err(),
        ReceiptError::Malformed {
            what: "receipt",
            reason: "a format 5 receipt must carry a log checkpoint".into()
        }
    );
    // AMD-only verifier: refused on the platform tag, before any signature check.
    assert_eq!(
        verify_receipt(&TrustAnchors::amd(), &receipts[0], &pinned(), NOW).unwrap_err(),
        ReceiptError::SimulatedNotTrusted
    );
    // Relabelled as hardware evidence: checked against AMD's roots only, where the
    // simulated chain cannot verify (its ASK is not AMD's compiled-in one).
    let mut r = decoded.clone();
    r.platform = "snp".into();
    assert!(matches!(
        check(&r).unwrap_err(),
        ReceiptError::Report(VerifyError::UntrustedIntermediate { role: CertRole::Ask, .. })
    ));
    // An unknown platform is refused by name.
    let mut r = decoded.clone();
    r.platform = "tdx".into();
    assert_eq!(check(&r).unwrap_err(), ReceiptError::UnknownPlatform("tdx".into()));
    // Truncated encodings never panic.
    for cut in [0, 1, 10, receipts[0].len() / 2, receipts[0].len() - 1] {
        assert!(matches!(
            verify_receipt(&a, &receipts[0][..cut], &pinned(), NOW).unwrap_err(),
            ReceiptError::Malformed { .. }
        ));
    }
}

/// The fuzz seeds of `evidence` and `receipt` (fuzz/corpus, Vouch's own, signed with the
/// TEST-ONLY keys) verify to the end, so the fuzzer starts from inputs that reach the
/// binding and Merkle code — and a format change that forgets to regenerate them fails.
#[test]
fn committed_fuzz_seeds_verify_to_the_end() {
    let sp = sim();
    let a = anchors(&sp);
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let any_code = Policy { dangerous_allow_any_code: true, ..Policy::default() };
    let mut seen = 0;
    for dir in ["evidence", "receipt"] {
        for f in std::fs::read_dir(corpus.join(dir)).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            match dir {
                "evidence" => {
                    verify_evidence(&a, &bytes, &[0x42; 32], &any_code, NOW).unwrap();
                }
                _ => {
                    verify_receipt(&a, &bytes, &any_code, NOW).unwrap();
                }
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
}

#[test]
fn format_2_leaves_still_verify_and_no_leaf_is_read_as_the_other_format() {
    let sp = sim();
    let a = anchors(&sp);
    let v2 = ReceiptLeaf { version: 2, replay: None, decoding: None, ..leaf(0) };
    let v3_without_spec = ReceiptLeaf { version: 3, replay: None, decoding: None, ..leaf(1) };
    let v2_with_spec = ReceiptLeaf { version: 2, decoding: None, ..leaf(2) };
    let receipts = batch_of(&sp, vec![v2.clone(), v3_without_spec, v2_with_spec, leaf(3)]);
    let mut verifier = ReceiptVerifier::new(a, pinned(), NOW);
    // A format-2 answer (issued before replay specs) verifies as before, spec-less.
    let verified = verifier.verify(&receipts[0]).unwrap();
    assert_eq!(verified.leaf(), &v2);
    assert!(verified.leaf().replay.is_none());
    assert_eq!(
        verifier.verify(&receipts[1]).unwrap_err(),
        ReceiptError::Malformed {
            what: "receipt leaf",
            reason: "a format 3 leaf must carry a replay spec".into()
        }
    );
    assert_eq!(
        verifier.verify(&receipts[2]).unwrap_err(),
        ReceiptError::Malformed {
            what: "receipt leaf",
            reason: "a format 2 leaf must not carry a replay spec".into()
        }
    );
    assert_eq!(verifier.verify(&receipts[3]).unwrap().leaf().replay, Some(ReplaySpec::for_tests()));
}

#[test]
fn format_3_leaves_still_verify_and_a_decoding_spec_goes_with_format_4_only() {
    let sp = sim();
    let v3 = ReceiptLeaf { version: 3, decoding: None, ..leaf(0) };
    let v4_without = ReceiptLeaf { decoding: None, ..leaf(1) };
    let v3_with = ReceiptLeaf { version: 3, ..leaf(2) };
    let stopped = DecodingSpec { stop: vec!["Berlin".into()], ..DecodingSpec::unconstrained() };
    let v4 = ReceiptLeaf { decoding: Some(stopped.clone()), ..leaf(3) };
    let receipts = batch_of(&sp, vec![v3.clone(), v4_without, v3_with, v4]);
    let mut verifier = ReceiptVerifier::new(anchors(&sp), pinned(), NOW);
    // A format-3 answer (decoded with no stop strings, penalties or bias) verifies as before.
    assert_eq!(verifier.verify(&receipts[0]).unwrap().leaf(), &v3);
    assert_eq!(
        verifier.verify(&receipts[1]).unwrap_err(),
        ReceiptError::Malformed {
            what: "receipt leaf",
            reason: "a format 4 leaf must carry a decoding spec".into()
        }
    );
    assert_eq!(
        verifier.verify(&receipts[2]).unwrap_err(),
        ReceiptError::Malformed {
            what: "receipt leaf",
            reason: "a format 3 leaf must not carry a decoding spec".into()
        }
    );
    assert_eq!(verifier.verify(&receipts[3]).unwrap().leaf().decoding, Some(stopped));
}

#[test]
fn a_malformed_decoding_spec_is_refused() {
    let sp = sim();
    let u = DecodingSpec::unconstrained;
    let bad = [
        (DecodingSpec { stop: vec!["a".into(); 5], ..u() }, "stop must be at most 4 non-empty strings"),
        (DecodingSpec { stop: vec![String::new()], ..u() }, "stop must be at most 4 non-empty strings"),
        (
            DecodingSpec { logit_bias: vec![(5, 1.0), (5, 2.0)], ..u() },
            "logit_bias ids must be strictly ascending",
        ),
        (DecodingSpec { choice_index: 1, ..u() }, "choice 1 of n = 1"),
        (DecodingSpec { response_format: "yaml".into(), ..u() }, "unknown response_format \"yaml\""),
        (
            DecodingSpec { response_format: "json_object".into(), ..u() },
            "a grammar digest goes with a constrained response_format, and only with one",
        ),
        (DecodingSpec { tools_sha256: Some(vec![0; 31]), ..u() }, "digests are 32 bytes"),
    ];
    let leaves =
        bad.iter().enumerate().map(|(i, (d, _))| ReceiptLeaf { decoding: Some(d.clone()), ..leaf(i as u32) });
    let receipts = batch_of(&sp, leaves.collect());
    let mut verifier = ReceiptVerifier::new(anchors(&sp), pinned(), NOW);
    for (r, (_, reason)) in receipts.iter().zip(bad) {
        assert_eq!(
            verifier.verify(r).unwrap_err(),
            ReceiptError::Malformed { what: "receipt leaf decoding spec", reason: reason.into() }
        );
    }
}

#[test]
fn a_leaf_naming_an_unknown_seed_source_is_refused() {
    let sp = sim();
    let with_source = |i: u32, source: &str| ReceiptLeaf {
        replay: Some(ReplaySpec { seed_source: source.into(), ..ReplaySpec::for_tests() }),
        ..leaf(i)
    };
    let receipts = batch_of(
        &sp,
        vec![
            with_source(0, SEED_FROM_REQUEST),
            with_source(1, SEED_FROM_ENCLAVE),
            with_source(2, SEED_FROM_CLIENT),
            with_source(3, "Enclave"),
        ],
    );
    let mut verifier = ReceiptVerifier::new(anchors(&sp), pinned(), NOW);
    for r in &receipts[..3] {
        verifier.verify(r).unwrap();
    }
    assert_eq!(
        verifier.verify(&receipts[3]).unwrap_err(),
        ReceiptError::Malformed { what: "receipt leaf", reason: "unknown seed source \"Enclave\"".into() }
    );
}

#[test]
fn token_ids_hash_as_little_endian_u32s() {
    use sha2::Digest;
    let expected: [u8; 32] = sha2::Sha256::digest([1u8, 0, 0, 0, 0, 1, 0, 0]).into();
    assert_eq!(token_ids_sha256(&[1, 256]), expected);
    assert_ne!(token_ids_sha256(&[1, 256]), token_ids_sha256(&[256, 1]));
}

#[test]
fn a_logprobs_digest_goes_with_a_spec_returning_logprobs_and_only_with_one() {
    let sp = sim();
    let returned = DecodingSpec { logprobs: Some(3), ..DecodingSpec::unconstrained() };
    let digest = vouch_attestation::receipt::logprobs_sha256(&[]).to_vec();
    let good =
        ReceiptLeaf { decoding: Some(returned.clone()), logprobs_sha256: Some(digest.clone()), ..leaf(0) };
    let leaves = vec![
        good.clone(),
        ReceiptLeaf { decoding: Some(returned.clone()), ..leaf(1) },
        ReceiptLeaf { logprobs_sha256: Some(digest.clone()), ..leaf(2) },
        ReceiptLeaf { decoding: Some(returned), logprobs_sha256: Some(vec![0; 31]), ..leaf(3) },
    ];
    let receipts = batch_of(&sp, leaves);
    let mut verifier = ReceiptVerifier::new(anchors(&sp), pinned(), NOW);
    assert_eq!(verifier.verify(&receipts[0]).unwrap().leaf(), &good);
    for r in &receipts[1..] {
        assert_eq!(
            verifier.verify(r).unwrap_err(),
            ReceiptError::Malformed {
                what: "receipt leaf",
                reason: "a 32-byte logprobs digest goes with a spec returning log-probabilities, and only with one"
                    .into()
            }
        );
    }
}

#[test]
fn the_logprobs_digest_covers_every_byte_and_bit() {
    use vouch_attestation::receipt::{logprobs_sha256, LogprobEntry};
    let e = |b: &[u8], l: f64, top: Vec<(Vec<u8>, f64)>| LogprobEntry { bytes: b.to_vec(), logprob: l, top };
    let base = vec![
        e(b"Ber", -0.5, vec![(b"Ber".to_vec(), -0.5), (b"Par".to_vec(), -1.25)]),
        e(b"lin", -0.01, vec![]),
    ];
    let d = logprobs_sha256(&base);
    let mut changed = Vec::new();
    let mut v = base.clone();
    v[0].bytes = b"Bex".to_vec();
    changed.push(v);
    let mut v = base.clone();
    v[1].logprob = f64::from_bits((-0.01f64).to_bits() + 1);
    changed.push(v);
    let mut v = base.clone();
    v[0].top.pop();
    changed.push(v);
    let mut v = base.clone();
    v[0].top[1].1 = -1.5;
    changed.push(v);
    // Bytes moved between tokens: the lengths are covered.
    changed.push(vec![e(b"Be", -0.5, base[0].top.clone()), e(b"rlin", -0.01, vec![])]);
    changed.push(base[..1].to_vec());
    for c in changed {
        assert_ne!(logprobs_sha256(&c), d, "{c:?}");
    }
    assert_eq!(logprobs_sha256(&base), d);
}

#[test]
fn the_simulated_derived_key_depends_on_chip_measurement_and_context_only() {
    let sp = sim();
    let k = sp.derived_key(&[1; 48], b"log");
    // Deterministic: a restart (a new simulator from the same keys) derives it again.
    assert_eq!(sim().derived_key(&[1; 48], b"log"), k);
    assert_ne!(sp.derived_key(&[2; 48], b"log"), k);
    assert_ne!(sp.derived_key(&[1; 48], b"log2"), k);
    // Another chip (same keys, another chip id) derives another key.
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor");
    let mut keys: SimKeyMaterial = binding::from_cbor(&std::fs::read(path).unwrap()).unwrap();
    keys.chip_id[0] ^= 1;
    assert_ne!(SimulatedSp::from_keys(&keys).unwrap().derived_key(&[1; 48], b"log"), k);
}
