// SPDX-License-Identifier: Apache-2.0
// Running out of page-table pages: transitions refuse with -ENOMEM before
// committing anything; mappings the abort path can rebuild are recycled
// (MMIO first, then host-owned memory) and the operation retried once;
// share states and annotations are never dropped; a commit never fails
// half-way (stats().internal_errors stays 0).
#include <gtest/gtest.h>

#include <functional>
#include <utility>

#include "tests/mem_protect/mp_env.h"

namespace pkvm::test {
namespace {

class PoolTest : public ::testing::Test {
 protected:
  explicit PoolTest(const EnvConfig& c = EnvConfig{}) : env(c) {}
  void SetUp() override {
    ASSERT_EQ(env.add_ret, 0);
    ASSERT_EQ(env.init_ret, 0);
  }
  void TearDown() override {
    EXPECT_EQ(env.bbm.finish(), 0u) << env.bbm.report();
    EXPECT_EQ(env.mp.stats().internal_errors, 0u);
  }
  // Leaves exactly `n` pool pages available.
  void leave_free(u64 n) { env.plat.set_pool_limit(s64(env.plat.pages_in_use() + n)); }
  bool mapped(u64 addr) { return desc::is_valid(env.host_pte(addr)); }

  Env env;
};

// host_share_hyp of one page reserves the worst case: two host tables
// (levels 2 and 3 under a level-1 root) and three hyp tables (levels 1-3
// under a level-0 root). One page short is -ENOMEM with nothing changed.
TEST_F(PoolTest, OnePageShortIsEnomemAndChangesNothing) {
  const u64 pfn = env.data_pfn() + 7;
  leave_free(4);
  const std::string before = snapshot(env);
  const u64 in_use = env.plat.pages_in_use();
  EXPECT_EQ(env.mp.host_share_hyp(pfn, 1), -kENOMEM);
  EXPECT_EQ(snapshot(env), before);
  EXPECT_EQ(env.plat.pages_in_use(), in_use);
  EXPECT_EQ(env.plat.failed_alloc_count(), 0u);  // refused before allocating anything
  const MemProtectStats s = env.mp.stats();
  EXPECT_EQ(s.failed[u32(Transition::kHostShareHyp)], 1u);
  EXPECT_EQ(s.ok[u32(Transition::kHostShareHyp)], 0u);
  EXPECT_EQ(s.recycles, 1u);  // it tried
  leave_free(5);
  EXPECT_EQ(env.mp.host_share_hyp(pfn, 1), 0);
}

// Every transition, from the state it succeeds from, over every pool size
// from empty upwards: each attempt either fails with -ENOMEM leaving the
// ownership, the other tables and the data exactly as they were, or
// succeeds; it never half-commits.
struct SweepCase {
  T t;
  St from;
  u64 pfn_off, gfn, nr;
  const char* range;
  u64 call_off = 0, call_nr = 0;  // part of the set-up range (0: all of it)
};

const SweepCase kSweep[] = {
    {T::kShareHyp, St::kOwned, 0x10, 0x100, 1, "OnePage"},
    {T::kShareHyp, St::kMapped, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kShareHyp, St::kMapped, 0x200, 0x200, 512, "Block512"},
    {T::kUnshareHyp, St::kSharedHyp, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kUnshareHyp, St::kSharedHyp, 0x200, 0x200, 512, "Block512"},
    {T::kDonateHyp, St::kMapped, 0x10, 0x100, 1, "OnePage"},
    {T::kDonateHyp, St::kOwned, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kHypDonateHost, St::kDonatedHyp, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kHypDonateHost, St::kDonatedHyp, 0x200, 0x200, 512, "Block512"},
    {T::kShareGuest, St::kMapped, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kShareGuest, St::kOwned, 0x200, 0x200, 512, "Block512"},
    {T::kUnshareGuest, St::kSharedGuest, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kDonateGuest, St::kMapped, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kDonateGuest, St::kOwned, 0x200, 0x200, 512, "Block512"},
    {T::kGuestShareHost, St::kDonatedGuest, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kGuestShareHost, St::kDonatedGuest, 0x200, 0x200, 512, "Block512"},
    {T::kGuestUnshareHost, St::kGuestShared, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kReclaim, St::kDyingOwned, 0x1fe, 0x1fe, 4, "FourAcross2M"},
    {T::kReclaim, St::kDyingLent, 0x200, 0x200, 512, "Block512"},
    // Part of a 2 MiB block: every side must split a block.
    {T::kUnshareHyp, St::kSharedHyp, 0x200, 0x200, 512, "FourInsideBlock", 0x101, 4},
    {T::kHypDonateHost, St::kDonatedHyp, 0x200, 0x200, 512, "FourInsideBlock", 0x101, 4},
    {T::kPin, St::kSharedHyp, 0x200, 0x200, 512, "FourInsideBlock", 0x101, 4},
    {T::kUnshareGuest, St::kSharedGuest, 0x200, 0x200, 512, "FourInsideBlock", 0x101, 4},
    {T::kGuestShareHost, St::kDonatedGuest, 0x200, 0x200, 512, "FourInsideBlock", 0x101, 4},
    {T::kGuestUnshareHost, St::kGuestShared, 0x200, 0x200, 512, "FourInsideBlock", 0x101, 4},
    {T::kReclaim, St::kDyingOwned, 0x200, 0x200, 512, "FourInsideBlock", 0x101, 4},
    {T::kShareHyp, St::kMapped, 0x200, 0x200, 512, "FourInsideBlock", 0x101, 4},
};

void PrintTo(const SweepCase& c, std::ostream* os) { *os << name(c.t) << " from " << name(c.from) << " " << c.range; }

class PoolSweepTest : public PoolTest, public ::testing::WithParamInterface<SweepCase> {};

TEST_P(PoolSweepTest, EnomemOrSuccessNeverHalfway) {
  const SweepCase& c = GetParam();
  ASSERT_EQ(env.mp.guest_create(), int(kG));
  const u64 pfn = env.data_pfn() + c.pfn_off;
  for (u64 i = 0; i < c.nr; ++i) env.fill(pfn + i, i);
  // Some rebuildable mappings to recycle: an MMIO block and a memory block
  // in another 1 GiB (the default layout's R1).
  ASSERT_EQ(env.mp.host_stage2_idmap(0x80200000), 0);
  ASSERT_EQ(env.mp.host_stage2_idmap(0x80000000), 0);
  ASSERT_EQ(apply(env, c.from, pfn, c.gfn, c.nr), 0);
  if (dies(c.from)) {
    ASSERT_EQ(env.destroy_guest(kG), 0);
  }
  // Recycling may drop host mappings: compare ownership, not mappings.
  const SnapOpts o{.raw_host = false};
  int ret = -kENOMEM;
  u64 free = 0;
  for (; free <= 16 && ret == -kENOMEM; ++free) {
    leave_free(free);
    const std::string before = snapshot(env, o);
    ret = call(env.mp, c.t, kG, pfn + c.call_off, c.gfn + c.call_off, c.call_nr ? c.call_nr : c.nr);
    if (ret == -kENOMEM) {
      EXPECT_EQ(snapshot(env, o), before) << free << " free pages";
    }
    ASSERT_EQ(env.mp.stats().internal_errors, 0u) << free << " free pages";
  }
  EXPECT_EQ(ret, 0) << "still failing with " << free - 1 << " free pages";
  // Pins and a fully-split range may need nothing; everything else must
  // have been refused at least once for the sweep to prove anything.
  if (c.t != T::kPin) {
    EXPECT_GT(free, 1u) << "succeeded with an empty pool: the sweep proved nothing";
  }
}

INSTANTIATE_TEST_SUITE_P(All, PoolSweepTest, ::testing::ValuesIn(kSweep),
                         [](const ::testing::TestParamInfo<SweepCase>& i) {
                           return std::string(name(i.param.t)) + "_from_" + name(i.param.from) + "_" +
                                  i.param.range;
                         });

// A layout where MMIO and memory mappings each hold their own table pages:
//   R0 [1G, 2G) memory (the arena at its start)
//   R1 [0x1_0000_1000, 0x1_0000_2000) one unaligned page: a fault there needs
//      two new tables (levels 2 and 3 of [4G, 5G))
//   R3 [0x1_8000_0000, 0x1_8020_0000) 2 MiB, never mapped
//   MMIO everywhere else up to 1 TiB.
// Mappings built by the fixture (each the only user of the tables named):
//   S  a page of R0 lent to the hypervisor (R0's L2 table, an L3 table)
//   D  the next page, donated to the hypervisor (an annotation in S's table)
//   O  a page of R0 in another 2 MiB, lent and taken back: left mapped OWNED
//      at level 3 (holds its L3 table)
//   O2 the same in a third 2 MiB, after O in address order
//   M  an MMIO 2 MiB block at 0x1_8020_0000, next to R3 (holds the L2
//      table of [6G, 7G))
//   M1 an MMIO 1 GiB block at 0xc000_0000 (a root entry: holds nothing)
class RecycleTest : public PoolTest {
 protected:
  static EnvConfig cfg() {
    EnvConfig c;
    c.regions = {{0x40000000, k1G, 0}, {0x100001000, kPage, 0}, {0x180000000, k2M, 0}};
    return c;
  }
  RecycleTest() : PoolTest(cfg()) {}
  void SetUp() override {
    PoolTest::SetUp();
    S = (env.data_pfn() + 0x100) << desc::kPageShift;
    D = S + kPage;
    O = (env.data_pfn() + 0x200) << desc::kPageShift;
    O2 = 0x60000000;  // outside the arena: nothing reads it
    Q = 0x50000000;   // the transition's page: R0, a 2 MiB of its own
    ASSERT_EQ(env.mp.host_share_hyp(S >> desc::kPageShift, 1), 0);
    ASSERT_EQ(env.mp.host_donate_hyp(D >> desc::kPageShift, 1), 0);
    // O and O2: a single host-owned page mapping with a table of its own,
    // as a page-granular fault leaves it (share + unshare would now heal
    // the 2 MiB back into a block, which holds no table).
    for (u64 a : {O, O2}) {
      ASSERT_EQ(env.mp.host_pgt().stage2_map(Ipa(a), kPage, PhysAddr(a), kProtRWX | state_prot(PageState::kOwned),
                                             kMapSkipDcache | kMapSkipIcache),
                0);
      ASSERT_TRUE(mapped(a));
    }
    ASSERT_EQ(env.mp.host_stage2_idmap(kM), 0);
    u32 level = 0;
    ASSERT_EQ(env.host_pte(kM, &level), kM | 0x00400000000007c5ull);  // device block
    ASSERT_EQ(level, 2u);
    ASSERT_EQ(env.mp.host_stage2_idmap(0xc0000000), 0);
    ASSERT_EQ(state_of_leaf(env.host_pte(S)), PageState::kSharedOwned);
  }
  // The untouchables: S still lent, D still the hypervisor's.
  void expect_states_kept() {
    EXPECT_TRUE(mapped(S));
    EXPECT_EQ(state_of_leaf(env.host_pte(S)), PageState::kSharedOwned);
    EXPECT_EQ(env.host_pte(D), desc::make_owner(kOwnerHyp));
    u64 sum = 0;
    EXPECT_EQ(env.mp.hyp_checksum(S >> desc::kPageShift, 1, &sum), 0);
  }
  static constexpr u64 kM = 0x180200000;
  u64 S = 0, D = 0, O = 0, O2 = 0, Q = 0;
};

// share_hyp(Q) reserves 5 pages. With 4 free, dropping the MMIO mappings
// (one table page) is enough: memory mappings stay.
TEST_F(RecycleTest, MmioMappingsGoFirst) {
  leave_free(4);
  EXPECT_EQ(env.mp.host_share_hyp(Q >> desc::kPageShift, 1), 0);
  EXPECT_EQ(env.mp.stats().recycles, 1u);
  EXPECT_FALSE(mapped(kM));
  EXPECT_FALSE(mapped(0xc0000000));  // every MMIO mapping goes, table or not
  EXPECT_TRUE(mapped(O));            // memory untouched: MMIO was enough
  EXPECT_TRUE(mapped(O2));
  expect_states_kept();
  // They come back on the next fault.
  env.plat.set_pool_limit(-1);
  EXPECT_EQ(env.mp.host_stage2_idmap(kM), 0);
  EXPECT_EQ(env.mp.host_stage2_idmap(O), -kEAGAIN);
}

// More separate MMIO runs than recycle notes in one scan (32): the rest of
// the gap goes as one run, and every MMIO mapping is still dropped.
TEST_F(RecycleTest, MoreMmioRunsThanNotedAllGo) {
  // The gap after the 2 MiB region at 0x180000000, every other 2 MiB.
  constexpr u64 kGiB = 0x180000000, kStride = 0x400000;
  for (u64 i = 1; i <= 40; ++i) {
    ASSERT_EQ(env.mp.host_stage2_idmap(kGiB + i * kStride), 0) << i;
    ASSERT_TRUE(mapped(kGiB + i * kStride));
  }
  leave_free(4);
  EXPECT_EQ(env.mp.host_share_hyp(Q >> desc::kPageShift, 1), 0);
  EXPECT_EQ(env.mp.stats().recycles, 1u);
  for (u64 i = 1; i <= 40; ++i) EXPECT_FALSE(mapped(kGiB + i * kStride)) << i;
  EXPECT_FALSE(mapped(kM));
  EXPECT_FALSE(mapped(0xc0000000));
  expect_states_kept();
}

// With 3 free, MMIO gives one page and the first host-owned memory mapping
// (O) the other; O2 is not needed and stays.
TEST_F(RecycleTest, ThenHostOwnedMemoryMappingsOnlyAsFarAsNeeded) {
  leave_free(3);
  EXPECT_EQ(env.mp.host_share_hyp(Q >> desc::kPageShift, 1), 0);
  EXPECT_EQ(env.mp.stats().recycles, 1u);
  EXPECT_FALSE(mapped(kM));
  EXPECT_FALSE(mapped(O));
  EXPECT_TRUE(mapped(O2));
  expect_states_kept();
  env.plat.set_pool_limit(-1);
  EXPECT_EQ(env.mp.host_stage2_idmap(O), 0);  // rebuilt by the abort path
}

// With 1 free, recycling everything rebuildable gives 3 more: not enough.
// -ENOMEM, and the ownership of every page is as before.
TEST_F(RecycleTest, NotEnoughEvenAfterRecyclingIsEnomem) {
  leave_free(1);
  const std::string before = snapshot(env, {.raw_host = false});
  EXPECT_EQ(env.mp.host_share_hyp(Q >> desc::kPageShift, 1), -kENOMEM);
  EXPECT_EQ(snapshot(env, {.raw_host = false}), before);
  EXPECT_FALSE(mapped(kM));
  EXPECT_FALSE(mapped(O));
  EXPECT_FALSE(mapped(O2));
  expect_states_kept();
  EXPECT_EQ(env.plat.nr_free_pages(), 4u);  // 1 + M's table + O's + O2's
}

// The abort path with an empty pool: the unaligned page of R1 needs two
// tables; its map fails, it recycles (MMIO, then O) and retries once.
TEST_F(RecycleTest, AbortWithEmptyPoolRecyclesAndRetries) {
  leave_free(0);
  EXPECT_EQ(env.mp.host_stage2_idmap(0x100001000), 0);
  u32 level = 0;
  EXPECT_EQ(env.host_pte(0x100001000, &level), 0x100001000u | 0x7ff);  // normal RWX page
  EXPECT_EQ(level, 3u);
  const MemProtectStats s = env.mp.stats();
  EXPECT_EQ(s.recycles, 1u);
  EXPECT_EQ(s.host_abort_enomem, 0u);
  EXPECT_EQ(s.host_aborts[3], 1u);
  EXPECT_FALSE(mapped(kM));
  EXPECT_FALSE(mapped(O));
  EXPECT_TRUE(mapped(O2));
  expect_states_kept();
}

// A fault that fits in an existing table needs no page: no recycling.
TEST_F(RecycleTest, AbortInsideExistingTablesNeedsNoPage) {
  leave_free(0);
  EXPECT_EQ(env.mp.host_stage2_idmap(D + kPage), 0);  // level 3 of S's table
  EXPECT_EQ(env.mp.host_stage2_idmap(Q), 0);          // a 2 MiB block in R0's level-2 table
  EXPECT_EQ(env.mp.host_stage2_idmap(kM + k2M), 0);    // MMIO 2 MiB in M's table
  EXPECT_EQ(env.mp.host_stage2_idmap(0x80000000), 0);  // MMIO 1 GiB: a root entry
  EXPECT_EQ(env.mp.stats().recycles, 0u);
  EXPECT_TRUE(mapped(kM));
  EXPECT_TRUE(mapped(O));
}

// Nothing rebuildable and an empty pool: -ENOMEM, counted, nothing changed.
TEST_F(PoolTest, AbortWithNothingToRecycleIsEnomem) {
  ASSERT_EQ(env.mp.host_donate_hyp(env.data_pfn(), 1), 0);  // R0 becomes a table: an annotation, not recyclable
  leave_free(0);
  const std::string before = snapshot(env, {.raw_host = true, .abort_stats = false});
  EXPECT_EQ(env.mp.host_stage2_idmap(0x80000000), -kENOMEM);  // R1 needs the level-2 table of [2G, 3G)
  EXPECT_EQ(snapshot(env, {.raw_host = true, .abort_stats = false}), before);
  const MemProtectStats s = env.mp.stats();
  EXPECT_EQ(s.host_abort_enomem, 1u);
  EXPECT_EQ(s.recycles, 1u);
  for (u32 i = 0; i < 4; ++i) EXPECT_EQ(s.host_aborts[i], 0u);
  // Blocks that need no table still map.
  EXPECT_EQ(env.mp.host_stage2_idmap(0xc0000000), 0);
  EXPECT_EQ(env.mp.host_stage2_idmap(env.data_pfn() << desc::kPageShift | 0x1000), 0);
}

// The host lock, with a hook that runs once just before the next exclusive
// acquisition: it places a transition in the window where the abort path
// has dropped its shared hold and waits for the exclusive one.
class WindowLock final : public RwLock {
 public:
  void lock() override {
    if (hook) std::exchange(hook, nullptr)();
    inner.lock();
  }
  void unlock() override { inner.unlock(); }
  void lock_shared() override { inner.lock_shared(); }
  void unlock_shared() override { inner.unlock_shared(); }
  std::function<void()> hook;
  sim::SimRwLock inner;
};

// An abort whose shared attempt ran out of table pages frees only the empty
// tables it may have left: a transition that ran between its shared and its
// exclusive hold keeps what it wrote (here: a donation in the same 2 MiB,
// which an unmap of the abort's block would have wiped, leaving the page
// mappable by the host while the hypervisor owns it).
TEST(AbortRetry, KeepsWhatATransitionWroteBetweenItsHolds) {
  WindowLock lock;
  EnvConfig c;
  c.host_lock = &lock;
  Env env(c);
  ASSERT_EQ(env.init_ret, 0);
  constexpr u64 kR1 = 0x80000000;  // R1: 2 MiB of memory in an empty 1 GiB entry
  env.plat.fail_alloc_after(0);    // the shared attempt's level-2 table
  int donated = 1;
  lock.hook = [&] { donated = env.mp.host_donate_hyp((kR1 >> desc::kPageShift) + 1, 1); };
  EXPECT_EQ(env.mp.host_stage2_idmap(kR1), 0);  // retried under the exclusive hold: a page now
  EXPECT_EQ(donated, 0);
  EXPECT_EQ(env.host_pte(kR1 + kPage), desc::make_owner(kOwnerHyp));
  const PageMeta* m = env.mp.meta((kR1 >> desc::kPageShift) + 1);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(meta_host_state(*m), PageState::kNoPage);
  EXPECT_EQ(m->owner, kOwnerHyp);
  EXPECT_EQ(env.mp.host_stage2_idmap(kR1 + kPage), -kEPERM);
  EXPECT_TRUE(desc::is_valid(env.host_pte(kR1)));
  EXPECT_EQ(env.mp.stats().internal_errors, 0u);
  EXPECT_EQ(env.bbm.finish(), 0u) << env.bbm.report();
}

// A commit that fails although the pool was checked (here: an allocation
// failure the pool could not predict) is a bug, counted in internal_errors;
// the state mirror then follows the table, not the intent, so later checks
// still see what the hardware sees.
TEST(CommitFailure, MirrorFollowsTheTable) {
  Env env;
  ASSERT_EQ(env.init_ret, 0);
  constexpr u64 kPfn = 0x80000000 >> desc::kPageShift;  // R1: its annotation needs new tables
  env.plat.fail_alloc_after(0);
  EXPECT_EQ(env.mp.host_donate_hyp(kPfn, 1), 0);  // the host side failed, the hyp side went in
  EXPECT_EQ(env.mp.stats().internal_errors, 1u);
  EXPECT_EQ(env.host_pte(kPfn << desc::kPageShift), 0u);  // not annotated: the host still owns it
  const PageMeta* m = env.mp.meta(kPfn);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(meta_host_state(*m), PageState::kOwned);
  EXPECT_EQ(m->owner, kOwnerHost);
  EXPECT_EQ(meta_hyp_state(*m), PageState::kOwned);
  // A commit that fails on the hypervisor's side: a page of R0 whose host
  // side takes two new tables (they succeed) and whose hyp side takes two
  // more (the first fails). Its hyp mirror follows its hyp table.
  constexpr u64 kX = 0x40400000 >> desc::kPageShift;
  env.plat.fail_alloc_after(2);
  EXPECT_EQ(env.mp.host_share_hyp(kX, 1), 0);
  EXPECT_EQ(env.mp.stats().internal_errors, 2u);
  u64 pte = 1;
  u32 level = 0;
  ASSERT_EQ(env.mp.hyp_pgt().get_leaf(kX << desc::kPageShift, &pte, &level), 0);
  EXPECT_EQ(pte, 0u);
  const PageMeta* x = env.mp.meta(kX);
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(meta_hyp_state(*x), PageState::kNoPage);
  EXPECT_EQ(meta_host_state(*x), PageState::kSharedOwned);
  EXPECT_TRUE(desc::is_valid(env.host_pte(kX << desc::kPageShift)));
}

TEST_F(PoolTest, GuestCreateWithoutPoolPagesConsumesNoSlot) {
  leave_free(0);
  const std::string before = snapshot(env);
  EXPECT_EQ(env.mp.guest_create(), -kENOMEM);
  EXPECT_EQ(snapshot(env), before);
  leave_free(1);
  EXPECT_EQ(env.mp.guest_create(), int(kG));
}

TEST_F(PoolTest, GuestDestroyWithoutPoolPagesKeepsTheGuestAlive) {
  ASSERT_EQ(env.mp.guest_create(), int(kG));
  const u64 p = env.data_pfn() + 0x30;
  ASSERT_EQ(env.mp.host_share_guest(kG, p, 0x10, 2), 0);
  ASSERT_EQ(env.mp.host_donate_guest(kG, p + 2, 0x12, 2), 0);
  ASSERT_EQ(env.mp.guest_share_host(kG, 0x13, 1), 0);
  leave_free(0);
  const std::string before = snapshot(env);
  EXPECT_EQ(env.destroy_guest(kG), -kENOMEM);
  EXPECT_EQ(snapshot(env), before);
  EXPECT_NE(env.mp.guest_pgt(kG), nullptr);
  env.plat.set_pool_limit(-1);
  EXPECT_EQ(env.destroy_guest(kG), 0);
}

// Table pages come back: a long run of transitions and aborts ends with the
// same number of pages in use as it started with once everything is undone.
TEST_F(PoolTest, TablePagesAreReturnedWhenMappingsGo) {
  const u64 start = env.plat.pages_in_use();
  const u64 p = env.data_pfn() + 0x1f0;
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(env.mp.guest_create(), int(kG));
    ASSERT_EQ(env.mp.host_share_hyp(p, 32), 0);
    ASSERT_EQ(env.mp.host_unshare_hyp(p, 32), 0);
    ASSERT_EQ(env.mp.host_donate_hyp(p, 32), 0);
    ASSERT_EQ(env.mp.hyp_donate_host(p, 32), 0);
    ASSERT_EQ(env.mp.host_share_guest(kG, p, 0x1f0, 32), 0);
    ASSERT_EQ(env.mp.host_unshare_guest(kG, 0x1f0, 32), 0);
    ASSERT_EQ(env.mp.host_donate_guest(kG, p, 0x1f0, 32), 0);
    ASSERT_EQ(env.mp.guest_share_host(kG, 0x1f0, 32), 0);
    ASSERT_EQ(env.mp.guest_unshare_host(kG, 0x1f0, 32), 0);
    ASSERT_EQ(env.destroy_guest(kG), 0);
    ASSERT_EQ(env.mp.host_reclaim_guest(kG, p, 32), 0);
  }
  // Host mappings of the pages linger (host-owned, rebuildable; healed into
  // a block where the whole block is the host's again): drop every mapping of
  // the region the way recycling does and count again.
  const u64 gib = u64{1} << 30;
  ASSERT_EQ(env.mp.host_pgt().stage2_unmap(Ipa((p << desc::kPageShift) & ~(gib - 1)), gib), 0);
  EXPECT_EQ(env.plat.pages_in_use(), start);
  EXPECT_EQ(leaves_of(env.mp.hyp_pgt()), "");
}

}  // namespace
}  // namespace pkvm::test
