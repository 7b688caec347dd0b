// SPDX-License-Identifier: Apache-2.0
// Tests of the host platform (memory, allocator, recorder) and of the
// break-before-make checker. The checker tests drive the platform's hooks
// directly with raw descriptors, one compliant and one violating sequence per
// rule, and require exactly the violating ones to be flagged.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pgtable/desc.h"
#include "tests/sim/bbm_checker.h"
#include "tests/sim/sim_platform.h"

namespace pkvm::sim {
namespace {

using namespace desc;

constexpr u64 kBase = 0x40000000;

// --- Physical memory ---------------------------------------------------------

TEST(SimMemory, PhysVirtRoundTrip) {
  SimPlatform p(kBase, 64, 16);
  u8* first = static_cast<u8*>(p.phys_to_virt(PhysAddr(kBase)));
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 4096, 0u);
  u8* last = static_cast<u8*>(p.phys_to_virt(PhysAddr(kBase + 64 * 4096 - 1)));
  EXPECT_EQ(last - first, 64 * 4096 - 1);
  EXPECT_EQ(p.virt_to_phys(first + 0x1234).value(), kBase + 0x1234);
  EXPECT_EQ(p.virt_to_phys(last).value(), kBase + 64 * 4096 - 1);
  EXPECT_EQ(p.data_base().value(), kBase + 16 * 4096);
  EXPECT_EQ(p.data_pages(), 48u);
  EXPECT_TRUE(p.contains(PhysAddr(kBase)));
  EXPECT_FALSE(p.contains(PhysAddr(kBase + 64 * 4096)));
  // Memory is usable and starts zeroed.
  u64* data = static_cast<u64*>(p.phys_to_virt(p.data_base()));
  EXPECT_EQ(data[0], 0u);
  data[0] = 42;
  EXPECT_EQ(*static_cast<u64*>(p.phys_to_virt(p.data_base())), 42u);
}

TEST(SimMemory, OutsideArenaCallsFailHook) {
  SimPlatform p(kBase, 8, 4);
  std::vector<std::string> fails;
  p.set_fail_hook([&](const std::string& m) { fails.push_back(m); });
  u64 local = 0;
  EXPECT_EQ(p.phys_to_virt(PhysAddr(kBase - 1)), nullptr);
  EXPECT_EQ(p.phys_to_virt(PhysAddr(kBase + 8 * 4096)), nullptr);
  EXPECT_EQ(p.virt_to_phys(&local).value(), ~u64{0});
  ASSERT_EQ(fails.size(), 3u);
  EXPECT_NE(fails[0].find("outside the simulated arena"), std::string::npos) << fails[0];
  EXPECT_NE(fails[2].find("virt_to_phys"), std::string::npos) << fails[2];
}

TEST(SimMemoryDeathTest, OutsideArenaAbortsByDefault) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  SimPlatform p(kBase, 8, 4);
  EXPECT_DEATH(p.phys_to_virt(PhysAddr(0x1000)), "phys_to_virt\\(0x1000\\): address outside");
}

// --- Allocator ---------------------------------------------------------------

TEST(SimAlloc, PagesAreZeroedAlignedAndCounted) {
  SimPlatform p(kBase, 32, 8);
  u64* a = static_cast<u64*>(p.zalloc_page());
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(p.in_pool(p.virt_to_phys(a)));
  EXPECT_EQ(p.virt_to_phys(a).value() % 4096, 0u);
  EXPECT_EQ(p.page_count(a), 1);
  EXPECT_TRUE(p.is_allocated(p.virt_to_phys(a)));
  EXPECT_EQ(p.pages_in_use(), 1u);
  for (int i = 0; i < 512; i++) a[i] = ~u64{0};
  p.free_pages(a, 0);
  EXPECT_FALSE(p.is_allocated(p.virt_to_phys(a)));
  EXPECT_EQ(p.page_count(a), 0);
  u64* b = static_cast<u64*>(p.zalloc_page());
  ASSERT_EQ(b, a);  // LIFO reuse: the dirty page comes back, and must be zero
  for (int i = 0; i < 512; i++) ASSERT_EQ(b[i], 0u) << i;
  EXPECT_EQ(p.alloc_count(), 2u);
  EXPECT_EQ(p.free_count(), 1u);
  EXPECT_TRUE(p.violations().empty());
}

TEST(SimAlloc, OrderBlocksAlignedToTheirSize) {
  // A base that is only page aligned makes physical alignment non-trivial.
  SimPlatform p(kBase + 0x3000, 256, 128);
  p.zalloc_page();  // disturb the first candidate
  for (u32 order = 0; order <= 4; order++) {
    void* v = p.zalloc_pages(order);
    ASSERT_NE(v, nullptr) << order;
    const u64 pa = p.virt_to_phys(v).value();
    EXPECT_EQ(pa % (4096u << order), 0u) << "order " << order << " pa 0x" << std::hex << pa;
    for (u64 j = 0; j < (1u << order); j++) {
      EXPECT_EQ(p.page_count(static_cast<u8*>(v) + j * 4096), 1);
      EXPECT_TRUE(p.is_allocated(PhysAddr(pa + j * 4096)));
    }
  }
  EXPECT_EQ(p.pages_in_use(), 1u + 1 + 2 + 4 + 8 + 16);
  const std::vector<LiveBlock> live = p.live_blocks();
  EXPECT_EQ(live.size(), 6u);
  EXPECT_TRUE(p.violations().empty());
}

TEST(SimAlloc, ExhaustionAndReuse) {
  SimPlatform p(kBase, 16, 8);
  std::vector<void*> pages;
  for (int i = 0; i < 8; i++) {
    pages.push_back(p.zalloc_page());
    ASSERT_NE(pages.back(), nullptr) << i;
  }
  EXPECT_EQ(std::set<void*>(pages.begin(), pages.end()).size(), 8u);
  EXPECT_EQ(p.nr_free_pages(), 0u);
  EXPECT_EQ(p.zalloc_page(), nullptr);
  EXPECT_EQ(p.failed_alloc_count(), 1u);
  EXPECT_EQ(p.pages_in_use(), 8u);
  p.free_pages(pages[3], 0);
  EXPECT_EQ(p.zalloc_pages(1), nullptr);  // one hole cannot hold two pages
  EXPECT_EQ(p.zalloc_page(), pages[3]);
  // Free an aligned pair: now an order-1 block fits exactly there.
  p.free_pages(pages[4], 0);
  p.free_pages(pages[5], 0);
  EXPECT_EQ(p.zalloc_pages(1), pages[4]);
  EXPECT_EQ(p.zalloc_pages(5), nullptr);  // larger than the pool
  EXPECT_TRUE(p.violations().empty());
}

TEST(SimAlloc, FailAllocAfterOneShotAndSticky) {
  SimPlatform p(kBase, 64, 32);
  p.fail_alloc_after(2);
  EXPECT_NE(p.zalloc_page(), nullptr);
  EXPECT_NE(p.zalloc_pages(2), nullptr);
  EXPECT_EQ(p.zalloc_page(), nullptr);  // the third request
  EXPECT_NE(p.zalloc_page(), nullptr);  // one-shot
  p.fail_alloc_after(0, /*sticky=*/true);
  EXPECT_EQ(p.zalloc_page(), nullptr);
  EXPECT_EQ(p.zalloc_pages(1), nullptr);
  p.fail_alloc_after(-1);
  EXPECT_NE(p.zalloc_page(), nullptr);
  EXPECT_EQ(p.failed_alloc_count(), 3u);
  EXPECT_EQ(p.pages_in_use(), 1u + 4 + 1 + 1);
}

TEST(SimAlloc, PoolLimit) {
  SimPlatform p(kBase, 64, 32);
  EXPECT_EQ(p.nr_free_pages(), 32u);
  p.set_pool_limit(3);
  EXPECT_EQ(p.nr_free_pages(), 3u);
  void* a = p.zalloc_pages(1);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(p.nr_free_pages(), 1u);
  EXPECT_EQ(p.zalloc_pages(1), nullptr);
  void* b = p.zalloc_page();
  EXPECT_NE(b, nullptr);
  EXPECT_EQ(p.zalloc_page(), nullptr);
  p.free_pages(b, 0);
  EXPECT_NE(p.zalloc_page(), nullptr);
  EXPECT_EQ(p.nr_free_pages(), 0u);
  p.set_pool_limit(2);  // below the pages in use
  EXPECT_EQ(p.nr_free_pages(), 0u);
  p.set_pool_limit(-1);
  EXPECT_EQ(p.nr_free_pages(), 29u);
  EXPECT_NE(p.zalloc_page(), nullptr);
}

TEST(SimAlloc, DoubleFreeDetected) {
  SimPlatform p(kBase, 16, 8);
  void* a = p.zalloc_page();
  p.free_pages(a, 0);
  EXPECT_TRUE(p.violations().empty());
  p.free_pages(a, 0);
  const auto v = p.violations();
  ASSERT_EQ(v.size(), 1u);
  EXPECT_NE(v[0].find("double free"), std::string::npos) << v[0];
  EXPECT_EQ(p.pages_in_use(), 0u);
  EXPECT_EQ(p.free_count(), 1u);
  p.clear_violations();
  EXPECT_TRUE(p.violations().empty());
}

TEST(SimAlloc, FreeWithOutstandingReferenceRefused) {
  SimPlatform p(kBase, 16, 8);
  void* a = p.zalloc_page();
  p.get_page(a);
  p.free_pages(a, 0);
  auto v = p.violations();
  ASSERT_EQ(v.size(), 1u);
  EXPECT_NE(v[0].find("reference count 2, expected 1"), std::string::npos) << v[0];
  EXPECT_TRUE(p.is_allocated(p.virt_to_phys(a)));  // refused: still allocated
  p.put_page(a);
  p.free_pages(a, 0);
  EXPECT_EQ(p.violations().size(), 1u);
  EXPECT_EQ(p.pages_in_use(), 0u);
}

TEST(SimAlloc, FreeWithWrongOrderOrAddressRefused) {
  SimPlatform p(kBase, 32, 16);
  u8* r = static_cast<u8*>(p.zalloc_pages(2));
  ASSERT_NE(r, nullptr);
  p.free_pages(r, 1);
  p.free_pages(r + 4096, 0);
  p.free_pages(p.phys_to_virt(p.data_base()), 0);
  auto v = p.violations();
  ASSERT_EQ(v.size(), 3u);
  EXPECT_NE(v[0].find("allocated with order 2"), std::string::npos) << v[0];
  EXPECT_NE(v[1].find("not the first page"), std::string::npos) << v[1];
  EXPECT_NE(v[2].find("not a pool page"), std::string::npos) << v[2];
  p.free_pages(r, 2);
  EXPECT_EQ(p.violations().size(), 3u);
  EXPECT_EQ(p.pages_in_use(), 0u);
}

TEST(SimRefcount, PutToZeroFrees) {
  SimPlatform p(kBase, 16, 8);
  u64* a = static_cast<u64*>(p.zalloc_page());
  p.get_page(a + 7);  // any address inside the page
  p.get_page(a);
  EXPECT_EQ(p.page_count(a), 3);
  p.put_page(a);
  p.put_page(a + 511);
  EXPECT_EQ(p.page_count(a), 1);
  EXPECT_EQ(p.pages_in_use(), 1u);
  p.put_page(a);
  EXPECT_EQ(p.page_count(a), 0);
  EXPECT_EQ(p.pages_in_use(), 0u);
  EXPECT_EQ(p.free_count(), 1u);
  EXPECT_TRUE(p.violations().empty());
}

TEST(SimRefcount, ManyRefsInOneUpdate) {
  SimPlatform p(kBase, 16, 8);
  u64* a = static_cast<u64*>(p.zalloc_page());
  p.get_page_refs(a + 3, 512);
  EXPECT_EQ(p.page_count(a), 513);
  p.put_page_refs(a, 600);  // more than it holds: refused and reported, unchanged
  EXPECT_EQ(p.page_count(a), 513);
  ASSERT_EQ(p.violations().size(), 1u);
  EXPECT_NE(p.violations()[0].find("underflow"), std::string::npos) << p.violations()[0];
  p.put_page_refs(a, 512);
  EXPECT_EQ(p.page_count(a), 1);
  EXPECT_EQ(p.pages_in_use(), 1u);
  p.put_page_refs(a, 1);  // the last reference frees, as put_page does
  EXPECT_EQ(p.page_count(a), 0);
  EXPECT_EQ(p.pages_in_use(), 0u);
  p.get_page_refs(a, 2);  // a free page
  EXPECT_EQ(p.violations().size(), 2u);
  EXPECT_EQ(p.page_count(a), 0);
}

TEST(SimRefcount, MisuseDetected) {
  SimPlatform p(kBase, 32, 16);
  u8* root = static_cast<u8*>(p.zalloc_pages(1));
  u64* a = static_cast<u64*>(p.zalloc_page());
  p.put_page(a);     // frees
  p.put_page(a);     // underflow
  p.get_page(a);     // free page
  p.get_page(p.phys_to_virt(p.data_base()));  // data memory has no count
  p.put_page(root + 4096);  // a concatenated root page reaching 0
  auto v = p.violations();
  ASSERT_EQ(v.size(), 4u);
  EXPECT_NE(v[0].find("underflow"), std::string::npos) << v[0];
  EXPECT_NE(v[1].find("get_page"), std::string::npos) << v[1];
  EXPECT_NE(v[2].find("not a pool page"), std::string::npos) << v[2];
  EXPECT_NE(v[3].find("multi-page block"), std::string::npos) << v[3];
  EXPECT_EQ(p.page_count(a), 0);
  EXPECT_EQ(p.page_count(root + 4096), 1);  // restored
  p.free_pages(root, 1);
  EXPECT_EQ(p.violations().size(), 4u);
}

TEST(SimAlloc, ConcurrentAllocGetPutFree) {
  SimPlatform p(kBase, 1024, 512);
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++) {
    ts.emplace_back([&, t] {
      std::vector<u64*> mine;
      for (int i = 0; i < 2000; i++) {
        if (mine.size() < 32 && (i % 3 != 2)) {
          u64* pg = static_cast<u64*>((i % 17 == 0) ? p.zalloc_pages(2) : p.zalloc_page());
          if (!pg) continue;
          if (pg[0] != 0 || pg[511] != 0) failures++;
          pg[0] = u64(t + 1);
          if (i % 17 == 0) {
            p.free_pages(pg, 2);
            continue;
          }
          p.get_page(pg);
          mine.push_back(pg);
        } else if (!mine.empty()) {
          u64* pg = mine.back();
          mine.pop_back();
          if (pg[0] != u64(t + 1)) failures++;  // someone else got my page
          p.put_page(pg);
          p.put_page(pg);
        }
      }
      for (u64* pg : mine) {
        p.put_page(pg);
        p.put_page(pg);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(p.pages_in_use(), 0u);
  EXPECT_EQ(p.alloc_count(), p.free_count());
  EXPECT_TRUE(p.violations().empty()) << p.violations()[0];
}

// --- Recorder ----------------------------------------------------------------

// A batch counts and logs as its entries one by one would, in order; with
// the log off it is still counted in full.
TEST(SimRecorder, TlbiBatchCountsAndLogsEveryEntry) {
  SimPlatform p(kBase, 16, 8);
  const u64 addrs[3] = {0x1000, 0x200000, 0x3000};
  const u32 levels[3] = {3, 2, 3};
  p.tlbi_batch(TlbiKind::kIpa, 7, addrs, levels, 3);
  EXPECT_EQ(p.tlbi_count(TlbiKind::kIpa), 3u);
  EXPECT_EQ(p.tlbi_count(), 3u);
  const auto ev = p.events();
  ASSERT_EQ(ev.size(), 3u);
  for (u32 i = 0; i < 3; ++i) {
    EXPECT_EQ(ev[i].type, EventType::kTlbi);
    EXPECT_EQ(ev[i].tlbi, TlbiKind::kIpa);
    EXPECT_EQ(ev[i].vmid, 7u);
    EXPECT_EQ(ev[i].addr, addrs[i]);
    EXPECT_EQ(ev[i].level, levels[i]);
  }
  p.set_recording(false);
  p.tlbi_batch(TlbiKind::kEl2Va, 0, addrs, levels, 2);
  EXPECT_EQ(p.tlbi_count(TlbiKind::kEl2Va), 2u);
  EXPECT_EQ(p.events().size(), 3u);
}

TEST(SimRecorder, CountsAndLog) {
  SimPlatform p(kBase, 16, 8);
  p.tlbi(TlbiKind::kIpa, 1, 0x1000, 3);
  p.tlbi(TlbiKind::kIpa, 1, 0x2000, 3);
  p.tlbi(TlbiKind::kVmid, 1, 0, 0);
  p.tlbi(TlbiKind::kEl2All, 0, 0, 0);
  p.barrier(Barrier::kDsbIshst);
  p.barrier(Barrier::kDsbIshst);
  p.barrier(Barrier::kIsb);
  p.dcache_clean_inval_poc(PhysAddr(0x80000000), 0x1000);
  p.icache_inval_pou(PhysAddr(0x80000000), 0x1000);
  EXPECT_EQ(p.tlbi_count(TlbiKind::kIpa), 2u);
  EXPECT_EQ(p.tlbi_count(TlbiKind::kIpaLocal), 0u);
  EXPECT_EQ(p.tlbi_count(TlbiKind::kVmid), 1u);
  EXPECT_EQ(p.tlbi_count(TlbiKind::kEl2All), 1u);
  EXPECT_EQ(p.tlbi_count(), 4u);
  EXPECT_EQ(p.barrier_count(Barrier::kDsbIshst), 2u);
  EXPECT_EQ(p.barrier_count(Barrier::kDsbIsh), 0u);
  EXPECT_EQ(p.barrier_count(), 3u);
  EXPECT_EQ(p.dcache_op_count(), 1u);
  EXPECT_EQ(p.icache_op_count(), 1u);
  const auto ev = p.events();
  ASSERT_EQ(ev.size(), 9u);
  EXPECT_EQ(ev[0].type, EventType::kTlbi);
  EXPECT_EQ(ev[1].addr, 0x2000u);
  EXPECT_EQ(ev[4].type, EventType::kBarrier);
  EXPECT_EQ(ev[6].barrier, Barrier::kIsb);
  EXPECT_EQ(ev[7].type, EventType::kDcacheCleanInvalPoc);
  EXPECT_EQ(ev[8].size, 0x1000u);
  for (size_t i = 1; i < ev.size(); i++) EXPECT_GT(ev[i].seq, ev[i - 1].seq);
  const std::string d = p.dump();
  EXPECT_NE(d.find("tlbi  vmid vmid=1"), std::string::npos) << d;
  EXPECT_NE(d.find("dsb ishst"), std::string::npos) << d;
  EXPECT_NE(p.dump(2).find("2 event(s)"), std::string::npos);
}

TEST(SimRecorder, CountingModeKeepsCountersOnly) {
  SimPlatform p(kBase, 16, 8);
  p.set_recording(false);
  u64* t = static_cast<u64*>(p.zalloc_page());
  t[0] = make_leaf(0x80000000, 0, 3);
  p.pte_written(&t[0], 0, t[0], 0, 3, 1);
  p.tlbi(TlbiKind::kIpaLocal, 1, 0, 3);
  p.barrier(Barrier::kDsbIsh);
  EXPECT_TRUE(p.events().empty());
  EXPECT_EQ(p.pte_write_count(), 1u);
  EXPECT_EQ(p.tlbi_count(TlbiKind::kIpaLocal), 1u);
  EXPECT_EQ(p.barrier_count(Barrier::kDsbIsh), 1u);
  EXPECT_EQ(p.alloc_count(), 1u);
  p.set_recording(true);
  p.barrier(Barrier::kIsb);
  EXPECT_EQ(p.events().size(), 1u);
}

TEST(SimRecorder, PteWrittenRecordsPhysicalSlot) {
  SimPlatform p(kBase, 16, 8);
  u64* t = static_cast<u64*>(p.zalloc_page());
  p.clear_events();
  const u64 v = make_table(kBase + 0x5000);
  t[3] = v;
  p.pte_written(&t[3], 0, v, 0x40000000, 1, 7);
  const auto ev = p.events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, EventType::kPteWrite);
  EXPECT_EQ(ev[0].ptep_pa, p.virt_to_phys(t).value() + 3 * 8);
  EXPECT_EQ(ev[0].ptep_va, reinterpret_cast<uintptr_t>(&t[3]));
  EXPECT_EQ(ev[0].old_pte, 0u);
  EXPECT_EQ(ev[0].new_pte, v);
  EXPECT_EQ(ev[0].ia, 0x40000000u);
  EXPECT_EQ(ev[0].level, 1u);
  EXPECT_EQ(ev[0].vmid, 7u);
  EXPECT_NE(to_string(ev[0]).find("table(->0x40005000"), std::string::npos) << to_string(ev[0]);
}

TEST(SimRecorder, AllocFreeEventsClearAndReset) {
  SimPlatform p(kBase, 32, 16);
  void* r = p.zalloc_pages(2);
  p.free_pages(r, 2);
  auto ev = p.events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].type, EventType::kAlloc);
  EXPECT_EQ(ev[0].order, 2u);
  EXPECT_EQ(ev[0].addr, p.virt_to_phys(r).value());
  EXPECT_EQ(ev[1].type, EventType::kFree);
  EXPECT_EQ(ev[1].addr, ev[0].addr);
  p.tlbi(TlbiKind::kVmid, 1, 0, 0);
  p.clear_events();
  EXPECT_TRUE(p.events().empty());
  EXPECT_EQ(p.tlbi_count(), 1u);  // counters survive clear_events
  p.reset_counters();
  EXPECT_EQ(p.tlbi_count(), 0u);
}

// Both reader/writer locks the hypervisor uses: the per-CPU one (host
// stage 2) and the one-word spinlock (hypervisor and guests).
template <typename L>
class RwLockTest : public ::testing::Test {};
using RwLockTypes = ::testing::Types<SimRwLock, SimSpinRwLock>;
TYPED_TEST_SUITE(RwLockTest, RwLockTypes);

TYPED_TEST(RwLockTest, SharedHoldersCoexistExclusiveExcludes) {
  TypeParam l;
  RwLock& rw = l;
  rw.lock_shared();
  std::atomic<bool> got_shared{false}, got_excl{false};
  std::thread a([&] {
    rw.lock_shared();
    got_shared = true;
    rw.unlock_shared();
  });
  a.join();
  EXPECT_TRUE(got_shared.load());
  std::thread b([&] {
    rw.lock();
    got_excl = true;
    rw.unlock();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(got_excl.load());  // blocked by our shared hold
  rw.unlock_shared();
  b.join();
  EXPECT_TRUE(got_excl.load());
}

TYPED_TEST(RwLockTest, WriterExcludesReadersAndWriters) {
  TypeParam l;
  RwLock& rw = l;
  rw.lock();
  std::atomic<int> got{0};
  std::thread r([&] {
    rw.lock_shared();
    got |= 1;
    rw.unlock_shared();
  });
  std::thread w([&] {
    rw.lock();
    got |= 2;
    rw.unlock();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(got.load(), 0);  // neither gets in beside our exclusive hold
  rw.unlock();
  r.join();
  w.join();
  EXPECT_EQ(got.load(), 3);
}

// --- BbmChecker ----------------------------------------------------------------

// Stage-2 leaf attributes.
constexpr u64 kS2Rw = kS2MemAttrNormal | kS2ApR | kS2ApW | kAf | kShInner;
constexpr u64 kS2R = kS2MemAttrNormal | kS2ApR | kAf | kShInner;
constexpr u64 kS2DevRw = kS2MemAttrDevice | kS2ApR | kS2ApW | kAf;
// EL2 stage-1 leaf attributes.
constexpr u64 kHypRw = (u64{kMairIdxNormal} << kS1AttrIdxShift) | kS1ApRes1 | kAf | kShInner;
constexpr u64 kHypRo = kHypRw | kS1ApRo;

constexpr u32 kVmid = 1;
constexpr u32 kHypId = 0;
constexpr u64 kOa = 0x80000000;  // leaf outputs need not be in the arena
constexpr u64 k2M = 2ull << 20;

class Checker : public ::testing::Test {
 protected:
  SimPlatform plat{kBase, 1024, 256};
  BbmChecker chk{plat};

  u64* table() {
    u64* t = static_cast<u64*>(plat.zalloc_page());
    EXPECT_NE(t, nullptr);
    return t;
  }
  u64 pa(const void* p) { return plat.virt_to_phys(const_cast<void*>(p)).value(); }
  // Stores like the library does, then reports the store.
  void write(u64* t, u32 idx, u64 val, u32 level, u64 ia, u32 vmid = kVmid) {
    const u64 old = t[idx];
    t[idx] = val;
    plat.pte_written(&t[idx], old, val, ia, level, vmid);
  }
  // DSB ISHST then the invalidation, as the library must.
  void inval(TlbiKind k, u64 addr = 0, u32 level = 3, u32 vmid = kVmid) {
    plat.barrier(Barrier::kDsbIshst);
    plat.tlbi(k, vmid, addr, level);
  }
  // Passes when the checker, after finish(), reports nothing.
  void expect_clean() {
    chk.finish();
    EXPECT_TRUE(chk.violations().empty()) << chk.report() << plat.dump();
  }
  // Passes when the checker, after finish(), reports exactly `n` violations,
  // each carrying `tag`.
  void expect_only(const char* tag, size_t n = 1) {
    chk.finish();
    const auto v = chk.violations();
    EXPECT_EQ(v.size(), n) << chk.report() << plat.dump();
    for (const auto& s : v) EXPECT_NE(s.find(tag), std::string::npos) << s;
  }
};

// Rule a.

TEST_F(Checker, RuleA_PermissionChangeInPlaceAllowed) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2R, 3), 3, 0x5000);
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);            // relax: no TLBI needed
  write(t, 5, make_leaf(kOa, kS2Rw & ~kAf, 3), 3, 0x5000);     // mkold: aging hint
  expect_clean();
}

TEST_F(Checker, RuleA_OutputAddressChangeFlagged) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, make_leaf(kOa + 0x1000, kS2Rw, 3), 3, 0x5000);
  expect_only("[a] slot");
  EXPECT_NE(chk.report().find("output address changed"), std::string::npos) << chk.report();
}

TEST_F(Checker, RuleA_TableRepointFlagged) {
  u64* l2 = table();
  u64* t1 = table();
  u64* t2 = table();
  write(l2, 0, make_table(pa(t1)), 2, 0);
  write(l2, 0, make_table(pa(t2)), 2, 0);
  expect_only("output address changed");
}

TEST_F(Checker, RuleA_BlockTableSwapWithoutBbm2Flagged) {
  u64* l2 = table();
  u64* split = table();
  for (u32 i = 0; i < 512; i++) write(split, i, make_leaf(kOa + i * 4096, kS2Rw, 3), 3, i * 4096);
  write(l2, 0, make_leaf(kOa, kS2Rw, 2), 2, 0);
  write(l2, 0, make_table(pa(split)), 2, 0);  // block -> table
  write(l2, 1, make_table(pa(table())), 2, k2M);
  write(l2, 1, make_leaf(kOa + k2M, kS2Rw, 2), 2, k2M);  // table -> block
  expect_only("without break-before-make", 2);
}

TEST_F(Checker, RuleA_MemoryTypeChangeFlaggedUnlessRelaxed) {
  u64* t = table();
  write(t, 0, make_leaf(kOa, kS2Rw, 3), 3, 0);
  write(t, 0, make_leaf(kOa, kS2DevRw, 3), 3, 0);
  expect_only("memory type");
  chk.clear_violations();
  chk.set_strict_attrs(false);
  write(t, 0, make_leaf(kOa, kS2Rw, 3), 3, 0);
  expect_clean();
}

TEST_F(Checker, RuleA_Bbm2ExactSplitAccepted) {
  chk.set_bbm2(true);
  u64* l2 = table();
  u64* split = table();
  write(l2, 1, make_leaf(kOa, kS2Rw, 2), 2, k2M);
  for (u32 i = 0; i < 512; i++) write(split, i, make_leaf(kOa + i * 4096, kS2Rw, 3), 3, k2M + i * 4096);
  write(l2, 1, make_table(pa(split)), 2, k2M);
  EXPECT_EQ(chk.pending(), 1u);
  inval(TlbiKind::kIpa, k2M, 2);
  expect_clean();
}

TEST_F(Checker, RuleA_Bbm2WrongSplitFlagged) {
  chk.set_bbm2(true);
  u64* l2 = table();
  u64* split = table();
  write(l2, 1, make_leaf(kOa, kS2Rw, 2), 2, k2M);
  for (u32 i = 0; i < 512; i++)
    write(split, i, make_leaf(kOa + (i == 300 ? i + 1 : i) * 4096, kS2Rw, 3), 3, k2M + i * 4096);
  write(l2, 1, make_table(pa(split)), 2, k2M);
  inval(TlbiKind::kIpa, k2M, 2);
  expect_only("entry 300");
}

TEST_F(Checker, RuleA_Bbm2SplitWithOtherPermissionsFlagged) {
  chk.set_bbm2(true);
  u64* l2 = table();
  u64* split = table();
  write(l2, 1, make_leaf(kOa, kS2Rw, 2), 2, k2M);
  for (u32 i = 0; i < 512; i++) write(split, i, make_leaf(kOa + i * 4096, kS2R, 3), 3, k2M + i * 4096);
  write(l2, 1, make_table(pa(split)), 2, k2M);
  inval(TlbiKind::kVmid);
  expect_only("not the block's split");
}

TEST_F(Checker, RuleA_Bbm2TableToAlignedBlockAccepted) {
  chk.set_bbm2(true);
  u64* l2 = table();
  u64* t = table();
  write(l2, 2, make_table(pa(t)), 2, 2 * k2M);
  write(l2, 2, make_leaf(kOa, kS2Rw, 2), 2, 2 * k2M);
  inval(TlbiKind::kVmid);
  plat.put_page(t);  // the replaced table, freed after the VMID invalidation
  expect_clean();
}

TEST_F(Checker, RuleA_Bbm2TableToMisalignedBlockFlagged) {
  chk.set_bbm2(true);
  u64* l2 = table();
  write(l2, 2, make_table(pa(table())), 2, 2 * k2M);
  write(l2, 2, make_leaf(kOa + 0x1000, kS2Rw, 2), 2, 2 * k2M);
  inval(TlbiKind::kVmid);
  expect_only("not aligned");
}

TEST_F(Checker, RuleA_Bbm2ReplacementNeedsInvalidation) {
  chk.set_bbm2(true);
  u64* l2 = table();
  write(l2, 2, make_table(pa(table())), 2, 2 * k2M);
  write(l2, 2, make_leaf(kOa, kS2Rw, 2), 2, 2 * k2M);
  inval(TlbiKind::kIpaLocal, 2 * k2M, 2);  // local does not count
  expect_only("FEAT_BBM level-2 replacement");
}

// Rule b.

TEST_F(Checker, RuleB_BreakInvalidateMakeAccepted) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, 0, 3, 0x5000);
  inval(TlbiKind::kIpa, 0x5000, 3);
  write(t, 5, make_leaf(kOa + 0x1000, kS2Rw, 3), 3, 0x5000);
  expect_clean();
}

TEST_F(Checker, RuleB_MakeWithoutInvalidationFlagged) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, 0, 3, 0x5000);
  write(t, 5, make_leaf(kOa + 0x1000, kS2Rw, 3), 3, 0x5000);
  expect_only("[b]");
}

TEST_F(Checker, RuleB_LocalInvalidationDoesNotCover) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, 0, 3, 0x5000);
  inval(TlbiKind::kIpaLocal, 0x5000, 3);
  write(t, 5, make_leaf(kOa + 0x1000, kS2Rw, 3), 3, 0x5000);
  expect_only("before a covering TLB invalidation");
}

TEST_F(Checker, RuleB_WrongAddressOrVmidDoesNotCover) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, 0, 3, 0x5000);
  inval(TlbiKind::kIpa, 0x6000, 3);                // next page
  inval(TlbiKind::kIpa, 0x5000, 3, kVmid + 1);     // other VM
  inval(TlbiKind::kVmid, 0, 0, kVmid + 1);
  inval(TlbiKind::kEl2All);                         // other regime
  write(t, 5, make_leaf(kOa + 0x1000, kS2Rw, 3), 3, 0x5000);
  expect_only("[b]");
}

TEST_F(Checker, RuleB_VmidOrAnyAddressInBlockCovers) {
  u64* l2 = table();
  write(l2, 3, make_leaf(kOa, kS2Rw, 2), 2, 3 * k2M);
  write(l2, 3, 0, 2, 3 * k2M);
  inval(TlbiKind::kIpa, 3 * k2M + 0x12000, 2);  // inside the 2 MiB block
  write(l2, 3, make_leaf(kOa + k2M, kS2Rw, 2), 2, 3 * k2M);
  write(l2, 3, 0, 2, 3 * k2M);
  inval(TlbiKind::kVmid);
  write(l2, 3, make_leaf(kOa, kS2R, 2), 2, 3 * k2M);
  expect_clean();
}

TEST_F(Checker, RuleB_LockedMarkerProtocol) {
  u64* t = table();
  write(t, 9, make_leaf(kOa, kS2Rw, 3), 3, 0x9000);
  write(t, 9, kLocked, 3, 0x9000);
  inval(TlbiKind::kIpa, 0x9000, 3);
  write(t, 9, make_leaf(kOa + 0x1000, kS2Rw, 3), 3, 0x9000);
  write(t, 10, make_leaf(kOa, kS2Rw, 3), 3, 0xa000);
  write(t, 10, kLocked, 3, 0xa000);
  write(t, 10, make_owner(3), 3, 0xa000);  // invalid -> invalid keeps the break pending
  write(t, 10, make_leaf(kOa + 0x2000, kS2Rw, 3), 3, 0xa000);
  expect_only("[b]");
}

TEST_F(Checker, RuleB_El2StageOneNeedsEl2Invalidation) {
  chk.set_format(kHypId, Format::kHypStage1);
  u64* t = table();
  const u64 va = 0xffff000;
  write(t, 1, make_leaf(kOa, kHypRw, 3), 3, va, kHypId);
  write(t, 1, 0, 3, va, kHypId);
  inval(TlbiKind::kIpa, va, 3, kHypId);  // a stage-2 invalidation does not touch EL2
  inval(TlbiKind::kVmid, 0, 0, kHypId);
  write(t, 1, make_leaf(kOa, kHypRo, 3), 3, va, kHypId);
  write(t, 2, make_leaf(kOa, kHypRw, 3), 3, va + 0x1000, kHypId);
  write(t, 2, 0, 3, va + 0x1000, kHypId);
  inval(TlbiKind::kEl2Va, va + 0x1000, 3, 1234);  // EL2 TLBIs take no VMID
  write(t, 2, make_leaf(kOa + 0x1000, kHypRw, 3), 3, va + 0x1000, kHypId);
  expect_only("[b] slot");
}

TEST_F(Checker, RuleB_InvalidationWithoutDsbFlagged) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, 0, 3, 0x5000);
  plat.barrier(Barrier::kIsb);  // not a DSB
  plat.tlbi(TlbiKind::kIpa, kVmid, 0x5000, 3);
  write(t, 5, make_leaf(kOa + 0x1000, kS2Rw, 3), 3, 0x5000);
  expect_only("[dsb]");
  chk.clear_violations();
  chk.set_require_dsb(false);
  write(t, 5, 0, 3, 0x5000);
  plat.tlbi(TlbiKind::kIpa, kVmid, 0x5000, 3);
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  expect_clean();
}

TEST_F(Checker, RuleB_UnmapNeverInvalidatedReportedByFinish) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, 0, 3, 0x5000);
  EXPECT_TRUE(chk.violations().empty());  // not yet: the TLBI may still come
  EXPECT_EQ(chk.pending(), 1u);
  expect_only("pending break");
}

// Rule c.

TEST_F(Checker, RuleC_WriteProtectWithBroadcastAccepted) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, make_leaf(kOa, kS2R, 3), 3, 0x5000);
  inval(TlbiKind::kIpa, 0x5000, 3);
  write(t, 6, make_leaf(kOa, kS2Rw, 3), 3, 0x6000);
  write(t, 6, make_leaf(kOa, kS2Rw | kS2Xn, 3), 3, 0x6000);
  inval(TlbiKind::kVmid);
  expect_clean();
}

TEST_F(Checker, RuleC_LocalInvalidationIsNotEnough) {
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, make_leaf(kOa, kS2R, 3), 3, 0x5000);
  inval(TlbiKind::kIpaLocal, 0x5000, 3);
  expect_only("[c] pending permission restriction");
}

TEST_F(Checker, RuleC_EveryStage2RestrictionCounts) {
  u64* t = table();
  write(t, 1, make_leaf(kOa, kS2Rw, 3), 3, 0x1000);
  write(t, 1, make_leaf(kOa, kS2Rw | kS2Xn, 3), 3, 0x1000);  // XN set
  write(t, 2, make_leaf(kOa, kS2Rw, 3), 3, 0x2000);
  write(t, 2, make_leaf(kOa, kS2Rw & ~kS2ApR, 3), 3, 0x2000);  // R removed
  write(t, 3, make_leaf(kOa, kS2R, 3), 3, 0x3000);
  write(t, 3, make_leaf(kOa, kS2Rw, 3), 3, 0x3000);  // relaxation: fine
  inval(TlbiKind::kIpa, 0x3000, 3);                   // covers neither restriction
  expect_only("[c]", 2);
}

TEST_F(Checker, RuleC_El2ReadOnlyNeedsEl2Invalidation) {
  chk.set_format(kHypId, Format::kHypStage1);
  u64* t = table();
  write(t, 1, make_leaf(kOa, kHypRw, 3), 3, 0x1000, kHypId);
  write(t, 1, make_leaf(kOa, kHypRo, 3), 3, 0x1000, kHypId);
  inval(TlbiKind::kEl2Va, 0x1000, 3, kHypId);
  write(t, 2, make_leaf(kOa, kHypRw, 3), 3, 0x2000, kHypId);
  write(t, 2, make_leaf(kOa, kHypRw | kS1Xn, 3), 3, 0x2000, kHypId);
  inval(TlbiKind::kVmid, 0, 0, kHypId);  // stage-2 kind: does not cover
  expect_only("[c] pending permission restriction", 1);
}

TEST_F(Checker, RuleC_TableAttributeRestriction) {
  u64* l2 = table();
  const u64 tbl = make_table(pa(table()));
  write(l2, 0, tbl, 2, 0);
  write(l2, 0, tbl | kTableXn, 2, 0);
  expect_only("[c]");
}

// Rule d.

TEST_F(Checker, RuleD_UnlinkInvalidateFreeAccepted) {
  u64* l2 = table();
  u64* t = table();
  write(l2, 4, make_table(pa(t)), 2, 4 * k2M);
  write(t, 0, make_leaf(kOa, kS2Rw, 3), 3, 4 * k2M);
  write(t, 0, 0, 3, 4 * k2M);
  write(l2, 4, 0, 2, 4 * k2M);
  inval(TlbiKind::kVmid);
  plat.put_page(t);
  EXPECT_FALSE(plat.is_allocated(PhysAddr(pa(t))));
  expect_clean();
}

TEST_F(Checker, RuleD_FreeWhileLinkedFlagged) {
  u64* l2 = table();
  u64* t = table();
  write(l2, 4, make_table(pa(t)), 2, 4 * k2M);
  plat.free_pages(t, 0);
  expect_only("still holds a table descriptor");
}

TEST_F(Checker, RuleD_FreeAfterLeafLevelInvalidationOnlyFlagged) {
  u64* l2 = table();
  u64* t = table();
  write(l2, 4, make_table(pa(t)), 2, 4 * k2M);
  write(l2, 4, 0, 2, 4 * k2M);
  inval(TlbiKind::kIpa, 4 * k2M, 2);  // covers the break, not the walk caches
  plat.put_page(t);
  expect_only("without a table-level invalidation");
}

TEST_F(Checker, RuleD_NeverLinkedPageFreeAccepted) {
  u64* t = table();
  write(t, 0, make_leaf(kOa, kS2Rw, 3), 3, 0);  // filled but never linked
  write(t, 0, 0, 3, 0);
  inval(TlbiKind::kIpa, 0, 3);
  plat.free_pages(t, 0);
  expect_clean();
}

TEST_F(Checker, RuleD_El2TablesNeedEl2All) {
  chk.set_format(kHypId, Format::kHypStage1);
  u64* l2 = table();
  u64* a = table();
  u64* b = table();
  write(l2, 1, make_table(pa(a)), 2, k2M, kHypId);
  write(l2, 2, make_table(pa(b)), 2, 2 * k2M, kHypId);
  write(l2, 1, 0, 2, k2M, kHypId);
  inval(TlbiKind::kEl2Va, k2M, 2, kHypId);
  plat.put_page(a);  // flagged: only a by-VA invalidation
  write(l2, 2, 0, 2, 2 * k2M, kHypId);
  inval(TlbiKind::kEl2All, 0, 0, kHypId);
  plat.put_page(b);  // fine
  expect_only("table page", 1);
}

TEST_F(Checker, RuleD_TableLinksMustBeUniqueAndLive) {
  u64* l2 = table();
  u64* t = table();
  u64* gone = table();
  const u64 gone_pa = pa(gone);
  plat.free_pages(gone, 0);
  write(l2, 0, make_table(pa(t)), 2, 0);
  write(l2, 1, make_table(pa(t)), 2, k2M);       // same table twice
  write(l2, 2, make_table(gone_pa), 2, 2 * k2M);  // freed page
  const auto v = chk.violations();
  ASSERT_EQ(v.size(), 2u) << chk.report();
  EXPECT_NE(v[0].find("already linked"), std::string::npos) << v[0];
  EXPECT_NE(v[1].find("not an allocated table page"), std::string::npos) << v[1];
}

TEST_F(Checker, RuleD_TeardownAllowsDestroyOrder) {
  u64* root = table();
  u64* t = table();
  write(root, 0, make_table(pa(t)), 2, 0);
  write(t, 0, make_leaf(kOa, kS2Rw, 3), 3, 0);
  chk.set_teardown(true);
  write(t, 0, 0, 3, 0);  // cleared without TLBI: unreachable tables
  plat.put_page(t);      // child first, parent slot still pointing at it
  plat.free_pages(root, 0);
  chk.set_teardown(false);
  expect_clean();
}

// Rule e.

TEST_F(Checker, RuleE_WriteAfterFreeFlagged) {
  u64* t = table();
  write(t, 0, make_leaf(kOa, kS2Rw, 3), 3, 0);
  write(t, 0, 0, 3, 0);
  inval(TlbiKind::kVmid);
  plat.free_pages(t, 0);
  write(t, 0, make_leaf(kOa, kS2Rw, 3), 3, 0);
  expect_only("[e]");
}

TEST_F(Checker, RuleE_WriteIntoDataMemoryFlagged) {
  u64* d = static_cast<u64*>(plat.phys_to_virt(plat.data_base()));
  write(d, 0, make_leaf(kOa, kS2Rw, 3), 3, 0);
  expect_only("not an allocated table page");
}

// Checker plumbing.

TEST_F(Checker, ReportsAllocatorViolations) {
  u64* t = table();
  plat.free_pages(t, 0);
  plat.free_pages(t, 0);
  const auto v = chk.violations();
  ASSERT_EQ(v.size(), 1u);
  EXPECT_NE(v[0].find("allocator: free_pages"), std::string::npos) << v[0];
}

TEST_F(Checker, ReportText) {
  EXPECT_EQ(chk.report(), "no violations");
  u64* t = table();
  write(t, 5, make_leaf(kOa, kS2Rw, 3), 3, 0x5000);
  write(t, 5, make_leaf(kOa + 0x1000, kS2Rw, 3), 3, 0x5000);
  const std::string r = chk.report();
  EXPECT_NE(r.find("1 violation(s)"), std::string::npos) << r;
  char slot[32];
  snprintf(slot, sizeof(slot), "slot 0x%llx", static_cast<unsigned long long>(pa(t) + 5 * 8));
  EXPECT_NE(r.find(slot), std::string::npos) << r;
  EXPECT_NE(r.find("page(oa=0x80001000"), std::string::npos) << r;
}

TEST(CheckerReplay, ReplayOfTheLogMatchesAttachedChecker) {
  SimPlatform plat(kBase, 64, 32);
  BbmChecker live(plat);
  u64* l2 = static_cast<u64*>(plat.zalloc_page());
  u64* t = static_cast<u64*>(plat.zalloc_page());
  auto write = [&](u64* tb, u32 i, u64 v, u32 lvl, u64 ia) {
    const u64 old = tb[i];
    tb[i] = v;
    plat.pte_written(&tb[i], old, v, ia, lvl, kVmid);
  };
  write(l2, 0, make_table(plat.virt_to_phys(t).value()), 2, 0);
  write(t, 1, make_leaf(kOa, kS2Rw, 3), 3, 0x1000);
  write(t, 1, 0, 3, 0x1000);
  write(t, 1, make_leaf(kOa, kS2Rw, 3), 3, 0x1000);  // [b]
  write(t, 1, make_leaf(kOa, kS2R, 3), 3, 0x1000);   // [c] at finish
  write(l2, 0, 0, 2, 0);
  plat.barrier(Barrier::kDsbIshst);
  plat.tlbi(TlbiKind::kIpa, kVmid, 0, 2);
  plat.free_pages(t, 0);  // [d]: no kVmid
  BbmChecker replay;
  for (const Event& e : plat.events()) replay.on_event(e);
  EXPECT_EQ(live.finish(), 3u) << live.report();
  EXPECT_EQ(replay.finish(), 3u) << replay.report();
  EXPECT_EQ(live.violations(), replay.violations());
}

TEST(CheckerAttach, LateAttachKnowsLivePagesAndDetachStops) {
  SimPlatform plat(kBase, 64, 32);
  u64* t = static_cast<u64*>(plat.zalloc_page());
  BbmChecker chk;
  chk.attach(plat);
  EXPECT_EQ(chk.platform(), &plat);
  t[0] = make_leaf(kOa, kS2Rw, 3);
  plat.pte_written(&t[0], 0, t[0], 0, 3, kVmid);
  EXPECT_TRUE(chk.violations().empty()) << chk.report();  // page known as allocated
  chk.detach();
  EXPECT_EQ(chk.platform(), nullptr);
  plat.pte_written(&t[0], t[0], make_leaf(kOa + 0x1000, kS2Rw, 3), 0, 3, kVmid);  // unseen
  EXPECT_TRUE(chk.violations().empty());
  {
    SimPlatform other(kBase, 16, 8);
    chk.attach(other);
  }
  EXPECT_EQ(chk.platform(), nullptr);  // the platform's destruction detaches
}

TEST(CheckerConcurrency, ParallelCompliantSequencesStayClean) {
  SimPlatform plat(kBase, 256, 128);
  BbmChecker chk(plat);
  constexpr int kThreads = 4;
  std::vector<std::thread> ts;
  for (int th = 0; th < kThreads; th++) {
    ts.emplace_back([&, th] {
      const u32 vmid = u32(th + 1);
      for (int round = 0; round < 50; round++) {
        u64* t = static_cast<u64*>(plat.zalloc_page());
        for (u32 i = 0; i < 8; i++) {
          const u64 ia = i * 4096;
          t[i] = make_leaf(kOa + ia, kS2Rw, 3);
          plat.pte_written(&t[i], 0, t[i], ia, 3, vmid);
          const u64 old = t[i];
          t[i] = kLocked;
          plat.pte_written(&t[i], old, kLocked, ia, 3, vmid);
          plat.barrier(Barrier::kDsbIshst);
          plat.tlbi(TlbiKind::kIpa, vmid, ia, 3);
          t[i] = make_leaf(kOa + ia + 0x100000, kS2R, 3);
          plat.pte_written(&t[i], kLocked, t[i], ia, 3, vmid);
        }
        plat.put_page(t);
      }
    });
  }
  for (auto& t : ts) t.join();
  chk.finish();
  EXPECT_TRUE(chk.violations().empty()) << chk.report();
  EXPECT_EQ(plat.pages_in_use(), 0u);
  EXPECT_EQ(plat.tlbi_count(TlbiKind::kIpa), u64{kThreads} * 50 * 8);
}

// Per-CPU statistics are updated without locked instructions, which is
// exact only if no two live threads share a CPU index: each live thread
// holds its own, and an exiting thread's index becomes free again.
TEST(SimCpuIds, LiveThreadsHoldDistinctIdsReleasedAtExit) {
  const u32 main_id = SimPlatform::thread_cpu();
  for (int round = 0; round < 3; ++round) {
    constexpr int kThreads = int(kMaxCpus) - 1;  // with the main thread: every CPU
    std::atomic<int> arrived{0};
    std::vector<u32> ids(kThreads);
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        ids[t] = SimPlatform::thread_cpu();
        arrived.fetch_add(1);
        while (arrived.load() < kThreads) std::this_thread::yield();  // all alive at once
      });
    for (auto& t : ts) t.join();
    std::set<u32> distinct(ids.begin(), ids.end());
    distinct.insert(main_id);
    EXPECT_EQ(distinct.size(), size_t(kMaxCpus)) << "round " << round;
    EXPECT_LT(*distinct.rbegin(), kMaxCpus);
  }
}

TEST(SimCpuIdsDeathTest, MoreLiveThreadsThanCpusAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        std::atomic<bool> stop{false};
        std::vector<std::thread> ts;
        for (u32 t = 0; t < kMaxCpus; ++t)  // with the main thread: one more than there are CPUs
          ts.emplace_back([&] {
            SimPlatform::thread_cpu();
            while (!stop.load()) std::this_thread::yield();
          });
        SimPlatform::thread_cpu();
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // the ninth claim aborts first
      },
      "more than [0-9]+ threads use the simulated machine at once");
}

}  // namespace
// The per-CPU reader lock (EL2's host stage-2 lock, and SimRwLock): a
// writer excludes readers and writers, under contention from both.
TEST(PerCpuRwLock, WritersExcludeReadersAndWriters) {
  SimRwLock lock;
  std::atomic<int> readers{0}, writers{0};
  std::atomic<bool> bad{false};
  u64 plain = 0;  // written only under the exclusive lock
  auto reader = [&] {
    for (int i = 0; i < 20000; ++i) {
      lock.lock_shared();
      readers.fetch_add(1);
      if (writers.load()) bad = true;
      readers.fetch_sub(1);
      lock.unlock_shared();
    }
  };
  auto writer = [&] {
    for (int i = 0; i < 5000; ++i) {
      lock.lock();
      if (writers.fetch_add(1) != 0 || readers.load() != 0) bad = true;
      ++plain;
      writers.fetch_sub(1);
      lock.unlock();
    }
  };
  std::vector<std::thread> ts;
  for (int i = 0; i < 3; ++i) ts.emplace_back(reader);
  for (int i = 0; i < 2; ++i) ts.emplace_back(writer);
  for (auto& t : ts) t.join();
  EXPECT_FALSE(bad);
  EXPECT_EQ(plain, 10000u);
}

// Waits up to 10 s for `flag`.
bool wait_for(const std::atomic<bool>& flag) {
  for (int i = 0; i < 10000 && !flag.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return flag.load();
}

// Readers hold it together (a second CPU gets in while the first holds it);
// a writer waits for them and gets in once they leave.
TEST(PerCpuRwLock, ReadersShareAndAWriterWaitsForThem) {
  SimRwLock lock;
  lock.lock_shared();
  std::atomic<bool> second_in{false}, writer_in{false};
  std::thread second([&] {
    lock.lock_shared();
    second_in = true;
    lock.unlock_shared();
  });
  EXPECT_TRUE(wait_for(second_in)) << "a second reader could not get in beside the first";
  second.join();
  std::thread writer([&] {
    lock.lock();
    writer_in = true;
    lock.unlock();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(writer_in.load()) << "the writer got in while a reader held the lock";
  lock.unlock_shared();
  EXPECT_TRUE(wait_for(writer_in));
  writer.join();
}

// Fairness towards readers: a reader that found a writer in registers as
// waiting, and the next writer lets it in first. Without that, a CPU issuing
// transitions back to back could keep host aborts out (the writer here
// re-takes the lock the moment it drops it).
TEST(PerCpuRwLock, AWaitingReaderGetsInBeforeTheNextWriter) {
  SimRwLock lock;
  lock.lock();
  std::atomic<bool> starting{false}, reader_in{false};
  std::thread reader([&] {
    starting = true;
    lock.lock_shared();  // waits for our hold, registered as waiting
    reader_in = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    lock.unlock_shared();
  });
  ASSERT_TRUE(wait_for(starting));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // it is waiting by now
  EXPECT_FALSE(reader_in.load());
  lock.unlock();
  lock.lock();  // right behind: returns only once the reader has been in and left
  EXPECT_TRUE(reader_in.load()) << "the writer overtook a waiting reader";
  lock.unlock();
  reader.join();
}

// Per-CPU counters add up whatever CPU counted.
TEST(PerCpuCounters, SumAddsEveryCpusCopy) {
  struct C {
    u64 a, b;
  };
  PerCpuCounters<C> c;
  for (u32 cpu = 0; cpu < 2 * kMaxCpus; ++cpu) {
    c.cpu(cpu).a += cpu;
    c.cpu(cpu).b += 1;
  }
  c.locked().a += 1000;
  c.locked().b += 1;
  const C s = c.sum();
  EXPECT_EQ(s.a, u64((2 * kMaxCpus - 1) * kMaxCpus) + 1000);  // 0 + 1 + ... + (2n - 1), and the locked copy
  EXPECT_EQ(s.b, u64(2 * kMaxCpus) + 1);
  static_assert(alignof(PerCpuCounters<C>) >= kCacheLine);
}

}  // namespace pkvm::sim
