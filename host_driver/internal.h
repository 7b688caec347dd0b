/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Internal interfaces of the pkvm_host module (not for other modules: they
 * use pkvm_host.h).
 */
#ifndef PKVM_HOST_INTERNAL_H_
#define PKVM_HOST_INTERNAL_H_

#include <linux/types.h>

#include "pkvm_abi.h"
#include "pkvm_host_ioctl.h"

#define PKVM_HOST_NAME "pkvm_host"

/* What the hypervisor told us at load time. */
struct pkvm_hyp_info {
	u32 abi_major;
	u32 abi_minor;
	bool test_calls;	/* the hypervisor has the test-only calls */
};
extern struct pkvm_hyp_info pkvm_hyp;

/* Guests created through the module and not destroyed yet, by guest id. */
extern unsigned long pkvm_live_guests;

/* --- core.c ---------------------------------------------------------------- */

/*
 * pkvm_hc() - issue HVC #0 with x0..x6 = a[0..6]; on return a[0..3] hold
 * x0..x3. Counts the call as the hypervisor does. Returns x0.
 */
long long pkvm_hc(unsigned long long a[PKVM_NR_REGS]);
/* The same for ids outside the ABI: x0..x6 in and out, nothing counted. */
void pkvm_hc_raw(unsigned long long a[PKVM_NR_REGS]);
/* Linux errno for a hypercall's x0. */
int pkvm_errno(long long ret);
/* True when id is an ABI call the running hypervisor implements. */
bool pkvm_id_known(u64 id);
/* Snapshot of the module's per-call counters (PKVM_HOST_NR_COUNTERS each). */
void pkvm_counters_read(u64 *ok, u64 *failed, u64 *errors);

/* get_stats through a page shared for the call; module counters alongside. */
int pkvm_fetch_stats(struct pkvm_ioc_stats *st);
extern struct pkvm_ioc_stats *pkvm_stats_baseline;

/*
 * Up to max dump records from start_pfn on, through pages shared for the
 * call. *next is where to continue when *done is false.
 */
int pkvm_fetch_dump(u64 start_pfn, u64 *recs, u32 max, u32 *nr, u64 *next, bool *done);
/* The pages pkvm_fetch_dump() shares while it runs. */
void pkvm_dump_scratch(u64 *pfn, u32 *pages);

/*
 * Calls fn for consecutive segments covering [pfn, pfn + nr) with the
 * owner and state the host stage 2 records for them (host/owned where the
 * dump has no record). Stops at fn's first non-zero return.
 */
typedef int (*pkvm_seg_fn)(u64 start, u64 end, u32 owner, u32 state, void *arg);
int pkvm_s2_for_each(u64 pfn, u64 nr, pkvm_seg_fn fn, void *arg);

/* --- api.c ------------------------------------------------------------------ */
void pkvm_guest_created(u64 guest);
void pkvm_guest_destroyed(u64 guest);

/* --- dev.c ------------------------------------------------------------------ */
int pkvm_dev_init(void);
void pkvm_dev_exit(void);

/* --- ktouch.c --------------------------------------------------------------- */
int pkvm_ktouch_init(void);
void pkvm_ktouch_exit(void);
/*
 * One 8-byte access to va from a dedicated kernel thread. Returns 0 with
 * *outcome = PKVM_KTOUCH_*, or a negative errno when no probe ran. On
 * PKVM_KTOUCH_TIMEOUT the thread may still touch va later: the caller must
 * keep the memory allocated.
 */
int pkvm_ktouch(void *va, u32 flags, u64 *value, u32 *outcome, u64 *esr);

#endif /* PKVM_HOST_INTERNAL_H_ */
