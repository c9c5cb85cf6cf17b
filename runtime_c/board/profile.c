/*
 * profile.c -- per-layer instruction counts with SysTick (model built with -DSC_PROFILE).
 *
 * SysTick counts down from 0xFFFFFF on the core clock (CLKSOURCE = 1); every wraparound
 * adds 2^24 in SysTick_Handler. The 64-bit tick count is wraps * 2^24 + (0xFFFFFF - VAL).
 *
 * What one tick means on QEMU mps2-an386/an385 run with `-icount shift=0`: every guest
 * instruction advances virtual time by exactly 1 ns, and SysTick's core clock is the board's
 * 25 MHz SYSCLK, so one tick = 40 ns = 40 instructions. Counts are deterministic run to run
 * with a resolution of SC_PROFILE_INSNS_PER_TICK (40) instructions (board.mk's
 * `profile-calibrate` target re-measures the ratio with a loop of known length).
 * On real silicon one tick is one core clock cycle (wait states and pipeline included).
 *
 * Output (stdout), after each inference when the link wraps <prefix>_run (board.mk's
 * profile build passes -Wl,--wrap=<prefix>_run and -DSC_RUN_FN=<prefix>_run), otherwise
 * at exit:
 *   SC_PROFILE_TICK_INSNS 40
 *   SC_PROFILE_LAYER <idx> <ticks> <calls> <name>
 *   SC_PROFILE_TOTAL <ticks>          (whole <prefix>_run call, only with the wrap)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "sc_board.h"

#define SC_SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SC_SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SC_SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SC_SYST_RELOAD 0x00FFFFFFu

static volatile uint32_t sc_systick_wraps;
static int sc_profile_started;
static int sc_profile_pending;

typedef struct {
    const char *name;
    uint64_t start;
    uint64_t ticks;
    uint32_t calls;
} sc_profile_layer_t;

static sc_profile_layer_t sc_layers[SC_PROFILE_MAX_LAYERS];
static int sc_layer_count; /* 1 + highest index seen */
static uint32_t sc_dropped;

void SysTick_Handler(void);
void SysTick_Handler(void)
{
    sc_systick_wraps = sc_systick_wraps + 1u;
}

static void sc_profile_atexit(void)
{
    if (sc_profile_pending) {
        sc_profile_report();
    }
}

static void sc_profile_start(void)
{
    sc_profile_started = 1;
    sc_systick_wraps = 0u;
    SC_SYST_CSR = 0u;
    SC_SYST_RVR = SC_SYST_RELOAD;
    SC_SYST_CVR = 0u; /* any write clears the counter; it reloads on the next tick */
    SC_SYST_CSR = 0x7u; /* ENABLE | TICKINT | CLKSOURCE = core clock */
    /* VAL reads 0 until the first tick reloads it; a reload from 0 is not a wraparound. */
    while (SC_SYST_CVR == 0u) {
    }
    sc_systick_wraps = 0u;
    (void)atexit(sc_profile_atexit);
}

uint64_t sc_profile_ticks(void)
{
    uint32_t wraps;
    uint32_t val;
    if (!sc_profile_started) {
        sc_profile_start();
    }
    /* Re-read until no wraparound was counted in between. */
    do {
        wraps = sc_systick_wraps;
        val = SC_SYST_CVR;
    } while (wraps != sc_systick_wraps);
    return (uint64_t)wraps * (SC_SYST_RELOAD + 1u) + (SC_SYST_RELOAD - (val & SC_SYST_RELOAD));
}

void sc_profile_begin(int idx, const char *name)
{
    uint64_t now = sc_profile_ticks();
    if (idx < 0 || idx >= SC_PROFILE_MAX_LAYERS) {
        ++sc_dropped;
        return;
    }
    sc_layers[idx].name = name;
    sc_layers[idx].start = now;
    if (idx >= sc_layer_count) {
        sc_layer_count = idx + 1;
    }
}

void sc_profile_end(int idx)
{
    uint64_t now = sc_profile_ticks();
    if (idx < 0 || idx >= SC_PROFILE_MAX_LAYERS) {
        return;
    }
    sc_layers[idx].ticks += now - sc_layers[idx].start;
    sc_layers[idx].calls += 1u;
    sc_profile_pending = 1;
}

void sc_profile_report(void)
{
    int i;
    printf("SC_PROFILE_TICK_INSNS %d\n", SC_PROFILE_INSNS_PER_TICK);
    for (i = 0; i < sc_layer_count; ++i) {
        if (sc_layers[i].calls == 0u) {
            continue;
        }
        printf("SC_PROFILE_LAYER %d %lu %lu %s\n", i, (unsigned long)sc_layers[i].ticks,
               (unsigned long)sc_layers[i].calls,
               sc_layers[i].name != NULL ? sc_layers[i].name : "?");
        sc_layers[i].ticks = 0u;
        sc_layers[i].calls = 0u;
    }
    if (sc_dropped != 0u) {
        printf("SC_PROFILE_DROPPED %lu\n", (unsigned long)sc_dropped);
        sc_dropped = 0u;
    }
    sc_profile_pending = 0;
}

#ifdef SC_RUN_FN
/* Linked with -Wl,--wrap=<SC_RUN_FN>: time the whole inference call. */
#define SC_CAT2(a, b) a##b
#define SC_CAT(a, b) SC_CAT2(a, b)
int SC_CAT(__real_, SC_RUN_FN)(const float *input, float *output);
int SC_CAT(__wrap_, SC_RUN_FN)(const float *input, float *output);
int SC_CAT(__wrap_, SC_RUN_FN)(const float *input, float *output)
{
    uint64_t t0 = sc_profile_ticks();
    int rc = SC_CAT(__real_, SC_RUN_FN)(input, output);
    uint64_t t1 = sc_profile_ticks();
    sc_profile_report();
    printf("SC_PROFILE_TOTAL %lu\n", (unsigned long)(t1 - t0));
    return rc;
}
#endif
