// SPDX-License-Identifier: Apache-2.0
#include "nvhe/el2_platform.h"

#include "nvhe/arch.h"
#include "nvhe/hyp.h"
#include "pgtable/desc.h"

namespace pkvm {

namespace {

u64 dcache_line() { return u64{4} << ((read_sysreg(ctr_el0) >> 16) & 0xf); }
u64 icache_line() { return u64{4} << (read_sysreg(ctr_el0) & 0xf); }

}  // namespace

int El2Platform::init(u64 base, u64 nr_pages) {
  // VA == PA: the whole output-address space is one linear window.
  set_linear_window(0, u64{1} << desc::kOaBits, 0);
  return pool_.init(base, nr_pages, 0);
}

void* El2Platform::zalloc_page() { return zalloc_pages(0); }

void* El2Platform::zalloc_pages(u32 order) {
  SpinGuard g(lock_);
  if (fail_count_) {
    if (fail_after_ == 0) {
      --fail_count_;
      return nullptr;
    }
    --fail_after_;
  }
  return pool_.alloc_pages(order);
}

void El2Platform::fail_allocs(u64 after, u64 count) {
  SpinGuard g(lock_);
  fail_after_ = after;
  fail_count_ = count;
}

void El2Platform::free_pages(void* va, u32 order) {
  SpinGuard g(lock_);
  pool_.free_pages(va, order);
}

u64 El2Platform::nr_free_pages() {
  SpinGuard g(lock_);
  // With failures armed, only the allocations before them can succeed: say
  // so, so callers that reserve before committing see the shortage.
  const u64 free = pool_.nr_free_pages();
  return fail_count_ && fail_after_ < free ? fail_after_ : free;
}

void El2Platform::get_page(void* va) { pool_.get_page(va); }

void El2Platform::put_page(void* va) {
  // Only the last reference touches the free lists, under the lock.
  if (pool_.dec_ref(va)) {
    SpinGuard g(lock_);
    pool_.free_pages(va, 0);
  }
}

void El2Platform::get_page_refs(void* va, u32 n) { pool_.get_refs(va, n); }

void El2Platform::put_page_refs(void* va, u32 n) {
  if (pool_.dec_refs(va, n)) {
    SpinGuard g(lock_);
    pool_.free_pages(va, 0);
  }
}

int El2Platform::page_count(void* va) { return pool_.page_count(va); }

void El2Platform::dcache_clean_inval_poc(PhysAddr pa, u64 size) {
  const u64 line = dcache_line();
  for (u64 a = pa.value() & ~(line - 1); a < pa.value() + size; a += line) asm volatile("dc civac, %0" ::"r"(a) : "memory");
  arch::dsb_ish();
}

void El2Platform::icache_inval_pou(PhysAddr pa, u64 size) {
  const u64 line = icache_line();
  for (u64 a = pa.value() & ~(line - 1); a < pa.value() + size; a += line) asm volatile("ic ivau, %0" ::"r"(a) : "memory");
  arch::dsb_ish();
  arch::isb();
}

void dcache_clean_poc(const void* va, u64 size) {
  const u64 line = dcache_line();
  const u64 start = reinterpret_cast<u64>(va);
  for (u64 a = start & ~(line - 1); a < start + size; a += line) asm volatile("dc cvac, %0" ::"r"(a) : "memory");
  arch::dsb_sy();
}

void El2Platform::tlbi(TlbiKind kind, u32 vmid, u64 addr, u32 level) { tlbi_batch(kind, vmid, &addr, &level, 1); }

void El2Platform::tlbi_batch(TlbiKind kind, u32 vmid, const u64* addrs, const u32* levels, u32 n) {
  (void)levels;  // no FEAT_TTL hint: a plain by-address invalidation covers every level
  if (n == 0) return;
  __atomic_fetch_add(&tlbis_, n, __ATOMIC_RELAXED);
  if (kind == TlbiKind::kEl2Va || kind == TlbiKind::kEl2All) {
    // By VA: issued back to back, completed together. All: once covers any n.
    if (kind == TlbiKind::kEl2All)
      asm volatile("tlbi alle2is" ::: "memory");
    else
      for (u32 i = 0; i < n; ++i) asm volatile("tlbi vae2is, %0" ::"r"(addrs[i] >> desc::kPageShift) : "memory");
    arch::dsb_ish();
    arch::isb();
    return;
  }
  // Stage-2 invalidations apply to the VMID in VTTBR_EL2: switch to the
  // table's VMID for the duration (the host's, 0, is normally loaded).
  const u64 vttbr = read_sysreg(vttbr_el2);
  const bool switch_vmid = ((vttbr >> 48) & 0xffff) != vmid;
  if (switch_vmid) {
    write_sysreg((vttbr & ~(u64{0xffff} << 48)) | (u64(vmid) << 48), vttbr_el2);
    arch::isb();
  }
  switch (kind) {
    case TlbiKind::kIpa:
      // The stage-2 entries first (all of them, then one DSB), then any
      // combined stage-1+2 entry built from them: one VMALLE1IS covers all.
      for (u32 i = 0; i < n; ++i) asm volatile("tlbi ipas2e1is, %0" ::"r"(addrs[i] >> desc::kPageShift) : "memory");
      arch::dsb_ish();
      asm volatile("tlbi vmalle1is" ::: "memory");
      arch::dsb_ish();
      break;
    case TlbiKind::kIpaLocal:
      for (u32 i = 0; i < n; ++i) asm volatile("tlbi ipas2e1, %0" ::"r"(addrs[i] >> desc::kPageShift) : "memory");
      arch::dsb_nsh();
      asm volatile("tlbi vmalle1" ::: "memory");
      arch::dsb_nsh();
      break;
    default:
      asm volatile("tlbi vmalls12e1is" ::: "memory");
      arch::dsb_ish();
      break;
  }
  arch::isb();
  if (switch_vmid) {
    write_sysreg(vttbr, vttbr_el2);
    arch::isb();
  }
}

void El2Platform::barrier(Barrier b) {
  switch (b) {
    case Barrier::kDsbIshst:
      arch::dsb_ishst();
      break;
    case Barrier::kDsbIsh:
      arch::dsb_ish();
      break;
    case Barrier::kIsb:
      arch::isb();
      break;
  }
}

u32 El2Platform::cpu_id() { return this_cpu(); }

}  // namespace pkvm
