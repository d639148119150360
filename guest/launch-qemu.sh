#!/usr/bin/env bash
# Launches a Vouch enclave as an SEV-SNP guest under QEMU/KVM, with measured direct boot
# and a vsock device to the host (where vouch-host connects to vsock:CID:PORT).
#
#   guest/launch-qemu.sh DIR        (DIR as written by build-guest.sh)
#
# Environment (defaults in brackets). Those marked * are part of the launch measurement
# and must match what was passed to build-guest.sh / vouch measure:
#   OVMF*      firmware with SNP kernel hashes support            [DIR/OVMF.fd]
#   KERNEL*    guest kernel (bzImage)                              [DIR/vmlinuz]
#   VCPUS*     vCPU count (-smp)                                   [4]
#   CPU*       vCPU model (-cpu), e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa [EPYC-v4]
#   POLICY     SNP guest policy: 0x30000 = SMT allowed, bit 17 (reserved, must be 1);
#              never set bit 19 (DEBUG) in production          [0x30000]
#   MEM        guest memory                                        [8G]
#   CID        guest vsock CID (unique per host, >= 3)             [42]
#   CBITPOS    C-bit position: CPUID 0x8000001F EBX[5:0] of the host [51]
#   QEMU       the QEMU binary (>= 9.1 for upstream SNP support)   [qemu-system-x86_64]
# The initrd and the command line come from DIR (initrd.cpio, cmdline) and are measured.
# POLICY and the host-provided HOST_DATA/ID block are not part of MEASUREMENT; the
# client checks the policy bits (debug, SMT, migration agent) from the report itself.
set -euo pipefail
[ $# -eq 1 ] || { sed -n '2,22p' "$0" >&2; exit 2; }
dir="$1"
OVMF="${OVMF:-$dir/OVMF.fd}"
KERNEL="${KERNEL:-$dir/vmlinuz}"
VCPUS="${VCPUS:-4}"
CPU="${CPU:-EPYC-v4}"
POLICY="${POLICY:-0x30000}"
MEM="${MEM:-8G}"
CID="${CID:-42}"
CBITPOS="${CBITPOS:-51}"
QEMU="${QEMU:-qemu-system-x86_64}"

for f in "$OVMF" "$KERNEL" "$dir/initrd.cpio" "$dir/cmdline"; do
    [ -f "$f" ] || { echo "launch-qemu: $f missing" >&2; exit 2; }
done
[ -e /dev/sev ] || echo "launch-qemu: warning: /dev/sev missing (is SNP enabled in BIOS and kvm_amd sev_snp=1?)" >&2

disk=()
if [ -f "$dir/model-disk.img" ]; then
    # First virtio-blk disk = /dev/vda in the guest, as the dm-verity table expects.
    # Read-only: the host cannot alter it unnoticed anyway (dm-verity), but it avoids
    # accidents.
    disk=(-drive "if=none,id=model,file=$dir/model-disk.img,format=raw,readonly=on"
          -device virtio-blk-pci,drive=model)
fi

exec "$QEMU" \
    -enable-kvm -nodefaults -nographic -no-user-config \
    -machine q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off \
    -object memory-backend-memfd,id=ram1,size="$MEM",share=true,prealloc=false \
    -object sev-snp-guest,id=sev0,policy="$POLICY",cbitpos="$CBITPOS",reduced-phys-bits=1,kernel-hashes=on \
    -cpu "$CPU" -smp "$VCPUS" -m "$MEM" \
    -bios "$OVMF" \
    -kernel "$KERNEL" -initrd "$dir/initrd.cpio" -append "$(cat "$dir/cmdline")" \
    "${disk[@]}" \
    -device vhost-vsock-pci,guest-cid="$CID" \
    -serial mon:stdio
