// SPDX-License-Identifier: Apache-2.0
// pkvmctl bench: hypercall costs measured in the kernel with CNTVCT_EL0 (one
// sample per iteration, so the median is robust to interrupts), printed as
// ratios to the null hypercall's round trip.
#include <algorithm>
#include <cstring>

#include "args.h"
#include "pkvmctl.h"

namespace pkvmctl {

int cmd_bench(int argc, char** argv) {
  Args a(argc, argv, 2, {"scale"}, {});
  if (a.help()) {
    printf("usage: pkvmctl bench [--scale S]\n"
           "  Times, in the kernel with the virtual counter (CNTVCT_EL0), one iteration at a\n"
           "  time: the null hypercall; host_share_hyp + host_unshare_hyp and\n"
           "  host_donate_hyp + hyp_donate_host of 1 and 512 pages, both inside a 2 MiB block\n"
           "  of the host stage 2 (which a 1-page transition splits and the reverse one\n"
           "  merges again) and in a region already mapped with 4 KiB pages;\n"
           "  host_share_guest + host_unshare_guest of 1 page; guest_create +\n"
           "  host_donate_guest + guest_destroy + host_reclaim_guest of 1 page; and, from\n"
           "  userspace, the ioctl round trip of a null call. Prints min / median / mean\n"
           "  ticks per iteration and the median as a ratio to the null hypercall's.\n"
           "  --scale multiplies the iteration counts (default 1). Lines starting with\n"
           "  PKVMBENCH are for scripts.\n");
    return 0;
  }
  if (!a.error().empty()) {
    fprintf(stderr, "pkvmctl bench: %s\n", a.error().c_str());
    return 1;
  }
  const u64 scale = a.num("scale", 1);
  Device d;
  if (!d.open()) return 1;
  // 1024 pages, 4 MiB aligned: pages 0..511 and 512..1023 are two 2 MiB
  // blocks of the host stage 2. Page 1023 stays shared during the run, so the
  // second block is mapped with 4 KiB pages throughout.
  u64 pfn = 0;
  const u32 buf = d.alloc(1024, &pfn);
  if (!buf) {
    fprintf(stderr, "pkvmctl bench: cannot allocate a buffer\n");
    return 1;
  }
  Call pin_split;
  pin_split.fn = PKVM_HC_HOST_SHARE_HYP_FN;
  pin_split.buf = buf;
  pin_split.page = 1023;
  pin_split.nr = 1;
  const CallResult ps = d.call(pin_split);
  struct Case {
    const char* name;
    u32 op;
    u64 page;
    u64 pages;
    u64 iterations;
  };
  const Case cases[] = {
      {"null hypercall", PKVM_BENCH_NULL, 0, 0, 5000},
      {"share+unshare hyp, in a 2M block", PKVM_BENCH_SHARE_UNSHARE_HYP, 0, 1, 1000},
      {"share+unshare hyp, 4K-mapped", PKVM_BENCH_SHARE_UNSHARE_HYP, 600, 1, 2000},
      {"share+unshare hyp, aligned 2M block", PKVM_BENCH_SHARE_UNSHARE_HYP, 0, 512, 500},
      {"share+unshare hyp, unaligned, mostly 4K", PKVM_BENCH_SHARE_UNSHARE_HYP, 511, 512, 100},
      {"donate+reclaim hyp, in a 2M block", PKVM_BENCH_DONATE_RECLAIM_HYP, 0, 1, 1000},
      {"donate+reclaim hyp, 4K-mapped", PKVM_BENCH_DONATE_RECLAIM_HYP, 600, 1, 2000},
      {"donate+reclaim hyp, aligned 2M block", PKVM_BENCH_DONATE_RECLAIM_HYP, 0, 512, 500},
      {"donate+reclaim hyp, unaligned, mostly 4K", PKVM_BENCH_DONATE_RECLAIM_HYP, 511, 512, 100},
      {"share+unshare guest, 4K-mapped", PKVM_BENCH_SHARE_UNSHARE_GUEST, 600, 1, 2000},
      {"create+donate+destroy+reclaim guest", PKVM_BENCH_DONATE_RECLAIM_GUEST, 600, 1, 1000},
  };
  const u64 freq = cntfrq();
  printf("bench: counter %llu Hz (1 tick = %.1f ns); ticks per iteration, timed in the kernel\n", freq,
         1e9 / double(freq));
  if (ps.err || ps.ret) printf("bench: could not keep page 1023 shared: the 4K-mapped cases may split blocks\n");
  printf("%-40s %5s %6s %8s %8s %8s %10s %8s\n", "operation", "pages", "iters", "min", "median", "mean",
         "median ns", "x null");
  double null_median = 0;
  int rc = 0;
  for (const Case& c : cases) {
    pkvm_ioc_bench b{};
    b.op = c.op;
    b.buf = buf;
    b.page = c.page;
    b.nr_pages = c.pages ? c.pages : 1;
    b.iterations = c.iterations * scale;
    if (int e = d.ioctl(PKVM_IOC_BENCH, &b)) {
      printf("%-40s: failed: %s\n", c.name, strerror(e));
      rc = 1;
      continue;
    }
    if (c.op == PKVM_BENCH_NULL) null_median = double(b.median);
    const double ns = double(b.median) * 1e9 / double(b.freq);
    const double ratio = null_median > 0 ? double(b.median) / null_median : 0;
    printf("%-40s %5llu %6llu %8llu %8llu %8llu %10.0f %8.1f\n", c.name, c.pages, b.iterations, b.min, b.median,
           b.mean, ns, ratio);
    printf("PKVMBENCH op=\"%s\" pages=%llu iterations=%llu min=%llu median=%llu mean=%llu max=%llu freq=%llu "
           "median_ns=%.0f ratio=%.2f\n",
           c.name, c.pages, b.iterations, b.min, b.median, b.mean, b.max, b.freq, ns, ratio);
  }
  pin_split.fn = PKVM_HC_HOST_UNSHARE_HYP_FN;
  d.call(pin_split);
  // The same null call from userspace: adds the syscall and the module's checks.
  const u64 n = 5000 * scale;
  std::vector<u64> t(n);
  for (u64 i = 0; i < n; ++i) {
    pkvm_ioc_call c{};
    c.fn = PKVM_HC_NULL_FN;
    const u64 t0 = cntvct();
    d.ioctl(PKVM_IOC_CALL, &c);
    t[i] = cntvct() - t0;
  }
  std::sort(t.begin(), t.end());
  u64 sum = 0;
  for (u64 v : t) sum += v;
  const double ns = double(t[n / 2]) * 1e9 / double(freq);
  printf("%-40s %5s %6llu %8llu %8llu %8llu %10.0f %8.1f\n", "null via ioctl (userspace)", "-", (unsigned long long)n,
         (unsigned long long)t[0], (unsigned long long)t[n / 2], (unsigned long long)(sum / n), ns,
         null_median > 0 ? double(t[n / 2]) / null_median : 0);
  printf("PKVMBENCH op=\"null via ioctl (userspace)\" pages=0 iterations=%llu min=%llu median=%llu mean=%llu max=%llu "
         "freq=%llu median_ns=%.0f ratio=%.2f\n",
         (unsigned long long)n, (unsigned long long)t[0], (unsigned long long)t[n / 2], (unsigned long long)(sum / n),
         (unsigned long long)t[n - 1], (unsigned long long)freq, ns,
         null_median > 0 ? double(t[n / 2]) / null_median : 0);
  if (d.free_buf(buf)) {
    restore_buffer(d, buf);
    d.free_buf(buf);
  }
  return rc;
}

}  // namespace pkvmctl
