// SPDX-License-Identifier: Apache-2.0
// The bridge between mem_protect and its model:
//  * World: a SimPlatform, a fixed memory map, a booted MemProtect and a
//    Model in the same boot state;
//  * the invariant checker, which reads the real tables (host stage 2, hyp
//    stage 1, guest stage 2s) back into the abstract form with its own table
//    reader and compares them with the model, and checks the structure of
//    every table (exact reference counts, no leaked or empty table pages);
//  * Driver: applies one operation to both sides and reports any difference
//    (return code, state, structure). Shared by the differential unit test,
//    the fuzzer and the regression test.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mem_protect/mem_protect.h"
#include "tests/mem_protect/model.h"
#include "tests/sim/bbm_checker.h"
#include "tests/sim/sim_platform.h"

namespace pkvm::mptest {

/// The fixed layout every differential test uses. Memory regions lie inside
/// the SimPlatform arena (reclaim zeroes pages through it); MMIO gaps are
/// everything else, including the 1 GiB below the arena.
struct Layout {
  static constexpr u64 kArenaBase = 0x40000000;
  static constexpr u64 kArenaPages = 3072;  // 12 MiB
  static constexpr u64 kPoolPages = 128;    // table pages, at the arena base
  /// R0: pool + hyp image + host memory (2 MiB blocks possible).
  static constexpr u64 kR0Base = 0x40000000, kR0Size = 0x400000;
  /// MMIO gap [0x40400000, 0x40500000) inside the arena.
  /// R1: no-map firmware memory, directly followed by R2.
  static constexpr u64 kR1Base = 0x40500000, kR1Size = 0x80000;
  /// R2: host memory starting mid-2MiB (unaligned edge), then 3 aligned blocks.
  static constexpr u64 kR2Base = 0x40580000, kR2Size = 0x680000;
  /// The hypervisor's own memory: the pool and an "image" after it.
  static constexpr u64 kHypImagePfn = (kArenaBase >> 12) + kPoolPages, kHypImagePages = 16;
  static constexpr u32 kHostIaBits = 40, kHostStartLevel = 1;
  static constexpr u32 kGuestIaBits = 36, kGuestStartLevel = 1;
  /// The model configuration for this layout.
  static ModelConfig model_config();
};

/// A booted MemProtect on a fresh SimPlatform, with its model.
class World {
 public:
  /// Boots: regions, MemProtect::init, hyp_reserve of the pool and image.
  /// Host aborts take the shared-walker path unless `exclusive_aborts`
  /// (MemProtectConfig). With `bbm`, a break-before-make checker follows
  /// every descriptor write, TLB invalidation and table page from boot on.
  /// Aborts when boot fails (nothing can be tested then).
  explicit World(bool exclusive_aborts = false, bool bbm = true);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  /// The simulated platform (pool, arena, allocator statistics).
  sim::SimPlatform& plat() { return *plat_; }
  /// The implementation under test.
  MemProtect& mp() { return mp_; }
  /// The model, in step with mp() as long as a Driver reports no divergence.
  Model& model() { return model_; }
  /// The memory map both were booted with.
  const MemMap& memmap() const { return memmap_; }
  /// The break-before-make checker, or nullptr.
  sim::BbmChecker* bbm() { return bbm_.get(); }
  /// Host address of physical address `pa` (inside the arena).
  u64* word(u64 pa) { return static_cast<u64*>(plat_->phys_to_virt(PhysAddr(pa))); }
  /// Writes `v` at `pa` on behalf of a guest or the host (not the
  /// implementation); reset() clears the page again.
  void poke(u64 pa, u64 v);
  /// Returns to the state right after boot without booting again: platform
  /// pool and counters, checker, page metadata, MemProtect and model, and
  /// zeroes pages written with poke(). A long fuzzing run does this per input.
  void reset();

 private:
  std::unique_ptr<sim::SimPlatform> plat_;
  std::unique_ptr<sim::BbmChecker> bbm_;
  MemMap memmap_;
  std::vector<PageMeta> meta_;
  sim::SimRwLock host_lock_;  // as at EL2 (Env in mp_env.h)
  sim::SimSpinRwLock hyp_lock_, guest_locks_[kMaxGuests];
  MemProtect mp_;
  Model model_;
  // The state after boot, for reset().
  std::unique_ptr<const sim::SimPlatform::Checkpoint> boot_plat_;
  std::shared_ptr<const sim::BbmChecker::Checkpoint> boot_bbm_;
  std::vector<PageMeta> boot_meta_;
  MemProtect boot_mp_;
  Model boot_model_;
  std::vector<u64> poked_;  // pages poke() wrote since boot or reset
};

/// Problems found by a check, in order.
struct Problems {
  std::vector<std::string> list;
  /// Records one problem (kept up to a bound; the count is exact).
  void add(std::string s);
  /// True when nothing was found.
  bool ok() const { return count == 0; }
  size_t count = 0;  ///< Problems found (list keeps the first 200).
  /// All problems, one a line (at most `max`).
  std::string str(size_t max = 25) const;
};

// --- Independent table reader ------------------------------------------------------

/// One leaf (valid, annotated or empty) of a table, clipped to the range read.
struct Leaf {
  u64 start;  ///< first input address covered (inside the range read)
  u64 end;    ///< one past the last
  u64 pte;
  u32 level;
  u64 base;   ///< input address the whole entry starts at
};

/// Calls fn(const Leaf&) for every leaf of `pgt` over [start, end), reading
/// descriptors directly (not through the library's walker).
template <typename F>
void read_leaves(Pgtable& pgt, u64 start, u64 end, F&& fn);

/// The leaf translating `addr`.
Leaf read_leaf(Pgtable& pgt, u64 addr);
/// The descriptor slot of the leaf translating `addr` (tests corrupt it), and
/// the table page holding it in `*table_page` when non-null.
u64* leaf_slot(Pgtable& pgt, u64 addr, u32* level, u64** table_page = nullptr);

// --- Checks ----------------------------------------------------------------------------

/// Host and hyp entries of memory pages [lo, hi) (clipped to the memory span)
/// against the model, and their metadata (pins, hyp-internal flag).
void check_pages(World& w, u64 lo, u64 hi, Problems* out);
/// Guest `g`'s stage 2 over [gfn, gfn + nr) against the model.
void check_guest_range(World& w, u32 g, u64 gfn, u64 nr, Problems* out);
/// Guest slot state and the whole stage 2 of guest `g` against the model.
void check_guest(World& w, u32 g, Problems* out);
/// MMIO gaps of the host stage 2: only identity RW device mappings, exactly
/// the model's mapped MMIO ranges.
void check_mmio(World& w, Problems* out);
/// Structure of every live table: table-page reference counts are exactly
/// 1 + counted entries, no empty non-root table page, every table page is
/// allocated and linked once, pool pages in use == table pages reachable,
/// no valid level-0 leaf, the hyp maps nothing outside memory; and the
/// platform recorded no allocator violation, mem_protect no internal error
/// and the break-before-make checker (if any) no violation.
void check_structure(World& w, Problems* out);
/// The break-before-make checker's verdict at the end of an operation: every
/// break invalidated, every restriction broadcast, no violation so far.
void check_bbm(World& w, Problems* out);
/// dump_host(pfn, max) against the model and the real leaves: argument
/// checks, contiguous records from `pfn`, each page's owner/state/mapped, each
/// leaf's level, next_pfn. Returns where the dump stopped (0 on error).
u64 check_dump(World& w, u64 pfn, u32 max, Problems* out);
/// The whole host input space through dump_host, 128 records at a time.
void check_dump_all(World& w, Problems* out);
/// Everything above over the whole state (the dump of the whole host input
/// space only `with_dump`), plus the model's self-check.
void check_all(World& w, Problems* out, bool with_dump = true);

// --- Differential driver ----------------------------------------------------------------

/// Known implementation bugs a long fuzzing run may be told to tolerate, so it
/// keeps exploring past them (regression tests never relax anything).
enum Relax : u32 {
  kRelaxNone = 0,
  /// Any -ENOMEM for an operation that would succeed, when the state is
  /// unchanged (the per-leaf reservation bug: regressions/README.md).
  kRelaxEnomem = 1u << 0,
};
/// Parses "enomem" (from MP_FUZZ_RELAX / MP_DIFF_RELAX) into Relax bits.
u32 parse_relax(const char* s);

struct DriverOptions {
  u32 full_check_every = 32;  ///< check_all (without the dump) every N operations (0: never)
  u32 relax = kRelaxNone;
};

/// Applies operations to the implementation and the model in lockstep.
class Driver {
 public:
  /// Drives `w` (which must outlive the driver).
  explicit Driver(World& w, DriverOptions opt = {});

  /// Runs `op` on both sides and compares. Returns "" or a description of
  /// the divergence (the model is then no longer in step: stop). `*got`
  /// receives the implementation's return value.
  std::string step(const Op& op, int* got = nullptr);
  /// Caps the pool at the pages in use plus `extra` (< 0 removes the cap).
  void set_pool_limit(s64 extra);
  /// The next host abort or guest_create sees allocation `n` fail (and every
  /// later one when `sticky`): an exhaustion the pool cannot predict, which
  /// only those two paths must survive. Transitions reserve first and are
  /// never run with it armed.
  void arm_alloc_failure(s64 n, bool sticky);
  /// check_all; "" or the problems.
  std::string full_check();
  /// Operations stepped so far.
  u64 ops() const { return ops_; }

 private:
  // After recycling: forget the host mappings the implementation dropped,
  // checking that only rebuildable mappings went, MMIO first.
  void sync_recycled(const Op& op, const Outcome& exp, bool committed, Problems* out);
  // After pages returned to the host: accept the blocks the implementation
  // may have re-formed around them ("healing"), see model.h.
  void accept_heals(const std::vector<u64>& returned);

  World& w_;
  DriverOptions opt_;
  u64 ops_ = 0;
  s64 inject_n_ = -1;
  bool inject_sticky_ = false;
};

/// The fuzzer's decoder and checker (fuzz_mem_protect.cc): decodes `data`
/// into operations and runs them through a fresh World (with the
/// break-before-make checker unless !bbm) and Driver. Returns "" or the
/// divergence, with the operations that led to it.
std::string run_fuzz_input(const u8* data, size_t size, u32 relax, bool verbose, bool bbm = true);

// --- Template implementation ---------------------------------------------------------------

namespace detail {
template <typename F>
void read_table(Pgtable& pgt, const u64* table, u32 level, u32 entries, u64 table_base, u64 start, u64 end,
                F& fn) {
  const u64 g = desc::granule_size(level);
  u64 first = start > table_base ? (start - table_base) / g : 0;
  for (u64 i = first; i < entries; ++i) {
    const u64 base = table_base + i * g;
    if (base >= end) return;
    const u64 pte = table[i];
    if (desc::is_table(pte, level)) {
      const auto* child = static_cast<const u64*>(pgt.platform()->phys_to_virt(PhysAddr(desc::oa(pte))));
      read_table(pgt, child, level + 1, desc::kPtrsPerTable, base, start, end, fn);
      continue;
    }
    fn(Leaf{base < start ? start : base, base + g < end ? base + g : end, pte, level, base});
  }
}
}  // namespace detail

template <typename F>
void read_leaves(Pgtable& pgt, u64 start, u64 end, F&& fn) {
  const u64 limit = u64{1} << pgt.ia_bits();
  if (end > limit) end = limit;
  if (start >= end || !pgt.root()) return;
  detail::read_table(pgt, pgt.root(), pgt.start_level(), pgt.root_entries(), 0, start & ~(kPage - 1), end, fn);
}

}  // namespace pkvm::mptest
