/*
 * The application processors' way in, for the smp guest.
 *
 * smp_trampoline..smp_trampoline_end is copied by the BSP to 0x8000 and
 * entered there by a SIPI with vector 0x08 (CS = 0x0800, IP = 0) in real
 * mode. It loads its own GDT, enters protected mode, turns on PAE, the
 * BSP's page tables (`pml4` from lib/start.S) and long mode, and jumps to
 * ap_start64 in the image, which gives the AP a stack and calls ap_main().
 * Nothing here depends on the AP's APIC ID: stacks are handed out in
 * arrival order.
 */
#define TRAMPOLINE 0x8000
#define REL(x) ((x) - smp_trampoline + TRAMPOLINE)
#define MAX_APS 15
#define AP_STACK 4096

    .section .rodata
    .balign 16
    .globl smp_trampoline, smp_trampoline_end
    .code16
smp_trampoline:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl REL(tramp_gdt_ptr)
    movl %cr0, %eax
    orl $1, %eax                        /* PE */
    movl %eax, %cr0
    ljmpl $0x18, $REL(tramp32)

    .code32
tramp32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x20, %eax                     /* PAE */
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx              /* EFER */
    rdmsr
    orl $0x100, %eax                    /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax               /* PG */
    movl %eax, %cr0
    ljmp $0x08, $ap_start64

    .balign 8
tramp_gdt:
    .quad 0
    .quad 0x00af9a000000ffff            /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff            /* 0x10: data */
    .quad 0x00cf9a000000ffff            /* 0x18: 32-bit code */
tramp_gdt_end:
tramp_gdt_ptr:
    .word tramp_gdt_end - tramp_gdt - 1
    .long REL(tramp_gdt)
smp_trampoline_end:

    .text
    .code64
ap_start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movl $1, %eax
    lock xaddl %eax, ap_slot(%rip)      /* this AP's stack slot */
    cmpl $MAX_APS, %eax
    jae ap_park
    incl %eax
    shll $12, %eax                      /* * AP_STACK: the slot's top */
    leaq ap_stacks(%rip), %rsp
    addq %rax, %rsp
    call ap_main
ap_park:
    cli
    hlt
    jmp ap_park

    .section .bss
    .balign 4096
ap_stacks:
    .skip AP_STACK * MAX_APS
ap_slot:
    .long 0

    .section .note.GNU-stack, "", @progbits
