/*
 * The i8042 PS/2 controller at 0x60 (data) / 0x64 (status, command), used
 * by polling: every wait is bounded.
 */
#ifndef VIREO_I8042_H
#define VIREO_I8042_H

#include "guest.h"

#define I8042_DATA 0x60
#define I8042_STATUS 0x64
#define I8042_COMMAND 0x64

#define I8042_STR_OBF 0x01  /* output buffer full: a byte waits at 0x60 */
#define I8042_STR_IBF 0x02  /* input buffer full: the controller is busy */
#define I8042_STR_AUXDATA 0x20

#define I8042_CTR_KBDINT 0x01
#define I8042_CTR_AUXINT 0x02
#define I8042_CTR_KBDDIS 0x10
#define I8042_CTR_AUXDIS 0x20
#define I8042_CTR_XLATE 0x40

static inline int i8042_wait_write(void)
{
    for (int i = 0; i < 100000; i++)
        if (!(inb(I8042_STATUS) & I8042_STR_IBF))
            return 1;
    return 0;
}

/* Reads one byte the controller answers with; -1 after a bounded wait. */
static inline int i8042_read_reply(void)
{
    for (int i = 0; i < 100000; i++)
        if (inb(I8042_STATUS) & I8042_STR_OBF)
            return inb(I8042_DATA);
    return -1;
}

static inline void i8042_command(u8 cmd)
{
    i8042_wait_write();
    outb(I8042_COMMAND, cmd);
}

static inline void i8042_write_data(u8 v)
{
    i8042_wait_write();
    outb(I8042_DATA, v);
}

/* Empties the output buffer; returns how many bytes were dropped. */
static inline int i8042_flush(void)
{
    int n = 0;
    while (n < 64 && (inb(I8042_STATUS) & I8042_STR_OBF)) {
        inb(I8042_DATA);
        n++;
    }
    return n;
}

/* Minimal set-up for a polling guest: translation on, keyboard port
 * enabled, the AUX port and both interrupts off (unless kbd_irq), and
 * keyboard scanning enabled (0xF4). Reports:
 *   flushed=N  cmdbyte=0x..  cmdbyte_new=0x..  kbd_enable_ack=0x.. (or -1 as "none") */
static inline void i8042_setup(int kbd_irq)
{
    put_dec("flushed", (u64)i8042_flush());
    i8042_command(0x20);
    int ctr = i8042_read_reply();
    if (ctr < 0) {
        put_str("cmdbyte", "none");
        ctr = I8042_CTR_XLATE;
    } else {
        put_hex("cmdbyte", (u64)ctr);
    }
    u8 ctr_new = (u8)((ctr | I8042_CTR_XLATE | I8042_CTR_AUXDIS) &
                      ~(I8042_CTR_KBDDIS | I8042_CTR_AUXINT | I8042_CTR_KBDINT));
    if (kbd_irq)
        ctr_new |= I8042_CTR_KBDINT;
    i8042_command(0x60);
    i8042_write_data(ctr_new);
    i8042_command(0xae); /* enable the keyboard interface */
    i8042_command(0x20);
    int readback = i8042_read_reply();
    if (readback < 0)
        put_str("cmdbyte_new", "none");
    else
        put_hex("cmdbyte_new", (u64)readback);
    i8042_write_data(0xf4); /* keyboard: enable scanning */
    int ack = i8042_read_reply();
    if (ack < 0)
        put_str("kbd_enable_ack", "none");
    else
        serial_puts("kbd_enable_ack="), serial_put_hexw((u64)ack, 2), serial_putc('\n');
}

/* Asks the controller to pulse the CPU reset line. */
static inline void i8042_reset_cpu(void)
{
    i8042_command(0xfe);
}

#endif
