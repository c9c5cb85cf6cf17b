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

/* add / sub / mul in int32 with plain integer multipliers and one rounding shift (codegen.integer.add_constants,
 * mul_constants; sub is an add with b's multiplier negated), as sc_i8_add / sc_i8_mul of sc_eltwise.h. The rows
 * of the innermost dim are walked with the broadcast operand's term computed once per row (SE-style scaling,
 * a bias per channel): for the mul, (b - b_zp) * mult and round - a_zp (b - b_zp) mult are each below 2^30
 * in magnitude (|b - b_zp| <= 255, mult < 2^14), so the row loop is one multiply-add per element. */
#define SC_I8_STRIDED_ROWS(ROW)                                                                  \
    do {                                                                                       \
        int32_t i0, i1, i2, i3, o = 0;                                                         \
        const int32_t n3 = p->n[3], sa3 = p->sa[3], sb3 = p->sb[3];                             \
        for (i0 = 0; i0 < p->n[0]; ++i0)                                                       \
            for (i1 = 0; i1 < p->n[1]; ++i1)                                                   \
                for (i2 = 0; i2 < p->n[2]; ++i2, o += n3) {                                    \
                    const int8_t *const ar = a + i0 * p->sa[0] + i1 * p->sa[1] + i2 * p->sa[2]; \
                    const int8_t *const br = b + i0 * p->sb[0] + i1 * p->sb[1] + i2 * p->sb[2]; \
                    int8_t *const yr = y + o;                                                  \
                    ROW;                                                                       \
                }                                                                              \
    } while (0)

typedef struct {
    int32_t k, a_mult, b_mult, shift, out_zp;
} sc_i8_s_add_params;

static inline void sc_i8_s_add(const int8_t *a, const int8_t *b, int8_t *y, const sc_strided_params *p,
                               const sc_i8_s_add_params *q)
{
    SC_I8_STRIDED_ROWS({
        if (sb3 == 0) {
            const int32_t c = sc_opaque32(q->k + (int32_t)br[0] * q->b_mult);
            for (i3 = 0; i3 < n3; ++i3)
                yr[i3] = sc_ssat8(((c + (int32_t)ar[i3 * sa3] * q->a_mult) >> q->shift) + q->out_zp);
        } else if (sa3 == 0) {
            const int32_t c = sc_opaque32(q->k + (int32_t)ar[0] * q->a_mult);
            for (i3 = 0; i3 < n3; ++i3)
                yr[i3] = sc_ssat8(((c + (int32_t)br[i3 * sb3] * q->b_mult) >> q->shift) + q->out_zp);
        } else {
            for (i3 = 0; i3 < n3; ++i3) {
                const int32_t acc = q->k + (int32_t)ar[i3 * sa3] * q->a_mult + (int32_t)br[i3 * sb3] * q->b_mult;
                yr[i3] = sc_ssat8((acc >> q->shift) + q->out_zp);
            }
        }
    });
}

typedef struct {
    int32_t a_zp, b_zp, mult, round, shift, out_zp;
} sc_i8_s_mul_params;

static inline void sc_i8_s_mul(const int8_t *a, const int8_t *b, int8_t *y, const sc_strided_params *p,
                               const sc_i8_s_mul_params *q)
{
    SC_I8_STRIDED_ROWS({
        if (sb3 == 0 || sa3 == 0) { /* one operand constant along the row (no comma: a macro argument) */
            const int8_t *const v = sb3 == 0 ? ar : br;
            const int32_t sv = sb3 == 0 ? sa3 : sb3;
            const int32_t zv = sb3 == 0 ? q->a_zp : q->b_zp;
            const int32_t c = sc_opaque32(((int32_t)(sb3 == 0 ? br[0] : ar[0]) - (sb3 == 0 ? q->b_zp : q->a_zp)) * q->mult);
            const int32_t c0 = sc_opaque32(q->round - zv * c);
            for (i3 = 0; i3 < n3; ++i3)
                yr[i3] = sc_ssat8((((int32_t)v[i3 * sv] * c + c0) >> q->shift) + q->out_zp);
        } else {
            for (i3 = 0; i3 < n3; ++i3) {
                const int32_t prod = ((int32_t)ar[i3 * sa3] - q->a_zp) * ((int32_t)br[i3 * sb3] - q->b_zp);
                yr[i3] = sc_ssat8(((prod * q->mult + q->round) >> q->shift) + q->out_zp);
            }
        }
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
        /* clamped before out_zp is added: a saturated quotient (a zero divisor) is near INT32_MIN/MAX */
        y[o] = sc_i8_requant((int32_t)b[ib] < q->b_zp ? -d : d, mult[k], shift[k], q->out_zp, -128, 127);
    });
}

#endif /* SC_STRIDED_H */
