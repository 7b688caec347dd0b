// SPDX-License-Identifier: Apache-2.0
// Shared environment for the mem_protect unit tests and benchmarks: a
// SimPlatform with a break-before-make checker attached, a memory map, page
// metadata, locks and an initialised MemProtect; plus a snapshot of every
// piece of observable state so "a failure changes nothing" can be asserted
// by comparing two snapshots. No GoogleTest dependency (the benchmark uses it).
#pragma once

#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include "mem_protect/mem_protect.h"
#include "tests/sim/bbm_checker.h"
#include "tests/sim/sim_platform.h"

namespace pkvm::test {

inline constexpr u64 kPage = desc::kPageSize;
inline constexpr u64 k2M = u64{2} << 20;
inline constexpr u64 k1G = u64{1} << 30;

struct RegionSpec {
  u64 base;
  u64 size;
  u32 flags;
};

// Default layout (every test documents what it relies on):
//   [0, 1G)             MMIO gap
//   R0 [1G, 2G)         memory, 1 GiB aligned; the sim arena lives at its start
//   R1 [2G, 2G+2M)      memory, adjacent to R0 (straddling tests)
//   [2G+2M, 2G+4M)      MMIO gap
//   R2 [2G+4M, 2G+6M)   memory, no-map (firmware)
//   [2G+6M, 1T)         MMIO gap up to the 40-bit host IA limit
struct EnvConfig {
  u64 arena_base = 0x40000000;
  u64 arena_pages = 512 + 1024;  // 2 MiB of table pool, 4 MiB of data
  u64 pool_pages = 512;
  std::vector<RegionSpec> regions = {
      {0x40000000, k1G, 0},
      {0x80000000, k2M, 0},
      {0x80400000, k2M, kRegionNoMap},
  };
  u32 host_ia_bits = 40;
  u32 host_start_level = 1;
  u32 guest_ia_bits = 36;
  u32 guest_start_level = 1;
  bool attach_bbm = true;  ///< benchmarks run without the checker (it sees every event)
  bool exclusive_aborts = false;  ///< host aborts under the exclusive lock (comparison baseline)
  RwLock* host_lock = nullptr;    ///< a test's own host lock (default: the per-CPU one, as at EL2)
  bool stale_meta_regions = false;  ///< metadata handed to init with every region byte set (a previous user's)
};

class Env {
 public:
  explicit Env(const EnvConfig& c = EnvConfig{})
      : cfg(c), plat(c.arena_base, c.arena_pages, c.pool_pages) {
    // Tables are told apart by their table id: the host stage 2 uses 0,
    // guests their handle, the hypervisor's stage 1 kOwnerHyp.
    bbm.set_format(kOwnerHyp, Format::kHypStage1);
    if (c.attach_bbm) bbm.attach(plat);  // before init: it sees the roots allocated
    u64 lo = ~u64{0}, hi = 0;
    for (const RegionSpec& r : c.regions) {
      add_ret |= mm.add(r.base, r.size, r.flags);
      lo = r.base < lo ? r.base : lo;
      hi = r.base + r.size > hi ? r.base + r.size : hi;
    }
    meta_base = lo >> desc::kPageShift;
    meta.assign((hi - lo) >> desc::kPageShift, PageMeta{});
    if (c.stale_meta_regions)
      for (PageMeta& m : meta) m.region = 0xff;
    MemProtectConfig mc = {};
    mc.platform = &plat;
    mc.memmap = &mm;
    mc.host_ia_bits = c.host_ia_bits;
    mc.host_start_level = c.host_start_level;
    mc.guest_ia_bits = c.guest_ia_bits;
    mc.guest_start_level = c.guest_start_level;
    mc.meta = meta.data();
    mc.meta_base_pfn = meta_base;
    mc.meta_nr = meta.size();
    mc.host_lock = c.host_lock ? c.host_lock : &host_lock;
    mc.exclusive_aborts = c.exclusive_aborts;
    mc.hyp_lock = &hyp_lock;
    for (u32 i = 0; i < kMaxGuests; ++i) mc.guest_locks[i] = &guest_locks[i];
    init_ret = mp.init(mc);
  }
  ~Env() { bbm.detach(); }

  /// First data page of the arena (2 MiB aligned with the default layout).
  u64 data_pfn() const { return plat.data_base().value() >> desc::kPageShift; }
  u64 host_limit() const { return u64{1} << cfg.host_ia_bits; }

  /// Host stage-2 leaf at `addr` (raw descriptor and level).
  u64 host_pte(u64 addr, u32* level = nullptr) {
    u64 pte = 0;
    u32 l = 0;
    mp.host_pgt().get_leaf(addr, &pte, &l);
    if (level) *level = l;
    return pte;
  }

  /// guest_destroy with the checker in teardown mode: Pgtable::destroy frees
  /// the unreachable guest tables without per-entry breaks.
  int destroy_guest(u32 g) {
    bbm.set_teardown(true);
    const int ret = mp.guest_destroy(g);
    bbm.set_teardown(false);
    return ret;
  }

  /// Fills page `pfn` (inside the arena) with a pattern derived from `seed`.
  void fill(u64 pfn, u64 seed) {
    auto* p = static_cast<u64*>(plat.phys_to_virt(PhysAddr(pfn << desc::kPageShift)));
    for (u64 i = 0; i < kPage / 8; ++i) p[i] = (seed + i) * 0x100000001b3ull ^ (pfn << 20);
  }
  bool is_zero(u64 pfn) {
    auto* p = static_cast<const u64*>(plat.phys_to_virt(PhysAddr(pfn << desc::kPageShift)));
    for (u64 i = 0; i < kPage / 8; ++i)
      if (p[i]) return false;
    return true;
  }
  /// The sum hyp_checksum is specified to return, computed independently.
  u64 expected_checksum(u64 pfn, u64 nr) {
    auto* p = static_cast<const u64*>(plat.phys_to_virt(PhysAddr(pfn << desc::kPageShift)));
    u64 h = 0xcbf29ce484222325ull;  // FNV-1a over 64-bit words
    for (u64 i = 0; i < nr * kPage / 8; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
  }

  EnvConfig cfg;
  sim::SimPlatform plat;
  sim::BbmChecker bbm;
  MemMap mm;
  int add_ret = 0;
  std::vector<PageMeta> meta;
  u64 meta_base = 0;
  // As at EL2: the per-CPU reader lock for the host stage 2 (aborts share
  // it), one-word spinlocks for the hypervisor and the guests.
  sim::SimRwLock host_lock;
  sim::SimSpinRwLock hyp_lock, guest_locks[kMaxGuests];
  MemProtect mp;
  int init_ret = -1;
};

// --- Snapshots ----------------------------------------------------------------

inline std::string hex(u64 v) {
  char b[24];
  snprintf(b, sizeof(b), "0x%" PRIx64, v);
  return b;
}

/// Every non-empty entry (leaf or annotation) of a table, one line each.
inline std::string leaves_of(Pgtable& pgt) {
  struct Acc {
    std::string s;
  } acc;
  Walker w{[](const VisitCtx& ctx, u32) -> int {
             if (ctx.old) {
               auto* a = static_cast<Acc*>(ctx.arg);
               const u64 base = ctx.addr & ~(desc::granule_size(ctx.level) - 1);
               a->s += "  " + hex(base) + " L" + std::to_string(ctx.level) + " " + hex(ctx.old) + "\n";
             }
             return 0;
           },
           &acc, kWalkLeaf};
  pgt.walk(0, u64{1} << pgt.ia_bits(), w);
  return acc.s;
}

/// The raw host dump (dump_host over the whole input range), one record a line.
inline std::string host_dump(Env& e) {
  std::string s;
  const u64 end = e.host_limit() >> desc::kPageShift;
  u64 pfn = 0;
  DumpRecord recs[64];
  while (pfn < end) {
    u64 next = 0;
    const int n = e.mp.dump_host(pfn, recs, 64, &next);
    if (n <= 0) {
      s += "dump_host error " + std::to_string(n) + "\n";
      break;
    }
    for (int i = 0; i < n; ++i) {
      const DumpRecord& r = recs[i];
      s += "  pfn " + hex(r.pfn) + " +" + hex(r.nr_pages) + " owner " + std::to_string(r.owner) + " state " +
           std::to_string(r.state) + " L" + std::to_string(r.level) + (r.mapped ? " mapped" : "") + "\n";
    }
    if (next <= pfn) break;
    pfn = next;
  }
  return s;
}

/// Ownership only: the host dump without the "which host-owned pages happen
/// to be mapped" detail (the abort path and recycling change that freely).
inline std::string ownership(Env& e) {
  std::string s;
  const u64 end = e.host_limit() >> desc::kPageShift;
  u64 pfn = 0, run_pfn = 0, run_nr = 0;
  int run_owner = -1, run_state = -1;
  DumpRecord recs[64];
  auto flush = [&] {
    if (run_nr && !(run_owner == kOwnerHost && run_state == int(PageState::kOwned)))
      s += "  pfn " + hex(run_pfn) + " +" + hex(run_nr) + " owner " + std::to_string(run_owner) + " state " +
           std::to_string(run_state) + "\n";
  };
  while (pfn < end) {
    u64 next = 0;
    const int n = e.mp.dump_host(pfn, recs, 64, &next);
    if (n <= 0) break;
    for (int i = 0; i < n; ++i) {
      const DumpRecord& r = recs[i];
      if (r.owner == run_owner && r.state == run_state && run_pfn + run_nr == r.pfn) {
        run_nr += r.nr_pages;
        continue;
      }
      flush();
      run_pfn = r.pfn;
      run_nr = r.nr_pages;
      run_owner = r.owner;
      run_state = r.state;
    }
    if (next <= pfn) break;
    pfn = next;
  }
  flush();
  return s;
}

struct SnapOpts {
  bool raw_host = true;     ///< false: ownership() instead of the raw dump
  bool abort_stats = true;  ///< include the host-abort counters
  bool data = true;         ///< include a hash of the arena's data pages
};

/// Everything a caller can observe, as text (so a mismatch prints a diff):
/// host stage 2, hyp stage 1, each guest's stage 2 and existence, non-zero
/// page metadata, a hash of the arena's data pages, and the statistics other
/// than the per-transition ok/failed counters and the recycle count.
inline std::string snapshot(Env& e, SnapOpts o = {}) {
  std::string s = "host:\n" + (o.raw_host ? host_dump(e) : ownership(e));
  s += "hyp:\n" + leaves_of(e.mp.hyp_pgt());
  for (u32 g = kOwnerGuestFirst; g < kOwnerGuestFirst + kMaxGuests; ++g) {
    if (!e.mp.guest_exists(g)) continue;
    Pgtable* pgt = e.mp.guest_pgt(g);
    s += "guest " + std::to_string(g) + (pgt ? " alive:\n" + leaves_of(*pgt) : std::string(" dying\n"));
  }
  s += "meta:\n";
  for (u64 i = 0; i < e.meta.size(); ++i) {
    const PageMeta& m = e.meta[i];
    if (m.pin_count || m.flags || m.lender || m.host_state || m.owner || m.hyp_state_inv)
      s += "  pfn " + hex(e.meta_base + i) + " pins " + std::to_string(m.pin_count) + " flags " +
           std::to_string(m.flags) + " lender " + std::to_string(m.lender) + " host " +
           std::to_string(m.host_state) + " owner " + std::to_string(m.owner) + " hyp~ " +
           std::to_string(m.hyp_state_inv) + "\n";
  }
  if (o.data) {
    u64 h = 1469598103934665603ull;
    auto* d = static_cast<const u64*>(e.plat.phys_to_virt(e.plat.data_base()));
    for (u64 i = 0; i < e.plat.data_pages() * kPage / 8; ++i) h = (h ^ d[i]) * 1099511628211ull;
    s += "data hash " + hex(h) + "\n";
  }
  const MemProtectStats st = e.mp.stats();
  if (o.abort_stats)
    s += "aborts " + std::to_string(st.host_aborts[0]) + "/" + std::to_string(st.host_aborts[1]) + "/" +
         std::to_string(st.host_aborts[2]) + "/" + std::to_string(st.host_aborts[3]) + " eagain " +
         std::to_string(st.host_abort_eagain) + " eperm " + std::to_string(st.host_abort_eperm) + " enomem " +
         std::to_string(st.host_abort_enomem) + "\n";
  s += "internal_errors " + std::to_string(st.internal_errors) + "\n";
  return s;
}

// --- Transitions and starting states, shared by the table-driven tests ------

/// The guest every fixture creates first gets handle 2.
inline constexpr u32 kG = kOwnerGuestFirst;

// --- Transitions -----------------------------------------------------------------

enum class T : u8 {
  kShareHyp,
  kUnshareHyp,
  kDonateHyp,
  kHypDonateHost,
  kShareGuest,
  kUnshareGuest,
  kDonateGuest,
  kGuestShareHost,
  kGuestUnshareHost,
  kReclaim,
  kPin,
  kUnpin,
};

inline const char* name(T t) {
  static const char* const n[] = {"ShareHyp",       "UnshareHyp",       "DonateHyp",   "HypDonateHost",
                                  "ShareGuest",     "UnshareGuest",     "DonateGuest", "GuestShareHost",
                                  "GuestUnshareHost", "Reclaim",        "Pin",         "Unpin"};
  return n[u32(t)];
}

inline int call(MemProtect& mp, T t, u32 guest, u64 pfn, u64 gfn, u64 nr) {
  switch (t) {
    case T::kShareHyp: return mp.host_share_hyp(pfn, nr);
    case T::kUnshareHyp: return mp.host_unshare_hyp(pfn, nr);
    case T::kDonateHyp: return mp.host_donate_hyp(pfn, nr);
    case T::kHypDonateHost: return mp.hyp_donate_host(pfn, nr);
    case T::kShareGuest: return mp.host_share_guest(guest, pfn, gfn, nr);
    case T::kUnshareGuest: return mp.host_unshare_guest(guest, gfn, nr);
    case T::kDonateGuest: return mp.host_donate_guest(guest, pfn, gfn, nr);
    case T::kGuestShareHost: return mp.guest_share_host(guest, gfn, nr);
    case T::kGuestUnshareHost: return mp.guest_unshare_host(guest, gfn, nr);
    case T::kReclaim: return mp.host_reclaim_guest(guest, pfn, nr);
    case T::kPin: return mp.hyp_pin_shared(pfn, nr);
    case T::kUnpin: return mp.hyp_unpin_shared(pfn, nr);
  }
  return 1;
}

inline Transition stat_of(T t) {
  static const Transition m[] = {Transition::kHostShareHyp,    Transition::kHostUnshareHyp,
                                 Transition::kHostDonateHyp,   Transition::kHypDonateHost,
                                 Transition::kHostShareGuest,  Transition::kHostUnshareGuest,
                                 Transition::kHostDonateGuest, Transition::kGuestShareHost,
                                 Transition::kGuestUnshareHost, Transition::kHostReclaimGuest,
                                 Transition::kHypPin,          Transition::kHypUnpin};
  return m[u32(t)];
}

// --- Starting states -------------------------------------------------------------

enum class St : u8 {
  kOwned,          // host owns it, not mapped
  kMapped,         // host owns it, mapped by the abort path as a 1 GiB block
  kSharedHyp,      // host lent it to the hypervisor
  kSharedGuest,    // host lent it to the guest
  kDonatedHyp,     // given to the hypervisor
  kHypInternal,    // the hypervisor's own memory (hyp_reserve)
  kDonatedGuest,   // given to the guest
  kGuestShared,    // given to the guest, which lent it back to the host
  kPinned,         // lent to the hypervisor and pinned once
  kDyingOwned,     // given to the guest, which was then destroyed
  kDyingLent,      // given to the guest, lent back to the host, guest destroyed
  kGoneHostLent,   // lent to the guest, guest destroyed (and gone: it owned nothing)
  kGfnTaken,       // host owns it, but the guest frame it would go to maps another page
};

inline const char* name(St s) {
  static const char* const n[] = {"Owned",      "Mapped",     "SharedHyp", "SharedGuest", "DonatedHyp",
                                  "HypInternal", "DonatedGuest", "GuestShared", "Pinned", "DyingOwned",
                                  "DyingLent",  "GoneHostLent", "GfnTaken"};
  return n[u32(s)];
}

inline bool dies(St s) { return s == St::kDyingOwned || s == St::kDyingLent || s == St::kGoneHostLent; }

// Puts [pfn, +nr) (guest frames [gfn, +nr)) into state `s`, except the
// guest's destruction, which the caller does once for the whole range.
inline int apply(Env& e, St s, u64 pfn, u64 gfn, u64 nr) {
  MemProtect& mp = e.mp;
  int r = 0;
  switch (s) {
    case St::kOwned: return 0;
    case St::kMapped:
      r = mp.host_stage2_idmap(pfn << desc::kPageShift);
      return r == -kEAGAIN ? 0 : r;  // per-page set-up: the block is already there
    case St::kSharedHyp: return mp.host_share_hyp(pfn, nr);
    case St::kSharedGuest:
    case St::kGoneHostLent: return mp.host_share_guest(kG, pfn, gfn, nr);
    case St::kDonatedHyp: return mp.host_donate_hyp(pfn, nr);
    case St::kHypInternal: return mp.hyp_reserve(pfn, nr);
    case St::kDonatedGuest:
    case St::kDyingOwned: return mp.host_donate_guest(kG, pfn, gfn, nr);
    case St::kGuestShared:
    case St::kDyingLent:
      r = mp.host_donate_guest(kG, pfn, gfn, nr);
      return r ? r : mp.guest_share_host(kG, gfn, nr);
    case St::kPinned:
      r = mp.host_share_hyp(pfn, nr);
      return r ? r : mp.hyp_pin_shared(pfn, nr);
    case St::kGfnTaken:  // the guest frame maps a page far from the range
      return mp.host_share_guest(kG, pfn + 0x100, gfn, nr);
  }
  return 1;
}

}  // namespace pkvm::test
