// SPDX-License-Identifier: Apache-2.0
// MemProtect::selftest, the boot-time self-test, called from the host: it
// passes on host-owned pages and leaves every observable state as it found it.
#include <gtest/gtest.h>

#include "tests/mem_protect/mp_env.h"

namespace pkvm::test {
namespace {

class SelftestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(env.init_ret, 0);
    ASSERT_EQ(env.add_ret, 0);
  }
  void TearDown() override {
    EXPECT_EQ(env.bbm.finish(), 0u) << env.bbm.report();
    EXPECT_EQ(env.mp.stats().internal_errors, 0u);
  }
  Env env;
};

TEST_F(SelftestTest, PassesOnFourHostPagesAndRestoresState) {
  const u64 pfn = env.data_pfn() + 8;
  for (u64 p = pfn; p < pfn + 4; ++p) env.fill(p, p);
  const u64 sum0 = env.expected_checksum(pfn, 1), sum2 = env.expected_checksum(pfn + 2, 1);
  // What the self-test may legitimately leave behind: host-owned pages it
  // took back come back mapped (ownership is compared, not the mapping);
  // pages given away and returned come back zeroed (checked below);
  // the abort probe on a donated page counts one -EPERM.
  const SnapOpts o{.raw_host = false, .abort_stats = false, .data = false};
  const std::string before = snapshot(env, o);
  const u64 eperm = env.mp.stats().host_abort_eperm;
  env.bbm.set_teardown(true);  // the self-test destroys a guest (Pgtable::destroy)
  EXPECT_EQ(env.mp.selftest(pfn, 4), 0);
  env.bbm.set_teardown(false);
  EXPECT_EQ(snapshot(env, o), before);
  EXPECT_EQ(env.mp.stats().host_abort_eperm, eperm + 1);
  EXPECT_EQ(env.expected_checksum(pfn, 1), sum0);      // shared with the hypervisor: untouched
  EXPECT_TRUE(env.is_zero(pfn + 1));                    // donated to the hypervisor and given back
  EXPECT_EQ(env.expected_checksum(pfn + 2, 1), sum2);  // shared with a guest: untouched
  EXPECT_TRUE(env.is_zero(pfn + 3));                    // donated to a guest and reclaimed
}

TEST_F(SelftestTest, PassesTwiceAndOnMappedHostPages) {
  const u64 pfn = env.data_pfn() + 0x200 - 2;  // the four pages straddle a 2 MiB boundary
  ASSERT_EQ(env.mp.host_stage2_idmap(pfn << desc::kPageShift), 0);  // host mapping: a 1 GiB block
  env.bbm.set_teardown(true);
  EXPECT_EQ(env.mp.selftest(pfn, 4), 0);
  EXPECT_EQ(env.mp.selftest(pfn, 4), 0);
  env.bbm.set_teardown(false);
  for (u64 p = pfn; p < pfn + 4; ++p) {
    DumpRecord r;
    u64 next;
    ASSERT_EQ(env.mp.dump_host(p, &r, 1, &next), 1);
    EXPECT_EQ(r.owner, kOwnerHost);
    EXPECT_EQ(r.state, u8(PageState::kOwned));
  }
}

TEST_F(SelftestTest, RefusesFewerThanFourPages) {
  const std::string before = snapshot(env);
  EXPECT_EQ(env.mp.selftest(env.data_pfn(), 3), -kEINVAL);
  EXPECT_EQ(snapshot(env), before);
}

// The first steps check that the pages start host-owned: a donated page is
// reported as the failing step instead of being trampled.
TEST_F(SelftestTest, ReportsPagesNotOwnedByTheHost) {
  const u64 pfn = env.data_pfn();
  ASSERT_EQ(env.mp.host_donate_hyp(pfn + 2, 1), 0);
  const std::string before = snapshot(env);
  EXPECT_EQ(env.mp.selftest(pfn, 4), -1003);  // step 3: page 2 is not the host's
  EXPECT_EQ(snapshot(env), before);
}

}  // namespace
}  // namespace pkvm::test
