#!/usr/bin/env python3
"""Make tiny random GGUF models for Vouch's llama.cpp-parity tests.

Writes F32 GGUF files with gguf-py (numpy seed fixed), then quantizes them with
llama.cpp itself (llama_cpp.llama_model_quantize from llama-cpp-python), and
deletes the F32 files unless --keep-f32.

Outputs (default dir enclave/testdata/tiny/):
  llama.Q4_K_M.gguf   arch llama, 2 layers, rope_freqs.weight (Llama-3 style), untied output.weight
  qwen2.Q4_K_M.gguf   arch qwen2, 2 layers, q/k/v biases, tied output
  qwen3.Q4_K_M.gguf   arch qwen3, 2 layers, attn_q_norm/attn_k_norm, key_length 64, tied output
  gemma3.Q4_K_M.gguf  arch gemma3, 6 layers (layers 0-4 sliding window 8, layer 5 global),
                      post_attention_norm/post_ffw_norm, q/k norms, tied output
  llama.mixed.gguf    the same llama model with every weight matrix in a different ggml type
                      (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K: the types the
                      native runtime computes with). Each tensor's bytes
                      are copied unchanged from a llama.cpp "pure" quantization of the F32 model to that
                      type, so every block was produced by llama.cpp's own quantizer. This replaces one
                      file per type, which would not fit the test-data size budget.

Usage: /work/llama-venv/bin/python bench/reference/make_tiny_models.py [--out-dir DIR] [--keep-f32]
Not run by CI (needs llama-cpp-python built from source; see regenerate.sh).
"""
import argparse
import ctypes
import os
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGUFWriter, GGUFReader, GGMLQuantizationType as QT

SEED = 20240607
N_VOCAB = 512
N_EMBD = 256
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 64
N_CTX = 256

# ffn length per family: 512 only for llama (its ffn_down rows then span two 256-wide K-quant super-blocks);
# 256 elsewhere, since 512 everywhere pushes the committed test data past its 6 MB budget.
FAMILIES = {
    "llama": dict(arch="llama", n_layer=2, n_ff=512, tied=False, rope_base=500000.0, eps=1e-5,
                  rope_freqs=True, space_prefix=True),
    "qwen2": dict(arch="qwen2", n_layer=2, n_ff=256, tied=True, rope_base=1000000.0, eps=1e-6,
                  qkv_bias=True, space_prefix=True),
    "qwen3": dict(arch="qwen3", n_layer=2, n_ff=256, tied=True, rope_base=1000000.0, eps=1e-6,
                  qk_norm=True, space_prefix=True),
    "gemma3": dict(arch="gemma3", n_layer=6, n_ff=256, tied=True, rope_base=1000000.0, eps=1e-6,
                   qk_norm=True, sandwich=True, swa=8, space_prefix=False),
}

CORPUS = """
The keeper climbed the stairs of the old tower every evening before the sun went down.
He cleaned the glass, trimmed the wick, and wound the clockwork that turned the lens.
Ships passed the rocks at night and the sailors watched for the light on the cliff.
In winter the storms came from the north and the waves broke high over the stones.
She wrote in the log book the weather, the wind, the ships that passed and the hours of the lamp.
A small boat brought bread, oil and letters from the village once a week when the sea was calm.
Children in the town told stories about the tower and the people who lived inside it.
Today most lights are automatic, but some of the old towers are open to visitors in summer.
Numbers like 1, 2, 3, 10, 42 and 2024 appear in the records, with names such as Anna, Tom and Mary.
What is the time? It is late! The night is long; the light keeps turning: on, off, on again.
"""

TYPE_NORMAL, TYPE_UNKNOWN, TYPE_CONTROL, TYPE_BYTE = 1, 2, 3, 6


def build_vocab():
    """SPM vocab: <unk>, <s>, </s>, 256 byte tokens, then base chars and BPE-style merges.

    Every multi-char piece is the concatenation of two earlier pieces, so llama.cpp's
    SPM bigram merging can reach it. Scores: later merges get lower scores.
    """
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL] + [TYPE_BYTE] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    words = []
    for line in CORPUS.strip().split("\n"):
        for w in line.split(" "):
            if w:
                words.append("\u2581" + w)
    base = sorted(set("".join(words)))
    # base characters (letters, digits, punctuation, the \u2581 marker) as pieces; scores low
    for i, ch in enumerate(base):
        tokens.append(ch)
        types.append(TYPE_NORMAL)
        scores.append(-1000.0 - i)
    seqs = [list(w) for w in words]
    rank = 0
    while len(tokens) < N_VOCAB:
        counts = {}
        for s in seqs:
            for a, b in zip(s, s[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        cands = [(c, p) for p, c in counts.items() if p[0] + p[1] not in tokens]
        if not cands:
            break
        cands.sort(key=lambda cp: (-cp[0], cp[1]))
        (a, b) = cands[0][1]
        piece = a + b
        tokens.append(piece)
        types.append(TYPE_NORMAL)
        scores.append(-float(rank))
        rank += 1
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if s[i] == a and s[i + 1] == b:
                    s[i:i + 2] = [piece]
                i += 1
    # pad with whole words if merges ran out (not expected)
    k = 0
    while len(tokens) < N_VOCAB:
        t = f"\u2581pad{k}"
        k += 1
        if t not in tokens:
            tokens.append(t)
            types.append(TYPE_NORMAL)
            scores.append(-10000.0 - k)
    assert len(tokens) == N_VOCAB and len(set(tokens)) == N_VOCAB
    return tokens, scores, types


def rng_for(name):
    return np.random.default_rng([SEED, sum(ord(c) * 31 ** i for i, c in enumerate(name)) % (2 ** 32)])


def llama3_rope_freqs(base, dim, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, orig_ctx=8192):
    """Same formula as convert_hf_to_gguf (LlamaModel.generate_extra_tensors, rope_type llama3)."""
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    low_wl = orig_ctx / low_freq_factor
    high_wl = orig_ctx / high_freq_factor
    out = []
    for f in freqs:
        wl = 2 * np.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (orig_ctx / wl - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def make_tensors(name, cfg):
    r = rng_for(name)
    f32 = np.float32

    def mat(out_dim, in_dim, gain=1.0):
        return (r.standard_normal((out_dim, in_dim)) * (gain / np.sqrt(in_dim))).astype(f32)

    def norm(n):
        return (1.0 + 0.1 * r.standard_normal(n)).astype(f32)

    t = {}
    n_ff = cfg["n_ff"]
    if cfg["tied"]:
        # tied embeddings double as the output matrix: scale for logits of std ~2
        emb_std = 2.0 / np.sqrt(N_EMBD)
        if cfg["arch"] == "gemma3":
            emb_std = 2.0 / np.sqrt(N_EMBD)  # gemma multiplies by sqrt(n_embd) on input
        t["token_embd.weight"] = (r.standard_normal((N_VOCAB, N_EMBD)) * emb_std).astype(f32)
    else:
        t["token_embd.weight"] = r.standard_normal((N_VOCAB, N_EMBD)).astype(f32)
        t["output.weight"] = mat(N_VOCAB, N_EMBD, 2.0)
    t["output_norm.weight"] = norm(N_EMBD)
    if cfg.get("rope_freqs"):
        t["rope_freqs.weight"] = llama3_rope_freqs(cfg["rope_base"], HEAD_DIM)
    for il in range(cfg["n_layer"]):
        p = f"blk.{il}."
        t[p + "attn_norm.weight"] = norm(N_EMBD)
        t[p + "attn_q.weight"] = mat(N_HEAD * HEAD_DIM, N_EMBD)
        t[p + "attn_k.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD)
        t[p + "attn_v.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD)
        t[p + "attn_output.weight"] = mat(N_EMBD, N_HEAD * HEAD_DIM)
        if cfg.get("qkv_bias"):
            t[p + "attn_q.bias"] = (0.2 * r.standard_normal(N_HEAD * HEAD_DIM)).astype(f32)
            t[p + "attn_k.bias"] = (0.2 * r.standard_normal(N_HEAD_KV * HEAD_DIM)).astype(f32)
            t[p + "attn_v.bias"] = (0.2 * r.standard_normal(N_HEAD_KV * HEAD_DIM)).astype(f32)
        if cfg.get("qk_norm"):
            t[p + "attn_q_norm.weight"] = norm(HEAD_DIM)
            t[p + "attn_k_norm.weight"] = norm(HEAD_DIM)
        if cfg.get("sandwich"):
            t[p + "post_attention_norm.weight"] = norm(N_EMBD)
            t[p + "post_ffw_norm.weight"] = norm(N_EMBD)
        t[p + "ffn_norm.weight"] = norm(N_EMBD)
        t[p + "ffn_gate.weight"] = mat(n_ff, N_EMBD)
        t[p + "ffn_up.weight"] = mat(n_ff, N_EMBD)
        t[p + "ffn_down.weight"] = mat(N_EMBD, n_ff)
    return t


def write_gguf(path, name, cfg, tensors, raw=None, file_type=0):
    """raw: optional {tensor_name: (uint8 bytes array, GGMLQuantizationType)} overriding tensors."""
    arch = cfg["arch"]
    w = GGUFWriter(path, arch)
    w.add_name(f"vouch-tiny-{name}")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(cfg["n_layer"])
    w.add_feed_forward_length(cfg["n_ff"])
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(cfg["eps"])
    w.add_rope_freq_base(cfg["rope_base"])
    w.add_rope_dimension_count(HEAD_DIM)
    if cfg.get("swa"):
        w.add_sliding_window(cfg["swa"])  # pattern key absent -> llama.cpp default 6; freq_base_swa absent -> 10000
    if file_type is not None:
        w.add_file_type(file_type)
    tokens, scores, types = build_vocab()
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(cfg["space_prefix"])
    for k, v in tensors.items():
        if raw and k in raw:
            data, qt = raw[k]
            w.add_tensor(k, data, raw_dtype=qt)
        else:
            w.add_tensor(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(inp, out, ftype, pure=False):
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    params.pure = pure
    rc = llama_cpp.llama_model_quantize(inp.encode(), out.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({inp} -> {out}, ftype {ftype}) failed: {rc}")


# which ggml type each llama tensor gets in llama.mixed.gguf, and the llama.cpp ftype (pure) that produces it
MIXED_TYPES = {
    "token_embd.weight": "Q8_0",
    "output.weight": "Q6_K",
    "blk.0.attn_q.weight": "Q4_0",
    "blk.0.attn_k.weight": "Q4_1",
    "blk.0.attn_v.weight": "Q5_0",
    "blk.0.attn_output.weight": "Q5_1",
    "blk.0.ffn_gate.weight": "Q8_0",
    "blk.0.ffn_up.weight": "Q6_K",
    "blk.0.ffn_down.weight": "Q5_K",
    "blk.1.attn_q.weight": "Q4_K",
    "blk.1.attn_k.weight": "Q8_0",
    "blk.1.attn_v.weight": "Q4_0",
    "blk.1.attn_output.weight": "Q5_K",
    "blk.1.ffn_gate.weight": "Q6_K",
    "blk.1.ffn_up.weight": "Q5_K",
    "blk.1.ffn_down.weight": "Q4_K",
}
PURE_FTYPE = {  # ggml type -> llama_ftype name whose pure quantization yields it
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0", "Q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q2_K": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "Q3_K": "LLAMA_FTYPE_MOSTLY_Q3_K_S", "Q4_K": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "Q5_K": "LLAMA_FTYPE_MOSTLY_Q5_K_S", "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "F16": "LLAMA_FTYPE_MOSTLY_F16", "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
}


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out-dir", default=os.path.join(here, "..", "..", "enclave", "testdata", "tiny"))
    ap.add_argument("--keep-f32", action="store_true")
    ap.add_argument("--no-quantize", action="store_true")
    args = ap.parse_args()
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    import llama_cpp

    tmp = tempfile.mkdtemp(prefix="vouch-tiny-")
    for name, cfg in FAMILIES.items():
        tensors = make_tensors(name, cfg)
        f32 = os.path.join(args.out_dir if args.keep_f32 else tmp, f"{name}.F32.gguf")
        write_gguf(f32, name, cfg, tensors)
        print("wrote", f32, os.path.getsize(f32))
        if args.no_quantize:
            continue
        q = os.path.join(out, f"{name}.Q4_K_M.gguf")
        quantize(f32, q, llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)
        print("wrote", q, os.path.getsize(q))
        if name == "llama":
            raw = {}
            for qtype in sorted(set(MIXED_TYPES.values())):
                pure = os.path.join(tmp, f"llama.pure.{qtype}.gguf")
                quantize(f32, pure, getattr(llama_cpp, PURE_FTYPE[qtype]), pure=True)
                rd = GGUFReader(pure)
                for ti in rd.tensors:
                    if MIXED_TYPES.get(ti.name) == qtype:
                        assert ti.tensor_type == QT[qtype], (ti.name, ti.tensor_type, qtype)
                        data = np.ascontiguousarray(np.array(ti.data)).view(np.uint8)
                        raw[ti.name] = (data.reshape(data.shape[0], -1), QT[qtype])
                del rd
                os.remove(pure)
            assert set(raw) == set(MIXED_TYPES), set(MIXED_TYPES) - set(raw)
            mixed = os.path.join(out, "llama.mixed.gguf")
            write_gguf(mixed, name, cfg, tensors, raw=raw, file_type=None)
            print("wrote", mixed, os.path.getsize(mixed))
        if not args.keep_f32:
            os.remove(f32)
    try:
        os.rmdir(tmp)
    except OSError:
        pass


if __name__ == "__main__":
    main()
