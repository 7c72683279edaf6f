/*
 * debugcon: writes `bytes` bytes to the debug port (0x402) with `rep outsb`,
 * a page at a time (one exit per page), for the VMM's debug-log limits.
 * Byte i is "0123456789abcdef"[i % 16].
 *
 * COM1 report:
 *   guest=debugcon
 *   bytes=<n>
 *   done                       after the last byte
 *
 * Command line: bytes=<n> (default 65536).
 */
#include "lib/bootinfo.h"

static u8 page[4096];

void guest_main(u32 kind, u64 info)
{
    guest_start("debugcon");
    u64 bytes = cmdline_number(boot_cmdline(kind, info), "bytes", 65536);
    put_dec("bytes", bytes);
    for (u32 i = 0; i < sizeof(page); i++)
        page[i] = (u8)"0123456789abcdef"[i % 16];
    for (u64 done = 0; done < bytes;) {
        u64 n = bytes - done < sizeof(page) ? bytes - done : sizeof(page);
        const u8 *p = page;
        u64 count = n;
        __asm__ volatile("rep outsb" : "+S"(p), "+c"(count) : "d"(DEBUG_PORT) : "memory");
        done += n;
    }
    finish(0);
}
