/*
 * sparsecomp runtime — elementwise functions that are not fused into a producer (codegen/ops/unary.py):
 * SiLU, GELU (erf, tanh), Mish, Softplus, ELU, abs, neg, clamp, arithmetic with a scalar, PReLU.
 * Each kernel: out[i] = f(x[i]; a, b), safe in place (out may equal x).
 * Float section first, then the int8 section (sc_i8_prelu; the other functions go int8 as sc_i8_lut).
 */
#ifndef SC_UNARY_H
#define SC_UNARY_H

#include "sc_runtime.h"
#include "sc_fixed.h" /* int8 */

#ifndef SC_ERFF
#define SC_ERFF erff
#endif
#ifndef SC_LOG1PF
#define SC_LOG1PF log1pf
#endif
#ifndef SC_EXPM1F
#define SC_EXPM1F expm1f
#endif

#define SC_UNARY_KERNEL(NAME, expr)                                                              \
    static inline void NAME(const float *x, float *out, int32_t n, float a, float b)             \
    {                                                                                          \
        int32_t i;                                                                             \
        (void)a;                                                                               \
        (void)b;                                                                               \
        for (i = 0; i < n; ++i) {                                                              \
            const float v = x[i];                                                              \
            out[i] = (expr);                                                                   \
        }                                                                                      \
    }

/* x * sigmoid(x), as torch: x / (1 + exp(-x)) */
SC_UNARY_KERNEL(sc_u_silu, v / (1.0f + SC_EXPF(-v)))
SC_UNARY_KERNEL(sc_u_gelu, 0.5f * v * (1.0f + SC_ERFF(v * 0.70710678118654752f)))
SC_UNARY_KERNEL(sc_u_gelu_tanh, 0.5f * v * (1.0f + SC_TANHF(0.79788456080286536f * (v + 0.044715f * v * v * v))))
/* softplus with beta a and threshold b: linear above the threshold (as torch) */
SC_UNARY_KERNEL(sc_u_softplus, v * a > b ? v : SC_LOG1PF(SC_EXPF(v * a)) / a)
SC_UNARY_KERNEL(sc_u_mish, v * SC_TANHF(v > 20.0f ? v : SC_LOG1PF(SC_EXPF(v))))
SC_UNARY_KERNEL(sc_u_elu, v > 0.0f ? v : a * SC_EXPM1F(v))
SC_UNARY_KERNEL(sc_u_abs, v < 0.0f ? -v : v)
SC_UNARY_KERNEL(sc_u_neg, -v)
SC_UNARY_KERNEL(sc_u_clamp, v < a ? a : (v > b ? b : v))
SC_UNARY_KERNEL(sc_u_clamp_min, v < a ? a : v)
SC_UNARY_KERNEL(sc_u_clamp_max, v > b ? b : v)
SC_UNARY_KERNEL(sc_u_add_s, v + a)
SC_UNARY_KERNEL(sc_u_sub_s, v - a)
SC_UNARY_KERNEL(sc_u_rsub_s, a - v)
SC_UNARY_KERNEL(sc_u_mul_s, v * a)
SC_UNARY_KERNEL(sc_u_div_s, v / a)
SC_UNARY_KERNEL(sc_u_rdiv_s, a / v)

/* PReLU: out[c][i] = x >= 0 ? x : w[c] * x over `channels` blocks of `inner` values. */
static inline void sc_prelu(const float *x, float *out, const float *w, int32_t channels, int32_t inner)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        const float s = w[c];
        for (i = 0; i < inner; ++i) {
            const float v = x[c * inner + i];
            out[c * inner + i] = v >= 0.0f ? v : s * v;
        }
    }
}

/* ---- int8 ---------------------------------------------------------------------------------- */

/* Any elementwise activation as a 256-entry table computed at generation time: y = lut[x + 128]. */
static inline void sc_i8_lut(const int8_t *x, int8_t *y, int32_t n, const int8_t *lut)
{
    int32_t i;
    for (i = 0; i < n; ++i) y[i] = lut[(int32_t)x[i] + 128];
}

typedef struct {
    int32_t in_zp, pos_mult, pos_shift, neg_mult, neg_shift, out_zp;
} sc_i8_prelu_params;

/* TFLite's PReLU: the identity and the slope side requantized with their own multipliers. */
static inline void sc_i8_prelu(const int8_t *x, int8_t *y, const int8_t *w, int32_t channels, int32_t inner,
                               const sc_i8_prelu_params *p)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        const int32_t wc = w[c];
        for (i = 0; i < inner; ++i) {
            const int32_t v = (int32_t)x[c * inner + i] - p->in_zp;
            y[c * inner + i] = v >= 0 ? sc_i8_requant(v, p->pos_mult, p->pos_shift, p->out_zp, -128, 127)
                                      : sc_i8_requant(v * wc, p->neg_mult, p->neg_shift, p->out_zp, -128, 127);
        }
    }
}

#endif /* SC_UNARY_H */
