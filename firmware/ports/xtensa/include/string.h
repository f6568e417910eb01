/* The part of <string.h> the generated model and the harness use, for the freestanding Xtensa
 * builds (no C library); firmware/ports/port_qemu_xtensa.c implements it. */
#ifndef EDGEBN_XTENSA_STRING_H
#define EDGEBN_XTENSA_STRING_H

#include <stddef.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

#endif
