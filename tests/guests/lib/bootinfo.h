/*
 * What the loader hands a guest: Linux's boot_params (zero page) or PVH's
 * hvm_start_info.
 *
 * Offsets are Linux's uapi headers' (asm/bootparam.h, linux/screen_info.h);
 * the PVH layout is Xen's public/arch-x86/hvm/start_info.h.
 */
#ifndef VIREO_BOOTINFO_H
#define VIREO_BOOTINFO_H

#include "guest.h"

/* struct boot_params */
#define BP_SCREEN_INFO 0x000
#define BP_EXT_CMD_LINE_PTR 0x0c8 /* u32: bits 32..63 of cmd_line_ptr */
#define BP_E820_ENTRIES 0x1e8     /* u8 */
#define BP_CMD_LINE_PTR 0x228     /* u32 (setup_header at 0x1f1) */
#define BP_E820_TABLE 0x2d0       /* 128 x {u64 addr, u64 size, u32 type}, packed */
#define BP_E820_MAX 128

/* struct screen_info, at the start of boot_params */
#define SI_ORIG_VIDEO_ISVGA 0x0f /* u8: 0x23 VESA LFB (vesafb), 0x70 EFI (efifb) */
#define SI_LFB_WIDTH 0x12        /* u16 */
#define SI_LFB_HEIGHT 0x14       /* u16 */
#define SI_LFB_DEPTH 0x16        /* u16 */
#define SI_LFB_BASE 0x18         /* u32 */
#define SI_LFB_SIZE 0x1c         /* u32: 64 KiB units for vesafb, bytes for efifb */
#define SI_LFB_LINELENGTH 0x24   /* u16 */
#define SI_RED_SIZE 0x26         /* then red_pos, green_size/pos, blue_size/pos, rsvd_size/pos (u8 each) */
#define SI_PAGES 0x32            /* u16 */
#define SI_CAPABILITIES 0x36     /* u32 */
#define SI_EXT_LFB_BASE 0x3a     /* u32 */

/* struct hvm_start_info */
#define PVH_MAGIC 0x336ec578
struct hvm_start_info {
    u32 magic;
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;    /* version >= 1 */
    u64 memmap_paddr;  /* version >= 1 */
    u32 memmap_entries; /* version >= 1 */
    u32 reserved;
};

struct hvm_memmap_table_entry {
    u64 addr;
    u64 size;
    u32 type;
    u32 reserved;
};

#define E820_RAM 1

static inline u8 bp_u8(u64 bp, u32 off) { return *(volatile u8 *)(bp + off); }
static inline u16 bp_u16(u64 bp, u32 off) { return *(volatile u16 *)(bp + off); }
static inline u32 bp_u32(u64 bp, u32 off) { return *(volatile u32 *)(bp + off); }
static inline u64 bp_u64(u64 bp, u32 off) { return *(volatile u64 *)(bp + off); }

/* The kernel command line, or "" when the loader gave none. */
static inline const char *boot_cmdline(u32 kind, u64 info)
{
    u64 p = 0;
    if (!info)
        return "";
    if (kind == BOOT_PVH) {
        const struct hvm_start_info *si = (const struct hvm_start_info *)info;
        if (si->magic == PVH_MAGIC)
            p = si->cmdline_paddr;
    } else {
        p = bp_u32(info, BP_CMD_LINE_PTR) | ((u64)bp_u32(info, BP_EXT_CMD_LINE_PTR) << 32);
    }
    /* The guest's page tables map the low 4 GiB only. */
    if (!p || p >= 0x100000000ul)
        return "";
    return (const char *)p;
}

#endif
