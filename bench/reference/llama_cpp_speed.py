#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) CPU speed for the bench: prefill and greedy decode.

For each model and n_threads in (1, 2):
  prefill: one llama_decode of 512 tokens of bench/reference/text.txt on an empty KV cache
           (n_batch = n_ubatch = 512, logits for the last token only) -> tokens/s (best of --reps)
  decode:  after a 64-token prompt, 128 greedy steps of one token each (argmax of the
           last logits, fed back) -> tokens/s (best of --reps)
Writes JSON (default /work/ref-real/timings.json). The load average is recorded because
other work on the machine skews the numbers.

Usage: llama_cpp_speed.py [--out FILE] [--reps N] [--threads 1,2] MODEL.gguf...
Each measurement also prints a `BENCH_JSON {...}` line (bench/models.sh reads them).
Not run by CI; see regenerate.sh.
"""
import argparse
import json
import os
import platform
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
N_PREFILL = 512
N_PROMPT = 64
N_DECODE = 128


def text_ids(llm, n):
    text = open(os.path.join(HERE, "text.txt"), encoding="utf-8").read()
    ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def last_logits(llm):
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


def bench(path, n_threads, reps):
    llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=n_threads,
                n_threads_batch=n_threads, logits_all=False, verbose=False)
    ids = text_ids(llm, N_PREFILL)
    # warm-up
    llm.reset()
    llm.eval(ids[:32])
    prefill = []
    for _ in range(reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        prefill.append(time.perf_counter() - t0)
    decode = []
    generated = None
    for _ in range(reps):
        llm.reset()
        llm.eval(ids[:N_PROMPT])
        tok = int(np.argmax(last_logits(llm)))
        out = [tok]
        t0 = time.perf_counter()
        for _ in range(N_DECODE):
            llm.eval([tok])
            tok = int(np.argmax(last_logits(llm)))
            out.append(tok)
        decode.append(time.perf_counter() - t0)
        generated = out
    del llm
    return {
        "n_threads": n_threads,
        "prefill_tokens": N_PREFILL,
        "prefill_seconds": [round(x, 4) for x in prefill],
        "prefill_tok_per_s": round(N_PREFILL / min(prefill), 2),
        "decode_prompt_tokens": N_PROMPT,
        "decode_tokens": N_DECODE,
        "decode_seconds": [round(x, 4) for x in decode],
        "decode_tok_per_s": round(N_DECODE / min(decode), 2),
        "greedy_tokens": generated,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", default="/work/ref-real/timings.json")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated n_threads values")
    args = ap.parse_args()
    res = {
        "generator": "bench/reference/llama_cpp_speed.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "machine": platform.machine(),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "loadavg_before": os.getloadavg(),
        "settings": {"n_ctx": 1024, "n_batch": 512, "flash_attn": False, "kv_cache_type": "f16"},
        "models": {},
    }
    for path in args.models:
        stem = os.path.basename(path)[: -len(".gguf")]
        res["models"][stem] = []
        for nt in (int(t) for t in args.threads.split(",")):
            t0 = time.perf_counter()
            r = bench(path, nt, args.reps)
            r["loadavg_after"] = os.getloadavg()
            print(stem, nt, "prefill", r["prefill_tok_per_s"], "decode", r["decode_tok_per_s"], flush=True)
            print("BENCH_JSON " + json.dumps({"engine": "llama.cpp", "model": os.path.basename(path),
                                               "threads": nt, "prefill_tok_s": r["prefill_tok_per_s"],
                                               "decode_tok_s": r["decode_tok_per_s"]}), flush=True)
            res["models"][stem].append(r)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
