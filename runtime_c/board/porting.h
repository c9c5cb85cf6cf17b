/*
 * porting.h -- moving a sparsecomp model from the emulated board to a real Cortex-M part.
 *
 * This header holds no code; it is the porting guide, kept as a header so that it ships in
 * every emitted directory next to the files it talks about.
 *
 * WHAT IS PORTABLE AS IS
 *   model.h, model.c (every .c outside app/ and board/), headers/, runtime/: plain C99, no
 *   malloc, no stdio, const weights (they stay in flash), one static activation arena of
 *   MODEL_ARENA_BYTES in .bss. Add them to your firmware project (STM32CubeIDE, nRF Connect
 *   SDK/Zephyr, MCUXpresso, a plain Makefile...), add `-I <model dir>`, link with -lm, call
 *       float in[MODEL_INPUT_SIZE], out[MODEL_OUTPUT_SIZE];
 *       if (model_run(in, out) != 0) { ... }
 *   Use the same float ABI as the rest of your firmware:
 *       Cortex-M4F/M7 (STM32F4/L4/G4, nRF52840, ...): -mcpu=cortex-m4 -mthumb
 *           -mfloat-abi=hard -mfpu=fpv4-sp-d16   (M7: -mcpu=cortex-m7 -mfpu=fpv5-sp-d16
 *           or fpv5-d16)
 *       Cortex-M33 with FPU (nRF5340, STM32U5, ...): -mcpu=cortex-m33 -mfloat-abi=hard
 *           -mfpu=fpv5-sp-d16
 *       Cortex-M0+/M3 (no FPU): -mfloat-abi=soft (floats are emulated: expect roughly
 *           10-30x the M4F instruction count for the multiply-accumulates).
 *   Vendor SDKs already bring startup code, a linker script and a clock setup: in that case
 *   you need nothing from board/ except, optionally, profile.c.
 *
 * WHAT board/ DOES AND WHAT TO CHANGE ON A REAL PART (when you build with board.mk)
 *   1. Memory map -- mps2-an386.ld / mps2-an385.ld. Copy one to e.g. board/stm32f411.ld
 *      and change the two MEMORY lines to the part's datasheet, e.g.
 *          STM32F411RE:  FLASH ORIGIN = 0x08000000, LENGTH = 512K
 *                        RAM   ORIGIN = 0x20000000, LENGTH = 128K
 *          nRF52840:     FLASH ORIGIN = 0x00000000, LENGTH = 1M   (minus a SoftDevice, if any)
 *                        RAM   ORIGIN = 0x20000000, LENGTH = 256K
 *      keep `INCLUDE cortex_m.ld`, and build with `make cortex-m4 M4_LDSCRIPT=board/stm32f411.ld`.
 *      The section layout (cortex_m.ld) is generic Armv7-M/Armv8-M. The link fails (region
 *      overflowed) when weights + code exceed FLASH or arena + data + heap + stack exceed RAM;
 *      `make size` shows what the model costs. Tune ARM_STACK_SIZE / ARM_HEAP_SIZE.
 *   2. Vector table -- startup.c lists the 16 system exceptions and 32 external IRQs (all
 *      unused). A real part has more IRQs; extend SC_VECTOR_COUNT and add entries only for
 *      the peripherals you use. The table must sit at the flash origin (the linker script
 *      puts .isr_vector first) or VTOR must point to it (Reset_Handler sets VTOR).
 *   3. Clock -- QEMU needs none: the core runs at reset speed. Real parts boot from an
 *      internal RC oscillator (STM32F4: HSI 16 MHz; nRF52: 64 MHz). Call your clock setup
 *      (PLL, flash wait states!) at the top of Reset_Handler, after the FPU enable and
 *      before copying .data, or at the start of main(). Without it everything works, only
 *      slower.
 *   4. Output and exit -- semihost.c sends printf to the debugger over semihosting (BKPT
 *      0xAB) and ends the program with SYS_EXIT_EXTENDED. Without a debugger attached a
 *      BKPT halts the core (HardFault on some parts), so on hardware replace:
 *          sc_semihost_write(fd, buf, len): loop over buf calling a UART putchar, e.g.
 *              for (i = 0; i < len; ++i) {
 *                  while (!(USART2->SR & USART_SR_TXE)) { }   (STM32F4 register names)
 *                  USART2->DR = (uint8_t)p[i];
 *              }
 *            (or SEGGER RTT / ITM_SendChar via SWO; nRF52: NRF_UARTE0 with EasyDMA)
 *            after enabling the UART's clock, pins and baud rate once;
 *          sc_semihost_exit(status): print the status and loop forever (`for (;;) { }`), or
 *            NVIC_SystemReset().
 *      The newlib system calls (_write, _sbrk, ...) in semihost.c stay as they are.
 *      Keep semihosting when running under a debug probe with semihosting enabled
 *      (OpenOCD `arm semihosting enable`, pyOCD, J-Link).
 *   5. Profiling -- profile.c uses SysTick (present on every Cortex-M) at the core clock, so
 *      on hardware one tick is one core clock cycle (SC_PROFILE_INSNS_PER_TICK means
 *      "cycles per tick" there: build with -DSC_PROFILE_INSNS_PER_TICK=1). On M3/M4/M7/M33
 *      the DWT cycle counter (DWT->CYCCNT, enable TRCENA in CoreDebug->DEMCR first) is an
 *      alternative with no interrupt: QEMU does not implement it, hence SysTick here.
 *      If your RTOS owns SysTick, take the timestamps from DWT instead.
 *
 *   6. Intermittent inference (save_compressed_model(..., intermittent=True), docs/intermittent.md) --
 *      <prefix>_run_intermittent keeps its progress and activations (MODEL_NVM_BYTES) in SC_NVM, which
 *      must be memory that keeps its bytes across a power failure, and that the startup code does not
 *      zero or reload. The emulated board uses RAM that a reset leaves alone: `-include
 *      board/sc_nvm_section.h` puts SC_NVM in the section .sc_nvm, which cortex_m.ld places NOLOAD after
 *      the stack (at most __sc_nvm_size__ bytes, board.mk / Makefile SC_NVM_SIZE). On a real part:
 *        FRAM (MSP430FR, Cypress FM25 on SPI is not memory-mapped: see flash below) / MRAM (Ambiq
 *        Apollo4, STM32 with external MRAM on FMC, NXP i.MX RT with MRAM) -- memory-mapped and
 *        byte-writable: add a region and put .sc_nvm in it,
 *            MEMORY { ... FRAM (rw) : ORIGIN = <datasheet>, LENGTH = <size> }
 *            .sc_nvm (NOLOAD) : ALIGN(8) { KEEP(*(.sc_nvm .sc_nvm.*)) } > FRAM
 *        and compile model.c with -include board/sc_nvm_section.h (or your own
 *        #define SC_NVM __attribute__((section(".sc_nvm")))). If the NVM controller buffers writes,
 *        define SC_NVM_BARRIER() (runtime/sc_nvm.h; default: DMB) to drain the buffer: the commit
 *        protocol needs every store before a barrier to be durable before any store after it.
 *        Retained (battery-backed / standby) SRAM works the same way for brown-outs that keep it.
 *      Flash-emulated EEPROM (no byte-writable NVM): keep SC_NVM in RAM and checkpoint it yourself: save
 *        the whole MODEL_NVM_BYTES state (one struct, <prefix>_nvm in model.c) to flash on a
 *        brown-out interrupt or after each unit (SC_NVM_YIELD() is evaluated after every commit: return 1
 *        to make <prefix>_run_intermittent return SC_IN_PROGRESS, write the state, call again), with
 *        two flash pages alternated, and restore it at boot before calling <prefix>_run_intermittent.
 *        The progress slots carry a check word, so a torn page restores as "start over".
 *      SC_NVM_YIELD() is also the hook for energy-aware execution: stop while the supply voltage is low.
 *
 * THE EMULATED BOARDS (for reference)
 *   QEMU mps2-an386: Cortex-M4F, mps2-an385: Cortex-M3. Both: 4 MiB ZBT SSRAM1 at 0x0
 *   used as flash, 4 MiB ZBT SSRAM2&3 at 0x20000000 as RAM, 25 MHz SYSCLK drives SysTick.
 *   With `-icount shift=0` each instruction takes 1 ns of virtual time, so one SysTick tick
 *   is 40 instructions (measured: `make profile-calibrate` prints
 *   "SC_CALIBRATE 20040000 501000"). QEMU counts instructions, not cycles: a real M4 adds
 *   flash wait states, pipeline refills on branches, and multi-cycle loads/FP divides.
 */
#ifndef SC_PORTING_H
#define SC_PORTING_H
#endif /* SC_PORTING_H */
