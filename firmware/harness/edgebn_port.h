/* The port API: the few things the harness needs from a board. One file per platform in
 * firmware/ports/ implements it (port_host.c, port_qemu_rv32.c, port_arduino.cpp). */
#ifndef EDGEBN_PORT_H
#define EDGEBN_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGEBN_PORT_FOREVER 0xFFFFFFFFu

void edgebn_port_init(void);
/* Next received byte (0..255), or -1 when none arrived within timeout_ms milliseconds of real
 * time (EDGEBN_PORT_FOREVER: wait as long as it takes). */
int edgebn_port_read_byte(uint32_t timeout_ms);
/* Send len bytes; returns when they are queued (blocking while the transmitter is full). */
void edgebn_port_write(const uint8_t *data, size_t len);
/* Push out whatever the port buffers (called at the end of every reply). */
void edgebn_port_flush(void);
/* Free-running counters. Ports with 32-bit hardware counters extend them to 64 bits by noticing
 * wrap-arounds, which is exact while calls are less than 2^32 counts apart. */
uint64_t edgebn_port_cycles(void);
uint64_t edgebn_port_instret(void);
uint32_t edgebn_port_counters(void); /* EDGEBN_COUNTER_* bits: which counters are real */
uint32_t edgebn_port_cpu_hz(void);   /* the clock the cycle counter runs at, 0 if unknown */
const char *edgebn_port_name(void);  /* short ASCII name reported in INFO, e.g. "qemu-rv32" */
/* Leave after an EXIT request: host and QEMU ports end the process / VM, boards reboot. */
void edgebn_port_exit(int code);

#ifdef __cplusplus
}
#endif

#endif /* EDGEBN_PORT_H */
