// SPDX-License-Identifier: Apache-2.0
// The locks and per-CPU building blocks of the hypervisor: counters summed
// on read, a reader/writer lock whose readers touch only their own CPU's slot
// (concurrent host aborts stay off each other's cache lines), and a one-word
// reader/writer spinlock for the locks that are only ever taken exclusively
// in practice. Freestanding (EL2 and host).
#pragma once

#include "pgtable/platform.h"

namespace pkvm {

// Statistics plumbing is not what a coverage-guided fuzzer should explore
// (and its instrumented loops cost more than the operations counted).
#if defined(__clang__)
#define PKVM_NO_COVERAGE __attribute__((no_sanitize("coverage")))
#elif defined(__GNUC__)
#define PKVM_NO_COVERAGE __attribute__((no_sanitize_coverage))
#else
#define PKVM_NO_COVERAGE
#endif

/// Cache-line size the per-CPU slots are padded to (Cortex-A and x86_64).
inline constexpr u64 kCacheLine = 64;

/// Adds `n` to a counter in the calling CPU's own copy of a PerCpuCounters
/// (n may be -1 cast to u64: the sum wraps back). A plain load and store,
/// no locked read-modify-write: the CPU owning the copy is its only writer
/// (at EL2 with interrupts masked, so nothing interleaves on that CPU; the
/// simulator gives every live thread a CPU index of its own). Relaxed
/// atomics so a concurrent sum() reads whole values.
inline void percpu_add(u64* counter, u64 n = 1) {
  __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/// One copy of a struct of u64 counters per CPU, each on its own cache
/// lines, and one more for writers that a lock already serialises. The
/// caller updates its copy with percpu_add; sum() adds every copy (exact once
/// the writers are quiescent, a snapshot otherwise).
template <typename T>
class PerCpuCounters {
 public:
  static_assert(sizeof(T) % sizeof(u64) == 0, "counters are u64 fields");

  /// The copy CPU `cpu` increments (cpu is reduced modulo kMaxCpus).
  T& cpu(u32 cpu) { return slots_[cpu % kMaxCpus].v; }
  /// The copy of writers that hold a lock excluding each other (and every
  /// per-CPU writer of the same counters that could race them): no CPU
  /// lookup needed.
  T& locked() { return slots_[kMaxCpus].v; }

  /// Field-wise sum over all CPUs.
  PKVM_NO_COVERAGE T sum() const {
    T out{};
    u64* dst = reinterpret_cast<u64*>(&out);
    for (const Slot& s : slots_) {
      const u64* src = reinterpret_cast<const u64*>(&s.v);
      for (u64 i = 0; i < sizeof(T) / sizeof(u64); ++i) dst[i] += __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    }
    return out;
  }

 private:
  struct alignas(kCacheLine) Slot {
    T v;
  };
  Slot slots_[kMaxCpus + 1] = {};  // the last: locked()
};

/// Reader/writer lock with one reader count per CPU (a "big-reader" lock).
/// A shared acquisition increments the caller's own count and checks the
/// writer flag; a writer sets the flag, then waits for every count to drain.
/// Readers never write a line another CPU's reader writes, so concurrent
/// shared holders scale; writers are rare (ownership transitions) and pay
/// for a scan of kMaxCpus slots.
///
/// Fairness, both ways: readers that find a writer in wait register in
/// `waiting_` (a shared line, but touched only on this slow path) until they
/// get in, and a writer lets registered readers in before it raises the flag.
/// So a CPU issuing transitions back to back cannot starve aborts, and a
/// stream of aborts cannot starve a transition: readers arriving while the
/// flag is up wait for that writer.
///
/// Not recursive: a CPU holding it shared must not take it shared again (a
/// writer waiting in between would wait for the first hold while the second
/// waits for the writer).
///
/// `Cpu` supplies `static u32 id()` (the caller's CPU, stable from
/// lock_shared to unlock_shared) and `static void relax()` (spin-wait hint).
template <typename Cpu>
class PerCpuRwLock final : public RwLock {
 public:
  void lock() override {
    for (;;) {
      while (__atomic_load_n(&waiting_, __ATOMIC_ACQUIRE) != 0) Cpu::relax();
      u32 expect = 0;
      if (__atomic_compare_exchange_n(&writer_, &expect, 1u, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) break;
      Cpu::relax();
    }
    // Sequentially consistent with the readers' increment-then-check: either
    // a reader sees the flag and backs off, or the writer sees its count.
    // All counts read in one pass (no branch per slot: the common case has
    // no reader at all), then wait only if some CPU is inside.
    u32 any = 0;
#pragma GCC unroll 16
    for (const Slot& s : readers_) any |= __atomic_load_n(&s.n, __ATOMIC_SEQ_CST);
    if (any == 0) return;
    for (const Slot& s : readers_)
      while (__atomic_load_n(&s.n, __ATOMIC_SEQ_CST) != 0) Cpu::relax();
  }
  void unlock() override { __atomic_store_n(&writer_, 0u, __ATOMIC_RELEASE); }
  void lock_shared() override {
    u32* n = &readers_[Cpu::id() % kMaxCpus].n;
    bool registered = false;
    for (;;) {
      __atomic_fetch_add(n, 1u, __ATOMIC_SEQ_CST);
      if (__atomic_load_n(&writer_, __ATOMIC_SEQ_CST) == 0) break;
      __atomic_fetch_sub(n, 1u, __ATOMIC_RELEASE);
      if (!registered) {
        __atomic_fetch_add(&waiting_, 1u, __ATOMIC_RELAXED);
        registered = true;
      }
      while (__atomic_load_n(&writer_, __ATOMIC_RELAXED) != 0) Cpu::relax();
    }
    if (registered) __atomic_fetch_sub(&waiting_, 1u, __ATOMIC_RELEASE);
  }
  void unlock_shared() override { __atomic_fetch_sub(&readers_[Cpu::id() % kMaxCpus].n, 1u, __ATOMIC_RELEASE); }

 private:
  struct alignas(kCacheLine) Slot {
    u32 n;
  };
  Slot readers_[kMaxCpus] = {};
  alignas(kCacheLine) u32 writer_ = 0;
  u32 waiting_ = 0;  // readers that found a writer and have not got in yet
};

/// Reader/writer spinlock in one word: the top bit is the writer, the rest
/// counts readers. A writer waits for readers to drain; new readers wait
/// while a writer holds it. One uncontended atomic per acquisition, which is
/// what the hypervisor and guest locks want: transitions take them
/// exclusively, and nothing takes them shared on a hot path. `Cpu` supplies
/// `static void relax()` (spin-wait hint).
template <typename Cpu>
class SpinRwLock final : public RwLock {
 public:
  void lock() override {
    for (;;) {
      u32 expect = 0;
      if (__atomic_compare_exchange_n(&v_, &expect, kWriter, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
      Cpu::relax();
    }
  }
  void unlock() override { __atomic_store_n(&v_, 0u, __ATOMIC_RELEASE); }
  void lock_shared() override {
    for (;;) {
      u32 cur = __atomic_load_n(&v_, __ATOMIC_RELAXED);
      if (!(cur & kWriter) &&
          __atomic_compare_exchange_n(&v_, &cur, cur + 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return;
      Cpu::relax();
    }
  }
  void unlock_shared() override { __atomic_fetch_sub(&v_, 1u, __ATOMIC_RELEASE); }

 private:
  static constexpr u32 kWriter = 1u << 31;
  u32 v_ = 0;
};

}  // namespace pkvm
