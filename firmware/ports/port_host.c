/* Host port: the harness on a PC, speaking the protocol over stdin/stdout (a pipe, or the master
 * side of a pty so that pyserial can open the slave like a real board's serial port). Used by the
 * device tests; "cycles" are CLOCK_MONOTONIC nanoseconds, reported as a 1 GHz clock. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "edgebn_port.h"
#include "protocol.h"

static unsigned char rx_buf[256];
static size_t rx_len = 0, rx_pos = 0;

void edgebn_port_init(void)
{
}

int edgebn_port_read_byte(uint32_t timeout_ms)
{
    if (rx_pos == rx_len) {
        struct pollfd pfd;
        ssize_t n;
        int ready;
        pfd.fd = STDIN_FILENO;
        pfd.events = POLLIN;
        pfd.revents = 0;
        ready = poll(&pfd, 1, timeout_ms == EDGEBN_PORT_FOREVER ? -1 : (int)timeout_ms);
        if (ready < 0 && errno == EINTR) {
            return -1;
        }
        if (ready == 0) {
            return -1;
        }
        n = read(STDIN_FILENO, rx_buf, sizeof rx_buf);
        if (n <= 0) {
            /* The other end went away (EOF on a pipe, EIO on a pty): nothing left to serve. */
            exit(0);
        }
        rx_len = (size_t)n;
        rx_pos = 0;
    }
    return rx_buf[rx_pos++];
}

void edgebn_port_write(const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, data, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            exit(0);
        }
        data += n;
        len -= (size_t)n;
    }
}

void edgebn_port_flush(void)
{
}

uint64_t edgebn_port_cycles(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t edgebn_port_instret(void)
{
    return 0u;
}

uint32_t edgebn_port_counters(void)
{
    return EDGEBN_COUNTER_CYCLES;
}

uint32_t edgebn_port_cpu_hz(void)
{
    return 1000000000u;
}

const char *edgebn_port_name(void)
{
    return "host";
}

void edgebn_port_exit(int code)
{
    exit(code);
}
