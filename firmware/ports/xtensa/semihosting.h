/* QEMU's Xtensa semihosting: the `simcall` instruction with the call number in a2 and its arguments
 * in a3, a4, a5; the result comes back in a2. Used by the sim-machine port (port_qemu_xtensa.c) and
 * the lx106 helper test (tests/device/lx106_helpers/main.c); crt0.S spells SYS_EXIT out itself. */
#ifndef EDGEBN_XTENSA_SEMIHOSTING_H
#define EDGEBN_XTENSA_SEMIHOSTING_H

#include <stdint.h>

#define SYS_EXIT 1
#define SYS_READ 3
#define SYS_WRITE 4
#define SYS_OPEN 5
#define SYS_LSEEK 19
#define SYS_SELECT_ONE 29

static inline int32_t simcall(int32_t nr, int32_t a, int32_t b, int32_t c)
{
    register int32_t a2 __asm__("a2") = nr;
    register int32_t a3 __asm__("a3") = a;
    register int32_t a4 __asm__("a4") = b;
    register int32_t a5 __asm__("a5") = c;
    __asm__ volatile("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
    return a2;
}

#endif
