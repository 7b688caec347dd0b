#!/usr/bin/env bash
# Usage: qemu_boot.sh LOG TIMEOUT_S KERNEL INITRD APPEND [QEMU ARGS...]
# Boots QEMU virt with EL2 (virtualization=on, GICv3) and semihosting, so the
# payload can end the run with a chosen exit code. The console goes to LOG.
# Exits with QEMU's status (124 on timeout).
set -uo pipefail
log=$1 tmo=$2 kernel=$3 initrd=$4 append=$5; shift 5
timeout --kill-after=5 "$tmo" qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -nic none -nographic \
  -monitor none -serial stdio -no-reboot -semihosting-config enable=on,target=native \
  -kernel "$kernel" -initrd "$initrd" -append "$append" "$@" </dev/null >"$log" 2>&1
