// SPDX-License-Identifier: Apache-2.0
// Boot-time self-test of the ownership state machine: every transition from
// every relevant state on a few pages, checking each result and the states
// left behind. Runs at EL2 (when asked) and in the host tests.
#include "mem_protect/mem_protect.h"

namespace pkvm {

namespace {

struct Step {
  MemProtect& mp;
  int n = 0;
  int failed = 0;

  // Records step n; the first failing step number is kept.
  void expect(bool ok) {
    ++n;
    if (!ok && !failed) failed = n;
  }

  PageState host(u64 pfn) {
    u64 pte = 0;
    u32 level = 0;
    if (mp.host_pgt().get_leaf(pfn << desc::kPageShift, &pte, &level)) return PageState::kNoPage;
    if (desc::is_valid(pte)) return state_of_leaf(pte);
    return pte == 0 ? PageState::kOwned : PageState::kNoPage;
  }

  u32 host_owner(u64 pfn) {
    u64 pte = 0;
    u32 level = 0;
    mp.host_pgt().get_leaf(pfn << desc::kPageShift, &pte, &level);
    return desc::is_valid(pte) ? kOwnerHost : desc::owner(pte);
  }

  PageState mapped(Pgtable* pgt, u64 frame) {
    u64 pte = 0;
    u32 level = 0;
    if (!pgt || pgt->get_leaf(frame << desc::kPageShift, &pte, &level)) return PageState::kNoPage;
    return desc::is_valid(pte) ? state_of_leaf(pte) : PageState::kNoPage;
  }
};

}  // namespace

int MemProtect::selftest(u64 pfn, u64 nr) {
  if (nr < 4) return -kEINVAL;
  using S = PageState;
  Step t{*this};
  const u64 p0 = pfn, p1 = pfn + 1, p2 = pfn + 2, p3 = pfn + 3;
  for (u64 p = pfn; p < pfn + 4; ++p) t.expect(t.host(p) == S::kOwned && t.host_owner(p) == kOwnerHost);
  if (t.failed) return -(1000 + t.failed);

  // Host <-> hypervisor sharing, with pins.
  t.expect(host_share_hyp(p0, 1) == 0);
  t.expect(t.host(p0) == S::kSharedOwned && t.mapped(&hyp_, p0) == S::kSharedBorrowed);
  t.expect(host_share_hyp(p0, 1) == -kEPERM);
  t.expect(host_donate_hyp(p0, 1) == -kEPERM);
  t.expect(hyp_donate_host(p0, 1) == -kEPERM);
  t.expect(hyp_pin_shared(p0, 1) == 0);
  t.expect(host_unshare_hyp(p0, 1) == -kEBUSY);
  t.expect(hyp_unpin_shared(p0, 1) == 0);
  t.expect(hyp_unpin_shared(p0, 1) == -kEPERM);
  t.expect(host_unshare_hyp(p0, 1) == 0);
  t.expect(t.host(p0) == S::kOwned && t.mapped(&hyp_, p0) == S::kNoPage);
  t.expect(host_unshare_hyp(p0, 1) == -kEPERM);
  t.expect(hyp_pin_shared(p0, 1) == -kEPERM);

  // Host -> hypervisor donation and back.
  t.expect(host_donate_hyp(p1, 1) == 0);
  t.expect(t.host(p1) == S::kNoPage && t.host_owner(p1) == kOwnerHyp && t.mapped(&hyp_, p1) == S::kOwned);
  t.expect(host_share_hyp(p1, 1) == -kEPERM);
  t.expect(host_donate_hyp(p1, 1) == -kEPERM);
  u64 sum = 0;
  t.expect(hyp_checksum(p1, 1, &sum) == 0);
  t.expect(hyp_checksum(p2, 1, &sum) == -kEPERM);
  t.expect(host_stage2_idmap(p1 << desc::kPageShift) == -kEPERM);
  t.expect(hyp_donate_host(p1, 1) == 0);
  t.expect(t.host(p1) == S::kOwned && t.mapped(&hyp_, p1) == S::kNoPage);
  t.expect(hyp_donate_host(p1, 1) == -kEPERM);

  // Host <-> guest sharing and donation.
  const int gid = guest_create();
  t.expect(gid >= int(kOwnerGuestFirst));
  if (gid < 0) return -(1000 + t.failed);
  const u32 g = u32(gid);
  const u64 gfn = 0x10;
  t.expect(host_share_guest(g, p2, gfn, 1) == 0);
  t.expect(t.host(p2) == S::kSharedOwned && t.mapped(guest_pgt(g), gfn) == S::kSharedBorrowed);
  t.expect(host_donate_guest(g, p2, gfn + 1, 1) == -kEPERM);
  t.expect(host_share_guest(g, p3, gfn, 1) == -kEPERM);  // gfn already used
  t.expect(guest_share_host(g, gfn, 1) == -kEPERM);      // not the guest's to lend
  t.expect(host_unshare_guest(g, gfn, 1) == 0);
  t.expect(t.host(p2) == S::kOwned && t.mapped(guest_pgt(g), gfn) == S::kNoPage);
  t.expect(host_unshare_guest(g, gfn, 1) == -kEPERM);
  t.expect(host_share_guest(g + 1, p2, gfn, 1) == -kENOENT);

  t.expect(host_donate_guest(g, p3, gfn + 2, 1) == 0);
  t.expect(t.host_owner(p3) == g && t.mapped(guest_pgt(g), gfn + 2) == S::kOwned);
  t.expect(guest_share_host(g, gfn + 2, 1) == 0);
  t.expect(t.host(p3) == S::kSharedBorrowed && t.mapped(guest_pgt(g), gfn + 2) == S::kSharedOwned);
  t.expect(guest_share_host(g, gfn + 2, 1) == -kEPERM);
  t.expect(guest_unshare_host(g, gfn + 2, 1) == 0);
  t.expect(t.host_owner(p3) == g && t.mapped(guest_pgt(g), gfn + 2) == S::kOwned);
  t.expect(guest_unshare_host(g, gfn + 2, 1) == -kEPERM);
  t.expect(host_reclaim_guest(g, p3, 1) == -kEBUSY);

  // Teardown: lent pages return, owned pages wait for reclaim.
  t.expect(host_share_guest(g, p2, gfn, 1) == 0);
  t.expect(guest_destroy(g) == 0);
  t.expect(t.host(p2) == S::kOwned);
  t.expect(guest_exists(g) && guest_pgt(g) == nullptr);
  t.expect(host_reclaim_guest(g, p2, 1) == -kEPERM);
  t.expect(host_reclaim_guest(g, p3, 1) == 0);
  t.expect(t.host(p3) == S::kOwned && t.host_owner(p3) == kOwnerHost);
  t.expect(!guest_exists(g));
  t.expect(host_reclaim_guest(g, p3, 1) == -kENOENT);

  for (u64 p = pfn; p < pfn + 4; ++p) t.expect(t.host(p) == S::kOwned && t.mapped(&hyp_, p) == S::kNoPage);
  t.expect(stats().internal_errors == 0);
  return t.failed ? -(1000 + t.failed) : 0;
}

}  // namespace pkvm
