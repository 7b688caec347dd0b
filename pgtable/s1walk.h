// SPDX-License-Identifier: Apache-2.0
// Software emulation of the AArch64 stage-1 address translation instructions
// AT S1E1R/S1E1W/S1E1RP/S1E1WP/S1E0R/S1E0W for the EL1&0 regime (Arm ARM
// DDI 0487, chapter D8 and the PAR_EL1 description).
//
// The EL2 payload uses this when it must translate a guest VA (FAR_EL2 with
// HPFAR_EL2 not valid) and the hardware AT instruction failed, e.g. because a
// stage-1 table page was not mapped at stage 2. The walker reads the guest's
// stage-1 descriptors through a callback and returns the PAR_EL1 value the
// hardware would have produced.
//
// Model (the walker is exactly as strong as these assumptions):
//  * 4 KiB granule only. TG0/TG1 selecting 16 KiB, 64 KiB or a reserved
//    encoding, and TCR_EL1.DS == 1 (FEAT_LPA2), are refused with
//    err = -kEOPNOTSUPP (PAR.F = 1, see s1_walk()).
//  * 48-bit physical addresses (PARange = 48): IPS values above 48 bits clamp
//    to 48, and with the MMU off any VA bit in [top:48] set is an address
//    size fault.
//  * No stage-2 walk: the read callback receives the IPA of each descriptor
//    and does whatever stage-2 lookup it needs. So PAR.PTW and PAR.S are
//    always 0; a failed read is reported as a synchronous external abort on
//    the stage-1 walk (see S1WalkResult).
//  * Non-secure EL1&0 regime with HCR_EL2.{DC,TGE} == 0, direct permissions
//    (no FEAT_S1PIE / FEAT_S1POE: TCR2_EL1 is not modelled).
//  * FEAT_HPDS, FEAT_E0PD, FEAT_PAN3 (SCTLR_EL1.EPAN) and FEAT_HAFDBS fields
//    are honoured when the guest sets them; a CPU without the feature has the
//    bit RES0, so a well-behaved guest never sets it there.
#pragma once

#include "pgtable/desc.h"
#include "pgtable/types.h"

namespace pkvm {

/// The emulated AT instruction.
enum class AtOp : u8 { kS1E1R, kS1E1W, kS1E1RP, kS1E1WP, kS1E0R, kS1E0W };

/// The guest EL1 state an EL1&0 stage-1 translation depends on.
struct S1Regs {
  u64 sctlr_el1;
  u64 tcr_el1;
  u64 ttbr0_el1;
  u64 ttbr1_el1;
  u64 mair_el1;
  bool pan;  ///< PSTATE.PAN of the guest (only S1E1RP/S1E1WP look at it).
};

/// Reads one 64-bit descriptor at IPA `pa` (8-byte aligned) into `*out`, as
/// a little-endian load (the walker byte-swaps when SCTLR_EL1.EE == 1).
/// Returns 0 or a negative errno; may fail.
using S1ReadFn = int (*)(void* ctx, u64 pa, u64* out);

/// The outcome of s1_walk().
struct S1WalkResult {
  /// The PAR_EL1 value. F == 0: PA, SH and ATTR; F == 1: FST, PTW == 0, S == 0.
  u64 par;
  /// 0 whenever `par` is what the hardware AT would report (success or any
  /// stage-1 fault). Otherwise:
  ///  * the read callback's negative errno when a descriptor read failed; par
  ///    then reports a synchronous external abort on the table walk at that
  ///    level (FST 0b0101LL), PTW = 0, and the caller decides what to do;
  ///  * -kEOPNOTSUPP when the translation needs a granule or feature this
  ///    walker does not implement; par is F = 1 with a level 0 translation
  ///    fault, which the caller must not forward as an architectural result.
  int err;
};

/// Emulates AT `op` on `va` with the guest registers `regs`, reading stage-1
/// descriptors through `read(ctx, ipa, &desc)`. Never writes descriptors
/// (no hardware AF/dirty update). Freestanding; no allocation.
S1WalkResult s1_walk(AtOp op, u64 va, const S1Regs& regs, S1ReadFn read, void* ctx);

/// Returns 0 when s1_walk() can translate `va` under `regs` exactly, or
/// -kEOPNOTSUPP when the selected TTBR uses a 16 KiB/64 KiB/reserved granule
/// or TCR_EL1.DS is set. Lets a caller refuse up front without walking.
int s1_walk_supported(u64 va, const S1Regs& regs);

// --- Register and descriptor fields used by the walker ----------------------
// Exposed so the payload and the tests build register values by name.
namespace s1 {

using desc::bit;
using desc::genmask;

// SCTLR_EL1.
inline constexpr u64 kSctlrM = bit(0);      ///< Stage-1 MMU enable.
inline constexpr u64 kSctlrC = bit(2);      ///< Data cacheability (0: Normal is NC).
inline constexpr u64 kSctlrEe = bit(25);    ///< Big-endian table walks at EL1&0.
inline constexpr u64 kSctlrEpan = bit(57);  ///< FEAT_PAN3: PAN also covers EL0-executable.

// TCR_EL1.
inline constexpr u32 kTcrT0szShift = 0;
inline constexpr u32 kTcrT1szShift = 16;
inline constexpr u64 kTcrTxszFieldMask = 0x3f;  ///< TxSZ is 6 bits wide.
inline constexpr u64 kTcrEpd0 = bit(7);
inline constexpr u32 kTcrTg0Shift = 14;
inline constexpr u64 kTcrTg0Mask = genmask(15, 14);
inline constexpr u64 kTcrEpd1 = bit(23);
inline constexpr u32 kTcrTg1Shift = 30;
inline constexpr u64 kTcrTg1Mask = genmask(31, 30);
inline constexpr u32 kTcrIpsShift = 32;
inline constexpr u64 kTcrIpsMask = genmask(34, 32);
inline constexpr u64 kTcrTbi0 = bit(37);
inline constexpr u64 kTcrTbi1 = bit(38);
inline constexpr u64 kTcrHa = bit(39);
inline constexpr u64 kTcrHd = bit(40);
inline constexpr u64 kTcrHpd0 = bit(41);
inline constexpr u64 kTcrHpd1 = bit(42);
inline constexpr u64 kTcrE0pd0 = bit(55);
inline constexpr u64 kTcrE0pd1 = bit(56);
inline constexpr u64 kTcrDs = bit(59);
/// TG0 and TG1 encode the granule differently.
inline constexpr u64 kTg0_4K = 0, kTg0_64K = 1, kTg0_16K = 2;
inline constexpr u64 kTg1_16K = 1, kTg1_4K = 2, kTg1_64K = 3;

// TTBRn_EL1: ASID [63:48], BADDR [47:1], CnP [0].
inline constexpr u64 kTtbrBaddrMask = genmask(47, 1);

// EL1&0 stage-1 block/page descriptor (D8.3).
inline constexpr u32 kAttrIdxShift = 2;
inline constexpr u64 kAttrIdxMask = genmask(4, 2);
inline constexpr u64 kApEl0 = bit(6);  ///< AP[1]: EL0 accessible.
inline constexpr u64 kApRo = bit(7);   ///< AP[2]: read-only.
inline constexpr u64 kDbm = bit(51);   ///< Dirty bit modifier (FEAT_HAFDBS).
inline constexpr u64 kPxn = bit(53);
inline constexpr u64 kUxn = bit(54);
// EL1&0 stage-1 table descriptor hierarchical attributes.
inline constexpr u64 kTablePxn = bit(59);
inline constexpr u64 kTableUxn = bit(60);
inline constexpr u64 kTableApNoEl0 = bit(61);  ///< APTable[0]: no EL0 access below.
inline constexpr u64 kTableApRo = bit(62);     ///< APTable[1]: no write below.

// Fault status codes (FST / DFSC), level in [1:0].
inline constexpr u8 kFscAddrSize = 0x00;     ///< 0b0000LL
inline constexpr u8 kFscTranslation = 0x04;  ///< 0b0001LL
inline constexpr u8 kFscAccessFlag = 0x08;   ///< 0b0010LL
inline constexpr u8 kFscPermission = 0x0c;   ///< 0b0011LL
inline constexpr u8 kFscSeaWalk = 0x14;      ///< 0b0101LL: external abort on walk
/// Fault status code `type` at lookup level `level` (0..3).
constexpr u8 fsc(u8 type, u32 level) { return u8(type | (level & 3)); }

static_assert(kTcrTg0Mask == 0xc000 && kTcrTg1Mask == 0xc0000000);
static_assert(kTcrIpsMask == 0x700000000ull && kTcrEpd1 == 0x800000);
static_assert(kTcrTbi0 == 0x2000000000ull && kTcrHpd1 == 0x40000000000ull);
static_assert(kTcrE0pd1 == 0x0100000000000000ull && kTcrDs == 0x0800000000000000ull);
static_assert(kTtbrBaddrMask == 0x0000fffffffffffeull);
static_assert(kApEl0 == desc::kS1ApRes1 && kApRo == desc::kS1ApRo);
static_assert(kUxn == desc::kS1Xn && kTableUxn == desc::kTableXn && kTablePxn == desc::kTablePxn);
static_assert((kTableApNoEl0 | kTableApRo) == desc::kTableApMask);
static_assert(fsc(kFscPermission, 3) == 0x0f && fsc(kFscSeaWalk, 1) == 0x15);

}  // namespace s1

// --- PAR_EL1 encoding (D19 "PAR_EL1") ---------------------------------------
namespace par {

using desc::bit;
using desc::genmask;

inline constexpr u64 kF = bit(0);  ///< 1: the translation aborted.
/// Bit 11 is RES1 when F == 1 and, without FEAT_RME, also when F == 0 (the
/// F == 0 NSE field); hardware reads it as 1 in every result here.
inline constexpr u64 kRes1 = bit(11);
// F == 1.
inline constexpr u32 kFstShift = 1;
inline constexpr u64 kFstMask = genmask(6, 1);
inline constexpr u64 kPtw = bit(8);  ///< Stage-2 fault on a stage-1 walk.
inline constexpr u64 kS = bit(9);    ///< 1: stage-2 fault.
// F == 0.
inline constexpr u32 kShShift = 7;
inline constexpr u64 kShMask = genmask(8, 7);
inline constexpr u64 kNs = bit(9);
inline constexpr u64 kPaMask = genmask(47, 12);
inline constexpr u32 kAttrShift = 56;
inline constexpr u64 kAttrMask = genmask(63, 56);

/// Shareability values reported in PAR.SH.
inline constexpr u64 kShNon = 0, kShOuter = 2, kShInner = 3;

static_assert(kFstMask == 0x7e && kPtw == 0x100 && kS == 0x200 && kRes1 == 0x800);
static_assert(kShMask == 0x180 && kNs == 0x200);
static_assert(kPaMask == 0x0000fffffffff000ull && kAttrMask == 0xff00000000000000ull);

/// PAR for an aborted translation with fault status `fst` (stage 1, PTW = 0).
constexpr u64 fault(u8 fst) { return kRes1 | ((u64(fst) << kFstShift) & kFstMask) | kF; }
/// True when `par` reports an aborted translation.
constexpr bool failed(u64 par) { return par & kF; }
/// The fault status code of an aborted translation.
constexpr u8 fst(u64 par) { return u8((par & kFstMask) >> kFstShift); }
/// The output address of a successful translation with the offset of `va`.
constexpr u64 pa(u64 par, u64 va) { return (par & kPaMask) | (va & (desc::kPageSize - 1)); }

static_assert(fault(s1::fsc(s1::kFscTranslation, 0)) == 0x809);
static_assert(fault(s1::fsc(s1::kFscPermission, 3)) == 0x81f);
static_assert(fst(fault(0x2b & 0x3f)) == 0x2b);

}  // namespace par
}  // namespace pkvm
