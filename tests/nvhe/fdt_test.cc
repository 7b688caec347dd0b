// SPDX-License-Identifier: Apache-2.0
// Tests of the bounds-checked FDT reader: fixtures compiled by dtc, a real
// QEMU virt DTB, malformed blobs made by corrupting valid ones (each must
// fail with the right errno and message), and add_memreserve round trips.
#include "nvhe/fdt.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace pkvm::fdt {
namespace {

using Blob = std::vector<u8>;

std::string fixture_dir() {
  const char* d = std::getenv("NVHE_FIXTURES");
  return d ? d : "out/host/tests/nvhe/fixtures";
}

Blob load(const std::string& name) {
  std::ifstream f(fixture_dir() + "/" + name, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing fixture " << name << " (run from the repository root)";
  return Blob(std::istreambuf_iterator<char>(f), {});
}

u32 be32(const Blob& b, size_t off) {
  return u32{b.at(off)} << 24 | u32{b.at(off + 1)} << 16 | u32{b.at(off + 2)} << 8 | b.at(off + 3);
}

void set_be32(Blob& b, size_t off, u32 v) {
  b.at(off) = static_cast<u8>(v >> 24);
  b.at(off + 1) = static_cast<u8>(v >> 16);
  b.at(off + 2) = static_cast<u8>(v >> 8);
  b.at(off + 3) = static_cast<u8>(v);
}

void set_be64(Blob& b, size_t off, u64 v) {
  set_be32(b, off, static_cast<u32>(v >> 32));
  set_be32(b, off + 4, static_cast<u32>(v));
}

// Header field offsets.
constexpr size_t kTotal = 4, kOffStruct = 8, kOffStrings = 12, kOffRsv = 16, kVersion = 20, kSizeStrings = 32,
                 kSizeStruct = 36;

// Offset of the first token `tok` at or after the struct block start
// (walking tokens properly, so property values are never misread).
size_t find_token(const Blob& b, u32 tok, int nth = 0) {
  size_t pos = be32(b, kOffStruct);
  const size_t end = pos + be32(b, kSizeStruct);
  while (pos < end) {
    const u32 t = be32(b, pos);
    if (t == tok && nth-- == 0) return pos;
    switch (t) {
      case 1: {
        size_t n = pos + 4;
        while (b.at(n)) ++n;
        pos = (n + 1 + 3) & ~size_t{3};
        break;
      }
      case 3:
        pos = (pos + 12 + be32(b, pos + 4) + 3) & ~size_t{3};
        break;
      default:
        pos += 4;
    }
  }
  ADD_FAILURE() << "token " << tok << " not found";
  return 0;
}

std::string hex(u64 v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

struct Result {
  int rc;
  std::string err;
};

Result run_parse(const Blob& b, u64 max = ~u64{0}, BootInfo* out = nullptr) {
  // An exactly-sized heap copy, so the sanitizer build catches over-reads.
  std::vector<u8> copy(b);
  BootInfo info;
  const char* err = nullptr;
  const int rc = parse(copy.data(), max == ~u64{0} ? copy.size() : max, out ? out : &info, &err);
  return {rc, rc ? (err ? err : "(null)") : ""};
}

#define EXPECT_PARSE_ERROR(blob, code, substr)                                  \
  do {                                                                          \
    const Result r_ = run_parse(blob);                                          \
    EXPECT_EQ(r_.rc, code) << r_.err;                                           \
    EXPECT_NE(r_.err.find(substr), std::string::npos) << "message: " << r_.err; \
  } while (0)

// A tiny FDT writer for shapes dtc refuses to produce (deep nesting,
// too many cpus, bad values). Layout like dtc: header, memreserve, struct,
// strings.
class Builder {
 public:
  Builder& begin(const std::string& name) {
    tok(1);
    for (char c : name) st_.push_back(static_cast<u8>(c));
    st_.push_back(0);
    pad();
    return *this;
  }
  Builder& end() {
    tok(2);
    return *this;
  }
  Builder& prop(const std::string& name, const Blob& val) {
    tok(3);
    tok(static_cast<u32>(val.size()));
    tok(name_off(name));
    st_.insert(st_.end(), val.begin(), val.end());
    pad();
    return *this;
  }
  Builder& prop_str(const std::string& name, const std::string& s) {
    Blob v(s.begin(), s.end());
    v.push_back(0);
    return prop(name, v);
  }
  Builder& prop_cells(const std::string& name, std::initializer_list<u32> cells) {
    Blob v;
    for (u32 c : cells) {
      v.resize(v.size() + 4);
      set_be32(v, v.size() - 4, c);
    }
    return prop(name, v);
  }
  Builder& raw(u32 t) {
    tok(t);
    return *this;
  }
  Blob finish(bool with_end = true) {
    if (with_end) tok(9);
    Blob b(40 + 16);
    set_be32(b, 0, 0xd00dfeed);
    set_be32(b, kOffRsv, 40);
    set_be32(b, kOffStruct, 56);
    b.insert(b.end(), st_.begin(), st_.end());
    set_be32(b, kOffStrings, static_cast<u32>(b.size()));
    b.insert(b.end(), strs_.begin(), strs_.end());
    set_be32(b, kTotal, static_cast<u32>(b.size()));
    set_be32(b, kVersion, 17);
    set_be32(b, 24, 16);
    set_be32(b, kSizeStrings, static_cast<u32>(strs_.size()));
    set_be32(b, kSizeStruct, static_cast<u32>(st_.size()));
    return b;
  }

 private:
  void tok(u32 v) {
    st_.resize(st_.size() + 4);
    set_be32(st_, st_.size() - 4, v);
  }
  void pad() {
    while (st_.size() % 4) st_.push_back(0);
  }
  u32 name_off(const std::string& n) {
    const u32 off = static_cast<u32>(strs_.size());
    strs_.insert(strs_.end(), n.begin(), n.end());
    strs_.push_back(0);
    return off;
  }
  Blob st_, strs_;
};

// A root with 2/1 cells, one memory node and one cpu: the base for built cases.
Builder& minimal_root(Builder& b) {
  b.begin("").prop_cells("#address-cells", {2}).prop_cells("#size-cells", {1});
  b.begin("memory@40000000").prop_str("device_type", "memory").prop_cells("reg", {0, 0x40000000, 0x1000000}).end();
  return b;
}

// ---------------------------------------------------------------------------
// Valid blobs.

void expect_basic(const BootInfo& bi) {
  ASSERT_EQ(bi.nr_mem, 3u);
  EXPECT_EQ(bi.mem[0].base, 0x40000000u);
  EXPECT_EQ(bi.mem[0].size, 0x20000000u);
  EXPECT_EQ(bi.mem[1].base, 0x880000000u);
  EXPECT_EQ(bi.mem[1].size, 0x100000000u);
  EXPECT_EQ(bi.mem[2].base, 0x100000000u);
  EXPECT_EQ(bi.mem[2].size, 0x10000000u);
  for (u32 i = 0; i < bi.nr_mem; ++i) EXPECT_EQ(bi.mem[i].flags, 0u);

  ASSERT_EQ(bi.nr_reserved, 4u);
  EXPECT_EQ(bi.reserved[0].base, 0x48000000u);
  EXPECT_EQ(bi.reserved[0].size, 0x10000u);
  EXPECT_FALSE(bi.reserved[0].no_map);
  EXPECT_EQ(bi.reserved[1].base, 0x49000000u);
  EXPECT_EQ(bi.reserved[1].size, 0x2000u);
  EXPECT_FALSE(bi.reserved[1].no_map);
  EXPECT_EQ(bi.reserved[2].base, 0x5e000000u);
  EXPECT_EQ(bi.reserved[2].size, 0x100000u);
  EXPECT_TRUE(bi.reserved[2].no_map);
  EXPECT_EQ(bi.reserved[3].base, 0x50000000u);
  EXPECT_EQ(bi.reserved[3].size, 0x800000u);
  EXPECT_FALSE(bi.reserved[3].no_map);

  ASSERT_EQ(bi.nr_cpus, 3u);
  EXPECT_EQ(bi.cpu_mpidr[0], 0u);
  EXPECT_EQ(bi.cpu_mpidr[1], 0x100u);
  EXPECT_EQ(bi.cpu_mpidr[2], 0x100000000u);

  EXPECT_EQ(bi.psci, PsciMethod::kHvc);
  // serial0 -> /soc@0/serial@1000, translated through soc's ranges.
  EXPECT_EQ(bi.uart_base, 0x20001000u);
  EXPECT_EQ(bi.uart_size, 0x1000u);
  EXPECT_EQ(bi.initrd_start, 0x48800000u);
  EXPECT_EQ(bi.initrd_end, 0x48900000u);
  EXPECT_TRUE(bi.verbose);
  EXPECT_FALSE(bi.selftest);
  EXPECT_TRUE(bi.test_exit);
}

TEST(FdtParse, Basic) {
  const Blob b = load("basic.dtb");
  BootInfo bi;
  const Result r = run_parse(b, ~u64{0}, &bi);
  ASSERT_EQ(r.rc, 0) << r.err;
  expect_basic(bi);
}

TEST(FdtParse, Version16Header) {
  const Blob b = load("basic_v16.dtb");
  ASSERT_EQ(be32(b, kVersion), 16u);
  BootInfo bi;
  const Result r = run_parse(b, ~u64{0}, &bi);
  ASSERT_EQ(r.rc, 0) << r.err;
  expect_basic(bi);
}

TEST(FdtParse, Cells32AndPl011Fallback) {
  const Blob b = load("cells32.dtb");
  BootInfo bi;
  const Result r = run_parse(b, ~u64{0}, &bi);
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_EQ(bi.nr_mem, 1u);
  EXPECT_EQ(bi.mem[0].base, 0x80000000u);
  EXPECT_EQ(bi.mem[0].size, 0x40000000u);
  EXPECT_EQ(bi.nr_reserved, 0u);
  ASSERT_EQ(bi.nr_cpus, 1u);  // the "fail" cpu is skipped
  EXPECT_EQ(bi.cpu_mpidr[0], 0u);
  EXPECT_EQ(bi.psci, PsciMethod::kNone);
  EXPECT_EQ(bi.uart_base, 0x1c090000u);  // the disabled pl011 is skipped
  EXPECT_EQ(bi.uart_size, 0x1000u);
  EXPECT_EQ(bi.initrd_start, 0x81000000u);
  EXPECT_EQ(bi.initrd_end, 0x81200000u);
  EXPECT_FALSE(bi.verbose);
  EXPECT_TRUE(bi.selftest);
  EXPECT_FALSE(bi.test_exit);
}

TEST(FdtParse, DefaultCellsAndFullStdoutPath) {
  const Blob b = load("defaults.dtb");
  BootInfo bi;
  const Result r = run_parse(b, ~u64{0}, &bi);
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_EQ(bi.nr_mem, 1u);
  EXPECT_EQ(bi.mem[0].base, 0x40000000u);
  EXPECT_EQ(bi.mem[0].size, 0x10000000u);
  EXPECT_EQ(bi.uart_base, 0x9000000u);
  EXPECT_EQ(bi.uart_size, 0x100u);
  EXPECT_EQ(bi.initrd_start, 0u);
  EXPECT_EQ(bi.initrd_end, 0u);
}

TEST(FdtParse, QemuVirt) {
  const Blob b = load("qemu_virt.dtb");
  BootInfo bi;
  const Result r = run_parse(b, ~u64{0}, &bi);
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_EQ(bi.nr_mem, 1u);
  EXPECT_EQ(bi.mem[0].base, 0x40000000u);
  EXPECT_EQ(bi.mem[0].size, 3ull << 30);
  ASSERT_EQ(bi.nr_cpus, 4u);
  for (u32 i = 0; i < 4; ++i) EXPECT_EQ(bi.cpu_mpidr[i], i);
  EXPECT_EQ(bi.psci, PsciMethod::kSmc);
  EXPECT_EQ(bi.uart_base, 0x09000000u);
  EXPECT_EQ(bi.uart_size, 0x1000u);
  EXPECT_EQ(bi.nr_reserved, 0u);
  EXPECT_EQ(total_size(b.data(), b.size()), be32(b, kTotal));
}

TEST(FdtParse, QemuVirtCompactedByDtc) {
  const Blob b = load("qemu_virt_compact.dtb");
  BootInfo bi;
  const Result r = run_parse(b, ~u64{0}, &bi);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(bi.nr_cpus, 4u);
  EXPECT_EQ(bi.uart_base, 0x09000000u);
}

TEST(FdtParse, MaxSizeLargerThanTotalsizeIsFine) {
  Blob b = load("basic.dtb");
  const size_t n = b.size();
  b.resize(n + 100, 0xaa);
  BootInfo bi;
  const char* err = nullptr;
  EXPECT_EQ(parse(b.data(), b.size(), &bi, &err), 0) << err;
  EXPECT_EQ(total_size(b.data(), b.size()), n);
}

TEST(FdtParse, UnalignedBlob) {
  const Blob b = load("basic.dtb");
  Blob shifted(b.size() + 1);
  std::memcpy(shifted.data() + 1, b.data(), b.size());
  BootInfo bi;
  const char* err = nullptr;
  ASSERT_EQ(parse(shifted.data() + 1, b.size(), &bi, &err), 0) << err;
  expect_basic(bi);
}

TEST(FdtParse, NestingAtTheBoundIsAccepted) {
  Builder bld;
  minimal_root(bld);
  for (u32 i = 1; i < kMaxDepth; ++i) bld.begin("n" + std::to_string(i));
  for (u32 i = 1; i < kMaxDepth; ++i) bld.end();
  bld.end();
  const Result r = run_parse(bld.finish());
  EXPECT_EQ(r.rc, 0) << r.err;
}

TEST(FdtParse, NopTokensAreSkipped) {
  Builder bld;
  bld.raw(4);
  minimal_root(bld).raw(4).end().raw(4);
  BootInfo bi;
  const Result r = run_parse(bld.finish(), ~u64{0}, &bi);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(bi.nr_mem, 1u);
}

TEST(FdtParse, PsciFoundByCompatible) {
  Builder bld;
  minimal_root(bld);
  bld.begin("firmware").begin("psci-node").prop_str("compatible", "arm,psci-0.2").prop_str("method", "smc").end().end();
  BootInfo bi;
  const Result r = run_parse(bld.end().finish(), ~u64{0}, &bi);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(bi.psci, PsciMethod::kSmc);
}

TEST(FdtParse, ErrorWithoutErrPointer) {
  Blob b = load("basic.dtb");
  b[0] ^= 1;
  BootInfo bi;
  EXPECT_EQ(parse(b.data(), b.size(), &bi, nullptr), -kEINVAL);
  EXPECT_EQ(parse(nullptr, 100, &bi, nullptr), -kEINVAL);
}

// ---------------------------------------------------------------------------
// Header and layout errors.

TEST(FdtMalformed, BadMagic) {
  Blob b = load("basic.dtb");
  set_be32(b, 0, 0xfeedd00d);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "bad magic");
  EXPECT_EQ(total_size(b.data(), b.size()), 0u);
}

TEST(FdtMalformed, TooSmallForHeader) {
  const Blob b = load("basic.dtb");
  const Blob head(b.begin(), b.begin() + 20);
  EXPECT_PARSE_ERROR(head, -kEINVAL, "smaller than the header");
  const Blob three(b.begin(), b.begin() + 3);
  EXPECT_PARSE_ERROR(three, -kEINVAL, "smaller than the header");
}

TEST(FdtMalformed, BadVersion) {
  Blob b = load("basic.dtb");
  set_be32(b, kVersion, 15);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "unsupported version");
  b = load("basic.dtb");
  set_be32(b, 24, 18);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "unsupported last_comp_version");
}

TEST(FdtMalformed, TotalsizeBeyondMaxSize) {
  const Blob b = load("basic.dtb");
  const Result r = run_parse(b, b.size() - 1);
  EXPECT_EQ(r.rc, -kEINVAL);
  EXPECT_NE(r.err.find("totalsize beyond the buffer size"), std::string::npos) << r.err;
  EXPECT_EQ(total_size(b.data(), b.size() - 1), 0u);
  Blob small = b;
  set_be32(small, kTotal, 20);
  EXPECT_PARSE_ERROR(small, -kEINVAL, "totalsize smaller than the header");
}

TEST(FdtMalformed, StructOffsetOutOfRange) {
  Blob b = load("basic.dtb");
  set_be32(b, kOffStruct, static_cast<u32>(b.size() + 4));
  EXPECT_PARSE_ERROR(b, -kEINVAL, "struct block offset out of range");
}

TEST(FdtMalformed, StructSizeBeyondTotalsize) {
  Blob b = load("basic.dtb");
  set_be32(b, kSizeStruct, static_cast<u32>(b.size()));
  EXPECT_PARSE_ERROR(b, -kEINVAL, "struct block extends beyond totalsize");
  set_be32(b, kSizeStruct, 0xfffffffc);  // offset + size overflows 32 bits
  EXPECT_PARSE_ERROR(b, -kEINVAL, "struct block extends beyond totalsize");
}

TEST(FdtMalformed, StringsOffsetOrSizeOutOfRange) {
  Blob b = load("basic.dtb");
  set_be32(b, kOffStrings, 0xffffff00);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "strings block offset out of range");
  b = load("basic.dtb");
  set_be32(b, kSizeStrings, be32(b, kSizeStrings) + 1);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "strings block extends beyond totalsize");
}

TEST(FdtMalformed, MemreserveOffsetOutOfRange) {
  Blob b = load("basic.dtb");
  set_be32(b, kOffRsv, static_cast<u32>(b.size() + 8));
  EXPECT_PARSE_ERROR(b, -kEINVAL, "memreserve block offset out of range");
}

TEST(FdtMalformed, BlockOverlapsHeader) {
  Blob b = load("basic.dtb");
  set_be32(b, kOffStruct, 8);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "struct block offset out of range");
  b = load("basic.dtb");
  set_be32(b, kOffRsv, 0);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "memreserve block offset out of range");
  b = load("basic.dtb");
  set_be32(b, kOffStrings, 4);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "strings block offset out of range");
}

TEST(FdtMalformed, StructNotAligned) {
  Blob b = load("basic.dtb");
  set_be32(b, kOffStruct, be32(b, kOffStruct) + 2);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "struct block not 4-byte aligned");
}

TEST(FdtMalformed, MemreserveNotAligned) {
  Blob b = load("basic.dtb");
  set_be32(b, kOffRsv, be32(b, kOffRsv) + 4);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "memreserve block not 8-byte aligned");
}

TEST(FdtMalformed, StructAndStringsOverlap) {
  Blob b = load("basic.dtb");
  set_be32(b, kOffStrings, be32(b, kOffStruct) + 8);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "struct and strings blocks overlap");
}

TEST(FdtMalformed, MemreserveOverlapsStrings) {
  // Move the reservation block to a fresh terminator at the end, then grow
  // the strings block (which starts before it) over it.
  Blob b = load("basic.dtb");
  while (b.size() % 8) b.push_back(0);
  const u32 rsv = static_cast<u32>(b.size());
  b.resize(b.size() + 16, 0);
  set_be32(b, kTotal, static_cast<u32>(b.size()));
  set_be32(b, kOffRsv, rsv);
  ASSERT_EQ(run_parse(b).rc, 0) << run_parse(b).err;  // valid so far
  set_be32(b, kSizeStrings, static_cast<u32>(b.size()) - be32(b, kOffStrings));
  EXPECT_PARSE_ERROR(b, -kEINVAL, "memreserve block overlaps the strings block");
}

TEST(FdtMalformed, MemreserveNotTerminated) {
  Blob b = load("basic.dtb");
  // basic.dts has 2 entries: the terminator is the third.
  const u32 term = be32(b, kOffRsv) + 32;
  ASSERT_EQ(term + 16, be32(b, kOffStruct));
  set_be64(b, term + 8, 1);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "memreserve block not terminated at offset " + hex(be32(b, kOffRsv)));
}

// ---------------------------------------------------------------------------
// Struct block errors.

TEST(FdtMalformed, TruncatedStructBlock) {
  Blob b = load("basic.dtb");
  const u32 end = be32(b, kOffStruct) + be32(b, kSizeStruct);
  set_be32(b, kSizeStruct, be32(b, kSizeStruct) - 2);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "truncated token in struct block at offset " + hex(end - 4));
}

TEST(FdtMalformed, StructCutInsideNodeName) {
  Blob b = load("basic.dtb");
  const size_t node = find_token(b, 1, 1);  // first node below the root
  set_be32(b, kSizeStruct, static_cast<u32>(node + 6 - be32(b, kOffStruct)));
  EXPECT_PARSE_ERROR(b, -kEINVAL, "node name not terminated within struct block at offset " + hex(node));
}

TEST(FdtMalformed, StructCutInsidePropertyHeader) {
  Blob b = load("basic.dtb");
  const size_t prop = find_token(b, 3);
  set_be32(b, kSizeStruct, static_cast<u32>(prop + 8 - be32(b, kOffStruct)));
  EXPECT_PARSE_ERROR(b, -kEINVAL, "truncated property header at offset " + hex(prop));
}

TEST(FdtMalformed, PropertyLengthBeyondBlock) {
  Blob b = load("basic.dtb");
  const size_t prop = find_token(b, 3, 2);
  set_be32(b, prop + 4, be32(b, kSizeStruct));
  EXPECT_PARSE_ERROR(b, -kEINVAL, "property length beyond struct block at offset " + hex(prop));
  set_be32(b, prop + 4, 0xffffffff);  // no wrap-around in the bound check
  EXPECT_PARSE_ERROR(b, -kEINVAL, "property length beyond struct block at offset " + hex(prop));
}

TEST(FdtMalformed, NameOffsetBeyondStrings) {
  Blob b = load("basic.dtb");
  const size_t prop = find_token(b, 3, 1);
  set_be32(b, prop + 8, be32(b, kSizeStrings));
  EXPECT_PARSE_ERROR(b, -kEINVAL, "property name offset beyond strings block at offset " + hex(prop));
  set_be32(b, prop + 8, 0xfffffff0);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "property name offset beyond strings block at offset " + hex(prop));
}

TEST(FdtMalformed, UnterminatedPropertyName) {
  Blob b = load("basic.dtb");
  const u32 strings = be32(b, kOffStrings), size = be32(b, kSizeStrings);
  ASSERT_EQ(b[strings + size - 1], 0);
  // Point the first property at the last string, then cut its NUL off.
  u32 last = size - 2;
  while (last > 0 && b[strings + last - 1]) --last;
  const size_t prop = find_token(b, 3);
  set_be32(b, prop + 8, last);
  set_be32(b, kSizeStrings, size - 1);
  EXPECT_PARSE_ERROR(b, -kEINVAL, "property name not terminated within strings block at offset " + hex(prop));
}

TEST(FdtMalformed, PropertyNameTooLong) {
  Builder bld;
  bld.begin("").prop_str(std::string(256, 'x'), "y").end();
  EXPECT_PARSE_ERROR(bld.finish(), -kEINVAL, "property name longer than 255 characters");
  Builder ok;
  ok.begin("").prop_str(std::string(255, 'x'), "y").end();
  EXPECT_EQ(run_parse(ok.finish()).rc, 0);
}

TEST(FdtMalformed, MissingFdtEnd) {
  Blob b = load("basic.dtb");
  const u32 end = be32(b, kOffStruct) + be32(b, kSizeStruct);
  ASSERT_EQ(be32(b, end - 4), 9u);
  set_be32(b, end - 4, 4);  // FDT_END -> FDT_NOP
  EXPECT_PARSE_ERROR(b, -kEINVAL, "struct block ends without FDT_END at offset " + hex(end));
}

TEST(FdtMalformed, FdtEndInsideNode) {
  Builder bld;
  minimal_root(bld);
  EXPECT_PARSE_ERROR(bld.finish(), -kEINVAL, "FDT_END inside a node");
}

TEST(FdtMalformed, NestingDeeperThanBound) {
  Builder bld;
  minimal_root(bld);
  for (u32 i = 1; i <= kMaxDepth; ++i) bld.begin("n" + std::to_string(i));
  for (u32 i = 1; i <= kMaxDepth; ++i) bld.end();
  EXPECT_PARSE_ERROR(bld.end().finish(), -kEINVAL, "nested deeper than 16");
}

TEST(FdtMalformed, UnknownToken) {
  Builder bld;
  minimal_root(bld).raw(0x77).end();
  EXPECT_PARSE_ERROR(bld.finish(), -kEINVAL, "unknown token in struct block");
}

TEST(FdtMalformed, StrayEndNodeAndPropOutsideNode) {
  Builder a;
  a.raw(2);
  EXPECT_PARSE_ERROR(a.finish(), -kEINVAL, "END_NODE without an open node");
  Builder b;
  b.prop_str("x", "y");
  EXPECT_PARSE_ERROR(b.finish(), -kEINVAL, "property outside any node");
  Builder c;
  EXPECT_PARSE_ERROR(c.finish(), -kEINVAL, "FDT_END before any node");
}

TEST(FdtMalformed, SecondRootNode) {
  Builder bld;
  minimal_root(bld).end().begin("").end();
  EXPECT_PARSE_ERROR(bld.finish(), -kEINVAL, "node after the root node");
}

TEST(FdtMalformed, PropertyAfterSubnode) {
  Builder bld;
  minimal_root(bld).prop_str("model", "late").end();
  EXPECT_PARSE_ERROR(bld.finish(), -kEINVAL, "property after a subnode");
}

TEST(FdtMalformed, CellCountNotOneCell) {
  Builder bld;
  bld.begin("").prop("#address-cells", {0, 0, 2}).end();
  EXPECT_PARSE_ERROR(bld.finish(), -kEINVAL, "cell count property is not one cell");
}

// ---------------------------------------------------------------------------
// Semantic errors.

TEST(FdtMalformed, TooManyMemoryRegions) {
  const Blob b = load("too_many_mem.dtb");
  EXPECT_PARSE_ERROR(b, -kE2BIG, "more than kMaxMem (16) memory regions");
}

TEST(FdtMalformed, TooManyCpus) {
  Builder bld;
  minimal_root(bld).begin("cpus").prop_cells("#address-cells", {1}).prop_cells("#size-cells", {0});
  for (u32 i = 0; i <= kMaxCpus; ++i)
    bld.begin("cpu@" + std::to_string(i)).prop_str("device_type", "cpu").prop_cells("reg", {i}).end();
  EXPECT_PARSE_ERROR(bld.end().end().finish(), -kE2BIG, "more than kMaxCpus (8) cpu nodes");
}

TEST(FdtMalformed, TooManyReserved) {
  Builder bld;
  minimal_root(bld).begin("reserved-memory").prop_cells("#address-cells", {1}).prop_cells("#size-cells", {1});
  for (u32 i = 0; i <= kMaxReserved; ++i)
    bld.begin("r@" + std::to_string(i)).prop_cells("reg", {0x50000000 + i * 0x1000, 0x1000}).end();
  EXPECT_PARSE_ERROR(bld.end().end().finish(), -kE2BIG, "more than kMaxReserved (32) reserved ranges");
}

TEST(FdtMalformed, RegNotMultipleOfTuple) {
  Builder bld;
  bld.begin("").begin("memory@0").prop_str("device_type", "memory").prop_cells("reg", {0, 0x40000000, 0x1000, 7}).end();
  EXPECT_PARSE_ERROR(bld.end().finish(), -kEINVAL, "reg length not a multiple of its tuple size");
}

TEST(FdtMalformed, UnsupportedAddressCells) {
  Builder bld;
  bld.begin("").prop_cells("#address-cells", {3});
  bld.begin("memory@0").prop_str("device_type", "memory").prop_cells("reg", {0, 0, 0x40000000, 0x1000}).end();
  EXPECT_PARSE_ERROR(bld.end().finish(), -kEINVAL, "unsupported #address-cells/#size-cells for reg");
}

TEST(FdtMalformed, MemoryRangeOverflows) {
  Builder bld;
  bld.begin("").prop_cells("#address-cells", {2}).prop_cells("#size-cells", {2});
  bld.begin("memory@0").prop_str("device_type", "memory").prop_cells("reg", {0xffffffff, 0xfffff000, 0, 0x2000}).end();
  EXPECT_PARSE_ERROR(bld.end().finish(), -kEINVAL, "memory reg range overflows");
}

TEST(FdtMalformed, CpuWithoutReg) {
  Builder bld;
  minimal_root(bld).begin("cpus").prop_cells("#address-cells", {1}).prop_cells("#size-cells", {0});
  bld.begin("cpu@0").prop_str("device_type", "cpu").end();
  EXPECT_PARSE_ERROR(bld.end().end().finish(), -kEINVAL, "cpu node without reg");
}

TEST(FdtMalformed, BadPsciMethod) {
  Builder bld;
  minimal_root(bld).begin("psci").prop_str("compatible", "arm,psci-1.0").prop_str("method", "svc").end();
  EXPECT_PARSE_ERROR(bld.end().finish(), -kEINVAL, "psci method is neither");
}

TEST(FdtMalformed, BadInitrdCells) {
  Builder bld;
  minimal_root(bld).begin("chosen").prop_cells("linux,initrd-start", {0, 0, 1}).prop_cells("linux,initrd-end", {2});
  EXPECT_PARSE_ERROR(bld.end().end().finish(), -kEINVAL, "initrd property is neither 32 nor 64 bits");
  Builder rev;
  minimal_root(rev).begin("chosen").prop_cells("linux,initrd-start", {0x2000}).prop_cells("linux,initrd-end", {0x1000});
  EXPECT_PARSE_ERROR(rev.end().end().finish(), -kEINVAL, "linux,initrd-end below linux,initrd-start");
  Builder half;
  minimal_root(half).begin("chosen").prop_cells("linux,initrd-start", {0x2000});
  EXPECT_PARSE_ERROR(half.end().end().finish(), -kEINVAL, "only one of linux,initrd-start");
}

TEST(FdtMalformed, StdoutPathProblems) {
  Builder noalias;
  minimal_root(noalias).begin("chosen").prop_str("stdout-path", "serial7:115200").end();
  EXPECT_PARSE_ERROR(noalias.end().finish(), -kEINVAL, "stdout-path alias not found in /aliases");

  Builder nonode;
  minimal_root(nonode).begin("chosen").prop_str("stdout-path", "/nowhere").end();
  EXPECT_PARSE_ERROR(nonode.end().finish(), -kEINVAL, "stdout-path names no node");

  Builder noreg;
  minimal_root(noreg).begin("chosen").prop_str("stdout-path", "/uart").end().begin("uart").end();
  EXPECT_PARSE_ERROR(noreg.end().finish(), -kEINVAL, "stdout-path node has no reg");

  Builder notstr;
  minimal_root(notstr).begin("chosen").prop("stdout-path", {'/', 'u'}).end();
  EXPECT_PARSE_ERROR(notstr.end().finish(), -kEINVAL, "stdout-path is not a string");

  Builder norange;  // a bus without "ranges": not memory mapped
  minimal_root(norange).begin("chosen").prop_str("stdout-path", "/bus/uart").end();
  norange.begin("bus").prop_cells("#address-cells", {1}).prop_cells("#size-cells", {1});
  norange.begin("uart").prop_cells("reg", {0x1000, 0x100}).end().end();
  EXPECT_PARSE_ERROR(norange.end().finish(), -kEINVAL, "parent node has no ranges");

  Builder outside;
  minimal_root(outside).begin("chosen").prop_str("stdout-path", "/bus/uart").end();
  outside.begin("bus").prop_cells("#address-cells", {1}).prop_cells("#size-cells", {1});
  outside.prop_cells("ranges", {0x0, 0x0, 0x20000000, 0x1000});
  outside.begin("uart").prop_cells("reg", {0x1000, 0x100}).end().end();
  EXPECT_PARSE_ERROR(outside.end().finish(), -kEINVAL, "address outside the parent node's ranges");
}

// Every prefix of a valid blob (presented as the whole buffer) must fail
// cleanly; the sanitizer build checks no read leaves the buffer.
TEST(FdtMalformed, EveryTruncationFailsCleanly) {
  const Blob b = load("basic.dtb");
  for (size_t n = 0; n < b.size(); ++n) {
    const Blob cut(b.begin(), b.begin() + static_cast<long>(n));
    std::vector<u8> heap(cut);
    BootInfo bi;
    const char* err = nullptr;
    ASSERT_EQ(parse(heap.empty() ? nullptr : heap.data(), n, &bi, &err), -kEINVAL) << n;
    ASSERT_NE(err, nullptr);
    ASSERT_EQ(std::strncmp(err, "fdt: ", 5), 0) << err;
  }
}

// Flipping any single byte must give 0 or a clean error, never a crash.
TEST(FdtMalformed, EveryByteFlipIsSafe) {
  const Blob b = load("basic.dtb");
  for (size_t i = 0; i < b.size(); ++i) {
    for (u8 x : {u8{0x01}, u8{0x80}, u8{0xff}}) {
      Blob c = b;
      c[i] ^= x;
      BootInfo bi;
      const char* err = nullptr;
      const int rc = parse(c.data(), c.size(), &bi, &err);
      ASSERT_TRUE(rc == 0 || rc == -kEINVAL || rc == -kE2BIG) << i;
      if (rc) {
        ASSERT_EQ(std::strncmp(err, "fdt: ", 5), 0) << err;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// get_prop.

TEST(FdtGetProp, FindsPropertiesByPath) {
  const Blob b = load("basic.dtb");
  u32 len = 0;
  const void* p = get_prop(b.data(), b.size(), "/chosen", "stdout-path", &len);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(std::string(static_cast<const char*>(p), len), std::string("serial0:115200n8") + '\0');
  p = get_prop(b.data(), b.size(), "/soc/serial@2000", "reg", &len);  // "soc" matches soc@0
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(len, 8u);
  EXPECT_EQ(be32(Blob(static_cast<const u8*>(p), static_cast<const u8*>(p) + 8), 0), 0x2000u);
  p = get_prop(b.data(), b.size(), "/", "compatible", &len);
  ASSERT_NE(p, nullptr);
  EXPECT_STREQ(static_cast<const char*>(p), "pkvm,test-basic");
  p = get_prop(b.data(), b.size(), "/chosen/", "pkvm,verbose", &len);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(len, 0u);
}

TEST(FdtGetProp, MissingOrInvalid) {
  Blob b = load("basic.dtb");
  u32 len = 123;
  EXPECT_EQ(get_prop(b.data(), b.size(), "/chosen", "nope", &len), nullptr);
  EXPECT_EQ(get_prop(b.data(), b.size(), "/nope", "reg", &len), nullptr);
  EXPECT_EQ(get_prop(b.data(), b.size(), "/soc/serial", "nope", &len), nullptr);
  EXPECT_EQ(get_prop(b.data(), b.size(), "chosen", "stdout-path", &len), nullptr);  // not absolute
  EXPECT_EQ(get_prop(b.data(), b.size() - 1, "/chosen", "stdout-path", &len), nullptr);
  EXPECT_EQ(len, 123u);
  b[0] = 0;
  EXPECT_EQ(get_prop(b.data(), b.size(), "/chosen", "stdout-path", &len), nullptr);
}

// ---------------------------------------------------------------------------
// add_memreserve.

bool same_info(const BootInfo& a, const BootInfo& b, u32 skip_from, u32 nr_skip) {
  if (a.nr_mem != b.nr_mem || a.nr_cpus != b.nr_cpus || a.psci != b.psci || a.uart_base != b.uart_base ||
      a.uart_size != b.uart_size || a.initrd_start != b.initrd_start || a.initrd_end != b.initrd_end ||
      a.verbose != b.verbose || a.selftest != b.selftest || a.test_exit != b.test_exit ||
      a.nr_reserved + nr_skip != b.nr_reserved)
    return false;
  for (u32 i = 0; i < a.nr_mem; ++i)
    if (a.mem[i].base != b.mem[i].base || a.mem[i].size != b.mem[i].size || a.mem[i].flags != b.mem[i].flags)
      return false;
  for (u32 i = 0; i < a.nr_cpus; ++i)
    if (a.cpu_mpidr[i] != b.cpu_mpidr[i]) return false;
  for (u32 i = 0, j = 0; i < a.nr_reserved; ++i, ++j) {
    if (j == skip_from) j += nr_skip;
    if (a.reserved[i].base != b.reserved[j].base || a.reserved[i].size != b.reserved[j].size ||
        a.reserved[i].no_map != b.reserved[j].no_map)
      return false;
  }
  return true;
}

bool dtc_accepts(const Blob& b) {
  char path[] = "/tmp/fdt_test_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return false;
  FILE* f = fdopen(fd, "wb");
  std::fwrite(b.data(), 1, b.size(), f);
  std::fclose(f);
  const std::string cmd = std::string("dtc -q -I dtb -O dts -o /dev/null ") + path;
  const int rc = std::system(cmd.c_str());
  std::remove(path);
  return rc == 0;
}

void round_trip(const std::string& fixture, u32 old_memreserve) {
  const Blob src = load(fixture);
  BootInfo before;
  ASSERT_EQ(run_parse(src, ~u64{0}, &before).rc, 0);
  const Reserved add[] = {{0x40200000, 0x200000, false}, {0x7fff0000, 0x10000, true}};
  Blob dst(src.size() + 4096);
  const s64 n = add_memreserve(src.data(), src.size(), dst.data(), dst.size(), add, 2);
  ASSERT_GT(n, 0);
  dst.resize(static_cast<size_t>(n));
  EXPECT_EQ(total_size(dst.data(), dst.size()), static_cast<u64>(n));
  BootInfo after;
  const Result r = run_parse(dst, ~u64{0}, &after);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(same_info(before, after, old_memreserve, 2));
  EXPECT_EQ(after.reserved[old_memreserve].base, 0x40200000u);
  EXPECT_EQ(after.reserved[old_memreserve].size, 0x200000u);
  EXPECT_FALSE(after.reserved[old_memreserve].no_map);  // memreserve has no flags
  EXPECT_EQ(after.reserved[old_memreserve + 1].base, 0x7fff0000u);
  EXPECT_EQ(after.reserved[old_memreserve + 1].size, 0x10000u);
  // Struct and strings blocks are copied byte for byte (a v16 header has no
  // struct size: dtc puts the strings right after the struct block).
  const u32 struct_size =
      be32(src, kVersion) >= 17 ? be32(src, kSizeStruct) : be32(src, kOffStrings) - be32(src, kOffStruct);
  EXPECT_EQ(be32(dst, kVersion), 17u);
  EXPECT_EQ(be32(dst, kSizeStruct), struct_size);
  EXPECT_EQ(0, std::memcmp(dst.data() + be32(dst, kOffStruct), src.data() + be32(src, kOffStruct), struct_size));
  EXPECT_EQ(0, std::memcmp(dst.data() + be32(dst, kOffStrings), src.data() + be32(src, kOffStrings),
                           be32(src, kSizeStrings)));
  EXPECT_EQ(be32(dst, 28), be32(src, 28));  // boot_cpuid_phys
  EXPECT_TRUE(dtc_accepts(dst));
}

TEST(FdtAddMemreserve, RoundTripBasic) { round_trip("basic.dtb", 2); }
TEST(FdtAddMemreserve, RoundTripVersion16) { round_trip("basic_v16.dtb", 2); }
TEST(FdtAddMemreserve, RoundTripQemuVirt) { round_trip("qemu_virt.dtb", 0); }

TEST(FdtAddMemreserve, ExactAndTooSmallDestination) {
  const Blob src = load("basic.dtb");
  const Reserved add[] = {{0x40200000, 0x200000, false}};
  Blob big(src.size() + 64);
  const s64 n = add_memreserve(src.data(), src.size(), big.data(), big.size(), add, 1);
  ASSERT_GT(n, 0);
  Blob exact(static_cast<size_t>(n));
  EXPECT_EQ(add_memreserve(src.data(), src.size(), exact.data(), exact.size(), add, 1), n);
  EXPECT_EQ(0, std::memcmp(exact.data(), big.data(), exact.size()));
  Blob small(static_cast<size_t>(n) - 1);
  EXPECT_EQ(add_memreserve(src.data(), src.size(), small.data(), small.size(), add, 1), -kE2BIG);
  EXPECT_EQ(add_memreserve(src.data(), src.size(), small.data(), 0, add, 1), -kE2BIG);
}

TEST(FdtAddMemreserve, NothingAddedStillValid) {
  const Blob src = load("cells32.dtb");
  Blob dst(src.size());
  const s64 n = add_memreserve(src.data(), src.size(), dst.data(), dst.size(), nullptr, 0);
  ASSERT_GT(n, 0);
  dst.resize(static_cast<size_t>(n));
  BootInfo a, b;
  ASSERT_EQ(run_parse(src, ~u64{0}, &a).rc, 0);
  ASSERT_EQ(run_parse(dst, ~u64{0}, &b).rc, 0);
  EXPECT_TRUE(same_info(a, b, 0, 0));
}

TEST(FdtAddMemreserve, RejectsInvalidInput) {
  Blob src = load("basic.dtb");
  const Reserved add[] = {{0x40200000, 0x200000, false}};
  const Reserved zero[] = {{0x40200000, 0, false}};
  Blob dst(src.size() + 256);
  EXPECT_EQ(add_memreserve(src.data(), src.size(), dst.data(), dst.size(), zero, 1), -kEINVAL);
  EXPECT_EQ(add_memreserve(src.data(), src.size(), nullptr, dst.size(), add, 1), -kEINVAL);
  EXPECT_EQ(add_memreserve(src.data(), src.size(), dst.data(), dst.size(), nullptr, 1), -kEINVAL);
  EXPECT_EQ(add_memreserve(src.data(), src.size(), src.data() + 8, 64, add, 1), -kEINVAL);  // overlap
  EXPECT_EQ(add_memreserve(src.data(), src.size() - 1, dst.data(), dst.size(), add, 1), -kEINVAL);
  // A struct block error (missing FDT_END) makes the source invalid too.
  const u32 end = be32(src, kOffStruct) + be32(src, kSizeStruct);
  set_be32(src, end - 4, 4);
  EXPECT_EQ(add_memreserve(src.data(), src.size(), dst.data(), dst.size(), add, 1), -kEINVAL);
}

}  // namespace
}  // namespace pkvm::fdt
