#!/bin/sh
# /init of the benchmark initramfs: the boot-to-init time first, then the
# workloads, then the hypervisor's own calls when the payload is there.
# With the payload (pkvmbench=counts or =hyp) the host driver is loaded before
# the workloads and the hypervisor's host stage-2 abort count is printed
# around each one ("BENCHABORTS: <after> <total>"): the aborts each workload
# cost. pkvmbench=hyp then also runs the hypervisor-call benchmark.
/workload boot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
counts=0
if grep -q "pkvmbench=" /proc/cmdline && [ -x /pkvmctl ] && insmod /pkvm_host.ko; then counts=1; fi
aborts() {
  [ $counts = 1 ] || return 0
  /pkvmctl stats | sed -n 's/^host stage-2 aborts: *L0=\([0-9]*\) L1=\([0-9]*\) L2=\([0-9]*\) L3=\([0-9]*\).*/\1 \2 \3 \4/p' |
    awk -v w="$1" '{ print "BENCHABORTS: " w " " $1 + $2 + $3 + $4 }'
}
aborts start
/workload touch
aborts touch_512m
/workload forkexec
aborts forkexec_200
/workload memcpy
aborts memcpy_64m_x4
if [ $counts = 1 ] && grep -q "pkvmbench=hyp" /proc/cmdline; then
  /pkvmctl bench
fi
echo "BENCH: done"
poweroff -f
