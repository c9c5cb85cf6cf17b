/*
 * calibrate.c -- measure how many instructions one SysTick tick stands for.
 *
 * Runs a loop of exactly SC_CAL_INSNS instructions (an unrolled block of NOPs) between two
 * tick reads and prints `SC_CALIBRATE <instructions> <ticks>`. Run under
 * `qemu-system-arm -icount shift=0` (board.mk: profile-calibrate) the ratio is the
 * instructions-per-tick that profile.c assumes (SC_PROFILE_INSNS_PER_TICK).
 */
#include <stdint.h>
#include <stdio.h>

#include "sc_board.h"

#define SC_NOP10 "nop\n\tnop\n\tnop\n\tnop\n\tnop\n\tnop\n\tnop\n\tnop\n\tnop\n\tnop\n\t"
#define SC_NOP100 SC_NOP10 SC_NOP10 SC_NOP10 SC_NOP10 SC_NOP10 \
                  SC_NOP10 SC_NOP10 SC_NOP10 SC_NOP10 SC_NOP10

/* Each iteration: 1000 NOPs + subs + bne = 1002 instructions. */
#define SC_CAL_ITERS 20000u
#define SC_CAL_INSNS_PER_ITER 1002u

int main(void)
{
    uint32_t n = SC_CAL_ITERS;
    uint64_t t0;
    uint64_t t1;
    (void)sc_profile_ticks();
    t0 = sc_profile_ticks();
    __asm__ volatile(
        "1:\n\t"
        SC_NOP100 SC_NOP100 SC_NOP100 SC_NOP100 SC_NOP100
        SC_NOP100 SC_NOP100 SC_NOP100 SC_NOP100 SC_NOP100
        "subs %0, %0, #1\n\t"
        "bne 1b\n\t"
        : "+r"(n)
        :
        : "cc");
    t1 = sc_profile_ticks();
    printf("SC_CALIBRATE %lu %lu\n", (unsigned long)(SC_CAL_ITERS * SC_CAL_INSNS_PER_ITER),
           (unsigned long)(t1 - t0));
    return 0;
}
