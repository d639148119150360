#!/usr/bin/env bash
# Regenerate Vouch's llama.cpp reference data. CI does NOT run this: it needs
# llama-cpp-python compiled from source (~15 min on 2 cores) and the real model files.
#
# What it makes:
#   enclave/testdata/tiny/*.gguf            tiny random models (make_tiny_models.py), quantized by llama.cpp:
#                                           llama/qwen2/qwen3/gemma3 .Q4_K_M.gguf and llama.mixed.gguf
#                                           (one ggml type per tensor: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K)
#   enclave/testdata/tiny/*.logits.f32      llama.cpp logits for a fixed 64-token sequence (reference_logits.py)
#   enclave/testdata/tiny/reference.json    token ids, sha256s, version, SPM tokenizations
#   enclave/testdata/reference/<stem>.json  teacher-forced top-1/top-16 over 600 tokens of text.txt
#                                           for the real models (reference_real.py)
#   $REF_REAL/SmolLM2-135M-Instruct.Q4_K_M.gguf   SmolLM2 requantized Q4_1 -> Q4_K_M by llama.cpp (not in the repo)
#   $REF_REAL/<stem>.logits.f32             full [600][n_vocab] logits (not in the repo)
#   $REF_REAL/timings.json                  llama.cpp prefill/decode tokens/s, 1 and 2 threads (llama_cpp_speed.py)
#
# Inputs: models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh) and the Gemma 3 270M Q4_K_M
# file (GEMMA, sha256 a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818).
#
# Usage: bench/reference/regenerate.sh            (env: VENV, REF_REAL, GEMMA, SKIP_REAL=1, SKIP_SPEED=1)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-/work/llama-venv}"
REF_REAL="${REF_REAL:-/work/ref-real}"
GEMMA="${GEMMA:-/work/dl/gemma-3-270m-q4_k_m.gguf}"
SMOL="$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_CPP_PYTHON_VERSION=0.3.36
GGUF_VERSION=0.19.0

if ! "$VENV/bin/python" -c "import llama_cpp, gguf, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install numpy "gguf==$GGUF_VERSION"
    # Build llama.cpp from the sdist. Only llama-cpp-python is built from source: `--no-binary :all:`
    # would also compile cmake and ninja from source (no system cmake here).
    CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF" \
        "$VENV/bin/pip" install --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -v \
        > "${BUILD_LOG:-/tmp/llama-venv-build.log}" 2>&1
fi
PY="$VENV/bin/python"
cd "$ROOT"

# 3. tiny models (deterministic: fixed seed, llama.cpp quantizer)
rm -f enclave/testdata/tiny/*.gguf enclave/testdata/tiny/*.logits.f32
"$PY" bench/reference/make_tiny_models.py 2> /dev/null

# 4. tiny reference logits + tokenizer cases
"$PY" bench/reference/reference_logits.py 2> /dev/null

if [ "${SKIP_REAL:-0}" != 1 ]; then
    mkdir -p "$REF_REAL"
    # 5a. SmolLM2 Q4_1 -> Q4_K_M (requantize; n_embd 576 is not a multiple of 256, so most
    #     tensors fall back to Q5_0/Q8_0 — llama.cpp's own choice, recorded as is)
    "$PY" - "$SMOL" "$REF_REAL/SmolLM2-135M-Instruct.Q4_K_M.gguf" <<'EOF' 2> /dev/null
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
p.allow_requantize = True
p.nthread = 2
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
EOF
    sha256sum "$REF_REAL/SmolLM2-135M-Instruct.Q4_K_M.gguf"
    # 5b. teacher-forced references
    "$PY" bench/reference/reference_real.py --full-dir "$REF_REAL" \
        "$GEMMA" "$SMOL" "$REF_REAL/SmolLM2-135M-Instruct.Q4_K_M.gguf" 2> /dev/null
    # 5c. llama.cpp speed
    if [ "${SKIP_SPEED:-0}" != 1 ]; then
        "$PY" bench/reference/llama_cpp_speed.py --out "$REF_REAL/timings.json" \
            "$GEMMA" "$SMOL" "$REF_REAL/SmolLM2-135M-Instruct.Q4_K_M.gguf" 2> /dev/null
    fi
fi
du -sh enclave/testdata/tiny enclave/testdata/reference
