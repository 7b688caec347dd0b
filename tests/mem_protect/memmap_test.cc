// SPDX-License-Identifier: Apache-2.0
// MemMap: sorted insertion with its refusals, the binary search the host
// abort path uses (regions, gaps, both ends of the address space) and
// in_one_region. Expected ranges are literals.
#include "mem_protect/memmap.h"

#include <gtest/gtest.h>

namespace pkvm {
namespace {

constexpr u64 kLimit = u64{1} << 40;

MemRegion at(const MemMap& m, u32 i) { return m[i]; }

void expect_lookup(const MemMap& m, u64 addr, u64 start, u64 end, bool region, u64 limit = kLimit) {
  const MemLookup l = m.find(addr, limit);
  EXPECT_EQ(l.range.start, start) << "addr 0x" << std::hex << addr;
  EXPECT_EQ(l.range.end, end) << "addr 0x" << std::hex << addr;
  EXPECT_EQ(l.region != nullptr, region) << "addr 0x" << std::hex << addr;
  if (region && l.region) {
    EXPECT_EQ(l.region->base, start);
    EXPECT_EQ(l.region->base + l.region->size, end);
  }
}

// Three regions with gaps: [0x1000_0000, +0x10_0000), [0x4000_0000, +1G),
// [0x8000_0000, +2M), inserted out of order.
MemMap three() {
  MemMap m;
  EXPECT_EQ(m.add(0x80000000, 0x200000), 0);
  EXPECT_EQ(m.add(0x10000000, 0x100000, kRegionNoMap), 0);
  EXPECT_EQ(m.add(0x40000000, 0x40000000), 0);
  return m;
}

TEST(MemMapAdd, SortedInsertKeepsAddressOrderAndFlags) {
  const MemMap m = three();
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(at(m, 0).base, 0x10000000u);
  EXPECT_EQ(at(m, 0).size, 0x100000u);
  EXPECT_EQ(at(m, 0).flags, u32(kRegionNoMap));
  EXPECT_EQ(at(m, 1).base, 0x40000000u);
  EXPECT_EQ(at(m, 1).flags, 0u);
  EXPECT_EQ(at(m, 2).base, 0x80000000u);
  EXPECT_EQ(at(m, 2).size, 0x200000u);
}

TEST(MemMapAdd, AdjacentRegionsAreAccepted) {
  MemMap m = three();
  EXPECT_EQ(m.add(0x80000000, 0x1000), -kEEXIST);  // taken
  EXPECT_EQ(m.add(0x10100000, 0x1000), 0);  // right after the first region
  EXPECT_EQ(m.add(0x3ffff000, 0x1000), 0);  // right before the second
  EXPECT_EQ(m.size(), 5u);
  EXPECT_EQ(at(m, 1).base, 0x10100000u);
  EXPECT_EQ(at(m, 2).base, 0x3ffff000u);
}

TEST(MemMapAdd, OverlapIsEexistAndChangesNothing) {
  MemMap m = three();
  const struct {
    u64 base, size;
  } bad[] = {
      {0x40000000, 0x40000000},  // identical
      {0x3ffff000, 0x2000},      // overlaps the start of a region
      {0x7ffff000, 0x2000},      // overlaps the end of a region
      {0x50000000, 0x1000},      // inside a region
      {0x0ffff000, 0x200000},    // contains a whole region
      {0x10000000, 0x1000},      // same base, smaller
      {0x801ff000, 0x1000},      // last page of the last region
  };
  for (const auto& b : bad) EXPECT_EQ(m.add(b.base, b.size), -kEEXIST) << std::hex << b.base;
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(at(m, 1).base, 0x40000000u);
}

TEST(MemMapAdd, EmptyMisalignedSubPageOrOverflowingIsEinval) {
  MemMap m;
  EXPECT_EQ(m.add(0x1000, 0), -kEINVAL);
  EXPECT_EQ(m.add(0x1800, 0x1000), -kEINVAL);   // base not page aligned
  EXPECT_EQ(m.add(0x1000, 0x1800), -kEINVAL);   // size not a page multiple
  EXPECT_EQ(m.add(0x1000, 0x800), -kEINVAL);    // a sub-page region
  EXPECT_EQ(m.add(0xfffffffffffff000ull, 0x2000), -kEINVAL);  // wraps
  EXPECT_EQ(m.add(0xfffffffffffff000ull, 0x1000), -kEINVAL);  // end == 2^64 wraps to 0
  EXPECT_EQ(m.size(), 0u);
  EXPECT_EQ(m.add(0xffffffffffffe000ull, 0x1000), 0);  // the highest page that has an end
}

TEST(MemMapAdd, FullIsEnomem) {
  MemMap m;
  for (u32 i = 0; i < MemMap::kMaxRegions; ++i) ASSERT_EQ(m.add(u64(i) * 0x200000 + 0x100000, 0x1000), 0) << i;
  EXPECT_EQ(m.add(0x7f000000, 0x1000), -kENOMEM);
  EXPECT_EQ(m.size(), MemMap::kMaxRegions);
  m.clear();
  EXPECT_EQ(m.size(), 0u);
  EXPECT_EQ(m.add(0x7f000000, 0x1000), 0);
}

TEST(MemMapFind, RegionsAtTheirBoundaries) {
  const MemMap m = three();
  expect_lookup(m, 0x10000000, 0x10000000, 0x10100000, true);  // first byte
  expect_lookup(m, 0x100fffff, 0x10000000, 0x10100000, true);  // last byte
  expect_lookup(m, 0x40000000, 0x40000000, 0x80000000, true);
  expect_lookup(m, 0x5abcdef1, 0x40000000, 0x80000000, true);
  expect_lookup(m, 0x7fffffff, 0x40000000, 0x80000000, true);
  expect_lookup(m, 0x80000000, 0x80000000, 0x80200000, true);  // adjacent to the gap before
  expect_lookup(m, 0x801fffff, 0x80000000, 0x80200000, true);
}

TEST(MemMapFind, GapsBetweenBeforeFirstAndAfterLast) {
  const MemMap m = three();
  expect_lookup(m, 0, 0, 0x10000000, false);                   // before the first region
  expect_lookup(m, 0x0fffffff, 0, 0x10000000, false);
  expect_lookup(m, 0x10100000, 0x10100000, 0x40000000, false);  // region end is the gap start
  expect_lookup(m, 0x3fffffff, 0x10100000, 0x40000000, false);
  expect_lookup(m, 0x80200000, 0x80200000, kLimit, false);      // after the last, up to the limit
  expect_lookup(m, kLimit - 1, 0x80200000, kLimit, false);
  // The limit bounds the last gap only.
  expect_lookup(m, 0x90000000, 0x80200000, 0xa0000000, false, 0xa0000000);
  expect_lookup(m, 0x20000000, 0x10100000, 0x40000000, false, 0xa0000000);
}

TEST(MemMapFind, EmptyMapIsOneGap) {
  const MemMap m;
  expect_lookup(m, 0, 0, kLimit, false);
  expect_lookup(m, 0x123456789, 0, kLimit, false);
}

// The binary search against a linear reference, over every boundary of a
// full map of irregular regions.
TEST(MemMapFind, BinarySearchMatchesLinearScanOnAFullMap) {
  MemMap m;
  u64 base = 0x1000;
  for (u32 i = 0; i < MemMap::kMaxRegions; ++i) {
    const u64 size = u64((i * 7) % 5 + 1) * 0x1000;
    ASSERT_EQ(m.add(base, size), 0);
    base += size + u64(i % 3) * 0x1000;  // every third pair is adjacent (no gap)
  }
  for (u32 i = 0; i < m.size(); ++i) {
    const MemRegion& r = m[i];
    for (u64 a : {r.base, r.base + 0x123, r.base + r.size - 1, r.base + r.size}) {
      // Linear reference.
      u64 start = 0, end = kLimit;
      bool in = false;
      for (u32 j = 0; j < m.size(); ++j) {
        const u64 b = m[j].base, e = m[j].base + m[j].size;
        if (a >= b && a < e) {
          start = b, end = e, in = true;
          break;
        }
        if (e <= a) start = e;
        if (b > a) {
          end = b;
          break;
        }
      }
      expect_lookup(m, a, start, end, in);
    }
  }
}

TEST(MemMapInOneRegion, WholeInsideOnly) {
  const MemMap m = three();
  const MemRegion* r = nullptr;
  EXPECT_TRUE(m.in_one_region(0x40000000, 0x40000000, &r));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->base, 0x40000000u);
  r = nullptr;
  EXPECT_TRUE(m.in_one_region(0x7ffff000, 0x1000, &r));
  EXPECT_EQ(r->base, 0x40000000u);
  EXPECT_TRUE(m.in_one_region(0x10000000, 0x1000, nullptr));
  EXPECT_FALSE(m.in_one_region(0x7ffff000, 0x2000, &r));     // runs into the next region
  EXPECT_FALSE(m.in_one_region(0x3ffff000, 0x2000, &r));     // starts in a gap
  EXPECT_FALSE(m.in_one_region(0x20000000, 0x1000, &r));     // gap
  EXPECT_FALSE(m.in_one_region(0x801ff000, 0x2000, &r));     // runs off the last region
  EXPECT_FALSE(m.in_one_region(0x40000000, 0, &r));          // empty
  EXPECT_FALSE(m.in_one_region(0x40001000, ~u64{0}, &r));    // wraps
}

TEST(MemMapInOneRegion, AdjacentRegionsAreStillTwo) {
  MemMap m;
  ASSERT_EQ(m.add(0x40000000, 0x200000), 0);
  ASSERT_EQ(m.add(0x40200000, 0x200000), 0);
  EXPECT_TRUE(m.in_one_region(0x401ff000, 0x1000, nullptr));
  EXPECT_FALSE(m.in_one_region(0x401ff000, 0x2000, nullptr));
}

}  // namespace
}  // namespace pkvm
