//! Tools / function calling (trusted side, and in `vouch replay`): the request's `tools`
//! and `tool_choice`, how they reach the model, the grammar that holds its calls to each
//! function's schema, and how its output becomes `tool_calls`.
//!
//! SmolLM2's own template defines no tool convention, so this follows the ChatML family's
//! (Hermes / Qwen 2.5), spelled out here:
//!
//! ```text
//!  system turn  += the tool signatures, one JSON object per line, between <tools> and
//!                  </tools>, and how to call one
//!  assistant call: <tool_call>\n{"name": NAME, "arguments": {...}}\n</tool_call>
//!                  (several: separated by "\n"); earlier calls are rendered the same way
//!  tool result:  a user turn <tool_response>\n{content}\n</tool_response>
//!  tool_choice:  auto     — text (not starting with "<") or calls
//!                required — one call or more (one: parallel_tool_calls false)
//!                {"type":"function","function":{"name":N}} — a call of N
//!                none     — text; the tools are not shown
//!  every call's JSON is constrained to {"name": const, "arguments": the function's
//!  parameters schema} (llguidance, as for response_format)
//! ```
//!
//! The receipt commits `tools_sha256` (engine version, tools, choice, parallel), which
//! fixes both the rendered prompt and the grammar; the raw output (calls as text) is what
//! `output_sha256` covers, and a client re-derives `tool_calls` from it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::constraint::CONSTRAINT_ENGINE;

/// Most tools a request may offer.
pub const MAX_TOOLS: usize = 64;

/// How the model may call the tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolChoice {
    /// Text or calls, as the model chooses.
    Auto,
    /// At least one call.
    Required,
    /// A call of this function.
    Function(String),
    /// No call (the tools are not shown).
    None,
}

/// The tools offered and how they may be called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Each tool's `function` object (`name`, `description`?, `parameters`?), as sent.
    pub functions: Vec<Value>,
    /// `tool_choice`.
    pub choice: ToolChoice,
    /// `parallel_tool_calls`: several calls in one answer (default true).
    pub parallel: bool,
}

/// One call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments: a JSON object, serialised as the model wrote its members.
    pub arguments: String,
}

fn name_of(f: &Value) -> &str {
    f.get("name").and_then(Value::as_str).unwrap_or("")
}

impl ToolSpec {
    /// Parses `tools`, `tool_choice` and `parallel_tool_calls`; `Ok(None)` when no tools
    /// are offered. Errors name the field and say why.
    pub fn parse(
        tools: Option<&Value>,
        choice: Option<&Value>,
        parallel: Option<&Value>,
    ) -> Result<Option<ToolSpec>, (&'static str, String)> {
        let tools = tools.filter(|t| !t.is_null());
        let list = match tools {
            None => Vec::new(),
            Some(t) => t.as_array().cloned().ok_or(("tools", "tools must be a list".to_owned()))?,
        };
        if list.is_empty() {
            if parallel.is_some_and(|p| !p.is_null()) {
                return Err(("parallel_tool_calls", "parallel_tool_calls needs tools".to_owned()));
            }
            // No tools: only the choices that call nothing make sense.
            return match choice.filter(|c| !c.is_null()).map(|c| c.as_str()) {
                None | Some(Some("none" | "auto")) => Ok(None),
                _ => Err(("tool_choice", "tool_choice needs tools".to_owned())),
            };
        }
        if list.len() > MAX_TOOLS {
            return Err(("tools", format!("at most {MAX_TOOLS} tools")));
        }
        let mut functions = Vec::with_capacity(list.len());
        for t in &list {
            let o = t.as_object().ok_or(("tools", "each tool must be an object".to_owned()))?;
            if o.get("type").and_then(Value::as_str) != Some("function")
                || o.keys().any(|k| k != "type" && k != "function")
            {
                return Err((
                    "tools",
                    "each tool must be {\"type\": \"function\", \"function\": {...}}".to_owned(),
                ));
            }
            let f = o
                .get("function")
                .and_then(Value::as_object)
                .ok_or(("tools", "a tool without a function".to_owned()))?;
            if let Some(k) =
                f.keys().find(|k| !["name", "description", "parameters", "strict"].contains(&k.as_str()))
            {
                return Err(("tools", format!("function field {k:?} is not supported")));
            }
            let name = f.get("name").and_then(Value::as_str).unwrap_or("");
            let valid = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(("tools", format!("function name {name:?}: 1 to 64 of a-z, A-Z, 0-9, _ and -")));
            }
            if functions.iter().any(|g: &Value| name_of(g) == name) {
                return Err(("tools", format!("function {name:?} is offered twice")));
            }
            if f.get("parameters").is_some_and(|p| !p.is_object()) {
                return Err(("tools", format!("function {name:?}: parameters must be a JSON schema object")));
            }
            functions.push(Value::Object(f.clone()));
        }
        let choice = match choice.filter(|c| !c.is_null()) {
            None => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                "none" => ToolChoice::None,
                other => {
                    return Err((
                        "tool_choice",
                        format!("tool_choice {other:?} is not auto, required or none"),
                    ))
                }
            },
            Some(c) => {
                let name = c
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .filter(|_| c.get("type").and_then(Value::as_str) == Some("function"))
                    .ok_or(("tool_choice", format!("tool_choice {c} is not a function choice")))?;
                if !functions.iter().any(|f| name_of(f) == name) {
                    return Err((
                        "tool_choice",
                        format!("tool_choice names {name:?}, which is not among the tools"),
                    ));
                }
                ToolChoice::Function(name.to_owned())
            }
        };
        let parallel = match parallel.filter(|p| !p.is_null()) {
            None => true,
            Some(p) => p
                .as_bool()
                .ok_or(("parallel_tool_calls", "parallel_tool_calls must be a boolean".to_owned()))?,
        };
        Ok(Some(ToolSpec { functions, choice, parallel }))
    }

    /// Whether the model may call (and so sees the tools).
    pub fn callable(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// SHA-256 of everything that decides the prompt and the grammar: the engine, the
    /// functions as sent, the choice and `parallel` (`engine \n spec JSON`).
    pub fn sha256(&self) -> [u8; 32] {
        let spec = json!({"functions": self.functions, "choice": self.choice, "parallel": self.parallel});
        Sha256::digest(format!("{CONSTRAINT_ENGINE}\ntools\n{spec}").as_bytes()).into()
    }

    /// What the system turn gains: the signatures and how to call them.
    pub fn system_text(&self) -> String {
        let mut out = String::from(
            "You can call functions. Their signatures, one JSON object per line, are between <tools> and </tools>:\n<tools>\n",
        );
        for f in &self.functions {
            out.push_str(&json!({"type": "function", "function": f}).to_string());
            out.push('\n');
        }
        out.push_str(
            "</tools>\nTo call one, answer with a JSON object holding its name and arguments between <tool_call> and </tool_call> tags:\n<tool_call>\n{\"name\": \"the function's name\", \"arguments\": {\"an argument\": \"its value\"}}\n</tool_call>",
        );
        out
    }

    /// The llguidance (Lark) grammar the answer is held to, `None` when it may not call.
    pub fn grammar(&self) -> Option<String> {
        let call_schema = |f: &Value| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": name_of(f)},
                    "arguments": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        };
        let body = match &self.choice {
            ToolChoice::None => return None,
            ToolChoice::Function(name) => {
                self.functions.iter().find(|f| name_of(f) == name).map(call_schema).unwrap_or(json!({}))
            }
            ToolChoice::Auto | ToolChoice::Required => {
                json!({"anyOf": self.functions.iter().map(call_schema).collect::<Vec<_>>()})
            }
        };
        let calls = if self.parallel { "call (\"\\n\" call)*" } else { "call" };
        let start = match self.choice {
            ToolChoice::Auto => "start: calls | TEXT\nTEXT: /[^<][\\s\\S]*/",
            _ => "start: calls",
        };
        Some(format!("{start}\ncalls: {calls}\ncall: \"<tool_call>\\n\" args \"\\n</tool_call>\"\nargs: %json {body}\n"))
    }
}

/// The model's output read as tool calls: `Some` when it is one or more calls (and
/// nothing else) in the convention above, each naming one of `spec`'s functions with an
/// arguments object; `None` when it is text (or an unfinished call).
pub fn parse_tool_calls(output: &str) -> Option<Vec<ToolCall>> {
    let mut rest = output;
    let mut calls = Vec::new();
    loop {
        let body = rest.strip_prefix("<tool_call>\n")?;
        let end = body.find("\n</tool_call>")?;
        let v: Value = serde_json::from_str(&body[..end]).ok()?;
        let name = v.get("name")?.as_str()?.to_owned();
        let arguments = v.get("arguments").filter(|a| a.is_object())?.to_string();
        calls.push(ToolCall { name, arguments });
        rest = &body[end + "\n</tool_call>".len()..];
        if rest.is_empty() {
            return Some(calls);
        }
        rest = rest.strip_prefix('\n')?;
    }
}

/// An assistant turn's earlier `tool_calls` (OpenAI's shape), rendered as the model
/// writes them.
pub fn render_tool_calls(calls: &Value) -> Result<String, String> {
    let calls = calls.as_array().ok_or("tool_calls must be a list")?;
    let mut out = Vec::new();
    for c in calls {
        let name = c
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or("a tool call without a function name")?;
        let args = c.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        let args: Value =
            serde_json::from_str(args).map_err(|e| format!("tool call arguments are not JSON: {e}"))?;
        out.push(format!("<tool_call>\n{}\n</tool_call>", json!({"name": name, "arguments": args})));
    }
    Ok(out.join("\n"))
}

/// A tool result, rendered as the user turn that carries it.
pub fn render_tool_result(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    }

    #[test]
    fn tools_and_choices_parse_and_bad_ones_name_the_field() {
        let t = weather();
        let s = ToolSpec::parse(Some(&t), None, None).unwrap().unwrap();
        assert_eq!((s.choice.clone(), s.parallel, s.callable()), (ToolChoice::Auto, true, true));
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let s = ToolSpec::parse(Some(&t), Some(&named), Some(&json!(false))).unwrap().unwrap();
        assert_eq!((s.choice, s.parallel), (ToolChoice::Function("get_weather".into()), false));
        assert!(!ToolSpec::parse(Some(&t), Some(&json!("none")), None).unwrap().unwrap().callable());
        assert_eq!(ToolSpec::parse(Some(&json!([])), Some(&json!("none")), None).unwrap(), None);
        for (tools, choice, field, msg) in [
            (json!([]), json!("required"), "tool_choice", "needs tools"),
            (t.clone(), json!("sometimes"), "tool_choice", "not auto, required or none"),
            (
                t.clone(),
                json!({"type": "function", "function": {"name": "nope"}}),
                "tool_choice",
                "not among the tools",
            ),
            (json!([{"type": "retrieval"}]), json!("auto"), "tools", "each tool must be"),
            (
                json!([{"type": "function", "function": {"name": "a b"}}]),
                json!("auto"),
                "tools",
                "function name",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "x": 1}}]),
                json!("auto"),
                "tools",
                "\"x\" is not supported",
            ),
            (
                json!([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]),
                json!("auto"),
                "tools",
                "offered twice",
            ),
        ] {
            let (f, e) = ToolSpec::parse(Some(&tools), Some(&choice), None).unwrap_err();
            assert_eq!(f, field, "{e}");
            assert!(e.contains(msg), "{e}");
        }
    }

    #[test]
    fn calls_are_read_back_exactly_and_text_is_not_a_call() {
        let out = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>";
        let calls = parse_tool_calls(out).unwrap();
        assert_eq!(
            calls[0],
            ToolCall { name: "get_weather".into(), arguments: r#"{"city":"Paris"}"#.into() }
        );
        assert_eq!(calls[1].name, "f");
        for text in [
            "Paris",
            "<tool_call>\n{\"name\": \"f\"",
            "<tool_call>\n{\"name\": \"f\", \"arguments\": 3}\n</tool_call>",
            &format!("{out} and more"),
        ] {
            assert_eq!(parse_tool_calls(text), None, "{text}");
        }
        // Rendered earlier calls read back as the same calls.
        let earlier = json!([{"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]);
        assert_eq!(parse_tool_calls(&render_tool_calls(&earlier).unwrap()).unwrap(), calls[..1]);
    }

    #[test]
    fn the_digest_covers_tools_choice_and_parallel() {
        let t = weather();
        let d = |c: Value, p: bool| {
            ToolSpec::parse(Some(&t), Some(&c), Some(&json!(p))).unwrap().unwrap().sha256()
        };
        let base = d(json!("auto"), true);
        assert_ne!(base, d(json!("required"), true));
        assert_ne!(base, d(json!("auto"), false));
        assert_eq!(base, d(json!("auto"), true));
    }
}
