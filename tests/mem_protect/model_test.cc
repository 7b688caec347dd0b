// SPDX-License-Identifier: Apache-2.0
// Tests of the reference model (model.h), of the invariant checker and the
// differential driver (invariants.h), and a deterministic random-sequence
// differential test of mem_protect against the model.
#include <gtest/gtest.h>

#include <cinttypes>
#include <random>
#include <string>

#include "tests/mem_protect/invariants.h"
#include "tests/mem_protect/model.h"

namespace pkvm::mptest {
namespace {

using S = PageState;

constexpr u64 kPoolPfn = Layout::kArenaBase >> 12;  // hyp-internal pool
constexpr u64 kH = 0x40090;                         // first host page of R0
constexpr u64 kR0End = 0x40400;
constexpr u64 kR1 = 0x40500;                        // no-map region
constexpr u64 kR2 = 0x40580;
constexpr u64 kR2Block = 0x40600;                   // 2 MiB aligned, in R2

Op op(OpKind k, u64 pfn = 0, u64 nr = 0, u32 g = 0, u64 gfn = 0) {
  Op o;
  o.kind = k;
  o.pfn = pfn;
  o.nr = nr;
  o.guest = g;
  o.gfn = gfn;
  return o;
}
Op abort_at(u64 addr) {
  Op o;
  o.kind = OpKind::kHostAbort;
  o.addr = addr;
  return o;
}
Op create() { return op(OpKind::kGuestCreate); }
Op destroy(u32 g) { return op(OpKind::kGuestDestroy, 0, 0, g); }

// A model booted like World: the pool and the hyp image reserved.
Model booted_model() {
  Model m(Layout::model_config());
  EXPECT_EQ(m.hyp_reserve(kPoolPfn, Layout::kPoolPages), 0);
  EXPECT_EQ(m.hyp_reserve(Layout::kHypImagePfn, Layout::kHypImagePages), 0);
  return m;
}

// --- The model on its own ------------------------------------------------------

TEST(Model, BootReservesTheHypervisorsMemory) {
  Model m = booted_model();
  EXPECT_EQ(m.page(kPoolPfn).owner, kHyp);
  EXPECT_TRUE(m.page(kPoolPfn).hyp_internal);
  EXPECT_EQ(m.hyp_state(Layout::kHypImagePfn + 15), S::kOwned);
  EXPECT_EQ(m.host_state(Layout::kHypImagePfn + 15), S::kNoPage);
  EXPECT_EQ(m.host_state(kH), S::kOwned);
  EXPECT_FALSE(m.page(kH).host_mapped);
  EXPECT_EQ(m.hyp_reserve(kH - 1, 2), -kEPERM);  // overlaps the image
  EXPECT_EQ(m.hyp_reserve(0x40400, 1), -kEINVAL);  // MMIO
  EXPECT_EQ(m.self_check(), "");
}

TEST(Model, ArgumentValidation) {
  Model m = booted_model();
  const auto p = [&](const Op& o) { return m.predict(o).ret; };
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, kH, 0)), -kEINVAL);
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, kH, 513)), -kE2BIG);
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, ~u64{0}, 513)), -kE2BIG);  // the count is checked first
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, ~u64{0}, 1)), -kEINVAL);
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, ~u64{0} - 1, 4)), -kEINVAL);  // pfn + nr wraps
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, (u64{1} << 52) - 1, 2)), -kEINVAL);
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, kR1, 1)), -kEINVAL);       // no-map
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, kR0End - 1, 2)), -kEINVAL);  // runs into the MMIO gap
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, kR2 - 1, 2)), -kEINVAL);     // spans two adjacent regions
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, 0x40400, 1)), -kEINVAL);    // MMIO
  EXPECT_EQ(p(op(OpKind::kHostShareHyp, kH, 512)), 0);
  EXPECT_EQ(p(op(OpKind::kHypChecksum, kH, 1)), -kEPERM);
  // Guests: count, then guest, then host range, then guest range.
  EXPECT_EQ(p(op(OpKind::kHostShareGuest, kH, 0, 2, 0)), -kEINVAL);
  EXPECT_EQ(p(op(OpKind::kHostShareGuest, kH, 1, 2, 0)), -kENOENT);
  EXPECT_EQ(p(op(OpKind::kHostShareGuest, kH, 1, 1, 0)), -kENOENT);  // the hypervisor is no guest
  EXPECT_EQ(m.apply(create()), 2);
  EXPECT_EQ(p(op(OpKind::kHostShareGuest, kR1, 1, 2, 0)), -kEINVAL);
  EXPECT_EQ(p(op(OpKind::kHostShareGuest, kH, 2, 2, (u64{1} << 24) - 1)), -kEINVAL);  // past the guest IPA space
  EXPECT_EQ(p(op(OpKind::kHostShareGuest, kH, 2, 2, ~u64{0})), -kEINVAL);              // wraps
  EXPECT_EQ(p(op(OpKind::kHostShareGuest, kH, 1, 2, (u64{1} << 24) - 1)), 0);
  EXPECT_EQ(p(op(OpKind::kHostReclaimGuest, kH, 1, 7)), -kENOENT);
  EXPECT_EQ(p(op(OpKind::kHostReclaimGuest, kR1, 1, 2)), -kEINVAL);  // range before liveness
  EXPECT_EQ(p(op(OpKind::kHostReclaimGuest, kH, 1, 2)), -kEBUSY);
  EXPECT_EQ(p(destroy(3)), -kENOENT);
}

TEST(Model, HostHypSharingWithPins) {
  Model m = booted_model();
  EXPECT_EQ(m.apply(op(OpKind::kHostShareHyp, kH, 4)), 0);
  EXPECT_EQ(m.host_state(kH), S::kSharedOwned);
  EXPECT_EQ(m.hyp_state(kH + 3), S::kSharedBorrowed);
  EXPECT_TRUE(m.page(kH).host_mapped);
  EXPECT_EQ(m.apply(op(OpKind::kHostShareHyp, kH + 3, 2)), -kEPERM);
  EXPECT_EQ(m.apply(op(OpKind::kHostDonateHyp, kH, 1)), -kEPERM);
  EXPECT_EQ(m.apply(op(OpKind::kHypDonateHost, kH, 1)), -kEPERM);
  EXPECT_EQ(m.apply(op(OpKind::kHypPin, kH + 1, 2)), 0);
  EXPECT_EQ(m.apply(op(OpKind::kHypPin, kH + 1, 4)), -kEPERM);  // kH+4 is not shared
  EXPECT_EQ(m.apply(op(OpKind::kHostUnshareHyp, kH, 4)), -kEBUSY);
  EXPECT_EQ(m.apply(op(OpKind::kHostUnshareHyp, kH, 5)), -kEPERM);  // state before pins
  EXPECT_EQ(m.apply(op(OpKind::kHypUnpin, kH + 1, 2)), 0);
  EXPECT_EQ(m.apply(op(OpKind::kHypUnpin, kH + 1, 1)), -kEPERM);
  EXPECT_EQ(m.apply(op(OpKind::kHypChecksum, kH, 4)), 0);
  EXPECT_EQ(m.apply(op(OpKind::kHostUnshareHyp, kH, 4)), 0);
  EXPECT_EQ(m.host_state(kH), S::kOwned);
  EXPECT_TRUE(m.page(kH).host_mapped);  // the host keeps its mapping
  EXPECT_EQ(m.hyp_state(kH), S::kNoPage);
  EXPECT_EQ(m.apply(op(OpKind::kHostUnshareHyp, kH, 1)), -kEPERM);
  EXPECT_EQ(m.self_check(), "");
}

TEST(Model, HostHypDonation) {
  Model m = booted_model();
  EXPECT_EQ(m.apply(op(OpKind::kHostDonateHyp, kH, 3)), 0);
  EXPECT_EQ(m.host_state(kH + 2), S::kNoPage);
  EXPECT_EQ(m.hyp_state(kH + 2), S::kOwned);
  EXPECT_EQ(m.apply(op(OpKind::kHypPin, kH, 1)), -kEPERM);
  EXPECT_EQ(m.apply(op(OpKind::kHypDonateHost, kH + 2, 2)), -kEPERM);  // kH+3 is the host's
  EXPECT_EQ(m.apply(op(OpKind::kHypDonateHost, kH - 1, 2)), -kEPERM);  // kH-1 is hyp-internal
  EXPECT_EQ(m.apply(op(OpKind::kHypDonateHost, kPoolPfn, 1)), -kEPERM);
  EXPECT_EQ(m.apply(op(OpKind::kHypDonateHost, kH, 3)), 0);
  EXPECT_EQ(m.host_state(kH), S::kOwned);
  EXPECT_FALSE(m.page(kH).host_mapped);  // donations come back unmapped
  EXPECT_EQ(m.self_check(), "");
}

TEST(Model, GuestSharingAndDonation) {
  Model m = booted_model();
  ASSERT_EQ(m.apply(create()), 2);
  EXPECT_EQ(m.apply(op(OpKind::kHostShareGuest, kH, 2, 2, 0x10)), 0);
  EXPECT_EQ(m.guest_state(2, 0x11), S::kSharedBorrowed);
  EXPECT_EQ(m.host_state(kH + 1), S::kSharedOwned);
  EXPECT_EQ(m.apply(op(OpKind::kHostShareGuest, kH + 2, 1, 2, 0x11)), -kEPERM);  // gfn taken
  EXPECT_EQ(m.apply(op(OpKind::kGuestShareHost, 0, 1, 2, 0x10)), -kEPERM);       // not the guest's
  EXPECT_EQ(m.apply(op(OpKind::kHostDonateGuest, kH + 2, 2, 2, 0x20)), 0);
  EXPECT_EQ(m.guest_state(2, 0x21), S::kOwned);
  EXPECT_EQ(m.host_state(kH + 3), S::kNoPage);
  EXPECT_EQ(m.page(kH + 3).owner, 2);
  EXPECT_EQ(m.apply(op(OpKind::kGuestShareHost, 0, 2, 2, 0x20)), 0);
  EXPECT_EQ(m.host_state(kH + 2), S::kSharedBorrowed);
  EXPECT_EQ(m.guest_state(2, 0x20), S::kSharedOwned);
  EXPECT_EQ(m.apply(op(OpKind::kHostShareHyp, kH + 2, 1)), -kEPERM);  // borrowed pages cannot be re-lent
  EXPECT_EQ(m.apply(op(OpKind::kGuestUnshareHost, 0, 1, 2, 0x21)), 0);
  EXPECT_EQ(m.host_state(kH + 3), S::kNoPage);
  EXPECT_EQ(m.apply(op(OpKind::kHostUnshareGuest, 0, 2, 2, 0x10)), 0);
  EXPECT_EQ(m.guest_state(2, 0x10), S::kNoPage);
  EXPECT_EQ(m.host_state(kH), S::kOwned);
  EXPECT_EQ(m.apply(op(OpKind::kHostUnshareGuest, 0, 1, 2, 0x20)), -kEPERM);  // owned, not borrowed
  EXPECT_EQ(m.self_check(), "");
}

TEST(Model, GuestTeardownAndReclaim) {
  Model m = booted_model();
  ASSERT_EQ(m.apply(create()), 2);
  ASSERT_EQ(m.apply(op(OpKind::kHostShareGuest, kH, 2, 2, 0)), 0);
  ASSERT_EQ(m.apply(op(OpKind::kHostDonateGuest, kH + 2, 3, 2, 8)), 0);
  ASSERT_EQ(m.apply(op(OpKind::kGuestShareHost, 0, 1, 2, 8)), 0);
  EXPECT_EQ(m.apply(op(OpKind::kHostReclaimGuest, kH + 2, 3, 2)), -kEBUSY);
  ASSERT_EQ(m.apply(destroy(2)), 0);
  EXPECT_EQ(m.host_state(kH), S::kOwned);  // lent by the host: back
  EXPECT_TRUE(m.page(kH).host_mapped);
  EXPECT_EQ(m.host_state(kH + 2), S::kNoPage);  // lent to the host: taken back
  EXPECT_FALSE(m.page(kH + 2).host_mapped);
  EXPECT_EQ(m.page(kH + 2).owner, 2);
  EXPECT_TRUE(m.guest(2)->used);
  EXPECT_FALSE(m.guest(2)->alive);
  EXPECT_EQ(m.apply(destroy(2)), -kENOENT);
  EXPECT_EQ(m.apply(create()), 3);  // id 2 is still taken
  EXPECT_EQ(m.apply(op(OpKind::kHostReclaimGuest, kH, 1, 2)), -kEPERM);
  EXPECT_EQ(m.apply(op(OpKind::kHostReclaimGuest, kH + 2, 2, 2)), 0);
  EXPECT_TRUE(m.guest(2)->used);
  EXPECT_EQ(m.apply(op(OpKind::kHostReclaimGuest, kH + 4, 1, 2)), 0);
  EXPECT_FALSE(m.guest(2)->used);
  EXPECT_EQ(m.apply(op(OpKind::kHostReclaimGuest, kH + 4, 1, 2)), -kENOENT);
  EXPECT_EQ(m.host_state(kH + 4), S::kOwned);
  EXPECT_EQ(m.apply(create()), 2);
  EXPECT_EQ(m.self_check(), "");
}

TEST(Model, GuestSlots) {
  Model m = booted_model();
  for (u32 g = 2; g < 10; ++g) EXPECT_EQ(m.apply(create()), int(g));
  EXPECT_EQ(m.apply(create()), -kEBUSY);
  EXPECT_EQ(m.apply(destroy(5)), 0);  // no pages: the id is free at once
  EXPECT_EQ(m.apply(create()), 5);
}

TEST(Model, HostAbortBlocks) {
  Model m = booted_model();
  const auto expect_block = [&](u64 addr, u32 entry, u32 level, u64 start, u64 max_tables) {
    const Outcome o = m.predict(abort_at(addr));
    EXPECT_EQ(o.ret, 0) << std::hex << addr;
    EXPECT_EQ(o.entry_level, entry) << std::hex << addr;
    EXPECT_EQ(o.block_level, level) << std::hex << addr;
    EXPECT_EQ(o.block.start, start) << std::hex << addr;
    EXPECT_EQ(o.max_tables, max_tables) << std::hex << addr;
    m.commit(abort_at(addr));
  };
  // The 1 GiB below the arena is one MMIO gap: a level-1 block.
  expect_block(0x1234, 1, 1, 0, 0);
  EXPECT_EQ(m.predict(abort_at(0x3fff0000)).ret, -kEAGAIN);
  // 2 MiB aligned and inside R0, under a level-2 entry (the hyp's pages make
  // the 1 GiB around it non-uniform).
  expect_block(0x40200000 + 0x40, 2, 2, 0x40200000, 0);
  EXPECT_EQ(m.predict(abort_at(0x403ff000)).ret, -kEAGAIN);
  // Next to the hyp image: only a page fits, under a level-3 entry.
  expect_block(kH << 12, 3, 3, kH << 12, 0);
  // R2 starts mid-2MiB: a page, under an empty level-2 entry (two new tables at worst).
  expect_block(kR2 << 12, 2, 3, kR2 << 12, 2);
  // The MMIO gap inside the arena and the gap above the regions.
  expect_block(0x40400000, 3, 3, 0x40400000, 0);
  expect_block(0x40c00000, 2, 2, 0x40c00000, 0);
  expect_block(0x80000000, 1, 1, 0x80000000, 0);
  expect_block((u64{1} << 40) - 1, 1, 1, (u64{1} << 40) - (u64{1} << 30), 0);
  EXPECT_EQ(m.predict(abort_at(u64{1} << 40)).ret, -kEINVAL);
  EXPECT_EQ(m.predict(abort_at(kPoolPfn << 12)).ret, -kEPERM);
  // No-map memory is the host's to touch, just not to give away.
  expect_block(kR1 << 12, 3, 3, kR1 << 12, 0);
  EXPECT_EQ(m.self_check(), "");
}

TEST(Model, TableBoundsCountContiguousRuns) {
  Model m = booted_model();
  ASSERT_EQ(m.apply(create()), 2);
  ASSERT_EQ(m.apply(op(OpKind::kHostShareGuest, kH, 8, 2, 0)), 0);
  // One run: 4 guest tables + 4 host tables at most.
  EXPECT_EQ(m.predict(op(OpKind::kHostUnshareGuest, 0, 8, 2, 0)).max_tables, 8u);
  ASSERT_EQ(m.apply(op(OpKind::kHostShareGuest, kH + 100, 4, 2, 8)), 0);
  EXPECT_EQ(m.predict(op(OpKind::kHostUnshareGuest, 0, 12, 2, 0)).max_tables, 12u);
  EXPECT_EQ(m.predict(destroy(2)).max_tables, 8u);
  EXPECT_EQ(m.predict(op(OpKind::kHypPin, kH, 1)).max_tables, 0u);
}

TEST(ModelDeathTest, CommitOfAFailingOperationIsAModelBug) {
  Model m = booted_model();
  EXPECT_DEATH(m.commit(op(OpKind::kHostUnshareHyp, kH, 1)), "commit of a failing op");
}

// --- The invariant checker ----------------------------------------------------------

std::string check(World& w) {
  Problems p;
  check_all(w, &p);
  return p.str();
}

// Runs ops through a Driver and requires agreement.
void run(World& w, std::initializer_list<Op> ops) {
  Driver d(w, DriverOptions{1, kRelaxNone});
  for (const Op& o : ops) ASSERT_EQ(d.step(o), "") << to_string(o);
}

TEST(Invariants, FreshWorldIsConsistent) {
  World w;
  EXPECT_EQ(check(w), "");
}

TEST(Invariants, ConsistentAfterEveryKindOfTransition) {
  World w;
  run(w, {op(OpKind::kHostShareHyp, kH, 4), op(OpKind::kHypPin, kH, 1), op(OpKind::kHostDonateHyp, kH + 8, 2),
          create(), op(OpKind::kHostShareGuest, kR2Block, 512, 2, 0x200),
          op(OpKind::kHostDonateGuest, kH + 16, 8, 2, 0x10), op(OpKind::kGuestShareHost, 0, 2, 2, 0x12),
          abort_at(0x40200000), abort_at(0), abort_at(0x40400000), op(OpKind::kHostUnshareGuest, 0, 512, 2, 0x200),
          destroy(2), op(OpKind::kHostReclaimGuest, kH + 16, 8, 2), op(OpKind::kHypUnpin, kH, 1),
          op(OpKind::kHostUnshareHyp, kH, 4), op(OpKind::kHypDonateHost, kH + 8, 2)});
  EXPECT_EQ(check(w), "");
}

TEST(Invariants, DetectsAnAnnotatedHostOwnedPage) {
  World w;
  u32 level = 0;
  u64* table = nullptr;
  u64* slot = leaf_slot(w.mp().host_pgt(), kH << 12, &level, &table);
  ASSERT_EQ(level, 3u);
  ASSERT_EQ(*slot, 0u);
  *slot = desc::make_owner(kOwnerHyp);
  w.plat().get_page(table);  // keep the reference count right: only ownership is wrong
  Problems p;
  check_pages(w, kH, kH + 1, &p);
  EXPECT_FALSE(p.ok());
  EXPECT_NE(p.str().find("must have an empty entry"), std::string::npos) << p.str();
  Problems s;
  check_structure(w, &s);
  EXPECT_TRUE(s.ok()) << s.str();
}

TEST(Invariants, DetectsAWrongReferenceCount) {
  World w;
  u32 level = 0;
  u64* table = nullptr;
  u64* slot = leaf_slot(w.mp().host_pgt(), kH << 12, &level, &table);
  *slot = desc::make_owner(kOwnerHyp);  // a counted entry without its reference
  Problems p;
  check_structure(w, &p);
  EXPECT_NE(p.str().find("reference count"), std::string::npos) << p.str();
}

TEST(Invariants, DetectsABlockCoveringAnotherOwnersPage) {
  World w;
  run(w, {abort_at(0x40200000)});
  // The model alone hands one page of the block to the hypervisor.
  ASSERT_EQ(w.model().apply(op(OpKind::kHostDonateHyp, 0x40201, 1)), 0);
  Problems p;
  check_pages(w, 0x40200, 0x40400, &p);
  EXPECT_NE(p.str().find("must be annotated"), std::string::npos) << p.str();
}

// The metadata mirror of each side's state is what transitions check:
// a mirror that disagrees with the tables (and the model) must be caught.
TEST(Invariants, DetectsAStaleStateMirror) {
  for (int field = 0; field < 3; ++field) {
    World w;
    ASSERT_EQ(w.mp().host_share_hyp(kH, 1), 0);
    ASSERT_EQ(w.model().apply(op(OpKind::kHostShareHyp, kH, 1)), 0);
    Problems clean;
    check_pages(w, kH, kH + 1, &clean);
    ASSERT_TRUE(clean.ok()) << clean.str();
    PageMeta* m = w.mp().meta(kH);
    ASSERT_NE(m, nullptr);
    if (field == 0) m->host_state = u8(PageState::kOwned);
    if (field == 1) m->hyp_state_inv = 0;  // NOPAGE
    if (field == 2) {
      m->host_state = u8(PageState::kNoPage);
      m->owner = kOwnerHyp;
    }
    Problems p;
    check_pages(w, kH, kH + 1, &p);
    EXPECT_NE(p.str().find("metadata: host"), std::string::npos) << field << ": " << p.str();
  }
}

TEST(Invariants, DetectsAnExtraHypMapping) {
  World w;
  ASSERT_EQ(w.mp().hyp_pgt().hyp_map(Va(kH << 12), kPage, PhysAddr(kH << 12), kProtRW), 0);
  Problems p;
  check_pages(w, kH, kH + 1, &p);
  EXPECT_NE(p.str().find("must not be mapped"), std::string::npos) << p.str();
}

TEST(Invariants, DetectsAHypMappingOutsideMemory) {
  World w;
  ASSERT_EQ(w.mp().hyp_pgt().hyp_map(Va(0x10000000), kPage, PhysAddr(0x10000000), kProtRW), 0);
  Problems p;
  check_structure(w, &p);
  EXPECT_NE(p.str().find("outside memory"), std::string::npos) << p.str();
}

TEST(Invariants, DetectsALeakedPoolPage) {
  World w;
  ASSERT_NE(w.plat().zalloc_page(), nullptr);
  Problems p;
  check_structure(w, &p);
  EXPECT_NE(p.str().find("leak"), std::string::npos) << p.str();
}

TEST(Invariants, DetectsAnEmptyTableLeftLinked) {
  World w;
  u32 level = 0;
  u64* table = nullptr;
  u64* slot = leaf_slot(w.mp().host_pgt(), 0x80000000, &level, &table);
  ASSERT_EQ(level, 1u);
  void* page = w.plat().zalloc_page();
  ASSERT_NE(page, nullptr);
  *slot = desc::make_table(w.plat().virt_to_phys(page).value());
  w.plat().get_page(table);
  Problems p;
  check_structure(w, &p);
  EXPECT_NE(p.str().find("empty table page"), std::string::npos) << p.str();
  EXPECT_EQ(p.str().find("leak"), std::string::npos) << p.str();
}

TEST(Invariants, DetectsAGuestMappingToTheWrongPage) {
  World w;
  run(w, {create(), op(OpKind::kHostShareGuest, kH, 1, 2, 0x10)});
  u32 level = 0;
  u64* slot = leaf_slot(*w.mp().guest_pgt(2), 0x10 << 12, &level);
  ASSERT_TRUE(desc::is_valid(*slot));
  *slot += kPage;
  Problems p;
  check_guest(w, 2, &p);
  EXPECT_NE(p.str().find("expected pfn"), std::string::npos) << p.str();
}

TEST(Invariants, DetectsWrongMetadata) {
  World w;
  w.mp().meta(kH)->pin_count = 3;
  Problems p;
  check_pages(w, kH, kH + 1, &p);
  EXPECT_NE(p.str().find("pin count 3"), std::string::npos) << p.str();
}

TEST(Invariants, DetectsAnUnknownMmioMapping) {
  World w;
  ASSERT_EQ(w.mp().host_stage2_idmap(0x80000000), 0);  // behind the model's back
  Problems p;
  check_mmio(w, &p);
  EXPECT_NE(p.str().find("MMIO mappings differ"), std::string::npos) << p.str();
}

TEST(Invariants, DetectsABreakBeforeMakeViolation) {
  World w;
  ASSERT_NE(w.bbm(), nullptr);
  run(w, {abort_at(kH << 12)});
  Problems clean;
  check_bbm(w, &clean);
  EXPECT_TRUE(clean.ok()) << clean.str();
  // A live page mapping retargeted in place, as a buggy update would.
  u32 level = 0;
  u64* slot = leaf_slot(w.mp().host_pgt(), kH << 12, &level);
  ASSERT_TRUE(desc::is_valid(*slot));
  const u64 old = *slot, changed = old + kPage;
  *slot = changed;
  w.plat().pte_written(slot, old, changed, kH << 12, level, 0);
  Problems p;
  check_bbm(w, &p);
  EXPECT_NE(p.str().find("break-before-make"), std::string::npos) << p.str();
}

TEST(Invariants, DumpCheckComparesWithTheModel) {
  World w;
  Problems ok;
  check_dump_all(w, &ok);
  EXPECT_TRUE(ok.ok()) << ok.str();
  ASSERT_EQ(w.model().apply(op(OpKind::kHostDonateHyp, kH, 1)), 0);  // model only
  Problems p;
  check_dump(w, kH - 4, 8, &p);
  EXPECT_FALSE(p.ok());
  Problems args;
  check_dump(w, kH, 0, &args);  // -EINVAL for max == 0 is expected: no problem
  check_dump(w, (u64{1} << 28) + 1, 4, &args);
  EXPECT_TRUE(args.ok()) << args.str();
}

// --- The driver ------------------------------------------------------------------------

TEST(Driver, ReportsAReturnCodeDivergence) {
  World w;
  Driver d(w);
  ASSERT_EQ(w.model().apply(op(OpKind::kHostShareHyp, kH, 1)), 0);  // model only
  const std::string err = d.step(op(OpKind::kHostShareHyp, kH, 1));
  EXPECT_NE(err.find("the specification says -1"), std::string::npos) << err;
}

TEST(Driver, ReportsAStateDivergenceAfterAnAgreeingReturnCode) {
  World w;
  Driver d(w);
  ASSERT_EQ(w.mp().host_share_hyp(kH, 1), 0);  // implementation only
  // Both now refuse the donation of a page the host shared...
  const std::string err = d.step(op(OpKind::kHostDonateHyp, kH + 1, 1));
  // ...which succeeds on both, but the pages around it differ.
  EXPECT_EQ(err, "");
  EXPECT_NE(d.full_check(), "");
}

TEST(Driver, PoolExhaustionIsAcceptedOnlyWhereItCanHappen) {
  World w;
  Driver d(w);
  d.set_pool_limit(0);
  // Needs tables: -ENOMEM (after recycling finds nothing) or success.
  EXPECT_EQ(d.step(op(OpKind::kHostShareHyp, kR2Block + 3, 2)), "");
  EXPECT_EQ(d.step(abort_at(kR2 << 12)), "");
  // A 1 GiB MMIO block needs no table: must succeed.
  EXPECT_EQ(d.step(abort_at(0x80000000)), "");
  d.set_pool_limit(-1);
  d.arm_alloc_failure(0, true);
  EXPECT_EQ(d.step(abort_at((kR2 + 40) << 12)), "");
  d.arm_alloc_failure(0, false);  // one failure, then the retry must succeed
  EXPECT_EQ(d.step(abort_at((kR2 + 80) << 12)), "");
  d.arm_alloc_failure(0, false);
  EXPECT_EQ(d.step(create()), "");
  EXPECT_EQ(d.step(create()), "");
  EXPECT_EQ(d.full_check(), "");
}

// --- Differential: random sequences, implementation vs model ------------------------------

// Random operations biased toward interesting arguments: pages near region
// edges and 2 MiB boundaries, guest frames the model knows are mapped, a few
// hostile values.
class Gen {
 public:
  explicit Gen(u64 seed) : r_(seed) {}
  u64 u(u64 n) { return r_() % n; }
  bool pct(u32 p) { return u(100) < p; }

  u64 pfn() {
    if (pct(75)) return pct(50) ? kH + u(kR0End - kH) : kR2 + u(0x40c00 - kR2);
    if (pct(40)) {
      static constexpr u64 kEdges[] = {kR0End, kR1, kR2, kR2Block, 0x40800, 0x40a00, 0x40c00, kH, 0x40200};
      return kEdges[u(9)] - 4 + u(8);
    }
    if (pct(50)) return kR1 + u(0x80);
    static constexpr u64 kWild[] = {0, ~u64{0}, (u64{1} << 52) - 1, u64{1} << 28, 0x40400, kPoolPfn};
    return kWild[u(6)] + u(3);
  }
  u64 nr() {
    if (pct(60)) return 1 + u(4);
    if (pct(50)) return 1 + u(16);
    if (pct(50)) return 512;
    static constexpr u64 kOdd[] = {0, 513, 1000, ~u64{0}};
    return kOdd[u(4)];
  }
  u32 guest() { return pct(90) ? 2 + u32(u(8)) : u32(u(16)); }
  u64 gfn(const Model& m, u32 g) {
    const GuestInfo* gi = m.guest(g);
    if (gi && !gi->map.empty() && pct(50)) {  // a frame the guest has: transitions can succeed
      const std::vector<u64> f = frames(*gi);
      return f[u(f.size())] - (pct(20) ? u(2) : 0);
    }
    if (pct(70)) return u(512);
    if (pct(50)) return 0x200 * u(8);
    return pct(50) ? (u64{1} << 24) - u(600) : ~u64{0} - u(4);
  }
  u64 addr() {
    if (pct(60)) return (pfn() << 12) + u(4096);
    static constexpr u64 kMmio[] = {0, 0x40400000, 0x404ff000, 0x40c00000, 0x80000000, (u64{1} << 40) - 1,
                                    u64{1} << 40};
    return kMmio[u(7)] + (pct(50) ? 0 : u(1 << 20));
  }

  // A page satisfying `pred`, scanning from a random place; else a random pfn().
  template <typename P>
  u64 page_where(const Model& m, P pred) {
    const u64 n = m.span_hi() - m.span_lo(), start = u(n);
    for (u64 i = 0; i < n; ++i) {
      const u64 p = m.span_lo() + (start + i) % n;
      if (m.is_memory(p) && pred(m.page(p))) return p;
    }
    return pfn();
  }
  // A frame of guest g in state `st`, else a random gfn().
  u64 frame_where(const Model& m, u32 g, PageState st) {
    const GuestInfo* gi = m.guest(g);
    if (gi)
      for (u64 f : frames(*gi))
        if (m.guest_state(g, f) == st && pct(70)) return f;
    return gfn(m, g);
  }
  // The guest's frames in order: the hash map's own order differs between
  // two models in the same state, and the sequence must not.
  static std::vector<u64> frames(const GuestInfo& gi) {
    std::vector<u64> f;
    for (const auto& kv : gi.map) f.push_back(kv.first);
    std::sort(f.begin(), f.end());
    return f;
  }

  Op next(const Model& m) {
    Op o;
    const u32 k = u32(u(100));
    if (k < 8) o.kind = OpKind::kHostShareHyp;
    else if (k < 14) o.kind = OpKind::kHostUnshareHyp;
    else if (k < 19) o.kind = OpKind::kHostDonateHyp;
    else if (k < 24) o.kind = OpKind::kHypDonateHost;
    else if (k < 33) o.kind = OpKind::kHostShareGuest;
    else if (k < 39) o.kind = OpKind::kHostUnshareGuest;
    else if (k < 47) o.kind = OpKind::kHostDonateGuest;
    else if (k < 53) o.kind = OpKind::kGuestShareHost;
    else if (k < 58) o.kind = OpKind::kGuestUnshareHost;
    else if (k < 63) o.kind = OpKind::kHostReclaimGuest;
    else if (k < 67) o.kind = OpKind::kHypPin;
    else if (k < 71) o.kind = OpKind::kHypUnpin;
    else if (k < 75) o.kind = OpKind::kGuestCreate;
    else if (k < 78) o.kind = OpKind::kGuestDestroy;
    else if (k < 97) o.kind = OpKind::kHostAbort;
    else o.kind = OpKind::kHypChecksum;
    o.guest = guest();
    o.pfn = pfn();
    o.nr = nr();
    o.gfn = gfn(m, o.guest);
    o.addr = addr();
    if (pct(50)) {
      // Aim at pages and frames in the state the transition wants, so that
      // successes are common; small counts so whole ranges qualify often.
      const u32 g = o.guest;
      switch (o.kind) {
        case OpKind::kHostUnshareHyp:
        case OpKind::kHypPin:
          o.pfn = page_where(m, [](const PageInfo& p) { return p.borrower == kHyp; });
          break;
        case OpKind::kHypUnpin: o.pfn = page_where(m, [](const PageInfo& p) { return p.pins > 0; }); break;
        case OpKind::kHypDonateHost:
          o.pfn = page_where(m, [](const PageInfo& p) { return p.owner == kHyp && !p.hyp_internal; });
          break;
        case OpKind::kHostReclaimGuest:
          o.pfn = page_where(m, [g](const PageInfo& p) { return p.owner == g; });
          break;
        case OpKind::kHostUnshareGuest: o.gfn = frame_where(m, g, S::kSharedBorrowed); break;
        case OpKind::kGuestShareHost: o.gfn = frame_where(m, g, S::kOwned); break;
        case OpKind::kGuestUnshareHost: o.gfn = frame_where(m, g, S::kSharedOwned); break;
        default: return o;
      }
      o.nr = 1 + u(pct(70) ? 2 : 8);
    }
    return o;
  }

 private:
  std::mt19937_64 r_;
};

// Runs `ops` random operations from `seed` (with pool pressure and injected
// failures) and returns every return code, or the first divergence.
std::vector<int> random_run(World& w, u64 seed, u64 ops, std::string* err) {
  Driver d(w, DriverOptions{25, kRelaxNone});
  Gen g(seed);
  std::vector<int> rets;
  for (u64 i = 0; i < ops && err->empty(); ++i) {
    if (i % 100 == 40) d.set_pool_limit(s64(g.u(4)));
    if (i % 100 == 70) d.set_pool_limit(-1);
    if (g.pct(3)) d.arm_alloc_failure(s64(g.u(3)), g.pct(50));
    int got = 0;
    *err = d.step(g.next(w.model()), &got);
    rets.push_back(got);
  }
  d.set_pool_limit(-1);
  return rets;
}

// The pool as bytes: which pages are allocated and what they hold.
std::string pool_image(World& w) {
  std::string img;
  const u64 base = w.plat().pool_base().value();
  for (u64 i = 0; i < w.plat().pool_pages(); ++i) {
    const u64 pa = base + i * kPage;
    const bool live = w.plat().is_allocated(PhysAddr(pa));
    img += live ? 'A' : 'F';
    if (live) img.append(reinterpret_cast<const char*>(w.word(pa)), kPage);
  }
  return img;
}

// The fuzzer reuses one World per input through reset(): a reset World must
// be indistinguishable from a fresh boot, in state and in behaviour.
TEST(World, ResetEqualsFreshBoot) {
  for (bool exclusive : {false, true}) {
    World used(exclusive), fresh(exclusive);
    std::string err;
    random_run(used, 7, 1500, &err);
    ASSERT_EQ(err, "");
    ASSERT_GT(used.plat().alloc_count(), fresh.plat().alloc_count());  // the run changed things
    used.reset();
    EXPECT_EQ(pool_image(used), pool_image(fresh));
    EXPECT_EQ(used.plat().pages_in_use(), fresh.plat().pages_in_use());
    EXPECT_EQ(used.plat().alloc_count(), fresh.plat().alloc_count());
    EXPECT_EQ(used.plat().tlbi_count(), fresh.plat().tlbi_count());
    // MemProtectStats is all u64 counters: compare them one by one.
    auto expect_same_stats = [&] {
      const MemProtectStats su = used.mp().stats(), sf = fresh.mp().stats();
      for (size_t i = 0; i < sizeof(su) / sizeof(u64); ++i)
        EXPECT_EQ(reinterpret_cast<const u64*>(&su)[i], reinterpret_cast<const u64*>(&sf)[i]) << "word " << i;
    };
    expect_same_stats();
    EXPECT_EQ(used.bbm()->violations(), fresh.bbm()->violations());
    EXPECT_EQ(used.bbm()->pending(), 0u);
    EXPECT_EQ(check(used), "");
    // Guest secrets written during the run are gone.
    for (u64 pfn = Layout::kR0Base / kPage; pfn < (Layout::kR2Base + Layout::kR2Size) / kPage; ++pfn) {
      if (used.model().is_memory(pfn) && !used.model().page(pfn).hyp_internal) {
        ASSERT_EQ(*used.word(pfn * kPage), 0u) << "pfn 0x" << std::hex << pfn;
      }
    }
    // Same behaviour from here on: the same operations give the same results
    // and leave the same tables.
    std::string e1, e2;
    const std::vector<int> r1 = random_run(used, 11, 1500, &e1), r2 = random_run(fresh, 11, 1500, &e2);
    ASSERT_EQ(r1.size(), r2.size());
    for (size_t i = 0; i < r1.size(); ++i) ASSERT_EQ(r1[i], r2[i]) << "operation " << i;
    EXPECT_EQ(e1, "");
    EXPECT_EQ(e2, "");
    EXPECT_EQ(pool_image(used), pool_image(fresh));
    expect_same_stats();
  }
}

// MP_DIFF_RELAX=enomem,... runs it tolerating known bugs (to look past them).
TEST(Differential, RandomSequencesAgreeWithTheModel) {
  constexpr u64 kSeeds = 20, kOps = 2000;
  const u32 relax = parse_relax(getenv("MP_DIFF_RELAX"));
  u64 successes[u32(OpKind::kCount)] = {};
  for (u64 seed = 1; seed <= kSeeds; ++seed) {
    World w(seed % 2 == 1);  // odd seeds: exclusive host aborts
    Driver d(w, DriverOptions{50, relax});
    Gen g(seed);
    std::string err;
    for (u64 i = 0; i < kOps && err.empty(); ++i) {
      // Now and then a short spell of pool pressure or an injected failure.
      if (i % 200 == 100) d.set_pool_limit(s64(g.u(6)));
      if (i % 200 == 130) d.set_pool_limit(-1);
      if (g.pct(2)) d.arm_alloc_failure(s64(g.u(3)), g.pct(50));
      const Op o = g.next(w.model());
      int got = -1;
      err = d.step(o, &got);
      if (got >= 0) ++successes[u32(o.kind)];
    }
    if (err.empty()) {
      Problems p;
      check_all(w, &p);  // with the whole-space dump
      err = p.str();
    }
    EXPECT_EQ(err, "") << "seed " << seed;
  }
  // The sequences must reach every transition, or agreement means little.
  for (u32 k = 0; k < u32(OpKind::kCount); ++k)
    EXPECT_GT(successes[k], 10u) << to_string(OpKind(k)) << " rarely or never succeeded";
}

}  // namespace
}  // namespace pkvm::mptest
