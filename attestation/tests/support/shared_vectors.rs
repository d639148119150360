//! Where the genuine SEV-SNP test vectors are: the one place that knows.
//!
//! Test side only. The genuine reports, certificates and CRLs were collected from public
//! repositories and are NOT part of this repository; they live beside the checkout:
//!
//! ```text
//!   <workspace>/../shared/vectors/           dev set      (override: VOUCH_VECTORS_DIR)
//!   <workspace>/../shared/vectors-heldout/   held-out set (override: VOUCH_HELDOUT_DIR)
//! ```
//!
//! A set that is not there fails the test that needs it, with the path and how to get
//! it, unless `VOUCH_ALLOW_MISSING_VECTORS=1`: then one `SKIPPED:` line goes to stderr
//! and the test returns.
//!
//! Included with `#[path]` by every crate that reads the vectors (attestation's tests
//! and bench, the client's tests, the fuzz fixtures), so the rule is written once. Each
//! of those crates sits one directory below the workspace root, which is what
//! `CARGO_MANIFEST_DIR/..` relies on.
#![allow(dead_code)] // each includer uses a subset
#![allow(clippy::panic)] // also built into the bench: a missing vector fails the run, and its message is the point

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Set to `1` to skip (not fail) the tests whose vectors are absent.
pub const ALLOW_MISSING_ENV: &str = "VOUCH_ALLOW_MISSING_VECTORS";

/// One of the two vector collections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorSet {
    /// `shared/vectors`: the development set (reports/, certs/, crl/, negative/, unverified/).
    Dev,
    /// `shared/vectors-heldout`: genuine reports never looked at while writing the
    /// verifier (flat layout `NAME.bin`, `NAME.json`, `NAME.chain.pem`, leaf `.der`).
    Heldout,
}

impl VectorSet {
    /// The environment variable that overrides the default location.
    pub fn env_var(self) -> &'static str {
        match self {
            VectorSet::Dev => "VOUCH_VECTORS_DIR",
            VectorSet::Heldout => "VOUCH_HELDOUT_DIR",
        }
    }

    /// The default location, relative to the workspace root.
    pub fn default_relative(self) -> &'static str {
        match self {
            VectorSet::Dev => "../shared/vectors",
            VectorSet::Heldout => "../shared/vectors-heldout",
        }
    }

    /// Short name for counts ("27 dev + 65 heldout").
    pub fn label(self) -> &'static str {
        match self {
            VectorSet::Dev => "dev",
            VectorSet::Heldout => "heldout",
        }
    }

    /// Where the set should be: the override if set, else beside the workspace.
    pub fn path(self) -> PathBuf {
        if let Some(dir) = std::env::var_os(self.env_var()).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        // CARGO_MANIFEST_DIR is absolute; its parent is the workspace root, whose parent
        // holds `shared/`. Joined lexically so the message shows a clean path.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
        let beside = workspace.parent().unwrap_or(workspace);
        beside.join(self.default_relative().trim_start_matches("../"))
    }
}

/// Writes to the process's stderr directly: libtest captures `eprintln!`, and these
/// lines (skips, counts) should be seen on a passing run too.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// A located vector collection.
#[derive(Clone, Debug)]
pub struct Vectors {
    /// Which set.
    pub set: VectorSet,
    /// Its directory (holds `manifest.json`).
    pub dir: PathBuf,
}

impl Vectors {
    /// The set if present. Absent: panics with the path and how to get it, or, with
    /// `VOUCH_ALLOW_MISSING_VECTORS=1`, prints one SKIPPED line (once per process and
    /// set) and returns `None`.
    pub fn locate(set: VectorSet) -> Option<Vectors> {
        let dir = set.path();
        if dir.join("manifest.json").is_file() {
            return Some(Vectors { set, dir });
        }
        if std::env::var(ALLOW_MISSING_ENV).as_deref() == Ok("1") {
            static DEV: Once = Once::new();
            static HELDOUT: Once = Once::new();
            let once = if set == VectorSet::Dev { &DEV } else { &HELDOUT };
            once.call_once(|| {
                note(&format!(
                    "SKIPPED: {} not found ({}); tests that need the genuine SEV-SNP vectors did not run",
                    set.default_relative(),
                    dir.display()
                ))
            });
            return None;
        }
        panic!(
            "genuine SEV-SNP test vectors not found: {} has no manifest.json.\n\
             They are not committed to this repository. Put the project's `shared/` folder \
             (shared/vectors and shared/vectors-heldout, see their SOURCES.md) beside the \
             checkout, so that <workspace>/{} exists, or point {} at a copy.\n\
             To skip these tests instead, set {ALLOW_MISSING_ENV}=1.",
            dir.display(),
            set.default_relative(),
            set.env_var(),
        )
    }

    /// The development set, or `None` (skipped).
    pub fn dev() -> Option<Vectors> {
        Vectors::locate(VectorSet::Dev)
    }

    /// The held-out set, or `None` (skipped).
    pub fn heldout() -> Option<Vectors> {
        Vectors::locate(VectorSet::Heldout)
    }

    /// `rel` inside the set.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// `rel` inside the set, as a string (for command lines).
    pub fn arg(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }

    /// The bytes of `rel`; a missing file is a test failure that names it.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        let p = self.path(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// `manifest.json`. Both sets share its schema: `positive` and `negative` entries
    /// with `name`, `report`, `leaf_cert`, `chain` paths relative to the set's folder.
    pub fn manifest(&self) -> serde_json::Value {
        serde_json::from_slice(&self.read("manifest.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", self.path("manifest.json").display()))
    }

    /// The decoded fields of a positive entry: the report's path with `.json` for
    /// `.bin` (`reports/NAME.json` in the dev set, `NAME.json` in the held-out one).
    pub fn fields_of(&self, entry: &serde_json::Value) -> serde_json::Value {
        let report = entry["report"].as_str().unwrap_or_default();
        let rel = format!("{}.json", report.trim_end_matches(".bin"));
        serde_json::from_slice(&self.read(&rel))
            .unwrap_or_else(|e| panic!("{}: {e}", self.path(&rel).display()))
    }
}
