//! `POST /v1/responses`: the OpenAI Responses API's shapes over the same generation,
//! receipts and checks as chat (the request is parsed by
//! [`crate::request::parse_responses_request`]).
//!
//! ```text
//!  whole:  {"object": "response", "status", "output": [message | function_call ...],
//!           "usage", ..., "vouch_receipt", "vouch_completion_tokens", "vouch_output"}
//!  stream: response.created, response.in_progress, then for a message
//!          response.output_item.added, response.content_part.added,
//!          response.output_text.delta (as the text comes), response.output_text.done,
//!          response.content_part.done, response.output_item.done — or, for tool calls,
//!          output_item.added, function_call_arguments.delta/.done, output_item.done each —
//!          then response.completed (or .incomplete) with the whole response and its receipt
//! ```
//!
//! `vouch_output` is the answer's raw text, which the receipt's output digest covers: the
//! message text, or the tool calls as the model wrote them.

use super::*;

/// The output items of one answer: a message, or its tool calls.
fn output_items(ctx: &Exchange, text: &str) -> Vec<Value> {
    let id = ctx.id.strip_prefix("resp_").unwrap_or(&ctx.id);
    match ctx.tool_calls(0, text) {
        Some(calls) => calls
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(k, c)| {
                json!({"type": "function_call", "id": format!("fc_{id}_{k}"), "call_id": c["id"],
                    "name": c["function"]["name"], "arguments": c["function"]["arguments"], "status": "completed"})
            })
            .collect(),
        None => vec![json!({
            "type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        })],
    }
}

/// The whole response object.
pub(super) fn response(
    ctx: &Exchange,
    text: &str,
    finish_reason: &str,
    stats: &GenerationStats,
    receipt: &str,
) -> Value {
    let complete = finish_reason != "length";
    let c = &ctx.params.controls;
    let format = match &c.response_format {
        None => json!({"type": "text"}),
        Some(f) if f.kind == "json_schema" => json!({"type": "json_schema", "schema": f.schema}),
        Some(f) => json!({"type": f.kind}),
    };
    let tool_choice = match c.tools.as_ref().map(|t| &t.choice) {
        None | Some(crate::model::tools::ToolChoice::Auto) => json!("auto"),
        Some(crate::model::tools::ToolChoice::Required) => json!("required"),
        Some(crate::model::tools::ToolChoice::None) => json!("none"),
        Some(crate::model::tools::ToolChoice::Function(name)) => json!({"type": "function", "name": name}),
    };
    let tools: Vec<Value> = c
        .tools
        .iter()
        .flat_map(|t| t.functions.iter())
        .map(|f| {
            let mut f = f.clone();
            f["type"] = json!("function");
            f
        })
        .collect();
    json!({
        "id": ctx.id,
        "object": "response",
        "created_at": ctx.created,
        "status": if complete { "completed" } else { "incomplete" },
        "incomplete_details": if complete { Value::Null } else { json!({"reason": "max_output_tokens"}) },
        "error": null,
        "model": ctx.engine.model_name(),
        "output": output_items(ctx, text),
        "parallel_tool_calls": c.tools.as_ref().is_none_or(|t| t.parallel),
        "tool_choice": tool_choice,
        "tools": tools,
        "temperature": ctx.params.temperature,
        "top_p": ctx.params.top_p.unwrap_or(1.0),
        "max_output_tokens": ctx.params.max_tokens,
        "text": {"format": format},
        "store": false,
        "metadata": {},
        "usage": {
            "input_tokens": stats.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": stats.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        },
        "vouch_receipt": receipt,
        "vouch_completion_tokens": stats.completion_token_ids,
        "vouch_output": text,
        "vouch_seed": ctx.disclosed_seed(),
    })
}

/// One server-sent event of the Responses stream.
fn event(seq: &mut u64, mut v: Value) -> Bytes {
    v["sequence_number"] = json!(*seq);
    *seq += 1;
    let kind = v["type"].as_str().unwrap_or("").to_owned();
    Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
}

/// The streamed response: text deltas as they come; tool calls (an answer that may call
/// tools and begins with "<") whole at the end.
pub(super) fn stream(ctx: Exchange, mut events: mpsc::Receiver<GenerateEvent>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut seq = 0u64;
        let id = ctx.id.strip_prefix("resp_").unwrap_or(&ctx.id).to_owned();
        let msg_id = format!("msg_{id}");
        let mut skeleton = json!({"id": ctx.id, "object": "response", "created_at": ctx.created,
            "status": "in_progress", "model": ctx.engine.model_name(), "output": [], "error": null});
        if let Some(seed) = ctx.disclosed_seed() {
            skeleton["vouch_seed"] = json!(seed);
        }
        for kind in ["response.created", "response.in_progress"] {
            if tx.send(event(&mut seq, json!({"type": kind, "response": skeleton}))).await.is_err() {
                return;
            }
        }
        let mut text = String::new();
        let mut holding = ctx.tools_callable();
        let mut opened = false;
        macro_rules! send {
            ($v:expr) => {
                if tx.send(event(&mut seq, $v)).await.is_err() {
                    return;
                }
            };
        }
        let open = |seq: &mut u64| {
            let item = json!({"type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []});
            [
                event(seq, json!({"type": "response.output_item.added", "output_index": 0, "item": item})),
                event(
                    seq,
                    json!({"type": "response.content_part.added", "item_id": msg_id, "output_index": 0,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
                ),
            ]
        };
        let delta = |seq: &mut u64, d: &str| {
            event(
                seq,
                json!({"type": "response.output_text.delta", "item_id": msg_id, "output_index": 0,
                "content_index": 0, "delta": d}),
            )
        };
        while let Some(ev) = events.recv().await {
            match ev {
                GenerateEvent::Delta(d) => {
                    text.push_str(&d);
                    if holding && text.starts_with('<') {
                        continue;
                    }
                    let d = if holding { text.clone() } else { d };
                    holding = false;
                    if !opened {
                        opened = true;
                        for b in open(&mut seq) {
                            if tx.send(b).await.is_err() {
                                return;
                            }
                        }
                    }
                    if tx.send(delta(&mut seq, &d)).await.is_err() {
                        return;
                    }
                }
                GenerateEvent::Failed(msg) => {
                    let _ = tx
                        .send(event(
                            &mut seq,
                            json!({"type": "error", "code": "generation_failed", "message": msg}),
                        ))
                        .await;
                    return;
                }
                GenerateEvent::Done { finish_reason, stats } => {
                    let receipt = match ctx.receipt(0, &text, finish_reason.as_str(), &stats).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(error = %e, "receipt failed");
                            let _ = tx
                                .send(event(&mut seq, json!({"type": "error", "code": "receipt_failed", "message": "receipt unavailable"})))
                                .await;
                            return;
                        }
                    };
                    let whole = response(&ctx, &text, finish_reason.as_str(), &stats, &receipt);
                    let items = whole["output"].as_array().cloned().unwrap_or_default();
                    let is_message = items.first().is_some_and(|i| i["type"] == "message");
                    if is_message {
                        if !opened {
                            for b in open(&mut seq) {
                                if tx.send(b).await.is_err() {
                                    return;
                                }
                            }
                            if !text.is_empty() {
                                send!(json!({"type": "response.output_text.delta", "item_id": msg_id,
                                    "output_index": 0, "content_index": 0, "delta": text}));
                            }
                        }
                        let part = json!({"type": "output_text", "text": text, "annotations": []});
                        send!(
                            json!({"type": "response.output_text.done", "item_id": msg_id, "output_index": 0,
                            "content_index": 0, "text": text})
                        );
                        send!(
                            json!({"type": "response.content_part.done", "item_id": msg_id, "output_index": 0,
                            "content_index": 0, "part": part})
                        );
                        send!(
                            json!({"type": "response.output_item.done", "output_index": 0, "item": items[0]})
                        );
                    } else {
                        for (k, item) in items.iter().enumerate() {
                            let mut added = item.clone();
                            added["status"] = json!("in_progress");
                            added["arguments"] = json!("");
                            send!(
                                json!({"type": "response.output_item.added", "output_index": k, "item": added})
                            );
                            send!(
                                json!({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                                "output_index": k, "delta": item["arguments"]})
                            );
                            send!(
                                json!({"type": "response.function_call_arguments.done", "item_id": item["id"],
                                "output_index": k, "arguments": item["arguments"]})
                            );
                            send!(
                                json!({"type": "response.output_item.done", "output_index": k, "item": item})
                            );
                        }
                    }
                    let kind = if whole["status"] == "completed" {
                        "response.completed"
                    } else {
                        "response.incomplete"
                    };
                    let _ = tx.send(event(&mut seq, json!({"type": kind, "response": whole}))).await;
                    return;
                }
            }
        }
    });
    event_stream(rx)
}
