/* edgebn board harness: see edgebn_harness.h and firmware/PROTOCOL.md. */
#include "edgebn_harness.h"

#include <stddef.h>
#include <stdint.h>

#include "crc32.h"
#include "edgebn_model.h"
#include "edgebn_port.h"
#include "edgebn_selftest.h"
#include "protocol.h"

/* Largest gap allowed between two bytes of one frame before it counts as cut short. */
#ifndef EDGEBN_RX_TIMEOUT_MS
#define EDGEBN_RX_TIMEOUT_MS 500u
#endif
/* After a rejected header the rest of that frame is drained until the line is quiet this long,
 * so its payload is not mistaken for new frames. */
#ifndef EDGEBN_DRAIN_QUIET_MS
#define EDGEBN_DRAIN_QUIET_MS 50u
#endif
/* After acknowledging EXIT the harness waits this long (of quiet) before leaving: a pty loses
 * output nobody has read yet when its owner (QEMU, the host port) goes away. */
#ifndef EDGEBN_EXIT_LINGER_MS
#define EDGEBN_EXIT_LINGER_MS 300u
#endif

#if EDGEBN_SELFTEST_MODEL_HASH != EDGEBN_MODEL_HASH
#error "edgebn_selftest.h was rendered for another model (EDGEBN_SELFTEST_MODEL_HASH != EDGEBN_MODEL_HASH)"
#endif
#if EDGEBN_SELFTEST_COUNT > 0 && (EDGEBN_SELFTEST_INPUT_SIZE != EDGEBN_MODEL_INPUT_SIZE || \
                                  EDGEBN_SELFTEST_OUTPUT_SIZE != EDGEBN_MODEL_OUTPUTS_BYTES)
#error "edgebn_selftest.h tensor sizes differ from edgebn_model.h"
#endif

#define SEQ_UNKNOWN 0xFFFFu

static int8_t harness_input[EDGEBN_MODEL_INPUT_SIZE];
/* every model output, packed one after another in the model's order (EDGEBN_MODEL_OUTPUT_ARGS gives
 * edgebn_model_run one pointer per output into it): what RESULT carries */
static int8_t harness_output[EDGEBN_MODEL_OUTPUTS_BYTES];

static int selftest_status = EDGEBN_SELFTEST_NONE;
static uint32_t selftest_failed_vector = 0xFFu;
static int synced = 0;          /* an INFO_REQ arrived since boot */
static uint16_t expected_seq = 0;

/* ---- little-endian packing and text output (no stdio on a bare board) ---- */

static void put_u16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, v & 0xFFFFu);
    put_u16(p + 2, v >> 16);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v & 0xFFFFFFFFu));
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void write_text(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0') {
        ++n;
    }
    edgebn_port_write((const uint8_t *)s, n);
}

static void write_dec(int32_t v)
{
    char buf[12];
    int i = (int)sizeof buf;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    do {
        buf[--i] = (char)('0' + (int)(u % 10u));
        u /= 10u;
    } while (u != 0u);
    if (v < 0) {
        buf[--i] = '-';
    }
    edgebn_port_write((const uint8_t *)buf + i, sizeof buf - (size_t)i);
}

/* " key=value" with a decimal value: the fields of the boot and self-test lines. */
static void write_field(const char *key, int32_t v)
{
    write_text(key);
    write_dec(v);
}

static void write_hex32(uint32_t v)
{
    static const char digits[] = "0123456789abcdef";
    char buf[10];
    int i;
    buf[0] = '0';
    buf[1] = 'x';
    for (i = 0; i < 8; ++i) {
        buf[2 + i] = digits[(v >> (28 - 4 * i)) & 0xFu];
    }
    edgebn_port_write((const uint8_t *)buf, sizeof buf);
}

/* ---- frames out ---- */

/* A frame is sent as header, body pieces, CRC, so large tensors never need a copy. */
static uint32_t frame_begin(uint32_t type, uint32_t flags, uint32_t seq, uint32_t length)
{
    uint8_t h[EDGEBN_HEADER_BYTES];
    h[0] = (uint8_t)EDGEBN_MAGIC0;
    h[1] = (uint8_t)EDGEBN_MAGIC1;
    h[2] = (uint8_t)type;
    h[3] = (uint8_t)flags;
    put_u16(h + 4, seq);
    put_u32(h + 6, length);
    edgebn_port_write(h, sizeof h);
    return edgebn_crc32_update(EDGEBN_CRC32_INIT, h, sizeof h);
}

static uint32_t frame_body(uint32_t crc, const void *data, size_t len)
{
    edgebn_port_write((const uint8_t *)data, len);
    return edgebn_crc32_update(crc, (const uint8_t *)data, len);
}

static void frame_end(uint32_t crc)
{
    uint8_t c[EDGEBN_CRC_BYTES];
    put_u32(c, edgebn_crc32_final(crc));
    edgebn_port_write(c, sizeof c);
    edgebn_port_flush();
}

static void send_error(uint32_t code, uint32_t type, uint32_t seq, uint32_t arg0, uint32_t arg1)
{
    uint8_t p[EDGEBN_ERROR_BYTES];
    uint32_t crc;
    p[0] = (uint8_t)code;
    p[1] = (uint8_t)type;
    put_u16(p + 2, 0u);
    put_u32(p + 4, arg0);
    put_u32(p + 8, arg1);
    crc = frame_begin(EDGEBN_MSG_ERROR, 0u, seq, sizeof p);
    crc = frame_body(crc, p, sizeof p);
    frame_end(crc);
}

static void send_info(uint32_t seq)
{
    uint8_t p[EDGEBN_INFO_BYTES];
    const char *name = edgebn_port_name();
    size_t name_len = 0;
    uint32_t crc;
    while (name[name_len] != '\0' && name_len < 32u) {
        ++name_len;
    }
    put_u32(p + 0, (uint32_t)EDGEBN_MODEL_HASH);
    put_u32(p + 4, (uint32_t)EDGEBN_MODEL_INPUT_SIZE);
    put_u32(p + 8, (uint32_t)EDGEBN_MODEL_OUTPUTS_BYTES);
    put_u32(p + 12, (uint32_t)EDGEBN_MODEL_NUM_LAYERS);
    put_u32(p + 16, (uint32_t)EDGEBN_MODEL_ARENA_BYTES);
    put_u32(p + 20, edgebn_port_cpu_hz());
    put_u32(p + 24, (uint32_t)EDGEBN_MODEL_INPUT_SIZE); /* largest payload accepted */
    put_u16(p + 28, EDGEBN_HARNESS_VERSION);
    put_u16(p + 30, EDGEBN_PROTOCOL_VERSION);
    p[32] = (uint8_t)edgebn_port_counters();
    p[33] = (uint8_t)selftest_status;
    p[34] = (uint8_t)EDGEBN_SELFTEST_COUNT;
    p[35] = (uint8_t)selftest_failed_vector;
    crc = frame_begin(EDGEBN_MSG_INFO, 0u, seq, (uint32_t)(sizeof p + name_len));
    crc = frame_body(crc, p, sizeof p);
    crc = frame_body(crc, name, name_len);
    frame_end(crc);
}

/* ---- running the model ---- */

typedef struct {
    uint32_t seq;
    uint32_t layers_sent;
    uint64_t mark_cycles, mark_instret;   /* counters when the current layer started */
    uint64_t sum_cycles, sum_instret;     /* layer time so far, transmission excluded */
} debug_ctx_t;

/* Called by edgebn_model_run_hooked after each layer: the counters are read on entry and again
 * after the LAYER frame is sent, so the time spent on the wire is charged to no layer. */
static void debug_hook(int layer_index, const int8_t *output, int32_t size, void *ctx_)
{
    debug_ctx_t *ctx = (debug_ctx_t *)ctx_;
    uint64_t cycles = edgebn_port_cycles();
    uint64_t instret = edgebn_port_instret();
    uint64_t d_cycles = cycles - ctx->mark_cycles;
    uint64_t d_instret = instret - ctx->mark_instret;
    uint32_t n = size > 0 ? (uint32_t)size : 0u;
    uint8_t p[EDGEBN_LAYER_BYTES];
    uint32_t crc;

    ctx->sum_cycles += d_cycles;
    ctx->sum_instret += d_instret;
    put_u32(p, (uint32_t)layer_index);
    put_u64(p + 4, d_cycles);
    put_u64(p + 12, d_instret);
    crc = frame_begin(EDGEBN_MSG_LAYER, EDGEBN_FLAG_DEBUG, ctx->seq, (uint32_t)sizeof p + n);
    crc = frame_body(crc, p, sizeof p);
    crc = frame_body(crc, output, n);
    frame_end(crc);
    ctx->layers_sent += 1u;

    ctx->mark_instret = edgebn_port_instret();
    ctx->mark_cycles = edgebn_port_cycles();
}

static void handle_run(uint32_t seq, uint32_t flags)
{
    uint8_t p[EDGEBN_RESULT_BYTES];
    uint64_t cycles, instret;
    uint32_t layers_sent = 0u;
    uint32_t crc;
    int rc;

    if (flags & EDGEBN_FLAG_DEBUG) {
        debug_ctx_t ctx;
        ctx.seq = seq;
        ctx.layers_sent = 0u;
        ctx.sum_cycles = 0u;
        ctx.sum_instret = 0u;
        ctx.mark_instret = edgebn_port_instret();
        ctx.mark_cycles = edgebn_port_cycles();
        rc = edgebn_model_run_hooked(harness_input, EDGEBN_MODEL_OUTPUT_ARGS(harness_output), debug_hook, &ctx);
        cycles = ctx.sum_cycles + (edgebn_port_cycles() - ctx.mark_cycles);
        instret = ctx.sum_instret + (edgebn_port_instret() - ctx.mark_instret);
        layers_sent = ctx.layers_sent;
    } else {
        uint64_t c0, i0;
        i0 = edgebn_port_instret();
        c0 = edgebn_port_cycles();
        rc = edgebn_model_run(harness_input, EDGEBN_MODEL_OUTPUT_ARGS(harness_output));
        cycles = edgebn_port_cycles() - c0;
        instret = edgebn_port_instret() - i0;
    }
    if (rc != 0) {
        send_error(EDGEBN_ERR_MODEL_FAILED, EDGEBN_MSG_RUN, seq, (uint32_t)rc, 0u);
        return;
    }
    put_u64(p, cycles);
    put_u64(p + 8, instret);
    put_u32(p + 16, layers_sent);
    crc = frame_begin(EDGEBN_MSG_RESULT, flags & EDGEBN_FLAG_DEBUG, seq,
                      (uint32_t)(sizeof p + EDGEBN_MODEL_OUTPUTS_BYTES));
    crc = frame_body(crc, p, sizeof p);
    crc = frame_body(crc, harness_output, EDGEBN_MODEL_OUTPUTS_BYTES);
    frame_end(crc);
}

/* ---- frames in ---- */

/* Discard the rest of a rejected frame: up to `count` bytes, stopping early once the line has
 * been quiet for EDGEBN_DRAIN_QUIET_MS (its length field may be the corrupted part). */
static void drain(uint32_t count)
{
    while (count > 0u && edgebn_port_read_byte(EDGEBN_DRAIN_QUIET_MS) >= 0) {
        --count;
    }
}

/* Read n bytes into dst (or nowhere when dst is NULL), folding them into *crc. Returns the
 * number read, short only when the sender paused longer than EDGEBN_RX_TIMEOUT_MS. */
static uint32_t read_bytes(uint8_t *dst, uint32_t n, uint32_t *crc)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        int c = edgebn_port_read_byte(EDGEBN_RX_TIMEOUT_MS);
        uint8_t b;
        if (c < 0) {
            return i;
        }
        b = (uint8_t)c;
        if (dst != NULL) {
            dst[i] = b;
        }
        if (crc != NULL) {
            *crc = edgebn_crc32_update(*crc, &b, 1u);
        }
    }
    return n;
}

/* Scan for the two magic bytes; anything else on the line (text, noise, a wrong baud rate) is
 * skipped. Returns 0 if no frame start arrived within idle_timeout_ms, 1 when one did, -1 when
 * bytes were skipped but no frame started. */
static int hunt_magic(uint32_t idle_timeout_ms)
{
    int c = edgebn_port_read_byte(idle_timeout_ms);
    if (c < 0) {
        return 0;
    }
    while (c == (int)EDGEBN_MAGIC0) {
        c = edgebn_port_read_byte(EDGEBN_RX_TIMEOUT_MS);
        if (c == (int)EDGEBN_MAGIC1) {
            return 1;
        }
    }
    return -1;
}

int edgebn_harness_serve_one(uint32_t idle_timeout_ms)
{
    static const uint8_t magic[2] = {(uint8_t)EDGEBN_MAGIC0, (uint8_t)EDGEBN_MAGIC1};
    uint8_t h[EDGEBN_HEADER_BYTES - 2u];
    uint8_t c[EDGEBN_CRC_BYTES];
    uint32_t crc, got, type, flags, seq, length, received, computed;
    int start = hunt_magic(idle_timeout_ms);

    if (start <= 0) {
        return start == 0 ? 0 : 1;
    }
    crc = edgebn_crc32_update(EDGEBN_CRC32_INIT, magic, sizeof magic);
    got = read_bytes(h, sizeof h, &crc);
    if (got < sizeof h) {
        send_error(EDGEBN_ERR_TIMEOUT, 0u, SEQ_UNKNOWN, 2u + got, EDGEBN_HEADER_BYTES);
        return 1;
    }
    type = h[0];
    flags = h[1];
    seq = (uint32_t)h[2] | ((uint32_t)h[3] << 8);
    length = get_u32(h + 4);

    /* A length no request can have is refused before reading on: it may be the corrupted part. */
    if (length > (uint32_t)EDGEBN_MODEL_INPUT_SIZE) {
        if (type == EDGEBN_MSG_RUN) {
            send_error(EDGEBN_ERR_WRONG_INPUT_SIZE, type, seq, length, EDGEBN_MODEL_INPUT_SIZE);
        } else {
            send_error(EDGEBN_ERR_BAD_LENGTH, type, seq, length, EDGEBN_MODEL_INPUT_SIZE);
        }
        drain(length + EDGEBN_CRC_BYTES);
        return 1;
    }
    got = read_bytes(type == EDGEBN_MSG_RUN && length == (uint32_t)EDGEBN_MODEL_INPUT_SIZE
                         ? (uint8_t *)harness_input : NULL,
                     length, &crc);
    if (got == length) {
        got += read_bytes(c, sizeof c, NULL);
    }
    if (got < length + EDGEBN_CRC_BYTES) {
        send_error(EDGEBN_ERR_TIMEOUT, type, seq, EDGEBN_HEADER_BYTES + got,
                   EDGEBN_HEADER_BYTES + length + EDGEBN_CRC_BYTES);
        return 1;
    }
    received = get_u32(c);
    computed = edgebn_crc32_final(crc);
    if (received != computed) {
        send_error(EDGEBN_ERR_BAD_CRC, type, seq, received, computed);
        return 1;
    }

    switch (type) {
    case EDGEBN_MSG_INFO_REQ:
        if (length != 0u) {
            send_error(EDGEBN_ERR_BAD_LENGTH, type, seq, length, 0u);
            break;
        }
        synced = 1;
        expected_seq = (uint16_t)(seq + 1u);
        send_info(seq);
        break;
    case EDGEBN_MSG_RUN:
        if (!synced) {
            send_error(EDGEBN_ERR_NOT_SYNCED, type, seq, 0u, 0u);
        } else if (seq != expected_seq) {
            send_error(EDGEBN_ERR_OUT_OF_ORDER, type, seq, seq, expected_seq);
        } else if (length != (uint32_t)EDGEBN_MODEL_INPUT_SIZE) {
            send_error(EDGEBN_ERR_WRONG_INPUT_SIZE, type, seq, length, EDGEBN_MODEL_INPUT_SIZE);
        } else {
            expected_seq = (uint16_t)(seq + 1u);
            handle_run(seq, flags);
        }
        break;
    case EDGEBN_MSG_EXIT:
        if (length != 0u) {
            send_error(EDGEBN_ERR_BAD_LENGTH, type, seq, length, 0u);
            break;
        }
        crc = frame_begin(EDGEBN_MSG_EXIT_ACK, 0u, seq, 0u);
        frame_end(crc);
        while (edgebn_port_read_byte(EDGEBN_EXIT_LINGER_MS) >= 0) {
        }
        edgebn_port_exit(0);
        break;
    default:
        send_error(EDGEBN_ERR_UNKNOWN_TYPE, type, seq, type, 0u);
        break;
    }
    return 1;
}

/* ---- boot ---- */

#if EDGEBN_SELFTEST_COUNT > 0
/* Record vector v as failed and begin its FAIL line; the caller adds the cause and the line end. */
static void selftest_fail(uint32_t v)
{
    selftest_status = EDGEBN_SELFTEST_FAIL;
    selftest_failed_vector = v;
    write_field(EDGEBN_SELFTEST_PREFIX " FAIL vector=", (int32_t)v);
}
#endif

static void run_selftest(void)
{
#if EDGEBN_SELFTEST_COUNT > 0
    uint32_t v;
    int32_t i;
    for (v = 0; v < (uint32_t)EDGEBN_SELFTEST_COUNT; ++v) {
        int rc;
        for (i = 0; i < (int32_t)EDGEBN_MODEL_INPUT_SIZE; ++i) {
            harness_input[i] = edgebn_selftest_inputs[v][i];
        }
        rc = edgebn_model_run(harness_input, EDGEBN_MODEL_OUTPUT_ARGS(harness_output));
        if (rc != 0) {
            selftest_fail(v);
            write_field(" model_run=", rc);
            write_text("\r\n");
            return;
        }
        for (i = 0; i < (int32_t)EDGEBN_MODEL_OUTPUTS_BYTES; ++i) {
            if (harness_output[i] != edgebn_selftest_outputs[v][i]) {
                selftest_fail(v);
                write_field(" index=", i);
                write_field(" got=", harness_output[i]);
                write_field(" want=", edgebn_selftest_outputs[v][i]);
                write_text("\r\n");
                return;
            }
        }
    }
    selftest_status = EDGEBN_SELFTEST_PASS;
    write_field(EDGEBN_SELFTEST_PREFIX " PASS vectors=", (int32_t)EDGEBN_SELFTEST_COUNT);
    write_text("\r\n");
#else
    selftest_status = EDGEBN_SELFTEST_NONE;
    write_text(EDGEBN_SELFTEST_PREFIX " NONE\r\n");
#endif
}

int edgebn_harness_boot(void)
{
    synced = 0;
    write_field("\r\n" EDGEBN_BANNER_PREFIX " harness=", (int32_t)EDGEBN_HARNESS_VERSION);
    write_field(" protocol=", (int32_t)EDGEBN_PROTOCOL_VERSION);
    write_text(" port=");
    write_text(edgebn_port_name());
    write_text(" model=");
    write_hex32((uint32_t)EDGEBN_MODEL_HASH);
    write_field(" in=", (int32_t)EDGEBN_MODEL_INPUT_SIZE);
    write_field(" out=", (int32_t)EDGEBN_MODEL_OUTPUTS_BYTES);
    write_field(" layers=", (int32_t)EDGEBN_MODEL_NUM_LAYERS);
    write_field(" arena=", (int32_t)EDGEBN_MODEL_ARENA_BYTES);
    write_text("\r\n");
    run_selftest();
    edgebn_port_flush();
    return selftest_status;
}

void edgebn_harness_main(void)
{
    int status;
    edgebn_port_init();
    status = edgebn_harness_boot();
#ifdef EDGEBN_SELFTEST_AND_EXIT
    /* Build option for "does it boot and pass" runs (e.g. a PlatformIO upload to QEMU): leave
     * with the verdict as exit status instead of serving frames. */
    edgebn_port_exit(status == EDGEBN_SELFTEST_FAIL ? 1 : 0);
#endif
    (void)status;
    for (;;) {
        (void)edgebn_harness_serve_one(EDGEBN_PORT_FOREVER);
    }
}
