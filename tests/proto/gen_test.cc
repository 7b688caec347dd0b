// SPDX-License-Identifier: Apache-2.0
// Tests of protoc-gen-pkvm that run it the way the build does: through protoc,
// into a scratch directory. Covers the goldens of a small fixture ABI, the
// committed docs/abi.md and proto/abi_snapshot.txt, every bad-input fixture,
// and the compilers that must accept (or refuse) the generated headers.
//
// Run from the repository root (tools/run_tests.sh does). Set
// PKVM_UPDATE_GOLDEN=1 to rewrite tests/proto/golden/ from the current output.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "proto/gen/snapshot.h"

namespace {

namespace fs = std::filesystem;

constexpr char kPlugin[] = "out/host/proto/protoc-gen-pkvm";
constexpr char kAbiProto[] = "proto/pkvm_abi.proto";
constexpr char kFixtures[] = "tests/proto/fixtures";
constexpr char kGolden[] = "tests/proto/golden";

struct RunResult {
  int status = -1;  // exit status, or 128 + signal
  std::string output;  // stdout and stderr together
};

// Runs a shell command and captures what it prints.
RunResult RunShell(const std::string& cmd) {
  RunResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  return r;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Where two texts first differ, as "line N: expected ... / got ...", so that a
// failure does not print two whole files.
std::string FirstDifference(const std::string& want, const std::string& got) {
  std::istringstream a(want), b(got);
  std::string la, lb;
  for (int n = 1;; ++n) {
    const bool more_a = static_cast<bool>(std::getline(a, la));
    const bool more_b = static_cast<bool>(std::getline(b, lb));
    if (!more_a && !more_b) return "no difference";
    if (!more_a || !more_b || la != lb) {
      return "line " + std::to_string(n) + ":\n  committed: " + (more_a ? la : "<end of file>") +
             "\n  generated: " + (more_b ? lb : "<end of file>");
    }
  }
}

// A fresh directory, removed with everything in it at scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (fs::temp_directory_path() / "pkvm_proto_XXXXXX").string();
    path_ = mkdtemp(tmpl.data()) ? fs::path(tmpl) : fs::path();
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::vector<std::string> Files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  fs::path path_;
};

// Runs protoc with the plugin on `proto`, writing into `out`.
RunResult Generate(const std::string& proto, const std::string& params, const fs::path& out) {
  return RunShell("protoc -I. --plugin=protoc-gen-pkvm=" + std::string(kPlugin) +
             " --pkvm_out=" + params + (params.empty() ? "" : ":") + out.string() + " " + proto);
}

class ProtoGenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kAbiProto)) << "run from the repository root";
    ASSERT_TRUE(fs::exists(kPlugin)) << kPlugin << " missing: build it with ninja first";
  }
};

TEST_F(ProtoGenTest, MiniAbiMatchesGoldens) {
  ScratchDir dir;
  const auto r = Generate(std::string(kFixtures) + "/mini_abi.proto",
                          "doc=mini_abi.md,snapshot=mini_abi_snapshot.txt", dir.path());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::vector<std::string> expected = {"mini_abi.h", "mini_abi.md", "mini_abi_client.h",
                                             "mini_abi_dispatch.h", "mini_abi_snapshot.txt"};
  ASSERT_EQ(dir.Files(), expected);
  const bool update = getenv("PKVM_UPDATE_GOLDEN") && std::string(getenv("PKVM_UPDATE_GOLDEN")) == "1";
  for (const auto& name : expected) {
    const std::string got = ReadFile(dir.path() / name);
    const fs::path golden = fs::path(kGolden) / name;
    if (update) {
      std::ofstream(golden, std::ios::binary) << got;
      continue;
    }
    const std::string want = ReadFile(golden);
    EXPECT_TRUE(got == want) << name << " differs from " << golden << " at "
                             << FirstDifference(want, got)
                             << "\nif the change is intended, rerun with PKVM_UPDATE_GOLDEN=1 and "
                                "commit the goldens";
  }
}

TEST_F(ProtoGenTest, GenerationIsDeterministic) {
  ScratchDir a, b;
  ASSERT_EQ(Generate(kAbiProto, "snapshot=s.txt", a.path()).status, 0);
  ASSERT_EQ(Generate(kAbiProto, "snapshot=s.txt", b.path()).status, 0);
  ASSERT_EQ(a.Files(), b.Files());
  for (const auto& f : a.Files()) EXPECT_TRUE(ReadFile(a.path() / f) == ReadFile(b.path() / f)) << f;
}

TEST_F(ProtoGenTest, CommittedDocMatchesProto) {
  ScratchDir dir;
  const auto r = Generate(kAbiProto, "doc=abi.md", dir.path());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string want = ReadFile("docs/abi.md");
  const std::string got = ReadFile(dir.path() / "abi.md");
  EXPECT_TRUE(got == want) << "docs/abi.md is stale (" << FirstDifference(want, got)
                           << ")\nrun `ninja proto-docs` and commit docs/abi.md";
}

TEST_F(ProtoGenTest, SnapshotIsCompatibleAndCurrent) {
  ScratchDir dir;
  const auto r = Generate(kAbiProto, "snapshot=abi_snapshot.txt", dir.path());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string committed = ReadFile("proto/abi_snapshot.txt");
  const std::string current = ReadFile(dir.path() / "abi_snapshot.txt");
  pkvm::gen::Snapshot old_snap, new_snap;
  std::string error;
  ASSERT_TRUE(pkvm::gen::ParseSnapshot(committed, &old_snap, &error)) << "proto/abi_snapshot.txt: " << error;
  ASSERT_TRUE(pkvm::gen::ParseSnapshot(current, &new_snap, &error)) << "generated snapshot: " << error;
  const auto report = pkvm::gen::CheckCompat(old_snap, new_snap);
  ASSERT_TRUE(report.ok()) << "proto/pkvm_abi.proto breaks the ABI rules against "
                              "proto/abi_snapshot.txt:\n"
                           << report.Describe();
  EXPECT_TRUE(committed == current) << "the ABI changed compatibly; refresh the snapshot with "
                                       "`ninja proto-snapshot` and commit it:\n"
                                    << report.Describe();
}

// ------------------------------------------------------------ bad input

// "EXPECT-ERROR: text" markers of a fixture: line number -> text.
std::map<int, std::string> ExpectedErrors(const std::string& path) {
  std::map<int, std::string> out;
  std::istringstream in(ReadFile(path));
  std::string line;
  const std::string marker = "// EXPECT-ERROR: ";
  for (int n = 1; std::getline(in, line); ++n) {
    const size_t pos = line.find(marker);
    if (pos != std::string::npos) out[n] = line.substr(pos + marker.size());
  }
  return out;
}

class BadInputTest : public ProtoGenTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(BadInputTest, FailsWithFileLineAndCallAndWritesNothing) {
  const std::string proto = std::string(kFixtures) + "/" + GetParam() + ".proto";
  const auto expected = ExpectedErrors(proto);
  ASSERT_FALSE(expected.empty()) << proto << " has no EXPECT-ERROR marker";
  ScratchDir dir;
  const auto r = Generate(proto, "snapshot=s.txt", dir.path());
  EXPECT_NE(r.status, 0) << "protoc accepted " << proto;
  EXPECT_TRUE(dir.Files().empty()) << "the plugin wrote output for " << proto;
  // Every marker is reported on its own line as "<file>:<line>: <text>...".
  for (const auto& [line, text] : expected) {
    const std::string prefix = proto + ":" + std::to_string(line) + ": ";
    bool found = false;
    std::istringstream out(r.output);
    for (std::string l; std::getline(out, l);) {
      if (l.rfind(prefix, 0) == 0 && l.find(text) != std::string::npos) found = true;
    }
    EXPECT_TRUE(found) << "expected a line \"" << prefix << text << "...\"; protoc said:\n" << r.output;
  }
  // And nothing else: each reported problem has a marker.
  std::istringstream out(r.output);
  for (std::string l; std::getline(out, l);) {
    if (l.rfind(proto + ":", 0) != 0) continue;
    const int line = std::atoi(l.c_str() + proto.size() + 1);
    EXPECT_TRUE(expected.count(line)) << "unexpected error: " << l;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BadInputTest,
                         ::testing::Values("bad_dup_fn", "bad_missing_fn", "bad_fn_range",
                                           "bad_missing_reg", "bad_reg_zero", "bad_reg_seven",
                                           "bad_result_reg", "bad_reg_twice", "bad_field_type",
                                           "bad_errno_name", "bad_bits_overlap", "bad_no_version"),
                         [](const auto& info) { return std::string(info.param); });

TEST_F(ProtoGenTest, EveryBadFixtureIsListed) {
  const std::set<std::string> listed = {
      "bad_dup_fn", "bad_missing_fn", "bad_fn_range", "bad_missing_reg",
      "bad_reg_zero", "bad_reg_seven", "bad_result_reg", "bad_reg_twice",
      "bad_field_type", "bad_errno_name", "bad_bits_overlap", "bad_no_version"};
  for (const auto& e : fs::directory_iterator(kFixtures)) {
    const std::string stem = e.path().stem().string();
    if (stem.rfind("bad_", 0) == 0) {
      EXPECT_TRUE(listed.count(stem)) << stem << " is not run";
    }
  }
}

TEST_F(ProtoGenTest, UnknownParameterIsRejected) {
  ScratchDir dir;
  const auto r = Generate(kAbiProto, "colour=blue", dir.path());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("unknown parameter 'colour'"), std::string::npos) << r.output;
  EXPECT_TRUE(dir.Files().empty());
}

// ------------------------------------------------------- compiler checks

// The generated pkvm_abi files, made once for all compile tests.
class CompileTest : public ProtoGenTest {
 protected:
  static void SetUpTestSuite() {
    gen_ = new ScratchDir();
    const auto r = Generate(kAbiProto, "", gen_->path());
    gen_status_ = r.status;
    gen_output_ = r.output;
  }
  static void TearDownTestSuite() {
    delete gen_;
    gen_ = nullptr;
  }
  void SetUp() override {
    ProtoGenTest::SetUp();
    ASSERT_EQ(gen_status_, 0) << gen_output_;
  }
  // Compiles `source` with `cmd` (a compiler and flags), -I the generated files.
  static RunResult Compile(const std::string& cmd, const std::string& source,
                           const std::string& defines = "") {
    const fs::path obj = gen_->path() / "out.o";
    return RunShell(cmd + " " + defines + " -I" + gen_->path().string() + " -c " + source + " -o " +
               obj.string());
  }

  static ScratchDir* gen_;
  static int gen_status_;
  static std::string gen_output_;
};
ScratchDir* CompileTest::gen_ = nullptr;
int CompileTest::gen_status_ = -1;
std::string CompileTest::gen_output_;

// Kernel-module-like C: no include path at all, strict warnings.
const std::string kCFlags =
    " -ffreestanding -nostdinc -Wall -Wextra -Wpedantic -Wstrict-prototypes "
    "-Wmissing-prototypes -Wdeclaration-after-statement -Werror";
// The EL2 build's flags (tools/ninja/rules.ninja a64_cxxflags), plus -nostdinc
// to prove the headers need no library header.
const std::string kA64Cxx =
    "aarch64-linux-gnu-g++ -std=c++20 -O2 -Wall -Wextra -Werror -Wno-missing-field-initializers "
    "-ffreestanding -nostdlib -nostdinc -fno-exceptions -fno-rtti -fno-threadsafe-statics "
    "-fno-asynchronous-unwind-tables -fno-stack-protector -fno-pic -fno-pie -mgeneral-regs-only "
    "-mstrict-align -mno-outline-atomics";
const std::string kCUser = std::string(kFixtures) + "/c_user.c";
const std::string kHandlers = std::string(kFixtures) + "/el2_handlers.cc";

TEST_F(CompileTest, CHeaderIsFreestandingC11) {
  for (const char* d : {"", "-DPKVM_TEST_CALLS"}) {
    const auto r = Compile("gcc -std=c11" + kCFlags, kCUser, d);
    EXPECT_EQ(r.status, 0) << d << "\n" << r.output;
  }
}

TEST_F(CompileTest, CHeaderBuildsForTheArm64KernelModule) {
  for (const char* d : {"", "-DPKVM_TEST_CALLS"}) {
    const auto r = Compile("aarch64-linux-gnu-gcc -std=gnu11" + kCFlags, kCUser, d);
    EXPECT_EQ(r.status, 0) << d << "\n" << r.output;
  }
}

TEST_F(CompileTest, CHeaderIsFreestandingCxx) {
  for (const char* d : {"", "-DPKVM_TEST_CALLS"}) {
    const auto r = Compile(
        "aarch64-linux-gnu-g++ -x c++ -std=c++20 -ffreestanding -nostdinc -fno-exceptions "
        "-fno-rtti -Wall -Wextra -Werror -fsyntax-only",
        kCUser, d);
    EXPECT_EQ(r.status, 0) << d << "\n" << r.output;
  }
}

TEST_F(CompileTest, DispatchBuildsForEl2WithEveryHandler) {
  // Test-only handlers may exist in a build without test calls.
  for (const char* d : {"", "-DPKVM_TEST_CALLS", "-DOMIT_TEST_HANDLERS"}) {
    const auto r = Compile(kA64Cxx, kHandlers, d);
    EXPECT_EQ(r.status, 0) << d << "\n" << r.output;
  }
}

// A missing handler must fail the EL2 build with a message naming the call.
void ExpectNoHandler(const RunResult& r, const std::string& call) {
  EXPECT_NE(r.status, 0) << "compiled without a handler for " << call;
  EXPECT_NE(r.output.find("no EL2 handler for " + call + ": H needs long " + call + "("),
            std::string::npos)
      << r.output;
}

TEST_F(CompileTest, DispatchRefusesAMissingHandler) {
  const auto r = Compile(kA64Cxx, kHandlers, "-DOMIT_CHECKSUM");
  ExpectNoHandler(r, "checksum");
  // The static_assert is the only error: no cascade to wade through.
  size_t errors = 0;
  for (size_t pos = 0; (pos = r.output.find("error:", pos)) != std::string::npos; ++pos) ++errors;
  EXPECT_EQ(errors, 1u) << r.output;
}

TEST_F(CompileTest, DispatchRefusesAHandlerWithTheWrongSignature) {
  ExpectNoHandler(Compile(kA64Cxx, kHandlers, "-DWRONG_CHECKSUM"), "checksum");
}

TEST_F(CompileTest, DispatchNeedsTestHandlersOnlyInTestBuilds) {
  ExpectNoHandler(Compile(kA64Cxx, kHandlers, "-DPKVM_TEST_CALLS -DOMIT_TEST_HANDLERS"),
                  "inject_alloc_failure");
}

TEST_F(CompileTest, ClientHeaderBuildsOnTheHost) {
  const fs::path src = gen_->path() / "client_user.cc";
  std::ofstream(src) << "#include \"pkvm_abi_client.h\"\n"
                        "long f(pkvm::hc::PkvmClient& c) { return c.null(); }\n";
  for (const char* d : {"", "-DPKVM_TEST_CALLS"}) {
    const auto r = Compile("g++ -std=c++20 -Wall -Wextra -Werror", src.string(), d);
    EXPECT_EQ(r.status, 0) << d << "\n" << r.output;
  }
}

}  // namespace
