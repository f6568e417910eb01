/* Bare-metal start-up for edgebn's emulated Xtensa boards (QEMU `-M sim`: -cpu lx106, esp32,
 * esp32s3). QEMU resets the core at 0x50000000 with PS.EXCM set and interrupts masked; this file
 *   - puts a jump to _start at that reset vector (section .edgebn_reset, placed there by sim.ld);
 *   - holds the vector table (VECBASE): the six window overflow/underflow handlers of the windowed
 *     ABI (ESP32 / ESP32-S3) and, at every other 16-byte slot, a stub that leaves QEMU with exit
 *     status 64 + slot (an unexpected exception never hangs the board);
 *   - _start: VECBASE, WINDOWBASE = 0 / WINDOWSTART = 1 (windowed ABI), PS (no exception mode,
 *     interrupts level 0, window overflow detection on), the stack, .data copied from its load
 *     address, .bss cleared, the instruction counter armed (ICOUNTLEVEL), then main().
 * Special registers are written by number: 72 WINDOWBASE, 73 WINDOWSTART, 230 PS, 231 VECBASE,
 * 236 ICOUNT, 237 ICOUNTLEVEL. EDGEBN_XT_ICOUNTLEVEL comes from the board's flags file. */

#ifndef EDGEBN_XT_ICOUNTLEVEL
#error "EDGEBN_XT_ICOUNTLEVEL must be set by the board's flags file"
#endif

#define SYS_EXIT 1

    .section .edgebn_reset, "ax"
    .global _reset
    .align 4
_reset:
    j 1f
    .align 4
2:  .word _start
1:  l32r a0, 2b
    jx a0

    .section .edgebn_vectors, "ax"
    .align 4096
    .global _edgebn_vectors
_edgebn_vectors:
#ifdef __XTENSA_WINDOWED_ABI__
    /* The standard handlers (Xtensa ISA reference, "Windowed Procedure-Call Protocol"). */
    .org _edgebn_vectors + 0x00         /* WindowOverflow4 */
    s32e a0, a5, -16
    s32e a1, a5, -12
    s32e a2, a5, -8
    s32e a3, a5, -4
    rfwo
    .org _edgebn_vectors + 0x40         /* WindowUnderflow4 */
    l32e a0, a5, -16
    l32e a1, a5, -12
    l32e a2, a5, -8
    l32e a3, a5, -4
    rfwu
    .org _edgebn_vectors + 0x80         /* WindowOverflow8 */
    s32e a0, a9, -16
    l32e a0, a1, -12
    s32e a1, a9, -12
    s32e a2, a9, -8
    s32e a3, a9, -4
    s32e a4, a0, -32
    s32e a5, a0, -28
    s32e a6, a0, -24
    s32e a7, a0, -20
    rfwo
    .org _edgebn_vectors + 0xC0         /* WindowUnderflow8 */
    l32e a1, a9, -12
    l32e a0, a9, -16
    l32e a7, a1, -12
    l32e a2, a9, -8
    l32e a4, a7, -32
    l32e a3, a9, -4
    l32e a5, a7, -28
    l32e a6, a7, -24
    l32e a7, a7, -20
    rfwu
    .org _edgebn_vectors + 0x100        /* WindowOverflow12 */
    s32e a0, a13, -16
    l32e a0, a1, -12
    s32e a1, a13, -12
    s32e a2, a13, -8
    s32e a3, a13, -4
    s32e a4, a0, -48
    s32e a5, a0, -44
    s32e a6, a0, -40
    s32e a7, a0, -36
    s32e a8, a0, -32
    s32e a9, a0, -28
    s32e a10, a0, -24
    s32e a11, a0, -20
    rfwo
    .org _edgebn_vectors + 0x140        /* WindowUnderflow12 */
    l32e a1, a13, -12
    l32e a0, a13, -16
    l32e a11, a1, -12
    l32e a2, a13, -8
    l32e a4, a11, -48
    l32e a8, a11, -32
    l32e a3, a13, -4
    l32e a5, a11, -44
    l32e a6, a11, -40
    l32e a7, a11, -36
    l32e a9, a11, -28
    l32e a10, a11, -24
    l32e a11, a11, -20
    rfwu
#define FIRST_STUB 0x180
#else
#define FIRST_STUB 0x000
#endif
    /* Every other vector (kernel/user/double exception, debug, interrupts) at 16-byte slots:
     * leave with exit status 64 + slot. */
    .set slot, FIRST_STUB
    .rept (0x400 - FIRST_STUB) / 16
    .org _edgebn_vectors + slot
    movi a3, 64 + slot / 16
    j _edgebn_trap
    .set slot, slot + 16
    .endr
_edgebn_trap:
    movi a2, SYS_EXIT
    simcall
1:  j 1b

    .text
    .global _start
    .align 4
_start:
    movi a0, 0
    movi a2, _edgebn_vectors
    wsr a2, 231                         /* VECBASE */
#ifdef __XTENSA_WINDOWED_ABI__
    movi a2, 1
    wsr a2, 73                          /* WINDOWSTART: only the current window is live */
    movi a2, 0
    wsr a2, 72                          /* WINDOWBASE */
    rsync
    movi a2, (1 << 18) | (1 << 5)       /* PS: WOE, UM; EXCM = 0, INTLEVEL = 0 */
#else
    movi a2, (1 << 5)                   /* PS: UM; EXCM = 0, INTLEVEL = 0 */
#endif
    wsr a2, 230
    rsync
    movi a1, _edgebn_stack_top
    /* .data: copy from its load address (after .rodata) to RAM */
    movi a2, _edgebn_data_load
    movi a3, _edgebn_data_start
    movi a4, _edgebn_data_end
1:  bgeu a3, a4, 2f
    l32i a5, a2, 0
    s32i a5, a3, 0
    addi a2, a2, 4
    addi a3, a3, 4
    j 1b
2:  /* .bss: clear */
    movi a3, _edgebn_bss_start
    movi a4, _edgebn_bss_end
    movi a5, 0
3:  bgeu a3, a4, 4f
    s32i a5, a3, 0
    addi a3, a3, 4
    j 3b
4:  /* instruction counter: counts while the current level is below ICOUNTLEVEL */
    movi a2, 0
    wsr a2, 236                         /* ICOUNT */
    movi a2, EDGEBN_XT_ICOUNTLEVEL
    wsr a2, 237                         /* ICOUNTLEVEL */
    isync
#ifdef __XTENSA_WINDOWED_ABI__
    call4 main
    mov a3, a6
#else
    call0 main
    mov a3, a2
#endif
    movi a2, SYS_EXIT
    simcall
5:  j 5b
