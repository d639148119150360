#!/usr/bin/env bash
# Boots the Vouch guest recipe for real under QEMU/KVM in DEV LAUNCH MODE and attests it:
# Debian kernel + Debian OVMF, the initrd from guest/build-initrd.sh (--dev: TCP instead of
# vsock, `--attestation sim`), the same kernel command line as guest/build-guest.sh
# (model in the initrd), no sev-snp-guest object, QEMU user-mode networking forwarding
# 127.0.0.1:PORT to the guest's :8443. Then `curl /v1/models` and `vouch attest` from the
# host, and QEMU is torn down. Not SNP: no memory encryption, simulated secure processor.
#
#   scripts/vm-dev-boot.sh [--enclave BIN] [--vouch BIN] [--model GGUF] [--out DIR]
#                          [--port PORT] [--timeout SECS] [--keep]
#
# Defaults: target/release/vouch-enclave (must be built with the `sim` feature),
# target/release/vouch, models/SmolLM2-135M-Instruct.Q4_1.gguf, build/vm-dev, port 18443,
# 180 s for the guest to listen. --keep leaves the VM running (prints its pid) instead of
# tearing it down. Needs root for apt-get only when packages are missing.
# Environment: VCPUS [2], MEM [2G], CPU [EPYC-Milan with kvm, max with tcg],
# ACCEL [auto: kvm when /dev/kvm is kvm_amd/kvm_intel, else tcg (software emulation).
# A /dev/kvm from kvm_pvm (nested sandboxes) cannot run OVMF or a stock Debian kernel:
# OVMF dies in SEC with a KVM internal error, -cpu host fails on MSR 0x10a].
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
enclave="$root/target/release/vouch-enclave" vouch="$root/target/release/vouch"
model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf" out="$root/build/vm-dev"
port=18443 timeout=180 keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --enclave) enclave="$2"; shift 2 ;;
        --vouch) vouch="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "vm-dev-boot: unknown argument $1" >&2; exit 2 ;;
    esac
done
VCPUS="${VCPUS:-2}" MEM="${MEM:-2G}" ACCEL="${ACCEL:-auto}"
say() { echo "vm-dev-boot: $*" >&2; }
die() { say "$*"; exit 1; }
if [ "$ACCEL" = auto ]; then
    if [ -e /dev/kvm ] && { [ -d /sys/module/kvm_amd ] || [ -d /sys/module/kvm_intel ]; }; then ACCEL=kvm
    elif [ -e /dev/kvm ]; then
        ACCEL=tcg
        echo "vm-dev-boot: /dev/kvm is not kvm_amd/kvm_intel ($(ls /sys/module | grep -m1 '^kvm_' || echo unknown)): it cannot run OVMF; using TCG emulation" >&2
    else echo "vm-dev-boot: SKIPPED: /dev/kvm not available (ACCEL=tcg to emulate)"; exit 0
    fi
fi
case "$ACCEL" in
    kvm) CPU="${CPU:-EPYC-Milan}" accel=(-enable-kvm)
         [ -e /dev/kvm ] || { echo "vm-dev-boot: SKIPPED: /dev/kvm not available (ACCEL=tcg to emulate)"; exit 0; } ;;
    tcg) CPU="${CPU:-max}" accel=(-accel tcg,thread=multi) ;;
    *) die "ACCEL must be kvm or tcg" ;;
esac
for f in "$enclave" "$vouch" "$model"; do [ -f "$f" ] || die "$f: missing"; done
mkdir -p "$out"

# 1. Host packages (idempotent).
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
[ -f /usr/share/ovmf/OVMF.fd ] || need+=(ovmf)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends "${need[@]}" >&2
fi
ovmf=/usr/share/ovmf/OVMF.fd busybox=/bin/busybox

# 2. Debian kernel: extracted from the .deb, not installed.
kdir="$out/kernel"
if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
    pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
    [ -n "$pkg" ] || die "cannot resolve linux-image-amd64"
    say "downloading $pkg"
    rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp"
    (cd "$kdir.tmp" && timeout 600 apt-get download "$pkg" >&2 2>/dev/null && dpkg-deb -x ./*.deb x)
    mv "$kdir.tmp/x" "$kdir" && rm -rf "$kdir.tmp"
fi
kernel=$(ls "$kdir"/boot/vmlinuz-* | head -1)
kver=${kernel##*/vmlinuz-}
mdir="$kdir/lib/modules/$kver/kernel"
# Debian builds these as modules (CONFIG_VIRTIO*=m, VIRTIO_VSOCKETS=m, SEV_GUEST=m);
# dependencies first. virtio-net is for this dev mode, vsock and sev-guest for SNP.
mods=()
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci net/core/failover \
         drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk \
         net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common \
         net/vmw_vsock/vmw_vsock_virtio_transport drivers/virt/coco/sev-guest/sev-guest; do
    [ -f "$mdir/$m.ko" ] || die "$mdir/$m.ko missing"
    mods+=(--module "$mdir/$m.ko")
done

# 3. Initrd (dev mode, TEST-ONLY sim keys so the root is known) and command line.
libs=()
for l in $(ldd "$enclave" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*ld-linux[^ ]*\) .*/\1/p'); do
    libs+=(--lib "$(readlink -f "$l")")
    # keep the soname the binary asks for
    [ "$(basename "$l")" = "$(basename "$(readlink -f "$l")")" ] || { cp -f "$(readlink -f "$l")" "$out/$(basename "$l")"; libs[-1]="$out/$(basename "$l")"; }
done
sim_keys="$root/attestation/testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor"
t0=$(date +%s.%N)
"$root/guest/build-initrd.sh" --enclave "$enclave" --busybox "$busybox" --model "$model" \
    "${libs[@]}" "${mods[@]}" --dev --sim-keys "$sim_keys" --out "$out/initrd.cpio"
# Exactly build-guest.sh's command line for a model in the initrd.
printf '%s' "console=ttyS0 panic=-1 rdinit=/init vouch.model=initrd" > "$out/cmdline"
say "initrd built in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"

# 4. Boot. Everything below is torn down on exit.
log="$out/serial.log"
: > "$log"
qpid=
cleanup() {
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null && [ "$keep" = 0 ]; then
        kill "$qpid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$qpid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
t0=$(date +%s.%N)
qemu-system-x86_64 \
    "${accel[@]}" -nodefaults -no-user-config -display none \
    -machine q35,vmport=off -cpu "$CPU" -smp "$VCPUS" -m "$MEM" \
    -bios "$ovmf" \
    -kernel "$kernel" -initrd "$out/initrd.cpio" -append "$(cat "$out/cmdline")" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:8443" -device virtio-net-pci,netdev=n0 \
    -serial "file:$log" -monitor none -pidfile "$out/qemu.pid" &
qpid=$!
say "qemu pid $qpid ($ACCEL, -cpu $CPU), serial console $log"
deadline=$(( $(date +%s) + timeout ))
until grep -q 'vouch-enclave listening on' "$log" 2>/dev/null; do
    kill -0 "$qpid" 2>/dev/null || { tail -40 "$log" >&2; die "QEMU exited before the enclave listened"; }
    [ "$(date +%s)" -lt "$deadline" ] || { tail -40 "$log" >&2; die "no 'listening on' within ${timeout}s"; }
    sleep 0.2
done
t_listen=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
say "enclave listening $t_listen s after QEMU start"
grep -m1 'vouch-enclave listening on' "$log" >&2

# 5. Reach it from the host.
curl -sk --max-time 30 "https://127.0.0.1:$port/v1/models" > "$out/models.json" || die "curl failed"
say "GET /v1/models: $(cat "$out/models.json")"
# The simulator's root, as the guest printed it on the console.
for _ in $(seq 100); do grep -q 'END /run/vouch-sim/sim-policy.toml' "$log" && break; sleep 0.1; done
sed -n '/BEGIN \/run\/vouch-sim\/sim-ark.pem/,/END \/run\/vouch-sim\/sim-ark.pem/p' "$log" \
    | sed '1d;$d' | tr -d '\r' > "$out/sim-ark.pem"
sed -n '/BEGIN \/run\/vouch-sim\/sim-policy.toml/,/END \/run\/vouch-sim\/sim-policy.toml/p' "$log" \
    | sed '1d;$d' | tr -d '\r' > "$out/sim-policy.toml"
grep -q 'BEGIN CERTIFICATE' "$out/sim-ark.pem" || die "no sim root on the console"
timeout 60 "$vouch" attest --url "https://127.0.0.1:$port" --trust-sim-root "$out/sim-ark.pem" \
    --allow-any-code | tee "$out/attest.txt" >&2 || die "vouch attest failed"
# Pinned: the simulator's MEASUREMENT is the SHA-384 of the enclave binary, computed here on
# the host (not taken from the console). Any other pinned value must be refused.
printf '[snp]\nmeasurements = ["%s"]\n' "$(sha384sum "$enclave" | cut -d' ' -f1)" > "$out/pinned-policy.toml"
timeout 60 "$vouch" attest --url "https://127.0.0.1:$port" --trust-sim-root "$out/sim-ark.pem" \
    --policy "$out/pinned-policy.toml" > "$out/attest-pinned.txt" 2>&1 \
    || { cat "$out/attest-pinned.txt" >&2; die "vouch attest with the pinned measurement failed"; }
say "attest, measurement pinned: $(head -1 "$out/attest-pinned.txt")"
printf '[snp]\nmeasurements = ["%s"]\n' "$(printf '%096d' 0)" > "$out/wrong-policy.toml"
if timeout 60 "$vouch" attest --url "https://127.0.0.1:$port" --trust-sim-root "$out/sim-ark.pem" \
    --policy "$out/wrong-policy.toml" > "$out/attest-wrong.txt" 2>&1; then
    die "a client pinning another measurement was NOT refused"
fi
say "attest, other measurement pinned: refused ($(head -1 "$out/attest-wrong.txt"))"
# One answer from the VM, verified, and its receipt verified offline.
t0=$(date +%s.%N)
timeout 300 "$vouch" chat --url "https://127.0.0.1:$port" --trust-sim-root "$out/sim-ark.pem" \
    --policy "$out/pinned-policy.toml" --max-tokens 16 --receipt-out "$out/receipt.json" \
    "Say hello in five words." > "$out/chat.txt" 2>&1 || { cat "$out/chat.txt" >&2; die "vouch chat failed"; }
t_answer=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
say "chat (16 tokens, verified) in ${t_answer}s: $(tr '\n' ' ' < "$out/chat.txt" | cut -c1-300)"
timeout 60 "$vouch" verify --trust-sim-root "$out/sim-ark.pem" --policy "$out/pinned-policy.toml" \
    "$out/receipt.json" > "$out/verify.txt" 2>&1 || { cat "$out/verify.txt" >&2; die "offline receipt verification failed"; }
say "receipt verified offline: $(head -1 "$out/verify.txt")"
say "OK: boot to listening ${t_listen}s, first answer ${t_answer}s; attested (SIMULATED, dev launch mode)"
if [ "$keep" = 1 ]; then say "VM left running: pid $qpid, https://127.0.0.1:$port"; fi
