/* Drives the lx106 libgcc helpers (firmware/ports/xtensa/lx106_libgcc.c) through plain C operators
 * on volatile operands, so GCC emits the helper calls; prints one line of results per vector pair
 * for tests/device/test_qemu_xtensa.py to check against Python's arithmetic. */
#include <stdint.h>

#include "semihosting.h" /* firmware/ports/xtensa/ */
#include "vectors.h"

static char line[512];
static int pos;

static void put_hex64(uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    int i;
    for (i = 15; i >= 0; --i) {
        line[pos++] = digits[(v >> (4 * i)) & 0xFu];
    }
    line[pos++] = ' ';
}

int main(void)
{
    int i;
    for (i = 0; i < (int)(sizeof vec_a / sizeof vec_a[0]); ++i) {
        volatile uint64_t a = vec_a[i], b = vec_b[i];
        volatile uint32_t a32 = (uint32_t)vec_a[i], b32 = (uint32_t)vec_b[i];
        pos = 0;
        put_hex64(a * b);                                   /* __muldi3 */
        put_hex64((uint64_t)(uint32_t)(a32 / b32));         /* __udivsi3 */
        put_hex64((uint64_t)(uint32_t)(a32 % b32));         /* __umodsi3 */
        put_hex64((uint64_t)(uint32_t)((int32_t)a32 / (int32_t)b32)); /* __divsi3 */
        put_hex64(a / b);                                   /* __udivdi3 */
        put_hex64(a % b);                                   /* __umoddi3 */
        put_hex64((uint64_t)((int64_t)a / (int64_t)b));     /* __divdi3 */
        line[pos++] = '\n';
        simcall(SYS_WRITE, 1, (int32_t)(uintptr_t)line, pos);
    }
    return 0;
}
