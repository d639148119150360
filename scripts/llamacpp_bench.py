"""llama.cpp reference run for scripts/bench-model.sh (not part of the enclave).

Runs the same ChatML prompt as `vouch-enclave generate` through llama-cpp-python, greedy,
and prints one JSON object with counts, timings and text. Usage:
    llamacpp_bench.py MODEL PROMPT MAX_TOKENS THREADS
"""
import json
import sys
import time

from llama_cpp import Llama

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def main() -> None:
    model, question, max_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    started = time.perf_counter()
    llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)
    load_ms = (time.perf_counter() - started) * 1e3
    prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
              f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    out = []
    eos = llm.token_eos()
    t0 = time.perf_counter()
    t_first = None
    for tok in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        if t_first is None:
            t_first = time.perf_counter()
        if tok == eos or len(out) >= max_tokens:
            break
        out.append(tok)
    t_end = time.perf_counter()
    prefill_s = (t_first or t_end) - t0
    decode_s = t_end - (t_first or t_end)
    print(json.dumps({
        "prompt_tokens": len(ids),
        "completion_tokens": len(out),
        "prompt_tokens_per_s": len(ids) / prefill_s if prefill_s > 0 else 0.0,
        "completion_tokens_per_s": (len(out) - 1) / decode_s if decode_s > 0 and len(out) > 1 else 0.0,
        "load_ms": load_ms,
        "text": llm.detokenize(out).decode("utf-8", "replace"),
    }))


if __name__ == "__main__":
    main()
