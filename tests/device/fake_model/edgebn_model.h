/* A hand-written stand-in for a compiled model, following the lib/edgebn_model/edgebn_model.h
 * contract of docs/ARCHITECTURE.md exactly, so the harness and device tests can run without the
 * compiler. Two layers of plain integer math, mirrored in numpy by tests/device/fake_emulator.py:
 *   layer 0 "conv1x1_relu": [4,4,2] -> [4,4,3], acc = b0[c] + sum_k w0[c][k] * (x - IN_ZP),
 *           y = clamp(acc / 16, 0, 127)          (C division, truncating toward zero)
 *   layer 1 "linear":       48 -> 5,             acc = b1[j] + sum_i w1[j][i] * y0[i],
 *           y = clamp(acc / 64, -128, 127)
 * -DFAKE_MODEL_HASH=0x... changes the hash, -DFAKE_MODEL_BUG adds a deliberate error to layer 0
 * channel 2 (pixel 5) so tests can check that a mismatch is found and located. */
#ifndef EDGEBN_MODEL_H
#define EDGEBN_MODEL_H

#include <stdint.h>

#ifndef FAKE_MODEL_HASH
#define FAKE_MODEL_HASH 0x1234abcdu
#endif

#define EDGEBN_MODEL_INPUT_SIZE 32
#define EDGEBN_MODEL_OUTPUT_SIZE 5
#define EDGEBN_MODEL_INPUT_SCALE 0.05f
#define EDGEBN_MODEL_INPUT_ZERO_POINT 3
#define EDGEBN_MODEL_OUTPUT_SCALE 0.25f
#define EDGEBN_MODEL_OUTPUT_ZERO_POINT 0
#define EDGEBN_MODEL_ARENA_BYTES 48
/* one output: the packed outputs are that output */
#define EDGEBN_MODEL_NUM_OUTPUTS 1
#define EDGEBN_MODEL_OUTPUTS_BYTES EDGEBN_MODEL_OUTPUT_SIZE
#define EDGEBN_MODEL_OUTPUT_ARGS(buf) (buf)
#define EDGEBN_MODEL_NUM_LAYERS 2
#define EDGEBN_MODEL_HASH FAKE_MODEL_HASH

typedef void (*edgebn_layer_hook_t)(int layer_index, const int8_t *output, int32_t size, void *ctx);

int edgebn_model_run(const int8_t *input, int8_t *output);
int edgebn_model_run_hooked(const int8_t *input, int8_t *output, edgebn_layer_hook_t hook, void *ctx);
extern const char *const edgebn_model_layer_names[EDGEBN_MODEL_NUM_LAYERS];
extern const int32_t edgebn_model_layer_sizes[EDGEBN_MODEL_NUM_LAYERS];

#endif /* EDGEBN_MODEL_H */
