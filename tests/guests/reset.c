/*
 * reset: counts its boots in CMOS NVRAM byte 0x40 (which survives a reset)
 * and resets the machine on the first boot.
 *
 * COM1 report, per boot:
 *   guest=reset
 *   boot_count=<n>             the byte as found (0 on the first boot)
 *   reset_via=cf9|kbd          first boot only
 *   resetting                  first boot only, right before the reset
 *   reset=failed               only if the machine still runs a while later (exit status 1)
 *   done                       second boot (n >= 1)
 *
 * Reset: port 0xcf9 (PIIX reset control) written 0x02 then 0x06, or, with
 * via=kbd, the i8042 command 0xFE (pulse the reset line).
 * Command line: via=cf9|kbd (default cf9).
 */
#include "lib/bootinfo.h"
#include "lib/i8042.h"

#define BOOT_COUNT 0x40

void guest_main(u32 kind, u64 info)
{
    guest_start("reset");
    const char *cmdline = boot_cmdline(kind, info);
    const char *via = cmdline_value(cmdline, "via");
    int kbd = via && via[0] == 'k' && via[1] == 'b' && via[2] == 'd';

    u8 n = cmos_read(BOOT_COUNT);
    put_dec("boot_count", n);
    cmos_write(BOOT_COUNT, (u8)(n + 1));
    if (n >= 1)
        finish(0);

    put_str("reset_via", kbd ? "kbd" : "cf9");
    put_line("resetting");
    if (kbd) {
        i8042_reset_cpu();
    } else {
        outb(0xcf9, 0x02);
        outb(0xcf9, 0x06);
    }
    struct deadline d;
    deadline_start(&d, 10);
    while (!deadline_passed(&d))
        ;
    put_str("reset", "failed");
    debug_exit(1);
    halt_forever();
}
