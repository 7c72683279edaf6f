/*
 * kbd: sets the i8042 up for polling (translation on, so the keyboard's
 * scancodes arrive as set 1) and echoes every byte the keyboard sends
 * until the break code of Escape (0x81).
 *
 * COM1 report:
 *   guest=kbd
 *   flushed=<n>                bytes found waiting and dropped
 *   cmdbyte=0x..               the controller command byte as found (or none)
 *   cmdbyte_new=0x..           after setting XLATE, clearing KBD/AUX IRQ and KBDDIS, setting AUXDIS
 *   kbd_enable_ack=0xfa        the keyboard's answer to 0xF4 (or none)
 *   kbd=ready                  from here on keys are read
 *   scancode=0x1e              one line per byte, always two hex digits
 *   aux=0x..                   a byte from the AUX (mouse) port, ignored
 *   done                       after scancode=0x81
 * or `timeout` then `done` (exit status 1) when no Escape came within
 * `timeout=` seconds (RTC-counted, default 60).
 *
 * Command line: timeout=<seconds>.
 */
#include "lib/bootinfo.h"
#include "lib/i8042.h"

void guest_main(u32 kind, u64 info)
{
    guest_start("kbd");
    const char *cmdline = boot_cmdline(kind, info);
    u32 limit = (u32)cmdline_number(cmdline, "timeout", 60);

    i8042_setup(0);
    put_str("kbd", "ready");

    struct deadline d;
    deadline_start(&d, limit);
    while (!deadline_passed(&d)) {
        u8 status = inb(I8042_STATUS);
        if (!(status & I8042_STR_OBF))
            continue;
        u8 byte = inb(I8042_DATA);
        if (status & I8042_STR_AUXDATA) {
            serial_puts("aux=");
            serial_put_hexw(byte, 2);
            serial_putc('\n');
            continue;
        }
        serial_puts("scancode=");
        serial_put_hexw(byte, 2);
        serial_putc('\n');
        if (byte == 0x81)
            finish(0);
    }
    put_line("timeout");
    finish(1);
}
