//! The models one enclave serves (trusted side): which files, under which names, with how
//! much KV-cache memory each, and which one a request gets.
//!
//! ```text
//!  --model A.gguf --model B.gguf        (names from the files)
//!  --models models.toml                 (name, path, expected SHA-256, optional KV budget)
//!        │ load each, check its digest (a mismatch refuses to start), split the KV budget
//!        ▼
//!  Models [default, ...] ─► one Engine per model (own model thread, own KV budget)
//!        │ request "model": name (ASCII case-insensitive) ─► that engine; none ─► the default
//!        └─► attestation claims list every model's ModelClaim (digest, architecture,
//!            tensor types, engine, tokenizer digest, chat template), the default first
//! ```
//!
//! The models file (TOML; relative paths are relative to the file):
//!
//! ```toml
//! [[model]]
//! name = "smollm2"
//! path = "SmolLM2-135M-Instruct.Q4_1.gguf"
//! sha256 = "5a1a…"        # required: the file must hash to this
//! kv_budget_mib = 256     # optional: else an equal share of what --kv-budget-mib leaves
//! ```
//!
//! Memory is explicit: each model's file is held in memory whole, plus its KV budget; the
//! enclave prints the table at start and refuses budgets that add up to more than
//! `--kv-budget-mib`. The models share the compute threads' CPUs: a busy model slows the
//! others, and none can use another's KV memory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Engine, Model, ModelError, Runtime};

/// Most models one enclave serves.
pub const MAX_MODELS: usize = 16;
/// Largest models file read.
const MAX_MODELS_FILE_BYTES: u64 = 64 * 1024;

/// One model to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The name it is served under; `None`: from the file ([`Model::name`]).
    pub name: Option<String>,
    /// The GGUF file.
    pub path: PathBuf,
    /// The SHA-256 the file must have (`None` with `--model`, which pins nothing).
    pub sha256: Option<[u8; 32]>,
    /// Its own KV budget in MiB; `None`: a share of what the others leave.
    pub kv_budget_mib: Option<usize>,
}

/// Why the model set cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelsError {
    /// The models file is unreadable or malformed.
    #[error("models file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A model failed to load.
    #[error("{}", load_message(path, source))]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ModelError,
    },
    /// A file does not hash to the digest the models file expects.
    #[error("model {name:?} ({path}): SHA-256 mismatch: expected {expected}, the file has {actual}; refusing to start")]
    DigestMismatch {
        /// The model's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// What the models file says.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// Two models under one name (names are compared ignoring ASCII case).
    #[error(
        "two models are named {0:?} (names are compared ignoring case); name them apart in a models file"
    )]
    DuplicateName(String),
    /// None, or too many.
    #[error("{0}")]
    Count(String),
    /// The KV budgets do not add up.
    #[error("{0}")]
    Budget(String),
}

/// "model: REASON" when the reason names the file already, else "model PATH: REASON".
fn load_message(path: &Path, source: &ModelError) -> String {
    let reason = source.to_string();
    match reason.contains(&path.display().to_string()) {
        true => format!("model: {reason}"),
        false => format!("model {}: {reason}", path.display()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWire {
    model: Vec<EntryWire>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryWire {
    name: String,
    path: PathBuf,
    sha256: String,
    kv_budget_mib: Option<usize>,
}

/// Parses a models file's text; relative paths are taken from `dir`.
pub fn parse_models_file(text: &str, dir: &Path, path: &Path) -> Result<Vec<ModelEntry>, ModelsError> {
    let bad = |reason: String| ModelsError::File { path: path.to_owned(), reason };
    let wire: FileWire = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    wire.model
        .into_iter()
        .map(|e| {
            let digest = hex::decode(e.sha256.trim())
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| bad(format!("model {:?}: sha256 must be 64 hex digits", e.name)))?;
            let name = e.name.trim();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err(bad(format!("model name {:?} must be 1 to 128 printable characters", e.name)));
            }
            Ok(ModelEntry {
                name: Some(name.to_owned()),
                path: if e.path.is_relative() { dir.join(&e.path) } else { e.path },
                sha256: Some(digest),
                kv_budget_mib: e.kv_budget_mib,
            })
        })
        .collect()
}

/// Reads and parses the models file at `path`.
pub fn read_models_file(path: &Path) -> Result<Vec<ModelEntry>, ModelsError> {
    let bad = |reason: String| ModelsError::File { path: path.to_owned(), reason };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_MODELS_FILE_BYTES {
        return Err(bad(format!("larger than {MAX_MODELS_FILE_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    parse_models_file(&text, path.parent().unwrap_or(Path::new(".")), path)
}

/// Each entry's KV budget in MiB: its own, or an equal share of what `total_mib` leaves
/// after the entries that name theirs.
pub fn kv_budgets(entries: &[ModelEntry], total_mib: usize) -> Result<Vec<usize>, ModelsError> {
    let named: usize = entries.iter().filter_map(|e| e.kv_budget_mib).sum();
    let unnamed = entries.iter().filter(|e| e.kv_budget_mib.is_none()).count();
    if named > total_mib {
        return Err(ModelsError::Budget(format!(
            "the models' own KV budgets add up to {named} MiB, more than --kv-budget-mib {total_mib}"
        )));
    }
    let share = (total_mib - named).checked_div(unnamed).unwrap_or(0);
    if unnamed > 0 && share == 0 {
        return Err(ModelsError::Budget(format!(
            "--kv-budget-mib {total_mib} leaves no KV memory for {unnamed} model(s) without their own budget"
        )));
    }
    Ok(entries.iter().map(|e| e.kv_budget_mib.unwrap_or(share)).collect())
}

/// Loads every entry (in order: the first is the default), checking digests and names.
pub fn load_all(entries: &[ModelEntry], runtime: Runtime) -> Result<Vec<Model>, ModelsError> {
    if entries.is_empty() || entries.len() > MAX_MODELS {
        return Err(ModelsError::Count(format!("serve 1 to {MAX_MODELS} models, not {}", entries.len())));
    }
    let mut models: Vec<Model> = Vec::with_capacity(entries.len());
    for e in entries {
        let model = Model::load_with(&e.path, runtime)
            .map_err(|source| ModelsError::Load { path: e.path.clone(), source })?;
        let model = match &e.name {
            Some(name) => model.with_name(name.clone()),
            None => model,
        };
        if let Some(expected) = e.sha256 {
            if model.digest() != expected {
                return Err(ModelsError::DigestMismatch {
                    name: model.name().to_owned(),
                    path: e.path.clone(),
                    expected: hex::encode(expected),
                    actual: hex::encode(model.digest()),
                });
            }
        }
        if models.iter().any(|m| m.name().eq_ignore_ascii_case(model.name())) {
            return Err(ModelsError::DuplicateName(model.name().to_owned()));
        }
        models.push(model);
    }
    Ok(models)
}

/// The served models' engines, the default first.
#[derive(Clone, Debug)]
pub struct Models {
    engines: Vec<Engine>,
}

impl Models {
    /// The set of `engines` (at least one; the first is the default).
    pub fn new(engines: Vec<Engine>) -> Result<Models, ModelsError> {
        if engines.is_empty() {
            return Err(ModelsError::Count("no model to serve".into()));
        }
        Ok(Models { engines })
    }

    /// The model a request naming none gets.
    pub fn default_engine(&self) -> &Engine {
        &self.engines[0]
    }

    /// The engine of the model named `name` (ASCII case-insensitive); `None`: the default.
    pub fn select(&self, name: Option<&str>) -> Option<&Engine> {
        match name {
            None => Some(self.default_engine()),
            Some(n) => self.engines.iter().find(|e| e.model_name().eq_ignore_ascii_case(n)),
        }
    }

    /// Every engine, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &Engine> {
        self.engines.iter()
    }

    /// The served models' names, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.engines.iter().map(Engine::model_name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "5a1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    fn entry(budget: Option<usize>) -> ModelEntry {
        ModelEntry { name: None, path: "m.gguf".into(), sha256: None, kv_budget_mib: budget }
    }

    #[test]
    fn models_files_parse_and_refuse_what_they_cannot_mean() {
        let text = format!(
            "[[model]]\nname = \"a\"\npath = \"a.gguf\"\nsha256 = \"{DIGEST}\"\n\n[[model]]\nname = \"b\"\npath = \"/abs/b.gguf\"\nsha256 = \"{DIGEST}\"\nkv_budget_mib = 64\n"
        );
        let got = parse_models_file(&text, Path::new("/etc/vouch"), Path::new("m.toml")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].path, Path::new("/etc/vouch/a.gguf"));
        assert_eq!(got[1].path, Path::new("/abs/b.gguf"));
        assert_eq!((got[0].kv_budget_mib, got[1].kv_budget_mib), (None, Some(64)));
        assert_eq!(got[0].sha256.map(hex::encode).as_deref(), Some(DIGEST));
        for (bad, says) in [
            (
                format!("[[model]]\nname = \"a\"\npath = \"a\"\nsha256 = \"{}\"\n", &DIGEST[..62]),
                "64 hex digits",
            ),
            ("[[model]]\nname = \"a\"\npath = \"a\"\n".to_owned(), "sha256"),
            (format!("[[model]]\nname = \"\"\npath = \"a\"\nsha256 = \"{DIGEST}\"\n"), "printable"),
            (format!("[[model]]\nname = \"a\"\npath = \"a\"\nsha256 = \"{DIGEST}\"\nsize = 1\n"), "size"),
            ("model = 3".to_owned(), "invalid type"),
        ] {
            let e = parse_models_file(&bad, Path::new("."), Path::new("m.toml")).unwrap_err().to_string();
            assert!(e.starts_with("models file m.toml: ") && e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn kv_budgets_are_named_or_shared_and_never_overcommitted() {
        assert_eq!(kv_budgets(&[entry(None), entry(None)], 512).unwrap(), [256, 256]);
        assert_eq!(kv_budgets(&[entry(Some(100)), entry(None), entry(None)], 500).unwrap(), [100, 200, 200]);
        assert_eq!(kv_budgets(&[entry(Some(100)), entry(Some(50))], 500).unwrap(), [100, 50]);
        let e = kv_budgets(&[entry(Some(400)), entry(Some(200))], 500).unwrap_err().to_string();
        assert_eq!(e, "the models' own KV budgets add up to 600 MiB, more than --kv-budget-mib 500");
        let e = kv_budgets(&[entry(Some(500)), entry(None)], 500).unwrap_err().to_string();
        assert!(e.contains("leaves no KV memory for 1 model"), "{e}");
    }

    #[test]
    fn loading_checks_counts_digests_and_names() {
        let e = load_all(&[], Runtime::Native).unwrap_err().to_string();
        assert_eq!(e, "serve 1 to 16 models, not 0");
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tiny/llama.Q4_K_M.gguf");
        let one =
            ModelEntry { name: Some("tiny".into()), path: tiny.clone(), sha256: None, kv_budget_mib: None };
        let loaded = load_all(std::slice::from_ref(&one), Runtime::Native).unwrap();
        assert_eq!(loaded[0].name(), "tiny");
        let digest = loaded[0].digest();
        // The digest the file has passes; one byte off refuses to start, naming both.
        let pinned = ModelEntry { sha256: Some(digest), ..one.clone() };
        load_all(std::slice::from_ref(&pinned), Runtime::Native).unwrap();
        let mut wrong = digest;
        wrong[0] ^= 1;
        let e = load_all(&[ModelEntry { sha256: Some(wrong), ..one.clone() }], Runtime::Native).unwrap_err();
        match e {
            ModelsError::DigestMismatch { expected, actual, .. } => {
                assert_eq!((expected, actual), (hex::encode(wrong), hex::encode(digest)))
            }
            other => panic!("{other}"),
        }
        let twice = [one.clone(), ModelEntry { name: Some("TINY".into()), ..one }];
        assert!(
            matches!(load_all(&twice, Runtime::Native), Err(ModelsError::DuplicateName(n)) if n == "TINY")
        );
    }
}
