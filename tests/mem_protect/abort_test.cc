// SPDX-License-Identifier: Apache-2.0
// The host abort path, host_stage2_idmap(addr): which block it installs
// (region edges, alignment, MMIO gaps, existing tables, annotated
// neighbours, regions smaller than a block), the raw descriptor it writes,
// its errors and its statistics. Every expected descriptor is a literal.
#include <gtest/gtest.h>

#include "tests/mem_protect/mp_env.h"

namespace pkvm::test {
namespace {

// Raw descriptor = output address | these bits.
//   normal: AF 0x400 | SH inner 0x300 | S2AP RW 0xc0 | MemAttr 0xf<<2 (WB) | valid (| page 0x2)
//   device: AF 0x400 | SH inner 0x300 | S2AP RW 0xc0 | MemAttr 0x1<<2 (nGnRE) | XN bit 54 | valid (| page)
constexpr u64 kNormalBlock = 0x7fd;
constexpr u64 kNormalPage = 0x7ff;
constexpr u64 kDeviceBlock = 0x00400000000007c5ull;
constexpr u64 kDevicePage = 0x00400000000007c7ull;
static_assert((kNormalBlock & desc::kS2MemAttrMask) == desc::kS2MemAttrNormal);
static_assert((kDeviceBlock & desc::kS2MemAttrMask) == desc::kS2MemAttrDevice);

// Layout for the abort tests (host IA 40 bits, start level 1):
//   [0, 1G)                        MMIO
//   R0 [0x4000_0000, 0x8000_0000)  memory, 1 GiB aligned (the sim arena is at its start)
//   R1 [0x8000_0000, 0x8020_0000)  memory, 2 MiB
//   [0x8020_0000, 0x8040_0000)     MMIO, 2 MiB
//   R2 [0x8040_0000, 0x8060_0000)  memory, no-map
//   [0x8060_0000, 0x1_0000_1000)   MMIO (ends one page past a 1 GiB boundary)
//   R3 [0x1_0000_1000, 0x1_0020_1000) memory, 2 MiB long but not 2 MiB aligned
//   [0x1_0020_1000, 0x1_4000_0000) MMIO
//   R4 [0x1_4000_0000, 0x1_4000_3000) memory, three pages
//   [0x1_4000_3000, 0x1_8000_0000) MMIO
//   R5 [0x1_8000_0000, 0x1_c020_0000) memory, 1 GiB + 2 MiB
//   [0x1_c020_0000, 1T)            MMIO
EnvConfig abort_layout() {
  EnvConfig c;
  c.regions = {
      {0x40000000, k1G, 0},          {0x80000000, k2M, 0},          {0x80400000, k2M, kRegionNoMap},
      {0x100001000, k2M, 0},         {0x140000000, 3 * kPage, 0},   {0x180000000, k1G + k2M, 0},
  };
  return c;
}

class AbortTest : public ::testing::Test {
 protected:
  explicit AbortTest(const EnvConfig& c = abort_layout()) : env(c) {}
  void SetUp() override {
    ASSERT_EQ(env.add_ret, 0);
    ASSERT_EQ(env.init_ret, 0);
  }
  void TearDown() override {
    EXPECT_EQ(env.bbm.finish(), 0u) << env.bbm.report();
    EXPECT_EQ(env.mp.stats().internal_errors, 0u);
  }

  // Faults at `addr` and checks the one descriptor that must result.
  void expect_map(u64 addr, u32 level, u64 pte) {
    SCOPED_TRACE(testing::Message() << "abort at 0x" << std::hex << addr);
    const MemProtectStats before = env.mp.stats();
    ASSERT_EQ(env.mp.host_stage2_idmap(addr), 0);
    u32 l = 0;
    EXPECT_EQ(env.host_pte(addr, &l), pte) << std::hex << env.host_pte(addr);
    EXPECT_EQ(l, level);
    const MemProtectStats after = env.mp.stats();
    for (u32 i = 0; i < 4; ++i) EXPECT_EQ(after.host_aborts[i] - before.host_aborts[i], i == level ? 1u : 0u) << i;
    // A second fault anywhere in it finds the mapping: another CPU won.
    EXPECT_EQ(env.mp.host_stage2_idmap(addr), -kEAGAIN);
    EXPECT_EQ(env.mp.stats().host_abort_eagain, after.host_abort_eagain + 1);
  }

  Env env;
};

struct BlockCase {
  const char* name;
  u64 addr;
  u32 level;
  u64 pte;  // expected raw descriptor
};

// Each case runs on a fresh host stage 2 (only empty entries above it).
void PrintTo(const BlockCase& c, std::ostream* os) {
  *os << c.name << " 0x" << std::hex << c.addr << " -> L" << c.level << " 0x" << c.pte;
}

class AbortBlockTest : public AbortTest, public ::testing::WithParamInterface<BlockCase> {};

TEST_P(AbortBlockTest, InstallsTheLargestBlockThatFits) {
  const BlockCase& c = GetParam();
  expect_map(c.addr, c.level, c.pte);
  // Nothing else was mapped: the dump holds exactly one mapped run.
  DumpRecord r;
  u64 next;
  ASSERT_EQ(env.mp.dump_host(desc::oa(c.pte) >> desc::kPageShift, &r, 1, &next), 1);
  EXPECT_EQ(r.mapped, 1);
  EXPECT_EQ(r.nr_pages, desc::granule_size(c.level) >> desc::kPageShift);
}

const BlockCase kCases[] = {
    // Memory: a 1 GiB region holds its own 1 GiB block.
    {"R0_Middle_1G", 0x41234567, 1, 0x40000000 | kNormalBlock},
    {"R0_LastByte_1G", 0x7fffffff, 1, 0x40000000 | kNormalBlock},
    // A 2 MiB region in a 1 GiB granule shared with others: 2 MiB block.
    {"R1_2M", 0x80005000, 2, 0x80000000 | kNormalBlock},
    {"R1_LastPage_2M", 0x801ff000, 2, 0x80000000 | kNormalBlock},
    // MMIO gap of 2 MiB between two regions: device, read/write, execute-never.
    {"Gap_2M_Device", 0x80300000, 2, 0x80200000 | kDeviceBlock},
    // A no-map region is still memory the host may touch: normal attributes.
    {"NoMap_2M_Normal", 0x80500000, 2, 0x80400000 | kNormalBlock},
    // The gap after R2: its 1 GiB granule holds regions, its 2 MiB one does not.
    {"GapAfterR2_2M", 0x80600000, 2, 0x80600000 | kDeviceBlock},
    {"Gap_1G_Device", 0xc0000000, 1, 0xc0000000 | kDeviceBlock},
    // The gap's last page sits in the 2 MiB granule R3 starts in: a page.
    {"GapPageBeforeUnalignedRegion", 0x100000000, 3, 0x100000000 | kDevicePage},
    // R3 is 2 MiB long but not 2 MiB aligned: no block fits anywhere in it.
    {"R3_First_Page", 0x100001000, 3, 0x100001000 | kNormalPage},
    {"R3_Middle_Page", 0x100123456, 3, 0x100123000 | kNormalPage},
    {"R3_Last_Page", 0x100200fff, 3, 0x100200000 | kNormalPage},
    {"GapPageAfterUnalignedRegion", 0x100201000, 3, 0x100201000 | kDevicePage},
    {"GapAfterR3_2M", 0x100400000, 2, 0x100400000 | kDeviceBlock},
    // A region smaller than any block: pages, so the host never re-faults forever.
    {"R4_ThreePages_First", 0x140000000, 3, 0x140000000 | kNormalPage},
    {"R4_ThreePages_Last", 0x140002abc, 3, 0x140002000 | kNormalPage},
    {"GapPageAfterSmallRegion", 0x140003000, 3, 0x140003000 | kDevicePage},
    {"GapAfterSmallRegion_2M", 0x140200000, 2, 0x140200000 | kDeviceBlock},
    // R5 is 1 GiB + 2 MiB: a 1 GiB block at its start, a 2 MiB block at its tail.
    {"R5_Start_1G", 0x180000000, 1, 0x180000000 | kNormalBlock},
    {"R5_Tail_2M", 0x1c0000000, 2, 0x1c0000000 | kNormalBlock},
    {"R5_LastPage_2M", 0x1c01ff000, 2, 0x1c0000000 | kNormalBlock},
    {"GapAfterR5_2M", 0x1c0200000, 2, 0x1c0200000 | kDeviceBlock},
    {"Gap_Beyond_1G", 0x200000000, 1, 0x200000000 | kDeviceBlock},
    // Both ends of the input range.
    {"Gap_Zero_1G", 0x0, 1, 0x0 | kDeviceBlock},
    {"Gap_BelowR0_1G", 0x3fffffff, 1, 0x0 | kDeviceBlock},
    {"Gap_LastPageOfIA_1G", 0xfffffff000, 1, 0xffc0000000 | kDeviceBlock},
};

INSTANTIATE_TEST_SUITE_P(Cases, AbortBlockTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<BlockCase>& i) { return std::string(i.param.name); });

TEST_F(AbortTest, BeyondTheInputRangeIsEinval) {
  const std::string before = snapshot(env);
  EXPECT_EQ(env.mp.host_stage2_idmap(u64{1} << 40), -kEINVAL);
  EXPECT_EQ(env.mp.host_stage2_idmap(~u64{0}), -kEINVAL);
  EXPECT_EQ(snapshot(env), before);
}

// A donated page turns its 1 GiB and 2 MiB granules into tables: a fault in
// the same 2 MiB gets a page, a fault elsewhere in the 1 GiB a 2 MiB block
// (never larger than the table that holds the entry), and the page itself
// is the hypervisor's: -EPERM, nothing mapped.
TEST_F(AbortTest, AnnotatedPageLimitsBlocksToTheTablesAroundIt) {
  const u64 p = 0x40205000;
  ASSERT_EQ(env.mp.host_donate_hyp(p >> desc::kPageShift, 1), 0);
  u32 l = 0;
  ASSERT_EQ(env.host_pte(p, &l), desc::make_owner(kOwnerHyp));
  ASSERT_EQ(l, 3u);

  const std::string before = snapshot(env, {.raw_host = true, .abort_stats = false});
  EXPECT_EQ(env.mp.host_stage2_idmap(p + 0x123), -kEPERM);
  EXPECT_EQ(env.mp.stats().host_abort_eperm, 1u);
  EXPECT_EQ(snapshot(env, {.raw_host = true, .abort_stats = false}), before);

  expect_map(p + kPage, 3, (p + kPage) | kNormalPage);      // right neighbour
  expect_map(p - kPage, 3, (p - kPage) | kNormalPage);      // left neighbour
  expect_map(0x403ff000, 3, 0x403ff000 | kNormalPage);      // same 2 MiB, far end
  expect_map(0x40400000, 2, 0x40400000 | kNormalBlock);     // next 2 MiB
  expect_map(0x401fffff, 2, 0x40000000 | kNormalBlock);     // previous 2 MiB
  expect_map(0x7fe00000, 2, 0x7fe00000 | kNormalBlock);     // end of the 1 GiB
  expect_map(0x180000000, 1, 0x180000000 | kNormalBlock);   // another 1 GiB: unaffected
  EXPECT_EQ(env.host_pte(p), desc::make_owner(kOwnerHyp));  // the annotation survived
}

// 512 donated pages, 2 MiB aligned, are one annotated level-2 entry: the
// neighbours still get 2 MiB blocks.
TEST_F(AbortTest, AnnotatedBlockNeighboursGet2MBlocks) {
  ASSERT_EQ(env.mp.host_donate_hyp(0x40400000 >> desc::kPageShift, 512), 0);
  u32 l = 0;
  ASSERT_EQ(env.host_pte(0x40500000, &l), desc::make_owner(kOwnerHyp));
  ASSERT_EQ(l, 2u);
  EXPECT_EQ(env.mp.host_stage2_idmap(0x40400000), -kEPERM);
  EXPECT_EQ(env.mp.host_stage2_idmap(0x405ff000), -kEPERM);
  expect_map(0x40600000, 2, 0x40600000 | kNormalBlock);
  expect_map(0x403ff000, 2, 0x40200000 | kNormalBlock);
  EXPECT_EQ(env.mp.stats().host_abort_eperm, 2u);
}

// Pages of other owners and pages the host already maps in any state.
TEST_F(AbortTest, OtherOwnersAreEpermMappedPagesAreEagain) {
  const u64 base = env.data_pfn();
  const int g = env.mp.guest_create();
  ASSERT_GE(g, int(kOwnerGuestFirst));
  ASSERT_EQ(env.mp.host_donate_guest(u32(g), base + 1, 0x10, 1), 0);
  ASSERT_EQ(env.mp.hyp_reserve(base + 2, 1), 0);
  ASSERT_EQ(env.mp.host_share_hyp(base + 3, 1), 0);
  ASSERT_EQ(env.mp.host_donate_guest(u32(g), base + 4, 0x11, 1), 0);
  ASSERT_EQ(env.mp.guest_share_host(u32(g), 0x11, 1), 0);
  const std::string before = snapshot(env, {.raw_host = true, .abort_stats = false});
  EXPECT_EQ(env.mp.host_stage2_idmap((base + 1) << desc::kPageShift), -kEPERM);  // guest's
  EXPECT_EQ(env.mp.host_stage2_idmap((base + 2) << desc::kPageShift), -kEPERM);  // hypervisor's own
  EXPECT_EQ(env.mp.host_stage2_idmap((base + 3) << desc::kPageShift), -kEAGAIN);  // shared: mapped
  EXPECT_EQ(env.mp.host_stage2_idmap((base + 4) << desc::kPageShift), -kEAGAIN);  // borrowed: mapped
  EXPECT_EQ(snapshot(env, {.raw_host = true, .abort_stats = false}), before);
  const MemProtectStats s = env.mp.stats();
  EXPECT_EQ(s.host_abort_eperm, 2u);
  EXPECT_EQ(s.host_abort_eagain, 2u);
  for (u32 i = 0; i < 4; ++i) EXPECT_EQ(s.host_aborts[i], 0u);
}

// Existing MMIO page tables: a later fault in the same tables gets the
// largest block inside the entry it lands on, memory or MMIO alike.
TEST_F(AbortTest, FaultsInsideExistingTablesOfMixedRegions) {
  expect_map(0x100000000, 3, 0x100000000 | kDevicePage);  // creates L2 + L3 tables
  expect_map(0x100002000, 3, 0x100002000 | kNormalPage);  // R3, same level-3 table
  expect_map(0x100400000, 2, 0x100400000 | kDeviceBlock);  // same level-2 table
  expect_map(0x13fe00000, 2, 0x13fe00000 | kDeviceBlock);  // last 2 MiB of that 1 GiB
  const MemProtectStats s = env.mp.stats();
  EXPECT_EQ(s.host_aborts[1], 0u);
  EXPECT_EQ(s.host_aborts[2], 2u);
  EXPECT_EQ(s.host_aborts[3], 2u);
}

// Statistics by level over a sequence of different blocks.
TEST_F(AbortTest, StatisticsCountByLevel) {
  for (u64 a : {0x41000000ull, 0x80000000ull, 0x80200000ull, 0x100001000ull, 0x140001000ull, 0xc0000000ull})
    ASSERT_EQ(env.mp.host_stage2_idmap(a), 0) << std::hex << a;
  EXPECT_EQ(env.mp.host_stage2_idmap(0x41000000), -kEAGAIN);
  const MemProtectStats s = env.mp.stats();
  EXPECT_EQ(s.host_aborts[0], 0u);
  EXPECT_EQ(s.host_aborts[1], 2u);  // R0, the 1 GiB gap
  EXPECT_EQ(s.host_aborts[2], 2u);  // R1, the 2 MiB gap
  EXPECT_EQ(s.host_aborts[3], 2u);  // R3, R4
  EXPECT_EQ(s.host_abort_eagain, 1u);
  EXPECT_EQ(s.host_abort_eperm, 0u);
  EXPECT_EQ(s.host_abort_enomem, 0u);
}

// Host memory stays unmapped-but-owned until touched, and the abort path
// never reads or writes the memory it maps: R3-R5 lie outside the sim arena,
// where any access would abort the test.
TEST_F(AbortTest, MappingAHugeRegionNeverTouchesItsMemory) {
  const u64 before = env.plat.pages_in_use();
  expect_map(0x180000000, 1, 0x180000000 | kNormalBlock);
  EXPECT_EQ(env.plat.pages_in_use(), before);  // a root entry: no table page
  EXPECT_EQ(env.plat.dcache_op_count(), 0u);   // the host's own memory: no cache maintenance
  EXPECT_EQ(env.plat.icache_op_count(), 0u);
}

// A start level without blocks (level 0): the 512 GiB granule of an empty
// root entry is never used, the largest block is 1 GiB.
class AbortLevel0Test : public AbortTest {
 protected:
  static EnvConfig cfg() {
    EnvConfig c;
    c.regions = {{0x40000000, k1G, 0}};
    c.host_ia_bits = 44;
    c.host_start_level = 0;
    return c;
  }
  AbortLevel0Test() : AbortTest(cfg()) {}
};

TEST_F(AbortLevel0Test, Level0NeverHoldsABlock) {
  expect_map(0x40001000, 1, 0x40000000 | kNormalBlock);
  expect_map(u64{1} << 40, 1, (u64{1} << 40) | kDeviceBlock);  // a whole 512 GiB of MMIO around it
  expect_map((u64{1} << 44) - 1, 1, ((u64{1} << 44) - k1G) | kDeviceBlock);
  EXPECT_EQ(env.mp.host_stage2_idmap(u64{1} << 44), -kEINVAL);
  EXPECT_EQ(env.mp.stats().host_aborts[0], 0u);
}

// A start level of 2 (34-bit IA, 16 concatenated root pages): no entry
// spans more than 2 MiB, so a 1 GiB region still gets 2 MiB blocks.
class AbortLevel2Test : public AbortTest {
 protected:
  static EnvConfig cfg() {
    EnvConfig c;
    c.host_ia_bits = 34;
    c.host_start_level = 2;
    return c;
  }
  AbortLevel2Test() : AbortTest(cfg()) {}
};

TEST_F(AbortLevel2Test, RootEntriesCapBlocksAt2M) {
  EXPECT_EQ(env.mp.host_pgt().root_order(), 4u);
  expect_map(0x41234567, 2, 0x41200000 | kNormalBlock);
  expect_map(0x3ffff000, 2, 0x3fe00000 | kDeviceBlock);
  expect_map((u64{1} << 34) - 1, 2, ((u64{1} << 34) - k2M) | kDeviceBlock);
  EXPECT_EQ(env.mp.host_stage2_idmap(u64{1} << 34), -kEINVAL);
  EXPECT_EQ(env.mp.stats().host_aborts[1], 0u);
}

}  // namespace
}  // namespace pkvm::test
