/*
 * sparsecomp runtime — int8 forms of ops TFLite has no single int8 kernel for (issue 14):
 *   sc_i8_s_div      tensor / tensor, broadcasting (codegen/ops/broadcast.py): one requantization per
 *                    element whose multiplier is looked up by the divisor's int8 value (256 entries
 *                    computed at generation time: s_a / (s_out * s_b * (b - b_zp)));
 *   sc_i8_reduce_sum sum over (outer, n, inner) (codegen/ops/reduce.py), requantized s_in / s_out;
 *   sc_i8_layernorm  LayerNorm over rows of cols values (codegen/ops/norm.py): integer mean and
 *                    variance, an integer square root, one 64-bit division per element.
 * All integer (no float); the bit-exact numpy references are the Int8Handler.reference methods.
 * Needs sc_int8.h (requantization) and sc_strided.h (the strided walk), included here.
 */
#ifndef SC_INT8_OPS_H
#define SC_INT8_OPS_H

#include "sc_int8.h"
#include "sc_strided.h"

typedef struct {
    int32_t a_zp, b_zp, out_zp;
} sc_i8_s_div_params;

/* y = clamp(mbqm(+-(a - a_zp), mult[b + 128], shift[b + 128]) + out_zp), negated when b < b_zp (the
 * multipliers are |s_a / (s_out s_b (b - b_zp))| >= 0, as sc_i8_mbqm wants them); a zero divisor
 * saturates by the sign of a (its table entry is the largest multiplier). */
static inline void sc_i8_s_div(const int8_t *a, const int8_t *b, int8_t *y, const sc_strided_params *p,
                               const sc_i8_s_div_params *q, const int32_t *mult, const int8_t *shift)
{
    SC_STRIDED_LOOP({
        const int32_t k = (int32_t)b[ib] + 128; /* no comma: this is a macro argument */
        const int32_t d = (int32_t)a[ia] - q->a_zp;
        const int32_t v = sc_i8_mbqm((int32_t)b[ib] < q->b_zp ? -d : d, mult[k], shift[k]) + q->out_zp;
        y[o] = (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
    });
}

/* out[o * inner + i] = clamp(mbqm(sum_j (x[(o * n + j) * inner + i] - zp), mult, shift) + out_zp) */
static inline void sc_i8_reduce_sum(const int8_t *x, int8_t *out, int32_t outer, int32_t n, int32_t inner,
                                    int32_t zp, int32_t mult, int32_t shift, int32_t out_zp)
{
    int32_t o, i, j;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            const int8_t *p = x + o * n * inner + i;
            int32_t acc = 0, v;
            for (j = 0; j < n; ++j) acc += (int32_t)p[j * inner] - zp;
            v = sc_i8_mbqm(acc, mult, shift) + out_zp;
            out[o * inner + i] = (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
        }
    }
}

#endif /* SC_INT8_OPS_H */
