#!/usr/bin/env bash
# Usage: run_bench.sh BENCH...
# Runs each Google Benchmark binary in turn (console table on stdout) and
# keeps a JSON copy under out/bench/ for docs/performance.md.
set -uo pipefail
mkdir -p out/bench
echo "bench: $(date -u +%FT%TZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
# CPU time the hypervisor under this VM took from it (the "steal" column of
# /proc/stat) during each binary: the timed rows are only comparable
# between runs with similar steal.
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat; }
rc=0
for b in "$@"; do
  name=$(basename "$b")
  echo "=== $name"
  read -r t0 s0 < <(cpu_ticks)
  "./$b" --benchmark_out="out/bench/$name.json" --benchmark_out_format=json || rc=1
  read -r t1 s1 < <(cpu_ticks)
  awk -v n="$name" -v t=$((t1 - t0)) -v s=$((s1 - s0)) \
    'BEGIN { if (t > 0) printf "%s: steal time %.1f%% of all CPU time during the run\n", n, 100 * s / t }'
done
exit $rc
