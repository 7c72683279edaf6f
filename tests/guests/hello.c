/* The smallest guest: says hello on COM1 and on the debug port, then exits. */
#include "lib/guest.h"

void guest_main(u32 kind, u64 info)
{
    (void)info;
    outb(DEBUG_PORT, '!');
    serial_puts(kind == BOOT_PVH ? "hello from pvh\n" : "hello from elf64\n");
    debug_exit(0);
    halt_forever();
}
