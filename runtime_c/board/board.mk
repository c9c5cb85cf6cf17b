# board/board.mk -- Cortex-M cross builds and runs on QEMU's emulated Arm MPS2 boards.
#
# Included at the end of the emitted Makefile, which defines PREFIX, MODEL_SRCS, APP_SRCS
# and CPPFLAGS (-I.). Targets:
#   cortex-m4        build/m4/<prefix>.elf   Cortex-M4F, hard float (QEMU mps2-an386)
#   cortex-m3        build/m3/<prefix>.elf   Cortex-M3, soft float  (QEMU mps2-an385)
#   qemu             run the M4 self-test on mps2-an386; fails with the program's exit code
#   qemu-m3          same on the M3 (mps2-an385)
#   size             text/data/bss of the M4 firmware, of the baseline, and the difference
#   baseline         build/m4/baseline.elf and build/m3/baseline.elf: app/main.c with
#                    <prefix>_run stubbed out (board/baseline.c, plus $(BASELINE_SRCS)), same flags; the size
#                    difference to the real firmware is the model (code + weights + arena)
#   profile          M4 build with -DSC_PROFILE run under `-icount shift=0`: prints
#                    SC_PROFILE_LAYER <idx> <ticks> <calls> <name> and SC_PROFILE_TOTAL
#                    <ticks>; one tick = SC_PROFILE_TICK_INSNS (40) instructions
#   profile-m3       the same on the M3
#   profile-calibrate  measures instructions per SysTick tick with a loop of known length
#   board-clean      removes build/m4 build/m3 build/m4-profile build/m3-profile (nothing else)
# Every flag is a variable: `make qemu ARM_OPT=-Os QEMU_TIMEOUT=60`.
# The exit status of `make qemu` is make's own (2) when the program fails; make's error
# line shows the program's status, and codegen.board.run() runs QEMU itself to get it.

SC_BOARD_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

PREFIX     ?= model
MODEL_SRCS ?= model.c
APP_SRCS   ?= app/main.c
# Extra stubs linked into baseline.elf besides board/baseline.c (an early-exit directory stubs
# its <prefix>_ee_* API in app/baseline_ee.c).
BASELINE_SRCS ?=

# ---- toolchain and flags -------------------------------------------------------------
ARM_CC      ?= arm-none-eabi-gcc
ARM_SIZE    ?= arm-none-eabi-size
ARM_OBJCOPY ?= arm-none-eabi-objcopy
ARM_OPT     ?= -O2
ARM_WARN    ?= -Wall -Wextra -Werror -pedantic
# -fstack-usage: <obj>.su lists every function's frame (codegen.board.stack_usage reads model.su)
ARM_CFLAGS  ?= -std=c99 $(ARM_OPT) -g $(ARM_WARN) -ffunction-sections -fdata-sections -fstack-usage
ARM_CPPFLAGS ?= $(CPPFLAGS) -I$(SC_BOARD_DIR) -DSC_KEEP_WEIGHTS
# newlib-nano, our own startup (board/startup.c) and system calls (board/semihost.c);
# -u _printf_float: the self-test prints floats with %g.
ARM_SPECS   ?= --specs=nano.specs
ARM_LDFLAGS ?= -nostartfiles -Wl,--gc-sections -u _printf_float
ARM_LDLIBS  ?= -lm
ARM_STACK_SIZE ?= 0x4000
ARM_HEAP_SIZE  ?= 0x2000

M4_MCPU     ?= -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
M3_MCPU     ?= -mcpu=cortex-m3 -mthumb -mfloat-abi=soft
M4_LDSCRIPT ?= $(SC_BOARD_DIR)/mps2-an386.ld
M3_LDSCRIPT ?= $(SC_BOARD_DIR)/mps2-an385.ld

# ---- emulator ------------------------------------------------------------------------
QEMU         ?= qemu-system-arm
QEMU_TIMEOUT ?= 30
QEMU_M4_MACHINE ?= mps2-an386
QEMU_M3_MACHINE ?= mps2-an385
QEMU_FLAGS   ?= -nographic -monitor none -serial none \
                -semihosting-config enable=on,target=native
QEMU_ICOUNT  ?= -icount shift=0
SC_TIMEOUT   ?= timeout

SC_BOARD_SRCS   := $(SC_BOARD_DIR)/startup.c $(SC_BOARD_DIR)/semihost.c
SC_PROFILE_SRCS := $(SC_BOARD_DIR)/profile.c

# $(call sc_objs,<build dir>,<sources>)
sc_objs = $(patsubst %.c,$(1)/obj/%.o,$(2))

# $(call sc_variant,<name>,<build dir>,<mcpu>,<linker script>,<extra cflags>,<extra board srcs>,<extra ldflags>)
# Every variant keeps its flags in <build dir>/flags.txt, rewritten only when they change:
# objects and ELFs depend on it, so `make cortex-m4 ARM_OPT=-Os` after -O2 rebuilds.
define sc_variant
$(2)/flags.txt: sc-force
	@mkdir -p $$(@D)
	@printf '%s\n' '$(3) $$(ARM_CPPFLAGS) $(5) $$(ARM_CFLAGS) | $$(ARM_CC) $$(ARM_SPECS) $$(ARM_LDFLAGS) $(7) $$(ARM_STACK_SIZE) $$(ARM_HEAP_SIZE) $$(ARM_LDLIBS) | $(4) | $$(MODEL_SRCS) | $$(APP_SRCS)' > $$@.tmp
	@if cmp -s $$@.tmp $$@; then rm -f $$@.tmp; else mv -f $$@.tmp $$@; fi

$(2)/obj/%.o: %.c $(2)/flags.txt
	@mkdir -p $$(@D)
	$$(ARM_CC) $(3) $$(ARM_CPPFLAGS) $(5) $$(ARM_CFLAGS) -MMD -MP -c -o $$@ $$<

$(2)/$$(PREFIX).elf: $(call sc_objs,$(2),$(MODEL_SRCS) $(APP_SRCS) $(SC_BOARD_SRCS) $(6)) $(4) $$(SC_BOARD_DIR)/cortex_m.ld $(2)/flags.txt
	$$(ARM_CC) $(3) $$(ARM_SPECS) -T$(4) -L$$(SC_BOARD_DIR) $$(ARM_LDFLAGS) $(7) \
	    -Wl,--defsym=__stack_size__=$$(ARM_STACK_SIZE) -Wl,--defsym=__heap_size__=$$(ARM_HEAP_SIZE) \
	    -Wl,-Map=$$(@:.elf=.map) -o $$@ $$(filter %.o,$$^) $$(ARM_LDLIBS)

$(2)/baseline.elf: $(call sc_objs,$(2),$(APP_SRCS) $(SC_BOARD_SRCS) $(SC_BOARD_DIR)/baseline.c $(BASELINE_SRCS) $(6)) $(4) $$(SC_BOARD_DIR)/cortex_m.ld $(2)/flags.txt
	$$(ARM_CC) $(3) $$(ARM_SPECS) -T$(4) -L$$(SC_BOARD_DIR) $$(ARM_LDFLAGS) \
	    -Wl,--defsym=__stack_size__=$$(ARM_STACK_SIZE) -Wl,--defsym=__heap_size__=$$(ARM_HEAP_SIZE) \
	    -Wl,-Map=$$(@:.elf=.map) -o $$@ $$(filter %.o,$$^) $$(ARM_LDLIBS)

-include $(patsubst %.o,%.d,$(call sc_objs,$(2),$(MODEL_SRCS) $(APP_SRCS) $(SC_BOARD_SRCS) $(SC_BOARD_DIR)/baseline.c $(BASELINE_SRCS) $(6)))
endef

comma := ,
SC_RUN_DEF := -DSC_RUN_FN=$(PREFIX)_run

$(eval $(call sc_variant,m4,build/m4,$$(M4_MCPU),$$(M4_LDSCRIPT),$$(SC_RUN_DEF),,))
$(eval $(call sc_variant,m3,build/m3,$$(M3_MCPU),$$(M3_LDSCRIPT),$$(SC_RUN_DEF),,))
$(eval $(call sc_variant,m4-profile,build/m4-profile,$$(M4_MCPU),$$(M4_LDSCRIPT),-DSC_PROFILE $$(SC_RUN_DEF),$(SC_PROFILE_SRCS),-Wl$(comma)--wrap=$(PREFIX)_run))
$(eval $(call sc_variant,m3-profile,build/m3-profile,$$(M3_MCPU),$$(M3_LDSCRIPT),-DSC_PROFILE $$(SC_RUN_DEF),$(SC_PROFILE_SRCS),-Wl$(comma)--wrap=$(PREFIX)_run))

build/m4-profile/calibrate.elf: $(call sc_objs,build/m4-profile,$(SC_BOARD_SRCS) $(SC_PROFILE_SRCS) $(SC_BOARD_DIR)/calibrate.c) $(M4_LDSCRIPT)
	$(ARM_CC) $(M4_MCPU) $(ARM_SPECS) -T$(M4_LDSCRIPT) -L$(SC_BOARD_DIR) $(ARM_LDFLAGS) \
	    -o $@ $(filter %.o,$^) $(ARM_LDLIBS)

SC_QEMU_M4 = $(SC_TIMEOUT) $(QEMU_TIMEOUT) $(QEMU) -M $(QEMU_M4_MACHINE) $(QEMU_FLAGS)
SC_QEMU_M3 = $(SC_TIMEOUT) $(QEMU_TIMEOUT) $(QEMU) -M $(QEMU_M3_MACHINE) $(QEMU_FLAGS)

sc-force:

.PHONY: sc-force cortex-m4 cortex-m3 qemu qemu-m3 size baseline profile profile-m3 profile-calibrate board-clean

cortex-m4: build/m4/$(PREFIX).elf
cortex-m3: build/m3/$(PREFIX).elf
baseline: build/m4/baseline.elf build/m3/baseline.elf

qemu: build/m4/$(PREFIX).elf
	$(SC_QEMU_M4) -kernel $<

qemu-m3: build/m3/$(PREFIX).elf
	$(SC_QEMU_M3) -kernel $<

size: build/m4/$(PREFIX).elf build/m4/baseline.elf
	$(ARM_SIZE) $^
	@$(ARM_SIZE) $^ | awk 'NR==2{t=$$1;d=$$2;b=$$3} NR==3{printf "model (code+weights+arena): text %d data %d bss %d\n", t-$$1, d-$$2, b-$$3}'

profile: build/m4-profile/$(PREFIX).elf
	$(SC_QEMU_M4) $(QEMU_ICOUNT) -kernel $<

profile-m3: build/m3-profile/$(PREFIX).elf
	$(SC_QEMU_M3) $(QEMU_ICOUNT) -kernel $<

profile-calibrate: build/m4-profile/calibrate.elf
	$(SC_QEMU_M4) $(QEMU_ICOUNT) -kernel $<

board-clean:
	rm -rf build/m4 build/m3 build/m4-profile build/m3-profile
