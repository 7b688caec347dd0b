#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Fuzz smoke test for mem_protect (two cases):
#  1. runs out/fuzz/fuzz_mem_protect for FUZZ_SECONDS (default 60) on a copy
#     of the seed corpus and reports libFuzzer's final statistics;
#  2. replays every regression input (tests/mem_protect/regressions/*.bin).
# Prints "RESULT: N passed, M failed" (tools/run_tests.sh counts it).
# A crash's input is kept in out/fuzz/artifacts/ and its report printed.
# FUZZ_CORPUS=DIR fuzzes DIR in place (keeping what it finds) instead of a copy;
# FUZZ_BIN=PATH runs another build of the target.
set -uo pipefail
cd "$(dirname "$0")/../.."

bin=${FUZZ_BIN:-out/fuzz/fuzz_mem_protect}
secs=${FUZZ_SECONDS:-60}
pass=0 fail=0
if [[ ! -x $bin ]]; then
  echo "fuzz_smoke: $bin is missing (ninja out/fuzz/fuzz_mem_protect)"
  echo "RESULT: 0 passed, 2 failed"
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -n ${FUZZ_CORPUS:-} ]]; then
  corpus=$FUZZ_CORPUS
  mkdir -p "$corpus"
  cp -n tests/mem_protect/corpus/*.bin "$corpus/" 2>/dev/null
else
  corpus=$work/corpus
  mkdir -p "$corpus"
  cp tests/mem_protect/corpus/*.bin "$corpus/"
fi
mkdir -p out/fuzz/artifacts "$work/artifacts"

# --- 1. Fuzzing ------------------------------------------------------------------
log=$work/fuzz.log
echo "fuzz_smoke: fuzzing for ${secs}s (corpus $corpus)"
# -detect_leaks=0: the harness keeps one booted World across inputs (its
# hash maps grow and stay), which libFuzzer's malloc/free balance check
# mistakes for leaks and re-runs under LeakSanitizer. The code under test
# has no heap; its pool pages are checked for leaks by the invariants.
"$bin" -detect_leaks=0 -max_total_time="$secs" -max_len=1024 -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$corpus" >"$log" 2>&1
rc=$?
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
last=$(grep -E '^#[0-9]+' "$log" | tail -1)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
echo "fuzz_smoke: executions ${execs:-?}, exec/s ${rate:-?}, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, exit $rc"
if [[ $rc -eq 0 ]]; then
  echo "PASS fuzzing (${secs}s)"
  pass=$((pass + 1))
else
  echo "FAIL fuzzing: exit $rc; report:"
  grep -E -A40 '^(DIVERGENCE|final check|==[0-9]+==ERROR|SUMMARY)' "$log" | head -80
  for a in "$work"/artifacts/*; do
    [[ -e $a ]] || continue
    cp "$a" out/fuzz/artifacts/
    echo "input kept: out/fuzz/artifacts/$(basename "$a") (replay: $bin out/fuzz/artifacts/$(basename "$a"))"
  done
  fail=$((fail + 1))
fi

# --- 2. Regression corpus ---------------------------------------------------------------
regs=(tests/mem_protect/regressions/*.bin)
if [[ ! -e ${regs[0]} ]]; then
  echo "FAIL regressions: no input in tests/mem_protect/regressions"
  fail=$((fail + 1))
else
  bad=0
  for r in "${regs[@]}"; do
    if ! "$bin" "$r" >"$work/replay.log" 2>&1; then
      bad=$((bad + 1))
      echo "FAIL regression $r:"
      grep -E -A6 '^(DIVERGENCE|final check|==[0-9]+==ERROR)' "$work/replay.log" | head -12
    fi
  done
  if [[ $bad -eq 0 ]]; then
    echo "PASS regressions (${#regs[@]} inputs)"
    pass=$((pass + 1))
  else
    echo "FAIL regressions: $bad of ${#regs[@]} inputs diverge"
    fail=$((fail + 1))
  fi
fi

echo "RESULT: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
