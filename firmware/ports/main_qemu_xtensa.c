#include "edgebn_harness.h"

int main(void)
{
    edgebn_harness_main();
    return 0;
}
