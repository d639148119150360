#!/usr/bin/env bash
# Model speed and memory, native runtime vs llama.cpp on the same GGUF files and threads,
# side by side in one run: for each model in models/ (SmolLM2 Q4_1; SmolLM2 Q4_K_M and
# Gemma 3 270M Q4_K_M when present) and 1 and 2 threads, runs the native runtime
# (enclave/examples/bench_models.rs) and then llama.cpp (bench/reference/llama_cpp_speed.py,
# same prompt text, same prefill and decode lengths). Writes bench/out/models.jsonl and
# prints a Markdown table for bench/RESULTS.md.
#
#   bash bench/models.sh [--runs N] [--no-llamacpp]
# llama.cpp comes from the venv bench/reference/regenerate.sh builds ($VENV, default
# /work/llama-venv); without it only the native figures are printed. Not run by CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=3; LLAMA=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --no-llamacpp) LLAMA=0; shift ;;
        *) echo "bench/models.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
VENV="${VENV:-/work/llama-venv}"
[[ -x "$VENV/bin/python" ]] || LLAMA=0
bash scripts/fetch-model.sh all
cargo build --release --locked -p vouch-enclave --example bench_models
mkdir -p bench/out
OUT=bench/out/models.jsonl; : > "$OUT"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for model in SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_K_M.gguf gemma-3-270m-q4_k_m.gguf; do
    [[ -f "models/$model" ]] || { echo "models/$model absent (regenerate.sh makes SmolLM2 Q4_K_M); skipped" >&2; continue; }
    for t in 1 2; do
        target/release/examples/bench_models --model "models/$model" --threads "$t" --runs "$RUNS" \
            | sed -n 's/^BENCH_JSON //p' >> "$OUT"
        if [[ $LLAMA -eq 1 ]]; then
            "$VENV/bin/python" bench/reference/llama_cpp_speed.py --threads "$t" --reps "$RUNS" \
                --out /dev/null "models/$model" | sed -n 's/^BENCH_JSON //p' >> "$OUT"
        fi
    done
done
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ours = [r for r in rows if r["engine"] == "vouch-native"]
ref = {(r["model"], r["threads"]): r for r in rows if r["engine"] == "llama.cpp"}
print("| model | threads | load ms | prefill tok/s (llama.cpp, ratio) | decode tok/s (llama.cpp, ratio) | peak RSS MiB (file + KV, ratio) |")
print("|---|---|---|---|---|---|")
for r in ours:
    l = ref.get((r["model"], r["threads"]))
    def cell(k):
        if not l:
            return f"{r[k]:.0f}"
        return f"{r[k]:.0f} ({l[k]:.0f}, {r[k] / l[k]:.2f}×)"
    budget = r["file_bytes"] + r["kv_bytes"]
    print(f"| {r['model']} | {r['threads']} | {r['load_ms']:.0f} | {cell('prefill_tok_s')} | {cell('decode_tok_s')} | "
          f"{r['peak_rss_bytes'] / 2**20:.0f} ({budget / 2**20:.0f}, {r['peak_rss_bytes'] / budget:.2f}×) |")
PY
