/* IEEE 802.3 CRC-32 (the one zlib.crc32 computes), table-free so it costs no RAM. */
#ifndef EDGEBN_CRC32_H
#define EDGEBN_CRC32_H

#include <stddef.h>
#include <stdint.h>

#define EDGEBN_CRC32_INIT 0xFFFFFFFFu

/* Streaming use: crc = EDGEBN_CRC32_INIT; crc = edgebn_crc32_update(crc, ...)...;
 * result = edgebn_crc32_final(crc). */
uint32_t edgebn_crc32_update(uint32_t crc, const uint8_t *data, size_t len);
uint32_t edgebn_crc32_final(uint32_t crc);
uint32_t edgebn_crc32(const uint8_t *data, size_t len);

#endif /* EDGEBN_CRC32_H */
