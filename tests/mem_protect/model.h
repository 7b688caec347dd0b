// SPDX-License-Identifier: Apache-2.0
// Executable specification of the ownership state machine (mem_protect).
//
// Written from the specification, not from the implementation: the model
// knows nothing about page tables. Its state is an abstract map
//   page -> (owner, borrower, guest frame, pin count, host-mapped bit)
// plus, per guest, the map gfn -> page and, for the host abort path, the set
// of MMIO ranges the host has mapped. Every transition is a pure predict()
// (the errno the specification demands and an upper bound of the table pages
// a correct implementation may need) followed by commit().
//
// Errno precedence (mem_protect.h does not state one; this is the order the
// model demands, and the implementation agrees): count (0: -EINVAL, > 512:
// -E2BIG), guest handle (-ENOENT), host frame range (-EINVAL: wraps, not all
// in one region, no-map), guest frame range (-EINVAL), host_reclaim_guest of a
// live guest (-EBUSY), page states (-EPERM), then the per-page extras
// (host_unshare_hyp of a pinned page -EBUSY, hyp_donate_host of hyp-internal
// memory -EPERM, hyp_unpin_shared of an unpinned page -EPERM, 65535 pins
// -EBUSY), and last the pool (-ENOMEM). guest_create takes the lowest free id.
//
// Encoding decisions the model adopts where the specification leaves a choice
// (all observable only through host_stage2_idmap returning -EAGAIN or 0):
//  * a page the host gets back from a share (host_unshare_hyp,
//    host_unshare_guest, guest_destroy of a borrowed page) stays mapped in the
//    host stage 2: only its software state bits change;
//  * a page the host gets back from a donation (hyp_donate_host,
//    host_reclaim_guest) comes back unmapped (an empty entry).
// Recycling may drop any mapping of a host-OWNED, unshared page or of MMIO at
// any time the pool runs short; the checker then resynchronises those bits
// (drop_host_mapping / set_mmio_mapped) after verifying only drops happened.
// Conversely, after pages return to the host the implementation may map a
// whole aligned block (2 MiB / 1 GiB, inside one region) around them when
// every page of it is host-OWNED and unshared ("healing" the block mapping);
// the checker accepts exactly that (add_host_mapping).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "mem_protect/mem_protect.h"

namespace pkvm::mptest {

/// Component ids, as in mem_protect.h.
inline constexpr u8 kHost = u8(kOwnerHost);
inline constexpr u8 kHyp = u8(kOwnerHyp);
inline constexpr u8 kNobody = 0xff;
inline constexpr u64 kPage = desc::kPageSize;

/// Every operation the model, the checker and the fuzzer know.
enum class OpKind : u8 {
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
  kHostAbort,     ///< host_stage2_idmap(addr)
  kHypChecksum,   ///< hyp_checksum(pfn, nr)
  kCount,
};

/// Name of an operation, for messages.
const char* to_string(OpKind k);

/// One operation with its (possibly hostile) arguments. Unused fields are 0.
struct Op {
  OpKind kind = OpKind::kHostShareHyp;
  u32 guest = 0;
  u64 pfn = 0;
  u64 gfn = 0;
  u64 nr = 0;
  u64 addr = 0;  ///< kHostAbort only.
};

/// "host_share_guest(g=2, pfn=0x40200, gfn=0x10, nr=1)" etc.
std::string to_string(const Op& op);

/// What the specification says an operation returns.
struct Outcome {
  int ret = 0;  ///< 0 / guest id (kGuestCreate) on success, else -errno.
  /// Upper bound of new table pages a correct implementation may need to
  /// commit this operation; -ENOMEM is only acceptable when fewer pages
  /// remain in the pool (after recycling). 0 when nothing is allocated.
  u64 max_tables = 0;
  /// kHostAbort success: the block the host must get mapped, and its level.
  Range block{0, 0};
  u32 block_level = 0;
  /// kHostAbort: level of the empty entry the walk finds (the block can be
  /// no larger than that entry's granule).
  u32 entry_level = 0;
  bool mmio = false;  ///< kHostAbort: the address is in an MMIO gap.
};

/// Geometry the model needs (the same numbers the implementation is given).
struct ModelConfig {
  std::vector<MemRegion> regions;  ///< sorted, non-overlapping, page aligned
  u32 host_ia_bits = 40;
  u32 host_start_level = 1;
  u32 guest_ia_bits = 36;
  u32 guest_start_level = 1;
  u32 hyp_start_level = 0;  ///< EL2 stage 1: 48-bit VA, 4 levels.
};

/// State of one page of memory.
struct PageInfo {
  u8 owner = kHost;        ///< kHost, kHyp or a guest id.
  u8 borrower = kNobody;   ///< Who borrows it from its owner (kNobody when not shared).
  bool host_mapped = false;  ///< The host stage 2 holds a valid entry for it.
  bool hyp_internal = false; ///< Reserved at boot: never given away.
  u16 pins = 0;            ///< hyp_pin_shared count.
  u32 gfn = 0;             ///< Guest frame when a guest owns or borrows it (guest IA <= 44 bits).
};

/// The guests, by slot.
struct GuestInfo {
  bool used = false;   ///< The id is taken (alive, or dead with pages left).
  bool alive = false;
  u64 owned = 0;       ///< Pages this guest owns (mapped or awaiting reclaim).
  absl::flat_hash_map<u64, u64> map;  ///< gfn -> pfn, pages mapped in its stage 2.
};

/// The executable specification.
class Model {
 public:
  /// A fresh state: every page of every region host-owned and unmapped, no
  /// guest, no MMIO mapped.
  explicit Model(const ModelConfig& cfg);

  /// Boot-time reservation of the hypervisor's own memory. 0 or -EINVAL/-EPERM.
  int hyp_reserve(u64 pfn, u64 nr);

  /// The specification's answer for `op` in the current state. Pure.
  Outcome predict(const Op& op) const;
  /// Applies `op`, which must be predicted to succeed (aborts otherwise).
  /// kGuestCreate takes the lowest free slot, as predict() says.
  void commit(const Op& op);
  /// predict() then, on success, commit(). Returns the predicted result.
  int apply(const Op& op);

  // --- Recycling: the implementation may drop rebuildable mappings --------
  /// Forgets the host mapping of a host-owned, unshared page.
  void drop_host_mapping(u64 pfn);
  /// Records a mapping of a host-owned, unshared page the implementation
  /// made on its own (a healed block).
  void add_host_mapping(u64 pfn);
  /// Replaces the set of MMIO ranges mapped in the host (sorted, disjoint).
  void set_mmio_mapped(const std::vector<Range>& ranges);

  // --- Queries --------------------------------------------------------------
  /// The geometry the model was built with (regions sorted).
  const ModelConfig& config() const { return cfg_; }
  /// The region holding `pfn`, or nullptr.
  const MemRegion* region_of(u64 pfn) const {
    if (pfn < span_lo_ || pfn >= span_hi_) return nullptr;
    const u8 i = region_idx_[pfn - span_lo_];
    return i == 0xff ? nullptr : &cfg_.regions[i];
  }
  /// True when `pfn` is a page of some memory region.
  bool is_memory(u64 pfn) const { return region_of(pfn) != nullptr; }
  /// State of a memory page (must be is_memory; aborts otherwise).
  const PageInfo& page(u64 pfn) const {
    if (!is_memory(pfn)) not_memory(pfn);
    return pages_[pfn - span_lo_];
  }
  /// State of a memory page, or nullptr when `pfn` is not memory.
  const PageInfo* find(u64 pfn) const {
    if (pfn < span_lo_ || pfn >= span_hi_ || region_idx_[pfn - span_lo_] == 0xff) return nullptr;
    return &pages_[pfn - span_lo_];
  }
  /// A page's state as the host sees it.
  static PageState host_view(const PageInfo& p) {
    if (p.owner == kHost) return p.borrower == kNobody ? PageState::kOwned : PageState::kSharedOwned;
    return p.borrower == kHost ? PageState::kSharedBorrowed : PageState::kNoPage;
  }
  /// A page's state as the hypervisor sees it.
  static PageState hyp_view(const PageInfo& p) {
    if (p.owner == kHyp) return p.borrower == kNobody ? PageState::kOwned : PageState::kSharedOwned;
    return p.borrower == kHyp ? PageState::kSharedBorrowed : PageState::kNoPage;
  }
  /// The page's state as the host sees it.
  PageState host_state(u64 pfn) const { return host_view(page(pfn)); }
  /// The page's state as the hypervisor sees it.
  PageState hyp_state(u64 pfn) const { return hyp_view(page(pfn)); }
  /// State of guest frame `gfn` in guest `g` (kNoPage when unmapped); `*pfn`
  /// receives the page behind it.
  PageState guest_state(u32 g, u64 gfn, u64* pfn = nullptr) const;
  /// Guest slot state (g in [kOwnerGuestFirst, +kMaxGuests)); nullptr otherwise.
  const GuestInfo* guest(u32 g) const;
  /// MMIO ranges currently mapped in the host, sorted.
  std::vector<Range> mmio_mapped() const;
  /// True when any byte of [start, end) of MMIO space is mapped.
  bool mmio_mapped_in(u64 start, u64 end) const;
  /// First and one-past-last pfn of the memory span (lowest region start to
  /// highest region end).
  u64 span_lo() const { return span_lo_; }
  u64 span_hi() const { return span_hi_; }
  /// The region or MMIO gap containing `addr`, bounded by the host IA size.
  Range enclosing(u64 addr, bool* is_mmio) const;
  /// True when every page of [start, end) is empty in the host stage 2:
  /// host-owned and unmapped memory, or unmapped MMIO.
  bool all_empty(u64 start, u64 end) const;
  /// Self-consistency of the model's own state (a model bug otherwise);
  /// returns "" or a description.
  std::string self_check() const;
  /// One line describing a page, for diffs.
  std::string describe_page(u64 pfn) const;

 private:
  [[noreturn]] void not_memory(u64 pfn) const;
  PageInfo& mut(u64 pfn) { return pages_[pfn - span_lo_]; }
  void set_mapped(u64 pfn, bool mapped);
  void set_owner_borrower(u64 pfn, u8 owner, u8 borrower);
  bool page_empty(const PageInfo& p) const { return p.owner == kHost && !p.host_mapped; }
  // Validation shared by the transitions; 0 or -errno.
  int check_nr(u64 nr) const;
  int check_host_range(u64 pfn, u64 nr) const;
  int check_gfn_range(u64 gfn, u64 nr) const;
  bool guest_alive(u32 g) const;
  Outcome predict_abort(u64 addr) const;
  // Upper bound of new tables to change a contiguous range of `n` pages in a
  // table with `start_level` (2 partial granules at each lower level).
  static u64 run_tables(u32 start_level) { return 2 * (desc::kLastLevel - start_level); }
  // Number of runs (gfn and pfn both consecutive, same state) among the
  // guest frames [gfn, gfn + nr) of guest g (all must be mapped).
  u64 runs(u32 g, u64 gfn, u64 nr) const;
  u64 all_runs(u32 g) const;

  ModelConfig cfg_;
  u64 span_lo_ = 0, span_hi_ = 0;
  std::vector<PageInfo> pages_;  // [span_lo_, span_hi_); entries outside regions unused
  std::vector<u8> region_idx_;   // per page of the span: index in cfg_.regions, or 0xff
  std::vector<u32> nonempty_;    // per 2 MiB chunk of the span: pages not empty
  GuestInfo guests_[kMaxGuests];
  std::map<u64, u64> mmio_;      // mapped MMIO: start -> end
};

}  // namespace pkvm::mptest
