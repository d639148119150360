//! Format-5 receipts: entries of the enclave's answer log, each leading to a signed,
//! hardware-attested checkpoint — and every way to break one.

#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use serde_bytes::ByteBuf;
use sha2::Digest;
use std::path::PathBuf;
use vouch_attestation::binding::{self, BatchClaims, LOG_BATCH_CLAIMS_VERSION};
use vouch_attestation::note::NoteSigner;
use vouch_attestation::receipt::*;
use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};
use vouch_attestation::tlog::{self, Checkpoint, CheckpointEvidence, LogClaim};
use vouch_attestation::*;

const NOW: u64 = 1_788_220_800;

fn sim() -> SimulatedSp {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor");
    SimulatedSp::from_keys(&binding::from_cbor::<SimKeyMaterial>(&std::fs::read(path).unwrap()).unwrap())
        .unwrap()
}

fn verifier(sp: &SimulatedSp) -> ReceiptVerifier {
    let mut a = TrustAnchors::amd();
    a.dangerous_add_simulated_root(sp.ark_der(), sp.product()).unwrap();
    ReceiptVerifier::new(a, Policy { measurements: vec![policy::Hex([0; 48])], ..Policy::default() }, NOW)
}

fn signer(seed: u8) -> (NoteSigner, LogClaim) {
    let key = NoteSigner::from_seed("k", &[seed; 32]).unwrap().verifier().key;
    let claim = LogClaim::for_key(&key);
    (NoteSigner::from_seed(&claim.origin, &[seed; 32]).unwrap(), claim)
}

fn leaf(i: u32) -> ReceiptLeaf {
    ReceiptLeaf {
        version: FORMAT_VERSION,
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
        replay: Some(ReplaySpec::for_tests()),
        decoding: Some(DecodingSpec::unconstrained()),
        logprobs_sha256: None,
        salt: Some(sha2::Sha256::digest(format!("salt {i}")).to_vec()),
    }
}

/// A log of exactly these leaves, signed by `seed`'s key, one attested checkpoint over
/// all of them; the receipts, and the leaf hashes a public log would show.
fn log_of(sp: &SimulatedSp, seed: u8, leaves: &[ReceiptLeaf]) -> (Vec<Vec<u8>>, Vec<merkle::Hash>) {
    let (signer, claim) = signer(seed);
    let leaves: Vec<Vec<u8>> = leaves.iter().map(binding::to_cbor).collect();
    let hashes: Vec<_> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
    let root = merkle::root(&hashes);
    let claims = BatchClaims {
        version: LOG_BATCH_CLAIMS_VERSION,
        merkle_root: root.to_vec(),
        tree_size: hashes.len() as u64,
        tls_spki_sha256: vec![1; 32],
        model_sha256: vec![],
        batch_seq: 0,
        models: vec![ByteBuf::from(vec![2; 32]), ByteBuf::from(vec![3; 32])],
        log: Some(claim.clone()),
    };
    let cb = binding::to_cbor(&claims);
    let report = sp.report(&binding::report_data(binding::BATCH_DOMAIN, &cb), &[0; 48], 0).unwrap();
    let body = Checkpoint { origin: claim.origin.clone(), size: hashes.len() as u64, root }.body();
    let note = signer.sign(&body).unwrap().to_bytes();
    let receipts = (0..leaves.len())
        .map(|i| {
            binding::to_cbor(&Receipt {
                version: FORMAT_VERSION,
                platform: "sim".into(),
                leaf: leaves[i].clone(),
                leaf_index: i as u64,
                proof: merkle::inclusion_proof(&hashes, i)
                    .into_iter()
                    .map(|h| ByteBuf::from(h.to_vec()))
                    .collect(),
                batch_claims: cb.clone(),
                bundle: ReportBundle {
                    report: report.to_vec(),
                    leaf_cert: sp.vcek_der().to_vec(),
                    chain: sp.ask_der().to_vec(),
                    crl: vec![],
                },
                checkpoint: Some(note.clone()),
            })
        })
        .collect();
    (receipts, hashes)
}

fn decoded(r: &[u8]) -> Receipt {
    binding::from_cbor(r).unwrap()
}

#[test]
fn log_receipts_verify_to_an_attested_checkpoint() {
    let sp = sim();
    let (receipts, hashes) = log_of(&sp, 1, &(0..5).map(leaf).collect::<Vec<_>>());
    let mut v = verifier(&sp);
    for (i, r) in receipts.iter().enumerate() {
        let ok = v.verify(r).unwrap();
        let cp = ok.checkpoint().unwrap();
        assert_eq!((cp.checkpoint.size, cp.checkpoint.root), (5, merkle::root(&hashes)));
        assert_eq!(cp.checkpoint.origin, signer(1).1.origin);
        assert_eq!(ok.leaf_index(), i as u64);
        // The checkpoint's evidence stands alone.
        assert_eq!(v.verify_checkpoint(&cp.evidence).unwrap(), *cp);
    }
}

#[test]
fn every_tamper_of_a_log_receipt_fails_with_its_reason() {
    let sp = sim();
    let (receipts, _) = log_of(&sp, 1, &(0..4).map(leaf).collect::<Vec<_>>());
    let base = decoded(&receipts[1]);
    let check = |r: &Receipt| verifier(&sp).verify(&binding::to_cbor(r));
    // One byte of the checkpoint note's root line: the signature no longer verifies.
    let mut r = base.clone();
    let note = r.checkpoint.as_mut().unwrap();
    let at = note.iter().position(|b| *b == b'\n').unwrap() + 1;
    note[at] = b'9';
    assert_eq!(
        check(&r).unwrap_err(),
        ReceiptError::Checkpoint(format!("the signature by {} does not verify", signer(1).1.origin))
    );
    // A checkpoint signed by another key under this log's name.
    let mut r = base.clone();
    let (other, _) = signer(2);
    let text = vouch_attestation::note::SignedNote::parse(base.checkpoint.as_ref().unwrap()).unwrap().text;
    let forged = NoteSigner::from_seed(&signer(1).1.origin, &[2; 32]).unwrap();
    r.checkpoint = Some(forged.sign(&text).unwrap().to_bytes());
    assert!(matches!(check(&r).unwrap_err(), ReceiptError::Checkpoint(e) if e.contains("no signature by")));
    // A correctly signed checkpoint of another size than the attested one.
    let (s1, c1) = signer(1);
    let other_head = Checkpoint { origin: c1.origin.clone(), size: 5, root: [0; 32] }.body();
    let mut r = base.clone();
    r.checkpoint = Some(s1.sign(&other_head).unwrap().to_bytes());
    assert!(
        matches!(check(&r).unwrap_err(), ReceiptError::Checkpoint(e) if e.contains("is not the attested one"))
    );
    drop(other);
    // No checkpoint at all.
    let mut r = base.clone();
    r.checkpoint = None;
    assert_eq!(
        check(&r).unwrap_err(),
        ReceiptError::Malformed {
            what: "receipt",
            reason: "a format 5 receipt must carry a log checkpoint".into()
        }
    );
    // The index.
    let mut r = base.clone();
    r.leaf_index = 2;
    assert_eq!(check(&r).unwrap_err(), ReceiptError::MerkleProof);
    // Relabelled format 4: refused, not read as a batch receipt.
    let mut r = base.clone();
    r.version = 4;
    assert_eq!(
        check(&r).unwrap_err(),
        ReceiptError::Malformed {
            what: "receipt",
            reason: "a format 4 receipt must not carry a log checkpoint".into()
        }
    );
}

#[test]
fn a_log_entry_is_a_salted_format_5_leaf_of_a_listed_model() {
    let sp = sim();
    let unsalted = ReceiptLeaf { salt: None, ..leaf(0) };
    let short_salt = ReceiptLeaf { salt: Some(vec![1; 31]), ..leaf(1) };
    let old = ReceiptLeaf { version: 4, salt: None, ..leaf(2) };
    let other_model = ReceiptLeaf { model_sha256: vec![4; 32], ..leaf(3) };
    let second_model = ReceiptLeaf { model_sha256: vec![3; 32], ..leaf(4) };
    let (receipts, _) = log_of(&sp, 1, &[unsalted, short_salt, old, other_model, second_model]);
    let mut v = verifier(&sp);
    let malformed = |what, reason: &str| ReceiptError::Malformed { what, reason: reason.into() };
    assert_eq!(
        v.verify(&receipts[0]).unwrap_err(),
        malformed("receipt leaf", "a format 5 leaf must carry a salt")
    );
    assert_eq!(v.verify(&receipts[1]).unwrap_err(), malformed("receipt leaf", "the salt is not 32 bytes"));
    assert_eq!(
        v.verify(&receipts[2]).unwrap_err(),
        malformed("receipt", "a format 5 receipt cannot carry a format 4 leaf")
    );
    assert!(matches!(
        v.verify(&receipts[3]).unwrap_err(),
        ReceiptError::ClaimMismatch { field: "model", .. }
    ));
    assert_eq!(v.verify(&receipts[4]).unwrap().leaf().model_sha256, vec![3; 32]);
}

#[test]
fn the_public_log_cannot_be_searched_for_a_known_prompt_and_answer() {
    // An observer who knows a request and its answer (and every other field a leaf
    // commits) but not the salt cannot find the answer's entry among the log's hashes.
    let sp = sim();
    let leaves: Vec<ReceiptLeaf> = (0..16).map(leaf).collect();
    let (_, public_hashes) = log_of(&sp, 1, &leaves);
    let target = &leaves[7];
    for guess in [None, Some(vec![0u8; 32]), Some(sha2::Sha256::digest("salt 8").to_vec())] {
        let guessed = binding::to_cbor(&ReceiptLeaf { salt: guess, ..target.clone() });
        assert!(!public_hashes.contains(&merkle::leaf_hash(&guessed)));
    }
    // The requester, holding the receipt (and so the salt), finds it.
    assert_eq!(public_hashes[7], merkle::leaf_hash(&binding::to_cbor(target)));
}

#[test]
fn two_attested_histories_of_one_log_are_a_checkable_fork() {
    let sp = sim();
    let a_leaves: Vec<ReceiptLeaf> = (0..6).map(leaf).collect();
    let mut b_leaves = a_leaves.clone();
    b_leaves[4] = leaf(40);
    // Same key (one enclave identity), two stores: two histories.
    let (ra, ha) = log_of(&sp, 1, &a_leaves[..5]);
    let (rb, hb) = log_of(&sp, 1, &b_leaves);
    let mut v = verifier(&sp);
    let ca = v.verify(&ra[0]).unwrap().checkpoint().unwrap().clone();
    let cb = v.verify(&rb[0]).unwrap().checkpoint().unwrap().clone();
    assert_eq!(ca.log, cb.log);
    let proof = merkle::consistency_proof(&hb, 5);
    let fork = tlog::check_fork(&ca.checkpoint, &cb.checkpoint, &merkle::root(&hb[..5]), &proof).unwrap();
    assert_eq!(fork.their_prefix_root, merkle::root(&hb[..5]));
    assert_ne!(fork.their_prefix_root, merkle::root(&ha));
    // The same history grown is no fork.
    let (rc, hc) = log_of(&sp, 1, &a_leaves);
    let cc = v.verify(&rc[0]).unwrap().checkpoint().unwrap().clone();
    let proof = merkle::consistency_proof(&hc, 5);
    assert!(tlog::check_fork(&ca.checkpoint, &cc.checkpoint, &merkle::root(&hc[..5]), &proof).is_err());
    // Tampered evidence of either half does not verify.
    let mut bad: CheckpointEvidence = cb.evidence.clone();
    bad.batch_claims[3] ^= 1;
    assert_eq!(v.verify_checkpoint(&bad).unwrap_err(), ReceiptError::BindingMismatch);
}
