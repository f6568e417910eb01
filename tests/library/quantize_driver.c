/* Host driver for the generated quantize/dequantize/argmax helpers: reads float32 inputs of
 * MODEL_INPUT_SIZE from stdin until EOF and writes, per input, NAME_quantize_input (PyTorch layout in)
 * then NAME_quantize_input_nhwc (device layout in). With argument "out", reads int8 outputs instead
 * and writes NAME_dequantize_output, NAME_dequantize_output_nhwc and NAME_argmax (int32). The model
 * is chosen at compile time: -include its header and -DP(x)=name_##x -DM(x)=NAME_##x. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "out") == 0) {
        static int8_t q[M(OUTPUT_SIZE)];
        static float y[M(OUTPUT_SIZE)], y2[M(OUTPUT_SIZE)];
        while (fread(q, 1, sizeof q, stdin) == sizeof q) {
            int32_t best;
            P(dequantize_output)(q, y);
            P(dequantize_output_nhwc)(q, y2);
            best = (int32_t)P(argmax)(q);
            if (fwrite(y, sizeof y, 1, stdout) != 1 || fwrite(y2, sizeof y2, 1, stdout) != 1 ||
                fwrite(&best, sizeof best, 1, stdout) != 1) {
                return 3;
            }
        }
        return 0;
    }
    {
        static float x[M(INPUT_SIZE)];
        static int8_t q[M(INPUT_SIZE)], q2[M(INPUT_SIZE)];
        while (fread(x, sizeof x, 1, stdin) == 1) {
            P(quantize_input)(x, q);
            P(quantize_input_nhwc)(x, q2);
            if (fwrite(q, 1, sizeof q, stdout) != sizeof q || fwrite(q2, 1, sizeof q2, stdout) != sizeof q2) {
                return 3;
            }
        }
    }
    return 0;
}
