/* Arduino entry point: the harness never returns from setup(); it serves the host forever. */
#include <Arduino.h>

#include "edgebn_harness.h"

void setup()
{
    edgebn_harness_main();
}

void loop()
{
}
