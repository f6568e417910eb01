/* QEMU "virt" RV32 port: the emulated board edgebn compares and benchmarks on.
 *   - serial: the 16550 UART at 0x10000000, polled through its line status register;
 *   - timeouts: the goldfish RTC at 0x101000 (host wall-clock nanoseconds, so timeouts stay real
 *     time even under -icount, where guest time follows the instruction count);
 *   - counters: the rdcycle/rdinstret CSRs; run under -icount shift=0 both count retired
 *     instructions exactly, so INFO reports only the instruction counter as meaningful;
 *   - exit: the SiFive test finisher at 0x100000 (0x5555 = pass, code<<16 | 0x3333 = fail). */
#include <stdint.h>

#include "edgebn_port.h"
#include "protocol.h"

#define UART_BASE 0x10000000u
#define UART_RBR 0u /* receive buffer (read) */
#define UART_THR 0u /* transmit holding (write) */
#define UART_IER 1u
#define UART_FCR 2u
#define UART_LCR 3u
#define UART_LSR 5u
#define UART_LSR_DR 0x01u   /* a received byte is waiting */
#define UART_LSR_THRE 0x20u /* the transmitter takes another byte */

#define RTC_BASE 0x101000u
#define RTC_TIME_LOW 0x00u  /* reading it latches TIME_HIGH */
#define RTC_TIME_HIGH 0x04u

#define FINISHER_ADDR 0x100000u

static volatile uint8_t *const uart = (volatile uint8_t *)UART_BASE;

static uint64_t rtc_ns(void)
{
    volatile uint32_t *rtc = (volatile uint32_t *)RTC_BASE;
    uint32_t lo = rtc[RTC_TIME_LOW / 4u];
    uint32_t hi = rtc[RTC_TIME_HIGH / 4u];
    return ((uint64_t)hi << 32) | lo;
}

/* CSR reads spelled with .insn (csrrs rd, csr, x0) so they assemble whatever -march says about
 * Zicsr/Zicntr. The CSR number is the I-type immediate, written signed: -1024 = 0xC00 cycle,
 * -1022 = 0xC02 instret, -896 = 0xC80 cycleh, -894 = 0xC82 instreth. */
#define READ_CSR(csr, out) __asm__ volatile(".insn i 0x73, 2, %0, x0, " #csr : "=r"(out))

uint64_t edgebn_port_cycles(void)
{
    uint32_t hi, lo, hi2;
    do {
        READ_CSR(-896, hi);
        READ_CSR(-1024, lo);
        READ_CSR(-896, hi2);
    } while (hi != hi2);
    return ((uint64_t)hi << 32) | lo;
}

uint64_t edgebn_port_instret(void)
{
    uint32_t hi, lo, hi2;
    do {
        READ_CSR(-894, hi);
        READ_CSR(-1022, lo);
        READ_CSR(-894, hi2);
    } while (hi != hi2);
    return ((uint64_t)hi << 32) | lo;
}

void edgebn_port_init(void)
{
    uart[UART_IER] = 0x00u; /* polled, no interrupts */
    uart[UART_LCR] = 0x03u; /* 8N1 */
    /* FIFOs on and cleared; receive trigger level 14 bytes. Polled, so the level raises no
     * interrupt, but QEMU's 16550 accepts the host's bytes only up to that level at a time:
     * at the reset level (1 byte) input crawls at ~16 KB/s, at 14 it reaches ~90 KB/s. */
    uart[UART_FCR] = 0xC7u;
}

int edgebn_port_read_byte(uint32_t timeout_ms)
{
    uint64_t start = rtc_ns();
    uint64_t limit = (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        if (uart[UART_LSR] & UART_LSR_DR) {
            return uart[UART_RBR];
        }
        if (timeout_ms != EDGEBN_PORT_FOREVER && rtc_ns() - start >= limit) {
            return -1;
        }
    }
}

void edgebn_port_write(const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; ++i) {
        while ((uart[UART_LSR] & UART_LSR_THRE) == 0u) {
        }
        uart[UART_THR] = data[i];
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
    return "qemu-rv32";
}

void edgebn_port_exit(int code)
{
    volatile uint32_t *finisher = (volatile uint32_t *)FINISHER_ADDR;
    *finisher = code == 0 ? 0x5555u : (((uint32_t)code << 16) | 0x3333u);
    for (;;) {
    }
}
