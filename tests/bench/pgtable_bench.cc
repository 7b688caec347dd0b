// SPDX-License-Identifier: Apache-2.0
// Page-table library benchmarks (Google Benchmark, `ninja bench`) on the host
// platform with the recorder in counting mode (no event log, no checker):
//   identity-map 1 GiB with blocks (one 1 GiB block; 512 2 MiB blocks) and
//   with pages (one call; 262144 page-sized calls as host stage-2 faults
//   would do), get_leaf, a walk over a fully populated GiB of pages, unmap of
//   that GiB, relax_perms (changing and no-op).
// Each benchmark reports "ns/op" in a closing summary, where an op is the
// unit named there (a page, a block, a call); the console table also shows
// items/s and TLB invalidations / descriptor writes per op.
// Only the named operation is timed: setup and teardown (building the table
// to walk, unmapping what a map created) run with the timer paused.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "pgtable/pgtable.h"
#include "tests/sim/sim_platform.h"

namespace pkvm {
namespace {

using sim::SimPlatform;

constexpr u64 K4 = 0x1000, M2 = 0x200000, G1 = 0x40000000;
constexpr u64 kPagesPerG = G1 / K4;

struct Env {
  // 2048 pool pages: a page-granular GiB needs 513 table pages + the root.
  Env() : plat(SimPlatform::kDefaultBase, 4096, 2048) {
    plat.set_recording(false);
    init();
  }
  ~Env() { pgt.destroy(); }
  void init() {
    if (pgt.init(Format::kStage2, 40, 1, 1, &plat)) abort();
  }
  void reset() {
    pgt.destroy();
    init();
  }
  int map(u64 ipa, u64 size, u64 pa, u32 prot = kProtRW) {
    return pgt.stage2_map(Ipa(ipa), size, PhysAddr(pa), prot, kMapSkipDcache | kMapSkipIcache);
  }
  SimPlatform plat;
  Pgtable pgt;
};

// Per-op counters over the timed part, and the op count for the summary.
struct Counts {
  Counts(benchmark::State& s, SimPlatform& p, u64 ops_per_iter) : s(s), p(p), ops(ops_per_iter) { resume(); }
  void pause() {
    tlbis += p.tlbi_count() - t0;
    writes += p.pte_write_count() - w0;
  }
  void resume() {
    t0 = p.tlbi_count();
    w0 = p.pte_write_count();
  }
  ~Counts() {
    pause();
    const double n = double(s.iterations()) * double(ops);
    s.SetItemsProcessed(int64_t(n));
    s.counters["ops/iter"] = double(ops);
    s.counters["tlbi/op"] = n ? double(tlbis) / n : 0;
    s.counters["writes/op"] = n ? double(writes) / n : 0;
  }
  benchmark::State& s;
  SimPlatform& p;
  u64 ops, t0 = 0, w0 = 0, tlbis = 0, writes = 0;
};

void fail(benchmark::State& s, int ret, const char* what) {
  s.SkipWithError((std::string(what) + " failed: " + std::to_string(ret)).c_str());
}

// --- Identity-map 1 GiB ------------------------------------------------------

// One map call of 1 GiB at [base, base + 1G): base 1 GiB aligned gives one
// level-1 block (arg 0); base 2 MiB aligned gives 512 level-2 blocks (arg 1).
void BM_IdMap1G_Blocks(benchmark::State& s) {
  Env e;
  const u64 base = s.range(0) ? G1 + M2 : G1;
  Counts c(s, e.plat, s.range(0) ? 512 : 1);
  for (auto _ : s) {
    if (int r = e.map(base, G1, base)) return fail(s, r, "map");
    s.PauseTiming();
    c.pause();
    if (int r = e.pgt.stage2_unmap(Ipa(base), G1)) return fail(s, r, "unmap");
    c.resume();
    s.ResumeTiming();
  }
}
BENCHMARK(BM_IdMap1G_Blocks)->Arg(0)->Arg(1)->ArgName("2M");

// One map call of 1 GiB that can only use pages (output offset by a page
// from the input): 262144 descriptors and 513 new tables.
void BM_Map1G_Pages_OneCall(benchmark::State& s) {
  Env e;
  Counts c(s, e.plat, kPagesPerG);
  for (auto _ : s) {
    if (int r = e.map(G1, G1, 2 * G1 + K4)) return fail(s, r, "map");
    s.PauseTiming();
    c.pause();
    e.reset();
    c.resume();
    s.ResumeTiming();
  }
}
BENCHMARK(BM_Map1G_Pages_OneCall)->Unit(benchmark::kMillisecond);

// Identity map of 1 GiB one page per call, as a stream of host stage-2
// faults would build it (each call walks from the root).
void BM_IdMap1G_PageByPage(benchmark::State& s) {
  Env e;
  Counts c(s, e.plat, kPagesPerG);
  for (auto _ : s) {
    for (u64 ia = G1; ia < 2 * G1; ia += K4)
      if (int r = e.map(ia, K4, ia)) return fail(s, r, "map");
    s.PauseTiming();
    c.pause();
    e.reset();
    c.resume();
    s.ResumeTiming();
  }
}
BENCHMARK(BM_IdMap1G_PageByPage)->Unit(benchmark::kMillisecond);

// --- Lookups and walks over a populated GiB of pages ---------------------------

// get_leaf in a page-granular GiB (a three-level walk from the level-1
// root to a level-3 leaf), at scattered addresses.
void BM_GetLeaf(benchmark::State& s) {
  Env e;
  if (int r = e.map(G1, G1, 2 * G1 + K4)) return fail(s, r, "map");
  std::vector<u64> addrs(4096);
  u64 x = 88172645463325252ull;
  for (u64& a : addrs) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    a = G1 + (x % kPagesPerG) * K4;
  }
  Counts c(s, e.plat, 1);
  size_t i = 0;
  u64 pte = 0;
  u32 level = 0;
  for (auto _ : s) {
    if (e.pgt.get_leaf(addrs[i++ & 4095], &pte, &level)) return fail(s, -1, "get_leaf");
    benchmark::DoNotOptimize(pte);
  }
  if (level != 3) s.SkipWithError("expected a level-3 leaf");
}
BENCHMARK(BM_GetLeaf);

int count_leaf(const VisitCtx& ctx, u32) {
  ++*static_cast<u64*>(ctx.arg);
  return 0;
}

// A read-only walk (leaf visits) over a fully populated GiB of pages.
void BM_Walk1G_Pages(benchmark::State& s) {
  Env e;
  if (int r = e.map(G1, G1, 2 * G1 + K4)) return fail(s, r, "map");
  Counts c(s, e.plat, kPagesPerG);
  u64 n = 0;
  for (auto _ : s) {
    n = 0;
    if (int r = e.pgt.walk(G1, G1, Walker{count_leaf, &n, kWalkLeaf})) return fail(s, r, "walk");
  }
  if (n != kPagesPerG) s.SkipWithError("walk visited the wrong number of leaves");
}
BENCHMARK(BM_Walk1G_Pages)->Unit(benchmark::kMillisecond);

// --- Unmap and permission updates ------------------------------------------------

// Unmap of a page-granular GiB: 262144 breaks with their invalidations, and
// 513 table pages freed.
void BM_Unmap1G_Pages(benchmark::State& s) {
  Env e;
  Counts c(s, e.plat, kPagesPerG);
  for (auto _ : s) {
    s.PauseTiming();
    c.pause();
    if (int r = e.map(G1, G1, 2 * G1 + K4)) return fail(s, r, "map");
    c.resume();
    s.ResumeTiming();
    if (int r = e.pgt.stage2_unmap(Ipa(G1), G1)) return fail(s, r, "unmap");
  }
  if (e.plat.pages_in_use() != 2) s.SkipWithError("unmap left tables behind");
}
BENCHMARK(BM_Unmap1G_Pages)->Unit(benchmark::kMillisecond);

// relax_perms adding write permission to a read-only page (in place, local
// invalidation), over a page-granular GiB; every 262144 calls the GiB is
// write-protected again with the timer paused.
void BM_RelaxPerms(benchmark::State& s) {
  Env e;
  if (int r = e.map(G1, G1, 2 * G1 + K4, kProtR)) return fail(s, r, "map");
  Counts c(s, e.plat, 1);
  u64 i = 0;
  for (auto _ : s) {
    if (i == kPagesPerG) {
      s.PauseTiming();
      c.pause();
      e.pgt.stage2_wrprotect(Ipa(G1), G1);
      i = 0;
      c.resume();
      s.ResumeTiming();
    }
    if (int r = e.pgt.stage2_relax_perms(Ipa(G1 + i++ * K4), kProtW)) return fail(s, r, "relax_perms");
  }
}
BENCHMARK(BM_RelaxPerms);

// relax_perms that finds the permission already there (a spurious fault):
// the walk and compare only.
void BM_RelaxPerms_NoChange(benchmark::State& s) {
  Env e;
  if (int r = e.map(G1, G1, 2 * G1 + K4, kProtRW)) return fail(s, r, "map");
  Counts c(s, e.plat, 1);
  u64 i = 0;
  for (auto _ : s) {
    if (int r = e.pgt.stage2_relax_perms(Ipa(G1 + (i++ % kPagesPerG) * K4), kProtW)) return fail(s, r, "relax");
  }
}
BENCHMARK(BM_RelaxPerms_NoChange);

// --- Summary ----------------------------------------------------------------------

// Prints as usual and keeps each benchmark's real time per op.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred || r.iterations == 0) continue;
      auto it = r.counters.find("ops/iter");
      const double ops = it == r.counters.end() ? 1.0 : double(it->second);
      ns_per_op[r.benchmark_name()] = r.real_accumulated_time * 1e9 / double(r.iterations) / ops;
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> ns_per_op;
};

const std::map<std::string, const char*> kUnits = {
    {"BM_IdMap1G_Blocks/2M:0", "1 GiB block"},
    {"BM_IdMap1G_Blocks/2M:1", "2 MiB block"},
    {"BM_Map1G_Pages_OneCall", "page"},
    {"BM_IdMap1G_PageByPage", "page (one call each)"},
    {"BM_GetLeaf", "lookup"},
    {"BM_Walk1G_Pages", "leaf visited"},
    {"BM_Unmap1G_Pages", "page"},
    {"BM_RelaxPerms", "call"},
    {"BM_RelaxPerms_NoChange", "call"},
};

}  // namespace
}  // namespace pkvm

int main(int argc, char** argv) {
  using namespace pkvm;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  SummaryReporter rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  printf("\npgtable: real time per operation\n");
  for (const auto& [name, ns] : rep.ns_per_op) {
    auto u = kUnits.find(name);
    printf("  %-28s %10.1f ns per %s\n", name.c_str(), ns, u == kUnits.end() ? "op" : u->second);
  }
  return 0;
}
