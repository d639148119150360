//! Streaming UTF-8 assembly (trusted side, inside the enclave): byte-level BPE tokens can
//! end in the middle of a multi-byte character, so the decode loop pushes each token's raw
//! bytes here and only complete characters come out as text deltas.
//!
//! The concatenation of everything [`Utf8Stream::push`] and [`Utf8Stream::finish`] return
//! equals `String::from_utf8_lossy` of all the bytes pushed: invalid sequences become one
//! U+FFFD each, by the same "maximal subpart" rule. That makes the streamed text and the
//! text hashed into a receipt the same string by construction.

/// Incremental UTF-8 decoder that holds back an incomplete trailing character.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by the error's contract.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        // An invalid sequence: replace it and go on.
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[len..];
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Ends the stream: an incomplete trailing character becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Whether bytes are being held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_in_pieces(bytes: &[u8], cut: &[usize]) -> (Vec<String>, String) {
        let mut s = Utf8Stream::new();
        let mut deltas = Vec::new();
        let mut last = 0;
        for &c in cut.iter().chain(std::iter::once(&bytes.len())) {
            deltas.push(s.push(&bytes[last..c]));
            last = c;
        }
        deltas.push(s.finish());
        let joined = deltas.concat();
        (deltas, joined)
    }

    #[test]
    fn ascii_passes_straight_through() {
        let mut s = Utf8Stream::new();
        assert_eq!(s.push(b"Hello"), "Hello");
        assert_eq!(s.push(b" world"), " world");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn multibyte_char_split_across_tokens_is_held_back() {
        let text = "caf\u{e9} \u{1F600}!"; // é is 2 bytes, the emoji 4
        let bytes = text.as_bytes();
        let mut s = Utf8Stream::new();
        assert_eq!(s.push(&bytes[..4]), "caf"); // first byte of é only
        assert!(s.has_pending());
        assert_eq!(s.push(&bytes[4..7]), "\u{e9} "); // rest of é, space, 1st emoji byte
        assert_eq!(s.push(&bytes[7..9]), ""); // still inside the emoji
        assert_eq!(s.push(&bytes[9..]), "\u{1F600}!");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn every_split_point_gives_the_same_text() {
        let text = "日本語 ünïcödé \u{1F680} mixed ascii";
        let bytes = text.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let (deltas, joined) = stream_in_pieces(bytes, &[i, j]);
                assert_eq!(joined, text, "cuts {i},{j}");
                for d in deltas {
                    assert!(!d.contains(char::REPLACEMENT_CHARACTER));
                }
            }
        }
    }

    #[test]
    fn invalid_bytes_match_from_utf8_lossy() {
        let cases: &[&[u8]] = &[
            b"ok\xffok",
            b"\xe6\x97",         // truncated 3-byte char at the end
            b"a\xe6\x97b",       // truncated 3-byte char in the middle
            b"\xf0\x9f\x98",     // truncated 4-byte char
            b"\xc0\xaf x",       // overlong encoding
            b"\xed\xa0\x80 sur", // surrogate
        ];
        for case in cases {
            let expected = String::from_utf8_lossy(case).into_owned();
            for cut in 0..=case.len() {
                let (_, joined) = stream_in_pieces(case, &[cut]);
                assert_eq!(joined, expected, "{case:?} cut at {cut}");
            }
        }
    }
}
