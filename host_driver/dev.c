// SPDX-License-Identifier: GPL-2.0
/*
 * dev.c: /dev/pkvm-host, the root-only misc device for tools and tests:
 * test buffers owned by the module, any hypercall on them or on raw pfns,
 * statistics, the host stage-2 dump, kernel access probes, benchmarks and
 * mmap of test buffers. Every ioctl validates its whole input before it acts.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/cpumask.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/refcount.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <asm/arch_timer.h>

#include "internal.h"

/* A test buffer: physically contiguous pages owned by the module. */
struct pkvm_buf {
	u32 id;
	u64 nr;
	u64 pfn;
	void *va;
	/* One for the idr, one per ioctl using it, one per mapping. */
	refcount_t refs;
};

static DEFINE_MUTEX(bufs_lock);
static DEFINE_IDR(bufs);
static unsigned int nr_bufs;

static struct pkvm_buf *buf_get(u32 id)
{
	struct pkvm_buf *b;

	mutex_lock(&bufs_lock);
	b = idr_find(&bufs, id);
	if (b)
		refcount_inc(&b->refs);
	mutex_unlock(&bufs_lock);
	return b;
}

static void buf_put(struct pkvm_buf *b)
{
	/* The idr's reference is dropped only by buf_free(), which frees. */
	refcount_dec(&b->refs);
}

static bool pfn_in_a_buf(u64 pfn)
{
	struct pkvm_buf *b;
	bool found = false;
	int id;

	mutex_lock(&bufs_lock);
	idr_for_each_entry(&bufs, b, id) {
		if (pfn >= b->pfn && pfn - b->pfn < b->nr) {
			found = true;
			break;
		}
	}
	mutex_unlock(&bufs_lock);
	return found;
}

/* --- State checks through the dump ----------------------------------------------- */

static int seg_host_owned(u64 start, u64 end, u32 owner, u32 state, void *arg)
{
	return owner == PKVM_OWNER_HOST && state == PKVM_PAGE_OWNED ? 0 : -EBUSY;
}

/* 0 when every page of [pfn, pfn + nr) is the host's alone. */
static int range_host_owned(u64 pfn, u64 nr)
{
	return pkvm_s2_for_each(pfn, nr, seg_host_owned, NULL);
}

struct guard_ctx {
	u64 first, last;	/* kernel pages outside the buffers: [first, last] */
};

static int seg_guard(u64 start, u64 end, u32 owner, u32 state, void *arg)
{
	u64 p;

	/* Pages the host owns (shared or not) are what a donation would take. */
	if (owner != PKVM_OWNER_HOST || state == PKVM_PAGE_SHARED_BORROWED)
		return 0;
	for (p = start; p < end; p++)
		if (pfn_valid(p) && !pfn_in_a_buf(p))
			return -EACCES;
	return 0;
}

/*
 * Raw-pfn calls are hostile input for the hypervisor, but must not hurt the
 * kernel: a donation (or a buffer the hypervisor writes into) of kernel
 * memory outside the test buffers is refused when the hypervisor would
 * carry it out, i.e. when such a page is still the host's. Pages beyond
 * 2 * PKVM_MAX_TRANSITION_PAGES need no look: the hypervisor refuses ranges
 * that long with E2BIG.
 */
static int raw_guard(u64 pfn, u64 nr)
{
	u64 span = min_t(u64, nr, 2 * PKVM_MAX_TRANSITION_PAGES);
	u64 end = pfn + span, p;
	bool any = false;

	if (end < pfn)
		end = U64_MAX;
	for (p = pfn; p < end; p++) {
		if (pfn_valid(p) && !pfn_in_a_buf(p)) {
			any = true;
			break;
		}
	}
	if (!any)
		return 0;
	return pkvm_s2_for_each(p, end - p, seg_guard, NULL) == -EACCES ? -EACCES : 0;
}

/* --- Buffers ------------------------------------------------------------------- */

static long ioc_buf_alloc(void __user *argp)
{
	struct pkvm_ioc_buf u;
	struct pkvm_buf *b;
	int id;

	if (copy_from_user(&u, argp, sizeof(u)))
		return -EFAULT;
	if (u.flags || u.reserved || u.id || u.pfn)
		return -EINVAL;
	if (u.nr_pages == 0 || u.nr_pages > PKVM_HOST_BUF_MAX_PAGES)
		return -EINVAL;
	b = kzalloc(sizeof(*b), GFP_KERNEL);
	if (!b)
		return -ENOMEM;
	b->nr = u.nr_pages;
	b->va = alloc_pages_exact(b->nr * PAGE_SIZE, GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN);
	if (!b->va) {
		kfree(b);
		return -ENOMEM;
	}
	b->pfn = virt_to_pfn(b->va);
	refcount_set(&b->refs, 1);
	mutex_lock(&bufs_lock);
	id = idr_alloc(&bufs, b, 1, INT_MAX, GFP_KERNEL);
	if (id > 0)
		nr_bufs++;
	mutex_unlock(&bufs_lock);
	if (id < 0) {
		free_pages_exact(b->va, b->nr * PAGE_SIZE);
		kfree(b);
		return id;
	}
	b->id = id;
	u.id = id;
	u.pfn = b->pfn;
	if (copy_to_user(argp, &u, sizeof(u))) {
		/* Nobody knows the id: undo. */
		mutex_lock(&bufs_lock);
		idr_remove(&bufs, id);
		nr_bufs--;
		mutex_unlock(&bufs_lock);
		free_pages_exact(b->va, b->nr * PAGE_SIZE);
		kfree(b);
		return -EFAULT;
	}
	return 0;
}

static long ioc_buf_query(void __user *argp)
{
	struct pkvm_ioc_buf u;
	struct pkvm_buf *b;

	if (copy_from_user(&u, argp, sizeof(u)))
		return -EFAULT;
	if (u.flags || u.reserved)
		return -EINVAL;
	b = buf_get(u.id);
	if (!b)
		return -ENOENT;
	u.nr_pages = b->nr;
	u.pfn = b->pfn;
	buf_put(b);
	return copy_to_user(argp, &u, sizeof(u)) ? -EFAULT : 0;
}

/*
 * Frees a buffer when nothing uses it and every page is the host's alone
 * again: a page still shared, donated or pinned must never go back to the
 * page allocator.
 */
static long ioc_buf_free(void __user *argp)
{
	struct pkvm_ioc_buf u;
	struct pkvm_buf *b;
	int ret;

	if (copy_from_user(&u, argp, sizeof(u)))
		return -EFAULT;
	if (u.flags || u.reserved)
		return -EINVAL;
	mutex_lock(&bufs_lock);
	b = idr_find(&bufs, u.id);
	if (!b) {
		ret = -ENOENT;
		goto out;
	}
	if (refcount_read(&b->refs) != 1) {
		ret = -EBUSY;	/* mapped, or in use by another ioctl */
		goto out;
	}
	ret = range_host_owned(b->pfn, b->nr);
	if (ret)
		goto out;
	idr_remove(&bufs, u.id);
	nr_bufs--;
	free_pages_exact(b->va, b->nr * PAGE_SIZE);
	kfree(b);
out:
	mutex_unlock(&bufs_lock);
	return ret;
}

/* --- Hypercalls ---------------------------------------------------------------- */

enum page_arg {
	PA_NONE,	/* no host page argument */
	PA_RANGE,	/* pfn, nr pages */
	PA_ONE,		/* buf_pfn, one page (get_stats) */
};

struct call_desc {
	u64 id;
	enum page_arg pages;
	bool guarded;	/* raw pfns checked by raw_guard() */
	bool test_only;
};

static const struct call_desc *call_desc(u32 fn)
{
	static const struct call_desc descs[] = {
		{ PKVM_HC_ABI_VERSION, PA_NONE, false, false },
		{ PKVM_HC_NULL, PA_NONE, false, false },
		{ PKVM_HC_HOST_SHARE_HYP, PA_RANGE, false, false },
		{ PKVM_HC_HOST_UNSHARE_HYP, PA_RANGE, false, false },
		{ PKVM_HC_HOST_DONATE_HYP, PA_RANGE, true, false },
		{ PKVM_HC_HYP_DONATE_HOST, PA_RANGE, false, false },
		{ PKVM_HC_HOST_SHARE_GUEST, PA_RANGE, false, false },
		{ PKVM_HC_HOST_UNSHARE_GUEST, PA_NONE, false, false },
		{ PKVM_HC_HOST_DONATE_GUEST, PA_RANGE, true, false },
		{ PKVM_HC_HOST_RECLAIM_GUEST, PA_RANGE, false, false },
		{ PKVM_HC_HYP_PIN_SHARED, PA_RANGE, false, false },
		{ PKVM_HC_HYP_UNPIN_SHARED, PA_RANGE, false, false },
		{ PKVM_HC_GUEST_CREATE, PA_NONE, false, false },
		{ PKVM_HC_GUEST_DESTROY, PA_NONE, false, false },
		{ PKVM_HC_GET_STATS, PA_ONE, true, false },
		{ PKVM_HC_DUMP_HOST_STAGE2, PA_RANGE, true, false },
		{ PKVM_HC_CHECKSUM, PA_RANGE, false, false },
		{ PKVM_HC_GUEST_SHARE_HOST, PA_NONE, false, true },
		{ PKVM_HC_GUEST_UNSHARE_HOST, PA_NONE, false, true },
		{ PKVM_HC_INJECT_ALLOC_FAILURE, PA_NONE, false, true },
	};
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(descs); i++)
		if (descs[i].id == PKVM_HC_ID(fn))
			return &descs[i];
	return NULL;
}

/* Fills a[] for call d from the ioctl arguments and the resolved pfn. */
static void pack_call(const struct call_desc *d, const struct pkvm_ioc_call *c, u64 pfn,
		      unsigned long long a[PKVM_NR_REGS])
{
	switch (d->id) {
	case PKVM_HC_ABI_VERSION:
		pkvm_hc_abi_version_pack(a);
		break;
	case PKVM_HC_NULL:
		pkvm_hc_null_pack(a);
		break;
	case PKVM_HC_HOST_SHARE_HYP:
		pkvm_hc_host_share_hyp_pack(a, pfn, c->nr);
		break;
	case PKVM_HC_HOST_UNSHARE_HYP:
		pkvm_hc_host_unshare_hyp_pack(a, pfn, c->nr);
		break;
	case PKVM_HC_HOST_DONATE_HYP:
		pkvm_hc_host_donate_hyp_pack(a, pfn, c->nr);
		break;
	case PKVM_HC_HYP_DONATE_HOST:
		pkvm_hc_hyp_donate_host_pack(a, pfn, c->nr);
		break;
	case PKVM_HC_HOST_SHARE_GUEST:
		pkvm_hc_host_share_guest_pack(a, c->guest, pfn, c->gfn, c->nr);
		break;
	case PKVM_HC_HOST_UNSHARE_GUEST:
		pkvm_hc_host_unshare_guest_pack(a, c->guest, c->gfn, c->nr);
		break;
	case PKVM_HC_HOST_DONATE_GUEST:
		pkvm_hc_host_donate_guest_pack(a, c->guest, pfn, c->gfn, c->nr);
		break;
	case PKVM_HC_HOST_RECLAIM_GUEST:
		pkvm_hc_host_reclaim_guest_pack(a, c->guest, pfn, c->nr);
		break;
	case PKVM_HC_HYP_PIN_SHARED:
		pkvm_hc_hyp_pin_shared_pack(a, pfn, c->nr);
		break;
	case PKVM_HC_HYP_UNPIN_SHARED:
		pkvm_hc_hyp_unpin_shared_pack(a, pfn, c->nr);
		break;
	case PKVM_HC_GUEST_CREATE:
		pkvm_hc_guest_create_pack(a);
		break;
	case PKVM_HC_GUEST_DESTROY:
		pkvm_hc_guest_destroy_pack(a, c->guest);
		break;
	case PKVM_HC_GET_STATS:
		pkvm_hc_get_stats_pack(a, pfn);
		break;
	case PKVM_HC_DUMP_HOST_STAGE2:
		pkvm_hc_dump_host_stage2_pack(a, pfn, c->nr, c->start_pfn);
		break;
	case PKVM_HC_CHECKSUM:
		pkvm_hc_checksum_pack(a, pfn, c->nr);
		break;
	case PKVM_HC_GUEST_SHARE_HOST:
		pkvm_hc_guest_share_host_pack(a, c->guest, c->gfn, c->nr);
		break;
	case PKVM_HC_GUEST_UNSHARE_HOST:
		pkvm_hc_guest_unshare_host_pack(a, c->guest, c->gfn, c->nr);
		break;
	case PKVM_HC_INJECT_ALLOC_FAILURE:
		pkvm_hc_inject_alloc_failure_pack(a, c->start_pfn, c->count);
		break;
	}
}

#define CALL_MAX_REPEAT (1u << 20)

static long ioc_call(void __user *argp)
{
	unsigned long long a[PKVM_NR_REGS];
	const struct call_desc *d;
	struct pkvm_ioc_call c;
	struct pkvm_buf *b = NULL;
	u64 pfn = 0, npages, i, reps;
	long long ret = 0;
	long err = 0;

	if (copy_from_user(&c, argp, sizeof(c)))
		return -EFAULT;
	if (c.flags & ~PKVM_CALL_RAW)
		return -EINVAL;
	if (c.repeat > CALL_MAX_REPEAT)
		return -EINVAL;
	d = call_desc(c.fn);
	if (!d)
		return -EINVAL;
	if (d->test_only && !pkvm_hyp.test_calls)
		return -EOPNOTSUPP;

	if (d->pages != PA_NONE) {
		npages = d->pages == PA_ONE ? 1 : c.nr;
		if (c.flags & PKVM_CALL_RAW) {
			pfn = c.pfn;
			if (d->guarded) {
				err = raw_guard(pfn, npages);
				if (err)
					return err;
			}
		} else {
			b = buf_get(c.buf);
			if (!b)
				return -ENOENT;
			if (!PAGE_ALIGNED(c.offset) || (c.offset >> PAGE_SHIFT) >= b->nr ||
			    npages > b->nr - (c.offset >> PAGE_SHIFT)) {
				buf_put(b);
				return -EINVAL;
			}
			pfn = b->pfn + (c.offset >> PAGE_SHIFT);
		}
	}

	reps = c.repeat ? c.repeat : 1;
	c.done = 0;
	for (i = 0; i < reps; i++) {
		pack_call(d, &c, pfn, a);
		ret = pkvm_hc(a);
		if (ret)
			break;
		c.done++;
		if (d->id == PKVM_HC_GUEST_CREATE)
			pkvm_guest_created(a[PKVM_HC_GUEST_CREATE_RES_GUEST]);
		else if (d->id == PKVM_HC_GUEST_DESTROY)
			pkvm_guest_destroyed(c.guest);
		if ((i & 255) == 255)
			cond_resched();
	}
	if (b)
		buf_put(b);
	c.pfn = pfn;
	c.ret = ret;
	c.res[0] = a[1];
	c.res[1] = a[2];
	c.res[2] = a[3];
	return copy_to_user(argp, &c, sizeof(c)) ? -EFAULT : 0;
}

static long ioc_raw_hvc(void __user *argp)
{
	struct pkvm_ioc_raw_hvc r;

	if (copy_from_user(&r, argp, sizeof(r)))
		return -EFAULT;
	if (pkvm_id_known(r.regs[0]))
		return -EINVAL;
	pkvm_hc_raw(r.regs);
	return copy_to_user(argp, &r, sizeof(r)) ? -EFAULT : 0;
}

/* --- Statistics, dump, info ---------------------------------------------------------- */

static long ioc_get_stats(void __user *argp)
{
	struct pkvm_ioc_stats *st;
	u32 flags;
	long ret;

	if (get_user(flags, (u32 __user *)argp))
		return -EFAULT;
	if (flags & ~PKVM_STATS_BASELINE)
		return -EINVAL;
	st = kzalloc(sizeof(*st), GFP_KERNEL);
	if (!st)
		return -ENOMEM;
	if (flags & PKVM_STATS_BASELINE) {
		memcpy(st, pkvm_stats_baseline, sizeof(*st));
		ret = 0;
	} else {
		ret = pkvm_fetch_stats(st);
	}
	st->flags = flags;
	if (!ret && copy_to_user(argp, st, sizeof(*st)))
		ret = -EFAULT;
	kfree(st);
	return ret;
}

#define DUMP_MAX_RECORDS 65536

static long ioc_dump(void __user *argp)
{
	struct pkvm_ioc_dump u;
	u64 *recs;
	u64 next;
	bool done;
	u32 n;
	long ret;

	if (copy_from_user(&u, argp, sizeof(u)))
		return -EFAULT;
	if (u.flags || u.max_records == 0 || u.max_records > DUMP_MAX_RECORDS)
		return -EINVAL;
	recs = kvmalloc_array(u.max_records, sizeof(u64), GFP_KERNEL);
	if (!recs)
		return -ENOMEM;
	ret = pkvm_fetch_dump(u.start_pfn, recs, u.max_records, &n, &next, &done);
	if (!ret) {
		u.nr_records = n;
		u.next_pfn = next;
		u.done = done;
		if (copy_to_user(u64_to_user_ptr(u.records), recs, n * sizeof(u64)) ||
		    copy_to_user(argp, &u, sizeof(u)))
			ret = -EFAULT;
	}
	kvfree(recs);
	return ret;
}

static long ioc_info(void __user *argp)
{
	struct pkvm_ioc_info u = {
		.abi_major = pkvm_hyp.abi_major,
		.abi_minor = pkvm_hyp.abi_minor,
		.built_major = PKVM_ABI_VERSION_MAJOR,
		.built_minor = PKVM_ABI_VERSION_MINOR,
		.flags = pkvm_hyp.test_calls ? PKVM_INFO_TEST_CALLS : 0,
		.page_size = PAGE_SIZE,
		.max_transition_pages = PKVM_MAX_TRANSITION_PAGES,
		.guests = (u32)READ_ONCE(pkvm_live_guests),
		.nr_cpus = num_online_cpus(),
		.counter_freq = arch_timer_get_cntfrq(),
	};

	pkvm_dump_scratch(&u.dump_pfn, &u.dump_pages);
	mutex_lock(&bufs_lock);
	u.nr_buffers = nr_bufs;
	mutex_unlock(&bufs_lock);
	return copy_to_user(argp, &u, sizeof(u)) ? -EFAULT : 0;
}

/* --- Kernel access probe ------------------------------------------------------------ */

static long ioc_ktouch(void __user *argp)
{
	struct pkvm_ioc_ktouch u;
	struct pkvm_buf *b;
	long ret;

	if (copy_from_user(&u, argp, sizeof(u)))
		return -EFAULT;
	if (u.flags & ~(PKVM_KTOUCH_WRITE | PKVM_KTOUCH_PLAIN) || u.reserved)
		return -EINVAL;
	b = buf_get(u.buf);
	if (!b)
		return -ENOENT;
	if (!IS_ALIGNED(u.offset, sizeof(u64)) || u.offset >= b->nr * PAGE_SIZE) {
		buf_put(b);
		return -EINVAL;
	}
	ret = pkvm_ktouch(b->va + u.offset, u.flags, &u.value, &u.outcome, &u.esr);
	/* A probe that never finished may still access the buffer: keep it. */
	if (!ret && u.outcome != PKVM_KTOUCH_TIMEOUT)
		buf_put(b);
	if (!ret && copy_to_user(argp, &u, sizeof(u)))
		ret = -EFAULT;
	return ret;
}

/* --- Benchmarks ------------------------------------------------------------------------ */

#define BENCH_MAX_ITERATIONS 100000

static u64 ticks(void)
{
	return __arch_counter_get_cntvct();
}

static int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

static int hc(unsigned long long a[PKVM_NR_REGS])
{
	return pkvm_errno(pkvm_hc(a));
}

/* One iteration of op on [pfn, pfn + nr); guest is a live guest for SHARE_UNSHARE_GUEST. */
static int bench_once(u32 op, u64 pfn, u64 nr, u32 guest)
{
	unsigned long long a[PKVM_NR_REGS];
	struct pkvm_hc_guest_create_res gc;
	int ret;

	switch (op) {
	case PKVM_BENCH_NULL:
		pkvm_hc_null_pack(a);
		return hc(a);
	case PKVM_BENCH_SHARE_UNSHARE_HYP:
		pkvm_hc_host_share_hyp_pack(a, pfn, nr);
		ret = hc(a);
		if (ret)
			return ret;
		pkvm_hc_host_unshare_hyp_pack(a, pfn, nr);
		return hc(a);
	case PKVM_BENCH_DONATE_RECLAIM_HYP:
		pkvm_hc_host_donate_hyp_pack(a, pfn, nr);
		ret = hc(a);
		if (ret)
			return ret;
		pkvm_hc_hyp_donate_host_pack(a, pfn, nr);
		return hc(a);
	case PKVM_BENCH_SHARE_UNSHARE_GUEST:
		pkvm_hc_host_share_guest_pack(a, guest, pfn, 0, nr);
		ret = hc(a);
		if (ret)
			return ret;
		pkvm_hc_host_unshare_guest_pack(a, guest, 0, nr);
		return hc(a);
	case PKVM_BENCH_DONATE_RECLAIM_GUEST:
		pkvm_hc_guest_create_pack(a);
		ret = hc(a);
		if (ret)
			return ret;
		pkvm_hc_guest_create_unpack(a, &gc);
		pkvm_hc_host_donate_guest_pack(a, gc.guest, pfn, 0, nr);
		ret = hc(a);
		pkvm_hc_guest_destroy_pack(a, gc.guest);
		if (hc(a) || ret)
			return ret ? ret : -EIO;
		pkvm_hc_host_reclaim_guest_pack(a, gc.guest, pfn, nr);
		return hc(a);
	}
	return -EINVAL;
}

static long ioc_bench(void __user *argp)
{
	unsigned long long a[PKVM_NR_REGS];
	struct pkvm_hc_guest_create_res gc = { 0 };
	struct pkvm_ioc_bench u;
	struct pkvm_buf *b = NULL;
	u64 *samples, i, sum = 0, pfn = 0;
	long ret = 0;

	if (copy_from_user(&u, argp, sizeof(u)))
		return -EFAULT;
	if (u.op >= PKVM_BENCH_NR_OPS || u.reserved ||
	    u.iterations == 0 || u.iterations > BENCH_MAX_ITERATIONS)
		return -EINVAL;
	if (u.op != PKVM_BENCH_NULL) {
		if (u.nr_pages == 0 || u.nr_pages > PKVM_MAX_TRANSITION_PAGES)
			return -EINVAL;
		b = buf_get(u.buf);
		if (!b)
			return -ENOENT;
		if (u.page >= b->nr || u.nr_pages > b->nr - u.page) {
			buf_put(b);
			return -EINVAL;
		}
		pfn = b->pfn + u.page;
	}
	samples = kvmalloc_array(u.iterations, sizeof(u64), GFP_KERNEL);
	if (!samples) {
		ret = -ENOMEM;
		goto out_buf;
	}
	if (u.op == PKVM_BENCH_SHARE_UNSHARE_GUEST) {
		pkvm_hc_guest_create_pack(a);
		ret = hc(a);
		if (ret)
			goto out;
		pkvm_hc_guest_create_unpack(a, &gc);
	}
	for (i = 0; i < u.iterations; i++) {
		u64 t0, t1;

		t0 = ticks();
		ret = bench_once(u.op, pfn, u.nr_pages, gc.guest);
		t1 = ticks();
		if (ret)
			break;
		samples[i] = t1 - t0;
		sum += t1 - t0;
		if ((i & 63) == 63)
			cond_resched();
	}
	if (u.op == PKVM_BENCH_SHARE_UNSHARE_GUEST) {
		pkvm_hc_guest_destroy_pack(a, gc.guest);
		hc(a);
	}
	if (ret)
		goto out;
	sort(samples, u.iterations, sizeof(u64), cmp_u64, NULL);
	u.freq = arch_timer_get_cntfrq();
	u.min = samples[0];
	u.max = samples[u.iterations - 1];
	u.median = samples[u.iterations / 2];
	u.mean = div64_u64(sum, u.iterations);
	if (copy_to_user(argp, &u, sizeof(u)))
		ret = -EFAULT;
out:
	kvfree(samples);
out_buf:
	if (b)
		buf_put(b);
	return ret;
}

/* --- File operations --------------------------------------------------------------- */

static int pkvm_open(struct inode *inode, struct file *f)
{
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	return 0;
}

static long pkvm_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	void __user *argp = (void __user *)arg;

	switch (cmd) {
	case PKVM_IOC_INFO:
		return ioc_info(argp);
	case PKVM_IOC_BUF_ALLOC:
		return ioc_buf_alloc(argp);
	case PKVM_IOC_BUF_FREE:
		return ioc_buf_free(argp);
	case PKVM_IOC_BUF_QUERY:
		return ioc_buf_query(argp);
	case PKVM_IOC_CALL:
		return ioc_call(argp);
	case PKVM_IOC_RAW_HVC:
		return ioc_raw_hvc(argp);
	case PKVM_IOC_GET_STATS:
		return ioc_get_stats(argp);
	case PKVM_IOC_DUMP:
		return ioc_dump(argp);
	case PKVM_IOC_KTOUCH:
		return ioc_ktouch(argp);
	case PKVM_IOC_BENCH:
		return ioc_bench(argp);
	}
	return -ENOTTY;
}

static void pkvm_vm_open(struct vm_area_struct *vma)
{
	struct pkvm_buf *b = vma->vm_private_data;

	refcount_inc(&b->refs);
}

static void pkvm_vm_close(struct vm_area_struct *vma)
{
	buf_put(vma->vm_private_data);
}

static const struct vm_operations_struct pkvm_vm_ops = {
	.open = pkvm_vm_open,
	.close = pkvm_vm_close,
};

static int pkvm_mmap(struct file *f, struct vm_area_struct *vma)
{
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 size = vma->vm_end - vma->vm_start;
	u64 boff = off & ((1ULL << PKVM_MMAP_ID_SHIFT) - 1);
	struct pkvm_buf *b;
	int ret;

	if (off >> PKVM_MMAP_ID_SHIFT > U32_MAX)
		return -EINVAL;
	b = buf_get(off >> PKVM_MMAP_ID_SHIFT);
	if (!b)
		return -ENOENT;
	if (boff >= b->nr * PAGE_SIZE || size > b->nr * PAGE_SIZE - boff) {
		buf_put(b);
		return -EINVAL;
	}
	/* VM_IO | VM_PFNMAP | VM_DONTDUMP: no core dump reads a donated page. */
	ret = remap_pfn_range(vma, vma->vm_start, b->pfn + (boff >> PAGE_SHIFT), size,
			      vma->vm_page_prot);
	if (ret) {
		buf_put(b);
		return ret;
	}
	vma->vm_private_data = b;	/* the reference taken above */
	vma->vm_ops = &pkvm_vm_ops;
	return 0;
}

static const struct file_operations pkvm_fops = {
	.owner = THIS_MODULE,
	.open = pkvm_open,
	.unlocked_ioctl = pkvm_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = pkvm_mmap,
	.llseek = noop_llseek,
};

static struct miscdevice pkvm_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "pkvm-host",
	.fops = &pkvm_fops,
	.mode = 0600,
};

int pkvm_dev_init(void)
{
	return misc_register(&pkvm_misc);
}

/* --- Unload: give every page back to the host before freeing it ----------------------- */

static int seg_restore(u64 start, u64 end, u32 owner, u32 state, void *arg)
{
	unsigned long long a[PKVM_NR_REGS];
	u64 p;
	int i;

	for (p = start; p < end; p++) {
		if (owner == PKVM_OWNER_HOST && state == PKVM_PAGE_SHARED_OWNED) {
			for (i = 0; i < 65536; i++) {
				pkvm_hc_hyp_unpin_shared_pack(a, p, 1);
				if (pkvm_hc(a))
					break;
			}
			pkvm_hc_host_unshare_hyp_pack(a, p, 1);
			pkvm_hc(a);
		} else if (owner == PKVM_OWNER_HYP) {
			pkvm_hc_hyp_donate_host_pack(a, p, 1);
			pkvm_hc(a);
		} else if (owner >= PKVM_OWNER_FIRST_GUEST) {
			pkvm_hc_host_reclaim_guest_pack(a, owner, p, 1);
			pkvm_hc(a);
		}
	}
	return 0;
}

void pkvm_dev_exit(void)
{
	unsigned long long a[PKVM_NR_REGS];
	struct pkvm_buf *b;
	unsigned int g;
	int id;

	misc_deregister(&pkvm_misc);
	/* Guests first: destroying one returns what the host shared with it. */
	for (g = PKVM_OWNER_FIRST_GUEST; g < BITS_PER_LONG; g++) {
		if (!test_bit(g, &pkvm_live_guests))
			continue;
		pkvm_hc_guest_destroy_pack(a, g);
		pkvm_hc(a);
		pkvm_guest_destroyed(g);
	}
	idr_for_each_entry(&bufs, b, id) {
		pkvm_s2_for_each(b->pfn, b->nr, seg_restore, NULL);
		if (range_host_owned(b->pfn, b->nr)) {
			pr_warn("buffer %d (pfn %#llx, %llu pages) is not the host's alone: leaking it\n",
				id, b->pfn, b->nr);
		} else {
			free_pages_exact(b->va, b->nr * PAGE_SIZE);
		}
		kfree(b);
	}
	idr_destroy(&bufs);
}
