/* Just enough of the Arduino-ESP32 API, on a PC, to build firmware/ports/port_arduino.cpp and
 * main_arduino.cpp unchanged and drive them over stdin/stdout (tests/device/test_port_arduino.py).
 * The cycle counter starts just below 2^32 so the port's wrap-around extension is exercised. */
#ifndef EDGEBN_ARDUINO_MOCK_H
#define EDGEBN_ARDUINO_MOCK_H

#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t mock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint32_t millis(void) { return (uint32_t)(mock_ns() / 1000000u); }
static inline void delay(uint32_t ms) { usleep(ms * 1000u); }
static inline void yield(void) {}
static inline uint32_t getCpuFrequencyMhz(void) { return 240; }

class HardwareSerial {
public:
    void setRxBufferSize(size_t) {}
    void begin(unsigned long) {}
    explicit operator bool() const { return true; }
    int available()
    {
        if (pos_ < len_) return (int)(len_ - pos_);
        struct pollfd p = {0, POLLIN, 0};
        if (poll(&p, 1, 0) <= 0) return 0;
        ssize_t n = ::read(0, buf_, sizeof buf_);
        if (n <= 0) exit(0); /* the host went away */
        len_ = (size_t)n;
        pos_ = 0;
        return (int)n;
    }
    int read() { return available() > 0 ? buf_[pos_++] : -1; }
    size_t write(const uint8_t *data, size_t n)
    {
        size_t done = 0;
        while (done < n) {
            ssize_t w = ::write(1, data + done, n - done);
            if (w <= 0) exit(0);
            done += (size_t)w;
        }
        return n;
    }
    void flush() {}

private:
    uint8_t buf_[256];
    size_t len_ = 0, pos_ = 0;
};

class EspClass {
public:
    uint32_t getCycleCount() { return (uint32_t)(0xFFFFF000u + mock_ns() * 240u / 1000u); }
    [[noreturn]] void restart() { exit(0); }
};

extern HardwareSerial Serial;
extern EspClass ESP;

#endif
