#!/usr/bin/env bash
# Usage: run_bench.sh BENCH...
# Runs each Google Benchmark binary in turn (console table on stdout) and
# keeps a JSON copy under out/bench/ for docs/performance.md.
set -uo pipefail
mkdir -p out/bench
echo "bench: $(date -u +%FT%TZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
rc=0
for b in "$@"; do
  name=$(basename "$b")
  echo "=== $name"
  "./$b" --benchmark_out="out/bench/$name.json" --benchmark_out_format=json || rc=1
done
exit $rc
