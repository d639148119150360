//! Server-sent events parsing for streamed chat completions.
//!
//! CLIENT side; the bytes come from the enclave through the untrusted host (inside
//! TLS, but still parsed as hostile input): every event is bounded in size, and
//! nothing parsed here is trusted until the final chunk's receipt verifies over the
//! concatenated deltas.

/// Largest single event accepted, in bytes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Incremental SSE parser: feed bytes, get complete events' `data` payloads.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    /// A parser with an empty buffer.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Adds `chunk` and returns the data of every event it completed (multi-line data
    /// joined with `\n`; events without data lines and comments are skipped).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, String> {
        // CR is only a line-ending variant here (JSON payloads escape it).
        self.buf.extend(chunk.iter().copied().filter(|&b| b != b'\r'));
        let mut events = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let block = std::str::from_utf8(&block[..end]).map_err(|_| "event is not UTF-8".to_owned())?;
            let mut data: Option<String> = None;
            for line in block.split('\n') {
                if let Some(rest) = line.strip_prefix("data:") {
                    let rest = rest.strip_prefix(' ').unwrap_or(rest);
                    match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(rest);
                        }
                        None => data = Some(rest.to_owned()),
                    }
                }
            }
            if let Some(d) = data {
                events.push(d);
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(format!("server-sent event larger than {MAX_EVENT_BYTES} bytes"));
        }
        Ok(events)
    }

    /// Bytes left that do not form a complete event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(
            p.push(b":1}\n\ndata: x\r\n\r\n: comment\n\ndata: [DONE]\n").unwrap(),
            vec!["{\"a\":1}", "x"]
        );
        assert_eq!(p.push(b"\n").unwrap(), vec!["[DONE]"]);
        assert_eq!(p.pending(), 0);
        assert_eq!(p.push(b"data: a\ndata: b\n\n").unwrap(), vec!["a\nb"]);
    }

    #[test]
    fn oversized_event_refused() {
        let mut p = SseParser::new();
        assert!(p.push(&vec![b'x'; MAX_EVENT_BYTES + 1]).is_err());
    }
}
