//! `vouch verify-proof FILE`: checks an equivocation proof — two hardware-attested
//! checkpoints of one answer log that cannot both be in one append-only log — as written
//! by `vouch chat` or `vouch proxy` when they catch a fork. Anyone with the AMD roots (or,
//! for a simulated enclave, its root) can run it; nothing is fetched.

use super::{load_anchors, load_policy, now_unix, out_json, read_file, CliError, TrustArgs};
use clap::Args;
use std::path::PathBuf;
use vouch_attestation::receipt::ReceiptVerifier;
use vouch_attestation::tlog::{self, EquivocationProof, EQUIVOCATION_FORMAT};

/// `vouch verify-proof`.
#[derive(Debug, Args)]
pub struct VerifyProofArgs {
    /// The equivocation proof (CBOR, `vouch-log-fork/1`).
    #[arg(value_name = "FILE")]
    pub proof: PathBuf,
    /// Verification time, Unix seconds (default: now).
    #[arg(long, value_name = "UNIX_SECS")]
    pub now: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub trust: TrustArgs,
}

/// Runs `vouch verify-proof`: `Ok` when the proof holds (a fork is proven).
pub fn run(a: VerifyProofArgs) -> Result<(), CliError> {
    let policy = load_policy(&a.trust)?;
    let (anchors, _) = load_anchors(&a.trust)?;
    let bytes = read_file(&a.proof)?;
    let not = |why: String| CliError::ProofDoesNotHold(format!("{}: {why}", a.proof.display()));
    let proof: EquivocationProof = vouch_attestation::binding::from_cbor(&bytes)
        .map_err(|e| not(format!("not an equivocation proof: {e}")))?;
    if proof.format != EQUIVOCATION_FORMAT {
        return Err(not(format!("format {:?} is not {EQUIVOCATION_FORMAT}", proof.format)));
    }
    let mut verifier = ReceiptVerifier::new(anchors, policy.snp.clone(), a.now.unwrap_or_else(now_unix));
    let first =
        verifier.verify_checkpoint(&proof.a).map_err(|e| not(format!("the first checkpoint: {e}")))?;
    let second =
        verifier.verify_checkpoint(&proof.b).map_err(|e| not(format!("the second checkpoint: {e}")))?;
    if first.log != second.log {
        return Err(not(format!(
            "the checkpoints are of two logs ({} and {})",
            first.log.origin, second.log.origin
        )));
    }
    let hashes =
        tlog::ConsistencyProof { first: 0, second: 0, prefix_root: vec![], proof: proof.proof.clone() }
            .hashes()
            .map_err(not)?;
    let fork =
        tlog::check_fork(&first.checkpoint, &second.checkpoint, &proof.prefix_root, &hashes).map_err(not)?;
    let simulated = first.evidence.platform == "sim";
    let facts = serde_json::json!({
        "fork": true,
        "origin": fork.origin,
        "simulated": simulated,
        "first": {"size": fork.first.size, "root": hex::encode(fork.first.root)},
        "second": {"size": fork.second.size, "root": hex::encode(fork.second.root)},
        "second_tree_root_at_first_size": hex::encode(fork.their_prefix_root),
        "measurement": hex::encode(first.measurement),
        "chip_id": hex::encode(&first.chip_id),
    });
    if a.trust.json {
        out_json(&facts);
        return Ok(());
    }
    println!(
        "FORK PROVEN{}: log {} signed two histories",
        if simulated { " (SIMULATED root, NOT AMD)" } else { "" },
        fork.origin
    );
    println!("  checkpoint   {} entries, root {}", fork.first.size, hex::encode(fork.first.root));
    println!("  checkpoint   {} entries, root {}", fork.second.size, hex::encode(fork.second.root));
    if fork.first.size != fork.second.size {
        println!(
            "  the second tree's first {} entries have root {}, not the first checkpoint's",
            fork.first.size,
            hex::encode(fork.their_prefix_root)
        );
    }
    println!(
        "  both attested by measurement {} on chip {}",
        hex::encode(first.measurement),
        hex::encode(&first.chip_id[..8])
    );
    Ok(())
}
