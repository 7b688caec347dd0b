// SPDX-License-Identifier: Apache-2.0
// Tests of the EL2 buddy page pool on a host buffer standing in for physical
// memory (both identity and offset va <-> pa mappings).
#include "nvhe/buddy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace pkvm {
namespace {

constexpr u64 kPage = BuddyPool::kPageSize;
constexpr u64 kMaxBlock = kPage << BuddyPool::kMaxOrder;

// Host memory aligned to the largest block, so PA and VA alignment agree.
class Arena {
 public:
  explicit Arena(u64 pages) : size_(pages * kPage) {
    mem_ = static_cast<u8*>(std::aligned_alloc(kMaxBlock, (size_ + kMaxBlock - 1) / kMaxBlock * kMaxBlock));
    std::memset(mem_, 0xa5, size_);  // so zeroing is observable
  }
  ~Arena() { std::free(mem_); }
  u8* data() const { return mem_; }
  u64 size() const { return size_; }

 private:
  u8* mem_;
  u64 size_;
};

// A pool over an arena with va_offset 0 (pa == host address).
struct IdentityPool {
  explicit IdentityPool(u64 pages) : arena(pages) {
    EXPECT_EQ(pool.init(reinterpret_cast<u64>(arena.data()), pages, 0), 0);
  }
  Arena arena;
  BuddyPool pool;
};

u64 usable(u64 pages) { return pages - BuddyPool::meta_pages(pages); }

bool all_zero(const void* p, u64 n) {
  const u8* b = static_cast<const u8*>(p);
  for (u64 i = 0; i < n; ++i)
    if (b[i]) return false;
  return true;
}

TEST(Buddy, MetaPages) {
  EXPECT_EQ(BuddyPool::meta_pages(1), 1u);
  EXPECT_EQ(BuddyPool::meta_pages(341), 1u);  // 341 * 12 bytes <= 4096
  EXPECT_EQ(BuddyPool::meta_pages(342), 2u);
  EXPECT_EQ(BuddyPool::meta_pages(4096), 12u);
}

TEST(Buddy, InitRejectsBadRanges) {
  Arena a(8);
  BuddyPool p;
  const u64 base = reinterpret_cast<u64>(a.data());
  EXPECT_EQ(p.init(base + 8, 8, 0), -kEINVAL);  // unaligned
  EXPECT_EQ(p.init(base, 0, 0), -kEINVAL);      // empty
  EXPECT_EQ(p.init(base, 1, 0), -kEINVAL);      // only metadata
  EXPECT_EQ(p.init(0xfffffffffffff000ull, 2, 0), -kEINVAL);  // wraps
  EXPECT_EQ(p.alloc_pages(0), nullptr);  // never initialised
  EXPECT_EQ(p.init(base, 2, 0), 0);
  EXPECT_EQ(p.nr_free_pages(), 1u);
}

TEST(Buddy, FreeCountIsExactAfterInit) {
  for (u64 pages : {2ull, 3ull, 100ull, 1024ull, 1025ull, 4096ull, 5000ull, 12345ull}) {
    IdentityPool ip(pages);
    EXPECT_EQ(ip.pool.nr_free_pages(), usable(pages)) << pages;
  }
}

TEST(Buddy, AllocEveryOrderAlignedAndZeroed) {
  IdentityPool ip(4 * (1u << BuddyPool::kMaxOrder));
  const u64 total = ip.pool.nr_free_pages();
  std::vector<std::pair<void*, u32>> got;
  u64 taken = 0;
  for (u32 order = 0; order <= BuddyPool::kMaxOrder; ++order) {
    void* p = ip.pool.alloc_pages(order);
    ASSERT_NE(p, nullptr) << order;
    const u64 bytes = kPage << order;
    EXPECT_EQ(reinterpret_cast<u64>(p) % bytes, 0u) << order;
    EXPECT_EQ(ip.pool.pa_of(p) % bytes, 0u) << order;
    EXPECT_TRUE(all_zero(p, bytes)) << order;
    for (u64 i = 0; i < (u64{1} << order); ++i) EXPECT_EQ(ip.pool.page_count(static_cast<u8*>(p) + i * kPage), 1);
    std::memset(p, 0x5a, bytes);  // dirty it for the next round
    got.emplace_back(p, order);
    taken += u64{1} << order;
    EXPECT_EQ(ip.pool.nr_free_pages(), total - taken);
  }
  for (auto [p, order] : got) ip.pool.free_pages(p, order);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  // Everything again: freed memory comes back zeroed.
  for (u32 order = 0; order <= BuddyPool::kMaxOrder; ++order) {
    void* p = ip.pool.alloc_pages(order);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(all_zero(p, kPage << order)) << order;
  }
}

TEST(Buddy, OrderAboveMaxFails) {
  IdentityPool ip(4096);
  EXPECT_EQ(ip.pool.alloc_pages(BuddyPool::kMaxOrder + 1), nullptr);
  EXPECT_EQ(ip.pool.nr_free_pages(), usable(4096));
}

// Fill the pool with order-0 pages, free them all in random order, and the
// pool must coalesce back to blocks of the largest order.
TEST(Buddy, CoalescesBackToFullCapacity) {
  constexpr u64 kPages = 8 * (1u << BuddyPool::kMaxOrder);
  IdentityPool ip(kPages);
  const u64 total = ip.pool.nr_free_pages();
  std::vector<void*> pages;
  while (void* p = ip.pool.alloc_pages(0)) pages.push_back(p);
  EXPECT_EQ(pages.size(), total);
  EXPECT_EQ(ip.pool.nr_free_pages(), 0u);
  EXPECT_EQ(std::set<void*>(pages.begin(), pages.end()).size(), pages.size());  // no duplicates
  std::mt19937 rng(42);
  std::shuffle(pages.begin(), pages.end(), rng);
  for (void* p : pages) ip.pool.free_pages(p, 0);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  // The first max-order block holds metadata, the other 7 must be whole again.
  u32 big = 0;
  while (ip.pool.alloc_pages(BuddyPool::kMaxOrder)) ++big;
  EXPECT_EQ(big, 7u);
}

TEST(Buddy, ExhaustionAtEveryOrder) {
  for (u32 order = 0; order <= BuddyPool::kMaxOrder; ++order) {
    constexpr u64 kPages = 3 * (1u << BuddyPool::kMaxOrder) + 77;
    IdentityPool ip(kPages);
    const u64 total = ip.pool.nr_free_pages();
    u64 n = 0;
    while (ip.pool.alloc_pages(order)) ++n;
    // Exactly the size-aligned blocks that fit between the metadata and the end.
    const u64 first = ip.pool.first_usable_pa() / kPage, end = (reinterpret_cast<u64>(ip.arena.data()) / kPage) + kPages;
    const u64 blk = u64{1} << order;
    EXPECT_EQ(n, end / blk - (first + blk - 1) / blk) << order;
    EXPECT_EQ(ip.pool.nr_free_pages(), total - n * blk) << order;
    EXPECT_EQ(ip.pool.alloc_pages(order), nullptr);
  }
}

TEST(Buddy, OddSizedPool) {
  // Neither a power of two nor a multiple of the largest block.
  constexpr u64 kPages = 1000 + 3;
  IdentityPool ip(kPages);
  const u64 total = ip.pool.nr_free_pages();
  EXPECT_EQ(total, usable(kPages));
  const u64 lo = reinterpret_cast<u64>(ip.arena.data()) + BuddyPool::meta_pages(kPages) * kPage;
  const u64 hi = reinterpret_cast<u64>(ip.arena.data()) + kPages * kPage;
  u64 n = 0;
  std::vector<void*> got;
  while (void* p = ip.pool.alloc_pages(0)) {
    const u64 a = reinterpret_cast<u64>(p);
    EXPECT_GE(a, lo);
    EXPECT_LT(a, hi);
    got.push_back(p);
    ++n;
  }
  EXPECT_EQ(n, total);
  for (void* p : got) ip.pool.free_pages(p, 0);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
}

TEST(Buddy, UnalignedBaseStillGivesSizeAlignedBlocks) {
  // Base 3 pages past a max-block boundary: blocks must stay aligned in PA.
  Arena a(3 + 4 * (1u << BuddyPool::kMaxOrder));
  BuddyPool p;
  const u64 base = reinterpret_cast<u64>(a.data()) + 3 * kPage;
  const u64 pages = 4 * (1u << BuddyPool::kMaxOrder);
  ASSERT_EQ(p.init(base, pages, 0), 0);
  const u64 total = p.nr_free_pages();
  EXPECT_EQ(total, usable(pages));
  std::vector<std::pair<void*, u32>> got;
  for (u32 order = BuddyPool::kMaxOrder + 1; order-- > 0;) {
    while (void* b = p.alloc_pages(order)) {
      EXPECT_EQ(p.pa_of(b) % (kPage << order), 0u);
      EXPECT_GE(p.pa_of(b), p.first_usable_pa());
      EXPECT_LE(p.pa_of(b) + (kPage << order), base + pages * kPage);
      got.emplace_back(b, order);
    }
  }
  EXPECT_EQ(p.nr_free_pages(), 0u);
  for (auto [b, order] : got) p.free_pages(b, order);
  EXPECT_EQ(p.nr_free_pages(), total);
}

TEST(Buddy, MetadataPagesNeverHandedOut) {
  constexpr u64 kPages = 2 * (1u << BuddyPool::kMaxOrder);
  IdentityPool ip(kPages);
  const u64 meta_end = reinterpret_cast<u64>(ip.arena.data()) + BuddyPool::meta_pages(kPages) * kPage;
  EXPECT_EQ(ip.pool.first_usable_pa(), meta_end);
  std::vector<void*> got;
  while (void* p = ip.pool.alloc_pages(0)) {
    EXPECT_GE(reinterpret_cast<u64>(p), meta_end);
    got.push_back(p);
  }
  // Metadata pages ignore frees, gets and puts.
  void* meta = ip.arena.data();
  ip.pool.free_pages(meta, 0);
  ip.pool.put_page(meta);
  ip.pool.get_page(meta);
  EXPECT_EQ(ip.pool.page_count(meta), 1);
  EXPECT_EQ(ip.pool.nr_free_pages(), 0u);
  EXPECT_EQ(ip.pool.alloc_pages(0), nullptr);
}

TEST(Buddy, RefcountsAndPutFreesOrder0) {
  IdentityPool ip(64);
  const u64 total = ip.pool.nr_free_pages();
  void* p = ip.pool.alloc_pages(0);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(ip.pool.page_count(p), 1);
  ip.pool.get_page(p);
  ip.pool.get_page(static_cast<u8*>(p) + 100);  // any address inside the page
  EXPECT_EQ(ip.pool.page_count(p), 3);
  ip.pool.put_page(p);
  ip.pool.put_page(p);
  EXPECT_EQ(ip.pool.page_count(p), 1);
  EXPECT_EQ(ip.pool.nr_free_pages(), total - 1);
  ip.pool.put_page(p);
  EXPECT_EQ(ip.pool.page_count(p), 0);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  ip.pool.put_page(p);  // already free: ignored, no underflow
  EXPECT_EQ(ip.pool.page_count(p), 0);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  ip.pool.get_page(p);  // free page: no reference to take
  EXPECT_EQ(ip.pool.page_count(p), 0);
  ip.pool.put_page(p);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  // The pool is intact: every page can still be allocated exactly once.
  u64 n = 0;
  while (ip.pool.alloc_pages(0)) ++n;
  EXPECT_EQ(n, total);
}

// get_refs / dec_refs: n references in one update, with the single-step
// rules (saturation, no underflow, the last drop reported).
TEST(Buddy, RefsInOneUpdate) {
  IdentityPool ip(64);
  const u64 total = ip.pool.nr_free_pages();
  void* p = ip.pool.alloc_pages(0);
  ASSERT_NE(p, nullptr);
  ip.pool.get_refs(p, 512);
  EXPECT_EQ(ip.pool.page_count(p), 513);
  EXPECT_FALSE(ip.pool.dec_refs(p, 514));  // more than it holds: refused, unchanged
  EXPECT_EQ(ip.pool.page_count(p), 513);
  EXPECT_FALSE(ip.pool.dec_refs(p, 512));
  EXPECT_EQ(ip.pool.page_count(p), 1);
  ip.pool.get_refs(p, 0xfffff);  // saturates at 0xffff rather than wrap
  EXPECT_EQ(ip.pool.page_count(p), 0xffff);
  EXPECT_TRUE(ip.pool.dec_refs(p, 0xffff));  // the last reference
  EXPECT_EQ(ip.pool.page_count(p), 0);
  ip.pool.free_pages(p, 0);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  ip.pool.get_refs(p, 3);  // a free page: no reference to take
  EXPECT_EQ(ip.pool.page_count(p), 0);
}

TEST(Buddy, BlockReleasedPageByPageCoalesces) {
  IdentityPool ip(4096);
  const u64 total = ip.pool.nr_free_pages();
  void* b = ip.pool.alloc_pages(3);
  ASSERT_NE(b, nullptr);
  for (u32 i = 0; i < 8; ++i) EXPECT_EQ(ip.pool.page_count(static_cast<u8*>(b) + i * kPage), 1);
  for (u32 i = 0; i < 8; ++i) ip.pool.put_page(static_cast<u8*>(b) + i * kPage);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  // Coalesced: an order-3 allocation can get the same block back, and the
  // largest order is available again.
  EXPECT_NE(ip.pool.alloc_pages(BuddyPool::kMaxOrder), nullptr);
}

TEST(Buddy, InteriorPointersNameTheirPage) {
  IdentityPool ip(64);
  const u64 total = ip.pool.nr_free_pages();
  u8* p = static_cast<u8*>(ip.pool.alloc_pages(0));
  ip.pool.get_page(p + 8);
  EXPECT_FALSE(ip.pool.dec_ref(p + 16));
  EXPECT_TRUE(ip.pool.dec_ref(p + 4000));
  ip.pool.free_pages(p + 24, 0);  // e.g. a descriptor pointer into a table page
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  u8* q = static_cast<u8*>(ip.pool.alloc_pages(1));
  ip.pool.free_pages(q + kPage + 8, 1);  // second page: not the block's first
  EXPECT_EQ(ip.pool.nr_free_pages(), total - 2);
  ip.pool.free_pages(q + 8, 1);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
}

TEST(Buddy, DecRefLeavesFreeingToTheCaller) {
  IdentityPool ip(64);
  const u64 total = ip.pool.nr_free_pages();
  void* p = ip.pool.alloc_pages(0);
  ip.pool.get_page(p);
  EXPECT_FALSE(ip.pool.dec_ref(p));
  EXPECT_TRUE(ip.pool.dec_ref(p));
  EXPECT_EQ(ip.pool.nr_free_pages(), total - 1);  // not freed yet
  EXPECT_FALSE(ip.pool.dec_ref(p));               // already 0
  ip.pool.free_pages(p, 0);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
}

TEST(Buddy, InvalidFreesAreIgnored) {
  IdentityPool ip(4096);
  const u64 total = ip.pool.nr_free_pages();
  u8* b = static_cast<u8*>(ip.pool.alloc_pages(2));
  ASSERT_NE(b, nullptr);
  ip.pool.free_pages(b + kPage, 2);  // misaligned for its order
  ip.pool.free_pages(b, BuddyPool::kMaxOrder + 1);
  int outside = 0;
  ip.pool.free_pages(&outside, 0);
  EXPECT_EQ(ip.pool.nr_free_pages(), total - 4);
  ip.pool.free_pages(b, 2);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  ip.pool.free_pages(b, 2);  // double free
  ip.pool.free_pages(b + kPage, 0);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
  EXPECT_EQ(ip.pool.page_count(&outside), 0);
}

TEST(Buddy, VaOffsetTranslation) {
  constexpr u64 kPages = 2048;
  Arena a(kPages);
  constexpr u64 kBasePa = 0x80000000;
  const s64 off = static_cast<s64>(reinterpret_cast<u64>(a.data()) - kBasePa);
  BuddyPool p;
  ASSERT_EQ(p.init(kBasePa, kPages, off), 0);
  EXPECT_EQ(p.va_of(kBasePa), a.data());
  EXPECT_EQ(p.pa_of(a.data() + 5 * kPage), kBasePa + 5 * kPage);
  void* b = p.alloc_pages(4);
  ASSERT_NE(b, nullptr);
  EXPECT_GE(static_cast<u8*>(b), a.data());
  EXPECT_LT(static_cast<u8*>(b), a.data() + a.size());
  EXPECT_EQ(p.pa_of(b) % (kPage << 4), 0u);
  EXPECT_EQ(p.va_of(p.pa_of(b)), b);
  p.free_pages(b, 4);
  EXPECT_EQ(p.nr_free_pages(), usable(kPages));
}

TEST(Buddy, RefcountSaturates) {
  IdentityPool ip(16);
  void* p = ip.pool.alloc_pages(0);
  for (int i = 0; i < 0x10010; ++i) ip.pool.get_page(p);
  EXPECT_EQ(ip.pool.page_count(p), 0xffff);
}

TEST(Buddy, ConcurrentGetPut) {
  IdentityPool ip(64);
  void* p = ip.pool.alloc_pages(0);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        ip.pool.get_page(p);
        EXPECT_FALSE(ip.pool.dec_ref(p));
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(ip.pool.page_count(p), 1);
}

// Random alloc/free mix against a shadow set: no overlap, exact counts.
TEST(Buddy, RandomStress) {
  constexpr u64 kPages = 3000;
  IdentityPool ip(kPages);
  const u64 total = ip.pool.nr_free_pages();
  std::mt19937 rng(7);
  struct Block {
    u8* p;
    u32 order;
  };
  std::vector<Block> live;
  u64 used = 0;
  std::vector<u8> owner(kPages, 0);
  const u8* base = ip.arena.data();
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3) {
      const u32 order = rng() % 6;
      u8* p = static_cast<u8*>(ip.pool.alloc_pages(order));
      if (!p) continue;
      const u64 first = static_cast<u64>(p - base) / kPage;
      for (u64 i = 0; i < (u64{1} << order); ++i) {
        ASSERT_EQ(owner[first + i], 0) << "overlapping allocation";
        owner[first + i] = 1;
      }
      live.push_back({p, order});
      used += u64{1} << order;
    } else {
      const size_t k = rng() % live.size();
      const Block b = live[k];
      live[k] = live.back();
      live.pop_back();
      const u64 first = static_cast<u64>(b.p - base) / kPage;
      for (u64 i = 0; i < (u64{1} << b.order); ++i) owner[first + i] = 0;
      ip.pool.free_pages(b.p, b.order);
      used -= u64{1} << b.order;
    }
    ASSERT_EQ(ip.pool.nr_free_pages(), total - used);
  }
  for (const Block& b : live) ip.pool.free_pages(b.p, b.order);
  EXPECT_EQ(ip.pool.nr_free_pages(), total);
}

}  // namespace
}  // namespace pkvm
