"""The official OpenAI Python SDK's legacy completions API (`client.completions.create`),
unchanged, pointed at `vouch proxy`: a raw-text prompt answered plain, streamed (with and
without stream_options.include_usage), with the default token budget and with n sampled
choices, each carrying the proxy's verdict; the parameters the server does not apply
refused with OpenAI's 400 (naming them); and a chat request, which a model without a chat
template refuses. Prints one JSON line.
Usage: python3 openai_completions_check.py BASE_URL   (e.g. http://127.0.0.1:PORT/v1)"""
import json
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="not-needed")
model = client.models.list().data[0].id
PROMPT = "The capital of France is"


def verified(obj):
    return ((obj.model_extra or {}).get("vouch_verdict") or {}).get("verified")


r = client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0)
plain = {
    "text": r.choices[0].text,
    "finish": r.choices[0].finish_reason,
    "verified": verified(r),
    "completion_tokens": r.usage.completion_tokens,
    "object": r.object,
}


def stream(**kw):
    text, pieces, finish, verdict, usage_chunks = "", 0, None, None, []
    for chunk in client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0, stream=True, **kw):
        if chunk.choices:
            if chunk.choices[0].text:
                text += chunk.choices[0].text
                pieces += 1
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        if verified(chunk) is not None:
            verdict = verified(chunk)
        if kw and chunk.usage is not None:
            usage_chunks.append([len(chunk.choices), chunk.usage.completion_tokens, verified(chunk)])
    return {"text": text, "pieces": pieces, "finish": finish, "verified": verdict, "usage_chunks": usage_chunks}


streamed = stream()
include_usage = stream(stream_options={"include_usage": True})

d = client.completions.create(model=model, prompt=PROMPT, temperature=0)
tokens = d.usage.completion_tokens
default_budget = [tokens <= 16, d.choices[0].finish_reason == "stop" or tokens == 16, tokens]

n = client.completions.create(model=model, prompt=PROMPT, max_tokens=6, temperature=0.9, seed=5, n=2)
n_check = [
    [c.index for c in n.choices],
    sum(1 for c in n.choices if (c.model_extra or {}).get("vouch_receipt")),
    verified(n),
]

refused = {}
for param, value in [("echo", True), ("logprobs", 2), ("suffix", "."), ("best_of", 2), ("prompt", [1, 2, 3])]:
    try:
        kw = {"model": model, "prompt": PROMPT, "max_tokens": 4}
        kw[param] = value
        client.completions.create(**kw)
        refused[param] = "answered"
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        refused[param] = [e.status_code, body.get("code"), body.get("param")]

try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    chat = "answered"
except openai.BadRequestError as e:
    body = e.body if isinstance(e.body, dict) else {}
    chat = [e.status_code, body.get("code"), body.get("param")]

print(json.dumps({
    "plain": plain,
    "stream": streamed,
    "include_usage": include_usage,
    "default_budget": default_budget,
    "n": n_check,
    "refused": refused,
    "chat": chat,
}))
