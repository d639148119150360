#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for N seconds each (default 60), starting from
# the committed seed corpus (fuzz/corpus/TARGET: Vouch's own evidence, receipts and
# requests; never modified: new inputs go to fuzz/work/TARGET) plus, for report, cert
# and crl, the genuine SEV-SNP vectors, which are not in this repository: they are
# copied from <repo>/../shared/vectors and ../shared/vectors-heldout (overrides
# VOUCH_VECTORS_DIR, VOUCH_HELDOUT_DIR) into fuzz/work/TARGET when present. Crashes land
# in fuzz/artifacts/TARGET; turn each into a regression test in
# attestation/tests/fuzz_regressions.rs.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (installed here when missing) and a C++ compiler for libFuzzer.
# The sanitizer is off (-s none) so that a stable toolchain works; with nightly, drop
# it to run under AddressSanitizer.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(report cert crl evidence receipt http_request policy gguf)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Genuine seeds from ../shared (the rule of attestation/tests/support/shared_vectors.rs).
DEV="${VOUCH_VECTORS_DIR:-$(cd ../.. && pwd)/shared/vectors}"
HELDOUT="${VOUCH_HELDOUT_DIR:-$(cd ../.. && pwd)/shared/vectors-heldout}"
# seed TARGET GLOB...: copies the files that exist into work/TARGET (never overwriting).
seed() {
    local t=$1 f n=0
    shift
    for f in "$@"; do
        [ -f "$f" ] || continue
        cp -n "$f" "work/$t/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
        n=$((n + 1))
    done
    echo "fuzz: $n genuine seeds for $t from ../shared" >&2
}
for d in "$DEV" "$HELDOUT"; do
    [ -f "$d/manifest.json" ] || echo "fuzz: $d not found; report/cert/crl start without its genuine seeds" >&2
done

summary=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t"
    case "$t" in
        report)
            seed report "$DEV"/reports/*.bin "$DEV"/negative/*.bin "$DEV"/unverified/*.bin \
                "$HELDOUT"/*.bin "$HELDOUT"/negative/*.bin ;;
        cert)
            seed cert "$DEV"/certs/* "$DEV"/reports/*.der "$DEV"/unverified/*.pem "$DEV"/unverified/*.der \
                "$HELDOUT"/*.der "$HELDOUT"/negative/*.der "$HELDOUT"/negative/*.pem ;;
        crl)
            seed crl "$DEV"/crl/*.crl ;;
        gguf)
            # The tiny models' first 32 KiB: their whole headers and a little tensor data.
            for f in ../enclave/testdata/tiny/*.gguf; do
                head -c 32768 "$f" >"work/gguf/seed-$(basename "$f")"
            done ;;
    esac
    # The committed seeds, where a target has some (report/cert/crl have none of their own).
    corpus=()
    [ -d "corpus/$t" ] && corpus=("corpus/$t")
    log="work/$t.log"
    echo "== fuzz $t for ${secs}s"
    # -rss_limit_mb: a decoder must never need more than this for any input.
    if cargo fuzz run -s none "$t" "work/$t" ${corpus[@]+"${corpus[@]}"} -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 | tee "$log" | grep -E "^#[0-9]+.*(pulse|DONE)|ERROR|crash-|Test unit written"; then :; fi
    runs=$(grep -E "^stat::number_of_executed_units" "$log" | awk '{print $2}' | tail -1)
    eps=$(grep -E "^#[0-9]+.*DONE" "$log" | sed -E 's/.*exec\/s: ([0-9]+).*/\1/' | tail -1)
    crashes=$(ls "artifacts/$t" 2>/dev/null | grep -cE '^(crash|oom|timeout|leak)-' || true)
    summary+=("$t: ${runs:-?} executions in ${secs}s (${eps:-?} exec/s), ${crashes} crash/oom/timeout artifacts")
done
echo
printf '%s\n' "${summary[@]}"
