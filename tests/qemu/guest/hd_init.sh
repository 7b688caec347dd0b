#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# /init of the host_driver test initramfs (pkvm_host.ko, pkvm_host_example.ko,
# pkvmctl). The scenario comes from the kernel command line (hdtest=NAME):
#   suite    module load checks, pkvmctl selftest, the API example module, a
#            CLI walk-through, fuzz, SMP stress, dump, statistics, unload with
#            pages still shared/donated/pinned and reload  (test payload)
#   smp      SMP stress on every CPU, fuzz, statistics    (test payload)
#   product  the module on the production payload (no test-only calls)
#   nohyp    plain Linux at EL1 with no EL2: the module must refuse to load
#   kvm      Linux booted at EL2 (KVM owns EL2): the module must refuse
#   bench    pkvmctl bench
# Every case prints "PKVMTEST: ok NAME" or "PKVMTEST: FAIL NAME: why";
# tests/qemu/host_driver_test.sh counts them.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
export PATH=/bin:/sbin
# Kernel messages below KERN_EMERG stay in the ring buffer (the has checks
# read dmesg) and off the console: the kernel writes to the UART directly, so
# a message could land inside a PKVMTEST line and hide that case from the
# host's count (the suite once reported 394 cases instead of 395). Panics
# (KERN_EMERG) still reach the console.
echo 1 > /proc/sys/kernel/printk
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
ok() { echo "PKVMTEST: ok $1"; }
# A failing case also shows the end of the kernel log (kept off the console).
bad() { echo "PKVMTEST: FAIL $1: $2"; dmesg | tail -15 | sed 's/^/    dmesg: /'; }
# check NAME CMD...: the command must exit 0 (its output is shown indented).
check() {
  n=$1; shift
  out=$("$@" 2>&1); rc=$?
  [ -n "$out" ] && echo "$out" | sed 's/^/    /'
  if [ $rc -eq 0 ]; then ok "$n"; else bad "$n" "'$*' exited $rc"; fi
}
# refuse NAME CMD...: the command must fail.
refuse() {
  n=$1; shift
  out=$("$@" 2>&1); rc=$?
  [ -n "$out" ] && echo "$out" | sed 's/^/    /'
  if [ $rc -ne 0 ]; then ok "$n"; else bad "$n" "'$*' succeeded"; fi
}
# has NAME REGEX: dmesg must match.
has() { if dmesg | grep -qE "$2"; then ok "$1"; else bad "$1" "dmesg lacks /$2/"; fi; }
buf_of() { sed -n 's/^buffer \([0-9]*\):.*/\1/p'; }

scenario=$(arg hdtest)
echo "PKVMTEST: init reached, scenario=$scenario"
echo "PKVMTEST: cpus online=$(grep -c ^processor /proc/cpuinfo)"

# The scenario runs through tee: its case lines are counted here, from a clean
# copy, and the count is printed with "done" so the host can tell when a case
# line did not reach it intact.
{
case "$scenario" in
  suite)
    refuse modload/refuses-incompatible-abi-major insmod /pkvm_host.ko test_abi_major=2
    has modload/says-why 'pkvm_host: hypervisor ABI [0-9]+\.[0-9]+ is incompatible with this module'
    check modload/loads insmod /pkvm_host.ko
    has modload/reports-version 'pkvm_host: pKVM hypervisor ABI [0-9]+\.[0-9]+ .*test calls: yes'
    if ls -l /dev/pkvm-host | grep -q '^crw-------'; then ok modload/device-root-only; else bad modload/device-root-only "$(ls -l /dev/pkvm-host)"; fi
    check modload/info pkvmctl info

    pkvmctl selftest

    # The in-kernel API, used by another module.
    insmod /pkvm_host_example.ko
    dmesg | sed -n 's/.*pkvm_host_example: PASS \(.*\)$/PKVMTEST: ok api\/\1/p' | tr ' ' '-' | sed 's/PKVMTEST:-ok-/PKVMTEST: ok /'
    dmesg | sed -n 's/.*pkvm_host_example: FAIL \(.*\)$/PKVMTEST: FAIL api\/\1/p'
    has api/all-steps-passed 'pkvm_host_example: all steps passed'
    check api/unload-example rmmod pkvm_host_example

    # pkvmctl as a shell tool.
    B=$(pkvmctl alloc 8 | buf_of)
    if [ -n "$B" ]; then ok cli/alloc; else bad cli/alloc "no buffer id"; fi
    check cli/fill pkvmctl fill --buf "$B" --page 0 --seed 5
    check cli/share pkvmctl share --buf "$B" --page 0 --expect 0
    check cli/checksum-matches pkvmctl checksum --buf "$B" --page 0
    check cli/double-share-refused pkvmctl share --buf "$B" --page 0 --expect EPERM
    check cli/unshare pkvmctl unshare --buf "$B" --page 0 --expect 0
    check cli/donate pkvmctl donate --buf "$B" --page 1 --expect 0
    check cli/donated-touch-refused pkvmctl touch --buf "$B" --page 1 --expect refused
    check cli/donated-ktouch-refused pkvmctl ktouch --buf "$B" --page 1 --expect refused
    check cli/still-running pkvmctl call null --expect 0
    check cli/reclaim pkvmctl reclaim --buf "$B" --page 1 --expect 0
    check cli/reclaimed-touch-works pkvmctl touch --buf "$B" --page 1 --write 0x1234 --expect ok
    G=$(pkvmctl guest create | sed -n 's/^guest \([0-9]*\) created/\1/p')
    if [ -n "$G" ]; then ok cli/guest-create; else bad cli/guest-create "no guest id"; fi
    check cli/donate-guest pkvmctl donate --buf "$B" --page 2 --guest "$G" --gfn 0 --expect 0
    check cli/reclaim-live-guest-refused pkvmctl reclaim --buf "$B" --page 2 --guest "$G" --expect EBUSY
    check cli/guest-share-host pkvmctl guest share-host "$G" --gfn 0 --expect 0
    check cli/borrowed-touch-works pkvmctl touch --buf "$B" --page 2 --expect ok
    check cli/guest-destroy pkvmctl guest destroy "$G" --expect 0
    check cli/reclaim-guest pkvmctl reclaim --buf "$B" --page 2 --guest "$G" --expect 0
    check cli/unknown-function-id pkvmctl call --id 0xc6000099 --expect NOT_SUPPORTED
    check cli/raw-mmio-refused pkvmctl share --pfn 0x9000 --expect EINVAL
    check cli/buffer pkvmctl buffer "$B"
    check cli/free pkvmctl free "$B"
    for c in info stats dump alloc free buffer fill share unshare donate reclaim pin unpin checksum guest call \
             touch ktouch selftest fuzz stress bench; do
      pkvmctl "$c" --help >/dev/null 2>&1 || bad "cli/help-$c" "pkvmctl $c --help failed"
    done
    ok cli/help

    pkvmctl fuzz --seed 1 --count 20000
    pkvmctl fuzz --seed 2 --count 20000
    pkvmctl stress --seconds 10 --seed 1

    pkvmctl dump
    check stats/check pkvmctl stats --check

    # Unload with pages still shared, pinned, donated and given to guests:
    # the module must give everything back, then load again cleanly.
    B=$(pkvmctl alloc 8 | buf_of)
    pkvmctl share --buf "$B" --page 0 >/dev/null
    pkvmctl pin --buf "$B" --page 0 --repeat 2 >/dev/null
    pkvmctl donate --buf "$B" --page 1 >/dev/null
    G=$(pkvmctl guest create | sed -n 's/^guest \([0-9]*\) created/\1/p')
    pkvmctl donate --buf "$B" --page 2 --guest "$G" --gfn 0 >/dev/null
    pkvmctl share --buf "$B" --page 3 --guest "$G" --gfn 1 >/dev/null
    G2=$(pkvmctl guest create | sed -n 's/^guest \([0-9]*\) created/\1/p')
    pkvmctl donate --buf "$B" --page 4 --guest "$G2" --gfn 0 >/dev/null
    pkvmctl guest destroy "$G2" >/dev/null
    check unload/state-before pkvmctl buffer "$B"
    check unload/rmmod rmmod pkvm_host
    if dmesg | grep -q 'pkvm_host: .*leaking'; then bad unload/nothing-leaked "$(dmesg | grep leaking)"; else ok unload/nothing-leaked; fi
    check unload/reload insmod /pkvm_host.ko
    own=$(pkvmctl dump --ownership | grep '^S2 0x' | grep -v ' hyp ')
    if [ -z "$own" ]; then ok unload/everything-returned; else bad unload/everything-returned "$own"; fi
    check unload/stats-after-reload pkvmctl stats --check
    ;;
  smp)
    check modload/loads insmod /pkvm_host.ko
    pkvmctl stress --seconds "$(arg hdsecs)" --seed "$(arg hdseed)"
    pkvmctl fuzz --seed "$(arg hdseed)" --count 10000
    check stats/check pkvmctl stats --check
    ;;
  product)
    check modload/loads insmod /pkvm_host.ko
    has modload/reports-no-test-calls 'pkvm_host: pKVM hypervisor ABI .*test calls: no'
    check product/info-says-no-test-calls sh -c 'pkvmctl info | grep -q "test-only calls: *no"'
    refuse product/test-call-refused-by-module pkvmctl guest share-host 2 --gfn 0
    check product/guest-share-host-id-unknown pkvmctl call --id 0xc600000a --expect NOT_SUPPORTED
    check product/inject-alloc-failure-id-unknown pkvmctl call --id 0xc6000100 --expect NOT_SUPPORTED
    B=$(pkvmctl alloc 4 | buf_of)
    check product/fill pkvmctl fill --buf "$B" --page 0 --seed 3
    check product/share pkvmctl share --buf "$B" --page 0 --expect 0
    check product/checksum-matches pkvmctl checksum --buf "$B" --page 0
    check product/unshare pkvmctl unshare --buf "$B" --page 0 --expect 0
    check product/donate pkvmctl donate --buf "$B" --page 1 --expect 0
    check product/touch-refused pkvmctl touch --buf "$B" --page 1 --expect refused
    check product/reclaim pkvmctl reclaim --buf "$B" --page 1 --expect 0
    check product/free pkvmctl free "$B"
    pkvmctl fuzz --seed 4 --count 3000
    check stats/check pkvmctl stats --check
    ;;
  nohyp|kvm)
    refuse "$scenario/module-refuses-to-load" insmod /pkvm_host.ko
    if [ "$scenario" = nohyp ]; then
      has nohyp/says-no-el2 'pkvm_host: the CPU has no EL2 .*not loading'
    else
      has kvm/kernel-owns-el2 'kvm \[[0-9]+\]: .*(Hyp|nVHE) mode initialized'
      has kvm/says-not-pkvm 'pkvm_host: EL2 is not the pKVM hypervisor'
    fi
    if [ -e /dev/pkvm-host ]; then bad "$scenario/no-device" "/dev/pkvm-host exists"; else ok "$scenario/no-device"; fi
    if lsmod 2>/dev/null | grep -q pkvm_host || grep -q pkvm_host /proc/modules; then
      bad "$scenario/not-loaded" "pkvm_host is loaded"
    else
      ok "$scenario/not-loaded"
    fi
    ;;
  bench)
    check modload/loads insmod /pkvm_host.ko
    pkvmctl bench
    ;;
  *)
    bad scenario "unknown scenario '$scenario'"
    ;;
esac
# The kernel is alive enough to run a new process after everything above.
if sh -c 'exit 7'; [ $? -eq 7 ]; then ok "$scenario/kernel-alive"; else bad "$scenario/kernel-alive" "sh failed"; fi
} 2>&1 | tee /tmp/cases.out
echo "PKVMTEST: done cases=$(grep -cE '^PKVMTEST: (ok|FAIL) ' /tmp/cases.out)"
poweroff -f
