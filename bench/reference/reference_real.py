#!/usr/bin/env python3
"""Teacher-forced llama.cpp reference for real models on bench/reference/text.txt.

For each model: tokenize text.txt with llama.cpp (add_bos=True, special=False; the
model's own add_bos_token setting decides whether a BOS is really added),
truncate to 600 tokens, evaluate them (n_ctx=1024, n_batch=512, n_threads=1,
logits_all) and write enclave/testdata/reference/<stem>.json with
  model_sha256, llama_cpp_python_version, tokens, top1, top16, top16_logits
(top16 ordered by logit descending, ties by lower id; logits rounded to 4 decimals),
and the full [600][n_vocab] logits as little-endian f32 to <full-dir>/<stem>.logits.f32.

Usage: reference_real.py [--full-dir /work/ref-real] MODEL.gguf...
Not run by CI; see regenerate.sh.
"""
import argparse
import hashlib
import json
import os

import numpy as np
import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.abspath(os.path.join(HERE, "..", "..", "enclave", "testdata", "reference"))
N_TOKENS = 600


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--full-dir", default="/work/ref-real")
    ap.add_argument("--text", default=os.path.join(HERE, "text.txt"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(args.full_dir, exist_ok=True)
    text = open(args.text, encoding="utf-8").read()
    for path in args.models:
        stem = os.path.basename(path)[: -len(".gguf")]
        llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=1, n_threads_batch=1,
                    logits_all=True, verbose=False)
        all_ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        assert len(all_ids) >= N_TOKENS, (path, len(all_ids))
        ids = all_ids[:N_TOKENS]
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[:N_TOKENS], dtype="<f4")
        assert np.isfinite(logits).all()
        full = os.path.join(args.full_dir, f"{stem}.logits.f32")
        logits.tofile(full)
        order = np.argsort(-logits, axis=1, kind="stable")[:, :16]
        top16_logits = np.take_along_axis(logits, order, axis=1)
        doc = {
            "model_file": os.path.basename(path),
            "model_sha256": sha256(path),
            "llama_cpp_python_version": llama_cpp.__version__,
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "settings": {"n_ctx": 1024, "n_batch": 512, "n_threads": 1, "logits_all": True,
                         "flash_attn": False, "kv_cache_type": "f16",
                         "tokenize": "add_bos=True, special=False", "truncate": N_TOKENS},
            "text_file": "bench/reference/text.txt",
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "n_text_tokens": len(all_ids),
            "n_vocab": llm.n_vocab(),
            "full_logits_sha256": sha256(full),
            "tokens": ids,
            "top1": logits.argmax(axis=1).tolist(),
            "top16": order.tolist(),
            "top16_logits": [[round(float(x), 4) for x in row] for row in top16_logits],
        }
        with open(os.path.join(OUT, f"{stem}.json"), "w") as fh:
            json.dump(doc, fh, separators=(",", ":"))
            fh.write("\n")
        agree = float(np.mean(np.array(doc["top1"][:-1]) == np.array(ids[1:])))
        print(stem, "tokens", len(all_ids), "top1==next token", round(agree, 3))
        del llm


if __name__ == "__main__":
    main()
