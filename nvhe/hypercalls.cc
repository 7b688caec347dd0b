// SPDX-License-Identifier: Apache-2.0
// The hypercall ABI at EL2. Decoding is generated from proto/pkvm_abi.proto
// (pkvm_abi_dispatch.h): a call in the proto without a handler here fails the
// build. Every handler validates through mem_protect, which checks everything
// before it changes anything; nothing here trusts a host value.
#include "nvhe/console.h"
#include "nvhe/hyp.h"
#include "pgtable/desc.h"
#include "pkvm_abi_dispatch.h"

namespace pkvm {

namespace {

using hc::Reg;

// Per-function and per-errno counters for the statistics page.
u64 g_calls_ok[64];
u64 g_calls_failed[64];
u64 g_errors[64];

static_assert(PKVM_PAGE_SHIFT == desc::kPageShift && PKVM_MAX_TRANSITION_PAGES == kMaxTransitionPages);
static_assert(PKVM_EPERM == kEPERM && PKVM_ENOENT == kENOENT && PKVM_E2BIG == kE2BIG && PKVM_ENOMEM == kENOMEM &&
              PKVM_EBUSY == kEBUSY && PKVM_EINVAL == kEINVAL && PKVM_ERANGE == kERANGE && PKVM_EFAULT == kEFAULT);
static_assert(PKVM_OWNER_HOST == kOwnerHost && PKVM_OWNER_HYP == kOwnerHyp && PKVM_OWNER_FIRST_GUEST == kOwnerGuestFirst);

// Guest handles travel in a 64-bit register; anything above 32 bits is a
// guest id no guest has (mem_protect then says -ENOENT).
u32 guest_id(Reg g) { return g > 0xffffffffull ? 0xffffffffu : u32(g); }

// Writes into `nr` pages at `pfn` that the host shared with us, holding a pin
// so the host cannot unshare them mid-write. -EPERM when they are not shared.
template <typename F>
long with_shared_buffer(Reg pfn, Reg nr, F&& fill) {
  MemProtect& mp = g_hyp.mp;
  const int ret = mp.hyp_pin_shared(pfn, nr);
  if (ret) return ret;
  fill(reinterpret_cast<u64*>(pfn << desc::kPageShift));
  mp.hyp_unpin_shared(pfn, nr);
  return 0;
}

struct Handlers {
  long abi_version(hc::AbiVersionResults& r) {
    r.abi_major = PKVM_ABI_VERSION_MAJOR;
    r.abi_minor = PKVM_ABI_VERSION_MINOR;
    return 0;
  }
  long null() { return 0; }
  long host_share_hyp(Reg pfn, Reg nr) { return g_hyp.mp.host_share_hyp(pfn, nr); }
  long host_unshare_hyp(Reg pfn, Reg nr) { return g_hyp.mp.host_unshare_hyp(pfn, nr); }
  long host_donate_hyp(Reg pfn, Reg nr) { return g_hyp.mp.host_donate_hyp(pfn, nr); }
  long hyp_donate_host(Reg pfn, Reg nr) { return g_hyp.mp.hyp_donate_host(pfn, nr); }
  long host_share_guest(Reg g, Reg pfn, Reg gfn, Reg nr) {
    return g_hyp.mp.host_share_guest(guest_id(g), pfn, gfn, nr);
  }
  long host_unshare_guest(Reg g, Reg gfn, Reg nr) { return g_hyp.mp.host_unshare_guest(guest_id(g), gfn, nr); }
  long host_donate_guest(Reg g, Reg pfn, Reg gfn, Reg nr) {
    return g_hyp.mp.host_donate_guest(guest_id(g), pfn, gfn, nr);
  }
  long host_reclaim_guest(Reg g, Reg pfn, Reg nr) { return g_hyp.mp.host_reclaim_guest(guest_id(g), pfn, nr); }
  long hyp_pin_shared(Reg pfn, Reg nr) {
    // mem_protect reports a pin count that would overflow as EBUSY (what
    // get_stats and dump_host_stage2 answer for such a buffer); the ABI
    // says ERANGE for this call.
    const int ret = g_hyp.mp.hyp_pin_shared(pfn, nr);
    return ret == -kEBUSY ? -kERANGE : ret;
  }
  long hyp_unpin_shared(Reg pfn, Reg nr) { return g_hyp.mp.hyp_unpin_shared(pfn, nr); }
  long guest_create(hc::GuestCreateResults& r) {
    const int id = g_hyp.mp.guest_create();
    if (id < 0) return id == -kEBUSY ? -kENOMEM : id;  // no free slot: the ABI says ENOMEM
    r.guest = Reg(id);
    return 0;
  }
  long guest_destroy(Reg g) { return g_hyp.mp.guest_destroy(guest_id(g)); }

  long get_stats(Reg buf_pfn, hc::GetStatsResults& r) {
    const MemProtectStats s = g_hyp.mp.stats();
    u64 table_pages = g_hyp.mp.host_pgt().stats().table_pages;
    for (u32 g = kOwnerGuestFirst; g < kOwnerGuestFirst + kMaxGuests; ++g)
      if (Pgtable* p = g_hyp.mp.guest_pgt(g)) table_pages += p->stats().table_pages;
    const u64 pool_free = g_hyp.platform.nr_free_pages();
    const u64 tlbis = g_hyp.platform.tlbi_count();
    const long ret = with_shared_buffer(buf_pfn, 1, [&](u64* slot) {
      for (u32 i = 0; i < PKVM_STATS_SLOT_END; ++i) slot[i] = 0;
      slot[PKVM_STATS_SLOT_NR_SLOTS] = PKVM_STATS_SLOT_END;
      for (u32 l = 0; l < PKVM_STATS_SLOT_HOST_ABORTS_COUNT; ++l) slot[PKVM_STATS_SLOT_HOST_ABORTS + l] = s.host_aborts[l];
      slot[PKVM_STATS_SLOT_TLB_INVALIDATIONS] = tlbis;
      slot[PKVM_STATS_SLOT_TABLE_PAGES] = table_pages;
      slot[PKVM_STATS_SLOT_POOL_FREE_PAGES] = pool_free;
      for (u32 i = 0; i < 64; ++i) {
        slot[PKVM_STATS_SLOT_CALLS_OK + i] = __atomic_load_n(&g_calls_ok[i], __ATOMIC_RELAXED);
        slot[PKVM_STATS_SLOT_CALLS_FAILED + i] = __atomic_load_n(&g_calls_failed[i], __ATOMIC_RELAXED);
        slot[PKVM_STATS_SLOT_ERRORS + i] = __atomic_load_n(&g_errors[i], __ATOMIC_RELAXED);
      }
    });
    if (ret == 0) r.nr_slots = PKVM_STATS_SLOT_END;
    return ret;
  }

  long dump_host_stage2(Reg buf_pfn, Reg buf_nr, Reg start_pfn, hc::DumpHostStage2Results& r) {
    if (start_pfn > PKVM_DUMP_RECORD_START_PFN_MASK) return -kERANGE;
    const u64 limit_pfn = (u64{1} << g_hyp.mp.host_pgt().ia_bits()) >> desc::kPageShift;
    if (start_pfn >= limit_pfn) return -kERANGE;
    u64 next = start_pfn;
    u64 written = 0;
    bool done = false;
    const long ret = with_shared_buffer(buf_pfn, buf_nr, [&](u64* out) {
      constexpr u64 kMaxRun = PKVM_DUMP_RECORD_NR_PAGES_MASK >> PKVM_DUMP_RECORD_NR_PAGES_SHIFT;
      const u64 cap = buf_nr * (desc::kPageSize / sizeof(u64));
      DumpRecord batch[32];
      bool full = false;
      while (!full && next < limit_pfn) {
        u64 cont = next;
        const int n = g_hyp.mp.dump_host(next, batch, 32, &cont);
        if (n <= 0) break;
        for (int i = 0; i < n && !full; ++i) {
          const DumpRecord& d = batch[i];
          // Runs in the default state (the host's alone, not mapped yet) are left out.
          if (d.owner == kOwnerHost && d.state == u8(PageState::kOwned) && !d.mapped) continue;
          // The ABI reports a page's state as its owner sees it.
          const u64 state = d.state == u8(PageState::kNoPage) ? PKVM_PAGE_OWNED : d.state;
          // Runs longer than the record's count field continue in the next record.
          for (u64 pfn = d.pfn < next ? next : d.pfn; pfn < d.pfn + d.nr_pages;) {
            if (written == cap) {
              full = true;
              next = pfn;
              break;
            }
            const u64 left = d.pfn + d.nr_pages - pfn;
            const u64 chunk = left < kMaxRun ? left : kMaxRun;
            out[written++] = pkvm_dump_record_pack(pfn, chunk, d.owner, state, d.mapped ? d.level : 0);
            pfn += chunk;
          }
        }
        if (!full) next = cont;
      }
      done = next >= limit_pfn || next > PKVM_DUMP_RECORD_START_PFN_MASK;
    });
    if (ret) return ret;
    r.nr_records = written;
    r.next_pfn = next;
    r.done = done ? 1 : 0;
    return 0;
  }

  long checksum(Reg pfn, Reg nr, hc::ChecksumResults& r) {
    u64 sum = 0;
    const int ret = g_hyp.mp.hyp_checksum(pfn, nr, &sum);
    if (ret == 0) r.sum = sum;
    return ret;
  }

#ifdef PKVM_TEST_CALLS
  long guest_share_host(Reg g, Reg gfn, Reg nr) { return g_hyp.mp.guest_share_host(guest_id(g), gfn, nr); }
  long guest_unshare_host(Reg g, Reg gfn, Reg nr) { return g_hyp.mp.guest_unshare_host(guest_id(g), gfn, nr); }
  long inject_alloc_failure(Reg after, Reg count) {
    g_hyp.platform.fail_allocs(after, count);
    return 0;
  }
#endif
};

Handlers g_handlers;

}  // namespace

void handle_hvc(HostCtx* c) {
  const u64 id = c->regs[0];
  if (!hc::dispatch(g_handlers, c->regs)) {
    PKVM_VLOG("unknown hypercall %llx\n", (unsigned long long)id);
    return;  // x0 already says NOT_SUPPORTED
  }
  const u64 fn = id - PKVM_HC_BASE;
  const s64 ret = s64(c->regs[0]);
  if (fn < 64) __atomic_fetch_add(ret == 0 ? &g_calls_ok[fn] : &g_calls_failed[fn], 1, __ATOMIC_RELAXED);
  if (ret < 0 && -ret < 64) __atomic_fetch_add(&g_errors[-ret], 1, __ATOMIC_RELAXED);
}

}  // namespace pkvm
