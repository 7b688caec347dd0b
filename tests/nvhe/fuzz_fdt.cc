// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the FDT reader: parse(), get_prop(), total_size() and
// add_memreserve() on arbitrary bytes. The input is copied into an
// exactly-sized heap buffer so ASan flags any read past it. Beyond "no
// crash", it checks a round-trip property: when parse() accepts the input,
// add_memreserve()'s output must parse to the same BootInfo plus the added
// /memreserve/ entries.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "nvhe/fdt.h"

namespace {

using namespace pkvm;
using namespace pkvm::fdt;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool same_except_reserved(const BootInfo& a, const BootInfo& b) {
  if (a.nr_mem != b.nr_mem || a.nr_cpus != b.nr_cpus || a.psci != b.psci || a.uart_base != b.uart_base ||
      a.uart_size != b.uart_size || a.initrd_start != b.initrd_start || a.initrd_end != b.initrd_end ||
      a.verbose != b.verbose || a.selftest != b.selftest || a.test_exit != b.test_exit)
    return false;
  for (u32 i = 0; i < a.nr_mem; ++i)
    if (a.mem[i].base != b.mem[i].base || a.mem[i].size != b.mem[i].size) return false;
  for (u32 i = 0; i < a.nr_cpus; ++i)
    if (a.cpu_mpidr[i] != b.cpu_mpidr[i]) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<u8[]> in(new u8[size ? size : 1]);
  if (size) std::memcpy(in.get(), data, size);

  BootInfo bi;
  const char* err = nullptr;
  const int rc = parse(in.get(), size, &bi, &err);
  check(rc == 0 || rc == -kEINVAL || rc == -kE2BIG);
  check(rc == 0 || (err && std::strncmp(err, "fdt: ", 5) == 0));

  const u64 total = total_size(in.get(), size);
  check(total <= size);
  if (rc == 0) check(total != 0);

  u32 len = 0;
  const void* p = get_prop(in.get(), size, "/chosen", "stdout-path", &len);
  if (p) check(static_cast<const u8*>(p) >= in.get() && static_cast<const u8*>(p) + len <= in.get() + size);
  p = get_prop(in.get(), size, "/memory", "reg", &len);
  if (p) check(static_cast<const u8*>(p) >= in.get() && static_cast<const u8*>(p) + len <= in.get() + size);

  // Two entries; the new size can grow by 32 bytes plus a re-laid header.
  const Reserved add[2] = {{0x40000000, 0x1000, false}, {0x80000000, 0x200000, true}};
  const u64 dst_size = total + 64;
  std::unique_ptr<u8[]> dst(new u8[dst_size]);
  const s64 n = add_memreserve(in.get(), size, dst.get(), dst_size, add, 2);
  check(n > 0 || n == -kEINVAL || n == -kE2BIG);
  check(n <= static_cast<s64>(dst_size));
  if (n > 0) {
    // Re-parse from an exactly-sized copy.
    std::unique_ptr<u8[]> out(new u8[n]);
    std::memcpy(out.get(), dst.get(), n);
    BootInfo bi2;
    const char* err2 = nullptr;
    const int rc2 = parse(out.get(), n, &bi2, &err2);
    if (rc == 0 && bi.nr_reserved + 2 <= kMaxReserved) {
      check(rc2 == 0);
      check(same_except_reserved(bi, bi2));
      check(bi2.nr_reserved == bi.nr_reserved + 2);
    }
  }
  return 0;
}
