//! Structured output (`response_format` `json_object` / `json_schema`): grammar-constrained
//! decoding with `llguidance`, the constrained-decoding library llama.cpp and vLLM use
//! (trusted side, and in `vouch replay`). Before each token the grammar's matcher says
//! which tokens may come next; the sampler chooses among those only.
//!
//! ```text
//!  response_format ─► OutputFormat { kind, schema } ─► grammar_sha256 (committed)
//!                              └─► llguidance JSON-schema grammar ─► Matcher (per answer)
//!  each step: mask = matcher.compute_mask_or_eos()   (the end of answer once it may stop)
//!             sampler: disallowed ids get no weight ─► pick ─► matcher.consume_token(pick)
//! ```
//!
//! Replayable: llguidance's masks depend only on the grammar and the tokens consumed (its
//! limits are counted in work units, never in time), so a replay that rebuilds the same
//! grammar from the request picks under the same masks. The library's version is part of
//! the grammar digest: another version may draw the line elsewhere, and a receipt says
//! which one decoded it.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, InferenceCapabilities, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tokenizer::GgufTokenizer;
use super::ModelError;

/// The constrained-decoding engine, as grammar digests name it.
pub const CONSTRAINT_ENGINE: &str = "llguidance-1.9.1";

/// An output constraint: `json_object` (any JSON object) or `json_schema` (an instance of
/// `schema`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFormat {
    /// `json_object` or `json_schema` (the receipt's `response_format`).
    pub kind: String,
    /// The JSON schema (`json_schema` only).
    pub schema: Option<serde_json::Value>,
}

impl OutputFormat {
    /// Any JSON object.
    pub fn json_object() -> OutputFormat {
        OutputFormat { kind: "json_object".into(), schema: None }
    }

    /// An instance of `schema`.
    pub fn json_schema(schema: serde_json::Value) -> OutputFormat {
        OutputFormat { kind: "json_schema".into(), schema: Some(schema) }
    }

    /// The schema the grammar is built from.
    fn schema(&self) -> serde_json::Value {
        self.schema.clone().unwrap_or_else(|| serde_json::json!({"type": "object"}))
    }

    /// SHA-256 of what decides the masks: the engine and its version, the kind, and the
    /// schema as serialised here (`engine \n kind \n schema`). A replay rebuilds it from
    /// the request and must get the committed value.
    pub fn grammar_sha256(&self) -> [u8; 32] {
        let text = format!("{CONSTRAINT_ENGINE}\n{}\n{}", self.kind, self.schema());
        Sha256::digest(text.as_bytes()).into()
    }
}

/// The grammar compiler for one model's vocabulary (built once per model: a trie over
/// every token's bytes). Control tokens are spelled with llguidance's special-token
/// marker, so no grammar text can produce them; the end of an answer is the tokenizer's
/// end-of-sequence id.
#[derive(Clone)]
pub struct Grammars {
    factory: Arc<ParserFactory>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").field("engine", &CONSTRAINT_ENGINE).finish_non_exhaustive()
    }
}

impl Grammars {
    /// Indexes `tokenizer`'s vocabulary.
    pub fn new(tokenizer: &GgufTokenizer) -> Result<Grammars, ModelError> {
        let vocab = tokenizer.vocab_size() as u32;
        Grammars::from_vocabulary(vocab, tokenizer.eos_id(), |id| tokenizer.token_bytes(id))
    }

    /// Indexes a vocabulary of `vocab` tokens, `bytes(id)` each (empty: a control token),
    /// ending at `eos`.
    pub fn from_vocabulary<'a>(
        vocab: u32,
        eos: u32,
        bytes: impl Fn(u32) -> &'a [u8],
    ) -> Result<Grammars, ModelError> {
        let words: Vec<Vec<u8>> = (0..vocab)
            .map(|id| match bytes(id) {
                [] => {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(format!("<[{id}]>").as_bytes());
                    w
                }
                b => b.to_vec(),
            })
            .collect();
        let trie = TokTrie::from(&TokRxInfo::new(vocab, eos), &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new(
            &env,
            InferenceCapabilities::default(),
            &llguidance::earley::SlicedBiasComputer::json_slices(),
        )
        .map_err(|e| ModelError::inference(format!("cannot index the vocabulary for grammars: {e}")))?;
        factory.quiet();
        Ok(Grammars { factory: Arc::new(factory) })
    }

    /// The matcher of one answer under `format`; an error names what is wrong with the
    /// schema.
    pub fn matcher(&self, format: &OutputFormat) -> Result<Constraint, ModelError> {
        self.compile(TopLevelGrammar::from_json_schema(format.schema()), "response_format")
    }

    /// The matcher of one answer that may call `tools` (`None` when it may not call).
    pub fn tool_matcher(&self, tools: &super::tools::ToolSpec) -> Result<Option<Constraint>, ModelError> {
        tools.grammar().map(|lark| self.compile(TopLevelGrammar::from_lark(lark), "tools")).transpose()
    }

    fn compile(&self, grammar: TopLevelGrammar, field: &str) -> Result<Constraint, ModelError> {
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ModelError::InvalidRequest(format!("{field}: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ModelError::InvalidRequest(format!("{field}: {e}")));
        }
        Ok(Constraint { matcher })
    }
}

/// One answer's grammar state.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").finish_non_exhaustive()
    }
}

impl Constraint {
    /// Calls `allow` with every token id that may come next (the end-of-sequence id once
    /// the grammar is complete).
    pub(crate) fn allowed(&mut self, mut allow: impl FnMut(u32)) -> Result<(), ModelError> {
        let mask = self.matcher.compute_mask_or_eos().map_err(grammar_error)?;
        mask.iter_set_entries(|id| allow(id as u32));
        Ok(())
    }

    /// Advances the grammar past `id` (a token the mask allowed).
    pub(crate) fn consume(&mut self, id: u32) -> Result<(), ModelError> {
        self.matcher.consume_token(id).map_err(grammar_error)
    }
}

fn grammar_error(e: impl std::fmt::Display) -> ModelError {
    ModelError::inference(format!("the output grammar failed: {e}"))
}
