#!/usr/bin/env bash
# Installs what measure/tests need: Debian's OVMF firmware (the image measured in the
# reference tests), the reference implementation sev-snp-measure (pinned), and
# veritysetup (cryptsetup-bin, for the guest recipe's dm-verity model disk).
# Idempotent; run as root (CI) or with sudo available.
#
# sev-snp-measure goes into the interpreter VOUCH_PYTHON names (scripts/test.sh points
# it at the venv it owns, <repo>/.venv-test), else into python3's.
set -euo pipefail
SEV_SNP_MEASURE_VERSION=0.0.13
PY="${VOUCH_PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
[ -f /usr/share/ovmf/OVMF.fd ] || need_apt+=(ovmf)
command -v veritysetup >/dev/null || need_apt+=(cryptsetup-bin)
if [ ${#need_apt[@]} -gt 0 ]; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('sev-snp-measure') != '$SEV_SNP_MEASURE_VERSION')" 2>/dev/null; then
    "$PY" -m pip install --quiet --disable-pip-version-check "sev-snp-measure==$SEV_SNP_MEASURE_VERSION"
fi
echo "install-measure-deps: ovmf, veritysetup, sev-snp-measure==$SEV_SNP_MEASURE_VERSION ($PY) ready" >&2
