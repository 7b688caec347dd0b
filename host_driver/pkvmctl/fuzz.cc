// SPDX-License-Identifier: Apache-2.0
// pkvmctl fuzz: random valid and hostile transitions on one test buffer,
// each checked against the model (model.h), and the host stage-2 dump
// checked against the model's page states every few operations. A
// divergence stops the run and prints the operations that led to it.
#include <cstring>

#include "args.h"
#include "model.h"

namespace pkvmctl {

namespace {

struct Step {
  u64 index;
  Op op;
  std::string what;
};

// Whether step s touched page p or guest g (to print the relevant history).
bool relevant(const Step& s, const Model& m, u64 lo, u64 hi, u64 guest) {
  const Op& op = s.op;
  if (guest && op.guest == guest) return true;
  if (op.kind == OpKind::kGuestCreate || op.kind == OpKind::kGuestDestroy) return guest != 0;
  if (op.where != PfnKind::kBuffer) return false;
  const u64 end = op.nr >= 1 && op.nr <= m.nr_pages() ? op.page + op.nr : op.page + 1;
  return op.page < hi && lo < end;
}

void print_history(const std::vector<Step>& h, const Model& m, u64 lo, u64 hi, u64 guest) {
  std::vector<const Step*> rel;
  for (const Step& s : h)
    if (relevant(s, m, lo, hi, guest)) rel.push_back(&s);
  const size_t from = rel.size() > 60 ? rel.size() - 60 : 0;
  printf("fuzz: the %zu operation(s) on the same pages%s that led there%s:\n", rel.size() - from,
         guest ? " or guest" : "", from ? " (the last 60)" : "");
  for (size_t i = from; i < rel.size(); ++i)
    printf("fuzz:   #%llu %s -> %s\n", (unsigned long long)rel[i]->index, rel[i]->op.str().c_str(),
           rel[i]->what.c_str());
}

}  // namespace

int cmd_fuzz(int argc, char** argv) {
  Args a(argc, argv, 2, {"seed", "count", "pages", "active", "verify-every"}, {"verbose"});
  if (a.help()) {
    printf("usage: pkvmctl fuzz [--seed S] [--count N] [--pages P] [--active A]\n"
           "                    [--verify-every K] [--verbose]\n"
           "  N random transitions (default 2000) from seed S (default 1) on a test buffer of\n"
           "  P pages (default 1024; operations start in the first A = 24 pages): every call\n"
           "  of the ABI with valid and hostile arguments (short and over-long ranges, zero\n"
           "  and wrapping lengths, MMIO, out-of-range, hypervisor and kernel pfns, unknown\n"
           "  guests and guest frames), plus userspace reads and writes of the pages. A local\n"
           "  model predicts every answer, every refused access and every page's content;\n"
           "  the host stage-2 dump is compared with the model every K operations (default\n"
           "  25) and at the end. The first divergence stops the run and prints the sequence\n"
           "  of operations on the same pages that caused it, and how to replay it.\n"
           "  Needs a hypervisor with the test-only calls for the guest-side operations.\n"
           "  Prints \"PKVMTEST: ok fuzz/...\" or \"PKVMTEST: FAIL fuzz/...\"; exit 1 on divergence.\n");
    return 0;
  }
  if (!a.error().empty()) {
    fprintf(stderr, "pkvmctl fuzz: %s\n", a.error().c_str());
    return 1;
  }
  const u64 seed = a.num("seed", 1), count = a.num("count", 2000), pages = a.num("pages", 1024);
  const u64 active = a.num("active", 24), every = a.num("verify-every", 25);
  const bool verbose = a.has("verbose");
  const std::string tag = strf("fuzz/seed-%llu-count-%llu", (unsigned long long)seed, (unsigned long long)count);
  Device d;
  if (!d.open()) return 1;
  pkvm_ioc_info info;
  if (d.info(&info)) return 1;
  const bool test_calls = info.flags & PKVM_INFO_TEST_CALLS;
  const Platform plat = probe_platform(d);
  if (!plat.ok) {
    printf("PKVMTEST: FAIL %s: cannot find RAM, kernel and hypervisor pages\n", tag.c_str());
    return 1;
  }
  // The model predicts guest ids: no other guest may hold a slot.
  std::vector<Run> runs;
  if (!read_dump(d, &runs)) return 1;
  for (const Run& r : runs)
    if (r.owner >= PKVM_OWNER_FIRST_GUEST) {
      printf("PKVMTEST: FAIL %s: guest %u still owns pages at pfn %#llx: start from a clean state\n", tag.c_str(),
             r.owner, (unsigned long long)r.start);
      return 1;
    }
  if (info.guests) {
    printf("PKVMTEST: FAIL %s: guests created through the module still live (mask %#x)\n", tag.c_str(), info.guests);
    return 1;
  }
  u64 buf_pfn = 0;
  int err = 0;
  const u32 buf = d.alloc(pages, &buf_pfn, &err);
  if (!buf) {
    printf("PKVMTEST: FAIL %s: cannot allocate %llu pages: %s\n", tag.c_str(), (unsigned long long)pages, strerror(err));
    return 1;
  }
  Mapping m;
  if (!m.map(d, buf, pages)) {
    printf("PKVMTEST: FAIL %s: cannot map the buffer\n", tag.c_str());
    return 1;
  }
  printf("fuzz: seed %llu, %llu operations on buffer %u (%llu pages at pfn %#llx, first %llu active), test calls %s\n",
         (unsigned long long)seed, (unsigned long long)count, buf, (unsigned long long)pages,
         (unsigned long long)buf_pfn, (unsigned long long)active, test_calls ? "yes" : "no");

  Model model(pages, active, plat, test_calls, false);
  Rng rng(seed);
  std::vector<Step> history;
  u64 n_ok = 0, n_refused = 0, n_module = 0, n_sigbus = 0;
  bool diverged = false;
  const u64 t0 = cntvct();
  for (u64 i = 0; i < count && !diverged; ++i) {
    const Op op = model.random_op(rng);
    const Outcome o = run_op(d, m, buf, buf_pfn, model, op);
    history.push_back(Step{i, op, o.what});
    if (verbose) printf("fuzz: #%llu %s -> %s\n", (unsigned long long)i, op.str().c_str(), o.what.c_str());
    if (!o.diff.empty()) {
      printf("fuzz: DIVERGENCE at operation #%llu (seed %llu): %s\n", (unsigned long long)i, (unsigned long long)seed,
             op.str().c_str());
      printf("fuzz:   %s\n", o.diff.c_str());
      const u64 lo = op.where == PfnKind::kBuffer ? op.page : 0;
      const u64 hi = op.where == PfnKind::kBuffer ? lo + (op.nr >= 1 && op.nr <= pages ? op.nr : 1) : 0;
      print_history(history, model, lo, hi, op.guest);
      printf("fuzz: replay with: pkvmctl fuzz --seed %llu --count %llu --pages %llu --active %llu --verbose\n",
             (unsigned long long)seed, (unsigned long long)(i + 1), (unsigned long long)pages,
             (unsigned long long)active);
      diverged = true;
      break;
    }
    if (o.ok) {
      model.apply(op, o.got);
      ++n_ok;
    } else if (o.hypercall) {
      ++n_refused;
    } else if (o.what == "SIGBUS") {
      ++n_sigbus;
    } else {
      ++n_module;
    }
    if ((i + 1) % every == 0 || i + 1 == count) {
      if (!read_dump(d, &runs, nullptr, buf_pfn)) {
        printf("fuzz: cannot read the dump\n");
        diverged = true;
        break;
      }
      u64 bad = 0, first = 0;
      for (u64 p = 0; p < pages; ++p) {
        u32 wo, ws, go, gs;
        model.page_view(p, &wo, &ws);
        page_state(runs, buf_pfn + p, &go, &gs);
        if (wo != go || ws != gs) {
          if (bad++ < 8)
            printf("fuzz: DIVERGENCE after #%llu: page %llu is %s/%s in the dump, the model says %s/%s\n",
                   (unsigned long long)i, (unsigned long long)p, owner_name(go).c_str(), state_name(gs),
                   owner_name(wo).c_str(), state_name(ws));
          if (bad == 1) first = p;
        }
      }
      if (bad) {
        print_history(history, model, first, first + 1, 0);
        printf("fuzz: replay with: pkvmctl fuzz --seed %llu --count %llu --pages %llu --active %llu --verbose\n",
               (unsigned long long)seed, (unsigned long long)(i + 1), (unsigned long long)pages,
               (unsigned long long)active);
        diverged = true;
      }
    }
  }
  const double secs = double(cntvct() - t0) / double(cntfrq());
  printf("fuzz: %llu operations in %.1f s: %llu succeeded, %llu refused by the hypervisor as predicted, %llu refused "
         "by the module as predicted, %llu userspace accesses refused (SIGBUS) as predicted\n",
         (unsigned long long)history.size(), secs, (unsigned long long)n_ok, (unsigned long long)n_refused,
         (unsigned long long)n_module, (unsigned long long)n_sigbus);
  const bool restored = restore_buffer(d, buf);
  if (!restored) printf("fuzz: could not bring every page back to the host\n");
  // Unmap before freeing: a mapped buffer cannot be freed.
  m.unmap();
  if (restored && d.free_buf(buf)) printf("fuzz: could not free the buffer\n");
  printf("PKVMTEST: %s %s%s\n", diverged ? "FAIL" : "ok", tag.c_str(),
         diverged ? ": the hypervisor diverged from the model" : ": 0 divergences");
  return diverged ? 1 : 0;
}

}  // namespace pkvmctl
