/* Runs an ESP-IDF application's app_main once on a test board. */
void app_main(void);
int board_main(void);

int board_main(void)
{
    app_main();
    return 0;
}
