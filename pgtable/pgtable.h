// SPDX-License-Identifier: Apache-2.0
// A VMSAv8-64 page-table library (4 KiB granule) for the EL2 stage-1 and for
// stage-2 tables. Freestanding: no heap, no exceptions; every page and every
// maintenance operation comes from the Platform.
#pragma once

#include "pgtable/desc.h"
#include "pgtable/percpu.h"
#include "pgtable/platform.h"
#include "pgtable/types.h"

namespace pkvm {

/// Which translation regime a table serves; selects the leaf encoding and the
/// invalidation instructions.
enum class Format : u8 { kStage2, kHypStage1 };

/// Mapping permissions and attributes, independent of the format.
enum Prot : u32 {
  kProtR = 1u << 0,
  kProtW = 1u << 1,
  kProtX = 1u << 2,
  kProtDevice = 1u << 3,  ///< Device-nGnRE instead of Normal write-back.
  kProtRW = kProtR | kProtW,
  kProtRWX = kProtR | kProtW | kProtX,
};
/// Software bits [58:55] of a leaf travel in prot bits [7:4].
inline constexpr u32 kProtSwShift = 4;
inline constexpr u32 kProtSwMask = 0xfu << kProtSwShift;
/// Encodes a 4-bit software value into prot.
constexpr u32 prot_sw(u32 sw) { return (sw & 0xf) << kProtSwShift; }

/// Walker and operation flags.
enum WalkFlags : u32 {
  kWalkLeaf = 1u << 0,       ///< Visit leaves (blocks, pages and invalid entries).
  kWalkTablePre = 1u << 1,   ///< Visit table entries before descending.
  kWalkTablePost = 1u << 2,  ///< Visit table entries after descending.
  /// Other walkers may run on the table at the same time: every descriptor
  /// update is a CAS and nothing is freed.
  kWalkShared = 1u << 3,
  /// The walk resolves a fault: any non-zero callback result ends it, and the
  /// faulting context simply retries the access.
  kWalkHandleFault = 1u << 4,
  /// Map only: the caller keeps the data cache coherent itself (e.g. an
  /// identity map of memory the owner already uses cacheably).
  kMapSkipDcache = 1u << 8,
  /// Map only: no instruction-cache invalidation for executable mappings.
  kMapSkipIcache = 1u << 9,
};

class Pgtable;

/// What a walker callback sees for one entry.
struct VisitCtx {
  Pgtable* pgt;
  u64* ptep;   ///< The entry (EL2 virtual address of the descriptor).
  u64 old;     ///< Value read just before the callback.
  u64 addr;    ///< Input address the walk is at (aligned down to a page).
  u64 end;     ///< End of the walked range (exclusive).
  u32 level;   ///< Level of the entry.
  u32 flags;   ///< The walker's flags.
  void* arg;   ///< The walker's argument.
};

/// Callback of a walk; `visit` is one of kWalkLeaf / kWalkTablePre / kWalkTablePost.
using WalkerFn = int (*)(const VisitCtx& ctx, u32 visit);

/// A depth-first walk over [addr, addr + size).
struct Walker {
  WalkerFn cb;
  void* arg;
  u32 flags;
};

/// Counters kept per table; updated atomically, only when an update succeeded.
struct PgtableStats {
  u64 table_pages;   ///< Table pages in use, roots included.
  u64 leaf_writes;   ///< Leaf descriptors installed or changed.
  u64 breaks;        ///< Break-before-make breaks of a live entry.
  u64 bbm2_skips;    ///< Breaks skipped under FEAT_BBM level 2.
  u64 tlbis;         ///< TLB invalidations issued.
  u64 direct_pages;  ///< One-page maps and unmaps that went straight down (a complete path).
};

/// Architectural limits of (input size, start level) for the 4 KiB granule.
/// Stage 2 may concatenate up to 16 tables at the start level.
constexpr bool valid_geometry(Format f, u32 ia_bits, u32 start_level) {
  if (start_level > 2 || ia_bits > 48) return false;
  const u32 lo[3] = {40, 31, 25};
  const u32 hi_s1[3] = {48, 39, 30};
  const u32 hi_s2[3] = {48, 43, 34};
  const u32 hi = f == Format::kStage2 ? hi_s2[start_level] : hi_s1[start_level];
  return ia_bits >= lo[start_level] && ia_bits <= hi;
}
static_assert(valid_geometry(Format::kStage2, 40, 1) && !valid_geometry(Format::kHypStage1, 40, 1));
static_assert(valid_geometry(Format::kStage2, 48, 0) && !valid_geometry(Format::kStage2, 44, 1));
static_assert(valid_geometry(Format::kStage2, 32, 2) && !valid_geometry(Format::kStage2, 35, 2));

/// VTCR_EL2 for a stage-2 of this geometry: T0SZ, SL0, inner-shareable
/// write-back walks, 4 KiB granule, and PS for `pa_bits` of output.
constexpr u64 vtcr_el2(u32 ia_bits, u32 start_level, u32 pa_bits) {
  u64 ps = pa_bits <= 32 ? 0 : pa_bits <= 36 ? 1 : pa_bits <= 40 ? 2 : pa_bits <= 42 ? 3 : pa_bits <= 44 ? 4 : 5;
  return u64(64 - ia_bits) | (u64(2 - start_level) << 6) | (u64{1} << 8) | (u64{1} << 10) |
         (u64{3} << 12) | (u64{0} << 14) | (ps << 16) | (u64{1} << 31);
}
static_assert(vtcr_el2(40, 1, 40) == (24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (2ull << 16) | (1ull << 31)));

/// Worst-case number of new table pages a map of [addr, addr + size) to
/// `phys` (or an annotation of it, when `annotate`: any level may then hold
/// a block) may need, block splits included. Callers reserve this many
/// before committing.
u64 max_new_tables_range(u32 start_level, u64 addr, u64 size, u64 phys, bool annotate);
/// max_new_tables_range, inline for one aligned page (the common
/// transition): one table per level below the root.
inline u64 max_new_tables(u32 start_level, u64 addr, u64 size, u64 phys, bool annotate) {
  if (size != 0 && size <= desc::kPageSize && (addr & (desc::kPageSize - 1)) == 0) return desc::kLastLevel - start_level;
  return max_new_tables_range(start_level, addr, size, phys, annotate);
}

/// A page table rooted in one (or, for stage 2, up to 16 concatenated) pages.
class Pgtable {
 public:
  /// Allocates the root. Returns -EINVAL for a geometry the architecture does
  /// not allow and -ENOMEM when the root cannot be allocated.
  int init(Format format, u32 ia_bits, u32 start_level, u32 vmid, Platform* platform);
  /// Frees every table page, root included. No walker may run concurrently.
  void destroy();

  /// Walks [addr, addr + size) depth-first. Returns -ERANGE when the range
  /// leaves the input address space, else the walk's result (see docs/pgtable.md).
  int walk(u64 addr, u64 size, const Walker& walker);
  /// Reads the leaf (or invalid entry) translating `addr` and its level.
  int get_leaf(u64 addr, u64* pte, u32* level);

  /// Stage 2: maps [ipa, ipa + size) to [pa, ...) using the largest blocks
  /// that alignment allows, splitting blocks and replacing tables as needed.
  /// An identical existing mapping is left alone and reported as -EAGAIN to
  /// shared fault-handler walks; a mapping that differs only in permissions is
  /// updated in place without break-before-make.
  int stage2_map(Ipa ipa, u64 size, PhysAddr pa, u32 prot, u32 flags = 0);
  /// Stage 2: removes mappings and annotations from [ipa, ipa + size),
  /// splitting blocks that straddle the range and freeing the tables it
  /// empties (a table already empty before is left to
  /// stage2_free_empty_tables).
  int stage2_unmap(Ipa ipa, u64 size);
  /// Stage 2: frees the empty tables under [ipa, ipa + size) and changes no
  /// other entry: drops what a failed shared walk installed on its way
  /// (shared walkers never free) without touching entries that others may
  /// have written since. Exclusive: needs the caller's lock.
  int stage2_free_empty_tables(Ipa ipa, u64 size);
  /// Stage 2: replaces [ipa, ipa + size) by invalid entries annotated with
  /// `owner_id` (0 clears the annotation), as blocks where alignment allows.
  int stage2_set_owner(Ipa ipa, u64 size, u32 owner_id);
  /// Stage 2: adds the permissions in `prot` to the valid leaf at `ipa`.
  /// Returns -EAGAIN when no valid leaf is there (the access will fault again).
  int stage2_relax_perms(Ipa ipa, u32 prot, u32 flags = kWalkShared | kWalkHandleFault);
  /// Stage 2: removes write permission from every valid leaf in the range.
  int stage2_wrprotect(Ipa ipa, u64 size);
  /// Stage 2: sets the access flag of the valid leaf at `ipa`; returns its old
  /// value in `*old` when non-null. -EAGAIN when no valid leaf is there.
  int stage2_mkyoung(Ipa ipa, u64* old = nullptr);
  /// Stage 2: true when a valid leaf in the range has its access flag set;
  /// clears the flags when `mkold`. Aging hint: no invalidation is issued.
  bool stage2_test_clear_young(Ipa ipa, u64 size, bool mkold);

  /// EL2 stage 1: maps [va, va + size) to [pa, ...) with `prot`.
  int hyp_map(Va va, u64 size, PhysAddr pa, u32 prot, u32 flags = 0);
  /// EL2 stage 1: unmaps [va, va + size), freeing the tables it empties.
  int hyp_unmap(Va va, u64 size);

  /// Selects FEAT_BBM level-2 behaviour: block<->table replacements of equal
  /// output skip the break and invalidate after the make.
  void set_bbm2(bool on) { bbm2_ = on; }
  bool bbm2() const { return bbm2_; }

  Format format() const { return format_; }
  u32 ia_bits() const { return ia_bits_; }
  u32 start_level() const { return start_level_; }
  u32 vmid() const { return vmid_; }
  /// Physical address of the root, for VTTBR_EL2 / TTBR0_EL2.
  PhysAddr root_pa() const { return root_pa_; }
  /// log2 of the number of concatenated root pages.
  u32 root_order() const { return root_order_; }
  /// Number of entries in the (possibly concatenated) root.
  u32 root_entries() const { return root_entries_; }
  /// The root's entries, as the library accesses them.
  u64* root() const { return root_; }
  Platform* platform() const { return platform_; }
  /// A snapshot of the counters.
  PgtableStats stats() const;

  // Internal building blocks, public so the walker callbacks in pgtable.cc can
  // use them; not part of the API.
  struct Internal;

 private:
  friend struct Internal;
  Platform* platform_ = nullptr;
  u64* root_ = nullptr;
  PhysAddr root_pa_;
  Format format_ = Format::kStage2;
  u32 ia_bits_ = 0;
  u32 start_level_ = 0;
  u32 root_order_ = 0;
  u32 root_entries_ = 0;
  u32 vmid_ = 0;
  bool bbm2_ = false;
  // Per CPU: concurrent shared walkers would otherwise bounce one line.
  PgtableStats& cpu_stats() { return stats_.cpu(platform_->cpu_id()); }
  // Where a walk with `flags` adds its totals: exclusive walkers run alone
  // under the table's lock, so they use the locked copy and skip the CPU
  // lookup; shared walkers use their CPU's.
  PgtableStats& walk_stats(u32 flags) { return (flags & kWalkShared) ? cpu_stats() : stats_.locked(); }
  PerCpuCounters<PgtableStats> stats_;
};

/// The leaf attribute bits `prot` encodes to in `format` (AF and SH set).
constexpr u64 leaf_attrs_for(Format format, u32 prot) {
  using namespace desc;
  u64 a = kAf | kShInner | (u64(prot & kProtSwMask) >> kProtSwShift << kSwShift);
  if (format == Format::kStage2) {
    a |= (prot & kProtDevice) ? kS2MemAttrDevice : kS2MemAttrNormal;
    if (prot & kProtR) a |= kS2ApR;
    if (prot & kProtW) a |= kS2ApW;
    if (!(prot & kProtX) || (prot & kProtDevice)) a |= kS2Xn;
  } else {
    a |= u64((prot & kProtDevice) ? kMairIdxDevice : kMairIdxNormal) << kS1AttrIdxShift;
    a |= kS1ApRes1;
    if (!(prot & kProtW)) a |= kS1ApRo;
    if (!(prot & kProtX) || (prot & kProtDevice)) a |= kS1Xn;
  }
  return a;
}

/// The prot a valid leaf encodes (inverse of leaf_attrs_for for R/W/X/device/sw).
constexpr u32 prot_of_leaf(Format format, u64 pte) {
  using namespace desc;
  u32 prot = prot_sw(sw_bits(pte));
  if (format == Format::kStage2) {
    if (pte & kS2ApR) prot |= kProtR;
    if (pte & kS2ApW) prot |= kProtW;
    if (!(pte & kS2Xn)) prot |= kProtX;
    if ((pte & kS2MemAttrMask) == kS2MemAttrDevice) prot |= kProtDevice;
  } else {
    prot |= kProtR;
    if (!(pte & kS1ApRo)) prot |= kProtW;
    if (!(pte & kS1Xn)) prot |= kProtX;
    if (((pte & kS1AttrIdxMask) >> kS1AttrIdxShift) == kMairIdxDevice) prot |= kProtDevice;
  }
  return prot;
}

static_assert(leaf_attrs_for(Format::kStage2, kProtRW) ==
              (desc::kAf | desc::kShInner | desc::kS2MemAttrNormal | desc::kS2ApR | desc::kS2ApW | desc::kS2Xn));
static_assert(leaf_attrs_for(Format::kHypStage1, kProtR) ==
              (desc::kAf | desc::kShInner | desc::kS1ApRes1 | desc::kS1ApRo | desc::kS1Xn));
static_assert(prot_of_leaf(Format::kStage2, leaf_attrs_for(Format::kStage2, kProtRWX | prot_sw(2))) ==
              (kProtRWX | prot_sw(2)));
static_assert(prot_of_leaf(Format::kHypStage1, leaf_attrs_for(Format::kHypStage1, kProtRW | kProtDevice)) ==
              (kProtRW | kProtDevice));


}  // namespace pkvm
