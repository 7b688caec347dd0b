// SPDX-License-Identifier: Apache-2.0
// The ownership state machine: who owns each page of physical memory, who may
// map it, and the transitions that move pages between the host, the
// hypervisor and guests. Freestanding; compiled for EL2 and for host tests.
//
// Encoding (docs/ownership.md has the full picture):
//  * Host stage 2 is an identity map (IPA == PA). A page the host does not own
//    is an invalid entry annotated with its owner id (pgtable/desc.h). An
//    empty entry is a page the host owns that is not mapped yet; the host
//    abort path maps it on first touch.
//  * A valid entry carries the host's share state in software bits [56:55]:
//    OWNED, SHARED_OWNED (host owns, lent out) or SHARED_BORROWED (host
//    borrows it from its owner).
//  * The hypervisor's EL2 stage 1 maps VA == PA exactly the pages it owns or
//    borrows, with its state in the same software bits.
//  * Each guest's stage 2 maps the pages it owns or borrows, state likewise.
#pragma once

#include "mem_protect/memmap.h"
#include "pgtable/pgtable.h"

namespace pkvm {

/// Owner ids as stored in invalid host stage-2 entries.
enum : u32 {
  kOwnerHost = 0,
  kOwnerHyp = 1,
  kOwnerGuestFirst = 2,  ///< Guest handles are kOwnerGuestFirst .. + kMaxGuests - 1.
};
inline constexpr u32 kMaxGuests = 8;
static_assert(kOwnerGuestFirst + kMaxGuests - 1 <= desc::kMaxOwnerId);

/// Longest range one transition accepts; longer requests get -E2BIG. Bounds
/// the time spent at EL2 per call and the table pages one call may need.
inline constexpr u64 kMaxTransitionPages = 512;

/// State of a page as seen by one component.
enum class PageState : u8 {
  kOwned = 0,           ///< Owned exclusively (mapped or not).
  kSharedOwned = 1,     ///< Owned, and lent to another component.
  kSharedBorrowed = 2,  ///< Borrowed from its owner.
  kNoPage = 3,          ///< Not accessible to this component.
};
/// Software-bit encoding of a state in a valid leaf.
constexpr u32 state_prot(PageState s) { return prot_sw(u32(s)); }
/// State stored in a valid leaf's software bits.
constexpr PageState state_of_leaf(u64 pte) { return PageState(desc::sw_bits(pte) & 3); }
static_assert(state_of_leaf(desc::make_leaf(0, leaf_attrs_for(Format::kStage2, state_prot(PageState::kSharedBorrowed)), 3)) ==
              PageState::kSharedBorrowed);

/// The transitions, for statistics and traces.
enum class Transition : u8 {
  kHostShareHyp,
  kHostUnshareHyp,
  kHostDonateHyp,
  kHypDonateHost,
  kHostShareGuest,
  kHostUnshareGuest,
  kHostDonateGuest,
  kGuestShareHost,
  kGuestUnshareHost,
  kHostReclaimGuest,
  kHypPin,
  kHypUnpin,
  kGuestCreate,
  kGuestDestroy,
  kCount,
};

/// Per-page metadata the hypervisor keeps for every page of memory. Besides
/// pins and flags it mirrors, per page, the state the host stage 2 and the
/// hyp stage 1 encode, so a transition checks a range with one array scan
/// instead of a table walk per side (upstream pKVM keeps the host state in
/// its hyp_vmemmap for the same reason). The tables stay the authority the
/// hardware uses; every commit helper updates both under the same locks,
/// and the invariant checker compares the two page by page. Zeroed memory is
/// the boot state: host OWNED, hypervisor NOPAGE.
struct PageMeta {
  u16 pin_count;  ///< Pins by the hypervisor of a page the host shared with it.
  u8 flags;       ///< PageMetaFlags.
  u8 lender;      ///< Owner that lent a SHARED_BORROWED host page (dumps).
  u8 host_state;  ///< PageState the host stage 2 encodes (0 = OWNED).
  u8 owner;       ///< Owner id annotated while the host state is NOPAGE.
  u8 hyp_state_inv;  ///< PageState of the hyp stage 1, complemented (0 = NOPAGE).
  /// 1 + index in the memory map of the region holding the page, 0 for a
  /// page of the metadata span in no region. Set by MemProtect::init: a
  /// range lies in one region when its first and last pages name the same.
  u8 region;
};
static_assert(sizeof(PageMeta) == 8);
/// The host's state of a page, from its metadata.
constexpr PageState meta_host_state(const PageMeta& m) { return PageState(m.host_state); }
/// The hypervisor's state of a page, from its metadata.
constexpr PageState meta_hyp_state(const PageMeta& m) { return PageState(~m.hyp_state_inv & 3); }
static_assert(meta_hyp_state(PageMeta{}) == PageState::kNoPage && meta_host_state(PageMeta{}) == PageState::kOwned);
enum PageMetaFlags : u8 {
  /// The hypervisor's own memory (image, stacks, pools): never given away.
  kMetaHypInternal = 1u << 0,
};

/// Counters exported through the statistics hypercall.
struct MemProtectStats {
  u64 host_aborts[4];      ///< Host aborts resolved, by level of the mapping installed.
  u64 host_abort_eagain;   ///< Aborts that found a valid entry (another CPU won).
  u64 host_abort_eperm;    ///< Aborts on memory the host does not own.
  u64 host_abort_enomem;   ///< Aborts that could not get a table page even after recycling.
  u64 recycles;            ///< Times mappings were dropped to free table pages.
  u64 internal_errors;     ///< Commit steps that failed after checks passed (a bug; must stay 0).
  u64 heals;               ///< Blocks restored after their pages all returned to the host.
  u64 ok[u32(Transition::kCount)];
  u64 failed[u32(Transition::kCount)];
};

/// One record of the host stage-2 dump: a run of pages with the same owner,
/// host state and mapping level.
struct DumpRecord {
  u64 pfn;
  u64 nr_pages;
  u8 owner;   ///< Owner id (kOwnerHost for host-owned pages).
  u8 state;   ///< PageState as the host sees it.
  u8 level;   ///< Level of the host stage-2 entry (3 for a page).
  u8 mapped;  ///< 1 when the host stage-2 entry is valid.
};

/// Boot-time configuration.
struct MemProtectConfig {
  Platform* platform;
  const MemMap* memmap;
  u32 host_ia_bits;       ///< e.g. 40: must cover every region and MMIO the host uses.
  u32 host_start_level;
  u32 guest_ia_bits;
  u32 guest_start_level;
  /// Metadata for pages [meta_base_pfn, meta_base_pfn + meta_nr); must cover
  /// every memory region. Zero-initialised by the caller. The memory map
  /// must not change after init (each page's region is noted there).
  PageMeta* meta;
  u64 meta_base_pfn;
  u64 meta_nr;
  /// Locks, taken in the order host -> guest -> hyp (never the reverse).
  RwLock* host_lock;
  RwLock* hyp_lock;
  RwLock* guest_locks[kMaxGuests];
  /// Serialises host aborts on the exclusive host lock with an exclusive
  /// walker, as upstream pKVM does: for comparison with the shared path.
  bool exclusive_aborts;
};

/// The host, hypervisor and guest page tables and the transitions between them.
class MemProtect {
 public:
  /// Builds the empty host stage 2 and hyp stage 1. -EINVAL for a bad config,
  /// -ENOMEM when the roots cannot be allocated.
  int init(const MemProtectConfig& cfg);
  /// Marks [pfn, pfn + nr) as the hypervisor's own memory: annotated HYP in
  /// the host stage 2, mapped in the hyp stage 1, never donated back. Boot only.
  int hyp_reserve(u64 pfn, u64 nr);

  /// Host abort path: maps the largest block around `addr` that lies in one
  /// memory region or MMIO gap and in the table that holds the entry.
  /// -EAGAIN: already mapped (another CPU won); -EPERM: the host does not
  /// own it; -ENOMEM: no table page even after recycling; -EINVAL: outside
  /// the host's input range.
  int host_stage2_idmap(u64 addr);

  int host_share_hyp(u64 pfn, u64 nr);      ///< Host lends pages to the hypervisor.
  int host_unshare_hyp(u64 pfn, u64 nr);    ///< Host takes them back (-EBUSY while pinned).
  int host_donate_hyp(u64 pfn, u64 nr);     ///< Host gives pages to the hypervisor.
  int hyp_donate_host(u64 pfn, u64 nr);     ///< Hypervisor gives donated pages back, zeroed.
  /// Host lends [pfn, +nr) to guest `guest` at guest frame `gfn`.
  int host_share_guest(u32 guest, u64 pfn, u64 gfn, u64 nr);
  /// Host takes back what it lent to `guest` at [gfn, +nr).
  int host_unshare_guest(u32 guest, u64 gfn, u64 nr);
  /// Host gives [pfn, +nr) to `guest`, mapped at `gfn`.
  int host_donate_guest(u32 guest, u64 pfn, u64 gfn, u64 nr);
  /// Guest lends its pages at [gfn, +nr) to the host.
  int guest_share_host(u32 guest, u64 gfn, u64 nr);
  /// Guest takes back what it lent to the host.
  int guest_unshare_host(u32 guest, u64 gfn, u64 nr);
  /// Host takes back pages of a destroyed guest; they are zeroed first.
  /// -EBUSY while the guest is still alive.
  int host_reclaim_guest(u32 guest, u64 pfn, u64 nr);
  /// Hypervisor pins pages the host shared with it (unshare gets -EBUSY).
  int hyp_pin_shared(u64 pfn, u64 nr);
  /// Drops one pin from each page.
  int hyp_unpin_shared(u64 pfn, u64 nr);

  /// Creates a guest with an empty stage 2; returns its handle (an owner id)
  /// or -ENOMEM / -EBUSY (no free slot).
  int guest_create();
  /// Destroys a guest: pages the host lent it return to the host, pages it
  /// lent the host are unmapped from the host, its own pages stay its until
  /// the host reclaims them.
  int guest_destroy(u32 guest);

  /// FNV-1a over the 64-bit words of pages the hypervisor owns or borrows,
  /// read through its own mapping. -EPERM when any page is not mapped for it.
  int hyp_checksum(u64 pfn, u64 nr, u64* sum);

  /// Dumps the host stage 2 from `pfn` on as coalesced records. Returns the
  /// number of records written (at most `max`); `*next_pfn` is where to
  /// continue (or the end of the address space).
  int dump_host(u64 pfn, DumpRecord* out, u32 max, u64* next_pfn);

  /// Drives every transition from every relevant state on the `nr` (>= 4)
  /// host-owned pages at `pfn`, checking results and states. 0 on success,
  /// else -(1000 + the number of the first failing step).
  int selftest(u64 pfn, u64 nr);

  /// Counters (a snapshot).
  MemProtectStats stats() const;
  /// The tables, for statistics, dumps and tests.
  Pgtable& host_pgt() { return host_; }
  Pgtable& hyp_pgt() { return hyp_; }
  /// The guest's stage 2, or nullptr when no such live guest.
  Pgtable* guest_pgt(u32 guest);
  /// True while `guest` exists, alive or dying (pages left to reclaim).
  bool guest_exists(u32 guest) const;
  /// Metadata of a memory page, or nullptr outside the map. Inline: the
  /// transitions look pages up several times each.
  PageMeta* meta(u64 pfn) {
    const u64 off = pfn - cfg_.meta_base_pfn;  // wraps below the span: refused with the rest
    return off < cfg_.meta_nr ? &cfg_.meta[off] : nullptr;
  }
  const MemMap& memmap() const { return *cfg_.memmap; }

  struct Impl;

 private:
  friend struct Impl;
  struct Guest {
    bool used;
    bool alive;
    u64 owned_pages;  // pages annotated with this guest in the host stage 2
    Pgtable pgt;
  };
  void commit_guest_map(Guest* g, u64 ipa, u64 size, u64 pa, PageState s);
  MemProtectConfig cfg_ = {};
  Pgtable host_;
  Pgtable hyp_;
  Guest guests_[kMaxGuests] = {};
  // Per CPU: aborts on different CPUs would otherwise bounce one line.
  MemProtectStats& cpu_stats() { return stats_.cpu(cfg_.platform->cpu_id()); }
  PerCpuCounters<MemProtectStats> stats_;
};

}  // namespace pkvm
