#!/usr/bin/env bash
# Installs the measurement tests' external references (Debian OVMF, sev-snp-measure,
# veritysetup) and runs the vouch-measure tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-measure-deps.sh
cargo test -p vouch-measure "$@"
