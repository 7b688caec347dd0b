// SPDX-License-Identifier: Apache-2.0
// The ownership transitions, table-driven: every transition from every
// starting state of the pages involved, on one page, on four pages across a
// 2 MiB boundary and on 512 pages forming a 2 MiB block; then mixed-state
// ranges, argument validation, reclaim zeroing, hyp_checksum, pins and guest
// teardown. Expected errnos and states are literals in the tables; a failing
// call must leave the whole observable state (snapshot) unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "tests/mem_protect/mp_env.h"

namespace pkvm::test {
namespace {

using S = PageState;
constexpr u64 kPfnMax = ~u64{0} >> desc::kPageShift;
constexpr u64 kGuestFrames = u64{1} << (36 - 12);  // guest IA: 36 bits

// --- What one page looks like from every side ----------------------------------

struct View {
  u8 owner;      // dump_host owner: 0 host, 1 hyp, 2 the guest (the lender, for borrowed pages)
  S host;        // host state (kNoPage when annotated)
  S hyp;         // hyp stage 1 state at VA == PA
  S guest;       // guest stage 2 state at the page's guest frame (kNoPage when no live guest)
  u16 pins;
  u8 flags;      // PageMeta flags
  bool operator==(const View&) const = default;
};

std::ostream& operator<<(std::ostream& os, const View& v) {
  return os << "{owner " << int(v.owner) << " host " << int(v.host) << " hyp " << int(v.hyp) << " guest "
            << int(v.guest) << " pins " << v.pins << " flags " << int(v.flags) << "}";
}

constexpr View kVOwned{0, S::kOwned, S::kNoPage, S::kNoPage, 0, 0};
constexpr View kVSharedHyp{0, S::kSharedOwned, S::kSharedBorrowed, S::kNoPage, 0, 0};
constexpr View kVPinned1{0, S::kSharedOwned, S::kSharedBorrowed, S::kNoPage, 1, 0};
constexpr View kVPinned2{0, S::kSharedOwned, S::kSharedBorrowed, S::kNoPage, 2, 0};
constexpr View kVSharedGuest{0, S::kSharedOwned, S::kNoPage, S::kSharedBorrowed, 0, 0};
constexpr View kVDonatedHyp{1, S::kNoPage, S::kOwned, S::kNoPage, 0, 0};
constexpr View kVHypInternal{1, S::kNoPage, S::kOwned, S::kNoPage, 0, kMetaHypInternal};
constexpr View kVDonatedGuest{2, S::kNoPage, S::kNoPage, S::kOwned, 0, 0};
constexpr View kVGuestShared{2, S::kSharedBorrowed, S::kNoPage, S::kSharedOwned, 0, 0};
constexpr View kVDying{2, S::kNoPage, S::kNoPage, S::kNoPage, 0, 0};

// The view of page `pfn` whose guest frame is `gfn`; also checks that every
// valid mapping of it points at it.
View view(Env& e, u64 pfn, u64 gfn) {
  View v{};
  DumpRecord r{};
  u64 next = 0;
  EXPECT_EQ(e.mp.dump_host(pfn, &r, 1, &next), 1);
  EXPECT_EQ(r.pfn, pfn);
  v.owner = r.owner;
  v.host = S(r.state);
  const u64 pa = pfn << desc::kPageShift;
  if (r.mapped) {
    const u64 pte = e.host_pte(pa);
    EXPECT_TRUE(desc::is_valid(pte));
  }
  u64 pte = 0;
  u32 level = 0;
  EXPECT_EQ(e.mp.hyp_pgt().get_leaf(pa, &pte, &level), 0);
  v.hyp = desc::is_valid(pte) ? state_of_leaf(pte) : S::kNoPage;
  if (desc::is_valid(pte)) {
    EXPECT_EQ(desc::oa(pte) | (pa & (desc::granule_size(level) - 1)), pa) << "hyp VA != PA";
  }
  v.guest = S::kNoPage;
  if (Pgtable* g = e.mp.guest_pgt(kG)) {
    const u64 ipa = gfn << desc::kPageShift;
    EXPECT_EQ(g->get_leaf(ipa, &pte, &level), 0);
    if (desc::is_valid(pte)) {
      v.guest = state_of_leaf(pte);
      const u64 out = desc::oa(pte) | (ipa & (desc::granule_size(level) - 1));
      if (out != pa) v.guest = S(0xee);  // the frame maps some other page
    }
  }
  const PageMeta* m = e.mp.meta(pfn);
  EXPECT_NE(m, nullptr);
  if (m) {
    v.pins = m->pin_count;
    v.flags = m->flags;
  }
  return v;
}

// --- Ranges ---------------------------------------------------------------------------

struct RangeKind {
  const char* name;
  u64 pfn_off;  // set-up range, from the first data page of the arena (0x40200, 2 MiB aligned)
  u64 gfn;
  u64 nr;
  u64 call_off;  // the transition's range, inside the set-up range
  u64 call_nr;
};
const RangeKind kRanges[] = {
    {"OnePage", 0x10, 0x100, 1, 0, 1},
    {"FourAcross2M", 0x1fe, 0x1fe, 4, 0, 4},  // host pages and guest frames both cross a 2 MiB boundary
    {"Block512", 0x200, 0x200, 512, 0, 512},  // a whole 2 MiB block on every side
    {"FourInsideBlock", 0x200, 0x200, 512, 0x101, 4},  // part of a block: splits on every side
};

// The view of a page in each starting state (what a failure must leave).
View start_view(St s) {
  static const View v[] = {kVOwned,       kVOwned,       kVSharedHyp, kVSharedGuest, kVDonatedHyp,
                           kVHypInternal, kVDonatedGuest, kVGuestShared, kVPinned1, kVDying,
                           kVDying,       kVOwned};
  return v[u32(s)];
}

// --- Fixture ----------------------------------------------------------------------------

class MpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(env.add_ret, 0);
    ASSERT_EQ(env.init_ret, 0);
    ASSERT_EQ(env.mp.guest_create(), int(kG));
  }
  void TearDown() override {
    EXPECT_EQ(env.bbm.finish(), 0u) << env.bbm.report();
    EXPECT_EQ(env.mp.stats().internal_errors, 0u);
  }

  // Fills [pfn, +nr) with a pattern and remembers it.
  void fill(u64 pfn, u64 nr) {
    saved.clear();
    for (u64 p = pfn; p < pfn + nr; ++p) {
      env.fill(p, p * 3);
      const u64* d = static_cast<const u64*>(env.plat.phys_to_virt(PhysAddr(p << desc::kPageShift)));
      saved.insert(saved.end(), d, d + kPage / 8);
    }
  }
  bool data_unchanged(u64 pfn, u64 nr) {
    const u64* d = static_cast<const u64*>(env.plat.phys_to_virt(PhysAddr(pfn << desc::kPageShift)));
    return saved == std::vector<u64>(d, d + nr * kPage / 8);
  }

  Env env;
  std::vector<u64> saved;
};

// --- The matrix ---------------------------------------------------------------------------

struct Row {
  T t;
  St from;
  int ret;
  View after;  // every page of the range
  bool zeroed;
};

constexpr int kOk = 0;
constexpr int EPERM_ = -kEPERM, EBUSY_ = -kEBUSY, ENOENT_ = -kENOENT;

const Row kMatrix[] = {
    // host_share_hyp: only from pages the host owns.
    {T::kShareHyp, St::kOwned, kOk, kVSharedHyp, false},
    {T::kShareHyp, St::kMapped, kOk, kVSharedHyp, false},
    {T::kShareHyp, St::kSharedHyp, EPERM_, kVSharedHyp, false},
    {T::kShareHyp, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kShareHyp, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kShareHyp, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kShareHyp, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kShareHyp, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kShareHyp, St::kPinned, EPERM_, kVPinned1, false},
    {T::kShareHyp, St::kDyingOwned, EPERM_, kVDying, false},
    {T::kShareHyp, St::kDyingLent, EPERM_, kVDying, false},
    {T::kShareHyp, St::kGoneHostLent, kOk, kVSharedHyp, false},
    // host_unshare_hyp: only pages lent to the hypervisor, and not while pinned.
    {T::kUnshareHyp, St::kOwned, EPERM_, kVOwned, false},
    {T::kUnshareHyp, St::kMapped, EPERM_, kVOwned, false},
    {T::kUnshareHyp, St::kSharedHyp, kOk, kVOwned, false},
    {T::kUnshareHyp, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kUnshareHyp, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kUnshareHyp, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kUnshareHyp, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kUnshareHyp, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kUnshareHyp, St::kPinned, EBUSY_, kVPinned1, false},
    {T::kUnshareHyp, St::kDyingOwned, EPERM_, kVDying, false},
    {T::kUnshareHyp, St::kDyingLent, EPERM_, kVDying, false},
    {T::kUnshareHyp, St::kGoneHostLent, EPERM_, kVOwned, false},
    // host_donate_hyp.
    {T::kDonateHyp, St::kOwned, kOk, kVDonatedHyp, false},
    {T::kDonateHyp, St::kMapped, kOk, kVDonatedHyp, false},
    {T::kDonateHyp, St::kSharedHyp, EPERM_, kVSharedHyp, false},
    {T::kDonateHyp, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kDonateHyp, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kDonateHyp, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kDonateHyp, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kDonateHyp, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kDonateHyp, St::kPinned, EPERM_, kVPinned1, false},
    {T::kDonateHyp, St::kDyingOwned, EPERM_, kVDying, false},
    {T::kDonateHyp, St::kDyingLent, EPERM_, kVDying, false},
    {T::kDonateHyp, St::kGoneHostLent, kOk, kVDonatedHyp, false},
    // hyp_donate_host: only pages donated to the hypervisor, never its own.
    {T::kHypDonateHost, St::kOwned, EPERM_, kVOwned, false},
    {T::kHypDonateHost, St::kMapped, EPERM_, kVOwned, false},
    {T::kHypDonateHost, St::kSharedHyp, EPERM_, kVSharedHyp, false},
    {T::kHypDonateHost, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kHypDonateHost, St::kDonatedHyp, kOk, kVOwned, true},
    {T::kHypDonateHost, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kHypDonateHost, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kHypDonateHost, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kHypDonateHost, St::kPinned, EPERM_, kVPinned1, false},
    {T::kHypDonateHost, St::kDyingOwned, EPERM_, kVDying, false},
    {T::kHypDonateHost, St::kDyingLent, EPERM_, kVDying, false},
    {T::kHypDonateHost, St::kGoneHostLent, EPERM_, kVOwned, false},
    // host_share_guest: host-owned pages to a live guest's free frames.
    {T::kShareGuest, St::kOwned, kOk, kVSharedGuest, false},
    {T::kShareGuest, St::kMapped, kOk, kVSharedGuest, false},
    {T::kShareGuest, St::kSharedHyp, EPERM_, kVSharedHyp, false},
    {T::kShareGuest, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kShareGuest, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kShareGuest, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kShareGuest, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kShareGuest, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kShareGuest, St::kPinned, EPERM_, kVPinned1, false},
    {T::kShareGuest, St::kDyingOwned, ENOENT_, kVDying, false},
    {T::kShareGuest, St::kDyingLent, ENOENT_, kVDying, false},
    {T::kShareGuest, St::kGoneHostLent, ENOENT_, kVOwned, false},
    // host_unshare_guest: only frames the host lent.
    {T::kUnshareGuest, St::kOwned, EPERM_, kVOwned, false},
    {T::kUnshareGuest, St::kMapped, EPERM_, kVOwned, false},
    {T::kUnshareGuest, St::kSharedHyp, EPERM_, kVSharedHyp, false},
    {T::kUnshareGuest, St::kSharedGuest, kOk, kVOwned, false},
    {T::kUnshareGuest, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kUnshareGuest, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kUnshareGuest, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kUnshareGuest, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kUnshareGuest, St::kPinned, EPERM_, kVPinned1, false},
    {T::kUnshareGuest, St::kDyingOwned, ENOENT_, kVDying, false},
    {T::kUnshareGuest, St::kDyingLent, ENOENT_, kVDying, false},
    {T::kUnshareGuest, St::kGoneHostLent, ENOENT_, kVOwned, false},
    // host_donate_guest.
    {T::kDonateGuest, St::kOwned, kOk, kVDonatedGuest, false},
    {T::kDonateGuest, St::kMapped, kOk, kVDonatedGuest, false},
    {T::kDonateGuest, St::kSharedHyp, EPERM_, kVSharedHyp, false},
    {T::kDonateGuest, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kDonateGuest, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kDonateGuest, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kDonateGuest, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kDonateGuest, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kDonateGuest, St::kPinned, EPERM_, kVPinned1, false},
    {T::kDonateGuest, St::kDyingOwned, ENOENT_, kVDying, false},
    {T::kDonateGuest, St::kDyingLent, ENOENT_, kVDying, false},
    {T::kDonateGuest, St::kGoneHostLent, ENOENT_, kVOwned, false},
    // guest_share_host: only frames the guest owns outright.
    {T::kGuestShareHost, St::kOwned, EPERM_, kVOwned, false},
    {T::kGuestShareHost, St::kMapped, EPERM_, kVOwned, false},
    {T::kGuestShareHost, St::kSharedHyp, EPERM_, kVSharedHyp, false},
    {T::kGuestShareHost, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kGuestShareHost, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kGuestShareHost, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kGuestShareHost, St::kDonatedGuest, kOk, kVGuestShared, false},
    {T::kGuestShareHost, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kGuestShareHost, St::kPinned, EPERM_, kVPinned1, false},
    {T::kGuestShareHost, St::kDyingOwned, ENOENT_, kVDying, false},
    {T::kGuestShareHost, St::kDyingLent, ENOENT_, kVDying, false},
    {T::kGuestShareHost, St::kGoneHostLent, ENOENT_, kVOwned, false},
    // guest_unshare_host: only frames the guest lent.
    {T::kGuestUnshareHost, St::kOwned, EPERM_, kVOwned, false},
    {T::kGuestUnshareHost, St::kMapped, EPERM_, kVOwned, false},
    {T::kGuestUnshareHost, St::kSharedHyp, EPERM_, kVSharedHyp, false},
    {T::kGuestUnshareHost, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kGuestUnshareHost, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kGuestUnshareHost, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kGuestUnshareHost, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kGuestUnshareHost, St::kGuestShared, kOk, kVDonatedGuest, false},
    {T::kGuestUnshareHost, St::kPinned, EPERM_, kVPinned1, false},
    {T::kGuestUnshareHost, St::kDyingOwned, ENOENT_, kVDying, false},
    {T::kGuestUnshareHost, St::kDyingLent, ENOENT_, kVDying, false},
    {T::kGuestUnshareHost, St::kGoneHostLent, ENOENT_, kVOwned, false},
    // host_reclaim_guest: -EBUSY while the guest lives; then its pages, zeroed.
    {T::kReclaim, St::kOwned, EBUSY_, kVOwned, false},
    {T::kReclaim, St::kMapped, EBUSY_, kVOwned, false},
    {T::kReclaim, St::kSharedHyp, EBUSY_, kVSharedHyp, false},
    {T::kReclaim, St::kSharedGuest, EBUSY_, kVSharedGuest, false},
    {T::kReclaim, St::kDonatedHyp, EBUSY_, kVDonatedHyp, false},
    {T::kReclaim, St::kHypInternal, EBUSY_, kVHypInternal, false},
    {T::kReclaim, St::kDonatedGuest, EBUSY_, kVDonatedGuest, false},
    {T::kReclaim, St::kGuestShared, EBUSY_, kVGuestShared, false},
    {T::kReclaim, St::kPinned, EBUSY_, kVPinned1, false},
    {T::kReclaim, St::kDyingOwned, kOk, kVOwned, true},
    {T::kReclaim, St::kDyingLent, kOk, kVOwned, true},
    {T::kReclaim, St::kGoneHostLent, ENOENT_, kVOwned, false},
    // hyp_pin_shared: pages the hypervisor borrows; pins stack.
    {T::kPin, St::kOwned, EPERM_, kVOwned, false},
    {T::kPin, St::kMapped, EPERM_, kVOwned, false},
    {T::kPin, St::kSharedHyp, kOk, kVPinned1, false},
    {T::kPin, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kPin, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kPin, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kPin, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kPin, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kPin, St::kPinned, kOk, kVPinned2, false},
    {T::kPin, St::kDyingOwned, EPERM_, kVDying, false},
    {T::kPin, St::kDyingLent, EPERM_, kVDying, false},
    {T::kPin, St::kGoneHostLent, EPERM_, kVOwned, false},
    // hyp_unpin_shared: only pinned pages.
    {T::kUnpin, St::kOwned, EPERM_, kVOwned, false},
    {T::kUnpin, St::kMapped, EPERM_, kVOwned, false},
    {T::kUnpin, St::kSharedHyp, EPERM_, kVSharedHyp, false},
    {T::kUnpin, St::kSharedGuest, EPERM_, kVSharedGuest, false},
    {T::kUnpin, St::kDonatedHyp, EPERM_, kVDonatedHyp, false},
    {T::kUnpin, St::kHypInternal, EPERM_, kVHypInternal, false},
    {T::kUnpin, St::kDonatedGuest, EPERM_, kVDonatedGuest, false},
    {T::kUnpin, St::kGuestShared, EPERM_, kVGuestShared, false},
    {T::kUnpin, St::kPinned, kOk, kVSharedHyp, false},
    {T::kUnpin, St::kDyingOwned, EPERM_, kVDying, false},
    {T::kUnpin, St::kDyingLent, EPERM_, kVDying, false},
    {T::kUnpin, St::kGoneHostLent, EPERM_, kVOwned, false},
};

void PrintTo(const Row& r, std::ostream* os) {
  *os << name(r.t) << " from " << name(r.from) << " -> " << r.ret << " " << r.after;
}
void PrintTo(const RangeKind& k, std::ostream* os) { *os << k.name; }

class MatrixTest : public MpTest, public ::testing::WithParamInterface<std::tuple<Row, RangeKind>> {};

TEST_P(MatrixTest, TransitionFromState) {
  const auto& [row, rk] = GetParam();
  const u64 pfn = env.data_pfn() + rk.pfn_off, gfn = rk.gfn, nr = rk.nr;
  const u64 cpfn = pfn + rk.call_off, cgfn = gfn + rk.call_off, cnr = rk.call_nr;
  fill(pfn, nr);
  ASSERT_EQ(apply(env, row.from, pfn, gfn, nr), 0);
  if (dies(row.from)) {
    ASSERT_EQ(env.destroy_guest(kG), 0);
  }
  for (u64 i = 0; i < nr; ++i) ASSERT_EQ(view(env, pfn + i, gfn + i), start_view(row.from)) << "set-up, page " << i;

  const std::string before = snapshot(env);
  const MemProtectStats st0 = env.mp.stats();
  const int ret = call(env.mp, row.t, kG, cpfn, cgfn, cnr);
  EXPECT_EQ(ret, row.ret);
  const MemProtectStats st1 = env.mp.stats();
  const u32 si = u32(stat_of(row.t));
  EXPECT_EQ(st1.ok[si] - st0.ok[si], ret == 0 ? 1u : 0u);
  EXPECT_EQ(st1.failed[si] - st0.failed[si], ret == 0 ? 0u : 1u);
  if (row.ret != 0) {
    EXPECT_EQ(snapshot(env), before) << "a failed transition changed state";
  }

  // The called pages are in the expected state, the rest of the set-up
  // range still in its starting state, the pages around it untouched.
  for (u64 i = 0; i < nr; ++i) {
    const bool in_call = i >= rk.call_off && i < rk.call_off + cnr;
    const View v = view(env, pfn + i, gfn + i);
    ASSERT_EQ(v, in_call ? row.after : start_view(row.from)) << "page " << i;
  }
  EXPECT_EQ(view(env, pfn - 1, gfn - 1), kVOwned);
  EXPECT_EQ(view(env, pfn + nr, gfn + nr), kVOwned);
  const u64* d = static_cast<const u64*>(env.plat.phys_to_virt(PhysAddr(pfn << desc::kPageShift)));
  for (u64 i = 0; i < nr; ++i) {
    const bool in_call = i >= rk.call_off && i < rk.call_off + cnr;
    const bool same = std::equal(d + i * kPage / 8, d + (i + 1) * kPage / 8, saved.begin() + i * kPage / 8);
    if (row.zeroed && in_call) {
      EXPECT_TRUE(env.is_zero(pfn + i)) << "page " << i << " not zeroed";
    } else {
      EXPECT_TRUE(same) << "page " << i << " data changed";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, MatrixTest, ::testing::Combine(::testing::ValuesIn(kMatrix), ::testing::ValuesIn(kRanges)),
                         [](const ::testing::TestParamInfo<std::tuple<Row, RangeKind>>& i) {
                           const Row& r = std::get<0>(i.param);
                           return std::string(name(r.t)) + "_from_" + name(r.from) + "_" + std::get<1>(i.param).name;
                         });

// Every transition in the matrix appears from every state exactly once.
TEST(MatrixShape, EveryTransitionFromEveryState) {
  int seen[12][12] = {};
  for (const Row& r : kMatrix) ++seen[u32(r.t)][u32(r.from)];
  for (u32 t = 0; t < 12; ++t)
    for (u32 s = 0; s < 12; ++s) EXPECT_EQ(seen[t][s], 1) << name(T(t)) << " from " << name(St(s));
}

// --- Mixed-state ranges -------------------------------------------------------------------------

struct MixedRow {
  T t;
  St good;  // pages 0, 1 and 3
  St odd;   // page 2
  int ret;
};

const MixedRow kMixed[] = {
    {T::kShareHyp, St::kOwned, St::kDonatedHyp, -kEPERM},
    {T::kShareHyp, St::kMapped, St::kSharedGuest, -kEPERM},
    {T::kUnshareHyp, St::kSharedHyp, St::kPinned, -kEBUSY},
    {T::kUnshareHyp, St::kSharedHyp, St::kOwned, -kEPERM},
    {T::kDonateHyp, St::kOwned, St::kSharedHyp, -kEPERM},
    {T::kDonateHyp, St::kMapped, St::kGuestShared, -kEPERM},
    {T::kHypDonateHost, St::kDonatedHyp, St::kHypInternal, -kEPERM},
    {T::kHypDonateHost, St::kDonatedHyp, St::kOwned, -kEPERM},
    {T::kShareGuest, St::kOwned, St::kDonatedGuest, -kEPERM},
    {T::kShareGuest, St::kOwned, St::kGfnTaken, -kEPERM},
    {T::kUnshareGuest, St::kSharedGuest, St::kDonatedGuest, -kEPERM},
    {T::kUnshareGuest, St::kSharedGuest, St::kOwned, -kEPERM},
    {T::kDonateGuest, St::kOwned, St::kHypInternal, -kEPERM},
    {T::kDonateGuest, St::kMapped, St::kGfnTaken, -kEPERM},
    {T::kGuestShareHost, St::kDonatedGuest, St::kGuestShared, -kEPERM},
    {T::kGuestShareHost, St::kDonatedGuest, St::kSharedGuest, -kEPERM},
    {T::kGuestUnshareHost, St::kGuestShared, St::kDonatedGuest, -kEPERM},
    {T::kGuestUnshareHost, St::kGuestShared, St::kOwned, -kEPERM},
    {T::kReclaim, St::kDyingOwned, St::kGoneHostLent, -kEPERM},
    {T::kReclaim, St::kDyingLent, St::kOwned, -kEPERM},
    {T::kPin, St::kSharedHyp, St::kOwned, -kEPERM},
    {T::kPin, St::kSharedHyp, St::kDonatedHyp, -kEPERM},
    {T::kUnpin, St::kPinned, St::kSharedHyp, -kEPERM},
};

void PrintTo(const MixedRow& m, std::ostream* os) {
  *os << name(m.t) << " on " << name(m.good) << " with " << name(m.odd) << " -> " << m.ret;
}

class MixedTest : public MpTest, public ::testing::WithParamInterface<MixedRow> {};

// Four pages across a 2 MiB boundary (host and guest side), the third in
// another state: the whole call fails and nothing changes.
TEST_P(MixedTest, OddPageFailsTheWholeRange) {
  const MixedRow& m = GetParam();
  const u64 pfn = env.data_pfn() + 0x1fe, gfn = 0x1fe;
  fill(pfn, 4);
  bool destroy = false;
  for (u64 i = 0; i < 4; ++i) {
    const St s = i == 2 ? m.odd : m.good;
    ASSERT_EQ(apply(env, s, pfn + i, gfn + i, 1), 0) << name(s) << " on page " << i;
    destroy |= dies(s);
  }
  if (destroy) {
    ASSERT_EQ(env.destroy_guest(kG), 0);
  }
  const std::string before = snapshot(env);
  EXPECT_EQ(call(env.mp, m.t, kG, pfn, gfn, 4), m.ret);
  EXPECT_EQ(snapshot(env), before);
  EXPECT_TRUE(data_unchanged(pfn, 4));
  // The same call without the odd page succeeds: the odd page was the reason.
  EXPECT_EQ(call(env.mp, m.t, kG, pfn, gfn, 2), 0);
}

INSTANTIATE_TEST_SUITE_P(All, MixedTest, ::testing::ValuesIn(kMixed),
                         [](const ::testing::TestParamInfo<MixedRow>& i) {
                           return std::string(name(i.param.t)) + "_" + name(i.param.good) + "_with_" +
                                  name(i.param.odd) + "_" + std::to_string(i.index);
                         });

// --- Argument validation -------------------------------------------------------------------------

constexpr int NA = 1;  // the transition does not take this argument
constexpr u64 kP = 0x40210;  // a data page of R0
constexpr u64 kF = 0x100;    // a free guest frame

struct ArgRow {
  const char* name;
  u64 pfn, gfn, nr;
  u32 guest;
  int pfn_ops;    // share/unshare/donate hyp, hyp_donate_host, pin, unpin
  int guest_pfn;  // host_share_guest, host_donate_guest
  int gfn_ops;    // host_unshare_guest, guest_share_host, guest_unshare_host
  int reclaim;    // host_reclaim_guest
};

const ArgRow kArgs[] = {
    {"NrZero", kP, kF, 0, kG, -kEINVAL, -kEINVAL, -kEINVAL, -kEINVAL},
    {"Nr513", kP, kF, 513, kG, -kE2BIG, -kE2BIG, -kE2BIG, -kE2BIG},
    {"MmioPfn", 0x1000, kF, 1, kG, -kEINVAL, -kEINVAL, NA, -kEINVAL},
    {"MmioBetweenRegions", 0x80200, kF, 1, kG, -kEINVAL, -kEINVAL, NA, -kEINVAL},
    {"NoMapRegion", 0x80400, kF, 1, kG, -kEINVAL, -kEINVAL, NA, -kEINVAL},
    {"StraddlesTwoRegions", 0x7ffff, kF, 2, kG, -kEINVAL, -kEINVAL, NA, -kEINVAL},
    {"RunsOffRegionIntoGap", 0x801ff, kF, 2, kG, -kEINVAL, -kEINVAL, NA, -kEINVAL},
    {"BeyondHostIA", u64{1} << 28, kF, 1, kG, -kEINVAL, -kEINVAL, NA, -kEINVAL},
    {"PfnPlusNrOverflows", ~u64{0} - 1, kF, 4, kG, -kEINVAL, -kEINVAL, NA, -kEINVAL},
    {"PfnMax", kPfnMax, kF, 1, kG, -kEINVAL, -kEINVAL, NA, -kEINVAL},
    {"PfnShiftWraps", u64{1} << 52, kF, 1, kG, -kEINVAL, -kEINVAL, NA, -kEINVAL},
    {"GuestIsHost", kP, kF, 1, kOwnerHost, NA, -kENOENT, -kENOENT, -kENOENT},
    {"GuestIsHyp", kP, kF, 1, kOwnerHyp, NA, -kENOENT, -kENOENT, -kENOENT},
    {"GuestUnusedSlot", kP, kF, 1, kG + 1, NA, -kENOENT, -kENOENT, -kENOENT},
    {"GuestPastLastSlot", kP, kF, 1, kOwnerGuestFirst + kMaxGuests, NA, -kENOENT, -kENOENT, -kENOENT},
    {"GuestAllOnes", kP, kF, 1, ~u32{0}, NA, -kENOENT, -kENOENT, -kENOENT},
    {"GfnAtGuestIAEnd", kP, kGuestFrames, 1, kG, NA, -kEINVAL, -kEINVAL, NA},
    {"GfnRangeCrossesGuestIAEnd", kP, kGuestFrames - 1, 2, kG, NA, -kEINVAL, -kEINVAL, NA},
    {"GfnPlusNrOverflows", kP, ~u64{0} - 1, 4, kG, NA, -kEINVAL, -kEINVAL, NA},
    {"GfnMax", kP, kPfnMax, 1, kG, NA, -kEINVAL, -kEINVAL, NA},
    {"GfnShiftWraps", kP, u64{1} << 52, 1, kG, NA, -kEINVAL, -kEINVAL, NA},
    // Valid edges: the last guest frame, the last page of a region, 512 pages.
    {"LastGuestFrame", kP, kGuestFrames - 1, 1, kG, NA, 0, -kEPERM, NA},
    {"LastPageOfRegion", 0x801ff, kF, 1, kG, NA, 0, NA, NA},
};

struct ArgCase {
  ArgRow row;
  T t;
  int ret;
};

std::vector<ArgCase> arg_cases() {
  std::vector<ArgCase> out;
  for (const ArgRow& r : kArgs) {
    for (T t : {T::kShareHyp, T::kUnshareHyp, T::kDonateHyp, T::kHypDonateHost, T::kPin, T::kUnpin})
      if (r.pfn_ops != NA) out.push_back({r, t, r.pfn_ops});
    for (T t : {T::kShareGuest, T::kDonateGuest})
      if (r.guest_pfn != NA) out.push_back({r, t, r.guest_pfn});
    for (T t : {T::kUnshareGuest, T::kGuestShareHost, T::kGuestUnshareHost})
      if (r.gfn_ops != NA) out.push_back({r, t, r.gfn_ops});
    if (r.reclaim != NA) out.push_back({r, T::kReclaim, r.reclaim});
  }
  return out;
}

void PrintTo(const ArgCase& c, std::ostream* os) {
  *os << name(c.t) << " " << c.row.name << " -> " << c.ret;
}

class ArgTest : public MpTest, public ::testing::WithParamInterface<ArgCase> {};

TEST_P(ArgTest, Validation) {
  const ArgCase& c = GetParam();
  const std::string before = snapshot(env);
  EXPECT_EQ(call(env.mp, c.t, c.row.guest, c.row.pfn, c.row.gfn, c.row.nr), c.ret);
  if (c.ret != 0) {
    EXPECT_EQ(snapshot(env), before);
  }
}

INSTANTIATE_TEST_SUITE_P(All, ArgTest, ::testing::ValuesIn(arg_cases()),
                         [](const ::testing::TestParamInfo<ArgCase>& i) {
                           return std::string(name(i.param.t)) + "_" + i.param.row.name;
                         });

// --- Reclaim, checksum, pins, guests ---------------------------------------------------------------

// A range's region comes from its first and last pages' metadata
// (PageMeta::region), written by init for every page of the span: gap pages
// read 0 even when the caller's metadata held other bytes there, adjacent
// regions read different values, and a no-map region is still refused.
TEST(PageMetaRegion, InitNotesEveryPagesRegion) {
  EnvConfig c;
  c.stale_meta_regions = true;
  Env e(c);
  ASSERT_EQ(e.init_ret, 0);
  auto region_of = [&](u64 addr) { return e.meta[(addr >> desc::kPageShift) - e.meta_base].region; };
  EXPECT_EQ(region_of(0x40000000), 1);
  EXPECT_EQ(region_of(0x80000000 - kPage), 1);
  EXPECT_EQ(region_of(0x80000000), 2);
  EXPECT_EQ(region_of(0x80200000 - kPage), 2);
  EXPECT_EQ(region_of(0x80200000), 0) << "MMIO gap inside the metadata span";
  EXPECT_EQ(region_of(0x803ff000), 0);
  EXPECT_EQ(region_of(0x80400000), 3);
  const u64 gap = 0x80200000 >> desc::kPageShift;
  EXPECT_EQ(e.mp.host_share_hyp(gap, 1), -kEINVAL);
  EXPECT_EQ(e.mp.host_donate_hyp(gap + 1, 2), -kEINVAL);
  EXPECT_EQ(e.mp.host_share_hyp((0x80000000 >> desc::kPageShift) - 1, 2), -kEINVAL) << "across R0 and R1";
  EXPECT_EQ(e.mp.host_share_hyp(0x80400000 >> desc::kPageShift, 1), -kEINVAL) << "no-map";
  EXPECT_EQ(e.mp.host_share_hyp((0x80200000 >> desc::kPageShift) - 1, 1), 0) << "R1's last page";
}

TEST_F(MpTest, ReclaimZeroesEveryPageBeforeTheHostGetsItBack) {
  const u64 pfn = env.data_pfn() + 0x1fc;  // 8 pages across a 2 MiB boundary
  for (u64 i = 0; i < 8; ++i) env.fill(pfn + i, 77 + i);
  env.fill(pfn - 1, 1);
  env.fill(pfn + 8, 2);
  const u64 left = env.expected_checksum(pfn - 1, 1), right = env.expected_checksum(pfn + 8, 1);
  ASSERT_EQ(env.mp.host_donate_guest(kG, pfn, 0x40, 6), 0);
  ASSERT_EQ(env.mp.host_donate_guest(kG, pfn + 6, 0x1000, 2), 0);
  ASSERT_EQ(env.mp.guest_share_host(kG, 0x1000, 2), 0);  // lent back: the host loses it at destroy
  ASSERT_EQ(env.destroy_guest(kG), 0);
  EXPECT_EQ(env.mp.host_reclaim_guest(kG, pfn, 3), 0);
  for (u64 i = 0; i < 3; ++i) EXPECT_TRUE(env.is_zero(pfn + i)) << i;
  for (u64 i = 3; i < 8; ++i) EXPECT_FALSE(env.is_zero(pfn + i)) << i;  // not reclaimed yet
  EXPECT_TRUE(env.mp.guest_exists(kG));
  EXPECT_EQ(env.mp.host_reclaim_guest(kG, pfn + 3, 5), 0);
  for (u64 i = 3; i < 8; ++i) EXPECT_TRUE(env.is_zero(pfn + i)) << i;
  EXPECT_EQ(env.expected_checksum(pfn - 1, 1), left);  // neighbours untouched
  EXPECT_EQ(env.expected_checksum(pfn + 8, 1), right);
  // Every page is back: the guest is gone and its handle free again.
  EXPECT_FALSE(env.mp.guest_exists(kG));
  EXPECT_EQ(env.mp.host_reclaim_guest(kG, pfn, 1), -kENOENT);
  EXPECT_EQ(env.mp.guest_create(), int(kG));
  // The transient hypervisor mapping used for zeroing is gone.
  EXPECT_EQ(leaves_of(env.mp.hyp_pgt()), "");
}

TEST_F(MpTest, HypChecksumMatchesTheDataOfPagesTheHypervisorCanSee) {
  const u64 base = env.data_pfn() + 0x1f0;
  for (u64 i = 0; i < 32; ++i) env.fill(base + i, 1000 + i);
  u64 sum = 0;
  // Shared, 4 pages across 2 MiB.
  ASSERT_EQ(env.mp.host_share_hyp(base + 0xe, 4), 0);
  EXPECT_EQ(env.mp.hyp_checksum(base + 0xe, 4, &sum), 0);
  EXPECT_EQ(sum, env.expected_checksum(base + 0xe, 4));
  EXPECT_EQ(env.mp.hyp_checksum(base + 0xf, 2, &sum), 0);  // a sub-range: word indices restart
  EXPECT_EQ(sum, env.expected_checksum(base + 0xf, 2));
  // Donated, and the hypervisor's own memory.
  ASSERT_EQ(env.mp.host_donate_hyp(base, 2), 0);
  EXPECT_EQ(env.mp.hyp_checksum(base, 2, &sum), 0);
  EXPECT_EQ(sum, env.expected_checksum(base, 2));
  ASSERT_EQ(env.mp.hyp_reserve(base + 2, 1), 0);
  EXPECT_EQ(env.mp.hyp_checksum(base, 3, &sum), 0);
  EXPECT_EQ(sum, env.expected_checksum(base, 3));
  // The checksum sees writes (it reads the data, not a cached value).
  env.fill(base + 1, 5);
  EXPECT_EQ(env.mp.hyp_checksum(base, 3, &sum), 0);
  EXPECT_EQ(sum, env.expected_checksum(base, 3));

  // Pages the hypervisor cannot see: -EPERM, *sum untouched.
  const u64 sentinel = 0x5e5e5e5e;
  sum = sentinel;
  EXPECT_EQ(env.mp.hyp_checksum(base + 3, 1, &sum), -kEPERM);  // host-owned
  EXPECT_EQ(env.mp.hyp_checksum(base + 0xe, 5, &sum), -kEPERM);  // last page not shared
  EXPECT_EQ(env.mp.hyp_checksum(base + 2, 2, &sum), -kEPERM);    // second page host-owned
  ASSERT_EQ(env.mp.host_donate_guest(kG, base + 20, 0x20, 1), 0);
  EXPECT_EQ(env.mp.hyp_checksum(base + 20, 1, &sum), -kEPERM);  // a guest's
  ASSERT_EQ(env.mp.host_unshare_hyp(base + 0xe, 4), 0);
  EXPECT_EQ(env.mp.hyp_checksum(base + 0xe, 1, &sum), -kEPERM);  // no longer shared
  EXPECT_EQ(env.mp.hyp_checksum(0x1000, 1, &sum), -kEINVAL);     // MMIO
  EXPECT_EQ(env.mp.hyp_checksum(base, 0, &sum), -kEINVAL);
  EXPECT_EQ(sum, sentinel);
}

TEST_F(MpTest, PinCountSaturatesWithEbusy) {
  const u64 pfn = env.data_pfn() + 3;
  ASSERT_EQ(env.mp.host_share_hyp(pfn, 1), 0);
  for (u32 i = 0; i < 0xffff; ++i) ASSERT_EQ(env.mp.hyp_pin_shared(pfn, 1), 0) << i;
  const std::string before = snapshot(env);
  EXPECT_EQ(env.mp.hyp_pin_shared(pfn, 1), -kEBUSY);
  EXPECT_EQ(snapshot(env), before);
  EXPECT_EQ(env.mp.meta(pfn)->pin_count, 0xffff);
  EXPECT_EQ(env.mp.host_unshare_hyp(pfn, 1), -kEBUSY);
  for (u32 i = 0; i < 0xffff; ++i) ASSERT_EQ(env.mp.hyp_unpin_shared(pfn, 1), 0) << i;
  EXPECT_EQ(env.mp.host_unshare_hyp(pfn, 1), 0);
}

TEST_F(MpTest, HypInternalMemoryIsNeverGivenBack) {
  const u64 pfn = env.data_pfn() + 0x20;
  ASSERT_EQ(env.mp.hyp_reserve(pfn, 4), 0);
  const std::string before = snapshot(env);
  EXPECT_EQ(env.mp.hyp_donate_host(pfn, 4), -kEPERM);
  EXPECT_EQ(env.mp.hyp_donate_host(pfn + 1, 1), -kEPERM);
  EXPECT_EQ(env.mp.hyp_reserve(pfn, 1), -kEPERM);      // already the hypervisor's
  EXPECT_EQ(env.mp.hyp_reserve(0x1000, 1), -kEINVAL);  // MMIO
  EXPECT_EQ(env.mp.hyp_reserve(pfn, 0), -kEINVAL);
  EXPECT_EQ(snapshot(env), before);
}

// Guest teardown: pages the host lent come back, pages the guest lent are
// lost to the host, the guest's own pages wait for reclaim.
TEST_F(MpTest, GuestDestroySortsPagesByWhoOwnsThem) {
  const u64 p = env.data_pfn() + 0x40;
  ASSERT_EQ(env.mp.host_share_guest(kG, p, 0x10, 2), 0);
  ASSERT_EQ(env.mp.host_donate_guest(kG, p + 2, 0x12, 2), 0);
  ASSERT_EQ(env.mp.host_donate_guest(kG, p + 4, 0x14, 2), 0);
  ASSERT_EQ(env.mp.guest_share_host(kG, 0x14, 2), 0);
  ASSERT_EQ(env.destroy_guest(kG), 0);
  for (u64 i = 0; i < 2; ++i) EXPECT_EQ(view(env, p + i, 0x10 + i), kVOwned);
  for (u64 i = 2; i < 6; ++i) EXPECT_EQ(view(env, p + i, 0x10 + i), kVDying);
  EXPECT_TRUE(env.mp.guest_exists(kG));
  EXPECT_EQ(env.mp.guest_pgt(kG), nullptr);
  EXPECT_EQ(env.mp.guest_destroy(kG), -kENOENT);
  for (u64 i = 2; i < 6; ++i) EXPECT_EQ(env.mp.host_stage2_idmap((p + i) << desc::kPageShift), -kEPERM);
  EXPECT_EQ(env.mp.host_share_guest(kG, p, 0x10, 1), -kENOENT);
  // Its slot is not reused while pages remain to reclaim.
  EXPECT_EQ(env.mp.guest_create(), int(kG + 1));
}

// The guest's TLB entries (its VMID) must be invalidated before the host gets
// back pages the guest could reach, and before its table pages are reused.
TEST_F(MpTest, GuestDestroyInvalidatesTheGuestVmidBeforeHostRegainsPages) {
  const u64 p = env.data_pfn() + 0x40;
  ASSERT_EQ(env.mp.host_share_guest(kG, p, 0x10, 1), 0);
  env.plat.clear_events();
  ASSERT_EQ(env.destroy_guest(kG), 0);
  const std::vector<sim::Event> ev = env.plat.events();
  size_t tlbi = ev.size(), host_map = ev.size(), free_table = ev.size();
  for (size_t i = 0; i < ev.size(); ++i) {
    const sim::Event& e = ev[i];
    if (e.type == sim::EventType::kTlbi && e.tlbi == TlbiKind::kVmid && e.vmid == kG && tlbi == ev.size()) tlbi = i;
    if (e.type == sim::EventType::kPteWrite && e.vmid == 0 && desc::is_valid(e.new_pte) && host_map == ev.size())
      host_map = i;
    if (e.type == sim::EventType::kFree && free_table == ev.size()) free_table = i;
  }
  ASSERT_LT(tlbi, ev.size()) << "no TLBI of the guest's VMID:\n" << env.plat.dump();
  ASSERT_LT(host_map, ev.size());
  EXPECT_LT(tlbi, host_map) << env.plat.dump();
  EXPECT_LT(tlbi, free_table) << env.plat.dump();
}

// dump_host: coalesced records, the lender of borrowed pages, continuation
// with a small buffer giving the same records, and its argument checks.
TEST_F(MpTest, DumpHostRecordsAndContinuation) {
  const u64 p = env.data_pfn();
  ASSERT_EQ(env.mp.host_share_hyp(p + 1, 2), 0);
  ASSERT_EQ(env.mp.host_donate_hyp(p + 3, 1), 0);
  ASSERT_EQ(env.mp.host_donate_guest(kG, p + 4, 0x10, 2), 0);
  ASSERT_EQ(env.mp.guest_share_host(kG, 0x11, 1), 0);
  DumpRecord r[8];
  u64 next = 0;
  ASSERT_EQ(env.mp.dump_host(p, r, 8, &next), 8);
  const DumpRecord want[] = {
      {p, 1, 0, u8(S::kOwned), 3, 0},             // host-owned, not mapped
      {p + 1, 2, 0, u8(S::kSharedOwned), 3, 1},   // lent to the hypervisor
      {p + 3, 1, kOwnerHyp, u8(S::kNoPage), 3, 0},
      {p + 4, 1, u8(kG), u8(S::kNoPage), 3, 0},
      {p + 5, 1, u8(kG), u8(S::kSharedBorrowed), 3, 1},  // borrowed: the lender
      {p + 6, 0x1fa, 0, u8(S::kOwned), 3, 0},     // rest of the level-3 table
      {p + 0x200, 0x3fc00, 0, u8(S::kOwned), 2, 0},  // rest of R0's level-2 table
      {0x80000, 0xff80000, 0, u8(S::kOwned), 1, 0},  // up to the end of the IA
  };
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(r[i].pfn, want[i].pfn) << i;
    EXPECT_EQ(r[i].nr_pages, want[i].nr_pages) << i;
    EXPECT_EQ(r[i].owner, want[i].owner) << i;
    EXPECT_EQ(r[i].state, want[i].state) << i;
    EXPECT_EQ(r[i].level, want[i].level) << i;
    EXPECT_EQ(r[i].mapped, want[i].mapped) << i;
  }
  EXPECT_EQ(next, u64{1} << 28);
  // One record at a time gives the same list.
  u64 pfn = p;
  for (int i = 0; i < 8; ++i) {
    DumpRecord one;
    ASSERT_EQ(env.mp.dump_host(pfn, &one, 1, &next), 1) << i;
    EXPECT_EQ(one.pfn, want[i].pfn) << i;
    EXPECT_EQ(one.nr_pages, want[i].nr_pages) << i;
    pfn = next;
  }
  EXPECT_EQ(pfn, u64{1} << 28);
  EXPECT_EQ(env.mp.dump_host(pfn, r, 8, &next), 0);  // at the end: nothing more
  EXPECT_EQ(env.mp.dump_host(pfn + 1, r, 8, &next), -kEINVAL);
  EXPECT_EQ(env.mp.dump_host(p, r, 0, &next), -kEINVAL);
  EXPECT_EQ(env.mp.dump_host(p, nullptr, 8, &next), -kEINVAL);
}

TEST_F(MpTest, GuestSlotsRunOut) {
  for (u32 i = 1; i < kMaxGuests; ++i) ASSERT_EQ(env.mp.guest_create(), int(kG + i));
  const std::string before = snapshot(env);
  EXPECT_EQ(env.mp.guest_create(), -kEBUSY);
  EXPECT_EQ(snapshot(env), before);
  ASSERT_EQ(env.destroy_guest(kG + 3), 0);  // owned nothing: its slot is free at once
  EXPECT_EQ(env.mp.guest_create(), int(kG + 3));
}

// Many transitions in a row on overlapping ranges and both sides of 2 MiB
// boundaries; every step's expected state is literal.
TEST_F(MpTest, RoundTripsRestoreTheHostOwnershipExactly) {
  const u64 p = env.data_pfn() + 0x1f8;
  const SnapOpts own{.raw_host = false};
  const std::string before = snapshot(env, own);
  ASSERT_EQ(env.mp.host_share_hyp(p, 16), 0);
  ASSERT_EQ(env.mp.hyp_pin_shared(p + 4, 8), 0);
  EXPECT_EQ(env.mp.host_unshare_hyp(p, 16), -kEBUSY);
  ASSERT_EQ(env.mp.hyp_unpin_shared(p + 4, 8), 0);
  ASSERT_EQ(env.mp.host_unshare_hyp(p, 16), 0);
  ASSERT_EQ(env.mp.host_donate_hyp(p + 8, 512), 0);
  EXPECT_EQ(view(env, p + 8 + 511, 0), kVDonatedHyp);
  ASSERT_EQ(env.mp.hyp_donate_host(p + 8, 512), 0);
  ASSERT_EQ(env.mp.host_donate_guest(kG, p, 0x1fe, 16), 0);
  ASSERT_EQ(env.mp.guest_share_host(kG, 0x1ff, 8), 0);
  EXPECT_EQ(view(env, p + 1, 0x1ff), kVGuestShared);
  EXPECT_EQ(view(env, p, 0x1fe), kVDonatedGuest);
  ASSERT_EQ(env.mp.guest_unshare_host(kG, 0x1ff, 8), 0);
  ASSERT_EQ(env.destroy_guest(kG), 0);
  ASSERT_EQ(env.mp.host_reclaim_guest(kG, p, 16), 0);
  ASSERT_EQ(env.mp.guest_create(), int(kG));  // the fixture's guest again, empty
  EXPECT_EQ(snapshot(env, own), before);
  EXPECT_EQ(leaves_of(env.mp.hyp_pgt()), "");
}

}  // namespace
}  // namespace pkvm::test
