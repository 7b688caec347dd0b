// SPDX-License-Identifier: Apache-2.0
// EL2 payload entry points: the arm64 Image header, the primary and secondary
// CPU entries, the exception vectors with host context save/restore, and the
// few instructions C++ cannot express (ERET to the host, SMC to EL3, the
// MMU-off table switch, semihosting exit).

#define STACK_SIZE 16384
#define HOST_CTX_SIZE (32 * 8)

        .section .head, "ax"
        .global _head
_head:
        b       primary_entry           // code0
        .long   0                       // code1
        .quad   0                       // text_offset: load at a 2 MiB boundary
        .quad   0                       // image_size: patched by tools/mk_combined.sh
        .quad   0x2                     // flags: little-endian, 4 KiB pages, near DRAM base
        .quad   0, 0, 0                 // res2..res4
        .ascii  "ARM\x64"               // magic
        .long   0                       // res5: no PE/COFF header

        .section .text.boot, "ax"
primary_entry:
        mov     x19, x0                 // DTB physical address from the loader
        // Linked at a fixed address: refuse to run anywhere else.
        adr     x1, _head
        ldr     x2, =_head
        cmp     x1, x2
        b.ne    park
        mrs     x1, CurrentEL
        cmp     x1, #(2 << 2)
        b.ne    park
        bl      el2_cpu_reset_state
        ldr     x1, =__bss_start
        ldr     x2, =__bss_end
1:      cmp     x1, x2
        b.hs    2f
        stp     xzr, xzr, [x1], #16
        b       1b
2:      ldr     x1, =el2_stacks
        add     x1, x1, #STACK_SIZE
        mov     sp, x1
        msr     tpidr_el2, xzr
        sub     sp, sp, #HOST_CTX_SIZE  // the host's first context
        mov     x1, sp
        mov     x0, x19
        bl      el2_primary_boot        // returns only to enter the host
        b       host_restore_and_eret

// PSCI CPU_ON / CPU_SUSPEND / SYSTEM_SUSPEND entry for any CPU: x0 = our CPU
// index (the context id we passed to EL3). MMU off, caches off.
        .global el2_cpu_entry
el2_cpu_entry:
        mov     x19, x0
        bl      el2_cpu_reset_state
        // MMU and stage 2 on before touching the stack: the boot parameters
        // were cleaned to the point of coherency by the primary CPU.
        ldr     x1, =el2_boot_params
        ldp     x2, x3, [x1, #0]        // mair, tcr
        ldp     x4, x5, [x1, #16]       // ttbr0, sctlr
        msr     mair_el2, x2
        msr     tcr_el2, x3
        msr     ttbr0_el2, x4
        isb
        tlbi    alle2
        dsb     nsh
        isb
        msr     sctlr_el2, x5
        isb
        ldr     x1, =el2_stacks
        mov     x2, #STACK_SIZE
        add     x3, x19, #1
        madd    x1, x3, x2, x1          // top of this CPU's stack
        mov     sp, x1
        msr     tpidr_el2, x19
        sub     sp, sp, #HOST_CTX_SIZE  // the host's first context
        mov     x1, sp
        mov     x0, x19
        bl      el2_secondary_boot      // returns only to enter the host
        b       host_restore_and_eret

// Common per-CPU EL2 state before anything else runs: our vectors, SCTLR_EL2
// with the MMU and caches off, no traps of FP/SIMD at EL2.
el2_cpu_reset_state:
        ldr     x1, =el2_vectors
        msr     vbar_el2, x1
        ldr     x1, =0x30c50830
        msr     sctlr_el2, x1
        isb
        ret

park:   wfe
        b       park

// --- Exception vectors --------------------------------------------------------

        .macro  ventry label
        .align  7
        b       \label
        .endm

        .align  11
        .global el2_vectors
el2_vectors:
        ventry  hyp_sync_sp0            // current EL, SP_EL0
        ventry  hyp_irq
        ventry  hyp_irq
        ventry  hyp_serror
        ventry  hyp_sync                // current EL, SP_ELx
        ventry  hyp_irq
        ventry  hyp_irq
        ventry  hyp_serror
        ventry  host_sync               // lower EL, AArch64
        ventry  host_irq
        ventry  host_irq
        ventry  host_serror
        ventry  host_sync               // lower EL, AArch32 (32-bit EL0 stage-2 aborts)
        ventry  host_irq
        ventry  host_irq
        ventry  host_serror

// Host context: x0..x30 at [sp, #0..#240], saved on the CPU's EL2 stack.
        .macro  save_host_ctx
        sub     sp, sp, #HOST_CTX_SIZE
        stp     x0, x1, [sp, #16 * 0]
        stp     x2, x3, [sp, #16 * 1]
        stp     x4, x5, [sp, #16 * 2]
        stp     x6, x7, [sp, #16 * 3]
        stp     x8, x9, [sp, #16 * 4]
        stp     x10, x11, [sp, #16 * 5]
        stp     x12, x13, [sp, #16 * 6]
        stp     x14, x15, [sp, #16 * 7]
        stp     x16, x17, [sp, #16 * 8]
        stp     x18, x19, [sp, #16 * 9]
        stp     x20, x21, [sp, #16 * 10]
        stp     x22, x23, [sp, #16 * 11]
        stp     x24, x25, [sp, #16 * 12]
        stp     x26, x27, [sp, #16 * 13]
        stp     x28, x29, [sp, #16 * 14]
        str     x30, [sp, #16 * 15]
        .endm

host_sync:
        save_host_ctx
        mov     x0, sp
        bl      el2_handle_host_sync
        mov     x0, sp
        b       host_restore_and_eret

host_irq:
host_serror:
        save_host_ctx
        mov     x0, sp
        bl      el2_handle_host_unexpected
        mov     x0, sp
        b       host_restore_and_eret

// The host context is at sp. Restores every GPR and returns to the host;
// ELR_EL2 / SPSR_EL2 were set by the handler. Also the first entry into the
// host on each CPU: el2_*_boot filled the frame and set ELR/SPSR.
        .global host_restore_and_eret
host_restore_and_eret:
        ldp     x2, x3, [sp, #16 * 1]
        ldp     x4, x5, [sp, #16 * 2]
        ldp     x6, x7, [sp, #16 * 3]
        ldp     x8, x9, [sp, #16 * 4]
        ldp     x10, x11, [sp, #16 * 5]
        ldp     x12, x13, [sp, #16 * 6]
        ldp     x14, x15, [sp, #16 * 7]
        ldp     x16, x17, [sp, #16 * 8]
        ldp     x18, x19, [sp, #16 * 9]
        ldp     x20, x21, [sp, #16 * 10]
        ldp     x22, x23, [sp, #16 * 11]
        ldp     x24, x25, [sp, #16 * 12]
        ldp     x26, x27, [sp, #16 * 13]
        ldp     x28, x29, [sp, #16 * 14]
        ldr     x30, [sp, #16 * 15]
        ldp     x0, x1, [sp, #16 * 0]
        add     sp, sp, #HOST_CTX_SIZE
        eret
        dsb     nsh                     // no speculation past the ERET
        isb

// Faults taken at EL2 itself are hypervisor bugs, never host input.
hyp_sync_sp0:
hyp_sync:
        mov     x0, #0
        b       hyp_crash
hyp_irq:
        mov     x0, #1
        b       hyp_crash
hyp_serror:
        mov     x0, #2
hyp_crash:
        // A fresh frame at the top of this CPU's stack: sp may be corrupt.
        mrs     x1, tpidr_el2
        ldr     x2, =el2_stacks
        mov     x3, #STACK_SIZE
        madd    x2, x1, x3, x2
        add     sp, x2, #STACK_SIZE
        bl      el2_hyp_panic
        b       park

// --- Helpers called from C++ ----------------------------------------------------

// u64 el2_smc_forward(u64 regs[8]): SMC to EL3 with x0..x7 from regs; the
// results x0..x3 are stored back into regs[0..3].
        .global el2_smc_forward
el2_smc_forward:
        stp     x19, x30, [sp, #-16]!
        mov     x19, x0
        ldp     x0, x1, [x19, #0]
        ldp     x2, x3, [x19, #16]
        ldp     x4, x5, [x19, #32]
        ldp     x6, x7, [x19, #48]
        smc     #0
        stp     x0, x1, [x19, #0]
        stp     x2, x3, [x19, #16]
        ldp     x19, x30, [sp], #16
        ret

// void el2_switch_ttbr(u64 ttbr0, u64 sctlr_on): installs new EL2 tables with
// the MMU briefly off, so stale boot-table TLB entries never coexist with new
// ones. No data access in the window: the caches still hold everything.
        .global el2_switch_ttbr
el2_switch_ttbr:
        mrs     x2, sctlr_el2
        bic     x2, x2, #1
        msr     sctlr_el2, x2
        isb
        msr     ttbr0_el2, x0
        isb
        tlbi    alle2
        dsb     ish
        isb
        msr     sctlr_el2, x1
        isb
        ret

// [[noreturn]] void el2_semihosting_exit(u64 code): SYS_EXIT (0x18) with an
// ADP_Stopped_ApplicationExit block; QEMU exits with `code` when semihosting
// is enabled. Falls through to parking when it is not.
        .global el2_semihosting_exit
el2_semihosting_exit:
        sub     sp, sp, #16
        ldr     x1, =0x20026
        stp     x1, x0, [sp]
        mov     x1, sp
        mov     w0, #0x18
        hlt     #0xf000
        b       park
