// SPDX-License-Identifier: Apache-2.0
// Traps from the host: stage-2 aborts (resolved by mapping, or refused with a
// synchronous external abort injected into EL1), SMCs (the PSCI relay), HVCs
// (the hypercall ABI) and anything unexpected. Nothing the host does here may
// stop EL2: every path ends in an ERET back to the host.
#include "nvhe/arch.h"
#include "nvhe/console.h"
#include "nvhe/hyp.h"
#include "pgtable/desc.h"
#include "pgtable/s1walk.h"

namespace pkvm {

namespace {

using namespace desc;

// --- Injection ----------------------------------------------------------------

// Delivers a synchronous exception to the host's EL1 vectors as the hardware
// would have: ESR/FAR/ELR/SPSR_EL1 written, PSTATE for EL1h with DAIF masked.
void inject_el1_sync(u64 esr_el1, u64 far) {
  const u64 spsr = read_sysreg(spsr_el2);
  const u64 mode = spsr & arch::kPsrModeMask;
  const bool aarch32 = spsr & 0x10;
  u64 offset;
  if (aarch32)
    offset = 0x600;  // lower EL using AArch32
  else if (mode == arch::kPsrEl0t)
    offset = 0x400;  // lower EL using AArch64
  else if (mode == arch::kPsrEl1t)
    offset = 0x000;  // current EL with SP_EL0
  else
    offset = 0x200;  // current EL with SP_ELx
  write_sysreg(esr_el1, esr_el1);
  write_sysreg(far, far_el1);
  write_sysreg(read_sysreg(elr_el2), elr_el1);
  write_sysreg(spsr, spsr_el1);
  u64 pstate = arch::kPsrEl1h | arch::kPsrDaif;
  const u64 sctlr = read_sysreg(sctlr_el1);
  if ((spsr & arch::kPsrPan) || !(sctlr & arch::kSctlrEl1Span)) pstate |= arch::kPsrPan;
  pstate |= spsr & (u64{1} << 24);               // DIT is preserved
  if (sctlr & (u64{1} << 44)) pstate |= u64{1} << 12;  // SSBS = SCTLR_EL1.DSSBS
  write_sysreg(read_sysreg(vbar_el1) + offset, elr_el2);
  write_sysreg(pstate, spsr_el2);
}

bool from_lower_el0(u64 spsr) { return (spsr & 0x10) || (spsr & arch::kPsrModeMask) == arch::kPsrEl0t; }

// An external abort for an access the host may not make: the kernel's own
// fault handling runs (a user access ends in SIGBUS) and EL2 carries on.
void inject_sea(u64 esr, u64 far, bool iabt) {
  const bool low = from_lower_el0(read_sysreg(spsr_el2));
  const u32 ec = iabt ? (low ? arch::kEcIabtLow : arch::kEcIabtCur) : (low ? arch::kEcDabtLow : arch::kEcDabtCur);
  u64 iss = arch::kFscSea;
  if (!iabt) iss |= esr & arch::kEsrWnr;
  __atomic_fetch_add(&g_hyp.sea_injected, 1, __ATOMIC_RELAXED);
  inject_el1_sync((u64(ec) << arch::kEsrEcShift) | arch::kEsrIl | iss, far);
}

void inject_undef() {
  inject_el1_sync((u64(arch::kEcUnknown) << arch::kEsrEcShift) | arch::kEsrIl, 0);
}

// --- Fault address --------------------------------------------------------------

// Reads one descriptor of the host's stage-1 tables through this CPU's
// transient EL2 mapping. Only memory is read; anything else fails.
int read_host_desc(void*, u64 pa, u64* out) {
  Hyp& h = g_hyp;
  if (pa & 7) return -kEFAULT;
  const MemLookup l = h.memmap.find(pa, ~u64{0});
  if (!l.region) return -kEFAULT;
  const u64 va = h.fixmap_va + this_cpu() * kPageSize;
  h.hyp_lock.lock();
  int ret = h.mp.hyp_pgt().hyp_map(Va(va), kPageSize, PhysAddr(pa & ~(kPageSize - 1)), kProtR,
                                   kMapSkipDcache | kMapSkipIcache);
  if (!ret) {
    *out = *reinterpret_cast<volatile u64*>(va + (pa & (kPageSize - 1)));
    h.mp.hyp_pgt().hyp_unmap(Va(va), kPageSize);
  }
  h.hyp_lock.unlock();
  return ret ? -kEFAULT : 0;
}

// The IPA of a stage-2 permission fault: HPFAR_EL2 is not valid for those,
// so translate FAR_EL2 with AT S1E1R and, if that fails (the host's tables
// may be out of reach of the hardware walker), with the software walk.
bool translate_far(u64 far, u64* ipa) {
  const u64 saved_par = read_sysreg(par_el1);
  asm volatile("at s1e1r, %0" ::"r"(far));
  arch::isb();
  const u64 par = read_sysreg(par_el1);
  write_sysreg(saved_par, par_el1);
  if (!(par & 1)) {
    *ipa = (par & genmask(47, 12)) | (far & (kPageSize - 1));
    return true;
  }
  const S1Regs regs{read_sysreg(sctlr_el1), read_sysreg(tcr_el1), read_sysreg(ttbr0_el1),
                    read_sysreg(ttbr1_el1), read_sysreg(mair_el1), (read_sysreg(spsr_el2) & arch::kPsrPan) != 0};
  const S1WalkResult r = s1_walk(AtOp::kS1E1R, far, regs, read_host_desc, nullptr);
  if (r.err || (r.par & 1)) return false;
  *ipa = (r.par & genmask(47, 12)) | (far & (kPageSize - 1));
  return true;
}

// True when the host stage-2 entry for `ipa` now allows the access.
bool access_allowed(u64 ipa, bool iabt, bool write) {
  u64 pte = 0;
  u32 level = 0;
  // Shared hold: a transition on another CPU may not free a table mid-walk.
  g_hyp.host_lock.lock_shared();
  const int ret = g_hyp.mp.host_pgt().get_leaf(ipa, &pte, &level);
  g_hyp.host_lock.unlock_shared();
  if (ret || !is_valid(pte)) return false;
  if (iabt) return !(pte & kS2Xn);
  return write ? (pte & kS2ApW) : (pte & kS2ApR);
}

void handle_host_abort(u64 esr) {
  const bool iabt = arch::esr_ec(esr) == arch::kEcIabtLow;
  const u64 far = read_sysreg(far_el2);
  const u64 fsc = esr & arch::kEsrFscMask;
  if (!(esr & arch::kEsrS1ptw) && (fsc & arch::kFscTypeMask) == arch::kFscPerm) {
    // A valid mapping refused the access. Retry only if it changed under us.
    u64 ipa;
    if (!translate_far(far, &ipa)) return;  // stage 1 changed: the host re-faults at EL1
    if (access_allowed(ipa, iabt, esr & arch::kEsrWnr)) return;
    PKVM_VLOG("host permission fault at IPA %llx (FAR %llx): refused\n", (unsigned long long)ipa,
              (unsigned long long)far);
    inject_sea(esr, far, iabt);
    return;
  }
  const u64 hpfar = read_sysreg(hpfar_el2);
  const u64 ipa = ((hpfar & genmask(43, 4)) << 8) | (far & (kPageSize - 1));
  const int ret = g_hyp.mp.host_stage2_idmap(ipa);
  if (ret == 0 || ret == -kEAGAIN) return;
  PKVM_VLOG("host %s abort at IPA %llx: %d, injecting an external abort\n", iabt ? "instruction" : "data",
            (unsigned long long)ipa, ret);
  inject_sea(esr, far, iabt);
}

}  // namespace

extern "C" void el2_handle_host_sync(HostCtx* c) {
  const u64 esr = read_sysreg(esr_el2);
  switch (arch::esr_ec(esr)) {
    case arch::kEcHvc64:
      __atomic_fetch_add(&g_hyp.hvc_calls, 1, __ATOMIC_RELAXED);
      handle_hvc(c);
      break;
    case arch::kEcSmc64:
      // A trapped SMC returns to the instruction itself: step over it.
      write_sysreg(read_sysreg(elr_el2) + 4, elr_el2);
      __atomic_fetch_add(&g_hyp.smc_calls, 1, __ATOMIC_RELAXED);
      handle_smc(c);
      break;
    case arch::kEcDabtLow:
    case arch::kEcIabtLow:
      handle_host_abort(esr);
      break;
    default:
      PKVM_VLOG("unexpected trap from the host: ESR_EL2=%llx, injecting UNDEF\n", (unsigned long long)esr);
      inject_undef();
      break;
  }
}

extern "C" void el2_handle_host_unexpected(HostCtx*) {
  // IRQ, FIQ and SError are routed to EL1 (HCR_EL2.{IMO,FMO,AMO} = 0): this
  // cannot happen; say so and let the host carry on.
  con::printf("unexpected asynchronous exception from the host: ESR_EL2=%llx\n",
              (unsigned long long)read_sysreg(esr_el2));
}

}  // namespace pkvm
