// SPDX-License-Identifier: Apache-2.0
// The EL2 page pool: a binary buddy allocator over one physically contiguous
// range, sized at boot. Its per-page metadata lives in the first pages of the
// range itself (no heap); those pages are never handed out.
//
// Locking: the allocator is not thread-safe; the caller serialises
// init/alloc_pages/free_pages/put_page with its pool lock. get_page,
// page_count and dec_ref are atomic and may run concurrently with each other
// and with the locked operations on other pages (page-table walkers on
// several CPUs take and drop references). put_page frees the page when it
// drops the last reference, so it needs the pool lock; lock-free callers use
// dec_ref and free the page under the lock when it returns true.
#pragma once

#include "pgtable/types.h"

namespace pkvm {

class BuddyPool {
 public:
  static constexpr u64 kPageSize = 4096;
  static constexpr u32 kPageShift = 12;
  /// Largest block order: blocks of 1 .. 2^kMaxOrder pages (4 KiB .. 4 MiB).
  static constexpr u32 kMaxOrder = 10;

  /// Manages [base_pa, base_pa + nr_pages * 4096), reached through
  /// va = pa + va_offset (0 at EL2: identity). The first
  /// meta_pages(nr_pages) pages hold the metadata and stay allocated; the
  /// rest is free. Blocks are aligned to their size in physical addresses.
  /// Returns 0, or -kEINVAL for an unaligned base, an empty or overflowing
  /// range, or one too small to hold anything beyond its metadata.
  int init(u64 base_pa, u64 nr_pages, s64 va_offset);

  /// A zeroed block of 2^order pages aligned to its size, each page with
  /// refcount 1 (so the block may be released page by page with put_page),
  /// or nullptr when order > kMaxOrder or no block is free.
  void* alloc_pages(u32 order);

  /// Returns the block of 2^order pages whose first page contains `va` (as
  /// allocated, or a part of an allocation aligned to its size) to the pool
  /// whatever its refcounts, merging it with free buddies. Ignores a pointer
  /// outside the pool, a block not aligned to its order, or one covering
  /// metadata or free pages (a double free).
  void free_pages(void* va, u32 order);

  /// Takes a reference on the allocated page containing `va` (atomic).
  /// Ignored for a free page, a metadata page or an address outside the
  /// pool; the count saturates at 0xffff rather than wrap.
  void get_page(void* va) { get_refs(va, 1); }
  /// get_page `n` times in one atomic update (saturating likewise).
  void get_refs(void* va, u32 n);

  /// Drops a reference on the page containing `va`; dropping the last one
  /// frees that single page (order 0). Needs the pool lock (see above). A
  /// put on a page whose refcount is already 0 is ignored.
  void put_page(void* va);

  /// Atomically drops a reference on the page containing `va` without
  /// freeing; true when it was the last one (the caller then frees the page
  /// with free_pages(va, 0) under the pool lock). False, and no change, when
  /// the refcount is already 0 or `va` is a metadata page or outside the pool.
  bool dec_ref(void* va) { return dec_refs(va, 1); }
  /// dec_ref `n` times in one atomic update; false, and no change, when the
  /// refcount is below `n`.
  bool dec_refs(void* va, u32 n);

  /// Refcount of the page containing `va` (atomic read; 0 when free or
  /// outside the pool).
  int page_count(void* va) const;

  /// Number of free pages.
  u64 nr_free_pages() const { return nr_free_; }

  /// Physical address of `va`.
  u64 pa_of(const void* va) const { return reinterpret_cast<u64>(va) - static_cast<u64>(va_offset_); }

  /// Virtual address of `pa`.
  void* va_of(u64 pa) const { return reinterpret_cast<void*>(pa + static_cast<u64>(va_offset_)); }

  /// Metadata pages init() keeps for a pool of `nr_pages`.
  static u64 meta_pages(u64 nr_pages);

  /// First physical address init() may hand out.
  u64 first_usable_pa() const { return (base_pfn_ + meta_pages_) << kPageShift; }

 private:
  // Per-page metadata: free-list links (page indices, kNil at the ends), the
  // refcount, the order of a free block's head page, and state flags.
  struct Page {
    u32 next;
    u32 prev;
    u16 refcount;
    u8 order;
    u8 flags;
  };
  static_assert(sizeof(Page) == 12);
  static constexpr u32 kNil = ~0u;
  static constexpr u8 kFree = 1;    // head page of a free block
  static constexpr u8 kMeta = 2;    // holds metadata, never handed out
  static constexpr u8 kInFree = 4;  // any page of a free block: catches double frees

  Page* page(u64 idx) const { return &pages_[idx]; }
  /// Index of the page holding `va`, or kNil when outside the pool.
  u64 index_of(const void* va) const;
  void list_add(u32 order, u64 idx);
  void list_del(u32 order, u64 idx);
  /// Frees the 2^order block at index `idx` and merges it with its buddies.
  void attach(u64 idx, u32 order);

  Page* pages_ = nullptr;
  u64 base_pfn_ = 0;
  u64 nr_pages_ = 0;
  u64 meta_pages_ = 0;
  s64 va_offset_ = 0;
  u64 nr_free_ = 0;
  u32 free_head_[kMaxOrder + 1] = {};
};

}  // namespace pkvm
