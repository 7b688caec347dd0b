// SPDX-License-Identifier: Apache-2.0
#include "mem_protect/memmap.h"

#include "pgtable/desc.h"

namespace pkvm {

int MemMap::add(u64 base, u64 size, u32 flags) {
  if (size == 0 || base + size < base) return -kEINVAL;
  if ((base | size) & (desc::kPageSize - 1)) return -kEINVAL;
  if (nr_ == kMaxRegions) return -kENOMEM;
  u32 pos = 0;
  while (pos < nr_ && regions_[pos].base < base) ++pos;
  if (pos > 0 && regions_[pos - 1].base + regions_[pos - 1].size > base) return -kEEXIST;
  if (pos < nr_ && base + size > regions_[pos].base) return -kEEXIST;
  for (u32 i = nr_; i > pos; --i) regions_[i] = regions_[i - 1];
  regions_[pos] = MemRegion{base, size, flags};
  ++nr_;
  return 0;
}

MemLookup MemMap::find(u64 addr, u64 limit) const {
  // Binary search for the last region starting at or below addr.
  u32 lo = 0, hi = nr_;
  while (lo < hi) {
    u32 mid = lo + (hi - lo) / 2;
    if (regions_[mid].base <= addr)
      lo = mid + 1;
    else
      hi = mid;
  }
  // regions_[lo - 1] is the candidate; regions_[lo] the next one up.
  if (lo > 0) {
    const MemRegion& r = regions_[lo - 1];
    if (addr < r.base + r.size) return MemLookup{Range{r.base, r.base + r.size}, &r};
  }
  const u64 gap_start = lo > 0 ? regions_[lo - 1].base + regions_[lo - 1].size : 0;
  const u64 gap_end = lo < nr_ ? regions_[lo].base : limit;
  return MemLookup{Range{gap_start, gap_end < limit ? gap_end : limit}, nullptr};
}

bool MemMap::in_one_region(u64 addr, u64 size, const MemRegion** region) const {
  if (size == 0 || addr + size < addr) return false;
  MemLookup l = find(addr, ~u64{0});
  if (!l.region || !l.range.contains(Range{addr, addr + size})) return false;
  if (region) *region = l.region;
  return true;
}

}  // namespace pkvm
