// SPDX-License-Identifier: Apache-2.0
// What this core gives right now, for reading timed benchmark rows
// (tools/run_bench.sh prints it next to each suite):
//  * the effective clock: a chain of dependent 64-bit multiplies, 3 cycles
//    each on every x86_64 core since Nehalem. Dependent adds would not do:
//    recent cores execute add-immediate chains at rename, faster than one
//    per cycle.
//  * with --alu, the integer issue rate as well: eight independent chains of
//    register adds, timed the same way and divided by that clock, in adds
//    per cycle. A latency-bound chain runs at full speed even when the other
//    hardware thread of the core is busy; throughput-bound code (the
//    benchmarks) does not. A core to ourselves issues one per integer ALU
//    port and cycle (4.5-4.8 measured on this project's machines); a busy
//    sibling thread takes a share of them.
// Each figure is the best of five ~50 ms samples.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

constexpr int kReps = 5;

double best_ghz() {
  constexpr uint64_t kIters = 4'000'000;  // 4 multiplies each
  double best = 0;
  for (int rep = 0; rep < kReps; ++rep) {
    uint64_t x = 3;
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < kIters; ++i)
      asm volatile("imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0" : "+r"(x));
    const auto t1 = std::chrono::steady_clock::now();
    const double ghz = 3.0 * 4 * kIters / std::chrono::duration<double, std::nano>(t1 - t0).count();
    if (ghz > best) best = ghz;
  }
  return best;
}

// Register adds per nanosecond over eight independent chains.
double best_adds_per_ns() {
  constexpr uint64_t kIters = 6'000'000;  // 32 adds each (the loop's own two uops are 6% on top)
  double best = 0;
  for (int rep = 0; rep < kReps; ++rep) {
    uint64_t a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8;
    const uint64_t k = 0x9e3779b97f4a7c15ull;
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < kIters; ++i)
      asm volatile(
#define PKVM_ADD8                                                  \
  "add %8, %0\n\tadd %8, %1\n\tadd %8, %2\n\tadd %8, %3\n\t" \
  "add %8, %4\n\tadd %8, %5\n\tadd %8, %6\n\tadd %8, %7\n\t"
          PKVM_ADD8 PKVM_ADD8 PKVM_ADD8 PKVM_ADD8
#undef PKVM_ADD8
          : "+r"(a), "+r"(b), "+r"(c), "+r"(d), "+r"(e), "+r"(f), "+r"(g), "+r"(h)
          : "r"(k));
    const auto t1 = std::chrono::steady_clock::now();
    const double rate = 32.0 * kIters / std::chrono::duration<double, std::nano>(t1 - t0).count();
    if (rate > best) best = rate;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__x86_64__)
  const bool alu = argc > 1 && strcmp(argv[1], "--alu") == 0;
  const double ghz = best_ghz();
  if (!alu) {
    printf("%.2f\n", ghz);
    return 0;
  }
  printf("%.2f GHz, %.2f adds/cycle\n", ghz, best_adds_per_ns() / ghz);
  return 0;
#else
  (void)argc;
  (void)argv;
  return 1;  // no calibrated chain for this architecture
#endif
}
