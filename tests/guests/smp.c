/*
 * smp: the BSP wakes the other CPUs with INIT-SIPI-SIPI through its xAPIC
 * and counts them as they arrive in long mode (smp.S has the trampoline).
 *
 * COM1 report:
 *   guest=smp
 *   cpus_expected=<n>          from cpus=
 *   bsp_apic_id=<n>
 *   ap=<apic id> up            one line per AP, in arrival order (printed under a spinlock)
 *   cpus_up=<n>                the BSP plus the APs that arrived
 *   done
 * or `timeout` before cpus_up= (exit status 1) when fewer than cpus-1 APs
 * arrived within `timeout=` seconds (default 30).
 *
 * Command line: cpus=<n> (default 1, at most 16), timeout=<seconds>.
 * INIT and SIPI go to "all excluding self", so every AP the machine has
 * starts, whatever its APIC ID.
 */
#include "lib/bootinfo.h"

#define LAPIC 0xfee00000ul
#define LAPIC_ID 0x020
#define LAPIC_SVR 0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_INIT 0x00000500u
#define ICR_STARTUP 0x00000600u
#define ICR_ASSERT 0x00004000u
#define ICR_BUSY 0x00001000u
#define ICR_ALL_BUT_SELF 0x000c0000u

#define TRAMPOLINE 0x8000ul
#define MAX_CPUS 16

extern const char smp_trampoline[], smp_trampoline_end[];

static u32 print_lock;
static u32 aps_up;

static void lock(void)
{
    while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
        cpu_relax();
}

static void unlock(void) { __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE); }

static u32 lapic_read(u32 reg) { return mmio_read32(LAPIC + reg); }
static void lapic_write(u32 reg, u32 v) { mmio_write32(LAPIC + reg, v); }

static void spin(u32 n)
{
    for (u32 i = 0; i < n; i++)
        cpu_relax();
}

static void send_ipi(u32 icr)
{
    lapic_write(LAPIC_ICR_HI, 0);
    lapic_write(LAPIC_ICR_LO, icr);
    for (u32 i = 0; i < 100000 && (lapic_read(LAPIC_ICR_LO) & ICR_BUSY); i++)
        cpu_relax();
}

/* Called on each AP by smp.S, on its own stack. */
void ap_main(void)
{
    u32 id = lapic_read(LAPIC_ID) >> 24;
    lock();
    serial_puts("ap=");
    serial_put_dec(id);
    serial_puts(" up\n");
    unlock();
    /* Counted after printing, so the BSP never exits under a printing AP. */
    __atomic_fetch_add(&aps_up, 1, __ATOMIC_SEQ_CST);
    halt_forever();
}

void guest_main(u32 kind, u64 info)
{
    guest_start("smp");
    const char *cmdline = boot_cmdline(kind, info);
    u32 cpus = (u32)cmdline_number(cmdline, "cpus", 1);
    u32 limit = (u32)cmdline_number(cmdline, "timeout", 30);
    if (cpus < 1 || cpus > MAX_CPUS)
        cpus = 1;
    put_dec("cpus_expected", cpus);
    put_dec("bsp_apic_id", lapic_read(LAPIC_ID) >> 24);

    if (cpus > 1) {
        /* Software-enable the local APIC (spurious vector 0xff). */
        lapic_write(LAPIC_SVR, lapic_read(LAPIC_SVR) | 0x1ff);
        /* The command line may live anywhere; it has been read by now. */
        copy_bytes((void *)TRAMPOLINE, smp_trampoline, (u64)(smp_trampoline_end - smp_trampoline));

        send_ipi(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_INIT);
        spin(10000);
        for (int i = 0; i < 2; i++) {
            send_ipi(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_STARTUP | (TRAMPOLINE >> 12));
            spin(2000);
        }

        struct deadline d;
        deadline_start(&d, limit);
        while (__atomic_load_n(&aps_up, __ATOMIC_ACQUIRE) < cpus - 1) {
            if (deadline_passed(&d)) {
                lock();
                put_line("timeout");
                put_dec("cpus_up", 1 + __atomic_load_n(&aps_up, __ATOMIC_ACQUIRE));
                finish(1);
            }
        }
    }
    lock();
    put_dec("cpus_up", 1 + __atomic_load_n(&aps_up, __ATOMIC_ACQUIRE));
    finish(0);
}
