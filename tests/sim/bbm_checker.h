// SPDX-License-Identifier: Apache-2.0
// Break-before-make checker: follows the descriptor writes, TLB invalidations,
// barriers and page allocations a SimPlatform records and reports every
// sequence the architecture does not allow, as readable strings.
//
// Rules, per descriptor slot (keyed by the descriptor's physical address):
//  a. valid -> valid only with the same output address, level and type
//     (permission/attribute change). Memory type, shareability or the
//     contiguous bit may not change in place either (strict_attrs, default
//     on: the Arm ARM requires break-before-make for those). With bbm2 on, a
//     block may become a table that is its exact split and a table may become
//     a block aligned to its size; an invalidation covering the entry must
//     then follow before finish().
//  b. after valid -> invalid (the break), a covering broadcast invalidation
//     must come before the slot becomes valid again. Covering: kVmid of the
//     vmid, or kIpa of the vmid inside the entry's range (stage 2); kEl2All,
//     or kEl2Va inside the range (EL2 stage 1, any vmid argument: the EL2
//     instructions do not take one). kIpaLocal never covers.
//  c. a permission restriction (stage 2: S2AP R or W removed, XN set; EL2
//     stage 1: AP[2] or XN set; tables: APTable/XNTable/PXNTable bits added)
//     needs a covering broadcast invalidation before finish().
//  d. a table page may not be freed while a slot holds a table descriptor
//     pointing to it, nor after being unlinked without a table-level
//     invalidation (kVmid of the vmid / kEl2All) in between. A table
//     descriptor must point at an allocated page, linked from one slot only.
//  e. no descriptor write into a page that is not allocated (use after free,
//     or a "table" in data memory).
//  With require_dsb (default on), an invalidation only counts when a
//  DSB ISHST or DSB ISH was recorded after the write it covers; otherwise it
//  is reported (platform.h: callers order the write before the TLBI).
//  finish() reports every requirement still pending (b, c, bbm2), including
//  breaks never invalidated at all (an unmap without TLBI).
#pragma once

#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "pgtable/pgtable.h"
#include "tests/sim/sim_platform.h"

namespace pkvm::sim {

/// Checks break-before-make and table-page lifetime over a platform's events.
///
/// Either attach it to a SimPlatform (it then sees every event as it is
/// recorded, and can read table contents for the bbm2 split check), or feed
/// it a recorded log with on_event() from the platform's creation onward.
class BbmChecker final : public EventObserver {
 public:
  /// A checker for tables of `default_format` (see set_format for mixes).
  explicit BbmChecker(Format default_format = Format::kStage2);
  /// A checker attached to `platform` at once.
  explicit BbmChecker(SimPlatform& platform, Format default_format = Format::kStage2);
  /// Detaches from the platform, if attached.
  ~BbmChecker();
  BbmChecker(const BbmChecker&) = delete;
  BbmChecker& operator=(const BbmChecker&) = delete;

  /// Starts observing `platform` (detaching from any previous one). Pages
  /// already allocated are taken from the platform; descriptors already in
  /// them are learnt from the first write to each slot.
  void attach(SimPlatform& platform);
  /// Stops observing.
  void detach();
  /// The platform attached to, or nullptr.
  SimPlatform* platform() const { return platform_; }

  /// Tables written with table id `vmid` use `f` (default: the constructor's).
  void set_format(u32 vmid, Format f);
  /// FEAT_BBM level-2 mode (rule a exception). Off by default.
  void set_bbm2(bool on);
  /// Memory type / shareability / contiguous changes need break-before-make. On by default.
  void set_strict_attrs(bool on);
  /// Invalidations count only after a DSB following the write. On by default.
  void set_require_dsb(bool on);
  /// Teardown mode, for Pgtable::destroy(): the tables are unreachable by any
  /// walker, so breaks create no requirements and frees are not checked
  /// against links or invalidations. Use-after-free (rule e) is still checked.
  void set_teardown(bool on);

  /// Consumes one event (called by the platform when attached).
  void on_event(const Event& e) override;
  /// EventObserver: records the live blocks and the platform.
  void on_attach(SimPlatform& platform, const std::vector<LiveBlock>& live) override;
  /// EventObserver: forgets the platform.
  void on_detach() override;

  /// Reports every pending requirement as a violation and forgets it.
  /// Returns violations().size() afterwards.
  size_t finish();
  /// Violations so far, oldest first, followed by the attached platform's
  /// allocator violations (prefixed "allocator: ").
  std::vector<std::string> violations() const;
  /// All violations as one text block ("no violations" when empty).
  std::string report() const;
  /// Number of requirements currently pending (breaks, restrictions, bbm2).
  size_t pending() const;
  /// The tracking state (tables, slots, pending requirements, violations)
  /// at one moment, for rollback().
  struct Checkpoint;
  /// Captures the tracking state.
  std::shared_ptr<const Checkpoint> checkpoint() const;
  /// Returns to `c`; use together with SimPlatform::rollback to the
  /// platform checkpoint taken at the same moment.
  void rollback(const Checkpoint& c);
  /// Forgets the checker's own violations (not its tracking state).
  void clear_violations();

 private:
  enum class Need : u8 { kBreak, kRestrict, kBbm2 };
  struct Pending {
    Need need;
    u64 slot;      // descriptor physical address
    u64 ia;        // first input address the entry covers
    u64 size;      // bytes the entry covers
    u32 vmid;
    Format format;
    u64 local_seq;  // checker-local order of the write
    Event write;    // the write, formatted only if it is reported
  };
  struct Slot {
    u64 cur = 0;
    u32 level = 0;
    bool known_level = false;
    bool break_pending = false;
  };
  struct PageInfo {
    std::set<u64> linked_from;  // slots holding a table descriptor to this page
    bool needs_tlbi = false;    // unlinked and not yet invalidated table-wide
    bool unlinked = false;      // was unlinked from its parent at some point
    u32 vmid = 0;
    Format format = Format::kStage2;
    u64 unlink_seq = 0;        // checker-local order of the unlink
    Event unlink_event;        // the unlinking write, formatted only if reported
  };

  Format format_of(u32 vmid) const;
  void add_violation(std::string msg);
  void on_pte_write(const Event& e);
  void on_tlbi(const Event& e);
  void on_alloc(u64 pa, u32 order);
  void on_free(const Event& e);
  /// True when no walker can reach `page`: unlinked and invalidated, or
  /// linked only from slots of pages that are themselves unreachable (a
  /// subtree freed bottom-up after its root entry was broken).
  bool unreachable(u64 page, int depth) const;
  void link(u64 table_pa, u64 slot, const Event& e);
  void unlink(u64 table_pa, u64 slot, const Event& e, Format f);
  void finish_locked();
  bool covers(const Pending& p, const Event& tlbi) const;
  bool check_split(u64 block, u32 level, u64 table_pa, std::string* why, int depth) const;

  mutable std::mutex mu_;
  SimPlatform* platform_ = nullptr;
  Format default_format_;
  std::map<u32, Format> formats_;
  bool bbm2_ = false;
  bool strict_attrs_ = true;
  bool require_dsb_ = true;
  bool teardown_ = false;

  u64 local_seq_ = 0;
  u64 last_dsb_ = 0;  // local_seq of the last DSB ISH / ISHST, 0 = none
  std::unordered_map<u64, Slot> slots_;
  std::unordered_map<u64, PageInfo> pages_;  // allocated pages only
  std::unordered_set<u64> unlinked_;         // pages_ entries with needs_tlbi
  std::list<Pending> pending_;
  std::vector<std::string> violations_;
};

}  // namespace pkvm::sim
