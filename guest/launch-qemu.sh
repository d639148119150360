#!/usr/bin/env bash
# Launches a Vouch enclave guest under QEMU/KVM with measured direct boot.
#
#   guest/launch-qemu.sh DIR          SEV-SNP guest, vsock to the host (vouch-host connects
#                                     to vsock:CID:PORT)
#   guest/launch-qemu.sh --dev DIR    DEV LAUNCH MODE (no SNP): the same kernel, initrd,
#                                     command line and model disk, no sev-snp-guest
#                                     object, user-mode networking forwarding
#                                     127.0.0.1:PORT to the guest's :8443 (vhost-vsock
#                                     is not needed). For initrds built with --dev.
#
# DIR is what build-guest.sh wrote (initrd.cpio, cmdline, model-disk.img if any).
# SIGTERM or SIGINT asks the guest to power down (QMP system_powerdown: the ACPI power
# button, on which the guest's /init stops the enclave, which finishes its in-flight
# answers) and waits up to STOP_TIMEOUT seconds for QEMU to exit before killing it. The
# exit status is QEMU's (0 after a clean power-off).
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
#   QMP        QMP socket (used for the power-down)                [DIR/qmp.sock]
#   STOP_TIMEOUT  seconds the guest gets to power down             [60]
# Dev launch mode only:
#   ACCEL      kvm or tcg (software emulation)                     [kvm]
#   PORT       host loopback port forwarded to the guest's 8443   [18443]
#   SIM_MEASUREMENT  the simulated MEASUREMENT (96 hex digits) the guest's simulator
#              reports: what `vouch measure` computed for this image, passed as an SMBIOS
#              OEM string because it cannot be inside the image it measures   [none]
#   SERIAL     file for the serial console                         [stdio]
# The initrd and the command line come from DIR (initrd.cpio, cmdline) and are measured.
# POLICY and the host-provided HOST_DATA/ID block are not part of MEASUREMENT; the
# client checks the policy bits (debug, SMT, migration agent) from the report itself.
set -euo pipefail
dev=0
[ "${1:-}" != --dev ] || { dev=1; shift; }
[ $# -eq 1 ] || { sed -n '2,40p' "$0" >&2; exit 2; }
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
QMP="${QMP:-$dir/qmp.sock}"
STOP_TIMEOUT="${STOP_TIMEOUT:-60}"
say() { echo "launch-qemu: $*" >&2; }

for f in "$OVMF" "$KERNEL" "$dir/initrd.cpio" "$dir/cmdline"; do
    [ -f "$f" ] || { say "$f missing"; exit 2; }
done

disk=()
if [ -f "$dir/model-disk.img" ]; then
    # First virtio-blk disk = /dev/vda in the guest, as the dm-verity table expects.
    # Read-only: the host cannot alter it unnoticed anyway (dm-verity), but it avoids
    # accidents.
    disk=(-drive "if=none,id=model,file=${MODEL_DISK:-$dir/model-disk.img},format=raw,readonly=on"
          -device virtio-blk-pci,drive=model)
fi

if [ "$dev" = 1 ]; then
    case "${ACCEL:-kvm}" in
        kvm) accel=(-enable-kvm) ;;
        tcg) accel=(-accel tcg,thread=multi) ;;
        *) say "ACCEL must be kvm or tcg"; exit 2 ;;
    esac
    machine=(-machine q35,vmport=off)
    transport=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:${PORT:-18443}-:8443"
               -device virtio-net-pci,netdev=n0)
    if [ -n "${SIM_MEASUREMENT:-}" ]; then
        [[ "$SIM_MEASUREMENT" =~ ^[0-9a-f]{96}$ ]] || { say "SIM_MEASUREMENT must be 96 lowercase hex digits"; exit 2; }
        transport+=(-smbios "type=11,value=io.vouch.sim-measurement=$SIM_MEASUREMENT")
    fi
    # A failed boot ends QEMU (panic=-1 reboots) instead of looping.
    transport+=(-no-reboot)
    if [ -n "${SERIAL:-}" ]; then serial=(-serial "file:$SERIAL"); else serial=(-serial stdio); fi
else
    [ -e /dev/sev ] || say "warning: /dev/sev missing (is SNP enabled in BIOS and kvm_amd sev_snp=1?)"
    accel=(-enable-kvm)
    machine=(-machine q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off
             -object "memory-backend-memfd,id=ram1,size=$MEM,share=true,prealloc=false"
             -object "sev-snp-guest,id=sev0,policy=$POLICY,cbitpos=$CBITPOS,reduced-phys-bits=1,kernel-hashes=on")
    transport=(-device "vhost-vsock-pci,guest-cid=$CID")
    serial=(-serial stdio)
fi

# Sends one QMP command (after the capabilities handshake); python3 because bash has no
# unix sockets. Bounded: 5 s per reply.
qmp() {
    python3 - "$QMP" "$1" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": cmd}) + "\n")
    f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            break
    if "error" in reply:
        sys.exit(f"QMP {cmd}: {reply['error'].get('desc', reply['error'])}")
PY
}

rm -f "$QMP"
"$QEMU" \
    "${accel[@]}" -nodefaults -no-user-config -display none \
    "${machine[@]}" \
    -cpu "$CPU" -smp "$VCPUS" -m "$MEM" \
    -bios "$OVMF" \
    -kernel "$KERNEL" -initrd "$dir/initrd.cpio" -append "$(cat "$dir/cmdline")" \
    ${disk[@]+"${disk[@]}"} \
    "${transport[@]}" \
    "${serial[@]}" -monitor none -qmp "unix:$QMP,server=on,wait=off" &
qpid=$!

stopping=0
stop() {
    [ "$stopping" = 0 ] || return 0
    stopping=1
    say "stop requested: powering the guest down (up to ${STOP_TIMEOUT}s)"
    qmp system_powerdown || say "QMP system_powerdown failed"
    local deadline=$(( $(date +%s) + STOP_TIMEOUT ))
    while kill -0 "$qpid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$qpid" 2>/dev/null; then
        say "the guest did not power down within ${STOP_TIMEOUT}s: stopping QEMU"
        kill -TERM "$qpid" 2>/dev/null || true
    fi
}
trap stop TERM INT

# `wait` returns early (status > 128) when a trapped signal arrives: wait again until QEMU
# is gone, then once more for its own status if the last wait was the interrupted one
# (127: already collected).
while :; do
    status=0
    wait "$qpid" || status=$?
    kill -0 "$qpid" 2>/dev/null && continue
    again=0
    wait "$qpid" 2>/dev/null || again=$?
    [ "$again" = 127 ] || status=$again
    break
done
rm -f "$QMP"
say "QEMU exited with status $status"
exit "$status"
