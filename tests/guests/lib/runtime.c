/*
 * The four functions gcc may call even in a freestanding build (for struct
 * copies and large initialisers), each one string instruction so the
 * development machines' slow emulator runs them quickly.
 */
typedef unsigned long size_t;

void *memset(void *dst, int c, size_t n)
{
    void *d = dst;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    void *d = dst;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    void *d = dst;
    if ((unsigned long)dst <= (unsigned long)src || (unsigned long)dst >= (unsigned long)src + n) {
        __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    } else {
        /* Overlapping, destination above: copy backwards. */
        const char *s = (const char *)src + n - 1;
        d = (char *)dst + n - 1;
        __asm__ volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    }
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] - y[i];
    return 0;
}
