// SPDX-License-Identifier: Apache-2.0
// EL2 locks: a test-and-set spinlock and a reader/writer spinlock that
// implements pgtable's RwLock. Acquire/release atomics; no heap.
#pragma once

#include "pgtable/percpu.h"
#include "pgtable/platform.h"

namespace pkvm {

/// Index of the calling CPU (in g_hyp.cpus), from TPIDR_EL2.
inline u32 this_cpu() {
  u64 v;
  asm volatile("mrs %0, tpidr_el2" : "=r"(v));
  return u32(v);
}

/// This CPU for PerCpuRwLock.
struct El2Cpu {
  static u32 id() { return this_cpu(); }
  static void relax() { asm volatile("yield"); }
};

/// A spinlock for short critical sections at EL2.
class SpinLock {
 public:
  /// Spins until the lock is taken.
  void lock() {
    while (__atomic_exchange_n(&v_, 1u, __ATOMIC_ACQUIRE)) {
      while (__atomic_load_n(&v_, __ATOMIC_RELAXED)) {
      }
    }
  }
  /// Releases the lock.
  void unlock() { __atomic_store_n(&v_, 0u, __ATOMIC_RELEASE); }

 private:
  u32 v_ = 0;
};

/// Scoped holder of a SpinLock.
class SpinGuard {
 public:
  explicit SpinGuard(SpinLock& l) : l_(l) { l_.lock(); }
  ~SpinGuard() { l_.unlock(); }
  SpinGuard(const SpinGuard&) = delete;
  SpinGuard& operator=(const SpinGuard&) = delete;

 private:
  SpinLock& l_;
};

/// Reader/writer spinlock: the top bit is the writer, the rest counts readers.
/// Writers wait for readers to drain; new readers wait while a writer holds it.
class SpinRwLock final : public RwLock {
 public:
  void lock() override {
    for (;;) {
      u32 expect = 0;
      if (__atomic_compare_exchange_n(&v_, &expect, kWriter, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
    }
  }
  void unlock() override { __atomic_store_n(&v_, 0u, __ATOMIC_RELEASE); }
  void lock_shared() override {
    for (;;) {
      u32 cur = __atomic_load_n(&v_, __ATOMIC_RELAXED);
      if (cur & kWriter) continue;
      if (__atomic_compare_exchange_n(&v_, &cur, cur + 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
    }
  }
  void unlock_shared() override { __atomic_fetch_sub(&v_, 1u, __ATOMIC_RELEASE); }

 private:
  static constexpr u32 kWriter = 1u << 31;
  u32 v_ = 0;
};

}  // namespace pkvm
