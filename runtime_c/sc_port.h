/*
 * sparsecomp runtime — porting knobs. Everything a port may need to change is here.
 *
 *   SC_WEIGHT      storage class of const weight arrays. Default: static const, kept by the
 *                  linker (used) so that the bytes in flash are exactly MODEL_WEIGHT_BYTES.
 *                  To place weights in a named flash section:
 *                    #define SC_WEIGHT_SECTION __attribute__((section(".rodata.weights")))
 *                  -DSC_KEEP_WEIGHTS (the board build sets it) puts them in .rodata.sc_weights, which
 *                  board/cortex_m.ld KEEPs even when --gc-sections finds an array unreferenced.
 *   SC_ARENA_ATTR  attributes of the activation arena (e.g. a fast-RAM section, or SC_NVM
 *                  for energy-harvesting devices that must keep progress across power loss).
 *   SC_NVM         placement of the state an early-exit model (model_ee.c) must keep across a power
 *                  loss between model_ee_step() calls: the arena and the step counter. Default:
 *                  nothing (ordinary RAM). On an energy-harvesting device put them in FRAM/MRAM, e.g.
 *                    #define SC_NVM __attribute__((section(".persistent")))
 *                  (a section the startup code does not zero). See model_ee.h.
 *   SC_EXPF/SC_TANHF/SC_LOGF  math functions (replace with a table or approximation if wanted).
 *
 * The runtime is C99, allocates nothing, and every function is static inline in a header, so
 * two models emitted with different prefixes link into one firmware without symbol clashes.
 */
#ifndef SC_PORT_H
#define SC_PORT_H

#include <stdint.h>
#include <stddef.h>
#include <math.h>

#if defined(__GNUC__)
#define SC_USED __attribute__((used))
#define SC_ALIGNED(n) __attribute__((aligned(n)))
#define SC_NOINLINE __attribute__((noinline, unused)) /* static helper with its own registers; may be unused */
#if defined(__OPTIMIZE_SIZE__)
#define SC_SPECIALIZE
#else
/* inlined at each call site so that the layer's constant parameters fold into the loops */
#define SC_SPECIALIZE __attribute__((always_inline))
#endif
#else
#define SC_SPECIALIZE
#define SC_USED
#define SC_ALIGNED(n)
#define SC_NOINLINE
#endif

#ifndef SC_WEIGHT_SECTION
#if defined(SC_KEEP_WEIGHTS) && defined(__GNUC__)
/* one named section the linker script keeps (board/cortex_m.ld: KEEP): with -fdata-sections and
 * --gc-sections an array whose few values the compiler folded into the code would otherwise be dropped,
 * and the weight bytes in flash would no longer be MODEL_WEIGHT_BYTES */
#define SC_WEIGHT_SECTION __attribute__((section(".rodata.sc_weights")))
#else
#define SC_WEIGHT_SECTION
#endif
#endif

#ifndef SC_WEIGHT
#define SC_WEIGHT static const SC_USED SC_WEIGHT_SECTION
#endif

#ifndef SC_ARENA_ATTR
#define SC_ARENA_ATTR SC_ALIGNED(8)
#endif

#ifndef SC_NVM
#define SC_NVM
#endif

#ifndef SC_EXPF
#define SC_EXPF expf
#endif
#ifndef SC_TANHF
#define SC_TANHF tanhf
#endif
#ifndef SC_LOGF
#define SC_LOGF logf
#endif

#endif /* SC_PORT_H */
