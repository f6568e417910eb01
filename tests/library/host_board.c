/* The host as a test board: main() runs board_main(); board_micros() is the monotonic clock. */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <time.h>

int board_main(void);

uint32_t board_micros(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
}

int main(void)
{
    return board_main();
}
