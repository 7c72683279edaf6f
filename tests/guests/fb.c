/*
 * fb: finds bochs-display on PCI bus 0, sets a mode through DISPI and draws
 * a known picture with rep stosl:
 *   - the whole screen 0x00202020 (dark grey),
 *   - a red (0x00ff0000) rectangle at x = 100..199, y = 50..149,
 *   - a green (0x0000ff00) full-width band at rows 300..309,
 * clipped to the mode.
 *
 * COM1 report:
 *   guest=fb
 *   bochs=found|missing  pci_slot=<n>  pci_class=0x38000  bars=preset|assigned
 *   bar0=0x..  bar0_size_kib=<n>  bar2=0x..  dispi_id=0xb0c5  vram_kib=<n>
 *   qext_size=<n>  qext_byteorder=0x1e1e1e1e  edid=present|absent
 *   [mode=invalid]                  when the mode= option is unusable
 *   xres=<n> yres=<n> bpp=32 virt_width=<n> virt_height=<n> enable=0x41
 *   stride=<bytes>
 *   drawn
 *   done
 * (each key=value on its own line; on failure `error=<why>` then `done`
 * and exit status 1).
 *
 * Command line: mode=WxH (default 640x480); hold (after done, halt with
 * interrupts off instead of exiting, so the framebuffer can be inspected
 * while the VM lives).
 */
#include "lib/bochs.h"
#include "lib/bootinfo.h"

#define BACKGROUND 0x00202020u
#define RED 0x00ff0000u
#define GREEN 0x0000ff00u

void guest_main(u32 kind, u64 info)
{
    guest_start("fb");
    const char *cmdline = boot_cmdline(kind, info);
    struct bochs b;
    if (!bochs_probe(&b))
        finish(1);

    u32 w = 640, h = 480;
    bochs_mode_from_cmdline(cmdline, &b, &w, &h);
    if (!bochs_set_mode(&b, w, h))
        finish(1);
    put_dec("stride", b.stride);

    bochs_fill(&b, 0, 0, b.width, b.height, BACKGROUND);
    bochs_fill(&b, 100, 50, 100, 100, RED);
    bochs_fill(&b, 0, 300, b.width, 10, GREEN);
    put_line("drawn");

    if (cmdline_has(cmdline, "hold")) {
        put_line("done");
        halt_forever();
    }
    finish(0);
}
