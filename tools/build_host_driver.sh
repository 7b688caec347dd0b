#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Usage: tools/build_host_driver.sh ARM64_ENV ABI_HEADER OUT_DIR
# Cross-builds pkvm_host.ko and pkvm_host_example.ko against Debian's arm64
# headers in a scratch copy of host_driver/ (Kbuild writes next to the
# sources), with the generated ABI header in include/. One Kbuild run builds
# both, so modpost resolves the example's use of pkvm_host's exports.
set -euo pipefail
env_file=$1 abi_header=$2 out=$3
# shellcheck disable=SC1090
source "$env_file"
src=$(cd "$(dirname "$0")/../host_driver" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp "$src"/Kbuild "$src"/*.c "$src"/*.h "$work"/
cp -r "$src"/uapi "$work"/
mkdir -p "$work/include" "$out"
cp "$abi_header" "$work/include/"
make -s -C "$PKVM_KDIR" M="$work" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- W=1 modules 2>&1 |
  grep -v "Skipping BTF generation" || true
for m in pkvm_host pkvm_host_example; do
  [[ -f "$work/$m.ko" ]] || { echo "host_driver/build.sh: $m.ko was not built" >&2; exit 1; }
  cp "$work/$m.ko" "$out/$m.ko"
done
