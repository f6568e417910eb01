/* Stand-in for the bit of the Arduino-ESP32 API the edgebn example sketch uses (Serial.begin,
 * Serial.printf, micros, delay), so the sketch builds unchanged on the host and on the emulated
 * RV32 board in tests/library/test_library_examples.py. Not a real Arduino core. */
#ifndef EDGEBN_STANDIN_ARDUINO_H
#define EDGEBN_STANDIN_ARDUINO_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

extern "C" uint32_t board_micros(void);

static inline uint32_t micros(void) { return board_micros(); }
static inline void delay(uint32_t) {}

class StandInSerial {
public:
    void begin(unsigned long) {}
    int printf(const char *format, ...) __attribute__((format(printf, 2, 3)))
    {
        va_list args;
        va_start(args, format);
        const int n = vprintf(format, args);
        va_end(args);
        return n;
    }
};

static StandInSerial Serial;

#endif
