/* Two compiled models in one program: both headers (and both example inputs) in one translation
 * unit, each model run on its own float example input through its own C API. The int8 outputs are
 * left in two_models_out_a / _b for the board's printer (or the linker check). */
#include <stdint.h>

#include "tiny_model.h"
#include "kws_model.h"
#include "tiny_example_input.h"
#include "kws_example_input.h"

int8_t two_models_out_a[TINY_OUTPUT_SIZE];
int8_t two_models_out_b[KWS_OUTPUT_SIZE];
int two_models_run(void);

int two_models_run(void)
{
    static int8_t in_a[TINY_INPUT_SIZE];
    static int8_t in_b[KWS_INPUT_SIZE];
    static int8_t arena_b[KWS_ARENA_BYTES] __attribute__((aligned(KWS_ARENA_ALIGN)));
    int rc;
    tiny_quantize_input(tiny_example_input, in_a);
    kws_quantize_input(kws_example_input, in_b);
    rc = tiny_run(in_a, two_models_out_a);
    if (rc != 0) {
        return 10 - rc;
    }
    rc = kws_run_with_arena(in_b, two_models_out_b, arena_b); /* the other on the caller's arena */
    if (rc != 0) {
        return 20 - rc;
    }
    rc = kws_run(in_b, two_models_out_b);                     /* and on its own */
    return rc == 0 ? 0 : 30 - rc;
}
