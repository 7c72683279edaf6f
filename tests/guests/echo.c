/*
 * echo: reads COM1 (polling the line status register) and echoes each
 * byte back upper-cased, until it reads 'q'.
 *
 * COM1 report:
 *   echo=ready
 *   <each byte received, upper-cased>
 *   done                       after 'q' (then isa-debug-exit 0)
 */
#include "lib/guest.h"

void guest_main(u32 kind, u64 info)
{
    (void)kind;
    (void)info;
    serial_puts("echo=ready\n");
    for (;;) {
        while (!(inb(COM1 + 5) & 0x01))
            __asm__ volatile("pause");
        char c = (char)inb(COM1);
        if (c == 'q')
            break;
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        serial_putc(c);
    }
    serial_puts("\ndone\n");
    debug_exit(0);
    for (;;)
        __asm__ volatile("cli; hlt");
}
