// SPDX-License-Identifier: Apache-2.0
// Concurrent host aborts (issue: shared walkers under a shared lock) against
// the same code with aborts serialised on the exclusive lock. Threads fault
// every page of their own range (disjoint) or of one common range (shared);
// each fault maps one page in an existing table, so no allocation muddies
// the comparison. Reports aborts per second and the 2-thread speed-up.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/mem_protect/mp_env.h"

namespace pkvm::test {
namespace {

constexpr u64 kPagesPerThread = 262144;  // 1 GiB: 512 tables of 512 pages, ~30 ms a thread
constexpr u64 k2Mpages = 512;

std::map<std::string, double> g_rate;  // "mode/threads/layout" -> aborts per second

// One environment per run: pages faulted once each. The first page of every
// 2 MiB is given to the hypervisor so its table stays and every fault maps a
// single page.
double run(bool exclusive, int threads, bool disjoint) {
  EnvConfig c;
  c.attach_bbm = false;
  c.exclusive_aborts = exclusive;
  c.pool_pages = 4 * (kPagesPerThread / k2Mpages) + 64;  // host and hyp level-3 tables, two threads
  c.arena_pages = c.pool_pages + 2 * kPagesPerThread;
  c.regions = {{c.arena_base, c.arena_pages << desc::kPageShift, 0}};
  Env e(c);
  e.plat.set_recording(false);
  const u64 first = e.data_pfn();
  const u64 total = disjoint ? kPagesPerThread * u64(threads) : kPagesPerThread;
  for (u64 p = first; p < first + total; p += k2Mpages) {
    if (e.mp.host_donate_hyp(p, 1) != 0) std::abort();
  }
  // Touch one page per 2 MiB so the L3 tables exist before timing.
  for (u64 p = first + 1; p < first + total; p += k2Mpages) e.mp.host_stage2_idmap(p << desc::kPageShift);
  // The clock starts when every thread is running (a spin barrier), so
  // thread creation and wake-up are not counted as abort time.
  std::vector<std::thread> ts;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      const u64 base = disjoint ? first + u64(t) * kPagesPerThread : first;
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      for (u64 p = base; p < base + kPagesPerThread; ++p) e.mp.host_stage2_idmap(p << desc::kPageShift);
    });
  }
  while (ready.load() < threads) {
  }
  const auto t0 = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (auto& th : ts) th.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(kPagesPerThread) * threads / secs;
}

void BM_Aborts(benchmark::State& state) {
  const bool exclusive = state.range(0);
  const int threads = int(state.range(1));
  const bool disjoint = state.range(2);
  double best = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const double rate = run(exclusive, threads, disjoint);
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    best = rate > best ? rate : best;
  }
  state.counters["aborts_per_s"] = best;
  g_rate[std::string(exclusive ? "exclusive" : "shared") + "/" + std::to_string(threads) + "/" +
         (disjoint ? "disjoint" : "same")] = best;
}
BENCHMARK(BM_Aborts)
    ->ArgNames({"exclusive", "threads", "disjoint"})
    ->ArgsProduct({{0, 1}, {1, 2}, {1, 0}})
    ->UseManualTime()
    ->Iterations(5)
    ->Unit(benchmark::kMillisecond);

// Churn: random share / donate / guest traffic over the data area, then
// everything returned to the host. Compares the table pages in use and the
// host aborts needed to touch every page again with a fresh start.
struct ChurnResult {
  u64 fresh_tables, fresh_aborts, churn_tables_peak, after_tables, after_aborts, heals;
};

u64 touch_all(Env& e, u64 first, u64 nr) {
  const MemProtectStats before = e.mp.stats();
  for (u64 p = first; p < first + nr; ++p) e.mp.host_stage2_idmap(p << desc::kPageShift);
  const MemProtectStats after = e.mp.stats();
  u64 n = 0;
  for (u32 l = 0; l < 4; ++l) n += after.host_aborts[l] - before.host_aborts[l];
  return n;
}

ChurnResult churn(int ops) {
  EnvConfig c;
  c.attach_bbm = false;
  c.pool_pages = 4096;
  c.arena_pages = 4096 + 8192;  // 32 MiB of data pages
  ChurnResult r{};
  {
    Env fresh(c);
    r.fresh_aborts = touch_all(fresh, fresh.data_pfn(), fresh.plat.data_pages());
    r.fresh_tables = fresh.mp.host_pgt().stats().table_pages;
  }
  Env e(c);
  e.plat.set_recording(false);
  const u64 first = e.data_pfn(), nr = e.plat.data_pages();
  touch_all(e, first, nr);
  std::mt19937_64 rng(7);
  const int g = e.mp.guest_create();
  for (int i = 0; i < ops; ++i) {
    const u64 p = first + rng() % (nr - 16), n = 1 + rng() % 16;
    switch (rng() % 4) {
      case 0: e.mp.host_share_hyp(p, n); break;
      case 1: e.mp.host_donate_hyp(p, n); break;
      case 2: e.mp.host_share_guest(u32(g), p, p - first, n); break;
      default: e.mp.host_donate_guest(u32(g), p, p - first, n); break;
    }
    const u64 t = e.mp.host_pgt().stats().table_pages;
    r.churn_tables_peak = t > r.churn_tables_peak ? t : r.churn_tables_peak;
  }
  // Everything back to the host.
  for (u64 p = first; p < first + nr; ++p) {
    e.mp.host_unshare_hyp(p, 1);
    e.mp.hyp_donate_host(p, 1);
  }
  e.mp.guest_destroy(u32(g));
  for (u64 p = first; p < first + nr; ++p) e.mp.host_reclaim_guest(u32(g), p, 1);
  r.after_tables = e.mp.host_pgt().stats().table_pages;
  r.after_aborts = touch_all(e, first, nr);
  r.heals = e.mp.stats().heals;
  return r;
}

}  // namespace
}  // namespace pkvm::test

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  using pkvm::test::g_rate;
  for (const char* layout : {"disjoint", "same"}) {
    for (const char* mode : {"shared", "exclusive"}) {
      const double one = g_rate[std::string(mode) + "/1/" + layout];
      const double two = g_rate[std::string(mode) + "/2/" + layout];
      if (one > 0) std::printf("aborts %-9s %-8s: 1 thread %.0f/s, 2 threads %.0f/s, speed-up %.2fx\n", mode, layout, one, two, two / one);
    }
  }
  // The target, measured in paired rounds: 1 thread, 2 threads shared and 2
  // threads exclusive back to back, the ratio taken within each round, and
  // the median over rounds. Rates on this shared 2-vCPU machine drift by up
  // to 2x between runs seconds apart; a ratio of neighbours does not.
  constexpr int kRounds = 15;
  std::vector<double> scales, ratios;
  std::printf("paired rounds (disjoint ranges): 1 thread, 2 threads shared, 2 threads exclusive (aborts/s)\n");
  for (int i = 0; i < kRounds; ++i) {
    const double one = pkvm::test::run(false, 1, true), two = pkvm::test::run(false, 2, true),
                 excl = pkvm::test::run(true, 2, true);
    scales.push_back(two / one);
    ratios.push_back(two / excl);
    std::printf("  round %d: %.0f %.0f %.0f -> speed-up %.2fx, vs exclusive %.2fx\n", i + 1, one, two, excl, two / one,
                two / excl);
  }
  std::sort(scales.begin(), scales.end());
  std::sort(ratios.begin(), ratios.end());
  const double scale = scales[kRounds / 2], ratio = ratios[kRounds / 2];
  const pkvm::test::ChurnResult c = pkvm::test::churn(20000);
  std::printf("churn (20000 random share/donate/guest operations over 32 MiB, then all returned to the host):\n");
  std::printf("  host stage-2 table pages: fresh %llu, peak during churn %llu, after %llu (%s)\n",
              (unsigned long long)c.fresh_tables, (unsigned long long)c.churn_tables_peak,
              (unsigned long long)c.after_tables, c.after_tables == c.fresh_tables ? "equal: met" : "NOT met");
  std::printf("  host aborts to touch every page again: fresh boot %llu, after churn %llu (%s); heals %llu\n",
              (unsigned long long)c.fresh_aborts, (unsigned long long)c.after_aborts,
              c.after_aborts <= c.fresh_aborts ? "met" : "NOT met", (unsigned long long)c.heals);
  std::printf("TARGET 2-thread disjoint shared vs 1 thread >= 1.7x: median %.2fx (min %.2fx, max %.2fx over %d rounds) %s "
              "(vs exclusive lock at 2 threads: median %.2fx)\n",
              scale, scales.front(), scales.back(), kRounds, scale >= 1.7 ? "met" : "NOT met", ratio);
  return 0;
}
