//! The notary: the one task that owns the secure processor, and group commit.
//!
//! Trusted side. Every finished answer becomes a receipt leaf. Leaves queue here; the
//! notary asks for ONE report over the Merkle root of everything queued, and while that
//! request is in flight new leaves gather for the next batch. Idle, that is one report
//! per answer; loaded, one per batch — report latency is paid per batch, not per answer.
//! Fresh attestation requests (per client nonce) go through the same task, so the
//! secure processor never sees concurrent requests (which real hardware answers with
//! EBUSY).

use crate::provider::{AttestationProvider, ProviderError};
use serde_bytes::ByteBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use vouch_attestation::binding::{self, BatchClaims, CLAIMS_VERSION};
use vouch_attestation::merkle;
use vouch_attestation::receipt::{Evidence, Receipt, ReportBundle, FORMAT_VERSION};

/// Most leaves in one batch; more wait for the next report.
pub const MAX_BATCH: usize = 1024;
/// Leaves waiting for a report before `submit` pushes back.
pub const QUEUE_CAPACITY: usize = 4096;

enum Job {
    Leaf { model: [u8; 32], leaf: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>, String>> },
    Evidence { claims: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>, String>> },
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct NotaryStats {
    /// Reports requested from the provider.
    pub reports: AtomicU64,
    /// Receipts issued.
    pub receipts: AtomicU64,
    /// Largest batch so far.
    pub max_batch: AtomicU64,
}

/// Handle to the notary task.
#[derive(Clone, Debug)]
pub struct Notary {
    tx: mpsc::Sender<Job>,
    stats: Arc<NotaryStats>,
}

/// Why a receipt or evidence could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotaryError {
    /// The notary task has stopped (shutdown).
    #[error("notary stopped")]
    Stopped,
    /// The secure processor failed.
    #[error("{0}")]
    Provider(String),
}

impl From<ProviderError> for NotaryError {
    fn from(e: ProviderError) -> Self {
        NotaryError::Provider(e.to_string())
    }
}

impl Notary {
    /// Starts the notary on the current runtime. `group_commit = false` requests one
    /// report per answer (the baseline the benchmark compares against).
    pub fn start(
        provider: Arc<dyn AttestationProvider>,
        tls_spki_sha256: [u8; 32],
        models: Vec<[u8; 32]>,
        group_commit: bool,
    ) -> Notary {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(NotaryStats::default());
        let ctx = Ctx { provider, tls_spki_sha256, models, group_commit, stats: Arc::clone(&stats) };
        tokio::spawn(run(ctx, rx));
        Notary { tx, stats }
    }

    /// Queues a receipt leaf (CBOR `ReceiptLeaf` bytes) and waits for its receipt (CBOR).
    pub async fn receipt(&self, model: [u8; 32], leaf: Vec<u8>) -> Result<Vec<u8>, NotaryError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Leaf { model, leaf, reply }).await.map_err(|_| NotaryError::Stopped)?;
        rx.await.map_err(|_| NotaryError::Stopped)?.map_err(NotaryError::Provider)
    }

    /// Fresh evidence over `claims` (CBOR `AttestationClaims`), returned as CBOR `Evidence`.
    pub async fn evidence(&self, claims: Vec<u8>) -> Result<Vec<u8>, NotaryError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Evidence { claims, reply }).await.map_err(|_| NotaryError::Stopped)?;
        rx.await.map_err(|_| NotaryError::Stopped)?.map_err(NotaryError::Provider)
    }

    /// Counters.
    pub fn stats(&self) -> &NotaryStats {
        &self.stats
    }
}

struct Ctx {
    provider: Arc<dyn AttestationProvider>,
    tls_spki_sha256: [u8; 32],
    /// The digests of the models served: a leaf's batch claims name its model's.
    models: Vec<[u8; 32]>,
    group_commit: bool,
    stats: Arc<NotaryStats>,
}

async fn report(ctx: &Ctx, report_data: [u8; 64]) -> Result<ReportBundle, String> {
    let provider = Arc::clone(&ctx.provider);
    ctx.stats.reports.fetch_add(1, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || provider.report(&report_data))
        .await
        .map_err(|e| format!("report task: {e}"))?
        .map_err(|e| e.to_string())
}

/// A leaf waiting for its batch, and where its receipt (or the reason there is none) goes.
type PendingLeaf = (Vec<u8>, oneshot::Sender<Result<Vec<u8>, String>>);

async fn run(ctx: Ctx, mut rx: mpsc::Receiver<Job>) {
    let mut seq: u64 = 0;
    while let Some(first) = rx.recv().await {
        // Leaves by model, in the served order: each model's leaves are one batch.
        let mut by_model: Vec<Vec<PendingLeaf>> = ctx.models.iter().map(|_| Vec::new()).collect();
        let mut pending = vec![first];
        // Everything that queued while the previous report was in flight joins this batch.
        if ctx.group_commit {
            while pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => pending.push(j),
                    Err(_) => break,
                }
            }
        }
        for job in pending {
            match job {
                Job::Evidence { claims, reply } => {
                    let rd = binding::report_data(binding::ATTESTATION_DOMAIN, &claims);
                    let out = report(&ctx, rd).await.map(|bundle| {
                        binding::to_cbor(&Evidence {
                            version: FORMAT_VERSION,
                            platform: ctx.provider.platform().tag().to_owned(),
                            bundle,
                            claims,
                        })
                    });
                    let _ = reply.send(out);
                }
                Job::Leaf { model, leaf, reply } => match ctx.models.iter().position(|m| *m == model) {
                    Some(i) => by_model[i].push((leaf, reply)),
                    None => {
                        let _ = reply.send(Err(format!("model {} is not served here", hex::encode(model))));
                    }
                },
            }
        }
        for (model, leaves) in ctx.models.iter().zip(by_model) {
            if !leaves.is_empty() {
                commit(&ctx, *model, seq, leaves).await;
                seq += 1;
            }
        }
    }
}

/// Signs one batch of `model`'s leaves (number `seq`) and answers each with its receipt.
async fn commit(ctx: &Ctx, model: [u8; 32], seq: u64, leaves: Vec<PendingLeaf>) {
    let hashes: Vec<merkle::Hash> = leaves.iter().map(|(l, _)| merkle::leaf_hash(l)).collect();
    let claims = BatchClaims {
        version: CLAIMS_VERSION,
        merkle_root: merkle::root(&hashes).to_vec(),
        tree_size: hashes.len() as u64,
        tls_spki_sha256: ctx.tls_spki_sha256.to_vec(),
        model_sha256: model.to_vec(),
        batch_seq: seq,
    };
    let claims_bytes = binding::to_cbor(&claims);
    let rd = binding::report_data(binding::BATCH_DOMAIN, &claims_bytes);
    let result = report(ctx, rd).await;
    ctx.stats.max_batch.fetch_max(leaves.len() as u64, Ordering::Relaxed);
    for (i, (leaf, reply)) in leaves.into_iter().enumerate() {
        let out = result.clone().map(|bundle| {
            binding::to_cbor(&Receipt {
                version: FORMAT_VERSION,
                platform: ctx.provider.platform().tag().to_owned(),
                leaf,
                leaf_index: i as u64,
                proof: merkle::inclusion_proof(&hashes, i)
                    .into_iter()
                    .map(|h| ByteBuf::from(h.to_vec()))
                    .collect(),
                batch_claims: claims_bytes.clone(),
                bundle,
            })
        });
        ctx.stats.receipts.fetch_add(1, Ordering::Relaxed);
        let _ = reply.send(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderError;
    use std::time::Duration;
    use vouch_attestation::receipt::{ReceiptLeaf, ReceiptVerifier};
    use vouch_attestation::sim::{SimKeyMaterial, SimulatedSp};
    use vouch_attestation::{Policy, TrustAnchors};

    fn test_sp() -> SimulatedSp {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../attestation/testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor"
        );
        let keys: SimKeyMaterial = binding::from_cbor(&std::fs::read(path).unwrap()).unwrap();
        SimulatedSp::from_keys(&keys).unwrap()
    }

    fn leaf(i: u32) -> Vec<u8> {
        leaf_of(i, [2; 32])
    }

    fn leaf_of(i: u32, model: [u8; 32]) -> Vec<u8> {
        binding::to_cbor(&ReceiptLeaf {
            version: FORMAT_VERSION,
            request_sha256: vec![i as u8; 32],
            output_sha256: vec![0; 32],
            finish_reason: "stop".into(),
            temperature: 0.0,
            top_p: None,
            seed: 0,
            max_tokens: 1,
            model_sha256: model.to_vec(),
            prompt_tokens: 1,
            completion_tokens: 1,
            response_id: format!("r{i}"),
            replay: Some(vouch_attestation::receipt::ReplaySpec::for_tests()),
            decoding: Some(vouch_attestation::receipt::DecodingSpec::unconstrained()),
            logprobs_sha256: None,
        })
    }

    async fn run_32(group_commit: bool) -> (u64, Vec<Vec<u8>>, std::time::Duration) {
        let sp = test_sp();
        let notary = Notary::start(
            Arc::new(crate::provider::SimProvider::from_simulator(sp, [0; 48], Duration::from_millis(50))),
            [1; 32],
            vec![[2; 32]],
            group_commit,
        );
        let start = std::time::Instant::now();
        let mut handles = Vec::new();
        for i in 0..32 {
            let n = notary.clone();
            handles.push(tokio::spawn(async move { n.receipt([2; 32], leaf(i)).await.unwrap() }));
        }
        let mut receipts = Vec::new();
        for h in handles {
            receipts.push(h.await.unwrap());
        }
        (notary.stats().reports.load(Ordering::Relaxed), receipts, start.elapsed())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thirty_two_answers_share_few_reports_and_all_verify() {
        let sp = test_sp();
        let mut anchors = TrustAnchors::amd();
        anchors.dangerous_add_simulated_root(sp.ark_der(), sp.product()).unwrap();
        let (reports, receipts, elapsed) = run_32(true).await;
        // The first answer gets a report alone; the other 31 queue during it and share one.
        assert!(reports <= 4, "{reports} reports for 32 answers");
        assert!(elapsed < Duration::from_millis(50 * 6), "{elapsed:?}");
        let mut v = ReceiptVerifier::new(
            anchors,
            Policy { measurements: vec![vouch_attestation::policy::Hex([0; 48])], ..Policy::default() },
            1_788_220_800,
        );
        for r in &receipts {
            v.verify(r).unwrap();
        }
        let (reports_off, _, elapsed_off) = run_32(false).await;
        assert_eq!(reports_off, 32);
        assert!(elapsed_off > elapsed, "{elapsed_off:?} vs {elapsed:?}");
    }

    #[tokio::test]
    async fn provider_failure_reaches_every_waiter() {
        struct Broken;
        impl AttestationProvider for Broken {
            fn kind(&self) -> &'static str {
                "broken"
            }
            fn platform(&self) -> vouch_attestation::receipt::Platform {
                vouch_attestation::receipt::Platform::Sim
            }
            fn report(&self, _: &[u8; 64]) -> Result<ReportBundle, ProviderError> {
                Err(ProviderError::Firmware("EIO".into()))
            }
        }
        let notary = Notary::start(Arc::new(Broken), [0; 32], vec![[2; 32]], true);
        assert!(matches!(notary.receipt([2; 32], leaf(0)).await, Err(NotaryError::Provider(_))));
        assert!(matches!(notary.evidence(vec![1]).await, Err(NotaryError::Provider(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_models_answers_are_batched_under_that_model() {
        let sp = test_sp();
        let mut anchors = TrustAnchors::amd();
        anchors.dangerous_add_simulated_root(sp.ark_der(), sp.product()).unwrap();
        let (a, b) = ([2; 32], [3; 32]);
        let notary = Notary::start(
            Arc::new(crate::provider::SimProvider::from_simulator(sp, [0; 48], Duration::from_millis(20))),
            [1; 32],
            vec![a, b],
            true,
        );
        let mut handles = Vec::new();
        for i in 0..16 {
            let n = notary.clone();
            let model = if i % 2 == 0 { a } else { b };
            handles.push(tokio::spawn(
                async move { (model, n.receipt(model, leaf_of(i, model)).await.unwrap()) },
            ));
        }
        let mut v = ReceiptVerifier::new(
            anchors,
            Policy { measurements: vec![vouch_attestation::policy::Hex([0; 48])], ..Policy::default() },
            1_788_220_800,
        );
        for h in handles {
            let (model, r) = h.await.unwrap();
            // The verifier holds the leaf's model to the batch's: each batch is one model's.
            let verified = v.verify(&r).unwrap();
            assert_eq!(verified.batch().model_sha256, model.to_vec());
        }
        // A model not served gets no receipt.
        let e = notary.receipt([4; 32], leaf_of(99, [4; 32])).await.unwrap_err().to_string();
        assert_eq!(e, format!("model {} is not served here", hex::encode([4u8; 32])));
    }
}
