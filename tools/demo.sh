#!/usr/bin/env bash
# `ninja demo`: boots Debian's arm64 kernel under the EL2 payload on QEMU virt
# (2 CPUs, 1 GiB, GICv3, cortex-a72), shows the console, and exits 0 only
# when the payload came up, Linux reached its init at EL1 on every CPU, and
# the payload printed its statistics at power-off.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p out/demo
log=out/demo/demo.log
echo "demo: booting out/nvhe/pkvm-linux.img (payload + Debian $(. out/arm64.env; echo "$PKVM_KERNEL_ABI"))"
echo "demo: QEMU virt, virtualization=on, 2 x cortex-a72, 1 GiB; console below"
echo "----------------------------------------------------------------------"
bash tools/qemu_boot.sh "$log" 120 out/nvhe/pkvm-linux.img out/demo/initramfs.cpio.gz \
  "console=ttyAMA0 panic=-1 quiet pkvm.test_exit pkvmtest=demo" -cpu cortex-a72 -smp 2 -m 1G
rc=$?
grep -E '^\[pkvm\]|PKVMTEST|DEMO' "$log" | tr -d '\r'
echo "----------------------------------------------------------------------"
ok=1
for re in '\[pkvm\] pKVM-style EL2 payload' 'PKVMTEST: All CPU\(s\) started at EL1' 'PKVMTEST: done' \
          '\[pkvm\] stats: host aborts'; do
  grep -qE "$re" "$log" || { echo "demo: missing: $re"; ok=0; }
done
[[ $rc -eq 0 ]] || { echo "demo: QEMU exited with $rc"; ok=0; }
if ((ok)); then echo "demo: success (full log: $log)"; exit 0; fi
echo "demo: FAILED (full log: $log)"; exit 1
