/* Port for ESP32 / ESP32-S3 / ESP32-C3 boards on the Arduino framework: the harness's serial line is
 * `Serial` (USB-UART bridge or the chip's USB serial), timing is the CPU cycle counter
 * (ESP.getCycleCount(): CCOUNT on Xtensa, the performance counter on RISC-V), extended to 64 bits. */
#include <Arduino.h>

#include "edgebn_harness.h"
#include "edgebn_port.h"
#include "protocol.h"

#ifndef EDGEBN_SERIAL_BAUD
#define EDGEBN_SERIAL_BAUD 115200
#endif

static uint32_t last_cycles;
static uint64_t high_cycles;

extern "C" void edgebn_port_init(void)
{
    Serial.setRxBufferSize(4096);
    Serial.begin(EDGEBN_SERIAL_BAUD);
    uint32_t start = millis();
    while (!Serial && millis() - start < 2000) {
        delay(10); /* native USB serial: give the host a moment to open the port */
    }
}

extern "C" int edgebn_port_read_byte(uint32_t timeout_ms)
{
    uint32_t start = millis();
    for (;;) {
        if (Serial.available() > 0) {
            return Serial.read() & 0xFF;
        }
        uint32_t waited = millis() - start;
        if (timeout_ms != EDGEBN_PORT_FOREVER && waited >= timeout_ms) {
            return -1;
        }
        /* Spin briefly for latency, then sleep a tick: yield() alone never lets the idle task run,
         * and on a single-core chip (ESP32-C3) its watchdog would fire while the host is quiet. */
        if (waited < 2u) {
            yield();
        } else {
            delay(1);
        }
    }
}

extern "C" void edgebn_port_write(const uint8_t *data, size_t len)
{
    Serial.write(data, len);
}

extern "C" void edgebn_port_flush(void)
{
    Serial.flush();
}

extern "C" uint64_t edgebn_port_cycles(void)
{
    uint32_t now = ESP.getCycleCount();
    if (now < last_cycles) {
        high_cycles += (uint64_t)1 << 32; /* the 32-bit counter wrapped since the last call */
    }
    last_cycles = now;
    return high_cycles | now;
}

extern "C" uint64_t edgebn_port_instret(void)
{
    return 0; /* no retired-instruction counter exposed by the framework */
}

extern "C" uint32_t edgebn_port_counters(void)
{
    return EDGEBN_COUNTER_CYCLES;
}

extern "C" uint32_t edgebn_port_cpu_hz(void)
{
    return (uint32_t)getCpuFrequencyMhz() * 1000000u;
}

extern "C" const char *edgebn_port_name(void)
{
#if defined(CONFIG_IDF_TARGET_ESP32S3)
    return "esp32s3";
#elif defined(CONFIG_IDF_TARGET_ESP32C3)
    return "esp32c3";
#else
    return "esp32";
#endif
}

extern "C" void edgebn_port_exit(int code)
{
    (void)code;
    Serial.flush();
    ESP.restart();
}
