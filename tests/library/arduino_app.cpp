/* Runs an Arduino sketch once on a test board: setup(), then one loop(). */
void setup();
void loop();

extern "C" int board_main(void)
{
    setup();
    loop();
    return 0;
}
