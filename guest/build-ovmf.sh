#!/usr/bin/env bash
# Builds the SEV-SNP firmware for measured direct boot: edk2's OvmfPkg/AmdSev/AmdSevX64.dsc
# (the build with the SNP_KERNEL_HASHES page, which `vouch measure --kernel` needs and
# Debian's ovmf package does not ship), from Debian's own edk2 source package.
#
#   guest/build-ovmf.sh --out DIR        writes DIR/OVMF.amdsev.fd and DIR/OVMF.amdsev.fd.sha256
#
# Inputs are pinned: the Debian edk2 2025.02-8+deb13u1 source (the upstream tarball with
# Debian's embedded submodules, and Debian's patches, applied in series order), each by
# SHA-256; a mismatch stops the build. One change to the sources: Debian's grub (the
# `grub-efi-amd64-bin` whose modules AmdSev's bundled grub is made from) has no
# `sevsecret` module, so it is left out of the bundled grub. That grub only runs when no
# kernel is given (it unlocks an encrypted disk with a secret the guest owner injects);
# measured direct boot never reaches it. The result is still a different firmware from
# upstream's: its SHA-256 is printed, and the measurement covers its every byte. The
# build is not byte-reproducible yet (two builds here at the same path differed), so the
# binary itself must be published with a measurement computed for it.
#
# Idempotent: when DIR/OVMF.amdsev.fd exists and was built from these same pins, nothing
# is done. Installs its build dependencies with apt-get (root or sudo). About 2 min on
# 2 cores. Without SNP this firmware refuses to boot a kernel (QEMU fills the hashes table
# only for an SNP launch), so a dev VM boots Debian's OVMF; see guest/README.md.
set -euo pipefail
EDK2_VERSION=2025.02-8+deb13u1
ORIG=edk2_2025.02.orig.tar.xz
ORIG_SHA256=b63b6053d6d89c74d9291f9e96fde1584be99e6fb9c169ba9511505129d6b049
DEBIAN=edk2_2025.02-8+deb13u1.debian.tar.xz
DEBIAN_SHA256=e2a7f6fc58640818416a028d6d5e9dfc255697a7cdc60c14566c236df6bd9b08
POOL=${DEBIAN_MIRROR:-http://deb.debian.org/debian}/pool/main/e/edk2
out=
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "build-ovmf: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$out" ] || { echo "build-ovmf: --out DIR is required" >&2; exit 2; }
say() { echo "build-ovmf: $*" >&2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
fd="$out/OVMF.amdsev.fd"
stamp="edk2 at /tmp/vouch-ovmf-build $EDK2_VERSION $ORIG_SHA256 $DEBIAN_SHA256 AmdSevX64 RELEASE GCC5 -sevsecret"
if [ -f "$fd" ] && [ "$(cat "$fd.stamp" 2>/dev/null)" = "$stamp" ]; then
    say "$fd is up to date (sha256 $(cut -d' ' -f1 "$fd.sha256"))"
    exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for p in build-essential nasm acpica-tools uuid-dev python3 python3-setuptools \
         grub-efi-amd64-bin grub-common dosfstools mtools curl xz-utils; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

src="$out/src"
mkdir -p "$src"
fetch() {
    local name="$1" sha="$2"
    if [ ! -f "$src/$name" ] || [ "$(sha256sum "$src/$name" | cut -d' ' -f1)" != "$sha" ]; then
        say "downloading $name"
        curl -fsS --max-time 600 -o "$src/$name.tmp" "$POOL/$name"
        mv "$src/$name.tmp" "$src/$name"
    fi
    local got
    got=$(sha256sum "$src/$name" | cut -d' ' -f1)
    [ "$got" = "$sha" ] || { say "$name: sha256 $got, expected $sha"; exit 1; }
}
fetch "$ORIG" "$ORIG_SHA256"
fetch "$DEBIAN" "$DEBIAN_SHA256"

# A fixed build path: edk2 records it in the images' debug directory entries, so the same
# path (and the same toolchain: gcc, nasm, iasl, Debian's grub modules) gives the same bytes.
tree=/tmp/vouch-ovmf-build/edk2
rm -rf "$tree"
mkdir -p "$tree"
tar -xf "$src/$ORIG" -C "$tree" --strip-components=1
tar -xf "$src/$DEBIAN" -C "$tree"
while read -r p; do
    case "$p" in ''|'#'*) continue ;; esac
    patch -d "$tree" -p1 -s < "$tree/debian/patches/$p"
done < "$tree/debian/patches/series"
grep -q '^ *sevsecret$' "$tree/OvmfPkg/AmdSev/Grub/grub.sh" || { say "grub.sh no longer lists sevsecret: re-check this script"; exit 1; }
sed -i '/^ *sevsecret$/d' "$tree/OvmfPkg/AmdSev/Grub/grub.sh"

t0=$(date +%s)
say "building BaseTools and AmdSevX64 (log: $out/build.log)"
(
    cd "$tree"
    make -C BaseTools -j"$(nproc)"
    set +u
    # shellcheck disable=SC1091
    . ./edksetup.sh
    build -a X64 -t GCC5 -b RELEASE -n "$(nproc)" -p OvmfPkg/AmdSev/AmdSevX64.dsc
) > "$out/build.log" 2>&1 || { tail -30 "$out/build.log" >&2; say "build failed"; exit 1; }
cp "$tree/Build/AmdSev/RELEASE_GCC5/FV/OVMF.fd" "$fd.tmp"
mv "$fd.tmp" "$fd"
sha256sum "$fd" | cut -d' ' -f1 > "$fd.sha256"
printf '%s' "$stamp" > "$fd.stamp"
rm -rf /tmp/vouch-ovmf-build
say "$fd built in $(( $(date +%s) - t0 )) s, sha256 $(cat "$fd.sha256")"
