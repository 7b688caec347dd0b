// SPDX-License-Identifier: Apache-2.0
// VMSAv8-64 descriptor encodings for the 4 KiB granule: stage-2 and EL2
// stage-1 (single VA range, HCR_EL2.E2H == 0). Every field position is checked
// against the Arm ARM (DDI 0487, D8.3 "Translation table descriptor formats").
#pragma once

#include "pgtable/types.h"

namespace pkvm::desc {

inline constexpr u32 kPageShift = 12;
inline constexpr u64 kPageSize = u64{1} << kPageShift;
inline constexpr u32 kBitsPerLevel = 9;
inline constexpr u32 kPtrsPerTable = 1u << kBitsPerLevel;
inline constexpr u32 kMaxLevels = 4;  // levels 0..3
inline constexpr u32 kLastLevel = 3;
/// Output addresses are 48 bits (no FEAT_LPA): OA[47:12] in bits [47:12].
inline constexpr u32 kOaBits = 48;

constexpr u64 bit(u32 n) { return u64{1} << n; }
constexpr u64 genmask(u32 hi, u32 lo) { return (~u64{0} >> (63 - hi)) & (~u64{0} << lo); }

/// log2 of the size mapped by one entry at `level`.
constexpr u32 level_shift(u32 level) { return kPageShift + kBitsPerLevel * (kLastLevel - level); }
/// Bytes mapped by one entry at `level` (4 KiB at 3, 2 MiB at 2, 1 GiB at 1, 512 GiB at 0).
constexpr u64 granule_size(u32 level) { return u64{1} << level_shift(level); }
/// The 4 KiB granule allows block descriptors at levels 1 and 2 (page at 3).
constexpr bool level_supports_block(u32 level) { return level >= 1 && level <= kLastLevel; }

static_assert(granule_size(3) == 4096);
static_assert(granule_size(2) == 2ull << 20);
static_assert(granule_size(1) == 1ull << 30);
static_assert(granule_size(0) == 512ull << 30);
static_assert(!level_supports_block(0) && level_supports_block(1));

// --- Common bits -----------------------------------------------------------
inline constexpr u64 kValid = bit(0);
/// Bit 1: 1 = table (levels 0-2) or page (level 3); 0 = block (levels 1-2).
inline constexpr u64 kTypeTable = bit(1);
inline constexpr u64 kTypePage = bit(1);
inline constexpr u64 kOaMask = genmask(47, 12);
inline constexpr u64 kAf = bit(10);
inline constexpr u64 kShShift = 8;
inline constexpr u64 kShMask = genmask(9, 8);
inline constexpr u64 kShInner = u64{3} << kShShift;
inline constexpr u64 kContiguous = bit(52);
/// Software-reserved bits [58:55] of block/page descriptors (ignored by hardware).
inline constexpr u32 kSwShift = 55;
inline constexpr u64 kSwMask = genmask(58, 55);

// --- Stage-2 leaf attributes (D8.3.2) --------------------------------------
inline constexpr u32 kS2MemAttrShift = 2;
inline constexpr u64 kS2MemAttrMask = genmask(5, 2);
/// MemAttr[3:0] with FWB off: Normal, Inner+Outer Write-Back Cacheable.
inline constexpr u64 kS2MemAttrNormal = u64{0xf} << kS2MemAttrShift;
/// MemAttr[3:0] with FWB off: Device-nGnRE.
inline constexpr u64 kS2MemAttrDevice = u64{0x1} << kS2MemAttrShift;
inline constexpr u64 kS2ApR = bit(6);  // S2AP[0]: read
inline constexpr u64 kS2ApW = bit(7);  // S2AP[1]: write
/// XN[1:0] at [54:53]; without FEAT_XNX only bit 54 is used (bit 53 RES0).
inline constexpr u64 kS2Xn = bit(54);
inline constexpr u64 kS2PermMask = kS2ApR | kS2ApW | kS2Xn;

// --- EL2 stage-1 leaf attributes (D8.3.2, single privilege level) ------------
inline constexpr u32 kS1AttrIdxShift = 2;
inline constexpr u64 kS1AttrIdxMask = genmask(4, 2);
/// AP[1] is RES1 in the EL2 single-range regime; AP[2] selects read-only.
inline constexpr u64 kS1ApRes1 = bit(6);
inline constexpr u64 kS1ApRo = bit(7);
inline constexpr u64 kS1Xn = bit(54);
inline constexpr u64 kS1PermMask = kS1ApRo | kS1Xn;

/// MAIR_EL2 layout the EL2 stage-1 tables assume (one byte per index).
inline constexpr u32 kMairIdxNormal = 0;     // 0xff: Normal WB RW-allocate
inline constexpr u32 kMairIdxDevice = 1;     // 0x04: Device-nGnRE
inline constexpr u32 kMairIdxDeviceNgnRnE = 2;  // 0x00
inline constexpr u32 kMairIdxNormalNc = 3;   // 0x44: Normal non-cacheable
inline constexpr u64 kMairEl2 = (u64{0xff} << (8 * kMairIdxNormal)) |
                                (u64{0x04} << (8 * kMairIdxDevice)) |
                                (u64{0x00} << (8 * kMairIdxDeviceNgnRnE)) |
                                (u64{0x44} << (8 * kMairIdxNormalNc));
static_assert(kMairEl2 == 0x440004ffull);

// --- Table descriptor upper attributes (D8.3.1) ------------------------------
inline constexpr u64 kTablePxn = bit(59);
inline constexpr u64 kTableXn = bit(60);  // UXNTable, or XNTable at EL2
inline constexpr u32 kTableApShift = 61;
inline constexpr u64 kTableApMask = genmask(62, 61);
inline constexpr u64 kTableNs = bit(63);

// --- Invalid descriptors that carry an annotation ---------------------------
// Hardware ignores bits [63:1] of an invalid descriptor. An owner id lives in
// [9:2]; bit 10 marks an entry LOCKED by a walker in the middle of
// break-before-make. A zero entry means "no annotation": owned by the default
// owner (the host) and simply not mapped yet.
inline constexpr u32 kOwnerShift = 2;
inline constexpr u64 kOwnerMask = genmask(9, 2);
inline constexpr u32 kMaxOwnerId = 0xff;
inline constexpr u64 kLocked = bit(10);

static_assert(kOwnerMask == 0x3fc && kLocked == 0x400);
static_assert((kOwnerMask & kValid) == 0 && (kOwnerMask & kLocked) == 0);
static_assert(kS2MemAttrMask == 0x3c && kS2ApR == 0x40 && kS2ApW == 0x80);
static_assert(kAf == 0x400 && kShMask == 0x300 && kSwMask == 0x0780000000000000ull);
static_assert(kOaMask == 0x0000fffffffff000ull);
static_assert(kTableApMask == 0x6000000000000000ull);

// --- Predicates and constructors ------------------------------------------------
/// True for any valid descriptor (table, block or page).
constexpr bool is_valid(u64 pte) { return pte & kValid; }
/// True for a valid table descriptor at `level` (level 3 entries are pages).
constexpr bool is_table(u64 pte, u32 level) {
  return level < kLastLevel && is_valid(pte) && (pte & kTypeTable);
}
/// True for a valid block or page descriptor at `level`.
constexpr bool is_leaf(u64 pte, u32 level) { return is_valid(pte) && !is_table(pte, level); }
/// True for the LOCKED marker left by the break half of break-before-make.
constexpr bool is_locked(u64 pte) { return !is_valid(pte) && (pte & kLocked); }
/// Output address of a valid descriptor.
constexpr u64 oa(u64 pte) { return pte & kOaMask; }
/// Owner id carried by an invalid descriptor (0 when unannotated).
constexpr u32 owner(u64 pte) { return is_valid(pte) ? 0 : u32((pte & kOwnerMask) >> kOwnerShift); }
/// Invalid descriptor annotated with `owner_id`; owner 0 encodes as an empty entry.
constexpr u64 make_owner(u32 owner_id) { return (u64(owner_id) << kOwnerShift) & kOwnerMask; }
/// Table descriptor pointing at the next-level table at physical address `pa`.
constexpr u64 make_table(u64 pa) { return (pa & kOaMask) | kTypeTable | kValid; }
/// Leaf descriptor at `level` mapping `pa` with the attribute bits `attrs`.
constexpr u64 make_leaf(u64 pa, u64 attrs, u32 level) {
  return (pa & kOaMask) | attrs | (level == kLastLevel ? kTypePage : 0) | kValid;
}
/// The attribute bits of a leaf (everything but OA, type and valid).
constexpr u64 leaf_attrs(u64 pte) { return pte & ~(kOaMask | kTypePage | kValid); }
/// Software bits [58:55] of a leaf, shifted down to [3:0].
constexpr u32 sw_bits(u64 pte) { return u32((pte & kSwMask) >> kSwShift); }
/// An entry is reference-counted in its table page when it is not empty:
/// valid entries and annotated invalid entries both keep the table alive.
constexpr bool is_counted(u64 pte) { return pte != 0 && !is_locked(pte); }

static_assert(is_table(make_table(0x80000000), 2) && !is_table(make_table(0x80000000), 3));
static_assert(is_leaf(make_leaf(0x40000000, 0, 1), 1));
static_assert(make_leaf(0x1000, 0, 3) == 0x1003 && make_leaf(0x200000, 0, 2) == 0x200001);
static_assert(owner(make_owner(5)) == 5 && make_owner(0) == 0 && !is_valid(make_owner(0xff)));
static_assert(is_locked(kLocked) && !is_counted(kLocked) && is_counted(make_owner(1)));
static_assert(oa(make_leaf(0xfffffffff000, 0, 3)) == 0xfffffffff000);

}  // namespace pkvm::desc
