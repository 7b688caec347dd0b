#!/usr/bin/env bash
# Usage: check_freestanding.sh NM STAMP ARCHIVE...
# The EL2 core may only depend on the symbols the payload runtime provides:
# memcpy/memset/memmove and the C++ ABI hook for pure virtual calls. The
# archives are checked together (a library may use the ones listed after it).
set -euo pipefail
nm=$1 stamp=$2; shift 2
allowed='^(memcpy|memset|memmove|__cxa_pure_virtual)$'
defined=$("$nm" --defined-only -g "$@" 2>/dev/null | awk 'NF==3{print $3}' | sort -u)
undef=$("$nm" -u "$@" | awk 'NF==2{print $2}' | sort -u | comm -23 - <(echo "$defined"))
bad=$(echo "$undef" | grep -Ev "$allowed" | grep -v '^$' || true)
if [[ -n "$bad" ]]; then
  echo "error: $* not freestanding; unresolved symbols:" >&2
  echo "$bad" | sed 's/^/  /' >&2
  exit 1
fi
touch "$stamp"
