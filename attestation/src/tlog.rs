//! The answer log: one append-only RFC 6962 log per enclave identity, holding every
//! finished answer's (salted) receipt leaf, with checkpoints in the C2SP tlog-checkpoint
//! format, each signed by the log key and bound to a hardware report.
//!
//! Both sides: the enclave appends and signs; clients, witnesses and auditors check that
//! every checkpoint they see is attested and that checkpoints only ever grow consistently.
//! Two attested checkpoints of one log that cannot both be prefixes of one tree are an
//! [`EquivocationProof`]: portable, checkable by anyone with the AMD roots.
//!
//! ```text
//!  batch claims v2 ── REPORT_DATA ── report (AMD-signed)
//!    ├─ log: origin + Ed25519 key ─► verifies the checkpoint note's signature
//!    └─ tree_size + merkle_root    ─► equal the checkpoint body's size and root
//!  checkpoint body:  "<origin>\n<size>\n<base64 root>\n"
//! ```

use crate::merkle::{self, Hash};
use crate::note::{NoteVerifier, SignedNote};
use crate::receipt::ReportBundle;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every Vouch log origin starts with this; the rest names the log key.
pub const ORIGIN_PREFIX: &str = "vouch.log/";
/// Format tag of [`EquivocationProof`].
pub const EQUIVOCATION_FORMAT: &str = "vouch-log-fork/1";

/// The origin of the log signed by `key`: `vouch.log/` and the first 8 bytes of the key's
/// SHA-256 in hex. One key, one log: an enclave identity cannot run two logs under one
/// origin without the two being one log's fork.
pub fn origin_for(key: &[u8; 32]) -> String {
    let d = Sha256::digest(key);
    format!("{ORIGIN_PREFIX}{}", hex::encode(&d[..8]))
}

/// The log a hardware report vouches for: its origin and Ed25519 key. Carried in the
/// attestation claims (version 3) and in every batch claims (version 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogClaim {
    /// [`origin_for`] the key.
    pub origin: String,
    /// The Ed25519 public key that signs the log's checkpoints.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
}

impl LogClaim {
    /// The claim of the log signed by `key`.
    pub fn for_key(key: &[u8; 32]) -> LogClaim {
        LogClaim { origin: origin_for(key), key: key.to_vec() }
    }

    /// The note verifier of the log's checkpoints, once the claim is checked: a 32-byte
    /// key whose origin is the one [`origin_for`] gives.
    pub fn verifier(&self) -> Result<NoteVerifier, String> {
        let key: [u8; 32] =
            self.key.as_slice().try_into().map_err(|_| "the log key is not 32 bytes".to_owned())?;
        if self.origin != origin_for(&key) {
            return Err(format!(
                "log origin {:?} is not the one its key names ({})",
                self.origin,
                origin_for(&key)
            ));
        }
        Ok(NoteVerifier { name: self.origin.clone(), key })
    }
}

/// A checkpoint's body (C2SP tlog-checkpoint; Vouch writes no extension lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root over them.
    pub root: Hash,
}

impl Checkpoint {
    /// The body text: origin, size and base64 root, a line each.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }

    /// Parses a checkpoint body, ignoring extension lines.
    pub fn parse(text: &str) -> Result<Checkpoint, String> {
        let mut lines = text.split('\n');
        let (origin, size, root) = match (lines.next(), lines.next(), lines.next()) {
            (Some(o), Some(s), Some(r)) if !o.is_empty() => (o, s, r),
            _ => return Err("a checkpoint has an origin, a size and a root line".into()),
        };
        let size_ok = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size: u64 = match size_ok {
            true => size.parse().map_err(|_| format!("checkpoint size {size:?} is out of range"))?,
            false => return Err(format!("checkpoint size {size:?} is not a decimal number")),
        };
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| format!("checkpoint root {root:?} is not 32 base64 bytes"))?;
        Ok(Checkpoint { origin: origin.to_owned(), size, root })
    }
}

/// A checkpoint with what makes it checkable by anyone: its signed note, the batch claims
/// bound into the report, and the report. What `/log/evidence/SIZE` serves, and the two
/// halves of an equivocation proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEvidence {
    /// Receipt format version ([`crate::receipt::FORMAT_VERSION`], 5 on).
    pub version: u32,
    /// Platform tag (`snp`, `sim`).
    pub platform: String,
    /// The signed checkpoint note.
    #[serde(with = "serde_bytes")]
    pub checkpoint: Vec<u8>,
    /// CBOR batch claims (version 2), exactly the bytes hashed into REPORT_DATA.
    #[serde(with = "serde_bytes")]
    pub batch_claims: Vec<u8>,
    /// Report and certificates.
    pub bundle: ReportBundle,
}

/// A consistency proof between two sizes of one log, as `/log/proof/FIRST/SECOND` serves
/// it: the RFC 9162 proof, and the log's root over the first `first` leaves (which the
/// proof leaves out when `first` is a power of two, and which a fork proof needs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The smaller size.
    pub first: u64,
    /// The larger size.
    pub second: u64,
    /// The log's root at `first`.
    #[serde(with = "serde_bytes")]
    pub prefix_root: Vec<u8>,
    /// The proof hashes.
    pub proof: Vec<serde_bytes::ByteBuf>,
}

impl ConsistencyProof {
    /// The proof hashes, if each is 32 bytes and there are at most 64.
    pub fn hashes(&self) -> Result<Vec<Hash>, String> {
        if self.proof.len() > crate::receipt::MAX_PROOF_LEN {
            return Err("the consistency proof is too long".into());
        }
        self.proof
            .iter()
            .map(|h| {
                <[u8; 32]>::try_from(h.as_slice()).map_err(|_| "a proof hash is not 32 bytes".to_owned())
            })
            .collect()
    }
}

/// Checks that a signed `note` is the checkpoint `(origin, size, root)` signed by `log`.
pub fn check_note(note: &[u8], log: &LogClaim, size: u64, root: &[u8]) -> Result<Checkpoint, String> {
    let verifier = log.verifier()?;
    let note = SignedNote::parse(note).map_err(|e| e.to_string())?;
    verifier.verify(&note).map_err(|e| e.to_string())?;
    let cp = Checkpoint::parse(&note.text)?;
    if cp.origin != log.origin || cp.size != size || cp.root[..] != *root {
        return Err(format!(
            "the checkpoint ({} size {}) is not the attested one ({} size {size})",
            cp.origin, cp.size, log.origin
        ));
    }
    Ok(cp)
}

/// Two attested checkpoints of one log that cannot both be in one append-only log.
///
/// Same size: their roots differ. Different sizes: `proof` is a consistency proof from
/// the smaller to the larger checkpoint's size whose larger root is the larger
/// checkpoint's and whose smaller root — `prefix_root` where the proof omits it — is not
/// the smaller checkpoint's: the larger tree's first leaves are another history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EquivocationProof {
    /// [`EQUIVOCATION_FORMAT`].
    pub format: String,
    /// One checkpoint.
    pub a: CheckpointEvidence,
    /// The other.
    pub b: CheckpointEvidence,
    /// The larger tree's root over the smaller one's size (used where the proof leaves
    /// it out, when that size is a power of two).
    #[serde(with = "serde_bytes")]
    pub prefix_root: Vec<u8>,
    /// Consistency proof from the smaller size to the larger, as the larger log gave it.
    pub proof: Vec<serde_bytes::ByteBuf>,
}

/// Why two checkpoints conflict, once an [`EquivocationProof`] checks out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The log.
    pub origin: String,
    /// The smaller (or equal) checkpoint.
    pub first: Checkpoint,
    /// The larger one.
    pub second: Checkpoint,
    /// The larger tree's root over the first size: differs from `first.root`.
    pub their_prefix_root: Hash,
}

/// Decides whether the (already authenticated) checkpoints `a` and `b` of one log, with
/// `prefix_root` and `proof` from the larger log, show a fork. `Err` says why not.
pub fn check_fork(
    a: &Checkpoint,
    b: &Checkpoint,
    prefix_root: &[u8],
    proof: &[Hash],
) -> Result<Fork, String> {
    if a.origin != b.origin {
        return Err(format!("the checkpoints are of two logs ({} and {})", a.origin, b.origin));
    }
    let (first, second) = if a.size <= b.size { (a, b) } else { (b, a) };
    let fork = |their: Hash| Fork {
        origin: a.origin.clone(),
        first: first.clone(),
        second: second.clone(),
        their_prefix_root: their,
    };
    if first.size == second.size {
        return match first.root == second.root {
            true => Err("the checkpoints are the same tree".into()),
            false => Ok(fork(second.root)),
        };
    }
    if first.size == 0 {
        return Err("an empty tree is a prefix of every tree".into());
    }
    let prefix: Hash = prefix_root.try_into().map_err(|_| "the prefix root is not 32 bytes".to_owned())?;
    let (fr, sr) = merkle::consistency_roots(first.size, second.size, &prefix, proof)
        .ok_or_else(|| "the consistency proof has the wrong shape for these sizes".to_owned())?;
    if sr != second.root {
        return Err("the consistency proof does not lead to the larger checkpoint's root".into());
    }
    if fr == first.root {
        return Err("the checkpoints are consistent: the smaller tree is a prefix of the larger".into());
    }
    Ok(fork(fr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::NoteSigner;

    #[test]
    fn checkpoint_bodies_round_trip_and_bad_ones_are_refused() {
        let cp = Checkpoint { origin: "vouch.log/ab".into(), size: 42, root: [3; 32] };
        assert_eq!(Checkpoint::parse(&cp.body()), Ok(cp.clone()));
        assert_eq!(Checkpoint::parse(&format!("{}ext line\n", cp.body())), Ok(cp));
        for (text, why) in [
            ("o\n", "an origin, a size and a root"),
            ("o\n042\nAAAA\n", "not a decimal number"),
            ("o\n-1\nAAAA\n", "not a decimal number"),
            ("o\n99999999999999999999\nAAAA\n", "out of range"),
            ("o\n1\nAAAA\n", "not 32 base64 bytes"),
        ] {
            let e = Checkpoint::parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_note_is_checked_against_its_attested_log_and_head() {
        let signer_key = NoteSigner::from_seed("x", &[1; 32]).unwrap().verifier().key;
        let log = LogClaim::for_key(&signer_key);
        let signer = NoteSigner::from_seed(&log.origin, &[1; 32]).unwrap();
        let cp = Checkpoint { origin: log.origin.clone(), size: 5, root: [9; 32] };
        let note = signer.sign(&cp.body()).unwrap().to_bytes();
        assert_eq!(check_note(&note, &log, 5, &[9; 32]), Ok(cp));
        assert!(check_note(&note, &log, 6, &[9; 32]).unwrap_err().contains("is not the attested one"));
        assert!(check_note(&note, &log, 5, &[8; 32]).unwrap_err().contains("is not the attested one"));
        let other = LogClaim::for_key(&[2; 32]);
        assert!(check_note(&note, &other, 5, &[9; 32]).is_err());
        let renamed = LogClaim { origin: "vouch.log/0000000000000000".into(), ..log };
        assert!(renamed.verifier().unwrap_err().contains("is not the one its key names"));
    }

    #[test]
    fn forks_are_shown_and_consistent_growth_is_not_a_fork() {
        let leaves: Vec<Hash> = (0..13u8).map(|i| merkle::leaf_hash(&[i])).collect();
        let mut other = leaves.clone();
        other[2] = merkle::leaf_hash(b"another answer");
        let cp = |l: &[Hash]| Checkpoint { origin: "o".into(), size: l.len() as u64, root: merkle::root(l) };
        for m in [1usize, 3, 4, 8, 12] {
            let proof = merkle::consistency_proof(&leaves, m);
            let prefix = merkle::root(&leaves[..m]);
            // Honest growth.
            let e = check_fork(&cp(&leaves[..m]), &cp(&leaves), &prefix, &proof).unwrap_err();
            assert!(e.contains("consistent"), "{m}: {e}");
            if m > 2 {
                // A client saw the other history at size m: the proof shows the fork.
                let fork = check_fork(&cp(&other[..m]), &cp(&leaves), &prefix, &proof).unwrap();
                assert_eq!(fork.their_prefix_root, prefix);
                // A tampered proof shows nothing.
                let mut bad = proof.clone();
                if let Some(last) = bad.last_mut() {
                    last[0] ^= 1;
                    assert!(check_fork(&cp(&other[..m]), &cp(&leaves), &prefix, &bad).is_err());
                }
            }
        }
        assert!(check_fork(&cp(&leaves[..3]), &cp(&other[..3]), &[], &[]).is_ok());
        assert!(check_fork(&cp(&leaves[..3]), &cp(&leaves[..3]), &[], &[])
            .unwrap_err()
            .contains("same tree"));
    }
}
