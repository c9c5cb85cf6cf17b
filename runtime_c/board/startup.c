/*
 * startup.c -- reset handler and vector table for Cortex-M3/M4(F) (Armv7-M).
 *
 * Reset_Handler: enable the FPU when the build uses one (before any float
 * instruction), copy .data from flash to RAM, zero .bss, then exit(main()).
 * exit() flushes stdio and ends in _exit() (semihost.c), which stops the emulator
 * with main's return value as its exit status.
 *
 * Symbols come from the linker script (cortex_m.ld). Faults print one line and exit
 * with status SC_FAULT_EXIT_STATUS so a crash never looks like success or a hang.
 */
#include <stdint.h>
#include <stdlib.h>

#include "sc_board.h"

#ifndef SC_FAULT_EXIT_STATUS
#define SC_FAULT_EXIT_STATUS 134
#endif

extern uint32_t __data_load__[];
extern uint32_t __data_start__[];
extern uint32_t __data_end__[];
extern uint32_t __bss_start__[];
extern uint32_t __bss_end__[];
extern uint32_t __stack_top__[];

int main(void);

void Reset_Handler(void) __attribute__((noreturn));
void Default_Handler(void);
void HardFault_Handler(void);
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

/* The first word is the initial stack pointer, the rest are handler addresses. */
typedef union {
    void (*handler)(void);
    const void *stack_top;
} sc_vector_t;

#define SC_SYSTEM_VECTORS 16
/* Exceptions 0..15 plus IRQs 0..31 (the mps2 boards wire up to 32 external IRQs). */
#define SC_VECTOR_COUNT (SC_SYSTEM_VECTORS + 32)

__attribute__((section(".isr_vector"), used))
const sc_vector_t sc_vector_table[SC_VECTOR_COUNT] = {
    [0] = { .stack_top = __stack_top__ },
    [1] = { .handler = Reset_Handler },
    [2] = { .handler = NMI_Handler },
    [3] = { .handler = HardFault_Handler },
    [4] = { .handler = MemManage_Handler },
    [5] = { .handler = BusFault_Handler },
    [6] = { .handler = UsageFault_Handler },
    [11] = { .handler = SVC_Handler },
    [12] = { .handler = DebugMon_Handler },
    [14] = { .handler = PendSV_Handler },
    [15] = { .handler = SysTick_Handler },
    /* External IRQs 0..31: left 0 (unused); an unexpected IRQ then faults, which the
     * fault handler reports. Add entries here when porting drivers that use them. */
};

#define SC_SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SC_SCB_VTOR  (*(volatile uint32_t *)0xE000ED08u)
#define SC_SCB_CCR   (*(volatile uint32_t *)0xE000ED14u)
#define SC_SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)

void Reset_Handler(void)
{
    uint32_t *src;
    uint32_t *dst;

#if defined(__ARM_FP)
    /* CP10 and CP11 full access: must precede the first floating-point instruction. */
    SC_SCB_CPACR |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    SC_SCB_VTOR = (uint32_t)(uintptr_t)sc_vector_table;
    /* Trap integer divide by zero; route MemManage/BusFault/UsageFault to their handlers. */
    SC_SCB_CCR |= (1u << 4);
    SC_SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18);

    for (src = __data_load__, dst = __data_start__; dst < __data_end__;) {
        *dst++ = *src++;
    }
    for (dst = __bss_start__; dst < __bss_end__;) {
        *dst++ = 0u;
    }

    exit(main());
}

static void sc_board_puts(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0') {
        ++n;
    }
    (void)sc_semihost_write(2, s, n);
}

void HardFault_Handler(void)
{
    sc_board_puts("SC_FAULT hard fault (or MemManage/BusFault/UsageFault)\n");
    sc_semihost_exit(SC_FAULT_EXIT_STATUS);
}

void Default_Handler(void)
{
    sc_board_puts("SC_FAULT unexpected exception\n");
    sc_semihost_exit(SC_FAULT_EXIT_STATUS);
}
