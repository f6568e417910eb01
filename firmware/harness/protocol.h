/* edgebn wire protocol: frame layout and constants (see firmware/PROTOCOL.md).
 *
 * One frame on the wire, all integers little-endian:
 *
 *   offset  size  field
 *   0       2     magic     0xEB 0xD9 (neither byte is ASCII, so text never starts a frame)
 *   2       1     type      EDGEBN_MSG_*
 *   3       1     flags     EDGEBN_FLAG_*
 *   4       2     seq       request sequence number; a reply carries its request's seq
 *   6       4     length    payload bytes that follow the header
 *   10      len   payload
 *   10+len  4     crc32     IEEE CRC-32 (zlib's) of bytes 0 .. 10+len-1
 *
 * edgebn/device/protocol.py mirrors every number in this file; a test checks they agree.
 */
#ifndef EDGEBN_PROTOCOL_H
#define EDGEBN_PROTOCOL_H

#define EDGEBN_PROTOCOL_VERSION 1u
#define EDGEBN_HARNESS_VERSION  1u

#define EDGEBN_MAGIC0 0xEBu
#define EDGEBN_MAGIC1 0xD9u
#define EDGEBN_HEADER_BYTES 10u
#define EDGEBN_CRC_BYTES    4u

/* host -> device */
#define EDGEBN_MSG_INFO_REQ 0x01u /* empty payload; (re)synchronises the sequence numbers */
#define EDGEBN_MSG_RUN      0x02u /* payload: int8 input[EDGEBN_MODEL_INPUT_SIZE], device layout */
#define EDGEBN_MSG_EXIT     0x03u /* empty payload; ends the session (QEMU/host exit, boards reboot) */

/* device -> host */
#define EDGEBN_MSG_INFO     0x81u /* payload: EDGEBN_INFO_BYTES fixed fields + port name (ASCII) */
#define EDGEBN_MSG_RESULT   0x82u /* payload: u64 cycles, u64 instret, u32 layers_sent, int8 output[] */
#define EDGEBN_MSG_LAYER    0x83u /* debug only: u32 index, u64 cycles, u64 instret, int8 output[] */
#define EDGEBN_MSG_EXIT_ACK 0x84u /* empty payload; sent just before the device leaves */
#define EDGEBN_MSG_ERROR    0xEEu /* payload: u8 code, u8 type, u16 0, u32 arg0, u32 arg1 */

/* flags */
#define EDGEBN_FLAG_DEBUG 0x01u /* RUN: also send one LAYER frame per layer before the RESULT */

/* fixed payload sizes */
#define EDGEBN_INFO_BYTES   36u
#define EDGEBN_RESULT_BYTES 20u /* before the output tensor */
#define EDGEBN_LAYER_BYTES  20u /* before the layer's tensor */
#define EDGEBN_ERROR_BYTES  12u

/* INFO counters bit field: which of the RESULT/LAYER counters mean something on this port */
#define EDGEBN_COUNTER_CYCLES  0x01u
#define EDGEBN_COUNTER_INSTRET 0x02u

/* INFO selftest status */
#define EDGEBN_SELFTEST_NONE 0u /* no vectors compiled in */
#define EDGEBN_SELFTEST_PASS 1u
#define EDGEBN_SELFTEST_FAIL 2u

/* ERROR codes: arg0/arg1 meaning in brackets */
#define EDGEBN_ERR_BAD_CRC          1u /* [crc received, crc computed] */
#define EDGEBN_ERR_BAD_LENGTH       2u /* [length, largest accepted] */
#define EDGEBN_ERR_UNKNOWN_TYPE     3u /* [type, 0] */
#define EDGEBN_ERR_WRONG_INPUT_SIZE 4u /* [length, EDGEBN_MODEL_INPUT_SIZE] */
#define EDGEBN_ERR_OUT_OF_ORDER     5u /* [seq received, seq expected] */
#define EDGEBN_ERR_NOT_SYNCED       6u /* [0, 0] RUN before any INFO_REQ since boot */
#define EDGEBN_ERR_TIMEOUT          7u /* [bytes received, bytes expected] frame cut short */
#define EDGEBN_ERR_MODEL_FAILED     8u /* [return code of edgebn_model_run, 0] */

/* the text lines the harness prints at boot, before the binary protocol */
#define EDGEBN_BANNER_PREFIX   "EDGEBN BOOT"
#define EDGEBN_SELFTEST_PREFIX "EDGEBN SELFTEST"

#endif /* EDGEBN_PROTOCOL_H */
