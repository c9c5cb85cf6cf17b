/*
 * sparsecomp runtime — elementwise binary ops over a strided index space (codegen/ops/broadcast.py):
 * broadcasting add, sub, mul, div. The index space has 4 dims n[0..3] (C order); operand a is read at
 * element i . sa, b at i . sb (stride 0 on a broadcast dim). Safe in place over a full-size operand
 * (it is read at the index written). Float section first, then the int8 section.
 */
#ifndef SC_STRIDED_H
#define SC_STRIDED_H

#include "sc_runtime.h"
#include "sc_fixed.h" /* int8 */

typedef struct {
    int32_t n[4], sa[4], sb[4];
} sc_strided_params;

#define SC_STRIDED_LOOP(BODY)                                                                    \
    do {                                                                                       \
        int32_t i0, i1, i2, i3, o = 0;                                                         \
        for (i0 = 0; i0 < p->n[0]; ++i0)                                                       \
            for (i1 = 0; i1 < p->n[1]; ++i1)                                                   \
                for (i2 = 0; i2 < p->n[2]; ++i2) {                                             \
                    const int32_t ja = i0 * p->sa[0] + i1 * p->sa[1] + i2 * p->sa[2];          \
                    const int32_t jb = i0 * p->sb[0] + i1 * p->sb[1] + i2 * p->sb[2];          \
                    for (i3 = 0; i3 < p->n[3]; ++i3, ++o) {                                    \
                        const int32_t ia = ja + i3 * p->sa[3], ib = jb + i3 * p->sb[3];        \
                        BODY;                                                                  \
                    }                                                                          \
                }                                                                              \
    } while (0)

static inline void sc_s_add(const float *a, const float *b, float *out, const sc_strided_params *p)
{
    SC_STRIDED_LOOP(out[o] = a[ia] + b[ib]);
}

static inline void sc_s_sub(const float *a, const float *b, float *out, const sc_strided_params *p)
{
    SC_STRIDED_LOOP(out[o] = a[ia] - b[ib]);
}

static inline void sc_s_mul(const float *a, const float *b, float *out, const sc_strided_params *p)
{
    SC_STRIDED_LOOP(out[o] = a[ia] * b[ib]);
}

static inline void sc_s_div(const float *a, const float *b, float *out, const sc_strided_params *p)
{
    SC_STRIDED_LOOP(out[o] = a[ia] / b[ib]);
}

/* ---- int8 ---------------------------------------------------------------------------------- */

typedef struct {
    int32_t a_zp, a_mult, a_shift, b_zp, b_mult, b_shift, left_shift, out_mult, out_shift, out_zp, sub;
} sc_i8_s_add_params;

/* TFLite's int8 add (sub: the rescaled b subtracted), broadcasting. */
static inline void sc_i8_s_add(const int8_t *a, const int8_t *b, int8_t *y, const sc_strided_params *p,
                               const sc_i8_s_add_params *q)
{
    SC_STRIDED_LOOP({
        const int32_t av = sc_i8_mbqm(((int32_t)a[ia] - q->a_zp) * ((int32_t)1 << q->left_shift), q->a_mult, q->a_shift);
        const int32_t bv = sc_i8_mbqm(((int32_t)b[ib] - q->b_zp) * ((int32_t)1 << q->left_shift), q->b_mult, q->b_shift);
        y[o] = sc_i8_requant(q->sub ? av - bv : av + bv, q->out_mult, q->out_shift, q->out_zp, -128, 127);
    });
}

typedef struct {
    int32_t a_zp, b_zp, mult, shift, out_zp;
} sc_i8_s_mul_params;

/* TFLite's int8 mul, broadcasting. */
static inline void sc_i8_s_mul(const int8_t *a, const int8_t *b, int8_t *y, const sc_strided_params *p,
                               const sc_i8_s_mul_params *q)
{
    SC_STRIDED_LOOP({
        const int32_t v = ((int32_t)a[ia] - q->a_zp) * ((int32_t)b[ib] - q->b_zp);
        y[o] = sc_i8_requant(v, q->mult, q->shift, q->out_zp, -128, 127);
    });
}

/* tensor / tensor (TFLite has no int8 div): one requantization per element, its multiplier looked up
 * by the divisor's int8 value (codegen/ops/broadcast.py div_tables). */
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

#endif /* SC_STRIDED_H */
