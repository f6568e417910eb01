/* Host test driver for a compiled model: reads whole int8 inputs from stdin until EOF and writes,
 * per input, every output packed in the model's order (and with argument "layers", every layer's
 * output first). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgebn_model.h"

static void dump_layer(int layer_index, const int8_t *output, int32_t size, void *ctx)
{
    (void)layer_index;
    (void)ctx;
    if (fwrite(output, 1, (size_t)size, stdout) != (size_t)size) {
        exit(3);
    }
}

int main(int argc, char **argv)
{
    static int8_t input[EDGEBN_MODEL_INPUT_SIZE];
    static int8_t output[EDGEBN_MODEL_OUTPUTS_BYTES];
    const int layers = argc > 1 && strcmp(argv[1], "layers") == 0;
    while (fread(input, 1, sizeof input, stdin) == sizeof input) {
        if (edgebn_model_run_hooked(input, EDGEBN_MODEL_OUTPUT_ARGS(output), layers ? dump_layer : NULL, NULL) != 0) {
            return 2;
        }
        if (fwrite(output, 1, sizeof output, stdout) != sizeof output) {
            return 3;
        }
    }
    return 0;
}
