/*
 * sc_board.h -- the small interface between sparsecomp's board support files.
 *
 * Board support for the emulated Arm MPS2 boards (QEMU mps2-an386 = Cortex-M4F,
 * mps2-an385 = Cortex-M3). Nothing here is needed by the model itself: model.c and
 * runtime/ are plain C99 and link against any board. See porting.h for moving to a
 * real part.
 */
#ifndef SC_BOARD_H
#define SC_BOARD_H

#include <stddef.h>
#include <stdint.h>

/* ---- semihosting (semihost.c) ------------------------------------------------------ */

/* Arm semihosting operation numbers used here. */
#define SC_SEMIHOST_SYS_OPEN          0x01
#define SC_SEMIHOST_SYS_WRITEC        0x03
#define SC_SEMIHOST_SYS_WRITE0        0x04
#define SC_SEMIHOST_SYS_WRITE         0x05
#define SC_SEMIHOST_SYS_EXIT          0x18
#define SC_SEMIHOST_SYS_EXIT_EXTENDED 0x20
/* Reason codes for SYS_EXIT / SYS_EXIT_EXTENDED. */
#define SC_ADP_STOPPED_APPLICATION_EXIT 0x20026
#define SC_ADP_STOPPED_RUNTIME_ERROR    0x20023

/* One semihosting call: op in r0, argument block pointer in r1, result in r0. */
int sc_semihost_call(int op, void *arg);
/* Write len bytes to the host's stdout (fd 1) or stderr (fd 2). Returns bytes written. */
int sc_semihost_write(int fd, const void *buf, size_t len);
/* Stop the emulator with this exit status (0..255 reaches the host's shell). */
void sc_semihost_exit(int status) __attribute__((noreturn));

/* ---- profiling (profile.c) ----------------------------------------------------------- */

/*
 * Hooks called by SC_LAYER_BEGIN / SC_LAYER_END in runtime/sc_runtime.h when the model is
 * compiled with -DSC_PROFILE. This implementation counts SysTick ticks (core clock,
 * 24-bit, wraparound counted in SysTick_Handler). On QEMU run with `-icount shift=0`
 * every instruction advances virtual time by 1 ns and the mps2 SysTick runs at 25 MHz,
 * so one tick is SC_PROFILE_INSNS_PER_TICK (= 40) instructions: the counts are
 * deterministic instruction counts with a resolution of 40 instructions.
 * On real silicon one tick is one core clock cycle.
 */
void sc_profile_begin(int idx, const char *name);
void sc_profile_end(int idx);
/* Print `SC_PROFILE_LAYER ...` lines for what was measured so far and reset. */
void sc_profile_report(void);
/* Current 64-bit tick count (starts SysTick on first use). */
uint64_t sc_profile_ticks(void);

#ifndef SC_PROFILE_INSNS_PER_TICK
#define SC_PROFILE_INSNS_PER_TICK 40
#endif
#ifndef SC_PROFILE_MAX_LAYERS
#define SC_PROFILE_MAX_LAYERS 256
#endif

#endif /* SC_BOARD_H */
