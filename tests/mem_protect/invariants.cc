// SPDX-License-Identifier: Apache-2.0
// Invariant checker and differential driver: see invariants.h.
#include "tests/mem_protect/invariants.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

namespace pkvm::mptest {
namespace {

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[768];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return buf;
}

const char* state_name(PageState s) {
  switch (s) {
    case PageState::kOwned: return "OWNED";
    case PageState::kSharedOwned: return "SHARED_OWNED";
    case PageState::kSharedBorrowed: return "SHARED_BORROWED";
    case PageState::kNoPage: return "NOPAGE";
  }
  return "?";
}

std::string pte_str(u64 pte, u32 level) { return sim::describe_pte(pte, level) + fmt(" L%u", level); }

bool is_guest_id(u32 g) { return g >= kOwnerGuestFirst && g < kOwnerGuestFirst + kMaxGuests; }

// Merges sorted or unsorted ranges into sorted disjoint ones (adjacent ones join).
std::vector<Range> merge(std::vector<Range> v) {
  std::sort(v.begin(), v.end(), [](const Range& a, const Range& b) { return a.start < b.start; });
  std::vector<Range> out;
  for (const Range& r : v) {
    if (!out.empty() && r.start <= out.back().end)
      out.back().end = std::max(out.back().end, r.end);
    else
      out.push_back(r);
  }
  return out;
}

// The MMIO gaps of the layout in the host's input space.
std::vector<Range> gaps(const Model& m) {
  std::vector<Range> out;
  u64 start = 0;
  for (const MemRegion& r : m.config().regions) {
    if (r.base > start) out.push_back(Range{start, r.base});
    start = r.base + r.size;
  }
  const u64 limit = u64{1} << m.config().host_ia_bits;
  if (limit > start) out.push_back(Range{start, limit});
  return out;
}

// Valid host leaves inside the MMIO gaps, merged.
std::vector<Range> real_mmio(World& w) {
  std::vector<Range> v;
  for (const Range& g : gaps(w.model()))
    read_leaves(w.mp().host_pgt(), g.start, g.end, [&](const Leaf& l) {
      if (desc::is_valid(l.pte)) v.push_back(Range{l.start, l.end});
    });
  return merge(std::move(v));
}

bool covered_by(const Range& r, const std::vector<Range>& set) {
  for (const Range& s : set)
    if (s.contains(r)) return true;
  return false;
}

}  // namespace

// --- Layout and World -----------------------------------------------------------------

ModelConfig Layout::model_config() {
  ModelConfig c;
  c.regions = {MemRegion{kR0Base, kR0Size, 0}, MemRegion{kR1Base, kR1Size, kRegionNoMap},
               MemRegion{kR2Base, kR2Size, 0}};
  c.host_ia_bits = kHostIaBits;
  c.host_start_level = kHostStartLevel;
  c.guest_ia_bits = kGuestIaBits;
  c.guest_start_level = kGuestStartLevel;
  c.hyp_start_level = 0;
  return c;
}

World::World(bool exclusive_aborts, bool bbm)
    : plat_(std::make_unique<sim::SimPlatform>(Layout::kArenaBase, Layout::kArenaPages, Layout::kPoolPages)),
      model_(Layout::model_config()),
      boot_model_(Layout::model_config()) {
  // The full event log would grow without bound; counters (and the
  // observer) are enough here.
  plat_->set_recording(false);
  if (bbm) {
    // Attached before init so it sees the roots allocated. Tables are told
    // apart by table id: host 0, hyp kOwnerHyp, guests their handle.
    bbm_ = std::make_unique<sim::BbmChecker>(Format::kStage2);
    bbm_->set_format(kOwnerHyp, Format::kHypStage1);
    bbm_->attach(*plat_);
  }
  for (const MemRegion& r : model_.config().regions)
    if (memmap_.add(r.base, r.size, r.flags) != 0) abort();
  meta_.assign(Layout::kArenaPages, PageMeta{});
  MemProtectConfig cfg{};
  cfg.platform = plat_.get();
  cfg.memmap = &memmap_;
  cfg.host_ia_bits = Layout::kHostIaBits;
  cfg.host_start_level = Layout::kHostStartLevel;
  cfg.guest_ia_bits = Layout::kGuestIaBits;
  cfg.guest_start_level = Layout::kGuestStartLevel;
  cfg.meta = meta_.data();
  cfg.meta_base_pfn = Layout::kArenaBase >> desc::kPageShift;
  cfg.meta_nr = Layout::kArenaPages;
  cfg.host_lock = &host_lock_;
  cfg.hyp_lock = &hyp_lock_;
  for (u32 i = 0; i < kMaxGuests; ++i) cfg.guest_locks[i] = &guest_locks_[i];
  cfg.exclusive_aborts = exclusive_aborts;
  int ret = mp_.init(cfg);
  if (ret) {
    fprintf(stderr, "mptest: MemProtect::init failed: %d\n", ret);
    abort();
  }
  const u64 pool_pfn = Layout::kArenaBase >> desc::kPageShift;
  for (auto [pfn, nr] : {std::pair{pool_pfn, Layout::kPoolPages}, std::pair{Layout::kHypImagePfn, Layout::kHypImagePages}}) {
    const int a = mp_.hyp_reserve(pfn, nr), b = model_.hyp_reserve(pfn, nr);
    if (a != 0 || b != 0) {
      fprintf(stderr, "mptest: hyp_reserve(0x%" PRIx64 ", %" PRIu64 ") failed: impl %d model %d\n", pfn, nr, a, b);
      abort();
    }
  }
  boot_model_ = model_;
  boot_plat_ = std::make_unique<const sim::SimPlatform::Checkpoint>(plat_->checkpoint());
  if (bbm_) boot_bbm_ = bbm_->checkpoint();
  boot_meta_ = meta_;
  boot_mp_ = mp_;
}

void World::poke(u64 pa, u64 v) {
  *word(pa) = v;
  poked_.push_back(pa >> desc::kPageShift);
}

void World::reset() {
  plat_->rollback(*boot_plat_);
  if (bbm_) bbm_->rollback(*boot_bbm_);
  // Copied in place: MemProtect holds a pointer to meta_'s storage.
  std::copy(boot_meta_.begin(), boot_meta_.end(), meta_.begin());
  mp_ = boot_mp_;
  // A fresh copy, not copy-assignment: hash maps would keep their grown
  // capacity and iterate in another order than after a fresh boot.
  model_ = Model(boot_model_);
  for (u64 pfn : poked_) memset(word(pfn << desc::kPageShift), 0, desc::kPageSize);
  poked_.clear();
}

World::~World() {
  if (bbm_) bbm_->detach();
}

void check_bbm(World& w, Problems* out) {
  sim::BbmChecker* b = w.bbm();
  if (!b) return;
  b->finish();
  for (const std::string& v : b->violations()) out->add("break-before-make: " + v);
  b->clear_violations();
}

// --- Problems ---------------------------------------------------------------------------

void Problems::add(std::string s) {
  ++count;
  if (list.size() < 200) list.push_back(std::move(s));
}

std::string Problems::str(size_t max) const {
  std::string out;
  for (size_t i = 0; i < list.size() && i < max; ++i) out += "  " + list[i] + "\n";
  if (count > max) out += fmt("  ... and %zu more\n", count - max);
  return out;
}

Leaf read_leaf(Pgtable& pgt, u64 addr) {
  Leaf found{0, 0, 0, 0, 0};
  read_leaves(pgt, addr & ~(kPage - 1), (addr & ~(kPage - 1)) + kPage, [&](const Leaf& l) { found = l; });
  return found;
}

u64* leaf_slot(Pgtable& pgt, u64 addr, u32* level, u64** table_page) {
  u64* table = pgt.root();
  u32 l = pgt.start_level();
  u64 idx = addr >> desc::level_shift(l);  // the (possibly concatenated) root
  for (;;) {
    u64* slot = &table[idx];
    if (!desc::is_table(*slot, l)) {
      if (level) *level = l;
      if (table_page)
        *table_page = reinterpret_cast<u64*>(reinterpret_cast<uintptr_t>(slot) & ~uintptr_t(kPage - 1));
      return slot;
    }
    table = static_cast<u64*>(pgt.platform()->phys_to_virt(PhysAddr(desc::oa(*slot))));
    ++l;
    idx = (addr >> desc::level_shift(l)) & (desc::kPtrsPerTable - 1);
  }
}

u32 parse_relax(const char* s) {
  u32 r = 0;
  if (!s) return r;
  if (strstr(s, "enomem")) r |= kRelaxEnomem;
  return r;
}

// --- Page checks --------------------------------------------------------------------------

namespace {

// One host-stage-2 page against the model.
void check_host_page(const Model& m, u64 pfn, const Leaf& l, Problems* out) {
  const PageInfo& p = m.page(pfn);
  const PageState hs = m.host_state(pfn);
  const u64 pa = pfn * kPage;
  auto bad = [&](const char* what) {
    out->add(fmt("host stage 2: %s: found %s; model ", what, pte_str(l.pte, l.level).c_str()) + m.describe_page(pfn));
  };
  if (hs == PageState::kOwned && !p.host_mapped) {
    if (l.pte != 0) bad("host-owned unmapped page must have an empty entry");
    return;
  }
  if (hs == PageState::kNoPage) {
    if (l.pte != desc::make_owner(p.owner)) bad(fmt("page of owner %u must be annotated with it", p.owner).c_str());
    return;
  }
  if (!desc::is_valid(l.pte)) return bad(fmt("expected a valid %s mapping", state_name(hs)).c_str());
  if (desc::oa(l.pte) + (pa - l.base) != pa) return bad("not an identity mapping");
  if (state_of_leaf(l.pte) != hs) return bad(fmt("expected state %s", state_name(hs)).c_str());
  if (prot_of_leaf(Format::kStage2, l.pte) != (kProtRWX | state_prot(hs)) || !(l.pte & desc::kAf))
    bad("memory must be mapped RWX normal");
}

void check_hyp_page(const Model& m, u64 pfn, const Leaf& l, Problems* out) {
  const PageState ys = m.hyp_state(pfn);
  const u64 pa = pfn * kPage;
  auto bad = [&](const char* what) {
    out->add(fmt("hyp stage 1: %s: found %s; model ", what, pte_str(l.pte, l.level).c_str()) + m.describe_page(pfn));
  };
  if (ys == PageState::kNoPage) {
    if (l.pte != 0) bad("the hyp neither owns nor borrows it: must not be mapped");
    return;
  }
  if (!desc::is_valid(l.pte)) return bad(fmt("expected a valid %s mapping", state_name(ys)).c_str());
  if (desc::oa(l.pte) + (pa - l.base) != pa) return bad("not an identity mapping");
  if (state_of_leaf(l.pte) != ys) return bad(fmt("expected state %s", state_name(ys)).c_str());
  if (prot_of_leaf(Format::kHypStage1, l.pte) != (kProtRW | state_prot(ys))) bad("must be mapped RW normal");
}

}  // namespace

namespace {

// Compact description of an entry as seen from one page, so that a block is
// decoded once and compared per page cheaply: 0 empty, 0x100|owner for an
// annotation, 0x200|state for a well-formed valid identity mapping, 0xffff
// for anything else (the slow path then says what is wrong).
constexpr u32 kKeyBad = 0xffff;

u32 leaf_key(const Leaf& l, Format f) {
  if (l.pte == 0) return 0;
  if (!desc::is_valid(l.pte)) return desc::is_locked(l.pte) ? kKeyBad : 0x100 | desc::owner(l.pte);
  const PageState s = state_of_leaf(l.pte);
  const u32 want = f == Format::kStage2 ? kProtRWX : kProtRW;
  if (desc::oa(l.pte) != l.base || prot_of_leaf(f, l.pte) != (want | state_prot(s)) || !(l.pte & desc::kAf))
    return kKeyBad;
  return 0x200 | u32(s);
}

u32 host_key(const PageInfo& p) {
  const PageState hs = Model::host_view(p);
  if (hs == PageState::kOwned && !p.host_mapped) return 0;
  if (hs == PageState::kNoPage) return 0x100 | p.owner;
  return 0x200 | u32(hs);
}

u32 hyp_key(const PageInfo& p) {
  const PageState ys = Model::hyp_view(p);
  return ys == PageState::kNoPage ? 0 : 0x200 | u32(ys);
}

}  // namespace

void check_pages(World& w, u64 lo, u64 hi, Problems* out) {
  const Model& m = w.model();
  lo = std::max(lo, m.span_lo());
  hi = std::min(hi, m.span_hi());
  if (lo >= hi) return;
  read_leaves(w.mp().host_pgt(), lo * kPage, hi * kPage, [&](const Leaf& l) {
    const u32 key = leaf_key(l, Format::kStage2);
    for (u64 pfn = l.start / kPage; pfn < l.end / kPage; ++pfn)
      if (const PageInfo* p = m.find(pfn); p && host_key(*p) != key) check_host_page(m, pfn, l, out);
  });
  read_leaves(w.mp().hyp_pgt(), lo * kPage, hi * kPage, [&](const Leaf& l) {
    const u32 key = leaf_key(l, Format::kHypStage1);
    for (u64 pfn = l.start / kPage; pfn < l.end / kPage; ++pfn)
      if (const PageInfo* p = m.find(pfn); p && hyp_key(*p) != key) check_hyp_page(m, pfn, l, out);
  });
  // Metadata is one array: index it directly once its ends are known good.
  const PageMeta* meta0 = w.mp().meta(lo);
  const bool contiguous = meta0 && w.mp().meta(hi - 1) == meta0 + (hi - 1 - lo);
  for (u64 pfn = lo; pfn < hi; ++pfn) {
    const PageInfo* pp = m.find(pfn);
    if (!pp) continue;
    const PageInfo& p = *pp;
    const PageMeta* meta = contiguous ? meta0 + (pfn - lo) : w.mp().meta(pfn);
    if (!meta) {
      out->add(fmt("no metadata for memory page 0x%" PRIx64, pfn));
      continue;
    }
    if (meta->pin_count != p.pins || bool(meta->flags & kMetaHypInternal) != p.hyp_internal)
      out->add(fmt("metadata: pin count %u, hyp-internal %d; model ", meta->pin_count,
                   bool(meta->flags & kMetaHypInternal)) +
               m.describe_page(pfn));
    // The state mirror the transitions check against (PageMeta).
    const PageState hs = Model::host_view(p);
    if (meta_host_state(*meta) != hs || (hs == PageState::kNoPage && meta->owner != p.owner) ||
        meta_hyp_state(*meta) != Model::hyp_view(p))
      out->add(fmt("metadata: host %s (owner %u), hyp %s; model ", state_name(meta_host_state(*meta)), meta->owner,
                   state_name(meta_hyp_state(*meta))) +
               m.describe_page(pfn));
  }
}

void check_guest_range(World& w, u32 g, u64 gfn, u64 nr, Problems* out) {
  const Model& m = w.model();
  const GuestInfo* gi = m.guest(g);
  if (!gi) return;
  Pgtable* pgt = w.mp().guest_pgt(g);
  if (!gi->alive) {
    if (pgt) out->add(fmt("guest %u: has a stage 2 but the model says it is not alive", g));
    return;
  }
  if (!pgt) return out->add(fmt("guest %u: alive in the model but has no stage 2", g));
  const u64 limit = u64{1} << (m.config().guest_ia_bits - desc::kPageShift);
  if (gfn >= limit) return;
  const u64 end = std::min({gfn + std::min<u64>(nr, 4096), limit});
  read_leaves(*pgt, gfn * kPage, end * kPage, [&](const Leaf& l) {
    for (u64 f = l.start / kPage; f < l.end / kPage; ++f) {
      u64 pfn = 0;
      const PageState s = m.guest_state(g, f, &pfn);
      auto bad = [&](const char* what) {
        out->add(fmt("guest %u stage 2 gfn 0x%" PRIx64 ": %s: found %s", g, f, what, pte_str(l.pte, l.level).c_str()));
      };
      if (s == PageState::kNoPage) {
        if (l.pte != 0) bad("must be empty");
        continue;
      }
      if (!desc::is_valid(l.pte)) {
        bad(fmt("expected pfn 0x%" PRIx64 " %s", pfn, state_name(s)).c_str());
        continue;
      }
      if (desc::oa(l.pte) + (f * kPage - l.base) != pfn * kPage)
        bad(fmt("expected pfn 0x%" PRIx64, pfn).c_str());
      else if (state_of_leaf(l.pte) != s)
        bad(fmt("expected state %s", state_name(s)).c_str());
      else if ((prot_of_leaf(Format::kStage2, l.pte) & (kProtRW | kProtDevice)) != kProtRW)
        bad("must be mapped RW normal");
    }
  });
}

void check_guest(World& w, u32 g, Problems* out) {
  const Model& m = w.model();
  const GuestInfo* gi = m.guest(g);
  if (!gi) return;
  if (w.mp().guest_exists(g) != gi->used)
    out->add(fmt("guest %u: exists=%d, model used=%d", g, w.mp().guest_exists(g), gi->used));
  Pgtable* pgt = w.mp().guest_pgt(g);
  if (bool(pgt) != gi->alive) return out->add(fmt("guest %u: stage 2 present=%d, model alive=%d", g, bool(pgt), gi->alive));
  if (!pgt) return;
  u64 mapped = 0;
  read_leaves(*pgt, 0, u64{1} << pgt->ia_bits(), [&](const Leaf& l) {
    if (l.pte == 0) return;
    if (!desc::is_valid(l.pte)) return out->add(fmt("guest %u: invalid non-empty entry %s at 0x%" PRIx64, g,
                                                    pte_str(l.pte, l.level).c_str(), l.base));
    mapped += (l.end - l.start) / kPage;
    check_guest_range(w, g, l.start / kPage, (l.end - l.start) / kPage, out);
  });
  if (mapped != gi->map.size())
    out->add(fmt("guest %u: %" PRIu64 " pages mapped, model %zu", g, mapped, gi->map.size()));
}

void check_mmio(World& w, Problems* out) {
  const Model& m = w.model();
  for (const Range& g : gaps(m)) {
    read_leaves(w.mp().host_pgt(), g.start, g.end, [&](const Leaf& l) {
      if (l.pte == 0) return;
      const std::string where = fmt("host stage 2 MMIO 0x%" PRIx64 ": %s", l.start, pte_str(l.pte, l.level).c_str());
      if (!desc::is_valid(l.pte)) return out->add(where + ": annotation in an MMIO gap");
      const u64 size = desc::granule_size(l.level);
      if (l.base < g.start || l.base + size > g.end) out->add(where + ": block crosses the gap's bounds");
      if (desc::oa(l.pte) != l.base) out->add(where + ": not an identity mapping");
      if (prot_of_leaf(Format::kStage2, l.pte) != (kProtRW | kProtDevice)) out->add(where + ": MMIO must be RW device");
    });
  }
  const std::vector<Range> real = real_mmio(w), model = merge(m.mmio_mapped());
  if (real.size() != model.size() ||
      !std::equal(real.begin(), real.end(), model.begin(),
                  [](const Range& a, const Range& b) { return a.start == b.start && a.end == b.end; })) {
    std::string s = "host MMIO mappings differ from the model: real {";
    for (const Range& r : real) s += fmt(" [0x%" PRIx64 ",0x%" PRIx64 ")", r.start, r.end);
    s += " } model {";
    for (const Range& r : model) s += fmt(" [0x%" PRIx64 ",0x%" PRIx64 ")", r.start, r.end);
    out->add(s + " }");
  }
}

// --- Structure ---------------------------------------------------------------------------------

namespace {

struct TableWalk {
  World& w;
  Problems* out;
  std::set<u64> seen;
  u64 pages = 0;

  void page_refcount(const char* name, u64 pa, const u64* entries, bool root) {
    u32 counted = 0;
    for (u32 i = 0; i < desc::kPtrsPerTable; ++i) counted += desc::is_counted(entries[i]);
    const int rc = w.plat().page_count(const_cast<u64*>(entries));
    if (rc != int(counted) + 1)
      out->add(fmt("%s: table page 0x%" PRIx64 " has reference count %d, expected 1 + %u entries", name, pa, rc,
                   counted));
    if (!root && counted == 0) out->add(fmt("%s: empty table page 0x%" PRIx64 " left linked", name, pa));
  }

  template <typename F>
  void table(const char* name, Pgtable& pgt, const u64* t, u32 level, u32 entries, u64 base, F& on_leaf) {
    const u64 g = desc::granule_size(level);
    for (u32 i = 0; i < entries; ++i) {
      const u64 pte = t[i];
      const u64 ia = base + i * g;
      if (desc::is_table(pte, level)) {
        const u64 pa = desc::oa(pte);
        if (!w.plat().in_pool(PhysAddr(pa)) || !w.plat().is_allocated(PhysAddr(pa))) {
          out->add(fmt("%s: table entry at 0x%" PRIx64 " L%u points to a page not allocated: 0x%" PRIx64, name, ia,
                       level, pa));
          continue;
        }
        if (!seen.insert(pa).second) {
          out->add(fmt("%s: table page 0x%" PRIx64 " linked twice", name, pa));
          continue;
        }
        ++pages;
        const auto* child = static_cast<const u64*>(w.plat().phys_to_virt(PhysAddr(pa)));
        page_refcount(name, pa, child, false);
        table(name, pgt, child, level + 1, desc::kPtrsPerTable, ia, on_leaf);
        continue;
      }
      if (desc::is_valid(pte) && !desc::level_supports_block(level))
        out->add(fmt("%s: valid leaf at level %u (0x%" PRIx64 ")", name, level, ia));
      if (desc::is_valid(pte)) on_leaf(ia, level, pte);
    }
  }

  template <typename F>
  void tree(const char* name, Pgtable& pgt, F on_leaf) {
    const u64 root_pa = pgt.root_pa().value();
    const u32 n = 1u << pgt.root_order();
    for (u32 i = 0; i < n; ++i) {
      if (!seen.insert(root_pa + i * kPage).second) out->add(fmt("%s: root page linked twice", name));
      ++pages;
      page_refcount(name, root_pa + i * kPage, pgt.root() + i * desc::kPtrsPerTable, true);
    }
    table(name, pgt, pgt.root(), pgt.start_level(), pgt.root_entries(), 0, on_leaf);
  }
};

}  // namespace

void check_structure(World& w, Problems* out) {
  const Model& m = w.model();
  TableWalk tw{w, out, {}, 0};
  tw.tree("host", w.mp().host_pgt(), [&](u64 ia, u32 level, u64) {
    bool mmio = false;
    const Range enc = m.enclosing(ia, &mmio);
    if (!enc.contains(Range{ia, ia + desc::granule_size(level)}))
      out->add(fmt("host: L%u block at 0x%" PRIx64 " crosses a region/gap boundary", level, ia));
  });
  tw.tree("hyp", w.mp().hyp_pgt(), [&](u64 va, u32 level, u64) {
    const MemRegion* r = m.region_of(va / kPage);
    if (!r || va + desc::granule_size(level) > r->base + r->size)
      out->add(fmt("hyp: L%u mapping at 0x%" PRIx64 " outside memory", level, va));
  });
  for (u32 g = kOwnerGuestFirst; g < kOwnerGuestFirst + kMaxGuests; ++g) {
    Pgtable* pgt = w.mp().guest_pgt(g);
    if (!pgt) continue;
    const std::string name = fmt("guest %u", g);
    tw.tree(name.c_str(), *pgt, [&](u64 ipa, u32 level, u64 pte) {
      const u64 pa = desc::oa(pte);
      const MemRegion* r = m.region_of(pa / kPage);
      if (!r || pa + desc::granule_size(level) > r->base + r->size)
        out->add(fmt("%s: L%u mapping at 0x%" PRIx64 " -> 0x%" PRIx64 " outside memory", name.c_str(), level, ipa, pa));
    });
  }
  if (w.plat().pages_in_use() != tw.pages)
    out->add(fmt("pool pages in use %" PRIu64 " != table pages reachable %" PRIu64 " (leak)", w.plat().pages_in_use(),
                 tw.pages));
  const MemProtectStats st = w.mp().stats();
  if (st.internal_errors) out->add(fmt("mem_protect internal errors: %" PRIu64, st.internal_errors));
  if (w.bbm()) {
    check_bbm(w, out);  // includes the allocator's violations
  } else {
    for (const std::string& v : w.plat().violations()) out->add("platform violation: " + v);
  }
}

// --- Dump --------------------------------------------------------------------------------------

u64 check_dump(World& w, u64 pfn, u32 max, Problems* out) {
  const Model& m = w.model();
  const u64 limit_pfn = (u64{1} << m.config().host_ia_bits) >> desc::kPageShift;
  static thread_local std::vector<DumpRecord> buf;
  buf.resize(max ? max : 1);
  u64 next = ~u64{0};
  const int n = w.mp().dump_host(pfn, buf.data(), max, &next);
  const std::string call = fmt("dump_host(pfn=0x%" PRIx64 ", max=%u)", pfn, max);
  if (max == 0 || pfn > limit_pfn) {
    if (n != -kEINVAL) out->add(call + fmt(" returned %d, expected -EINVAL", n));
    return 0;
  }
  if (n < 0 || u32(n) > max) {
    out->add(call + fmt(" returned %d", n));
    return 0;
  }
  if (pfn < limit_pfn && n == 0) {
    out->add(call + " returned no record");
    return 0;
  }
  u64 cur = pfn;
  const std::vector<Range> gap_list = gaps(m), mmio = merge(m.mmio_mapped());
  for (int i = 0; i < n; ++i) {
    const DumpRecord& d = buf[i];
    const std::string rec = call + fmt(" record %d {pfn 0x%" PRIx64 " nr 0x%" PRIx64 " owner %u state %u level %u mapped %u}",
                                       i, d.pfn, d.nr_pages, d.owner, d.state, d.level, d.mapped);
    if (d.pfn != cur || d.nr_pages == 0 || d.pfn + d.nr_pages > limit_pfn) {
      out->add(rec + ": not contiguous");
      return 0;
    }
    // Every leaf under the record has its level.
    read_leaves(w.mp().host_pgt(), d.pfn * kPage, (d.pfn + d.nr_pages) * kPage, [&](const Leaf& l) {
      if (l.level != d.level) out->add(rec + fmt(": leaf at 0x%" PRIx64 " has level %u", l.start, l.level));
    });
    // Memory pages: owner (the lender for a borrowed page), state, mapped.
    const u64 lo = std::max(d.pfn, m.span_lo()), hi = std::min(d.pfn + d.nr_pages, m.span_hi());
    for (u64 p = lo; p < hi; ++p) {
      const PageInfo* pp = m.find(p);
      if (!pp) {
        const bool mapped = m.mmio_mapped_in(p * kPage, p * kPage + kPage);
        if (d.owner != 0 || d.state != 0 || d.mapped != mapped) out->add(rec + fmt(": MMIO page 0x%" PRIx64, p));
        continue;
      }
      const PageInfo& pi = *pp;
      const PageState hs = Model::host_view(pi);
      const bool mapped = hs != PageState::kNoPage && (hs != PageState::kOwned || pi.host_mapped);
      const u32 owner = pi.owner == kHost ? 0 : pi.owner;
      if (d.owner != owner || d.state != u8(hs) || d.mapped != mapped) out->add(rec + ": " + m.describe_page(p));
    }
    // MMIO outside the memory span: uniform per record.
    for (const Range& g : gap_list) {
      const u64 s = std::max(g.start / kPage, d.pfn), e = std::min(g.end / kPage, d.pfn + d.nr_pages);
      if (s >= e || (s >= m.span_lo() && e <= m.span_hi())) continue;
      const bool ok = d.mapped ? covered_by(Range{s * kPage, e * kPage}, mmio)
                               : !m.mmio_mapped_in(s * kPage, e * kPage);
      if (d.owner != 0 || d.state != 0 || !ok) out->add(rec + fmt(": MMIO at pfn 0x%" PRIx64, s));
    }
    cur = d.pfn + d.nr_pages;
  }
  if (next != cur) out->add(call + fmt(": next_pfn 0x%" PRIx64 ", expected 0x%" PRIx64, next, cur));
  return cur;
}

void check_dump_all(World& w, Problems* out) {
  // In pieces, which also exercises continuing at next_pfn.
  const u64 limit_pfn = (u64{1} << w.model().config().host_ia_bits) >> desc::kPageShift;
  u64 pfn = 0;
  while (pfn < limit_pfn && out->ok()) {
    const u64 next = check_dump(w, pfn, 128, out);
    if (next <= pfn) return out->add("dump_host made no progress");
    pfn = next;
  }
}

void check_all(World& w, Problems* out, bool with_dump) {
  const Model& m = w.model();
  if (std::string s = m.self_check(); !s.empty()) out->add("MODEL self-check: " + s);
  check_pages(w, m.span_lo(), m.span_hi(), out);
  for (u32 g = kOwnerGuestFirst; g < kOwnerGuestFirst + kMaxGuests; ++g) check_guest(w, g, out);
  check_mmio(w, out);
  check_structure(w, out);
  if (with_dump) check_dump_all(w, out);
}

// --- Driver ---------------------------------------------------------------------------------------

Driver::Driver(World& w, DriverOptions opt) : w_(w), opt_(opt) {}

void Driver::set_pool_limit(s64 extra) {
  w_.plat().set_pool_limit(extra < 0 ? -1 : s64(w_.plat().pages_in_use()) + extra);
}

void Driver::arm_alloc_failure(s64 n, bool sticky) {
  inject_n_ = n;
  inject_sticky_ = sticky;
}

std::string Driver::full_check() {
  Problems p;
  check_all(w_, &p);
  return p.ok() ? "" : "full check after " + fmt("%" PRIu64, ops_) + " operation(s):\n" + p.str();
}

namespace {

int call(MemProtect& mp, const Op& op, u64* sum) {
  switch (op.kind) {
    case OpKind::kHostShareHyp: return mp.host_share_hyp(op.pfn, op.nr);
    case OpKind::kHostUnshareHyp: return mp.host_unshare_hyp(op.pfn, op.nr);
    case OpKind::kHostDonateHyp: return mp.host_donate_hyp(op.pfn, op.nr);
    case OpKind::kHypDonateHost: return mp.hyp_donate_host(op.pfn, op.nr);
    case OpKind::kHostShareGuest: return mp.host_share_guest(op.guest, op.pfn, op.gfn, op.nr);
    case OpKind::kHostUnshareGuest: return mp.host_unshare_guest(op.guest, op.gfn, op.nr);
    case OpKind::kHostDonateGuest: return mp.host_donate_guest(op.guest, op.pfn, op.gfn, op.nr);
    case OpKind::kGuestShareHost: return mp.guest_share_host(op.guest, op.gfn, op.nr);
    case OpKind::kGuestUnshareHost: return mp.guest_unshare_host(op.guest, op.gfn, op.nr);
    case OpKind::kHostReclaimGuest: return mp.host_reclaim_guest(op.guest, op.pfn, op.nr);
    case OpKind::kHypPin: return mp.hyp_pin_shared(op.pfn, op.nr);
    case OpKind::kHypUnpin: return mp.hyp_unpin_shared(op.pfn, op.nr);
    case OpKind::kGuestCreate: return mp.guest_create();
    case OpKind::kGuestDestroy: return mp.guest_destroy(op.guest);
    case OpKind::kHostAbort: return mp.host_stage2_idmap(op.addr);
    case OpKind::kHypChecksum: return mp.hyp_checksum(op.pfn, op.nr, sum);
    case OpKind::kCount: break;
  }
  return -kEINVAL;
}

bool uses_pfn_range(OpKind k) {
  switch (k) {
    case OpKind::kHostShareHyp:
    case OpKind::kHostUnshareHyp:
    case OpKind::kHostDonateHyp:
    case OpKind::kHypDonateHost:
    case OpKind::kHostShareGuest:
    case OpKind::kHostDonateGuest:
    case OpKind::kHostReclaimGuest:
    case OpKind::kHypPin:
    case OpKind::kHypUnpin:
    case OpKind::kHypChecksum: return true;
    default: return false;
  }
}

bool uses_gfn_range(OpKind k) {
  switch (k) {
    case OpKind::kHostShareGuest:
    case OpKind::kHostDonateGuest:
    case OpKind::kHostUnshareGuest:
    case OpKind::kGuestShareHost:
    case OpKind::kGuestUnshareHost: return true;
    default: return false;
  }
}

// The pages a guest operation reaches through its guest frames (before it runs).
std::vector<u64> pages_behind(const Model& m, const Op& op) {
  std::vector<u64> v;
  const GuestInfo* gi = m.guest(op.guest);
  if (!gi) return v;
  if (op.kind == OpKind::kGuestDestroy) {
    for (const auto& [gfn, pfn] : gi->map) v.push_back(pfn);
  } else if (uses_gfn_range(op.kind)) {
    for (u64 i = 0; i < std::min<u64>(op.nr, kMaxTransitionPages + 1) && op.gfn + i >= op.gfn; ++i) {
      auto it = gi->map.find(op.gfn + i);
      if (it != gi->map.end()) v.push_back(it->second);
    }
  }
  return v;
}

// mem_protect.h: FNV-1a over the 64-bit words of the pages.
u64 expected_checksum(World& w, u64 pfn, u64 nr) {
  const u64* p = w.word(pfn * kPage);
  u64 s = 0xcbf29ce484222325ull;
  for (u64 i = 0; i < nr * kPage / sizeof(u64); ++i) s = (s ^ p[i]) * 0x100000001b3ull;
  return s;
}

}  // namespace

std::string Driver::step(const Op& op, int* got_out) {
  ++ops_;
  Model& m = w_.model();
  sim::SimPlatform& plat = w_.plat();
  MemProtect& mp = w_.mp();
  const Outcome exp = m.predict(op);
  const std::vector<u64> behind = pages_behind(m, op);
  const u64 recycles0 = mp.stats().recycles, failed0 = plat.failed_alloc_count();
  const bool inject = (op.kind == OpKind::kHostAbort || op.kind == OpKind::kGuestCreate) && inject_n_ >= 0;
  const bool sticky = inject && inject_sticky_;
  if (inject) plat.fail_alloc_after(inject_n_, inject_sticky_);
  // Pgtable::destroy frees a dead guest's tables without per-entry breaks
  // (after one VMID-wide invalidation): the checker's teardown mode.
  const bool teardown = op.kind == OpKind::kGuestDestroy && w_.bbm();
  if (teardown) w_.bbm()->set_teardown(true);
  u64 sum = 0;
  const int got = call(mp, op, &sum);
  if (teardown) w_.bbm()->set_teardown(false);
  if (got_out) *got_out = got;
  if (inject) {
    plat.fail_alloc_after(-1);
    inject_n_ = -1;
  }
  const bool alloc_failed = plat.failed_alloc_count() != failed0;
  const u64 free_after = plat.nr_free_pages();
  const MemProtectStats stats_after = mp.stats();
  const bool recycled = stats_after.recycles != recycles0;

  Problems pr;
  bool committed = false;
  if (got == exp.ret) {
    if (got >= 0) {
      m.commit(op);
      committed = true;
    }
  } else if (exp.ret >= 0 && got == -kENOMEM) {
    // Acceptable only when a correct implementation could not have found
    // the pages either (or an unpredictable injected failure hit a path
    // that handles it).
    bool ok = exp.max_tables > 0 && free_after < exp.max_tables;
    if (op.kind == OpKind::kHostAbort && sticky && alloc_failed && exp.max_tables > 0) ok = true;
    if (op.kind == OpKind::kGuestCreate && alloc_failed) ok = true;
    if (opt_.relax & kRelaxEnomem) ok = true;
    if (!ok)
      pr.add(fmt("returned -ENOMEM although the operation needs at most %" PRIu64
                 " new table page(s) and %" PRIu64 " pool page(s) are free (after recycling)",
                 exp.max_tables, free_after));
  } else {
    pr.add(fmt("returned %d, the specification says %d", got, exp.ret));
  }

  if (recycled) sync_recycled(op, exp, committed, &pr);
  if (committed) {
    // Pages this operation gave back to the host, around which blocks may heal.
    std::vector<u64> returned;
    switch (op.kind) {
      case OpKind::kHostUnshareHyp:
      case OpKind::kHypDonateHost:
      case OpKind::kHostReclaimGuest:
        for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) returned.push_back(p);
        break;
      case OpKind::kHostUnshareGuest:
      case OpKind::kGuestDestroy:
        for (u64 p : behind)
          if (m.page(p).owner == kHost) returned.push_back(p);
        break;
      default: break;
    }
    if (!returned.empty()) accept_heals(returned);
  }

  if (committed && op.kind == OpKind::kHostAbort) {
    const Leaf l = read_leaf(mp.host_pgt(), op.addr);
    if (!desc::is_valid(l.pte) || l.level != exp.block_level || l.base != exp.block.start)
      pr.add(fmt("mapped %s at 0x%" PRIx64 "; expected an L%u block [0x%" PRIx64 ", 0x%" PRIx64
                 ") (entry level %u)",
                 pte_str(l.pte, l.level).c_str(), l.base, exp.block_level, exp.block.start, exp.block.end,
                 exp.entry_level));
  }
  if (committed && op.kind == OpKind::kHostDonateGuest) {
    // The guest writes its secrets: reclaim must wipe them.
    for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) {
      w_.poke(p * kPage, 0x5ec2e7000000000ull | p);
      w_.poke(p * kPage + kPage - 8, ~p);
    }
  }
  if (committed && op.kind == OpKind::kHostReclaimGuest) {
    for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
      if (*w_.word(p * kPage) || *w_.word(p * kPage + kPage - 8))
        pr.add(fmt("reclaimed page 0x%" PRIx64 " was not zeroed", p));
  }
  if (committed && op.kind == OpKind::kHypChecksum && sum != expected_checksum(w_, op.pfn, op.nr))
    pr.add("hyp_checksum returned a wrong sum");

  // The state around the operation, whether it succeeded or not.
  if (uses_pfn_range(op.kind) && op.pfn < m.span_hi() && op.nr)
    check_pages(w_, op.pfn, op.pfn + std::min<u64>(op.nr, 2 * kMaxTransitionPages), &pr);
  if (uses_gfn_range(op.kind)) check_guest_range(w_, op.guest, op.gfn, op.nr, &pr);
  for (u64 p : behind) check_pages(w_, p, p + 1, &pr);
  if (op.kind == OpKind::kGuestCreate || op.kind == OpKind::kGuestDestroy || op.kind == OpKind::kHostReclaimGuest) {
    const u32 g = op.kind == OpKind::kGuestCreate ? (got > 0 ? u32(got) : 0) : op.guest;
    if (is_guest_id(g)) check_guest(w_, g, &pr);
  }
  if (op.kind == OpKind::kHostAbort && committed && !exp.mmio)
    check_pages(w_, exp.block.start / kPage, exp.block.end / kPage, &pr);
  if (stats_after.internal_errors) pr.add(fmt("internal_errors = %" PRIu64, stats_after.internal_errors));
  // Every operation returns to the host with its invalidations complete.
  check_bbm(w_, &pr);

  if (pr.ok() && opt_.full_check_every && ops_ % opt_.full_check_every == 0) check_all(w_, &pr, false);
  if (pr.ok()) return "";
  std::string s = fmt("operation #%" PRIu64 ": ", ops_) + to_string(op) + fmt(" -> %d (model %d", got, exp.ret);
  if (op.kind == OpKind::kHostAbort && exp.ret == 0)
    s += fmt(", block L%u [0x%" PRIx64 ", 0x%" PRIx64 ") entry L%u", exp.block_level, exp.block.start, exp.block.end,
             exp.entry_level);
  s += fmt(", max tables %" PRIu64 "; pool free after %" PRIu64 ", in use %" PRIu64 "%s%s)\n", exp.max_tables,
           free_after, plat.pages_in_use(), recycled ? ", recycled" : "", alloc_failed ? ", allocation failed" : "");
  if (uses_pfn_range(op.kind) && m.is_memory(op.pfn)) s += "  model now: " + m.describe_page(op.pfn) + "\n";
  return s + pr.str();
}

void Driver::accept_heals(const std::vector<u64>& returned) {
  Model& m = w_.model();
  std::set<u64> seen;
  for (u32 level = desc::kLastLevel - 1; level >= 1; --level) {
    const u64 g = desc::granule_size(level);
    for (u64 p : returned) {
      const u64 base = (p * kPage) & ~(g - 1);
      if (!seen.insert(base | level).second) continue;
      const MemRegion* r = m.region_of(base / kPage);
      if (!r || base + g > r->base + r->size) continue;
      // Only a block whose pages are all the host's alone may form.
      bool uniform = true, all_mapped = true;
      for (u64 q = base / kPage; q < (base + g) / kPage && uniform; ++q) {
        const PageInfo& pi = m.page(q);
        uniform = pi.owner == kHost && pi.borrower == kNobody;
        all_mapped = all_mapped && pi.host_mapped;
      }
      if (!uniform || all_mapped) continue;
      const Leaf l = read_leaf(w_.mp().host_pgt(), base);
      if (!desc::is_valid(l.pte) || l.level > level || state_of_leaf(l.pte) != PageState::kOwned) continue;
      // check_pages verifies the block's attributes like any other mapping.
      for (u64 q = base / kPage; q < (base + g) / kPage; ++q)
        if (!m.page(q).host_mapped) m.add_host_mapping(q);
    }
    if (level == 1) break;
  }
}

void Driver::sync_recycled(const Op& op, const Outcome& exp, bool committed, Problems* out) {
  Model& m = w_.model();
  u64 dropped = 0;
  std::vector<u64> drop;
  read_leaves(w_.mp().host_pgt(), m.span_lo() * kPage, m.span_hi() * kPage, [&](const Leaf& l) {
    // Only an empty entry can be a dropped mapping; skip what the model
    // already knows to be empty.
    if (l.pte != 0 || m.all_empty(l.start, l.end)) return;
    for (u64 pfn = l.start / kPage; pfn < l.end / kPage; ++pfn) {
      const PageInfo* pp = m.find(pfn);
      if (!pp) continue;
      const PageInfo& p = *pp;
      if (p.owner == kHost && p.borrower == kNobody && p.host_mapped && l.pte == 0) drop.push_back(pfn);
    }
  });
  for (u64 pfn : drop) m.drop_host_mapping(pfn);
  dropped = drop.size();
  // MMIO: only drops, and all of it before any memory mapping.
  std::vector<Range> real = real_mmio(w_);
  const std::vector<Range> model = merge(m.mmio_mapped());
  for (const Range& r : real)
    if (!covered_by(r, model))
      out->add(fmt("recycling left an MMIO mapping [0x%" PRIx64 ", 0x%" PRIx64 ") the model never had", r.start, r.end));
  if (dropped) {
    const bool new_mmio = committed && op.kind == OpKind::kHostAbort && exp.mmio;
    for (const Range& r : real)
      if (!(new_mmio && exp.block.contains(r)))
        out->add(fmt("recycling dropped %" PRIu64 " memory mapping(s) but kept MMIO [0x%" PRIx64 ", 0x%" PRIx64
                     ") (MMIO must go first)",
                     dropped, r.start, r.end));
  }
  m.set_mmio_mapped(real);
}

}  // namespace pkvm::mptest
