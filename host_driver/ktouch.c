// SPDX-License-Identifier: GPL-2.0
/*
 * ktouch.c: a kernel access to memory the hypervisor may have taken away,
 * made so that a refusal does not take the system down.
 *
 * The hypervisor refuses a host access to a page the host does not own by
 * injecting a synchronous external abort. On Linux 6.1 arm64 do_sea() ends
 * in die() for a kernel-mode abort without consulting the exception table,
 * so even copy_from_kernel_nofault() oopses instead of returning -EFAULT.
 * The access is therefore made by a short-lived kernel thread that holds
 * no lock: an oops kills only that thread (panic_on_oops is 0). A die
 * notifier tells us the thread died and with which ESR. Later kernels that
 * recover external aborts in nofault accessors report PKVM_KTOUCH_FAULTED.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/completion.h>
#include <linux/kdebug.h>
#include <linux/kthread.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "internal.h"

struct ktouch_req {
	void *va;
	u32 flags;
	u64 value;
	struct completion done;
	u32 outcome;
	u64 esr;
};

static DEFINE_MUTEX(ktouch_lock);
static struct task_struct *ktouch_task;	/* the probe thread running now */
static struct ktouch_req *ktouch_cur;

static int ktouch_thread(void *arg)
{
	struct ktouch_req *r = arg;
	u64 v = r->value;
	long ret = 0;

	if (r->flags & PKVM_KTOUCH_PLAIN) {
		if (r->flags & PKVM_KTOUCH_WRITE)
			WRITE_ONCE(*(u64 *)r->va, v);
		else
			v = READ_ONCE(*(u64 *)r->va);
	} else if (r->flags & PKVM_KTOUCH_WRITE) {
		/* copy_to_kernel_nofault() is not exported: the same accessor by hand. */
		pagefault_disable();
		__put_kernel_nofault(r->va, &v, u64, fault);
		pagefault_enable();
		goto out;
fault:
		pagefault_enable();
		ret = -EFAULT;
	} else {
		ret = copy_from_kernel_nofault(&v, r->va, sizeof(v));
	}
out:
	r->value = v;
	r->outcome = ret ? PKVM_KTOUCH_FAULTED : PKVM_KTOUCH_DONE;
	complete(&r->done);
	return 0;
}

static int ktouch_die(struct notifier_block *nb, unsigned long action, void *data)
{
	struct die_args *args = data;
	struct ktouch_req *r = READ_ONCE(ktouch_cur);

	if (action == DIE_OOPS && r && current == READ_ONCE(ktouch_task)) {
		r->esr = args->err;
		r->outcome = PKVM_KTOUCH_OOPSED;
		complete(&r->done);
	}
	return NOTIFY_DONE;	/* let the oops kill the probe thread */
}

static struct notifier_block ktouch_nb = {
	.notifier_call = ktouch_die,
};

int pkvm_ktouch(void *va, u32 flags, u64 *value, u32 *outcome, u64 *esr)
{
	struct task_struct *t;
	struct ktouch_req *r;
	int ret = 0;

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	r->va = va;
	r->flags = flags;
	r->value = *value;
	init_completion(&r->done);

	mutex_lock(&ktouch_lock);
	t = kthread_create(ktouch_thread, r, "pkvm_ktouch");
	if (IS_ERR(t)) {
		ret = PTR_ERR(t);
		kfree(r);
		goto out;
	}
	get_task_struct(t);
	WRITE_ONCE(ktouch_cur, r);
	WRITE_ONCE(ktouch_task, t);
	wake_up_process(t);
	if (!wait_for_completion_timeout(&r->done, 10 * HZ)) {
		/* Still running (or stuck): it may touch r and va later. Leak r. */
		pr_err("kernel access probe at %px did not finish\n", va);
		*outcome = PKVM_KTOUCH_TIMEOUT;
		*esr = 0;
		WRITE_ONCE(ktouch_task, NULL);
		WRITE_ONCE(ktouch_cur, NULL);
		put_task_struct(t);
		goto out;
	}
	WRITE_ONCE(ktouch_task, NULL);
	WRITE_ONCE(ktouch_cur, NULL);
	*outcome = r->outcome;
	*esr = r->esr;
	*value = r->value;
	if (r->outcome == PKVM_KTOUCH_OOPSED)
		pr_info("kernel access probe at %px oopsed (ESR %#llx) as expected; the system runs on\n",
			va, r->esr);
	put_task_struct(t);
	kfree(r);
out:
	mutex_unlock(&ktouch_lock);
	return ret;
}

int pkvm_ktouch_init(void)
{
	return register_die_notifier(&ktouch_nb);
}

void pkvm_ktouch_exit(void)
{
	unregister_die_notifier(&ktouch_nb);
}
