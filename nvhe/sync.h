// SPDX-License-Identifier: Apache-2.0
// EL2 locks: a test-and-set spinlock, and the CPU identity the shared
// reader/writer locks of pgtable/percpu.h need. Acquire/release atomics; no heap.
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

}  // namespace pkvm
