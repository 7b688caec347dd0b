// SPDX-License-Identifier: Apache-2.0
// pkvm-replay: replays a trace (proto/pkvm_trace.proto, text format) against
// the ownership state machine (mem_protect over the simulated platform) and
// the executable reference model in lockstep, printing every step, where the
// two diverge, and where a step's result differs from the trace's `expect`.
//
//   pkvm-replay [--verbose] [--exclusive_aborts] [--check_every=N] FILE.textproto...
//
// Exit status: 0 when every trace replays with no divergence and every
// expectation met; 1 otherwise; 2 for unreadable input.
#include <google/protobuf/text_format.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "proto/pkvm_trace.pb.h"
#include "tests/mem_protect/invariants.h"
#include "tests/mem_protect/model.h"

ABSL_FLAG(bool, verbose, false, "print every step, not only failures");
ABSL_FLAG(bool, exclusive_aborts, false, "host aborts under the exclusive lock (the upstream-like path)");
ABSL_FLAG(int, check_every, 1, "check every invariant after every N steps (0: only at the end)");

namespace pkvm::mptest {
namespace {

using trace::Op;

// Trace guest handles name guests by creation; the ids the implementation
// hands out are mapped to them. Unknown handles go through untouched, so a
// trace can also hand hostile ids to the calls.
struct Guests {
  std::map<u64, u32> ids;
  u32 id(u64 handle) const {
    auto it = ids.find(handle);
    return it != ids.end() ? it->second : u32(handle > 0xffffffffu ? 0xffffffffu : handle);
  }
};

// The model/driver operation for a trace step; false for steps that are not
// calls (inject_alloc_failure).
bool to_op(const Op& t, const Guests& g, mptest::Op* op) {
  switch (t.op_case()) {
    case Op::kHostShareHyp: *op = {OpKind::kHostShareHyp, 0, t.host_share_hyp().pfn(), 0, t.host_share_hyp().nr()}; return true;
    case Op::kHostUnshareHyp: *op = {OpKind::kHostUnshareHyp, 0, t.host_unshare_hyp().pfn(), 0, t.host_unshare_hyp().nr()}; return true;
    case Op::kHostDonateHyp: *op = {OpKind::kHostDonateHyp, 0, t.host_donate_hyp().pfn(), 0, t.host_donate_hyp().nr()}; return true;
    case Op::kHypDonateHost: *op = {OpKind::kHypDonateHost, 0, t.hyp_donate_host().pfn(), 0, t.hyp_donate_host().nr()}; return true;
    case Op::kHostShareGuest: {
      const auto& a = t.host_share_guest();
      *op = {OpKind::kHostShareGuest, g.id(a.guest()), a.pfn(), a.gfn(), a.nr()};
      return true;
    }
    case Op::kHostUnshareGuest: {
      const auto& a = t.host_unshare_guest();
      *op = {OpKind::kHostUnshareGuest, g.id(a.guest()), 0, a.gfn(), a.nr()};
      return true;
    }
    case Op::kHostDonateGuest: {
      const auto& a = t.host_donate_guest();
      *op = {OpKind::kHostDonateGuest, g.id(a.guest()), a.pfn(), a.gfn(), a.nr()};
      return true;
    }
    case Op::kGuestShareHost: {
      const auto& a = t.guest_share_host();
      *op = {OpKind::kGuestShareHost, g.id(a.guest()), 0, a.gfn(), a.nr()};
      return true;
    }
    case Op::kGuestUnshareHost: {
      const auto& a = t.guest_unshare_host();
      *op = {OpKind::kGuestUnshareHost, g.id(a.guest()), 0, a.gfn(), a.nr()};
      return true;
    }
    case Op::kHostReclaimGuest: {
      const auto& a = t.host_reclaim_guest();
      *op = {OpKind::kHostReclaimGuest, g.id(a.guest()), a.pfn(), 0, a.nr()};
      return true;
    }
    case Op::kHypPinShared: *op = {OpKind::kHypPin, 0, t.hyp_pin_shared().pfn(), 0, t.hyp_pin_shared().nr()}; return true;
    case Op::kHypUnpinShared: *op = {OpKind::kHypUnpin, 0, t.hyp_unpin_shared().pfn(), 0, t.hyp_unpin_shared().nr()}; return true;
    case Op::kGuestCreate: *op = {OpKind::kGuestCreate}; return true;
    case Op::kGuestDestroy: *op = {OpKind::kGuestDestroy, g.id(t.guest_destroy().guest())}; return true;
    case Op::kHostAbort: *op = {OpKind::kHostAbort, 0, 0, 0, 0, t.host_abort().addr()}; return true;
    default: return false;
  }
}

// Replays one trace; returns the number of problems.
int replay(const std::string& path, const trace::Trace& t) {
  World w(absl::GetFlag(FLAGS_exclusive_aborts));
  DriverOptions opt;
  const int every = absl::GetFlag(FLAGS_check_every);
  opt.full_check_every = every > 0 ? u32(every) : 0;
  Driver d(w, opt);
  Guests guests;
  const bool verbose = absl::GetFlag(FLAGS_verbose);
  int problems = 0;
  std::printf("== %s: trace \"%s\" (%d steps)\n", path.c_str(), t.name().c_str(), t.ops_size());
  for (int i = 0; i < t.ops_size(); ++i) {
    const Op& step = t.ops(i);
    if (step.op_case() == Op::kInjectAllocFailure) {
      // The pool is capped so every path sees the shortage coming (as at
      // EL2, where armed failures shrink the free count reservations see).
      const auto& a = step.inject_alloc_failure();
      d.set_pool_limit(a.count() == 0 ? -1 : s64(a.after()));
      std::printf("  %3d: inject_alloc_failure(after=%llu, count=%llu): pool capped\n", i + 1,
                  (unsigned long long)a.after(), (unsigned long long)a.count());
      continue;
    }
    mptest::Op op;
    if (!to_op(step, guests, &op)) {
      std::printf("  %3d: unknown operation: FAIL\n", i + 1);
      ++problems;
      continue;
    }
    int got = 0;
    const std::string diverged = d.step(op, &got);
    if (op.kind == OpKind::kGuestCreate && got > 0) guests.ids[step.guest_create().handle()] = u32(got);
    const int err = got < 0 ? -got : 0;  // guest_create returns the id on success
    std::string note;
    if (step.has_expect() && int(step.expect()) != err) {
      note = " EXPECTED " + std::string(abi::Errno_Name(step.expect()));
      ++problems;
    }
    if (verbose || !note.empty() || !diverged.empty())
      std::printf("  %3d: %s -> %d%s\n", i + 1, to_string(op).c_str(), got, note.c_str());
    if (!diverged.empty()) {
      std::printf("  DIVERGENCE at step %d (implementation vs model):\n%s\n", i + 1, diverged.c_str());
      return problems + 1;  // the model is out of step from here on
    }
  }
  const std::string final_check = d.full_check();
  if (!final_check.empty()) {
    std::printf("  final check failed:\n%s\n", final_check.c_str());
    ++problems;
  }
  std::printf("   %s: %d step(s), %s\n", t.name().c_str(), t.ops_size(), problems ? "FAILED" : "ok");
  return problems;
}

}  // namespace
}  // namespace pkvm::mptest

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("replays pkvm traces against mem_protect and the reference model:\n  pkvm-replay [flags] FILE.textproto...");
  std::vector<char*> files = absl::ParseCommandLine(argc, argv);
  if (files.size() < 2) {
    std::fprintf(stderr, "usage: pkvm-replay [--verbose] [--exclusive_aborts] [--check_every=N] FILE.textproto...\n");
    return 2;
  }
  int problems = 0;
  for (size_t i = 1; i < files.size(); ++i) {
    std::ifstream in(files[i]);
    if (!in) {
      std::fprintf(stderr, "pkvm-replay: cannot read %s\n", files[i]);
      return 2;
    }
    std::stringstream text;
    text << in.rdbuf();
    pkvm::trace::Trace t;
    if (!google::protobuf::TextFormat::ParseFromString(text.str(), &t)) {
      std::fprintf(stderr, "pkvm-replay: %s is not a valid pkvm.trace.Trace in text format\n", files[i]);
      return 2;
    }
    problems += pkvm::mptest::replay(files[i], t);
  }
  std::printf("%s\n", problems ? "pkvm-replay: FAILED" : "pkvm-replay: all traces replayed, no divergence");
  return problems ? 1 : 0;
}
