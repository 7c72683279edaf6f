/*
 * bochs-display (PCI 1234:1111): finding it, setting a mode through the
 * DISPI registers in its MMIO BAR, and drawing with rep stosl.
 *
 * BAR0 is the VRAM (the linear framebuffer); BAR2 is 4 KiB of MMIO: EDID at
 * 0x000, DISPI registers at 0x500 (u16 at index * 2), QEXT at 0x600.
 */
#ifndef VIREO_BOCHS_H
#define VIREO_BOCHS_H

#include "guest.h"
#include "pci.h"

#define BOCHS_VENDOR 0x1234
#define BOCHS_DEVICE 0x1111

#define DISPI_OFFSET 0x500
#define QEXT_OFFSET 0x600

#define DISPI_ID 0x0
#define DISPI_XRES 0x1
#define DISPI_YRES 0x2
#define DISPI_BPP 0x3
#define DISPI_ENABLE 0x4
#define DISPI_BANK 0x5
#define DISPI_VIRT_WIDTH 0x6
#define DISPI_VIRT_HEIGHT 0x7
#define DISPI_X_OFFSET 0x8
#define DISPI_Y_OFFSET 0x9
#define DISPI_VIDEO_MEMORY_64K 0xa

#define DISPI_ENABLED 0x01
#define DISPI_LFB_ENABLED 0x40

struct bochs {
    pci_devfn devfn;
    u64 vram;      /* BAR0 */
    u64 mmio;      /* BAR2 */
    u64 vram_size; /* bytes, from DISPI index 0xa */
    int assigned;  /* the guest had to assign a BAR */
    u32 width, height, stride; /* the mode set; stride in bytes */
};

static inline u16 dispi_read(const struct bochs *b, u32 index)
{
    return mmio_read16(b->mmio + DISPI_OFFSET + index * 2);
}

static inline void dispi_write(const struct bochs *b, u32 index, u16 v)
{
    mmio_write16(b->mmio + DISPI_OFFSET + index * 2, v);
}

/* Finds the device, makes sure both BARs decode, and reports:
 *   bochs=found|missing  pci_slot=N  bars=preset|assigned
 *   bar0=0x..  bar0_size_kib=N  bar2=0x..  dispi_id=0x....  vram_kib=N
 *   qext_size=N  qext_byteorder=0x........  edid=present|absent
 * Returns 0 when the device is missing or unusable (after printing why). */
static inline int bochs_probe(struct bochs *b)
{
    if (!pci_find(BOCHS_VENDOR, BOCHS_DEVICE, &b->devfn)) {
        put_str("bochs", "missing");
        return 0;
    }
    int a0, a2;
    b->vram = pci_bar_ensure(b->devfn, 0, &a0);
    b->mmio = pci_bar_ensure(b->devfn, 2, &a2);
    b->assigned = a0 || a2;
    put_str("bochs", "found");
    put_dec("pci_slot", b->devfn >> 3);
    put_hex("pci_class", pci_read32(b->devfn, PCI_CLASS_REVISION) >> 8);
    put_str("bars", b->assigned ? "assigned" : "preset");
    put_hex("bar0", b->vram);
    put_dec("bar0_size_kib", pci_bar_size(b->devfn, 0) >> 10);
    put_hex("bar2", b->mmio);
    if (!b->vram || !b->mmio) {
        put_str("error", "bar_unassigned");
        return 0;
    }
    put_hex("dispi_id", dispi_read(b, DISPI_ID));
    b->vram_size = (u64)dispi_read(b, DISPI_VIDEO_MEMORY_64K) << 16;
    put_dec("vram_kib", b->vram_size >> 10);
    put_dec("qext_size", mmio_read32(b->mmio + QEXT_OFFSET));
    put_hex("qext_byteorder", mmio_read32(b->mmio + QEXT_OFFSET + 4));
    put_str("edid", mmio_read32(b->mmio) == 0xffffff00u && mmio_read32(b->mmio + 4) == 0x00ffffffu
                        ? "present"
                        : "absent");
    return 1;
}

/* Sets width x height x 32 with the linear framebuffer, writing the
 * registers as Linux's bochs DRM driver does (bochs-display, unlike the
 * std VGA, does not derive VIRT_WIDTH/HEIGHT: they read back what was
 * written), and reports what they read back:
 *   xres=N yres=N bpp=N virt_width=N virt_height=N enable=0x41
 * The stride is virt_width * 4. Returns 0 when the mode did not take. */
static inline int bochs_set_mode(struct bochs *b, u32 width, u32 height)
{
    dispi_write(b, DISPI_ENABLE, 0);
    dispi_write(b, DISPI_BPP, 32);
    dispi_write(b, DISPI_XRES, (u16)width);
    dispi_write(b, DISPI_YRES, (u16)height);
    dispi_write(b, DISPI_BANK, 0);
    dispi_write(b, DISPI_VIRT_WIDTH, (u16)width);
    dispi_write(b, DISPI_VIRT_HEIGHT, (u16)height);
    dispi_write(b, DISPI_X_OFFSET, 0);
    dispi_write(b, DISPI_Y_OFFSET, 0);
    dispi_write(b, DISPI_ENABLE, DISPI_ENABLED | DISPI_LFB_ENABLED);
    u32 xres = dispi_read(b, DISPI_XRES);
    u32 yres = dispi_read(b, DISPI_YRES);
    u32 bpp = dispi_read(b, DISPI_BPP);
    u32 vw = dispi_read(b, DISPI_VIRT_WIDTH);
    put_dec("xres", xres);
    put_dec("yres", yres);
    put_dec("bpp", bpp);
    put_dec("virt_width", vw);
    put_dec("virt_height", dispi_read(b, DISPI_VIRT_HEIGHT));
    put_hex("enable", dispi_read(b, DISPI_ENABLE));
    b->width = xres;
    b->height = yres;
    b->stride = (vw ? vw : xres) * 4;
    if (xres != width || yres != height || bpp != 32 || vw < xres) {
        put_str("error", "mode_not_set");
        return 0;
    }
    return 1;
}

/* Fills a clipped rectangle with one rep stosl per row (one for the whole
 * rectangle when it spans full rows). */
static inline void bochs_fill(const struct bochs *b, u32 x, u32 y, u32 w, u32 h, u32 colour)
{
    if (x >= b->width || y >= b->height)
        return;
    if (w > b->width - x)
        w = b->width - x;
    if (h > b->height - y)
        h = b->height - y;
    u8 *row = (u8 *)(b->vram + (u64)y * b->stride + (u64)x * 4);
    if (x == 0 && w == b->width && b->stride == w * 4) {
        fill32(row, colour, (u64)w * h);
        return;
    }
    for (u32 i = 0; i < h; i++, row += b->stride)
        fill32(row, colour, w);
}

/* Parses `mode=WxH` from the command line into *w, *h (left alone when
 * absent); prints mode=invalid and keeps the defaults when malformed or
 * too big for the VRAM. */
static inline void bochs_mode_from_cmdline(const char *cmdline, const struct bochs *b, u32 *w, u32 *h)
{
    const char *v = cmdline_value(cmdline, "mode");
    if (!v)
        return;
    int ok1, ok2 = 0;
    u64 mw = parse_number(&v, &ok1), mh = 0;
    if (ok1 && *v == 'x') {
        v++;
        mh = parse_number(&v, &ok2);
    }
    if (!ok1 || !ok2 || (*v && !is_space(*v)) || mw < 1 || mh < 1 || mw > 4096 || mh > 4096 ||
        mw * mh * 4 > b->vram_size) {
        put_str("mode", "invalid");
        return;
    }
    *w = (u32)mw;
    *h = (u32)mh;
}

#endif
