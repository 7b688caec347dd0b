#!/bin/sh
# /init of the test initramfs. The scenario comes from the kernel command
# line (pkvmtest=NAME); every line the harness checks starts with "PKVMTEST:".
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
scenario=$(arg pkvmtest)
echo "PKVMTEST: init reached, scenario=$scenario"
echo "PKVMTEST: cpus online=$(grep -c ^processor /proc/cpuinfo)"
dmesg | grep -o "All CPU(s) started at EL[12]" | sed 's/^/PKVMTEST: /'
dmesg | grep -o "CPU(s) started in inconsistent modes" | sed 's/^/PKVMTEST: /'
case "$scenario" in
  s2probe)
    pa=$(arg pkvmprobe)
    insmod /s2probe.ko pa="$pa"
    echo "PKVMTEST: insmod returned $?"
    dmesg | grep -q "s2probe: read .* (not refused)" && echo "PKVMTEST: probe NOT refused"
    dmesg | grep -qi "synchronous external abort" && echo "PKVMTEST: probe refused by an external abort"
    echo "PKVMTEST: still running after the abort"
    ;;
  panic)
    echo "PKVMTEST: triggering a kernel panic"
    echo c > /proc/sysrq-trigger
    ;;
esac
echo "PKVMTEST: done"
poweroff -f
