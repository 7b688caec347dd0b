// SPDX-License-Identifier: Apache-2.0
// SimPlatform: see sim_platform.h for the invariants.
#include "tests/sim/sim_platform.h"

#include <sys/mman.h>

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "pgtable/desc.h"

namespace pkvm::sim {
namespace {

// The host mapping is aligned beyond a page so that, for a suitably aligned
// base_pa, virtual and physical alignment of concatenated roots agree.
constexpr size_t kArenaAlign = 64 * 1024;
// Inaccessible regions before and after the arena turn an overrun of the
// first or last page into a fault instead of silent corruption.
constexpr size_t kGuard = 64 * 1024;

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

}  // namespace

const char* to_string(TlbiKind kind) {
  switch (kind) {
    case TlbiKind::kIpa: return "ipa";
    case TlbiKind::kIpaLocal: return "ipa-local";
    case TlbiKind::kVmid: return "vmid";
    case TlbiKind::kEl2Va: return "el2-va";
    case TlbiKind::kEl2All: return "el2-all";
  }
  return "?";
}

const char* to_string(Barrier b) {
  switch (b) {
    case Barrier::kDsbIshst: return "dsb ishst";
    case Barrier::kDsbIsh: return "dsb ish";
    case Barrier::kIsb: return "isb";
  }
  return "?";
}

std::string describe_pte(u64 pte, u32 level) {
  using namespace desc;
  if (!is_valid(pte)) {
    if (pte == 0) return "empty";
    std::string s = format("invalid(0x%" PRIx64, pte);
    if (is_locked(pte)) s += " LOCKED";
    if (owner(pte)) s += format(" owner=%u", owner(pte));
    return s + ")";
  }
  if (is_table(pte, level)) {
    u64 attrs = pte & ~(kOaMask | kTypeTable | kValid);
    return format("table(->0x%" PRIx64 " attrs=0x%" PRIx64 ")", oa(pte), attrs);
  }
  return format("%s(oa=0x%" PRIx64 " attrs=0x%" PRIx64 ")", level == kLastLevel ? "page" : "block",
                oa(pte), leaf_attrs(pte));
}

std::string to_string(const Event& e) {
  switch (e.type) {
    case EventType::kPteWrite:
      return format("#%" PRIu64 " pte   slot=0x%" PRIx64 " L%u ia=0x%" PRIx64 " vmid=%u: ", e.seq,
                    e.ptep_pa, e.level, e.ia, e.vmid) +
             describe_pte(e.old_pte, e.level) + " -> " + describe_pte(e.new_pte, e.level);
    case EventType::kTlbi:
      return format("#%" PRIu64 " tlbi  %s vmid=%u addr=0x%" PRIx64 " level=%u", e.seq,
                    to_string(e.tlbi), e.vmid, e.addr, e.level);
    case EventType::kBarrier:
      return format("#%" PRIu64 " bar   %s", e.seq, to_string(e.barrier));
    case EventType::kDcacheCleanInvalPoc:
      return format("#%" PRIu64 " dc    civac pa=0x%" PRIx64 " size=0x%" PRIx64, e.seq, e.addr, e.size);
    case EventType::kIcacheInvalPou:
      return format("#%" PRIu64 " ic    ivau pa=0x%" PRIx64 " size=0x%" PRIx64, e.seq, e.addr, e.size);
    case EventType::kAlloc:
      return format("#%" PRIu64 " alloc pa=0x%" PRIx64 " order=%u", e.seq, e.addr, e.order);
    case EventType::kFree:
      return format("#%" PRIu64 " free  pa=0x%" PRIx64 " order=%u", e.seq, e.addr, e.order);
  }
  return "?";
}

SimPlatform::SimPlatform(u64 base_pa, u64 num_pages, u64 pool_pages)
    : base_(base_pa), num_pages_(num_pages), pool_pages_(pool_pages) {
  if ((base_pa & (kPageSize - 1)) != 0 || num_pages == 0 || pool_pages > num_pages ||
      pool_pages > UINT32_MAX) {
    fprintf(stderr, "sim: bad arena geometry base=0x%" PRIx64 " pages=%" PRIu64 " pool=%" PRIu64 "\n",
            base_pa, num_pages, pool_pages);
    abort();
  }
  // mmap rather than aligned_alloc: anonymous memory is zero-filled lazily,
  // so a large arena for a benchmark costs nothing until touched, and the
  // guard regions can be made inaccessible.
  const size_t bytes = num_pages * kPageSize;
  mapping_size_ = bytes + 2 * kGuard + kArenaAlign;
  mapping_ = mmap(nullptr, mapping_size_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping_ == MAP_FAILED) {
    perror("sim: mmap arena");
    abort();
  }
  uintptr_t start = reinterpret_cast<uintptr_t>(mapping_) + kGuard;
  start = (start + kArenaAlign - 1) & ~uintptr_t(kArenaAlign - 1);
  arena_ = reinterpret_cast<u8*>(start);
  if (mprotect(arena_, bytes, PROT_READ | PROT_WRITE) != 0) {
    perror("sim: mprotect arena");
    abort();
  }

  state_ = std::make_unique<std::atomic<u8>[]>(pool_pages_);
  refcount_ = std::make_unique<std::atomic<int>[]>(pool_pages_);
  for (u64 i = 0; i < pool_pages_; i++) {
    state_[i].store(kFreePage, std::memory_order_relaxed);
    refcount_[i].store(0, std::memory_order_relaxed);
  }
  order_.assign(pool_pages_, 0);
  // Reverse order: the lowest pages are handed out first, which keeps
  // addresses in logs small and reproducible.
  free_stack_.reserve(pool_pages_);
  for (u64 i = pool_pages_; i-- > 0;) free_stack_.push_back(u32(i));
  update_pte_hook();
  // phys_to_virt's arena, for the library's inline translation.
  set_linear_window(base_, bytes, reinterpret_cast<uintptr_t>(arena_));
}

SimPlatform::~SimPlatform() {
  std::vector<EventObserver*> obs;
  {
    std::lock_guard<std::mutex> l(rec_mu_);
    obs.swap(observers_);
    observer_count_.store(0);
  }
  for (EventObserver* o : obs) o->on_detach();
  munmap(mapping_, mapping_size_);
}

void SimPlatform::set_fail_hook(FailHook hook) { fail_hook_ = std::move(hook); }

void SimPlatform::fail(const std::string& msg) {
  if (fail_hook_) {
    fail_hook_(msg);
    return;
  }
  fprintf(stderr, "sim: FATAL: %s\n", msg.c_str());
  fflush(stderr);
  abort();
}

void SimPlatform::violation(std::string msg) {
  std::lock_guard<std::mutex> l(violation_mu_);
  violations_.push_back(std::move(msg));
}

std::vector<std::string> SimPlatform::violations() const {
  std::lock_guard<std::mutex> l(violation_mu_);
  return violations_;
}

void SimPlatform::clear_violations() {
  std::lock_guard<std::mutex> l(violation_mu_);
  violations_.clear();
}

bool SimPlatform::contains(const void* va) const { return arena_offset(va) < size(); }

PhysAddr SimPlatform::virt_to_phys(void* va) {
  if (!contains(va)) {
    fail(format("virt_to_phys(%p): address outside the simulated arena [%p, %p)", va,
                static_cast<void*>(arena_), static_cast<void*>(arena_ + size())));
    return PhysAddr(~u64{0});
  }
  return PhysAddr(base_ + u64(static_cast<u8*>(va) - arena_));
}

void* SimPlatform::phys_to_virt(PhysAddr pa) {
  if (!contains(pa)) [[unlikely]] {
    phys_to_virt_outside(pa);
    return nullptr;
  }
  return arena_ + (pa.value() - base_);
}

// Out of line so the translation every table visit makes stays a leaf
// function (no frame for the report it almost never builds).
void SimPlatform::phys_to_virt_outside(PhysAddr pa) {
  fail(format("phys_to_virt(0x%" PRIx64 "): address outside the simulated arena [0x%" PRIx64 ", 0x%" PRIx64 ")",
              pa.value(), base_, base_ + size()));
}

bool SimPlatform::is_allocated(PhysAddr pa) const {
  if (!in_pool(pa)) return false;
  u8 s = state_[(pa.value() - base_) / kPageSize].load(std::memory_order_acquire);
  return s != kFreePage;
}

std::vector<LiveBlock> SimPlatform::live_blocks() const {
  std::lock_guard<std::mutex> l(alloc_mu_);
  std::vector<LiveBlock> out;
  for (u64 i = 0; i < pool_pages_; i++) {
    u8 s = state_[i].load(std::memory_order_relaxed);
    // A block being freed is still live until its free event is recorded.
    if (s == kHead || s == kFreeing) out.push_back({PhysAddr(page_pa(i)), order_[i]});
  }
  return out;
}

void SimPlatform::fail_alloc_after(s64 n, bool sticky) {
  std::lock_guard<std::mutex> l(alloc_mu_);
  fail_countdown_ = n < 0 ? -1 : n;
  fail_sticky_ = sticky;
}

void SimPlatform::set_pool_limit(s64 pages) {
  std::lock_guard<std::mutex> l(alloc_mu_);
  pool_limit_ = pages < 0 ? -1 : pages;
}

void* SimPlatform::zalloc_page() { return alloc_block(0); }

u64 SimPlatform::nr_free_pages() {
  // A snapshot, like the EL2 pool's count: two atomics, no lock (transitions
  // ask on every call).
  const u64 used = in_use_.load(std::memory_order_relaxed);
  const s64 limit = pool_limit_.load(std::memory_order_relaxed);
  u64 n = pool_pages_ - used;
  if (limit >= 0) n = u64(limit) > used ? std::min(n, u64(limit) - used) : 0;
  return n;
}

void* SimPlatform::zalloc_pages(u32 order) { return alloc_block(order); }

void* SimPlatform::alloc_block(u32 order) {
  if (order >= 32) return nullptr;
  const u64 n = u64{1} << order;
  s64 found = -1;
  {
    std::lock_guard<std::mutex> l(alloc_mu_);
    bool inject = false;
    if (fail_countdown_ == 0) {
      inject = true;
      if (!fail_sticky_) fail_countdown_ = -1;
    } else if (fail_countdown_ > 0) {
      fail_countdown_--;
    }
    const u64 used = in_use_.load(std::memory_order_relaxed);
    const s64 limit = pool_limit_.load(std::memory_order_relaxed);
    if (inject || n > pool_pages_ || (limit >= 0 && used + n > u64(limit))) {
      failed_allocs_.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    if (order == 0) {
      while (!free_stack_.empty()) {
        u32 i = free_stack_.back();
        free_stack_.pop_back();
        if (state_[i].load(std::memory_order_relaxed) == kFreePage) {
          found = i;
          break;
        }
      }
    } else {
      // Physical alignment: the first candidate is the first pool page whose
      // frame number is a multiple of n.
      const u64 pfn0 = base_ / kPageSize;
      for (u64 i = (n - (pfn0 & (n - 1))) & (n - 1); i + n <= pool_pages_; i += n) {
        bool all_free = true;
        for (u64 j = 0; j < n && all_free; j++)
          all_free = state_[i + j].load(std::memory_order_relaxed) == kFreePage;
        if (all_free) {
          found = s64(i);
          break;
        }
      }
      // Pages taken here may still sit in free_stack_; rebuild it when stale
      // entries could make it grow without bound.
      if (free_stack_.size() > 2 * pool_pages_) {
        free_stack_.clear();
        for (u64 i = pool_pages_; i-- > 0;)
          if (state_[i].load(std::memory_order_relaxed) == kFreePage) free_stack_.push_back(u32(i));
      }
    }
    if (found < 0) {
      failed_allocs_.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    for (u64 j = 0; j < n; j++) {
      state_[found + j].store(j == 0 ? kHead : kTail, std::memory_order_release);
      refcount_[found + j].store(1, std::memory_order_relaxed);
      order_[found + j] = j == 0 ? u8(order) : 0xff;
    }
    in_use_.fetch_add(n, std::memory_order_relaxed);
    allocs_.fetch_add(1, std::memory_order_relaxed);
  }
  u8* va = page_ptr(u64(found));
  memset(va, 0, n * kPageSize);
  Event e;
  e.type = EventType::kAlloc;
  e.addr = page_pa(u64(found));
  e.order = order;
  record(e);
  return va;
}

s64 SimPlatform::pool_index(const void* va, const char* who) {
  const u64 off = arena_offset(va);
  if (off >= pool_pages_ * kPageSize) {
    violation(format("%s(%p): not a pool page (pool is [0x%" PRIx64 ", 0x%" PRIx64 "))", who, va, base_,
                     base_ + pool_pages_ * kPageSize));
    return -1;
  }
  return s64(off / kPageSize);
}

// Two phases so the free event is recorded before the pages can be handed
// out again (an observer must see free before the next alloc), without
// holding alloc_mu_ while recording (observers are attached under rec_mu_
// and then take alloc_mu_, so the reverse order would deadlock).
bool SimPlatform::free_block(u64 idx, u32 order, int expected_ref, const char* who) {
  const u64 n = u64{1} << order;
  {
    std::lock_guard<std::mutex> l(alloc_mu_);
    const u8 s = state_[idx].load(std::memory_order_relaxed);
    if (s == kFreePage || s == kFreeing) {
      violation(format("%s(pa=0x%" PRIx64 ", order=%u): double free (page is not allocated)", who,
                       page_pa(idx), order));
      return false;
    }
    if (s != kHead || order_[idx] != order) {
      if (expected_ref == 0)
        violation(format("%s(pa=0x%" PRIx64 "): last reference dropped on a page of a multi-page block",
                         who, page_pa(idx)));
      else if (s != kHead)
        violation(format("%s(pa=0x%" PRIx64 ", order=%u): not the first page of an allocated block", who,
                         page_pa(idx), order));
      else
        violation(format("%s(pa=0x%" PRIx64 ", order=%u): block was allocated with order %u", who,
                         page_pa(idx), order, order_[idx]));
      return false;
    }
    for (u64 j = 0; j < n; j++) {
      int r = refcount_[idx + j].load(std::memory_order_acquire);
      if (r != expected_ref) {
        violation(format("%s(pa=0x%" PRIx64 ", order=%u): page 0x%" PRIx64
                         " has reference count %d, expected %d; not freed",
                         who, page_pa(idx), order, page_pa(idx + j), r, expected_ref));
        return false;
      }
    }
    state_[idx].store(kFreeing, std::memory_order_release);
  }
  Event e;
  e.type = EventType::kFree;
  e.addr = page_pa(idx);
  e.order = order;
  record(e);
  {
    std::lock_guard<std::mutex> l(alloc_mu_);
    for (u64 j = 0; j < n; j++) {
      refcount_[idx + j].store(0, std::memory_order_relaxed);
      state_[idx + j].store(kFreePage, std::memory_order_release);
      order_[idx + j] = 0;
      free_stack_.push_back(u32(idx + j));
    }
    in_use_.fetch_sub(n, std::memory_order_relaxed);
    frees_.fetch_add(1, std::memory_order_relaxed);
  }
  return true;
}

void SimPlatform::free_pages(void* va, u32 order) {
  s64 idx = pool_index(va, "free_pages");
  if (idx < 0) return;
  if (reinterpret_cast<uintptr_t>(va) & (kPageSize - 1)) {
    violation(format("free_pages(%p): not page aligned", va));
    return;
  }
  free_block(u64(idx), order, 1, "free_pages");
}

void SimPlatform::get_page(void* va) { get_refs(va, 1, "get_page"); }

void SimPlatform::get_page_refs(void* va, u32 n) { get_refs(va, n, "get_page_refs"); }

void SimPlatform::get_refs(void* va, u32 n, const char* who) {
  s64 idx = pool_index(va, who);
  if (idx < 0 || n == 0) return;
  int old = refcount_[idx].fetch_add(int(n), std::memory_order_acq_rel);
  if (old <= 0) {
    refcount_[idx].fetch_sub(int(n), std::memory_order_acq_rel);
    violation(format("%s(pa=0x%" PRIx64 "): page is free (reference count %d)", who, page_pa(u64(idx)), old));
  }
}

void SimPlatform::put_page(void* va) { put_refs(va, 1, "put_page"); }

void SimPlatform::put_page_refs(void* va, u32 n) { put_refs(va, n, "put_page_refs"); }

void SimPlatform::put_refs(void* va, u32 n, const char* who) {
  s64 idx = pool_index(va, who);
  if (idx < 0 || n == 0) return;
  int old = refcount_[idx].fetch_sub(int(n), std::memory_order_acq_rel);
  if (old < int(n)) {
    refcount_[idx].fetch_add(int(n), std::memory_order_acq_rel);
    violation(format("%s(pa=0x%" PRIx64 ", %u): reference count underflow (was %d): page already free", who,
                     page_pa(u64(idx)), n, old));
    return;
  }
  if (old != int(n)) return;
  // The last reference frees the page; free_block refuses (and reports) a
  // page of a multi-page block, whose caller lost track of its counts.
  if (!free_block(u64(idx), 0, 0, who)) refcount_[idx].fetch_add(1, std::memory_order_acq_rel);
}

int SimPlatform::page_count(void* va) {
  const u64 off = arena_offset(va);
  if (off >= pool_pages_ * kPageSize) return 0;
  return refcount_[off / kPageSize].load(std::memory_order_acquire);
}

void SimPlatform::record(Event e) {
  // Counting mode: nothing to materialise, the caller already bumped the
  // counters.
  if (!observed()) return;
  std::lock_guard<std::mutex> l(rec_mu_);
  e.seq = next_seq_++;
  if (recording_.load(std::memory_order_relaxed)) log_.push_back(e);
  for (EventObserver* o : observers_) o->on_event(e);
}

void SimCpu::relax() { std::this_thread::yield(); }

namespace {
std::atomic<u32> g_cpus_in_use{0};  // bit i: CPU index i held by a live thread

// Gives the index back when its thread exits.
struct CpuSlot {
  u32 id;
  ~CpuSlot() { g_cpus_in_use.fetch_and(~(1u << id), std::memory_order_release); }
};
}  // namespace

u32 SimPlatform::claim_cpu() {
  static_assert(kMaxCpus <= 32, "one bit per CPU index");
  u32 used = g_cpus_in_use.load(std::memory_order_relaxed);
  for (;;) {
    u32 id = 0;
    while (id < kMaxCpus && (used & (1u << id))) ++id;
    if (id == kMaxCpus) {
      fprintf(stderr, "SimPlatform: more than %u threads use the simulated machine at once (one CPU each)\n",
              kMaxCpus);
      abort();
    }
    if (g_cpus_in_use.compare_exchange_weak(used, used | (1u << id), std::memory_order_acquire,
                                            std::memory_order_relaxed)) {
      thread_local CpuSlot slot{id};  // constructed here, once per thread; released at exit
      return id;
    }
  }
}

void SimPlatform::dcache_clean_inval_poc(PhysAddr pa, u64 size) {
  bump(&mine().dcache_ops);
  Event e;
  e.type = EventType::kDcacheCleanInvalPoc;
  e.addr = pa.value();
  e.size = size;
  record(e);
}

void SimPlatform::icache_inval_pou(PhysAddr pa, u64 size) {
  bump(&mine().icache_ops);
  Event e;
  e.type = EventType::kIcacheInvalPou;
  e.addr = pa.value();
  e.size = size;
  record(e);
}

void SimPlatform::tlbi(TlbiKind kind, u32 vmid, u64 addr, u32 level) {
  bump(&mine().tlbis[u32(kind)]);
  if (observed()) record_tlbi(kind, vmid, addr, level);
}

void SimPlatform::record_tlbi(TlbiKind kind, u32 vmid, u64 addr, u32 level) {
  Event e;
  e.type = EventType::kTlbi;
  e.tlbi = kind;
  e.vmid = vmid;
  e.addr = addr;
  e.level = level;
  record(e);
}

void SimPlatform::tlbi_batch(TlbiKind kind, u32 vmid, const u64* addrs, const u32* levels, u32 n) {
  // Counted at once; the events, when observed, one per entry as tlbi() records them.
  percpu_add(&mine().tlbis[u32(kind)], n);
  if (!observed()) return;
  for (u32 i = 0; i < n; ++i) record_tlbi(kind, vmid, addrs[i], levels[i]);
}

void SimPlatform::barrier(Barrier b) {
  bump(&mine().barriers[u32(b)]);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!observed()) return;
  Event e;
  e.type = EventType::kBarrier;
  e.barrier = b;
  record(e);
}

void SimPlatform::pte_written(u64* ptep, u64 old, u64 new_pte, u64 ia, u32 level, u32 vmid) {
  bump(&mine().pte_writes);
  if (!observed()) return;  // skip the translation too: benchmarks call this on every store
  record_pte_write(ptep, old, new_pte, ia, level, vmid);
}

// Out of line: the counting-only path above stays without a frame.
void SimPlatform::record_pte_write(u64* ptep, u64 old, u64 new_pte, u64 ia, u32 level, u32 vmid) {
  Event e;
  e.type = EventType::kPteWrite;
  e.ptep_pa = virt_to_phys(ptep).value();
  e.ptep_va = reinterpret_cast<uintptr_t>(ptep);
  e.old_pte = old;
  e.new_pte = new_pte;
  e.ia = ia;
  e.level = level;
  e.vmid = vmid;
  record(e);
}

std::vector<Event> SimPlatform::events() const {
  std::lock_guard<std::mutex> l(rec_mu_);
  return log_;
}

void SimPlatform::clear_events() {
  std::lock_guard<std::mutex> l(rec_mu_);
  log_.clear();
}

u64 SimPlatform::tlbi_count(TlbiKind kind) const { return counters_.sum().tlbis[u32(kind)]; }

u64 SimPlatform::tlbi_count() const {
  u64 n = 0;
  for (u64 c : counters_.sum().tlbis) n += c;
  return n;
}

u64 SimPlatform::barrier_count(Barrier b) const { return counters_.sum().barriers[u32(b)]; }

u64 SimPlatform::barrier_count() const {
  u64 n = 0;
  for (u64 c : counters_.sum().barriers) n += c;
  return n;
}

void SimPlatform::reset_counters() {
  counters_ = {};
}

SimPlatform::Checkpoint SimPlatform::checkpoint() const {
  std::scoped_lock l(alloc_mu_, violation_mu_, rec_mu_);
  Checkpoint c;
  c.state.resize(pool_pages_);
  c.refcount.resize(pool_pages_);
  for (u64 i = 0; i < pool_pages_; i++) {
    c.state[i] = state_[i].load(std::memory_order_relaxed);
    c.refcount[i] = refcount_[i].load(std::memory_order_relaxed);
    if (c.state[i] != kFreePage) c.pages.emplace_back(i, std::vector<u8>(page_ptr(i), page_ptr(i) + kPageSize));
  }
  c.order = order_;
  c.free_stack = free_stack_;
  c.fail_countdown = fail_countdown_;
  c.pool_limit = pool_limit_.load();
  c.fail_sticky = fail_sticky_;
  c.in_use = in_use_.load();
  c.allocs = allocs_.load();
  c.frees = frees_.load();
  c.failed_allocs = failed_allocs_.load();
  c.next_seq = next_seq_;
  c.log_size = log_.size();
  c.counters = counters_.sum();
  c.violations = violations_.size();
  return c;
}

void SimPlatform::rollback(const Checkpoint& c) {
  std::scoped_lock l(alloc_mu_, violation_mu_, rec_mu_);
  for (u64 i = 0; i < pool_pages_; i++) {
    state_[i].store(c.state[i], std::memory_order_relaxed);
    refcount_[i].store(c.refcount[i], std::memory_order_relaxed);
  }
  for (const auto& [i, bytes] : c.pages) memcpy(page_ptr(i), bytes.data(), kPageSize);
  order_ = c.order;
  free_stack_ = c.free_stack;
  fail_countdown_ = c.fail_countdown;
  pool_limit_.store(c.pool_limit);
  fail_sticky_ = c.fail_sticky;
  in_use_.store(c.in_use);
  allocs_.store(c.allocs);
  frees_.store(c.frees);
  failed_allocs_.store(c.failed_allocs);
  next_seq_ = c.next_seq;
  if (log_.size() > c.log_size) log_.resize(c.log_size);
  counters_ = {};
  counters_.cpu(0) = c.counters;
  if (violations_.size() > c.violations) violations_.resize(c.violations);
}

std::string SimPlatform::dump(size_t max_events) const {
  std::lock_guard<std::mutex> l(rec_mu_);
  size_t first = max_events && log_.size() > max_events ? log_.size() - max_events : 0;
  std::string out = format("%zu event(s)%s:\n", log_.size() - first, first ? " (most recent)" : "");
  for (size_t i = first; i < log_.size(); i++) out += "  " + to_string(log_[i]) + "\n";
  return out;
}

void SimPlatform::add_observer(EventObserver* o) {
  std::lock_guard<std::mutex> l(rec_mu_);
  if (std::find(observers_.begin(), observers_.end(), o) != observers_.end()) return;
  // Snapshot and registration under rec_mu_: no event can slip in between.
  o->on_attach(*this, live_blocks());
  observers_.push_back(o);
  observer_count_.store(int(observers_.size()), std::memory_order_release);
  update_pte_hook();
}

void SimPlatform::remove_observer(EventObserver* o) {
  {
    std::lock_guard<std::mutex> l(rec_mu_);
    auto it = std::find(observers_.begin(), observers_.end(), o);
    if (it == observers_.end()) return;
    observers_.erase(it);
    observer_count_.store(int(observers_.size()), std::memory_order_release);
    update_pte_hook();
  }
  o->on_detach();
}

}  // namespace pkvm::sim
