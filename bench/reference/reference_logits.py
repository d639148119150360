#!/usr/bin/env python3
"""Reference logits from llama.cpp (llama-cpp-python) for the tiny test models.

For every enclave/testdata/tiny/*.gguf: evaluate a fixed 64-token id sequence
(teacher forced, one llama_decode of 64 tokens, n_threads=1) and write all
64 x n_vocab logits as little-endian f32 to <name>.logits.f32 (row = position).
Also writes reference.json with the ids, file list, sha256s, llama-cpp-python
version and llama.cpp SentencePiece tokenizations of a few strings.

Not run by CI; see regenerate.sh.
"""
import hashlib
import json
import os
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.abspath(os.path.join(HERE, "..", "..", "enclave", "testdata", "tiny"))
N_TOKENS = 64
BOS = 1

TOKENIZE_STRINGS = [
    "Hello world",
    " leading space and  double  spaces",
    "line one\nline two\n\n\tTabbed end.",
    "héllo wörld ☃",
    "emoji 🙂👍 ok? 42!",
    "The keeper climbed the stairs of the old tower.",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def token_ids():
    rng = np.random.default_rng(1234)
    body = rng.integers(3, 512, size=N_TOKENS - 1 - 16).tolist()
    # repeat a 16-token span so attention has something to find (induction-style)
    return [BOS] + body + body[8:24]


def main():
    ids = token_ids()
    assert len(ids) == N_TOKENS and all(0 <= i < 512 for i in ids)
    models = sorted(f for f in os.listdir(TINY) if f.endswith(".gguf"))
    out = {
        "generator": "bench/reference/reference_logits.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "settings": {"n_ctx": 256, "n_threads": 1, "n_batch": 64, "logits_all": True,
                     "flash_attn": False, "kv_cache_type": "f16"},
        "token_ids": ids,
        "logits_layout": "little-endian f32, [n_tokens][n_vocab], row i = logits after token i",
        "models": {},
        "tokenization": {},
    }
    for f in models:
        path = os.path.join(TINY, f)
        stem = f[: -len(".gguf")]
        llm = Llama(model_path=path, n_ctx=256, n_threads=1, n_threads_batch=1, logits_all=True,
                    n_batch=64, verbose=False)
        n_vocab = llm.n_vocab()
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype="<f4")
        assert logits.shape == (len(ids), n_vocab)
        assert np.isfinite(logits).all()
        lf = f"{stem}.logits.f32"
        logits.tofile(os.path.join(TINY, lf))
        out["models"][stem] = {
            "gguf": f,
            "gguf_sha256": sha256(path),
            "gguf_bytes": os.path.getsize(path),
            "logits_file": lf,
            "logits_sha256": sha256(os.path.join(TINY, lf)),
            "n_vocab": n_vocab,
            "n_tokens": len(ids),
            "top1": logits.argmax(axis=1).tolist(),
            "logit_std": float(logits.std()),
        }
        if stem.startswith("gemma3") or stem == "llama.Q4_K_M":
            toks = {}
            for s in TOKENIZE_STRINGS:
                toks[s] = {
                    "add_bos_true": llm.tokenize(s.encode(), add_bos=True, special=False),
                    "add_bos_false": llm.tokenize(s.encode(), add_bos=False, special=False),
                }
            out["tokenization"][stem] = toks
        print(f, "top1[:8]", out["models"][stem]["top1"][:8], "std", out["models"][stem]["logit_std"])
        del llm
    with open(os.path.join(TINY, "reference.json"), "w") as fh:
        json.dump(out, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
