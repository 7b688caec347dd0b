// SPDX-License-Identifier: Apache-2.0
// The PSCI relay. The host's SMCs trap to EL2 (HCR_EL2.TSC). Calls that would
// start a CPU at the host's entry point directly at EL2 (CPU_ON, CPU_SUSPEND,
// SYSTEM_SUSPEND) are rewritten to enter our trampoline first, which sets the
// CPU up at EL2 and then drops to the host's entry at EL1. SMCCC_VERSION and
// SMCCC_ARCH_FEATURES are answered here; everything else goes to EL3.
#include "nvhe/arch.h"
#include "nvhe/console.h"
#include "nvhe/hyp.h"

namespace pkvm {

namespace {

// Function ids (SMC32 and SMC64 forms where both exist).
constexpr u32 kPsciCpuSuspend32 = 0x84000001, kPsciCpuSuspend64 = 0xc4000001;
constexpr u32 kPsciCpuOff = 0x84000002;
constexpr u32 kPsciCpuOn32 = 0x84000003, kPsciCpuOn64 = 0xc4000003;
constexpr u32 kPsciSystemOff = 0x84000008;
constexpr u32 kPsciSystemReset = 0x84000009;
constexpr u32 kPsciSystemReset2_32 = 0x84000012, kPsciSystemReset2_64 = 0xc4000012;
constexpr u32 kPsciSystemSuspend32 = 0x8400000e, kPsciSystemSuspend64 = 0xc400000e;
constexpr u32 kPsciFeatures = 0x8400000a;
constexpr u32 kSmcccVersion = 0x80000000;
constexpr u32 kSmcccArchFeatures = 0x80000001;

// PSCI return codes.
constexpr s64 kPsciSuccess = 0;
constexpr s64 kPsciNotSupported = -1;
constexpr s64 kPsciInvalidParams = -2;
constexpr s64 kPsciAlreadyOn = -4;
constexpr s64 kPsciOnPending = -5;
/// SMCCC v1.1: what the relay implements (ARCH_FEATURES, and the 1.1 rules
/// on preserved registers).
constexpr u64 kSmcccV11 = 0x10001;

constexpr u64 kMpidrAffMask = 0xff00ffffffull;

u64 forward(const HostCtx* c) {
  u64 regs[8];
  for (u32 i = 0; i < 8; ++i) regs[i] = c->regs[i];
  el2_smc_forward(regs);
  return regs[0];
}

u64 forward_with(u64 fn, u64 a1, u64 a2, u64 a3) {
  u64 regs[8] = {fn, a1, a2, a3, 0, 0, 0, 0};
  el2_smc_forward(regs);
  return regs[0];
}

s32 find_cpu(u64 mpidr) {
  for (u32 i = 0; i < g_hyp.nr_cpus; ++i)
    if ((g_hyp.cpus[i].mpidr & kMpidrAffMask) == (mpidr & kMpidrAffMask)) return s32(i);
  return -1;
}

u64 trampoline() { return reinterpret_cast<u64>(&el2_cpu_entry); }

s64 cpu_on(u64 fn, u64 mpidr, u64 entry, u64 context) {
  const s32 idx = find_cpu(mpidr);
  if (idx < 0) return kPsciInvalidParams;  // not a CPU of this machine
  CpuState& c = g_hyp.cpus[idx];
  // Claim the CPU's boot slot: a concurrent CPU_ON for the same target must
  // not overwrite the entry point of one in flight.
  CpuPower expect = CpuPower::kOff;
  if (!__atomic_compare_exchange_n(&c.power, &expect, CpuPower::kPending, false, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE))
    return expect == CpuPower::kPending ? kPsciOnPending : kPsciAlreadyOn;
  c.entry = entry;
  c.context = context;
  c.resume = false;
  dcache_clean_poc(&c, sizeof(c));
  const s64 ret = s64(forward_with(fn, mpidr, trampoline(), u64(idx)));
  if (ret != kPsciSuccess) __atomic_store_n(&c.power, ret == kPsciAlreadyOn ? CpuPower::kOn : CpuPower::kOff, __ATOMIC_RELEASE);
  return ret;
}

// Suspend calls that may lose the CPU's state resume at the entry point:
// route them through the trampoline as well.
s64 suspend(u64 entry, u64 context) {
  CpuState& cs = g_hyp.cpus[this_cpu()];
  cs.entry = entry;
  cs.context = context;
  cs.resume = true;
  dcache_clean_poc(&cs, sizeof(cs));
  return 0;
}

void system_off_or_reset(HostCtx* c, u32 fn) {
  print_stats();
  if (fn != kPsciSystemOff && g_hyp.test_exit) {
    // Under test, a reset means Linux gave up (panic=-1): fail loudly.
    con::printf("host requested a reset: treating it as a failure (test mode)\n");
    stop(1);
  }
  forward(c);
}

}  // namespace

void handle_smc(HostCtx* c) {
  const u32 fn = u32(c->regs[0]);
  s64 ret;
  switch (fn) {
    case kPsciCpuOn32:
    case kPsciCpuOn64:
      ret = cpu_on(fn, c->regs[1], c->regs[2], c->regs[3]);
      break;
    case kPsciCpuSuspend32:
    case kPsciCpuSuspend64:
      // x1 = power state, x2 = entry, x3 = context.
      suspend(c->regs[2], c->regs[3]);
      ret = s64(forward_with(fn, c->regs[1], trampoline(), this_cpu()));
      break;
    case kPsciSystemSuspend32:
    case kPsciSystemSuspend64:
      // x1 = entry, x2 = context.
      suspend(c->regs[1], c->regs[2]);
      ret = s64(forward_with(fn, trampoline(), this_cpu(), 0));
      break;
    case kPsciCpuOff: {
      CpuState& cs = g_hyp.cpus[this_cpu()];
      __atomic_store_n(&cs.power, CpuPower::kOff, __ATOMIC_RELEASE);
      ret = s64(forward(c));
      __atomic_store_n(&cs.power, CpuPower::kOn, __ATOMIC_RELEASE);  // only reached when it failed
      break;
    }
    case kPsciSystemOff:
    case kPsciSystemReset:
    case kPsciSystemReset2_32:
    case kPsciSystemReset2_64:
      system_off_or_reset(c, fn);
      ret = kPsciNotSupported;  // only reached if EL3 refused
      break;
    case kSmcccVersion:
      ret = s64(kSmcccV11);
      break;
    case kSmcccArchFeatures: {
      const u32 q = u32(c->regs[1]);
      // The SMCCC 1.1 calls we implement ourselves are supported; firmware
      // workaround calls are not (EL3 here offers none).
      ret = (q == kSmcccVersion || q == kSmcccArchFeatures) ? kPsciSuccess : kPsciNotSupported;
      break;
    }
    case kPsciFeatures:
      // Linux asks PSCI whether SMCCC_VERSION exists before calling it; the
      // relay implements it even where EL3 does not.
      if (u32(c->regs[1]) == kSmcccVersion) {
        ret = kPsciSuccess;
        break;
      }
      [[fallthrough]];
    default: {
      // Everything else (PSCI_VERSION, FEATURES, AFFINITY_INFO, ...) is EL3's.
      u64 regs[8];
      for (u32 i = 0; i < 8; ++i) regs[i] = c->regs[i];
      el2_smc_forward(regs);
      for (u32 i = 0; i < 4; ++i) c->regs[i] = regs[i];
      return;
    }
  }
  c->regs[0] = u64(ret);
}

}  // namespace pkvm
