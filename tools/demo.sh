#!/usr/bin/env bash
# `ninja demo`: boots Debian's arm64 kernel under the EL2 payload on QEMU virt
# (2 CPUs, 1 GiB, GICv3, cortex-a72) with the demo initramfs
# (tests/qemu/guest/demo.sh): loads pkvm_host, shows the ABI and statistics,
# shares a page and proves the hypervisor sees it (checksum), donates a page
# and shows a kernel and a userspace access refused while the system keeps
# running, reclaims it, prints the host stage-2 dump and the statistics.
# Writes the dumps as SVG maps (out/demo/host_stage2.svg while pages are
# donated and shared, host_stage2_final.svg at the end) and exits 0 only
# when every step succeeded and the payload printed its statistics at
# power-off.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p out/demo
log=out/demo/demo.log svg=out/demo/host_stage2.svg
echo "demo: booting out/nvhe/pkvm-linux.img (payload + Debian $(. out/arm64.env; echo "$PKVM_KERNEL_ABI"))"
echo "demo: QEMU virt, virtualization=on, 2 x cortex-a72, 1 GiB; console below (kernel noise filtered)"
echo "----------------------------------------------------------------------"
bash tools/qemu_boot.sh "$log" 180 out/nvhe/pkvm-linux.img out/host_driver/demo-initramfs.cpio.gz \
  "console=ttyAMA0 panic=-1 quiet pkvm.test_exit" -cpu cortex-a72 -smp 2 -m 1G
rc=$?
tr -d '\r' <"$log" | grep -E '^\[pkvm\]|^DEMO|^S2|^PKVMTEST: done'
echo "----------------------------------------------------------------------"
ok=1
for re in '\[pkvm\] pKVM-style EL2 payload' 'DEMO: ok module loaded' \
          'DEMO: ok checksum matches' 'DEMO: ok page donated' 'DEMO: ok kernel access refused' \
          'DEMO: ok userspace access refused' 'DEMO: ok the hypervisor and the kernel keep running' \
          'DEMO: ok page reclaimed' 'DEMO: ok userspace access works again' \
          'DEMO: ok guest page reclaimed after the guest was destroyed' '^S2-END' \
          "DEMO: ok the hypervisor's counts equal the module's" 'PKVMTEST: done' '\[pkvm\] stats: host aborts'; do
  grep -qE "$re" "$log" || { echo "demo: missing: $re"; ok=0; }
done
grep -q 'DEMO: FAILED' "$log" && { grep 'DEMO: FAILED' "$log"; ok=0; }
[[ $rc -eq 0 ]] || { echo "demo: QEMU exited with $rc"; ok=0; }
if out/host/tools/dump_svg --index 0 --title "pKVM host stage-2 during the demo (pages donated and shared)" \
     -o "$svg" "$log" &&
   out/host/tools/dump_svg --title "pKVM host stage-2 at the end of the demo" -o "${svg%.svg}_final.svg" "$log"; then
  echo "demo: host stage-2 maps: $svg (pages donated and shared), ${svg%.svg}_final.svg (at the end)"
else
  echo "demo: could not draw the host stage-2 map"; ok=0
fi
if ((ok)); then echo "demo: success (full log: $log)"; exit 0; fi
echo "demo: FAILED (full log: $log)"; exit 1
