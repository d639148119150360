//! Byte strings stored back to back (trusted side, inside the enclave): the one container
//! for a vocabulary's strings, shared by the GGUF parser's string arrays
//! ([`super::gguf_file::Strings`]), the SentencePiece pieces and the token bytes.

/// Byte strings stored back to back, one allocation for a whole vocabulary (Gemma's
/// 262 144 tokens as separate `String`s and a hash map of them take ~40 MB more).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Packed {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Packed {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.ends.push(self.data.len());
    }

    /// Entry `i`; empty past the end.
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        match self.ends.get(i) {
            Some(&end) => &self.data[if i == 0 { 0 } else { self.ends[i - 1] }..end],
            None => &[],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}
