// SPDX-License-Identifier: Apache-2.0
// Ownership transitions. Every transition follows the same shape:
//   1. validate the arguments (shape, guest, ranges) without touching state;
//   2. check the state of every page on every side involved;
//   3. reserve: make sure the pool holds every table page the commit may
//      need (recycling rebuildable host mappings once if it does not);
//   4. commit: page-table updates that cannot fail any more.
// A failure in 1-3 returns a precise errno and changes nothing.
#include "mem_protect/mem_protect.h"

namespace pkvm {

using namespace desc;

namespace {

constexpr u64 kPfnMax = ~u64{0} >> kPageShift;

// Scoped lock holder; a null lock means a single-threaded configuration.
template <void (RwLock::*kAcquire)(), void (RwLock::*kRelease)()>
class Hold {
 public:
  explicit Hold(RwLock* l) : l_(l) {
    if (l_) (l_->*kAcquire)();
  }
  ~Hold() {
    if (l_) (l_->*kRelease)();
  }
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;

 private:
  RwLock* l_;
};
using Exclusive = Hold<&RwLock::lock, &RwLock::unlock>;
// Host aborts run side by side under a shared hold.
using Shared = Hold<&RwLock::lock_shared, &RwLock::unlock_shared>;

// Statistics live in the calling CPU's copy (MemProtect::cpu_stats).
void count(u64* c) { percpu_add(c); }

// Calls f(ctx) for every leaf (valid or not) in [addr, addr + size).
template <typename F>
int for_each_leaf(Pgtable& pgt, u64 addr, u64 size, F&& f) {
  struct Ctx {
    F* f;
  } c{&f};
  Walker w{[](const VisitCtx& ctx, u32) -> int { return (*static_cast<Ctx*>(ctx.arg)->f)(ctx); }, &c, kWalkLeaf};
  return pgt.walk(addr, size, w);
}

constexpr u64 align_down(u64 v, u64 a) { return v & ~(a - 1); }

// The part of the leaf at ctx that lies inside the walked range.
Range clip(const VisitCtx& ctx) {
  const u64 g = granule_size(ctx.level);
  const u64 base = align_down(ctx.addr, g);
  return Range{ctx.addr, base + g < ctx.end ? base + g : ctx.end};
}

// The output address of `r.start` through the valid leaf at ctx (a guest
// frame's host page).
u64 leaf_pa(const VisitCtx& ctx, const Range& r) {
  return oa(ctx.old) + (r.start - align_down(ctx.addr, granule_size(ctx.level)));
}

constexpr u32 kHostMemProt = kProtRWX;
constexpr u32 kHostMapFlags = kMapSkipDcache | kMapSkipIcache;

}  // namespace

struct MemProtect::Impl {
  // --- State of pages as each component sees them ------------------------

  static PageState host_state_of(u64 pte) {
    if (is_valid(pte)) return state_of_leaf(pte);
    return pte == 0 ? PageState::kOwned : PageState::kNoPage;
  }

  static PageState mapped_state_of(u64 pte) {
    return is_valid(pte) ? state_of_leaf(pte) : PageState::kNoPage;
  }

  // 0 when every page of [addr, addr + size) in the guest stage 2 `pgt` is
  // in state `want`, else -EPERM.
  static int check_state(Pgtable& pgt, u64 addr, u64 size, PageState want) {
    return for_each_leaf(pgt, addr, size, [&](const VisitCtx& ctx) -> int {
      return mapped_state_of(ctx.old) == want ? 0 : -kEPERM;
    });
  }

  // The metadata of pages [addr, addr + size), or nullptr when any of them
  // has none (never for a validated range; refused rather than trusted).
  static PageMeta* meta_of(MemProtect& mp, u64 addr, u64 size) {
    // One bounds check for the range: its first page's offset into the span,
    // and its page count within what is left of the span from there.
    const u64 off = (addr >> kPageShift) - mp.cfg_.meta_base_pfn;
    const u64 nr = size >> kPageShift;
    if (off >= mp.cfg_.meta_nr || nr == 0 || nr > mp.cfg_.meta_nr - off) return nullptr;
    return &mp.cfg_.meta[off];
  }

  // 0 when `ok(meta)` holds for every page of [addr, addr + size), else
  // -EPERM: the checks of the host's and the hypervisor's side read the
  // metadata that mirrors their tables (PageMeta), one array scan.
  // `known`, when the caller has it, is the range's metadata as
  // check_host_range returned it: no second lookup.
  template <typename Ok>
  static int check_meta(MemProtect& mp, u64 addr, u64 size, Ok ok, const PageMeta* known = nullptr) {
    const PageMeta* m = known ? known : meta_of(mp, addr, size);
    if (!m) return -kEPERM;
    for (u64 i = 0; i < size >> kPageShift; ++i)
      if (!ok(m[i])) return -kEPERM;
    return 0;
  }

  static int check_host(MemProtect& mp, u64 addr, u64 size, PageState want) {
    return check_meta(mp, addr, size, [want](const PageMeta& m) { return meta_host_state(m) == want; });
  }

  static int check_hyp(MemProtect& mp, u64 addr, u64 size, PageState want, const PageMeta* known = nullptr) {
    return check_meta(mp, addr, size, [want](const PageMeta& m) { return meta_hyp_state(m) == want; }, known);
  }

  // Both sides in one pass over the mirror (the transitions between the host
  // and the hypervisor check both over the same pages).
  static int check_host_hyp(MemProtect& mp, u64 addr, u64 size, PageState host, PageState hyp,
                            const PageMeta* known = nullptr) {
    return check_meta(
        mp, addr, size,
        [host, hyp](const PageMeta& m) { return meta_host_state(m) == host && meta_hyp_state(m) == hyp; }, known);
  }

  // 0 when every page of the range is annotated with `owner` in the host stage 2.
  static int check_host_owner(MemProtect& mp, u64 addr, u64 size, u32 owner, const PageMeta* known = nullptr) {
    return check_meta(
        mp, addr, size, [owner](const PageMeta& m) { return meta_host_state(m) == PageState::kNoPage && m.owner == owner; },
        known);
  }

  // Mirrors a committed host or hyp state into the metadata of the range
  // (`known`: as in check_meta).
  template <typename Set>
  static void set_meta(MemProtect& mp, u64 addr, u64 size, Set set, PageMeta* known = nullptr) {
    PageMeta* m = known ? known : meta_of(mp, addr, size);
    if (!m) return commit(mp, -kEINVAL);
    for (u64 i = 0; i < size >> kPageShift; ++i) set(m[i]);
  }

  // --- Argument validation --------------------------------------------------

  static int check_nr(u64 nr) {
    if (nr == 0) return -kEINVAL;
    if (nr > kMaxTransitionPages) return -kE2BIG;
    return 0;
  }

  // The memory region holding every page of [pfn, pfn + nr) (nr > 0), or
  // nullptr: its first and last pages name the same one (PageMeta::region),
  // so no search of the memory map.
  static const MemRegion* region_of(MemProtect& mp, u64 pfn, u64 nr) {
    const PageMeta* first = mp.meta(pfn);
    const PageMeta* last = mp.meta(pfn + nr - 1);
    if (!first || !last || first->region == 0 || first->region != last->region ||
        first->region > mp.cfg_.memmap->size())
      return nullptr;
    return &(*mp.cfg_.memmap)[first->region - 1u];
  }

  // [pfn, pfn + nr) must be memory the host may give away, in one region.
  // On success `*meta` (when asked for) is the range's metadata: a region
  // lies inside the metadata span (init checks), so the whole range has it.
  static int check_host_range(MemProtect& mp, u64 pfn, u64 nr, PageMeta** meta = nullptr) {
    int ret = check_nr(nr);
    if (ret) return ret;
    // No overflow check needed: region_of finds metadata for the first page
    // only inside the span, and from there pfn + nr (nr bounded) cannot
    // wrap; a range inside one region lies inside the host's input range
    // (init checks every region against it).
    const MemRegion* r = region_of(mp, pfn, nr);
    if (!r || (r->flags & kRegionNoMap)) return -kEINVAL;
    if (meta) *meta = mp.meta(pfn);
    return 0;
  }

  static int check_gfn_range(const Pgtable& g, u64 gfn, u64 nr) {
    // Compare frame numbers: (gfn + nr) << kPageShift wraps for gfn near kPfnMax.
    if (gfn + nr < gfn || gfn + nr > (u64{1} << (g.ia_bits() - kPageShift))) return -kEINVAL;
    return 0;
  }

  static Guest* live_guest(MemProtect& mp, u32 id) {
    if (id < kOwnerGuestFirst || id >= kOwnerGuestFirst + kMaxGuests) return nullptr;
    Guest& g = mp.guests_[id - kOwnerGuestFirst];
    return g.used && g.alive ? &g : nullptr;
  }

  static Guest* any_guest(MemProtect& mp, u32 id) {
    if (id < kOwnerGuestFirst || id >= kOwnerGuestFirst + kMaxGuests) return nullptr;
    Guest& g = mp.guests_[id - kOwnerGuestFirst];
    return g.used ? &g : nullptr;
  }

  static RwLock* guest_lock(MemProtect& mp, u32 id) { return mp.cfg_.guest_locks[id - kOwnerGuestFirst]; }

  // --- Reservation ------------------------------------------------------------

  static u64 tables_for(const Pgtable& pgt, u64 addr, u64 size, u64 phys, bool annotate) {
    return max_new_tables(pgt.start_level(), addr, size, phys, annotate);
  }

  // Table pages a series of updates of one table may need, each table
  // counted once while the ranges come in address order (guest leaves map
  // runs of host pages): summing max_new_tables per leaf would count the
  // same few tables once per page and refuse operations that fit.
  struct Budget {
    explicit Budget(const Pgtable& pgt) : start_level(pgt.start_level()) {}
    void add(u64 addr, u64 size, u64 phys, bool annotate) {
      if (size == 0) return;
      const u64 end = addr + size;
      for (u32 level = start_level + 1; level <= kLastLevel; ++level) {
        const u64 g = granule_size(level - 1);  // the span one table at `level` covers
        const bool parent_block = level_supports_block(level - 1) && (annotate || ((addr ^ phys) & (g - 1)) == 0);
        for (u64 base = align_down(addr, g); base < end; base += g) {
          if (parent_block && base >= addr && base + g <= end) continue;  // a block, no table
          const u64 index = base / g;
          if (counted[level] && last[level] == index) continue;  // this table is already counted
          counted[level] = true;
          last[level] = index;
          ++total;
        }
      }
    }
    u32 start_level;
    u64 total = 0;
    u64 last[kLastLevel + 1] = {};
    bool counted[kLastLevel + 1] = {};
  };

  // stage2_unmap of [start, end), skipping what is empty: the MMIO gaps span
  // nearly all of the input range and are mostly unmapped, and one walk over
  // them would visit every entry. First the root and the tables below it are
  // read directly (the lock is held exclusively) down to level 2, collecting
  // the runs of entries that hold something; only then are those runs
  // unmapped, since unmapping frees tables the scan would otherwise still
  // read. Too many runs to note: the rest of the range is one run.
  struct Runs {
    static constexpr u32 kMax = 32;
    Range r[kMax];
    u32 n = 0;
    bool full = false;  // r[n - 1] extends to the end of the range
    void add(u64 a, u64 b) {
      if (full) return;
      if (n && r[n - 1].end == a) {
        r[n - 1].end = b;
      } else if (n < kMax) {
        r[n++] = Range{a, b};
      } else {
        full = true;
      }
    }
  };

  static void unmap_populated(MemProtect& mp, u64 start, u64 end) {
    Runs runs;
    scan_populated(mp, mp.host_.root(), mp.host_.start_level(), 0, start, end, &runs);
    if (runs.full) runs.r[runs.n - 1].end = end;
    for (u32 i = 0; i < runs.n; ++i) {
      mp.host_.stage2_unmap(Ipa(runs.r[i].start), runs.r[i].size());
      // An unmap frees only the tables it empties; a table that was already
      // empty (left by a failed shared walk) goes here.
      mp.host_.stage2_free_empty_tables(Ipa(runs.r[i].start), runs.r[i].size());
    }
  }

  // Notes in `runs` the parts of [start, end) under `table` (at `level`,
  // mapping from `table_base`) that hold anything; returns false when none.
  static bool scan_populated(MemProtect& mp, const u64* table, u32 level, u64 table_base, u64 start, u64 end,
                             Runs* runs) {
    const u64 g = granule_size(level);
    bool any = false;
    for (u64 a = start; a < end;) {
      const u64 base = align_down(a, g);
      const u64 entry_end = base + g < end ? base + g : end;
      const u64 pte = __atomic_load_n(&table[(a - table_base) / g], __ATOMIC_RELAXED);
      if (pte != 0) {
        any = true;
        const bool descend = is_table(pte, level) && level + 1 < kLastLevel;
        const auto* child =
            descend ? static_cast<const u64*>(mp.cfg_.platform->phys_to_virt(PhysAddr(oa(pte)))) : nullptr;
        // A table with nothing in the range: its part still becomes a run,
        // so the empty-table pass after the unmap frees it if it is empty.
        if (!child || !scan_populated(mp, child, level + 1, base, a, entry_end, runs)) runs->add(a, entry_end);
      }
      a = entry_end;
    }
    return any;
  }

  // Drops host mappings that the abort path can rebuild, MMIO first, then
  // plain host-owned memory mappings, until `need` pages are free. Share
  // states and annotations are never touched.
  static void recycle(MemProtect& mp, u64 need) {
    Platform* p = mp.cfg_.platform;
    count(&mp.cpu_stats().recycles);
    const MemMap& mm = *mp.cfg_.memmap;
    const u64 limit = u64{1} << mp.host_.ia_bits();
    u64 gap_start = 0;
    for (u32 i = 0; i <= mm.size(); ++i) {
      const u64 gap_end = i < mm.size() ? mm[i].base : limit;
      if (gap_end > gap_start) unmap_populated(mp, gap_start, gap_end);
      if (i < mm.size()) gap_start = mm[i].base + mm[i].size;
    }
    if (p->nr_free_pages() >= need) return;
    // Memory: unmap one valid OWNED leaf at a time, exactly its own range,
    // so no block is split (which would need pages).
    for (u32 i = 0; i < mm.size() && p->nr_free_pages() < need; ++i) {
      u64 cur = mm[i].base;
      const u64 end = mm[i].base + mm[i].size;
      while (cur < end && p->nr_free_pages() < need) {  // no more than needed: each costs a fault
        Range found{0, 0};
        for_each_leaf(mp.host_, cur, end - cur, [&](const VisitCtx& ctx) -> int {
          if (is_valid(ctx.old) && state_of_leaf(ctx.old) == PageState::kOwned) {
            const u64 g = granule_size(ctx.level);
            found = Range{align_down(ctx.addr, g), align_down(ctx.addr, g) + g};
            return -kEEXIST;  // stop the walk here
          }
          return 0;
        });
        if (found.end == 0) break;
        mp.host_.stage2_unmap(Ipa(found.start), found.size());
        cur = found.end;
      }
    }
  }

  // 0 when the pool can supply `need` pages, recycling once if necessary.
  static int reserve(MemProtect& mp, u64 need) {
    Platform* p = mp.cfg_.platform;
    if (p->nr_free_pages() >= need) return 0;
    recycle(mp, need);
    return p->nr_free_pages() >= need ? 0 : -kENOMEM;
  }

  // A commit step failed although everything was checked and reserved: a
  // bug, counted so tests catch it; EL2 keeps running.
  static void commit(MemProtect& mp, int ret) {
    if (ret) count(&mp.cpu_stats().internal_errors);
  }

  // --- Commit helpers -----------------------------------------------------------

  // Each helper writes the table and then mirrors the state into PageMeta.
  // A write that failed (a bug, counted by commit()) may have changed part
  // of the range or none of it: the mirror is then read back from the table,
  // so later checks still see what the hardware sees.

  static void set_host_meta(MemProtect& mp, u64 addr, u64 size, PageState s, u32 owner, PageMeta* known = nullptr) {
    set_meta(
        mp, addr, size,
        [s, owner](PageMeta& m) {
          m.host_state = u8(s);
          m.owner = u8(owner);
        },
        known);
  }

  static void set_hyp_meta(MemProtect& mp, u64 addr, u64 size, PageState s, PageMeta* known = nullptr) {
    set_meta(mp, addr, size, [s](PageMeta& m) { m.hyp_state_inv = u8(~u8(s) & 3); }, known);
  }

  static void host_meta_from_table(MemProtect& mp, u64 addr, u64 size) {
    for_each_leaf(mp.host_, addr, size, [&](const VisitCtx& ctx) -> int {
      const Range r = clip(ctx);
      const bool annotated = !is_valid(ctx.old) && ctx.old != 0;
      set_host_meta(mp, r.start, r.size(), host_state_of(ctx.old), annotated ? desc::owner(ctx.old) : kOwnerHost);
      return 0;
    });
  }

  static void hyp_meta_from_table(MemProtect& mp, u64 addr, u64 size) {
    for_each_leaf(mp.hyp_, addr, size, [&](const VisitCtx& ctx) -> int {
      const Range r = clip(ctx);
      set_hyp_meta(mp, r.start, r.size(), mapped_state_of(ctx.old));
      return 0;
    });
  }

  // The mirror after a host stage-2 write that returned `ret` (`known`:
  // the range's metadata when the caller has it, as in check_meta).
  static void host_written(MemProtect& mp, int ret, u64 addr, u64 size, PageState s, u32 owner,
                           PageMeta* known = nullptr) {
    commit(mp, ret);
    if (ret) return host_meta_from_table(mp, addr, size);
    set_host_meta(mp, addr, size, s, owner, known);
  }

  // The mirror after a hyp stage-1 write that returned `ret`.
  static void hyp_written(MemProtect& mp, int ret, u64 addr, u64 size, PageState s, PageMeta* known = nullptr) {
    commit(mp, ret);
    if (ret) return hyp_meta_from_table(mp, addr, size);
    set_hyp_meta(mp, addr, size, s, known);
  }

  static void host_map_state(MemProtect& mp, u64 addr, u64 size, PageState s, PageMeta* known = nullptr) {
    host_written(mp,
                 mp.host_.stage2_map(Ipa(addr), size, PhysAddr(addr), kHostMemProt | state_prot(s), kHostMapFlags),
                 addr, size, s, kOwnerHost, known);
  }

  static void host_set_owner(MemProtect& mp, u64 addr, u64 size, u32 owner, PageMeta* known = nullptr) {
    // Annotated with the host itself: an empty entry, a page the host owns.
    host_written(mp, mp.host_.stage2_set_owner(Ipa(addr), size, owner), addr, size,
                 owner == kOwnerHost ? PageState::kOwned : PageState::kNoPage, owner, known);
  }

  static void hyp_map_state(MemProtect& mp, u64 addr, u64 size, PageState s, PageMeta* known = nullptr) {
    hyp_written(mp,
                mp.hyp_.hyp_map(Va(addr), size, PhysAddr(addr), kProtRW | state_prot(s), kMapSkipDcache | kMapSkipIcache),
                addr, size, s, known);
  }

  static void hyp_unmap(MemProtect& mp, u64 addr, u64 size, PageMeta* known = nullptr) {
    hyp_written(mp, mp.hyp_.hyp_unmap(Va(addr), size), addr, size, PageState::kNoPage, known);
  }

  static int record(MemProtect& mp, Transition t, int ret) {
    count(ret >= 0 ? &mp.cpu_stats().ok[u32(t)] : &mp.cpu_stats().failed[u32(t)]);
    return ret;
  }

  // --- Host abort -----------------------------------------------------------

  static Range granule_range(u64 addr, u32 level) {
    const u64 g = granule_size(level);
    return Range{align_down(addr, g), align_down(addr, g) + g};
  }

  // The largest block, starting at the level of the empty entry found, that
  // the architecture allows and that lies wholly inside `region`. A page when
  // nothing fits, so an unaligned or sub-page region still makes progress.
  static Range adjust_range(u64 addr, u32 level, const Range& region) {
    for (;; ++level) {
      const Range block = granule_range(addr, level);
      if (level == kLastLevel || (level_supports_block(level) && region.contains(block))) return block;
    }
  }

  // One attempt at the abort path. With `flags` = shared fault-handler
  // flags it runs beside other aborts: every update is a CAS, a lost race is
  // -EAGAIN and the host simply retries the access.
  static int idmap_try(MemProtect& mp, u64 addr, u32* mapped_level, u32 flags, Range* block = nullptr) {
    u64 pte;
    u32 level;
    int ret = mp.host_.get_leaf(addr, &pte, &level);
    if (ret) return ret;
    if (is_valid(pte) || is_locked(pte)) return -kEAGAIN;
    if (pte) return -kEPERM;
    const u64 limit = u64{1} << mp.host_.ia_bits();
    const MemLookup l = mp.cfg_.memmap->find(addr, limit);
    const Range r = adjust_range(addr, level, l.range);
    if (block) *block = r;
    const u32 prot = l.region ? kHostMemProt : (kProtRW | kProtDevice);
    for (u32 l_ = level; l_ <= kLastLevel; ++l_)
      if (granule_size(l_) == r.size()) *mapped_level = l_;
    return mp.host_.stage2_map(Ipa(r.start), r.size(), PhysAddr(r.start), prot, kHostMapFlags | flags);
  }

  // --- Healing ----------------------------------------------------------------

  enum class Uniform : u8 {
    kNo,       // some page under the range is not the host's plain memory
    kTable,    // uniform, and a table at the level asked: one block can replace it
    kMapped,   // uniform, and already one entry (block or empty) at that level
  };

  // Whether `b` lies inside one memory region (else it is never one block,
  // and neither is any block containing it).
  static bool in_one_region(MemProtect& mp, const Range& b) {
    return region_of(mp, b.start >> kPageShift, b.size() >> kPageShift) != nullptr;
  }

  // Whether every page of `b` is the host's alone and mapped (or mappable)
  // as plain memory, inside one memory region, and whether the entry for `b`
  // at `level` is a table. `owned_known`: the caller's scan of the metadata
  // already found every page of `b` OWNED (a 2 MiB block only).
  static Uniform uniform(MemProtect& mp, const Range& b, u32 level, bool owned_known) {
    if (level == kLastLevel - 1) {
      // 2 MiB: the metadata says it in one scan of 512 entries. A page the
      // host owns is empty or mapped as plain memory (the abort path and
      // host_map_state map nothing else; the invariant checker holds the
      // tables to it), so OWNED everywhere is uniform; then one lookup says
      // whether a table sits at this level. The scan first: it stops at the
      // first page given away, the usual neighbour of a returned page.
      if (!owned_known && check_host(mp, b.start, b.size(), PageState::kOwned)) return Uniform::kNo;
      if (!in_one_region(mp, b)) return Uniform::kNo;
      u64 pte = 0;
      u32 leaf_level = 0;
      if (mp.host_.get_leaf(b.start, &pte, &leaf_level)) return Uniform::kNo;
      return leaf_level > level ? Uniform::kTable : Uniform::kMapped;
    }
    if (!in_one_region(mp, b)) return Uniform::kNo;
    bool table = true;
    const int ret = for_each_leaf(mp.host_, b.start, b.size(), [&](const VisitCtx& ctx) -> int {
      if (ctx.level <= level) table = false;  // already one block (or empty entry) at this level
      if (ctx.old == 0) return 0;
      if (is_valid(ctx.old) && state_of_leaf(ctx.old) == PageState::kOwned &&
          prot_of_leaf(Format::kStage2, ctx.old) == (kHostMemProt | state_prot(PageState::kOwned)))
        return 0;
      return -kEPERM;
    });
    if (ret) return Uniform::kNo;
    return table ? Uniform::kTable : Uniform::kMapped;
  }

  // After pages return to the host: where a whole 2 MiB (then 1 GiB) block
  // of one memory region is uniformly the host's again, the tables under it
  // go and one block maps it (pgtable coalesces with one break and one
  // VMID-wide invalidation, and frees the subtree). No page is allocated.
  // A block found not uniform rules out every block containing it, so the
  // level above skips those without walking them (the common case: the
  // returned page sits next to pages still given away).
  static void heal(MemProtect& mp, u64 addr, u64 size) {
    // The common case first: a range inside one 2 MiB block that still
    // holds a page given away (the returned page's neighbours). That block
    // is not uniform, so neither is any block containing it: the loop below
    // would conclude the same after its set-up.
    const u64 block2m = granule_size(kLastLevel - 1);
    const u64 first = align_down(addr, block2m);
    const bool one_block = first == align_down(addr + size - 1, block2m);
    if (one_block && check_host(mp, first, block2m, PageState::kOwned)) return;
    // Past that check, the one block's scan is done: the loop does not repeat it.
    constexpr u32 kMaxNoted = 8;
    u64 noted[2][kMaxNoted];  // bases of the blocks found kNo: [level & 1]
    u32 nr_mixed = 0;         // in noted[(level + 1) & 1], from the level below
    bool overflow = false;    // more than kMaxNoted: skip nothing at the next level
    for (u32 level = kLastLevel - 1; level >= 1; --level) {
      const u64 g = granule_size(level);
      const u64* mixed = noted[(level + 1) & 1];
      u64* found = noted[level & 1];
      u32 nr_found = 0, nr_blocks = 0;
      bool found_overflow = false;
      for (u64 base = align_down(addr, g); base < addr + size; base += g, ++nr_blocks) {
        const Range b{base, base + g};
        bool contains_mixed = false;
        for (u32 i = 0; !overflow && i < nr_mixed; ++i) contains_mixed |= b.contains(mixed[i]);
        const Uniform u = contains_mixed ? Uniform::kNo : uniform(mp, b, level, one_block && level == kLastLevel - 1);
        if (u == Uniform::kNo) {
          if (nr_found < kMaxNoted)
            found[nr_found++] = base;
          else
            found_overflow = true;
          continue;
        }
        if (u == Uniform::kTable &&
            mp.host_.stage2_map(Ipa(b.start), b.size(), PhysAddr(b.start),
                                kHostMemProt | state_prot(PageState::kOwned), kHostMapFlags) == 0)
          count(&mp.cpu_stats().heals);
      }
      // No block of this level is uniform: every block above contains one.
      if (!found_overflow && nr_found == nr_blocks) break;
      nr_mixed = nr_found;
      overflow = found_overflow;
      if (level == 1) break;
    }
  }

  // Pin (+1) or unpin (-1) pages the host shared with the hypervisor: all
  // must be borrowed by the hypervisor and none at count `stop` (else `err`).
  static int adjust_pins(MemProtect& mp, Transition t, u64 pfn, u64 nr, int delta, u16 stop, int err) {
    PageMeta* m = nullptr;
    int ret = check_host_range(mp, pfn, nr, &m);
    if (ret) return record(mp, t, ret);
    const u64 addr = pfn << kPageShift, size = nr << kPageShift;
    Exclusive h(mp.cfg_.host_lock);
    Exclusive y(mp.cfg_.hyp_lock);
    ret = check_hyp(mp, addr, size, PageState::kSharedBorrowed, m);
    for (u64 i = 0; !ret && i < nr; ++i)
      if (m[i].pin_count == stop) ret = err;
    if (!ret)
      for (u64 i = 0; i < nr; ++i) m[i].pin_count = u16(m[i].pin_count + delta);
    return record(mp, t, ret);
  }

  // The host-initiated share and donation to a guest: host pages OWNED, guest
  // frames unmapped; the host side's table pages counted as annotations
  // (donation) or mappings (share); then `commit(g, addr, ipa, size)`.
  template <typename Commit>
  static int host_guest_transition(MemProtect& mp, Transition t, u32 guest, u64 pfn, u64 gfn, u64 nr,
                                   bool host_annotates, Commit commit) {
    int ret = check_nr(nr);
    Guest* g = ret ? nullptr : live_guest(mp, guest);
    if (!ret && !g) ret = -kENOENT;
    if (!ret) ret = check_host_range(mp, pfn, nr);
    if (!ret) ret = check_gfn_range(g->pgt, gfn, nr);
    if (ret) return record(mp, t, ret);
    const u64 addr = pfn << kPageShift, size = nr << kPageShift, ipa = gfn << kPageShift;
    Exclusive h(mp.cfg_.host_lock);
    Exclusive gl(guest_lock(mp, guest));
    ret = check_host(mp, addr, size, PageState::kOwned);
    if (!ret) ret = check_state(g->pgt, ipa, size, PageState::kNoPage);
    if (!ret)
      ret = reserve(mp, tables_for(mp.host_, addr, size, addr, host_annotates) +
                            tables_for(g->pgt, ipa, size, addr, false));
    if (!ret) commit(g, addr, ipa, size);
    return record(mp, t, ret);
  }

  // The guest-initiated share and unshare: every guest leaf of the range must
  // be valid in state `from` and its host pages pass `check_host(pa, size)`;
  // then (the host side's table pages counted as annotations or as mappings,
  // per `host_annotates`) the host side is committed with
  // `commit_host(pa, size)` and the guest leaves become `to`.
  template <typename CheckHost, typename CommitHost>
  static int guest_host_transition(MemProtect& mp, Transition t, u32 guest, u64 gfn, u64 nr, PageState from,
                                   PageState to, bool host_annotates, CheckHost check_host,
                                   CommitHost commit_host) {
    int ret = check_nr(nr);
    Guest* g = ret ? nullptr : live_guest(mp, guest);
    if (!ret && !g) ret = -kENOENT;
    if (!ret) ret = check_gfn_range(g->pgt, gfn, nr);
    if (ret) return record(mp, t, ret);
    const u64 ipa = gfn << kPageShift, size = nr << kPageShift;
    Exclusive h(mp.cfg_.host_lock);
    Exclusive gl(guest_lock(mp, guest));
    Budget hb(mp.host_), gb(g->pgt);
    ret = for_each_leaf(g->pgt, ipa, size, [&](const VisitCtx& ctx) -> int {
      if (!is_valid(ctx.old) || state_of_leaf(ctx.old) != from) return -kEPERM;
      const Range r = clip(ctx);
      const u64 pa = leaf_pa(ctx, r);
      hb.add(pa, r.size(), pa, host_annotates);
      gb.add(r.start, r.size(), pa, false);
      return check_host(pa, r.size());
    });
    if (!ret) ret = reserve(mp, hb.total + gb.total);
    if (ret) return record(mp, t, ret);
    for_each_leaf(g->pgt, ipa, size, [&](const VisitCtx& ctx) -> int {
      const Range r = clip(ctx);
      commit_host(leaf_pa(ctx, r), r.size());
      return 0;
    });
    // Re-walk: the host updates above did not touch the guest table.
    for_each_leaf(g->pgt, ipa, size, [&](const VisitCtx& ctx) -> int {
      const Range r = clip(ctx);
      mp.commit_guest_map(g, r.start, r.size(), leaf_pa(ctx, r), to);
      return 0;
    });
    return record(mp, t, 0);
  }

  // --- Dump -------------------------------------------------------------------

  static DumpRecord record_of(MemProtect& mp, u64 pte, u32 level, u64 pfn) {
    DumpRecord d{pfn, 0, u8(kOwnerHost), u8(host_state_of(pte)), u8(level), u8(is_valid(pte) ? 1 : 0)};
    if (!is_valid(pte) && pte) d.owner = u8(desc::owner(pte));
    if (is_valid(pte) && state_of_leaf(pte) == PageState::kSharedBorrowed) {
      PageMeta* m = mp.meta(pfn);
      d.owner = m ? m->lender : 0xff;  // recorded at share time
    }
    return d;
  }

  static void zero_pages(MemProtect& mp, u64 addr, u64 size) {
    // Through the hypervisor's own (transient) mapping of the pages.
    auto* p = static_cast<volatile u64*>(mp.cfg_.platform->phys_to_virt(PhysAddr(addr)));
    for (u64 i = 0; i < size / sizeof(u64); ++i) p[i] = 0;
  }

  static void set_lender(MemProtect& mp, u64 addr, u64 size, u32 owner) {
    for (u64 pfn = addr >> kPageShift; pfn < (addr + size) >> kPageShift; ++pfn)
      if (PageMeta* m = mp.meta(pfn)) m->lender = u8(owner);
  }
};

using I = MemProtect::Impl;

int MemProtect::init(const MemProtectConfig& cfg) {
  if (!cfg.platform || !cfg.memmap || !cfg.meta) return -kEINVAL;
  for (u32 i = 0; i < cfg.memmap->size(); ++i) {
    const MemRegion& r = (*cfg.memmap)[i];
    if ((r.base >> kPageShift) < cfg.meta_base_pfn ||
        ((r.base + r.size) >> kPageShift) > cfg.meta_base_pfn + cfg.meta_nr)
      return -kEINVAL;
    if (r.base + r.size > (u64{1} << cfg.host_ia_bits)) return -kEINVAL;
  }
  if (!valid_geometry(Format::kStage2, cfg.guest_ia_bits, cfg.guest_start_level)) return -kEINVAL;
  static_assert(MemMap::kMaxRegions < 255, "PageMeta::region is a u8");
  // Every page's region from this memory map: a stale value in a gap of
  // the span would let a range check accept MMIO.
  for (u64 p = 0; p < cfg.meta_nr; ++p) cfg.meta[p].region = 0;
  for (u32 i = 0; i < cfg.memmap->size(); ++i) {
    const MemRegion& r = (*cfg.memmap)[i];
    PageMeta* m = &cfg.meta[(r.base >> kPageShift) - cfg.meta_base_pfn];
    for (u64 p = 0; p < r.size >> kPageShift; ++p) m[p].region = u8(i + 1);
  }
  cfg_ = cfg;
  int ret = host_.init(Format::kStage2, cfg.host_ia_bits, cfg.host_start_level, 0, cfg.platform);
  if (ret) return ret;
  // The EL2 TLBIs ignore it, but the table id tells the hyp stage 1 apart
  // from the host stage 2 (VMID 0) in the platform's records.
  ret = hyp_.init(Format::kHypStage1, 48, 0, kOwnerHyp, cfg.platform);
  if (ret) {
    host_.destroy();
    return ret;
  }
  return 0;
}

int MemProtect::hyp_reserve(u64 pfn, u64 nr) {
  if (nr == 0 || pfn > kPfnMax || pfn + nr < pfn) return -kEINVAL;
  const u64 addr = pfn << kPageShift, size = nr << kPageShift;
  if (!cfg_.memmap->in_one_region(addr, size, nullptr)) return -kEINVAL;
  Exclusive h(cfg_.host_lock);
  Exclusive y(cfg_.hyp_lock);
  int ret = I::check_host_hyp(*this, addr, size, PageState::kOwned, PageState::kNoPage);
  if (ret) return ret;
  ret = I::reserve(*this, I::tables_for(host_, addr, size, addr, true) + I::tables_for(hyp_, addr, size, addr, false));
  if (ret) return ret;
  I::host_set_owner(*this, addr, size, kOwnerHyp);
  I::hyp_map_state(*this, addr, size, PageState::kOwned);
  for (u64 p = pfn; p < pfn + nr; ++p)
    if (PageMeta* m = meta(p)) m->flags |= kMetaHypInternal;
  return 0;
}

int MemProtect::host_stage2_idmap(u64 addr) {
  if (addr >= (u64{1} << host_.ia_bits())) return -kEINVAL;
  u32 level = kLastLevel;
  int ret;
  Range block{0, 0};
  if (cfg_.exclusive_aborts) {
    Exclusive h(cfg_.host_lock);
    ret = I::idmap_try(*this, addr, &level, 0, &block);
  } else {
    // Aborts only add mappings of memory the host owns: they may run
    // together (shared walkers, CAS updates); transitions exclude them.
    Shared h(cfg_.host_lock);
    ret = I::idmap_try(*this, addr, &level, kWalkShared | kWalkHandleFault, &block);
  }
  if (ret == -kENOMEM) {
    // Recycling unmaps and frees: that needs the lock to ourselves. First
    // free the empty tables the shared attempt may have left on its way
    // (shared walkers never free, and an unmap frees only the tables it
    // empties itself), and nothing else: between the two holds a transition
    // may have annotated or shared pages of the same block.
    Exclusive h(cfg_.host_lock);
    host_.stage2_free_empty_tables(Ipa(block.start), block.size());
    I::recycle(*this, max_new_tables(host_.start_level(), addr, kPageSize, addr, false));
    ret = I::idmap_try(*this, addr, &level, 0);
  }
  if (ret == 0)
    count(&cpu_stats().host_aborts[level]);
  else if (ret == -kEAGAIN)
    count(&cpu_stats().host_abort_eagain);
  else if (ret == -kEPERM)
    count(&cpu_stats().host_abort_eperm);
  else if (ret == -kENOMEM)
    count(&cpu_stats().host_abort_enomem);
  return ret;
}

int MemProtect::host_share_hyp(u64 pfn, u64 nr) {
  PageMeta* m = nullptr;
  int ret = I::check_host_range(*this, pfn, nr, &m);
  if (ret) return I::record(*this, Transition::kHostShareHyp, ret);
  const u64 addr = pfn << kPageShift, size = nr << kPageShift;
  Exclusive h(cfg_.host_lock);
  Exclusive y(cfg_.hyp_lock);
  ret = I::check_host_hyp(*this, addr, size, PageState::kOwned, PageState::kNoPage, m);
  if (!ret)
    ret = I::reserve(*this, I::tables_for(host_, addr, size, addr, false) + I::tables_for(hyp_, addr, size, addr, false));
  if (!ret) {
    I::host_map_state(*this, addr, size, PageState::kSharedOwned, m);
    I::hyp_map_state(*this, addr, size, PageState::kSharedBorrowed, m);
  }
  return I::record(*this, Transition::kHostShareHyp, ret);
}

int MemProtect::host_unshare_hyp(u64 pfn, u64 nr) {
  PageMeta* m = nullptr;
  int ret = I::check_host_range(*this, pfn, nr, &m);
  if (ret) return I::record(*this, Transition::kHostUnshareHyp, ret);
  const u64 addr = pfn << kPageShift, size = nr << kPageShift;
  Exclusive h(cfg_.host_lock);
  Exclusive y(cfg_.hyp_lock);
  ret = I::check_host_hyp(*this, addr, size, PageState::kSharedOwned, PageState::kSharedBorrowed, m);
  for (u64 i = 0; !ret && i < nr; ++i)
    if (m[i].pin_count) ret = -kEBUSY;
  if (!ret)
    ret = I::reserve(*this, I::tables_for(host_, addr, size, addr, false) + I::tables_for(hyp_, addr, size, addr, true));
  if (!ret) {
    I::host_map_state(*this, addr, size, PageState::kOwned, m);
    I::heal(*this, addr, size);
    I::hyp_unmap(*this, addr, size, m);
  }
  return I::record(*this, Transition::kHostUnshareHyp, ret);
}

int MemProtect::host_donate_hyp(u64 pfn, u64 nr) {
  PageMeta* m = nullptr;
  int ret = I::check_host_range(*this, pfn, nr, &m);
  if (ret) return I::record(*this, Transition::kHostDonateHyp, ret);
  const u64 addr = pfn << kPageShift, size = nr << kPageShift;
  Exclusive h(cfg_.host_lock);
  Exclusive y(cfg_.hyp_lock);
  ret = I::check_host_hyp(*this, addr, size, PageState::kOwned, PageState::kNoPage, m);
  if (!ret)
    ret = I::reserve(*this, I::tables_for(host_, addr, size, addr, true) + I::tables_for(hyp_, addr, size, addr, false));
  if (!ret) {
    I::host_set_owner(*this, addr, size, kOwnerHyp, m);
    I::hyp_map_state(*this, addr, size, PageState::kOwned, m);
  }
  return I::record(*this, Transition::kHostDonateHyp, ret);
}

int MemProtect::hyp_donate_host(u64 pfn, u64 nr) {
  PageMeta* m = nullptr;
  int ret = I::check_host_range(*this, pfn, nr, &m);
  if (ret) return I::record(*this, Transition::kHypDonateHost, ret);
  const u64 addr = pfn << kPageShift, size = nr << kPageShift;
  Exclusive h(cfg_.host_lock);
  Exclusive y(cfg_.hyp_lock);
  ret = I::check_host_owner(*this, addr, size, kOwnerHyp, m);
  if (!ret) ret = I::check_hyp(*this, addr, size, PageState::kOwned, m);
  for (u64 i = 0; !ret && i < nr; ++i)
    if (m[i].flags & kMetaHypInternal) ret = -kEPERM;  // the hypervisor's own memory
  if (!ret)
    ret = I::reserve(*this, I::tables_for(host_, addr, size, addr, true) + I::tables_for(hyp_, addr, size, addr, true));
  if (!ret) {
    // Whatever the hypervisor kept there must not reach the host: zero the
    // pages through the hypervisor's own mapping before it goes.
    I::zero_pages(*this, addr, size);
    I::hyp_unmap(*this, addr, size, m);
    I::host_set_owner(*this, addr, size, kOwnerHost, m);
    I::heal(*this, addr, size);
  }
  return I::record(*this, Transition::kHypDonateHost, ret);
}

int MemProtect::host_share_guest(u32 guest, u64 pfn, u64 gfn, u64 nr) {
  return I::host_guest_transition(*this, Transition::kHostShareGuest, guest, pfn, gfn, nr, false,
                                  [&](Guest* g, u64 addr, u64 ipa, u64 size) {
                                    I::host_map_state(*this, addr, size, PageState::kSharedOwned);
                                    commit_guest_map(g, ipa, size, addr, PageState::kSharedBorrowed);
                                  });
}

int MemProtect::host_unshare_guest(u32 guest, u64 gfn, u64 nr) {
  int ret = I::check_nr(nr);
  Guest* g = ret ? nullptr : I::live_guest(*this, guest);
  if (!ret && !g) ret = -kENOENT;
  if (!ret) ret = I::check_gfn_range(g->pgt, gfn, nr);
  if (ret) return I::record(*this, Transition::kHostUnshareGuest, ret);
  const u64 ipa = gfn << kPageShift, size = nr << kPageShift;
  Exclusive h(cfg_.host_lock);
  Exclusive gl(I::guest_lock(*this, guest));
  // Each guest leaf names the host pages behind it; all must be lent by the host.
  I::Budget hb(host_);
  const u64 guest_need = I::tables_for(g->pgt, ipa, size, 0, true);
  ret = for_each_leaf(g->pgt, ipa, size, [&](const VisitCtx& ctx) -> int {
    if (!is_valid(ctx.old) || state_of_leaf(ctx.old) != PageState::kSharedBorrowed) return -kEPERM;
    const Range r = clip(ctx);
    const u64 pa = leaf_pa(ctx, r);
    hb.add(pa, r.size(), pa, false);
    return I::check_host(*this, pa, r.size(), PageState::kSharedOwned);
  });
  if (!ret) ret = I::reserve(*this, guest_need + hb.total);
  if (!ret) {
    for_each_leaf(g->pgt, ipa, size, [&](const VisitCtx& ctx) -> int {
      const Range r = clip(ctx);
      const u64 pa = leaf_pa(ctx, r);
      I::host_map_state(*this, pa, r.size(), PageState::kOwned);
      I::heal(*this, pa, r.size());
      return 0;
    });
    I::commit(*this, g->pgt.stage2_unmap(Ipa(ipa), size));
  }
  return I::record(*this, Transition::kHostUnshareGuest, ret);
}

int MemProtect::host_donate_guest(u32 guest, u64 pfn, u64 gfn, u64 nr) {
  return I::host_guest_transition(*this, Transition::kHostDonateGuest, guest, pfn, gfn, nr, true,
                                  [&](Guest* g, u64 addr, u64 ipa, u64 size) {
                                    I::host_set_owner(*this, addr, size, guest);
                                    commit_guest_map(g, ipa, size, addr, PageState::kOwned);
                                    g->owned_pages += nr;
                                  });
}

int MemProtect::guest_share_host(u32 guest, u64 gfn, u64 nr) {
  return I::guest_host_transition(
      *this, Transition::kGuestShareHost, guest, gfn, nr, PageState::kOwned, PageState::kSharedOwned, false,
      [&](u64 pa, u64 size) { return I::check_host_owner(*this, pa, size, guest); },
      [&](u64 pa, u64 size) {
        I::host_map_state(*this, pa, size, PageState::kSharedBorrowed);
        I::set_lender(*this, pa, size, guest);
      });
}

int MemProtect::guest_unshare_host(u32 guest, u64 gfn, u64 nr) {
  return I::guest_host_transition(
      *this, Transition::kGuestUnshareHost, guest, gfn, nr, PageState::kSharedOwned, PageState::kOwned, true,
      [&](u64 pa, u64 size) { return I::check_host(*this, pa, size, PageState::kSharedBorrowed); },
      [&](u64 pa, u64 size) {
        I::host_set_owner(*this, pa, size, guest);
        I::set_lender(*this, pa, size, 0);
      });
}

int MemProtect::host_reclaim_guest(u32 guest, u64 pfn, u64 nr) {
  int ret = I::check_nr(nr);
  Guest* g = ret ? nullptr : I::any_guest(*this, guest);
  if (!ret && !g) ret = -kENOENT;
  if (!ret) ret = I::check_host_range(*this, pfn, nr);
  if (!ret && g->alive) ret = -kEBUSY;  // pages come back only after the guest is gone
  if (ret) return I::record(*this, Transition::kHostReclaimGuest, ret);
  const u64 addr = pfn << kPageShift, size = nr << kPageShift;
  Exclusive h(cfg_.host_lock);
  Exclusive y(cfg_.hyp_lock);
  ret = I::check_host_owner(*this, addr, size, guest);
  if (!ret)
    // The transient hyp mapping is removed exactly as installed: no split.
    ret = I::reserve(*this, I::tables_for(host_, addr, size, addr, true) + I::tables_for(hyp_, addr, size, addr, false));
  if (!ret) {
    // The guest's data must never reach the host: zero through a transient
    // hypervisor mapping before the host may map the pages again.
    I::hyp_map_state(*this, addr, size, PageState::kOwned);
    I::zero_pages(*this, addr, size);
    I::hyp_unmap(*this, addr, size);
    I::host_set_owner(*this, addr, size, kOwnerHost);
    I::heal(*this, addr, size);
    g->owned_pages -= nr;
    if (g->owned_pages == 0) g->used = false;
  }
  return I::record(*this, Transition::kHostReclaimGuest, ret);
}

int MemProtect::hyp_pin_shared(u64 pfn, u64 nr) {
  // A pin count at its maximum would wrap: refuse as busy.
  return I::adjust_pins(*this, Transition::kHypPin, pfn, nr, +1, 0xffff, -kEBUSY);
}

int MemProtect::hyp_unpin_shared(u64 pfn, u64 nr) {
  return I::adjust_pins(*this, Transition::kHypUnpin, pfn, nr, -1, 0, -kEPERM);
}

int MemProtect::guest_create() {
  Exclusive h(cfg_.host_lock);
  for (u32 i = 0; i < kMaxGuests; ++i) {
    Guest& g = guests_[i];
    if (g.used) continue;
    const u32 id = kOwnerGuestFirst + i;
    int ret = g.pgt.init(Format::kStage2, cfg_.guest_ia_bits, cfg_.guest_start_level, id, cfg_.platform);
    if (ret) return I::record(*this, Transition::kGuestCreate, ret);
    g.used = true;
    g.alive = true;
    g.owned_pages = 0;
    return I::record(*this, Transition::kGuestCreate, int(id));
  }
  return I::record(*this, Transition::kGuestCreate, -kEBUSY);
}

int MemProtect::guest_destroy(u32 guest) {
  Guest* g = I::live_guest(*this, guest);
  if (!g) return I::record(*this, Transition::kGuestDestroy, -kENOENT);
  Exclusive h(cfg_.host_lock);
  Exclusive gl(I::guest_lock(*this, guest));
  const u64 limit = u64{1} << g->pgt.ia_bits();
  // Only pages shared either way change in the host stage 2; the guest's own
  // pages stay annotated as they are.
  I::Budget hb(host_);
  for_each_leaf(g->pgt, 0, limit, [&](const VisitCtx& ctx) -> int {
    if (!is_valid(ctx.old) || state_of_leaf(ctx.old) == PageState::kOwned) return 0;
    const Range r = clip(ctx);
    const u64 pa = leaf_pa(ctx, r);
    hb.add(pa, r.size(), pa, state_of_leaf(ctx.old) == PageState::kSharedOwned);
    return 0;
  });
  int ret = I::reserve(*this, hb.total);
  if (ret) return I::record(*this, Transition::kGuestDestroy, ret);
  // The guest's TLB entries must be gone before the host regains pages the
  // guest could reach through them, and before the table pages (and, with
  // the next guest in this slot, the VMID) are reused: Pgtable::destroy
  // frees the tables without breaking any entry.
  cfg_.platform->barrier(Barrier::kDsbIshst);
  cfg_.platform->tlbi(TlbiKind::kVmid, g->pgt.vmid(), 0, 0);
  for_each_leaf(g->pgt, 0, limit, [&](const VisitCtx& ctx) -> int {
    if (!is_valid(ctx.old)) return 0;
    const Range r = clip(ctx);
    const u64 pa = leaf_pa(ctx, r);
    switch (state_of_leaf(ctx.old)) {
      case PageState::kSharedBorrowed:  // lent by the host: back to it
        I::host_map_state(*this, pa, r.size(), PageState::kOwned);
        I::heal(*this, pa, r.size());
        break;
      case PageState::kSharedOwned:  // lent to the host: the host loses it
        I::host_set_owner(*this, pa, r.size(), guest);
        I::set_lender(*this, pa, r.size(), 0);
        break;
      default:
        break;
    }
    return 0;
  });
  g->pgt.destroy();
  g->alive = false;
  if (g->owned_pages == 0) g->used = false;
  return I::record(*this, Transition::kGuestDestroy, 0);
}

int MemProtect::hyp_checksum(u64 pfn, u64 nr, u64* sum) {
  int ret = I::check_host_range(*this, pfn, nr);
  if (ret) return ret;
  const u64 addr = pfn << kPageShift, size = nr << kPageShift;
  Exclusive y(cfg_.hyp_lock);
  ret = for_each_leaf(hyp_, addr, size, [](const VisitCtx& ctx) -> int { return is_valid(ctx.old) ? 0 : -kEPERM; });
  if (ret) return ret;
  const auto* p = static_cast<const volatile u64*>(cfg_.platform->phys_to_virt(PhysAddr(addr)));
  // FNV-1a over 64-bit words, as the ABI specifies (docs/abi.md, checksum).
  u64 s = 0xcbf29ce484222325ull;
  for (u64 i = 0; i < size / sizeof(u64); ++i) s = (s ^ p[i]) * 0x100000001b3ull;
  *sum = s;
  return 0;
}

int MemProtect::dump_host(u64 pfn, DumpRecord* out, u32 max, u64* next_pfn) {
  const u64 limit = u64{1} << host_.ia_bits();
  if (!out || max == 0 || pfn > (limit >> kPageShift)) return -kEINVAL;
  Exclusive h(cfg_.host_lock);
  u32 n = 0;
  u64 next = pfn;
  for_each_leaf(host_, pfn << kPageShift, limit - (pfn << kPageShift), [&](const VisitCtx& ctx) -> int {
    const Range r = clip(ctx);
    const DumpRecord d = I::record_of(*this, ctx.old, ctx.level, r.start >> kPageShift);
    if (n > 0) {
      DumpRecord& last = out[n - 1];
      if (last.pfn + last.nr_pages == d.pfn && last.owner == d.owner && last.state == d.state &&
          last.level == d.level && last.mapped == d.mapped) {
        last.nr_pages += r.size() >> kPageShift;
        next = r.end >> kPageShift;
        return 0;
      }
    }
    if (n == max) return -kE2BIG;  // full: stop here, the caller continues at `next`
    out[n] = d;
    out[n].nr_pages = r.size() >> kPageShift;
    ++n;
    next = r.end >> kPageShift;
    return 0;
  });
  if (next_pfn) *next_pfn = next;
  return int(n);
}

MemProtectStats MemProtect::stats() const { return stats_.sum(); }

Pgtable* MemProtect::guest_pgt(u32 guest) {
  Guest* g = I::live_guest(*this, guest);
  return g ? &g->pgt : nullptr;
}

bool MemProtect::guest_exists(u32 guest) const {
  return I::any_guest(const_cast<MemProtect&>(*this), guest) != nullptr;
}

void MemProtect::commit_guest_map(Guest* g, u64 ipa, u64 size, u64 pa, PageState s) {
  // Guests get cache maintenance: their view may be non-cacheable.
  I::commit(*this, g->pgt.stage2_map(Ipa(ipa), size, PhysAddr(pa), kProtRWX | state_prot(s), 0));
}

}  // namespace pkvm
