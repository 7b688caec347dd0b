// SPDX-License-Identifier: Apache-2.0
// Tests of the generated ABI headers as their users see them (built with
// PKVM_TEST_CALLS, so every call is present): the client packs every call as
// proto/abi_snapshot.txt says, the EL2 dispatcher hands the same registers to
// its handlers, the C helpers agree with both; plus the compatibility rules
// and the example traces.
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pkvm_abi.h"
#include "pkvm_abi_client.h"
#include "pkvm_abi_dispatch.h"
#include "proto/gen/snapshot.h"
#include "proto/pkvm_trace.pb.h"

#ifndef PKVM_TEST_CALLS
#error "abi_test is built with -DPKVM_TEST_CALLS"
#endif

namespace {

namespace fs = std::filesystem;
using pkvm::hc::PkvmClient;
using pkvm::hc::Reg;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The committed snapshot: the reference for ids and registers.
const pkvm::gen::Snapshot& CommittedSnapshot() {
  static const pkvm::gen::Snapshot snap = [] {
    pkvm::gen::Snapshot s;
    std::string error;
    const std::string text = ReadFile("proto/abi_snapshot.txt");
    EXPECT_TRUE(pkvm::gen::ParseSnapshot(text, &s, &error)) << error << " (run from the repo root)";
    return s;
  }();
  return snap;
}

// "pfn:x1,nr:x2" -> {1, 2}; "-" -> {}.
std::vector<int> RegsOf(const std::string& list) {
  std::vector<int> out;
  if (list == "-") return out;
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    out.push_back(std::stoi(item.substr(item.find(":x") + 2)));
  }
  return out;
}

std::vector<int> RegsOf(const std::vector<std::string>& results) {
  std::vector<int> out;
  for (const auto& r : results) out.push_back(std::stoi(r.substr(r.find(":x") + 2)));
  return out;
}

// ------------------------------------------------------------- every call

using Args = std::vector<uint64_t>;
// x0 as the client returned it, then the results in declaration order.
using Out = std::vector<uint64_t>;

uint64_t U(long v) { return static_cast<uint64_t>(v); }

struct Invoker {
  const char* name;
  std::function<Out(PkvmClient&, const Args&)> run;
};

// One entry per call: a new call in the proto fails EveryCallIsExercised
// until it is added here.
const std::vector<Invoker>& Invokers() {
  static const std::vector<Invoker> k = {
      {"abi_version",
       [](PkvmClient& c, const Args&) {
         auto r = c.abi_version();
         return Out{U(r.ret), r.abi_major, r.abi_minor};
       }},
      {"null", [](PkvmClient& c, const Args&) { return Out{U(c.null())}; }},
      {"host_share_hyp", [](PkvmClient& c, const Args& a) { return Out{U(c.host_share_hyp(a[0], a[1]))}; }},
      {"host_unshare_hyp",
       [](PkvmClient& c, const Args& a) { return Out{U(c.host_unshare_hyp(a[0], a[1]))}; }},
      {"host_donate_hyp", [](PkvmClient& c, const Args& a) { return Out{U(c.host_donate_hyp(a[0], a[1]))}; }},
      {"hyp_donate_host", [](PkvmClient& c, const Args& a) { return Out{U(c.hyp_donate_host(a[0], a[1]))}; }},
      {"host_share_guest",
       [](PkvmClient& c, const Args& a) { return Out{U(c.host_share_guest(a[0], a[1], a[2], a[3]))}; }},
      {"host_unshare_guest",
       [](PkvmClient& c, const Args& a) { return Out{U(c.host_unshare_guest(a[0], a[1], a[2]))}; }},
      {"host_donate_guest",
       [](PkvmClient& c, const Args& a) { return Out{U(c.host_donate_guest(a[0], a[1], a[2], a[3]))}; }},
      {"guest_share_host",
       [](PkvmClient& c, const Args& a) { return Out{U(c.guest_share_host(a[0], a[1], a[2]))}; }},
      {"guest_unshare_host",
       [](PkvmClient& c, const Args& a) { return Out{U(c.guest_unshare_host(a[0], a[1], a[2]))}; }},
      {"host_reclaim_guest",
       [](PkvmClient& c, const Args& a) { return Out{U(c.host_reclaim_guest(a[0], a[1], a[2]))}; }},
      {"hyp_pin_shared", [](PkvmClient& c, const Args& a) { return Out{U(c.hyp_pin_shared(a[0], a[1]))}; }},
      {"hyp_unpin_shared",
       [](PkvmClient& c, const Args& a) { return Out{U(c.hyp_unpin_shared(a[0], a[1]))}; }},
      {"guest_create",
       [](PkvmClient& c, const Args&) {
         auto r = c.guest_create();
         return Out{U(r.ret), r.guest};
       }},
      {"guest_destroy", [](PkvmClient& c, const Args& a) { return Out{U(c.guest_destroy(a[0]))}; }},
      {"get_stats",
       [](PkvmClient& c, const Args& a) {
         auto r = c.get_stats(a[0]);
         return Out{U(r.ret), r.nr_slots};
       }},
      {"dump_host_stage2",
       [](PkvmClient& c, const Args& a) {
         auto r = c.dump_host_stage2(a[0], a[1], a[2]);
         return Out{U(r.ret), r.nr_records, r.next_pfn, r.done};
       }},
      {"checksum",
       [](PkvmClient& c, const Args& a) {
         auto r = c.checksum(a[0], a[1]);
         return Out{U(r.ret), r.sum};
       }},
      {"inject_alloc_failure",
       [](PkvmClient& c, const Args& a) { return Out{U(c.inject_alloc_failure(a[0], a[1]))}; }},
  };
  return k;
}

// Records what the client sends and answers with preset registers.
class FakeTransport : public pkvm::hc::HypercallTransport {
 public:
  void call(std::uint64_t regs[PKVM_NR_REGS]) override {
    sent.assign(regs, regs + PKVM_NR_REGS);
    for (int i = 0; i < PKVM_NR_REGS; ++i) regs[i] = reply[i];
  }
  std::vector<uint64_t> sent;
  uint64_t reply[PKVM_NR_REGS] = {};
};

// Distinct argument values, so a swapped register shows.
Args ArgsFor(size_t call_index, size_t n) {
  Args a;
  for (size_t k = 0; k < n; ++k) a.push_back(0x1000 * (call_index + 1) + k + 1);
  return a;
}

TEST(ClientTest, EveryCallIsExercised) {
  const auto& snap = CommittedSnapshot();
  std::set<std::string> invoked;
  for (const auto& inv : Invokers()) {
    invoked.insert(inv.name);
    EXPECT_TRUE(snap.calls.count(inv.name)) << inv.name << " is not in proto/abi_snapshot.txt";
  }
  for (const auto& [name, call] : snap.calls) {
    EXPECT_TRUE(invoked.count(name)) << "add " << name << " to Invokers() in " << __FILE__;
  }
}

TEST(ClientTest, PacksIdsAndRegistersAsTheSnapshotSays) {
  const auto& snap = CommittedSnapshot();
  size_t i = 0;
  for (const auto& inv : Invokers()) {
    SCOPED_TRACE(inv.name);
    auto it = snap.calls.find(inv.name);
    if (it == snap.calls.end()) continue;
    const auto arg_regs = RegsOf(it->second.args);
    const auto res_regs = RegsOf(it->second.results);
    const Args args = ArgsFor(i++, arg_regs.size());
    FakeTransport fake;
    fake.reply[0] = static_cast<uint64_t>(-PKVM_EBUSY);
    for (int r = 1; r < PKVM_NR_REGS; ++r) fake.reply[r] = 0xbeef00 + r;
    PkvmClient client(fake);
    const Out out = inv.run(client, args);
    ASSERT_EQ(fake.sent.size(), size_t{PKVM_NR_REGS});
    EXPECT_EQ(fake.sent[0], std::stoull(it->second.id, nullptr, 16));
    for (int r = 1; r < PKVM_NR_REGS; ++r) {
      uint64_t want = 0;  // unused argument registers are zero
      for (size_t k = 0; k < arg_regs.size(); ++k) {
        if (arg_regs[k] == r) want = args[k];
      }
      EXPECT_EQ(fake.sent[r], want) << "x" << r;
    }
    ASSERT_EQ(out.size(), 1 + res_regs.size());
    EXPECT_EQ(static_cast<int64_t>(out[0]), -PKVM_EBUSY);
    for (size_t j = 0; j < res_regs.size(); ++j) {
      EXPECT_EQ(out[1 + j], fake.reply[res_regs[j]]) << it->second.results[j];
    }
  }
}

TEST(ClientTest, CHelpersPackLikeTheClient) {
  FakeTransport fake;
  PkvmClient client(fake);
  client.host_share_guest(2, 0x40000, 0x10, 5);
  unsigned long long a[PKVM_NR_REGS];
  pkvm_hc_host_share_guest_pack(a, 2, 0x40000, 0x10, 5);
  for (int r = 0; r < PKVM_NR_REGS; ++r) EXPECT_EQ(a[r], fake.sent[r]) << "x" << r;

  // Results come back through the unpack helper.
  unsigned long long regs[PKVM_NR_REGS] = {0, 7, 0x1234, 1, 0, 0, 0};
  struct pkvm_hc_dump_host_stage2_res res;
  EXPECT_EQ(pkvm_hc_dump_host_stage2_unpack(regs, &res), 0);
  EXPECT_EQ(res.nr_records, 7u);
  EXPECT_EQ(res.next_pfn, 0x1234u);
  EXPECT_EQ(res.done, 1u);
  regs[0] = static_cast<unsigned long long>(-PKVM_EPERM);
  EXPECT_EQ(pkvm_hc_ret(regs), -PKVM_EPERM);
}

TEST(HeaderTest, VersionAndIdsMatchTheSnapshot) {
  const auto& snap = CommittedSnapshot();
  EXPECT_EQ(PKVM_ABI_VERSION_MAJOR, snap.major);
  EXPECT_EQ(PKVM_ABI_VERSION_MINOR, snap.minor);
  EXPECT_EQ(PKVM_HC_HOST_SHARE_HYP, PKVM_HC_ID(PKVM_HC_HOST_SHARE_HYP_FN));
  EXPECT_EQ(PKVM_HC_HOST_SHARE_HYP, 0xc6000000ull + PKVM_HC_HOST_SHARE_HYP_FN);
  ASSERT_EQ(pkvm::hc::kNrCalls, snap.calls.size());
  for (const auto& info : pkvm::hc::kCalls) {
    auto it = snap.calls.find(info.name);
    ASSERT_NE(it, snap.calls.end()) << info.name;
    EXPECT_EQ(info.id, std::stoull(it->second.id, nullptr, 16)) << info.name;
    EXPECT_EQ(info.nargs, RegsOf(it->second.args).size()) << info.name;
    EXPECT_EQ(info.nresults, it->second.results.size()) << info.name;
    EXPECT_EQ(info.test_only, it->second.test_only) << info.name;
    EXPECT_EQ(pkvm::hc::find_call(info.id), &info);
  }
  EXPECT_EQ(pkvm::hc::find_call(0xc6000fffull), nullptr);
}

TEST(HeaderTest, DumpRecordFieldsTileTheWord) {
  const unsigned long long masks[] = {PKVM_DUMP_RECORD_START_PFN_MASK, PKVM_DUMP_RECORD_NR_PAGES_MASK,
                                      PKVM_DUMP_RECORD_OWNER_MASK, PKVM_DUMP_RECORD_STATE_MASK,
                                      PKVM_DUMP_RECORD_LEVEL_MASK};
  unsigned long long all = 0;
  for (auto m : masks) {
    EXPECT_EQ(all & m, 0u);
    all |= m;
  }
  EXPECT_EQ(all, ~0ull);
  const unsigned long long rec =
      pkvm_dump_record_pack(0xfedcba98, 0x80000, 7, PKVM_PAGE_SHARED_BORROWED, 3);
  EXPECT_EQ(pkvm_dump_record_start_pfn(rec), 0xfedcba98u);
  EXPECT_EQ(pkvm_dump_record_nr_pages(rec), 0x80000u);
  EXPECT_EQ(pkvm_dump_record_owner(rec), 7u);
  EXPECT_EQ(pkvm_dump_record_state(rec), unsigned{PKVM_PAGE_SHARED_BORROWED});
  EXPECT_EQ(pkvm_dump_record_level(rec), 3u);
  // Values wider than their field are truncated, never spill into neighbours.
  const unsigned long long wide = pkvm_dump_record_pack(0x1ffffffffull, 0, 0x1ff, 0, 0);
  EXPECT_EQ(pkvm_dump_record_start_pfn(wide), 0xffffffffu);
  EXPECT_EQ(pkvm_dump_record_nr_pages(wide), 0u);
  EXPECT_EQ(pkvm_dump_record_owner(wide), 0xffu);
  EXPECT_EQ(pkvm_dump_record_state(wide), 0u);
}

TEST(HeaderTest, StatsLayoutFitsOnePage) {
  EXPECT_LE(PKVM_STATS_SLOT_END * 8, PKVM_PAGE_SIZE);
  EXPECT_EQ(PKVM_STATS_SLOT_HOST_ABORTS_COUNT, 4);
  EXPECT_GE(PKVM_STATS_SLOT_CALLS_OK_COUNT, PKVM_HC_CHECKSUM_FN + 1);
  EXPECT_GE(PKVM_STATS_SLOT_ERRORS_COUNT, PKVM_ERANGE + 1);
}

// -------------------------------------------------------------- dispatch

// Handlers that log their arguments and fill result j with 0xa1 + j.
struct RecordingHandlers {
  struct Entry {
    std::string name;
    std::vector<uint64_t> args;
  };
  std::vector<Entry> log;
  long status = 0;

  long Rec(const char* name, std::initializer_list<Reg> args) {
    log.push_back({name, std::vector<uint64_t>(args.begin(), args.end())});
    return status;
  }
  long abi_version(pkvm::hc::AbiVersionResults& r) {
    r.abi_major = 0xa1;
    r.abi_minor = 0xa2;
    return Rec("abi_version", {});
  }
  long null() { return Rec("null", {}); }
  long host_share_hyp(Reg p, Reg n) { return Rec("host_share_hyp", {p, n}); }
  long host_unshare_hyp(Reg p, Reg n) { return Rec("host_unshare_hyp", {p, n}); }
  long host_donate_hyp(Reg p, Reg n) { return Rec("host_donate_hyp", {p, n}); }
  long hyp_donate_host(Reg p, Reg n) { return Rec("hyp_donate_host", {p, n}); }
  long host_share_guest(Reg g, Reg p, Reg f, Reg n) { return Rec("host_share_guest", {g, p, f, n}); }
  long host_unshare_guest(Reg g, Reg f, Reg n) { return Rec("host_unshare_guest", {g, f, n}); }
  long host_donate_guest(Reg g, Reg p, Reg f, Reg n) { return Rec("host_donate_guest", {g, p, f, n}); }
  long guest_share_host(Reg g, Reg f, Reg n) { return Rec("guest_share_host", {g, f, n}); }
  long guest_unshare_host(Reg g, Reg f, Reg n) { return Rec("guest_unshare_host", {g, f, n}); }
  long host_reclaim_guest(Reg g, Reg p, Reg n) { return Rec("host_reclaim_guest", {g, p, n}); }
  long hyp_pin_shared(Reg p, Reg n) { return Rec("hyp_pin_shared", {p, n}); }
  long hyp_unpin_shared(Reg p, Reg n) { return Rec("hyp_unpin_shared", {p, n}); }
  long guest_create(pkvm::hc::GuestCreateResults& r) {
    r.guest = 0xa1;
    return Rec("guest_create", {});
  }
  long guest_destroy(Reg g) { return Rec("guest_destroy", {g}); }
  long get_stats(Reg b, pkvm::hc::GetStatsResults& r) {
    r.nr_slots = 0xa1;
    return Rec("get_stats", {b});
  }
  long dump_host_stage2(Reg b, Reg n, Reg s, pkvm::hc::DumpHostStage2Results& r) {
    r.nr_records = 0xa1;
    r.next_pfn = 0xa2;
    r.done = 0xa3;
    return Rec("dump_host_stage2", {b, n, s});
  }
  long checksum(Reg p, Reg n, pkvm::hc::ChecksumResults& r) {
    r.sum = 0xa1;
    return Rec("checksum", {p, n});
  }
  long inject_alloc_failure(Reg a, Reg c) { return Rec("inject_alloc_failure", {a, c}); }
};

// Runs the EL2 dispatcher directly, as the simulator does.
class LoopbackTransport : public pkvm::hc::HypercallTransport {
 public:
  explicit LoopbackTransport(RecordingHandlers& h) : h_(h) {}
  void call(std::uint64_t regs[PKVM_NR_REGS]) override {
    known = pkvm::hc::dispatch(h_, regs);
    after.assign(regs, regs + PKVM_NR_REGS);
  }
  bool known = false;
  std::vector<uint64_t> after;

 private:
  RecordingHandlers& h_;
};

TEST(DispatchTest, HandlersSeeTheClientsArgumentsAndReturnResults) {
  const auto& snap = CommittedSnapshot();
  size_t i = 0;
  for (const auto& inv : Invokers()) {
    SCOPED_TRACE(inv.name);
    auto it = snap.calls.find(inv.name);
    if (it == snap.calls.end()) continue;
    const auto res_regs = RegsOf(it->second.results);
    const Args args = ArgsFor(i++, RegsOf(it->second.args).size());
    RecordingHandlers h;
    h.status = -PKVM_EAGAIN;
    LoopbackTransport loop(h);
    PkvmClient client(loop);
    const Out out = inv.run(client, args);
    EXPECT_TRUE(loop.known);
    ASSERT_EQ(h.log.size(), 1u);
    EXPECT_EQ(h.log[0].name, inv.name);
    EXPECT_EQ(h.log[0].args, args);
    ASSERT_EQ(out.size(), 1 + res_regs.size());
    EXPECT_EQ(static_cast<int64_t>(out[0]), -PKVM_EAGAIN);
    for (size_t j = 0; j < res_regs.size(); ++j) EXPECT_EQ(out[1 + j], 0xa1 + j);
    // x1..x3 that carry no result are zeroed (no argument echoes back).
    for (int r = 1; r <= 3; ++r) {
      bool is_result = false;
      for (int rr : res_regs) is_result = is_result || rr == r;
      if (!is_result) {
        EXPECT_EQ(loop.after[r], 0u) << "x" << r;
      }
    }
  }
}

TEST(DispatchTest, UnknownIdIsNotSupportedAndTouchesOnlyX0) {
  RecordingHandlers h;
  unsigned long regs[PKVM_NR_REGS] = {0xc6000fff, 1, 2, 3, 4, 5, 6};
  EXPECT_FALSE(pkvm::hc::dispatch(h, regs));
  EXPECT_EQ(static_cast<long>(regs[0]), PKVM_SMCCC_RET_NOT_SUPPORTED);
  for (int r = 1; r < PKVM_NR_REGS; ++r) EXPECT_EQ(regs[r], static_cast<unsigned long>(r));
  EXPECT_TRUE(h.log.empty());
  // A 32-bit (SMC32) id with the same function number is a different call.
  regs[0] = 0x86000003;
  EXPECT_FALSE(pkvm::hc::dispatch(h, regs));
}

// ---------------------------------------------------------- compat rules

pkvm::gen::Snapshot Snap(const std::string& text) {
  pkvm::gen::Snapshot s;
  std::string error;
  EXPECT_TRUE(pkvm::gen::ParseSnapshot(text, &s, &error)) << error;
  return s;
}

const char kBase[] =
    "version 1 2\n"
    "call ping 0xc6000001 args - results -\n"
    "call share 0xc6000003 args pfn:x1,nr:x2 results -\n"
    "call sum 0xc6000004 args pfn:x1,nr:x2 results sum:x1\n"
    "call poke 0xc6000100 args a:x1 results - test_only\n"
    "errno EPERM 1\n"
    "bits rec.lo 0 8\n"
    "const OWNER_HOST 0\n";

// kBase with `from` replaced by `to` (the first occurrence).
std::string Edit(const std::string& from, const std::string& to) {
  std::string s = kBase;
  const size_t pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  return s.replace(pos, from.size(), to);
}

pkvm::gen::CompatReport Check(const std::string& new_text) {
  return pkvm::gen::CheckCompat(Snap(kBase), Snap(new_text));
}

TEST(CompatTest, IdenticalIsFine) {
  const auto r = Check(kBase);
  EXPECT_TRUE(r.ok()) << r.Describe();
  EXPECT_TRUE(r.unchanged());
}

TEST(CompatTest, AddingACallNeedsAMinorBump) {
  const std::string added = std::string(kBase) + "call new 0xc6000009 args - results -\n";
  EXPECT_FALSE(Check(added).ok());
  const auto r = Check(Edit("version 1 2", "version 1 3") + "call new 0xc6000009 args - results -\n");
  EXPECT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(r.additions.size(), 1u);
}

TEST(CompatTest, AddingAResultOrErrnoNeedsAMinorBump) {
  EXPECT_FALSE(Check(Edit("results sum:x1", "results sum:x1,carry:x2")).ok());
  EXPECT_TRUE(Check(Edit("version 1 2", "version 1 3") + "errno EBUSY 16\n").ok());
  std::string s = Edit("results sum:x1", "results sum:x1,carry:x2");
  s.replace(s.find("version 1 2"), 11, "version 1 3");
  EXPECT_TRUE(Check(s).ok());
}

TEST(CompatTest, ChangingAnIdNeedsAMajorBump) {
  const auto r = Check(Edit("0xc6000003", "0xc6000005"));
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.Describe().find("call share: id 0xc6000003 -> 0xc6000005"), std::string::npos)
      << r.Describe();
  // A minor bump is not enough; a major one is.
  std::string minor = Edit("0xc6000003", "0xc6000005");
  minor.replace(minor.find("version 1 2"), 11, "version 1 3");
  EXPECT_FALSE(Check(minor).ok());
  std::string major = Edit("0xc6000003", "0xc6000005");
  major.replace(major.find("version 1 2"), 11, "version 2 0");
  EXPECT_TRUE(Check(major).ok());
}

TEST(CompatTest, ChangingRegistersNeedsAMajorBump) {
  EXPECT_FALSE(Check(Edit("args pfn:x1,nr:x2 results -", "args pfn:x1,nr:x3 results -")).ok());
  EXPECT_FALSE(Check(Edit("results sum:x1", "results sum:x2")).ok());
  EXPECT_FALSE(Check(Edit("results sum:x1", "results -")).ok());
}

TEST(CompatTest, ChangingOrRemovingAnErrnoNeedsAMajorBump) {
  EXPECT_FALSE(Check(Edit("errno EPERM 1", "errno EPERM 2")).ok());
  EXPECT_FALSE(Check(Edit("errno EPERM 1\n", "")).ok());
  std::string major = Edit("errno EPERM 1", "errno EPERM 2");
  major.replace(major.find("version 1 2"), 11, "version 2 0");
  EXPECT_TRUE(Check(major).ok());
}

TEST(CompatTest, LayoutsAndConstantsAreAbi) {
  EXPECT_FALSE(Check(Edit("bits rec.lo 0 8", "bits rec.lo 0 9")).ok());
  EXPECT_FALSE(Check(Edit("const OWNER_HOST 0", "const OWNER_HOST 3")).ok());
}

TEST(CompatTest, RemovingACallNeedsAMajorBump) {
  EXPECT_FALSE(Check(Edit("call ping 0xc6000001 args - results -\n", "")).ok());
}

TEST(CompatTest, TestOnlyFlag) {
  std::string promoted = Edit("results - test_only", "results -");
  EXPECT_FALSE(Check(promoted).ok());  // an addition: needs the minor bump
  promoted.replace(promoted.find("version 1 2"), 11, "version 1 3");
  EXPECT_TRUE(Check(promoted).ok());
  std::string demoted = Edit("call ping 0xc6000001 args - results -",
                             "call ping 0xc6000001 args - results - test_only");
  demoted.replace(demoted.find("version 1 2"), 11, "version 1 3");
  EXPECT_FALSE(Check(demoted).ok());
}

TEST(CompatTest, VersionNeverGoesDown) {
  EXPECT_FALSE(Check(Edit("version 1 2", "version 1 1")).ok());
  EXPECT_FALSE(Check(Edit("version 1 2", "version 0 9")).ok());
}

TEST(CompatTest, MalformedSnapshotsAreRejected) {
  pkvm::gen::Snapshot s;
  std::string error;
  EXPECT_FALSE(pkvm::gen::ParseSnapshot("call x 0x1 args - results -\n", &s, &error));
  EXPECT_NE(error.find("version"), std::string::npos) << error;
  EXPECT_FALSE(pkvm::gen::ParseSnapshot("version 1 0\ncall x 0x1 args -\n", &s, &error));
  EXPECT_NE(error.find("line 2"), std::string::npos) << error;
  EXPECT_FALSE(pkvm::gen::ParseSnapshot("version 1 0\nbogus y 1\n", &s, &error));
  EXPECT_FALSE(pkvm::gen::ParseSnapshot("version 1 0\nerrno A 1\nerrno A 2\n", &s, &error));
}

// ---------------------------------------------------------------- traces

std::vector<fs::path> TraceFiles() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator("tests/proto/traces")) {
    if (e.path().extension() == ".textproto") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Collects parse errors with their line and column.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    errors += std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message + "\n";
  }
  std::string errors;
};

bool ParseTrace(const std::string& text, pkvm::trace::Trace* trace, std::string* errors) {
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector collector;
  parser.RecordErrorsTo(&collector);
  const bool ok = parser.ParseFromString(text, trace);
  *errors = collector.errors;
  return ok;
}

TEST(TraceTest, ExamplesExist) { EXPECT_GE(TraceFiles().size(), 2u); }

TEST(TraceTest, ExamplesParseAndRoundTrip) {
  for (const auto& path : TraceFiles()) {
    SCOPED_TRACE(path.string());
    pkvm::trace::Trace trace;
    std::string errors;
    ASSERT_TRUE(ParseTrace(ReadFile(path), &trace, &errors)) << errors;
    EXPECT_EQ(trace.name(), path.stem().string());
    EXPECT_FALSE(trace.description().empty());
    ASSERT_GT(trace.ops_size(), 0);
    for (const auto& op : trace.ops()) EXPECT_NE(op.op_case(), pkvm::trace::Op::OP_NOT_SET);

    // Text -> message -> text -> message gives the same message...
    std::string printed;
    ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(trace, &printed));
    pkvm::trace::Trace again;
    ASSERT_TRUE(ParseTrace(printed, &again, &errors)) << errors;
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(trace, again)) << printed;
    // ... and so does the binary form.
    pkvm::trace::Trace binary;
    ASSERT_TRUE(binary.ParseFromString(trace.SerializeAsString()));
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(trace, binary));
  }
}

// Guest handles must be created before use: what a replay tool relies on.
TEST(TraceTest, ExamplesUseOnlyCreatedGuests) {
  for (const auto& path : TraceFiles()) {
    SCOPED_TRACE(path.string());
    pkvm::trace::Trace trace;
    std::string errors;
    ASSERT_TRUE(ParseTrace(ReadFile(path), &trace, &errors)) << errors;
    std::set<uint64_t> handles;
    for (int i = 0; i < trace.ops_size(); ++i) {
      const auto& op = trace.ops(i);
      if (op.has_guest_create()) {
        EXPECT_TRUE(handles.insert(op.guest_create().handle()).second) << "op " << i;
        continue;
      }
      // Every message with a `guest` field names a created handle.
      const auto* desc = op.GetDescriptor()->FindOneofByName("op");
      const auto* field = op.GetReflection()->GetOneofFieldDescriptor(op, desc);
      ASSERT_NE(field, nullptr);
      if (field->type() != google::protobuf::FieldDescriptor::TYPE_MESSAGE) continue;
      const auto& msg = op.GetReflection()->GetMessage(op, field);
      const auto* guest = msg.GetDescriptor()->FindFieldByName("guest");
      if (guest) {
        EXPECT_TRUE(handles.count(msg.GetReflection()->GetUInt64(msg, guest))) << "op " << i;
      }
    }
  }
}

TEST(TraceTest, BadTextReportsTheLine) {
  pkvm::trace::Trace trace;
  std::string errors;
  EXPECT_FALSE(ParseTrace("name: \"x\"\nops { host_share_hyp { pfn: 1 colour: 2 } }\n", &trace, &errors));
  EXPECT_NE(errors.find("2:"), std::string::npos) << errors;
  EXPECT_FALSE(ParseTrace("ops { expect: ERRNO_ENOPE }\n", &trace, &errors));
}

}  // namespace
