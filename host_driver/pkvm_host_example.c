// SPDX-License-Identifier: GPL-2.0
/*
 * pkvm_host_example: a module that uses pkvm_host's exported API the way a
 * driver would, with struct pages from the page allocator. On load it walks
 * through sharing, pinning, donation and guest transitions, checks each
 * result, and prints one line per step ("PASS name" or "FAIL name: ...").
 * It stays loaded; rmmod it when done.
 */
#define pr_fmt(fmt) "pkvm_host_example: " fmt

#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/module.h>

#include "pkvm_host.h"

static int failures;

static void step(const char *name, int got, int want)
{
	if (got == want) {
		pr_info("PASS %s\n", name);
	} else {
		pr_err("FAIL %s: returned %d, expected %d\n", name, got, want);
		failures++;
	}
}

/* FNV-1a over 64-bit words, as the hypervisor's checksum call (docs/abi.md). */
static u64 fnv1a64(const u64 *w, size_t words)
{
	u64 h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < words; i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return h;
}

static bool page_is_zero(struct page *page)
{
	const u64 *w = page_address(page);
	size_t i;

	for (i = 0; i < PAGE_SIZE / sizeof(u64); i++)
		if (w[i])
			return false;
	return true;
}

static int __init example_init(void)
{
	struct page *pages;
	u32 major, minor, guest = 0;
	u64 sum = 0, *w;
	size_t i;
	int ret;

	pkvm_host_abi_version(&major, &minor);
	pr_info("hypervisor ABI %u.%u\n", major, minor);
	pages = alloc_pages(GFP_KERNEL | __GFP_ZERO, 1);
	if (!pages)
		return -ENOMEM;
	w = page_address(pages);
	for (i = 0; i < 2 * PAGE_SIZE / sizeof(u64); i++)
		w[i] = i * 0x0101010101010101ULL;

	step("share_hyp 2 pages", pkvm_host_share_hyp_pages(pages, 2), 0);
	ret = pkvm_host_checksum(page_to_pfn(pages), 2, &sum);
	step("checksum of shared pages", ret, 0);
	step("checksum matches the content",
	     !ret && sum == fnv1a64(w, 2 * PAGE_SIZE / sizeof(u64)) ? 0 : -EIO, 0);
	step("pin_shared", pkvm_host_pin_shared_pages(pages, 2), 0);
	step("unshare while pinned refused", pkvm_host_unshare_hyp_pages(pages, 2), -EBUSY);
	step("unpin_shared", pkvm_host_unpin_shared_pages(pages, 2), 0);
	step("unshare_hyp", pkvm_host_unshare_hyp_pages(pages, 2), 0);
	step("unshare again refused", pkvm_host_unshare_hyp_pages(pages, 2), -EPERM);

	step("donate_hyp", pkvm_host_donate_hyp_pages(pages, 1), 0);
	step("donate again refused", pkvm_host_donate_hyp_pages(pages, 1), -EPERM);
	step("reclaim_hyp", pkvm_host_reclaim_hyp_pages(pages, 1), 0);
	step("page zeroed after reclaim_hyp", page_is_zero(pages) ? 0 : -EIO, 0);

	ret = pkvm_host_guest_create(&guest);
	step("guest_create", ret, 0);
	if (!ret) {
		step("share_guest", pkvm_host_share_guest_pages(guest, pages + 1, 0x100, 1), 0);
		step("unshare_guest", pkvm_host_unshare_guest(guest, 0x100, 1), 0);
		step("donate_guest", pkvm_host_donate_guest_pages(guest, pages, 0, 2), 0);
		step("reclaim while alive refused", pkvm_host_reclaim_guest_pages(guest, pages, 2),
		     -EBUSY);
		step("guest_destroy", pkvm_host_guest_destroy(guest), 0);
		step("reclaim_guest", pkvm_host_reclaim_guest_pages(guest, pages, 2), 0);
		step("pages zeroed after reclaim_guest",
		     page_is_zero(pages) && page_is_zero(pages + 1) ? 0 : -EIO, 0);
		step("guest gone", pkvm_host_guest_destroy(guest), -ENOENT);
	}
	/* Only pages that are the host's alone again go back to the allocator. */
	if (failures) {
		pr_err("%d step(s) failed; leaking the pages\n", failures);
	} else {
		__free_pages(pages, 1);
		pr_info("all steps passed\n");
	}
	return 0;
}

static void __exit example_exit(void)
{
}

module_init(example_init);
module_exit(example_exit);
MODULE_DESCRIPTION("Example user of the pkvm_host in-kernel API");
MODULE_LICENSE("GPL");
