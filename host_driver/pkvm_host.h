/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pkvm_host.h: the in-kernel API of the pkvm_host module, for other modules
 * that move pages between the host kernel, the hypervisor and guests.
 *
 * Every function issues one hypercall of the pKVM-style hypervisor ABI
 * (docs/abi.md) and returns 0 or a negative Linux errno: the hypervisor's
 * refusals (-EPERM, -ENOENT, -E2BIG, -ENOMEM, -EBUSY, -EINVAL, -ERANGE, ...)
 * keep their ABI meaning; -EOPNOTSUPP means the running hypervisor lacks the
 * call (test-only calls on a production build) and -EIO an answer outside
 * the ABI. A call acts on the whole range or, when it fails, on none of it;
 * a range names 1..PKVM_HOST_MAX_PAGES pages.
 *
 * The caller owns the pages it passes: a page shared with or donated to the
 * hypervisor or a guest must stay allocated until it is the host's alone
 * again, and a donated page must not be touched by anyone (an access is
 * refused with a synchronous external abort: an oops in the kernel, SIGBUS in
 * userspace). All functions may be called concurrently on any CPU and none
 * of them sleeps, but a call on 512 pages keeps the CPU at EL2 for a while:
 * call them from process context.
 */
#ifndef PKVM_HOST_H_
#define PKVM_HOST_H_

#include <linux/mm_types.h>
#include <linux/types.h>

/* Longest range of one call, in pages (the ABI's PKVM_MAX_TRANSITION_PAGES). */
#define PKVM_HOST_MAX_PAGES 512

int pkvm_host_abi_version(u32 *major, u32 *minor);

int pkvm_host_share_hyp(u64 pfn, u64 nr);
int pkvm_host_unshare_hyp(u64 pfn, u64 nr);
int pkvm_host_donate_hyp(u64 pfn, u64 nr);
int pkvm_host_reclaim_hyp(u64 pfn, u64 nr);
int pkvm_host_pin_shared(u64 pfn, u64 nr);
int pkvm_host_unpin_shared(u64 pfn, u64 nr);
int pkvm_host_checksum(u64 pfn, u64 nr, u64 *sum);

int pkvm_host_guest_create(u32 *guest);
int pkvm_host_guest_destroy(u32 guest);
int pkvm_host_share_guest(u32 guest, u64 pfn, u64 gfn, u64 nr);
int pkvm_host_unshare_guest(u32 guest, u64 gfn, u64 nr);
int pkvm_host_donate_guest(u32 guest, u64 pfn, u64 gfn, u64 nr);
int pkvm_host_reclaim_guest(u32 guest, u64 pfn, u64 nr);

int pkvm_host_share_hyp_pages(struct page *page, unsigned int nr);
int pkvm_host_unshare_hyp_pages(struct page *page, unsigned int nr);
int pkvm_host_donate_hyp_pages(struct page *page, unsigned int nr);
int pkvm_host_reclaim_hyp_pages(struct page *page, unsigned int nr);
int pkvm_host_pin_shared_pages(struct page *page, unsigned int nr);
int pkvm_host_unpin_shared_pages(struct page *page, unsigned int nr);
int pkvm_host_share_guest_pages(u32 guest, struct page *page, u64 gfn, unsigned int nr);
int pkvm_host_donate_guest_pages(u32 guest, struct page *page, u64 gfn, unsigned int nr);
int pkvm_host_reclaim_guest_pages(u32 guest, struct page *page, unsigned int nr);

#endif /* PKVM_HOST_H_ */
