/* Prints the two models' outputs (two_models.c) as one line of integers per model. */
#include <stdio.h>

#include "tiny_model.h"
#include "kws_model.h"

extern int8_t two_models_out_a[TINY_OUTPUT_SIZE];
extern int8_t two_models_out_b[KWS_OUTPUT_SIZE];
int two_models_run(void);
int board_main(void);

int board_main(void)
{
    int i;
    const int rc = two_models_run();
    if (rc != 0) {
        printf("two_models_run failed: %d\n", rc);
        return rc;
    }
    printf("tiny:");
    for (i = 0; i < TINY_OUTPUT_SIZE; ++i) {
        printf(" %d", two_models_out_a[i]);
    }
    printf("\nkws:");
    for (i = 0; i < KWS_OUTPUT_SIZE; ++i) {
        printf(" %d", two_models_out_b[i]);
    }
    printf("\n");
    return 0;
}
