#!/usr/bin/env bash
# Replays the committed traces with pkvm-replay (one case per trace); every
# step must match the model and the trace's expected errno.
set -uo pipefail
cd "$(dirname "$0")/../.."
pass=0 fail=0
for t in tests/mem_protect/traces/*.textproto; do
  if out/host/tools/pkvm-replay "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $t"; fi
  out/host/tools/pkvm-replay --exclusive_aborts "$t" >/dev/null || { fail=$((fail + 1)); echo "FAIL $t (exclusive aborts)"; }
done
echo "RESULT: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
