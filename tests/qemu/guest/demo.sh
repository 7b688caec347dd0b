#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# /init of the demo initramfs (`ninja demo`, tools/demo.sh): loads pkvm_host,
# shows the hypervisor's ABI and statistics, shares a page and proves the
# hypervisor sees its content, donates a page and shows that both a kernel
# and a userspace access are refused while the system keeps running,
# reclaims it, prints the host stage-2 dump (tools/dump_svg turns it into an
# SVG) and the statistics, and powers off. Narration lines start with "DEMO:";
# tools/demo.sh checks the "DEMO: ok ..." markers.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
export PATH=/bin:/sbin
say() { echo "DEMO: $*"; }
# run CMD...: shows the command and its output; returns its exit code.
run() {
  echo "DEMO: \$ $*"
  out=$("$@" 2>&1); rc=$?
  [ -n "$out" ] && echo "$out" | sed 's/^/DEMO:   /'
  return $rc
}
mark() { if [ "$1" -eq 0 ]; then say "ok $2"; else say "FAILED $2"; fi; }

say "Linux $(uname -r) at EL1 on $(grep -c ^processor /proc/cpuinfo) CPUs, under the EL2 payload"
say "1. Load the host driver: it checks for EL2 and the hypervisor's ABI version"
run insmod /pkvm_host.ko; mark $? "module loaded"
dmesg | grep 'pkvm_host: pKVM' | sed 's/^.*pkvm_host:/DEMO:   pkvm_host:/'
run pkvmctl info
run pkvmctl stats

B=$(pkvmctl alloc 4 | sed -n 's/^buffer \([0-9]*\):.*/\1/p')
say "2. Share a page with the hypervisor; it checksums what the host wrote (test buffer $B)"
run pkvmctl fill --buf "$B" --page 0 --seed 0xfeed
run pkvmctl share --buf "$B" --page 0
run pkvmctl checksum --buf "$B" --page 0; mark $? "checksum matches: the hypervisor sees the shared page"
run pkvmctl unshare --buf "$B" --page 0

say "3. Donate a page to the hypervisor: the host loses access to it"
run pkvmctl fill --buf "$B" --page 1 --seed 0xbeef
run pkvmctl donate --buf "$B" --page 1; mark $? "page donated"
run pkvmctl checksum --buf "$B" --page 1
run pkvmctl ktouch --buf "$B" --page 1 --expect refused; mark $? "kernel access refused (external abort; only the probe thread died)"
run pkvmctl touch --buf "$B" --page 1 --expect refused; mark $? "userspace access refused (SIGBUS, caught)"
run pkvmctl call null --expect 0; mark $? "the hypervisor and the kernel keep running"
say "   ... and give a guest one page, lend it another, lend the hypervisor a third"
G=$(pkvmctl guest create | sed -n 's/^guest \([0-9]*\) created/\1/p')
run pkvmctl donate --buf "$B" --page 2 --guest "$G" --gfn 0
run pkvmctl share --buf "$B" --page 3 --guest "$G" --gfn 1
run pkvmctl share --buf "$B" --page 0
run pkvmctl buffer "$B"
say "   the host stage-2 now (tools/dump_svg draws this one as out/demo/host_stage2.svg):"
pkvmctl dump

say "4. Take everything back: the pages return to the host, wiped, and work again"
run pkvmctl reclaim --buf "$B" --page 1; mark $? "page reclaimed"
run pkvmctl touch --buf "$B" --page 1; mark $? "userspace access works again"
if pkvmctl touch --buf "$B" --page 1 | grep -q ': 0x0$'; then
  say "the page reads back as zero: the hypervisor wiped it"
else
  say "WARNING: the page still holds data after hyp_donate_host (the ABI says it is zeroed)"
fi
run pkvmctl unshare --buf "$B" --page 0
run pkvmctl guest destroy "$G"
run pkvmctl reclaim --buf "$B" --page 2 --guest "$G"; mark $? "guest page reclaimed after the guest was destroyed"
run pkvmctl touch --buf "$B" --page 2 --expect ok
run pkvmctl buffer "$B"
run pkvmctl free "$B"

say "5. The host stage-2 at the end: the hypervisor's own memory, the rest the host's"
pkvmctl dump
say "6. Statistics"
run pkvmctl stats --check; mark $? "the hypervisor's counts equal the module's"
say "done: powering off"
echo "PKVMTEST: done"
poweroff -f
