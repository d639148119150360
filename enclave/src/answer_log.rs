//! The answer log's durable store: every receipt leaf's hash, the tlog stored hashes over
//! them, and every signed checkpoint with its hardware evidence.
//!
//! Trusted side, but the disk is the host's: the store lives outside the guest's memory,
//! so everything read back is checked. SQLite (rusqlite, bundled) in WAL mode with
//! `synchronous=FULL` is the proven crash-safe store; a batch's hashes and its checkpoint
//! are one transaction, committed (fsync'd) before any of its receipts is released, so a
//! crash loses only answers nobody was told about. The Merkle arithmetic (stored hashes,
//! proofs, tiles) is the `tlog_tiles` crate's (a port of Go's sumdb tlog).
//!
//! ```text
//!  stage(leaf hashes) ─► new size + root ─► (notary: sign note, hardware report)
//!        └─► commit(staged, evidence) ── one transaction: hashes + checkpoint ── fsync
//!  open(): the store's key is this log's; every stored hash recomputes from the leaves;
//!          the latest checkpoint's note verifies and names the recomputed root
//! ```

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use tlog_tiles::{HashReader, Tile};
use vouch_attestation::binding::{self, BatchClaims};
use vouch_attestation::merkle::Hash;
use vouch_attestation::note::{NoteSigner, SignedNote};
use vouch_attestation::tlog::{Checkpoint, CheckpointEvidence, ConsistencyProof, LogClaim};

/// File name of the store inside `--log-dir`.
pub const STORE_FILE: &str = "answer-log.sqlite";
/// Hash tiles are 2^8 = 256 hashes wide (C2SP tlog-tiles).
pub const TILE_HEIGHT: u8 = 8;

/// Why the log cannot be opened, extended or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// SQLite failed (disk full, permissions, a corrupt file).
    #[error("answer log store: {0}")]
    Store(String),
    /// The store does not hold what its signed checkpoints say: it was altered outside
    /// the enclave. The enclave refuses to continue this log.
    #[error("answer log store {path} fails its check ({why}); refusing to continue this log — it was altered outside the enclave or rolled back. Keep it for inspection and start a new log with --log-epoch N+1 and an empty --log-dir")]
    Tampered {
        /// The store.
        path: String,
        /// What does not match.
        why: String,
    },
    /// The store is another log's (another measurement, chip or epoch).
    #[error("answer log store {path} belongs to log {theirs}, not to this enclave's {ours}: use that enclave's --log-dir, or an empty one")]
    OtherLog {
        /// The store.
        path: String,
        /// The origin it holds.
        theirs: String,
        /// This enclave's origin.
        ours: String,
    },
    /// A request for something the log does not have.
    #[error("{0}")]
    NotFound(String),
}

fn store_err(e: impl std::fmt::Display) -> LogError {
    LogError::Store(e.to_string())
}

/// Leaves hashed into the tree but not yet durable: what a commit writes.
#[derive(Debug)]
pub struct Staged {
    base_size: u64,
    base_index: u64,
    hashes: Vec<tlog_tiles::Hash>,
    /// The size after these leaves.
    pub size: u64,
    /// The root after these leaves.
    pub root: Hash,
}

/// The answer log.
pub struct AnswerLog {
    conn: Connection,
    path: String,
    signer: NoteSigner,
    claim: LogClaim,
    size: u64,
    seq: u64,
    latest_note: Option<Vec<u8>>,
}

impl std::fmt::Debug for AnswerLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerLog").field("origin", &self.claim.origin).field("size", &self.size).finish()
    }
}

/// Reads stored hashes from the store, and beyond it from staged ones.
struct Reader<'a> {
    conn: &'a Connection,
    staged_from: u64,
    staged: &'a [tlog_tiles::Hash],
}

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT h FROM hashes WHERE i = ?1")
            .map_err(|_| tlog_tiles::Error::IndexesNotInTree)?;
        let mut out = Vec::with_capacity(indexes.len());
        for &i in indexes {
            if i >= self.staged_from {
                let h = usize::try_from(i - self.staged_from)
                    .ok()
                    .and_then(|k| self.staged.get(k))
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)?;
                out.push(*h);
                continue;
            }
            let bytes: Vec<u8> =
                stmt.query_row([i as i64], |r| r.get(0)).map_err(|_| tlog_tiles::Error::IndexesNotInTree)?;
            let h: Hash = bytes.try_into().map_err(|_| tlog_tiles::Error::MalformedHash)?;
            out.push(tlog_tiles::Hash(h));
        }
        Ok(out)
    }
}

impl AnswerLog {
    /// Opens (or creates) the store in `dir` for the log signed by `seed`'s key, checking
    /// everything it holds against its latest signed checkpoint.
    pub fn open(dir: &Path, seed: &[u8; 32]) -> Result<AnswerLog, LogError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::Store(format!("create {}: {e}", dir.display())))?;
        let file = dir.join(STORE_FILE);
        let path = file.display().to_string();
        let conn = Connection::open(&file).map_err(store_err)?;
        // One enclave per store, held for the process's life: a second one (the same
        // identity started twice on one store) is refused here instead of interleaving.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(store_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| {
            LogError::Store(format!("{path}: {e} (is another vouch-enclave using this --log-dir?)"))
        })?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(store_err)?;
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;").map_err(|e| {
            LogError::Store(format!("{path}: {e} (is another vouch-enclave using this --log-dir?)"))
        })?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS hashes (i INTEGER PRIMARY KEY, h BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, seq INTEGER NOT NULL, evidence BLOB NOT NULL);",
        )
        .map_err(store_err)?;
        let provisional = NoteSigner::from_seed("vouch.log/x", seed).map_err(store_err)?;
        let claim = LogClaim::for_key(&provisional.verifier().key);
        let signer = NoteSigner::from_seed(&claim.origin, seed).map_err(store_err)?;
        let stored: Option<String> = conn
            .query_row("SELECT v FROM meta WHERE k = 'origin'", [], |r| r.get::<_, Vec<u8>>(0))
            .optional()
            .map_err(store_err)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        match stored {
            Some(theirs) if theirs != claim.origin => {
                return Err(LogError::OtherLog { path, theirs, ours: claim.origin });
            }
            Some(_) => {}
            None => {
                conn.execute("INSERT INTO meta (k, v) VALUES ('origin', ?1)", [claim.origin.as_bytes()])
                    .map_err(store_err)?;
            }
        }
        let mut log = AnswerLog { conn, path, signer, claim, size: 0, seq: 0, latest_note: None };
        log.check()?;
        Ok(log)
    }

    fn tampered(&self, why: impl Into<String>) -> LogError {
        LogError::Tampered { path: self.path.clone(), why: why.into() }
    }

    /// Checks the whole store: the latest checkpoint verifies under this log's key and
    /// matches its batch claims; there are exactly the stored hashes its size implies, each
    /// recomputed from the leaf hashes; every checkpoint's root is the tree's at its size.
    fn check(&mut self) -> Result<(), LogError> {
        let latest: Option<(i64, i64, Vec<u8>)> = self
            .conn
            .query_row("SELECT size, seq, evidence FROM checkpoints ORDER BY size DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(store_err)?;
        let stored: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM hashes", [], |r| r.get(0)).map_err(store_err)?;
        let Some((size, seq, evidence)) = latest else {
            return match stored {
                0 => Ok(()),
                n => Err(self.tampered(format!("{n} hashes but no checkpoint"))),
            };
        };
        let size = size as u64;
        let latest = self.checkpoint_of(&evidence, size)?;
        if stored as u64 != tlog_tiles::stored_hash_count(size) {
            return Err(self.tampered(format!(
                "{stored} stored hashes where a tree of {size} leaves has {}",
                tlog_tiles::stored_hash_count(size)
            )));
        }
        // Every stored hash, recomputed from the leaf hashes.
        let mut all: Vec<tlog_tiles::Hash> = Vec::with_capacity(stored as usize);
        {
            let mut stmt = self.conn.prepare("SELECT i, h FROM hashes ORDER BY i").map_err(store_err)?;
            let mut rows = stmt.query([]).map_err(store_err)?;
            while let Some(row) = rows.next().map_err(store_err)? {
                let (i, h): (i64, Vec<u8>) = (row.get(0).map_err(store_err)?, row.get(1).map_err(store_err)?);
                let h: Hash =
                    h.try_into().map_err(|_| self.tampered(format!("stored hash {i} is not 32 bytes")))?;
                if i as usize != all.len() {
                    return Err(self.tampered(format!("stored hash {} is missing", all.len())));
                }
                all.push(tlog_tiles::Hash(h));
            }
        }
        let mem = VecReader(&all);
        for n in 0..size {
            let at = tlog_tiles::stored_hash_index(0, n) as usize;
            let want = tlog_tiles::stored_hashes_for_record_hash(n, all[at], &mem)
                .map_err(|e| self.tampered(format!("leaf {n}: {e}")))?;
            if all[at..at + want.len()] != want[..] {
                return Err(self.tampered(format!("the hashes above leaf {n} do not recompute")));
            }
        }
        let root = tlog_tiles::tree_hash(size, &mem).map_err(|e| self.tampered(e.to_string()))?;
        if root.0 != latest.root {
            return Err(
                self.tampered(format!("the tree of {size} leaves is not the one its checkpoint signs"))
            );
        }
        // Every earlier checkpoint names the tree's root at its size.
        let mut stmt =
            self.conn.prepare("SELECT size, evidence FROM checkpoints ORDER BY size").map_err(store_err)?;
        let rows: Vec<(i64, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(store_err)?
            .collect::<Result<_, _>>()
            .map_err(store_err)?;
        drop(stmt);
        for (s, ev) in rows {
            let cp = self.checkpoint_of(&ev, s as u64)?;
            let r = tlog_tiles::tree_hash(s as u64, &mem).map_err(|e| self.tampered(e.to_string()))?;
            if r.0 != cp.root {
                return Err(self.tampered(format!("the checkpoint at size {s} is not a prefix of the log")));
            }
        }
        let ev: CheckpointEvidence =
            binding::from_cbor(&evidence).map_err(|e| self.tampered(format!("latest checkpoint: {e}")))?;
        self.size = size;
        self.seq = seq as u64 + 1;
        self.latest_note = Some(ev.checkpoint);
        Ok(())
    }

    /// The checkpoint a stored evidence row holds, checked: its note verifies under this
    /// log's key and is the head its batch claims bind.
    fn checkpoint_of(&self, evidence: &[u8], size: u64) -> Result<Checkpoint, LogError> {
        let ev: CheckpointEvidence =
            binding::from_cbor(evidence).map_err(|e| self.tampered(format!("checkpoint {size}: {e}")))?;
        let claims: BatchClaims = binding::from_cbor(&ev.batch_claims)
            .map_err(|e| self.tampered(format!("checkpoint {size} claims: {e}")))?;
        if claims.log.as_ref() != Some(&self.claim) || claims.tree_size != size {
            return Err(self.tampered(format!("checkpoint {size} is not this log's")));
        }
        vouch_attestation::tlog::check_note(&ev.checkpoint, &self.claim, size, &claims.merkle_root)
            .map_err(|e| self.tampered(format!("checkpoint {size}: {e}")))
    }

    /// The log (origin and key) the attestation claims bind.
    pub fn claim(&self) -> &LogClaim {
        &self.claim
    }

    /// Leaves in the log.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next checkpoint's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Hashes `leaf_hashes` into the tree after the current size, without writing.
    pub fn stage(&self, leaf_hashes: &[Hash]) -> Result<Staged, LogError> {
        let base_index = tlog_tiles::stored_hash_count(self.size);
        let mut staged =
            Staged { base_size: self.size, base_index, hashes: Vec::new(), size: self.size, root: [0; 32] };
        for h in leaf_hashes {
            let reader = Reader { conn: &self.conn, staged_from: base_index, staged: &staged.hashes };
            let new = tlog_tiles::stored_hashes_for_record_hash(staged.size, tlog_tiles::Hash(*h), &reader)
                .map_err(store_err)?;
            staged.hashes.extend(new);
            staged.size += 1;
        }
        let reader = Reader { conn: &self.conn, staged_from: base_index, staged: &staged.hashes };
        staged.root = tlog_tiles::tree_hash(staged.size, &reader).map_err(store_err)?.0;
        Ok(staged)
    }

    /// The signed checkpoint note for `staged`'s head.
    pub fn sign(&self, staged: &Staged) -> Vec<u8> {
        let body =
            Checkpoint { origin: self.claim.origin.clone(), size: staged.size, root: staged.root }.body();
        match self.signer.sign(&body) {
            Ok(note) => note.to_bytes(),
            // Invariant: the body is three non-empty lines ending in a newline.
            Err(_) => Vec::new(),
        }
    }

    /// The inclusion proof of leaf `index` in the staged tree.
    pub fn inclusion(&self, staged: &Staged, index: u64) -> Result<Vec<Hash>, LogError> {
        let reader = Reader { conn: &self.conn, staged_from: staged.base_index, staged: &staged.hashes };
        Ok(tlog_tiles::prove_record(staged.size, index, &reader)
            .map_err(store_err)?
            .into_iter()
            .map(|h| h.0)
            .collect())
    }

    /// Makes `staged` and its checkpoint durable: one transaction, fsync'd on commit.
    pub fn commit(&mut self, staged: Staged, evidence: &CheckpointEvidence) -> Result<(), LogError> {
        if staged.base_size != self.size {
            return Err(LogError::Store("the log grew since these leaves were staged".into()));
        }
        let tx = self.conn.transaction().map_err(store_err)?;
        {
            let mut ins =
                tx.prepare_cached("INSERT INTO hashes (i, h) VALUES (?1, ?2)").map_err(store_err)?;
            for (k, h) in staged.hashes.iter().enumerate() {
                ins.execute(params![(staged.base_index + k as u64) as i64, &h.0[..]]).map_err(store_err)?;
            }
            tx.execute(
                "INSERT INTO checkpoints (size, seq, evidence) VALUES (?1, ?2, ?3)",
                params![staged.size as i64, self.seq as i64, binding::to_cbor(evidence)],
            )
            .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        self.size = staged.size;
        self.seq += 1;
        self.latest_note = Some(evidence.checkpoint.clone());
        Ok(())
    }

    /// The latest signed checkpoint note (`None` before the first answer).
    pub fn latest_note(&self) -> Option<&[u8]> {
        self.latest_note.as_deref()
    }

    /// The evidence (CBOR [`CheckpointEvidence`]) of the checkpoint at exactly `size`.
    pub fn evidence(&self, size: u64) -> Result<Vec<u8>, LogError> {
        self.conn
            .query_row("SELECT evidence FROM checkpoints WHERE size = ?1", [size as i64], |r| r.get(0))
            .optional()
            .map_err(store_err)?
            .ok_or_else(|| LogError::NotFound(format!("no checkpoint at size {size}")))
    }

    /// A hash tile by its C2SP path after `tile/` (`L/N[.p/W]`), within the current tree.
    pub fn tile(&self, path: &str) -> Result<Vec<u8>, LogError> {
        let bad = || LogError::NotFound(format!("no tile {path}"));
        if path.starts_with("entries/") {
            return Err(LogError::NotFound(
                "entries are not published: each leaf is a salted receipt only its requester holds".into(),
            ));
        }
        let tile = Tile::from_path(&format!("tile/{TILE_HEIGHT}/{path}")).map_err(|_| bad())?;
        // The tile must lie wholly inside the current tree.
        let width = u64::from(tile.width());
        let level_span =
            1u64.checked_shl(u32::from(TILE_HEIGHT) * u32::from(tile.level())).ok_or_else(bad)?;
        let end = tile
            .level_index()
            .checked_mul(1 << TILE_HEIGHT)
            .and_then(|s| s.checked_add(width))
            .and_then(|e| e.checked_mul(level_span))
            .ok_or_else(bad)?;
        if end > self.size {
            return Err(bad());
        }
        let reader = Reader { conn: &self.conn, staged_from: u64::MAX, staged: &[] };
        tile.read_data(&reader).map_err(|_| bad())
    }

    /// The consistency proof from size `first` to `second` (both at most the current size).
    pub fn consistency(&self, first: u64, second: u64) -> Result<ConsistencyProof, LogError> {
        if first == 0 || first > second || second > self.size {
            return Err(LogError::NotFound(format!(
                "no consistency proof from {first} to {second} (the log has {} leaves)",
                self.size
            )));
        }
        let reader = Reader { conn: &self.conn, staged_from: u64::MAX, staged: &[] };
        let prefix = tlog_tiles::tree_hash(first, &reader).map_err(store_err)?;
        let proof = tlog_tiles::prove_tree(second, first, &reader).map_err(store_err)?;
        Ok(ConsistencyProof {
            first,
            second,
            prefix_root: prefix.0.to_vec(),
            proof: proof.into_iter().map(|h| serde_bytes::ByteBuf::from(h.0.to_vec())).collect(),
        })
    }

    /// Parses and checks a note this log signed (tests, and the API's sanity check).
    pub fn verify_note(&self, note: &[u8]) -> bool {
        SignedNote::parse(note).is_ok_and(|n| self.signer.verifier().verify(&n).is_ok())
    }
}

/// Stored hashes held in memory (the start-up check reads them all once).
struct VecReader<'a>(&'a [tlog_tiles::Hash]);

impl HashReader for VecReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.0.get(i))
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_attestation::merkle;
    use vouch_attestation::receipt::ReportBundle;

    fn evidence(log: &AnswerLog, staged: &Staged) -> CheckpointEvidence {
        let claims = BatchClaims {
            version: binding::LOG_BATCH_CLAIMS_VERSION,
            merkle_root: staged.root.to_vec(),
            tree_size: staged.size,
            tls_spki_sha256: vec![0; 32],
            model_sha256: vec![],
            batch_seq: log.seq(),
            models: vec![serde_bytes::ByteBuf::from(vec![1; 32])],
            log: Some(log.claim().clone()),
        };
        CheckpointEvidence {
            version: 5,
            platform: "sim".into(),
            checkpoint: log.sign(staged),
            batch_claims: binding::to_cbor(&claims),
            bundle: ReportBundle { report: vec![], leaf_cert: vec![], chain: vec![], crl: vec![] },
        }
    }

    fn append(log: &mut AnswerLog, leaves: &[Hash]) {
        let staged = log.stage(leaves).unwrap();
        let ev = evidence(log, &staged);
        log.commit(staged, &ev).unwrap();
    }

    #[test]
    fn appends_prove_reopen_and_serve_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Hash> = (0..300u32).map(|i| merkle::leaf_hash(&i.to_le_bytes())).collect();
        let mut log = AnswerLog::open(dir.path(), &[4; 32]).unwrap();
        append(&mut log, &leaves[..5]);
        append(&mut log, &leaves[5..300]);
        assert_eq!(log.size(), 300);
        // Inclusion proofs and roots agree with the plain RFC 6962 functions.
        let staged = log.stage(&[]).unwrap();
        assert_eq!(staged.root, merkle::root(&leaves));
        for i in [0u64, 7, 255, 299] {
            let p = log.inclusion(&staged, i).unwrap();
            assert_eq!(merkle::root_from_proof(&leaves[i as usize], i, 300, &p), Some(merkle::root(&leaves)));
        }
        let c = log.consistency(5, 300).unwrap();
        assert_eq!(c.prefix_root, merkle::root(&leaves[..5]).to_vec());
        let hashes = c.hashes().unwrap();
        assert!(merkle::verify_consistency(
            5,
            &merkle::root(&leaves[..5]),
            300,
            &merkle::root(&leaves),
            &hashes
        ));
        // Tiles: the full level-0 tile is the first 256 leaf hashes; a partial one the rest.
        assert_eq!(log.tile("0/000").unwrap(), leaves[..256].concat());
        assert_eq!(log.tile("0/001.p/44").unwrap(), leaves[256..].concat());
        assert!(log.tile("0/001.p/45").is_err());
        assert!(log.tile("1/000").is_err());
        assert!(log.tile("entries/000").unwrap_err().to_string().contains("salted"));
        let note = log.latest_note().unwrap().to_vec();
        drop(log);
        // Reopened, the log continues where it was.
        let mut log = AnswerLog::open(dir.path(), &[4; 32]).unwrap();
        assert_eq!((log.size(), log.seq()), (300, 2));
        assert_eq!(log.latest_note().unwrap(), &note[..]);
        append(&mut log, &leaves[..1]);
        assert_eq!(log.size(), 301);
        // A second enclave cannot open it while the first holds it.
        let e = AnswerLog::open(dir.path(), &[4; 32]).unwrap_err().to_string();
        assert!(e.contains("another vouch-enclave"), "{e}");
        // Another key's enclave cannot continue it.
        drop(log);
        let e = AnswerLog::open(dir.path(), &[5; 32]).unwrap_err().to_string();
        assert!(e.contains("belongs to log vouch.log/"), "{e}");
    }

    #[test]
    fn a_tampered_store_is_refused() {
        let leaves: Vec<Hash> = (0..20u32).map(|i| merkle::leaf_hash(&i.to_le_bytes())).collect();
        let fresh = || {
            let dir = tempfile::tempdir().unwrap();
            let mut log = AnswerLog::open(dir.path(), &[4; 32]).unwrap();
            append(&mut log, &leaves[..10]);
            append(&mut log, &leaves[10..]);
            drop(log);
            let conn = Connection::open(dir.path().join(STORE_FILE)).unwrap();
            (dir, conn)
        };
        let cases: [(&str, &str); 4] = [
            ("UPDATE hashes SET h = zeroblob(32) WHERE i = 3", "do not recompute"),
            ("DELETE FROM hashes WHERE i = (SELECT MAX(i) FROM hashes)", "stored hashes where"),
            ("DELETE FROM checkpoints WHERE size = 20", "stored hashes where"),
            ("UPDATE checkpoints SET evidence = x'00' WHERE size = 10", "checkpoint 10"),
        ];
        for (sql, why) in cases {
            let (dir, conn) = fresh();
            conn.execute(sql, []).unwrap();
            drop(conn);
            let e = AnswerLog::open(dir.path(), &[4; 32]).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("refusing to continue this log"), "{sql}: {e}");
        }
        // Leaves rewritten consistently (a whole other history of the same size) fail
        // against the signed checkpoint.
        let (dir, conn) = fresh();
        conn.execute("DELETE FROM hashes", []).unwrap();
        drop(conn);
        let mut other = AnswerLog::open(&dir.path().join("other"), &[4; 32]).unwrap();
        let alt: Vec<Hash> = (100..120u32).map(|i| merkle::leaf_hash(&i.to_le_bytes())).collect();
        append(&mut other, &alt);
        drop(other);
        let src = Connection::open(dir.path().join("other").join(STORE_FILE)).unwrap();
        let dst = Connection::open(dir.path().join(STORE_FILE)).unwrap();
        let mut stmt = src.prepare("SELECT i, h FROM hashes").unwrap();
        let rows: Vec<(i64, Vec<u8>)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
        for (i, h) in rows {
            dst.execute("INSERT INTO hashes (i, h) VALUES (?1, ?2)", params![i, h]).unwrap();
        }
        drop(dst);
        let e = AnswerLog::open(dir.path(), &[4; 32]).unwrap_err().to_string();
        assert!(e.contains("is not the one its checkpoint signs") || e.contains("not a prefix"), "{e}");
    }
}
