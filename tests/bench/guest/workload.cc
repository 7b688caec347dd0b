// SPDX-License-Identifier: Apache-2.0
// In-guest workloads of `ninja bench`, timed with the virtual counter
// (CNTVCT_EL0, CNTVOFF_EL2 = 0 in every configuration measured, so at init
// it also reads as the time since the machine started). Prints one line per
// result: "BENCH: <name> <seconds>".
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

uint64_t cntvct() {
  uint64_t v;
  asm volatile("isb; mrs %0, cntvct_el0" : "=r"(v)::"memory");
  return v;
}

uint64_t cntfrq() {
  uint64_t v;
  asm volatile("mrs %0, cntfrq_el0" : "=r"(v));
  return v;
}

double secs(uint64_t ticks) { return double(ticks) / double(cntfrq()); }

void report(const char* name, double s) { std::printf("BENCH: %s %.6f\n", name, s); }

// Touches every page of `mib` MiB of fresh anonymous memory once.
void touch(uint64_t mib) {
  const size_t len = mib << 20;
  const uint64_t t0 = cntvct();
  auto* p = static_cast<volatile char*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  for (size_t off = 0; off < len; off += 4096) p[off] = 1;
  const uint64_t t1 = cntvct();
  munmap(const_cast<char*>(p), len);
  report("touch_512m", secs(t1 - t0));
}

// fork + exec of a trivial program, `n` times.
void forkexec(int n, const char* self) {
  const uint64_t t0 = cntvct();
  for (int i = 0; i < n; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      execl(self, self, "nop", static_cast<char*>(nullptr));
      _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "forkexec: child failed\n");
      std::exit(1);
    }
  }
  report("forkexec_200", secs(cntvct() - t0));
}

// Copies a 64 MiB buffer `rounds` times; reports the time of all rounds.
void copy(int rounds) {
  const size_t len = size_t{64} << 20;
  char* a = static_cast<char*>(std::malloc(len));
  char* b = static_cast<char*>(std::malloc(len));
  std::memset(a, 1, len);
  std::memset(b, 2, len);  // fault both in before timing
  const uint64_t t0 = cntvct();
  for (int i = 0; i < rounds; ++i) std::memcpy(i & 1 ? a : b, i & 1 ? b : a, len);
  const uint64_t t1 = cntvct();
  report("memcpy_64m_x4", secs(t1 - t0));
  std::free(a);
  std::free(b);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s boot | touch | forkexec | memcpy | nop\n", argv[0]);
    return 2;
  }
  const char* what = argv[1];
  if (!std::strcmp(what, "nop")) return 0;
  if (!std::strcmp(what, "boot")) {
    report("boot_to_init", secs(cntvct()));
    return 0;
  }
  if (!std::strcmp(what, "touch")) touch(512);
  else if (!std::strcmp(what, "forkexec")) forkexec(200, argv[0]);
  else if (!std::strcmp(what, "memcpy")) copy(4);
  else {
    std::fprintf(stderr, "unknown workload %s\n", what);
    return 2;
  }
  return 0;
}
