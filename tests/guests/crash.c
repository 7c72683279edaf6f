/*
 * crash: triple-faults on purpose. With an empty IDT (limit 0) the #UD from
 * ud2 cannot be delivered, nor can the #GP and #DF that follow, so the CPU
 * shuts down: KVM reports KVM_EXIT_SHUTDOWN, and QEMU with -no-reboot exits.
 *
 * COM1 report:
 *   guest=crash
 *   crashing
 * and nothing else: `done` never comes.
 */
#include "lib/guest.h"

void guest_main(u32 kind, u64 info)
{
    (void)kind;
    (void)info;
    guest_start("crash");
    put_line("crashing");
    struct __attribute__((packed)) {
        u16 limit;
        u64 base;
    } idt = {0, 0};
    __asm__ volatile("lidt %0; ud2" : : "m"(idt));
    /* Not reached; should the machine survive, say so. */
    put_str("crash", "survived");
    debug_exit(1);
    halt_forever();
}
