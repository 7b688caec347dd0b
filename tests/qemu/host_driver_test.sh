#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The host driver's in-guest suites (part of `ninja check`). Boots QEMU with
# the host_driver initramfs (tests/qemu/guest/hd_init.sh) in several
# configurations; the guest prints one "PKVMTEST: ok|FAIL NAME" line per case
# and this script counts them, adds its own per-boot checks (QEMU exit code,
# the run reached its end, no kernel panic, no hypervisor panic, the payload
# printed its statistics at power-off) and prints "RESULT: N passed, N failed".
# Logs are kept in out/test-logs/host_driver/ (failing boots are also shown).
#
#   tests/qemu/host_driver_test.sh [--bench] [--only NAME]
#     --bench  also run `pkvmctl bench` (one extra boot) and show its table
#     --only   run one boot: suite, smp2, smp4, product, nohyp, kvm, bench
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
source out/arm64.env
# HD_TEST_IMG / HD_PROD_IMG: try other payload builds (e.g. a fix in progress).
test_img=${HD_TEST_IMG:-out/nvhe/pkvm-linux-test.img}
prod_img=${HD_PROD_IMG:-out/nvhe/pkvm-linux.img}
initrd=out/host_driver/initramfs.cpio.gz
svg_tool=out/host/tools/dump_svg
logs=out/test-logs/host_driver; mkdir -p "$logs"
base_append="console=ttyAMA0 panic=-1 quiet"
pass=0 fail=0
bench=0 only=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --bench) bench=1 ;;
    --only) only=$2; shift ;;
    *) echo "usage: $0 [--bench] [--only NAME]" >&2; exit 2 ;;
  esac
  shift
done

for f in "$test_img" "$prod_img" "$initrd" "$svg_tool" "$PKVM_IMAGE"; do
  [[ -f $f ]] || { echo "host_driver_test: missing $f (ninja host-driver-built)"; echo "RESULT: 0 passed, 1 failed"; exit 1; }
done

host_case() {  # host_case NAME OK(0|1) WHY
  if [[ $2 -eq 0 ]]; then
    pass=$((pass + 1)); echo "ok   host_driver/$1"
  else
    fail=$((fail + 1)); echo "FAIL host_driver/$1: $3"
  fi
}

# boot NAME PAYLOAD(yes|no) TIMEOUT KERNEL APPEND [QEMU ARGS]: one boot; counts
# the guest's PKVMTEST lines and adds the per-boot checks.
boot() {
  local name=$1 payload=$2 tmo=$3 kernel=$4 append=$5; shift 5
  [[ -n $only && $only != "$name" ]] && return 0
  local log=$logs/$name.log start=$SECONDS
  bash tools/qemu_boot.sh "$log" "$tmo" "$kernel" "$initrd" "$append" "$@"
  local rc=$?
  tr -d '\r' <"$log" >"$log.tmp" && mv "$log.tmp" "$log"
  local p f
  p=$(grep -c '^PKVMTEST: ok ' "$log")
  f=$(grep -c '^PKVMTEST: FAIL ' "$log")
  pass=$((pass + p)); fail=$((fail + f))
  grep '^PKVMTEST: FAIL ' "$log" | sed "s/^PKVMTEST: FAIL /FAIL $name\//"
  local why=""
  [[ $rc -eq 0 ]] || why="QEMU exited with $rc"
  grep -q '^PKVMTEST: done' "$log" || why="${why:+$why; }the guest did not reach its end"
  # The guest counts the case lines it printed: a line garbled on the way
  # (and so not counted here) fails the boot instead of silently vanishing.
  local emitted
  emitted=$(sed -n 's/^PKVMTEST: done cases=\([0-9]*\)$/\1/p' "$log")
  [[ -n $emitted && $emitted -eq $((p + f)) ]] ||
    why="${why:+$why; }the guest printed ${emitted:-an unreadable number of} case lines, $((p + f)) arrived intact"
  grep -q 'Kernel panic' "$log" && why="${why:+$why; }kernel panic"
  grep -q 'HYPERVISOR PANIC' "$log" && why="${why:+$why; }hypervisor panic"
  if [[ $payload == yes ]]; then
    grep -q '^\[pkvm\] stats: host aborts' "$log" || why="${why:+$why; }no payload statistics at power-off"
  fi
  host_case "$name/boot" "$([[ -z $why ]] && echo 0 || echo 1)" "$why (log: $log)"
  [[ -n $why ]] && tail -25 "$log" | sed 's/^/    /'
  echo "     $name: $p guest cases passed, $f failed, $((SECONDS - start)) s"
}

test_append="$base_append pkvm.test_exit"
# 1. Everything on 2 CPUs, test payload.
boot suite yes 300 "$test_img" "$test_append hdtest=suite" -cpu cortex-a72 -smp 2 -m 1G
# The dump printed by the suite, as an SVG map.
if [[ -z $only || $only == suite ]]; then
  svg=$logs/host_stage2.svg
  if "$svg_tool" -o "$svg" "$logs/suite.log" 2>/dev/null && grep -q '<svg' "$svg" &&
     [[ $(grep -c '<rect' "$svg") -gt 10 ]] && grep -q 'hyp owned' "$svg"; then
    host_case suite/dump-svg 0 ""
  else
    host_case suite/dump-svg 1 "dump_svg did not produce a map from $logs/suite.log"
  fi
fi
# 2. SMP stress on 2 and 4 CPUs.
boot smp2 yes 120 "$test_img" "$test_append hdtest=smp hdsecs=8 hdseed=2" -cpu cortex-a72 -smp 2 -m 1G
boot smp4 yes 180 "$test_img" "$test_append hdtest=smp hdsecs=12 hdseed=4" -cpu cortex-a72 -smp 4 -m 1G
# 3. The production payload: no test-only calls.
boot product yes 120 "$prod_img" "$test_append hdtest=product" -cpu cortex-a72 -smp 2 -m 1G
# 4. No hypervisor: plain Linux at EL1 on a CPU without EL2.
boot nohyp no 90 "$PKVM_IMAGE" "$base_append hdtest=nohyp" -cpu cortex-a72 -smp 1 -m 1G \
  -M virt,virtualization=off
# 5. EL2 taken by something else: Linux at EL2 with KVM (nVHE on cortex-a72).
boot kvm no 90 "$PKVM_IMAGE" "$base_append hdtest=kvm" -cpu cortex-a72 -smp 1 -m 1G
if [[ $bench -eq 1 || $only == bench ]]; then
  only_saved=$only; only=""
  boot bench yes 180 "$test_img" "$test_append hdtest=bench" -cpu cortex-a72 -smp 2 -m 1G
  only=$only_saved
  grep -E '^(bench:|operation|null |share|donate|create)' "$logs/bench.log"
fi

echo "RESULT: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
