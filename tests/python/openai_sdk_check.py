"""The official OpenAI Python SDK, unchanged, pointed at `vouch proxy`: a chat completion
and a streamed completion, each carrying the proxy's verification verdict; the decoding
controls applied, with their effect observed (stop strings, penalties, logit_bias), plain
and streamed; and every parameter the server does not apply refused with OpenAI's 400
(`unsupported_parameter`, naming the parameter), plain and streamed, before anything is
generated.
Usage: python3 openai_sdk_check.py BASE_URL   (e.g. http://127.0.0.1:PORT/v1)"""
import json
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="not-needed")
model = client.models.list().data[0].id
r = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of Germany?"}],
    max_tokens=16,
    temperature=0,
)
text = r.choices[0].message.content
extra = r.model_extra or {}
verdict = extra.get("vouch_verdict")
stream_text = ""
stream_verdict = None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of Germany?"}],
    max_tokens=16,
    temperature=0,
    stream=True,
):
    if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
        stream_text += chunk.choices[0].delta.content
    if (chunk.model_extra or {}).get("vouch_verdict") is not None:
        stream_verdict = chunk.model_extra["vouch_verdict"]
# stream_options.include_usage: a last chunk with the usage and no choices (it carries the
# verdict too), after the chunk with the finish reason.
usage_chunks = []
finish_reasons = []
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of Germany?"}],
    max_tokens=16,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].finish_reason:
        finish_reasons.append(chunk.choices[0].finish_reason)
    if chunk.usage is not None:
        usage_chunks.append({
            "choices": len(chunk.choices),
            "completion_tokens": chunk.usage.completion_tokens,
            "verified": ((chunk.model_extra or {}).get("vouch_verdict") or {}).get("verified"),
        })
include_usage = {"usage_chunks": usage_chunks, "finish_reasons": finish_reasons}
# Controls that are applied: observe each one's effect, plain and streamed.
def ask(stream, max_tokens=16, question="What is the capital of Germany?", **kw):
    """(text, finish_reason, verified) of one greedy answer."""
    out = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
        stream=stream,
        **kw,
    )
    if not stream:
        v = (out.model_extra or {}).get("vouch_verdict") or {}
        return out.choices[0].message.content, out.choices[0].finish_reason, v.get("verified")
    text, finish, verified = "", None, None
    for chunk in out:
        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        v = (chunk.model_extra or {}).get("vouch_verdict")
        if v is not None:
            verified = v.get("verified")
    return text, finish, verified


applied = {}
for stream in (False, True):
    mode = "stream" if stream else "plain"
    applied[f"stop/{mode}"] = ask(stream, stop=["Berlin"])
    # Penalties act on repeated tokens: an answer full of commas.
    count = "List the numbers from 1 to 20, separated by commas."
    applied[f"penalties/{mode}"] = ask(stream, 32, count, presence_penalty=1.5, frequency_penalty=1.5)
    applied[f"no_penalties/{mode}"] = ask(stream, 32, count)
    # +100 on one token id: every token of the answer is that one.
    applied[f"logit_bias/{mode}"] = ask(stream, max_tokens=4, logit_bias={"28": 100})
# Parameters not applied are refused, never silently ignored.
refused = {}
unsupported = {
    "n": {"n": 2},
    "logprobs": {"logprobs": True},
    "response_format": {"response_format": {"type": "json_object"}},
    "tools": {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
}
for name, extra_args in unsupported.items():
    for stream in (False, True):
        try:
            out = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "What is the capital of Germany?"}],
                max_tokens=4,
                stream=stream,
                **extra_args,
            )
            if stream:
                list(out)
            refused[f"{name}/{'stream' if stream else 'plain'}"] = "ANSWERED"
        except openai.BadRequestError as e:
            body = e.body if isinstance(e.body, dict) else {}
            refused[f"{name}/{'stream' if stream else 'plain'}"] = [e.status_code, body.get("code"), body.get("param"), body.get("type")]
# Defaults that change nothing are accepted.
r = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of Germany?"}],
    max_tokens=4,
    n=1,
    presence_penalty=0,
    user="sdk-test",
)
defaults_ok = (r.model_extra or {}).get("vouch_verdict", {}).get("verified") is True
print(json.dumps({"model": model, "text": text, "verdict": verdict, "stream_text": stream_text, "stream_verdict": stream_verdict, "refused": refused, "defaults_ok": defaults_ok, "include_usage": include_usage, "applied": applied}))
