"""llama.cpp batched-decode reference for bench/run.sh --with-llamacpp (not part of the enclave).

Drives N sequences through one `llama_decode` per step with llama-cpp-python's low-level
`llama_batch` API (what llama.cpp's server does with --parallel N): every sequence gets the
same ChatML prompt as `vouch-enclave generate`, the prompts are prefilled together, then
each step feeds every sequence's greedy token. Prints one JSON object per batch size:
aggregate decode tokens/s over all sequences. Usage:
    llamacpp_batched.py MODEL THREADS TOKENS BATCH [BATCH ...]
"""
import ctypes
import json
import sys
import time

import llama_cpp
import numpy as np

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QUESTION = "Write a long, detailed essay about the ocean."


def main() -> None:
    model_path, threads, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sizes = [int(b) for b in sys.argv[4:]]
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), llama_cpp.llama_model_default_params())
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
              f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n").encode()
    buf = (llama_cpp.llama_token * 512)()
    n_prompt = llama_cpp.llama_tokenize(vocab, prompt, len(prompt), buf, 512, False, True)
    ids = list(buf[:n_prompt])
    for size in sizes:
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = size * (n_prompt + tokens + 8)
        cp.n_batch = max(512, size * n_prompt)
        cp.n_ubatch = cp.n_batch
        cp.n_seq_max = size
        cp.n_threads = threads
        cp.n_threads_batch = threads
        ctx = llama_cpp.llama_init_from_model(model, cp)
        batch = llama_cpp.llama_batch_init(cp.n_batch, 0, size)

        def fill(entries):
            batch.n_tokens = len(entries)
            for i, (tok, pos, seq, want) in enumerate(entries):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = 1 if want else 0

        def greedy(i):
            ptr = llama_cpp.llama_get_logits_ith(ctx, i)
            return int(np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (n_vocab,)).argmax())

        fill([(t, p, s, p == n_prompt - 1) for s in range(size) for p, t in enumerate(ids)])
        t0 = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed in prefill")
        prefill_s = time.perf_counter() - t0
        nxt = [greedy(s * n_prompt + n_prompt - 1) for s in range(size)]
        t1 = time.perf_counter()
        for step in range(tokens - 1):
            fill([(nxt[s], n_prompt + step, s, True) for s in range(size)])
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise SystemExit("llama_decode failed in decode")
            nxt = [greedy(s) for s in range(size)]
        decode_s = time.perf_counter() - t1
        print(json.dumps({
            "engine": "llama.cpp", "threads": threads, "batch": size, "prompt_tokens": n_prompt,
            "decode_steps": tokens - 1, "prefill_ms": prefill_s * 1e3,
            "aggregate_decode_tokens_per_s": size * (tokens - 1) / decode_s,
        }), flush=True)
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


if __name__ == "__main__":
    main()
