//! The answer-log checkpoints this client has seen, one row per log, and what it does
//! when a new one arrives: consistent growth is remembered; two checkpoints that cannot
//! both be in one append-only log are a fork, written out as a portable
//! [`EquivocationProof`] and refused.
//!
//! CLIENT side. The store is SQLite (rusqlite), shared safely by concurrent `vouch chat`
//! processes and a proxy; it keeps, per origin, the largest verified checkpoint and the
//! evidence that makes it checkable by others.
//!
//! ```text
//!  verified receipt ─► its checkpoint N ──┬─ none seen: remember N
//!                                         ├─ same size: same root? ok : FORK (self-contained)
//!                                         └─ else: consistency proof from the enclave
//!                                              verifies ─► remember the larger
//!                                              shows other history ─► FORK (portable proof)
//!                                              neither ─► refused (cannot prove consistency)
//! ```

use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use vouch_attestation::binding;
use vouch_attestation::merkle::{self, Hash};
use vouch_attestation::receipt::VerifiedCheckpoint;
use vouch_attestation::tlog::{
    self, CheckpointEvidence, ConsistencyProof, EquivocationProof, EQUIVOCATION_FORMAT,
};

/// File name of the store inside the state directory.
pub const STORE_FILE: &str = "checkpoints.sqlite";
/// Where fork proofs go inside the state directory.
pub const FORK_DIR: &str = "forks";

/// The state directory: `$VOUCH_STATE_DIR`, else `$XDG_STATE_HOME/vouch`, else
/// `~/.local/state/vouch`, else `./.vouch-state`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VOUCH_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("vouch");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/vouch"),
        None => PathBuf::from(".vouch-state"),
    }
}

/// A stored checkpoint.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Leaves.
    pub size: u64,
    /// Root.
    pub root: Hash,
    /// Its evidence (CBOR-decodable by anyone).
    pub evidence: CheckpointEvidence,
}

/// What the client makes of a new checkpoint.
#[derive(Debug)]
pub enum Growth {
    /// First sight of this log, or the same checkpoint again.
    New,
    /// Needs a consistency proof from size `first` to `second` from the enclave.
    NeedsProof {
        /// The smaller size.
        first: u64,
        /// The larger size.
        second: u64,
        /// The stored checkpoint.
        seen: Box<Seen>,
    },
    /// A fork: the proof file was written here.
    Fork(PathBuf),
}

/// The store.
#[derive(Debug)]
pub struct SeenLogs {
    conn: Mutex<Connection>,
    dir: PathBuf,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("checkpoint store: {e}")
}

impl SeenLogs {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SeenLogs, String> {
        std::fs::create_dir_all(dir).map_err(|e| {
            err(format!(
                "create {}: {e} (choose another with --state-dir, or keep none with --no-log-state)",
                dir.display()
            ))
        })?;
        let conn = Connection::open(dir.join(STORE_FILE)).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS seen (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, evidence BLOB NOT NULL);",
        )
        .map_err(err)?;
        Ok(SeenLogs { conn: Mutex::new(conn), dir: dir.to_owned() })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, String> {
        self.conn.lock().map_err(|_| err("lock poisoned"))
    }

    /// The largest checkpoint seen of `origin`.
    pub fn get(&self, origin: &str) -> Result<Option<Seen>, String> {
        let row: Option<(i64, Vec<u8>, Vec<u8>)> = self
            .conn()?
            .query_row("SELECT size, root, evidence FROM seen WHERE origin = ?1", [origin], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(err)?;
        let Some((size, root, ev)) = row else { return Ok(None) };
        let root: Hash = root.try_into().map_err(|_| err("a stored root is not 32 bytes"))?;
        let evidence = binding::from_cbor(&ev).map_err(err)?;
        Ok(Some(Seen { size: size as u64, root, evidence }))
    }

    /// Remembers `cp` if it is larger than what is stored (the caller has checked it is
    /// consistent with it).
    pub fn remember(&self, cp: &VerifiedCheckpoint) -> Result<(), String> {
        self.conn()?
            .execute(
                "INSERT INTO seen (origin, size, root, evidence) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(origin) DO UPDATE SET size = excluded.size, root = excluded.root, evidence = excluded.evidence
                 WHERE excluded.size > seen.size",
                params![
                    cp.checkpoint.origin,
                    cp.checkpoint.size as i64,
                    &cp.checkpoint.root[..],
                    binding::to_cbor(&cp.evidence)
                ],
            )
            .map_err(err)?;
        Ok(())
    }

    /// What `cp` means against the stored checkpoint of its log.
    pub fn classify(&self, cp: &VerifiedCheckpoint) -> Result<Growth, String> {
        let Some(seen) = self.get(&cp.checkpoint.origin)? else {
            self.remember(cp)?;
            return Ok(Growth::New);
        };
        if seen.size == cp.checkpoint.size {
            if seen.root == cp.checkpoint.root {
                return Ok(Growth::New);
            }
            let proof = EquivocationProof {
                format: EQUIVOCATION_FORMAT.into(),
                a: seen.evidence.clone(),
                b: cp.evidence.clone(),
                prefix_root: Vec::new(),
                proof: Vec::new(),
            };
            return Ok(Growth::Fork(self.write_fork(&proof)?));
        }
        let (first, second) = (seen.size.min(cp.checkpoint.size), seen.size.max(cp.checkpoint.size));
        Ok(Growth::NeedsProof { first, second, seen: Box::new(seen) })
    }

    /// Decides with the enclave's consistency proof: `Ok(None)` when `cp` and the stored
    /// checkpoint are one history (the larger is remembered), `Ok(Some(path))` for a fork
    /// (proof written), `Err` when the proof shows neither.
    pub fn settle(
        &self,
        cp: &VerifiedCheckpoint,
        seen: &Seen,
        p: &ConsistencyProof,
    ) -> Result<Option<PathBuf>, String> {
        let hashes = p.hashes()?;
        let (small, large) = match seen.size < cp.checkpoint.size {
            true => ((seen.size, seen.root), (cp.checkpoint.size, cp.checkpoint.root)),
            false => ((cp.checkpoint.size, cp.checkpoint.root), (seen.size, seen.root)),
        };
        if p.first != small.0 || p.second != large.0 {
            return Err(format!(
                "the enclave sent a proof from {} to {}, not {} to {}",
                p.first, p.second, small.0, large.0
            ));
        }
        if merkle::verify_consistency(small.0, &small.1, large.0, &large.1, &hashes) {
            self.remember(cp)?;
            return Ok(None);
        }
        // A fork is portable when the proof leads to the larger checkpoint's root (so it
        // is that tree's) while its prefix is not the smaller one.
        let (a, b) = (&seen.evidence, &cp.evidence);
        let seen_cp =
            tlog::Checkpoint { origin: cp.checkpoint.origin.clone(), size: seen.size, root: seen.root };
        if tlog::check_fork(&seen_cp, &cp.checkpoint, &p.prefix_root, &hashes).is_ok() {
            let proof = EquivocationProof {
                format: EQUIVOCATION_FORMAT.into(),
                a: a.clone(),
                b: b.clone(),
                prefix_root: p.prefix_root.clone(),
                proof: p.proof.clone(),
            };
            return Ok(Some(self.write_fork(&proof)?));
        }
        Err(format!(
            "log {}: the enclave cannot prove its checkpoint of {} entries consistent with the one of {} entries seen before (a fork or a rollback)",
            cp.checkpoint.origin, cp.checkpoint.size, seen.size
        ))
    }

    fn write_fork(&self, proof: &EquivocationProof) -> Result<PathBuf, String> {
        let dir = self.dir.join(FORK_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("create {}: {e}", dir.display())))?;
        let bytes = binding::to_cbor(proof);
        let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes));
        let path = dir.join(format!("fork-{}.cbor", hex::encode(&digest[..8])));
        std::fs::write(&path, bytes).map_err(|e| err(format!("write {}: {e}", path.display())))?;
        Ok(path)
    }
}
