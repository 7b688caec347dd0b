// SPDX-License-Identifier: Apache-2.0
// pkvmctl stress: one thread per CPU, each issuing random transitions on its
// own test buffer and guest (checked against its own model) and generating
// memory traffic, for a bounded time. Then: the dump must agree with every
// model, and the hypervisor's statistics must add up.
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <thread>

#include "args.h"
#include "model.h"

namespace pkvmctl {

namespace {

struct Worker {
  u32 cpu = 0;
  u32 buf = 0;
  u64 pfn = 0;
  std::unique_ptr<Mapping> map;
  std::unique_ptr<Model> model;
  u64 seed = 0;
  u64 ops = 0, ok_ops = 0, sigbus = 0, traffic_pages = 0;
  u64 ok[64] = {}, failed[64] = {}, errors[64] = {};
  std::string diff;
  std::vector<std::string> last;  // recent operations, for a divergence report
};

void run_worker(const Device& d, Worker* w, u64 deadline) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(w->cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  Rng rng(w->seed);
  while (cntvct() < deadline) {
    const Op op = w->model->random_op(rng);
    const Outcome o = run_op(d, *w->map, w->buf, w->pfn, *w->model, op);
    ++w->ops;
    if (w->last.size() == 40) w->last.erase(w->last.begin());
    w->last.push_back(op.str() + " -> " + o.what);
    if (o.hypercall && o.fn < 64) {
      if (o.ret == 0) {
        ++w->ok[o.fn];
      } else {
        ++w->failed[o.fn];
        if (o.ret < 0 && -o.ret < 64) ++w->errors[-o.ret];
      }
    }
    if (!o.diff.empty()) {
      w->diff = op.str() + ": " + o.diff;
      return;
    }
    if (o.ok) {
      w->model->apply(op, o.got);
      ++w->ok_ops;
    } else if (o.what == "SIGBUS") {
      ++w->sigbus;
    }
    // Memory traffic: fresh anonymous memory, every page written once.
    if (w->ops % 16 == 0) {
      const size_t len = 256 * 1024;
      void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p != MAP_FAILED) {
        for (size_t off = 0; off < len; off += kPage) static_cast<volatile char*>(p)[off] = char(off);
        munmap(p, len);
        w->traffic_pages += len / kPage;
      }
    }
  }
}

}  // namespace

int cmd_stress(int argc, char** argv) {
  Args a(argc, argv, 2, {"threads", "seconds", "pages", "seed"}, {});
  if (a.help()) {
    printf("usage: pkvmctl stress [--threads N] [--seconds S] [--pages P] [--seed X]\n"
           "  N threads (default: one per online CPU), each pinned to a CPU, run random\n"
           "  valid and hostile transitions for S seconds (default 10) on their own test\n"
           "  buffer of P pages (default 48) and their own guest, touch their pages from\n"
           "  userspace and write fresh anonymous memory, all at once. Each thread checks\n"
           "  every answer against its own model. Afterwards: the host stage-2 dump must\n"
           "  agree with every model, the hypervisor's statistics must equal the module's\n"
           "  count of the calls it issued, and the transition calls must equal the\n"
           "  threads' own counts. Prints PKVMTEST lines; exit 1 on any failure.\n");
    return 0;
  }
  if (!a.error().empty()) {
    fprintf(stderr, "pkvmctl stress: %s\n", a.error().c_str());
    return 1;
  }
  const u32 ncpu = u32(sysconf(_SC_NPROCESSORS_ONLN));
  const u32 nthreads = u32(a.num("threads", ncpu));
  const u64 seconds = a.num("seconds", 10), pages = a.num("pages", 48), seed = a.num("seed", 1);
  Reporter rep(strf("stress-%ucpu", ncpu));
  Device d;
  if (!d.open()) return 1;
  pkvm_ioc_info info;
  if (d.info(&info)) return 1;
  const Platform plat = probe_platform(d);
  if (!rep.check("setup", plat.ok && nthreads >= 1 && nthreads <= 8, "no platform facts or bad --threads"))
    return rep.finish();

  std::vector<Worker> ws(nthreads);
  for (u32 t = 0; t < nthreads; ++t) {
    Worker& w = ws[t];
    w.cpu = t % ncpu;
    w.seed = seed * 1000003 + t;
    w.buf = d.alloc(pages, &w.pfn);
    w.map = std::make_unique<Mapping>();
    if (!w.buf || !w.map->map(d, w.buf, pages)) {
      rep.check("setup", false, "cannot allocate or map a buffer");
      return rep.finish();
    }
    w.model = std::make_unique<Model>(pages, pages, plat, info.flags & PKVM_INFO_TEST_CALLS, true);
  }
  pkvm_ioc_stats s0, s1;
  if (d.stats(&s0)) return 1;
  printf("stress: %u threads on %u CPUs for %llu s, %llu pages each\n", nthreads, ncpu, (unsigned long long)seconds,
         (unsigned long long)pages);
  const u64 deadline = cntvct() + seconds * cntfrq();
  {
    std::vector<std::thread> threads;
    for (Worker& w : ws) threads.emplace_back(run_worker, std::cref(d), &w, deadline);
    for (std::thread& t : threads) t.join();
  }
  if (d.stats(&s1)) return 1;

  // 1. Every answer matched each thread's model.
  u64 total_ops = 0, total_traffic = 0, total_sigbus = 0;
  bool diverged = false, all_ran = true;
  for (const Worker& w : ws) {
    total_ops += w.ops;
    total_traffic += w.traffic_pages;
    total_sigbus += w.sigbus;
    printf("stress: cpu %u: %llu operations (%llu succeeded, %llu refused userspace accesses), %llu pages of memory "
           "traffic\n",
           w.cpu, (unsigned long long)w.ops, (unsigned long long)w.ok_ops, (unsigned long long)w.sigbus,
           (unsigned long long)w.traffic_pages);
    if (w.ops < 50) all_ran = false;
    if (!w.diff.empty()) {
      diverged = true;
      printf("stress: cpu %u DIVERGED: %s\nstress: its last operations:\n", w.cpu, w.diff.c_str());
      for (const std::string& s : w.last) printf("stress:   %s\n", s.c_str());
    }
  }
  rep.check("every-answer-as-predicted", !diverged, "a thread diverged from its model (see above)");
  rep.check("all-threads-ran", all_ran, "a thread made fewer than 50 operations");

  // 2. The final dump agrees with every model.
  std::vector<Run> runs;
  bool dump_ok = read_dump(d, &runs);
  std::string why = dump_ok ? "" : "cannot read the dump";
  for (const Worker& w : ws) {
    for (u64 p = 0; dump_ok && p < pages; ++p) {
      u32 wo, wst, go, gst;
      w.model->page_view(p, &wo, &wst);
      page_state(runs, w.pfn + p, &go, &gst);
      if (wo != go || wst != gst) {
        dump_ok = false;
        why = strf("cpu %u page %llu: dump %s/%s, model %s/%s", w.cpu, (unsigned long long)p, owner_name(go).c_str(),
                   state_name(gst), owner_name(wo).c_str(), state_name(wst));
      }
    }
  }
  rep.check("final-dump-consistent", dump_ok || diverged, why);

  // 3. The hypervisor's counters equal the module's (everything the module
  // issued between the two snapshots, on every CPU).
  int mismatches = 0;
  std::string first;
  for (u32 i = 0; i < 64; ++i) {
    const u64 hyp[3] = {s1.slots[PKVM_STATS_SLOT_CALLS_OK + i] - s0.slots[PKVM_STATS_SLOT_CALLS_OK + i],
                        s1.slots[PKVM_STATS_SLOT_CALLS_FAILED + i] - s0.slots[PKVM_STATS_SLOT_CALLS_FAILED + i],
                        s1.slots[PKVM_STATS_SLOT_ERRORS + i] - s0.slots[PKVM_STATS_SLOT_ERRORS + i]};
    const u64 mod[3] = {s1.issued_ok[i] - s0.issued_ok[i], s1.issued_failed[i] - s0.issued_failed[i],
                        s1.issued_errors[i] - s0.issued_errors[i]};
    for (int k = 0; k < 3; ++k)
      if (hyp[k] != mod[k] && mismatches++ == 0)
        first = strf("%s[%u]: hypervisor %llu, module %llu", k == 0 ? "ok" : k == 1 ? "failed" : "errno", i,
                     (unsigned long long)hyp[k], (unsigned long long)mod[k]);
  }
  rep.check("stats-add-up", mismatches == 0, first);

  // 4. Transition calls the module never issues itself equal the threads' counts.
  mismatches = 0;
  for (u32 i = 0; i < 64; ++i) {
    if (i == PKVM_HC_HOST_SHARE_HYP_FN || i == PKVM_HC_HOST_UNSHARE_HYP_FN || i == PKVM_HC_GET_STATS_FN ||
        i == PKVM_HC_DUMP_HOST_STAGE2_FN)
      continue;  // the module's own stats/dump calls use these too
    u64 ok = 0, failed = 0;
    for (const Worker& w : ws) {
      ok += w.ok[i];
      failed += w.failed[i];
    }
    const u64 hok = s1.slots[PKVM_STATS_SLOT_CALLS_OK + i] - s0.slots[PKVM_STATS_SLOT_CALLS_OK + i];
    const u64 hfailed = s1.slots[PKVM_STATS_SLOT_CALLS_FAILED + i] - s0.slots[PKVM_STATS_SLOT_CALLS_FAILED + i];
    if ((hok != ok || hfailed != failed) && mismatches++ == 0)
      first = strf("%s: hypervisor %llu ok / %llu failed, threads %llu / %llu", call_name(i) ? call_name(i) : "?",
                   (unsigned long long)hok, (unsigned long long)hfailed, (unsigned long long)ok,
                   (unsigned long long)failed);
  }
  rep.check("calls-counted", mismatches == 0, first);
  u64 aborts0 = 0, aborts1 = 0;
  for (u32 l = 0; l < 4; ++l) {
    aborts0 += s0.slots[PKVM_STATS_SLOT_HOST_ABORTS + l];
    aborts1 += s1.slots[PKVM_STATS_SLOT_HOST_ABORTS + l];
  }
  printf("stress: %llu operations, %llu userspace accesses refused (SIGBUS) as predicted, %llu pages of memory traffic, "
         "%llu host stage-2 aborts resolved meanwhile\n",
         (unsigned long long)total_ops, (unsigned long long)total_sigbus, (unsigned long long)total_traffic,
         (unsigned long long)(aborts1 - aborts0));

  // 5. Clean up: every page back to the host, every buffer freed.
  bool clean = true;
  for (Worker& w : ws) {
    w.map->unmap();
    clean = restore_buffer(d, w.buf) && d.free_buf(w.buf) == 0 && clean;
  }
  rep.check("cleanup", clean, "a buffer could not be restored or freed");
  pkvm_ioc_call nc{};
  nc.fn = PKVM_HC_NULL_FN;
  rep.check("hypervisor-alive", d.ioctl(PKVM_IOC_CALL, &nc) == 0 && nc.ret == 0, "the null call failed");
  return rep.finish();
}

}  // namespace pkvmctl
