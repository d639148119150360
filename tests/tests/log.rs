//! The answer log end to end: receipts are entries of one log that survives restarts, a
//! store altered behind the enclave's back is refused, and two histories of one enclave
//! identity are caught by a client and proven with a portable equivocation proof.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a test failure

use std::path::Path;
use vouch_e2e::mitm::seeded_sim_dir;
use vouch_e2e::*;

fn sim_root(dir: &Path) -> String {
    dir.join("sim-ark.pem").to_str().unwrap().to_owned()
}

/// One `vouch chat` through `host_addr` remembering checkpoints in `state`; its output.
fn chat(host_addr: &str, sim: &Path, state: &Path, receipt: &Path, question: &str) -> std::process::Output {
    vouch(&[
        "chat",
        "--url",
        &format!("https://{host_addr}"),
        "--trust-sim-root",
        &sim_root(sim),
        "--state-dir",
        state.to_str().unwrap(),
        "--receipt-out",
        receipt.to_str().unwrap(),
        "--max-tokens",
        "4",
        question,
    ])
}

/// The `receipt.log` facts of a saved receipt, as `vouch verify --json` reports them.
fn log_facts(receipt: &Path, sim: &Path) -> serde_json::Value {
    let out = vouch(&["verify", receipt.to_str().unwrap(), "--trust-sim-root", &sim_root(sim), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["receipt"]["log"].clone()
}

#[test]
fn the_log_survives_a_restart_and_keeps_growing_consistently() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let log_dir = tmp.path().join("log");
    let state = tmp.path().join("client-state");
    let args = ["--log-dir", log_dir.to_str().unwrap()];
    let (mut enclave, addr) = start_enclave(&sim, &args);
    let (_host, host_addr) = start_host(&[&addr]);
    let mut origins = Vec::new();
    for (i, q) in ["Say one.", "Say two."].iter().enumerate() {
        let receipt = tmp.path().join(format!("r{i}.json"));
        let out = chat(&host_addr, &sim, &state, &receipt, q);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let facts = log_facts(&receipt, &sim);
        assert_eq!(facts["index"], i as u64, "{facts}");
        origins.push(facts["origin"].as_str().unwrap().to_owned());
    }
    enclave.kill();
    // Restarted on the same store: the same log (same origin), continued at entry 2, and
    // the client, which remembers the checkpoint of 2 entries, accepts the growth only
    // after the enclave proves it consistent.
    let (_enclave, addr) = start_enclave(&sim, &args);
    let (_host2, host_addr) = start_host(&[&addr]);
    let receipt = tmp.path().join("r2.json");
    let out = chat(&host_addr, &sim, &state, &receipt, "Say three.");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let facts = log_facts(&receipt, &sim);
    assert_eq!((facts["index"].as_u64(), facts["checkpoint_size"].as_u64()), (Some(2), Some(3)), "{facts}");
    assert_eq!(facts["origin"].as_str().unwrap(), origins[0]);
    assert_eq!(origins[0], origins[1]);
}

#[test]
fn a_store_altered_behind_the_enclaves_back_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let log_dir = tmp.path().join("log");
    let args = ["--log-dir", log_dir.to_str().unwrap()];
    let (mut enclave, addr) = start_enclave(&sim, &args);
    let (_host, host_addr) = start_host(&[&addr]);
    let state = tmp.path().join("client-state");
    for q in ["Say one.", "Say two."] {
        let out = chat(&host_addr, &sim, &state, &tmp.path().join("r.json"), q);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    enclave.kill();
    // The host rewrites one leaf hash in the store.
    let db = rusqlite::Connection::open(log_dir.join("answer-log.sqlite")).unwrap();
    db.execute("UPDATE hashes SET h = zeroblob(32) WHERE i = 0", []).unwrap();
    drop(db);
    let out = run_bounded(
        std::process::Command::new(bin("vouch-enclave")).args([
            "serve",
            "--model",
            model().to_str().unwrap(),
            "--listen",
            "tcp:127.0.0.1:0",
            "--attestation",
            "sim",
            "--sim-dir",
            sim.to_str().unwrap(),
            "--log-dir",
            log_dir.to_str().unwrap(),
        ]),
        std::time::Duration::from_secs(120),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("refusing to continue this log"), "{t}");
    assert!(t.contains("--log-epoch"), "{t}");
    assert!(!t.contains("listening on"), "{t}");
    // A new epoch is a new log, with another origin: it starts.
    let fresh = tmp.path().join("log-epoch-1");
    let (_e, _addr) = start_enclave(&sim, &["--log-dir", fresh.to_str().unwrap(), "--log-epoch", "1"]);
}

#[test]
fn two_histories_of_one_enclave_identity_are_caught_and_proven() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    // One identity (same code, same chip: same log key), two stores: the host runs two
    // copies and shows each client its own.
    let (d1, d2) = (tmp.path().join("store-1"), tmp.path().join("store-2"));
    let (_e1, a1) = start_enclave(&sim, &["--log-dir", d1.to_str().unwrap()]);
    let (_e2, a2) = start_enclave(&sim, &["--log-dir", d2.to_str().unwrap()]);
    let (_h1, host1) = start_host(&[&a1]);
    let (_h2, host2) = start_host(&[&a2]);
    let (alice, bob) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let r = tmp.path().join("r.json");
    // Each client alone sees a consistent log.
    for (host, state, q) in [(&host1, &alice, "Say one."), (&host2, &bob, "Say two.")] {
        let out = chat(host, &sim, state, &r, q);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    // Alice is routed to the other copy: one checkpoint of one entry, another root.
    let out = chat(&host2, &sim, &alice, &r, "Say three.");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("has FORKED"), "{t}");
    let proof = std::fs::read_dir(alice.join("forks")).unwrap().next().unwrap().unwrap().path();
    // Anyone can check the proof offline.
    let check = |p: &Path, extra: &[&str]| {
        let mut args = vec!["verify-proof", p.to_str().unwrap()];
        args.extend_from_slice(extra);
        vouch(&args)
    };
    let root = sim_root(&sim);
    let out = check(&proof, &["--trust-sim-root", &root]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("FORK PROVEN (SIMULATED root, NOT AMD)"), "{}", text(&out));
    // Not without trusting the simulated root; and not once a byte is altered.
    let out = check(&proof, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mut bytes = std::fs::read(&proof).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    let tampered = tmp.path().join("tampered.cbor");
    std::fs::write(&tampered, bytes).unwrap();
    let out = check(&tampered, &["--trust-sim-root", &root]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("the proof does NOT hold"), "{}", text(&out));
}

#[test]
fn the_public_log_shows_hashes_that_a_known_exchange_cannot_be_found_among() {
    use base64::Engine;
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (_e, addr) = start_enclave(&sim, &[]);
    let (_h, host) = start_host(&[&addr]);
    let receipt = tmp.path().join("r.json");
    let out = chat(&host, &sim, &tmp.path().join("s"), &receipt, "Say one.");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The requester's receipt holds the leaf (with its salt); the log's tile holds only
    // its hash.
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let receipt: vouch_attestation::receipt::Receipt =
        vouch_attestation::binding::from_cbor(&b64.decode(file["receipt"].as_str().unwrap()).unwrap())
            .unwrap();
    let leaf: vouch_attestation::receipt::ReceiptLeaf =
        vouch_attestation::binding::from_cbor(&receipt.leaf).unwrap();
    let tile = block_on_log_tile(&host, &sim, "tile/0/000.p/1");
    assert_eq!(tile, vouch_attestation::merkle::leaf_hash(&receipt.leaf).to_vec());
    // Someone who knows the request bytes and the answer text, and guesses every other
    // field, but not the salt, computes another hash.
    let request = b64.decode(file["request_body"].as_str().unwrap()).unwrap();
    let output = file["output"].as_str().unwrap();
    assert_eq!(leaf.request_sha256, sha2::Sha256::digest(&request).to_vec());
    assert_eq!(leaf.output_sha256, sha2::Sha256::digest(output.as_bytes()).to_vec());
    // Paths the log does not have are 404s with a reason, never a crash.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = sim_client(&host, &sim, None);
    for bad in [
        "/log/tile",
        "/log/tile/",
        "/log/tile/0/001",
        "/log/tile/entries/000",
        "/log/proof/2/1",
        "/log/proof/1/9",
        "/log/evidence/x",
        "/log/nothing",
    ] {
        match rt.block_on(client.log_get(bad)) {
            Err(vouch_client::client::ClientError::Enclave { status: 404, .. }) => {}
            other => panic!("{bad}: {other:?}"),
        }
    }
    let note = rt.block_on(client.log_get("/log/checkpoint")).unwrap();
    assert!(String::from_utf8_lossy(&note).contains("\n1\n"), "{}", String::from_utf8_lossy(&note));
    let guessed = vouch_attestation::receipt::ReceiptLeaf { salt: Some(vec![0; 32]), ..leaf };
    assert_ne!(
        vouch_attestation::merkle::leaf_hash(&vouch_attestation::binding::to_cbor(&guessed)).to_vec(),
        tile
    );
}

/// Fetches a `/log/` resource from the attested enclave behind `host`.
fn block_on_log_tile(host: &str, sim: &Path, path: &str) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut policy = vouch_client::policy::ClientPolicy::default();
        policy.snp.dangerous_allow_any_code = true;
        policy.offline = true;
        let mut cfg = vouch_client::client::ClientConfig::new(&format!("https://{host}"), policy);
        let root = std::fs::read(sim.join("sim-ark.pem")).unwrap();
        let der = pem_der(&root);
        cfg.anchors.dangerous_add_simulated_root(&der, vouch_attestation::Product::Genoa).unwrap();
        let client = vouch_client::client::VouchClient::new(cfg).unwrap();
        client.log_get(&format!("/log/{path}")).await.unwrap()
    })
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let s = String::from_utf8_lossy(pem);
    let body: String = s.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

/// A client of the enclave behind `host`, trusting the simulated root, remembering
/// checkpoints in `state` (any code accepted: these tests check the log, not the policy).
fn sim_client(host: &str, sim: &Path, state: Option<&Path>) -> vouch_client::client::VouchClient {
    let mut policy = vouch_client::policy::ClientPolicy::default();
    policy.snp.dangerous_allow_any_code = true;
    policy.offline = true;
    let mut cfg = vouch_client::client::ClientConfig::new(&format!("https://{host}"), policy);
    let der = pem_der(&std::fs::read(sim.join("sim-ark.pem")).unwrap());
    cfg.anchors.dangerous_add_simulated_root(&der, vouch_attestation::Product::Genoa).unwrap();
    cfg.state_dir = state.map(Path::to_owned);
    vouch_client::client::VouchClient::new(cfg).unwrap()
}

#[test]
fn every_receipt_survives_kill_9_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    const CLIENTS: usize = 3;
    const CRASHES: usize = 5;
    let tmp = tempfile::tempdir().unwrap();
    let sim = seeded_sim_dir(tmp.path());
    let (sock, log_dir) = (tmp.path().join("enclave.sock"), tmp.path().join("log"));
    let mut enclave = spawn_unix_enclave(&sim, &sock, &["--log-dir", log_dir.to_str().unwrap()]);
    let (_host, host) = start_host(&[&format!("unix:{}", sock.display())]);
    let stop = Arc::new(AtomicBool::new(false));
    let receipts: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, receipts, host, sim) = (stop.clone(), receipts.clone(), host.clone(), sim.clone());
            let failed = failed.clone();
            let state = tmp.path().join(format!("client-{c}"));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let client = sim_client(&host, &sim, Some(&state));
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut req = vouch_client::client::ChatRequest::prompt(&format!("Count to {i}."));
                    req.max_tokens = Some(2);
                    // An answer cut by a crash is an error, never a receipt: only what
                    // verified counts.
                    let got = rt.block_on(client.chat(&req, &mut |_| {}));
                    if got.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(out) = got {
                        use base64::Engine;
                        let cbor =
                            base64::engine::general_purpose::STANDARD.decode(&out.receipt_b64).unwrap();
                        receipts.lock().unwrap().push(cbor);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // kill -9 at pseudo-random moments, restart on the same store.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut x = seed | 1;
    for _ in 0..CRASHES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Long enough for the host to see the restarted enclave and answers to flow.
        std::thread::sleep(Duration::from_millis(1500 + x % 2500));
        enclave.kill();
        enclave = spawn_unix_enclave(&sim, &sock, &["--log-dir", log_dir.to_str().unwrap()]);
    }
    std::thread::sleep(Duration::from_millis(3000));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let receipts = receipts.lock().unwrap().clone();
    assert!(!receipts.is_empty(), "no answer was received");
    // Afterwards: the latest attested checkpoint, and every receipt provably in it.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = sim_client(&host, &sim, None);
    let mut anchors = vouch_attestation::TrustAnchors::amd();
    let der = pem_der(&std::fs::read(sim.join("sim-ark.pem")).unwrap());
    anchors.dangerous_add_simulated_root(&der, vouch_attestation::Product::Genoa).unwrap();
    let policy = vouch_attestation::Policy { dangerous_allow_any_code: true, ..Default::default() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut verifier = vouch_attestation::receipt::ReceiptVerifier::new(anchors, policy, now);
    let note = rt.block_on(client.log_get("/log/checkpoint")).unwrap();
    let text = vouch_attestation::note::SignedNote::parse(&note).unwrap().text;
    let size = vouch_attestation::tlog::Checkpoint::parse(&text).unwrap().size;
    let ev: vouch_attestation::tlog::CheckpointEvidence = vouch_attestation::binding::from_cbor(
        &rt.block_on(client.log_get(&format!("/log/evidence/{size}"))).unwrap(),
    )
    .unwrap();
    let latest = verifier.verify_checkpoint(&ev).unwrap().checkpoint;
    for r in &receipts {
        let v = verifier.verify(r).unwrap();
        let cp = &v.checkpoint().unwrap().checkpoint;
        assert!(
            cp.size <= latest.size,
            "a receipt's checkpoint ({}) is past the log's ({})",
            cp.size,
            latest.size
        );
        let proof: vouch_attestation::tlog::ConsistencyProof = vouch_attestation::binding::from_cbor(
            &rt.block_on(client.log_get(&format!("/log/proof/{}/{}", cp.size, latest.size))).unwrap(),
        )
        .unwrap();
        assert!(
            vouch_attestation::merkle::verify_consistency(
                cp.size,
                &cp.root,
                latest.size,
                &latest.root,
                &proof.hashes().unwrap()
            ),
            "receipt {} (checkpoint {}) is not in the log of {} entries",
            v.leaf_index(),
            cp.size,
            latest.size
        );
    }
    println!(
        "crash test: {CRASHES} kill -9 crashes under {CLIENTS} clients; {} receipts received ({} requests failed, \
         none verified), every one in the final log of {} entries (seed {seed})",
        receipts.len(),
        failed.load(Ordering::Relaxed),
        latest.size
    );
}
