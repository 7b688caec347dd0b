#!/usr/bin/env bash
# Usage: bench_ir.sh [MEM_PROTECT_BENCH]
# Instructions per operation for the mem_protect benchmark cases, counted by
# valgrind's callgrind over the cases' step() functions only (the set-up and
# the refills outside the timing are not counted). Unlike the timed medians,
# these counts do not move with this shared machine's load, so they are the
# figures to compare across runs and changes (docs/performance.md).
set -uo pipefail
bench=${1:-out/host/bench/mem_protect_bench}
if ! command -v valgrind >/dev/null; then
  echo "bench_ir: valgrind not installed (tools/setup.sh installs it)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rc=0
printf '%-30s %14s %8s\n' "case" "instr/op" "steps"
for spec in idmap_page:20000 idmap_block2m:5000 share_unshare_1:5000 share_unshare_512_aligned:500 \
            share_unshare_512_unaligned:200 donate_donate_back:5000 share_unshare_guest:5000; do
  name=${spec%%:*}
  steps=${spec##*:}
  if ! valgrind --tool=callgrind --callgrind-out-file="$tmp/$name.cg" --toggle-collect='*::step()' \
      "$bench" --count="$name" --steps="$steps" >"$tmp/$name.log" 2>&1; then
    echo "bench_ir: $name failed:" >&2
    tail -5 "$tmp/$name.log" >&2
    rc=1
    continue
  fi
  total=$(callgrind_annotate "$tmp/$name.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  # Two warm-up steps run before the counted ones, inside step() as well.
  printf '%-30s %14d %8d\n' "$name" $((total / (steps + 2))) "$steps"
done
exit $rc
