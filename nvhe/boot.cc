// SPDX-License-Identifier: Apache-2.0
// Boot of the EL2 payload on the primary CPU, and entry of every other CPU:
// DTB, memory carve-out, EL2 stage 1, host stage 2, and the hand-over to
// Linux at EL1 as Documentation/arch/arm64/booting.rst requires.
#include "nvhe/arch.h"
#include "nvhe/console.h"
#include "nvhe/hyp.h"
#include "pgtable/desc.h"

extern "C" char __payload_start[], __text_end[], __payload_end[], __linux_image[];
extern "C" void (*__init_array_start[])();
extern "C" void (*__init_array_end[])();

namespace pkvm {

Hyp g_hyp;
extern "C" {
alignas(64) BootParams el2_boot_params;
}

namespace {

using namespace desc;

// Build-time default for messages before the DTB names the UART (QEMU virt).
#ifndef PKVM_EARLY_UART
#define PKVM_EARLY_UART 0x09000000
#endif

constexpr u64 k2M = u64{2} << 20;
constexpr u64 kDtbMax = k2M;  // booting.rst: a DTB never exceeds 2 MiB
constexpr u32 kHostIaBits = 40;  // covers QEMU virt's high PCIe ECAM (0x40_1000_0000)
constexpr u64 kFixmapVa = u64{1} << 47;  // above any identity-mapped PA we use
constexpr u64 kSelftestPages = 4;

constexpr u64 align_up(u64 v, u64 a) { return (v + a - 1) & ~(a - 1); }
constexpr u64 align_down(u64 v, u64 a) { return v & ~(a - 1); }
constexpr bool overlaps(u64 a, u64 as, u64 b, u64 bs) { return as && bs && a < b + bs && b < a + as; }

// Boot-time identity map with 1 GiB blocks, used only until the real EL2
// tables exist: caches must be on before any atomic runs, and the real tables
// are built with atomics.
alignas(4096) u64 g_boot_l0[512];
alignas(4096) u64 g_boot_l1[512];

bool g_stopping;

[[noreturn]] void fail(const char* what, const char* detail) {
  con::printf("error: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  stop(2);
}

u64 mem_end_of(const fdt::BootInfo& b) {
  u64 end = 0;
  for (u32 i = 0; i < b.nr_mem; ++i) end = end > b.mem[i].base + b.mem[i].size ? end : b.mem[i].base + b.mem[i].size;
  return end;
}

u64 mem_start_of(const fdt::BootInfo& b) {
  u64 start = ~u64{0};
  for (u32 i = 0; i < b.nr_mem; ++i) start = start < b.mem[i].base ? start : b.mem[i].base;
  return start;
}

bool in_memory(const fdt::BootInfo& b, u64 base, u64 size) {
  for (u32 i = 0; i < b.nr_mem; ++i)
    if (base >= b.mem[i].base && base + size <= b.mem[i].base + b.mem[i].size) return true;
  return false;
}

// True when [base, base + size) collides with anything already spoken for.
bool busy(const Hyp& h, u64 base, u64 size, u64 old_dtb, u64 old_dtb_size, u64 linux_end) {
  const fdt::BootInfo& b = h.boot;
  if (overlaps(base, size, h.payload_start, linux_end - h.payload_start)) return true;
  if (overlaps(base, size, old_dtb, old_dtb_size)) return true;
  if (overlaps(base, size, b.initrd_start, b.initrd_end - b.initrd_start)) return true;
  for (u32 i = 0; i < b.nr_reserved; ++i)
    if (overlaps(base, size, b.reserved[i].base, b.reserved[i].size)) return true;
  if (overlaps(base, size, h.carve_base, h.carve_size)) return true;
  return false;
}

void build_boot_map(const fdt::BootInfo& b) {
  const u64 normal = leaf_attrs_for(Format::kHypStage1, kProtRWX);
  const u64 device = leaf_attrs_for(Format::kHypStage1, kProtRW | kProtDevice);
  for (u64 i = 0; i < 512; ++i) {
    const u64 base = i << 30;
    bool mem = false;
    for (u32 r = 0; r < b.nr_mem; ++r) mem |= overlaps(base, u64{1} << 30, b.mem[r].base, b.mem[r].size);
    g_boot_l1[i] = make_leaf(base, mem ? normal : device, 1);
  }
  g_boot_l0[0] = make_table(reinterpret_cast<u64>(g_boot_l1));
}

void mmu_on_boot_map(u64 ps) {
  write_sysreg(kMairEl2, mair_el2);
  write_sysreg(arch::tcr_el2(ps), tcr_el2);
  write_sysreg(reinterpret_cast<u64>(g_boot_l0), ttbr0_el2);
  arch::isb();
  asm volatile("tlbi alle2" ::: "memory");
  arch::dsb_sy();
  arch::isb();
  // Write-XN stays off here: code and data share the 1 GiB blocks.
  write_sysreg(arch::kSctlrEl2On & ~arch::kSctlrWxn, sctlr_el2);
  arch::isb();
}

extern "C" void el2_switch_ttbr(u64 ttbr0, u64 sctlr);

// True when the /chosen bootargs contain `word` as a whole word.
bool cmdline_has(const void* blob, const char* word) {
  u32 len = 0;
  const char* args = static_cast<const char*>(fdt::get_prop(blob, kDtbMax, "/chosen", "bootargs", &len));
  if (!args) return false;
  u32 wl = 0;
  while (word[wl]) ++wl;
  for (u32 i = 0; i + wl <= len; ++i) {
    if (i > 0 && args[i - 1] != ' ') continue;
    u32 k = 0;
    while (k < wl && args[i + k] == word[k]) ++k;
    if (k == wl && (i + wl == len || args[i + wl] == ' ' || args[i + wl] == 0)) return true;
  }
  return false;
}

// Splits each memory node around the no-map reserved ranges inside it, so the
// host can never give those away.
void build_memmap(Hyp& h) {
  const fdt::BootInfo& b = h.boot;
  for (u32 i = 0; i < b.nr_mem; ++i) {
    u64 cur = b.mem[i].base;
    const u64 end = b.mem[i].base + b.mem[i].size;
    while (cur < end) {
      u64 next = end;
      u64 nomap_end = 0;
      for (u32 r = 0; r < b.nr_reserved; ++r) {
        const fdt::Reserved& rv = b.reserved[r];
        if (!rv.no_map || rv.base + rv.size <= cur || rv.base >= end) continue;
        const u64 s = align_down(rv.base > cur ? rv.base : cur, kPageSize);
        if (s < next) {
          next = s;
          nomap_end = align_up(rv.base + rv.size < end ? rv.base + rv.size : end, kPageSize);
        }
      }
      if (next > cur && h.memmap.add(cur, next - cur, 0)) fail("memory map", "too many or overlapping regions");
      if (nomap_end > next && h.memmap.add(next, nomap_end - next, kRegionNoMap))
        fail("memory map", "too many or overlapping no-map regions");
      cur = nomap_end > next ? nomap_end : end;
    }
  }
}

}  // namespace

[[noreturn]] void stop(u64 code) {
  g_stopping = true;
  con::printf("stopped (code %llu)\n", (unsigned long long)code);
  el2_semihosting_exit(code);
}

void print_stats() {
  const MemProtectStats s = g_hyp.mp.stats();
  u64 ok = 0, failed = 0;
  for (u32 i = 0; i < u32(Transition::kCount); ++i) {
    ok += s.ok[i];
    failed += s.failed[i];
  }
  const PgtableStats hs = g_hyp.mp.host_pgt().stats();
  con::printf(
      "stats: host aborts L1=%llu L2=%llu L3=%llu eagain=%llu eperm=%llu enomem=%llu; host stage-2 table pages=%llu; "
      "pool free=%llu; transitions ok=%llu failed=%llu; hvc=%llu smc=%llu sea=%llu tlbi=%llu\n",
      (unsigned long long)s.host_aborts[1], (unsigned long long)s.host_aborts[2], (unsigned long long)s.host_aborts[3],
      (unsigned long long)s.host_abort_eagain, (unsigned long long)s.host_abort_eperm,
      (unsigned long long)s.host_abort_enomem, (unsigned long long)hs.table_pages,
      (unsigned long long)g_hyp.platform.nr_free_pages(), (unsigned long long)ok, (unsigned long long)failed,
      (unsigned long long)g_hyp.hvc_calls, (unsigned long long)g_hyp.smc_calls, (unsigned long long)g_hyp.sea_injected,
      (unsigned long long)g_hyp.platform.tlbi_count());
}

void cpu_enter_host_state() {
  const BootParams& p = el2_boot_params;
  write_sysreg(p.vtcr, vtcr_el2);
  write_sysreg(p.vttbr, vttbr_el2);
  write_sysreg(p.hcr, hcr_el2);
  write_sysreg(p.cptr, cptr_el2);
  write_sysreg(0, hstr_el2);
  arch::isb();
  asm volatile("tlbi vmalls12e1" ::: "memory");
  arch::dsb_nsh();
  arch::isb();

  // Timers: EL1 owns the physical counter and timer; no virtual offset.
  write_sysreg(3, cnthctl_el2);
  write_sysreg(0, cntvoff_el2);
  // GICv3 system registers usable from EL1; no virtual CPU interface.
  write_sysreg(read_sysreg(S3_4_C12_C9_5) | 0x9, S3_4_C12_C9_5);  // ICC_SRE_EL2: SRE | Enable
  arch::isb();
  write_sysreg(0, S3_4_C12_C11_0);  // ICH_HCR_EL2
  // Identity registers as the hardware reports them.
  write_sysreg(read_sysreg(midr_el1), vpidr_el2);
  write_sysreg(read_sysreg(mpidr_el1), vmpidr_el2);
  // All PMU counters to EL1; no debug traps.
  write_sysreg((read_sysreg(pmcr_el0) >> 11) & 0x1f, mdcr_el2);
  // SVE / SME: the full vector lengths to EL1.
  const u64 pfr0 = read_sysreg(id_aa64pfr0_el1);
  const u64 pfr1 = read_sysreg(id_aa64pfr1_el1);
  if ((pfr0 >> 32) & 0xf) write_sysreg(0xf, S3_4_C1_C2_0);  // ZCR_EL2.LEN
  if ((pfr1 >> 24) & 0xf) write_sysreg(0xf, S3_4_C1_C2_6);  // SMCR_EL2.LEN
  write_sysreg(arch::kSctlrEl1MmuOff, sctlr_el1);
  arch::isb();
}

extern "C" void el2_primary_boot(u64 dtb, HostCtx* ctx) {
  // The generic counter runs from reset: its value here is the time before
  // the payload, the difference at the exit the time the payload took.
  const u64 t_entry = read_sysreg(cntpct_el0);
  // Static constructors (vtable pointers of the platform and the locks).
  for (auto* f = __init_array_start; f != __init_array_end; ++f) (*f)();
  Hyp& h = g_hyp;
  con::init(PKVM_EARLY_UART);
  const char* err = nullptr;
  const void* blob = reinterpret_cast<const void*>(dtb);
  if (fdt::parse(blob, kDtbMax, &h.boot, &err)) fail("malformed DTB", err);
  const fdt::BootInfo& b = h.boot;
  if (b.uart_base) con::init(b.uart_base);
  // Options come from /chosen properties or, so that any loader can pass
  // them, from the kernel command line (Linux ignores "pkvm.*" words).
  const bool verbose = b.verbose || cmdline_has(blob, "pkvm.verbose");
  const bool selftest = b.selftest || cmdline_has(blob, "pkvm.selftest");
  h.test_exit = b.test_exit || cmdline_has(blob, "pkvm.test_exit");
  if (verbose) con::set_verbose(true);
  if (b.nr_mem == 0) fail("DTB", "no memory node");
  if (b.nr_cpus == 0) fail("DTB", "no cpu node");
  if (b.psci != fdt::PsciMethod::kSmc) fail("DTB", "PSCI must use the SMC conduit (boot at EL2 with EL3 firmware)");

  // The Linux Image follows the payload at the next 2 MiB boundary.
  const u64 linux_base = reinterpret_cast<u64>(__linux_image);
  const auto* lh = reinterpret_cast<const volatile u8*>(linux_base);
  auto le64 = [&](u32 off) {
    u64 v = 0;
    for (u32 i = 0; i < 8; ++i) v |= u64(lh[off + i]) << (8 * i);
    return v;
  };
  if (!(lh[0x38] == 'A' && lh[0x39] == 'R' && lh[0x3a] == 'M' && lh[0x3b] == 0x64))
    fail("no Linux Image after the payload", "build the combined image with tools/mk_combined.sh");
  const u64 linux_size = le64(16);
  if (le64(8) != 0 || linux_size == 0) fail("Linux Image", "unsupported text_offset or image_size");
  h.linux_entry = linux_base;
  const u64 linux_end = linux_base + linux_size;
  if (!in_memory(b, reinterpret_cast<u64>(__payload_start), linux_end - reinterpret_cast<u64>(__payload_start)))
    fail("payload", "image is not in memory");
  h.payload_start = reinterpret_cast<u64>(__payload_start);
  h.payload_end = linux_base;

  // Carve-out at the top of memory: one table page per 2 MiB of memory (a
  // host stage 2 mapped entirely with pages) plus slack, and page metadata.
  const u64 mem_start = mem_start_of(b), mem_end = mem_end_of(b);
  u64 mem_bytes = 0;
  for (u32 i = 0; i < b.nr_mem; ++i) mem_bytes += b.mem[i].size;
  h.pool_pages = mem_bytes / k2M + 128;
  const u64 meta_pages = align_up((mem_end - mem_start) / kPageSize * sizeof(PageMeta), kPageSize) / kPageSize;
  h.carve_size = align_up((h.pool_pages + meta_pages) * kPageSize, k2M);
  const u64 old_dtb_size = fdt::total_size(blob, kDtbMax);
  for (u32 i = b.nr_mem; i-- > 0 && !h.carve_base;) {
    const MemRegion& r = b.mem[i];
    if (r.size < h.carve_size) continue;
    const u64 base = align_down(r.base + r.size - h.carve_size, k2M);
    if (base >= r.base && !busy(h, base, h.carve_size, dtb, old_dtb_size, linux_end)) h.carve_base = base;
  }
  if (!h.carve_base) fail("memory", "no room for the hypervisor's page pool");

  // The DTB Linux gets: ours, with our memory reserved, after the kernel.
  u64 new_dtb = align_up(linux_end, k2M);
  while (new_dtb < mem_end && (busy(h, new_dtb, k2M, dtb, old_dtb_size, linux_end) || !in_memory(b, new_dtb, k2M)))
    new_dtb += k2M;
  if (new_dtb >= mem_end) fail("memory", "no room for the DTB");
  const fdt::Reserved res[2] = {{h.payload_start, h.payload_end - h.payload_start, false},
                                {h.carve_base, h.carve_size, false}};
  // The slot's last pages are scratch for the boot self-test.
  const s64 dtb_size = fdt::add_memreserve(blob, kDtbMax, reinterpret_cast<void*>(new_dtb),
                                           k2M - kSelftestPages * kPageSize, res, 2);
  if (dtb_size < 0) fail("DTB", "cannot add the hypervisor's reservations");
  h.dtb = new_dtb;

  // Caches on (boot map), then the real allocator and tables.
  const u64 parange = read_sysreg(id_aa64mmfr0_el1) & 0xf;
  const u64 ps = parange > 5 ? 5 : parange;
  build_boot_map(b);
  mmu_on_boot_map(ps);

  if (h.platform.init(h.carve_base, h.pool_pages)) fail("page pool", "bad carve-out");
  auto* meta = reinterpret_cast<PageMeta*>(h.carve_base + h.pool_pages * kPageSize);
  for (u64 i = 0; i < meta_pages * kPageSize / sizeof(u64); ++i) reinterpret_cast<u64*>(meta)[i] = 0;
  build_memmap(h);

  const u32 pa_bits = arch::pa_bits_of(parange);
  const u32 ia_bits = pa_bits < kHostIaBits ? pa_bits : kHostIaBits;
  if (mem_end > (u64{1} << ia_bits)) fail("memory", "beyond the host stage-2 input range");
  MemProtectConfig cfg{};
  cfg.platform = &h.platform;
  cfg.memmap = &h.memmap;
  cfg.host_ia_bits = ia_bits;
  cfg.host_start_level = 1;
  cfg.guest_ia_bits = ia_bits;
  cfg.guest_start_level = 1;
  cfg.meta = meta;
  cfg.meta_base_pfn = mem_start >> kPageShift;
  cfg.meta_nr = (mem_end - mem_start) >> kPageShift;
  cfg.host_lock = &h.host_lock;
  // Upstream-like baseline for measurements: host aborts serialised.
  cfg.exclusive_aborts = cmdline_has(blob, "pkvm.exclusive_aborts");
  cfg.hyp_lock = &h.hyp_lock;
  for (u32 i = 0; i < kMaxGuests; ++i) cfg.guest_locks[i] = &h.guest_locks[i];
  if (int ret = h.mp.init(cfg)) fail("mem_protect init", ret == -kENOMEM ? "out of pool pages" : "bad configuration");

  // Our own memory: annotated HYP in the host stage 2, mapped for us; the
  // code becomes read-only executable, everything else stays execute-never.
  if (h.mp.hyp_reserve(h.payload_start >> kPageShift, (h.payload_end - h.payload_start) >> kPageShift) ||
      h.mp.hyp_reserve(h.carve_base >> kPageShift, h.carve_size >> kPageShift))
    fail("reserving hypervisor memory", nullptr);
  const u64 text_size = reinterpret_cast<u64>(__text_end) - h.payload_start;
  if (h.mp.hyp_pgt().hyp_map(Va(h.payload_start), text_size, PhysAddr(h.payload_start),
                             kProtR | kProtX | state_prot(PageState::kOwned), kMapSkipDcache | kMapSkipIcache) ||
      h.mp.hyp_pgt().hyp_map(Va(align_down(b.uart_base ? b.uart_base : PKVM_EARLY_UART, kPageSize)), kPageSize,
                             PhysAddr(align_down(b.uart_base ? b.uart_base : PKVM_EARLY_UART, kPageSize)),
                             kProtRW | kProtDevice, 0))
    fail("mapping hypervisor text and UART", nullptr);
  h.fixmap_va = kFixmapVa;

  BootParams& p = el2_boot_params;
  p.mair = kMairEl2;
  p.tcr = arch::tcr_el2(ps);
  p.ttbr0 = h.mp.hyp_pgt().root_pa().value();
  p.sctlr = arch::kSctlrEl2On;
  p.vtcr = vtcr_el2(ia_bits, 1, arch::pa_bits_of(ps)) | (u64{1} << 31);
  p.vttbr = h.mp.host_pgt().root_pa().value();
  u64 hcr = arch::kHcrRw | arch::kHcrVm | arch::kHcrTsc;
  const u64 isar1 = read_sysreg(id_aa64isar1_el1);
  if (isar1 & ((0xfull << 4) | (0xfull << 8) | (0xfull << 24) | (0xfull << 28))) hcr |= arch::kHcrApi | arch::kHcrApk;
  p.hcr = hcr;
  u64 cptr = 0x32ff;  // RES1 bits; TZ = 0 and TFP = 0: no SVE/FP traps
  if ((read_sysreg(id_aa64pfr1_el1) >> 24) & 0xf) cptr &= ~(u64{1} << 12);  // TSM = 0 when SME exists
  p.cptr = cptr;
  el2_switch_ttbr(p.ttbr0, p.sctlr);
  dcache_clean_poc(&el2_boot_params, sizeof(el2_boot_params));

  // CPUs: index 0 is always the boot CPU (it runs on stack 0).
  const u64 self = read_sysreg(mpidr_el1) & 0xff00ffffffull;
  h.cpus[0] = CpuState{self, CpuPower::kOn, false, 0, 0};
  h.nr_cpus = 1;
  for (u32 i = 0; i < b.nr_cpus; ++i)
    if ((b.cpu_mpidr[i] & 0xff00ffffffull) != self) h.cpus[h.nr_cpus++] = CpuState{b.cpu_mpidr[i], CpuPower::kOff, false, 0, 0};

  con::printf("pKVM-style EL2 payload: %u CPU(s), %llu MiB in %u region(s), host stage-2 %u-bit IPA, pool %llu pages\n",
              b.nr_cpus, (unsigned long long)(mem_bytes >> 20), h.memmap.size(), ia_bits,
              (unsigned long long)h.pool_pages);
  PKVM_VLOG("payload [%llx, %llx) carve-out [%llx, %llx) Linux at %llx DTB at %llx (%lld bytes)\n",
            (unsigned long long)h.payload_start, (unsigned long long)h.payload_end, (unsigned long long)h.carve_base,
            (unsigned long long)(h.carve_base + h.carve_size), (unsigned long long)linux_base,
            (unsigned long long)new_dtb, (long long)dtb_size);

  if (selftest) {
    const u64 pfn = (new_dtb + k2M - kSelftestPages * kPageSize) >> kPageShift;
    const int ret = h.mp.selftest(pfn, kSelftestPages);
    con::printf("ownership self-test: %s (%d)\n", ret == 0 ? "passed" : "FAILED", ret);
    if (ret) stop(4);
  }

  cpu_enter_host_state();
  for (u32 i = 0; i < 31; ++i) ctx->regs[i] = 0;
  ctx->regs[0] = new_dtb;
  write_sysreg(h.linux_entry, elr_el2);
  write_sysreg(arch::kPsrEl1h | arch::kPsrDaif, spsr_el2);
  // Reported so boot-time comparisons can separate the payload's share
  // (tools/bench_qemu.sh reads this line).
  const u64 freq = read_sysreg(cntfrq_el0);
  const u64 t_exit = read_sysreg(cntpct_el0);
  if (freq)
    con::printf("entering Linux at EL1: payload boot took %llu us (counter at entry %llu us)\n",
                (unsigned long long)((t_exit - t_entry) * 1000000 / freq),
                (unsigned long long)(t_entry * 1000000 / freq));
  else
    con::printf("entering Linux at EL1\n");
}

extern "C" void el2_secondary_boot(u64 idx, HostCtx* ctx) {
  Hyp& h = g_hyp;
  if (idx >= h.nr_cpus) stop(5);  // we only ever pass indices we handed out
  CpuState& c = h.cpus[idx];
  cpu_enter_host_state();
  for (u32 i = 0; i < 31; ++i) ctx->regs[i] = 0;
  ctx->regs[0] = c.context;
  write_sysreg(c.entry, elr_el2);
  write_sysreg(arch::kPsrEl1h | arch::kPsrDaif, spsr_el2);
  c.resume = false;
  __atomic_store_n(&c.power, CpuPower::kOn, __ATOMIC_RELEASE);
}

extern "C" void el2_hyp_panic(u64 kind) {
  if (g_stopping) {
    for (;;) arch::wfe();  // the exit path itself trapped: semihosting is off
  }
  con::printf("HYPERVISOR PANIC: %s on CPU %u: ESR_EL2=%llx ELR_EL2=%llx FAR_EL2=%llx\n",
              kind == 0 ? "synchronous exception" : kind == 1 ? "interrupt" : "SError", this_cpu(),
              (unsigned long long)read_sysreg(esr_el2), (unsigned long long)read_sysreg(elr_el2),
              (unsigned long long)read_sysreg(far_el2));
  stop(2);
}

}  // namespace pkvm
