/* Stand-in for ESP-IDF's esp_timer.h (esp_timer_get_time in microseconds) for the library tests. */
#ifndef EDGEBN_STANDIN_ESP_TIMER_H
#define EDGEBN_STANDIN_ESP_TIMER_H
#include <stdint.h>
uint32_t board_micros(void);
static inline int64_t esp_timer_get_time(void) { return (int64_t)board_micros(); }
#endif
