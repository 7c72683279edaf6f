/*
 * portio: the port-I/O exit benchmark. Does exactly `count` single-byte
 * `outb` to port 0x80 (POST, ignored by both VMMs: one exit each), between
 * a start and an end marker on the debug port.
 *
 * Debug port (0x402): 'S' right before the first outb, 'E' right after the
 * last.
 * COM1 report:
 *   guest=portio
 *   count=<n>
 *   done                       after 'E'
 *
 * Command line: count=<n> (default 100000).
 */
#include "lib/bootinfo.h"

void guest_main(u32 kind, u64 info)
{
    guest_start("portio");
    u64 count = cmdline_number(boot_cmdline(kind, info), "count", 100000);
    put_dec("count", count);
    outb(DEBUG_PORT, 'S');
    /* One outb per iteration: a separate exit each (no rep outsb). */
    __asm__ volatile("1: testq %0, %0\n\t"
                     "jz 2f\n\t"
                     "outb %%al, $0x80\n\t"
                     "decq %0\n\t"
                     "jmp 1b\n"
                     "2:"
                     : "+r"(count)
                     : "a"(0)
                     : "memory");
    outb(DEBUG_PORT, 'E');
    finish(0);
}
