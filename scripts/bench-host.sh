#!/usr/bin/env bash
# Benchmarks the untrusted forwarder (vouch-host): the latency it adds to a small
# request/response round trip (p50, p99) and the throughput it forwards on loopback,
# each against the same backend directly, in the same run.
#
# Usage: scripts/bench-host.sh [--rounds N] [--bulk-mib N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p vouch-host --bin vouch-host --example bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/examples/bench" --host-bin "$target_dir/release/vouch-host" "$@"
