#!/usr/bin/env bash
# Usage: run_tests.sh SUITE -- TEST...
# Runs each test program, keeps its log under out/test-logs/, and prints one
# closing line "N passed, N failed[, N skipped]" over every test case run.
# A test program is either a GoogleTest binary (its own summary is parsed) or
# any program that prints lines "RESULT: N passed, N failed[, N skipped]".
# A program that exits non-zero without reporting a failure, or that reports
# no test case at all, counts as one failed test: a crash never passes.
set -uo pipefail
suite=$1; shift; [[ ${1:-} == -- ]] && shift
logdir=out/test-logs; mkdir -p "$logdir"
total_pass=0 total_fail=0 total_skip=0
for t in "$@"; do
  name=$(echo "$t" | tr '/' '_')
  log=$logdir/$name.log
  start=$(date +%s)
  if [[ $t == *.sh ]]; then cmd=(bash "$t"); else cmd=("./$t"); fi
  timeout --kill-after=10 "${TEST_TIMEOUT:-900}" "${cmd[@]}" >"$log" 2>&1
  rc=$?
  p=0 f=0 s=0
  if grep -q '^\[==========\] .* ran\.' "$log"; then
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*, listed below.*/\1/p' "$log" | tail -1)
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*, listed below.*/\1/p' "$log" | tail -1)
  else
    while read -r a b c; do p=$((p + a)); f=$((f + b)); s=$((s + c)); done < <(
      sed -n 's/^RESULT: \([0-9]*\) passed, \([0-9]*\) failed\(, \([0-9]*\) skipped\)\?.*/\1 \2 \4/p' "$log" |
      awk '{print $1, $2, ($3==""?0:$3)}')
  fi
  p=${p:-0} f=${f:-0} s=${s:-0}
  if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; fi
  # A program that ran no test case at all must not pass unnoticed.
  if [[ $((p + f + s)) -eq 0 ]]; then f=1; echo "ERROR: $t reported no test case" >> "$log"; fi
  secs=$(( $(date +%s) - start ))
  if [[ $f -ne 0 ]]; then
    echo "FAIL $t ($p passed, $f failed, ${secs}s; exit $rc) log: $log"
    grep -E '^\[  FAILED  \]|^FAIL|Failure|ERROR|error:' "$log" | head -20 | sed 's/^/    /'
  else
    if [[ $s -ne 0 ]]; then echo "ok   $t ($p passed, $s skipped, ${secs}s)"; else echo "ok   $t ($p passed, ${secs}s)"; fi
  fi
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); total_skip=$((total_skip + s))
done
line="$total_pass passed, $total_fail failed"
[[ $total_skip -ne 0 ]] && line="$line, $total_skip skipped"
echo "$suite: $line" > "$logdir/$suite.summary"
echo "$line"
[[ $total_fail -eq 0 ]]
