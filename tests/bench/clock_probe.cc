// SPDX-License-Identifier: Apache-2.0
// Effective core clock of this machine right now, for reading timed
// benchmark rows (tools/run_bench.sh prints it next to each suite): a chain
// of dependent 64-bit multiplies, 3 cycles each on every x86_64 core since
// Nehalem, timed for ~50 ms. Dependent adds would not do: recent cores
// execute add-immediate chains at rename, faster than one per cycle.
#include <chrono>
#include <cstdint>
#include <cstdio>

int main() {
#if defined(__x86_64__)
  constexpr uint64_t kIters = 4'000'000;  // 4 multiplies each
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    uint64_t x = 3;
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < kIters; ++i)
      asm volatile("imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0" : "+r"(x));
    const auto t1 = std::chrono::steady_clock::now();
    const double ghz = 3.0 * 4 * kIters / std::chrono::duration<double, std::nano>(t1 - t0).count();
    if (ghz > best) best = ghz;
  }
  printf("%.2f\n", best);
  return 0;
#else
  return 1;  // no calibrated chain for this architecture
#endif
}
