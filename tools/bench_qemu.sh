#!/usr/bin/env bash
# The QEMU half of `ninja bench`: the same Debian kernel and initramfs in four
# configurations, interleaved A B C D A B C D ... for ROUNDS rounds, with 1
# and 2 CPUs (cortex-a72, TCG: ratios only, absolute times do not port):
#   A bare      -M virt (no EL2), kernel at EL1
#   B nvhe-kvm  kernel at EL2, KVM in its default (nVHE) mode
#   C pkvm      kernel at EL2, kvm-arm.mode=protected
#   D ours      the payload at EL2, kernel at EL1
#   E ours-excl D with host aborts serialised on the exclusive lock
#               (pkvm.exclusive_aborts: upstream pKVM's locking), to
#               measure the shared-lock abort path
# Prints medians (min-max) per workload, the ratios D/A, D/C, C/A, E/D with the
# targets (D/A <= 1.03, D <= C), and the payload's own counters.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${BENCH_ROUNDS:-5}
out=out/bench/qemu; mkdir -p "$out"
raw=$out/raw.tsv; : > "$raw"; : > "$out/aborts.tsv"
# shellcheck disable=SC1091
source out/arm64.env
img_d=out/nvhe/pkvm-linux.img
initrd=out/bench/initramfs.cpio.gz
common="console=ttyAMA0 panic=-1 quiet"

run() {  # run CFG CPUS ROUND
  local cfg=$1 cpus=$2 round=$3 log=$out/$1-$2-$3.log machine kernel append
  case $cfg in
    A) machine=virt,gic-version=3; kernel=$PKVM_IMAGE; append=$common ;;
    B) machine=virt,virtualization=on,gic-version=3; kernel=$PKVM_IMAGE; append=$common ;;
    C) machine=virt,virtualization=on,gic-version=3; kernel=$PKVM_IMAGE; append="$common kvm-arm.mode=protected" ;;
    D) machine=virt,virtualization=on,gic-version=3; kernel=$img_d; append="$common pkvm.test_exit pkvmbench=hyp" ;;
    E) machine=virt,virtualization=on,gic-version=3; kernel=$img_d; append="$common pkvm.test_exit pkvm.exclusive_aborts pkvmbench=counts" ;;
  esac
  timeout --kill-after=5 300 qemu-system-aarch64 -M "$machine" -cpu cortex-a72 -smp "$cpus" -m 1G -nic none \
    -nographic -monitor none -serial stdio -no-reboot -semihosting-config enable=on,target=native \
    -kernel "$kernel" -initrd "$initrd" -append "$append" </dev/null >"$log" 2>&1
  local rc=$?
  if [[ $rc -ne 0 ]] || ! grep -q "BENCH: done" "$log"; then
    echo "bench: $cfg cpus=$cpus round $round failed (exit $rc), log $log" >&2
    return 1
  fi
  tr -d '\r' < "$log" | awk -v c="$cfg" -v n="$cpus" -v r="$round" '$1 == "BENCH:" && NF == 3 { print c "\t" n "\t" r "\t" $2 "\t" $3 }' >> "$raw"
  # pkvmctl bench: PKVMBENCH op="..." ... median=TICKS ... freq=HZ (D only).
  tr -d '\r' < "$log" | sed -n 's/^PKVMBENCH op="\([^"]*\)".* median=\([0-9]*\).* freq=\([0-9]*\).*/\1\t\2\t\3/p' |
    awk -F'\t' -v c="$cfg" -v n="$cpus" -v r="$round" '{ gsub(/[^A-Za-z0-9]+/, "_", $1); printf "%s\t%s\t%s\thyp_%s\t%.9f\n", c, n, r, $1, $2 / $3 }' >> "$raw"
  [[ $cfg == D ]] && tr -d '\r' < "$log" | grep '^\[pkvm\] stats:' | tail -1 > "$out/D-$cpus-stats.txt"
  # The payload's own share of D's boot_to_init (from its exit message).
  [[ $cfg == D ]] && tr -d '\r' < "$log" |
    sed -n 's/^\[pkvm\] entering Linux at EL1: payload boot took \([0-9]*\) us.*/\1/p' |
    awk -v c="$cfg" -v n="$cpus" -v r="$round" '{ printf "%s\t%s\t%s\thyp_payload_boot_at_EL2\t%.9f\n", c, n, r, $1 / 1e6 }' >> "$raw"
  # Host stage-2 aborts per workload (D and E): differences of the running total.
  [[ $cfg == D || $cfg == E ]] && tr -d '\r' < "$log" |
    awk -v c="$cfg" -v n="$cpus" -v r="$round" '$1 == "BENCHABORTS:" { if (prev != "") print c "\t" n "\t" r "\t" $2 "\t" $3 - prev; prev = $3 }' >> "$out/aborts.tsv"
  return 0
}

fails=0
start=$(date +%s)
for round in $(seq 1 "$rounds"); do
  for cpus in 1 2; do
    for cfg in A B C D E; do run "$cfg" "$cpus" "$round" || fails=$((fails + 1)); done
  done
  echo "bench: round $round/$rounds done ($(( $(date +%s) - start )) s)" >&2
done

summary=$out/summary.txt
{
  echo "QEMU $(qemu-system-aarch64 --version | head -1 | awk '{print $4}'), kernel $PKVM_KERNEL_ABI ($PKVM_KERNEL_VERSION), cortex-a72, 1 GiB, $rounds rounds interleaved A B C D, $(date -u +%F)"
  echo
  # Median and range per (cpus, workload, config).
  sort -t$'\t' -k2,2n -k4,4 -k1,1 -k5,5g "$raw" | awk -F'\t' '
    { key = $2 "\t" $4 "\t" $1; v[key, ++n[key]] = $5; keys[key] = 1 }
    END {
      for (k in keys) {
        c = n[k]; med = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2
        printf "%s\t%.9f\t%.9f\t%.9f\n", k, med, v[k, 1], v[k, c]
      }
    }' | sort -t$'\t' -k1,1n -k2,2 -k3,3 > "$out/medians.tsv"
  printf "%-5s %-22s %-28s %-28s %-28s %-28s %-14s %-14s %-8s %-8s\n" cpus workload "A bare" "B nvhe-kvm" "C pkvm" "D ours" "D/A" "D/C" "C/A" "E/D"
  awk -F'\t' '
    { m[$1 "\t" $2 "\t" $3] = $4; lo[$1 "\t" $2 "\t" $3] = $5; hi[$1 "\t" $2 "\t" $3] = $6
      r[$1 "\t" $2 "\t" $3] = sprintf("%.3f (%.3f-%.3f)", $4, $5, $6); w[$1 "\t" $2] = 1 }
    END {
      for (k in w) {
        split(k, p, "\t"); a = m[k "\tA"]; b = m[k "\tB"]; c = m[k "\tC"]; d = m[k "\tD"]
        da = (a > 0 && d != "") ? d / a : 0; dc = (c > 0 && d != "") ? d / c : 0; ca = (a > 0 && c != "") ? c / a : 0
        if (p[2] ~ /^hyp_/) {
          printf "%-5s %-44s D only: %.1f us (%.1f-%.1f)\n", p[1], p[2], m[k "\tD"] * 1e6, lo[k "\tD"] * 1e6, hi[k "\tD"] * 1e6
          continue
        }
        e = m[k "\tE"]; ed = (d > 0 && e != "") ? e / d : 0
        printf "%-5s %-22s %-28s %-28s %-28s %-28s %-14s %-14s %-8s %-8s\n", p[1], p[2], r[k "\tA"], r[k "\tB"], r[k "\tC"], r[k "\tD"],
          sprintf("%.3f %s", da, da <= 1.03 ? "met" : "NOT met"), sprintf("%.3f %s", dc, dc <= 1.0 ? "met" : "NOT met"),
          sprintf("%.3f", ca), sprintf("%.3f", ed)
      }
    }' "$out/medians.tsv" | sort -k1,1n -k2,2
  echo
  echo "Times in seconds (median (min-max)); targets: D/A <= 1.03, D/C <= 1.00. E/D > 1: the shared-lock abort path helps."
  for cpus in 1 2; do
    [[ -f $out/D-$cpus-stats.txt ]] && echo "D, $cpus CPU(s), last round: $(cat "$out/D-$cpus-stats.txt")"
  done
  # Median host stage-2 aborts per workload over the rounds.
  if [[ -s $out/aborts.tsv ]]; then
    sort -t$'\t' -k1,1 -k2,2n -k4,4 -k5,5n "$out/aborts.tsv" | awk -F'\t' '
      { k = $1 ", " $2 " CPU(s)\t" $4; v[k, ++n[k]] = $5; keys[k] = 1 }
      END { for (k in keys) { c = n[k]; split(k, p, "\t"); printf "%s host stage-2 aborts during %s: %d (median of %d)\n", p[1], p[2], v[k, int((c + 1) / 2)], c } }' | sort
  fi
  [[ $fails -ne 0 ]] && echo "WARNING: $fails boot(s) failed; see $out/*.log"
} | tee "$summary"
[[ $fails -eq 0 ]]
