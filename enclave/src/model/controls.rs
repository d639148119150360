//! The decoding controls beyond temperature and top_p (trusted side, inside the enclave;
//! also what `vouch replay` runs): stop strings, presence and frequency penalties, logit
//! bias. Receipts commit them (`DecodingSpec`), so their effect is written out exactly:
//!
//! ```text
//!  logits ─► l'_i = l_i + (f32)(bias_i − presence·[c_i > 0] − frequency·c_i)   (f64 inside)
//!            c_i: times id i is in the completion so far; only ids with a bias or a count
//!        ─► vouch-sampler-2's choice rule (= vouch-sampler-1's) over l'
//!  text  ─► the answer ends just before the first place a stop string occurs (finish
//!            "stop"); while a stop string could still begin in the text not yet sent, that
//!            text is held back, so a stream never shows text a stop string later cuts
//! ```
//!
//! Penalties count completion tokens only, not the prompt's (as vLLM does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::utf8::Utf8Stream;
use super::ModelError;

/// Most stop strings (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = vouch_attestation::receipt::MAX_STOP_STRINGS;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Penalties lie in `[-MAX_PENALTY, MAX_PENALTY]` (OpenAI's range).
pub const MAX_PENALTY: f64 = 2.0;
/// A logit bias lies in `[-MAX_BIAS, MAX_BIAS]` (OpenAI's range).
pub const MAX_BIAS: f64 = 100.0;
/// Most logit_bias entries.
pub const MAX_BIAS_ENTRIES: usize = 1024;

/// Most choices per request (`n`): each is decoded as a sequence of its own.
pub const MAX_CHOICES: u32 = 8;

/// Stop strings, penalties and logit bias, as applied; which of `n` choices this is, and
/// whether log-probabilities are returned. The default applies nothing (one choice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecodingControls {
    /// Stop strings, in request order.
    pub stop: Vec<String>,
    /// Subtracted once from the logit of every token already in the completion.
    pub presence_penalty: f64,
    /// Subtracted from a token's logit once per occurrence in the completion.
    pub frequency_penalty: f64,
    /// (token id, bias), ascending id, each id once.
    pub logit_bias: Vec<(u32, f64)>,
    /// Choices the request asked for (`n`).
    pub n: u32,
    /// Which of them this answer is (0-based): the sampler draws from random stream
    /// `choice_index` of the request's seed (choice 0: the stream a single answer uses).
    pub choice_index: u32,
    /// `top_logprobs` when log-probabilities are returned (`logprobs: true`).
    pub logprobs: Option<u32>,
    /// The output constraint (`response_format` other than text).
    pub response_format: Option<super::constraint::OutputFormat>,
    /// The tools offered and how they may be called.
    pub tools: Option<super::tools::ToolSpec>,
}

impl Default for DecodingControls {
    fn default() -> DecodingControls {
        DecodingControls {
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            n: 1,
            choice_index: 0,
            logprobs: None,
            response_format: None,
            tools: None,
        }
    }
}

impl DecodingControls {
    /// Whether the logits are adjusted at all (bias or a penalty).
    pub fn adjusts_logits(&self) -> bool {
        !self.logit_bias.is_empty() || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    /// Checks the bounds (without the vocabulary: see [`DecodingControls::check_vocab`]).
    pub fn validate(&self) -> Result<(), ModelError> {
        self.check().map_err(|(_, reason)| ModelError::InvalidRequest(reason))
    }

    /// [`DecodingControls::validate`], naming the request field at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(("stop", format!("stop: at most {MAX_STOP_STRINGS} strings")));
        }
        if let Some(s) = self.stop.iter().find(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
            return Err(("stop", format!("stop string {s:?}: must be 1 to {MAX_STOP_BYTES} bytes")));
        }
        for (name, p) in
            [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)]
        {
            if !p.is_finite() || p.abs() > MAX_PENALTY {
                return Err((name, format!("{name} {p} is outside [-{MAX_PENALTY}, {MAX_PENALTY}]")));
            }
        }
        if self.logit_bias.len() > MAX_BIAS_ENTRIES {
            return Err(("logit_bias", format!("logit_bias: at most {MAX_BIAS_ENTRIES} entries")));
        }
        if !self.logit_bias.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(("logit_bias", "logit_bias: token ids must be ascending and distinct".into()));
        }
        if let Some((id, b)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite() || b.abs() > MAX_BIAS) {
            return Err((
                "logit_bias",
                format!("logit_bias for token {id}: {b} is outside [-{MAX_BIAS}, {MAX_BIAS}]"),
            ));
        }
        if !(1..=MAX_CHOICES).contains(&self.n) {
            return Err(("n", format!("n {} is outside [1, {MAX_CHOICES}]", self.n)));
        }
        if self.choice_index >= self.n {
            return Err(("n", format!("choice {} of n = {}", self.choice_index, self.n)));
        }
        if let Some(top) = self.logprobs.filter(|&t| t > super::logprobs::MAX_TOP_LOGPROBS) {
            let max = super::logprobs::MAX_TOP_LOGPROBS;
            return Err(("top_logprobs", format!("top_logprobs {top} is outside [0, {max}]")));
        }
        Ok(())
    }

    /// The receipt's effective generation spec for an answer decoded under these controls.
    pub fn spec(&self) -> vouch_attestation::receipt::DecodingSpec {
        vouch_attestation::receipt::DecodingSpec {
            stop: self.stop.clone(),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias.clone(),
            n: self.n,
            choice_index: self.choice_index,
            logprobs: self.logprobs,
            response_format: self.response_format.as_ref().map_or_else(|| "text".into(), |f| f.kind.clone()),
            grammar_sha256: self.response_format.as_ref().map(|f| f.grammar_sha256().to_vec()),
            tools_sha256: self.tools.as_ref().map(|t| t.sha256().to_vec()),
        }
    }

    /// Checks that every biased id is in a vocabulary of `vocab` tokens.
    pub fn check_vocab(&self, vocab: usize) -> Result<(), ModelError> {
        match self.logit_bias.iter().find(|(id, _)| *id as usize >= vocab) {
            Some((id, _)) => Err(ModelError::InvalidRequest(format!(
                "logit_bias: token id {id} is not in the vocabulary ({vocab} tokens)"
            ))),
            None => Ok(()),
        }
    }
}

/// The logit adjustment of one answer: its bias and penalties, and the completion's
/// token counts so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogitAdjust {
    bias: Vec<(u32, f64)>,
    presence: f64,
    frequency: f64,
    counts: BTreeMap<u32, u32>,
    /// Scratch: the adjusted logits.
    adjusted: Vec<f32>,
}

impl LogitAdjust {
    pub(crate) fn new(c: &DecodingControls) -> LogitAdjust {
        LogitAdjust {
            bias: c.logit_bias.clone(),
            presence: c.presence_penalty,
            frequency: c.frequency_penalty,
            ..LogitAdjust::default()
        }
    }

    /// Records a token that joined the completion.
    pub(crate) fn observe(&mut self, id: u32) {
        if self.presence != 0.0 || self.frequency != 0.0 {
            *self.counts.entry(id).or_insert(0) += 1;
        }
    }

    /// The logits to choose from: `logits` itself when nothing adjusts them, else the
    /// adjusted copy (ids out of range are skipped: the vocabulary was checked).
    pub(crate) fn apply<'a>(&'a mut self, logits: &'a [f32]) -> &'a [f32] {
        if self.bias.is_empty() && self.counts.is_empty() {
            return logits;
        }
        let mut delta: BTreeMap<u32, f64> = self.bias.iter().copied().collect();
        for (&id, &c) in &self.counts {
            *delta.entry(id).or_insert(0.0) -= self.presence + self.frequency * f64::from(c);
        }
        self.adjusted.clear();
        self.adjusted.extend_from_slice(logits);
        for (id, d) in delta {
            if let Some(l) = self.adjusted.get_mut(id as usize) {
                *l += d as f32;
            }
        }
        &self.adjusted
    }
}

/// The stop-string rule over an answer's text: what may be sent so far, and where the
/// answer ends.
#[derive(Debug, Clone)]
pub(crate) struct StopText {
    stops: Vec<String>,
    /// The text so far (cut at the match once one is found).
    text: String,
    /// Bytes of `text` already released.
    released: usize,
}

impl StopText {
    pub(crate) fn new(stops: &[String]) -> StopText {
        StopText { stops: stops.to_vec(), text: String::new(), released: 0 }
    }

    /// Adds `delta`. Returns the text that may be released now and whether a stop string
    /// occurred (then the answer's text ends just before it, and nothing after is kept).
    /// Held back: the longest tail that is the beginning of a stop string.
    pub(crate) fn push(&mut self, delta: &str) -> (String, bool) {
        self.text.push_str(delta);
        let from = self.released;
        let pending = &self.text[from..];
        // No match can begin in released text: it was released because no stop string
        // could begin there.
        if let Some(at) = self.stops.iter().filter_map(|s| pending.find(s.as_str())).min() {
            let end = from + at;
            let out = self.text[from..end].to_owned();
            self.text.truncate(end);
            self.released = end;
            return (out, true);
        }
        let held = pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&pending[i..])))
            .unwrap_or(pending.len());
        let out = pending[..held].to_owned();
        self.released = from + held;
        (out, false)
    }

    /// The answer ended otherwise (stop token, budget): everything held back is released.
    pub(crate) fn flush(&mut self) -> String {
        let out = self.text[self.released..].to_owned();
        self.released = self.text.len();
        out
    }
}

/// An answer's text as generation spells it and sends it: token bytes in, whole UTF-8
/// characters ([`Utf8Stream`]) through the stop strings ([`StopText`]) out. Generation
/// and teacher-forced replay both spell answers with this, so they end them alike.
#[derive(Debug)]
pub(crate) struct AnswerText {
    utf8: Utf8Stream,
    stop: StopText,
}

impl AnswerText {
    pub(crate) fn new(stops: &[String]) -> AnswerText {
        AnswerText { utf8: Utf8Stream::new(), stop: StopText::new(stops) }
    }

    /// Adds a token's bytes: the text that may be sent now, and whether a stop string
    /// occurred (the answer ends before it).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        let delta = self.utf8.push(bytes);
        if delta.is_empty() {
            return (delta, false);
        }
        self.stop.push(&delta)
    }

    /// The answer ended on the stop token or the budget: its last bytes and everything
    /// held back, and whether those last bytes completed a stop string after all.
    pub(crate) fn finish(&mut self) -> (String, bool) {
        let tail = self.utf8.finish();
        let (mut out, stopped) = if tail.is_empty() { (String::new(), false) } else { self.stop.push(&tail) };
        if !stopped {
            out.push_str(&self.stop.flush());
        }
        (out, stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut st = StopText::new(&stops);
        let mut sent = Vec::new();
        for d in deltas {
            let (out, hit) = st.push(d);
            sent.push(out);
            if hit {
                return (sent, true, st.text.clone());
            }
        }
        sent.push(st.flush());
        (sent, false, st.text.clone())
    }

    #[test]
    fn a_stop_string_cuts_the_text_and_is_never_sent_even_across_deltas() {
        let (sent, hit, text) = run(&["Berlin"], &["The capital is ", "Ber", "l", "in."]);
        assert!(hit);
        assert_eq!(sent, ["The capital is ", "", "", ""]);
        assert_eq!(text, "The capital is ");
        assert_eq!(sent.concat(), text);
    }

    #[test]
    fn held_text_that_turns_out_not_to_be_a_stop_is_released() {
        let (sent, hit, text) = run(&["Berlin"], &["Ber", "n is a city", "."]);
        assert!(!hit);
        assert_eq!(sent, ["", "Bern is a city", ".", ""]);
        assert_eq!(text, "Bern is a city.");
        // Held at the end: released by flush.
        let (sent, hit, _) = run(&["Berlin"], &["go to Ber"]);
        assert!(!hit);
        assert_eq!(sent, ["go to ", "Ber"]);
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_multibyte_text_is_cut_on_characters() {
        let (sent, hit, text) = run(&["\n\n", "Zürich"], &["à Zü", "rich\n\nmore"]);
        assert!(hit);
        assert_eq!(text, "à ");
        assert_eq!(sent.concat(), "à ");
        let (_, hit, text) = run(&["b", "ab"], &["xxab"]);
        assert!(hit);
        assert_eq!(text, "xx");
        // No stops: everything passes at once.
        assert_eq!(run(&[], &["a", "b"]).0, ["a", "b", ""]);
    }

    #[test]
    fn bias_and_penalties_adjust_exactly_the_named_ids() {
        let c = DecodingControls {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            logit_bias: vec![(0, -100.0), (2, 3.0)],
            ..DecodingControls::default()
        };
        let mut a = LogitAdjust::new(&c);
        let logits = [1.0f32, 1.0, 1.0, 1.0];
        assert_eq!(a.apply(&logits), [-99.0, 1.0, 4.0, 1.0]);
        a.observe(1);
        a.observe(1);
        a.observe(2);
        // id 1: −0.5 − 2·0.25; id 2: +3 − 0.5 − 0.25.
        assert_eq!(a.apply(&logits), [-99.0, 0.0, 3.25, 1.0]);
        // Nothing to adjust: the logits themselves.
        let mut none = LogitAdjust::new(&DecodingControls::default());
        none.observe(1);
        assert!(std::ptr::eq(none.apply(&logits), &logits[..]));
    }

    #[test]
    fn out_of_range_controls_are_refused() {
        let base = DecodingControls::default;
        for (c, msg) in [
            (DecodingControls { stop: vec!["a".into(); 5], ..base() }, "at most 4"),
            (DecodingControls { stop: vec![String::new()], ..base() }, "1 to 256 bytes"),
            (DecodingControls { presence_penalty: 2.5, ..base() }, "presence_penalty 2.5"),
            (DecodingControls { frequency_penalty: f64::NAN, ..base() }, "frequency_penalty NaN"),
            (DecodingControls { logit_bias: vec![(3, 1.0), (3, 1.0)], ..base() }, "ascending and distinct"),
            (DecodingControls { logit_bias: vec![(3, 101.0)], ..base() }, "token 3: 101"),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
        let c = DecodingControls { logit_bias: vec![(49152, 1.0)], ..base() };
        assert!(c
            .check_vocab(49152)
            .unwrap_err()
            .to_string()
            .contains("token id 49152 is not in the vocabulary"));
        c.check_vocab(49153).unwrap();
    }
}
