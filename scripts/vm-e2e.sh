#!/usr/bin/env bash
# The guest image, booted for real and checked end to end (issue 18). No SEV-SNP here, so
# in DEV LAUNCH MODE: the same recipe (guest/build-guest.sh: initrd, dm-verity model disk,
# kernel command line, `vouch measure`), booted by guest/launch-qemu.sh --dev under
# QEMU (KVM, or TCG emulation where /dev/kvm cannot run OVMF) with no sev-snp-guest
# object, user-mode networking instead of vsock, and the enclave's simulated secure
# processor reporting as MEASUREMENT exactly what build-guest.sh wrote to
# measurement.txt. What runs:
#
#   1. build: Debian kernel (extracted from the .deb), the AmdSev OVMF (guest/build-ovmf.sh,
#      the firmware the measurement is computed for), build-guest.sh --dev --model-on-disk
#   2. boot; vouch-host forwards to the VM; through it `vouch attest` with build-guest.sh's
#      policy.toml (verified), with any other measurement pinned (refused), `vouch chat`
#      (verified), then `vouch verify` of the receipt offline
#   3. SIGTERM to the launcher while an answer streams: the answer completes (verified),
#      the guest powers down cleanly (enclave exit status 0, QEMU status 0); vouch-host
#      ejects it (/readyz 503); boot again: taken back (/readyz 200), verified through it
#   4. the model disk with one flipped byte: dm-verity refuses it, the guest powers off,
#      the enclave never listens
#   5. the command line changed: another `vouch measure` value, which the client pinning
#      the original refuses (and its own policy accepts)
#
# Prints timings (build, boot to ready, first answer, guest memory) and one OK line.
# Skips with one line where /dev/kvm is absent. Bounded: every wait has a deadline, and
# everything it started is torn down on exit.
#
#   scripts/vm-e2e.sh [--enclave BIN] [--vouch BIN] [--host BIN] [--model GGUF] [--out DIR]
#
# Defaults: target/debug/{vouch-enclave,vouch,vouch-host} (the enclave built with the
# `sim` feature, as `cargo test --workspace` builds it), models/SmolLM2-135M-Instruct.Q4_1.gguf,
# build/vm-e2e. Environment: VCPUS [2], MEM [2G], CPU [EPYC-Milan], ACCEL [auto],
# BOOT_TIMEOUT [300 s per boot], PORT_BASE [18440: VM, vouch-host, admin on +3, +4, +5].
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
enclave="$root/target/debug/vouch-enclave" vouch="$root/target/debug/vouch"
host_bin="$root/target/debug/vouch-host"
model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf" out="$root/build/vm-e2e"
while [ $# -gt 0 ]; do
    case "$1" in
        --enclave) enclave="$2"; shift 2 ;;
        --vouch) vouch="$2"; shift 2 ;;
        --host) host_bin="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) echo "vm-e2e: unknown argument $1" >&2; exit 2 ;;
    esac
done
VCPUS="${VCPUS:-2}" MEM="${MEM:-2G}" CPU="${CPU:-EPYC-Milan}" ACCEL="${ACCEL:-auto}"
BOOT_TIMEOUT="${BOOT_TIMEOUT:-300}" PORT_BASE="${PORT_BASE:-18440}"
vm_port=$((PORT_BASE + 3)) host_port=$((PORT_BASE + 4)) admin_port=$((PORT_BASE + 5))
say() { echo "vm-e2e: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

if [ ! -e /dev/kvm ]; then
    echo "vm-e2e: SKIPPED: /dev/kvm not available (the guest VM checks need it)"
    exit 0
fi
if [ "$ACCEL" = auto ]; then
    if [ -d /sys/module/kvm_amd ] || [ -d /sys/module/kvm_intel ]; then ACCEL=kvm
    else
        # kvm_pvm (nested sandboxes) runs no OVMF: it dies in SEC with a KVM internal error.
        ACCEL=tcg
        say "/dev/kvm is $(ls /sys/module | grep -m1 '^kvm_' || echo 'of unknown kind'), which cannot run OVMF: using TCG emulation"
    fi
fi
for f in "$enclave" "$vouch" "$host_bin" "$model"; do [ -f "$f" ] || die "$f: missing (build first: cargo test --workspace --no-run)"; done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# 1a. Host packages (idempotent).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
[ -f /usr/share/ovmf/OVMF.fd ] || need+=(ovmf)
command -v curl >/dev/null || need+=(curl)
command -v dmsetup >/dev/null || need+=(dmsetup)
command -v veritysetup >/dev/null || need+=(cryptsetup-bin)
command -v objcopy >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
boot_ovmf=/usr/share/ovmf/OVMF.fd busybox=/bin/busybox

# 1b. Debian kernel: extracted from the .deb, not installed.
kdir="$out/kernel"
if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
    pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
    [ -n "$pkg" ] || die "cannot resolve linux-image-amd64"
    say "downloading $pkg"
    rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp"
    (cd "$kdir.tmp" && timeout 600 apt-get download "$pkg" >/dev/null 2>&1 && dpkg-deb -x ./*.deb x) ||
        die "could not download $pkg"
    mv "$kdir.tmp/x" "$kdir" && rm -rf "$kdir.tmp"
fi
kernel=$(ls "$kdir"/boot/vmlinuz-* | head -1)
kver=${kernel##*/vmlinuz-}
mdir="$kdir/lib/modules/$kver/kernel"
# Debian builds these as modules; dependencies first. virtio-net is for this dev mode,
# vsock and sev-guest for SNP, dm-* for the verity model disk (Debian's kernel has no
# CONFIG_DM_INIT: /init builds the device with dmsetup from the measured dm-mod.create=),
# button and evdev for the ACPI power button (clean shutdown).
initrd_extra=()
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci net/core/failover \
         drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk \
         net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common \
         net/vmw_vsock/vmw_vsock_virtio_transport drivers/virt/coco/sev-guest/sev-guest \
         drivers/md/dm-mod drivers/md/dm-bufio lib/reed_solomon/reed_solomon drivers/md/dm-verity \
         drivers/acpi/button drivers/input/evdev; do
    [ -f "$mdir/$m.ko" ] || die "$mdir/$m.ko missing"
    initrd_extra+=(--module "$mdir/$m.ko")
done

# 1c. The firmware the measurement is computed for (SNP measured direct boot).
t0=$(now)
"$root/guest/build-ovmf.sh" --out "$out/ovmf"
t_ovmf=$(since "$t0")
measured_ovmf="$out/ovmf/OVMF.amdsev.fd"

# 1d. The enclave (debug info stripped: a smaller initrd, the same code) and the shared
# libraries it and dmsetup need.
objcopy --strip-debug "$enclave" "$out/vouch-enclave"
probe=$(cd "$out" && "$out/vouch-enclave" serve --model /nonexistent --listen tcp:127.0.0.1:0 --attestation sim --sim-dir "$out/probe-sim" 2>&1 || true)
if grep -q "built without the simulated secure processor" <<<"$probe"; then
    die "$enclave was built without the sim feature (cargo build -p vouch-enclave --features sim)"
fi
declare -A seen=()
mkdir -p "$out/libs"
for bin in "$out/vouch-enclave" "$(command -v dmsetup)"; do
    for l in $(ldd "$bin" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*ld-linux[^ ]*\) .*/\1/p'); do
        name=$(basename "$l")
        [ -z "${seen[$name]:-}" ] || continue
        seen[$name]=1
        # Keep the soname the binary asks for.
        cp -fL "$l" "$out/libs/$name"
        initrd_extra+=(--lib "$out/libs/$name")
    done
done
initrd_extra+=(--bin "$(command -v dmsetup)")
sim_keys="$root/attestation/testdata/sim-test-chain/TEST-ONLY-sim-keys.cbor"

# 1e. The guest, twice: as built, and with one word more on the kernel command line.
export VOUCH_MEASURE="$out/vouch-measure-cmd"
printf '#!/bin/sh\nexec %q measure "$@"\n' "$vouch" > "$VOUCH_MEASURE" && chmod +x "$VOUCH_MEASURE"
build_guest() {
    local dir="$1"; shift
    "$root/guest/build-guest.sh" --enclave "$out/vouch-enclave" --busybox "$busybox" \
        --kernel "$kernel" --ovmf "$measured_ovmf" --model "$model" --model-on-disk \
        --vcpus "$VCPUS" --vcpu-type "$CPU" --out "$dir" \
        --dev --sim-keys "$sim_keys" "${initrd_extra[@]}" "$@" 2> "$dir.build.log" ||
        { cat "$dir.build.log" >&2; die "build-guest.sh failed"; }
}
mkdir -p "$out/guest" "$out/guest-cmdline"
t0=$(now)
build_guest "$out/guest"
t_build=$(since "$t0")
build_guest "$out/guest-cmdline" --cmdline-base "console=ttyS0 panic=-1 rdinit=/init vouch.e2e=changed"
meas=$(cat "$out/guest/measurement.txt")
meas_changed=$(cat "$out/guest-cmdline/measurement.txt")
[[ "$meas" =~ ^[0-9a-f]{96}$ ]] || die "measurement.txt: '$meas'"
[ "$meas" != "$meas_changed" ] || die "changing the kernel command line did not change the measurement"
say "built in ${t_build}s (initrd $(( $(stat -c %s "$out/guest/initrd.cpio") / 1048576 )) MiB, model disk $(( $(stat -c %s "$out/guest/model-disk.img") / 1048576 )) MiB); measurement $meas"
say "command line + ' vouch.e2e=changed': measurement $meas_changed"

# 2. Run. Everything started below is stopped on exit.
lpid= hpid=
cleanup() {
    if [ -n "$lpid" ] && kill -0 "$lpid" 2>/dev/null; then kill -9 "$lpid" 2>/dev/null || true; fi
    pkill -9 -f "qemu-system-x86_64 .*$out/" 2>/dev/null || true
    if [ -n "$hpid" ]; then kill "$hpid" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# boot NAME DIR MEASUREMENT [MODEL_DISK]: starts the VM in the background (pid in $lpid).
boot() {
    local name="$1" dir="$2" m="$3" disk="${4:-}"
    serial="$out/serial-$name.log"
    : > "$serial"
    env ACCEL="$ACCEL" CPU="$CPU" VCPUS="$VCPUS" MEM="$MEM" OVMF="$boot_ovmf" KERNEL="$kernel" \
        PORT="$vm_port" SIM_MEASUREMENT="$m" SERIAL="$serial" QMP="$out/qmp-$name.sock" \
        ${disk:+MODEL_DISK="$disk"} \
        "$root/guest/launch-qemu.sh" --dev "$dir" > "$out/launch-$name.log" 2>&1 &
    lpid=$!
    t_boot=$(now)
}
# Waits for the enclave to listen; dies if the VM stops first or the deadline passes.
wait_listening() {
    local deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
    until grep -q 'vouch-enclave listening on' "$serial" 2>/dev/null; do
        kill -0 "$lpid" 2>/dev/null || { tail -30 "$serial" >&2; die "the VM stopped before the enclave listened"; }
        [ "$(date +%s)" -lt "$deadline" ] || { tail -30 "$serial" >&2; die "no 'listening on' within ${BOOT_TIMEOUT}s"; }
        sleep 0.2
    done
    t_ready=$(since "$t_boot")
}
# SIGTERM to the launcher; waits for it (QEMU's exit status in $stop_status).
stop_vm() {
    kill -TERM "$lpid"
    local deadline=$(( $(date +%s) + 120 ))
    while kill -0 "$lpid" 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || die "the VM did not stop within 120 s of SIGTERM"
        sleep 0.2
    done
    stop_status=0
    wait "$lpid" || stop_status=$?
    lpid=
}
readyz() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$admin_port/readyz" || true; }
wait_readyz() {
    local want="$1" deadline=$(( $(date +%s) + 60 ))
    until [ "$(readyz)" = "$want" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "vouch-host /readyz is not $want within 60 s"
        sleep 0.2
    done
}
attest() { timeout 120 "$vouch" attest --url "https://127.0.0.1:$host_port" --trust-sim-root "$out/sim-ark.pem" --policy "$1"; }
# chat RECEIPT TOKENS: one verified answer through vouch-host. The client remembers this
# run's answer-log checkpoints only: every run boots a guest whose log (in guest memory)
# begins anew under the same identity, which a client that saw an earlier run's would refuse.
client_state=$(mktemp -d)
chat() {
    timeout 600 "$vouch" chat --url "https://127.0.0.1:$host_port" --trust-sim-root "$out/sim-ark.pem" \
        --policy "$out/guest/policy.toml" --max-tokens "$2" --receipt-out "$1" --state-dir "$client_state" \
        "Say hello in five words."
}

"$host_bin" --listen "127.0.0.1:$host_port" --enclave "tcp:127.0.0.1:$vm_port" \
    --admin "127.0.0.1:$admin_port" --health-interval-ms 500 --unhealthy-after 2 \
    > "$out/vouch-host.log" 2>&1 &
hpid=$!

boot main "$out/guest" "$meas"
say "booting ($ACCEL, -cpu $CPU, $VCPUS vCPUs, $MEM; serial console $serial)"
wait_listening
t_ready_first=$t_ready
say "enclave listening ${t_ready}s after QEMU start"
# The simulator's root (TEST-ONLY keys, measured into the dev initrd), from the console.
for _ in $(seq 100); do grep -q 'END /run/vouch-sim/sim-ark.pem' "$serial" && break; sleep 0.1; done
sed -n '/BEGIN \/run\/vouch-sim\/sim-ark.pem/,/END \/run\/vouch-sim\/sim-ark.pem/p' "$serial" \
    | sed '1d;$d' | tr -d '\r' > "$out/sim-ark.pem"
grep -q 'BEGIN CERTIFICATE' "$out/sim-ark.pem" || die "no sim root on the console"
wait_readyz 200

attest "$out/guest/policy.toml" > "$out/attest.txt" 2>&1 || { cat "$out/attest.txt" >&2; die "vouch attest with build-guest.sh's policy.toml failed"; }
grep -Eq "measurement +$meas" "$out/attest.txt" || { cat "$out/attest.txt" >&2; die "the attested measurement is not measurement.txt's"; }
say "attest through vouch-host, pinned to build-guest.sh's policy.toml: verified, measurement $meas"
printf '[snp]\nmeasurements = ["%s"]\n' "$(printf '%096d' 0)" > "$out/other-policy.toml"
if attest "$out/other-policy.toml" > "$out/attest-other.txt" 2>&1; then die "a client pinning another measurement was NOT refused"; fi
grep -qi "measurement" "$out/attest-other.txt" || { cat "$out/attest-other.txt" >&2; die "refused, but not for the measurement"; }
say "attest pinned to another measurement: refused ($(grep -i -m1 measurement "$out/attest-other.txt"))"

t0=$(now)
chat "$out/receipt.json" 8 > "$out/chat.txt" 2>&1 || { cat "$out/chat.txt" >&2; die "vouch chat through vouch-host failed"; }
t_answer=$(since "$t0")
say "chat (8 tokens, verified) in ${t_answer}s: $(head -c 200 "$out/chat.txt" | tr '\n' ' ')"
timeout 60 "$vouch" verify --trust-sim-root "$out/sim-ark.pem" --policy "$out/guest/policy.toml" \
    "$out/receipt.json" > "$out/verify.txt" 2>&1 || { cat "$out/verify.txt" >&2; die "offline receipt verification failed"; }
say "receipt verified offline: $(head -1 "$out/verify.txt")"
qemu_pid=$(pgrep -f "qemu-system-x86_64 .*$out/guest/initrd.cpio" | head -1)
rss_kib=$(awk '/^VmRSS:/{print $2}' "/proc/$qemu_pid/status")
guest_mem=$(sed -n 's/.*vouch-init: guest memory: //p' "$serial" | tr -d '\r' | head -1)

# 3. SIGTERM while an answer is being generated: the answer completes (verified), then a
# clean power-down; vouch-host ejects the VM; boot again: taken back.
chat "$out/receipt-inflight.json" 4 > "$out/chat-inflight.txt" 2>&1 &
cpid=$!
deadline=$(( $(date +%s) + 300 ))
until [ -s "$out/chat-inflight.txt" ]; do
    kill -0 "$cpid" 2>/dev/null || break
    [ "$(date +%s)" -lt "$deadline" ] || die "no streamed text within 300 s"
    sleep 0.1
done
t0=$(now)
stop_vm
t_stop=$(since "$t0")
cstatus=0
wait "$cpid" || cstatus=$?
[ "$cstatus" = 0 ] && grep -q 'VERIFIED' "$out/chat-inflight.txt" && ! grep -q 'NOT VERIFIED' "$out/chat-inflight.txt" ||
    { cat "$out/chat-inflight.txt" >&2; die "the answer in flight at SIGTERM did not complete verified (exit $cstatus)"; }
say "SIGTERM during an answer: the answer completed, verified ($(head -c 80 "$out/chat-inflight.txt" | tr '\n' ' '))"
[ "$stop_status" = 0 ] || { tail -20 "$serial" >&2; die "QEMU exited with status $stop_status after SIGTERM (not a clean power-off)"; }
grep -q 'power button: stopping vouch-enclave' "$serial" || { tail -20 "$serial" >&2; die "the guest did not see the power button"; }
grep -q 'vouch-enclave exited with status 0' "$serial" || { tail -20 "$serial" >&2; die "the enclave did not exit cleanly"; }
exit_mem=$(sed -n 's/.*memory at exit: \([^;]*\);.*/\1/p' "$serial" | tr -d '\r' | head -1)
say "SIGTERM: guest powered down in ${t_stop}s, the answer included (enclave exit status 0, QEMU status 0)"
wait_readyz 503
say "vouch-host ejected it (/readyz 503)"
boot again "$out/guest" "$meas"
wait_readyz 200
wait_listening
attest "$out/guest/policy.toml" > "$out/attest-again.txt" 2>&1 || { cat "$out/attest-again.txt" >&2; die "not verified through vouch-host after the VM came back"; }
say "booted again: vouch-host took it back (/readyz 200) and it verifies through it (ready ${t_ready}s after QEMU start)"
stop_vm
[ "$stop_status" = 0 ] || die "second power-down: QEMU status $stop_status"

# 4. One flipped byte on the model disk.
cp "$out/guest/model-disk.img" "$out/model-disk-tampered.img"
offset=$(( 1024 * 1024 + 17 ))
byte=$(od -An -tu1 -j "$offset" -N1 "$out/model-disk-tampered.img" | tr -d ' ')
printf "$(printf '\\%03o' $(( byte ^ 1 )))" | dd of="$out/model-disk-tampered.img" bs=1 seek="$offset" conv=notrunc status=none
cmp -s "$out/guest/model-disk.img" "$out/model-disk-tampered.img" && die "the tampered disk is unchanged"
boot tampered "$out/guest" "$meas" "$out/model-disk-tampered.img"
deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
while kill -0 "$lpid" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { tail -30 "$serial" >&2; die "the VM with a tampered disk did not power off within ${BOOT_TIMEOUT}s"; }
    sleep 0.2
done
lpid=
grep -q 'vouch-enclave listening on' "$serial" && die "the enclave served from a tampered model disk"
grep -q 'FATAL: reading the model disk failed: dm-verity refused a block' "$serial" || { tail -30 "$serial" >&2; die "no dm-verity refusal on the console"; }
corrupt=$(grep -a -m1 -o 'device-mapper: verity: .*data block [0-9]* is corrupted' "$serial" | tr -d '\r') ||
    { tail -30 "$serial" >&2; die "the kernel did not report a corrupted verity block"; }
say "model disk with one flipped byte (offset $offset): '$corrupt'; the guest powered off, the enclave never listened"

# 5. A changed command line: another measurement, refused by the original pin.
boot cmdline "$out/guest-cmdline" "$meas_changed"
wait_listening
wait_readyz 200
if attest "$out/guest/policy.toml" > "$out/attest-cmdline.txt" 2>&1; then die "a guest with a changed command line was accepted under the original policy"; fi
grep -qi "measurement" "$out/attest-cmdline.txt" || { cat "$out/attest-cmdline.txt" >&2; die "refused, but not for the measurement"; }
attest "$out/guest-cmdline/policy.toml" > "$out/attest-cmdline-own.txt" 2>&1 ||
    { cat "$out/attest-cmdline-own.txt" >&2; die "the changed guest does not verify under its own policy"; }
say "changed command line: refused under the original policy, verified under its own"
stop_vm

say "timings: AmdSev OVMF ${t_ovmf}s (0 when cached), guest build ${t_build}s, QEMU start to listening ${t_ready_first}s, first answer (8 tokens) ${t_answer}s, power-down ${t_stop}s"
say "memory: QEMU RSS $(( rss_kib / 1024 )) MiB for a $MEM guest; inside the guest at ready: ${guest_mem:-?}; at exit: ${exit_mem:-?}"
say "OK ($ACCEL; SIMULATED attestation, dev launch mode: no SNP memory encryption, user-mode net instead of vsock, Debian's OVMF booted, the AmdSev OVMF measured)"
