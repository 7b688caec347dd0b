// SPDX-License-Identifier: Apache-2.0
// Replays every input of tests/mem_protect/regressions/ through the fuzzer's
// own decoder and checker (fuzz_mem_protect.cc, built without libFuzzer),
// with no known bug tolerated: one test case per file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/mem_protect/invariants.h"

namespace pkvm::mptest {
namespace {

namespace fs = std::filesystem;

// The directory, relative to the repository root (where tests run), unless
// MP_REGRESSIONS_DIR says otherwise.
std::string regressions_dir() {
  const char* d = getenv("MP_REGRESSIONS_DIR");
  return d ? d : "tests/mem_protect/regressions";
}

std::vector<std::string> inputs() {
  std::vector<std::string> v;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(regressions_dir(), ec))
    if (e.is_regular_file() && e.path().extension() == ".bin") v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<u8> read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<u8>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The corpus must be there: an empty or missing directory would pass vacuously.
TEST(Regressions, DirectoryHasInputs) {
  EXPECT_FALSE(inputs().empty()) << "no *.bin in " << regressions_dir() << " (run from the repository root)";
}

class Replay : public ::testing::TestWithParam<std::string> {};

TEST_P(Replay, NoDivergence) {
  const std::vector<u8> data = read(regressions_dir() + "/" + GetParam());
  ASSERT_FALSE(data.empty()) << GetParam();
  const std::string err = run_fuzz_input(data.data(), data.size(), kRelaxNone, false);
  EXPECT_EQ(err, "") << GetParam() << ":\n" << err;
}

INSTANTIATE_TEST_SUITE_P(Files, Replay, ::testing::ValuesIn(inputs()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string n = i.param.substr(0, i.param.size() - 4);
                           for (char& c : n)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Replay);

}  // namespace
}  // namespace pkvm::mptest
