"""The official OpenAI Python SDK, unchanged, pointed at `vouch proxy`: a chat completion
and a streamed completion, each carrying the proxy's verification verdict; the decoding
controls applied, with their effect observed (stop strings, penalties, logit_bias,
logprobs, structured output, tool calls), plain and streamed, and n choices each verified; and every parameter the server does not apply refused with OpenAI's 400
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


def logprobs_of(stream):
    """Log-probabilities of a greedy answer, checked for consistency: one entry per
    completion token, their bytes spelling the text, 3 alternatives each, most likely first,
    the chosen (greedy) token the most likely."""
    out = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of Germany?"}],
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )
    if stream:
        text, content, verified, tokens = "", [], None, None
        for chunk in out:
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
                content += chunk.choices[0].logprobs.content
            v = (chunk.model_extra or {}).get("vouch_verdict")
            if v is not None:
                verified = v.get("verified")
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    else:
        text, content = out.choices[0].message.content, out.choices[0].logprobs.content
        verified = ((out.model_extra or {}).get("vouch_verdict") or {}).get("verified")
        tokens = out.usage.completion_tokens
    spelled = b"".join(bytes(e.bytes) for e in content).decode("utf-8", "replace")
    ordered = all(
        len(e.top_logprobs) == 3
        and e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
        and e.logprob == e.top_logprobs[0].logprob
        and e.logprob <= 0
        for e in content
    )
    return {"entries": len(content), "tokens": tokens, "spells": spelled == text, "ordered": ordered, "verified": verified}


def choices_of(temperature):
    """n = 3: three choices, each with its own receipt (the proxy verifies them all)."""
    out = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Write one word."}],
        max_tokens=8,
        temperature=temperature,
        seed=7,
        n=3,
    )
    verified = ((out.model_extra or {}).get("vouch_verdict") or {}).get("verified")
    return {
        "texts": [c.message.content for c in out.choices],
        "indexes": [c.index for c in out.choices],
        "receipts": len({(c.model_extra or {}).get("vouch_receipt") for c in out.choices}),
        "verified": verified,
    }


CAPITAL = {
    "type": "object",
    "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
    "required": ["country", "capital"],
    "additionalProperties": False,
}


def structured(stream, response_format):
    """A constrained answer: (parsed JSON or the text if it does not parse, finish, verified)."""
    text, finish, verified = ask(
        stream, 64, "What is the capital of Germany? Answer in JSON.", response_format=response_format
    )
    try:
        return json.loads(text), finish, verified
    except ValueError:
        return text, finish, verified


WEATHER = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}]


def tool_call(stream):
    """tool_choice required, one call: ([name, arguments parsed, id ok], finish, verified)."""
    out = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        max_tokens=64,
        temperature=0,
        tools=WEATHER,
        tool_choice="required",
        parallel_tool_calls=False,
        stream=stream,
    )
    if not stream:
        v = (out.model_extra or {}).get("vouch_verdict") or {}
        calls = out.choices[0].message.tool_calls or []
        return [[c.function.name, json.loads(c.function.arguments), c.id.startswith("call_")] for c in calls], out.choices[0].finish_reason, v.get("verified")
    calls, finish, verified = [], None, None
    for chunk in out:
        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.tool_calls:
            for c in chunk.choices[0].delta.tool_calls:
                calls.append([c.function.name, json.loads(c.function.arguments), c.id.startswith("call_")])
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        v = (chunk.model_extra or {}).get("vouch_verdict")
        if v is not None:
            verified = v.get("verified")
    return calls, finish, verified


def after_tool_result():
    """The call and its result sent back: a text answer, verified."""
    first = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        max_tokens=64,
        temperature=0,
        tools=WEATHER,
        tool_choice="required",
        parallel_tool_calls=False,
    )
    if not first.choices[0].message.tool_calls:
        raise SystemExit(f"no tool call: {first.model_dump_json()}")
    call = first.choices[0].message.tool_calls[0]
    out = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "21 degrees and sunny"},
        ],
        max_tokens=24,
        temperature=0,
        tools=WEATHER,
    )
    v = (out.model_extra or {}).get("vouch_verdict") or {}
    return out.choices[0].message.content, out.choices[0].finish_reason, v.get("verified")


applied = {"n/greedy": choices_of(0), "n/sampled": choices_of(1.0)}
applied["tools/plain"] = tool_call(False)
applied["tools/stream"] = tool_call(True)
applied["tools/result"] = after_tool_result()


def responses_api():
    """POST /v1/responses through the proxy: text plain and streamed (its event types),
    a tool call, structured output; each verified (the proxy's verdict on the response)."""
    out = {}
    r = client.responses.create(model=model, input="What is the capital of Germany?", max_output_tokens=16, temperature=0)
    out["plain"] = [r.output_text, r.status, ((r.model_extra or {}).get("vouch_verdict") or {}).get("verified")]
    text, kinds, final = "", [], None
    for ev in client.responses.create(
        model=model, input="What is the capital of Germany?", max_output_tokens=16, temperature=0, stream=True
    ):
        kinds.append(ev.type)
        if ev.type == "response.output_text.delta":
            text += ev.delta
        if ev.type == "response.completed":
            final = ev.response
    verified = ((final.model_extra or {}).get("vouch_verdict") or {}).get("verified") if final else None
    out["stream"] = [text, final.output_text if final else None, verified, sorted(set(kinds))]
    tools = [{"type": "function", "name": w["function"]["name"], "description": w["function"]["description"],
              "parameters": w["function"]["parameters"]} for w in WEATHER]
    r = client.responses.create(
        model=model, input="What is the weather in Paris?", max_output_tokens=64, temperature=0,
        tools=tools, tool_choice="required", parallel_tool_calls=False,
    )
    calls = [[o.name, json.loads(o.arguments)] for o in r.output if o.type == "function_call"]
    out["tools"] = [calls, ((r.model_extra or {}).get("vouch_verdict") or {}).get("verified")]
    r = client.responses.create(
        model=model, input="What is the capital of Germany? Answer in JSON.", max_output_tokens=64, temperature=0,
        text={"format": {"type": "json_schema", "name": "capital", "schema": CAPITAL, "strict": True}},
    )
    out["structured"] = [json.loads(r.output_text), ((r.model_extra or {}).get("vouch_verdict") or {}).get("verified")]
    try:
        client.responses.create(model=model, input="hi", previous_response_id="resp_x")
        out["refused"] = "ANSWERED"
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        out["refused"] = [e.status_code, body.get("code"), body.get("param")]
    return out


applied["responses"] = responses_api()
schema_format = {"type": "json_schema", "json_schema": {"name": "capital", "schema": CAPITAL, "strict": True}}
for stream in (False, True):
    mode = "stream" if stream else "plain"
    applied[f"json_schema/{mode}"] = structured(stream, schema_format)
    applied[f"json_object/{mode}"] = structured(stream, {"type": "json_object"})
# A schema the grammar compiler refuses: 400 invalid_value naming response_format.
try:
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}},
    )
    applied["json_schema/bad"] = "ANSWERED"
except openai.BadRequestError as e:
    body = e.body if isinstance(e.body, dict) else {}
    applied["json_schema/bad"] = [e.status_code, body.get("code"), body.get("param")]
for stream in (False, True):
    mode = "stream" if stream else "plain"
    applied[f"stop/{mode}"] = ask(stream, stop=["Berlin"])
    # Penalties act on repeated tokens: an answer full of commas.
    count = "List the numbers from 1 to 20, separated by commas."
    applied[f"penalties/{mode}"] = ask(stream, 32, count, presence_penalty=1.5, frequency_penalty=1.5)
    applied[f"no_penalties/{mode}"] = ask(stream, 32, count)
    # +100 on one token id: every token of the answer is that one.
    applied[f"logit_bias/{mode}"] = ask(stream, max_tokens=4, logit_bias={"28": 100})
    applied[f"logprobs/{mode}"] = logprobs_of(stream)
    # max_completion_tokens (the newer name of max_tokens): the answer stops at 3 tokens.
    applied[f"max_completion_tokens/{mode}"] = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Write a long story."}],
        max_completion_tokens=3,
        temperature=0,
        **({"stream": True, "stream_options": {"include_usage": True}} if stream else {}),
    )
    if stream:
        chunks = list(applied[f"max_completion_tokens/{mode}"])
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = [c.usage.completion_tokens for c in chunks if c.usage is not None]
        applied[f"max_completion_tokens/{mode}"] = [finish[-1] if finish else None, usage[-1] if usage else None]
    else:
        r = applied[f"max_completion_tokens/{mode}"]
        applied[f"max_completion_tokens/{mode}"] = [r.choices[0].finish_reason, r.usage.completion_tokens]



# Parameters not applied are refused, never silently ignored.
refused = {}
unsupported = {
    # The legacy function-calling fields and output modalities this server does not serve.
    "functions": {"extra_body": {"functions": [{"name": "f", "parameters": {"type": "object"}}]}},
    "audio": {"audio": {"voice": "alloy", "format": "wav"}},
    "prediction": {"prediction": {"type": "content", "content": "x"}},
}
cases = [(name, args, stream) for name, args in unsupported.items() for stream in (False, True)]
cases.append(("n", {"n": 2}, True))  # n > 1 is served without streaming only
for name, extra_args, stream in cases:
    if True:
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
