/*
 * bootinfo: prints what the loader handed over, then exits.
 *
 * COM1 report (one `key=value` a line, in this order):
 *   guest=bootinfo
 *   boot=elf64|pvh
 *   cmdline=<the command line, verbatim, up to 1024 bytes>
 *   e820_entries=<n>
 *   e820=<addr 0x..>,<size 0x..>,<type>       one line per entry, in order
 *   e820_ram_total=<decimal bytes of type-1 (RAM) entries>
 * kind 0 (Linux boot_params) only, from screen_info:
 *   fb_type=0x23                               orig_video_isVGA (0x23 vesafb, 0x70 efifb, 0x0 none)
 *   fb_base=0x..                               lfb_base (| ext_lfb_base << 32)
 *   fb_size=<n>                                lfb_size, raw (64 KiB units for vesafb)
 *   fb_width=<n> fb_height=<n> fb_depth=<n> fb_linelength=<n>   one per line
 *   fb_colors=r8@16,g8@8,b8@0,x8@24            red, green, blue, reserved size@pos
 *   fb_pages=<n>
 *   rsdp=0x..                                  boot_params.acpi_rsdp_addr (0x0 when unset)
 * kind 1 (PVH hvm_start_info) only:
 *   pvh_magic=0x336ec578  pvh_version=<n>  pvh_modules=<n>
 *   rsdp=0x..                                  rsdp_paddr
 * both:
 *   rsdp_signature=ok|bad|none                 "RSD PTR " at rsdp (none: rsdp is 0)
 *   rsdp_scan=0x..|none                        RSDP found by scanning 0xe0000..0xfffff
 *   done
 * Command line: none of its own (it is echoed).
 */
#include "lib/bootinfo.h"

static void put_e820(u64 addr, u64 size, u32 type, u64 *ram)
{
    serial_puts("e820=");
    serial_put_hexw(addr, 1);
    serial_putc(',');
    serial_put_hexw(size, 1);
    serial_putc(',');
    serial_put_dec(type);
    serial_putc('\n');
    if (type == E820_RAM)
        *ram += size;
}

static int is_rsdp(u64 addr)
{
    const char *sig = "RSD PTR ";
    for (int i = 0; i < 8; i++)
        if (*(volatile char *)(addr + i) != sig[i])
            return 0;
    return 1;
}

static void put_screen_info(u64 bp)
{
    u64 base = bp_u32(bp, SI_LFB_BASE) | ((u64)bp_u32(bp, SI_EXT_LFB_BASE) << 32);
    put_hex("fb_type", bp_u8(bp, SI_ORIG_VIDEO_ISVGA));
    put_hex("fb_base", base);
    put_dec("fb_size", bp_u32(bp, SI_LFB_SIZE));
    put_dec("fb_width", bp_u16(bp, SI_LFB_WIDTH));
    put_dec("fb_height", bp_u16(bp, SI_LFB_HEIGHT));
    put_dec("fb_depth", bp_u16(bp, SI_LFB_DEPTH));
    put_dec("fb_linelength", bp_u16(bp, SI_LFB_LINELENGTH));
    serial_puts("fb_colors=");
    const char names[4] = {'r', 'g', 'b', 'x'};
    for (int i = 0; i < 4; i++) {
        if (i)
            serial_putc(',');
        serial_putc(names[i]);
        serial_put_dec(bp_u8(bp, SI_RED_SIZE + 2 * i));
        serial_putc('@');
        serial_put_dec(bp_u8(bp, SI_RED_SIZE + 2 * i + 1));
    }
    serial_putc('\n');
    put_dec("fb_pages", bp_u16(bp, SI_PAGES));
}

void guest_main(u32 kind, u64 info)
{
    guest_start("bootinfo");
    put_str("boot", kind == BOOT_PVH ? "pvh" : "elf64");

    const char *cmdline = boot_cmdline(kind, info);
    serial_puts("cmdline=");
    for (int i = 0; i < 1024 && cmdline[i] && cmdline[i] != '\n'; i++)
        serial_putc(cmdline[i]);
    serial_putc('\n');

    u64 ram = 0;
    u64 rsdp = 0;
    if (kind == BOOT_PVH) {
        const struct hvm_start_info *si = (const struct hvm_start_info *)info;
        if (si->magic != PVH_MAGIC) {
            put_hex("pvh_magic", si->magic);
            put_str("error", "bad_pvh_magic");
            finish(1);
        }
        u32 n = si->version >= 1 ? si->memmap_entries : 0;
        put_dec("e820_entries", n);
        const struct hvm_memmap_table_entry *map =
            (const struct hvm_memmap_table_entry *)si->memmap_paddr;
        for (u32 i = 0; i < n && i < 1024; i++)
            put_e820(map[i].addr, map[i].size, map[i].type, &ram);
        put_dec("e820_ram_total", ram);
        put_hex("pvh_magic", si->magic);
        put_dec("pvh_version", si->version);
        put_dec("pvh_modules", si->nr_modules);
        rsdp = si->version >= 1 ? si->rsdp_paddr : 0;
    } else {
        u32 n = bp_u8(info, BP_E820_ENTRIES);
        put_dec("e820_entries", n);
        for (u32 i = 0; i < n && i < BP_E820_MAX; i++) {
            u32 e = BP_E820_TABLE + 20 * i;
            put_e820(bp_u64(info, e), bp_u64(info, e + 8), bp_u32(info, e + 16), &ram);
        }
        put_dec("e820_ram_total", ram);
        put_screen_info(info);
        rsdp = bp_u64(info, 0x070); /* acpi_rsdp_addr */
    }
    put_hex("rsdp", rsdp);
    put_str("rsdp_signature", !rsdp ? "none" : rsdp < 0x100000000ul && is_rsdp(rsdp) ? "ok" : "bad");

    u64 found = 0;
    for (u64 a = 0xe0000; a < 0x100000 && !found; a += 16)
        if (is_rsdp(a))
            found = a;
    if (found)
        put_hex("rsdp_scan", found);
    else
        put_str("rsdp_scan", "none");
    finish(0);
}
