/*
 * sparsecomp runtime — common definitions: status codes, activations, profiling hooks.
 * Shapes and parameters are computed at generation time and reach the kernels as constants.
 */
#ifndef SC_RUNTIME_H
#define SC_RUNTIME_H

#include "sc_port.h"

typedef enum {
    SC_OK = 0,
    SC_ERR_NULL_ARG = 1
} sc_status;

typedef enum {
    SC_ACT_NONE = 0,
    SC_ACT_RELU,
    SC_ACT_RELU6,
    SC_ACT_LEAKY_RELU,
    SC_ACT_SIGMOID,
    SC_ACT_TANH,
    SC_ACT_HARDSWISH,
    SC_ACT_HARDSIGMOID
} sc_act_kind;

/* SC_SMALL_CODE=1: compact dense conv/linear kernels (one output at a time, no register
 * blocking) instead of the fast ones. On by default when the compiler optimizes for size (-Os
 * defines __OPTIMIZE_SIZE__), off otherwise; -DSC_SMALL_CODE=0 or =1 overrides. */
#ifndef SC_SMALL_CODE
#if defined(__OPTIMIZE_SIZE__)
#define SC_SMALL_CODE 1
#else
#define SC_SMALL_CODE 0
#endif
#endif

/* a * b + c: one fused multiply-add where the FPU has it (the float kernels of every op family) */
#ifndef SC_FMA
#if defined(__FP_FAST_FMAF)
#define SC_FMA(a, b, c) __builtin_fmaf((a), (b), (c)) /* one VFMA on the Cortex-M4F */
#else
#define SC_FMA(a, b, c) ((a) * (b) + (c))
#endif
#endif

/* SC_ACT_MASK (bit k = sc_act_kind k) selects the activations compiled into sc_act; the
 * generated model.c defines it from the activations the model uses, so a ReLU-only model links
 * no expf/tanhf. Left undefined (runtime used on its own), every activation is compiled in. */
#ifndef SC_ACT_MASK
#define SC_ACT_MASK 0xffu
#endif

static inline float sc_act(float x, int act, float alpha)
{
    (void)alpha;
    switch (act) {
#if SC_ACT_MASK & 0x02u
    case SC_ACT_RELU: return x < 0.0f ? 0.0f : x; /* relu(NaN) = NaN, as torch (NaN < 0 is false) */
#endif
#if SC_ACT_MASK & 0x04u
    case SC_ACT_RELU6: return x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x);
#endif
#if SC_ACT_MASK & 0x08u
    case SC_ACT_LEAKY_RELU: return x >= 0.0f ? x : x * alpha;
#endif
#if SC_ACT_MASK & 0x10u
    case SC_ACT_SIGMOID: return 1.0f / (1.0f + SC_EXPF(-x));
#endif
#if SC_ACT_MASK & 0x20u
    case SC_ACT_TANH: return SC_TANHF(x);
#endif
#if SC_ACT_MASK & 0x40u
    case SC_ACT_HARDSWISH: {
        float r = x + 3.0f;
        r = r < 0.0f ? 0.0f : (r > 6.0f ? 6.0f : r);
        return x * r / 6.0f;
    }
#endif
#if SC_ACT_MASK & 0x80u
    case SC_ACT_HARDSIGMOID: {
        float r = x + 3.0f;
        r = r < 0.0f ? 0.0f : (r > 6.0f ? 6.0f : r);
        return r / 6.0f;
    }
#endif
    default: return x;
    }
}

/* Applies an activation to n values in place (no-op for SC_ACT_NONE). */
static inline void sc_act_inplace(float *x, int32_t n, int act, float alpha)
{
    int32_t i;
    if (act == SC_ACT_NONE) return;
    for (i = 0; i < n; ++i) x[i] = sc_act(x[i], act, alpha);
}

/* Per-layer profiling hooks: compile to nothing unless SC_PROFILE is defined, in which case
 * the application (or board/) provides these two functions. */
#ifdef SC_PROFILE
void sc_profile_begin(int idx, const char *name);
void sc_profile_end(int idx);
#define SC_LAYER_BEGIN(idx, name) sc_profile_begin((idx), (name))
#define SC_LAYER_END(idx) sc_profile_end(idx)
#else
#define SC_LAYER_BEGIN(idx, name) ((void)0)
#define SC_LAYER_END(idx) ((void)0)
#endif

/* Output positions o in [*lo, *hi) whose input position o*stride + off lies in [0, n_in). */
static inline void sc_valid_range(int32_t off, int32_t stride, int32_t n_in, int32_t n_out,
                                  int32_t *lo, int32_t *hi)
{
    int32_t a = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int32_t b = (n_in - off) <= 0 ? 0 : (n_in - off - 1) / stride + 1;
    if (b > n_out) b = n_out;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

#endif /* SC_RUNTIME_H */
