#!/usr/bin/env bash
# The QEMU boot suite of the EL2 payload (check-qemu). Each case boots
# Debian's arm64 kernel under the payload and checks the console markers.
# Prints "RESULT: N passed, N failed"; logs of failing cases are kept in
# out/test-logs/qemu/.
set -uo pipefail
cd "$(dirname "$0")/../.."
img=out/nvhe/pkvm-linux.img
initrd=out/qemu/initramfs.cpio.gz
logs=out/test-logs/qemu; mkdir -p "$logs"
pass=0 fail=0
base_append="console=ttyAMA0 panic=-1 pkvm.test_exit"

# check NAME LOG EXPECTED_RC REGEX... : all regexes must match the log.
check() {
  local name=$1 log=$2 want_rc=$3 rc=$4; shift 4
  local ok=1 why=""
  [[ $rc -eq $want_rc ]] || { ok=0; why="exit $rc, expected $want_rc"; }
  for re in "$@"; do
    grep -qE "$re" "$log" || { ok=0; why="${why:+$why; }missing /$re/"; }
  done
  if ((ok)); then
    pass=$((pass + 1)); echo "ok   qemu/$name"; rm -f "$log"
  else
    fail=$((fail + 1)); echo "FAIL qemu/$name: $why (log: $log)"; tail -20 "$log" | sed 's/^/    /'
  fi
}

boot_case() {  # boot_case NAME CPU SMP MEM EXTRA_APPEND [QEMU ARGS]
  local name=$1 cpu=$2 smp=$3 mem=$4 extra=$5; shift 5
  local log=$logs/$name.log
  bash tools/qemu_boot.sh "$log" 120 "$img" "$initrd" "$base_append pkvmtest=boot $extra" \
    -cpu "$cpu" -smp "$smp" -m "$mem" "$@"
  check "$name" "$log" 0 $? '\[pkvm\] pKVM-style EL2 payload' "PKVMTEST: cpus online=$smp"$'\r'"?\$" \
    '\[pkvm\] entering Linux at EL1: payload boot took [0-9]+ us \(counter at entry [0-9]+ us\)' \
    'PKVMTEST: All CPU\(s\) started at EL1' 'PKVMTEST: done' '\[pkvm\] stats: host aborts'
}

boot_case smp1-a72-1g cortex-a72 1 1G ""
boot_case smp2-a72-1g cortex-a72 2 1G ""
boot_case smp4-a72-1g cortex-a72 4 1G ""
boot_case smp2-max-1g max,pauth-impdef=on 2 1G ""
boot_case smp2-a72-3g-highmem cortex-a72 2 3G "" -M virt,virtualization=on,gic-version=3,highmem=on

# The EL2 ownership self-test at boot.
log=$logs/selftest.log
bash tools/qemu_boot.sh "$log" 120 "$img" "$initrd" "$base_append pkvmtest=boot pkvm.selftest" -cpu cortex-a72 -smp 2 -m 1G
check selftest "$log" 0 $? '\[pkvm\] ownership self-test: passed \(0\)' 'PKVMTEST: done'

# The host stage 2 is enforced: a real EL1 read of the payload's own memory
# (QEMU virt loads it at 0x40200000) is refused with an injected external
# abort, and both Linux and EL2 keep running.
log=$logs/s2probe.log
bash tools/qemu_boot.sh "$log" 120 "$img" "$initrd" "$base_append pkvmtest=s2probe pkvmprobe=0x40200000" \
  -cpu cortex-a72 -smp 2 -m 1G
check s2-enforced "$log" 0 $? 's2probe: reading 0x40200000' 'PKVMTEST: probe refused by an external abort' \
  'PKVMTEST: still running after the abort' 'PKVMTEST: done' 'sea=[1-9]'
grep -q 'PKVMTEST: probe NOT refused' "$logs/s2probe.log" 2>/dev/null && { echo "FAIL: probe read went through"; fail=$((fail + 1)); }

# A Linux panic must fail the run (reset trapped in test mode -> exit 1).
log=$logs/panic.log
bash tools/qemu_boot.sh "$log" 120 "$img" "$initrd" "$base_append pkvmtest=panic" -cpu cortex-a72 -smp 1 -m 1G
check panic-fails-run "$log" 1 $? 'Kernel panic' 'host requested a reset: treating it as a failure'

# A malformed DTB: a clear message and a clean stop (exit 2), no Linux. QEMU
# itself must accept the blob (it edits /chosen with libfdt), so the defect is
# one only a bounded reader refuses: nodes nested deeper than its limit.
log=$logs/bad-dtb.log
dtb=out/qemu/virt.dtb bad=out/qemu/bad.dtb
qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,dumpdtb="$dtb" -cpu cortex-a72 -m 1G -nic none >/dev/null 2>&1
{
  dtc -q -I dtb -O dts "$dtb" | sed '$d'
  for i in $(seq 1 24); do echo "n$i {"; done
  echo 'deep = <1>;'
  for i in $(seq 1 24); do echo "};"; done
  echo "};"
} | dtc -q -I dts -O dtb -o "$bad" -
bash tools/qemu_boot.sh "$log" 60 "$img" "$initrd" "$base_append" -cpu cortex-a72 -smp 1 -m 1G -dtb "$bad"
check malformed-dtb "$log" 2 $? '\[pkvm\] error: malformed DTB: fdt: ' '\[pkvm\] stopped \(code 2\)'
grep -q 'Booting Linux' "$logs/malformed-dtb.log" 2>/dev/null && { echo "FAIL: Linux ran with a bad DTB"; fail=$((fail + 1)); }

echo "RESULT: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
