#!/usr/bin/env bash
# Benchmark `vouch-enclave generate` (release build) on the default model, optionally
# side by side with llama.cpp (llama-cpp-python) on the same file and thread count.
#
# Prints, per run: prompt tok/s, generated tok/s, load time and peak RSS (/usr/bin/time -v).
#
# Usage: scripts/bench-model.sh [--runs N] [--threads N] [--max-tokens N] [--prompt TEXT]
#                               [--runtimes "native candle-q8_0 candle"] [--with-llamacpp] [--no-build]
#   --runtimes       the vouch-enclave runtimes to run (default: "native candle-q8_0"); a
#                    runtime "native-KERNEL" (native-avx2, native-scalar) is the native one
#                    with VOUCH_KERNEL=KERNEL, for side-by-side figures of the SIMD levels.
#   --with-llamacpp  also run llama.cpp via llama-cpp-python==0.3.36, installed into
#                    $VOUCH_BENCH_VENV (default: ~/.cache/vouch/llamacpp-venv). The first
#                    install builds llama.cpp from source (~10 min on 2 cores). Not for CI.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="$REPO_ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf"
BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/vouch-enclave"
RUNS=3
THREADS="$(nproc)"
MAX_TOKENS=64
# A prompt with a long answer, so that decode speed is measured over all max_tokens.
PROMPT="Give me three tips for staying healthy."
RUNTIMES="native candle-q8_0"
WITH_LLAMACPP=0
BUILD=1
VENV="${VOUCH_BENCH_VENV:-$HOME/.cache/vouch/llamacpp-venv}"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --max-tokens) MAX_TOKENS="$2"; shift 2 ;;
        --prompt) PROMPT="$2"; shift 2 ;;
        --runtimes) RUNTIMES="$2"; shift 2 ;;
        --with-llamacpp) WITH_LLAMACPP=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "bench-model: unknown argument $1" >&2; exit 2 ;;
    esac
done

[[ -f "$MODEL" ]] || bash "$REPO_ROOT/scripts/fetch-model.sh"
[[ -x /usr/bin/time ]] || { echo "bench-model: /usr/bin/time is required (apt-get install time)" >&2; exit 2; }
if [[ $BUILD -eq 1 ]]; then
    (cd "$REPO_ROOT" && cargo build --release -p vouch-enclave --features candle --bin vouch-enclave)
fi
[[ -x "$BIN" ]] || { echo "bench-model: $BIN not built" >&2; exit 2; }

read -r -a FORMATS <<< "$RUNTIMES"

echo "model: $MODEL"
echo "load average: $(cut -d" " -f1-3 /proc/loadavg) (other processes skew the numbers)"
echo "threads: $THREADS  max_tokens: $MAX_TOKENS  runs: $RUNS  prompt: $PROMPT"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
printf '%-28s %4s %10s %10s %9s %9s %10s\n' engine run prompt_tok "prompt/s" gen_tok "gen/s" "load_ms"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

peak_rss() { awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); printf "%.0f MiB", $2/1024}' "$1"; }

run_vouch() {  # runtime run
    local runtime="$1" kernel=""
    case "$runtime" in native-*) kernel="${runtime#native-}"; runtime=native ;; esac
    VOUCH_KERNEL="$kernel" /usr/bin/time -v -o "$TMP/time" "$BIN" generate --model "$MODEL" --prompt "$PROMPT" \
        --max-tokens "$MAX_TOKENS" --threads "$THREADS" --runtime "$runtime" --json > "$TMP/out.json" 2> "$TMP/err"
    python3 - "$TMP/out.json" "vouch-$1" "$2" "$(peak_rss "$TMP/time")" <<'PY'
import json, sys
o = json.load(open(sys.argv[1])); t = o["timings"]
print(f'{sys.argv[2]:<28} {sys.argv[3]:>4} {o["prompt_tokens"]:>10} {t["prompt_tokens_per_s"]:>10.1f} '
      f'{o["completion_tokens"]:>9} {t["completion_tokens_per_s"]:>9.1f} {t["load_ms"]:>10.0f}   rss {sys.argv[4]}')
if sys.argv[3] == "1":
    print(f'    text: {o["text"][:100]!r}')
PY
}

run_llamacpp() {  # run
    /usr/bin/time -v -o "$TMP/time" "$VENV/bin/python" "$REPO_ROOT/scripts/llamacpp_bench.py" \
        "$MODEL" "$PROMPT" "$MAX_TOKENS" "$THREADS" > "$TMP/out.json"
    python3 - "$TMP/out.json" "llama.cpp-as-stored" "$1" "$(peak_rss "$TMP/time")" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
print(f'{sys.argv[2]:<28} {sys.argv[3]:>4} {o["prompt_tokens"]:>10} {o["prompt_tokens_per_s"]:>10.1f} '
      f'{o["completion_tokens"]:>9} {o["completion_tokens_per_s"]:>9.1f} {o["load_ms"]:>10.0f}   rss {sys.argv[4]}')
if sys.argv[3] == "1":
    print(f'    text: {o["text"][:100]!r}')
PY
}

if [[ $WITH_LLAMACPP -eq 1 ]]; then
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then
        echo "bench-model: installing llama-cpp-python==0.3.36 into $VENV (builds llama.cpp; ~10 min)" >&2
        python3 -m venv "$VENV"
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF" \
            "$VENV/bin/pip" install llama-cpp-python==0.3.36
    fi
fi

# Runs alternate between engines, so that a slow patch of this shared machine hits all alike.
for run in $(seq 1 "$RUNS"); do
    for fmt in "${FORMATS[@]}"; do
        run_vouch "$fmt" "$run"
    done
    if [[ $WITH_LLAMACPP -eq 1 ]]; then
        run_llamacpp "$run"
    fi
done
