//! The chat template (trusted side, inside the enclave): turns a list of chat messages
//! into the exact prompt token ids the model sees.
//!
//! SmolLM2 uses ChatML. Its template (stored in the GGUF as `tokenizer.chat_template`):
//!
//! ```text
//! <|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n   (only if no system message first)
//! <|im_start|>{role}\n{content}<|im_end|>\n                                                          (each message)
//! <|im_start|>assistant\n                                                                            (generation prompt)
//! ```
//!
//! The role markers are inserted as token ids, and message text is tokenized as plain text
//! between them, so a message that *contains* the string `<|im_end|>` cannot close its own
//! turn and forge another role. For ordinary text the ids are identical to tokenizing the
//! rendered string in one go (special tokens split the text before BPE runs anyway).

use super::tokenizer::GgufTokenizer;
use super::{ChatMessage, ModelError};

/// The system message SmolLM2's template inserts when the conversation has none.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// The template's name, as receipts commit it: ChatML with [`DEFAULT_SYSTEM_PROMPT`] when
/// the messages have no system message, and the assistant turn opened. A change to
/// [`render_chat_prompt`] that changes any prompt is a new name.
pub const CHAT_TEMPLATE: &str = "chatml-vouch-1";

/// The name receipts commit for a raw-text prompt (`POST /v1/completions`): the model's
/// BOS token when its file asks for one, then the text tokenized with control-token
/// spellings recognised ([`GgufTokenizer::encode_prompt`], as llama.cpp's server does). A
/// change that changes any such prompt's ids is a new name.
pub const TEXT_TEMPLATE: &str = "text-vouch-1";

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";

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

/// Renders the prompt as text (for display and logs; the model gets [`encode_chat_prompt`]).
pub fn render_chat_prompt(messages: &[ChatMessage]) -> Result<String, ModelError> {
    let roles = validate_messages(messages)?;
    let mut out = String::new();
    for (role, content) in with_default_system(messages, &roles) {
        out.push_str(IM_START);
        out.push_str(role.as_str());
        out.push('\n');
        out.push_str(&content);
        out.push_str(IM_END);
        out.push('\n');
    }
    out.push_str(IM_START);
    out.push_str("assistant\n");
    Ok(out)
}

/// Whether the tokenizer has the markers [`encode_chat_prompt`] needs (a model without
/// them, such as a base model, is served on `/v1/completions` only).
pub(crate) fn has_chat_template(tokenizer: &GgufTokenizer) -> bool {
    tokenizer.token_to_id(IM_START).is_some() && tokenizer.token_to_id(IM_END).is_some()
}

/// Encodes the conversation into prompt ids, role markers as ids and contents as plain text.
pub(crate) fn encode_chat_prompt(
    tokenizer: &GgufTokenizer,
    messages: &[ChatMessage],
) -> Result<Vec<u32>, ModelError> {
    let roles = validate_messages(messages)?;
    let marker = |token: &'static str| tokenizer.token_to_id(token).ok_or(ModelError::NoChatTemplate);
    let im_start = marker(IM_START)?;
    let im_end = marker(IM_END)?;
    let newline = tokenizer.encode_plain("\n")?;

    let mut ids = Vec::new();
    for (role, content) in with_default_system(messages, &roles) {
        ids.push(im_start);
        ids.extend(tokenizer.encode_plain(&format!("{}\n{}", role.as_str(), content))?);
        ids.push(im_end);
        ids.extend_from_slice(&newline);
    }
    ids.push(im_start);
    ids.extend(tokenizer.encode_plain("assistant\n")?);
    Ok(ids)
}
