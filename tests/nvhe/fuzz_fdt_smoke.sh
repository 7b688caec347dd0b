#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Smoke run of the FDT libFuzzer target (run from the repository root):
# ~20 s seeded with the fixture DTBs, in a scratch corpus so the tree stays
# clean. Prints "RESULT: 1 passed, 0 failed" (or 0/1) and exits non-zero when
# the fuzzer finds a crash, a leak or a failed check.
#   FUZZ_FDT=binary  FUZZ_FDT_SEEDS=dir  FUZZ_FDT_SECONDS=n  override defaults.
set -uo pipefail
fuzzer=${FUZZ_FDT:-out/host/tests/nvhe/fuzz_fdt}
seeds=${FUZZ_FDT_SEEDS:-out/host/tests/nvhe/fixtures}
secs=${FUZZ_FDT_SECONDS:-20}

if [[ ! -x $fuzzer ]]; then
  echo "fuzz_fdt_smoke: missing $fuzzer (build it with ninja first)" >&2
  echo "RESULT: 0 passed, 1 failed"
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
# Seeds: every fixture DTB small enough for -max_len (QEMU's padded 1 MiB dump
# is represented by its dtc-compacted copy).
n=0
for f in "$seeds"/*.dtb; do
  [[ -f $f ]] || continue
  if (( $(stat -c %s "$f") <= 65536 )); then cp "$f" "$work/corpus/"; n=$((n + 1)); fi
done
echo "fuzz_fdt_smoke: $n seed(s) from $seeds, ${secs}s"

"$fuzzer" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus" >"$work/log" 2>&1
rc=$?
grep -E '^(Done|#[0-9]+ +DONE)|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|cov:' \
  "$work/log" | tail -5
if [[ $rc -ne 0 ]]; then
  echo "fuzz_fdt_smoke: fuzzer failed (exit $rc):"
  grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$work/log" | head -20
  for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
    [[ -f $a ]] || continue
    mkdir -p out/test-logs && cp "$a" out/test-logs/ && echo "artifact kept: out/test-logs/$(basename "$a")"
  done
  echo "RESULT: 0 passed, 1 failed"
  exit 1
fi
echo "RESULT: 1 passed, 0 failed"
