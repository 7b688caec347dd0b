// SPDX-License-Identifier: Apache-2.0
// AArch64 system-register access and the constants the EL2 runtime programs.
// Only compiled for aarch64.
#pragma once

#include "pgtable/types.h"

namespace pkvm::arch {

#define PKVM_STR2(x) #x
#define PKVM_STR(x) PKVM_STR2(x)
/// Reads a system register by name (or S3_x_Cx_Cx_x encoding).
#define read_sysreg(r)                                  \
  ({                                                    \
    ::pkvm::u64 __v;                                    \
    asm volatile("mrs %0, " PKVM_STR(r) : "=r"(__v));   \
    __v;                                                \
  })
/// Writes a system register by name (or encoding).
#define write_sysreg(v, r) asm volatile("msr " PKVM_STR(r) ", %x0" : : "rZ"((::pkvm::u64)(v)) : "memory")

inline void isb() { asm volatile("isb" ::: "memory"); }
inline void dsb_ish() { asm volatile("dsb ish" ::: "memory"); }
inline void dsb_ishst() { asm volatile("dsb ishst" ::: "memory"); }
inline void dsb_nsh() { asm volatile("dsb nsh" ::: "memory"); }
inline void dsb_sy() { asm volatile("dsb sy" ::: "memory"); }
inline void wfe() { asm volatile("wfe"); }
inline void sev() { asm volatile("sev"); }

// ESR_ELx exception classes the host can cause at EL2.
inline constexpr u32 kEcUnknown = 0x00;
inline constexpr u32 kEcHvc64 = 0x16;
inline constexpr u32 kEcSmc64 = 0x17;
inline constexpr u32 kEcSysReg = 0x18;
inline constexpr u32 kEcIabtLow = 0x20;
inline constexpr u32 kEcIabtCur = 0x21;
inline constexpr u32 kEcDabtLow = 0x24;
inline constexpr u32 kEcDabtCur = 0x25;
inline constexpr u32 kEsrEcShift = 26;
inline constexpr u64 kEsrIl = u64{1} << 25;
inline constexpr u64 kEsrS1ptw = u64{1} << 7;
inline constexpr u64 kEsrWnr = u64{1} << 6;
inline constexpr u64 kEsrFscMask = 0x3f;
inline constexpr u64 kFscTypeMask = 0x3c;
inline constexpr u64 kFscPerm = 0x0c;
inline constexpr u64 kFscSea = 0x10;  // synchronous external abort, not on a walk
constexpr u32 esr_ec(u64 esr) { return u32(esr >> kEsrEcShift) & 0x3f; }
static_assert(esr_ec(0x5a000000) == kEcHvc64 && esr_ec(0x92000046) == kEcDabtLow);

// HCR_EL2 bits.
inline constexpr u64 kHcrVm = u64{1} << 0;
inline constexpr u64 kHcrTsc = u64{1} << 19;
inline constexpr u64 kHcrRw = u64{1} << 31;
inline constexpr u64 kHcrApk = u64{1} << 40;
inline constexpr u64 kHcrApi = u64{1} << 41;

// SCTLR_EL2 (E2H == 0): RES1 bits, and the bits we set with the MMU on.
inline constexpr u64 kSctlrEl2Res1 = 0x30c50830;
inline constexpr u64 kSctlrM = u64{1} << 0;
inline constexpr u64 kSctlrC = u64{1} << 2;
inline constexpr u64 kSctlrSa = u64{1} << 3;
inline constexpr u64 kSctlrI = u64{1} << 12;
inline constexpr u64 kSctlrWxn = u64{1} << 19;
inline constexpr u64 kSctlrEl2On = kSctlrEl2Res1 | kSctlrM | kSctlrC | kSctlrSa | kSctlrI | kSctlrWxn;
/// SCTLR_EL1 as Linux expects it at entry: RES1 bits, MMU and caches off.
inline constexpr u64 kSctlrEl1MmuOff = 0x30d00800;
inline constexpr u64 kSctlrEl1Span = u64{1} << 23;

/// TCR_EL2 (E2H == 0) for a 48-bit identity map, 4 KiB granule, write-back
/// inner-shareable walks; PS filled in from ID_AA64MMFR0_EL1.
constexpr u64 tcr_el2(u64 ps) {
  return 16 | (u64{1} << 8) | (u64{1} << 10) | (u64{3} << 12) | (ps << 16) | (u64{1} << 23) | (u64{1} << 31);
}
static_assert(tcr_el2(5) == 0x80853510);

/// PSTATE for EL1h with D, A, I and F masked.
inline constexpr u64 kPsrEl1h = 0x5;
inline constexpr u64 kPsrDaif = 0x3c0;
inline constexpr u64 kPsrPan = u64{1} << 22;
inline constexpr u64 kPsrModeMask = 0xf;
inline constexpr u64 kPsrEl0t = 0x0;
inline constexpr u64 kPsrEl1t = 0x4;

/// Output-address bits for ID_AA64MMFR0_EL1.PARange.
constexpr u32 pa_bits_of(u64 parange) {
  const u32 bits[] = {32, 36, 40, 42, 44, 48, 52};
  return parange < 7 ? bits[parange] : 48;
}

}  // namespace pkvm::arch
