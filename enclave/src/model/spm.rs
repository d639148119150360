//! The SentencePiece tokenizer of GGUF files with `tokenizer.ggml.model = "llama"` (Gemma,
//! Llama 2, Mistral), trusted side, inside the enclave: text → ids exactly as llama.cpp's
//! `llm_tokenizer_spm` computes them, so a prompt means the same ids here and there.
//!
//! Written here rather than taken from a crate: the `tokenizers` crate's SentencePiece
//! models are Unigram (Viterbi over piece scores) or BPE with explicit merges, and a GGUF
//! SPM vocabulary is neither: llama.cpp merges adjacent pieces greedily by the merged
//! piece's score, which gives different ids for some words. The algorithm is short:
//!
//! 1. Split the text at *special tokens*, longest spelling first: control and unknown
//!    tokens only when special tokens are parsed ([`Spm::encode`] with `parse_special`),
//!    user-defined tokens (Gemma's runs of newlines, spaces and tabs, HTML tags) always.
//! 2. In each text piece, spaces become `▁` (U+2581), with one prepended when the file's
//!    `add_space_prefix` says so and the piece follows a special token or starts the text.
//! 3. Start from single characters; repeatedly merge the adjacent pair whose concatenation
//!    is a vocabulary piece with the highest score (ties: leftmost first).
//! 4. Each remaining symbol is its piece's id; a character with no piece is spelled by
//!    its UTF-8 bytes' `<0xXX>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::packed::Packed;
use super::ModelError;

/// GGUF token types (llama.cpp's `llama_token_type`).
pub(crate) const TYPE_UNKNOWN: i32 = 2;
pub(crate) const TYPE_CONTROL: i32 = 3;
pub(crate) const TYPE_USER_DEFINED: i32 = 4;
pub(crate) const TYPE_BYTE: i32 = 6;

/// SentencePiece's visible space.
const SPACE: char = '\u{2581}';

/// A SentencePiece vocabulary and the rules for encoding with it.
#[derive(Clone)]
pub(crate) struct Spm {
    /// Every token's spelling, by id.
    pieces: Packed,
    /// Ids ordered by spelling, for lookups by binary search; of a spelling that occurs
    /// twice only the later id, which wins in llama.cpp.
    sorted: Vec<u32>,
    scores: Vec<f32>,
    /// The `<0xXX>` token of every byte, where the vocabulary has one.
    byte_ids: Vec<Option<u32>>,
    /// Special tokens, longest spelling first (equal lengths: lower id first), and whether
    /// each is matched only when special tokens are parsed (control and unknown tokens).
    specials: Vec<(String, u32, bool)>,
    add_space_prefix: bool,
}

/// One entry of the merge queue: two adjacent symbols whose concatenation is a piece.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// The max-heap pops the highest score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// A symbol of the merge: a byte range of the text, linked to its live neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// Builds the vocabulary from the file's tokens, scores and token types (equal lengths,
    /// checked by the caller).
    pub(crate) fn new(tokens: &[String], scores: &[f32], types: &[i32], add_space_prefix: bool) -> Self {
        let mut pieces = Packed::default();
        for t in tokens {
            pieces.push(t.as_bytes());
        }
        let mut sorted: Vec<u32> = (0..tokens.len() as u32).collect();
        // Stable: equal spellings stay in id order, and the last of each run is kept.
        sorted.sort_by(|&a, &b| pieces.get(a as usize).cmp(pieces.get(b as usize)));
        let mut kept: Vec<u32> = Vec::with_capacity(sorted.len());
        for id in sorted {
            match kept.last_mut() {
                Some(last) if pieces.get(*last as usize) == pieces.get(id as usize) => *last = id,
                _ => kept.push(id),
            }
        }
        let mut spm = Self {
            pieces,
            sorted: kept,
            scores: scores.to_vec(),
            byte_ids: Vec::new(),
            specials: Vec::new(),
            add_space_prefix,
        };
        spm.byte_ids = (0..=255u8).map(|b| spm.token_to_id(&format!("<0x{b:02X}>"))).collect();
        let mut specials: Vec<(String, u32, bool)> = tokens
            .iter()
            .zip(types)
            .enumerate()
            .filter(|(_, (t, ty))| {
                !t.is_empty() && matches!(**ty, TYPE_CONTROL | TYPE_UNKNOWN | TYPE_USER_DEFINED)
            })
            .map(|(i, (t, ty))| (t.clone(), i as u32, *ty != TYPE_USER_DEFINED))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        spm.specials = specials;
        spm
    }

    /// The id of a token spelled exactly `token`.
    pub(crate) fn token_to_id(&self, token: &str) -> Option<u32> {
        let key = token.as_bytes();
        self.sorted.binary_search_by(|&id| self.pieces.get(id as usize).cmp(key)).ok().map(|i| self.sorted[i])
    }

    /// Encodes `text` (no BOS: the caller adds it). With `parse_special`, control-token
    /// spellings such as `<start_of_turn>` become their ids; without, they are plain text.
    pub(crate) fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, ModelError> {
        let mut out = Vec::new();
        let mut prev_special = true;
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(piece) => {
                    let mut escaped = String::with_capacity(piece.len() + 3);
                    if self.add_space_prefix && prev_special {
                        escaped.push(SPACE);
                    }
                    escaped.extend(piece.chars().map(|c| if c == ' ' { SPACE } else { c }));
                    self.merge(&escaped, &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Splits `text` at special-token spellings, longest first.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        for (spelling, id, control) in &self.specials {
            if *control && !parse_special {
                continue;
            }
            if !fragments.iter().any(|f| matches!(f, Fragment::Text(t) if t.contains(spelling.as_str()))) {
                continue;
            }
            let mut split = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    split.push(fragment);
                    continue;
                };
                while let Some(at) = rest.find(spelling.as_str()) {
                    if at > 0 {
                        split.push(Fragment::Text(&rest[..at]));
                    }
                    split.push(Fragment::Token(*id));
                    rest = &rest[at + spelling.len()..];
                }
                if !rest.is_empty() {
                    split.push(Fragment::Text(rest));
                }
            }
            fragments = split;
        }
        fragments
    }

    /// Step 3 and 4 of the module comment for one escaped text piece.
    fn merge(&self, text: &str, out: &mut Vec<u32>) -> Result<(), ModelError> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: None });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        let bigram = |symbols: &[Symbol], left: usize, right: usize| -> Option<Bigram> {
            let (l, r) = (symbols[left], symbols[right]);
            let piece = &text[l.start..r.start + r.len];
            let id = self.token_to_id(piece)?;
            Some(Bigram { left, right, score: self.scores[id as usize], len: piece.len() })
        };
        for i in 1..symbols.len() {
            queue.extend(bigram(&symbols, i - 1, i));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // A pair whose symbols have merged with others since it was queued is stale.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = l.prev {
                queue.extend(bigram(&symbols, p, b.left));
            }
            if let Some(n) = r.next {
                queue.extend(bigram(&symbols, b.left, n));
            }
        }
        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.token_to_id(piece) {
                Some(id) => out.push(id),
                None => {
                    for &byte in piece.as_bytes() {
                        let id = self.byte_ids[byte as usize].ok_or_else(|| {
                            ModelError::Tokenizer(format!(
                                "the vocabulary has no piece for {piece:?} and no <0x{byte:02X}> byte token"
                            ))
                        })?;
                        out.push(id);
                    }
                }
            }
            at = s.next;
        }
        Ok(())
    }
}

/// A piece of partitioned text: plain text still to encode, or a special token's id.
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// The bytes a SentencePiece token stands for, as llama.cpp's `token_to_piece` gives them:
/// a normal piece with `▁` as a space, a byte token as its byte, a user-defined token as
/// spelled; `None` for control tokens (they produce no text).
pub(crate) fn piece_bytes(token: &str, ty: i32) -> Option<Vec<u8>> {
    match ty {
        TYPE_CONTROL => None,
        TYPE_USER_DEFINED => Some(token.as_bytes().to_vec()),
        TYPE_BYTE => {
            let hex = token.strip_prefix("<0x").and_then(|t| t.strip_suffix('>'));
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => Some(vec![b]),
                None => Some(token.as_bytes().to_vec()),
            }
        }
        // llama.cpp shows an unknown token as ▅.
        TYPE_UNKNOWN => Some("\u{2585}".as_bytes().to_vec()),
        _ => Some(token.replace(SPACE, " ").into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small vocabulary: control tokens, bytes, and pieces whose scores decide merges.
    fn vocab(add_space_prefix: bool) -> Spm {
        let mut tokens: Vec<(String, f32, i32)> = vec![
            ("<unk>".into(), 0.0, TYPE_UNKNOWN),
            ("<bos>".into(), 0.0, TYPE_CONTROL),
            ("<eos>".into(), 0.0, TYPE_CONTROL),
            ("\n\n".into(), 0.0, TYPE_USER_DEFINED),
            ("<b>".into(), 0.0, TYPE_USER_DEFINED),
        ];
        for b in 0..=255u8 {
            tokens.push((format!("<0x{b:02X}>"), 0.0, TYPE_BYTE));
        }
        for (piece, score) in [
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("c", -2.0),
            ("ab", -3.0),
            ("bc", -1.5),
            ("▁a", -2.5),
            ("▁ab", -2.6),
            ("\n", -1.0),
        ] {
            tokens.push((piece.into(), score, 1));
        }
        let (t, rest): (Vec<_>, Vec<_>) = tokens.into_iter().map(|(t, s, ty)| (t, (s, ty))).unzip();
        let (s, ty): (Vec<f32>, Vec<i32>) = rest.into_iter().unzip();
        Spm::new(&t, &s, &ty, add_space_prefix)
    }

    fn pieces(spm: &Spm, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| String::from_utf8(spm.pieces.get(i as usize).to_vec()).unwrap()).collect()
    }

    #[test]
    fn lookups_find_every_piece_and_the_later_of_two_equal_spellings() {
        let tokens: Vec<String> = ["b", "a", "c", "a", ""].iter().map(|t| t.to_string()).collect();
        let spm = Spm::new(&tokens, &[0.0; 5], &[1; 5], false);
        assert_eq!(spm.token_to_id("a"), Some(3));
        assert_eq!(spm.token_to_id("b"), Some(0));
        assert_eq!(spm.token_to_id("c"), Some(2));
        assert_eq!(spm.token_to_id(""), Some(4));
        assert_eq!(spm.token_to_id("d"), None);
        assert_eq!(spm.pieces.get(9), b"");
        assert_eq!(spm.pieces.len(), 5);
    }

    #[test]
    fn the_highest_scoring_pair_merges_first() {
        let spm = vocab(false);
        // "bc" (−1.5) beats "ab" (−3.0), and there is no "abc" to merge "a" + "bc" into.
        assert_eq!(pieces(&spm, &spm.encode("abc", false).unwrap()), ["a", "bc"]);
        // With a leading space, "▁a" (−2.5) then "▁ab" (−2.6) merge.
        assert_eq!(pieces(&spm, &spm.encode(" ab", false).unwrap()), ["▁ab"]);
        // Equal scores: both "▁a" pairs merge, leftmost first.
        assert_eq!(pieces(&spm, &spm.encode(" a a", false).unwrap()), ["▁a", "▁a"]);
    }

    #[test]
    fn characters_without_a_piece_fall_back_to_bytes() {
        let spm = vocab(false);
        assert_eq!(pieces(&spm, &spm.encode("é", false).unwrap()), ["<0xC3>", "<0xA9>"]);
        let mut out = Vec::new();
        for id in spm.encode("aé", false).unwrap() {
            let token = &pieces(&spm, &[id])[0];
            out.extend(piece_bytes(token, if token.starts_with("<0x") { TYPE_BYTE } else { 1 }).unwrap());
        }
        assert_eq!(out, "aé".as_bytes());
    }

    #[test]
    fn control_tokens_are_parsed_only_when_asked_and_user_defined_ones_always() {
        let spm = vocab(false);
        assert_eq!(pieces(&spm, &spm.encode("a<eos>", true).unwrap()), ["a", "<eos>"]);
        let plain = pieces(&spm, &spm.encode("a<eos>", false).unwrap());
        assert_eq!(plain[0], "a");
        assert!(!plain.contains(&"<eos>".to_owned()), "{plain:?}");
        // The longer user-defined "\n\n" wins over the piece "\n"; a lone "\n" is a piece.
        assert_eq!(pieces(&spm, &spm.encode("a\n\n\nb<b>", false).unwrap()), ["a", "\n\n", "\n", "b", "<b>"]);
    }

    #[test]
    fn the_space_prefix_follows_the_files_flag() {
        assert_eq!(pieces(&vocab(true), &vocab(true).encode("ab", false).unwrap()), ["▁ab"]);
        assert_eq!(pieces(&vocab(false), &vocab(false).encode("ab", false).unwrap()), ["ab"]);
        // After a special token the prefix comes again.
        let spm = vocab(true);
        assert_eq!(pieces(&spm, &spm.encode("a<eos>a", true).unwrap()), ["▁a", "<eos>", "▁a"]);
    }

    #[test]
    fn a_missing_byte_token_is_an_error_not_a_panic() {
        let spm = Spm::new(&["a".into()], &[0.0], &[1], false);
        let err = spm.encode("b", false).unwrap_err();
        assert!(err.to_string().contains("no <0x62> byte token"), "{err}");
        assert!(spm.encode("", false).unwrap().is_empty());
    }
}
