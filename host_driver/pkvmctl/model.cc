// SPDX-License-Identifier: Apache-2.0
// pkvmctl: the model of the hypervisor's answers (docs/abi.md: the errno of
// every call, in the order the hypervisor checks its arguments: range size,
// guest, pfn range, gfn range, page states) for one test buffer.
#include "model.h"

#include <cerrno>

namespace pkvmctl {

namespace {

constexpr s64 kEPERM = -PKVM_EPERM, kENOENT = -PKVM_ENOENT, kE2BIG = -PKVM_E2BIG, kENOMEM = -PKVM_ENOMEM,
              kEBUSY = -PKVM_EBUSY, kEINVAL = -PKVM_EINVAL;

const char* kind_name(OpKind k) {
  switch (k) {
    case OpKind::kShareHyp:
      return "host_share_hyp";
    case OpKind::kUnshareHyp:
      return "host_unshare_hyp";
    case OpKind::kDonateHyp:
      return "host_donate_hyp";
    case OpKind::kReclaimHyp:
      return "hyp_donate_host";
    case OpKind::kPin:
      return "hyp_pin_shared";
    case OpKind::kUnpin:
      return "hyp_unpin_shared";
    case OpKind::kShareGuest:
      return "host_share_guest";
    case OpKind::kUnshareGuest:
      return "host_unshare_guest";
    case OpKind::kDonateGuest:
      return "host_donate_guest";
    case OpKind::kGuestShareHost:
      return "guest_share_host";
    case OpKind::kGuestUnshareHost:
      return "guest_unshare_host";
    case OpKind::kReclaimGuest:
      return "host_reclaim_guest";
    case OpKind::kGuestCreate:
      return "guest_create";
    case OpKind::kGuestDestroy:
      return "guest_destroy";
    case OpKind::kChecksum:
      return "checksum";
    case OpKind::kGetStats:
      return "get_stats";
    case OpKind::kTouchRead:
      return "touch-read";
    case OpKind::kTouchWrite:
      return "touch-write";
    case OpKind::kCount:
      break;
  }
  return "?";
}

const char* where_name(PfnKind w) {
  switch (w) {
    case PfnKind::kBuffer:
      return "buffer";
    case PfnKind::kMmio:
      return "mmio";
    case PfnKind::kBeyondRam:
      return "beyond-ram";
    case PfnKind::kBeyondIpa:
      return "beyond-ipa";
    case PfnKind::kHuge:
      return "huge";
    case PfnKind::kHyp:
      return "hyp-own";
    case PfnKind::kKernel:
      return "kernel";
  }
  return "?";
}

bool has_pfn(OpKind k) {
  switch (k) {
    case OpKind::kUnshareGuest:
    case OpKind::kGuestShareHost:
    case OpKind::kGuestUnshareHost:
    case OpKind::kGuestCreate:
    case OpKind::kGuestDestroy:
      return false;
    default:
      return true;
  }
}

bool has_guest(OpKind k) {
  switch (k) {
    case OpKind::kShareGuest:
    case OpKind::kUnshareGuest:
    case OpKind::kDonateGuest:
    case OpKind::kGuestShareHost:
    case OpKind::kGuestUnshareHost:
    case OpKind::kReclaimGuest:
    case OpKind::kGuestDestroy:
      return true;
    default:
      return false;
  }
}

bool has_gfn(OpKind k) {
  switch (k) {
    case OpKind::kShareGuest:
    case OpKind::kUnshareGuest:
    case OpKind::kDonateGuest:
    case OpKind::kGuestShareHost:
    case OpKind::kGuestUnshareHost:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string Op::str() const {
  std::string s = kind_name(kind);
  if (kind == OpKind::kTouchRead || kind == OpKind::kTouchWrite) {
    s += strf(" page=%llu", (unsigned long long)page);
    if (kind == OpKind::kTouchWrite) s += strf(" seed=%#llx", (unsigned long long)seed);
    return s;
  }
  if (has_guest(kind)) s += strf(" guest=%#llx", (unsigned long long)guest);
  if (has_pfn(kind)) {
    if (where == PfnKind::kBuffer)
      s += strf(" page=%llu", (unsigned long long)page);
    else
      s += strf(" pfn=%s", where_name(where));
  }
  if (has_gfn(kind)) s += strf(" gfn=%#llx", (unsigned long long)gfn);
  if (kind != OpKind::kGuestCreate && kind != OpKind::kGuestDestroy && kind != OpKind::kGetStats)
    s += strf(" nr=%llu", (unsigned long long)nr);
  return s;
}

Model::Model(u64 nr_pages, u64 active, const Platform& plat, bool test_calls, bool concurrent)
    : pages_(nr_pages), active_(active < nr_pages ? active : nr_pages), plat_(plat), test_calls_(test_calls),
      concurrent_(concurrent) {}

Model::Guest* Model::guest(u64 id) {
  if (id < PKVM_OWNER_FIRST_GUEST || id >= PKVM_OWNER_FIRST_GUEST + kSlots) return nullptr;
  return &guests_[id - PKVM_OWNER_FIRST_GUEST];
}

const Model::Guest* Model::guest(u64 id) const { return const_cast<Model*>(this)->guest(id); }

std::vector<u32> Model::guests() const {
  std::vector<u32> v;
  for (u32 i = 0; i < kSlots; ++i)
    if (guests_[i].used) v.push_back(PKVM_OWNER_FIRST_GUEST + i);
  return v;
}

u64 Model::pfn_of(const Op& op, u64 buf_pfn) const {
  switch (op.where) {
    case PfnKind::kBuffer:
      return buf_pfn + op.page;
    case PfnKind::kMmio:
      return plat_.mmio_pfn;
    case PfnKind::kBeyondRam:
      return plat_.ram_end_pfn + 16;
    case PfnKind::kBeyondIpa:
      return u64{1} << 36;
    case PfnKind::kHuge:
      return ~u64{0} - 1;
    case PfnKind::kHyp:
      return plat_.hyp_pfn;
    case PfnKind::kKernel:
      return plat_.kernel_pfn;
  }
  return 0;
}

bool Model::host_access(u64 p) const {
  const Page& pg = pages_[p];
  return pg.owner == PKVM_OWNER_HOST || pg.guest_shared_host;
}

void Model::page_view(u64 p, u32* owner, u32* state) const {
  const Page& pg = pages_[p];
  *owner = pg.owner;
  if (pg.owner == PKVM_OWNER_HOST)
    *state = pg.shared_hyp || pg.shared_guest ? PKVM_PAGE_SHARED_OWNED : PKVM_PAGE_OWNED;
  else if (pg.guest_shared_host)
    *state = PKVM_PAGE_SHARED_BORROWED;
  else
    *state = PKVM_PAGE_OWNED;
}

s64 Model::range_error(const Op& op) const {
  switch (op.where) {
    case PfnKind::kBuffer:
    case PfnKind::kHyp:
    case PfnKind::kKernel:
      return 0;
    default:
      return kEINVAL;  // not RAM, beyond the address space, or wrapping
  }
}

Expect Model::expect(const Op& op) const {
  Expect e;
  const bool guarded = op.kind == OpKind::kDonateHyp || op.kind == OpKind::kDonateGuest || op.kind == OpKind::kGetStats;
  const u64 npages = op.kind == OpKind::kGetStats ? 1 : op.nr;
  // The module's own guard: raw donations of kernel memory never reach EL2.
  if (guarded && op.where == PfnKind::kKernel && npages >= 1) {
    e.ioctl_err = EACCES;
    return e;
  }
  // Buffer-relative ranges must lie inside the buffer: the module checks.
  if (op.where == PfnKind::kBuffer && has_pfn(op.kind) && op.kind != OpKind::kTouchRead &&
      op.kind != OpKind::kTouchWrite && npages > pages_.size() - op.page) {
    e.ioctl_err = EINVAL;
    return e;
  }
  // The pages a call names: buffer pages, or a stand-in for a hostile page.
  Page hyp_page;
  hyp_page.owner = PKVM_OWNER_HYP;
  const Page kernel_page;
  auto page_at = [&](u64 i) -> const Page& {
    if (op.where == PfnKind::kHyp) return hyp_page;
    if (op.where == PfnKind::kKernel) return kernel_page;
    return pages_[op.page + i];
  };
  auto all = [&](u64 n, auto pred) {
    for (u64 i = 0; i < n; ++i)
      if (!pred(page_at(i))) return false;
    return true;
  };
  auto nr_err = [&](u64 n) -> s64 {
    if (n == 0) return kEINVAL;
    if (n > kMaxPages) return kE2BIG;
    return 0;
  };
  auto host_range = [&](u64 n) -> s64 {
    const s64 r = nr_err(n);
    return r ? r : range_error(op);
  };
  auto unshared_host = [](const Page& p) { return p.owner == PKVM_OWNER_HOST && !p.shared_hyp && !p.shared_guest; };
  auto live = [&](u64 id) -> const Guest* {
    const Guest* g = guest(id);
    return g && g->used && g->alive ? g : nullptr;
  };
  auto fail = [&](s64 r) {
    e.ret = r;
    return e;
  };

  switch (op.kind) {
    case OpKind::kShareHyp:
      if (s64 r = host_range(op.nr)) return fail(r);
      return fail(all(op.nr, unshared_host) ? 0 : kEPERM);
    case OpKind::kUnshareHyp:
      if (s64 r = host_range(op.nr)) return fail(r);
      if (!all(op.nr, [](const Page& p) { return p.owner == PKVM_OWNER_HOST && p.shared_hyp; })) return fail(kEPERM);
      return fail(all(op.nr, [](const Page& p) { return p.pins == 0; }) ? 0 : kEBUSY);
    case OpKind::kDonateHyp:
      if (s64 r = host_range(op.nr)) return fail(r);
      return fail(all(op.nr, unshared_host) ? 0 : kEPERM);
    case OpKind::kReclaimHyp:
      if (s64 r = host_range(op.nr)) return fail(r);
      if (op.where == PfnKind::kHyp) return fail(kEPERM);  // the hypervisor's own memory
      return fail(all(op.nr, [](const Page& p) { return p.owner == PKVM_OWNER_HYP; }) ? 0 : kEPERM);
    case OpKind::kPin:
      if (s64 r = host_range(op.nr)) return fail(r);
      return fail(all(op.nr, [](const Page& p) { return p.shared_hyp; }) ? 0 : kEPERM);
    case OpKind::kUnpin:
      if (s64 r = host_range(op.nr)) return fail(r);
      return fail(all(op.nr, [](const Page& p) { return p.shared_hyp && p.pins > 0; }) ? 0 : kEPERM);
    case OpKind::kShareGuest:
    case OpKind::kDonateGuest: {
      if (s64 r = nr_err(op.nr)) return fail(r);
      const Guest* g = live(op.guest);
      if (!g) return fail(kENOENT);
      if (s64 r = range_error(op)) return fail(r);
      if (gfn_bad(op.gfn, op.nr)) return fail(kEINVAL);
      if (!all(op.nr, unshared_host)) return fail(kEPERM);
      for (u64 i = 0; i < op.nr; ++i)
        if (g->map.count(op.gfn + i)) return fail(kEPERM);
      return fail(0);
    }
    case OpKind::kUnshareGuest:
    case OpKind::kGuestShareHost:
    case OpKind::kGuestUnshareHost: {
      if (s64 r = nr_err(op.nr)) return fail(r);
      const Guest* g = live(op.guest);
      if (!g) return fail(kENOENT);
      if (gfn_bad(op.gfn, op.nr)) return fail(kEINVAL);
      const GState want = op.kind == OpKind::kUnshareGuest     ? kGBorrowed
                          : op.kind == OpKind::kGuestShareHost ? kGOwned
                                                               : kGSharedOwned;
      for (u64 i = 0; i < op.nr; ++i) {
        auto it = g->map.find(op.gfn + i);
        if (it == g->map.end() || it->second.second != want) return fail(kEPERM);
      }
      return fail(0);
    }
    case OpKind::kReclaimGuest: {
      if (s64 r = nr_err(op.nr)) return fail(r);
      const Guest* g = guest(op.guest);
      if (!g || !g->used) return fail(kENOENT);
      if (s64 r = range_error(op)) return fail(r);
      if (g->alive) return fail(kEBUSY);
      const u32 id = u32(op.guest);
      return fail(all(op.nr, [id](const Page& p) { return p.owner == id && !p.guest_shared_host; }) ? 0 : kEPERM);
    }
    case OpKind::kGuestCreate:
      if (concurrent_) {
        e.any_guest_id = true;
        return e;
      }
      for (u32 i = 0; i < kSlots; ++i)
        if (!guests_[i].used) {
          e.check_value = true;
          e.value = PKVM_OWNER_FIRST_GUEST + i;
          return e;
        }
      return fail(kENOMEM);
    case OpKind::kGuestDestroy:
      return fail(live(op.guest) ? 0 : kENOENT);
    case OpKind::kChecksum: {
      if (s64 r = host_range(op.nr)) return fail(r);
      if (!all(op.nr, [](const Page& p) { return p.owner == PKVM_OWNER_HYP || p.shared_hyp; })) return fail(kEPERM);
      if (op.where == PfnKind::kBuffer) {
        e.check_sum = true;
        u64 h = kFnvInit;
        for (u64 i = 0; i < op.nr; ++i) {
          h = fnv1a_pattern(pages_[op.page + i].seed, h);
          if (!pages_[op.page + i].known) e.check_sum = false;
        }
        e.sum = h;
      }
      return e;
    }
    case OpKind::kGetStats:
      if (s64 r = range_error(op)) return fail(r);
      return fail(all(1, [](const Page& p) { return p.shared_hyp; }) ? 0 : kEPERM);
    case OpKind::kTouchRead:
    case OpKind::kTouchWrite:
      e.touch_refused = !host_access(op.page);
      if (op.kind == OpKind::kTouchRead && !e.touch_refused && pages_[op.page].known) {
        e.check_value = true;
        e.value = fnv1a_pattern(pages_[op.page].seed);  // the page's checksum
      }
      return e;
    case OpKind::kCount:
      break;
  }
  return e;
}

void Model::apply(const Op& op, u64 got) {
  auto each = [&](auto f) {
    if (op.where != PfnKind::kBuffer) return;
    for (u64 i = 0; i < op.nr; ++i) f(pages_[op.page + i], i);
  };
  switch (op.kind) {
    case OpKind::kShareHyp:
      each([](Page& p, u64) { p.shared_hyp = true; });
      break;
    case OpKind::kUnshareHyp:
      each([](Page& p, u64) { p.shared_hyp = false; });
      break;
    case OpKind::kDonateHyp:
      each([](Page& p, u64) { p.owner = PKVM_OWNER_HYP; });
      break;
    case OpKind::kReclaimHyp:
      each([](Page& p, u64) {
        p.owner = PKVM_OWNER_HOST;
        p.seed = 0;  // the hypervisor zeroes pages it gives back
        p.known = true;
      });
      break;
    case OpKind::kPin:
      each([](Page& p, u64) { ++p.pins; });
      break;
    case OpKind::kUnpin:
      each([](Page& p, u64) { --p.pins; });
      break;
    case OpKind::kShareGuest: {
      Guest* g = guest(op.guest);
      each([&](Page& p, u64 i) {
        p.shared_guest = true;
        g->map[op.gfn + i] = {op.page + i, kGBorrowed};
      });
      break;
    }
    case OpKind::kDonateGuest: {
      Guest* g = guest(op.guest);
      each([&](Page& p, u64 i) {
        p.owner = u32(op.guest);
        g->map[op.gfn + i] = {op.page + i, kGOwned};
      });
      g->owned += op.nr;
      break;
    }
    case OpKind::kUnshareGuest:
    case OpKind::kGuestShareHost:
    case OpKind::kGuestUnshareHost: {
      Guest* g = guest(op.guest);
      for (u64 i = 0; i < op.nr; ++i) {
        auto it = g->map.find(op.gfn + i);
        Page& p = pages_[it->second.first];
        if (op.kind == OpKind::kUnshareGuest) {
          p.shared_guest = false;
          g->map.erase(it);
        } else if (op.kind == OpKind::kGuestShareHost) {
          p.guest_shared_host = true;
          it->second.second = kGSharedOwned;
        } else {
          p.guest_shared_host = false;
          it->second.second = kGOwned;
        }
      }
      break;
    }
    case OpKind::kReclaimGuest: {
      Guest* g = guest(op.guest);
      each([](Page& p, u64) {
        p.owner = PKVM_OWNER_HOST;
        p.seed = 0;  // zeroed before the host gets it back
        p.known = true;
      });
      g->owned -= op.nr;
      if (g->owned == 0) g->used = false;
      break;
    }
    case OpKind::kGuestCreate: {
      Guest* g = guest(got);
      if (!g) break;
      *g = Guest{};
      g->used = true;
      g->alive = true;
      break;
    }
    case OpKind::kGuestDestroy: {
      Guest* g = guest(op.guest);
      for (auto& [gfn, ps] : g->map) {
        Page& p = pages_[ps.first];
        if (ps.second == kGBorrowed) p.shared_guest = false;
        if (ps.second == kGSharedOwned) p.guest_shared_host = false;  // the host loses it
      }
      g->map.clear();
      g->alive = false;
      if (g->owned == 0) g->used = false;
      break;
    }
    case OpKind::kTouchWrite:
      pages_[op.page].seed = op.seed;
      pages_[op.page].known = true;
      break;
    case OpKind::kGetStats:
      // The hypervisor wrote its statistics page into it.
      if (op.where == PfnKind::kBuffer) pages_[op.page].known = false;
      break;
    default:
      break;
  }
}

u64 Model::random_guest(Rng& rng) const {
  static const u64 kNever[] = {0, 1, 10, 255, (u64{1} << 32) + 2, ~u64{0}};
  const auto mine = guests();
  if (!mine.empty() && rng.chance(88)) return mine[rng.below(mine.size())];
  if (!concurrent_ && rng.chance(50)) return PKVM_OWNER_FIRST_GUEST + rng.below(kSlots);
  return kNever[rng.below(sizeof(kNever) / sizeof(kNever[0]))];
}

u64 Model::random_gfn(Rng& rng, u64 id, bool mapped) const {
  const Guest* g = guest(id);
  if (mapped && g && !g->map.empty() && rng.chance(75)) {
    auto it = g->map.begin();
    std::advance(it, rng.below(g->map.size()));
    return it->first;
  }
  if (rng.chance(90)) return rng.below(24);
  static const u64 kOdd[] = {kGfnLimit - 1, kGfnLimit, ~u64{0}};
  return kOdd[rng.below(3)];
}

Op Model::random_op(Rng& rng) const {
  struct W {
    OpKind k;
    u32 w;
  };
  static const W kWeights[] = {
      {OpKind::kShareHyp, 10},       {OpKind::kUnshareHyp, 9},      {OpKind::kDonateHyp, 8},
      {OpKind::kReclaimHyp, 8},      {OpKind::kPin, 5},             {OpKind::kUnpin, 5},
      {OpKind::kShareGuest, 7},      {OpKind::kUnshareGuest, 6},    {OpKind::kDonateGuest, 7},
      {OpKind::kGuestShareHost, 5},  {OpKind::kGuestUnshareHost, 4}, {OpKind::kReclaimGuest, 7},
      {OpKind::kGuestCreate, 3},     {OpKind::kGuestDestroy, 3},    {OpKind::kChecksum, 5},
      {OpKind::kGetStats, 2},        {OpKind::kTouchRead, 6},       {OpKind::kTouchWrite, 6},
  };
  u32 total = 0;
  for (const W& w : kWeights) total += w.w;
  Op op;
  for (;;) {
    u64 pick = rng.below(total);
    for (const W& w : kWeights) {
      if (pick < w.w) {
        op.kind = w.k;
        break;
      }
      pick -= w.w;
    }
    if (!test_calls_ && (op.kind == OpKind::kGuestShareHost || op.kind == OpKind::kGuestUnshareHost)) continue;
    if (concurrent_ && op.kind == OpKind::kGuestCreate && !guests().empty()) continue;
    break;
  }
  const u64 n = pages_.size();
  op.page = rng.below(active_);
  // Range length: mostly short and valid, sometimes long or hostile.
  const u64 r = rng.below(100);
  if (r < 66) {
    op.nr = 1;
  } else if (r < 86) {
    op.nr = 2 + rng.below(3);
  } else if (r < 92) {
    op.nr = 1 + rng.below(active_);
  } else if (r < 95) {
    op.nr = 1 + rng.below(kMaxPages < n ? kMaxPages : n);
  } else {
    static const u64 kBad[] = {0, kMaxPages + 1, u64{1} << 63, ~u64{0}};
    op.nr = kBad[rng.below(4)];
  }
  if (op.nr >= 1 && op.nr <= n && op.page + op.nr > n) op.page = n - op.nr;
  // Hostile pfns now and then (never a kernel page for calls that would take it).
  if (has_pfn(op.kind) && op.kind != OpKind::kTouchRead && op.kind != OpKind::kTouchWrite && rng.chance(10)) {
    static const PfnKind kWhere[] = {PfnKind::kMmio, PfnKind::kBeyondRam, PfnKind::kBeyondIpa,
                                     PfnKind::kHuge, PfnKind::kHyp,       PfnKind::kKernel};
    op.where = kWhere[rng.below(6)];
    const bool shares = op.kind == OpKind::kShareHyp || op.kind == OpKind::kShareGuest;
    if (op.where == PfnKind::kKernel && shares) op.where = PfnKind::kHyp;
    // One page: what lies next to them is not known (and a long range would
    // let the module's guard see kernel pages behind them).
    if (op.where == PfnKind::kHyp || op.where == PfnKind::kKernel) op.nr = 1;
  }
  if (has_guest(op.kind)) op.guest = random_guest(rng);
  // Reclaims aim at pages a dead guest still owns, most of the time.
  if (op.kind == OpKind::kReclaimGuest && op.where == PfnKind::kBuffer && rng.chance(70)) {
    for (u64 tries = 0; tries < active_; ++tries) {
      const u64 p = rng.below(active_);
      const Guest* g = guest(pages_[p].owner);
      if (pages_[p].owner >= PKVM_OWNER_FIRST_GUEST && g && !g->alive) {
        op.page = p;
        op.guest = pages_[p].owner;
        op.nr = 1;
        while (op.page + op.nr < n && pages_[op.page + op.nr].owner == op.guest && rng.chance(50)) ++op.nr;
        break;
      }
    }
  }
  if (has_gfn(op.kind))
    op.gfn = random_gfn(rng, op.guest, op.kind != OpKind::kShareGuest && op.kind != OpKind::kDonateGuest);
  if (op.kind == OpKind::kUnshareGuest || op.kind == OpKind::kGuestShareHost || op.kind == OpKind::kGuestUnshareHost) {
    if (op.nr > 2 && op.nr <= n) op.nr = 1 + rng.below(2);
  }
  if (op.kind == OpKind::kTouchRead || op.kind == OpKind::kTouchWrite) {
    op.nr = 1;
    op.page = rng.below(active_);
  }
  if (op.kind == OpKind::kTouchWrite) op.seed = rng.next() | 1;
  return op;
}

std::string compare(const Expect& e, const CallResult& r, const Op& op) {
  if (e.ioctl_err != r.err)
    return strf("the module answered %s, the model expected %s", errno_name(r.err).c_str(),
                errno_name(e.ioctl_err).c_str());
  if (r.err) return "";
  if (e.any_guest_id) {
    if (r.ret != 0) return strf("guest_create failed with %s", ret_name(r.ret).c_str());
    if (r.res[0] < PKVM_OWNER_FIRST_GUEST || r.res[0] >= PKVM_OWNER_FIRST_GUEST + 8)
      return strf("guest_create returned id %llu", (unsigned long long)r.res[0]);
    return "";
  }
  if (r.ret != e.ret)
    return strf("the hypervisor answered %s, the model expected %s", ret_name(r.ret).c_str(), ret_name(e.ret).c_str());
  if (r.ret == 0 && op.kind == OpKind::kGuestCreate && e.check_value && r.res[0] != e.value)
    return strf("guest_create returned id %llu, the model expected %llu", (unsigned long long)r.res[0],
                (unsigned long long)e.value);
  if (r.ret == 0 && e.check_sum && r.res[0] != e.sum)
    return strf("checksum %#llx, the model expected %#llx (FNV-1a of the pages' content)", (unsigned long long)r.res[0],
                (unsigned long long)e.sum);
  return "";
}

namespace {

u32 fn_of(OpKind k) {
  switch (k) {
    case OpKind::kShareHyp:
      return PKVM_HC_HOST_SHARE_HYP_FN;
    case OpKind::kUnshareHyp:
      return PKVM_HC_HOST_UNSHARE_HYP_FN;
    case OpKind::kDonateHyp:
      return PKVM_HC_HOST_DONATE_HYP_FN;
    case OpKind::kReclaimHyp:
      return PKVM_HC_HYP_DONATE_HOST_FN;
    case OpKind::kPin:
      return PKVM_HC_HYP_PIN_SHARED_FN;
    case OpKind::kUnpin:
      return PKVM_HC_HYP_UNPIN_SHARED_FN;
    case OpKind::kShareGuest:
      return PKVM_HC_HOST_SHARE_GUEST_FN;
    case OpKind::kUnshareGuest:
      return PKVM_HC_HOST_UNSHARE_GUEST_FN;
    case OpKind::kDonateGuest:
      return PKVM_HC_HOST_DONATE_GUEST_FN;
    case OpKind::kGuestShareHost:
      return PKVM_HC_GUEST_SHARE_HOST_FN;
    case OpKind::kGuestUnshareHost:
      return PKVM_HC_GUEST_UNSHARE_HOST_FN;
    case OpKind::kReclaimGuest:
      return PKVM_HC_HOST_RECLAIM_GUEST_FN;
    case OpKind::kGuestCreate:
      return PKVM_HC_GUEST_CREATE_FN;
    case OpKind::kGuestDestroy:
      return PKVM_HC_GUEST_DESTROY_FN;
    case OpKind::kChecksum:
      return PKVM_HC_CHECKSUM_FN;
    case OpKind::kGetStats:
      return PKVM_HC_GET_STATS_FN;
    default:
      return 0;
  }
}

}  // namespace

Outcome run_op(const Device& d, const Mapping& m, u32 buf, u64 buf_pfn, const Model& model, const Op& op) {
  const Expect e = model.expect(op);
  Outcome o;
  if (op.kind == OpKind::kTouchRead || op.kind == OpKind::kTouchWrite) {
    const bool write = op.kind == OpKind::kTouchWrite;
    u64 sum = 0;
    const Touch t = touch_page(m.page_ptr(op.page), write, op.seed, &sum);
    o.what = t.refused ? "SIGBUS" : "ok";
    if (t.refused != e.touch_refused)
      o.diff = t.refused ? "the access was refused (SIGBUS), the model expected it to work"
                         : "the access worked, the model expected a refusal";
    else if (!t.refused && e.check_value && sum != e.value)
      o.diff = strf("the page reads back with checksum %#llx, the model expected %#llx (%s)", (unsigned long long)sum,
                    (unsigned long long)e.value,
                    sum == fnv1a_pattern(0) ? "the page is all zero" : "stale or foreign content");
    o.ok = !t.refused;
    return o;
  }
  Call c;
  c.fn = fn_of(op.kind);
  c.nr = op.nr;
  c.guest = op.guest;
  c.gfn = op.gfn;
  if (op.where == PfnKind::kBuffer) {
    c.buf = buf;
    c.page = op.page;
  } else {
    c.raw = true;
    c.pfn = model.pfn_of(op, buf_pfn);
  }
  const CallResult r = d.call(c);
  o.hypercall = r.err == 0;
  o.fn = c.fn;
  o.ret = r.ret;
  o.ok = r.err == 0 && r.ret == 0;
  o.got = r.res[0];
  o.what = r.err ? "module " + errno_name(r.err) : ret_name(r.ret);
  if (o.ok && op.kind == OpKind::kGuestCreate) o.what += strf(" (guest %llu)", (unsigned long long)r.res[0]);
  o.diff = compare(e, r, op);
  return o;
}

}  // namespace pkvmctl
