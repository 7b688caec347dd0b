// SPDX-License-Identifier: Apache-2.0
// Binary buddy allocator for the EL2 page pool. Free blocks sit on one
// doubly linked list per order; the links are page indices kept in the
// per-page metadata rather than in the free pages, so a stray write to a
// freed page cannot corrupt the allocator.
#include "nvhe/buddy.h"

namespace pkvm {
namespace {

constexpr u16 kMaxRef = 0xffff;

}  // namespace

u64 BuddyPool::meta_pages(u64 nr_pages) { return (nr_pages * sizeof(Page) + kPageSize - 1) / kPageSize; }

int BuddyPool::init(u64 base_pa, u64 nr_pages, s64 va_offset) {
  if (base_pa & (kPageSize - 1)) return -kEINVAL;
  // Indices must fit the u32 links (kNil excluded) and the range the address space.
  if (nr_pages == 0 || nr_pages >= kNil || nr_pages > (~u64{0} - base_pa) >> kPageShift) return -kEINVAL;
  const u64 meta = meta_pages(nr_pages);
  if (meta >= nr_pages) return -kEINVAL;

  va_offset_ = va_offset;
  base_pfn_ = base_pa >> kPageShift;
  nr_pages_ = nr_pages;
  meta_pages_ = meta;
  pages_ = static_cast<Page*>(va_of(base_pa));
  nr_free_ = 0;
  for (u32& h : free_head_) h = kNil;

  __builtin_memset(pages_, 0, nr_pages * sizeof(Page));
  for (u64 i = 0; i < meta; ++i) {
    page(i)->flags = kMeta;
    page(i)->refcount = 1;  // never reaches 0: get/put ignore metadata pages
  }

  // Seed the free lists with the largest blocks aligned to their size (in
  // physical frame numbers, so buddies are found by flipping one pfn bit).
  const u64 end = base_pfn_ + nr_pages;
  for (u64 pfn = base_pfn_ + meta; pfn < end;) {
    u32 order = kMaxOrder;
    while (order && ((pfn & ((u64{1} << order) - 1)) || pfn + (u64{1} << order) > end)) --order;
    const u64 idx = pfn - base_pfn_;
    for (u64 i = 0; i < (u64{1} << order); ++i) page(idx + i)->flags = kInFree;
    page(idx)->flags = kFree | kInFree;
    page(idx)->order = static_cast<u8>(order);
    list_add(order, idx);
    nr_free_ += u64{1} << order;
    pfn += u64{1} << order;
  }
  return 0;
}

void BuddyPool::list_add(u32 order, u64 idx) {
  Page* p = page(idx);
  p->prev = kNil;
  p->next = free_head_[order];
  if (p->next != kNil) page(p->next)->prev = static_cast<u32>(idx);
  free_head_[order] = static_cast<u32>(idx);
}

void BuddyPool::list_del(u32 order, u64 idx) {
  Page* p = page(idx);
  if (p->prev != kNil) {
    page(p->prev)->next = p->next;
  } else {
    free_head_[order] = p->next;
  }
  if (p->next != kNil) page(p->next)->prev = p->prev;
  p->next = p->prev = kNil;
}

u64 BuddyPool::index_of(const void* va) const {
  const u64 pfn = pa_of(va) >> kPageShift;
  if (!pages_ || pfn < base_pfn_ || pfn - base_pfn_ >= nr_pages_) return kNil;
  return pfn - base_pfn_;
}

void* BuddyPool::alloc_pages(u32 order) {
  if (order > kMaxOrder || !pages_) return nullptr;
  u32 k = order;
  while (k <= kMaxOrder && free_head_[k] == kNil) ++k;
  if (k > kMaxOrder) return nullptr;
  const u64 idx = free_head_[k];
  list_del(k, idx);
  // Split: the upper half of each step goes back on the next lower list.
  while (k > order) {
    --k;
    const u64 b = idx + (u64{1} << k);
    page(b)->flags = kFree | kInFree;
    page(b)->order = static_cast<u8>(k);
    list_add(k, b);
  }
  const u64 n = u64{1} << order;
  for (u64 i = 0; i < n; ++i) {
    Page* p = page(idx + i);
    p->flags = 0;
    p->order = 0;
    __atomic_store_n(&p->refcount, u16{1}, __ATOMIC_RELAXED);
  }
  nr_free_ -= n;
  void* va = va_of((base_pfn_ + idx) << kPageShift);
  __builtin_memset(va, 0, kPageSize << order);
  return va;
}

void BuddyPool::attach(u64 idx, u32 order) {
  const u64 n = u64{1} << order;
  for (u64 i = 0; i < n; ++i) {
    Page* p = page(idx + i);
    __atomic_store_n(&p->refcount, u16{0}, __ATOMIC_RELAXED);
    p->order = 0;
    p->flags = kInFree;
  }
  nr_free_ += n;
  u64 pfn = base_pfn_ + idx;
  while (order < kMaxOrder) {
    const u64 bpfn = pfn ^ (u64{1} << order);
    if (bpfn < base_pfn_ || bpfn - base_pfn_ >= nr_pages_) break;
    const u64 bidx = bpfn - base_pfn_;
    Page* b = page(bidx);
    // Only a free head of the same order is a whole buddy; metadata pages
    // never are, so merging never reaches them.
    if (!(b->flags & kFree) || b->order != order) break;
    list_del(order, bidx);
    b->flags = kInFree;
    b->order = 0;
    if (bpfn < pfn) pfn = bpfn;
    ++order;
  }
  const u64 head = pfn - base_pfn_;
  page(head)->flags = kFree | kInFree;
  page(head)->order = static_cast<u8>(order);
  list_add(order, head);
}

void BuddyPool::free_pages(void* va, u32 order) {
  if (order > kMaxOrder) return;
  const u64 idx = index_of(va);
  // Any address inside the block's first page names it, as for get/put.
  if (idx == kNil || ((base_pfn_ + idx) & ((u64{1} << order) - 1))) return;
  const u64 n = u64{1} << order;
  if (n > nr_pages_ - idx) return;
  for (u64 i = 0; i < n; ++i)
    if (page(idx + i)->flags & (kMeta | kInFree)) return;  // metadata or double free
  attach(idx, order);
}

void BuddyPool::get_refs(void* va, u32 n) {
  const u64 idx = index_of(va);
  // A free page has no owner to take a reference for: a later put would
  // free it a second time.
  if (n == 0 || idx == kNil || (page(idx)->flags & (kMeta | kInFree))) return;
  u16* rc = &page(idx)->refcount;
  u16 old = __atomic_load_n(rc, __ATOMIC_RELAXED);
  u16 next;
  // Saturate rather than wrap to 0, which would free a page still in use.
  do {
    if (old == kMaxRef) return;
    next = n >= u32(kMaxRef - old) ? kMaxRef : static_cast<u16>(old + n);
  } while (!__atomic_compare_exchange_n(rc, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

bool BuddyPool::dec_refs(void* va, u32 n) {
  const u64 idx = index_of(va);
  if (n == 0 || idx == kNil || (page(idx)->flags & kMeta)) return false;
  u16* rc = &page(idx)->refcount;
  u16 old = __atomic_load_n(rc, __ATOMIC_RELAXED);
  do {
    if (old < n) return false;
  } while (!__atomic_compare_exchange_n(rc, &old, static_cast<u16>(old - n), true, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED));
  // Acquire on the last drop orders the caller's reuse after every other
  // CPU's release of its reference.
  return old == n;
}

void BuddyPool::put_page(void* va) {
  if (!dec_ref(va)) return;
  const u64 idx = index_of(va);
  if (!(page(idx)->flags & kInFree)) attach(idx, 0);
}

int BuddyPool::page_count(void* va) const {
  const u64 idx = index_of(va);
  if (idx == kNil) return 0;
  return __atomic_load_n(&page(idx)->refcount, __ATOMIC_RELAXED);
}

}  // namespace pkvm
