/* QEMU "sim" Xtensa port (-cpu lx106, esp32, esp32s3): the emulated Xtensa boards edgebn compares
 * and benchmarks on. The sim machine has no UART; everything goes through QEMU's Xtensa
 * semihosting (the `simcall` instruction, a2 = call number, a3.. arguments, result in a2):
 *   - serial: file descriptors 0 and 1, which QEMU maps to its semihosting console; started with
 *     `-semihosting-config enable=on,chardev=ID -chardev pty,id=ID` that console is a pty, reached
 *     through the same pyserial Link as a real board. A read that may wait forever blocks in
 *     QEMU (select_one with no timeout halts the core until a byte arrives); bounded waits poll;
 *   - timeouts: host wall-clock time from /proc/uptime (opened through semihosting), so timeouts
 *     stay real time under -icount, where guest time follows the instruction count;
 *   - counters: the debug option's ICOUNT register, exact under -icount shift=0 (CCOUNT follows a
 *     modelled clock, not instructions). crt0.S arms it; it is folded into a 64-bit count and reset
 *     at each read, so it never reaches the overflow that would raise a debug exception;
 *   - exit: the semihosting exit call.
 * The freestanding build has no C library: the few <string.h> functions used are defined here. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "edgebn_port.h"
#include "protocol.h"
#include "semihosting.h" /* ports/xtensa/: simcall and the SYS_ call numbers */

#define SELECT_ONE_READ 1

#define FD_CONSOLE_IN 0
#define FD_CONSOLE_OUT 1

#ifndef EDGEBN_PORT_NAME
#error "EDGEBN_PORT_NAME must be set by the board's flags file"
#endif

/* ---- instruction counter ---- */

static uint64_t icount_total;

static uint32_t icount_take(void)
{
    uint32_t v, zero = 0u;
    __asm__ volatile("rsr %0, 236\n\twsr %1, 236\n\tisync" : "=&a"(v) : "a"(zero));
    return v;
}

uint64_t edgebn_port_instret(void)
{
    icount_total += icount_take();
    return icount_total;
}

uint64_t edgebn_port_cycles(void)
{
    return edgebn_port_instret(); /* no modelled clock worth reporting: INFO says instructions */
}

/* ---- wall clock ---- */

static int32_t uptime_fd = -1;

/* Host uptime in milliseconds (10 ms steps), or 0 when /proc/uptime cannot be read. */
static uint64_t host_ms(void)
{
    char buf[32];
    int32_t n, i;
    uint64_t ms = 0u;
    uint32_t frac_digits = 0u;
    int seen_dot = 0;
    if (uptime_fd < 0 || simcall(SYS_LSEEK, uptime_fd, 0, 0) != 0) {
        return 0u;
    }
    n = simcall(SYS_READ, uptime_fd, (int32_t)(uintptr_t)buf, (int32_t)sizeof buf);
    for (i = 0; i < n; ++i) {
        char ch = buf[i];
        if (ch == '.') {
            seen_dot = 1;
        } else if (ch >= '0' && ch <= '9' && frac_digits < 3u) {
            ms = ms * 10u + (uint64_t)(ch - '0');
            frac_digits += seen_dot ? 1u : 0u;
        } else if (ch != '.' && !(ch >= '0' && ch <= '9')) {
            break;
        }
    }
    while (frac_digits < 3u) {
        ms *= 10u;
        ++frac_digits;
    }
    return ms;
}

/* ---- serial ---- */

static uint8_t rx_buf[256];
static int32_t rx_len, rx_pos;

static int console_ready(void)
{
    static const uint32_t no_wait[2] = {0u, 0u};
    return simcall(SYS_SELECT_ONE, FD_CONSOLE_IN, SELECT_ONE_READ, (int32_t)(uintptr_t)no_wait) > 0;
}

static void console_fill(void)
{
    int32_t n = simcall(SYS_READ, FD_CONSOLE_IN, (int32_t)(uintptr_t)rx_buf, (int32_t)sizeof rx_buf);
    rx_pos = 0;
    rx_len = n > 0 ? n : 0;
}

void edgebn_port_init(void)
{
    static const char uptime[] = "/proc/uptime";
    uptime_fd = simcall(SYS_OPEN, (int32_t)(uintptr_t)uptime, 0 /* read only */, 0);
    rx_len = rx_pos = 0;
}

int edgebn_port_read_byte(uint32_t timeout_ms)
{
    if (rx_pos < rx_len) {
        return rx_buf[rx_pos++];
    }
    if (timeout_ms == EDGEBN_PORT_FOREVER) {
        /* no timeout: QEMU halts the core until the console has input */
        (void)simcall(SYS_SELECT_ONE, FD_CONSOLE_IN, SELECT_ONE_READ, 0);
    } else if (!console_ready()) {
        uint64_t start = host_ms();
        for (;;) {
            (void)icount_take(); /* polling is no layer's work; keep ICOUNT far from overflow */
            if (console_ready()) {
                break;
            }
            if (host_ms() - start >= timeout_ms) {
                return -1;
            }
        }
    }
    console_fill();
    return rx_pos < rx_len ? rx_buf[rx_pos++] : -1;
}

void edgebn_port_write(const uint8_t *data, size_t len)
{
    while (len > 0u) {
        int32_t n = simcall(SYS_WRITE, FD_CONSOLE_OUT, (int32_t)(uintptr_t)data, (int32_t)len);
        if (n <= 0) {
            return;
        }
        data += n;
        len -= (size_t)n;
    }
}

void edgebn_port_flush(void)
{
}

uint32_t edgebn_port_counters(void)
{
    return EDGEBN_COUNTER_INSTRET;
}

uint32_t edgebn_port_cpu_hz(void)
{
    return 0u; /* no real clock: report instructions */
}

const char *edgebn_port_name(void)
{
    return EDGEBN_PORT_NAME;
}

void edgebn_port_exit(int code)
{
    (void)simcall(SYS_EXIT, code, 0, 0);
    for (;;) {
    }
}

/* ---- the <string.h> subset (freestanding build) ----
 * GCC would turn these very loops into calls to themselves: not for these four functions. */
#define EDGEBN_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))

EDGEBN_NO_LIBCALLS void *memcpy(void *dst, const void *src, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0u) {
        uint32_t *dw = (uint32_t *)dst;
        const uint32_t *sw = (const uint32_t *)src;
        for (; n >= 4u; n -= 4u) {
            *dw++ = *sw++;
        }
        d = (uint8_t *)dw;
        s = (const uint8_t *)sw;
    }
    while (n-- > 0u) {
        *d++ = *s++;
    }
    return dst;
}

EDGEBN_NO_LIBCALLS void *memmove(void *dst, const void *src, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if (d < s) {
        while (n-- > 0u) {
            *d++ = *s++;
        }
    } else {
        while (n-- > 0u) {
            d[n] = s[n];
        }
    }
    return dst;
}

EDGEBN_NO_LIBCALLS void *memset(void *dst, int c, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    while (n-- > 0u) {
        *d++ = (uint8_t)c;
    }
    return dst;
}

EDGEBN_NO_LIBCALLS int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *p = (const uint8_t *)a;
    const uint8_t *q = (const uint8_t *)b;
    for (; n > 0u; --n, ++p, ++q) {
        if (*p != *q) {
            return *p < *q ? -1 : 1;
        }
    }
    return 0;
}
