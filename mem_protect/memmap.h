// SPDX-License-Identifier: Apache-2.0
// The physical memory map: a sorted, bounded array of memory regions, and the
// lookup the host abort path uses to find the memory region or MMIO gap that
// encloses an address.
#pragma once

#include "pgtable/types.h"

namespace pkvm {

/// A half-open range of addresses [start, end).
struct Range {
  u64 start;
  u64 end;
  /// True when `o` lies wholly inside this range.
  constexpr bool contains(const Range& o) const { return start <= o.start && o.end <= end; }
  /// True when `addr` lies inside this range.
  constexpr bool contains(u64 addr) const { return start <= addr && addr < end; }
  constexpr u64 size() const { return end - start; }
};
static_assert(Range{0, 0x2000}.contains(Range{0x1000, 0x2000}) && !Range{0, 0x2000}.contains(Range{0x1000, 0x3000}));

/// Region flags.
enum RegionFlags : u32 {
  /// Memory the host may access but not give away (firmware tables, the DTB's
  /// no-map reserved regions): transitions refuse it with -EINVAL.
  kRegionNoMap = 1u << 0,
};

/// One physical memory region.
struct MemRegion {
  u64 base;
  u64 size;
  u32 flags;
};

/// What an address falls into.
struct MemLookup {
  Range range;               ///< The enclosing region, or the MMIO gap between regions.
  const MemRegion* region;   ///< The region, or nullptr for an MMIO gap.
};

/// A sorted array of at most kMaxRegions non-overlapping regions.
class MemMap {
 public:
  static constexpr u32 kMaxRegions = 64;  // PageMeta::region holds 1 + an index

  /// Adds a region. -EINVAL for an empty, overflowing or page-misaligned
  /// region, -EEXIST when it overlaps one already present, -ENOMEM when full.
  int add(u64 base, u64 size, u32 flags = 0);
  /// Finds the region containing `addr` or, when none does, the MMIO gap
  /// around it, bounded by the neighbouring regions and by [0, limit).
  MemLookup find(u64 addr, u64 limit) const;
  /// True when [addr, addr + size) lies in one region; sets `*region`.
  bool in_one_region(u64 addr, u64 size, const MemRegion** region) const;
  /// Number of regions.
  u32 size() const { return nr_; }
  /// Region `i` in address order.
  const MemRegion& operator[](u32 i) const { return regions_[i]; }
  /// Removes every region.
  void clear() { nr_ = 0; }

 private:
  MemRegion regions_[kMaxRegions] = {};
  u32 nr_ = 0;
};

}  // namespace pkvm
