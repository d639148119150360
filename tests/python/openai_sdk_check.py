"""The official OpenAI Python SDK, unchanged, pointed at `vouch proxy`: a chat completion
and a streamed completion, each carrying the proxy's verification verdict.
Usage: python3 openai_sdk_check.py BASE_URL   (e.g. http://127.0.0.1:PORT/v1)"""
import json
import sys

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
print(json.dumps({"model": model, "text": text, "verdict": verdict, "stream_text": stream_text, "stream_verdict": stream_verdict}))
