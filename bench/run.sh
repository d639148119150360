#!/usr/bin/env bash
# One command for every Vouch benchmark: builds release binaries, runs each benchmark
# with its baseline in the same run, and writes bench/RESULTS.md, bench/results.json and
# plots (PNG, when matplotlib is available).
#
#   bash bench/run.sh                 full run (several minutes; llama.cpp only with --with-llamacpp)
#   bash bench/run.sh --smoke         tiny settings (CI: proves the pipeline, numbers meaningless)
#   bash bench/run.sh --with-llamacpp adds llama.cpp on the same GGUF (builds it from PyPI, ~10 min once)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SMOKE=0; LLAMA=0
for a in "$@"; do
    case "$a" in
        --smoke) SMOKE=1 ;;
        --with-llamacpp) LLAMA=1 ;;
        *) echo "bench: unknown argument $a" >&2; exit 2 ;;
    esac
done
OUT=bench/out; mkdir -p "$OUT"
PROFILE_DIR=target/release
log() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

bash scripts/fetch-model.sh
if [[ $SMOKE -eq 1 ]]; then
    # CI: reuse the debug build the tests made; tiny settings.
    PROFILE_DIR=target/debug
    cargo build --locked -p vouch-enclave -p vouch-host -p vouch-client -p vouch-bench --examples --bins
    TOKENS=4; RUNS=1; SECS=0.3; ROUNDS=200; BULK=8
else
    log "building release binaries"
    cargo build --release --locked -p vouch-enclave -p vouch-host -p vouch-client -p vouch-bench --examples --bins
    TOKENS=64; RUNS=3; SECS=2; ROUNDS=20000; BULK=1024
fi

log "1/6 report verification vs the aws-lc-rs P-384 floor"
if [[ $SMOKE -eq 1 ]]; then
    cargo test --locked -p vouch-attestation --test vectors -q >/dev/null
    echo 'BENCH_JSON {"smoke":true}' > "$OUT/verify.txt"
else
    cargo bench --locked -p vouch-attestation --bench verify 2>/dev/null | tee "$OUT/verify.txt"
fi

log "2/6 whole process: vouch verify-report vs snpguest verify attestation (if installed)"
V=attestation/testdata/vectors
{
    t0=$(date +%s%N); n=20; [[ $SMOKE -eq 1 ]] && n=2
    for _ in $(seq $n); do "$PROFILE_DIR/vouch" verify-report --report $V/reports/milan_v3_mstav.bin \
        --vcek $V/reports/milan_v3_mstav.vcek.der --now 1788220800 >/dev/null; done
    t1=$(date +%s%N); vouch_ms=$(( (t1 - t0) / n / 1000 ))
    echo "vouch verify-report (chain + signature + extensions + policy), per process: ${vouch_ms} us"
    t0=$(date +%s%N)
    for _ in $(seq $n); do python3 bench/py_verify.py $V/reports/milan_v3_mstav.bin $V/reports/milan_v3_mstav.vcek.der \
        $V/certs/milan_cert_chain.pem >/dev/null; done
    t1=$(date +%s%N); py_us=$(( (t1 - t0) / n / 1000 ))
    echo "python cryptography (chain + signature), per process: ${py_us} us"
    echo "BENCH_JSON {\"python_cryptography_process_us\":$py_us,\"python_speedup\":$(python3 -c "print(round($py_us/$vouch_ms,2))")}"
    SNPGUEST=$(command -v snpguest || echo "$HOME/.cargo/bin/snpguest")
    if [[ -x "$SNPGUEST" ]]; then
        D=$(mktemp -d); cp $V/reports/milan_v3_mstav.bin "$D/report.bin"; mkdir -p "$D/certs"
        cp $V/reports/milan_v3_mstav.vcek.der "$D/certs/vcek.der"
        t0=$(date +%s%N)
        for _ in $(seq $n); do "$SNPGUEST" verify attestation "$D/certs" "$D/report.bin" >/dev/null 2>&1 || true; done
        t1=$(date +%s%N); sg_ms=$(( (t1 - t0) / n / 1000 ))
        echo "snpguest verify attestation (signature + TCB), per process: ${sg_ms} us"
        echo "BENCH_JSON {\"vouch_verify_report_process_us\":$vouch_ms,\"snpguest_process_us\":$sg_ms,\"snpguest_speedup\":$(python3 -c "print(round($sg_ms/$vouch_ms,2))")}"
    else
        echo "snpguest not installed (cargo install snpguest --version 0.11 to compare)"
        echo "BENCH_JSON {\"vouch_verify_report_process_us\":$vouch_ms}"
    fi
} | tee "$OUT/process.txt"

log "3/6 group commit: answers/s and reports/s (receipt pipeline)"
"$PROFILE_DIR/examples/bench_notary" "$SECS" | tee "$OUT/notary.txt"

log "4/6 host forwarding vs direct"
"$PROFILE_DIR/examples/bench" --host-bin "$PROFILE_DIR/vouch-host" --rounds "$ROUNDS" --bulk-mib "$BULK" 2>&1 | tee "$OUT/host.txt" || \
    bash scripts/bench-host.sh --rounds "$ROUNDS" --bulk-mib "$BULK" | tee "$OUT/host.txt"

log "5/6 attested generation end to end vs in-process generate; enclave memory"
"$PROFILE_DIR/bench-e2e" --bin-dir "$PROFILE_DIR" --tokens "$TOKENS" --runs "$RUNS" --latency-ms 8 | tee "$OUT/e2e.txt"

log "6/6 model speed (candle) $( [[ $LLAMA -eq 1 ]] && echo 'vs llama.cpp, same GGUF and threads')"
if [[ $SMOKE -eq 1 ]]; then
    echo "smoke: skipped" > "$OUT/model.txt"
else
    extra=(); [[ $LLAMA -eq 1 ]] && extra+=(--with-llamacpp)
    bash scripts/bench-model.sh --threads 1 --runs "$RUNS" --max-tokens "$TOKENS" --no-build "${extra[@]}" | tee "$OUT/model.txt"
fi

log "writing bench/RESULTS.md and bench/results.json"
# Plots need matplotlib (PyPI); without it the tables are still written.
[[ $SMOKE -eq 1 ]] || python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib >/dev/null 2>&1 || true
python3 bench/report.py "$OUT" $([[ $SMOKE -eq 1 ]] && echo --smoke)
