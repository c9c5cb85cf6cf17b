/*
 * sc_nvm_section.h -- forced include (-include) of the qemu-power-fail build (board.mk, emitted Makefile):
 * the SC_NVM state of an intermittent model (runtime/sc_nvm.h) goes to the section .sc_nvm, which
 * cortex_m.ld places NOLOAD after the stack, where neither QEMU's reset nor startup.c touches it.
 * On a real part map .sc_nvm to FRAM/MRAM (porting.h, "INTERMITTENT INFERENCE").
 */
#ifndef SC_NVM_SECTION_H
#define SC_NVM_SECTION_H
#define SC_NVM __attribute__((section(".sc_nvm")))
#endif /* SC_NVM_SECTION_H */
