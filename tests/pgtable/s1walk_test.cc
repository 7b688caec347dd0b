// SPDX-License-Identifier: Apache-2.0
// Tests for the software AT S1E* emulation. Tables live in a simulated IPA
// space (a map of 64-bit words); every expected PAR_EL1 value is computed by
// hand from the Arm ARM encodings and written as a literal.
//
// PAR_EL1 reminders used in the comments:
//   F == 0: ATTR[63:56] | PA[47:12] | bit 11 (RES1) | NS[9] | SH[8:7] | F=0
//   F == 1: bit 11 (RES1) | S[9] | PTW[8] | FST[6:1] | F=1
//   FST: addr size 0b0000LL, translation 0b0001LL, access flag 0b0010LL,
//        permission 0b0011LL, external abort on walk 0b0101LL.
#include "pgtable/s1walk.h"

#include <gtest/gtest.h>

#include <map>
#include <vector>

namespace pkvm {
namespace {

// --- Simulated guest memory -------------------------------------------------
struct Mem {
  std::map<u64, u64> words;  // IPA -> descriptor; absent words read as 0
  u64 fail_at = ~u64{0};     // a read of this IPA fails
  int fail_err = -5;         // -EIO
  std::vector<u64> reads;    // every IPA read, in order
  bool byteswap = false;     // store descriptors big-endian (SCTLR_EL1.EE)

  void set(u64 pa, u64 v) { words[pa] = byteswap ? __builtin_bswap64(v) : v; }

  static int read(void* ctx, u64 pa, u64* out) {
    auto* m = static_cast<Mem*>(ctx);
    EXPECT_EQ(pa % 8, 0u) << "unaligned descriptor read";
    m->reads.push_back(pa);
    if (pa == m->fail_at) return m->fail_err;
    auto it = m->words.find(pa);
    *out = it == m->words.end() ? 0 : it->second;
    return 0;
  }
};

// --- Register values ----------------------------------------------------------
// T0SZ=16, T1SZ=16 (48-bit halves), TG0=4K (0b00), TG1=4K (0b10 at [31:30]),
// IPS=0b101 (48 bits): 0x10 | 0x10 << 16 | 2 << 30 | 5 << 32.
constexpr u64 kTcr = 0x0000000580100010;
constexpr u64 kIps40 = u64{2} << 32;  // IPS = 0b010
// SCTLR_EL1.M | SCTLR_EL1.C.
constexpr u64 kSctlr = 0x5;
// Attr0 0xff WB, Attr1 0x04 nGnRE, Attr2 0x44 NC, Attr3 0x00 nGnRnE,
// Attr4 0xbb WT, Attr5 0x4f (outer NC, inner WB), Attr6 0x40 (NC, XS=0),
// Attr7 0xf0 (tagged WB).
constexpr u64 kMair = 0xF0404FBB004404FF;
constexpr u64 kTtbr0 = 0x0000000040000000;  // L0 table
constexpr u64 kTtbr1 = 0x0005000040010000;  // ASID 5, L0 table

// Descriptor pieces (written out here rather than taken from the code).
constexpr u64 kTable = 0x3;   // valid + table
constexpr u64 kPage = 0x3;    // valid + page (level 3)
constexpr u64 kBlock = 0x1;   // valid + block
constexpr u64 kAf = 0x400;
constexpr u64 kShIn = 0x300;  // SH = 0b11
constexpr u64 kShOut = 0x200; // SH = 0b10
constexpr u64 kApEl0Rw = 0x40;  // AP[2:1] = 0b01
constexpr u64 kApEl1Ro = 0x80;  // AP[2:1] = 0b10
constexpr u64 kApEl0Ro = 0xc0;  // AP[2:1] = 0b11
constexpr u64 kUxn = u64{1} << 54;
constexpr u64 kDbm = u64{1} << 51;
constexpr u64 kApTableRo = u64{1} << 62;     // APTable = 0b10
constexpr u64 kApTableNoEl0 = u64{1} << 61;  // APTable = 0b01
constexpr u64 attr_idx(u64 i) { return i << 2; }

// VAs, TTBR0 half: L0 index 1, L1 index 2, L2 index 3, L3 index 4.
constexpr u64 kVaPage = 0x0000008080604abc;    // (1<<39)|(2<<30)|(3<<21)|(4<<12)|0xabc
constexpr u64 kVaBlock2M = 0x0000008080a12345; // (1<<39)|(2<<30)|(5<<21)|0x12345
constexpr u64 kVaBlock1G = 0x00000081c1234567; // (1<<39)|(7<<30)|0x1234567
// TTBR1 half: L0 index 0x1ff.
constexpr u64 kVa1Page = 0xffffff8040403010;    // L1 1, L2 2, L3 3, offset 0x10
constexpr u64 kVa1Block2M = 0xffffff8040801234; // L1 1, L2 4, offset 0x1234
constexpr u64 kVa1Block1G = 0xffffff80c2345678; // L1 3, offset 0x2345678

/// The L3 VA (TTBR0 half, L0 1 / L1 2 / L2 3) of L3 entry `idx`.
constexpr u64 va_l3(u64 idx) { return 0x0000008080600000 + (idx << 12); }

class S1WalkTest : public ::testing::Test {
 protected:
  void SetUp() override { build(mem_); }

  static void build(Mem& m) {
    // TTBR0 half.
    m.set(0x40000008, 0x40001000 | kTable);  // L0[1]
    m.set(0x40000018, 0x40007000 | kBlock);  // L0[3]: block at level 0 (reserved)
    m.set(0x40001010, 0x40002000 | kTable);  // L1[2]
    m.set(0x40001038, 0x140000000 | kAf | kShIn | kApEl0Rw | attr_idx(1) | kBlock);  // L1[7]: 1G
    m.set(0x40001040, 0x20000000000 | kTable);                  // L1[8]: table at bit 41
    m.set(0x40001048, kApTableRo | 0x40004000 | kTable);        // L1[9]
    m.set(0x40001050, kApTableNoEl0 | 0x40005000 | kTable);     // L1[10]
    m.set(0x40002018, 0x40003000 | kTable);                     // L2[3]
    m.set(0x40002028, 0x900600000 | kAf | kShOut | attr_idx(4) | kBlock);  // L2[5]: 2M
    m.set(0x40002030, 0xfffffffffffffffe);                      // L2[6]: invalid, junk bits
    m.set(0x40002038, 0x900800000 | kBlock);                    // L2[7]: 2M, AF=0
    m.set(0x40003020, 0x812345000 | kAf | kShIn | attr_idx(0) | kPage);  // L3[4]
    m.set(0x40003028, 0x812346000 | kAf | kBlock);              // L3[5]: bit1 == 0
    m.set(0x40003030, 0x10000000000 | kAf | kPage);             // L3[6]: OA bit 40
    m.set(0x40003038, 0x812347000 | kPage);                     // L3[7]: AF=0
    m.set(0x40003040, 0x812348000 | kAf | kPage);               // L3[8]: EL1 RW
    m.set(0x40003048, 0x812349000 | kAf | kApEl0Ro | kPage);    // L3[9]: EL0+EL1 RO
    m.set(0x40003050, 0x81234a000 | kAf | kApEl1Ro | kPage);    // L3[10]: EL1 RO
    m.set(0x40003058, 0x81234b000 | kAf | kApEl0Rw | kPage);    // L3[11]: EL0+EL1 RW
    m.set(0x40003060, 0x81234c000 | kAf | kPage);               // L3[12]: EL1 RW, EL0 exec
    m.set(0x40003068, kUxn | 0x81234d000 | kAf | kPage);        // L3[13]: EL1 RW, UXN
    m.set(0x40003070, kDbm | 0x81234e000 | kAf | kApEl1Ro | kPage);  // L3[14]: RO + DBM
    for (u64 i = 0; i < 8; ++i) {  // L3[16+i]: AttrIndx i, SH inner
      m.set(0x40003080 + 8 * i, (0x812350000 + (i << 12)) | kAf | kShIn | attr_idx(i) | kPage);
    }
    m.set(0x400030c0, 0x812358000 | kAf | 0x000 | kPage);  // L3[24]: SH 0b00
    m.set(0x400030c8, 0x812359000 | kAf | 0x100 | kPage);  // L3[25]: SH 0b01 (reserved)
    m.set(0x400030d0, 0x81235a000 | kAf | 0x200 | kPage);  // L3[26]: SH 0b10
    m.set(0x40004000, 0x900000000 | kAf | kApEl0Rw | kBlock);  // APTable RO path, L2[0]
    m.set(0x40005000, 0x900200000 | kAf | kApEl0Rw | kBlock);  // APTable no-EL0 path, L2[0]
    // Start-level tables for smaller inputs, sharing the L2 table above.
    m.set(0x40020010, 0x40002000 | kTable);  // L1[2] for T0SZ = 25 and T0SZ = 32

    // TTBR1 half.
    m.set(0x40010ff8, 0x40011000 | kTable);  // L0[0x1ff]
    m.set(0x40011008, 0x40012000 | kTable);  // L1[1]
    m.set(0x40011018, 0x3c0000000 | kAf | kShIn | attr_idx(0) | kBlock);  // L1[3]: 1G
    m.set(0x40012010, 0x40013000 | kTable);  // L2[2]
    m.set(0x40012020, 0x200200000 | kAf | attr_idx(0) | kBlock);          // L2[4]: 2M
    m.set(0x40013018, 0x777777000 | kAf | kShIn | kApEl1Ro | attr_idx(2) | kPage);  // L3[3]
  }

  S1Regs regs() const { return S1Regs{kSctlr, kTcr, kTtbr0, kTtbr1, kMair, false}; }

  S1WalkResult walk(AtOp op, u64 va, const S1Regs& r) {
    mem_.reads.clear();
    return s1_walk(op, va, r, &Mem::read, &mem_);
  }
  S1WalkResult walk(AtOp op, u64 va) { return walk(op, va, regs()); }

  Mem mem_;
};

// --- Successful translations -------------------------------------------------

TEST_F(S1WalkTest, Ttbr0PageLevel3) {
  // PA 0x812345abc, Attr0 0xff, SH inner (0b11 -> 0x180), RES1 0x800.
  S1WalkResult r = walk(AtOp::kS1E1R, kVaPage);
  EXPECT_EQ(r.err, 0);
  EXPECT_EQ(r.par, 0xFF00000812345980u);
  EXPECT_EQ(mem_.reads, (std::vector<u64>{0x40000008, 0x40001010, 0x40002018, 0x40003020}));
  EXPECT_EQ(par::pa(r.par, kVaPage), 0x812345abcu);
}

TEST_F(S1WalkTest, Ttbr0Block2MLevel2) {
  // PA 0x900612345, Attr4 0xbb, SH outer (0x100).
  S1WalkResult r = walk(AtOp::kS1E1W, kVaBlock2M);
  EXPECT_EQ(r.err, 0);
  EXPECT_EQ(r.par, 0xBB00000900612900u);
}

TEST_F(S1WalkTest, Ttbr0Block1GLevel1) {
  // PA 0x141234567, Attr1 0x04 is Device: SH reported as 0b10 whatever the
  // descriptor says (it says inner).
  S1WalkResult r = walk(AtOp::kS1E0W, kVaBlock1G);
  EXPECT_EQ(r.err, 0);
  EXPECT_EQ(r.par, 0x0400000141234900u);
  EXPECT_EQ(mem_.reads, (std::vector<u64>{0x40000008, 0x40001038}));
}

TEST_F(S1WalkTest, Ttbr1PageLevel3) {
  // PA 0x777777010, Attr2 0x44 (NC): SH 0b10. ASID bits in TTBR1 ignored.
  S1WalkResult r = walk(AtOp::kS1E1R, kVa1Page);
  EXPECT_EQ(r.err, 0);
  EXPECT_EQ(r.par, 0x4400000777777900u);
  EXPECT_EQ(mem_.reads, (std::vector<u64>{0x40010ff8, 0x40011008, 0x40012010, 0x40013018}));
}

TEST_F(S1WalkTest, Ttbr1Block2MLevel2) {
  // PA 0x200201234, Attr0, SH 0b00.
  EXPECT_EQ(walk(AtOp::kS1E1R, kVa1Block2M).par, 0xFF00000200201800u);
}

TEST_F(S1WalkTest, Ttbr1Block1GLevel1) {
  // PA 0x3c2345678, Attr0, SH inner.
  EXPECT_EQ(walk(AtOp::kS1E1W, kVa1Block1G).par, 0xFF000003C2345980u);
}

TEST_F(S1WalkTest, CnpBitInTtbrIgnored) {
  S1Regs r = regs();
  r.ttbr0_el1 = 0x40000001;  // CnP
  EXPECT_EQ(walk(AtOp::kS1E1R, kVaPage, r).par, 0xFF00000812345980u);
}

TEST_F(S1WalkTest, SmallerInputSizesStartLower) {
  S1Regs r = regs();
  // T0SZ = 25: 39-bit input, start at level 1 (512 entries at 0x40020000).
  r.tcr_el1 = (kTcr & ~u64{0x3f}) | 25;
  r.ttbr0_el1 = 0x40020000;
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x80604abc, r).par, 0xFF00000812345980u);
  EXPECT_EQ(mem_.reads.front(), 0x40020010u);
  // T0SZ = 32: 32-bit input, level 1 table of 4 entries (index VA[31:30]).
  r.tcr_el1 = (kTcr & ~u64{0x3f}) | 32;
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x80604abc, r).par, 0xFF00000812345980u);
  EXPECT_EQ(mem_.reads.front(), 0x40020010u);
  // T0SZ = 34: 30-bit input, start at level 2 directly in the L2 table.
  r.tcr_el1 = (kTcr & ~u64{0x3f}) | 34;
  r.ttbr0_el1 = 0x40002000;
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x00604abc, r).par, 0xFF00000812345980u);
  EXPECT_EQ(mem_.reads, (std::vector<u64>{0x40002018, 0x40003020}));
}

TEST_F(S1WalkTest, BigEndianTables) {
  Mem be;
  be.byteswap = true;
  build(be);
  S1Regs r = regs();
  r.sctlr_el1 |= u64{1} << 25;  // EE
  EXPECT_EQ(s1_walk(AtOp::kS1E1R, kVaPage, r, &Mem::read, &be).par, 0xFF00000812345980u);
}

// --- MMU off -----------------------------------------------------------------

TEST_F(S1WalkTest, MmuOffIsFlatDevice) {
  S1Regs r = regs();
  r.sctlr_el1 = 0x4;  // C set, M clear: still Device-nGnRnE for data
  // PA = VA, ATTR 0x00, SH 0b10, no table read.
  S1WalkResult res = walk(AtOp::kS1E0W, 0x812345678, r);
  EXPECT_EQ(res.err, 0);
  EXPECT_EQ(res.par, 0x0000000812345900u);
  EXPECT_TRUE(mem_.reads.empty());
  // A VA beyond the 48-bit PA: address size fault level 0.
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0001000000000000, r).par, 0x801u);
  // Tagged VA: address size fault unless TBI0 lets the tag through.
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x5a00000012345678, r).par, 0x801u);
  r.tcr_el1 |= u64{1} << 37;  // TBI0
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x5a00000012345678, r).par, 0x0000000012345900u);
}

// --- Translation faults -------------------------------------------------------

TEST_F(S1WalkTest, TranslationFaultLevel0Invalid) {
  // L0[2] absent; FST 0b000100 -> 0x08 | F | RES1.
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0000010000000000).par, 0x809u);
}

TEST_F(S1WalkTest, TranslationFaultLevel0Block) {
  // L0[3] is a block descriptor, reserved at level 0 with 4K.
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0000018000000000).par, 0x809u);
}

TEST_F(S1WalkTest, TranslationFaultLevel1) {
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0000008000000000).par, 0x80Bu);  // L1[0] absent
}

TEST_F(S1WalkTest, TranslationFaultLevel2) {
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0000008080000000).par, 0x80Du);  // L2[0] absent
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0000008080c00000).par, 0x80Du);  // L2[6] junk, bit0 = 0
}

TEST_F(S1WalkTest, TranslationFaultLevel3) {
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(0)).par, 0x80Fu);  // L3[0] absent
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(5)).par, 0x80Fu);  // L3[5]: bit1 == 0 at level 3
}

TEST_F(S1WalkTest, VaOutsideInputRange) {
  S1Regs r = regs();
  // TTBR0 VA with bit 48 set (T0SZ = 16).
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0001008080604abc, r).par, 0x809u);
  // TTBR1 VA with bit 48 clear.
  EXPECT_EQ(walk(AtOp::kS1E1R, 0xfffe008040403010, r).par, 0x809u);
  // T0SZ = 25: bit 39 is outside the 39-bit range.
  r.tcr_el1 = (kTcr & ~u64{0x3f}) | 25;
  r.ttbr0_el1 = 0x40020000;
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0000008080604abc, r).par, 0x809u);
  EXPECT_TRUE(mem_.reads.empty());
}

TEST_F(S1WalkTest, TxszOutOfRangeFaultsLevel0) {
  S1Regs r = regs();
  r.tcr_el1 = (kTcr & ~u64{0x3f}) | 15;
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x80604abc, r).par, 0x809u);
  r.tcr_el1 = (kTcr & ~u64{0x3f}) | 40;
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x604abc, r).par, 0x809u);
}

TEST_F(S1WalkTest, Epd0AndEpd1) {
  S1Regs r = regs();
  r.tcr_el1 |= u64{1} << 7;  // EPD0
  EXPECT_EQ(walk(AtOp::kS1E1R, kVaPage, r).par, 0x809u);
  EXPECT_TRUE(mem_.reads.empty());
  EXPECT_EQ(walk(AtOp::kS1E1R, kVa1Page, r).par, 0x4400000777777900u);
  r = regs();
  r.tcr_el1 |= u64{1} << 23;  // EPD1
  EXPECT_EQ(walk(AtOp::kS1E1R, kVa1Page, r).par, 0x809u);
  EXPECT_EQ(walk(AtOp::kS1E1R, kVaPage, r).par, 0xFF00000812345980u);
}

TEST_F(S1WalkTest, E0pdFaultsOnlyEl0) {
  S1Regs r = regs();
  r.tcr_el1 |= u64{1} << 55;  // E0PD0
  EXPECT_EQ(walk(AtOp::kS1E0R, va_l3(9), r).par, 0x809u);
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(9), r).par, 0xFF00000812349800u);
}

// --- Address size faults ------------------------------------------------------

TEST_F(S1WalkTest, AddressSizeFaultOnLeafOa) {
  S1Regs r = regs();
  // OA 0x10000000000 fits 48 bits...
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(6), r).par, 0xFF00010000000800u);
  // ...but not IPS = 40 bits: address size fault at level 3 (FST 0b000011).
  r.tcr_el1 = (kTcr & ~(u64{7} << 32)) | kIps40;
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(6), r).par, 0x807u);
}

TEST_F(S1WalkTest, AddressSizeFaultOnTableAddress) {
  S1Regs r = regs();
  r.tcr_el1 = (kTcr & ~(u64{7} << 32)) | kIps40;
  // L1[8] points at a table at bit 41: fault at level 1 (the descriptor's).
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0000008200000000, r).par, 0x803u);
  // A TTBR beyond IPS: level 0 address size fault, nothing read.
  r.ttbr0_el1 = 0x10000000000;
  EXPECT_EQ(walk(AtOp::kS1E1R, kVaPage, r).par, 0x801u);
  EXPECT_TRUE(mem_.reads.empty());
}

// --- Access flag ----------------------------------------------------------------

TEST_F(S1WalkTest, AccessFlagFaultLevel2) {
  // FST 0b001010 -> 0x14 | F | RES1.
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0000008080e00000).par, 0x815u);
}

TEST_F(S1WalkTest, AccessFlagFaultLevel3) {
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(7)).par, 0x817u);
}

TEST_F(S1WalkTest, AccessFlagBeatsPermission) {
  // L3[7] is EL1-only with AF = 0: an EL0 read reports the AF fault.
  EXPECT_EQ(walk(AtOp::kS1E0R, va_l3(7)).par, 0x817u);
}

TEST_F(S1WalkTest, HardwareAfUpdateMeansNoAfFault) {
  S1Regs r = regs();
  r.tcr_el1 |= u64{1} << 39;  // HA
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(7), r).par, 0xFF00000812347800u);
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x0000008080e00000, r).par, 0xFF00000900800800u);
}

// --- Permissions -------------------------------------------------------------------

TEST_F(S1WalkTest, El0ReadOfPrivilegedPage) {
  // FST 0b001111 -> 0x1e | F | RES1.
  EXPECT_EQ(walk(AtOp::kS1E0R, va_l3(8)).par, 0x81Fu);
  EXPECT_EQ(walk(AtOp::kS1E0W, va_l3(8)).par, 0x81Fu);
  EXPECT_EQ(walk(AtOp::kS1E1W, va_l3(8)).par, 0xFF00000812348800u);
}

TEST_F(S1WalkTest, El0WriteOfReadOnlyPage) {
  EXPECT_EQ(walk(AtOp::kS1E0W, va_l3(9)).par, 0x81Fu);
  EXPECT_EQ(walk(AtOp::kS1E0R, va_l3(9)).par, 0xFF00000812349800u);
  EXPECT_EQ(walk(AtOp::kS1E1W, va_l3(9)).par, 0x81Fu);
}

TEST_F(S1WalkTest, El1WriteOfReadOnlyPage) {
  EXPECT_EQ(walk(AtOp::kS1E1W, va_l3(10)).par, 0x81Fu);
  EXPECT_EQ(walk(AtOp::kS1E1WP, va_l3(10)).par, 0x81Fu);
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(10)).par, 0xFF0000081234A800u);
  EXPECT_EQ(walk(AtOp::kS1E0R, va_l3(10)).par, 0x81Fu);
}

TEST_F(S1WalkTest, El0ReadWritePage) {
  EXPECT_EQ(walk(AtOp::kS1E0W, va_l3(11)).par, 0xFF0000081234B800u);
  EXPECT_EQ(walk(AtOp::kS1E1W, va_l3(11)).par, 0xFF0000081234B800u);
}

TEST_F(S1WalkTest, ApTableReadOnly) {
  // L1[9] has APTable = 0b10 over a 2M block that is EL0 RW: FST 0b001110.
  constexpr u64 kVa = 0x0000008240001000;
  EXPECT_EQ(walk(AtOp::kS1E1W, kVa).par, 0x81Du);
  EXPECT_EQ(walk(AtOp::kS1E0W, kVa).par, 0x81Du);
  EXPECT_EQ(walk(AtOp::kS1E1R, kVa).par, 0xFF00000900001800u);
  EXPECT_EQ(walk(AtOp::kS1E0R, kVa).par, 0xFF00000900001800u);
}

TEST_F(S1WalkTest, ApTableNoEl0) {
  // L1[10] has APTable = 0b01 over a 2M block that is EL0 RW.
  constexpr u64 kVa = 0x0000008280000000;
  EXPECT_EQ(walk(AtOp::kS1E0R, kVa).par, 0x81Du);
  EXPECT_EQ(walk(AtOp::kS1E0W, kVa).par, 0x81Du);
  EXPECT_EQ(walk(AtOp::kS1E1W, kVa).par, 0xFF00000900200800u);
  // EL0 has no access any more, so PAN does not restrict EL1.
  S1Regs r = regs();
  r.pan = true;
  EXPECT_EQ(walk(AtOp::kS1E1WP, kVa, r).par, 0xFF00000900200800u);
}

TEST_F(S1WalkTest, HpdDisablesApTable) {
  S1Regs r = regs();
  r.tcr_el1 |= u64{1} << 41;  // HPD0
  EXPECT_EQ(walk(AtOp::kS1E1W, 0x0000008240001000, r).par, 0xFF00000900001800u);
  EXPECT_EQ(walk(AtOp::kS1E0W, 0x0000008240001000, r).par, 0xFF00000900001800u);
  EXPECT_EQ(walk(AtOp::kS1E0R, 0x0000008280000000, r).par, 0xFF00000900200800u);
  // HPD1 does not affect the TTBR0 half.
  r.tcr_el1 = kTcr | (u64{1} << 42);
  EXPECT_EQ(walk(AtOp::kS1E1W, 0x0000008240001000, r).par, 0x81Du);
}

TEST_F(S1WalkTest, PanRestrictsOnlyPanOps) {
  S1Regs r = regs();
  r.pan = true;
  // L3[11] is EL0 accessible: S1E1RP/S1E1WP fault, S1E1R/S1E1W do not.
  EXPECT_EQ(walk(AtOp::kS1E1RP, va_l3(11), r).par, 0x81Fu);
  EXPECT_EQ(walk(AtOp::kS1E1WP, va_l3(11), r).par, 0x81Fu);
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(11), r).par, 0xFF0000081234B800u);
  EXPECT_EQ(walk(AtOp::kS1E1W, va_l3(11), r).par, 0xFF0000081234B800u);
  // EL0 read-only pages are covered too.
  EXPECT_EQ(walk(AtOp::kS1E1RP, va_l3(9), r).par, 0x81Fu);
  // A privileged-only page is fine under PAN.
  EXPECT_EQ(walk(AtOp::kS1E1RP, va_l3(8), r).par, 0xFF00000812348800u);
  // PSTATE.PAN == 0: no restriction.
  r.pan = false;
  EXPECT_EQ(walk(AtOp::kS1E1RP, va_l3(11), r).par, 0xFF0000081234B800u);
}

TEST_F(S1WalkTest, EpanCoversEl0Executable) {
  S1Regs r = regs();
  r.pan = true;
  EXPECT_EQ(walk(AtOp::kS1E1RP, va_l3(12), r).par, 0xFF0000081234C800u);
  r.sctlr_el1 |= u64{1} << 57;  // EPAN
  EXPECT_EQ(walk(AtOp::kS1E1RP, va_l3(12), r).par, 0x81Fu);
  // UXN page: not EL0-executable, so not restricted.
  EXPECT_EQ(walk(AtOp::kS1E1RP, va_l3(13), r).par, 0xFF0000081234D800u);
}

TEST_F(S1WalkTest, DirtyBitModifier) {
  S1Regs r = regs();
  EXPECT_EQ(walk(AtOp::kS1E1W, va_l3(14), r).par, 0x81Fu);
  r.tcr_el1 |= u64{1} << 40;  // HD alone: ignored without HA
  EXPECT_EQ(walk(AtOp::kS1E1W, va_l3(14), r).par, 0x81Fu);
  r.tcr_el1 |= u64{1} << 39;  // HA + HD: writable-clean, the write is allowed
  EXPECT_EQ(walk(AtOp::kS1E1W, va_l3(14), r).par, 0xFF0000081234E800u);
  EXPECT_EQ(walk(AtOp::kS1E0R, va_l3(14), r).par, 0x81Fu);  // still EL1 only
}

// --- Read failures ------------------------------------------------------------------

TEST_F(S1WalkTest, ReadFailurePropagates) {
  // External abort on walk: FST 0b0101LL.
  mem_.fail_at = 0x40000008;
  S1WalkResult r = walk(AtOp::kS1E1R, kVaPage);
  EXPECT_EQ(r.err, -5);
  EXPECT_EQ(r.par, 0x829u);
  mem_.fail_at = 0x40002018;
  mem_.fail_err = -14;
  r = walk(AtOp::kS1E1R, kVaPage);
  EXPECT_EQ(r.err, -14);
  EXPECT_EQ(r.par, 0x82Du);
  mem_.fail_at = 0x40003020;
  r = walk(AtOp::kS1E1W, kVaPage);
  EXPECT_EQ(r.err, -14);
  EXPECT_EQ(r.par, 0x82Fu);
  mem_.fail_at = 0x40001010;
  r = walk(AtOp::kS1E0R, kVaPage);
  EXPECT_EQ(r.err, -14);
  EXPECT_EQ(r.par, 0x82Bu);
}

// --- Attributes ----------------------------------------------------------------------

TEST_F(S1WalkTest, MairIndexAndShareability) {
  // L3[16+i] uses AttrIndx i with SH inner.
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(16)).par, 0xFF00000812350980u);  // WB: SH 0b11
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(17)).par, 0x0400000812351900u);  // Device: 0b10
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(18)).par, 0x4400000812352900u);  // NC: 0b10
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(19)).par, 0x0000000812353900u);  // nGnRnE: 0b10
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(20)).par, 0xBB00000812354980u);  // WT: 0b11
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(21)).par, 0x4F00000812355980u);  // inner WB: 0b11
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(22)).par, 0x4000000812356900u);  // NC XS=0: 0b10
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(23)).par, 0xF000000812357980u);  // tagged WB: 0b11
  // Descriptor SH on Normal WB memory.
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(24)).par, 0xFF00000812358800u);  // 0b00
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(25)).par, 0xFF00000812359800u);  // 0b01 -> 0b00
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(26)).par, 0xFF0000081235A900u);  // 0b10
}

TEST_F(S1WalkTest, CacheDisabledReportsNonCacheable) {
  S1Regs r = regs();
  r.sctlr_el1 = 0x1;  // M only
  EXPECT_EQ(walk(AtOp::kS1E1R, kVaPage, r).par, 0x4400000812345900u);
  EXPECT_EQ(walk(AtOp::kS1E1R, va_l3(17), r).par, 0x0400000812351900u);  // Device unchanged
}

// --- Top byte ignore -----------------------------------------------------------------

TEST_F(S1WalkTest, TopByteIgnore) {
  S1Regs r = regs();
  EXPECT_EQ(walk(AtOp::kS1E1R, 0xab00008080604abc, r).par, 0x809u);
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x12ffff8040403010, r).par, 0x809u);
  r.tcr_el1 |= u64{1} << 37;  // TBI0
  EXPECT_EQ(walk(AtOp::kS1E1R, 0xab00008080604abc, r).par, 0xFF00000812345980u);
  // VA[55] still selects the half: a 0xff tag with VA[55] == 0 is TTBR0.
  EXPECT_EQ(walk(AtOp::kS1E1R, 0xff00008080604abc, r).par, 0xFF00000812345980u);
  // TBI0 does not cover the TTBR1 half.
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x12ffff8040403010, r).par, 0x809u);
  r.tcr_el1 |= u64{1} << 38;  // TBI1
  EXPECT_EQ(walk(AtOp::kS1E1R, 0x12ffff8040403010, r).par, 0x4400000777777900u);
}

// --- Unsupported layouts --------------------------------------------------------------

TEST_F(S1WalkTest, NonFourKGranuleRefused) {
  struct Case {
    u64 tcr;
    u64 va;
  };
  const Case cases[] = {
      {(kTcr & ~u64{0xc000}) | (u64{1} << 14), kVaPage},          // TG0 = 64K
      {(kTcr & ~u64{0xc000}) | (u64{2} << 14), kVaPage},          // TG0 = 16K
      {(kTcr & ~u64{0xc0000000}) | (u64{3} << 30), kVa1Page},     // TG1 = 64K
      {(kTcr & ~u64{0xc0000000}) | (u64{1} << 30), kVa1Page},     // TG1 = 16K
      {kTcr | (u64{1} << 59), kVaPage},                           // DS (LPA2)
  };
  for (const Case& c : cases) {
    S1Regs r = regs();
    r.tcr_el1 = c.tcr;
    S1WalkResult res = walk(AtOp::kS1E1R, c.va, r);
    EXPECT_EQ(res.err, -95) << std::hex << c.tcr;
    EXPECT_EQ(res.par, 0x809u) << std::hex << c.tcr;
    EXPECT_TRUE(mem_.reads.empty());
    EXPECT_EQ(s1_walk_supported(c.va, r), -95);
  }
  // The other half still walks when it uses 4K.
  S1Regs r = regs();
  r.tcr_el1 = (kTcr & ~u64{0xc0000000}) | (u64{3} << 30);
  EXPECT_EQ(s1_walk_supported(kVaPage, r), 0);
  EXPECT_EQ(walk(AtOp::kS1E1R, kVaPage, r).par, 0xFF00000812345980u);
  // A disabled half is an exact level 0 fault, even with a reserved TG1.
  r.tcr_el1 = (kTcr & ~u64{0xc0000000}) | (u64{1} << 23);
  S1WalkResult res = walk(AtOp::kS1E1R, kVa1Page, r);
  EXPECT_EQ(res.err, 0);
  EXPECT_EQ(res.par, 0x809u);
  // MMU off needs no granule.
  r.sctlr_el1 = 0;
  r.tcr_el1 = (kTcr & ~u64{0xc000}) | (u64{1} << 14);
  EXPECT_EQ(s1_walk_supported(kVaPage, r), 0);
}

}  // namespace
}  // namespace pkvm
