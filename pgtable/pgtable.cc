// SPDX-License-Identifier: Apache-2.0
// Page-table walker and the stage-2 / EL2 stage-1 operations built on it.
// See docs/pgtable.md for the walker semantics, the break-before-make rules
// and the invalidation policy implemented here.
#include "pgtable/pgtable.h"

namespace pkvm {

using namespace desc;

namespace {

u64 load_pte(const u64* ptep) { return __atomic_load_n(ptep, __ATOMIC_ACQUIRE); }

bool cas_pte(u64* ptep, u64 old, u64 new_pte) {
  return __atomic_compare_exchange_n(ptep, &old, new_pte, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

// Statistics live in the calling CPU's copy (Pgtable::cpu_stats).
void stat_inc(u64* counter, u64 n = 1) { percpu_add(counter, n); }

constexpr u64 align_down(u64 v, u64 a) { return v & ~(a - 1); }

// The walker's decision for a callback result, as the table in docs/pgtable.md:
// exclusive walkers shrug off -EAGAIN and -ENOENT; shared walkers outside a
// fault handler retry -EAGAIN and skip -ENOENT; fault handlers stop on any
// non-zero result and let the faulting context retry the access.
bool walk_continue(u32 flags, int r) {
  if (r == 0) return true;
  if (!(flags & kWalkShared)) return r == -kEAGAIN || r == -kENOENT;
  if (flags & kWalkHandleFault) return false;
  return r == -kENOENT;
}

bool walk_retry(u32 flags, int r) {
  return r == -kEAGAIN && (flags & kWalkShared) && !(flags & kWalkHandleFault);
}

}  // namespace

// The building blocks shared by every operation's callbacks.
struct Pgtable::Internal {
  struct WalkData {
    Pgtable* pgt;
    const Walker* walker;
    u64 addr;
    u64 end;
  };

  static u64* table_va(Pgtable* pgt, u64 table_pte) {
    return static_cast<u64*>(pgt->platform_->phys_to_virt_linear(PhysAddr(oa(table_pte))));
  }

  static u32 index(u64 addr, u32 level) { return u32(addr >> level_shift(level)) & (kPtrsPerTable - 1); }

  static int visit(WalkData& d, u64* ptep, u32 level) {
    const Walker& w = *d.walker;
    VisitCtx ctx{d.pgt, ptep, load_pte(ptep), d.addr, d.end, level, w.flags, w.arg};
    bool table = is_table(ctx.old, level);
    int ret = 0;
    bool reload = false;
    if (table && (w.flags & kWalkTablePre)) {
      ret = w.cb(ctx, kWalkTablePre);
      reload = true;
    }
    if (!table && (w.flags & kWalkLeaf)) {
      ret = w.cb(ctx, kWalkLeaf);
      reload = true;
    }
    // A callback may have replaced the entry (e.g. installed a table): walk
    // what is there now, not what was there.
    if (reload) {
      ctx.old = load_pte(ptep);
      table = is_table(ctx.old, level);
    }
    if (!walk_continue(w.flags, ret)) return ret;
    if (!table) {
      d.addr = align_down(d.addr, granule_size(level)) + granule_size(level);
      return 0;
    }
    ret = walk_table(d, table_va(d.pgt, ctx.old), level + 1, kPtrsPerTable);
    if (!walk_continue(w.flags, ret)) return ret;
    if (w.flags & kWalkTablePost) ret = w.cb(ctx, kWalkTablePost);
    return walk_continue(w.flags, ret) ? 0 : ret;
  }

  // The entries of a last-level table: visit() without what cannot happen
  // at level 3 (a table to descend into, TABLE_PRE/POST), for the walks
  // that cover many pages.
  static int walk_leaves(WalkData& d, u64* table) {
    const Walker& w = *d.walker;
    if (!(w.flags & kWalkLeaf)) {  // nothing to visit: move to the table's end
      const u64 table_end = align_down(d.addr, granule_size(kLastLevel - 1)) + granule_size(kLastLevel - 1);
      d.addr = d.end < table_end ? d.end : table_end;
      return 0;
    }
    // The map and unmap callbacks, known here, are inlined into the loop
    // (the per-leaf call chain was most of a large map's time); exclusive
    // walks take their common entries without a visit at all.
    if (w.cb == map_cb) return (w.flags & kWalkShared) ? leaf_loop(d, table, map_cb) : map_leaves(d, table);
    if (w.cb == unmap_cb) return (w.flags & kWalkShared) ? leaf_loop(d, table, unmap_cb) : unmap_leaves(d, table);
    return leaf_loop(d, table, w.cb);
  }

  // The platform's descriptor-write hook, when it wants it.
  [[gnu::always_inline]] static void note_at(Pgtable* pgt, u64* ptep, u64 old, u64 new_pte, u64 ia, u32 level) {
    if (pgt->platform_->wants_pte_writes()) pgt->platform_->pte_written(ptep, old, new_pte, ia, level, pgt->vmid_);
  }

  // A descriptor store of an exclusive walk at the last level, with its note.
  [[gnu::always_inline]] static void store_leaf(Pgtable* pgt, u64* ptep, u64 old, u64 new_pte, u64 addr) {
    __atomic_store_n(ptep, new_pte, __ATOMIC_RELEASE);
    note_at(pgt, ptep, old, new_pte, addr, kLastLevel);
  }

  // An exclusive map over a last-level table. The two entries a range
  // transition meets by the hundred are handled inline, with exactly what
  // try_leaf does for them: an empty entry becoming a new leaf or a counted
  // annotation when no cache maintenance is due (a store, one more counted
  // entry), and a valid page whose new value differs in software bits only
  // (a store in place: no invalidation, no count change, no execute right
  // gained). An identical entry needs nothing. Every other entry is visited
  // as in leaf_loop.
  static int map_leaves(WalkData& d, u64* table) {
    const Walker& w = *d.walker;
    Pgtable* pgt = d.pgt;
    MapData& m = *static_cast<MapData*>(w.arg);
    const bool cmo = needs_cmo(m, w.flags);
    for (u32 idx = index(d.addr, kLastLevel); idx < kPtrsPerTable && d.addr < d.end; ++idx, d.addr += kPageSize) {
      u64* ptep = &table[idx];
      const u64 old = load_pte(ptep);
      const u64 new_pte = m.annotate ? m.annotation : make_leaf(m.phys + (d.addr - m.start), m.attrs, kLastLevel);
      if (old == new_pte) continue;
      const bool fill = old == 0 && !cmo;  // new_pte != 0: counted
      if (fill || (is_valid(old) && is_valid(new_pte) && ((old ^ new_pte) & ~kSwMask) == 0)) {
        store_leaf(pgt, ptep, old, new_pte, d.addr);
        if (fill) batch_ref(pgt, &m.refs, table, 1);
        ++m.leaf_writes;
        continue;
      }
      const int ret = map_cb(VisitCtx{pgt, ptep, old, d.addr, d.end, kLastLevel, w.flags, w.arg}, kWalkLeaf);
      if (!walk_continue(w.flags, ret)) return ret;  // exclusive: no retry
    }
    return 0;
  }

  // An exclusive unmap over a last-level table: unmap_cb's leaf visit for a
  // page, inline (a page is never split, and a LOCKED entry is left to the
  // walker that holds it, as unmap_cb's -EAGAIN does for an exclusive walk).
  static int unmap_leaves(WalkData& d, u64* table) {
    Pgtable* pgt = d.pgt;
    UnmapData& u = *static_cast<UnmapData*>(d.walker->arg);
    for (u32 idx = index(d.addr, kLastLevel); idx < kPtrsPerTable && d.addr < d.end; ++idx, d.addr += kPageSize) {
      u64* ptep = &table[idx];
      const u64 old = load_pte(ptep);
      if (old == 0 || is_locked(old)) continue;
      store_leaf(pgt, ptep, old, 0, d.addr);
      batch_ref(pgt, &u.refs, table, -1);
      u.written |= 1u << kLastLevel;
      if (!is_valid(old)) continue;  // an annotation: no TLB holds it
      if (u.n < kDeferredTlbis) {
        u.addr[u.n] = d.addr;
        u.level[u.n] = kLastLevel;
        ++u.n;
      } else {
        u.all = true;
      }
    }
    return 0;
  }

  // Inlined, so `cb` is a constant at the two call sites above.
  [[gnu::always_inline]] static int leaf_loop(WalkData& d, u64* table, WalkerFn cb) {
    const Walker& w = *d.walker;
    for (u32 idx = index(d.addr, kLastLevel); idx < kPtrsPerTable && d.addr < d.end; ++idx) {
      for (;;) {
        const VisitCtx ctx{d.pgt, &table[idx], load_pte(&table[idx]), d.addr, d.end, kLastLevel, w.flags, w.arg};
        const int ret = cb(ctx, kWalkLeaf);
        if (walk_continue(w.flags, ret)) break;
        if (!walk_retry(w.flags, ret)) return ret;
      }
      d.addr += kPageSize;
    }
    return 0;
  }

  static int walk_table(WalkData& d, u64* table, u32 level, u32 nr_entries) {
    if (level > kLastLevel) return -kEINVAL;  // a corrupt table must not recurse further
    if (level == kLastLevel && level != d.pgt->start_level_) return walk_leaves(d, table);
    u32 idx = level == d.pgt->start_level_ ? u32(d.addr >> level_shift(level)) : index(d.addr, level);
    for (; idx < nr_entries; ++idx) {
      // A retry re-visits the whole entry from where its visit began: a
      // TABLE_POST callback runs after the descent has moved d.addr past the
      // entry, and descending again from there would walk the child table
      // with the next entry's addresses.
      const u64 entry_addr = d.addr;
      for (;;) {
        if (d.addr >= d.end) return 0;
        int ret = visit(d, &table[idx], level);
        if (ret == 0) break;
        if (!walk_retry(d.walker->flags, ret)) return ret;
        d.addr = entry_addr;
      }
    }
    return 0;
  }

  // A walk of one page without TABLE_PRE visits (most walks: a fault, a
  // one-page transition, a lookup), iteratively: one entry per level on the
  // way down, the leaf, then TABLE_POST on the way up. The visits, their
  // order, their contexts and the retry and stop rules are those of
  // walk_table's recursion (pgtable_test compares the two), without a
  // recursive call and a loop per level.
  static int walk_page(WalkData& d, u64* root) {
    // As in walk_leaves: the map and unmap callbacks inlined into the loop.
    if (d.walker->cb == map_cb) return page_loop(d, root, map_cb);
    if (d.walker->cb == unmap_cb) return page_loop(d, root, unmap_cb);
    return page_loop(d, root, d.walker->cb);
  }

  [[gnu::always_inline]] static int page_loop(WalkData& d, u64* root, WalkerFn cb) {
    const Walker& w = *d.walker;
    const u32 flags = w.flags;
    const u32 start_level = d.pgt->start_level_;
    const u64 start = d.addr;
    u64* path[kLastLevel + 1];       // the table entries descended through,
    u64 path_pte[kLastLevel + 1];    // their values,
    u64* tables[kLastLevel + 1];     // and the tables holding them
    u64* table = root;
    u32 level = start_level;
    for (;;) {
      // Descend to the leaf, visiting it (and re-visiting on a retry).
      for (;;) {
        u64* ptep = &table[level == start_level ? u32(start >> level_shift(level)) : index(start, level)];
        u64 pte = load_pte(ptep);
        if (!is_table(pte, level)) {
          if (!(flags & kWalkLeaf)) break;
          const int ret = cb(VisitCtx{d.pgt, ptep, pte, start, d.end, level, flags, w.arg}, kWalkLeaf);
          pte = load_pte(ptep);
          if (!walk_continue(flags, ret)) {
            if (walk_retry(flags, ret)) continue;
            return ret;  // no TABLE_POST on the way out, as in the recursion
          }
          if (!is_table(pte, level)) break;  // else: the callback made a table; walk it
        }
        // Kept for the TABLE_POST visit on the way up.
        path[level] = ptep;
        path_pte[level] = pte;
        tables[level] = table;
        table = table_va(d.pgt, pte);
        ++level;
      }
      d.addr = d.end;
      if (!(flags & kWalkTablePost)) return 0;
      // TABLE_POST bottom up; a retry there re-walks that table entry.
      bool retried = false;
      while (level > start_level) {
        --level;
        const int ret = cb(VisitCtx{d.pgt, path[level], path_pte[level], start, d.end, level, flags, w.arg},
                             kWalkTablePost);
        if (walk_continue(flags, ret)) continue;
        if (!walk_retry(flags, ret)) return ret;
        d.addr = start;
        table = tables[level];
        retried = true;
        break;
      }
      if (!retried) return 0;
    }
  }

  // --- Descriptor updates ---------------------------------------------------

  // The leaf callbacks hand a copy of their context to the out-of-line paths
  // they rarely take: the context of the common path then never has its
  // address taken, stays in registers, and the leaf loop does not store a
  // whole context to memory for each entry.
  static VisitCtx copy(const VisitCtx& ctx) { return ctx; }

  [[gnu::always_inline]] static void note(const VisitCtx& ctx, u64 old, u64 new_pte) {
    note_at(ctx.pgt, ctx.ptep, old, new_pte, align_down(ctx.addr, granule_size(ctx.level)), ctx.level);
  }

  static bool shared(const VisitCtx& ctx) { return ctx.flags & kWalkShared; }

  // Writes `new_pte` over `ctx.old`: a CAS for shared walkers (false when
  // another walker got there first), a plain release store otherwise.
  [[gnu::always_inline]] static bool set_pte(const VisitCtx& ctx, u64 new_pte) {
    if (shared(ctx)) {
      if (!cas_pte(ctx.ptep, ctx.old, new_pte)) return false;
    } else {
      __atomic_store_n(ctx.ptep, new_pte, __ATOMIC_RELEASE);
    }
    note(ctx, ctx.old, new_pte);
    return true;
  }

  static void tlbi_leaf(Pgtable* pgt, u64 addr, u32 level, bool broadcast) {
    Platform* p = pgt->platform_;
    addr = align_down(addr, granule_size(level));
    if (pgt->format_ == Format::kStage2)
      p->tlbi(broadcast ? TlbiKind::kIpa : TlbiKind::kIpaLocal, pgt->vmid_, addr, level);
    else
      p->tlbi(TlbiKind::kEl2Va, pgt->vmid_, addr, level);
    stat_inc(&pgt->cpu_stats().tlbis);
  }

  static void tlbi_all(Pgtable* pgt) {
    pgt->platform_->tlbi(pgt->format_ == Format::kStage2 ? TlbiKind::kVmid : TlbiKind::kEl2All, pgt->vmid_, 0, 0);
    stat_inc(&pgt->cpu_stats().tlbis);
  }

  // Invalidation that must follow the removal or replacement of `old`: a table
  // may have cached walks anywhere below it, a leaf only its own range.
  static void invalidate_old(const VisitCtx& ctx, u64 old) {
    if (is_table(old, ctx.level))
      tlbi_all(ctx.pgt);
    else if (is_valid(old))
      tlbi_leaf(ctx.pgt, align_down(ctx.addr, granule_size(ctx.level)), ctx.level, true);
  }

  // Break: replace a live entry by the LOCKED marker (so concurrent shared
  // walkers back off with -EAGAIN) and invalidate what the TLBs may hold.
  static bool break_pte(const VisitCtx& ctx) {
    if (!set_pte(ctx, kLocked)) return false;
    Platform* p = ctx.pgt->platform_;
    p->barrier(Barrier::kDsbIshst);
    invalidate_old(ctx, ctx.old);
    stat_inc(&ctx.pgt->cpu_stats().breaks);
    return true;
  }

  // Reference-count changes of one table page, gathered while a walk writes
  // its entries and applied as one update (Platform::get_page_refs /
  // put_page_refs) when the walk moves to another table page, visits a table
  // entry, or ends. Deferring is safe: counts are read (free_if_empty) and
  // table pages freed only by exclusive walkers, which flush before every
  // table visit; a leaf's reference is never a table page's last (the page
  // keeps its own base reference until it is unlinked); and a shared walker's
  // pending increments are applied before its walk returns, so before any
  // exclusive walker can run.
  struct RefBatch {
    u64* page = nullptr;
    s32 delta = 0;
  };

  // Adds `delta` to the pending change of table page `page`, applying the
  // pending change of another page first.
  [[gnu::always_inline]] static void batch_ref(Pgtable* pgt, RefBatch* b, u64* page, s32 delta) {
    if (b->page != page) {
      flush_refs(pgt, b);
      b->page = page;
    }
    b->delta += delta;
  }

  static void flush_refs(Pgtable* pgt, RefBatch* b) {
    if (b->delta > 0) pgt->platform_->get_page_refs(b->page, u32(b->delta));
    if (b->delta < 0) pgt->platform_->put_page_refs(b->page, u32(-b->delta));
    b->delta = 0;
  }

  // Make: publish the new entry after a break with a store-release, and
  // account for it in the table page's reference count.
  static void make_pte(const VisitCtx& ctx, u64 new_pte, RefBatch* refs = nullptr) {
    __atomic_store_n(ctx.ptep, new_pte, __ATOMIC_RELEASE);
    note(ctx, kLocked, new_pte);
    adjust_refcount(ctx, ctx.old, new_pte, refs);
  }

  // The table page's count follows its counted entries: at once, or through
  // `refs` when the caller batches.
  [[gnu::always_inline]] static void adjust_refcount(const VisitCtx& ctx, u64 old, u64 new_pte, RefBatch* refs = nullptr) {
    const s32 delta = s32(is_counted(new_pte)) - s32(is_counted(old));
    if (delta == 0) return;
    if (refs) {
      batch_ref(ctx.pgt, refs, reinterpret_cast<u64*>(reinterpret_cast<uintptr_t>(ctx.ptep) & ~uintptr_t(kPageSize - 1)),
                delta);
      return;
    }
    Platform* p = ctx.pgt->platform_;
    if (delta > 0)
      p->get_page(ctx.ptep);
    else
      p->put_page(ctx.ptep);
  }

  // Replaces the entry, with break-before-make when a live entry changes.
  // Returns false when a shared walker lost a race (the caller returns -EAGAIN).
  static bool replace_pte(const VisitCtx& ctx, u64 new_pte, RefBatch* refs = nullptr) {
    if (!is_valid(ctx.old)) {
      // Nothing to break: no TLB can hold an invalid entry.
      if (!set_pte(ctx, new_pte)) return false;
      adjust_refcount(ctx, ctx.old, new_pte, refs);
      return true;
    }
    if (!break_pte(ctx)) return false;
    make_pte(ctx, new_pte, refs);
    return true;
  }

  // --- Table pages ------------------------------------------------------------

  static u64* alloc_table(Pgtable* pgt) {
    auto* t = static_cast<u64*>(pgt->platform_->zalloc_page());
    if (t) stat_inc(&pgt->cpu_stats().table_pages);
    return t;
  }

  // Drops the base reference of a table page that nothing points to any more.
  static void put_table(Pgtable* pgt, u64* table) {
    pgt->platform_->put_page(table);
    stat_inc(&pgt->cpu_stats().table_pages, ~u64{0});  // -1: this CPU's copy may go below 0, the sum does not
  }

  // Releases an unlinked (and already invalidated) subtree: every counted
  // entry drops its reference, then the base reference frees the page.
  static void free_unlinked(Pgtable* pgt, u64* table, u32 level) {
    u32 counted = 0;
    for (u32 i = 0; i < kPtrsPerTable; ++i) {
      u64 pte = table[i];
      if (is_table(pte, level)) free_unlinked(pgt, table_va(pgt, pte), level + 1);
      counted += is_counted(pte);
    }
    pgt->platform_->put_page_refs(table, counted);  // the base reference stays: not freed yet
    put_table(pgt, table);
  }

  static bool table_empty(Pgtable* pgt, u64* table) { return pgt->platform_->page_count(table) == 1; }

  // Unlinks an empty child table (TABLE_POST): break the table entry, which
  // invalidates the whole VMID, clear it, and free the page. Exclusive walks only.
  static int free_if_empty(const VisitCtx& ctx) {
    if (shared(ctx)) return 0;  // a concurrent walker may still be inside it
    u64* child = table_va(ctx.pgt, ctx.old);
    if (!table_empty(ctx.pgt, child)) return 0;
    break_pte(ctx);
    make_pte(ctx, 0);
    put_table(ctx.pgt, child);
    return 0;
  }

  // A table at `level + 1` that maps exactly what the block `blk` at `level`
  // maps (or carries the same annotation everywhere).
  static u64* build_split(Pgtable* pgt, u64 blk, u32 level) {
    u64* t = alloc_table(pgt);
    if (!t) return nullptr;
    const u32 child = level + 1;
    const u64 g = granule_size(child);
    if (is_valid(blk)) {
      u64 attrs = leaf_attrs(blk);
      for (u32 i = 0; i < kPtrsPerTable; ++i) t[i] = make_leaf(oa(blk) + i * g, attrs, child);
    } else {
      for (u32 i = 0; i < kPtrsPerTable; ++i) t[i] = blk;
    }
    // One reference per counted entry on top of the base reference.
    pgt->platform_->get_page_refs(t, kPtrsPerTable);
    return t;
  }

  struct MapData;

  // Replaces the block (valid or annotated) in ctx by an equivalent table;
  // for an exclusive map walk (`m`), one whose entries under the walk
  // already hold their new values (presplit).
  static int split_block(const VisitCtx& ctx, MapData* m = nullptr) {
    Pgtable* pgt = ctx.pgt;
    u64* t = build_split(pgt, ctx.old, ctx.level);
    if (!t) return -kENOMEM;
    if (m) presplit(ctx, t, *m);
    const u64 table_pte = make_table(pgt->platform_->virt_to_phys(t).value());
    // New entries must be visible before the table is published.
    pgt->platform_->barrier(Barrier::kDsbIshst);
    bool ok;
    if (is_valid(ctx.old) && pgt->bbm2_) {
      // FEAT_BBM level 2: swap block for table in one CAS, then drop the
      // block's TLB entries; no window in which the range is unmapped.
      ok = set_pte(ctx, table_pte);
      if (ok) {
        pgt->platform_->barrier(Barrier::kDsbIshst);
        tlbi_leaf(pgt, align_down(ctx.addr, granule_size(ctx.level)), ctx.level, true);
        stat_inc(&pgt->cpu_stats().bbm2_skips);
      }
    } else {
      ok = replace_pte(ctx, table_pte);
    }
    if (!ok) {
      free_unlinked(pgt, t, ctx.level + 1);
      return -kEAGAIN;
    }
    return 0;
  }

  // Installs an empty table where there was nothing.
  static int install_empty_table(const VisitCtx& ctx) {
    u64* t = alloc_table(ctx.pgt);
    if (!t) return -kENOMEM;
    ctx.pgt->platform_->barrier(Barrier::kDsbIshst);
    if (!set_pte(ctx, make_table(ctx.pgt->platform_->virt_to_phys(t).value()))) {
      put_table(ctx.pgt, t);
      return -kEAGAIN;
    }
    adjust_refcount(ctx, 0, make_table(0));
    return 0;
  }

  // Makes the entry at ctx a table (splitting a block or creating an empty
  // table) so the walk can descend into it; `m` as for split_block.
  static int ensure_table(const VisitCtx& ctx, MapData* m = nullptr) {
    if (is_locked(ctx.old)) return -kEAGAIN;
    if (ctx.old == 0) return install_empty_table(ctx);
    return split_block(ctx, m);
  }

  // --- Map / annotate ---------------------------------------------------------

  struct MapData {
    u64 start;        // first input address of the request
    u64 phys;         // output address for `start`
    u64 attrs;        // leaf attributes (valid map)
    u64 annotation;   // invalid entry to install (annotate)
    u64 perm_mask;    // bits that make up the format's permissions
    bool annotate;
    bool device;      // no cache maintenance for device memory
    RefBatch refs{};  // the walk's pending reference-count changes
    u64 leaf_writes = 0;  // added to the statistics once, after the walk
  };

  [[gnu::always_inline]] static bool leaf_allowed(const VisitCtx& ctx, const MapData& m) {
    // A page: the walk visits page-aligned addresses below a page-aligned
    // end, and the output address was checked page aligned on entry.
    if (ctx.level == kLastLevel) return true;
    const u64 g = granule_size(ctx.level);
    if (!level_supports_block(ctx.level)) return false;
    if (!is_aligned_u(ctx.addr, g) || ctx.end - ctx.addr < g) return false;
    if (m.annotate) return true;
    return is_aligned_u(m.phys + (ctx.addr - m.start), g);
  }

  static bool is_aligned_u(u64 v, u64 a) { return (v & (a - 1)) == 0; }

  // Whether a map's new leaves may need cache maintenance at all (see
  // cmo_for_map): valid normal-memory leaves, unless both skip flags are set.
  static bool needs_cmo(const MapData& m, u32 flags) {
    constexpr u32 kSkipBoth = kMapSkipDcache | kMapSkipIcache;
    return !m.annotate && !m.device && (flags & kSkipBoth) != kSkipBoth;
  }

  static u64 new_leaf(const VisitCtx& ctx, const MapData& m) {
    if (m.annotate) return m.annotation;
    return make_leaf(m.phys + (ctx.addr - m.start), m.attrs, ctx.level);
  }

  static bool leaf_exec(Format f, u64 pte) { return !(pte & (f == Format::kStage2 ? kS2Xn : kS1Xn)); }

  static bool leaf_device(Format f, u64 pte) {
    return f == Format::kStage2 ? (pte & kS2MemAttrMask) == kS2MemAttrDevice
                                : ((pte & kS1AttrIdxMask) >> kS1AttrIdxShift) == kMairIdxDevice;
  }

  // An existing normal-memory leaf that becomes executable in place (a
  // permission-only update) needs the same instruction-cache invalidation as
  // a new executable mapping, before the update makes it fetchable.
  static void icache_if_exec_gained(const VisitCtx& ctx, u64 old, u64 new_pte) {
    const Format f = ctx.pgt->format_;
    if ((ctx.flags & kMapSkipIcache) || leaf_device(f, new_pte) || !leaf_exec(f, new_pte) || leaf_exec(f, old)) return;
    ctx.pgt->platform_->icache_inval_pou(PhysAddr(oa(new_pte)), granule_size(ctx.level));
  }

  static void cmo_for_map(const VisitCtx& ctx, u64 new_pte, const MapData& m) {
    if (!is_valid(new_pte) || m.device) return;
    if (is_valid(ctx.old) && oa(ctx.old) == oa(new_pte)) return;  // same memory, already coherent
    Platform* p = ctx.pgt->platform_;
    const u64 g = granule_size(ctx.level);
    if (!(ctx.flags & kMapSkipDcache)) p->dcache_clean_inval_poc(PhysAddr(oa(new_pte)), g);
    const bool exec = ctx.pgt->format_ == Format::kStage2 ? !(new_pte & kS2Xn) : !(new_pte & kS1Xn);
    if (exec && !(ctx.flags & kMapSkipIcache)) p->icache_inval_pou(PhysAddr(oa(new_pte)), g);
  }

  static bool is_restriction(Format f, u64 old, u64 new_pte) {
    if (f == Format::kStage2) {
      const u64 lost = (old & (kS2ApR | kS2ApW)) & ~new_pte;
      return lost || ((new_pte & kS2Xn) && !(old & kS2Xn));
    }
    return ((new_pte & kS1ApRo) && !(old & kS1ApRo)) || ((new_pte & kS1Xn) && !(old & kS1Xn));
  }

  // Installs a leaf (valid or annotated) at ctx, with the prejudgement of
  // seed 003: identical -> -EAGAIN, permissions only -> in-place update.
  [[gnu::always_inline]] static int try_leaf(const VisitCtx& ctx, MapData& m) {
    Pgtable* pgt = ctx.pgt;
    const u64 new_pte = new_leaf(ctx, m);
    if (is_locked(ctx.old)) return -kEAGAIN;
    // Identical: nothing to do. Only a fault handler hears -EAGAIN (it just
    // resumes the guest); a shared walker outside one would retry the same
    // unchanged entry forever, and an exclusive one ignores it anyway.
    if (ctx.old == new_pte) return (m.annotate || !(ctx.flags & kWalkHandleFault)) ? 0 : -kEAGAIN;
    if (is_leaf(ctx.old, ctx.level) && is_valid(new_pte) && ((ctx.old ^ new_pte) & ~(m.perm_mask | kSwMask)) == 0) {
      // Only permissions or software bits differ: no break needed. A
      // restriction must reach every CPU; a pure relaxation only risks a
      // spurious fault locally; software bits are invisible to the hardware,
      // so a change of those alone needs no invalidation at all.
      // The skip flag tested here: the call would build a context for nothing.
      if (!(ctx.flags & kMapSkipIcache)) icache_if_exec_gained(copy(ctx), ctx.old, new_pte);
      if (!set_pte(ctx, new_pte)) return -kEAGAIN;
      if ((ctx.old ^ new_pte) & m.perm_mask) {
        pgt->platform_->barrier(Barrier::kDsbIshst);
        tlbi_leaf(pgt, ctx.addr, ctx.level, is_restriction(pgt->format_, ctx.old, new_pte));
      }
      ++m.leaf_writes;
      return 0;
    }
    if (!is_valid(ctx.old)) {
      // Nothing to break (the common new mapping): replace_pte's first case,
      // inline, so the context stays in registers.
      if (needs_cmo(m, ctx.flags)) cmo_for_map(copy(ctx), new_pte, m);
      if (!set_pte(ctx, new_pte)) return -kEAGAIN;
      adjust_refcount(ctx, ctx.old, new_pte, &m.refs);
      ++m.leaf_writes;
      return 0;
    }
    cmo_for_map(copy(ctx), new_pte, m);
    if (!replace_pte(copy(ctx), new_pte, &m.refs)) return -kEAGAIN;
    ++m.leaf_writes;
    return 0;
  }

  // Replaces a whole table by a leaf (coalesce). Exclusive walks only: the
  // subtree is freed once no TLB can reach it.
  static int coalesce(const VisitCtx& ctx, const MapData& m) {
    Pgtable* pgt = ctx.pgt;
    u64* child = table_va(pgt, ctx.old);
    const u64 new_pte = new_leaf(ctx, m);
    if (pgt->bbm2_ && is_valid(new_pte) && table_equivalent(pgt, child, new_pte, ctx.level)) {
      set_pte(ctx, new_pte);
      pgt->platform_->barrier(Barrier::kDsbIshst);
      tlbi_all(pgt);
      adjust_refcount(ctx, ctx.old, new_pte);
      stat_inc(&pgt->cpu_stats().bbm2_skips);
    } else {
      cmo_for_map(ctx, new_pte, m);
      break_pte(ctx);
      make_pte(ctx, new_pte);
    }
    free_unlinked(pgt, child, ctx.level + 1);
    stat_inc(&pgt->cpu_stats().leaf_writes);
    return 0;
  }

  // True when `table` (at level + 1) holds exactly the split of `blk`.
  static bool table_equivalent(Pgtable*, const u64* table, u64 blk, u32 level) {
    const u64 g = granule_size(level + 1);
    for (u32 i = 0; i < kPtrsPerTable; ++i)
      if (table[i] != make_leaf(oa(blk) + i * g, leaf_attrs(blk), level + 1)) return false;
    return true;
  }

  // Writes into the split table `t` (not yet published) the new value of
  // each child entry that the map walk at ctx would otherwise update with a
  // break or an invalidation of its own (a new output address, new
  // permissions or attributes, an annotation): entries the walk covers whole
  // and may map at the child level. The walk then finds them done, and the
  // break of the block covers every translation the table replaces: a
  // donation of an unaligned range costs one invalidation per split block,
  // not one per page. Changes of software bits alone need neither and are
  // left to the walk (no cheaper here). Under FEAT_BBM level 2 a valid
  // block is swapped for its table without a break, so the table must
  // translate exactly as the block did: nothing is done here. The cache
  // maintenance is try_leaf's, entry by entry. Split entries and new ones
  // are all counted (no uncounted annotation comes here): the table's
  // reference count holds.
  static void presplit(const VisitCtx& ctx, u64* t, MapData& m) {
    Pgtable* pgt = ctx.pgt;
    const u32 child = ctx.level + 1;
    const u64 g = granule_size(child);
    const u64 base = align_down(ctx.addr, granule_size(ctx.level));
    if (pgt->bbm2_ && is_valid(ctx.old)) return;
    // Every entry of a split carries the block's attributes, and every new
    // leaf the map's: when those differ in software bits only and the output
    // addresses line up, so do all the entries (the share of a range).
    if (!m.annotate && is_valid(ctx.old) && ((leaf_attrs(ctx.old) ^ m.attrs) & ~kSwMask) == 0 &&
        oa(ctx.old) - base == m.phys - m.start)
      return;
    const bool cmo = needs_cmo(m, ctx.flags);
    u64 writes = 0;
    for (u32 i = index(ctx.addr, child); i < kPtrsPerTable; ++i) {
      const u64 a = base + i * g;
      if (a >= ctx.end) break;
      if (a < ctx.addr) continue;  // the child entry starts before the walk
      if (child != kLastLevel) {  // leaf_allowed at the child level (always, for a page)
        const VisitCtx c{pgt, &t[i], t[i], a, ctx.end, child, ctx.flags, ctx.arg};
        if (!leaf_allowed(c, m)) continue;
      }
      const u64 old = t[i];
      const u64 new_pte = m.annotate ? m.annotation : make_leaf(m.phys + (a - m.start), m.attrs, child);
      const u64 diff = old ^ new_pte;
      if ((diff & ~kSwMask) == 0) continue;
      if (cmo) {
        const VisitCtx c{pgt, &t[i], old, a, ctx.end, child, ctx.flags, ctx.arg};
        if (is_valid(old) && (diff & ~(m.perm_mask | kSwMask)) == 0)
          icache_if_exec_gained(c, old, new_pte);
        else
          cmo_for_map(c, new_pte, m);
      }
      t[i] = new_pte;
      ++writes;
    }
    m.leaf_writes += writes;
  }

  [[gnu::always_inline]] static int map_cb(const VisitCtx& ctx, u32 visit) {
    MapData& m = *static_cast<MapData*>(ctx.arg);
    if (visit != kWalkLeaf) flush_refs(ctx.pgt, &m.refs);  // counts must be exact at table visits
    if (visit == kWalkTablePost) return free_if_empty(ctx);
    if (visit == kWalkTablePre) {
      if (!leaf_allowed(ctx, m) || shared(ctx)) return 0;  // descend
      return coalesce(ctx, m);
    }
    if (leaf_allowed(ctx, m)) return try_leaf(ctx, m);
    if (m.annotate && ctx.old == m.annotation) return 0;  // already carries it; no split needed
    const bool presplit_ok = !shared(ctx) && (!m.annotate || is_counted(m.annotation));
    return ensure_table(copy(ctx), presplit_ok ? &m : nullptr);
  }

  // --- Unmap -----------------------------------------------------------------

  // Unmap invalidates after its walk rather than per entry. Unmap walks are
  // exclusive (no software walker runs beside them), and nothing is made in
  // place of a cleared leaf, so a valid leaf may go straight to 0 without a
  // LOCKED break; the TLBs may keep the old translation only until the
  // invalidation at the end of the walk, which completes before the unmap
  // returns. One DSB then covers every cleared leaf; up to kDeferredTlbis
  // leaves are invalidated by address as one batch (Platform::tlbi_batch:
  // issued together, completed once), more by one table-wide invalidation (the
  // range-versus-all trade Linux makes at 512 entries; the hypervisor's and
  // the host's working sets are small, so the cut is lower here).
  //
  // A table can become empty only if the walk cleared one of its entries, so
  // TABLE_POST checks a child table only when the walk wrote at the child's
  // level since the previous TABLE_POST at the parent's level (those writes
  // all went into this child: the walk is depth first). A one-page unmap then
  // checks one table, not one per level.
  static constexpr u32 kDeferredTlbis = 32;
  struct UnmapData {
    u32 n = 0;
    bool all = false;
    u32 written = 0;  // bit L: an entry at level L was cleared since the last TABLE_POST at level L - 1
    u64 addr[kDeferredTlbis];
    u32 level[kDeferredTlbis];
    RefBatch refs{};
  };

  [[gnu::always_inline]] static int unmap_cb(const VisitCtx& ctx, u32 visit) {
    auto& u = *static_cast<UnmapData*>(ctx.arg);
    if (visit == kWalkTablePost) {
      const u32 child_bit = 1u << (ctx.level + 1);
      if (!(u.written & child_bit)) return 0;  // child untouched: as full as before
      u.written &= ~child_bit;
      flush_refs(ctx.pgt, &u.refs);
      free_if_empty(ctx);
      // Freeing a table invalidated the whole VMID (EL2): that covers every
      // leaf cleared so far.
      if (__atomic_load_n(ctx.ptep, __ATOMIC_RELAXED) == 0) {
        u.written |= 1u << ctx.level;
        u.n = 0;
        u.all = false;
      }
      return 0;
    }
    if (is_locked(ctx.old)) return -kEAGAIN;
    if (ctx.old == 0) return 0;
    const u64 g = granule_size(ctx.level);
    const u64 base = align_down(ctx.addr, g);
    if (base < ctx.addr || ctx.end - base < g) {
      // The range covers only part of this block: split so the rest survives.
      return ensure_table(copy(ctx));
    }
    set_pte(ctx, 0);  // exclusive walk: a plain store, cannot fail
    adjust_refcount(ctx, ctx.old, 0, &u.refs);
    u.written |= 1u << ctx.level;
    if (is_valid(ctx.old)) {
      if (u.n < kDeferredTlbis) {
        u.addr[u.n] = base;
        u.level[u.n] = ctx.level;
        ++u.n;
      } else {
        u.all = true;
      }
    }
    return 0;
  }

  // The invalidation unmap_cb deferred.
  static void flush_unmapped(Pgtable* pgt, const UnmapData& u) {
    if (!u.all && u.n == 0) return;
    pgt->platform_->barrier(Barrier::kDsbIshst);
    if (u.all) {
      tlbi_all(pgt);
      return;
    }
    // Issued together, completed once (Platform::tlbi_batch).
    pgt->platform_->tlbi_batch(pgt->format_ == Format::kStage2 ? TlbiKind::kIpa : TlbiKind::kEl2Va, pgt->vmid_,
                               u.addr, u.level, u.n);
    stat_inc(&pgt->walk_stats(0).tlbis, u.n);  // unmap walks are exclusive
  }

  // --- Attribute updates -----------------------------------------------------

  enum class Inval : u8 { kNone, kLocal, kBroadcast };

  struct AttrData {
    u64 set;
    u64 clr;
    Inval inval;  // what a change needs: nothing (AF aging), local (relax), broadcast (restrict)
    u64 old;      // last valid leaf seen
    bool young;   // any leaf had AF set
  };

  static int attr_cb(const VisitCtx& ctx, u32) {
    auto& a = *static_cast<AttrData*>(ctx.arg);
    if (!is_leaf(ctx.old, ctx.level)) return is_locked(ctx.old) ? -kEAGAIN : -kENOENT;
    a.old = ctx.old;
    if (ctx.old & kAf) a.young = true;
    const u64 new_pte = (ctx.old & ~a.clr) | a.set;
    if (new_pte == ctx.old) return 0;
    icache_if_exec_gained(ctx, ctx.old, new_pte);
    if (!set_pte(ctx, new_pte)) return -kEAGAIN;
    if (a.inval != Inval::kNone) {
      ctx.pgt->platform_->barrier(Barrier::kDsbIshst);
      tlbi_leaf(ctx.pgt, ctx.addr, ctx.level, a.inval == Inval::kBroadcast);
    }
    stat_inc(&ctx.pgt->cpu_stats().leaf_writes);
    return 0;
  }

  static int update_attrs(Pgtable* pgt, u64 addr, u64 size, AttrData& a, u32 flags) {
    Walker w{attr_cb, &a, kWalkLeaf | flags};
    return pgt->walk(addr, size, w);
  }

  static void free_tree(Pgtable* pgt, u64* table, u32 level, u32 entries) {
    for (u32 i = 0; i < entries; ++i) {
      if (is_table(table[i], level)) free_unlinked(pgt, table_va(pgt, table[i]), level + 1);
      if (is_counted(table[i])) pgt->platform_->put_page(&table[i]);
    }
  }

  // An operation that failed half-way (out of table pages) may leave empty
  // tables it created; release them so nothing is held for nothing.
  static int prune_cb(const VisitCtx& ctx, u32) { return free_if_empty(ctx); }

  static void prune(Pgtable* pgt, u64 addr, u64 size) {
    Walker w{prune_cb, nullptr, kWalkTablePost};
    pgt->walk(addr, size, w);
  }

  // --- One page under a complete path --------------------------------------

  // The table entries above one page, as the descent found them.
  struct PagePath {
    u64* ptep[kLastLevel];
    u64 pte[kLastLevel];
  };

  // Whether one page at `addr` (page aligned) lies inside the input range,
  // as walk() requires.
  static bool page_in_range(const Pgtable* pgt, u64 addr) {
    // Page aligned below a page-aligned limit: the whole page is inside.
    return pgt->root_ && (addr >> pgt->ia_bits_) == 0;
  }

  // The last-level entry for `addr` when every entry above it is a table,
  // else nullptr: the generic walk then splits or builds what is missing.
  // The common one-page transition finds its path complete, and going
  // straight down makes exactly the visits walk_page would make (a leaf
  // visit at the last level, then TABLE_POST bottom up) without the
  // walker's dispatch. Tables are never unlinked under the caller: an
  // exclusive walker is alone, and shared walkers only add tables.
  [[gnu::always_inline]] static u64* page_slot(Pgtable* pgt, u64 addr, PagePath* path) {
    const Platform::LinearWindow lin = pgt->platform_->linear_window();
    u32 level = pgt->start_level_;
    u64* ptep = &pgt->root_[addr >> level_shift(level)];
    for (; level < kLastLevel; ++level) {
      const u64 pte = load_pte(ptep);
      if (!is_table(pte, level)) return nullptr;
      if (path) {
        path->ptep[level] = ptep;
        path->pte[level] = pte;
      }
      ptep = &static_cast<u64*>(lin.to_virt(PhysAddr(oa(pte))))[index(addr, level + 1)];
    }
    return ptep;
  }

  // map_walk of one page whose path is complete; false when it is not (or
  // the walk needs more than the leaf visit: a shared walker outside a
  // fault handler retries, an uncounted annotation can empty a table).
  [[gnu::always_inline]] static bool map_page(Pgtable* pgt, u64 addr, MapData& m, u32 flags, int* ret) {
    if ((flags & kWalkShared) && !(flags & kWalkHandleFault)) return false;
    if (m.annotate && !is_counted(m.annotation)) return false;
    if (!page_in_range(pgt, addr)) return false;
    u64* ptep = page_slot(pgt, addr, nullptr);
    if (!ptep) return false;
    const VisitCtx ctx{pgt, ptep, load_pte(ptep), addr, addr + kPageSize, kLastLevel, kWalkLeaf | flags, &m};
    const int r = try_leaf(ctx, m);  // leaf_allowed holds at the last level
    *ret = walk_continue(ctx.flags, r) ? 0 : r;
    return true;
  }

  // unmap_walk of one page whose path is complete; false when it is not.
  [[gnu::always_inline]] static bool unmap_page(Pgtable* pgt, u64 addr, UnmapData& u) {
    if (!page_in_range(pgt, addr)) return false;
    PagePath path;
    u64* ptep = page_slot(pgt, addr, &path);
    if (!ptep) return false;
    const u32 flags = kWalkLeaf | kWalkTablePost;
    const u64 end = addr + kPageSize;
    // Exclusive: whatever the visits return, the walk goes on.
    unmap_cb(VisitCtx{pgt, ptep, load_pte(ptep), addr, end, kLastLevel, flags, &u}, kWalkLeaf);
    // TABLE_POST bottom up while the child below was cleared from: a table
    // that stays keeps its entry, so no table above it can have emptied
    // (unmap_cb would return at once for each).
    for (u32 level = kLastLevel; level-- > pgt->start_level_ && (u.written & (1u << (level + 1)));)
      unmap_cb(VisitCtx{pgt, path.ptep[level], path.pte[level], addr, end, level, flags, &u}, kWalkTablePost);
    return true;
  }

  static int map_walk(Pgtable* pgt, u64 addr, u64 size, MapData& m, u32 flags) {
    int ret = 0;
    const bool direct = size == kPageSize && map_page(pgt, addr, m, flags, &ret);
    if (!direct) ret = map_walk_tables(pgt, addr, size, m, flags);
    flush_refs(pgt, &m.refs);
    if (direct || m.leaf_writes) {
      PgtableStats& st = pgt->walk_stats(flags);
      if (direct) stat_inc(&st.direct_pages);
      if (m.leaf_writes) stat_inc(&st.leaf_writes, m.leaf_writes);
    }
    if (ret == -kENOMEM && !(flags & kWalkShared)) prune(pgt, addr, size);
    return ret;
  }

  // map_walk through the walker.
  static int map_walk_tables(Pgtable* pgt, u64 addr, u64 size, MapData& m, u32 flags) {
    // Table visits only where they can act: a table can be coalesced only
    // under a range that covers a whole block (2 MiB or more), and can empty
    // only when the walk writes empty entries (an annotation of owner 0);
    // every other entry a map writes is counted, like the one it replaces.
    // A single-page map then costs one callback, at the leaf.
    u32 visits = kWalkLeaf;
    if (size >= granule_size(kLastLevel - 1)) visits |= kWalkTablePre;
    if (m.annotate && !is_counted(m.annotation)) visits |= kWalkTablePost;
    Walker w{map_cb, &m, visits | flags};
    return pgt->walk(addr, size, w);
  }

  static int unmap_walk(Pgtable* pgt, u64 addr, u64 size) {
    UnmapData u;
    const bool direct = size == kPageSize && unmap_page(pgt, addr, u);
    int ret = 0;
    if (direct) {
      stat_inc(&pgt->walk_stats(0).direct_pages);  // unmap walks are exclusive
    } else {
      Walker w{unmap_cb, &u, kWalkLeaf | kWalkTablePost};
      ret = pgt->walk(addr, size, w);
    }
    flush_refs(pgt, &u.refs);
    flush_unmapped(pgt, u);  // also after a failed walk: what was cleared stays cleared
    if (ret == -kENOMEM) prune(pgt, addr, size);
    return ret;
  }
};

using I = Pgtable::Internal;

u64 max_new_tables_range(u32 start_level, u64 addr, u64 size, u64 phys, bool annotate) {
  if (size == 0) return 0;
  const u64 first = align_down(addr, kPageSize);
  const u64 end = align_down(addr + size + kPageSize - 1, kPageSize);
  u64 total = 0;
  for (u32 level = start_level + 1; level <= kLastLevel; ++level) {
    // One table at `level` can be needed per region of the parent's granule
    // that the range touches, unless the parent can hold a block for it.
    // Shifts, not divisions: this runs on every transition.
    const u32 shift = level_shift(level - 1);
    const u64 g = u64{1} << shift;
    u64 touched = ((end - 1) >> shift) - (first >> shift) + 1;
    const bool parent_block = level_supports_block(level - 1) && (annotate || ((first ^ phys) & (g - 1)) == 0);
    if (parent_block) {
      const u64 full_lo = (first + g - 1) >> shift;
      const u64 full_hi = end >> shift;
      if (full_hi > full_lo) touched -= full_hi - full_lo;
    }
    total += touched;
  }
  return total;
}

int Pgtable::init(Format format, u32 ia_bits, u32 start_level, u32 vmid, Platform* platform) {
  if (!platform || !valid_geometry(format, ia_bits, start_level)) return -kEINVAL;
  const u32 entry_bits = ia_bits - level_shift(start_level);
  const u32 entries = 1u << entry_bits;
  u32 order = entry_bits > kBitsPerLevel ? entry_bits - kBitsPerLevel : 0;
  platform_ = platform;
  void* root = order ? platform->zalloc_pages(order) : platform->zalloc_page();
  if (!root) return -kENOMEM;
  root_ = static_cast<u64*>(root);
  root_pa_ = platform->virt_to_phys(root);
  format_ = format;
  ia_bits_ = ia_bits;
  start_level_ = start_level;
  root_order_ = order;
  root_entries_ = entries;
  vmid_ = vmid;
  stats_ = {};
  stats_.cpu(0).table_pages = u64{1} << order;
  return 0;
}

void Pgtable::destroy() {
  if (!root_) return;
  I::free_tree(this, root_, start_level_, root_entries_);
  platform_->free_pages(root_, root_order_);
  root_ = nullptr;
  // Per-CPU counts may be negative on one CPU: cancel the total on one slot.
  stats_.cpu(0).table_pages -= stats_.sum().table_pages;
}

PgtableStats Pgtable::stats() const { return stats_.sum(); }

int Pgtable::walk(u64 addr, u64 size, const Walker& walker) {
  if (!root_ || !walker.cb) return -kEINVAL;
  const u64 limit = u64{1} << ia_bits_;
  if (addr + size < addr) return -kERANGE;
  const u64 start = align_down(addr, kPageSize);
  const u64 last = addr + size;
  if (last > limit || start > limit) return -kERANGE;
  // Every page [addr, addr + size) touches; an empty range touches none,
  // even when addr is not page aligned.
  const u64 end = size ? align_down(last + kPageSize - 1, kPageSize) : start;
  I::WalkData d{this, &walker, start, end};
  if (end - start == kPageSize && !(walker.flags & kWalkTablePre)) return I::walk_page(d, root_);
  return I::walk_table(d, root_, start_level_, root_entries_);
}

int Pgtable::get_leaf(u64 addr, u64* pte, u32* level) {
  // What a one-page walk with a leaf visit would report (same checks, same
  // entry), read straight down the tables: the abort path starts here.
  if (!root_) return -kEINVAL;
  const u64 start = align_down(addr, kPageSize);
  if (start + kPageSize < start || start + kPageSize > (u64{1} << ia_bits_)) return -kERANGE;
  const Platform::LinearWindow lin = platform_->linear_window();
  u32 lvl = start_level_;
  const u64* ptep = &root_[start >> level_shift(lvl)];
  u64 v = load_pte(ptep);
  while (is_table(v, lvl)) {
    ++lvl;
    ptep = &static_cast<const u64*>(lin.to_virt(PhysAddr(oa(v))))[I::index(start, lvl)];
    v = load_pte(ptep);
  }
  if (pte) *pte = v;
  if (level) *level = lvl;
  return 0;
}

int Pgtable::stage2_map(Ipa ipa, u64 size, PhysAddr pa, u32 prot, u32 flags) {
  if (format_ != Format::kStage2) return -kEINVAL;
  if (!ipa.is_aligned(kPageSize) || !pa.is_aligned(kPageSize) || (size & (kPageSize - 1))) return -kEINVAL;
  if (pa.value() + size < pa.value() || pa.value() + size > (u64{1} << kOaBits)) return -kERANGE;
  I::MapData m{ipa.value(), pa.value(), leaf_attrs_for(Format::kStage2, prot), 0, kS2PermMask, false,
               (prot & kProtDevice) != 0};
  return I::map_walk(this, ipa.value(), size, m, flags);
}

int Pgtable::stage2_set_owner(Ipa ipa, u64 size, u32 owner_id) {
  if (format_ != Format::kStage2 || owner_id > kMaxOwnerId) return -kEINVAL;
  if (!ipa.is_aligned(kPageSize) || (size & (kPageSize - 1))) return -kEINVAL;
  I::MapData m{ipa.value(), 0, 0, make_owner(owner_id), 0, true, false};
  return I::map_walk(this, ipa.value(), size, m, 0);
}

int Pgtable::stage2_unmap(Ipa ipa, u64 size) {
  if (format_ != Format::kStage2) return -kEINVAL;
  if (!ipa.is_aligned(kPageSize) || (size & (kPageSize - 1))) return -kEINVAL;
  return I::unmap_walk(this, ipa.value(), size);
}

int Pgtable::stage2_free_empty_tables(Ipa ipa, u64 size) {
  if (format_ != Format::kStage2) return -kEINVAL;
  if (!ipa.is_aligned(kPageSize) || (size & (kPageSize - 1))) return -kEINVAL;
  I::prune(this, ipa.value(), size);
  return 0;
}

int Pgtable::stage2_relax_perms(Ipa ipa, u32 prot, u32 flags) {
  if (format_ != Format::kStage2) return -kEINVAL;
  u64 set = 0, clr = 0;
  if (prot & kProtR) set |= kS2ApR;
  if (prot & kProtW) set |= kS2ApW;
  if (prot & kProtX) clr |= kS2Xn;
  I::AttrData a{set, clr, I::Inval::kLocal, 0, false};
  int ret = I::update_attrs(this, ipa.value(), kPageSize, a, flags);
  // No valid leaf: the access faults again and goes down the map path. An
  // exclusive walker shrugs off the callback's -ENOENT, so look at what it saw.
  if (ret == -kENOENT || (ret == 0 && a.old == 0)) return -kEAGAIN;
  return ret;
}

int Pgtable::stage2_wrprotect(Ipa ipa, u64 size) {
  if (format_ != Format::kStage2) return -kEINVAL;
  I::AttrData a{0, kS2ApW, I::Inval::kBroadcast, 0, false};
  return I::update_attrs(this, ipa.value(), size, a, 0);
}

int Pgtable::stage2_mkyoung(Ipa ipa, u64* old) {
  if (format_ != Format::kStage2) return -kEINVAL;
  I::AttrData a{kAf, 0, I::Inval::kNone, 0, false};
  int ret = I::update_attrs(this, ipa.value(), kPageSize, a, kWalkShared | kWalkHandleFault);
  if (ret == -kENOENT) return -kEAGAIN;
  if (ret == 0 && old) *old = a.old;  // only a successful update reports
  return ret;
}

bool Pgtable::stage2_test_clear_young(Ipa ipa, u64 size, bool mkold) {
  if (format_ != Format::kStage2) return false;
  I::AttrData a{0, mkold ? kAf : 0u, I::Inval::kNone, 0, false};
  I::update_attrs(this, ipa.value(), size, a, kWalkShared);
  return a.young;
}

int Pgtable::hyp_map(Va va, u64 size, PhysAddr pa, u32 prot, u32 flags) {
  if (format_ != Format::kHypStage1) return -kEINVAL;
  if (!va.is_aligned(kPageSize) || !pa.is_aligned(kPageSize) || (size & (kPageSize - 1))) return -kEINVAL;
  if (pa.value() + size < pa.value() || pa.value() + size > (u64{1} << kOaBits)) return -kERANGE;
  I::MapData m{va.value(), pa.value(), leaf_attrs_for(Format::kHypStage1, prot), 0, kS1PermMask, false,
               (prot & kProtDevice) != 0};
  return I::map_walk(this, va.value(), size, m, flags & (kMapSkipDcache | kMapSkipIcache));
}

int Pgtable::hyp_unmap(Va va, u64 size) {
  if (format_ != Format::kHypStage1) return -kEINVAL;
  if (!va.is_aligned(kPageSize) || (size & (kPageSize - 1))) return -kEINVAL;
  return I::unmap_walk(this, va.value(), size);
}

}  // namespace pkvm
