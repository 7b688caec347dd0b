// SPDX-License-Identifier: Apache-2.0
// Healing: when every page under an aligned block is the host's again, the
// tables under it go and one block maps it; and concurrent host aborts
// (shared walkers under a shared lock) beside transitions.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "tests/mem_protect/mp_env.h"

namespace pkvm::test {
namespace {

constexpr u64 k4K = 4096;

class HealTest : public ::testing::Test {
 protected:
  void TearDown() override {
    env.bbm.finish();
    EXPECT_TRUE(env.bbm.violations().empty()) << env.bbm.report();
    EXPECT_EQ(env.mp.stats().internal_errors, 0u);
  }
  u32 level_of(u64 addr) {
    u32 level = 0;
    env.host_pte(addr, &level);
    return level;
  }
  u64 tables() { return env.mp.host_pgt().stats().table_pages; }

  Env env;
};

// One page shared and taken back: the 2 MiB around it is one block again and
// the page table under it is gone.
TEST_F(HealTest, UnshareRestoresTheBlock) {
  const u64 pfn = env.data_pfn() + 0x10;
  const u64 addr = pfn * k4K;
  ASSERT_EQ(env.mp.host_stage2_idmap(addr), 0);
  const u32 block = level_of(addr);
  ASSERT_LT(block, 3u);  // the largest block: R0 is one aligned 1 GiB region
  const u64 before = tables();
  ASSERT_EQ(env.mp.host_share_hyp(pfn, 1), 0);
  EXPECT_EQ(level_of(addr), 3u);
  EXPECT_GT(tables(), before);  // split down to the page
  ASSERT_EQ(env.mp.host_unshare_hyp(pfn, 1), 0);
  EXPECT_EQ(level_of(addr), block);
  EXPECT_EQ(tables(), before);
  EXPECT_EQ(state_of_leaf(env.host_pte(addr)), PageState::kOwned);
  EXPECT_GE(env.mp.stats().heals, 1u);
}

// Donation and donation back, and a reclaim after a guest: same outcome.
TEST_F(HealTest, DonateBackAndReclaimRestoreTheBlock) {
  const u64 pfn = env.data_pfn() + 0x20;
  const u64 addr = pfn * k4K;
  ASSERT_EQ(env.mp.host_stage2_idmap(addr), 0);
  const u32 block = level_of(addr);
  const u64 before = tables();
  ASSERT_EQ(env.mp.host_donate_hyp(pfn, 4), 0);
  ASSERT_EQ(env.mp.hyp_donate_host(pfn, 4), 0);
  EXPECT_EQ(level_of(addr), block);
  EXPECT_EQ(tables(), before);

  const int g = env.mp.guest_create();
  ASSERT_GE(g, int(kOwnerGuestFirst));
  ASSERT_EQ(env.mp.host_donate_guest(u32(g), pfn, 0x40, 4), 0);
  EXPECT_EQ(level_of(addr), 3u);
  ASSERT_EQ(env.destroy_guest(u32(g)), 0);
  ASSERT_EQ(env.mp.host_reclaim_guest(u32(g), pfn, 4), 0);
  EXPECT_EQ(level_of(addr), block);
  EXPECT_EQ(tables(), before);
}

// Pages lent to a guest come back at guest destruction, healed.
TEST_F(HealTest, GuestDestroyRestoresTheBlock) {
  const u64 pfn = env.data_pfn() + 0x30;
  const u64 addr = pfn * k4K;
  ASSERT_EQ(env.mp.host_stage2_idmap(addr), 0);
  const u32 block = level_of(addr);
  const u64 before = tables();
  const int g = env.mp.guest_create();
  ASSERT_EQ(env.mp.host_share_guest(u32(g), pfn, 0x10, 8), 0);
  ASSERT_EQ(env.destroy_guest(u32(g)), 0);
  EXPECT_EQ(level_of(addr), block);
  EXPECT_EQ(tables(), before);
}

// No healing while any page of the block is not the host's alone.
TEST_F(HealTest, NonUniformBlockStaysSplit) {
  const u64 pfn = env.data_pfn() + 0x40;
  ASSERT_EQ(env.mp.host_stage2_idmap(pfn * k4K), 0);
  const u32 block = level_of(pfn * k4K);
  ASSERT_EQ(env.mp.host_share_hyp(pfn, 1), 0);
  ASSERT_EQ(env.mp.host_share_hyp(pfn + 1, 1), 0);
  ASSERT_EQ(env.mp.host_unshare_hyp(pfn, 1), 0);
  EXPECT_EQ(level_of(pfn * k4K), 3u);  // pfn + 1 is still lent
  EXPECT_EQ(env.mp.stats().heals, 0u);
  ASSERT_EQ(env.mp.host_unshare_hyp(pfn + 1, 1), 0);
  EXPECT_EQ(level_of(pfn * k4K), block);
}

// A range over two 2 MiB blocks, returned while the first block still
// lends a page: the second block is whole again and heals, the first stays
// split (a look at the first block alone must not end the healing).
TEST_F(HealTest, RangeOverTwoBlocksHealsTheWholeOne) {
  const u64 a = env.data_pfn();  // 2 MiB aligned: blocks [a, a + 512) and [a + 512, a + 1024)
  const u64 last_of_a = a + 511;
  ASSERT_EQ(env.mp.host_stage2_idmap(a * k4K), 0);
  ASSERT_EQ(env.mp.host_share_hyp(a + 5, 1), 0);  // stays lent: block A is not uniform
  ASSERT_EQ(env.mp.host_share_hyp(last_of_a, 2), 0);
  ASSERT_EQ(env.mp.host_unshare_hyp(last_of_a, 2), 0);
  EXPECT_EQ(level_of((last_of_a + 1) * k4K), 2u) << "block B is one 2 MiB block again";
  EXPECT_EQ(level_of(last_of_a * k4K), 3u) << "block A keeps its page table";
  EXPECT_EQ(env.mp.stats().heals, 1u);
}

// The last memory region ends 1 MiB into a 2 MiB block, at the end of the
// page metadata (mp_env sizes it to the regions exactly). Every page of the
// region is the host's again after the unshare, so heal's look at the block
// must stop at the end of the metadata rather than read past it (the
// sanitizer build reports such a read), and the block stays split: half of
// it is not memory.
TEST(HealEdge, BlockPastTheEndOfTheMetadata) {
  EnvConfig c;
  c.regions = {{0x40000000, k1G, 0}, {0x80000000, k2M / 2, 0}};
  Env env(c);
  ASSERT_EQ(env.init_ret, 0);
  ASSERT_EQ(env.meta_base + env.meta.size(), (0x80000000 + k2M / 2) / k4K) << "metadata ends with the region";
  const u64 pfn = (0x80000000 + k2M / 2) / k4K - 1;  // the region's last page
  ASSERT_EQ(env.mp.host_share_hyp(pfn, 1), 0);
  ASSERT_EQ(env.mp.host_unshare_hyp(pfn, 1), 0);
  u32 level = 0;
  EXPECT_EQ(state_of_leaf(env.host_pte(pfn * k4K, &level)), PageState::kOwned);
  EXPECT_EQ(level, 3u);
  EXPECT_EQ(env.mp.stats().heals, 0u);
  EXPECT_EQ(env.mp.stats().internal_errors, 0u);
  env.bbm.finish();
  EXPECT_TRUE(env.bbm.violations().empty()) << env.bbm.report();
}

// Churn over the data area, everything returned: the table pages in use and
// the aborts needed to touch all of it again equal a fresh start's.
TEST(HealChurn, ChurnThenReturnEqualsFreshStart) {
  auto touch_all = [](Env& e, u64 first, u64 nr) {
    u64 aborts = 0;
    for (u64 p = first; p < first + nr; ++p) {
      const int r = e.mp.host_stage2_idmap(p * k4K);
      if (r == 0) ++aborts;
      EXPECT_TRUE(r == 0 || r == -kEAGAIN) << r;
    }
    return aborts;
  };
  EnvConfig c;
  c.pool_pages = 2048;  // room for the fragmentation the churn causes
  c.arena_pages = 2048 + 1024;
  Env fresh(c);
  const u64 first = fresh.data_pfn(), nr = fresh.plat.data_pages();
  const u64 fresh_aborts = touch_all(fresh, first, nr);
  const u64 fresh_tables = fresh.mp.host_pgt().stats().table_pages;

  Env e(c);
  std::mt19937_64 rng(42);
  touch_all(e, first, nr);
  const int g = e.mp.guest_create();
  for (int i = 0; i < 2000; ++i) {
    const u64 p = first + rng() % (nr - 8);
    const u64 n = 1 + rng() % 8;
    switch (rng() % 4) {
      case 0:
        if (e.mp.host_share_hyp(p, n) == 0) {
          EXPECT_EQ(e.mp.host_unshare_hyp(p, n), 0);
        }
        break;
      case 1:
        if (e.mp.host_donate_hyp(p, n) == 0) {
          EXPECT_EQ(e.mp.hyp_donate_host(p, n), 0);
        }
        break;
      case 2:
        e.mp.host_share_hyp(p, n);  // some stay shared until the end
        break;
      default:
        e.mp.host_share_guest(u32(g), p, 0x1000 + p - first, n);
        break;
    }
  }
  // Return everything to the host.
  for (u64 p = first; p < first + nr; ++p) e.mp.host_unshare_hyp(p, 1);
  ASSERT_EQ(e.destroy_guest(u32(g)), 0);
  const u64 aborts_again = [&] {
    const u64 before = e.mp.stats().host_aborts[1] + e.mp.stats().host_aborts[2] + e.mp.stats().host_aborts[3];
    touch_all(e, first, nr);
    return e.mp.stats().host_aborts[1] + e.mp.stats().host_aborts[2] + e.mp.stats().host_aborts[3] - before;
  }();
  EXPECT_EQ(e.mp.host_pgt().stats().table_pages, fresh_tables);
  EXPECT_LE(aborts_again, fresh_aborts);
  EXPECT_GT(e.mp.stats().heals, 0u);
  e.bbm.finish();
  EXPECT_TRUE(e.bbm.violations().empty()) << e.bbm.report();
}

// Several CPUs fault at once, on disjoint and on the same addresses, while
// another runs transitions: every abort ends in 0 / -EAGAIN / -EPERM as the
// ownership at that moment allows, nothing is lost, nothing leaks. Run under
// ThreadSanitizer by the tsan build of this suite.
TEST(ConcurrentAborts, AbortsBesideTransitions) {
  EnvConfig c;
  c.attach_bbm = false;  // the checker serialises every event: keep the race real
  Env e(c);
  const u64 first = e.data_pfn(), nr = e.plat.data_pages();
  std::atomic<bool> stop{false};
  std::atomic<u64> bad{0};
  auto faulter = [&](u64 seed, bool same) {
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 20000; ++i) {
      const u64 p = same ? first + (rng() % 16) : first + rng() % nr;
      const int r = e.mp.host_stage2_idmap(p * k4K + (rng() & 0xfff));
      if (r != 0 && r != -kEAGAIN && r != -kEPERM) ++bad;
    }
  };
  std::thread t1(faulter, 1, false), t2(faulter, 2, false), t3(faulter, 3, true), t4(faulter, 4, true);
  std::thread mover([&] {
    std::mt19937_64 rng(9);
    while (!stop.load()) {
      const u64 p = first + rng() % (nr - 4);
      if (e.mp.host_share_hyp(p, 4) == 0) {
        EXPECT_EQ(e.mp.host_unshare_hyp(p, 4), 0);
      }
      if (e.mp.host_donate_hyp(p, 2) == 0) {
        EXPECT_EQ(e.mp.hyp_donate_host(p, 2), 0);
      }
    }
  });
  t1.join();
  t2.join();
  t3.join();
  t4.join();
  stop = true;
  mover.join();
  EXPECT_EQ(bad.load(), 0u);
  // Everything is the host's: every page maps (or already is mapped) and no
  // annotation is left.
  for (u64 p = first; p < first + nr; ++p) {
    const int r = e.mp.host_stage2_idmap(p * k4K);
    EXPECT_TRUE(r == 0 || r == -kEAGAIN) << std::hex << p << " " << std::dec << r;
  }
  const MemProtectStats s = e.mp.stats();
  EXPECT_EQ(s.internal_errors, 0u);
  EXPECT_EQ(s.host_abort_enomem, 0u);
  // Table pages: what the table reaches equals what the pool handed out
  // (roots of host + hyp included), so no page leaked.
  const u64 in_use = e.plat.pages_in_use();
  EXPECT_EQ(in_use, e.mp.host_pgt().stats().table_pages + e.mp.hyp_pgt().stats().table_pages);
}

}  // namespace
}  // namespace pkvm::test
