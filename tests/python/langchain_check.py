"""LangChain's ChatOpenAI (PyPI langchain-openai), unchanged, pointed at `vouch proxy`:
invoke, stream, with_structured_output(schema) and bind_tools producing a tool call. The
proxy forwards only verified answers (anything else is a 502), so each answer here was
verified.
Usage: python3 langchain_check.py BASE_URL   (e.g. http://127.0.0.1:PORT/v1)"""
import json
import sys

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

base = sys.argv[1]
llm = ChatOpenAI(base_url=base, api_key="not-needed", model="SmolLM2-135M-Instruct", temperature=0, max_tokens=32)


out = {}
m = llm.invoke("What is the capital of Germany?")
out["invoke"] = {"text": m.content, "finish": m.response_metadata.get("finish_reason")}

chunks = list(llm.stream("What is the capital of Germany?"))
out["stream"] = {"text": "".join(c.content for c in chunks if isinstance(c.content, str)), "chunks": len(chunks)}


class Capital(BaseModel):
    """A country's capital."""

    country: str = Field(description="the country")
    capital: str = Field(description="its capital city")


structured = llm.with_structured_output(Capital, include_raw=True).invoke(
    "What is the capital of Germany? Answer in JSON."
)
parsed = structured["parsed"]
out["structured"] = {
    "parsed": parsed.model_dump() if parsed is not None else None,
    "error": str(structured.get("parsing_error")) if structured.get("parsing_error") else None,
}


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return "21 degrees and sunny"


with_tools = ChatOpenAI(
    base_url=base, api_key="not-needed", model="SmolLM2-135M-Instruct", temperature=0, max_tokens=64
).bind_tools([get_weather], tool_choice="get_weather", parallel_tool_calls=False)
called = with_tools.invoke("What is the weather in Paris?")
out["tools"] = {"calls": [{"name": c["name"], "args": c["args"]} for c in called.tool_calls]}
print(json.dumps(out))
