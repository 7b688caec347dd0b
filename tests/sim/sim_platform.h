// SPDX-License-Identifier: Apache-2.0
// Host-side implementation of pkvm::Platform used by every unit test, fuzzer
// and benchmark: a simulated physical memory arena, a page allocator with
// reference counts and failure injection, and a recorder of every descriptor
// write, TLB invalidation, barrier, cache operation and page allocation.
//
// Invariants (a violation of the first one is fatal, the others are recorded):
//  * phys_to_virt / virt_to_phys only accept addresses inside the arena. Any
//    other address calls the fail hook; the default hook prints the reason to
//    stderr and aborts, because the library dereferencing memory it never got
//    from the platform is a bug no test may survive.
//  * Allocator misuse (double free, freeing a page someone still references,
//    get/put on a page that is not allocated, a wrong order) never corrupts
//    the allocator: the call is refused and a message is appended to
//    violations(). An attached BbmChecker reports these too.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "pgtable/percpu.h"
#include "pgtable/platform.h"
#include "pgtable/types.h"

namespace pkvm::sim {

/// What a recorded Event describes.
enum class EventType : u8 {
  kPteWrite,             ///< Platform::pte_written.
  kTlbi,                 ///< Platform::tlbi.
  kBarrier,              ///< Platform::barrier.
  kDcacheCleanInvalPoc,  ///< Platform::dcache_clean_inval_poc.
  kIcacheInvalPou,       ///< Platform::icache_inval_pou.
  kAlloc,                ///< A successful zalloc_page / zalloc_pages.
  kFree,                 ///< A block returned to the pool (free_pages or put_page to 0).
};

/// One recorded platform call. Only the fields of its type are meaningful.
struct Event {
  EventType type = EventType::kPteWrite;
  /// Position in the recorder's total order (every event delivered to the log
  /// or to an observer gets the next number).
  u64 seq = 0;
  // kPteWrite.
  u64 ptep_pa = 0;  ///< Physical address of the descriptor.
  u64 ptep_va = 0;  ///< Host address of the descriptor.
  u64 old_pte = 0;
  u64 new_pte = 0;
  u64 ia = 0;  ///< Input address the library reported for the entry.
  u32 level = 0;  ///< Level of the entry (kPteWrite) or TLBI level hint (kTlbi).
  u32 vmid = 0;   ///< Table id for kPteWrite, VMID argument for kTlbi.
  // kTlbi.
  TlbiKind tlbi = TlbiKind::kIpa;
  /// TLBI address (kTlbi), physical address (cache operations), first page
  /// of the block (kAlloc / kFree).
  u64 addr = 0;
  // kBarrier.
  Barrier barrier = Barrier::kDsbIsh;
  // Cache operations.
  u64 size = 0;
  // kAlloc / kFree.
  u32 order = 0;
};

/// Name of a TLBI kind ("ipa", "ipa-local", "vmid", "el2-va", "el2-all").
const char* to_string(TlbiKind kind);
/// Name of a barrier ("dsb ishst", "dsb ish", "isb").
const char* to_string(Barrier b);
/// Human-readable decoding of a descriptor at `level` (invalid/owner/locked,
/// table, block or page with output address and attributes).
std::string describe_pte(u64 pte, u32 level);
/// One line describing an event, for logs and failure messages.
std::string to_string(const Event& e);

/// A block handed out by the allocator and not yet returned.
struct LiveBlock {
  PhysAddr pa;
  u32 order;
};

class SimPlatform;

/// Receives every event as it is recorded. Callbacks run with the recorder's
/// lock held, so they see one total order and must not call back into the
/// recorder (events(), add_observer, ...) or into the allocator.
class EventObserver {
 public:
  /// Called for every event, in recorder order.
  virtual void on_event(const Event& e) = 0;
  /// Called once by add_observer, atomically with registration, with the
  /// blocks allocated at that moment, so an observer attached late still
  /// knows which pages are live.
  virtual void on_attach(SimPlatform& platform, const std::vector<LiveBlock>& live) {
    (void)platform;
    (void)live;
  }
  /// Called when the observer is removed or the platform is destroyed.
  virtual void on_detach() {}

 protected:
  ~EventObserver() = default;
};

/// Event counters, kept per CPU by SimPlatform.
struct SimCounters {
  u64 tlbis[5];
  u64 barriers[3];
  u64 pte_writes, dcache_ops, icache_ops;
};

/// The host platform: simulated physical memory, allocator and recorder.
class SimPlatform : public Platform {
 public:
  static constexpr u64 kDefaultBase = 0x40000000;
  static constexpr u64 kPageSize = 4096;

  /// Creates an arena of `num_pages` pages at physical address `base_pa`
  /// (page aligned). The first `pool_pages` pages are the table-page pool the
  /// allocator hands out; the remaining pages are data memory tests may map
  /// (data_base() onward). The arena is zero-filled and surrounded by
  /// inaccessible guard regions.
  explicit SimPlatform(u64 base_pa = kDefaultBase, u64 num_pages = 4096, u64 pool_pages = 1024);
  virtual ~SimPlatform();
  SimPlatform(const SimPlatform&) = delete;
  SimPlatform& operator=(const SimPlatform&) = delete;

  // --- pkvm::Platform ---------------------------------------------------------
  /// Zeroed pool page with reference count 1, or nullptr (exhausted/injected).
  void* zalloc_page() override;
  /// `1 << order` contiguous zeroed pool pages, physically aligned to their
  /// total size, each with reference count 1; nullptr on failure.
  void* zalloc_pages(u32 order) override;
  /// Returns a block to the pool. Every page must have reference count
  /// exactly 1 (the allocation's own reference) and `va` must be the head of
  /// a block of exactly `order`; otherwise the call is refused and recorded
  /// as a violation.
  void free_pages(void* va, u32 order) override;
  /// Pages still available: the free pool pages, capped by set_pool_limit.
  /// fail_alloc_after is deliberately not reflected: it models a failure the
  /// pool could not predict. Use set_pool_limit for a shortage callers can see.
  u64 nr_free_pages() override;
  /// Increments the page's reference count (violation if it is not allocated).
  void get_page(void* va) override;
  /// Decrements the page's reference count; at 0 an order-0 block is freed.
  /// Dropping below 0, or a page of a larger block reaching 0, is a violation.
  void put_page(void* va) override;
  /// get_page `n` times in one atomic update, with the same checks.
  void get_page_refs(void* va, u32 n) override;
  /// put_page `n` times in one atomic update, with the same checks.
  void put_page_refs(void* va, u32 n) override;
  /// Reference count of the pool page containing `va` (0 for free or data pages).
  int page_count(void* va) override;
  /// Arena pointer -> physical address; fail hook when outside the arena.
  PhysAddr virt_to_phys(void* va) override;
  /// Physical address -> arena pointer; fail hook when outside the arena.
  void* phys_to_virt(PhysAddr pa) override;
  /// Recorded and counted; no host effect (the host is coherent).
  void dcache_clean_inval_poc(PhysAddr pa, u64 size) override;
  /// Recorded and counted; no host effect.
  void icache_inval_pou(PhysAddr pa, u64 size) override;
  /// Recorded and counted.
  void tlbi(TlbiKind kind, u32 vmid, u64 addr, u32 level) override;
  /// One kTlbi event per entry, in order (what the hardware must invalidate;
  /// when it completes is the implementation's concern).
  void tlbi_batch(TlbiKind kind, u32 vmid, const u64* addrs, const u32* levels, u32 n) override;
  /// Recorded and counted; also issues a host fence so barriers stay barriers.
  void barrier(Barrier b) override;
  /// Recorded (with the descriptor's physical address) and counted.
  void pte_written(u64* ptep, u64 old, u64 new_pte, u64 ia, u32 level, u32 vmid) override;
  /// The calling thread's CPU index: a free index claimed on first use and
  /// released when the thread exits, so live threads never share one (a
  /// CPU is the only writer of its per-CPU statistics). More than kMaxCpus
  /// live threads on the simulated machine is a test bug: reported, abort.
  u32 cpu_id() override { return thread_cpu(); }
  /// cpu_id() without a platform. Constant-initialised thread_local (no
  /// guard on each access: this sits on every counted event).
  static u32 thread_cpu() {
    thread_local u32 id = ~0u;
    if (id == ~0u) [[unlikely]] id = claim_cpu();
    return id;
  }

  // --- Memory layout ---------------------------------------------------------
  /// First physical address of the arena.
  PhysAddr base() const { return PhysAddr(base_); }
  /// Arena size in pages.
  u64 num_pages() const { return num_pages_; }
  /// Arena size in bytes.
  u64 size() const { return num_pages_ * kPageSize; }
  /// First physical address of the table-page pool (== base()).
  PhysAddr pool_base() const { return PhysAddr(base_); }
  /// Number of pages in the table-page pool.
  u64 pool_pages() const { return pool_pages_; }
  /// First physical address of the data memory (after the pool).
  PhysAddr data_base() const { return PhysAddr(base_ + pool_pages_ * kPageSize); }
  /// Number of data pages.
  u64 data_pages() const { return num_pages_ - pool_pages_; }
  /// True when `pa` lies inside the arena.
  bool contains(PhysAddr pa) const { return pa.value() >= base_ && pa.value() - base_ < size(); }
  /// True when `va` points inside the arena.
  bool contains(const void* va) const;
  /// True when `pa` lies in the table-page pool.
  bool in_pool(PhysAddr pa) const {
    return pa.value() >= base_ && pa.value() - base_ < pool_pages_ * kPageSize;
  }
  /// True when the pool page containing `pa` is currently allocated.
  bool is_allocated(PhysAddr pa) const;
  /// Every block currently allocated, lowest address first.
  std::vector<LiveBlock> live_blocks() const;

  /// Called with a message when an address outside the arena is translated.
  using FailHook = std::function<void(const std::string&)>;
  /// Replaces the fail hook (nullptr restores the default: print and abort).
  /// When a custom hook returns, the translation yields nullptr / PhysAddr(~0).
  void set_fail_hook(FailHook hook);

  // --- Allocator control and statistics --------------------------------------
  /// The next `n` allocation requests behave normally and the (n+1)-th
  /// returns nullptr. One-shot unless `sticky` (then every later request
  /// fails too). n < 0 disables injection.
  void fail_alloc_after(s64 n, bool sticky = false);
  /// Caps the number of pool pages in use at once; pages < 0 removes the cap.
  void set_pool_limit(s64 pages);
  /// Pool pages currently allocated.
  u64 pages_in_use() const { return in_use_.load(std::memory_order_relaxed); }
  /// Successful allocation calls so far.
  u64 alloc_count() const { return allocs_.load(std::memory_order_relaxed); }
  /// Blocks returned so far (free_pages and put_page to 0).
  u64 free_count() const { return frees_.load(std::memory_order_relaxed); }
  /// Allocation requests that returned nullptr.
  u64 failed_alloc_count() const { return failed_allocs_.load(std::memory_order_relaxed); }
  /// Allocator misuse detected so far, one message each.
  std::vector<std::string> violations() const;
  /// Forgets the recorded violations.
  void clear_violations();

  // --- Recorder ----------------------------------------------------------------
  /// Full event log on (default) or off. Counters are kept either way, and
  /// observers receive events either way.
  void set_recording(bool on) {
    recording_.store(on, std::memory_order_relaxed);
    update_pte_hook();
  }
  /// Descriptor writes counted (default) or not. Off, and with no log and no
  /// observer, the library does not call pte_written at all, as at EL2
  /// (Platform::wants_pte_writes): the benchmarks that report no write
  /// counts time the library without the hook.
  void set_pte_write_counting(bool on) {
    count_pte_writes_.store(on, std::memory_order_relaxed);
    update_pte_hook();
  }
  /// Whether the full event log is on.
  bool recording() const { return recording_.load(std::memory_order_relaxed); }
  /// A copy of the event log.
  std::vector<Event> events() const;
  /// Empties the event log (counters are kept; see reset_counters).
  void clear_events();
  /// TLB invalidations of `kind` since the last reset_counters().
  u64 tlbi_count(TlbiKind kind) const;
  /// TLB invalidations of every kind.
  u64 tlbi_count() const;
  /// Barriers of type `b`.
  u64 barrier_count(Barrier b) const;
  /// Barriers of every type.
  u64 barrier_count() const;
  /// pte_written calls.
  u64 pte_write_count() const { return counters_.sum().pte_writes; }
  /// dcache_clean_inval_poc calls.
  u64 dcache_op_count() const { return counters_.sum().dcache_ops; }
  /// icache_inval_pou calls.
  u64 icache_op_count() const { return counters_.sum().icache_ops; }
  /// Zeroes the TLBI, barrier, descriptor-write and cache-operation counters.
  void reset_counters();
  /// The log as text, one event a line; only the last `max_events` when non-zero.
  std::string dump(size_t max_events = 0) const;

  /// Allocator state, counters and the contents of the pool pages in use at
  /// one moment: what rollback() needs to return there.
  struct Checkpoint {
    std::vector<u8> state, order;
    std::vector<int> refcount;
    std::vector<u32> free_stack;
    std::vector<std::pair<u64, std::vector<u8>>> pages;  // (pool index, contents) of pages in use
    s64 fail_countdown, pool_limit;
    bool fail_sticky;
    u64 in_use, allocs, frees, failed_allocs, next_seq, log_size;
    SimCounters counters;
    size_t violations;
  };
  /// Captures the pool and counters (observers are not notified and are not
  /// part of it; checkpoint them separately).
  Checkpoint checkpoint() const;
  /// Returns the pool and counters to `c`. Pool pages free in `c` are left
  /// as they are (allocation zeroes them); data pages are not touched. Only
  /// valid with no concurrent user of the platform.
  void rollback(const Checkpoint& c);

  /// Registers an observer; on_attach runs first with the live blocks.
  void add_observer(EventObserver* o);
  /// Unregisters an observer (no-op when absent); its on_detach runs.
  void remove_observer(EventObserver* o);

 private:
  enum PageState : u8 { kFreePage = 0, kHead, kTail, kFreeing };

  void fail(const std::string& msg);
  [[gnu::noinline, gnu::cold]] void phys_to_virt_outside(PhysAddr pa);
  void record_tlbi(TlbiKind kind, u32 vmid, u64 addr, u32 level);  // the kTlbi event, when observed
  [[gnu::noinline]] void record_pte_write(u64* ptep, u64 old, u64 new_pte, u64 ia, u32 level, u32 vmid);
  void violation(std::string msg);
  void record(Event e);
  void* alloc_block(u32 order);
  bool free_block(u64 idx, u32 order, int expected_ref, const char* who);
  /// Index of the pool page holding host address `va`, or -1 (with a
  /// violation naming `who`) when `va` is not a pool page.
  s64 pool_index(const void* va, const char* who);
  void get_refs(void* va, u32 n, const char* who);
  void put_refs(void* va, u32 n, const char* who);
  u8* page_ptr(u64 idx) const { return arena_ + idx * kPageSize; }
  // `va`'s offset into the arena; an address below it wraps to a huge
  // offset, so one unsigned compare with a size bounds both ends.
  u64 arena_offset(const void* va) const {
    return u64(reinterpret_cast<uintptr_t>(va) - reinterpret_cast<uintptr_t>(arena_));
  }
  u64 page_pa(u64 idx) const { return base_ + idx * kPageSize; }

  const u64 base_;
  const u64 num_pages_;
  const u64 pool_pages_;
  u8* arena_ = nullptr;     // first arena byte
  void* mapping_ = nullptr;  // whole host mapping, guards included
  size_t mapping_size_ = 0;

  FailHook fail_hook_;

  // Allocator. State and reference counts are atomics so queries and
  // get/put need no lock; alloc_mu_ serialises state transitions.
  mutable std::mutex alloc_mu_;
  std::unique_ptr<std::atomic<u8>[]> state_;
  std::unique_ptr<std::atomic<int>[]> refcount_;
  std::vector<u8> order_;        // order of the block a kHead page starts
  std::vector<u32> free_stack_;  // order-0 candidates; stale entries skipped lazily
  s64 fail_countdown_ = -1;
  bool fail_sticky_ = false;
  std::atomic<s64> pool_limit_{-1};  // written under alloc_mu_, read without it
  std::atomic<u64> in_use_{0};
  std::atomic<u64> allocs_{0};
  std::atomic<u64> frees_{0};
  std::atomic<u64> failed_allocs_{0};

  mutable std::mutex violation_mu_;
  std::vector<std::string> violations_;

  // Recorder.
  std::atomic<bool> recording_{true};
  std::atomic<bool> count_pte_writes_{true};
  std::atomic<int> observer_count_{0};
  mutable std::mutex rec_mu_;
  std::vector<Event> log_;
  std::vector<EventObserver*> observers_;
  u64 next_seq_ = 1;
  // Per CPU (thread): concurrent walkers would otherwise share one line.
  PerCpuCounters<SimCounters> counters_;
  // The calling thread's counters (its own CPU index: it is their only writer).
  SimCounters& mine() { return counters_.cpu(thread_cpu()); }
  static void bump(u64* counter) { percpu_add(counter); }  // in mine(): this thread's own copy
  // thread_cpu()'s first use on a thread: the lowest free index, held until
  // the thread exits.
  [[gnu::noinline]] static u32 claim_cpu();
  // pte_written is wanted while writes are counted, logged or watched.
  void update_pte_hook() {
    set_wants_pte_writes(count_pte_writes_.load(std::memory_order_relaxed) || observed());
  }
  // Whether events are logged or watched; counting mode (benchmarks) builds none.
  bool observed() const {
    return recording_.load(std::memory_order_relaxed) || observer_count_.load(std::memory_order_acquire) != 0;
  }
};

/// Host threads as CPUs for PerCpuRwLock: SimPlatform's numbering.
struct SimCpu {
  static u32 id() { return SimPlatform::thread_cpu(); }
  static void relax();
};

/// pkvm::RwLock for the host: the same per-CPU reader lock EL2 uses for the
/// host stage 2 (pgtable/percpu.h), with threads standing for CPUs.
using SimRwLock = PerCpuRwLock<SimCpu>;
/// The one-word reader/writer spinlock EL2 uses for the hypervisor and guest
/// locks (pgtable/percpu.h).
using SimSpinRwLock = SpinRwLock<SimCpu>;

}  // namespace pkvm::sim
