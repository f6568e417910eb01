/* edgebn board harness: boot self-test and the framed binary protocol server.
 *
 * Portable C99, no malloc, no stdio: it talks to the board only through edgebn_port.h and to the
 * model only through lib/edgebn_model/edgebn_model.h. It also includes "edgebn_selftest.h", the
 * vectors edgebn renders from the emulator (templates/project/selftest.h.j2).
 */
#ifndef EDGEBN_HARNESS_H
#define EDGEBN_HARNESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Print the banner and run the self-test (call once, after edgebn_port_init). Returns the
 * EDGEBN_SELFTEST_* status, which INFO reports too. */
int edgebn_harness_boot(void);

/* Wait up to idle_timeout_ms for a frame and handle it (reply included). Returns 0 when nothing
 * arrived, 1 when bytes were consumed (a frame handled, or garbage skipped). */
int edgebn_harness_serve_one(uint32_t idle_timeout_ms);

/* Init the port, boot, and serve frames forever: the whole program on bare-metal boards.
 * Built with -DEDGEBN_SELFTEST_AND_EXIT it exits after the self-test instead (status 1 on FAIL). */
void edgebn_harness_main(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGEBN_HARNESS_H */
