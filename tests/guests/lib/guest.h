/* Helpers for Vireo's tiny test guests: port I/O, COM1, the debug port. */
#ifndef VIREO_GUEST_H
#define VIREO_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define BOOT_LINUX 0 /* info is struct boot_params * */
#define BOOT_PVH 1   /* info is struct hvm_start_info * */

#define COM1 0x3f8
#define DEBUG_PORT 0x402 /* bytes written here go to the VMM's debug log */
#define DEBUG_EXIT 0xf4  /* isa-debug-exit: status (v << 1) | 1 */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline void serial_putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (u8)c);
}

static inline void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

static inline void serial_put_hex(u64 v)
{
    serial_puts("0x");
    for (int shift = 60; shift >= 0; shift -= 4)
        serial_putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

static inline void serial_put_dec(u64 v)
{
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    serial_puts(&buf[i]);
}

static inline void debug_exit(u8 status) { outb(DEBUG_EXIT, status); }

static inline void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

#endif
