#include "crc32.h"

/* Bitwise, reflected polynomial 0xEDB88320. A 1 KiB table would be faster, but frames are small
 * next to an inference and the table would sit in the RAM the arena needs. */
uint32_t edgebn_crc32_update(uint32_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    int bit;
    for (i = 0; i < len; ++i) {
        crc ^= data[i];
        for (bit = 0; bit < 8; ++bit) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return crc;
}

uint32_t edgebn_crc32_final(uint32_t crc)
{
    return crc ^ 0xFFFFFFFFu;
}

uint32_t edgebn_crc32(const uint8_t *data, size_t len)
{
    return edgebn_crc32_final(edgebn_crc32_update(EDGEBN_CRC32_INIT, data, len));
}
