#!/bin/sh
# /init of the benchmark initramfs: the boot-to-init time first, then the
# workloads, then the hypervisor's own calls when the payload is there.
/workload boot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
/workload touch
/workload forkexec
/workload memcpy
if grep -q "pkvmbench=hyp" /proc/cmdline && [ -x /pkvmctl ]; then
  insmod /pkvm_host.ko && /pkvmctl bench
fi
echo "BENCH: done"
poweroff -f
