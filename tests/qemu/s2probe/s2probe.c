// SPDX-License-Identifier: GPL-2.0
/*
 * s2probe: reads one word of physical memory through the kernel's linear map,
 * a real EL1 access. Used by the boot suite to show that the host stage 2
 * refuses the host's reads of memory the hypervisor owns.
 */
#include <linux/io.h>
#include <linux/module.h>

static unsigned long pa;
module_param(pa, ulong, 0444);
MODULE_PARM_DESC(pa, "physical address to read");

static int __init s2probe_init(void)
{
	const volatile unsigned long *v = phys_to_virt(pa);

	pr_info("s2probe: reading %#lx\n", pa);
	pr_info("s2probe: read %#lx -> %#lx (not refused)\n", pa, *v);
	return 0;
}

static void __exit s2probe_exit(void)
{
}

module_init(s2probe_init);
module_exit(s2probe_exit);
MODULE_DESCRIPTION("Test probe: one EL1 read of a physical address");
MODULE_LICENSE("GPL");
