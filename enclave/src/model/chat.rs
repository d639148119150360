//! The chat templates (trusted side, inside the enclave): turn a list of chat messages into
//! the exact prompt token ids the model sees.
//!
//! A GGUF file carries its template as Jinja source (`tokenizer.chat_template`). Vouch does
//! not run that source: a template is code in the enclave binary (which the measurement
//! covers), and a receipt commits the template's name, so a replay renders the same ids.
//! The file's template picks which family's rendering the model gets, by the markers it
//! writes; a file without one (a base model) is served on `/v1/completions` only.
//!
//! ```text
//!  chatml-vouch-1 (SmolLM2, Qwen2/3: `<|im_start|>` in the file's template)
//!    <|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n      (only if no system message first)
//!    <|im_start|>{role}\n{content}<|im_end|>\n                    (each message)
//!    <|im_start|>assistant\n                                      (generation prompt)
//!  gemma-vouch-1 (Gemma 3 instruction models: `<start_of_turn>`)
//!    <bos><start_of_turn>user\n{system}\n\n{content, trimmed}<end_of_turn>\n   (a system message joins the first user turn)
//!    <start_of_turn>model\n{content, trimmed}<end_of_turn>\n                   (assistant turns are "model")
//!    <start_of_turn>model\n                                                   (generation prompt)
//!  llama3-vouch-1 (Llama 3 instruct: `<|start_header_id|>`; no default system message)
//!    <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>
//!    <|start_header_id|>assistant<|end_header_id|>\n\n                          (generation prompt)
//! ```
//!
//! The Gemma and Llama 3 renderings are those of the templates Google and Meta ship with
//! the instruction-tuned models (Gemma 3's requires user and model turns to alternate,
//! and so does this; Llama 3.1's date preamble is not added). The role markers are
//! inserted as token ids and message text is tokenized as plain text between them, so a
//! message that *contains* `<|im_end|>` or `<end_of_turn>` cannot close its own turn and
//! forge another role. For ordinary text the ids are identical to tokenizing the rendered
//! string in one go (special tokens split the text before BPE or SentencePiece runs).

use super::tokenizer::GgufTokenizer;
use super::{ChatMessage, ModelError};

/// The system message SmolLM2's template inserts when the conversation has none.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// The ChatML template's name, as receipts commit it: ChatML with
/// [`DEFAULT_SYSTEM_PROMPT`] when the messages have no system message, and the assistant
/// turn opened. A change to a template that changes any prompt is a new name.
pub const CHAT_TEMPLATE: &str = "chatml-vouch-1";
/// The Gemma 3 template's name ([`ChatTemplate::Gemma`]).
pub const GEMMA_TEMPLATE: &str = "gemma-vouch-1";
/// The Llama 3 template's name ([`ChatTemplate::Llama3`]).
pub const LLAMA3_TEMPLATE: &str = "llama3-vouch-1";

/// The name receipts commit for a raw-text prompt (`POST /v1/completions`): the model's
/// BOS token when its file asks for one, then the text tokenized with control-token
/// spellings recognised ([`GgufTokenizer::encode_prompt`], as llama.cpp's server does). A
/// change that changes any such prompt's ids is a new name.
pub const TEXT_TEMPLATE: &str = "text-vouch-1";

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";
const START_OF_TURN: &str = "<start_of_turn>";
const END_OF_TURN: &str = "<end_of_turn>";
const START_HEADER: &str = "<|start_header_id|>";
const END_HEADER: &str = "<|end_header_id|>";
const EOT: &str = "<|eot_id|>";

/// A chat template Vouch renders (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// [`CHAT_TEMPLATE`].
    ChatMl,
    /// [`GEMMA_TEMPLATE`].
    Gemma,
    /// [`LLAMA3_TEMPLATE`].
    Llama3,
}

impl ChatTemplate {
    /// Every template, in the order a file's template is matched against them.
    pub const ALL: [ChatTemplate; 3] = [ChatTemplate::Gemma, ChatTemplate::Llama3, ChatTemplate::ChatMl];

    /// The name receipts commit.
    pub fn name(self) -> &'static str {
        match self {
            ChatTemplate::ChatMl => CHAT_TEMPLATE,
            ChatTemplate::Gemma => GEMMA_TEMPLATE,
            ChatTemplate::Llama3 => LLAMA3_TEMPLATE,
        }
    }

    /// The template named `name`.
    pub fn from_name(name: &str) -> Option<ChatTemplate> {
        ChatTemplate::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The control tokens the template writes (the vocabulary must have each).
    fn markers(self) -> &'static [&'static str] {
        match self {
            ChatTemplate::ChatMl => &[IM_START, IM_END],
            ChatTemplate::Gemma => &[START_OF_TURN, END_OF_TURN],
            ChatTemplate::Llama3 => &[START_HEADER, END_HEADER, EOT],
        }
    }

    /// The template a model is served with: the one whose first marker the file's own
    /// template (`tokenizer.chat_template`, Jinja source) writes, when the vocabulary has
    /// all its markers; `None` without a file template, or when it is none of these.
    pub(crate) fn for_model(file_template: Option<&str>, tokenizer: &GgufTokenizer) -> Option<ChatTemplate> {
        let source = file_template?;
        ChatTemplate::ALL.into_iter().find(|t| {
            source.contains(t.markers()[0]) && t.markers().iter().all(|m| tokenizer.token_to_id(m).is_some())
        })
    }

    /// Renders the prompt as text (for display and tests; the model gets [`Self::encode`]).
    pub fn render(self, messages: &[ChatMessage]) -> Result<String, ModelError> {
        let mut out = String::new();
        for piece in self.pieces(messages)? {
            match piece {
                Piece::Marker(m) => out.push_str(m),
                Piece::Bos(spelled) => out.push_str(spelled),
                Piece::Text(t) => out.push_str(&t),
            }
        }
        Ok(out)
    }

    /// Encodes the conversation into prompt ids, markers as ids and contents as plain text.
    pub(crate) fn encode(
        self,
        tokenizer: &GgufTokenizer,
        messages: &[ChatMessage],
    ) -> Result<Vec<u32>, ModelError> {
        let mut ids = Vec::new();
        for piece in self.pieces(messages)? {
            match piece {
                Piece::Marker(m) => ids.push(tokenizer.token_to_id(m).ok_or(ModelError::NoChatTemplate)?),
                Piece::Bos(_) => ids.push(tokenizer.bos_id()),
                Piece::Text(t) => ids.extend(tokenizer.encode_plain(&t)?),
            }
        }
        Ok(ids)
    }

    /// The prompt as markers, BOS and text, in order.
    fn pieces(self, messages: &[ChatMessage]) -> Result<Vec<Piece>, ModelError> {
        let roles = validate_messages(messages)?;
        let mut out = Vec::new();
        match self {
            ChatTemplate::ChatMl => {
                for (role, content) in with_default_system(messages, &roles) {
                    out.push(Piece::Marker(IM_START));
                    out.push(Piece::Text(format!("{}\n{}", role.as_str(), content)));
                    out.push(Piece::Marker(IM_END));
                    out.push(Piece::Text("\n".into()));
                }
                out.push(Piece::Marker(IM_START));
                out.push(Piece::Text("assistant\n".into()));
            }
            ChatTemplate::Gemma => {
                let (prefix, turns) = match roles.first() {
                    Some(Role::System) => (format!("{}\n\n", messages[0].content), 1),
                    _ => (String::new(), 0),
                };
                out.push(Piece::Bos("<bos>"));
                for (i, (role, m)) in roles.iter().zip(messages).skip(turns).enumerate() {
                    let expected = if i % 2 == 0 { Role::User } else { Role::Assistant };
                    if *role != expected {
                        return Err(ModelError::InvalidRequest(
                            "this model's chat template (gemma-vouch-1) needs user and assistant turns to \
                             alternate, starting with user, after at most one leading system message"
                                .into(),
                        ));
                    }
                    let name = if *role == Role::User { "user" } else { "model" };
                    let first = if i == 0 { prefix.as_str() } else { "" };
                    out.push(Piece::Marker(START_OF_TURN));
                    out.push(Piece::Text(format!("{name}\n{first}{}", m.content.trim())));
                    out.push(Piece::Marker(END_OF_TURN));
                    out.push(Piece::Text("\n".into()));
                }
                if roles.len() == turns {
                    return Err(ModelError::InvalidRequest(
                        "this model's chat template (gemma-vouch-1) needs a user message".into(),
                    ));
                }
                out.push(Piece::Marker(START_OF_TURN));
                out.push(Piece::Text("model\n".into()));
            }
            ChatTemplate::Llama3 => {
                out.push(Piece::Bos("<|begin_of_text|>"));
                for (role, m) in roles.iter().zip(messages) {
                    out.push(Piece::Marker(START_HEADER));
                    out.push(Piece::Text(role.as_str().into()));
                    out.push(Piece::Marker(END_HEADER));
                    out.push(Piece::Text(format!("\n\n{}", m.content.trim())));
                    out.push(Piece::Marker(EOT));
                }
                out.push(Piece::Marker(START_HEADER));
                out.push(Piece::Text("assistant".into()));
                out.push(Piece::Marker(END_HEADER));
                out.push(Piece::Text("\n\n".into()));
            }
        }
        Ok(out)
    }
}

/// One piece of a rendered prompt.
enum Piece {
    /// A control token, by its spelling.
    Marker(&'static str),
    /// The model's BOS token (spelled so for display).
    Bos(&'static str),
    /// Text, tokenized as plain text.
    Text(String),
}

/// The roles the template accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The human's turn.
    User,
    /// The model's earlier turns.
    Assistant,
}

impl Role {
    /// Parses an OpenAI role name; only `system`, `user` and `assistant` are accepted.
    pub fn parse(role: &str) -> Option<Role> {
        match role {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }

    /// The role's name as written in the template.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// Checks that there is at least one message and every role is known.
pub(crate) fn validate_messages(messages: &[ChatMessage]) -> Result<Vec<Role>, ModelError> {
    if messages.is_empty() {
        return Err(ModelError::InvalidRequest("no messages".to_owned()));
    }
    messages
        .iter()
        .map(|m| {
            Role::parse(&m.role).ok_or_else(|| {
                ModelError::InvalidRequest(format!(
                    "unknown role {:?}: expected system, user or assistant",
                    m.role
                ))
            })
        })
        .collect()
}

/// The conversation with the default system message prepended when needed.
fn with_default_system(messages: &[ChatMessage], roles: &[Role]) -> Vec<(Role, String)> {
    let mut turns = Vec::with_capacity(messages.len() + 1);
    if roles.first() != Some(&Role::System) {
        turns.push((Role::System, DEFAULT_SYSTEM_PROMPT.to_owned()));
    }
    turns.extend(roles.iter().copied().zip(messages.iter().map(|m| m.content.clone())));
    turns
}

/// Renders the prompt as ChatML text (for display and logs).
pub fn render_chat_prompt(messages: &[ChatMessage]) -> Result<String, ModelError> {
    ChatTemplate::ChatMl.render(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf_file::{Array, Strings, Value};
    use std::collections::HashMap;

    /// A SentencePiece vocabulary of byte tokens plus `markers` as control tokens.
    fn tokenizer(markers: &[&str]) -> GgufTokenizer {
        let mut tokens = Strings::default();
        let mut types = Vec::new();
        for (t, ty) in
            [("<unk>", 2), ("<bos>", 3), ("<eos>", 3)].into_iter().chain(markers.iter().map(|m| (*m, 3)))
        {
            tokens.push(t);
            types.push(ty);
        }
        for b in 0..=255u8 {
            tokens.push(&format!("<0x{b:02X}>"));
            types.push(6);
        }
        let n = types.len();
        let md: HashMap<String, Value> = [
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", Value::Array(Array::String(tokens))),
            ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
            ("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0; n]))),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
            ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        GgufTokenizer::from_metadata(&md).unwrap()
    }

    const ALL_MARKERS: [&str; 7] =
        [IM_START, IM_END, START_OF_TURN, END_OF_TURN, START_HEADER, END_HEADER, EOT];

    fn conversation(roles_contents: &[(&str, &str)]) -> Vec<ChatMessage> {
        roles_contents.iter().map(|(r, c)| ChatMessage::new(*r, *c)).collect()
    }

    #[test]
    fn the_files_own_template_picks_the_family_when_the_vocabulary_has_its_markers() {
        let t = tokenizer(&ALL_MARKERS);
        let pick = |source: Option<&str>| ChatTemplate::for_model(source, &t);
        assert_eq!(pick(Some("{{ bos_token }}{{ '<start_of_turn>' + role }}")), Some(ChatTemplate::Gemma));
        assert_eq!(pick(Some("{{ '<|start_header_id|>' + message['role'] }}")), Some(ChatTemplate::Llama3));
        assert_eq!(pick(Some("{{'<|im_start|>' + message['role'] + '\n'}}")), Some(ChatTemplate::ChatMl));
        assert_eq!(pick(Some("[INST] {{ message['content'] }} [/INST]")), None);
        assert_eq!(pick(None), None, "a base model without a template is served on completions only");
        // The template names Gemma's markers but the vocabulary lacks <end_of_turn>.
        let partial = tokenizer(&[START_OF_TURN]);
        assert_eq!(ChatTemplate::for_model(Some("<start_of_turn>"), &partial), None);
        for t in ChatTemplate::ALL {
            assert_eq!(ChatTemplate::from_name(t.name()), Some(t));
        }
        assert_eq!(ChatTemplate::from_name(TEXT_TEMPLATE), None);
    }

    #[test]
    fn each_template_renders_its_familys_prompt() {
        let msgs = conversation(&[
            ("system", "Be brief."),
            ("user", " Hi \n"),
            ("assistant", "Hello."),
            ("user", "Capital of France?"),
        ]);
        assert_eq!(
            ChatTemplate::ChatMl.render(&msgs).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi \n<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            ChatTemplate::Gemma.render(&msgs).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            ChatTemplate::Llama3.render(&msgs).unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        // No system message: ChatML adds SmolLM2's default, the others add none.
        let plain = conversation(&[("user", "Hi")]);
        assert!(ChatTemplate::ChatMl.render(&plain).unwrap().contains(DEFAULT_SYSTEM_PROMPT));
        assert_eq!(
            ChatTemplate::Gemma.render(&plain).unwrap(),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn encoding_equals_the_rendered_text_and_contents_cannot_forge_turns() {
        let t = tokenizer(&ALL_MARKERS);
        let msgs = conversation(&[("system", "S"), ("user", "a b"), ("assistant", "c"), ("user", "d")]);
        for template in ChatTemplate::ALL {
            let ids = template.encode(&t, &msgs).unwrap();
            // The rendered text tokenized in one go (markers recognised), BOS as its id.
            let rendered = template.render(&msgs).unwrap();
            let (bos, rest) = match template {
                ChatTemplate::Gemma => (vec![t.bos_id()], rendered.strip_prefix("<bos>").unwrap()),
                ChatTemplate::Llama3 => {
                    (vec![t.bos_id()], rendered.strip_prefix("<|begin_of_text|>").unwrap())
                }
                ChatTemplate::ChatMl => (vec![], rendered.as_str()),
            };
            assert_eq!(ids, [bos, t.encode(rest).unwrap()].concat(), "{template:?}");
            // A message spelling the end-of-turn marker gets its bytes, not the marker.
            let end = template.markers()[template.markers().len() - 1];
            let end_id = t.token_to_id(end).unwrap();
            let forged = conversation(&[("user", &format!("x{end}y"))]);
            let ids = template.encode(&t, &forged).unwrap();
            let turns_closed = ids.iter().filter(|&&i| i == end_id).count();
            let honest = template.encode(&t, &conversation(&[("user", "xy")])).unwrap();
            assert_eq!(turns_closed, honest.iter().filter(|&&i| i == end_id).count(), "{template:?}");
        }
    }

    #[test]
    fn gemma_turns_must_alternate() {
        let t = tokenizer(&ALL_MARKERS);
        for bad in [
            conversation(&[("assistant", "x")]),
            conversation(&[("user", "a"), ("user", "b")]),
            conversation(&[("system", "s"), ("system", "t"), ("user", "u")]),
        ] {
            let e = ChatTemplate::Gemma.encode(&t, &bad).unwrap_err();
            assert!(e.to_string().contains("needs user and assistant turns to alternate"), "{e}");
        }
        let e = ChatTemplate::Gemma.encode(&t, &conversation(&[("system", "s")])).unwrap_err();
        assert!(e.to_string().contains("needs a user message"), "{e}");
        // ChatML and Llama 3 take any order.
        assert!(ChatTemplate::Llama3.encode(&t, &conversation(&[("user", "a"), ("user", "b")])).is_ok());
    }
}
