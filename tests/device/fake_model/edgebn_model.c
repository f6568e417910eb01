#include "edgebn_model.h"

#include <stddef.h>

const char *const edgebn_model_layer_names[EDGEBN_MODEL_NUM_LAYERS] = {"conv1x1_relu", "linear"};
const int32_t edgebn_model_layer_sizes[EDGEBN_MODEL_NUM_LAYERS] = {48, 5};

static int8_t arena[EDGEBN_MODEL_ARENA_BYTES];

static int32_t clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

static void conv1x1_relu(const int8_t *x, int8_t *y)
{
    int p, c, k;
    for (p = 0; p < 16; ++p) {
        for (c = 0; c < 3; ++c) {
            int32_t acc = c * 10 - 10;
            for (k = 0; k < 2; ++k) {
                int32_t w = ((c * 7 + k * 3) % 11) - 5;
                acc += w * ((int32_t)x[p * 2 + k] - EDGEBN_MODEL_INPUT_ZERO_POINT);
            }
            y[p * 3 + c] = (int8_t)clamp(acc / 16, 0, 127);
        }
    }
#ifdef FAKE_MODEL_BUG
    y[5 * 3 + 2] = (int8_t)clamp(y[5 * 3 + 2] + 100, 0, 127);
#endif
}

static void linear(const int8_t *x, int8_t *y)
{
    int i, j;
    for (j = 0; j < 5; ++j) {
        int32_t acc = j * 3 - 6;
        for (i = 0; i < 48; ++i) {
            acc += (((j * 13 + i * 5) % 9) - 4) * (int32_t)x[i];
        }
        y[j] = (int8_t)clamp(acc / 64, -128, 127);
    }
}

int edgebn_model_run_hooked(const int8_t *input, int8_t *output, edgebn_layer_hook_t hook, void *ctx)
{
    int8_t *l0 = arena;
#ifdef FAKE_MODEL_FAILS
    (void)input, (void)output, (void)hook, (void)ctx, (void)l0;
    return FAKE_MODEL_FAILS; /* a model that refuses to run: the harness's MODEL_FAILED paths */
#endif
    conv1x1_relu(input, l0);
    if (hook != NULL) {
        hook(0, l0, edgebn_model_layer_sizes[0], ctx);
    }
    linear(l0, output);
    if (hook != NULL) {
        hook(1, output, edgebn_model_layer_sizes[1], ctx);
    }
    return 0;
}

int edgebn_model_run(const int8_t *input, int8_t *output)
{
    return edgebn_model_run_hooked(input, output, NULL, NULL);
}
