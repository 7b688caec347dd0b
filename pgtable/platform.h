// SPDX-License-Identifier: Apache-2.0
// The one small interface through which pgtable and mem_protect reach the
// platform: page allocation and reference counts, phys<->virt, cache and TLB
// maintenance, barriers and locks. EL2 implements it with real instructions;
// the host test build implements it over a simulated physical memory and
// records every descriptor write, invalidation and barrier.
#pragma once

#include "pgtable/types.h"

namespace pkvm {

/// The kind of TLB invalidation requested, from narrowest to widest.
enum class TlbiKind : u8 {
  kIpa,       ///< One stage-2 IPA at a level, broadcast (TLBI IPAS2E1IS + VMALLE1IS).
  kIpaLocal,  ///< One stage-2 IPA, this CPU only (TLBI IPAS2E1): permission relaxation only.
  kVmid,      ///< Every stage-1 and stage-2 entry of a VMID (TLBI VMALLS12E1IS).
  kEl2Va,     ///< One EL2 stage-1 VA, broadcast (TLBI VAE2IS).
  kEl2All,    ///< All EL2 stage-1 entries (TLBI ALLE2IS).
};

/// Memory barriers the library asks for, by name of the instruction.
enum class Barrier : u8 { kDsbIshst, kDsbIsh, kIsb };

/// Platform services. All methods may be called with a table lock held; none
/// may sleep. Implementations must make the reference-count operations atomic
/// because shared walkers on several CPUs update them concurrently.
class Platform {
 public:
  /// Returns a zeroed, page-aligned page with reference count 1, or nullptr
  /// when the pool is exhausted.
  virtual void* zalloc_page() = 0;
  /// Returns `1 << order` physically contiguous zeroed pages aligned to their
  /// total size (for concatenated stage-2 root tables), or nullptr.
  virtual void* zalloc_pages(u32 order) = 0;
  /// Returns a page (or a block from zalloc_pages) to the pool.
  virtual void free_pages(void* va, u32 order) = 0;
  /// Number of pages zalloc_page() can still hand out. Callers that must not
  /// fail half-way check this before they commit.
  virtual u64 nr_free_pages() = 0;
  /// Increments the reference count of the page containing `va`.
  virtual void get_page(void* va) = 0;
  /// Decrements the reference count of the page containing `va`; frees the
  /// page when it drops to zero.
  virtual void put_page(void* va) = 0;
  /// Adds `n` references to the page containing `va` at once: a walk that
  /// wrote n entries of one table updates its count once.
  virtual void get_page_refs(void* va, u32 n) = 0;
  /// Drops `n` references from the page containing `va` at once, freeing
  /// the page when the count reaches zero. A count below `n` is an
  /// accounting error: the count is left as it is (a page leaked is safer
  /// than a table page freed while still in use); the simulator reports it.
  virtual void put_page_refs(void* va, u32 n) = 0;
  /// Current reference count of the page containing `va`.
  virtual int page_count(void* va) = 0;
  /// Physical address of a page the platform handed out.
  virtual PhysAddr virt_to_phys(void* va) = 0;
  /// Virtual address at which the library may access physical address `pa`.
  virtual void* phys_to_virt(PhysAddr pa) = 0;
  /// phys_to_virt without a call inside the platform's linear window
  /// (set_linear_window), which holds every page it hands out: the walker
  /// translates a table address at every level. Elsewhere, phys_to_virt.
  void* phys_to_virt_linear(PhysAddr pa) { return linear_window().to_virt(pa); }
  /// The linear window as a value, for a descent that translates at every
  /// level: kept in registers, where the platform's fields would be
  /// reloaded after each acquire load of an entry.
  struct LinearWindow {
    u64 pa, size;
    uintptr_t va;
    Platform* p;
    /// phys_to_virt_linear through this snapshot.
    void* to_virt(PhysAddr a) const {
      const u64 off = a.value() - pa;
      return off < size ? reinterpret_cast<void*>(va + off) : p->phys_to_virt(a);
    }
  };
  /// A snapshot of the window (set once, before use: it never changes after).
  LinearWindow linear_window() { return LinearWindow{lin_pa_, lin_size_, lin_va_, this}; }
  /// Clean and invalidate the data cache to the point of coherency, for memory
  /// about to be mapped with a cacheable attribute in another context.
  virtual void dcache_clean_inval_poc(PhysAddr pa, u64 size) = 0;
  /// Invalidate the instruction cache to the point of unification, for memory
  /// about to be mapped executable.
  virtual void icache_inval_pou(PhysAddr pa, u64 size) = 0;
  /// TLB invalidation. `addr` and `level` are meaningful for the by-address
  /// kinds; `vmid` for the stage-2 kinds. Implementations include the DSB
  /// that completes the invalidation; callers order the descriptor write
  /// before it with barrier(kDsbIshst).
  virtual void tlbi(TlbiKind kind, u32 vmid, u64 addr, u32 level) = 0;
  /// `n` invalidations of one kind (addresses and levels per entry), complete
  /// on return. Implementations may issue them back to back and complete
  /// them together: one DSB, and for stage 2 one stage-1 flush of the VMID
  /// after all the by-IPA ones.
  virtual void tlbi_batch(TlbiKind kind, u32 vmid, const u64* addrs, const u32* levels, u32 n) = 0;
  /// A memory barrier.
  virtual void barrier(Barrier b) = 0;
  /// Observation hook: called after every descriptor store or successful CAS
  /// with the entry's table-relative position, while wants_pte_writes()
  /// holds. The host recorder checks break-before-make with it; EL2 never
  /// turns it on, so a descriptor store costs no call there.
  virtual void pte_written(u64* ptep, u64 old, u64 new_pte, u64 ia, u32 level, u32 vmid) = 0;
  /// Whether the library calls pte_written. Read on every descriptor store:
  /// a flag, not a virtual call.
  bool wants_pte_writes() const { return __atomic_load_n(&pte_hook_, __ATOMIC_RELAXED); }
  /// Index of the calling CPU, below kMaxCpus: which per-CPU statistics slot
  /// to count in, so CPUs resolving aborts together do not share a line.
  virtual u32 cpu_id() = 0;

 protected:
  ~Platform() = default;
  /// Turns pte_written calls on or off (an implementation that observes).
  void set_wants_pte_writes(bool on) { __atomic_store_n(&pte_hook_, on, __ATOMIC_RELAXED); }
  /// Declares that phys_to_virt maps [pa, pa + size) to [va, va + size).
  /// Set once, before the platform is used.
  void set_linear_window(u64 pa, u64 size, uintptr_t va) {
    lin_pa_ = pa;
    lin_size_ = size;
    lin_va_ = va;
  }

 private:
  bool pte_hook_ = false;
  u64 lin_pa_ = 0;
  u64 lin_size_ = 0;  // empty: every translation takes the virtual call
  uintptr_t lin_va_ = 0;
};

/// CPUs a platform may report from cpu_id(): per-CPU counters and lock slots
/// are arrays of this size.
inline constexpr u32 kMaxCpus = 8;

/// A spinlock-like lock with a shared (reader) mode, supplied by the platform.
class RwLock {
 public:
  /// Takes the lock exclusively.
  virtual void lock() = 0;
  /// Releases an exclusive hold.
  virtual void unlock() = 0;
  /// Takes the lock shared: other shared holders may run at the same time.
  virtual void lock_shared() = 0;
  /// Releases a shared hold.
  virtual void unlock_shared() = 0;

 protected:
  ~RwLock() = default;
};

}  // namespace pkvm
