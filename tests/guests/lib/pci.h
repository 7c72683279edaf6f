/*
 * PCI configuration mechanism #1 (0xcf8/0xcfc) on bus 0, and memory BARs:
 * sizing, and assignment when nobody did it (a firmware-less boot may
 * leave BARs at 0; SeaBIOS and vireo-vmm assign them).
 */
#ifndef VIREO_PCI_H
#define VIREO_PCI_H

#include "guest.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

#define PCI_COMMAND 0x04
#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_CLASS_REVISION 0x08
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10

/* Where a guest places BARs it has to assign itself: vireo-vmm's window. */
#define PCI_MMIO_START 0xc0000000ul
#define PCI_MMIO_END 0xfec00000ul

/* A device on bus 0: slot << 3 | function. */
typedef u8 pci_devfn;

static inline u32 pci_read32(pci_devfn df, u8 off)
{
    outl(PCI_CONFIG_ADDRESS, 0x80000000u | ((u32)df << 8) | (off & 0xfc));
    return inl(PCI_CONFIG_DATA);
}

static inline void pci_write32(pci_devfn df, u8 off, u32 v)
{
    outl(PCI_CONFIG_ADDRESS, 0x80000000u | ((u32)df << 8) | (off & 0xfc));
    outl(PCI_CONFIG_DATA, v);
}

static inline u16 pci_read16(pci_devfn df, u8 off)
{
    outl(PCI_CONFIG_ADDRESS, 0x80000000u | ((u32)df << 8) | (off & 0xfc));
    return inw(PCI_CONFIG_DATA + (off & 2));
}

static inline void pci_write16(pci_devfn df, u8 off, u16 v)
{
    outl(PCI_CONFIG_ADDRESS, 0x80000000u | ((u32)df << 8) | (off & 0xfc));
    outw(PCI_CONFIG_DATA + (off & 2), v);
}

/* Finds vendor:device on bus 0; returns 1 and sets *out when found. */
static inline int pci_find(u16 vendor, u16 device, pci_devfn *out)
{
    for (u32 slot = 0; slot < 32; slot++) {
        u32 functions = 1;
        for (u32 fn = 0; fn < functions; fn++) {
            pci_devfn df = (pci_devfn)(slot << 3 | fn);
            u32 id = pci_read32(df, 0);
            if ((id & 0xffff) == 0xffff)
                continue;
            if (fn == 0 && (pci_read32(df, PCI_HEADER_TYPE & 0xfc) >> 16) & 0x80)
                functions = 8;
            if (id == ((u32)device << 16 | vendor)) {
                *out = df;
                return 1;
            }
        }
    }
    return 0;
}

static inline int pci_bar_is_io(u32 raw) { return raw & 1; }
static inline int pci_bar_is_64(u32 raw) { return !(raw & 1) && ((raw >> 1) & 3) == 2; }

/* The address a memory BAR decodes (64-bit BARs read both halves). */
static inline u64 pci_bar_address(pci_devfn df, int bar)
{
    u32 lo = pci_read32(df, (u8)(PCI_BAR0 + 4 * bar));
    if (pci_bar_is_io(lo))
        return lo & ~3u;
    u64 addr = lo & ~0xfu;
    if (pci_bar_is_64(lo))
        addr |= (u64)pci_read32(df, (u8)(PCI_BAR0 + 4 * bar + 4)) << 32;
    return addr;
}

/* A memory BAR's size, found by writing all ones with decoding off. */
static inline u64 pci_bar_size(pci_devfn df, int bar)
{
    u8 off = (u8)(PCI_BAR0 + 4 * bar);
    u16 cmd = pci_read16(df, PCI_COMMAND);
    pci_write16(df, PCI_COMMAND, cmd & (u16)~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
    u32 lo = pci_read32(df, off);
    pci_write32(df, off, 0xffffffffu);
    u32 mask_lo = pci_read32(df, off);
    pci_write32(df, off, lo);
    u64 mask = mask_lo & ~0xfu;
    if (pci_bar_is_io(lo)) {
        mask = (mask_lo & ~3u) | 0xffff0000u;
    } else if (pci_bar_is_64(lo)) {
        u32 hi = pci_read32(df, off + 4);
        pci_write32(df, off + 4, 0xffffffffu);
        mask |= (u64)pci_read32(df, off + 4) << 32;
        pci_write32(df, off + 4, hi);
    } else {
        mask |= 0xffffffff00000000ul;
    }
    pci_write16(df, PCI_COMMAND, cmd);
    if (!(mask & 0xffffffffu) && !(mask >> 32))
        return 0;
    return ~mask + 1;
}

/* The end of the highest memory BAR that bus 0 already decodes inside
 * [PCI_MMIO_START, PCI_MMIO_END): where a guest may put a new one. */
static inline u64 pci_mmio_free_start(void)
{
    u64 next = PCI_MMIO_START;
    for (u32 slot = 0; slot < 32; slot++) {
        for (u32 fn = 0; fn < 8; fn++) {
            pci_devfn df = (pci_devfn)(slot << 3 | fn);
            if ((pci_read32(df, 0) & 0xffff) == 0xffff) {
                if (fn == 0)
                    break;
                continue;
            }
            if (((pci_read32(df, PCI_HEADER_TYPE & 0xfc) >> 16) & 0x7f) != 0)
                continue; /* bridges: only type-0 headers have six BARs */
            for (int bar = 0; bar < 6; bar++) {
                u32 raw = pci_read32(df, (u8)(PCI_BAR0 + 4 * bar));
                if (pci_bar_is_io(raw))
                    continue;
                u64 addr = pci_bar_address(df, bar);
                if (addr >= PCI_MMIO_START && addr < PCI_MMIO_END) {
                    u64 end = addr + pci_bar_size(df, bar);
                    if (end > next)
                        next = end;
                }
                if (pci_bar_is_64(raw))
                    bar++;
            }
        }
    }
    return next;
}

/* Gives an unassigned memory BAR an address (aligned to its size, above
 * every decoded BAR) and turns memory decoding on. Returns the BAR's
 * address; *assigned says whether the guest had to place it. */
static inline u64 pci_bar_ensure(pci_devfn df, int bar, int *assigned)
{
    u64 addr = pci_bar_address(df, bar);
    *assigned = 0;
    if (!addr) {
        u64 size = pci_bar_size(df, bar);
        if (!size)
            return 0;
        u64 base = (pci_mmio_free_start() + size - 1) & ~(size - 1);
        if (base + size > PCI_MMIO_END)
            return 0;
        u8 off = (u8)(PCI_BAR0 + 4 * bar);
        u32 raw = pci_read32(df, off);
        pci_write32(df, off, (u32)base | (raw & 0xf));
        if (pci_bar_is_64(raw))
            pci_write32(df, off + 4, (u32)(base >> 32));
        addr = pci_bar_address(df, bar);
        *assigned = 1;
    }
    u16 cmd = pci_read16(df, PCI_COMMAND);
    if (!(cmd & PCI_COMMAND_MEMORY))
        pci_write16(df, PCI_COMMAND, cmd | PCI_COMMAND_MEMORY);
    return addr;
}

#endif
