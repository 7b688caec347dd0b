#!/usr/bin/env bash
# Idempotent set-up step: installs the Debian packages the build and tests need.
# Quick when everything is present (one dpkg-query); fails loudly when it cannot install.
# Usage: tools/setup.sh STAMP   (writes STAMP on success so ninja can depend on it)
set -euo pipefail

stamp=${1:-}

# Host-side packages (FACTS.md). Keep the list sorted; later issues append the arm64 side.
packages=(
  binutils-aarch64-linux-gnu
  clang
  cpio
  device-tree-compiler
  g++
  g++-aarch64-linux-gnu
  gcc-aarch64-linux-gnu
  kmod
  libabsl-dev
  libbenchmark-dev
  libclang-rt-14-dev
  libgmock-dev
  libgtest-dev
  libprotobuf-dev
  libprotoc-dev
  ninja-build
  pkg-config
  protobuf-compiler
  qemu-system-arm
  valgrind
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} missing package(s): ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
      echo "setup: ERROR: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; fi
  else sudo=(); fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get update -qq; then
    echo "setup: ERROR: 'apt-get update' failed; cannot reach the Debian archive" >&2; exit 1
  fi
  if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    echo "setup: ERROR: 'apt-get install ${missing[*]}' failed" >&2; exit 1
  fi
  for p in "${missing[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || { echo "setup: ERROR: $p still not installed" >&2; exit 1; }
  done
fi

if [[ -n "$stamp" ]]; then
  mkdir -p "$(dirname "$stamp")"
  printf '%s\n' "${packages[@]}" > "$stamp"
fi
