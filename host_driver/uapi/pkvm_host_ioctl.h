/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * pkvm_host_ioctl.h: the ioctl ABI of /dev/pkvm-host, shared by the
 * pkvm_host module and pkvmctl.
 *
 * Conventions:
 *  - Every structure is made of naturally aligned __u32/__u64 fields, with no
 *    implicit padding, so 32- and 64-bit users see the same layout.
 *  - Fields named flags or reserved must be zero unless a flag is defined:
 *    anything else fails with EINVAL, so they can gain a meaning later.
 *  - An ioctl that fails returns -1 with errno set and changes nothing. For
 *    PKVM_IOC_CALL, success of the ioctl means "the hypercall was issued";
 *    the hypervisor's own answer comes back in the ret field.
 *  - Page numbers (pfn, gfn) are in 4 KiB pages, as in the hypercall ABI
 *    (pkvm_abi.h); function numbers are the ABI's n (PKVM_HC_<CALL>_FN).
 */
#ifndef PKVM_HOST_IOCTL_H_
#define PKVM_HOST_IOCTL_H_

#include <linux/ioctl.h>
#include <linux/types.h>

#define PKVM_HOST_DEVICE "/dev/pkvm-host"
#define PKVM_HOST_IOC_MAGIC 0xE7

/* Largest test buffer, in pages (one contiguous allocation). */
#define PKVM_HOST_BUF_MAX_PAGES 1024
/* Number of stats slots a PKVM_IOC_GET_STATS reply carries at most. */
#define PKVM_HOST_STATS_SLOTS 256
/* Counters the module keeps per function number and per errno. */
#define PKVM_HOST_NR_COUNTERS 64

/* struct pkvm_ioc_info.flags */
#define PKVM_INFO_TEST_CALLS (1u << 0) /* the hypervisor has the test-only calls */

/* PKVM_IOC_INFO: what the module found at load time. */
struct pkvm_ioc_info {
	__u32 abi_major;	/* ABI version the hypervisor reported */
	__u32 abi_minor;
	__u32 built_major;	/* ABI version the module was built against */
	__u32 built_minor;
	__u32 flags;		/* PKVM_INFO_* */
	__u32 page_size;	/* 4096 */
	__u32 max_transition_pages; /* PKVM_MAX_TRANSITION_PAGES */
	__u32 nr_buffers;	/* test buffers allocated now */
	__u32 guests;		/* bit g set: guest g was created through the module and not destroyed */
	__u32 nr_cpus;		/* CPUs online */
	__u64 counter_freq;	/* CNTFRQ_EL0, Hz */
	__u64 dump_pfn;		/* the module's dump buffer: shared only while a dump runs, */
	__u32 dump_pages;	/* so every dump shows these pages as host/shared-owned */
	__u32 reserved0;
	__u64 reserved[2];
};

/* PKVM_IOC_BUF_ALLOC / _FREE / _QUERY: test buffers owned by the module. */
struct pkvm_ioc_buf {
	__u32 id;		/* out for ALLOC, in for FREE and QUERY */
	__u32 flags;		/* 0 */
	__u64 nr_pages;		/* in for ALLOC (1..PKVM_HOST_BUF_MAX_PAGES), out for QUERY */
	__u64 pfn;		/* out: first page (the buffer is physically contiguous) */
	__u64 reserved;
};

/* struct pkvm_ioc_call.flags */
#define PKVM_CALL_RAW (1u << 0) /* pfn is a raw page number, not buf + offset */

/*
 * PKVM_IOC_CALL: issue one hypercall (fn = the ABI's function number n).
 *
 * The page argument of a call (pfn, or buf_pfn for get_stats and
 * dump_host_stage2) is buf's first page + offset / 4096, where offset must
 * be page aligned and nr pages (1 for get_stats) must lie inside the buffer;
 * with PKVM_CALL_RAW it is the pfn field as is, for hostile input. Raw calls
 * that would let the hypervisor take or overwrite memory the kernel owns
 * (donations, get_stats and dump buffers on kernel pages outside the test
 * buffers) are refused with EACCES. The other arguments (nr, guest, gfn,
 * start_pfn) go to the hypervisor unchecked.
 *
 * repeat > 1 issues the call up to that many times, stopping at the first
 * failure; done counts the calls that returned 0.
 */
struct pkvm_ioc_call {
	__u32 fn;		/* in: function number (PKVM_HC_<CALL>_FN) */
	__u32 flags;		/* in: PKVM_CALL_* */
	__u32 buf;		/* in: buffer id (without PKVM_CALL_RAW) */
	__u32 repeat;		/* in: 0 or 1 = once */
	__u64 offset;		/* in: byte offset into buf */
	__u64 pfn;		/* in: raw pfn (PKVM_CALL_RAW); out: the pfn passed */
	__u64 nr;		/* in: pages (or buf_nr for dump_host_stage2) */
	__u64 guest;		/* in: guest id */
	__u64 gfn;		/* in: guest frame */
	__u64 start_pfn;	/* in: dump_host_stage2's start_pfn; inject_alloc_failure's after */
	__u64 count;		/* in: inject_alloc_failure's count */
	__s64 ret;		/* out: x0, 0 or a negative errno (or SMCCC NOT_SUPPORTED) */
	__u64 res[3];		/* out: x1..x3 */
	__u64 done;		/* out: calls that returned 0 */
};

/*
 * PKVM_IOC_RAW_HVC: issue HVC #0 with x0..x6 = regs[0..6] and return x0..x6.
 * Only for function ids the ABI does not define (EINVAL otherwise): it tests
 * the hypervisor's handling of unknown calls.
 */
struct pkvm_ioc_raw_hvc {
	__u64 regs[7];
};

/* struct pkvm_ioc_stats.flags */
#define PKVM_STATS_BASELINE (1u << 0) /* return the snapshot taken at module load */

/*
 * PKVM_IOC_GET_STATS: the hypervisor's statistics page (get_stats, into a
 * page the module shares with the hypervisor for the call and unshares
 * after), together with the module's own counts of the hypercalls it issued,
 * taken just before the get_stats call: on a quiet system the two agree.
 */
struct pkvm_ioc_stats {
	__u32 flags;		/* in: PKVM_STATS_* */
	__u32 nr_slots;		/* out: slots the hypervisor wrote */
	__u64 slots[PKVM_HOST_STATS_SLOTS];	/* out: pkvm_abi.h PKVM_STATS_SLOT_* layout */
	__u64 issued_ok[PKVM_HOST_NR_COUNTERS];	/* out: calls that returned 0, by fn */
	__u64 issued_failed[PKVM_HOST_NR_COUNTERS]; /* out: calls that failed, by fn */
	__u64 issued_errors[PKVM_HOST_NR_COUNTERS]; /* out: failed calls by -x0 */
};

/*
 * PKVM_IOC_DUMP: host stage-2 records (pkvm_abi.h dump_record words) from
 * start_pfn on, fetched with dump_host_stage2 into pages the module shares
 * with the hypervisor for the duration of the ioctl.
 */
struct pkvm_ioc_dump {
	__u64 start_pfn;	/* in */
	__u64 records;		/* in: user pointer to max_records __u64 */
	__u32 max_records;	/* in: 1..65536 */
	__u32 nr_records;	/* out */
	__u64 next_pfn;		/* out: where to continue when done is 0 */
	__u32 done;		/* out: 1 when the records reach the end of the address space */
	__u32 flags;		/* in: 0 */
};

/* struct pkvm_ioc_ktouch.flags */
#define PKVM_KTOUCH_WRITE (1u << 0) /* write value instead of reading */
#define PKVM_KTOUCH_PLAIN (1u << 1) /* a plain access, not copy_{from,to}_kernel_nofault */

/* struct pkvm_ioc_ktouch.outcome */
#define PKVM_KTOUCH_DONE 0	/* the access completed */
#define PKVM_KTOUCH_FAULTED 1	/* the nofault accessor reported a fault (no oops) */
#define PKVM_KTOUCH_OOPSED 2	/* the access oopsed: the probe thread died, the system runs on */
#define PKVM_KTOUCH_TIMEOUT 3	/* the probe thread neither finished nor oopsed in time */

/*
 * PKVM_IOC_KTOUCH: a kernel access to one 8-byte word of a test buffer,
 * made by a dedicated kernel thread through the linear map, so that a
 * refusal by the hypervisor (an external abort) kills at most that thread.
 */
struct pkvm_ioc_ktouch {
	__u32 buf;		/* in */
	__u32 flags;		/* in: PKVM_KTOUCH_* */
	__u64 offset;		/* in: byte offset, 8-byte aligned */
	__u64 value;		/* in (write) / out (read) */
	__u32 outcome;		/* out: PKVM_KTOUCH_* */
	__u32 reserved;
	__u64 esr;		/* out: the error code the oops reported (ESR_EL1) */
};

/* struct pkvm_ioc_bench.op */
#define PKVM_BENCH_NULL 0		/* null */
#define PKVM_BENCH_SHARE_UNSHARE_HYP 1	/* host_share_hyp + host_unshare_hyp of nr_pages */
#define PKVM_BENCH_DONATE_RECLAIM_HYP 2	/* host_donate_hyp + hyp_donate_host of nr_pages */
#define PKVM_BENCH_SHARE_UNSHARE_GUEST 3 /* host_share_guest + host_unshare_guest of nr_pages */
/* guest_create + host_donate_guest + guest_destroy + host_reclaim_guest */
#define PKVM_BENCH_DONATE_RECLAIM_GUEST 4
#define PKVM_BENCH_NR_OPS 5

/*
 * PKVM_IOC_BENCH: times iterations of op in the kernel with CNTVCT_EL0, one
 * sample per iteration, on pages page..page+nr_pages-1 of the test buffer
 * buf (except for NULL). An op that fails ends the run with its errno.
 */
struct pkvm_ioc_bench {
	__u32 op;		/* in: PKVM_BENCH_* */
	__u32 buf;		/* in */
	__u64 nr_pages;		/* in: 1..PKVM_MAX_TRANSITION_PAGES */
	__u64 iterations;	/* in: 1..100000 */
	__u64 freq;		/* out: counter frequency (Hz) */
	__u64 min;		/* out: counter ticks per iteration */
	__u64 median;
	__u64 mean;
	__u64 max;
	__u64 page;		/* in: first page of the range in buf */
	__u64 reserved;
};

#define PKVM_IOC_INFO _IOR(PKVM_HOST_IOC_MAGIC, 0, struct pkvm_ioc_info)
#define PKVM_IOC_BUF_ALLOC _IOWR(PKVM_HOST_IOC_MAGIC, 1, struct pkvm_ioc_buf)
#define PKVM_IOC_BUF_FREE _IOW(PKVM_HOST_IOC_MAGIC, 2, struct pkvm_ioc_buf)
#define PKVM_IOC_BUF_QUERY _IOWR(PKVM_HOST_IOC_MAGIC, 3, struct pkvm_ioc_buf)
#define PKVM_IOC_CALL _IOWR(PKVM_HOST_IOC_MAGIC, 4, struct pkvm_ioc_call)
#define PKVM_IOC_RAW_HVC _IOWR(PKVM_HOST_IOC_MAGIC, 5, struct pkvm_ioc_raw_hvc)
#define PKVM_IOC_GET_STATS _IOWR(PKVM_HOST_IOC_MAGIC, 6, struct pkvm_ioc_stats)
#define PKVM_IOC_DUMP _IOWR(PKVM_HOST_IOC_MAGIC, 7, struct pkvm_ioc_dump)
#define PKVM_IOC_KTOUCH _IOWR(PKVM_HOST_IOC_MAGIC, 8, struct pkvm_ioc_ktouch)
#define PKVM_IOC_BENCH _IOWR(PKVM_HOST_IOC_MAGIC, 9, struct pkvm_ioc_bench)

/*
 * mmap: offset = (buffer id << PKVM_MMAP_ID_SHIFT) + byte offset into the
 * buffer (page aligned); the mapping must lie inside the buffer. A buffer
 * cannot be freed while it is mapped.
 */
#define PKVM_MMAP_ID_SHIFT 32

#endif /* PKVM_HOST_IOCTL_H_ */
