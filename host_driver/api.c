// SPDX-License-Identifier: GPL-2.0
/*
 * api.c: the in-kernel API exported to other modules (pkvm_host.h). Each
 * function is one hypercall; the hypervisor validates every argument.
 */
#include <linux/bitops.h>
#include <linux/export.h>
#include <linux/mm.h>

#include "internal.h"
#include "pkvm_host.h"

static_assert(PKVM_HOST_MAX_PAGES == PKVM_MAX_TRANSITION_PAGES);

unsigned long pkvm_live_guests;

void pkvm_guest_created(u64 guest)
{
	if (guest < BITS_PER_LONG)
		set_bit(guest, &pkvm_live_guests);
}

void pkvm_guest_destroyed(u64 guest)
{
	if (guest < BITS_PER_LONG)
		clear_bit(guest, &pkvm_live_guests);
}

static int call(unsigned long long a[PKVM_NR_REGS])
{
	return pkvm_errno(pkvm_hc(a));
}

/**
 * pkvm_host_abi_version() - the hypervisor's ABI version
 * @major: set to the major version (calls are compatible within one major)
 * @minor: set to the minor version (newer minors only add)
 *
 * The module refuses to load unless the major version is the one it was
 * built for and the minor version at least as new.
 *
 * Return: 0.
 */
int pkvm_host_abi_version(u32 *major, u32 *minor)
{
	*major = pkvm_hyp.abi_major;
	*minor = pkvm_hyp.abi_minor;
	return 0;
}
EXPORT_SYMBOL_GPL(pkvm_host_abi_version);

/**
 * pkvm_host_share_hyp() - share host pages with the hypervisor
 * @pfn: first page
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * The host keeps the pages and both sides may access them, until
 * pkvm_host_unshare_hyp().
 *
 * Return: 0; -EPERM if a page is not the host's alone; -EINVAL if @nr is 0,
 * the range wraps or is not RAM the host may give away; -E2BIG if @nr is too
 * large; -ENOMEM if the hypervisor lacks page-table pages.
 */
int pkvm_host_share_hyp(u64 pfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_host_share_hyp_pack(a, pfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_share_hyp);

/**
 * pkvm_host_unshare_hyp() - end a share with the hypervisor
 * @pfn: first page
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * Return: 0; -EPERM if a page is not shared with the hypervisor; -EBUSY if
 * the hypervisor pins a page; -EINVAL or -E2BIG for a bad range.
 */
int pkvm_host_unshare_hyp(u64 pfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_host_unshare_hyp_pack(a, pfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_unshare_hyp);

/**
 * pkvm_host_donate_hyp() - give host pages to the hypervisor
 * @pfn: first page
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * The host loses all access to the pages until pkvm_host_reclaim_hyp(); the
 * caller must keep them allocated and untouched meanwhile.
 *
 * Return: 0; -EPERM if a page is not the host's alone; -EINVAL or -E2BIG for
 * a bad range; -ENOMEM if the hypervisor lacks page-table pages.
 */
int pkvm_host_donate_hyp(u64 pfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_host_donate_hyp_pack(a, pfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_donate_hyp);

/**
 * pkvm_host_reclaim_hyp() - take back pages donated to the hypervisor
 * @pfn: first page
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * The hypervisor's hyp_donate_host: the pages return to the host.
 *
 * Return: 0; -EPERM if a page is not the hypervisor's, or is its own memory;
 * -EINVAL or -E2BIG for a bad range.
 */
int pkvm_host_reclaim_hyp(u64 pfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_hyp_donate_host_pack(a, pfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_reclaim_hyp);

/**
 * pkvm_host_pin_shared() - pin pages shared with the hypervisor
 * @pfn: first page
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * While a page is pinned pkvm_host_unshare_hyp() fails with -EBUSY. Pins
 * nest.
 *
 * Return: 0; -EPERM if a page is not shared with the hypervisor; -ERANGE if
 * a pin count would overflow; -EINVAL or -E2BIG for a bad range.
 */
int pkvm_host_pin_shared(u64 pfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_hyp_pin_shared_pack(a, pfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_pin_shared);

/**
 * pkvm_host_unpin_shared() - drop one pin of each page
 * @pfn: first page
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * Return: 0; -EPERM if a page is not pinned; -EINVAL or -E2BIG for a bad
 * range.
 */
int pkvm_host_unpin_shared(u64 pfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_hyp_unpin_shared_pack(a, pfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_unpin_shared);

/**
 * pkvm_host_checksum() - checksum of pages as the hypervisor sees them
 * @pfn: first page
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 * @sum: set to the checksum (FNV-1a over 64-bit words, see docs/abi.md)
 *
 * Shows that the hypervisor really sees memory shared with or donated to it.
 *
 * Return: 0; -EPERM if a page is neither the hypervisor's nor shared with it;
 * -EINVAL or -E2BIG for a bad range.
 */
int pkvm_host_checksum(u64 pfn, u64 nr, u64 *sum)
{
	unsigned long long a[PKVM_NR_REGS];
	struct pkvm_hc_checksum_res res;
	int ret;

	pkvm_hc_checksum_pack(a, pfn, nr);
	ret = call(a);
	pkvm_hc_checksum_unpack(a, &res);
	if (!ret)
		*sum = res.sum;
	return ret;
}
EXPORT_SYMBOL_GPL(pkvm_host_checksum);

/**
 * pkvm_host_guest_create() - create an empty guest
 * @guest: set to the new guest's id
 *
 * Return: 0; -ENOMEM if every guest id is in use or the hypervisor lacks a
 * page for the guest's stage 2.
 */
int pkvm_host_guest_create(u32 *guest)
{
	unsigned long long a[PKVM_NR_REGS];
	struct pkvm_hc_guest_create_res res;
	int ret;

	pkvm_hc_guest_create_pack(a);
	ret = call(a);
	pkvm_hc_guest_create_unpack(a, &res);
	if (!ret) {
		*guest = res.guest;
		pkvm_guest_created(res.guest);
	}
	return ret;
}
EXPORT_SYMBOL_GPL(pkvm_host_guest_create);

/**
 * pkvm_host_guest_destroy() - destroy a guest
 * @guest: guest id
 *
 * Pages the host shared with the guest return to the host; pages the guest
 * owns stay its own until pkvm_host_reclaim_guest().
 *
 * Return: 0; -ENOENT if there is no live guest @guest.
 */
int pkvm_host_guest_destroy(u32 guest)
{
	unsigned long long a[PKVM_NR_REGS];
	int ret;

	pkvm_hc_guest_destroy_pack(a, guest);
	ret = call(a);
	if (!ret)
		pkvm_guest_destroyed(guest);
	return ret;
}
EXPORT_SYMBOL_GPL(pkvm_host_guest_destroy);

/**
 * pkvm_host_share_guest() - share host pages with a guest
 * @guest: guest id
 * @pfn: first host page
 * @gfn: first guest frame the pages map at
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * Return: 0; -ENOENT if there is no live guest @guest; -EPERM if a page is
 * not the host's alone or a guest frame is already mapped; -EINVAL or -E2BIG
 * for a bad range; -ENOMEM if the hypervisor lacks page-table pages.
 */
int pkvm_host_share_guest(u32 guest, u64 pfn, u64 gfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_host_share_guest_pack(a, guest, pfn, gfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_share_guest);

/**
 * pkvm_host_unshare_guest() - end a share with a guest
 * @guest: guest id
 * @gfn: first guest frame of the share
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * Return: 0; -ENOENT if there is no live guest @guest; -EPERM if a frame does
 * not map a page the host shared with @guest; -EINVAL or -E2BIG for a bad
 * range.
 */
int pkvm_host_unshare_guest(u32 guest, u64 gfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_host_unshare_guest_pack(a, guest, gfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_unshare_guest);

/**
 * pkvm_host_donate_guest() - give host pages to a guest
 * @guest: guest id
 * @pfn: first host page
 * @gfn: first guest frame the pages map at
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * The host loses access until it reclaims the pages after destroying the
 * guest (pkvm_host_reclaim_guest()).
 *
 * Return: as pkvm_host_share_guest().
 */
int pkvm_host_donate_guest(u32 guest, u64 pfn, u64 gfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_host_donate_guest_pack(a, guest, pfn, gfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_donate_guest);

/**
 * pkvm_host_reclaim_guest() - take back pages of a destroyed guest
 * @guest: guest id
 * @pfn: first host page
 * @nr: number of pages, 1..PKVM_HOST_MAX_PAGES
 *
 * The hypervisor zeroes the pages before the host can access them again.
 *
 * Return: 0; -ENOENT if there is no guest @guest; -EBUSY if it is still
 * alive; -EPERM if a page is not owned by @guest; -EINVAL or -E2BIG for a
 * bad range.
 */
int pkvm_host_reclaim_guest(u32 guest, u64 pfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	pkvm_hc_host_reclaim_guest_pack(a, guest, pfn, nr);
	return call(a);
}
EXPORT_SYMBOL_GPL(pkvm_host_reclaim_guest);

/*
 * The struct page variants. A range of struct pages is only contiguous in
 * physical memory when the pages come from one allocation (alloc_pages(),
 * alloc_pages_exact()); that is the caller's responsibility.
 */

/**
 * pkvm_host_share_hyp_pages() - pkvm_host_share_hyp() on struct pages
 * @page: first page of a physically contiguous range
 * @nr: number of pages
 *
 * Return: as pkvm_host_share_hyp().
 */
int pkvm_host_share_hyp_pages(struct page *page, unsigned int nr)
{
	return pkvm_host_share_hyp(page_to_pfn(page), nr);
}
EXPORT_SYMBOL_GPL(pkvm_host_share_hyp_pages);

/**
 * pkvm_host_unshare_hyp_pages() - pkvm_host_unshare_hyp() on struct pages
 * @page: first page of a physically contiguous range
 * @nr: number of pages
 *
 * Return: as pkvm_host_unshare_hyp().
 */
int pkvm_host_unshare_hyp_pages(struct page *page, unsigned int nr)
{
	return pkvm_host_unshare_hyp(page_to_pfn(page), nr);
}
EXPORT_SYMBOL_GPL(pkvm_host_unshare_hyp_pages);

/**
 * pkvm_host_donate_hyp_pages() - pkvm_host_donate_hyp() on struct pages
 * @page: first page of a physically contiguous range
 * @nr: number of pages
 *
 * Return: as pkvm_host_donate_hyp().
 */
int pkvm_host_donate_hyp_pages(struct page *page, unsigned int nr)
{
	return pkvm_host_donate_hyp(page_to_pfn(page), nr);
}
EXPORT_SYMBOL_GPL(pkvm_host_donate_hyp_pages);

/**
 * pkvm_host_reclaim_hyp_pages() - pkvm_host_reclaim_hyp() on struct pages
 * @page: first page of a physically contiguous range
 * @nr: number of pages
 *
 * Return: as pkvm_host_reclaim_hyp().
 */
int pkvm_host_reclaim_hyp_pages(struct page *page, unsigned int nr)
{
	return pkvm_host_reclaim_hyp(page_to_pfn(page), nr);
}
EXPORT_SYMBOL_GPL(pkvm_host_reclaim_hyp_pages);

/**
 * pkvm_host_pin_shared_pages() - pkvm_host_pin_shared() on struct pages
 * @page: first page of a physically contiguous range
 * @nr: number of pages
 *
 * Return: as pkvm_host_pin_shared().
 */
int pkvm_host_pin_shared_pages(struct page *page, unsigned int nr)
{
	return pkvm_host_pin_shared(page_to_pfn(page), nr);
}
EXPORT_SYMBOL_GPL(pkvm_host_pin_shared_pages);

/**
 * pkvm_host_unpin_shared_pages() - pkvm_host_unpin_shared() on struct pages
 * @page: first page of a physically contiguous range
 * @nr: number of pages
 *
 * Return: as pkvm_host_unpin_shared().
 */
int pkvm_host_unpin_shared_pages(struct page *page, unsigned int nr)
{
	return pkvm_host_unpin_shared(page_to_pfn(page), nr);
}
EXPORT_SYMBOL_GPL(pkvm_host_unpin_shared_pages);

/**
 * pkvm_host_share_guest_pages() - pkvm_host_share_guest() on struct pages
 * @guest: guest id
 * @page: first page of a physically contiguous range
 * @gfn: first guest frame the pages map at
 * @nr: number of pages
 *
 * Return: as pkvm_host_share_guest().
 */
int pkvm_host_share_guest_pages(u32 guest, struct page *page, u64 gfn, unsigned int nr)
{
	return pkvm_host_share_guest(guest, page_to_pfn(page), gfn, nr);
}
EXPORT_SYMBOL_GPL(pkvm_host_share_guest_pages);

/**
 * pkvm_host_donate_guest_pages() - pkvm_host_donate_guest() on struct pages
 * @guest: guest id
 * @page: first page of a physically contiguous range
 * @gfn: first guest frame the pages map at
 * @nr: number of pages
 *
 * Return: as pkvm_host_donate_guest().
 */
int pkvm_host_donate_guest_pages(u32 guest, struct page *page, u64 gfn, unsigned int nr)
{
	return pkvm_host_donate_guest(guest, page_to_pfn(page), gfn, nr);
}
EXPORT_SYMBOL_GPL(pkvm_host_donate_guest_pages);

/**
 * pkvm_host_reclaim_guest_pages() - pkvm_host_reclaim_guest() on struct pages
 * @guest: guest id
 * @page: first page of a physically contiguous range
 * @nr: number of pages
 *
 * Return: as pkvm_host_reclaim_guest().
 */
int pkvm_host_reclaim_guest_pages(u32 guest, struct page *page, unsigned int nr)
{
	return pkvm_host_reclaim_guest(guest, page_to_pfn(page), nr);
}
EXPORT_SYMBOL_GPL(pkvm_host_reclaim_guest_pages);
