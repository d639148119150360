//! `POST /v1/completions`: OpenAI's legacy completions shapes over the same generation,
//! receipts and checks as chat, for a raw-text prompt (parsed by
//! [`crate::request::parse_completions_request`]; the receipt commits the template
//! [`crate::model::TEXT_TEMPLATE`]). A base model without a chat template is served here
//! only.
//!
//! ```text
//!  whole:  {"object": "text_completion", "choices": [{"text", "index", "logprobs": null,
//!           "finish_reason"}], "usage", "vouch_receipt", "vouch_completion_tokens", "vouch_seed"}
//!  stream: {"choices": [{"text": ""}], "vouch_seed"?}   (opening chunk)
//!          {"choices": [{"text": delta}]} ...           (as the text comes)
//!          {"choices": [{"text": "", "finish_reason"}], "usage", "vouch_receipt", ...}
//!          (with include_usage: the finish chunk, then one with "choices": [] and the
//!          usage and receipt), then data: [DONE]
//! ```
//!
//! The text the receipt's output digest covers is exactly the choice's `text` (whole), or
//! the concatenation of the streamed `text` pieces.

use super::*;

/// The whole response of one request's finished choices.
pub(super) fn response(ctx: &Exchange, done: &[Finished]) -> Value {
    let several = done.len() > 1;
    let choices: Vec<Value> = done
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v =
                json!({"text": c.text, "index": i, "logprobs": null, "finish_reason": c.finish_reason});
            if several {
                v["vouch_receipt"] = json!(c.receipt);
                v["vouch_completion_tokens"] = json!(c.stats.completion_token_ids);
            }
            v
        })
        .collect();
    let completion_tokens: u32 = done.iter().map(|c| c.stats.completion_tokens).sum();
    let prompt_tokens = done.first().map_or(0, |c| c.stats.prompt_tokens);
    json!({
        "id": ctx.id,
        "object": "text_completion",
        "created": ctx.created,
        "model": ctx.engine.model_name(),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "vouch_receipt": done.first().map(|c| c.receipt.clone()),
        "vouch_completion_tokens": done.first().map(|c| c.stats.completion_token_ids.clone()),
        "vouch_seed": ctx.disclosed_seed(),
    })
}

/// The streamed response of a one-choice request.
pub(super) fn stream(ctx: Exchange, mut events: mpsc::Receiver<GenerateEvent>) -> Response<Body> {
    // As for chat: a small buffer, so a client that stops reading pauses generation, and
    // one that goes away cancels it.
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let model = ctx.engine.model_name().to_owned();
        let chunk = |text: &str, finish: Value| {
            json!({
                "id": ctx.id, "object": "text_completion", "created": ctx.created, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
            })
        };
        // The opening chunk names a seed the request did not give (see chat's).
        let mut first = chunk("", Value::Null);
        if let Some(seed) = ctx.disclosed_seed() {
            first["vouch_seed"] = json!(seed);
        }
        if tx.send(sse(&first)).await.is_err() {
            return;
        }
        let mut text = String::new();
        while let Some(ev) = events.recv().await {
            match ev {
                GenerateEvent::Delta(d) => {
                    text.push_str(&d);
                    if tx.send(sse(&chunk(&d, Value::Null))).await.is_err() {
                        return;
                    }
                }
                GenerateEvent::Failed(msg) => {
                    let _ = tx.send(sse(&json!({"error": {"message": msg, "type": "server_error", "code": "generation_failed"}}))).await;
                    return;
                }
                GenerateEvent::Done { finish_reason, stats } => {
                    let finish = finish_reason.as_str();
                    let mut last = chunk("", json!(finish));
                    if ctx.include_usage {
                        if tx.send(sse(&last)).await.is_err() {
                            return;
                        }
                        last["choices"] = json!([]);
                    }
                    match ctx.receipt(0, &text, finish, &stats).await {
                        Ok(r) => {
                            last["vouch_receipt"] = json!(r);
                            last["vouch_completion_tokens"] = json!(stats.completion_token_ids);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "receipt failed");
                            let _ = tx.send(sse(&json!({"error": {"message": "receipt unavailable", "type": "server_error", "code": "receipt_failed"}}))).await;
                            return;
                        }
                    }
                    last["usage"] = json!({
                        "prompt_tokens": stats.prompt_tokens,
                        "completion_tokens": stats.completion_tokens,
                        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
                    });
                    let _ = tx.send(sse(&last)).await;
                    let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                    return;
                }
            }
        }
    });
    event_stream(rx)
}
