//! The tokenizer, built from the model file's own metadata (trusted side, inside the
//! enclave): prompt text → token ids for the model, and token ids → raw bytes for the
//! streaming text decoder. Two kinds, chosen by `tokenizer.ggml.model`:
//!
//! - `"gpt2"`, a byte-level BPE (SmolLM2, Llama 3, Qwen): its vocabulary, merges and token
//!   types. We rebuild it with the `tokenizers` crate exactly the way SmolLM2's
//!   `pre = "smollm"` tokenizer works: digits split one by one, then GPT-2's byte-level
//!   regex split *without* a prefix space. candle's own `TokenizerFromGguf` falls back to
//!   GPT-2 defaults (prefix space on) for this model and produces different ids from
//!   llama.cpp and Hugging Face; this one matches them id for id.
//! - `"llama"`, SentencePiece (Gemma): see [`super::spm`].
//!
//! Control tokens (`token_type == 3`, e.g. `<|im_start|>`) are special tokens.
//! [`GgufTokenizer::encode`] recognises them in text; [`GgufTokenizer::encode_plain`]
//! does not, which is what the chat template uses for message contents so that a user
//! cannot forge role markers by typing them.

use std::collections::HashMap;

use super::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use super::packed::Packed;
use super::spm::{self, Spm, TYPE_CONTROL as TOKEN_TYPE_CONTROL};
use super::ModelError;

/// The tokenizer models supported, as `tokenizer.ggml.model` names them.
const SUPPORTED_TOKENIZER_MODELS: &str = "gpt2 (byte-level BPE) or llama (SentencePiece)";

/// Besides the file's EOS token, generation stops at these control tokens where the
/// vocabulary has them: each family's end-of-turn or end-of-text marker.
const STOP_TOKENS: [&str; 3] = ["<|endoftext|>", "<end_of_turn>", "<|eot_id|>"];

/// The tokenizer of a GGUF model.
#[derive(Clone)]
pub struct GgufTokenizer {
    encoder: Encoder,
    /// Raw bytes of every token, by id; empty for control tokens (they produce no text).
    /// Shared with the engine handles (one copy per process, not one per holder).
    token_bytes: std::sync::Arc<Packed>,
    bos_id: u32,
    eos_id: u32,
    /// Whether a prompt starts with BOS (`tokenizer.ggml.add_bos_token`).
    add_bos: bool,
    stop_ids: Vec<u32>,
    digest: [u8; 32],
}

#[derive(Clone)]
enum Encoder {
    Bpe {
        /// Recognises control tokens in text.
        with_special: Box<Tokenizer>,
        /// Treats control-token spellings as ordinary text.
        plain: Box<Tokenizer>,
    },
    Spm(Box<Spm>),
}

/// How the BPE tokenizer splits text before BPE (a change here changes token ids, so it is
/// part of the tokenizer digest).
const PRE_TOKENIZER: &str = "vouch-gpt2-bpe-1: digits split, byte-level, no prefix space";

/// The SentencePiece algorithm's name in the digest (a change that changes ids is a new one).
const SPM_SCHEME: &str = "vouch-spm-1: llama.cpp score-ordered merges, byte fallback";

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("vocab_size", &self.token_bytes.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish_non_exhaustive()
    }
}

fn metadata<'a>(md: &'a HashMap<String, Value>, key: &'static str) -> Result<&'a Value, ModelError> {
    md.get(key).ok_or(ModelError::MissingMetadata { key })
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ModelError {
    ModelError::InvalidMetadata { key, reason: reason.into() }
}

fn string_array(md: &HashMap<String, Value>, key: &'static str) -> Result<Vec<String>, ModelError> {
    let strings = metadata(md, key)?.to_strings().map_err(|e| invalid(key, e.to_string()))?;
    Ok(strings.iter().map(str::to_owned).collect())
}

fn token_id(md: &HashMap<String, Value>, key: &'static str, vocab: usize) -> Result<u32, ModelError> {
    let id = metadata(md, key)?.to_u32().map_err(|e| invalid(key, e.to_string()))?;
    if id as usize >= vocab {
        return Err(invalid(key, format!("id {id} is outside the vocabulary of {vocab}")));
    }
    Ok(id)
}

impl GgufTokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_metadata(md: &HashMap<String, Value>) -> Result<Self, ModelError> {
        let model = match metadata(md, "tokenizer.ggml.model")? {
            Value::String(s) => s.clone(),
            other => {
                return Err(invalid(
                    "tokenizer.ggml.model",
                    format!("expected a string, found {}", other.type_name()),
                ))
            }
        };
        if model != "gpt2" && model != "llama" {
            return Err(ModelError::UnsupportedTokenizer {
                expected: SUPPORTED_TOKENIZER_MODELS,
                actual: model,
            });
        }
        let tokens = string_array(md, "tokenizer.ggml.tokens")?;
        let token_types: Vec<i32> = metadata(md, "tokenizer.ggml.token_type")?
            .to_i32s()
            .map_err(|e| invalid("tokenizer.ggml.token_type", e.to_string()))?
            .to_vec();
        if token_types.len() != tokens.len() {
            return Err(invalid(
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", token_types.len(), tokens.len()),
            ));
        }
        let vocab_size = tokens.len();
        let bos_id = token_id(md, "tokenizer.ggml.bos_token_id", vocab_size)?;
        let eos_id = token_id(md, "tokenizer.ggml.eos_token_id", vocab_size)?;
        let spm = model == "llama";
        // llama.cpp's defaults when the flags are absent: SentencePiece adds BOS and a space
        // prefix, BPE neither.
        let add_bos = flag(md, "tokenizer.ggml.add_bos_token", spm)?;

        let (encoder, token_bytes, rules) = if spm {
            let scores: &[f32] = metadata(md, "tokenizer.ggml.scores")?
                .to_f32s()
                .map_err(|e| invalid("tokenizer.ggml.scores", e.to_string()))?;
            if scores.len() != tokens.len() {
                return Err(invalid(
                    "tokenizer.ggml.scores",
                    format!("{} scores for {} tokens", scores.len(), tokens.len()),
                ));
            }
            let add_space_prefix = flag(md, "tokenizer.ggml.add_space_prefix", true)?;
            let encoder = Encoder::Spm(Box::new(Spm::new(&tokens, scores, &token_types, add_space_prefix)));
            let mut bytes = Packed::default();
            for (t, ty) in tokens.iter().zip(&token_types) {
                bytes.push(&spm::piece_bytes(t, *ty).unwrap_or_default());
            }
            let rules = vec![
                SPM_SCHEME.as_bytes().to_vec(),
                scores.iter().flat_map(|s| s.to_le_bytes()).collect(),
                vec![u8::from(add_space_prefix), u8::from(add_bos)],
            ];
            (encoder, bytes, rules)
        } else {
            let merges = string_array(md, "tokenizer.ggml.merges")?;
            let (with_special, plain) = bpe(&tokens, &merges, &token_types)?;
            let mut bytes = Packed::default();
            for (t, ty) in tokens.iter().zip(&token_types) {
                bytes.push(&if *ty == TOKEN_TYPE_CONTROL { Vec::new() } else { byte_level_to_bytes(t) });
            }
            // The digest parts of the first release, unchanged so SmolLM2's digest is too.
            let mut rules = vec![PRE_TOKENIZER.as_bytes().to_vec()];
            rules.push((tokens.len() as u64).to_le_bytes().to_vec());
            rules.extend(tokens.iter().map(|t| t.as_bytes().to_vec()));
            rules.push((merges.len() as u64).to_le_bytes().to_vec());
            rules.extend(merges.iter().map(|m| m.as_bytes().to_vec()));
            (Encoder::Bpe { with_special: Box::new(with_special), plain: Box::new(plain) }, bytes, rules)
        };
        let mut tokenizer = Self {
            encoder,
            token_bytes: std::sync::Arc::new(token_bytes),
            bos_id,
            eos_id,
            add_bos,
            stop_ids: vec![eos_id],
            digest: [0; 32],
        };
        for name in STOP_TOKENS {
            if let Some(id) = tokenizer.token_to_id(name) {
                if !tokenizer.stop_ids.contains(&id) && token_types[id as usize] == TOKEN_TYPE_CONTROL {
                    tokenizer.stop_ids.push(id);
                }
            }
        }
        let mut parts = rules;
        if spm {
            parts.push((tokens.len() as u64).to_le_bytes().to_vec());
            parts.extend(tokens.iter().map(|t| t.as_bytes().to_vec()));
        }
        parts.push(token_types.iter().flat_map(|t| t.to_le_bytes()).collect());
        parts.push(bos_id.to_le_bytes().to_vec());
        parts.push(tokenizer.stop_ids.iter().flat_map(|t| t.to_le_bytes()).collect());
        tokenizer.digest = tokenizer_digest(&parts);
        Ok(tokenizer)
    }

    /// Encodes text, recognising control-token spellings such as `<|im_start|>`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        match &self.encoder {
            Encoder::Bpe { with_special, .. } => ids(with_special, text),
            Encoder::Spm(spm) => spm.encode(text, true),
        }
    }

    /// Encodes text as plain text: control-token spellings become ordinary tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        match &self.encoder {
            Encoder::Bpe { plain, .. } => ids(plain, text),
            Encoder::Spm(spm) => spm.encode(text, false),
        }
    }

    /// The ids of a raw-text prompt (`/v1/completions`): BOS when the file asks for it,
    /// then the text with control-token spellings recognised, as llama.cpp's server does.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.push(self.bos_id);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Decodes ids to text, skipping control tokens; invalid UTF-8 becomes U+FFFD. Equal to
    /// the concatenation of the streamed deltas for the same ids.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The `tokenizers` crate's own decoding (skipping special tokens), for cross-checks of
    /// the BPE tokenizer; `None` for SentencePiece, which has no second implementation here.
    pub fn decode_with_tokenizers(&self, ids: &[u32]) -> Option<Result<String, ModelError>> {
        match &self.encoder {
            Encoder::Bpe { with_special, .. } => {
                Some(with_special.decode(ids, true).map_err(|e| ModelError::Tokenizer(e.to_string())))
            }
            Encoder::Spm(_) => None,
        }
    }

    /// The raw bytes a token stands for (empty for control tokens and unknown ids).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize)
    }

    /// Every token's bytes, by id (the table [`Self::token_bytes`] reads), shared.
    pub(crate) fn token_bytes_table(&self) -> std::sync::Arc<Packed> {
        std::sync::Arc::clone(&self.token_bytes)
    }

    /// The id of a token spelled exactly `token` (control tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.encoder {
            Encoder::Bpe { with_special, .. } => with_special.token_to_id(token),
            Encoder::Spm(spm) => spm.token_to_id(token),
        }
    }

    /// Whether prompts start with [`Self::bos_id`].
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Beginning-of-sequence id (`<|im_start|>` for SmolLM2).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// End-of-sequence id (`<|im_end|>` for SmolLM2): generation stops here.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Whether generation stops at this token.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }

    /// The ids generation stops at.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// SHA-256 over everything that decides token ids and text: the pre-tokenizer, the
    /// vocabulary, merges and token types, the BOS id and the stop ids (receipts commit it).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }
}

/// See [`GgufTokenizer::digest`]: each part length-prefixed, so no two inputs collide.
fn tokenizer_digest(parts: &[Vec<u8>]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn ids(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, ModelError> {
    tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| ModelError::Tokenizer(e.to_string()))
}

/// A boolean metadata flag, `default` when absent.
fn flag(md: &HashMap<String, Value>, key: &'static str, default: bool) -> Result<bool, ModelError> {
    match md.get(key) {
        None => Ok(default),
        Some(v) => v.to_bool().map_err(|e| invalid(key, e.to_string())),
    }
}

/// The byte-level BPE with control tokens registered: one that recognises them in text
/// and one that treats their spellings as plain text.
fn bpe(tokens: &[String], merges: &[String], types: &[i32]) -> Result<(Tokenizer, Tokenizer), ModelError> {
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    if vocab.len() != tokens.len() {
        return Err(invalid("tokenizer.ggml.tokens", "duplicate tokens"));
    }
    let merge_pairs: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| invalid("tokenizer.ggml.merges", format!("merge {m:?} has no space")))
        })
        .collect::<Result<_, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merge_pairs)
        .build()
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;

    let mut with_special = Tokenizer::new(bpe);
    with_special.with_pre_tokenizer(Some(Sequence::new(vec![
        // SmolLM2 ("smollm" pre-tokenizer) splits every digit on its own...
        PreTokenizerWrapper::Digits(Digits::new(true)),
        // ...then GPT-2's byte-level regex split, with NO prefix space.
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ])));
    with_special.with_decoder(Some(ByteLevelDecoder::default()));
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, ty)| **ty == TOKEN_TYPE_CONTROL)
        .map(|(t, _)| AddedToken::from(t.clone(), true))
        .collect();
    with_special.add_special_tokens(control).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let mut plain = with_special.clone();
    plain.set_encode_special_tokens(true);
    Ok((with_special, plain))
}

/// Maps a byte-level BPE token spelling back to the bytes it stands for.
///
/// GPT-2's byte-level alphabet spells each byte as one printable char: bytes `!`..=`~`,
/// `¡`..=`¬` and `®`..=`ÿ` as themselves, the other 68 bytes as U+0100 + n in byte
/// order. A char outside that alphabet (not expected in a byte-level vocabulary) is kept
/// as its own UTF-8.
fn byte_level_to_bytes(token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match byte_level_char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

fn is_printable_byte(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

fn byte_level_char_to_byte(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if cp < 256 {
        let b = cp as u8;
        return is_printable_byte(b).then_some(b);
    }
    // The n-th non-printable byte (in byte order) is spelled U+0100 + n. The non-printable
    // bytes are 0x00..=0x20 (33), 0x7F..=0xA0 (34) and 0xAD (1).
    match cp.checked_sub(256)? {
        n @ 0..=32 => Some(n as u8),
        n @ 33..=66 => Some((0x7F + (n - 33)) as u8),
        67 => Some(0xAD),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_round_trips_every_byte() {
        // Build the forward table the GPT-2 way and check the inverse.
        let mut n = 0u32;
        for b in 0u8..=255 {
            let c = if is_printable_byte(b) {
                char::from(b)
            } else {
                let c = char::from_u32(256 + n).unwrap();
                n += 1;
                c
            };
            assert_eq!(byte_level_char_to_byte(c), Some(b), "byte {b}");
        }
        assert_eq!(n, 68);
        assert_eq!(byte_level_to_bytes("Ġworld"), b" world");
        assert_eq!(byte_level_to_bytes("Ċ"), b"\n");
    }
}
