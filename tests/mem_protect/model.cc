// SPDX-License-Identifier: Apache-2.0
// The executable specification: see model.h.
#include "tests/mem_protect/model.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace pkvm::mptest {
namespace {

constexpr u64 kChunk = u64{2} << 20;  // emptiness is counted per 2 MiB
constexpr u64 kChunkPages = kChunk / kPage;

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return buf;
}

[[noreturn]] void model_bug(const std::string& what) {
  fprintf(stderr, "mptest model: internal error: %s\n", what.c_str());
  abort();
}

Range granule_of(u64 addr, u32 level) {
  const u64 g = desc::granule_size(level);
  const u64 base = addr & ~(g - 1);
  return Range{base, base + g};
}

bool is_guest_id(u32 g) { return g >= kOwnerGuestFirst && g < kOwnerGuestFirst + kMaxGuests; }

}  // namespace

const char* to_string(OpKind k) {
  switch (k) {
    case OpKind::kHostShareHyp: return "host_share_hyp";
    case OpKind::kHostUnshareHyp: return "host_unshare_hyp";
    case OpKind::kHostDonateHyp: return "host_donate_hyp";
    case OpKind::kHypDonateHost: return "hyp_donate_host";
    case OpKind::kHostShareGuest: return "host_share_guest";
    case OpKind::kHostUnshareGuest: return "host_unshare_guest";
    case OpKind::kHostDonateGuest: return "host_donate_guest";
    case OpKind::kGuestShareHost: return "guest_share_host";
    case OpKind::kGuestUnshareHost: return "guest_unshare_host";
    case OpKind::kHostReclaimGuest: return "host_reclaim_guest";
    case OpKind::kHypPin: return "hyp_pin_shared";
    case OpKind::kHypUnpin: return "hyp_unpin_shared";
    case OpKind::kGuestCreate: return "guest_create";
    case OpKind::kGuestDestroy: return "guest_destroy";
    case OpKind::kHostAbort: return "host_stage2_idmap";
    case OpKind::kHypChecksum: return "hyp_checksum";
    case OpKind::kCount: break;
  }
  return "?";
}

std::string to_string(const Op& op) {
  const char* n = to_string(op.kind);
  switch (op.kind) {
    case OpKind::kHostShareHyp:
    case OpKind::kHostUnshareHyp:
    case OpKind::kHostDonateHyp:
    case OpKind::kHypDonateHost:
    case OpKind::kHypPin:
    case OpKind::kHypUnpin:
    case OpKind::kHypChecksum:
      return fmt("%s(pfn=0x%" PRIx64 ", nr=0x%" PRIx64 ")", n, op.pfn, op.nr);
    case OpKind::kHostShareGuest:
    case OpKind::kHostDonateGuest:
      return fmt("%s(g=%u, pfn=0x%" PRIx64 ", gfn=0x%" PRIx64 ", nr=0x%" PRIx64 ")", n, op.guest, op.pfn, op.gfn,
                 op.nr);
    case OpKind::kHostUnshareGuest:
    case OpKind::kGuestShareHost:
    case OpKind::kGuestUnshareHost:
      return fmt("%s(g=%u, gfn=0x%" PRIx64 ", nr=0x%" PRIx64 ")", n, op.guest, op.gfn, op.nr);
    case OpKind::kHostReclaimGuest:
      return fmt("%s(g=%u, pfn=0x%" PRIx64 ", nr=0x%" PRIx64 ")", n, op.guest, op.pfn, op.nr);
    case OpKind::kGuestCreate: return fmt("%s()", n);
    case OpKind::kGuestDestroy: return fmt("%s(g=%u)", n, op.guest);
    case OpKind::kHostAbort: return fmt("%s(addr=0x%" PRIx64 ")", n, op.addr);
    case OpKind::kCount: break;
  }
  return "?";
}

Model::Model(const ModelConfig& cfg) : cfg_(cfg) {
  std::sort(cfg_.regions.begin(), cfg_.regions.end(),
            [](const MemRegion& a, const MemRegion& b) { return a.base < b.base; });
  if (cfg_.regions.empty()) model_bug("no memory regions");
  if (cfg_.guest_ia_bits > 32 + desc::kPageShift) model_bug("guest frames must fit PageInfo::gfn");
  span_lo_ = cfg_.regions.front().base / kPage;
  span_hi_ = (cfg_.regions.back().base + cfg_.regions.back().size) / kPage;
  pages_.assign(span_hi_ - span_lo_, PageInfo{});
  region_idx_.assign(span_hi_ - span_lo_, 0xff);
  for (size_t i = 0; i < cfg_.regions.size(); ++i)
    for (u64 p = cfg_.regions[i].base / kPage; p < (cfg_.regions[i].base + cfg_.regions[i].size) / kPage; ++p)
      region_idx_[p - span_lo_] = u8(i);
  const u64 chunk0 = (span_lo_ * kPage) & ~(kChunk - 1);
  nonempty_.assign((span_hi_ * kPage - chunk0 + kChunk - 1) / kChunk, 0);
}

// --- Queries -------------------------------------------------------------------

void Model::not_memory(u64 pfn) const { model_bug(fmt("page(0x%" PRIx64 ") outside memory", pfn)); }

PageState Model::guest_state(u32 g, u64 gfn, u64* pfn) const {
  const GuestInfo* gi = guest(g);
  if (!gi || !gi->alive) return PageState::kNoPage;
  auto it = gi->map.find(gfn);
  if (it == gi->map.end()) return PageState::kNoPage;
  if (pfn) *pfn = it->second;
  const PageInfo& p = page(it->second);
  if (p.owner == g) return p.borrower == kNobody ? PageState::kOwned : PageState::kSharedOwned;
  return PageState::kSharedBorrowed;
}

const GuestInfo* Model::guest(u32 g) const { return is_guest_id(g) ? &guests_[g - kOwnerGuestFirst] : nullptr; }

bool Model::guest_alive(u32 g) const {
  const GuestInfo* gi = guest(g);
  return gi && gi->alive;
}

std::vector<Range> Model::mmio_mapped() const {
  std::vector<Range> out;
  for (const auto& [s, e] : mmio_) out.push_back(Range{s, e});
  return out;
}

bool Model::mmio_mapped_in(u64 start, u64 end) const {
  auto it = mmio_.upper_bound(start);  // first range starting after start
  if (it != mmio_.begin()) {
    auto prev = std::prev(it);
    if (prev->second > start) return true;
  }
  return it != mmio_.end() && it->first < end;
}

Range Model::enclosing(u64 addr, bool* is_mmio) const {
  u64 gap_start = 0;
  for (const MemRegion& r : cfg_.regions) {
    if (addr < r.base) {
      *is_mmio = true;
      return Range{gap_start, r.base};
    }
    if (addr < r.base + r.size) {
      *is_mmio = false;
      return Range{r.base, r.base + r.size};
    }
    gap_start = r.base + r.size;
  }
  *is_mmio = true;
  return Range{gap_start, u64{1} << cfg_.host_ia_bits};
}

std::string Model::describe_page(u64 pfn) const {
  if (!is_memory(pfn)) return fmt("pfn 0x%" PRIx64 ": not memory", pfn);
  const PageInfo& p = page(pfn);
  return fmt("pfn 0x%" PRIx64 ": owner=%u borrower=%s host=%u hyp=%u mapped=%d pins=%u gfn=0x%x%s",
             pfn, p.owner, p.borrower == kNobody ? "-" : fmt("%u", p.borrower).c_str(), unsigned(host_state(pfn)),
             unsigned(hyp_state(pfn)), p.host_mapped, p.pins, p.gfn, p.hyp_internal ? " hyp-internal" : "");
}

// --- Bookkeeping ----------------------------------------------------------------

void Model::set_mapped(u64 pfn, bool mapped) {
  PageInfo& p = mut(pfn);
  const bool was = page_empty(p);
  p.host_mapped = mapped;
  const bool now = page_empty(p);
  if (was != now) {
    const u64 chunk0 = (span_lo_ * kPage) & ~(kChunk - 1);
    u32& c = nonempty_[(pfn * kPage - chunk0) / kChunk];
    c = now ? c - 1 : c + 1;
  }
}

void Model::set_owner_borrower(u64 pfn, u8 owner, u8 borrower) {
  PageInfo& p = mut(pfn);
  const bool was = page_empty(p);
  p.owner = owner;
  p.borrower = borrower;
  const bool now = page_empty(p);
  if (was != now) {
    const u64 chunk0 = (span_lo_ * kPage) & ~(kChunk - 1);
    u32& c = nonempty_[(pfn * kPage - chunk0) / kChunk];
    c = now ? c - 1 : c + 1;
  }
}

bool Model::all_empty(u64 start, u64 end) const {
  if (mmio_mapped_in(start, end)) return false;
  const u64 lo = std::max(start / kPage, span_lo_), hi = std::min(end / kPage, span_hi_);
  const u64 chunk0 = (span_lo_ * kPage) & ~(kChunk - 1);
  for (u64 pfn = lo; pfn < hi;) {
    const u64 off = pfn * kPage - chunk0;
    if (off % kChunk == 0 && pfn + kChunkPages <= hi) {
      if (nonempty_[off / kChunk]) return false;
      pfn += kChunkPages;
      continue;
    }
    if (!page_empty(pages_[pfn - span_lo_])) return false;  // gap pages stay default (empty)
    ++pfn;
  }
  return true;
}

void Model::drop_host_mapping(u64 pfn) {
  const PageInfo& p = page(pfn);
  if (p.owner != kHost || p.borrower != kNobody) model_bug(fmt("drop_host_mapping of a shared page 0x%" PRIx64, pfn));
  set_mapped(pfn, false);
}

void Model::add_host_mapping(u64 pfn) {
  const PageInfo& p = page(pfn);
  if (p.owner != kHost || p.borrower != kNobody) model_bug(fmt("add_host_mapping of a shared page 0x%" PRIx64, pfn));
  set_mapped(pfn, true);
}

void Model::set_mmio_mapped(const std::vector<Range>& ranges) {
  mmio_.clear();
  for (const Range& r : ranges) mmio_[r.start] = r.end;
}

// --- Validation ---------------------------------------------------------------------

int Model::check_nr(u64 nr) const {
  if (nr == 0) return -kEINVAL;
  if (nr > kMaxTransitionPages) return -kE2BIG;
  return 0;
}

int Model::check_host_range(u64 pfn, u64 nr) const {
  if (int r = check_nr(nr)) return r;
  if (pfn + nr < pfn) return -kEINVAL;
  const MemRegion* r = region_of(pfn);
  if (!r || pfn + nr > (r->base + r->size) / kPage) return -kEINVAL;  // not all in one region
  if (r->flags & kRegionNoMap) return -kEINVAL;
  return 0;
}

int Model::check_gfn_range(u64 gfn, u64 nr) const {
  const u64 limit = u64{1} << (cfg_.guest_ia_bits - desc::kPageShift);
  if (gfn + nr < gfn || gfn + nr > limit) return -kEINVAL;
  return 0;
}

u64 Model::runs(u32 g, u64 gfn, u64 nr) const {
  u64 n = 0, prev_pfn = 0;
  PageState prev_state = PageState::kNoPage;
  for (u64 i = 0; i < nr; ++i) {
    u64 pfn = 0;
    const PageState s = guest_state(g, gfn + i, &pfn);
    if (i == 0 || pfn != prev_pfn + 1 || s != prev_state) ++n;
    prev_pfn = pfn;
    prev_state = s;
  }
  return n;
}

u64 Model::all_runs(u32 g) const {
  const GuestInfo* gi = guest(g);
  std::vector<std::pair<u64, u64>> m(gi->map.begin(), gi->map.end());
  std::sort(m.begin(), m.end());
  u64 n = 0;
  PageState prev_state = PageState::kNoPage;
  for (size_t i = 0; i < m.size(); ++i) {
    const PageState s = guest_state(g, m[i].first);
    if (i == 0 || m[i].first != m[i - 1].first + 1 || m[i].second != m[i - 1].second + 1 || s != prev_state) ++n;
    prev_state = s;
  }
  return n;
}

// --- Boot ---------------------------------------------------------------------------

int Model::hyp_reserve(u64 pfn, u64 nr) {
  if (nr == 0 || pfn + nr < pfn) return -kEINVAL;
  const MemRegion* r = region_of(pfn);
  if (!r || pfn + nr > (r->base + r->size) / kPage) return -kEINVAL;
  for (u64 p = pfn; p < pfn + nr; ++p)
    if (host_state(p) != PageState::kOwned) return -kEPERM;
  for (u64 p = pfn; p < pfn + nr; ++p) {
    set_owner_borrower(p, kHyp, kNobody);
    set_mapped(p, false);
    mut(p).hyp_internal = true;
  }
  return 0;
}

// --- Prediction ---------------------------------------------------------------------

Outcome Model::predict_abort(u64 addr) const {
  Outcome o;
  if (addr >= (u64{1} << cfg_.host_ia_bits)) {
    o.ret = -kEINVAL;
    return o;
  }
  const u64 pfn = addr / kPage;
  bool mmio = false;
  const Range enc = enclosing(addr, &mmio);
  o.mmio = mmio;
  if (mmio) {
    if (mmio_mapped_in(pfn * kPage, pfn * kPage + kPage)) {
      o.ret = -kEAGAIN;
      return o;
    }
  } else {
    const PageInfo& p = page(pfn);
    if (p.host_mapped) {
      o.ret = -kEAGAIN;
      return o;
    }
    if (p.owner != kHost) {
      o.ret = -kEPERM;
      return o;
    }
  }
  // The walk stops at the first entry whose whole granule is empty (a table
  // exists exactly where something below it is not empty).
  u32 entry = desc::kLastLevel;
  for (u32 l = cfg_.host_start_level; l <= desc::kLastLevel; ++l) {
    const Range g = granule_of(addr, l);
    if (all_empty(g.start, g.end)) {
      entry = l;
      break;
    }
  }
  // The largest block from that level down lying wholly in the region/gap.
  u32 lvl = entry;
  for (; lvl < desc::kLastLevel; ++lvl)
    if (desc::level_supports_block(lvl) && enc.contains(granule_of(addr, lvl))) break;
  o.ret = 0;
  o.entry_level = entry;
  o.block_level = lvl;
  o.block = granule_of(addr, lvl);
  // A block at the entry's own level needs no table; otherwise at most the
  // tables between the root and the block (recycling may free the ones the
  // walk found).
  o.max_tables = lvl == entry ? 0 : lvl - cfg_.host_start_level;
  return o;
}

Outcome Model::predict(const Op& op) const {
  Outcome o;
  const u64 hs = run_tables(cfg_.host_start_level), ys = run_tables(cfg_.hyp_start_level),
            gs = run_tables(cfg_.guest_start_level);
  const u32 g = op.guest;
  auto fail = [&](int e) {
    o.ret = e;
    o.max_tables = 0;
    return o;
  };
  switch (op.kind) {
    case OpKind::kHostShareHyp:
    case OpKind::kHostDonateHyp: {
      if (int r = check_host_range(op.pfn, op.nr)) return fail(r);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
        if (host_state(p) != PageState::kOwned || hyp_state(p) != PageState::kNoPage) return fail(-kEPERM);
      o.max_tables = hs + ys;
      return o;
    }
    case OpKind::kHostUnshareHyp: {
      if (int r = check_host_range(op.pfn, op.nr)) return fail(r);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
        if (host_state(p) != PageState::kSharedOwned || hyp_state(p) != PageState::kSharedBorrowed)
          return fail(-kEPERM);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
        if (page(p).pins) return fail(-kEBUSY);
      o.max_tables = hs + ys;
      return o;
    }
    case OpKind::kHypDonateHost: {
      if (int r = check_host_range(op.pfn, op.nr)) return fail(r);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
        if (hyp_state(p) != PageState::kOwned || host_state(p) != PageState::kNoPage) return fail(-kEPERM);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
        if (page(p).hyp_internal) return fail(-kEPERM);  // the hypervisor's own memory
      o.max_tables = hs + ys;
      return o;
    }
    case OpKind::kHostShareGuest:
    case OpKind::kHostDonateGuest: {
      if (int r = check_nr(op.nr)) return fail(r);
      if (!guest_alive(g)) return fail(-kENOENT);
      if (int r = check_host_range(op.pfn, op.nr)) return fail(r);
      if (int r = check_gfn_range(op.gfn, op.nr)) return fail(r);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
        if (host_state(p) != PageState::kOwned) return fail(-kEPERM);
      for (u64 i = 0; i < op.nr; ++i)
        if (guest_state(g, op.gfn + i) != PageState::kNoPage) return fail(-kEPERM);
      o.max_tables = hs + gs;
      return o;
    }
    case OpKind::kHostUnshareGuest:
    case OpKind::kGuestShareHost:
    case OpKind::kGuestUnshareHost: {
      if (int r = check_nr(op.nr)) return fail(r);
      if (!guest_alive(g)) return fail(-kENOENT);
      if (int r = check_gfn_range(op.gfn, op.nr)) return fail(r);
      const PageState want = op.kind == OpKind::kHostUnshareGuest ? PageState::kSharedBorrowed
                             : op.kind == OpKind::kGuestShareHost ? PageState::kOwned
                                                                  : PageState::kSharedOwned;
      for (u64 i = 0; i < op.nr; ++i)
        if (guest_state(g, op.gfn + i) != want) return fail(-kEPERM);
      o.max_tables = gs + hs * runs(g, op.gfn, op.nr);
      return o;
    }
    case OpKind::kHostReclaimGuest: {
      if (int r = check_nr(op.nr)) return fail(r);
      const GuestInfo* gi = guest(g);
      if (!gi || !gi->used) return fail(-kENOENT);
      if (int r = check_host_range(op.pfn, op.nr)) return fail(r);
      if (gi->alive) return fail(-kEBUSY);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
        if (page(p).owner != g || page(p).borrower != kNobody) return fail(-kEPERM);
      o.max_tables = hs + ys;  // annotate in the host, transient hyp mapping to zero
      return o;
    }
    case OpKind::kHypPin:
    case OpKind::kHypUnpin: {
      if (int r = check_host_range(op.pfn, op.nr)) return fail(r);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
        if (hyp_state(p) != PageState::kSharedBorrowed) return fail(-kEPERM);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) {
        if (op.kind == OpKind::kHypPin && page(p).pins == 0xffff) return fail(-kEBUSY);
        if (op.kind == OpKind::kHypUnpin && page(p).pins == 0) return fail(-kEPERM);
      }
      return o;
    }
    case OpKind::kGuestCreate: {
      for (u32 i = 0; i < kMaxGuests; ++i) {
        if (guests_[i].used) continue;
        o.ret = int(kOwnerGuestFirst + i);
        const u32 entry_bits = cfg_.guest_ia_bits - desc::level_shift(cfg_.guest_start_level);
        o.max_tables = u64{1} << (entry_bits > desc::kBitsPerLevel ? entry_bits - desc::kBitsPerLevel : 0);
        return o;
      }
      return fail(-kEBUSY);
    }
    case OpKind::kGuestDestroy: {
      if (!guest_alive(g)) return fail(-kENOENT);
      o.max_tables = hs * all_runs(g);
      return o;
    }
    case OpKind::kHostAbort: return predict_abort(op.addr);
    case OpKind::kHypChecksum: {
      if (int r = check_host_range(op.pfn, op.nr)) return fail(r);
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p)
        if (hyp_state(p) == PageState::kNoPage) return fail(-kEPERM);
      return o;
    }
    case OpKind::kCount: break;
  }
  return fail(-kEINVAL);
}

// --- Commit -----------------------------------------------------------------------------

void Model::commit(const Op& op) {
  const Outcome o = predict(op);
  if (o.ret < 0) model_bug("commit of a failing op: " + to_string(op));
  const u32 g = op.guest;
  GuestInfo* gi = is_guest_id(g) ? &guests_[g - kOwnerGuestFirst] : nullptr;
  switch (op.kind) {
    case OpKind::kHostShareHyp:
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) {
        set_owner_borrower(p, kHost, kHyp);
        set_mapped(p, true);
      }
      return;
    case OpKind::kHostUnshareHyp:
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) set_owner_borrower(p, kHost, kNobody);  // stays mapped
      return;
    case OpKind::kHostDonateHyp:
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) {
        set_owner_borrower(p, kHyp, kNobody);
        set_mapped(p, false);
      }
      return;
    case OpKind::kHypDonateHost:
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) set_owner_borrower(p, kHost, kNobody);  // unmapped
      return;
    case OpKind::kHostShareGuest:
    case OpKind::kHostDonateGuest: {
      const bool donate = op.kind == OpKind::kHostDonateGuest;
      for (u64 i = 0; i < op.nr; ++i) {
        const u64 p = op.pfn + i;
        if (donate) {
          set_owner_borrower(p, u8(g), kNobody);
          set_mapped(p, false);
        } else {
          set_owner_borrower(p, kHost, u8(g));
          set_mapped(p, true);
        }
        mut(p).gfn = u32(op.gfn + i);
        gi->map[op.gfn + i] = p;
      }
      if (donate) gi->owned += op.nr;
      return;
    }
    case OpKind::kHostUnshareGuest:
      for (u64 i = 0; i < op.nr; ++i) {
        auto it = gi->map.find(op.gfn + i);
        set_owner_borrower(it->second, kHost, kNobody);  // stays mapped in the host
        gi->map.erase(it);
      }
      return;
    case OpKind::kGuestShareHost:
      for (u64 i = 0; i < op.nr; ++i) {
        const u64 p = gi->map.at(op.gfn + i);
        set_owner_borrower(p, u8(g), kHost);
        set_mapped(p, true);
      }
      return;
    case OpKind::kGuestUnshareHost:
      for (u64 i = 0; i < op.nr; ++i) {
        const u64 p = gi->map.at(op.gfn + i);
        set_owner_borrower(p, u8(g), kNobody);
        set_mapped(p, false);
      }
      return;
    case OpKind::kHostReclaimGuest:
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) set_owner_borrower(p, kHost, kNobody);  // zeroed, unmapped
      gi->owned -= op.nr;
      if (gi->owned == 0 && !gi->alive) gi->used = false;
      return;
    case OpKind::kHypPin:
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) ++mut(p).pins;
      return;
    case OpKind::kHypUnpin:
      for (u64 p = op.pfn; p < op.pfn + op.nr; ++p) --mut(p).pins;
      return;
    case OpKind::kGuestCreate: {
      GuestInfo& n = guests_[u32(o.ret) - kOwnerGuestFirst];
      n.used = n.alive = true;
      n.owned = 0;
      n.map.clear();
      return;
    }
    case OpKind::kGuestDestroy:
      for (const auto& [gfn, p] : gi->map) {
        const PageInfo& pi = page(p);
        if (pi.borrower == g) {
          set_owner_borrower(p, kHost, kNobody);  // lent by the host: back to it, still mapped
        } else if (pi.borrower == kHost) {
          set_owner_borrower(p, u8(g), kNobody);  // lent to the host: the host loses it
          set_mapped(p, false);
        }
      }
      gi->map.clear();
      gi->alive = false;
      if (gi->owned == 0) gi->used = false;
      return;
    case OpKind::kHostAbort:
      if (o.mmio) {
        mmio_[o.block.start] = o.block.end;
      } else {
        for (u64 p = o.block.start / kPage; p < o.block.end / kPage; ++p) set_mapped(p, true);
      }
      return;
    case OpKind::kHypChecksum:
    case OpKind::kCount:
      return;
  }
}

int Model::apply(const Op& op) {
  const Outcome o = predict(op);
  if (o.ret >= 0) commit(op);
  return o.ret;
}

// --- Self check ---------------------------------------------------------------------------

std::string Model::self_check() const {
  u64 owned[kMaxGuests] = {};
  std::vector<u32> nonempty(nonempty_.size(), 0);
  const u64 chunk0 = (span_lo_ * kPage) & ~(kChunk - 1);
  for (u64 pfn = span_lo_; pfn < span_hi_; ++pfn) {
    const PageInfo& p = pages_[pfn - span_lo_];
    if (!is_memory(pfn)) continue;
    if (!page_empty(p)) ++nonempty[(pfn * kPage - chunk0) / kChunk];
    if (p.owner != kHost && p.owner != kHyp && !is_guest_id(p.owner)) return describe_page(pfn) + ": bad owner";
    if (p.owner == p.borrower) return describe_page(pfn) + ": borrows from itself";
    if (is_guest_id(p.owner)) ++owned[p.owner - kOwnerGuestFirst];
    const bool host_access = p.owner == kHost ? p.borrower != kNobody : p.borrower == kHost;
    if (host_access && !p.host_mapped) return describe_page(pfn) + ": shared with the host but unmapped";
    if (p.owner != kHost && p.borrower != kHost && p.host_mapped) return describe_page(pfn) + ": not host's but mapped";
    if (p.pins && p.borrower != kHyp) return describe_page(pfn) + ": pinned but not borrowed by the hyp";
    // A guest's page is in its map while the guest is alive.
    const u32 in_guest = is_guest_id(p.owner) ? p.owner : is_guest_id(p.borrower) ? p.borrower : 0;
    if (in_guest) {
      const GuestInfo& gi = guests_[in_guest - kOwnerGuestFirst];
      if (!gi.used) return describe_page(pfn) + ": guest slot not in use";
      if (gi.alive) {
        auto it = gi.map.find(p.gfn);
        if (it == gi.map.end() || it->second != pfn) return describe_page(pfn) + ": missing from the guest map";
      }
    }
  }
  if (nonempty != nonempty_) return "emptiness counters out of date";
  for (u32 i = 0; i < kMaxGuests; ++i) {
    const GuestInfo& gi = guests_[i];
    if (gi.owned != owned[i]) return fmt("guest %u owns %" PRIu64 " pages, counted %" PRIu64, i + 2, owned[i], gi.owned);
    if (gi.alive && !gi.used) return fmt("guest %u alive but unused", i + 2);
    if (!gi.alive && !gi.map.empty()) return fmt("dead guest %u still maps pages", i + 2);
    if (gi.used && !gi.alive && gi.owned == 0) return fmt("dead guest %u without pages keeps its id", i + 2);
    for (const auto& [gfn, pfn] : gi.map) {
      const PageInfo& p = page(pfn);
      if (p.gfn != gfn || (p.owner != i + 2 && p.borrower != i + 2))
        return fmt("guest %u gfn 0x%" PRIx64 " -> ", i + 2, gfn) + describe_page(pfn);
    }
  }
  return "";
}

}  // namespace pkvm::mptest
