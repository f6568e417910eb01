/* The Arduino runtime's part: globals and the setup()/loop() driver. */
#include <Arduino.h>

HardwareSerial Serial;
EspClass ESP;

void setup();
void loop();

int main()
{
    setup();
    for (;;) {
        loop();
    }
}
