// SPDX-License-Identifier: Apache-2.0
// The EL2 payload's global state, shared by boot, the host exception
// handlers, the PSCI relay and the hypercalls.
#pragma once

#include "mem_protect/mem_protect.h"
#include "nvhe/el2_platform.h"
#include "nvhe/fdt.h"
#include "nvhe/sync.h"

namespace pkvm {

/// General-purpose registers of the host, saved by head.S on every trap.
struct HostCtx {
  u64 regs[31];
};
static_assert(sizeof(HostCtx) == 31 * 8);

/// Values every CPU programs into EL2 registers; read by head.S with the MMU
/// off on secondary CPUs, so the primary cleans it to the point of coherency.
struct BootParams {
  u64 mair;
  u64 tcr;
  u64 ttbr0;
  u64 sctlr;
  u64 vtcr;
  u64 vttbr;
  u64 hcr;
  u64 cptr;
};

/// Power state of a CPU as the PSCI relay tracks it.
enum class CpuPower : u32 { kOff = 0, kPending = 1, kOn = 2 };

/// Per-CPU state.
struct CpuState {
  u64 mpidr;
  CpuPower power;
  bool resume;  ///< Next entry is a wake-up from CPU_SUSPEND / SYSTEM_SUSPEND.
  u64 entry;    ///< Where the host wants this CPU to start (EL1 physical address).
  u64 context;  ///< x0 for that entry.
};

/// Everything EL2 knows.
struct Hyp {
  fdt::BootInfo boot;
  MemMap memmap;
  El2Platform platform;
  MemProtect mp;
  PerCpuRwLock<El2Cpu> host_lock;  // shared by concurrent host aborts
  SpinRwLock<El2Cpu> hyp_lock;
  SpinRwLock<El2Cpu> guest_locks[kMaxGuests];
  u32 nr_cpus;
  CpuState cpus[fdt::kMaxCpus];
  u64 linux_entry;
  u64 dtb;             ///< The DTB handed to Linux (with our reservations).
  u64 carve_base;      ///< Pool + page metadata.
  u64 carve_size;
  u64 pool_pages;
  u64 payload_start;   ///< Hypervisor image reservation [start, end).
  u64 payload_end;
  u64 fixmap_va;       ///< Base of the per-CPU transient mappings.
  bool test_exit;      ///< Turn resets and panics into a failing QEMU exit.
  u64 hvc_calls;
  u64 smc_calls;
  u64 sea_injected;
};

static_assert(kMaxCpus >= fdt::kMaxCpus, "a per-CPU slot for every CPU the DTB reader accepts");

extern Hyp g_hyp;
extern "C" BootParams el2_boot_params;

/// Programs stage 2, traps and the EL1 state Linux expects on this CPU.
void cpu_enter_host_state();
/// Prints the one-line statistics summary.
void print_stats();
/// Stops the machine: a QEMU exit with `code` when semihosting is on, else
/// the CPU parks. Never returns.
[[noreturn]] void stop(u64 code);

/// Handles an SMC the host issued (trapped by HCR_EL2.TSC).
void handle_smc(HostCtx* c);
/// Handles an HVC: the hypercall ABI.
void handle_hvc(HostCtx* c);

extern "C" void el2_smc_forward(u64 regs[8]);
extern "C" [[noreturn]] void el2_semihosting_exit(u64 code);
extern "C" void el2_cpu_entry();

}  // namespace pkvm
