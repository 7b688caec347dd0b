// SPDX-License-Identifier: Apache-2.0
// Software stage-1 walk for the EL1&0 regime, emulating the AT S1E{0,1}{R,W}
// and S1E1{R,W}P instructions. See s1walk.h for the model. The checks follow
// the order of the Arm ARM translation pseudocode (AArch64.S1Translate,
// AArch64.S1Walk): level 0 checks, then the walk (translation, address size
// and access flag faults, in that order per descriptor), then permissions.
#include "pgtable/s1walk.h"

namespace pkvm {
namespace {

using desc::bit;
using desc::genmask;
using desc::level_shift;

constexpr u32 kMinTxsz = 16;            // 48-bit input: no FEAT_LVA/FEAT_LPA2
constexpr u32 kMaxTxsz = 39;            // 25-bit input: no FEAT_TTST
constexpr u32 kPaBits = desc::kOaBits;  // assumed ID_AA64MMFR0_EL1.PARange

// MAIR attribute bytes with a fixed meaning in the result.
constexpr u8 kAttrDeviceNgnrne = 0x00;
constexpr u8 kAttrNormalNc = 0x44;     // Inner and Outer Non-cacheable
constexpr u8 kAttrNormalNcXs0 = 0x40;  // the same with FEAT_XS, XS == 0
/// MAIR Attr<n>[7:4] == 0 encodes Device memory.
constexpr bool attr_is_device(u8 attr) { return (attr & 0xf0) == 0; }
static_assert(attr_is_device(0x04) && !attr_is_device(kAttrNormalNc));

static_assert(level_shift(0) == 39 && level_shift(1) == 30 && level_shift(3) == 12);

/// Output address size in bits for TCR_EL1.IPS, clamped to the PA size.
/// 0b110 (52 bits) needs 64K or TCR.DS, so with 4K it means 48; the reserved
/// 0b111 behaves as the largest implemented size.
constexpr u32 ips_bits(u64 tcr) {
  u32 bits = kPaBits;
  switch ((tcr & s1::kTcrIpsMask) >> s1::kTcrIpsShift) {
    case 0: bits = 32; break;
    case 1: bits = 36; break;
    case 2: bits = 40; break;
    case 3: bits = 42; break;
    case 4: bits = 44; break;
    default: break;  // 48, 52 and reserved
  }
  return bits < kPaBits ? bits : kPaBits;
}
static_assert(ips_bits(u64{0} << s1::kTcrIpsShift) == 32);
static_assert(ips_bits(u64{2} << s1::kTcrIpsShift) == 40);
static_assert(ips_bits(u64{5} << s1::kTcrIpsShift) == 48);
static_assert(ips_bits(u64{6} << s1::kTcrIpsShift) == 48);

/// True when `addr` has a bit set at or above an `bits`-bit output size.
constexpr bool oa_out_of_range(u64 addr, u32 bits) {
  return bits < 48 && (addr & genmask(47, bits)) != 0;
}
static_assert(oa_out_of_range(u64{1} << 40, 40) && !oa_out_of_range((u64{1} << 40) - 1, 40));
static_assert(!oa_out_of_range(desc::kOaMask, 48));

/// Start level for the 4K granule (AArch64.S1StartLevel): each level
/// resolves 9 bits above the 12-bit page offset.
constexpr u32 start_level(u32 ia_bits) {
  return 3 - (ia_bits - 1 - desc::kPageShift) / desc::kBitsPerLevel;
}
static_assert(start_level(48) == 0 && start_level(40) == 0);
static_assert(start_level(39) == 1 && start_level(31) == 1);
static_assert(start_level(30) == 2 && start_level(25) == 2);

/// The 4K granule has blocks at levels 1 and 2 only (bit[1] == 0 at level 0
/// or 3 is reserved and faults as a translation fault).
constexpr bool block_allowed(u32 level) { return level == 1 || level == 2; }
static_assert(!block_allowed(0) && block_allowed(1) && block_allowed(2) && !block_allowed(3));

constexpr bool is_el0(AtOp op) { return op == AtOp::kS1E0R || op == AtOp::kS1E0W; }
constexpr bool is_write(AtOp op) {
  return op == AtOp::kS1E1W || op == AtOp::kS1E1WP || op == AtOp::kS1E0W;
}
constexpr bool is_pan_op(AtOp op) { return op == AtOp::kS1E1RP || op == AtOp::kS1E1WP; }

constexpr S1WalkResult fail(u8 type, u32 level, int err = 0) {
  return {par::fault(s1::fsc(type, level)), err};
}

/// True when the TTBR half selected by `hi` uses the 4K granule and the
/// 48-bit descriptor format (TCR.DS == 0), the only layout walked here.
constexpr bool layout_supported(u64 tcr, bool hi) {
  if (tcr & s1::kTcrDs) return false;  // FEAT_LPA2 moves OA bits into [9:8]
  if (hi) return ((tcr & s1::kTcrTg1Mask) >> s1::kTcrTg1Shift) == s1::kTg1_4K;
  return ((tcr & s1::kTcrTg0Mask) >> s1::kTcrTg0Shift) == s1::kTg0_4K;
}
static_assert(layout_supported(s1::kTg1_4K << s1::kTcrTg1Shift, true));
static_assert(!layout_supported(s1::kTg0_64K << s1::kTcrTg0Shift, false));
static_assert(!layout_supported(0, true));  // TG1 == 0b00 is reserved

/// The outcome of the checks made before the first descriptor read.
struct Setup {
  bool done;            // `early` is the final result: no walk
  S1WalkResult early;
  bool hi;              // VA[55]: the TTBR1 half
  bool mmu_off;
  u32 ia_bits;          // input address size, 64 - TxSZ
  u32 oa_bits;          // output address size from IPS
  u32 level;            // start level
  u64 table;            // IPA of the start-level table
};

/// Level 0 part of the translation: regime half, TBI, TxSZ, VA range,
/// EPD/E0PD, granule support and the TTBR base address.
Setup setup(AtOp op, u64 va, const S1Regs& regs) {
  Setup s{};
  const u64 tcr = regs.tcr_el1;
  s.hi = va & bit(55);
  // With TBI the top byte is ignored, so range checks stop at bit 55.
  const bool tbi = tcr & (s.hi ? s1::kTcrTbi1 : s1::kTcrTbi0);
  const u32 top = tbi ? 55 : 63;

  if (!(regs.sctlr_el1 & s1::kSctlrM)) {
    // Stage 1 disabled: flat map. A VA beyond the PA size is an address
    // size fault at level 0 (AArch64.S1DisabledOutput).
    s.mmu_off = true;
    s.done = true;
    if (va & genmask(top, kPaBits)) {
      s.early = fail(s1::kFscAddrSize, 0);
    } else {
      // Data accesses are Device-nGnRnE, reported Outer Shareable.
      s.early = {(u64{kAttrDeviceNgnrne} << par::kAttrShift) | par::kRes1 |
                     (par::kShOuter << par::kShShift) | (va & par::kPaMask),
                 0};
    }
    return s;
  }

  const u32 txsz = u32((tcr >> (s.hi ? s1::kTcrT1szShift : s1::kTcrT0szShift)) &
                       s1::kTcrTxszFieldMask);
  // An out-of-range TxSZ is treated as a level 0 translation fault, one of
  // the CONSTRAINED UNPREDICTABLE choices (the other clamps).
  if (txsz < kMinTxsz || txsz > kMaxTxsz) {
    s.done = true;
    s.early = fail(s1::kFscTranslation, 0);
    return s;
  }
  s.ia_bits = 64 - txsz;

  // VA[top:ia_bits] must all equal VA[55] (AArch64.VAIsOutOfRange).
  const u64 range = genmask(top, s.ia_bits);
  const bool out_of_range = (va & range) != (s.hi ? range : 0);
  const bool epd = tcr & (s.hi ? s1::kTcrEpd1 : s1::kTcrEpd0);
  const bool e0pd = is_el0(op) && (tcr & (s.hi ? s1::kTcrE0pd1 : s1::kTcrE0pd0));
  if (out_of_range || epd || e0pd) {
    s.done = true;
    s.early = fail(s1::kFscTranslation, 0);
    return s;
  }

  // Everything above is granule independent, so it is exact even for a
  // layout refused here.
  if (!layout_supported(tcr, s.hi)) {
    s.done = true;
    s.early = fail(s1::kFscTranslation, 0, -kEOPNOTSUPP);
    return s;
  }

  s.level = start_level(s.ia_bits);
  s.oa_bits = ips_bits(tcr);
  const u64 baddr = (s.hi ? regs.ttbr1_el1 : regs.ttbr0_el1) & s1::kTtbrBaddrMask;
  if (oa_out_of_range(baddr, s.oa_bits)) {
    s.done = true;
    s.early = fail(s1::kFscAddrSize, 0);
    return s;
  }
  // The start table holds 2^(ia_bits - shift) entries of 8 bytes and is
  // aligned to its size; BADDR bits below that are RES0 and ignored.
  const u32 align = s.ia_bits - level_shift(s.level) + 3;
  s.table = baddr & genmask(47, align);
  return s;
}

/// Effective access rights of a leaf after the hierarchical controls.
struct Perms {
  bool pr, pw, ur, uw, ux;
};

Perms leaf_perms(u64 leaf, u64 ap_table, bool uxn_table, u64 tcr) {
  bool ro = leaf & s1::kApRo;
  // Writable-clean (DBM with hardware dirty management, which needs HA as
  // well): a write would clear AP[2] instead of faulting, so AT succeeds.
  const bool dirty_mgmt = (tcr & s1::kTcrHa) && (tcr & s1::kTcrHd);
  if (ro && dirty_mgmt && (leaf & s1::kDbm)) ro = false;
  const bool el0 = leaf & s1::kApEl0;

  Perms p{true, !ro, el0, el0 && !ro, !(leaf & s1::kUxn) && !uxn_table};
  if (ap_table & s1::kTableApNoEl0) p.ur = p.uw = false;
  if (ap_table & s1::kTableApRo) p.pw = p.uw = false;
  return p;
}

/// PAR_EL1 for a successful translation to `pa` through `leaf`.
u64 success_par(u64 pa, u64 leaf, const S1Regs& regs) {
  const u32 idx = u32((leaf & s1::kAttrIdxMask) >> s1::kAttrIdxShift);
  u8 attr = u8(regs.mair_el1 >> (8 * idx));
  // With SCTLR_EL1.C == 0 Normal memory is accessed Non-cacheable; PAR may
  // report the resulting attribute, and does so here.
  if (!(regs.sctlr_el1 & s1::kSctlrC) && !attr_is_device(attr)) attr = kAttrNormalNc;

  u64 sh;
  if (attr_is_device(attr) || attr == kAttrNormalNc || attr == kAttrNormalNcXs0) {
    sh = par::kShOuter;  // fixed for Device and Normal Inner+Outer NC
  } else {
    sh = (leaf & desc::kShMask) >> desc::kShShift;
    if (sh == 1) sh = par::kShNon;  // reserved encoding: treat as Non-shareable
  }
  return (u64{attr} << par::kAttrShift) | par::kRes1 | (sh << par::kShShift) |
         (pa & par::kPaMask);
}

}  // namespace

int s1_walk_supported(u64 va, const S1Regs& regs) {
  // Only the refusal matters; the op does not influence it (E0PD only adds
  // a level 0 fault, which comes before the refusal).
  const Setup s = setup(AtOp::kS1E1R, va, regs);
  return (s.done && s.early.err == -kEOPNOTSUPP) ? -kEOPNOTSUPP : 0;
}

S1WalkResult s1_walk(AtOp op, u64 va, const S1Regs& regs, S1ReadFn read, void* ctx) {
  const Setup s = setup(op, va, regs);
  if (s.done) return s.early;

  const u64 tcr = regs.tcr_el1;
  const bool big_endian = regs.sctlr_el1 & s1::kSctlrEe;
  // TCR.HPDn == 1 disables APTable, UXNTable and PXNTable for that half.
  const bool hpd = tcr & (s.hi ? s1::kTcrHpd1 : s1::kTcrHpd0);

  u64 table = s.table;
  u64 ap_table = 0;
  bool uxn_table = false;
  u32 level = s.level;
  u32 index_bits = s.ia_bits - level_shift(level);  // fewer at the start level
  u64 d = 0;
  for (;;) {
    const u32 shift = level_shift(level);
    const u64 index = (va >> shift) & ((u64{1} << index_bits) - 1);
    int rc = read(ctx, table + index * sizeof(u64), &d);
    if (rc != 0) {
      // A failed descriptor fetch is an external abort on the walk.
      return fail(s1::kFscSeaWalk, level, rc < 0 ? rc : -kEFAULT);
    }
    if (big_endian) d = __builtin_bswap64(d);

    if (!(d & desc::kValid)) return fail(s1::kFscTranslation, level);
    if (!(d & desc::kTypeTable)) {
      if (!block_allowed(level)) return fail(s1::kFscTranslation, level);
      break;  // block
    }
    if (level == desc::kLastLevel) break;  // page

    if (!hpd) {
      ap_table |= d & (s1::kTableApNoEl0 | s1::kTableApRo);
      uxn_table |= (d & s1::kTableUxn) != 0;
      // PXNTable only affects execution, which AT does not check.
    }
    const u64 next = d & desc::kOaMask;
    // The next table's address is checked at the level of this descriptor.
    if (oa_out_of_range(next, s.oa_bits)) return fail(s1::kFscAddrSize, level);
    table = next;
    ++level;
    index_bits = desc::kBitsPerLevel;
  }

  const u32 shift = level_shift(level);
  const u64 oa = d & genmask(47, shift);  // OA bits below the block size are RES0
  if (oa_out_of_range(oa, s.oa_bits)) return fail(s1::kFscAddrSize, level);
  // With TCR.HA == 1 (FEAT_HAFDBS) the hardware sets AF instead of faulting;
  // this walker never writes back, it only reports the translation.
  if (!(d & desc::kAf) && !(tcr & s1::kTcrHa)) return fail(s1::kFscAccessFlag, level);

  Perms p = leaf_perms(d, ap_table, uxn_table, tcr);
  if (is_pan_op(op) && regs.pan) {
    // PAN denies privileged access to anything EL0 can access; with
    // SCTLR_EL1.EPAN (FEAT_PAN3) also to anything EL0 can execute.
    const bool epan = regs.sctlr_el1 & s1::kSctlrEpan;
    if (p.ur || p.uw || (epan && p.ux)) p.pr = p.pw = false;
  }
  bool allowed;
  if (is_el0(op)) {
    allowed = is_write(op) ? p.uw : p.ur;
  } else {
    allowed = is_write(op) ? p.pw : p.pr;
  }
  if (!allowed) return fail(s1::kFscPermission, level);

  const u64 pa = oa | (va & genmask(shift - 1, 0));
  return {success_par(pa, d, regs), 0};
}

}  // namespace pkvm
