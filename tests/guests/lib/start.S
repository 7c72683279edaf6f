/*
 * Entry code shared by every test guest.
 *
 * Two ways in:
 *  - _start64: the ELF entry, in 64-bit mode as Linux's boot protocol enters
 *    a vmlinux: %rsi points at boot_params, paging on (identity-mapped).
 *  - pvh_start32: the PVH entry (Xen ELF note 18), in 32-bit protected mode
 *    with paging off and %ebx pointing at hvm_start_info.
 * Both switch to the guest's own page tables (identity map of the low
 * 4 GiB, 2 MiB pages, so PCI BARs below 4 GiB are reachable) and call
 * guest_main(kind, info) with kind 0 = boot_params, 1 = hvm_start_info.
 * .bss is zeroed first: after a guest-triggered reset a VMM may re-enter
 * the image without reloading it, and globals must start at zero again.
 * `pml4` is global so that code bringing up other CPUs (smp.S) can point
 * them at the same page tables.
 */
    .section .text.boot, "ax"
    .code64
    .globl _start64
_start64:
    cli
    movq %rsi, %r12
    movq $pml4, %rax
    movq %rax, %cr3
    leaq stack_top(%rip), %rsp
    call zero_bss
    xorl %edi, %edi
    movq %r12, %rsi
    call guest_main
    jmp halt64

#ifdef PVH
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    movl %ebx, %esi                 /* keep hvm_start_info in %esi */
    movl $pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax                 /* PAE */
    movl %eax, %cr4
    movl $0xc0000080, %ecx          /* EFER */
    rdmsr
    orl $0x100, %eax                /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax           /* PG | PE */
    movl %eax, %cr0
    lgdt gdt_ptr
    ljmp $0x08, $pvh_long
    .code64
pvh_long:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    leaq stack_top(%rip), %rsp
    movl %esi, %r12d                /* zero-extends the 32-bit pointer */
    call zero_bss
    movl $1, %edi
    movq %r12, %rsi
    call guest_main
#endif

halt64:
    cli
    hlt
    jmp halt64

/* Zeroes .bss except the stack we are running on (it is in use). */
zero_bss:
    leaq __bss_start(%rip), %rdi
    leaq stack(%rip), %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    rep stosb
    leaq stack_top(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    rep stosb
    ret

    .section .rodata
    .balign 8
gdt:
    .quad 0
    .quad 0x00af9a000000ffff         /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff         /* 0x10: data */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .section .data
    .balign 4096
    .globl pml4
pml4:
    .quad pdpt + 0x3
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x3
    .quad pd + 0x1000 + 0x3
    .quad pd + 0x2000 + 0x3
    .quad pd + 0x3000 + 0x3
    .fill 508, 8, 0
pd:
    .set page, 0
    .rept 2048
    .quad (page << 21) | 0x83       /* present, writable, 2 MiB */
    .set page, page + 1
    .endr

    .section .bss
    .balign 16
stack:
    .skip 16384
stack_top:

#ifdef PVH
    /* XEN_ELFNOTE_PHYS32_ENTRY: where a PVH loader enters, 32-bit. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_start32
#endif
