// SPDX-License-Identifier: GPL-2.0
/*
 * pkvm_host: the host side of the pKVM-style protected-memory hypervisor.
 *
 * core.c: finding the hypervisor and checking its ABI version at load time,
 * issuing and counting hypercalls, and the pages the module shares with the
 * hypervisor for the statistics and dump calls.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/arm-smccc.h>
#include <linux/atomic.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <asm/cpufeature.h>
#include <asm/sysreg.h>

#include "internal.h"

static uint test_abi_major;
module_param(test_abi_major, uint, 0444);
MODULE_PARM_DESC(test_abi_major,
		 "For tests: behave as if built for this ABI major version (0: the real one)");

struct pkvm_hyp_info pkvm_hyp;

/* Put in unused argument registers of abi_version at load ("pkvmprob"). */
#define PROBE_MARKER 0x706b766d70726f62ULL

/* Per-call counters, indexed like the hypervisor's statistics page. */
static atomic64_t calls_ok[PKVM_HOST_NR_COUNTERS];
static atomic64_t calls_failed[PKVM_HOST_NR_COUNTERS];
static atomic64_t calls_errors[PKVM_HOST_NR_COUNTERS];

/*
 * Pages shared with the hypervisor only while a get_stats or
 * dump_host_stage2 call runs: one for statistics, DUMP_PAGES for dumps.
 */
#define DUMP_PAGES 8
#define DUMP_RECORDS (DUMP_PAGES * PKVM_PAGE_SIZE / sizeof(u64))
static DEFINE_MUTEX(scratch_lock);
static struct page *stats_page;
static struct page *dump_pages;
static bool scratch_broken;	/* a scratch page could not be unshared: leak it */

struct pkvm_ioc_stats *pkvm_stats_baseline;

static const u64 known_ids[] = {
#define PKVM_ID(name, NAME, n) PKVM_HC_##NAME,
	PKVM_HC_FOR_EACH_CALL(PKVM_ID)
#undef PKVM_ID
};

static const u64 test_ids[] = {
#define PKVM_ID(name, NAME, n) PKVM_HC_##NAME,
	PKVM_HC_FOR_EACH_TEST_CALL(PKVM_ID)
#undef PKVM_ID
};

bool pkvm_id_known(u64 id)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(known_ids); i++)
		if (known_ids[i] == id)
			return true;
	if (!pkvm_hyp.test_calls)
		return false;
	for (i = 0; i < ARRAY_SIZE(test_ids); i++)
		if (test_ids[i] == id)
			return true;
	return false;
}

/* The hypervisor counts the calls it recognises; so do we. */
static void count_call(u64 id, long long ret)
{
	u64 fn = id - PKVM_HC_BASE;

	if (!pkvm_id_known(id))
		return;
	if (fn < PKVM_HOST_NR_COUNTERS)
		atomic64_inc(ret == 0 ? &calls_ok[fn] : &calls_failed[fn]);
	if (ret < 0 && -ret < PKVM_HOST_NR_COUNTERS)
		atomic64_inc(&calls_errors[-ret]);
}

long long pkvm_hc(unsigned long long a[PKVM_NR_REGS])
{
	struct arm_smccc_res res;
	u64 id = a[0];

	arm_smccc_1_1_hvc(a[0], a[1], a[2], a[3], a[4], a[5], a[6], &res);
	a[0] = res.a0;
	a[1] = res.a1;
	a[2] = res.a2;
	a[3] = res.a3;
	count_call(id, (long long)res.a0);
	return (long long)res.a0;
}

void pkvm_hc_raw(unsigned long long a[PKVM_NR_REGS])
{
	/* arm_smccc_1_1_hvc() truncates x0 to 32 bits: the raw path does not. */
	register u64 x0 asm("x0") = a[0];
	register u64 x1 asm("x1") = a[1];
	register u64 x2 asm("x2") = a[2];
	register u64 x3 asm("x3") = a[3];
	register u64 x4 asm("x4") = a[4];
	register u64 x5 asm("x5") = a[5];
	register u64 x6 asm("x6") = a[6];

	asm volatile("hvc #0"
		     : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3), "+r"(x4), "+r"(x5), "+r"(x6)
		     :
		     : "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16",
		       "x17", "memory");
	a[0] = x0;
	a[1] = x1;
	a[2] = x2;
	a[3] = x3;
	a[4] = x4;
	a[5] = x5;
	a[6] = x6;
}

int pkvm_errno(long long ret)
{
	if (ret == 0)
		return 0;
	switch (-ret) {
	case PKVM_EPERM:
		return -EPERM;
	case PKVM_ENOENT:
		return -ENOENT;
	case PKVM_E2BIG:
		return -E2BIG;
	case PKVM_EAGAIN:
		return -EAGAIN;
	case PKVM_ENOMEM:
		return -ENOMEM;
	case PKVM_EFAULT:
		return -EFAULT;
	case PKVM_EBUSY:
		return -EBUSY;
	case PKVM_EEXIST:
		return -EEXIST;
	case PKVM_EINVAL:
		return -EINVAL;
	case PKVM_ERANGE:
		return -ERANGE;
	}
	return -EIO;
}

void pkvm_counters_read(u64 *ok, u64 *failed, u64 *errors)
{
	unsigned int i;

	for (i = 0; i < PKVM_HOST_NR_COUNTERS; i++) {
		ok[i] = atomic64_read(&calls_ok[i]);
		failed[i] = atomic64_read(&calls_failed[i]);
		errors[i] = atomic64_read(&calls_errors[i]);
	}
}

/* --- Scratch pages shared with the hypervisor -------------------------------- */

static int scratch_share(u64 pfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];

	if (scratch_broken)
		return -EIO;
	pkvm_hc_host_share_hyp_pack(a, pfn, nr);
	return pkvm_errno(pkvm_hc(a));
}

static void scratch_unshare(u64 pfn, u64 nr)
{
	unsigned long long a[PKVM_NR_REGS];
	int ret;

	pkvm_hc_host_unshare_hyp_pack(a, pfn, nr);
	ret = pkvm_errno(pkvm_hc(a));
	if (ret) {
		/* Never hand a page the hypervisor may still use back to the kernel. */
		pr_err("cannot unshare scratch pages %#llx+%llu (%d): leaking them\n", pfn, nr, ret);
		scratch_broken = true;
	}
}

int pkvm_fetch_stats(struct pkvm_ioc_stats *st)
{
	unsigned long long a[PKVM_NR_REGS];
	struct pkvm_hc_get_stats_res res;
	u64 pfn = page_to_pfn(stats_page);
	int ret;

	mutex_lock(&scratch_lock);
	ret = scratch_share(pfn, 1);
	if (ret)
		goto out;
	/* Exactly the calls that completed before get_stats, as the page will say. */
	pkvm_counters_read(st->issued_ok, st->issued_failed, st->issued_errors);
	pkvm_hc_get_stats_pack(a, pfn);
	pkvm_hc(a);
	ret = pkvm_errno(pkvm_hc_get_stats_unpack(a, &res));
	if (!ret) {
		st->nr_slots = min_t(u64, res.nr_slots, PKVM_HOST_STATS_SLOTS);
		memcpy(st->slots, page_address(stats_page), sizeof(st->slots));
	}
	scratch_unshare(pfn, 1);
out:
	mutex_unlock(&scratch_lock);
	return ret;
}

int pkvm_fetch_dump(u64 start_pfn, u64 *recs, u32 max, u32 *nr, u64 *next, bool *done)
{
	unsigned long long a[PKVM_NR_REGS];
	struct pkvm_hc_dump_host_stage2_res res;
	u64 pfn = page_to_pfn(dump_pages);
	const u64 *buf = page_address(dump_pages);
	u64 cur = start_pfn;
	bool fin = false;
	u32 n = 0;
	int ret;

	mutex_lock(&scratch_lock);
	ret = scratch_share(pfn, DUMP_PAGES);
	if (ret)
		goto out;
	while (n < max && !fin) {
		u64 take;

		pkvm_hc_dump_host_stage2_pack(a, pfn, DUMP_PAGES, cur);
		pkvm_hc(a);
		ret = pkvm_errno(pkvm_hc_dump_host_stage2_unpack(a, &res));
		if (ret)
			break;
		if (res.nr_records > DUMP_RECORDS ||
		    (res.nr_records == 0 && !res.done && res.next_pfn <= cur)) {
			pr_err("dump_host_stage2 made no progress at pfn %#llx\n", cur);
			ret = -EIO;
			break;
		}
		take = min_t(u64, res.nr_records, max - n);
		memcpy(recs + n, buf, take * sizeof(u64));
		n += take;
		if (take < res.nr_records) {
			/* Continue at the first record we had no room for. */
			cur = pkvm_dump_record_start_pfn(buf[take]);
			break;
		}
		cur = res.next_pfn;
		fin = res.done;
	}
	scratch_unshare(pfn, DUMP_PAGES);
out:
	mutex_unlock(&scratch_lock);
	if (!ret) {
		*nr = n;
		*next = cur;
		*done = fin;
	}
	return ret;
}

void pkvm_dump_scratch(u64 *pfn, u32 *pages)
{
	*pfn = page_to_pfn(dump_pages);
	*pages = DUMP_PAGES;
}

int pkvm_s2_for_each(u64 pfn, u64 nr, pkvm_seg_fn fn, void *arg)
{
	const u32 max = 256;
	u64 end = pfn + nr, cur = pfn;
	u64 *recs;
	int ret = 0;

	if (end < pfn)
		return -EINVAL;
	recs = kmalloc_array(max, sizeof(u64), GFP_KERNEL);
	if (!recs)
		return -ENOMEM;
	while (cur < end && !ret) {
		u64 next;
		bool done;
		u32 n, i;

		ret = pkvm_fetch_dump(cur, recs, max, &n, &next, &done);
		if (ret)
			break;
		for (i = 0; i < n && cur < end && !ret; i++) {
			u64 s = pkvm_dump_record_start_pfn(recs[i]);
			u64 e = s + pkvm_dump_record_nr_pages(recs[i]);

			if (e <= cur)
				continue;
			if (s >= end)
				break;
			if (s > cur)
				ret = fn(cur, s, PKVM_OWNER_HOST, PKVM_PAGE_OWNED, arg);
			if (!ret)
				ret = fn(max(s, cur), min(e, end), pkvm_dump_record_owner(recs[i]),
					 pkvm_dump_record_state(recs[i]), arg);
			cur = min(e, end);
		}
		if (ret || cur >= end)
			break;
		if (i < n) {
			/* A record starts at or beyond the end: the rest is a gap. */
			ret = fn(cur, end, PKVM_OWNER_HOST, PKVM_PAGE_OWNED, arg);
			cur = end;
			break;
		}
		/* No record between cur and next (or the end): default state. */
		if (done || next > cur) {
			u64 stop = done ? end : min(next, end);

			ret = fn(cur, stop, PKVM_OWNER_HOST, PKVM_PAGE_OWNED, arg);
			cur = stop;
		} else if (n == 0) {
			ret = -EIO;
		}
	}
	kfree(recs);
	return ret;
}

/* --- Finding the hypervisor ----------------------------------------------------- */

/*
 * An HVC is only safe when something runs at EL2: with no EL2 it is
 * UNDEFINED (an oops), and a kernel running at EL2 itself would call into
 * its own vectors. So: we must run at EL1, the CPU must implement EL2, and
 * only then is abi_version asked. Whatever else sits at EL2 (KVM, a hyp stub,
 * another hypervisor) answers an unknown vendor call with an error.
 */
static int pkvm_probe_hyp(void)
{
	unsigned long long a[PKVM_NR_REGS];
	struct pkvm_hc_abi_version_res res;
	u32 want_major = test_abi_major ? test_abi_major : PKVM_ABI_VERSION_MAJOR;
	u64 pfr0, el2;
	long long ret;

	if (read_sysreg(CurrentEL) != CurrentEL_EL1) {
		pr_err("the kernel runs at EL2 itself: no pKVM hypervisor below it; not loading\n");
		return -ENODEV;
	}
	pfr0 = read_sanitised_ftr_reg(SYS_ID_AA64PFR0_EL1);
	el2 = cpuid_feature_extract_unsigned_field(pfr0, ID_AA64PFR0_EL1_EL2_SHIFT);
	if (!el2) {
		pr_err("the CPU has no EL2 (ID_AA64PFR0_EL1.EL2 = 0): no hypervisor; not loading\n");
		return -ENODEV;
	}
	/*
	 * The ABI ignores argument registers a call does not use and returns 0
	 * in result registers that carry nothing: x3 of abi_version comes back
	 * 0 whatever we put there. Something else at EL2 that happens to accept
	 * the id (KVM's nVHE host calls use the same SMCCC owner range: to KVM,
	 * this id is __kvm_get_mdcr_el2) leaves our marker in place.
	 */
	pkvm_hc_abi_version_pack(a);
	a[1] = PROBE_MARKER;
	a[2] = PROBE_MARKER;
	a[3] = PROBE_MARKER;
	ret = pkvm_hc(a);
	if (ret) {
		pr_err("EL2 is not the pKVM hypervisor: abi_version returned %lld (%#llx); not loading\n",
		       ret, (u64)ret);
		return -ENODEV;
	}
	if (a[3] != 0 || a[1] == PROBE_MARKER) {
		pr_err("EL2 is not the pKVM hypervisor: abi_version answered %#llx %#llx %#llx, not as the ABI says; not loading\n",
		       a[1], a[2], a[3]);
		return -ENODEV;
	}
	pkvm_hc_abi_version_unpack(a, &res);
	if (res.abi_major != want_major) {
		pr_err("hypervisor ABI %llu.%llu is incompatible with this module's ABI %u.x; not loading\n",
		       res.abi_major, res.abi_minor, want_major);
		return -EPROTONOSUPPORT;
	}
	if (res.abi_minor < PKVM_ABI_VERSION_MINOR) {
		pr_err("hypervisor ABI %llu.%llu is older than the %u.%u this module needs; not loading\n",
		       res.abi_major, res.abi_minor, want_major, PKVM_ABI_VERSION_MINOR);
		return -EPROTONOSUPPORT;
	}
	pkvm_hyp.abi_major = res.abi_major;
	pkvm_hyp.abi_minor = res.abi_minor;

	/* inject_alloc_failure(0, 0) disarms injection: harmless when present. */
	pkvm_hc_inject_alloc_failure_pack(a, 0, 0);
	pkvm_hc_raw(a);
	pkvm_hyp.test_calls = a[0] == 0;
	return 0;
}

static int __init pkvm_host_init(void)
{
	int ret;

	BUILD_BUG_ON(PAGE_SIZE != PKVM_PAGE_SIZE);
	BUILD_BUG_ON(PKVM_STATS_SLOT_END > PKVM_HOST_STATS_SLOTS);

	ret = pkvm_probe_hyp();
	if (ret)
		return ret;

	stats_page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	dump_pages = alloc_pages(GFP_KERNEL | __GFP_ZERO, get_order(DUMP_PAGES * PAGE_SIZE));
	pkvm_stats_baseline = kzalloc(sizeof(*pkvm_stats_baseline), GFP_KERNEL);
	ret = -ENOMEM;
	if (!stats_page || !dump_pages || !pkvm_stats_baseline)
		goto err_free;
	ret = pkvm_fetch_stats(pkvm_stats_baseline);
	if (ret) {
		pr_err("get_stats failed (%d); not loading\n", ret);
		goto err_free;
	}
	ret = pkvm_ktouch_init();
	if (ret)
		goto err_free;
	ret = pkvm_dev_init();
	if (ret)
		goto err_ktouch;
	pr_info("pKVM hypervisor ABI %u.%u (module built for %u.%u), test calls: %s; /dev/pkvm-host ready\n",
		pkvm_hyp.abi_major, pkvm_hyp.abi_minor, PKVM_ABI_VERSION_MAJOR, PKVM_ABI_VERSION_MINOR,
		pkvm_hyp.test_calls ? "yes" : "no");
	return 0;

err_ktouch:
	pkvm_ktouch_exit();
err_free:
	kfree(pkvm_stats_baseline);
	if (dump_pages && !scratch_broken)
		__free_pages(dump_pages, get_order(DUMP_PAGES * PAGE_SIZE));
	if (stats_page && !scratch_broken)
		__free_page(stats_page);
	return ret;
}

static void __exit pkvm_host_exit(void)
{
	pkvm_dev_exit();
	pkvm_ktouch_exit();
	kfree(pkvm_stats_baseline);
	if (!scratch_broken) {
		__free_pages(dump_pages, get_order(DUMP_PAGES * PAGE_SIZE));
		__free_page(stats_page);
	}
	pr_info("unloaded\n");
}

module_init(pkvm_host_init);
module_exit(pkvm_host_exit);
MODULE_DESCRIPTION("Host driver for the pKVM-style protected-memory hypervisor");
MODULE_LICENSE("GPL");
