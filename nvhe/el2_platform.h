// SPDX-License-Identifier: Apache-2.0
// The EL2 implementation of pgtable's Platform: the buddy page pool, real
// cache and TLB maintenance instructions, and barriers. VA == PA at EL2.
#pragma once

#include "nvhe/buddy.h"
#include "nvhe/sync.h"
#include "pgtable/platform.h"

namespace pkvm {

/// Platform services at EL2.
class El2Platform final : public Platform {
 public:
  /// Manages the page-table pool [base, base + nr_pages pages).
  int init(u64 base, u64 nr_pages);
  void* zalloc_page() override;
  void* zalloc_pages(u32 order) override;
  void free_pages(void* va, u32 order) override;
  u64 nr_free_pages() override;
  void get_page(void* va) override;
  void put_page(void* va) override;
  void get_page_refs(void* va, u32 n) override;
  void put_page_refs(void* va, u32 n) override;
  int page_count(void* va) override;
  PhysAddr virt_to_phys(void* va) override { return PhysAddr(reinterpret_cast<u64>(va)); }
  void* phys_to_virt(PhysAddr pa) override { return reinterpret_cast<void*>(pa.value()); }
  void dcache_clean_inval_poc(PhysAddr pa, u64 size) override;
  void icache_inval_pou(PhysAddr pa, u64 size) override;
  void tlbi(TlbiKind kind, u32 vmid, u64 addr, u32 level) override;
  void tlbi_batch(TlbiKind kind, u32 vmid, const u64* addrs, const u32* levels, u32 n) override;
  void barrier(Barrier b) override;
  void pte_written(u64*, u64, u64, u64, u32, u32) override {}
  /// This CPU's index (TPIDR_EL2).
  u32 cpu_id() override;
  /// Test hook: after `after` more successful allocations, `count` fail.
  void fail_allocs(u64 after, u64 count);
  /// TLB invalidations issued since boot (statistics hypercall).
  u64 tlbi_count() const { return __atomic_load_n(&tlbis_, __ATOMIC_RELAXED); }

 private:
  BuddyPool pool_;
  SpinLock lock_;  // allocation and free; reference counts are atomic in the pool
  u64 tlbis_ = 0;
  u64 fail_after_ = 0;  // under lock_
  u64 fail_count_ = 0;
};

/// Cleans [va, va + size) to the point of coherency (data written with the
/// caches on that a CPU with its MMU off, or another agent, will read).
void dcache_clean_poc(const void* va, u64 size);

}  // namespace pkvm
