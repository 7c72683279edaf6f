/*
 * spin: runs forever, making steady progress that is visible from outside,
 * for pause/resume tests: every `every` iterations of a counting loop it
 * writes '.' to the debug port (0x402) and prints the tick on COM1.
 *
 * COM1 report:
 *   guest=spin
 *   every=<n>
 *   spinning
 *   tick=1                     then tick=2, tick=3, ... forever
 *
 * Command line: every=<iterations> (default 100000; about 0.1-0.3 s per tick
 * on the development machines' emulated KVM).
 */
#include "lib/bootinfo.h"

void guest_main(u32 kind, u64 info)
{
    guest_start("spin");
    u64 every = cmdline_number(boot_cmdline(kind, info), "every", 100000);
    if (!every)
        every = 1;
    put_dec("every", every);
    put_line("spinning");
    for (u64 tick = 1;; tick++) {
        for (u64 i = 0; i < every; i++)
            barrier(); /* a real loop, not optimised away */
        outb(DEBUG_PORT, '.');
        put_dec("tick", tick);
    }
}
