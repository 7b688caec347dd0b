#!/usr/bin/env bash
# Usage: build_module.sh ARM64_ENV SRC_DIR OUT.ko
# Cross-builds an out-of-tree module against Debian's arm64 headers in a
# scratch copy of SRC_DIR (Kbuild writes next to the sources).
set -euo pipefail
env_file=$1 src=$2 out=$3
# shellcheck disable=SC1090
source "$env_file"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r "$src"/. "$work"/
[[ -n "${EXTRA_INCLUDE:-}" ]] && cp -r "$EXTRA_INCLUDE" "$work/include"
make -s -C "$PKVM_KDIR" M="$work" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- modules 2>&1 |
  grep -v "Skipping BTF generation" || true
ko=$(ls "$work"/*.ko 2>/dev/null | head -1)
[[ -n "$ko" ]] || { echo "build_module: no module built from $src" >&2; exit 1; }
cp "$ko" "$out"
