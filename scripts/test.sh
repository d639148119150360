#!/usr/bin/env bash
# The test command (README): fetches the model (idempotent), then runs every test in the
# workspace — unit tests, the genuine AMD vectors, the enclave/host/client integration
# tests and the end-to-end tests that start the real binaries on loopback.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch-model.sh
echo "test: cargo test --workspace (debug build; dependencies optimised)" >&2
cargo test --workspace --locked "$@"
