#!/usr/bin/env bash
# Usage: run_bench.sh BENCH...
# Runs each Google Benchmark binary in turn (console table on stdout) and
# keeps a JSON copy under out/bench/ for docs/performance.md.
set -uo pipefail
mkdir -p out/bench
echo "bench: $(date -u +%FT%TZ) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
# CPU time the hypervisor under this VM took from it (the "steal" column of
# /proc/stat) during each binary, and before and after it the effective core
# clock and integer issue rate (out/host/bench/clock_probe --alu: adds per
# cycle, one per integer ALU port with the core to ourselves, fewer when the
# other hardware thread of the core is busy): timed rows are only comparable
# between runs with similar steal, clock and issue rate.
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat; }
rc=0
for b in "$@"; do
  name=$(basename "$b")
  echo "=== $name"
  read -r t0 s0 < <(cpu_ticks)
  core0=$(out/host/bench/clock_probe --alu 2>/dev/null || echo "?")
  "./$b" --benchmark_out="out/bench/$name.json" --benchmark_out_format=json || rc=1
  core1=$(out/host/bench/clock_probe --alu 2>/dev/null || echo "?")
  read -r t1 s1 < <(cpu_ticks)
  awk -v n="$name" -v t=$((t1 - t0)) -v s=$((s1 - s0)) -v c0="$core0" -v c1="$core1" \
    'BEGIN { if (t > 0) printf "%s: steal time %.1f%% of all CPU time during the run; core before: %s, after: %s\n", n, 100 * s / t, c0, c1 }'
done
exit $rc
