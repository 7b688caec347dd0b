// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the ownership state machine: input bytes decode into
// a sequence of operations (every transition with arbitrary, often hostile
// arguments, host aborts anywhere, guest create/destroy, pool limits and
// injected allocation failures), run in lockstep on a freshly booted (or
// reset to boot) MemProtect and
// on the model (invariants.h Driver). Any difference in return code, state
// or table structure prints the operations and the diff, then aborts.
//
// The same object, compiled without -fsanitize=fuzzer, is linked into the
// regression test, which replays every file of tests/mem_protect/regressions.
//
// An input of odd size runs with MemProtectConfig::exclusive_aborts, an even
// one with the default shared-walker abort path.
//
// Environment: MP_FUZZ_RELAX=enomem tolerates known implementation
// bugs (see invariants.h Relax) so a long run can explore past them;
// MP_FUZZ_VERBOSE=1 prints every operation and its result; MP_FUZZ_BBM=0
// leaves out the break-before-make checker (1.5-2x the executions/s, for
// very long runs; every other check stays).
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/mem_protect/invariants.h"

namespace pkvm::mptest {
namespace {

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return buf;
}

constexpr size_t kMaxOps = 400;
constexpr u64 kPfnMax = ~u64{0} >> desc::kPageShift;

// Reads the input; past its end every read yields 0.
class Reader {
 public:
  Reader(const u8* d, size_t n) : d_(d), n_(n) {}
  bool done() const { return i_ >= n_; }
  u8 u8_() { return i_ < n_ ? d_[i_++] : 0; }
  u16 u16_() { return u16(u8_() | (u16(u8_()) << 8)); }
  u64 u64_() {
    u64 v = 0;
    for (int k = 0; k < 8; ++k) v |= u64(u8_()) << (8 * k);
    return v;
  }

 private:
  const u8* d_;
  size_t n_;
  size_t i_ = 0;
};

// Frames worth aiming at: region edges, 2 MiB boundaries, the hyp's memory.
constexpr u64 kPfnAnchors[] = {
    0x40090,  // first host page of R0 (after the pool and hyp image)
    0x40200,  // 2 MiB boundary in R0
    0x40300,  //
    0x403f8,  // end of R0
    0x40500,  // R1 (no-map)
    0x40580,  // R2 start (not 2 MiB aligned)
    0x40600,  // 2 MiB boundary in R2
    0x40800,  //
    0x40a00,  //
    0x40bf8,  // end of R2
    0x40000,  // the pool (hyp-internal)
    0x40080,  // the hyp image
    0x40400,  // the MMIO gap inside the arena
    0x40120,  //
    0x40700,  //
    0x40a80,  //
};

u64 read_pfn(Reader& r) {
  const u8 sel = r.u8_();
  switch (sel >> 6) {
    case 0:
    case 1: return kPfnAnchors[sel & 15] + u64(s64(int8_t(r.u8_())));
    case 2: {
      const u64 lo = Layout::kR0Base >> 12, hi = (Layout::kR2Base + Layout::kR2Size) >> 12;
      return lo + r.u16_() % (hi - lo);
    }
    default:
      switch (sel & 7) {
        case 0: return r.u64_();
        case 1: return kPfnMax - r.u8_();
        case 2: return (u64{1} << 52) - r.u8_();
        case 3: return r.u8_();
        case 4: return ~u64{0} - r.u8_();
        case 5: return ((Layout::kR2Base + Layout::kR2Size) >> 12) + r.u16_();
        case 6: return (u64{1} << (Layout::kHostIaBits - 12)) - r.u8_();
        default: return r.u64_() >> (r.u8_() % 64);
      }
  }
}

u64 read_nr(Reader& r) {
  const u8 b = r.u8_();
  if (b < 150) return 1 + b % 8;
  if (b < 195) return 1 + u64(r.u8_()) * 2;
  if (b < 215) return 512;
  if (b < 225) return 0;
  if (b < 240) return 513 + r.u8_();
  return r.u64_();
}

u64 read_gfn(Reader& r) {
  const u8 b = r.u8_();
  const u64 limit = u64{1} << (Layout::kGuestIaBits - 12);
  switch (b >> 6) {
    case 0: return r.u8_() + (b & 3) * 256;
    case 1: return 0x200 * (b & 15) + u64(s64(int8_t(r.u8_())));
    case 2: return limit - r.u8_();
    default:
      switch (b & 3) {
        case 0: return (u64{1} << 52) - r.u8_();
        case 1: return kPfnMax - r.u8_();
        case 2: return ~u64{0} - r.u8_();
        default: return r.u64_();
      }
  }
}

u32 read_guest(Reader& r) {
  const u8 b = r.u8_();
  return b < 224 ? kOwnerGuestFirst + b % kMaxGuests : b - 224u;
}

constexpr u64 kMmioAnchors[] = {0,          0x3fff0000, 0x40400000,   0x404ff000,        0x40c00000,
                                0x80000000, 0xc0001000, 0x7fffff000, (u64{1} << 40) - 0x1000, 0x12345000};

u64 read_addr(Reader& r) {
  const u8 b = r.u8_();
  switch (b >> 6) {
    case 0:
    case 1: return (read_pfn(r) << 12) + r.u8_() * 16;
    case 2: return kMmioAnchors[b % 10] + u64(r.u8_()) * 0x1000;
    default: return (b & 1) ? r.u64_() : (u64{1} << 40) + r.u8_();
  }
}

// A logged step, formatted only when needed.
struct Logged {
  enum Kind : u8 { kOp, kPoolLimit, kInject, kDump } kind;
  Op op;
  s64 a = 0, b = 0;
  int ret = 0;
};

std::string describe(const Logged& l) {
  switch (l.kind) {
    case Logged::kOp: return to_string(l.op) + fmt(" = %d", l.ret);
    case Logged::kPoolLimit: return l.a < 0 ? "pool limit off" : fmt("pool limit: in use + %" PRId64, l.a);
    case Logged::kInject: return fmt("next abort/guest_create: allocation %" PRId64 " fails%s", l.a, l.b ? " (sticky)" : "");
    case Logged::kDump: return fmt("check dump_host(pfn=0x%" PRIx64 ", max=%" PRId64 ")", l.op.pfn, l.a);
  }
  return "?";
}

// Slot table: opcode byte -> operation (frequent ones get several slots).
enum Slot : u8 {
  kSOp,        // followed by OpKind in the table below
  kSPoolLimit,
  kSInject,
  kSRepeat,
  kSDump,
};
struct SlotDef {
  Slot slot;
  OpKind kind;
};
constexpr SlotDef kSlots[] = {
    {kSOp, OpKind::kHostShareHyp},     {kSOp, OpKind::kHostUnshareHyp},   {kSOp, OpKind::kHostDonateHyp},
    {kSOp, OpKind::kHypDonateHost},    {kSOp, OpKind::kHostShareGuest},   {kSOp, OpKind::kHostShareGuest},
    {kSOp, OpKind::kHostUnshareGuest}, {kSOp, OpKind::kHostDonateGuest},  {kSOp, OpKind::kHostDonateGuest},
    {kSOp, OpKind::kGuestShareHost},   {kSOp, OpKind::kGuestUnshareHost}, {kSOp, OpKind::kHostReclaimGuest},
    {kSOp, OpKind::kHypPin},           {kSOp, OpKind::kHypUnpin},         {kSOp, OpKind::kGuestCreate},
    {kSOp, OpKind::kGuestCreate},      {kSOp, OpKind::kGuestDestroy},     {kSOp, OpKind::kHostAbort},
    {kSOp, OpKind::kHostAbort},        {kSOp, OpKind::kHostAbort},        {kSOp, OpKind::kHypChecksum},
    {kSPoolLimit, OpKind::kCount},     {kSInject, OpKind::kCount},        {kSRepeat, OpKind::kCount},
    {kSRepeat, OpKind::kCount},        {kSDump, OpKind::kCount},
};
constexpr size_t kNumSlots = sizeof(kSlots) / sizeof(kSlots[0]);

Op read_op(Reader& r, OpKind k) {
  Op op;
  op.kind = k;
  switch (k) {
    case OpKind::kHostShareHyp:
    case OpKind::kHostUnshareHyp:
    case OpKind::kHostDonateHyp:
    case OpKind::kHypDonateHost:
    case OpKind::kHypPin:
    case OpKind::kHypUnpin:
    case OpKind::kHypChecksum:
      op.pfn = read_pfn(r);
      op.nr = read_nr(r);
      break;
    case OpKind::kHostShareGuest:
    case OpKind::kHostDonateGuest:
      op.guest = read_guest(r);
      op.pfn = read_pfn(r);
      op.gfn = read_gfn(r);
      op.nr = read_nr(r);
      break;
    case OpKind::kHostUnshareGuest:
    case OpKind::kGuestShareHost:
    case OpKind::kGuestUnshareHost:
      op.guest = read_guest(r);
      op.gfn = read_gfn(r);
      op.nr = read_nr(r);
      break;
    case OpKind::kHostReclaimGuest:
      op.guest = read_guest(r);
      op.pfn = read_pfn(r);
      op.nr = read_nr(r);
      break;
    case OpKind::kGuestDestroy: op.guest = read_guest(r); break;
    case OpKind::kHostAbort: op.addr = read_addr(r); break;
    case OpKind::kGuestCreate:
    case OpKind::kCount: break;
  }
  return op;
}

// Operations a repeat slot iterates page by page (building fragmented tables).
constexpr OpKind kRepeatKinds[] = {OpKind::kHostShareGuest,  OpKind::kHostDonateGuest, OpKind::kHostShareHyp,
                                   OpKind::kHostDonateHyp,   OpKind::kHostAbort,       OpKind::kGuestShareHost,
                                   OpKind::kHostUnshareGuest, OpKind::kHypPin};

// One booted machine per abort-path/checker combination, reset between
// inputs: booting (the hyp_reserve of the pool and image under the checker)
// cost a fifth of each run. World::reset returns to the exact boot state
// (World.ResetEqualsFreshBoot in model_test.cc).
World& world_for(bool exclusive_aborts, bool bbm) {
  static World* worlds[2][2] = {};
  World*& w = worlds[exclusive_aborts][bbm];
  if (!w)
    w = new World(exclusive_aborts, bbm);
  else
    w->reset();
  return *w;
}

}  // namespace

std::string run_fuzz_input(const u8* data, size_t size, u32 relax, bool verbose, bool bbm) {
  // Both host-abort paths (shared walkers, the default; exclusive, the
  // upstream-like baseline), chosen by the input's size so the format stays.
  World& w = world_for(size % 2 == 1, bbm);
  DriverOptions opt;
  opt.relax = relax;
  static const char* every = getenv("MP_FUZZ_FULL_EVERY");
  if (every) opt.full_check_every = u32(strtoul(every, nullptr, 0));
  Driver d(w, opt);
  Reader r(data, size);
  std::vector<Logged> log;
  std::string err;
  auto record = [&](const Logged& l) {
    log.push_back(l);
    if (verbose) fprintf(stderr, "  %zu: %s\n", log.size(), describe(l).c_str());
  };
  auto run = [&](const Op& op) {
    Logged l{Logged::kOp, op};
    err = d.step(op, &l.ret);
    record(l);
    return err.empty();
  };
  size_t ops = 0;
  while (!r.done() && ops < kMaxOps && err.empty()) {
    ++ops;
    const SlotDef s = kSlots[r.u8_() % kNumSlots];
    switch (s.slot) {
      case kSOp: run(read_op(r, s.kind)); break;
      case kSPoolLimit: {
        const u8 b = r.u8_();
        const s64 extra = b >= 240 ? -1 : b % 12;
        d.set_pool_limit(extra);
        record(Logged{Logged::kPoolLimit, {}, extra});
        break;
      }
      case kSInject: {
        const u8 b = r.u8_();
        d.arm_alloc_failure((b & 0x7f) % 5, b & 0x80);
        record(Logged{Logged::kInject, {}, (b & 0x7f) % 5, (b & 0x80) != 0});
        break;
      }
      case kSRepeat: {
        const u8 b = r.u8_();
        const u32 count = 2 + r.u8_() % 63;
        Op op = read_op(r, kRepeatKinds[b % 8]);
        const u64 pstep = (b & 0x10) ? 2 : 1, gstep = (b & 0x20) ? 2 : 1;
        op.nr = 1;
        for (u32 i = 0; i < count && err.empty(); ++i) {
          run(op);
          op.pfn += pstep;
          op.gfn += gstep;
          op.addr += pstep << 12;
        }
        break;
      }
      case kSDump: {
        Logged l{Logged::kDump, {}};
        l.op.pfn = read_pfn(r);
        const u8 b = r.u8_();
        l.a = b == 255 ? 0 : 1 + b % 16;
        record(l);
        Problems p;
        check_dump(w, l.op.pfn, u32(l.a), &p);
        if (!p.ok()) err = "dump_host check failed:\n" + p.str();
        break;
      }
    }
  }
  if (err.empty()) {
    // The whole-space dump check costs as much as a short input: one input
    // in four (by size, so deterministically) gets it; dump steps in the
    // input check dump_host everywhere else.
    Problems p;
    check_all(w, &p, size % 4 == 0);
    if (!p.ok()) err = "final check:\n" + p.str();
  }
  if (err.empty()) return "";
  std::string out = "DIVERGENCE after " + fmt("%zu", log.size()) + " step(s)" +
                    (size % 2 ? " (exclusive aborts)" : " (shared aborts)") + ":\n" + err + "steps (last 40):\n";
  for (size_t i = log.size() > 40 ? log.size() - 40 : 0; i < log.size(); ++i)
    out += fmt("  %zu: ", i + 1) + describe(log[i]) + "\n";
  return out;
}

}  // namespace pkvm::mptest

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const pkvm::u32 relax = pkvm::mptest::parse_relax(getenv("MP_FUZZ_RELAX"));
  static const bool verbose = getenv("MP_FUZZ_VERBOSE") != nullptr;
  static const bool bbm = !getenv("MP_FUZZ_BBM") || getenv("MP_FUZZ_BBM")[0] != '0';
  const std::string err = pkvm::mptest::run_fuzz_input(data, size, relax, verbose, bbm);
  if (!err.empty()) {
    fprintf(stderr, "%s", err.c_str());
    fflush(stderr);
    abort();
  }
  return 0;
}
