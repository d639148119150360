#!/usr/bin/env bash
# Puts the model on a dm-verity disk: data blocks (the model, zero-padded to 4 KiB) then
# the hash tree, in one image. The root hash goes on the measured kernel command line
# (via the kernel's own dm-mod.create=, so no veritysetup is needed inside the guest);
# the guest kernel then refuses any block the host alters.
#
#   guest/build-model-disk.sh MODEL OUTDIR
#
# Writes OUTDIR/model-disk.img, OUTDIR/model-verity.env (parameters) and
# OUTDIR/cmdline.model (the command-line fragment). Reproducible: the salt is derived
# from the model's SHA-256, and --no-superblock leaves no UUID or timestamp in the image.
# Needs veritysetup (Debian: cryptsetup-bin). No root, no loop devices: it works on files.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
model="$1" outdir="$2"
[ -f "$model" ] || { echo "build-model-disk: $model: not a file" >&2; exit 2; }
command -v veritysetup >/dev/null || { echo "build-model-disk: veritysetup not found (apt-get install cryptsetup-bin)" >&2; exit 2; }
mkdir -p "$outdir"
img="$outdir/model-disk.img"

block=4096
model_bytes=$(stat -c %s "$model")
data_blocks=$(( (model_bytes + block - 1) / block ))
data_bytes=$(( data_blocks * block ))
model_sha256=$(sha256sum "$model" | cut -d' ' -f1)
# Salt: public and fixed per model; it only has to make precomputed trees useless.
salt=$(printf 'vouch-model-verity-salt %s' "$model_sha256" | sha256sum | cut -d' ' -f1)

cp "$model" "$img.tmp"
truncate -s "$data_bytes" "$img.tmp"
out=$(veritysetup format --no-superblock --hash=sha256 \
    --data-block-size=$block --hash-block-size=$block \
    --data-blocks="$data_blocks" --hash-offset="$data_bytes" \
    --salt="$salt" "$img.tmp" "$img.tmp")
root=$(printf '%s\n' "$out" | sed -n 's/^Root hash:[[:space:]]*//p')
[ ${#root} -eq 64 ] || { echo "build-model-disk: no root hash in veritysetup output:" >&2; echo "$out" >&2; exit 1; }
mv "$img.tmp" "$img"

# Hash tree starts right after the data: block index data_blocks (hash-block units).
hash_start=$data_blocks
sectors=$(( data_bytes / 512 ))
cat > "$outdir/model-verity.env" <<ENV
MODEL_SHA256=$model_sha256
MODEL_BYTES=$model_bytes
VERITY_DATA_BLOCKS=$data_blocks
VERITY_HASH_START=$hash_start
VERITY_SALT=$salt
VERITY_ROOT_HASH=$root
ENV
# /dev/vda: the model disk must be the guest's first virtio-blk disk (launch-qemu.sh).
printf 'dm-mod.create="vouch-model,,,ro,0 %s verity 1 /dev/vda /dev/vda %s %s %s %s sha256 %s %s" dm-mod.waitfor=/dev/vda vouch.model=verity vouch.model_bytes=%s\n' \
    "$sectors" "$block" "$block" "$data_blocks" "$hash_start" "$root" "$salt" "$model_bytes" > "$outdir/cmdline.model"
echo "build-model-disk: $img root hash $root" >&2
