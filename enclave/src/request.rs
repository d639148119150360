//! The chat request body (`POST /v1/chat/completions`): bytes in, a checked request out.
//!
//! Trusted side, but the bytes are the client's (relayed by the untrusted host inside
//! TLS). A pure function — no I/O, no model, no async — so the fuzz target
//! (`fuzz/fuzz_targets/http_request.rs`) runs the very parser the API runs. It bounds
//! what it accepts (token budget, prompt size) and leaves what needs the model (its
//! name, the chat template, sampling ranges) to the API and the engine.
//!
//! ```text
//!  body bytes ─► parse_chat_request ─► ChatRequest { messages, params, stream, model }
//!                   │ (serde_json, then bounds)       └─► api: model name, engine
//!                   └─► RequestError { code(), message }  (400 invalid_request_error)
//! ```

use crate::model::constraint::OutputFormat;
use crate::model::tools::ToolSpec;
use crate::model::{ChatMessage, DecodingControls, Prompt, SamplingParams, DEFAULT_SYSTEM_PROMPT};
use serde::Deserialize;

/// Longest prompt text accepted before tokenizing, in bytes: the context window times a
/// generous 16 bytes per token. Beyond it a prompt cannot fit, and refusing it early
/// spares tokenizing (and holding) hundreds of thousands of tokens.
pub const MAX_PROMPT_BYTES: usize = crate::model::MAX_CONTEXT_TOKENS * 16;
/// Default `max_tokens` when the request gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Largest `max_tokens` accepted.
pub const MAX_TOKENS_CAP: u32 = 2048;

/// The fields this server honours. Every other field is refused (see [`check_fields`]):
/// a parameter silently not applied would leave a receipt for a request that did not run
/// as asked.
pub const HONOURED_FIELDS: [&str; 20] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stream",
    "stream_options",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "n",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

/// Fields accepted only at the value that changes nothing — what some OpenAI clients send
/// by default — and refused at any other: `store` false, and `user` (an end-user
/// id: informational, it changes no decoding). `null` is accepted for each (the field's
/// default).
pub fn is_inert(name: &str, value: &serde_json::Value) -> bool {
    use serde_json::Value;
    if value.is_null() {
        return matches!(name, "tools" | "tool_choice" | "parallel_tool_calls" | "store" | "user");
    }
    match name {
        "store" => value == &Value::Bool(false),
        "user" => value.is_string(),
        _ => false,
    }
}

/// Refuses a field that is neither honoured nor at its inert value, and `stream_options`
/// other than `{"include_usage": bool}` on a streamed request (as OpenAI does).
fn check_fields(fields: &serde_json::Map<String, serde_json::Value>) -> Result<(), RequestError> {
    if let Some(options) = fields.get("stream_options").filter(|v| !v.is_null()) {
        let unsupported =
            |reason: String| RequestError::Unsupported { param: "stream_options".into(), reason };
        let streamed = fields.get("stream").and_then(serde_json::Value::as_bool) == Some(true);
        if !streamed {
            return Err(unsupported("stream_options is only allowed when stream is true".into()));
        }
        let only_usage = options
            .as_object()
            .is_some_and(|o| o.iter().all(|(k, v)| k == "include_usage" && (v.is_boolean() || v.is_null())));
        if !only_usage {
            return Err(unsupported(format!(
                "stream_options = {options} is not supported (only {{\"include_usage\": true|false}})"
            )));
        }
    }
    for (name, value) in fields {
        if !HONOURED_FIELDS.contains(&name.as_str()) && !is_inert(name, value) {
            let known = is_inert(name, &serde_json::Value::Null);
            return Err(RequestError::Unsupported {
                param: name.clone(),
                reason: if known {
                    format!("{name} = {value} is not supported by this server (only its default is accepted)")
                } else {
                    format!("unknown or unsupported parameter {name:?}")
                },
            });
        }
    }
    Ok(())
}

/// The part of an OpenAI chat request this server uses (other fields are checked by
/// [`check_fields`] first).
#[derive(Debug, Deserialize)]
struct Wire {
    model: Option<String>,
    /// Chat's (required there; [`COMPLETIONS_FIELDS`] leaves it out).
    messages: Option<Vec<serde_json::Value>>,
    /// Completions' (required there; [`HONOURED_FIELDS`] leaves it out).
    prompt: Option<serde_json::Value>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    stop: Option<Stop>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    /// Token id (a decimal string, as OpenAI's JSON has it) → bias.
    logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    n: Option<u32>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
    response_format: Option<serde_json::Value>,
    tools: Option<serde_json::Value>,
    tool_choice: Option<serde_json::Value>,
    parallel_tool_calls: Option<serde_json::Value>,
}

/// The OpenAI messages as the template's turns: text contents (a string, or a list of
/// text parts), an assistant's earlier `tool_calls` and `tool` results rendered in the
/// tool convention ([`crate::model::tools`]); `name` and `tool_call_id` are accepted (they
/// change no prompt); anything else is refused.
fn chat_messages(messages: &[serde_json::Value]) -> Result<Vec<ChatMessage>, RequestError> {
    use serde_json::Value;
    let bad = |i: usize, reason: String| RequestError::InvalidJson(format!("messages[{i}]: {reason}"));
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let o = m.as_object().ok_or_else(|| bad(i, "not an object".into()))?;
            let role = o.get("role").and_then(Value::as_str).ok_or_else(|| bad(i, "no role".into()))?;
            if let Some(k) = o.keys().find(|k| {
                !["role", "content", "name", "tool_calls", "tool_call_id", "refusal"].contains(&k.as_str())
            }) {
                return Err(RequestError::Unsupported {
                    param: "messages".into(),
                    reason: format!("messages[{i}].{k} is not supported"),
                });
            }
            let content = match o.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                            (Some("text"), Some(t)) => text.push_str(t),
                            _ => {
                                return Err(RequestError::Unsupported {
                                    param: "messages".into(),
                                    reason: format!("messages[{i}]: only text content parts are supported"),
                                })
                            }
                        }
                    }
                    text
                }
                Some(_) => return Err(bad(i, "content must be a string or a list of parts".into())),
            };
            match (role, o.get("tool_calls").filter(|c| !c.is_null())) {
                ("assistant", Some(calls)) => {
                    let rendered = crate::model::tools::render_tool_calls(calls).map_err(|e| bad(i, e))?;
                    let text = if content.is_empty() { rendered } else { format!("{content}\n{rendered}") };
                    Ok(ChatMessage::new("assistant", text))
                }
                (_, Some(_)) => Err(bad(i, "only assistant messages carry tool_calls".into())),
                ("tool", None) => {
                    Ok(ChatMessage::new("user", crate::model::tools::render_tool_result(&content)))
                }
                _ => Ok(ChatMessage::new(role, content)),
            }
        })
        .collect()
}

/// The tool signatures in the system turn (the first message when it is a system one, else
/// a system message with the template's default prompt put first).
fn offer_tools(messages: &mut Vec<ChatMessage>, tools: &ToolSpec) {
    let text = tools.system_text();
    match messages.first_mut().filter(|m| m.role == "system") {
        Some(system) => system.content = format!("{}\n\n{text}", system.content),
        None => messages.insert(0, ChatMessage::new("system", format!("{DEFAULT_SYSTEM_PROMPT}\n\n{text}"))),
    }
}

/// `response_format`: `{"type": "text"}` (no constraint), `{"type": "json_object"}`, or
/// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"?, "description"?}}`
/// (the output is an instance of `schema`, always: strict or not, it is enforced).
fn output_format(v: Option<&serde_json::Value>) -> Result<Option<OutputFormat>, RequestError> {
    let invalid =
        |reason: &str| RequestError::InvalidValue { param: "response_format".into(), reason: reason.into() };
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let o = v.as_object().ok_or_else(|| invalid("response_format must be an object"))?;
    let kind = o
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| invalid("response_format needs a type"))?;
    let only = |keys: &[&str]| o.keys().all(|k| keys.contains(&k.as_str()));
    match kind {
        "text" if only(&["type"]) => Ok(None),
        "json_object" if only(&["type"]) => Ok(Some(OutputFormat::json_object())),
        "json_schema" if only(&["type", "json_schema"]) => {
            let js = o
                .get("json_schema")
                .and_then(serde_json::Value::as_object)
                .ok_or_else(|| invalid("response_format json_schema needs a json_schema object"))?;
            if let Some(k) =
                js.keys().find(|k| !["name", "schema", "strict", "description"].contains(&k.as_str()))
            {
                return Err(RequestError::Unsupported {
                    param: "response_format".into(),
                    reason: format!("response_format.json_schema.{k} is not supported"),
                });
            }
            if !js.get("name").is_some_and(serde_json::Value::is_string) {
                return Err(invalid("response_format.json_schema needs a name"));
            }
            let schema =
                js.get("schema").filter(|s| s.is_object()).cloned().unwrap_or_else(|| serde_json::json!({}));
            Ok(Some(OutputFormat::json_schema(schema)))
        }
        "text" | "json_object" | "json_schema" => Err(RequestError::Unsupported {
            param: "response_format".into(),
            reason: format!("response_format {v} has fields this server does not apply"),
        }),
        other => {
            Err(invalid(&format!("response_format type {other:?} is not text, json_object or json_schema")))
        }
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options` (checked by [`check_fields`] to hold only `include_usage`).
#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// A parsed, bounded chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model the client named, if any (the API checks it against the served one).
    pub model: Option<String>,
    /// The conversation, or the raw text (`POST /v1/completions`).
    pub prompt: Prompt,
    /// Sampling parameters as they will be committed in the receipt.
    pub params: SamplingParams,
    /// Stream deltas as server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`: the stream ends with a chunk holding the usage and
    /// no choices (it carries the receipt too).
    pub include_usage: bool,
    /// Whether the request gave `seed` (when it did not, `params.seed` is 0 and the API
    /// draws one for sampled requests).
    pub seed_given: bool,
}

impl ChatRequest {
    /// The conversation's messages (none for a raw-text prompt).
    pub fn messages(&self) -> &[ChatMessage] {
        self.prompt.messages()
    }
}

/// Why a body is not an acceptable chat request. Each maps to an OpenAI-style 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not JSON, or not the chat request's shape.
    #[error("invalid request: {0}")]
    InvalidJson(String),
    /// `max_tokens` / `max_completion_tokens` outside `1..=MAX_TOKENS_CAP`.
    #[error("max_tokens must be in 1..={cap}")]
    InvalidMaxTokens {
        /// [`MAX_TOKENS_CAP`].
        cap: u32,
    },
    /// A parameter's value is out of its range (OpenAI's `invalid_value`).
    #[error("{reason}")]
    InvalidValue {
        /// The field's name.
        param: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter this server does not apply (OpenAI's `unsupported_parameter`).
    #[error("{reason}")]
    Unsupported {
        /// The field's name (OpenAI's `error.param`).
        param: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The prompt text cannot fit the context window.
    #[error("prompt of {bytes} bytes cannot fit the {tokens}-token context")]
    ContextLengthExceeded {
        /// The field holding the prompt (`messages`, `input` or `prompt`).
        param: &'static str,
        /// Total bytes of message text.
        bytes: usize,
        /// The context window in tokens.
        tokens: usize,
    },
}

impl RequestError {
    /// The OpenAI-style `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::InvalidJson(_) => "invalid_json",
            RequestError::InvalidMaxTokens { .. } => "invalid_max_tokens",
            RequestError::ContextLengthExceeded { .. } => "context_length_exceeded",
            RequestError::Unsupported { .. } => "unsupported_parameter",
            RequestError::InvalidValue { .. } => "invalid_value",
        }
    }

    /// The OpenAI-style `error.param`: the field at fault, where there is one.
    pub fn param(&self) -> Option<&str> {
        match self {
            RequestError::Unsupported { param, .. } | RequestError::InvalidValue { param, .. } => Some(param),
            RequestError::InvalidMaxTokens { .. } => Some("max_tokens"),
            RequestError::ContextLengthExceeded { param, .. } => Some(param),
            RequestError::InvalidJson(_) => None,
        }
    }
}

/// Parses and bounds a chat request body (the bytes exactly as received; the receipt
/// hashes those same bytes).
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    check_fields(&fields)?;
    parse_fields(fields, PromptKind::Chat)
}

/// The fields `POST /v1/completions` (OpenAI's legacy completions) honours; every other
/// one is refused, except `echo` false, `suffix` null, `best_of` 1, `logprobs` null and
/// `user` (informational), which change nothing.
pub const COMPLETIONS_FIELDS: [&str; 13] = [
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stream",
    "stream_options",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "n",
];

/// `max_tokens` of a completions request that gives none: OpenAI's default there (chat's
/// is [`DEFAULT_MAX_TOKENS`]).
pub const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;

/// Parses and bounds a legacy completions request (`POST /v1/completions`): `prompt` is
/// one string (or a list holding exactly one), continued as raw text. Several prompts,
/// token-id prompts, `echo`, `suffix`, `best_of` > 1 and `logprobs` are refused with 400
/// rather than half-served.
pub fn parse_completions_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    use serde_json::Value;
    let fields: serde_json::Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let mut chat_checked = fields.clone();
    for (name, value) in &fields {
        let inert = match name.as_str() {
            "echo" => value.is_null() || value == &Value::Bool(false),
            "best_of" => value.is_null() || value.as_u64() == Some(1),
            "suffix" | "logprobs" => value.is_null(),
            "user" => value.is_null() || value.is_string(),
            _ => false,
        };
        if !COMPLETIONS_FIELDS.contains(&name.as_str()) {
            if !inert {
                let reason = match name.as_str() {
                    "echo" | "suffix" | "best_of" | "logprobs" => {
                        format!(
                            "{name} = {value} is not supported by this server (only its default is accepted)"
                        )
                    }
                    _ => format!("unknown or unsupported parameter {name:?}"),
                };
                return Err(RequestError::Unsupported { param: name.clone(), reason });
            }
            chat_checked.remove(name);
        }
    }
    // What remains is chat's vocabulary but for `prompt`: the same checks of
    // stream_options and values.
    chat_checked.remove("prompt");
    check_fields(&chat_checked)?;
    parse_fields(fields, PromptKind::Text)
}

/// The prompt of a completions request: one string.
fn completion_prompt(v: Option<&serde_json::Value>) -> Result<String, RequestError> {
    use serde_json::Value;
    let unsupported =
        |reason: &str| RequestError::Unsupported { param: "prompt".into(), reason: reason.into() };
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => Ok(s.clone()),
            [] => Err(unsupported("prompt is an empty list")),
            [Value::String(_), ..] => Err(unsupported(
                "several prompts in one request are not supported: send one request per prompt",
            )),
            _ => Err(unsupported("prompts as token ids are not supported: send the text")),
        },
        Some(_) => Err(RequestError::InvalidJson("prompt must be a string".into())),
        None => Err(RequestError::InvalidJson("missing field `prompt`".into())),
    }
}

/// The fields `POST /v1/responses` honours (every other one is refused, as for chat).
pub const RESPONSES_FIELDS: [&str; 11] = [
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
];

/// Parses and bounds a Responses API request (`POST /v1/responses`) into the same checked
/// request as chat: `instructions` become the system turn, `input` (a string, or message,
/// `function_call` and `function_call_output` items) the conversation, `text.format` the
/// output constraint, the flat function tools the chat tools. `store` is accepted only as
/// false and `metadata`/`user` as informational (nothing is stored); anything else,
/// `previous_response_id` among them, is refused with 400.
pub fn parse_responses_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    use serde_json::{json, Map, Value};
    let fields: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let unsupported = |param: &str, reason: String| RequestError::Unsupported { param: param.into(), reason };
    for (name, value) in &fields {
        let inert = match name.as_str() {
            "store" => value == &Value::Bool(false) || value.is_null(),
            "metadata" | "user" => true,
            "truncation" => value.as_str() == Some("disabled") || value.is_null(),
            _ => false,
        };
        if !RESPONSES_FIELDS.contains(&name.as_str()) && !inert {
            return Err(unsupported(name, format!("{name} = {value} is not supported by this server")));
        }
    }
    let bad = |i: usize, reason: &str| RequestError::InvalidJson(format!("input[{i}]: {reason}"));
    let text_of = |content: &Value, i: usize| -> Result<String, RequestError> {
        match content {
            Value::String(s) => Ok(s.clone()),
            Value::Array(parts) => parts
                .iter()
                .map(|p| {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("input_text" | "output_text" | "text"), Some(t)) => Ok(t.to_owned()),
                        _ => Err(unsupported(
                            "input",
                            format!("input[{i}]: only text content parts are supported"),
                        )),
                    }
                })
                .collect(),
            _ => Err(bad(i, "content must be a string or a list of parts")),
        }
    };
    let mut messages: Vec<Value> = Vec::new();
    if let Some(instructions) = fields.get("instructions").filter(|v| !v.is_null()) {
        let text = instructions.as_str().ok_or_else(|| bad(0, "instructions must be a string"))?;
        messages.push(json!({"role": "system", "content": text}));
    }
    match fields.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.get("type").and_then(Value::as_str).unwrap_or("message") {
                    "message" => {
                        let role = match item.get("role").and_then(Value::as_str) {
                            Some("developer") => "system",
                            Some(r @ ("system" | "user" | "assistant")) => r,
                            _ => {
                                return Err(bad(
                                    i,
                                    "a message's role must be system, developer, user or assistant",
                                ))
                            }
                        };
                        let content = text_of(item.get("content").unwrap_or(&Value::Null), i)?;
                        messages.push(json!({"role": role, "content": content}));
                    }
                    "function_call" => {
                        let call = json!({"id": item.get("call_id"), "type": "function", "function": {
                            "name": item.get("name"), "arguments": item.get("arguments")}});
                        // Consecutive calls are one assistant turn.
                        match messages.last_mut().filter(|m| m.get("tool_calls").is_some()) {
                            Some(turn) => turn["tool_calls"]
                                .as_array_mut()
                                .into_iter()
                                .for_each(|c| c.push(call.clone())),
                            None => messages
                                .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                        }
                    }
                    "function_call_output" => {
                        let output = item
                            .get("output")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(i, "a function_call_output needs an output string"))?;
                        messages.push(
                            json!({"role": "tool", "tool_call_id": item.get("call_id"), "content": output}),
                        );
                    }
                    other => {
                        return Err(unsupported(
                            "input",
                            format!("input item type {other:?} is not supported"),
                        ))
                    }
                }
            }
        }
        _ => return Err(RequestError::InvalidJson("input must be a string or a list of items".into())),
    }
    let mut chat = Map::new();
    chat.insert("messages".into(), Value::Array(messages));
    for (from, to) in [
        ("model", "model"),
        ("max_output_tokens", "max_completion_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stream", "stream"),
        ("parallel_tool_calls", "parallel_tool_calls"),
    ] {
        if let Some(v) = fields.get(from).filter(|v| !v.is_null()) {
            chat.insert(to.into(), v.clone());
        }
    }
    if let Some(tools) = fields.get("tools").filter(|v| !v.is_null()) {
        let list = tools.as_array().ok_or_else(|| unsupported("tools", "tools must be a list".into()))?;
        let converted = list
            .iter()
            .map(|t| {
                let mut f = t.as_object().cloned().unwrap_or_default();
                match f.remove("type").as_ref().and_then(Value::as_str) {
                    Some("function") => Ok(json!({"type": "function", "function": f})),
                    other => Err(unsupported(
                        "tools",
                        format!("tool type {other:?} is not supported (function only)"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        chat.insert("tools".into(), Value::Array(converted));
    }
    if let Some(choice) = fields.get("tool_choice").filter(|v| !v.is_null()) {
        let converted = match choice.get("name") {
            Some(name) if choice.get("type").and_then(Value::as_str) == Some("function") => {
                json!({"type": "function", "function": {"name": name}})
            }
            _ => choice.clone(),
        };
        chat.insert("tool_choice".into(), converted);
    }
    if let Some(text) = fields.get("text").filter(|v| !v.is_null()) {
        let o = text.as_object().ok_or_else(|| unsupported("text", "text must be an object".into()))?;
        if let Some(k) = o.keys().find(|k| k.as_str() != "format") {
            return Err(unsupported("text", format!("text.{k} is not supported")));
        }
        if let Some(format) = o.get("format").and_then(Value::as_object) {
            let mut format = format.clone();
            let kind = format.remove("type");
            let converted = match kind.as_ref().and_then(Value::as_str) {
                Some("json_schema") => json!({"type": "json_schema", "json_schema": format}),
                _ => {
                    let mut v = Value::Object(format);
                    v["type"] = kind.unwrap_or(Value::Null);
                    v
                }
            };
            chat.insert("response_format".into(), converted);
        }
    }
    check_fields(&chat).map_err(|e| match e {
        RequestError::Unsupported { param, reason } if param == "response_format" => {
            RequestError::Unsupported { param: "text".into(), reason }
        }
        e => e,
    })?;
    parse_fields(chat, PromptKind::Chat).map_err(|e| match e {
        RequestError::InvalidMaxTokens { cap } => RequestError::InvalidValue {
            param: "max_output_tokens".into(),
            reason: format!("max_output_tokens must be in 1..={cap}"),
        },
        RequestError::ContextLengthExceeded { bytes, tokens, .. } => {
            RequestError::ContextLengthExceeded { param: "input", bytes, tokens }
        }
        e => e,
    })
}

/// A request body for any endpoint: a Responses request has `input`, a completions one
/// `prompt`, a chat one `messages` (each endpoint refuses the others' field). What
/// `vouch replay` parses.
pub fn parse_any_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let fields = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).ok();
    let has = |k: &str| fields.as_ref().is_some_and(|m| m.contains_key(k));
    if has("messages") {
        parse_chat_request(body)
    } else if has("input") {
        parse_responses_request(body)
    } else if has("prompt") {
        parse_completions_request(body)
    } else {
        parse_chat_request(body)
    }
}

/// Which field holds the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PromptKind {
    /// `messages` (chat, and the Responses API translated to it).
    Chat,
    /// `prompt` (completions).
    Text,
}

/// The checked request from a chat or completions request's (already allow-listed) fields.
fn parse_fields(
    fields: serde_json::Map<String, serde_json::Value>,
    kind: PromptKind,
) -> Result<ChatRequest, RequestError> {
    let w: Wire = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let default_max =
        if kind == PromptKind::Text { COMPLETIONS_DEFAULT_MAX_TOKENS } else { DEFAULT_MAX_TOKENS };
    let max_tokens = w.max_completion_tokens.or(w.max_tokens).unwrap_or(default_max);
    if max_tokens == 0 || max_tokens > MAX_TOKENS_CAP {
        return Err(RequestError::InvalidMaxTokens { cap: MAX_TOKENS_CAP });
    }
    let tools = ToolSpec::parse(w.tools.as_ref(), w.tool_choice.as_ref(), w.parallel_tool_calls.as_ref())
        .map_err(|(param, reason)| RequestError::InvalidValue { param: param.into(), reason })?;
    let (prompt, bytes) = match kind {
        PromptKind::Chat => {
            let wire = w
                .messages
                .as_deref()
                .ok_or_else(|| RequestError::InvalidJson("missing field `messages`".into()))?;
            let mut messages = chat_messages(wire)?;
            if let Some(t) = tools.as_ref().filter(|t| t.callable()) {
                offer_tools(&mut messages, t);
            }
            let bytes = messages.iter().fold(0usize, |n, m| n.saturating_add(m.content.len()));
            (Prompt::Chat(messages), bytes)
        }
        PromptKind::Text => {
            let text = completion_prompt(w.prompt.as_ref())?;
            let bytes = text.len();
            (Prompt::Text(text), bytes)
        }
    };
    if bytes > MAX_PROMPT_BYTES {
        let param = if kind == PromptKind::Text { "prompt" } else { "messages" };
        return Err(RequestError::ContextLengthExceeded {
            param,
            bytes,
            tokens: crate::model::MAX_CONTEXT_TOKENS,
        });
    }
    let invalid =
        |param: &str, reason: String| RequestError::InvalidValue { param: param.to_owned(), reason };
    let mut logit_bias = Vec::new();
    for (id, bias) in w.logit_bias.unwrap_or_default() {
        // Canonical decimal only: "07" and "7" would otherwise be two entries for one id.
        let parsed = id.parse::<u32>().ok().filter(|n| n.to_string() == id);
        let id = parsed
            .ok_or_else(|| invalid("logit_bias", format!("logit_bias key {id:?} is not a token id")))?;
        logit_bias.push((id, bias));
    }
    logit_bias.sort_by_key(|&(id, _)| id);
    // As OpenAI: top_logprobs needs logprobs.
    let logprobs = match (w.logprobs.unwrap_or(false), w.top_logprobs) {
        (true, top) => Some(top.unwrap_or(0)),
        (false, None) => None,
        (false, Some(_)) => {
            return Err(invalid("top_logprobs", "top_logprobs needs logprobs: true".into()));
        }
    };
    let controls = DecodingControls {
        stop: match w.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
        presence_penalty: w.presence_penalty.unwrap_or(0.0),
        frequency_penalty: w.frequency_penalty.unwrap_or(0.0),
        logit_bias,
        n: w.n.unwrap_or(1),
        choice_index: 0,
        logprobs,
        response_format: output_format(w.response_format.as_ref())?,
        tools,
    };
    if controls.response_format.is_some() && controls.tools.as_ref().is_some_and(ToolSpec::callable) {
        return Err(RequestError::Unsupported {
            param: "response_format".into(),
            reason: "response_format together with callable tools is not supported".into(),
        });
    }
    controls.check().map_err(|(param, reason)| invalid(param, reason))?;
    if w.stream && controls.n > 1 {
        return Err(RequestError::Unsupported {
            param: "n".into(),
            reason: format!("n = {} is supported without streaming only (stream: false)", controls.n),
        });
    }
    let params = SamplingParams {
        temperature: w.temperature.unwrap_or(0.0),
        top_p: w.top_p,
        seed: w.seed.unwrap_or(0),
        max_tokens,
        controls,
    };
    Ok(ChatRequest {
        model: w.model,
        prompt,
        params,
        stream: w.stream,
        include_usage: w.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        seed_given: w.seed.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bounds_and_errors() {
        let r = parse_chat_request(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(r.params, SamplingParams::greedy(256));
        assert!(!r.stream && r.model.is_none() && !r.seed_given);
        let r = parse_chat_request(
            br#"{"model":"m","messages":[],"max_tokens":5,"max_completion_tokens":7,"stream":true,"seed":3}"#,
        )
        .unwrap();
        assert_eq!((r.params.max_tokens, r.params.seed, r.stream, r.seed_given), (7, 3, true, true));
        for bad in [&br#"{"messages":[],"max_tokens":0}"#[..], br#"{"messages":[],"max_tokens":2049}"#] {
            assert_eq!(parse_chat_request(bad).unwrap_err(), RequestError::InvalidMaxTokens { cap: 2048 });
        }
        assert_eq!(parse_chat_request(b"{").unwrap_err().code(), "invalid_json");
        assert_eq!(parse_chat_request(br#"{"messages":"x"}"#).unwrap_err().code(), "invalid_json");
        let long =
            format!(r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#, "a".repeat(MAX_PROMPT_BYTES + 1));
        assert!(matches!(
            parse_chat_request(long.as_bytes()),
            Err(RequestError::ContextLengthExceeded { bytes, .. }) if bytes == MAX_PROMPT_BYTES + 1
        ));
    }

    fn with(field: &str) -> Result<ChatRequest, RequestError> {
        parse_chat_request(format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],{field}}}"#).as_bytes())
    }

    #[test]
    fn parameters_not_applied_are_refused_naming_the_parameter() {
        for (field, param) in [
            (r#""response_format":{"type":"json_object","x":1}"#, "response_format"),
            (
                r#""response_format":{"type":"json_schema","json_schema":{"name":"a","x":1}}"#,
                "response_format",
            ),
            (r#""stream_options":{"include_usage":true}"#, "stream_options"),
            (r#""stream":true,"stream_options":{"include_obfuscation":true}"#, "stream_options"),
            (r#""stream":true,"stream_options":{"include_usage":1}"#, "stream_options"),
            (r#""temprature":0.5"#, "temprature"),
            (r#""n":2,"stream":true"#, "n"),
            (r#""functions":[]"#, "functions"),
        ] {
            let e = with(field).unwrap_err();
            assert_eq!((e.code(), e.param()), ("unsupported_parameter", Some(param)), "{field}: {e}");
        }
        assert!(with(r#""temprature":0.5"#).unwrap_err().to_string().contains("unknown or unsupported"));
        assert!(with(r#""store":true"#).unwrap_err().to_string().contains("only its default"));
    }

    #[test]
    fn stop_penalties_and_bias_are_parsed_and_bounded() {
        let r = with(
            r#""stop":"Berlin","presence_penalty":0.5,"frequency_penalty":-1,"logit_bias":{"42":5,"7":-100}"#,
        )
        .unwrap();
        let c = &r.params.controls;
        assert_eq!(c.stop, ["Berlin"]);
        assert_eq!((c.presence_penalty, c.frequency_penalty), (0.5, -1.0));
        assert_eq!(c.logit_bias, [(7, -100.0), (42, 5.0)]);
        assert_eq!(with(r#""stop":["a","\n\n"]"#).unwrap().params.controls.stop, ["a", "\n\n"]);
        for (field, param, msg) in [
            (r#""stop":["a","b","c","d","e"]"#, "stop", "at most 4"),
            (r#""stop":[""]"#, "stop", "1 to 256 bytes"),
            (r#""presence_penalty":2.5"#, "presence_penalty", "outside [-2, 2]"),
            (r#""frequency_penalty":-3"#, "frequency_penalty", "outside [-2, 2]"),
            (r#""logit_bias":{"x":1}"#, "logit_bias", "is not a token id"),
            (r#""logit_bias":{"07":1}"#, "logit_bias", "is not a token id"),
            (r#""logit_bias":{"1":101}"#, "logit_bias", "outside [-100, 100]"),
            (r#""n":0"#, "n", "outside [1, 8]"),
            (r#""n":9"#, "n", "outside [1, 8]"),
            (r#""logprobs":true,"top_logprobs":21"#, "top_logprobs", "outside [0, 20]"),
            (r#""top_logprobs":2"#, "top_logprobs", "needs logprobs: true"),
            (r#""logprobs":false,"top_logprobs":0"#, "top_logprobs", "needs logprobs: true"),
        ] {
            let e = with(field).unwrap_err();
            assert_eq!((e.code(), e.param()), ("invalid_value", Some(param)), "{field}: {e}");
            assert!(e.to_string().contains(msg), "{field}: {e}");
        }
        assert_eq!(with(r#""stop":5"#).unwrap_err().code(), "invalid_json");
        let c = with(r#""n":3,"logprobs":true,"top_logprobs":5"#).unwrap().params.controls;
        assert_eq!((c.n, c.choice_index, c.logprobs), (3, 0, Some(5)));
        assert_eq!(with(r#""logprobs":true"#).unwrap().params.controls.logprobs, Some(0));
    }

    #[test]
    fn responses_requests_become_the_same_checked_request() {
        let r = parse_responses_request(
            br#"{"model":"m","instructions":"Be brief.","input":"hi","max_output_tokens":9,"temperature":0,"store":false,"text":{"format":{"type":"json_schema","name":"x","schema":{"type":"object"}}}}"#,
        )
        .unwrap();
        assert_eq!(r.messages(), [ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "hi")]);
        assert_eq!(r.params.max_tokens, 9);
        assert_eq!(r.params.controls.response_format.as_ref().map(|f| f.kind.as_str()), Some("json_schema"));
        let r = parse_responses_request(
            br#"{"input":[{"role":"developer","content":[{"type":"input_text","text":"Sys"}]},{"role":"user","content":"w?"},{"type":"function_call","call_id":"c","name":"get","arguments":"{\"a\":1}"},{"type":"function_call_output","call_id":"c","output":"5"}],"tools":[{"type":"function","name":"get","parameters":{"type":"object"}}],"tool_choice":{"type":"function","name":"get"}}"#,
        )
        .unwrap();
        assert_eq!(r.messages()[0].role, "system");
        assert!(
            r.messages()[0].content.starts_with("Sys\n\n") && r.messages()[0].content.contains("<tools>")
        );
        assert_eq!(
            r.messages()[2].content,
            "<tool_call>\n{\"name\":\"get\",\"arguments\":{\"a\":1}}\n</tool_call>"
        );
        assert_eq!(r.messages()[3].content, "<tool_response>\n5\n</tool_response>");
        assert!(r.params.controls.tools.is_some());
        assert!(parse_any_request(br#"{"input":"hi"}"#).is_ok());
        for (body, param) in [
            (&br#"{"input":"hi","previous_response_id":"r"}"#[..], "previous_response_id"),
            (br#"{"input":"hi","store":true}"#, "store"),
            (br#"{"input":"hi","reasoning":{"effort":"low"}}"#, "reasoning"),
            (br#"{"input":"hi","tools":[{"type":"web_search"}]}"#, "tools"),
            (br#"{"input":[{"type":"input_image","image_url":"x"}]}"#, "input"),
            (br#"{"input":"hi","text":{"verbosity":"low"}}"#, "text"),
        ] {
            let e = parse_responses_request(body).unwrap_err();
            assert_eq!((e.code(), e.param()), ("unsupported_parameter", Some(param)), "{e}");
        }
        let e = parse_responses_request(br#"{"input":"hi","max_output_tokens":0}"#).unwrap_err();
        assert_eq!((e.code(), e.param()), ("invalid_value", Some("max_output_tokens")), "{e}");
    }

    #[test]
    fn include_usage_is_honoured_on_streams() {
        let r = with(r#""stream":true,"stream_options":{"include_usage":true}"#).unwrap();
        assert!(r.stream && r.include_usage);
        assert!(!with(r#""stream":true"#).unwrap().include_usage);
        let e = with(r#""stream_options":{"include_usage":true}"#).unwrap_err();
        assert!(e.to_string().contains("only allowed when stream is true"), "{e}");
    }

    #[test]
    fn defaults_that_change_nothing_are_accepted() {
        for field in [
            r#""n":1"#,
            r#""presence_penalty":0"#,
            r#""frequency_penalty":0.0"#,
            r#""logprobs":false"#,
            r#""logprobs":null"#,
            r#""top_logprobs":null"#,
            r#""n":null"#,
            r#""stop":null"#,
            r#""stop":[]"#,
            r#""logit_bias":{}"#,
            r#""tools":[]"#,
            r#""tool_choice":"none""#,
            r#""response_format":{"type":"text"}"#,
            r#""user":"alice""#,
            r#""store":false"#,
            r#""stream_options":null"#,
            r#""stream":true,"stream_options":{"include_usage":false}"#,
        ] {
            let r = with(field).unwrap_or_else(|e| panic!("{field}: {e}"));
            assert_eq!(r.params, SamplingParams::greedy(256));
        }
    }
}

#[cfg(test)]
mod allow_list {
    //! Walks every OpenAI chat and Responses parameter: each is honoured (and then setting
    //! it changes the checked request: never parsed and dropped), accepted only where it
    //! changes nothing, or refused with 400 naming it.
    use super::*;

    /// OpenAI's chat completion parameters (API reference, 2025), a value that is not the
    /// default for each, and what this server does with it.
    const CHAT: [(&str, &str, &str); 34] = [
        ("audio", r#"{"voice":"alloy","format":"wav"}"#, "refused"),
        ("frequency_penalty", "1.0", "honoured"),
        ("function_call", r#""auto""#, "refused"),
        ("functions", r#"[{"name":"f"}]"#, "refused"),
        ("logit_bias", r#"{"5":3}"#, "honoured"),
        ("logprobs", "true", "honoured"),
        ("max_completion_tokens", "7", "honoured"),
        ("max_tokens", "7", "honoured"),
        ("messages", r#"[{"role":"user","content":"other"}]"#, "honoured"),
        ("metadata", r#"{"a":"b"}"#, "refused"),
        ("modalities", r#"["text","audio"]"#, "refused"),
        ("model", r#""m""#, "honoured"),
        ("n", "2", "honoured"),
        ("parallel_tool_calls", "false", "honoured"),
        ("prediction", r#"{"type":"content","content":"x"}"#, "refused"),
        ("presence_penalty", "1.0", "honoured"),
        ("prompt_cache_key", r#""k""#, "refused"),
        ("reasoning_effort", r#""low""#, "refused"),
        ("response_format", r#"{"type":"json_object"}"#, "honoured"),
        ("safety_identifier", r#""s""#, "refused"),
        ("seed", "3", "honoured"),
        ("service_tier", r#""flex""#, "refused"),
        ("stop", r#""x""#, "honoured"),
        ("store", "true", "refused"),
        ("stream", "true", "honoured"),
        ("stream_options", r#"{"include_usage":true}"#, "honoured"),
        ("temperature", "0.5", "honoured"),
        ("tool_choice", r#""required""#, "honoured"),
        ("tools", r#"[{"type":"function","function":{"name":"f"}}]"#, "honoured"),
        ("top_logprobs", "2", "honoured"),
        ("top_p", "0.5", "honoured"),
        ("user", r#""u""#, "inert"),
        ("verbosity", r#""low""#, "refused"),
        ("web_search_options", "{}", "refused"),
    ];

    /// A base body, with what some fields need beside them.
    fn body(field: &str, value: &str) -> String {
        let needs = match field {
            "top_logprobs" => r#","logprobs":true"#,
            "stream_options" => r#","stream":true"#,
            "tool_choice" | "parallel_tool_calls" => {
                r#","tools":[{"type":"function","function":{"name":"f"}}]"#
            }
            _ => "",
        };
        let messages = if field == "messages" {
            String::new()
        } else {
            r#""messages":[{"role":"user","content":"hi"}],"#.to_owned()
        };
        format!(r#"{{{messages}"{field}":{value}{needs}}}"#)
    }

    #[test]
    fn every_chat_parameter_is_honoured_inert_or_refused_and_never_dropped() {
        let base = parse_chat_request(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        for (field, value, kind) in CHAT {
            let got = parse_chat_request(body(field, value).as_bytes());
            match kind {
                "honoured" => {
                    assert!(
                        HONOURED_FIELDS.contains(&field),
                        "{field} is honoured but not on the allow-list"
                    );
                    let r = got.unwrap_or_else(|e| panic!("{field}: {e}"));
                    assert_ne!(r, base, "{field} = {value} changed nothing: it would be silently ignored");
                    // Alone (without what it needs beside it), the change is its own.
                    if let Ok(alone) = parse_chat_request(
                        format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],"{field}":{value}}}"#)
                            .as_bytes(),
                    ) {
                        if field != "messages" {
                            assert_ne!(alone, base, "{field}");
                        }
                    }
                }
                "inert" => assert_eq!(got.unwrap().params, base.params, "{field}"),
                _ => {
                    let e = got.unwrap_err();
                    assert_eq!((e.code(), e.param()), ("unsupported_parameter", Some(field)), "{field}: {e}");
                }
            }
        }
        // The allow-list holds nothing the walk does not cover.
        for field in HONOURED_FIELDS {
            assert!(CHAT.iter().any(|(f, _, k)| *f == field && *k == "honoured"), "{field} is not walked");
        }
    }

    #[test]
    fn every_responses_parameter_is_honoured_inert_or_refused_and_never_dropped() {
        let base = parse_responses_request(br#"{"input":"hi"}"#).unwrap();
        let tools = r#","tools":[{"type":"function","name":"f"}]"#;
        for (field, value, kind) in [
            ("background", "true", "refused"),
            ("conversation", r#""c""#, "refused"),
            ("include", r#"["reasoning.encrypted_content"]"#, "refused"),
            ("input", r#""other""#, "honoured"),
            ("instructions", r#""Be brief.""#, "honoured"),
            ("max_output_tokens", "7", "honoured"),
            ("max_tool_calls", "1", "refused"),
            ("metadata", r#"{"a":"b"}"#, "inert"),
            ("model", r#""m""#, "honoured"),
            ("parallel_tool_calls", "false", "honoured"),
            ("previous_response_id", r#""resp_1""#, "refused"),
            ("prompt", r#"{"id":"p"}"#, "refused"),
            ("prompt_cache_key", r#""k""#, "refused"),
            ("reasoning", r#"{"effort":"low"}"#, "refused"),
            ("safety_identifier", r#""s""#, "refused"),
            ("service_tier", r#""flex""#, "refused"),
            ("store", "true", "refused"),
            ("stream", "true", "honoured"),
            ("stream_options", r#"{"include_obfuscation":false}"#, "refused"),
            ("temperature", "0.5", "honoured"),
            ("text", r#"{"format":{"type":"json_object"}}"#, "honoured"),
            ("tool_choice", r#""required""#, "honoured"),
            ("tools", r#"[{"type":"function","name":"f"}]"#, "honoured"),
            ("top_logprobs", "2", "refused"),
            ("top_p", "0.5", "honoured"),
            ("truncation", r#""auto""#, "refused"),
            ("user", r#""u""#, "inert"),
        ] {
            let needs = if matches!(field, "tool_choice" | "parallel_tool_calls") { tools } else { "" };
            let input = if field == "input" { String::new() } else { r#""input":"hi","#.to_owned() };
            let got = parse_responses_request(format!(r#"{{{input}"{field}":{value}{needs}}}"#).as_bytes());
            match kind {
                "honoured" => {
                    assert!(RESPONSES_FIELDS.contains(&field), "{field}");
                    assert_ne!(
                        got.unwrap_or_else(|e| panic!("{field}: {e}")),
                        base,
                        "{field} changed nothing"
                    );
                }
                "inert" => assert_eq!(got.unwrap().params, base.params, "{field}"),
                _ => {
                    let e = got.unwrap_err();
                    assert_eq!((e.code(), e.param()), ("unsupported_parameter", Some(field)), "{field}: {e}");
                }
            }
        }
    }

    #[test]
    fn completions_requests_take_one_raw_text_prompt() {
        let r = parse_completions_request(br#"{"model":"m","prompt":"Once upon"}"#).unwrap();
        assert_eq!(r.prompt, Prompt::Text("Once upon".into()));
        assert_eq!(r.params, SamplingParams::greedy(COMPLETIONS_DEFAULT_MAX_TOKENS));
        assert!(!r.prompt.is_chat());
        assert!(r.messages().is_empty() && r.model.as_deref() == Some("m"));
        // A list holding one prompt is that prompt; the controls chat has apply here too.
        let r = parse_completions_request(
            br#"{"prompt":["Once"],"max_tokens":5,"temperature":0.5,"seed":2,"stop":"\n","n":2,"stream":false,"echo":false,"best_of":1,"logprobs":null,"suffix":null,"user":"u","presence_penalty":0.5}"#,
        )
        .unwrap();
        assert_eq!(r.prompt, Prompt::Text("Once".into()));
        assert_eq!((r.params.max_tokens, r.params.seed, r.params.controls.n), (5, 2, 2));
        assert_eq!(r.params.controls.stop, ["\n"]);
        let r = parse_completions_request(
            br#"{"prompt":"x","stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(r.stream && r.include_usage);
        // What is not served is refused, naming the field.
        for (body, code, param) in [
            (&br#"{"prompt":["a","b"]}"#[..], "unsupported_parameter", Some("prompt")),
            (br#"{"prompt":[1,2]}"#, "unsupported_parameter", Some("prompt")),
            (br#"{"prompt":[]}"#, "unsupported_parameter", Some("prompt")),
            (br#"{"prompt":"x","echo":true}"#, "unsupported_parameter", Some("echo")),
            (br#"{"prompt":"x","logprobs":1}"#, "unsupported_parameter", Some("logprobs")),
            (br#"{"prompt":"x","suffix":"y"}"#, "unsupported_parameter", Some("suffix")),
            (br#"{"prompt":"x","best_of":3}"#, "unsupported_parameter", Some("best_of")),
            (br#"{"prompt":"x","messages":[]}"#, "unsupported_parameter", Some("messages")),
            (
                br#"{"prompt":"x","response_format":{"type":"json_object"}}"#,
                "unsupported_parameter",
                Some("response_format"),
            ),
            (br#"{"prompt":"x","wizard":null}"#, "unsupported_parameter", Some("wizard")),
            (
                br#"{"prompt":"x","stream_options":{"include_usage":true}}"#,
                "unsupported_parameter",
                Some("stream_options"),
            ),
            (br#"{"prompt":"x","n":2,"stream":true}"#, "unsupported_parameter", Some("n")),
            (br#"{"prompt":"x","max_tokens":0}"#, "invalid_max_tokens", Some("max_tokens")),
            (br#"{"prompt":7}"#, "invalid_json", None),
            (br#"{"max_tokens":3}"#, "invalid_json", None),
        ] {
            let e = parse_completions_request(body).unwrap_err();
            assert_eq!((e.code(), e.param()), (code, param), "{}: {e}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(MAX_PROMPT_BYTES + 1));
        let e = parse_completions_request(long.as_bytes()).unwrap_err();
        assert_eq!((e.code(), e.param()), ("context_length_exceeded", Some("prompt")));
        // Chat's parser does not take a prompt; parse_any_request tells them apart.
        assert_eq!(parse_chat_request(br#"{"prompt":"x"}"#).unwrap_err().param(), Some("prompt"));
        assert_eq!(parse_any_request(br#"{"prompt":"x"}"#).unwrap().prompt, Prompt::Text("x".into()));
    }
}
