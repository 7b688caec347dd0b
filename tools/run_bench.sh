#!/usr/bin/env bash
# Usage: run_bench.sh BENCH...
# Runs each Google Benchmark binary in turn (console table on stdout) and
# keeps a JSON copy under out/bench/ for docs/performance.md.
set -uo pipefail
mkdir -p out/bench
echo "bench: $(date -u +%FT%TZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
# CPU time the hypervisor under this VM took from it (the "steal" column of
# /proc/stat) during each binary, and the effective core clock before and
# after it (out/host/bench/clock_probe): timed rows are only comparable
# between runs with similar steal and clock.
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat; }
rc=0
for b in "$@"; do
  name=$(basename "$b")
  echo "=== $name"
  read -r t0 s0 < <(cpu_ticks)
  ghz0=$(out/host/bench/clock_probe 2>/dev/null || echo "?")
  "./$b" --benchmark_out="out/bench/$name.json" --benchmark_out_format=json || rc=1
  ghz1=$(out/host/bench/clock_probe 2>/dev/null || echo "?")
  read -r t1 s1 < <(cpu_ticks)
  awk -v n="$name" -v t=$((t1 - t0)) -v s=$((s1 - s0)) -v g0="$ghz0" -v g1="$ghz1" \
    'BEGIN { if (t > 0) printf "%s: steal time %.1f%% of all CPU time during the run; effective clock %s GHz before, %s GHz after\n", n, 100 * s / t, g0, g1 }'
done
exit $rc
