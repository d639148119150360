#!/usr/bin/env bash
# Builds the Vouch guest initramfs reproducibly: the same inputs give the same bytes,
# hence the same SHA-256 in the SEV hashes table, hence the same launch measurement.
#
#   guest/build-initrd.sh --enclave PATH --busybox PATH --out FILE
#                         [--args FILE] [--model FILE] [--lib FILE]... [--bin FILE]...
#                         [--module KO]...
#                         [--dev [--sim-keys FILE]] [--gzip]
#
#   --enclave   the vouch-enclave binary (statically linked, e.g. built for
#               x86_64-unknown-linux-musl, or with its shared libraries added via --lib)
#   --busybox   a static busybox (Debian: busybox-static, /bin/busybox) for /init's shell
#   --args      extra `vouch-enclave serve` arguments, one per line (default guest/enclave.args)
#   --model     put the model file in the initrd at /model/model.gguf (small models; large
#               ones go on a dm-verity disk, see build-model-disk.sh)
#   --lib       add a file under /lib (repeatable; shared libraries for a dynamic binary;
#               /lib64 is a link to /lib, so the glibc loader path resolves)
#   --bin       add an executable under /bin (repeatable; e.g. dmsetup, which /init uses to
#               build the verity device on kernels without CONFIG_DM_INIT; add its libraries
#               with --lib)
#   --module    add a kernel module (repeatable, in load order: dependencies first); /init
#               insmods /lib/modules/*.ko in that order (for kernels, like Debian's, that
#               build virtio/vsock/sev-guest as modules). Must match the kernel's version.
#   --dev       DEV LAUNCH MODE (no SNP): writes /etc/vouch/dev-mode, which makes /init
#               configure eth0 (QEMU user-mode net), listen on tcp:0.0.0.0:PORT instead of
#               vsock and start the enclave with `--attestation sim`. Needs an enclave built
#               with the `sim` feature (production builds refuse sim, so this file in a
#               production initrd only stops the enclave from starting). It is in the
#               initrd, hence in the measurement: a dev initrd never measures as a
#               production one.
#   --sim-keys  with --dev: sim-keys.cbor for the simulated secure processor (known root,
#               e.g. attestation/testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor)
#   --gzip      compress with `gzip -n -9` (no name, no timestamp: still reproducible)
#
# Writes FILE and FILE.list (the exact cpio manifest, for audit). SOURCE_DATE_EPOCH sets
# every mtime (default 0).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

enclave= busybox= out= args="$here/enclave.args" model= gz=0 dev=0 sim_keys=
libs=() mods=() bins=()
while [ $# -gt 0 ]; do
    case "$1" in
        --enclave) enclave="$2"; shift 2 ;;
        --busybox) busybox="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --args) args="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --lib) libs+=("$2"); shift 2 ;;
        --bin) bins+=("$2"); shift 2 ;;
        --module) mods+=("$2"); shift 2 ;;
        --dev) dev=1; shift ;;
        --sim-keys) sim_keys="$2"; shift 2 ;;
        --gzip) gz=1; shift ;;
        -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
        *) echo "build-initrd: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$enclave" ] && [ -n "$busybox" ] && [ -n "$out" ] || { echo "build-initrd: --enclave, --busybox and --out are required" >&2; exit 2; }
[ -z "$sim_keys" ] || [ "$dev" = 1 ] || { echo "build-initrd: --sim-keys needs --dev" >&2; exit 2; }
for f in "$enclave" "$busybox" "$args" "$here/init" "$here/power-button" ${model:+"$model"} \
         ${sim_keys:+"$sim_keys"} ${libs[@]+"${libs[@]}"} ${bins[@]+"${bins[@]}"} \
         ${mods[@]+"${mods[@]}"}; do
    [ -f "$f" ] || { echo "build-initrd: $f: not a file" >&2; exit 2; }
done
abs() { (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }

list="$out.list"
{
    echo "# Vouch guest initramfs manifest (gen_init_cpio format), written by build-initrd.sh"
    echo "dir /bin 0755 0 0"
    echo "dir /dev 0755 0 0"
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "dir /etc 0755 0 0"
    echo "dir /etc/acpi 0755 0 0"
    echo "dir /etc/acpi/PWRF 0755 0 0"
    echo "file /etc/acpi/PWRF/00000080 $(abs "$here/power-button") 0755 0 0"
    echo "dir /etc/vouch 0755 0 0"
    echo "dir /lib 0755 0 0"
    echo "dir /proc 0555 0 0"
    echo "dir /run 0755 0 0"
    echo "dir /sys 0555 0 0"
    echo "file /init $(abs "$here/init") 0755 0 0"
    echo "file /bin/busybox $(abs "$busybox") 0755 0 0"
    for applet in sh mount mkdir cat head sleep modprobe insmod ip poweroff sed tr wc kill sync acpid; do
        echo "slink /bin/$applet busybox 0777 0 0"
    done
    echo "file /bin/vouch-enclave $(abs "$enclave") 0755 0 0"
    for b in ${bins[@]+"${bins[@]}"}; do
        echo "file /bin/$(basename "$b") $(abs "$b") 0755 0 0"
    done
    echo "file /etc/vouch/enclave.args $(abs "$args") 0644 0 0"
    for l in ${libs[@]+"${libs[@]}"}; do
        echo "file /lib/$(basename "$l") $(abs "$l") 0755 0 0"
    done
    [ ${#libs[@]} -eq 0 ] || echo "slink /lib64 lib 0777 0 0"
    if [ ${#mods[@]} -gt 0 ]; then
        echo "dir /lib/modules 0755 0 0"
        i=10
        for m in "${mods[@]}"; do
            echo "file /lib/modules/$i-$(basename "$m") $(abs "$m") 0644 0 0"
            i=$((i + 1))
        done
    fi
    if [ "$dev" = 1 ]; then
        echo "file /etc/vouch/dev-mode /dev/null 0644 0 0"
        [ -z "$sim_keys" ] || echo "file /etc/vouch/sim-keys.cbor $(abs "$sim_keys") 0444 0 0"
    fi
    if [ -n "$model" ]; then
        echo "dir /model 0755 0 0"
        echo "file /model/model.gguf $(abs "$model") 0444 0 0"
    fi
} > "$list"

python3 "$here/mkcpio.py" "$list" "$out"
if [ "$gz" = 1 ]; then
    gzip -n -9 -c "$out" > "$out.gz.tmp" && mv "$out.gz.tmp" "$out"
fi
sha256sum "$out" | cut -d' ' -f1 > "$out.sha256"
echo "build-initrd: $out sha256 $(cat "$out.sha256")" >&2
