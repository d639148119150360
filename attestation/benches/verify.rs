//! Report and receipt verification speed, each against the floor measured in the same
//! run: one raw ECDSA P-384 verification with aws-lc-rs.
//!
//! `cargo bench -p vouch-attestation --bench verify` prints a table and, last, one JSON
//! line (`BENCH_JSON {...}`) that `bench/run.sh` collects.
//!
//! The genuine report comes from `../shared/vectors` (not in this repository; see
//! `tests/support/shared_vectors.rs`): without it the bench fails and says where to put it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a failure is a failed run

#[path = "../tests/support/shared_vectors.rs"]
mod shared_vectors;

use std::hint::black_box;
use std::time::{Duration, Instant};
use vouch_attestation::binding::{self, BatchClaims};
use vouch_attestation::receipt::{Receipt, ReceiptLeaf, ReceiptVerifier, ReportBundle};
use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};
use vouch_attestation::*;

const NOW: u64 = 1_788_220_800;

/// Median time per call over rounds of `f`, after warm-up.
fn measure(mut f: impl FnMut()) -> Duration {
    for _ in 0..20 {
        f();
    }
    let mut samples = Vec::new();
    for _ in 0..15 {
        let n = 40;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        samples.push(t.elapsed() / n);
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let Some(vectors) = shared_vectors::Vectors::dev() else { return };
    let report = vectors.read("reports/milan_v3_mstav.bin");
    let vcek = vectors.read("reports/milan_v3_mstav.vcek.der");
    let anchors = TrustAnchors::amd();
    let input = ChainInput { leaf: &vcek, ..Default::default() };
    let verified = verify_report(&anchors, &report, &input, NOW).expect("genuine report verifies");

    // Floor: parse the VCEK's P-384 key and verify the report signature, nothing else.
    let key = cert::AmdCert::from_der(&vcek, CertRole::Vcek)
        .expect("vcek")
        .p384_public_key(CertRole::Vcek)
        .expect("key")
        .to_vec();
    let parsed = Report::parse(&report).expect("parse");
    let sig = parsed.signature_rs_be();
    let floor = measure(|| {
        let k = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
            &key,
        );
        black_box(k.verify(black_box(&report[..0x2A0]), &sig).is_ok());
    });
    let warm = measure(|| {
        black_box(verify_report_with_chain(verified.chain(), black_box(&report)).is_ok());
    });
    let cold = measure(|| {
        black_box(verify_report(&anchors, black_box(&report), &input, NOW).is_ok());
    });
    let parse = measure(|| {
        black_box(Report::parse(black_box(&report)).is_ok());
    });

    // Receipts of one batch: the report is verified once, then each receipt costs a
    // CBOR decode, a Merkle path and a few hashes.
    let keys: SimKeyMaterial = binding::from_cbor(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor"
        ))
        .expect("sim keys"),
    )
    .expect("sim keys");
    let sp = SimulatedSp::from_keys(&keys).expect("sim");
    let mut sim_anchors = TrustAnchors::amd();
    sim_anchors.dangerous_add_simulated_root(sp.ark_der(), sp.product()).expect("sim root");
    let n = 64usize;
    let leaves: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            binding::to_cbor(&ReceiptLeaf {
                version: vouch_attestation::receipt::FORMAT_VERSION,
                request_sha256: vec![i as u8; 32],
                output_sha256: vec![1; 32],
                finish_reason: "stop".into(),
                temperature: 0.0,
                top_p: None,
                seed: 0,
                max_tokens: 64,
                model_sha256: vec![2; 32],
                prompt_tokens: 30,
                completion_tokens: 20,
                response_id: format!("chatcmpl-{i}"),
                replay: Some(vouch_attestation::receipt::ReplaySpec::for_tests()),
                decoding: Some(vouch_attestation::receipt::DecodingSpec::unconstrained()),
                logprobs_sha256: None,
                salt: Some(vec![i as u8; 32]),
            })
        })
        .collect();
    let hashes: Vec<_> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
    // A format-5 log checkpoint over the leaves, signed by a log key.
    let key = vouch_attestation::note::NoteSigner::from_seed("k", &[7; 32]).expect("key").verifier().key;
    let log = vouch_attestation::tlog::LogClaim::for_key(&key);
    let signer = vouch_attestation::note::NoteSigner::from_seed(&log.origin, &[7; 32]).expect("key");
    let head = vouch_attestation::tlog::Checkpoint {
        origin: log.origin.clone(),
        size: n as u64,
        root: merkle::root(&hashes),
    };
    let note = signer.sign(&head.body()).expect("note").to_bytes();
    let claims = binding::to_cbor(&BatchClaims {
        version: binding::LOG_BATCH_CLAIMS_VERSION,
        merkle_root: merkle::root(&hashes).to_vec(),
        tree_size: n as u64,
        tls_spki_sha256: vec![3; 32],
        model_sha256: vec![],
        batch_seq: 0,
        models: vec![serde_bytes::ByteBuf::from(vec![2; 32])],
        log: Some(log),
    });
    let rep = sp.report(&binding::report_data(binding::BATCH_DOMAIN, &claims), &[0; 48], 0).expect("report");
    let receipts: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            binding::to_cbor(&Receipt {
                version: vouch_attestation::receipt::FORMAT_VERSION,
                platform: "sim".into(),
                leaf: leaves[i].clone(),
                leaf_index: i as u64,
                proof: merkle::inclusion_proof(&hashes, i)
                    .into_iter()
                    .map(|h| serde_bytes::ByteBuf::from(h.to_vec()))
                    .collect(),
                batch_claims: claims.clone(),
                bundle: ReportBundle {
                    report: rep.to_vec(),
                    leaf_cert: sp.vcek_der().to_vec(),
                    chain: sp.ask_der().to_vec(),
                    crl: vec![],
                },
                checkpoint: Some(note.clone()),
            })
        })
        .collect();
    // The strict default refuses unpinned code: pin the simulated report's measurement.
    let pinned = Policy { measurements: vec![vouch_attestation::policy::Hex([0; 48])], ..Policy::default() };
    let mut verifier = ReceiptVerifier::new(sim_anchors, pinned, NOW);
    verifier.verify(&receipts[0]).expect("receipt verifies");
    let mut i = 0;
    let receipt_cached = measure(|| {
        i = (i + 1) % n;
        black_box(verifier.verify(black_box(&receipts[i])).is_ok());
    });

    println!("verification of a genuine Milan v3 report (milan_v3_mstav), median per call:");
    println!("  floor: raw ECDSA P-384 verify (aws-lc-rs)   {:9.1} µs", us(floor));
    println!("  parse only                                  {:9.1} µs", us(parse));
    println!(
        "  warm: report against a cached chain        {:9.1} µs   {:.2}x floor (target <= 1.2x)",
        us(warm),
        us(warm) / us(floor)
    );
    println!(
        "  cold: ARK->ASK->VCEK + report               {:9.1} µs   {:.2}x floor (target <= 2000 µs)",
        us(cold),
        us(cold) / us(floor)
    );
    println!("  receipt, batch report already verified    {:9.1} µs   (target <= 50 µs)", us(receipt_cached));
    println!(
        "BENCH_JSON {{\"p384_verify_floor_us\":{:.1},\"verify_warm_us\":{:.1},\"verify_cold_us\":{:.1},\"receipt_verify_cached_us\":{:.1},\"verify_warm_over_floor\":{:.3}}}",
        us(floor),
        us(warm),
        us(cold),
        us(receipt_cached),
        us(warm) / us(floor)
    );
}
