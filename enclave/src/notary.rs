//! The notary: the one task that owns the secure processor and the answer log, and
//! group commit.
//!
//! Trusted side. Every finished answer becomes a receipt leaf. Leaves queue here; the
//! notary appends everything queued to the answer log ([`crate::answer_log`]), signs the
//! new checkpoint, asks for ONE report over it, makes the batch durable, and only then
//! releases the receipts; while that is in flight new leaves gather for the next batch.
//! Idle, that is one report per answer; loaded, one per batch — report latency and the
//! fsync are paid per batch, not per answer. Fresh attestation requests (per client
//! nonce) go through the same task, so the secure processor never sees concurrent
//! requests (which real hardware answers with EBUSY).

use crate::answer_log::AnswerLog;
use crate::provider::{AttestationProvider, ProviderError};
use serde_bytes::ByteBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use vouch_attestation::binding::{self, BatchClaims, LOG_BATCH_CLAIMS_VERSION};
use vouch_attestation::merkle;
use vouch_attestation::receipt::{Evidence, Receipt, ReportBundle, FORMAT_VERSION};
use vouch_attestation::tlog::{CheckpointEvidence, LogClaim};

/// The answer log, shared by the notary (the one writer) and the `/log/` readers.
pub type SharedLog = Arc<Mutex<AnswerLog>>;

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
    log: SharedLog,
    log_claim: LogClaim,
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
        log: AnswerLog,
        group_commit: bool,
    ) -> Notary {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(NotaryStats::default());
        let log_claim = log.claim().clone();
        let log = Arc::new(Mutex::new(log));
        let ctx = Ctx {
            provider,
            tls_spki_sha256,
            models,
            group_commit,
            stats: Arc::clone(&stats),
            log: Arc::clone(&log),
            log_claim: log_claim.clone(),
        };
        tokio::spawn(run(ctx, rx));
        Notary { tx, stats, log, log_claim }
    }

    /// The answer log (for its readers: checkpoint, tiles, evidence, proofs).
    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// The log's origin and key, as the attestation claims bind them.
    pub fn log_claim(&self) -> &LogClaim {
        &self.log_claim
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
    log: SharedLog,
    log_claim: LogClaim,
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
    while let Some(first) = rx.recv().await {
        let mut pending = vec![first];
        // Everything that queued while the previous batch was in flight joins this one.
        if ctx.group_commit {
            while pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => pending.push(j),
                    Err(_) => break,
                }
            }
        }
        let mut leaves = Vec::new();
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
                Job::Leaf { model, leaf, reply } => match ctx.models.contains(&model) {
                    true => leaves.push((leaf, reply)),
                    false => {
                        let _ = reply.send(Err(format!("model {} is not served here", hex::encode(model))));
                    }
                },
            }
        }
        if !leaves.is_empty() {
            commit(&ctx, leaves).await;
        }
    }
}

/// Runs `f` on the log from a blocking thread (SQLite reads and the fsync'd commit).
async fn with_log<T: Send + 'static>(
    log: &SharedLog,
    f: impl FnOnce(&mut AnswerLog) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || {
        let mut guard = log.lock().map_err(|_| "the answer log is unusable after a panic".to_owned())?;
        f(&mut guard)
    })
    .await
    .map_err(|e| format!("answer log task: {e}"))?
}

/// Appends one batch of leaves to the log, gets the new checkpoint attested, makes it
/// durable, and only then answers each leaf with its receipt. Any failure answers every
/// leaf with the reason and leaves the log as it was.
async fn commit(ctx: &Ctx, leaves: Vec<PendingLeaf>) {
    let (replies, leaves): (Vec<_>, Vec<_>) = leaves.into_iter().map(|(l, r)| (r, l)).unzip();
    let out = commit_batch(ctx, leaves).await;
    ctx.stats.max_batch.fetch_max(replies.len() as u64, Ordering::Relaxed);
    match out {
        Ok(receipts) => {
            for (reply, receipt) in replies.into_iter().zip(receipts) {
                ctx.stats.receipts.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Ok(receipt));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "receipt batch failed");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

async fn commit_batch(ctx: &Ctx, leaves: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
    let hashes: Vec<merkle::Hash> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
    let (staged, note, seq) = with_log(&ctx.log, move |log| {
        let staged = log.stage(&hashes).map_err(|e| e.to_string())?;
        let note = log.sign(&staged);
        Ok((staged, note, log.seq()))
    })
    .await?;
    let claims = BatchClaims {
        version: LOG_BATCH_CLAIMS_VERSION,
        merkle_root: staged.root.to_vec(),
        tree_size: staged.size,
        tls_spki_sha256: ctx.tls_spki_sha256.to_vec(),
        model_sha256: Vec::new(),
        batch_seq: seq,
        models: ctx.models.iter().map(|m| ByteBuf::from(m.to_vec())).collect(),
        log: Some(ctx.log_claim.clone()),
    };
    let claims_bytes = binding::to_cbor(&claims);
    let bundle = report(ctx, binding::report_data(binding::BATCH_DOMAIN, &claims_bytes)).await?;
    let platform = ctx.provider.platform().tag().to_owned();
    let evidence = CheckpointEvidence {
        version: FORMAT_VERSION,
        platform: platform.clone(),
        checkpoint: note.clone(),
        batch_claims: claims_bytes.clone(),
        bundle: bundle.clone(),
    };
    let first = staged.size - leaves.len() as u64;
    with_log(&ctx.log, move |log| {
        let proofs = (0..leaves.len() as u64)
            .map(|i| log.inclusion(&staged, first + i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        // Durable before any receipt leaves the enclave.
        log.commit(staged, &evidence).map_err(|e| e.to_string())?;
        Ok(leaves
            .into_iter()
            .zip(proofs)
            .enumerate()
            .map(|(i, (leaf, proof))| {
                binding::to_cbor(&Receipt {
                    version: FORMAT_VERSION,
                    platform: platform.clone(),
                    leaf,
                    leaf_index: first + i as u64,
                    proof: proof.into_iter().map(|h| ByteBuf::from(h.to_vec())).collect(),
                    batch_claims: claims_bytes.clone(),
                    bundle: bundle.clone(),
                    checkpoint: Some(note.clone()),
                })
            })
            .collect())
    })
    .await
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
            salt: Some(vec![i as u8; 32]),
        })
    }

    fn test_log(dir: &tempfile::TempDir) -> AnswerLog {
        AnswerLog::open(dir.path(), &[6; 32]).unwrap()
    }

    async fn run_32(group_commit: bool) -> (u64, Vec<Vec<u8>>, std::time::Duration) {
        let sp = test_sp();
        let dir = tempfile::tempdir().unwrap();
        let notary = Notary::start(
            Arc::new(crate::provider::SimProvider::from_simulator(sp, [0; 48], Duration::from_millis(50))),
            [1; 32],
            vec![[2; 32]],
            test_log(&dir),
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
        // Every receipt is an entry of one log, at its own index, leading to an attested
        // checkpoint of that log.
        let mut indexes = Vec::new();
        for r in &receipts {
            let verified = v.verify(r).unwrap();
            let cp = verified.checkpoint().unwrap();
            assert!(verified.leaf_index() < cp.checkpoint.size);
            indexes.push(verified.leaf_index());
        }
        indexes.sort_unstable();
        assert_eq!(indexes, (0..32).collect::<Vec<u64>>());
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
        let dir = tempfile::tempdir().unwrap();
        let notary = Notary::start(Arc::new(Broken), [0; 32], vec![[2; 32]], test_log(&dir), true);
        assert!(matches!(notary.receipt([2; 32], leaf(0)).await, Err(NotaryError::Provider(_))));
        assert!(matches!(notary.evidence(vec![1]).await, Err(NotaryError::Provider(_))));
        // Nothing unattested entered the log.
        assert_eq!(notary.log().lock().unwrap().size(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_models_answers_share_the_one_log() {
        let sp = test_sp();
        let mut anchors = TrustAnchors::amd();
        anchors.dangerous_add_simulated_root(sp.ark_der(), sp.product()).unwrap();
        let (a, b) = ([2; 32], [3; 32]);
        let dir = tempfile::tempdir().unwrap();
        let notary = Notary::start(
            Arc::new(crate::provider::SimProvider::from_simulator(sp, [0; 48], Duration::from_millis(20))),
            [1; 32],
            vec![a, b],
            test_log(&dir),
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
            // The verifier holds the leaf's model to the ones the checkpoint's report names.
            let verified = v.verify(&r).unwrap();
            assert_eq!(verified.leaf().model_sha256, model.to_vec());
            assert!(verified.batch().covers_model(&a) && verified.batch().covers_model(&b));
        }
        // A model not served gets no receipt.
        let e = notary.receipt([4; 32], leaf_of(99, [4; 32])).await.unwrap_err().to_string();
        assert_eq!(e, format!("model {} is not served here", hex::encode([4u8; 32])));
    }
}
