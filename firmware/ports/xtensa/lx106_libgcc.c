/* libgcc helpers that Debian's gcc-xtensa-lx106 leaves out of its libgcc.a (it has __mulsi3,
 * __moddi3 and __udivmoddi4 but not these): 64-bit multiply and the 32/64-bit divisions the
 * harness and the generated code use (the requantisation's 64-bit product on a core without a
 * high-half multiply; decimal printing). Linked only into the qemu_lx106 board (its flags file).
 * Written so that GCC emits none of them inside themselves: shifts, adds, 32-bit multiplies. */
#include <stdint.h>

uint64_t __muldi3(uint64_t a, uint64_t b);
uint32_t __udivsi3(uint32_t n, uint32_t d);
uint32_t __umodsi3(uint32_t n, uint32_t d);
int32_t __divsi3(int32_t n, int32_t d);
uint64_t __udivdi3(uint64_t n, uint64_t d);
uint64_t __umoddi3(uint64_t n, uint64_t d);
int64_t __divdi3(int64_t n, int64_t d);

/* 32 x 32 -> 64 from four 16 x 16 -> 32 products */
static uint64_t mul32x32(uint32_t a, uint32_t b)
{
    uint32_t al = a & 0xFFFFu, ah = a >> 16, bl = b & 0xFFFFu, bh = b >> 16;
    uint32_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
    uint32_t mid = (ll >> 16) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    uint32_t lo = (ll & 0xFFFFu) | (mid << 16);
    uint32_t hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16);
    return ((uint64_t)hi << 32) | lo;
}

uint64_t __muldi3(uint64_t a, uint64_t b)
{
    uint32_t alo = (uint32_t)a, ahi = (uint32_t)(a >> 32);
    uint32_t blo = (uint32_t)b, bhi = (uint32_t)(b >> 32);
    uint64_t p = mul32x32(alo, blo);
    uint32_t cross = alo * bhi + ahi * blo;
    return p + ((uint64_t)cross << 32);
}

/* restoring shift-subtract division; *rem gets the remainder. d == 0 gives all-ones, like
 * the hardware divide of cores that have one (C leaves it undefined). */
static uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem)
{
    uint64_t q = 0u, r = 0u;
    int i;
    if (d == 0u) {
        *rem = n;
        return ~(uint64_t)0;
    }
    if ((d >> 32) == 0u && (n >> 32) == 0u) {
        uint32_t n32 = (uint32_t)n, d32 = (uint32_t)d, q32 = 0u, r32 = 0u;
        for (i = 31; i >= 0; --i) {
            r32 = (r32 << 1) | ((n32 >> i) & 1u);
            if (r32 >= d32) {
                r32 -= d32;
                q32 |= 1u << i;
            }
        }
        *rem = r32;
        return q32;
    }
    for (i = 63; i >= 0; --i) {
        r = (r << 1) | ((n >> i) & 1u);
        if (r >= d) {
            r -= d;
            q |= (uint64_t)1 << i;
        }
    }
    *rem = r;
    return q;
}

uint32_t __udivsi3(uint32_t n, uint32_t d)
{
    uint64_t r;
    return (uint32_t)udivmod64(n, d, &r);
}

uint32_t __umodsi3(uint32_t n, uint32_t d)
{
    uint64_t r;
    (void)udivmod64(n, d, &r);
    return (uint32_t)r;
}

int32_t __divsi3(int32_t n, int32_t d)
{
    uint32_t un = n < 0 ? 0u - (uint32_t)n : (uint32_t)n;
    uint32_t ud = d < 0 ? 0u - (uint32_t)d : (uint32_t)d;
    uint64_t r;
    uint32_t q = (uint32_t)udivmod64(un, ud, &r);
    return (int32_t)((n < 0) != (d < 0) ? 0u - q : q);
}

uint64_t __udivdi3(uint64_t n, uint64_t d)
{
    uint64_t r;
    return udivmod64(n, d, &r);
}

uint64_t __umoddi3(uint64_t n, uint64_t d)
{
    uint64_t r;
    (void)udivmod64(n, d, &r);
    return r;
}

int64_t __divdi3(int64_t n, int64_t d)
{
    uint64_t un = n < 0 ? 0u - (uint64_t)n : (uint64_t)n;
    uint64_t ud = d < 0 ? 0u - (uint64_t)d : (uint64_t)d;
    uint64_t r;
    uint64_t q = udivmod64(un, ud, &r);
    return (int64_t)((n < 0) != (d < 0) ? 0u - q : q);
}
