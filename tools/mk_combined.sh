#!/usr/bin/env bash
# Usage: mk_combined.sh PAYLOAD.elf PAYLOAD.bin ARM64_ENV OUT.img
# One bootable arm64 Image: the EL2 payload, zero padding up to its
# __linux_image symbol (a 2 MiB boundary), then Debian's Linux Image. The
# payload header's image_size is patched to cover the whole span, Linux's own
# image_size (its BSS) included, so a loader reserves enough memory.
set -euo pipefail
elf=$1 bin=$2 env_file=$3 out=$4
# shellcheck disable=SC1090
source "$env_file"
nm=aarch64-linux-gnu-nm
sym() { "$nm" "$elf" | awk -v s="$1" '$3 == s { print $1 }'; }
start=$((16#$(sym __payload_start)))
linux=$((16#$(sym __linux_image)))
off=$((linux - start))
size=$(stat -c %s "$bin")
(( size <= off )) || { echo "mk_combined: payload ($size bytes) overlaps the Linux slot at +$off" >&2; exit 1; }
magic=$(dd if="$PKVM_IMAGE" bs=1 skip=56 count=4 2>/dev/null | od -An -tx1 | tr -d ' \n')
[[ $magic == 41524d64 ]] || { echo "mk_combined: $PKVM_IMAGE is not an arm64 Image" >&2; exit 1; }
linux_size=$(od -An -tu8 -j16 -N8 "$PKVM_IMAGE" | tr -d ' ')
total=$((off + linux_size))
tmp=$out.tmp
cp "$bin" "$tmp"
truncate -s "$off" "$tmp"
cat "$PKVM_IMAGE" >> "$tmp"
# image_size at offset 16, little-endian.
printf "$(printf '%016x' "$total" | sed -E 's/(..)(..)(..)(..)(..)(..)(..)(..)/\\x\8\\x\7\\x\6\\x\5\\x\4\\x\3\\x\2\\x\1/')" |
  dd of="$tmp" bs=1 seek=16 conv=notrunc status=none
mv "$tmp" "$out"
