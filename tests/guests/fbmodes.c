/*
 * fbmodes: draws on bochs-display and changes the picture or the mode on
 * each key press, for the VNC tests and benchmark.
 *
 * Scene "plain" (default): mode=WxH (default 640x480), dark grey
 * 0x00202020 with a red (0x00ff0000) square at x = 100..199, y = 50..149.
 * Scene "desktop" (cmdline `desktop`): a desktop-like screen: a blue
 * background, a light title bar (rows 0..23), a white window with rows of
 * black text-like dashes, a grey panel at the bottom.
 *
 * Then i8042 is set up for polling (as the kbd guest), and each key press
 * (a make code) does the next step:
 *   1st: switch to mode2=WxH (default 800x600), fill with blue 0x000000ff,
 *        a yellow (0x00ffff00) square at x = 10..49, y = 10..49;
 *        COM1 `mode2` (with `desktop`: draw a 32x32 white square at
 *        x = 400..431, y = 300..331 instead, a small change; `change1`)
 *   2nd and later: the same small square, colours alternating
 *        (`changeN`).
 * COM1 report: guest=fbmodes, the fb guest's bochs lines, `drawn`,
 * the kbd guest's set-up lines, `ready`, then one line per step.
 * Never exits.
 */
#include "lib/bochs.h"
#include "lib/bootinfo.h"
#include "lib/i8042.h"

static void desktop(struct bochs *b)
{
    bochs_fill(b, 0, 0, b->width, b->height, 0x003a6ea5u);
    bochs_fill(b, 0, 0, b->width, 24, 0x00ecececu);
    u32 ww = b->width / 2, wh = b->height * 2 / 3;
    bochs_fill(b, 40, 60, ww, wh, 0x00ffffffu);
    bochs_fill(b, 40, 60, ww, 20, 0x00d0d0d0u);
    /* "Text": dashes of varying length on every 16th row band. */
    u32 seed = 12345;
    for (u32 y = 90; y + 10 < 60 + wh; y += 16) {
        u32 x = 50;
        while (x + 60 < 40 + ww) {
            seed = seed * 1103515245u + 12345u;
            u32 len = 8 + (seed >> 16) % 48;
            bochs_fill(b, x, y, len, 9, 0x00000000u);
            x += len + 8;
        }
    }
    bochs_fill(b, 0, b->height - 40, b->width, 40, 0x00303030u);
    for (u32 i = 0; i < 8; i++)
        bochs_fill(b, 10 + i * 44, b->height - 34, 32, 28, 0x00808080u + i * 0x00101010u);
}

void guest_main(u32 kind, u64 info)
{
    guest_start("fbmodes");
    const char *cmdline = boot_cmdline(kind, info);
    struct bochs b;
    if (!bochs_probe(&b))
        finish(1);

    u32 w = 640, h = 480;
    bochs_mode_from_cmdline(cmdline, &b, &w, &h);
    if (!bochs_set_mode(&b, w, h))
        finish(1);
    int is_desktop = cmdline_has(cmdline, "desktop");
    if (is_desktop) {
        desktop(&b);
    } else {
        bochs_fill(&b, 0, 0, b.width, b.height, 0x00202020u);
        bochs_fill(&b, 100, 50, 100, 100, 0x00ff0000u);
    }
    put_line("drawn");

    i8042_setup(0);
    put_line("ready");

    u32 step = 0;
    for (;;) {
        u8 status = inb(I8042_STATUS);
        if (!(status & I8042_STR_OBF)) {
            cpu_relax();
            continue;
        }
        u8 byte = inb(I8042_DATA);
        if ((status & I8042_STR_AUXDATA) || byte == 0xe0 || (byte & 0x80))
            continue;
        step++;
        if (step == 1 && !is_desktop) {
            u32 w2 = 800, h2 = 600;
            const char *m = cmdline_value(cmdline, "mode2");
            if (m) {
                int ok = 1;
                const char *p = m;
                u64 pw = parse_number(&p, &ok);
                if (ok && *p == 'x') {
                    p++;
                    u64 ph = parse_number(&p, &ok);
                    if (ok && pw >= 64 && ph >= 64 && pw <= 4096 && ph <= 4096)
                        w2 = (u32)pw, h2 = (u32)ph;
                }
            }
            if (!bochs_set_mode(&b, w2, h2))
                finish(1);
            bochs_fill(&b, 0, 0, b.width, b.height, 0x000000ffu);
            bochs_fill(&b, 10, 10, 40, 40, 0x00ffff00u);
            put_line("mode2");
            continue;
        }
        bochs_fill(&b, 400, 300, 32, 32, (step & 1) ? 0x00ffffffu : 0x00ff00ffu);
        serial_puts("change");
        serial_put_dec(step);
        serial_putc('\n');
    }
}
