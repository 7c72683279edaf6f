/*
 * power: waits for the ACPI power button, then powers the machine off
 * through PM1a_CNT (S5).
 *
 * The PM1a registers: PM1_STS at base+0 (bit 8 PWRBTN_STS, write 1 to
 * clear), PM1_EN at base+2 (bit 8 PWRBTN_EN), PM1_CNT at base+4 (SLP_TYP in
 * bits 10..12, SLP_EN bit 13). The base is 0x600 (vireo-vmm), unless a
 * PIIX4 power-management function (8086:7113, as QEMU's `-machine pc` has)
 * decodes its PMBASE somewhere else, or pm= says otherwise.
 *
 * COM1 report:
 *   guest=power
 *   pm_base=0x600
 *   pm_source=default|piix4|cmdline
 *   s5=<SLP_TYP used for S5>
 *   pm1_sts=0x..               PM1_STS before arming (PWRBTN_STS is cleared then)
 *   power=armed
 *   power=button               PWRBTN_STS seen
 *   pm1_sts_cleared=0x..       PM1_STS after writing 1 to bit 8
 *   done                       then the S5 write
 *   poweroff=failed            only if the machine still runs a while later (exit status 1)
 * or `timeout` then `done` (exit status 1) when no press came within
 * `timeout=` seconds (default 60).
 *
 * Command line: s5=<n> (default 5, vireo-vmm's DSDT; QEMU's PIIX4 uses 0),
 * pm=<port> (PM1a base), timeout=<seconds>.
 */
#include "lib/bootinfo.h"
#include "lib/pci.h"

#define PWRBTN (1u << 8)
#define SLP_EN (1u << 13)

static u16 pm_base(const char *cmdline, const char **source)
{
    u64 port = cmdline_number(cmdline, "pm", 0);
    if (port && port < 0x10000) {
        *source = "cmdline";
        return (u16)port;
    }
    pci_devfn df;
    if (pci_find(0x8086, 0x7113, &df)) {
        u32 base = pci_read32(df, 0x40) & 0xffc0;
        u32 enabled = pci_read32(df, 0x80) & 1; /* PMREGMISC: PMIOSE */
        if (base && enabled) {
            *source = "piix4";
            return (u16)base;
        }
    }
    *source = "default";
    return 0x600;
}

void guest_main(u32 kind, u64 info)
{
    guest_start("power");
    const char *cmdline = boot_cmdline(kind, info);
    const char *source;
    u16 base = pm_base(cmdline, &source);
    u16 s5 = (u16)(cmdline_number(cmdline, "s5", 5) & 7);
    u32 limit = (u32)cmdline_number(cmdline, "timeout", 60);
    put_hex("pm_base", base);
    put_str("pm_source", source);
    put_dec("s5", s5);

    put_hex("pm1_sts", inw(base));
    outw(base, PWRBTN); /* a stale press does not count */
    outw(base + 2, inw(base + 2) | PWRBTN);
    put_str("power", "armed");

    struct deadline d;
    deadline_start(&d, limit);
    while (!(inw(base) & PWRBTN)) {
        if (deadline_passed(&d)) {
            put_line("timeout");
            finish(1);
        }
    }
    put_str("power", "button");
    outw(base, PWRBTN);
    put_hex("pm1_sts_cleared", inw(base));
    put_line("done");

    outw(base + 4, (u16)((inw(base + 4) & ~(7u << 10)) | (u32)s5 << 10 | SLP_EN));
    deadline_start(&d, 10);
    while (!deadline_passed(&d))
        ;
    put_str("poweroff", "failed");
    debug_exit(1);
    halt_forever();
}
