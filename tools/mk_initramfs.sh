#!/usr/bin/env bash
# Usage: mk_initramfs.sh ENV_FILE INIT_SCRIPT OUT.cpio.gz [FILE:DEST ...]
# Builds a busybox initramfs whose /init is INIT_SCRIPT; extra files (e.g. a
# kernel module, pkvmctl) are copied to DEST inside the image.
set -euo pipefail
env_file=$1 init=$2 out=$3; shift 3
# shellcheck disable=SC1090
source "$env_file"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,sbin,proc,sys,dev,tmp,root,mnt}
cp "$PKVM_BUSYBOX" "$work/bin/busybox"
for app in sh mount umount cat echo ls mkdir insmod rmmod dmesg grep sed awk poweroff reboot sleep \
           uname head tail tr cut wc dd md5sum hexdump od printf test true false seq sync; do
  ln -sf busybox "$work/bin/$app"
done
install -m 0755 "$init" "$work/init"
for spec in "$@"; do
  src=${spec%%:*} dest=${spec#*:}
  mkdir -p "$work/$(dirname "$dest")"
  cp "$src" "$work/$dest"
done
(cd "$work" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -9) > "$out.tmp"
mv "$out.tmp" "$out"
