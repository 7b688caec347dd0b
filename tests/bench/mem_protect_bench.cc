// SPDX-License-Identifier: Apache-2.0
// mem_protect benchmarks (Google Benchmark, `ninja bench`): host abort
// latency, share + unshare of one page and of 512 pages, donate + donate
// back, with the TLB invalidations and barriers each operation issues (the
// SimPlatform recorder in counting mode). Ends with one line per target
// saying whether this machine meets it:
//   host_stage2_idmap <= 150 ns median; share+unshare <= 300 ns (1 page),
//   <= 30 us (512 pages).
// Steady state is what is measured: the tables an operation needs already
// exist (a donated page keeps them alive, as the hypervisor's own memory
// does on a real system), so no iteration allocates unless noted.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "tests/mem_protect/mp_env.h"

namespace pkvm::test {
namespace {

constexpr u64 kShift = desc::kPageShift;

EnvConfig bench_config() {
  EnvConfig c;
  c.attach_bbm = false;  // the checker would see (and lock for) every event
  return c;
}

struct BenchEnv {
  BenchEnv() : env(bench_config()) {
    if (env.init_ret || env.add_ret) {
      fprintf(stderr, "mem_protect init failed: %d %d\n", env.init_ret, env.add_ret);
      abort();
    }
    env.plat.set_recording(false);  // counting mode: counters only, no log
    env.plat.set_pte_write_counting(false);  // no descriptor-write hook, as at EL2
  }
  // Donates one page to the hypervisor so the host and hyp tables around it
  // stay allocated.
  void anchor(u64 addr) {
    if (env.mp.host_donate_hyp(addr >> kShift, 1)) abort();
  }
  Env env;
};

// Recorder counters over the timed part of a benchmark.
struct Counts {
  explicit Counts(sim::SimPlatform& p) : p(p) { resume(); }
  void pause() {
    tlbis += p.tlbi_count() - t0;
    barriers += p.barrier_count() - b0;
  }
  void resume() {
    t0 = p.tlbi_count();
    b0 = p.barrier_count();
  }
  void report(benchmark::State& s) {
    pause();
    s.counters["tlbi/op"] = benchmark::Counter(double(tlbis), benchmark::Counter::kAvgIterations);
    s.counters["barrier/op"] = benchmark::Counter(double(barriers), benchmark::Counter::kAvgIterations);
  }
  sim::SimPlatform& p;
  u64 t0 = 0, b0 = 0, tlbis = 0, barriers = 0;
};

void check(benchmark::State& s, int ret, const char* what) {
  if (ret) s.SkipWithError((std::string(what) + " failed: " + std::to_string(ret)).c_str());
}

// Each case is a fixture: the constructor sets up the steady state, step()
// is one timed operation (0 on success), and refill() (when due() says so)
// restores what the steps used up, outside the timing. The same fixtures run
// under Google Benchmark and, with --count=CASE, in the instruction-count
// mode that tools/bench_ir.sh runs under callgrind (step() is the function
// it measures): instruction counts do not drift with this machine's load.
#define PKVM_STEP __attribute__((noinline))

// host_stage2_idmap of a page: fresh 4 KiB faults inside 2 MiB windows whose
// level-3 tables exist (a donated page at each window's start, so the
// largest fitting mapping is a page). When every window is mapped they are
// unmapped outside the timing.
struct IdmapPage {
  static constexpr u64 kWindows = 16, kBase = 0x50000000;
  IdmapPage() {
    for (u64 w = 0; w < kWindows; ++w) b.anchor(kBase + w * k2M);
  }
  PKVM_STEP int step() {
    const int ret = b.env.mp.host_stage2_idmap(kBase + w * k2M + page * kPage);
    if (++page == 512) {
      page = 1;
      ++w;
    }
    return ret;
  }
  bool due() const { return w == kWindows; }
  void refill() {
    w = 0;
    for (u64 i = 0; i < kWindows; ++i) b.env.mp.host_pgt().stage2_unmap(Ipa(kBase + i * k2M + kPage), k2M - kPage);
  }
  BenchEnv b;
  u64 w = 0, page = 1;
};

// host_stage2_idmap of a 2 MiB block inside an existing level-2 table
// (R0's, kept by an anchor in its last 2 MiB).
struct IdmapBlock2M {
  static constexpr u64 kBase = 0x40000000, kBlocks = 511;
  IdmapBlock2M() { b.anchor(kBase + k1G - kPage); }
  PKVM_STEP int step() { return b.env.mp.host_stage2_idmap(kBase + blk++ * k2M); }
  bool due() const { return blk == kBlocks; }
  void refill() {
    blk = 0;
    b.env.mp.host_pgt().stage2_unmap(Ipa(kBase), kBlocks * k2M);
  }
  BenchEnv b;
  u64 blk = 0;
};

// host_share_hyp + host_unshare_hyp of `nr` pages at page offset `off` from
// a 2 MiB boundary, next to an anchor in the same 1 GiB. One page: in the
// anchor's 2 MiB (its level-3 tables exist on both sides). 512 pages: the
// next 2 MiB (block at level 2; or pages across two level-3 tables when not
// aligned).
struct ShareUnshareHyp {
  static constexpr u64 kAnchor = 0x51000000;
  ShareUnshareHyp(u64 nr, u64 off)
      : nr(nr), pfn((nr == 1 ? kAnchor + kPage : kAnchor + k2M + off * kPage) >> kShift) {
    b.anchor(kAnchor);
  }
  PKVM_STEP int step() {
    int ret = b.env.mp.host_share_hyp(pfn, nr);
    return ret ? ret : b.env.mp.host_unshare_hyp(pfn, nr);
  }
  bool due() const { return false; }
  void refill() {}
  BenchEnv b;
  u64 nr, pfn;
};

// host_donate_hyp + hyp_donate_host (which zeroes the page) of one page next
// to an anchor, inside the arena's data pages: hyp_donate_host zeroes the
// page through the hypervisor's mapping, so it must be real (simulated) memory.
struct DonateDonateBack {
  DonateDonateBack() : anchor(b.env.plat.data_base().value() + k2M), pfn((anchor + kPage) >> kShift) {
    b.anchor(anchor);
  }
  PKVM_STEP int step() {
    int ret = b.env.mp.host_donate_hyp(pfn, 1);
    return ret ? ret : b.env.mp.hyp_donate_host(pfn, 1);
  }
  bool due() const { return false; }
  void refill() {}
  BenchEnv b;
  u64 anchor, pfn;
};

// host_share_guest + host_unshare_guest of one page (for comparison); a
// second shared page keeps the guest's tables.
struct ShareUnshareGuest {
  static constexpr u64 kAnchor = 0x54000000;
  ShareUnshareGuest() {
    b.anchor(kAnchor);
    g = b.env.mp.guest_create();
    if (g < 0 || b.env.mp.host_share_guest(u32(g), (kAnchor >> kShift) + 2, 0x100, 1)) abort();
  }
  PKVM_STEP int step() {
    int ret = b.env.mp.host_share_guest(u32(g), pfn, 0x101, 1);
    return ret ? ret : b.env.mp.host_unshare_guest(u32(g), 0x101, 1);
  }
  bool due() const { return false; }
  void refill() {}
  BenchEnv b;
  int g = -1;
  u64 pfn = (kAnchor + kPage) >> kShift;
};

// Times `Fixture::step`, with its TLBIs and barriers per operation.
template <typename Fixture, typename... Args>
void run(benchmark::State& s, Args... args) {
  Fixture f(args...);
  Counts c(f.b.env.plat);
  for (auto _ : s) {
    const int ret = f.step();
    if (ret) {
      check(s, ret, "operation");
      break;
    }
    if (f.due()) {
      s.PauseTiming();
      c.pause();
      f.refill();
      c.resume();
      s.ResumeTiming();
    }
  }
  c.report(s);
}

void BM_HostStage2Idmap_Page(benchmark::State& s) { run<IdmapPage>(s); }
BENCHMARK(BM_HostStage2Idmap_Page)->Unit(benchmark::kNanosecond)->Repetitions(5)->MinTime(0.2);
void BM_HostStage2Idmap_Block2M(benchmark::State& s) { run<IdmapBlock2M>(s); }
BENCHMARK(BM_HostStage2Idmap_Block2M)->Unit(benchmark::kNanosecond)->Repetitions(5)->MinTime(0.2);
void BM_ShareUnshareHyp(benchmark::State& s) {
  run<ShareUnshareHyp>(s, u64(s.range(0)), u64(s.range(1)));
  s.SetItemsProcessed(s.iterations() * s.range(0));
}
BENCHMARK(BM_ShareUnshareHyp)->Args({1, 0})->Unit(benchmark::kNanosecond)->Repetitions(5)->MinTime(0.2);
BENCHMARK(BM_ShareUnshareHyp)->Args({512, 0})->Unit(benchmark::kMicrosecond)->Repetitions(5)->MinTime(0.2);
BENCHMARK(BM_ShareUnshareHyp)->Args({512, 1})->Unit(benchmark::kMicrosecond)->Repetitions(5)->MinTime(0.2);
void BM_DonateDonateBack(benchmark::State& s) { run<DonateDonateBack>(s); }
BENCHMARK(BM_DonateDonateBack)->Unit(benchmark::kNanosecond)->Repetitions(5)->MinTime(0.2);
void BM_ShareUnshareGuest(benchmark::State& s) { run<ShareUnshareGuest>(s); }
BENCHMARK(BM_ShareUnshareGuest)->Unit(benchmark::kNanosecond)->Repetitions(5)->MinTime(0.2);

// --count=CASE: `n` steps of one case after two warm-up steps, for
// tools/bench_ir.sh (which counts step() only: refills in between are not
// counted, as they are not timed).
template <typename Fixture, typename... Args>
int count_steps(long n, Args... args) {
  Fixture f(args...);
  for (int i = 0; i < 2; ++i)
    if (f.step()) return 1;
  for (long i = 0; i < n; ++i) {
    if (f.step()) return 1;
    if (f.due()) f.refill();
  }
  return 0;
}

int count_case(const std::string& name, long n) {
  if (name == "idmap_page") return count_steps<IdmapPage>(n);
  if (name == "idmap_block2m") return count_steps<IdmapBlock2M>(n);
  if (name == "share_unshare_1") return count_steps<ShareUnshareHyp>(n, u64{1}, u64{0});
  if (name == "share_unshare_512_aligned") return count_steps<ShareUnshareHyp>(n, u64{512}, u64{0});
  if (name == "share_unshare_512_unaligned") return count_steps<ShareUnshareHyp>(n, u64{512}, u64{1});
  if (name == "donate_donate_back") return count_steps<DonateDonateBack>(n);
  if (name == "share_unshare_guest") return count_steps<ShareUnshareGuest>(n);
  fprintf(stderr, "mem_protect_bench: unknown case '%s'\n", name.c_str());
  return 2;
}

// --- Targets -------------------------------------------------------------------

double to_ns(double v, benchmark::TimeUnit u) {
  switch (u) {
    case benchmark::kNanosecond: return v;
    case benchmark::kMicrosecond: return v * 1e3;
    case benchmark::kMillisecond: return v * 1e6;
    case benchmark::kSecond: return v * 1e9;
  }
  return v;
}

// Prints as usual and keeps each benchmark's median real time.
class TargetReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs)
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name == "median" && !r.error_occurred) {
        benchmark::BenchmarkName n = r.run_name;
        n.repetitions.clear();
        n.min_time.clear();
        medians[n.str()] = to_ns(r.GetAdjustedRealTime(), r.time_unit);
      }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> medians;
};

struct Target {
  const char* what;
  const char* bench;
  double limit_ns;
};
const Target kTargets[] = {
    {"host_stage2_idmap (4 KiB fault)", "BM_HostStage2Idmap_Page", 150},
    {"share+unshare, 1 page", "BM_ShareUnshareHyp/1/0", 300},
    {"share+unshare, 512 pages (2 MiB aligned)", "BM_ShareUnshareHyp/512/0", 30000},
    {"share+unshare, 512 pages (unaligned)", "BM_ShareUnshareHyp/512/1", 30000},
};

}  // namespace
}  // namespace pkvm::test

int main(int argc, char** argv) {
  using namespace pkvm::test;
  // --count=CASE [--steps=N]: instruction-count mode (see count_case).
  if (argc >= 2 && std::string(argv[1]).rfind("--count=", 0) == 0) {
    const long n = argc >= 3 && std::string(argv[2]).rfind("--steps=", 0) == 0 ? atol(argv[2] + 8) : 1000;
    return count_case(argv[1] + 8, n);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  TargetReporter rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  printf("\nTargets (median real time per operation):\n");
  for (const Target& t : kTargets) {
    auto it = rep.medians.find(t.bench);
    if (it == rep.medians.end()) {
      printf("TARGET %-42s not run\n", t.what);
      continue;
    }
    const double v = it->second;
    printf("TARGET %-42s %10.1f ns <= %8.0f ns: %s\n", t.what, v, t.limit_ns, v <= t.limit_ns ? "met" : "NOT MET");
  }
  return 0;
}
