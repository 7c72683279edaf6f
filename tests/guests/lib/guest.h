/*
 * Helpers for Vireo's tiny test guests: port I/O, COM1, the debug port,
 * bulk memory with string instructions, the kernel command line and
 * bounded waits.
 *
 * The report format every guest follows on COM1: one fact per line, as
 * `key=value`, split at the first '='. Numbers are decimal unless they start
 * with 0x (lower-case hex, no leading zeros unless a format says otherwise).
 * Each guest starts with an empty line and `guest=NAME` (so firmware output
 * that does not end in a newline, such as SeaBIOS's "Booting from ROM..",
 * never glues onto a fact) and ends with `done` (a line without '=').
 */
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
#define POST_PORT 0x80   /* ignored by both VMMs: a cheap, silent exit */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline u8 mmio_read8(u64 addr) { return *(volatile u8 *)addr; }
static inline u16 mmio_read16(u64 addr) { return *(volatile u16 *)addr; }
static inline u32 mmio_read32(u64 addr) { return *(volatile u32 *)addr; }
static inline void mmio_write16(u64 addr, u16 v) { *(volatile u16 *)addr = v; }
static inline void mmio_write32(u64 addr, u32 v) { *(volatile u32 *)addr = v; }

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* ---- bulk memory: one string instruction each ---- */

/* Stores `count` copies of the 32-bit `value` at `dst` (rep stosl). */
static inline void fill32(void *dst, u32 value, u64 count)
{
    __asm__ volatile("rep stosl" : "+D"(dst), "+c"(count) : "a"(value) : "memory");
}

/* Copies `n` bytes (rep movsb). */
static inline void copy_bytes(void *dst, const void *src, u64 n)
{
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

/* ---- COM1 ---- */

/* Waits (boundedly: a missing UART must not hang the guest) for room in
 * the transmitter, then sends one byte. */
static inline void serial_putc(char c)
{
    for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
        ;
    outb(COM1, (u8)c);
}

static inline void serial_puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

/* Always 16 digits: kept for callers that want a fixed width. */
static inline void serial_put_hex(u64 v)
{
    serial_puts("0x");
    for (int shift = 60; shift >= 0; shift -= 4)
        serial_putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

/* 0x plus at least `digits` hex digits (more when v needs them). */
static inline void serial_put_hexw(u64 v, int digits)
{
    int n = 1;
    while (n < 16 && (v >> (4 * n)))
        n++;
    if (n < digits)
        n = digits;
    serial_puts("0x");
    for (int shift = 4 * (n - 1); shift >= 0; shift -= 4)
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

/* One fact per line: `key=value`. */
static inline void put_str(const char *key, const char *value)
{
    serial_puts(key);
    serial_putc('=');
    serial_puts(value);
    serial_putc('\n');
}

static inline void put_dec(const char *key, u64 value)
{
    serial_puts(key);
    serial_putc('=');
    serial_put_dec(value);
    serial_putc('\n');
}

static inline void put_hex(const char *key, u64 value)
{
    serial_puts(key);
    serial_putc('=');
    serial_put_hexw(value, 1);
    serial_putc('\n');
}

static inline void put_line(const char *line)
{
    serial_puts(line);
    serial_putc('\n');
}

/* The first lines of every guest: an empty line, then guest=NAME. */
static inline void guest_start(const char *name)
{
    serial_putc('\n');
    put_str("guest", name);
}

static inline void debug_exit(u8 status) { outb(DEBUG_EXIT, status); }

static inline void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* Prints `done`, asks the VMM to exit with `status`, and halts should the
 * exit device be missing. */
static inline __attribute__((noreturn)) void finish(u8 status)
{
    put_line("done");
    debug_exit(status);
    halt_forever();
    __builtin_unreachable();
}

/* ---- strings and the command line ---- */

static inline int is_space(char c) { return c == ' ' || c == '\t' || c == '\n'; }

/* The value of `key=` in a space-separated command line (pointer into it,
 * ended by a space or NUL), or 0 when the key is absent. */
static inline const char *cmdline_value(const char *cmdline, const char *key)
{
    const char *p = cmdline;
    while (p && *p) {
        while (is_space(*p))
            p++;
        const char *k = key;
        const char *w = p;
        while (*k && *w == *k)
            k++, w++;
        if (!*k && *w == '=')
            return w + 1;
        while (*p && !is_space(*p))
            p++;
    }
    return 0;
}

/* Whether the command line holds the bare word `flag` (or `flag=...`). */
static inline int cmdline_has(const char *cmdline, const char *flag)
{
    const char *p = cmdline;
    while (p && *p) {
        while (is_space(*p))
            p++;
        const char *k = flag;
        const char *w = p;
        while (*k && *w == *k)
            k++, w++;
        if (!*k && (!*w || is_space(*w) || *w == '='))
            return 1;
        while (*p && !is_space(*p))
            p++;
    }
    return 0;
}

/* Parses a decimal or 0x-hex number at *p, advancing *p; returns 0 digits
 * parsed as failure through *ok. */
static inline u64 parse_number(const char **p, int *ok)
{
    const char *s = *p;
    u64 v = 0;
    int digits = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        for (;; s++, digits++) {
            char c = *s;
            if (c >= '0' && c <= '9')
                v = v * 16 + (u64)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v = v * 16 + (u64)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                v = v * 16 + (u64)(c - 'A' + 10);
            else
                break;
        }
    } else {
        for (; *s >= '0' && *s <= '9'; s++, digits++)
            v = v * 10 + (u64)(*s - '0');
    }
    *p = s;
    *ok = digits > 0;
    return v;
}

/* The number after `key=`, or `fallback` when absent or malformed. */
static inline u64 cmdline_number(const char *cmdline, const char *key, u64 fallback)
{
    const char *v = cmdline_value(cmdline, key);
    if (!v)
        return fallback;
    int ok;
    u64 n = parse_number(&v, &ok);
    return ok && (!*v || is_space(*v)) ? n : fallback;
}

/* ---- CMOS ---- */

static inline u8 cmos_read(u8 index)
{
    outb(0x70, index & 0x7f);
    return inb(0x71);
}

static inline void cmos_write(u8 index, u8 value)
{
    outb(0x70, index & 0x7f);
    outb(0x71, value);
}

/* ---- bounded waits ----
 *
 * Guests have no calibrated timer, and the development machines run them
 * about a thousand times slower than real hardware, so iteration counts say
 * little about time. A deadline counts changes of the CMOS RTC's seconds
 * register instead (checked every 1024 polls), with a poll-count backstop
 * of one million polls per second in case the RTC does not tick. */
struct deadline {
    u64 polls;
    u64 max_polls;
    u32 seconds;
    u32 limit;
    u8 last;
};

static inline void deadline_start(struct deadline *d, u32 seconds)
{
    d->polls = 0;
    d->max_polls = (u64)seconds * 1000000;
    d->seconds = 0;
    d->limit = seconds;
    d->last = cmos_read(0);
}

/* Call once per poll; true once the deadline has passed. */
static inline int deadline_passed(struct deadline *d)
{
    cpu_relax();
    if ((++d->polls & 0x3ff) == 0) {
        u8 s = cmos_read(0);
        if (s != d->last) {
            d->last = s;
            d->seconds++;
        }
    }
    return d->seconds > d->limit || d->polls > d->max_polls;
}

#endif
