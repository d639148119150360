#!/usr/bin/env bash
# Builds everything a Vouch SNP guest boots from, and its expected launch measurement.
#
#   guest/build-guest.sh --enclave BIN --busybox PATH --kernel VMLINUZ --ovmf OVMF.fd \
#       --model MODEL.gguf [--model-on-disk] --vcpus N[,N...] --vcpu-type TYPE --out DIR
#       [--args FILE] [--cmdline-base TEXT] [--vmm-type QEMU|EC2|GCE]
#       [--lib F]... [--bin F]... [--module KO]... [--dev [--sim-keys F]]
#
# --lib, --bin, --module, --dev and --sim-keys go to build-initrd.sh (see there): shared
# libraries, extra executables (dmsetup, for kernels without CONFIG_DM_INIT), kernel
# modules in load order, and the dev launch mode (scripts/vm-e2e.sh).
#
# Produces in DIR:
#   initrd.cpio        /init, busybox, vouch-enclave, enclave.args (+ the model unless
#                      --model-on-disk)
#   model-disk.img     with --model-on-disk: model + dm-verity hash tree
#   cmdline            the exact kernel command line (no trailing newline): measured
#   measurement.txt    expected MEASUREMENT(s), one hex line per vCPU count
#   policy.toml        the same as a client-policy snippet ([snp] measurements = [...])
#
# The OVMF must support measured direct boot (SNP_KERNEL_HASHES section: edk2
# OvmfPkg/AmdSev/AmdSevX64.dsc); vouch-measure refuses one that does not. The
# measurement tool is $VOUCH_MEASURE, else `vouch-measure` on PATH, else `vouch measure`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

enclave= busybox= kernel= ovmf= model= on_disk=0 vcpus= vcpu_type= out= args="$here/enclave.args"
vmm=QEMU initrd_extra=()
cmdline_base="console=ttyS0 panic=-1 rdinit=/init"
while [ $# -gt 0 ]; do
    case "$1" in
        --enclave) enclave="$2"; shift 2 ;;
        --busybox) busybox="$2"; shift 2 ;;
        --kernel) kernel="$2"; shift 2 ;;
        --ovmf) ovmf="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --model-on-disk) on_disk=1; shift ;;
        --vcpus) vcpus="$2"; shift 2 ;;
        --vcpu-type) vcpu_type="$2"; shift 2 ;;
        --vmm-type) vmm="$2"; shift 2 ;;
        --args) args="$2"; shift 2 ;;
        --cmdline-base) cmdline_base="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --lib|--bin|--module|--sim-keys) initrd_extra+=("$1" "$2"); shift 2 ;;
        --dev) initrd_extra+=(--dev); shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "build-guest: unknown argument $1" >&2; exit 2 ;;
    esac
done
for v in enclave busybox kernel ovmf model vcpus out; do
    [ -n "${!v}" ] || { echo "build-guest: --${v} is required" >&2; exit 2; }
done
[ "$vmm" != QEMU ] || [ -n "$vcpu_type" ] || { echo "build-guest: --vcpu-type is required for QEMU" >&2; exit 2; }
mkdir -p "$out"

if [ -n "${VOUCH_MEASURE:-}" ]; then measure=("$VOUCH_MEASURE")
elif command -v vouch-measure >/dev/null; then measure=(vouch-measure)
elif command -v vouch >/dev/null; then measure=(vouch measure)
else echo "build-guest: no measurement tool (set VOUCH_MEASURE or install vouch-measure)" >&2; exit 2
fi

cmdline="$cmdline_base"
if [ "$on_disk" = 1 ]; then
    "$here/build-model-disk.sh" "$model" "$out"
    cmdline="$cmdline $(cat "$out/cmdline.model")"
    "$here/build-initrd.sh" --enclave "$enclave" --busybox "$busybox" --args "$args" \
        ${initrd_extra[@]+"${initrd_extra[@]}"} --out "$out/initrd.cpio"
else
    cmdline="$cmdline vouch.model=initrd"
    "$here/build-initrd.sh" --enclave "$enclave" --busybox "$busybox" --args "$args" --model "$model" \
        ${initrd_extra[@]+"${initrd_extra[@]}"} --out "$out/initrd.cpio"
fi
printf '%s' "$cmdline" > "$out/cmdline"

common=(--ovmf "$ovmf" --kernel "$kernel" --initrd "$out/initrd.cpio" --append-file "$out/cmdline"
        --vcpus "$vcpus" --vmm-type "$vmm")
[ -z "$vcpu_type" ] || common+=(--vcpu-type "$vcpu_type")
"${measure[@]}" "${common[@]}" > "$out/measurement.txt"
"${measure[@]}" "${common[@]}" --output-format policy > "$out/policy.toml"
echo "build-guest: expected measurement(s):" >&2
cat "$out/measurement.txt" >&2
