/*
 * sparsecomp runtime — fully integer inference (int8 activations, int8 weights, int32
 * accumulation, fixed-point requantization). No float at run time: every kernel here uses
 * int32 arithmetic plus one 32x32->64-bit multiply (SMULL on Cortex-M3/M4).
 *
 * Quantization (codegen/integer.py computes every constant at generation time):
 *   activation  real = scale * (q - zero_point), q int8, one scale/zero point per tensor
 *   weight      real = w_scale[oc] * q, q int8 in [-127, 127] (symmetric per output channel)
 *   bias        int32 at scale in_scale * w_scale[oc]
 *   requantize  out = clamp(sc_i8_mbqm(acc, mult[oc], shift[oc]) + out_zp, act_min, act_max)
 *               with mult * 2^(shift - 31) = in_scale * w_scale[oc] / out_scale; fused ReLU/ReLU6
 *               are the clamp bounds act_min/act_max.
 * Rounding is TFLite's MultiplyByQuantizedMultiplier: SaturatingRoundingDoublingHighMul then
 * RoundingDivideByPOT (codegen/integer.py has the bit-exact numpy reference). The left shift of a
 * multiplier >= 1 saturates instead of overflowing.
 *
 * Weights use the int8 encodings of codegen/formats.py without their float scale array:
 *   q8 (dense rows), q8_csr_<it>_<pt> (CSR), q8_rel_<pt> (relative-index stream, LSB-first).
 */
#ifndef SC_INT8_H
#define SC_INT8_H

#include "sc_runtime.h"

/* ---- fixed-point primitives ----------------------------------------------------------------- */

/* round(a * b / 2^31), ties away from zero; saturates the single overflow case. */
static inline int32_t sc_i8_srdhm(int32_t a, int32_t b)
{
    int64_t ab, v;
    if (a == b && a == INT32_MIN) return INT32_MAX;
    ab = (int64_t)a * (int64_t)b;
    v = ab + (ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
    return (int32_t)(v >= 0 ? (v >> 31) : -((-v) >> 31)); /* division truncating toward zero */
}

/* x / 2^e rounded to nearest, ties away from zero (e in 0..31). */
static inline int32_t sc_i8_rdbpot(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)((((uint32_t)1) << e) - 1u);
    const int32_t rem = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (rem > threshold ? 1 : 0);
}

/* x * mult * 2^(shift - 31), rounded (TFLite's MultiplyByQuantizedMultiplier). */
static inline int32_t sc_i8_mbqm(int32_t x, int32_t mult, int32_t shift)
{
    if (shift > 0) {
        if (x > (INT32_MAX >> shift)) x = INT32_MAX;
        else if (x < (INT32_MIN >> shift)) x = INT32_MIN;
        else x = x * ((int32_t)1 << shift);
        return sc_i8_srdhm(x, mult);
    }
    return sc_i8_rdbpot(sc_i8_srdhm(x, mult), -shift);
}

static inline int8_t sc_i8_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* ---- LSB-first bit reader (as sc_quant.h), started at any bit ------------------------------- */

typedef struct {
    const uint8_t *p;
    uint32_t buf;
    int32_t n;
} sc_i8_bits;

static inline uint32_t sc_i8_bits_get(sc_i8_bits *r, int32_t width)
{
    uint32_t v;
    while (r->n < width) {
        r->buf |= (uint32_t)(*r->p++) << r->n;
        r->n += 8;
    }
    v = r->buf & ((1u << width) - 1u);
    r->buf >>= width;
    r->n -= width;
    return v;
}

static inline void sc_i8_bits_at(sc_i8_bits *r, const uint8_t *stream, uint32_t bit)
{
    r->p = stream + (bit >> 3);
    r->buf = 0u;
    r->n = 0;
    if (bit & 7u) (void)sc_i8_bits_get(r, (int32_t)(bit & 7u));
}

static inline int32_t sc_i8_s8(uint32_t v)
{
    const int32_t b = (int32_t)(v & 0xFFu);
    return b - ((b & 0x80) << 1);
}

/* ---- linear: y[r][o] = requant(bias[o] + sum_i q[o][i] * x[r][i]) -----------------------------
 * bias already holds -in_zp * sum_i q[o][i] (folded at generation time), so the inner loop
 * multiplies raw int8 inputs. */

typedef struct {
    int32_t rows, in, out;
    int32_t out_zp, act_min, act_max;
} sc_i8_linear_params;

#define SC_I8_LINEAR_OUT                                                                          \
    yr[o] = sc_i8_clamp(sc_i8_mbqm(acc, mult[o], shift[o]) + p->out_zp, p->act_min, p->act_max)

static inline void sc_i8_linear_q8(const int8_t *x, int8_t *y, const int8_t *q, const int32_t *bias,
                                   const int32_t *mult, const int8_t *shift, const sc_i8_linear_params *p)
{
    int32_t r, o, i;
    for (r = 0; r < p->rows; ++r) {
        const int8_t *xr = x + r * p->in;
        const int8_t *wr = q;
        int8_t *yr = y + r * p->out;
        for (o = 0; o < p->out; ++o) {
            int32_t acc = bias ? bias[o] : 0;
            for (i = 0; i < p->in; ++i) acc += (int32_t)wr[i] * (int32_t)xr[i];
            wr += p->in;
            SC_I8_LINEAR_OUT;
        }
    }
}

#define SC_I8_DEFINE_LINEAR_CSR(IS, PS, IT, PT)                                                   \
    static inline void sc_i8_linear_q8_csr_##IS##_##PS(                                          \
        const int8_t *x, int8_t *y, const int8_t *q, const IT *col, const PT *ptr,               \
        const int32_t *bias, const int32_t *mult, const int8_t *shift,                           \
        const sc_i8_linear_params *p)                                                            \
    {                                                                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const int8_t *xr = x + r * p->in;                                                    \
            int8_t *yr = y + r * p->out;                                                         \
            for (o = 0; o < p->out; ++o) {                                                       \
                int32_t acc = bias ? bias[o] : 0;                                                \
                const int32_t end = (int32_t)ptr[o + 1];                                         \
                for (k = (int32_t)ptr[o]; k < end; ++k) acc += (int32_t)q[k] * (int32_t)xr[col[k]]; \
                SC_I8_LINEAR_OUT;                                                                \
            }                                                                                    \
        }                                                                                        \
    }

#define SC_I8_DEFINE_LINEAR_REL(PS, PT)                                                           \
    static inline void sc_i8_linear_q8_rel_##PS(                                                 \
        const int8_t *x, int8_t *y, const uint8_t *stream, const PT *ptr, int32_t gap_bits,      \
        const int32_t *bias, const int32_t *mult, const int8_t *shift,                           \
        const sc_i8_linear_params *p)                                                            \
    {                                                                                            \
        const uint32_t gmask = (1u << gap_bits) - 1u;                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const int8_t *xr = x + r * p->in;                                                    \
            int8_t *yr = y + r * p->out;                                                         \
            sc_i8_bits br;                                                                       \
            sc_i8_bits_at(&br, stream, 0u);                                                      \
            for (o = 0; o < p->out; ++o) {                                                       \
                int32_t acc = bias ? bias[o] : 0, pos = 0;                                       \
                const int32_t n = (int32_t)ptr[o + 1] - (int32_t)ptr[o];                         \
                for (k = 0; k < n; ++k) {                                                        \
                    const uint32_t f = sc_i8_bits_get(&br, gap_bits + 8);                        \
                    pos += (int32_t)(f & gmask);                                                 \
                    acc += sc_i8_s8(f >> gap_bits) * (int32_t)xr[pos++];                         \
                }                                                                                \
                SC_I8_LINEAR_OUT;                                                                \
            }                                                                                    \
        }                                                                                        \
    }

/* ---- convolution (also Conv1d with H == 1; depthwise with groups == cin) ----------------------
 * Output-stationary: acc = bias[oc] + sum over in-bounds taps of q * (x - in_zp); padded taps are
 * real zeros (x == in_zp) and contribute nothing. */

typedef struct {
    int32_t cin, hin, win, cout, hout, wout;
    int32_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int32_t in_zp, out_zp, act_min, act_max;
} sc_i8_conv_params;

/* acc += q * (x - in_zp) for the tap at flat row position j = (ci * kh + ky) * kw + kx. */
static inline int32_t sc_i8_conv_tap(const int8_t *in_g, int32_t j, int32_t qv, int32_t iy0, int32_t ix0,
                                     const sc_i8_conv_params *p)
{
    const int32_t khw = p->kh * p->kw;
    const int32_t ci = j / khw, rr = j - ci * khw;
    const int32_t ky = rr / p->kw, kx = rr - ky * p->kw;
    const int32_t iy = iy0 + ky * p->dh, ix = ix0 + kx * p->dw;
    if (iy < 0 || iy >= p->hin || ix < 0 || ix >= p->win) return 0;
    return qv * ((int32_t)in_g[(ci * p->hin + iy) * p->win + ix] - p->in_zp);
}

/* SC_I8_CONV_BEGIN { acc += ... } SC_I8_CONV_END: the output-stationary loop around one output
 * position's accumulation (oc, in_g, iy0, ix0, acc and row_len are in scope inside). */
#define SC_I8_CONV_BEGIN                                                                          \
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;                     \
    const int32_t row_len = cin_g * p->kh * p->kw;                                               \
    int32_t oc, oy, ox;                                                                          \
    (void)row_len;                                                                               \
    for (oc = 0; oc < p->cout; ++oc) {                                                           \
        const int8_t *in_g = in + (oc / cout_g) * cin_g * p->hin * p->win;                      \
        for (oy = 0; oy < p->hout; ++oy) {                                                       \
            const int32_t iy0 = oy * p->sh - p->ph;                                              \
            for (ox = 0; ox < p->wout; ++ox) {                                                   \
                const int32_t ix0 = ox * p->sw - p->pw;                                          \
                int32_t acc = bias ? bias[oc] : 0;

#define SC_I8_CONV_END                                                                            \
                *out++ = sc_i8_clamp(sc_i8_mbqm(acc, mult[oc], shift[oc]) + p->out_zp,           \
                                     p->act_min, p->act_max);                                    \
            }                                                                                    \
        }                                                                                        \
    }

/* [lo, hi) of the kernel taps k with 0 <= base + k * d < n. */
static inline void sc_i8_tap_range(int32_t base, int32_t d, int32_t n, int32_t k, int32_t *lo, int32_t *hi)
{
    *lo = base >= 0 ? 0 : (-base + d - 1) / d;
    *hi = n - 1 - base < 0 ? 0 : (n - 1 - base) / d + 1;
    if (*hi > k) *hi = k;
}

static inline void sc_i8_conv_q8(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                 const int32_t *mult, const int8_t *shift, const sc_i8_conv_params *p)
{
    SC_I8_CONV_BEGIN
    {
        const int8_t *wr = q + oc * row_len;
        int32_t ci, ky, kx, ky0, ky1, kx0, kx1;
        sc_i8_tap_range(iy0, p->dh, p->hin, p->kh, &ky0, &ky1);
        sc_i8_tap_range(ix0, p->dw, p->win, p->kw, &kx0, &kx1);
        for (ci = 0; ci < cin_g; ++ci) {
            const int8_t *in_c = in_g + ci * p->hin * p->win;
            const int8_t *wc = wr + ci * p->kh * p->kw;
            for (ky = ky0; ky < ky1; ++ky) {
                const int32_t r = (iy0 + ky * p->dh) * p->win + ix0; /* + kx * dw >= 0 for kx >= kx0 */
                const int8_t *wrow = wc + ky * p->kw;
                for (kx = kx0; kx < kx1; ++kx) acc += (int32_t)wrow[kx] * ((int32_t)in_c[r + kx * p->dw] - p->in_zp);
            }
        }
    }
    SC_I8_CONV_END
}

#define SC_I8_DEFINE_CONV_CSR(IS, PS, IT, PT)                                                     \
    static inline void sc_i8_conv_q8_csr_##IS##_##PS(                                            \
        const int8_t *in, int8_t *out, const int8_t *q, const IT *col, const PT *ptr,            \
        const int32_t *bias, const int32_t *mult, const int8_t *shift,                           \
        const sc_i8_conv_params *p)                                                              \
    {                                                                                            \
        SC_I8_CONV_BEGIN {                                                                       \
            int32_t k;                                                                           \
            const int32_t end = (int32_t)ptr[oc + 1];                                            \
            for (k = (int32_t)ptr[oc]; k < end; ++k)                                             \
                acc += sc_i8_conv_tap(in_g, (int32_t)col[k], (int32_t)q[k], iy0, ix0, p);        \
        } SC_I8_CONV_END                                                                         \
    }

#define SC_I8_DEFINE_CONV_REL(PS, PT)                                                             \
    static inline void sc_i8_conv_q8_rel_##PS(                                                   \
        const int8_t *in, int8_t *out, const uint8_t *stream, const PT *ptr, int32_t gap_bits,   \
        const int32_t *bias, const int32_t *mult, const int8_t *shift,                           \
        const sc_i8_conv_params *p)                                                              \
    {                                                                                            \
        const uint32_t gmask = (1u << gap_bits) - 1u;                                            \
        SC_I8_CONV_BEGIN {                                                                       \
            int32_t k, pos = 0;                                                                  \
            const int32_t n = (int32_t)ptr[oc + 1] - (int32_t)ptr[oc];                           \
            sc_i8_bits br;                                                                       \
            sc_i8_bits_at(&br, stream, (uint32_t)ptr[oc] * (uint32_t)(gap_bits + 8));            \
            for (k = 0; k < n; ++k) {                                                            \
                const uint32_t f = sc_i8_bits_get(&br, gap_bits + 8);                            \
                const int32_t qv = sc_i8_s8(f >> gap_bits);                                      \
                pos += (int32_t)(f & gmask);                                                     \
                if (qv) acc += sc_i8_conv_tap(in_g, pos, qv, iy0, ix0, p);                       \
                ++pos;                                                                           \
            }                                                                                    \
        } SC_I8_CONV_END                                                                         \
    }

#define SC_I8_DEFINE_CSR_ALL(IS, PS, IT, PT)                                                      \
    SC_I8_DEFINE_LINEAR_CSR(IS, PS, IT, PT)                                                      \
    SC_I8_DEFINE_CONV_CSR(IS, PS, IT, PT)

SC_I8_DEFINE_CSR_ALL(u8, u8, uint8_t, uint8_t)
SC_I8_DEFINE_CSR_ALL(u8, u16, uint8_t, uint16_t)
SC_I8_DEFINE_CSR_ALL(u8, u32, uint8_t, uint32_t)
SC_I8_DEFINE_CSR_ALL(u16, u8, uint16_t, uint8_t)
SC_I8_DEFINE_CSR_ALL(u16, u16, uint16_t, uint16_t)
SC_I8_DEFINE_CSR_ALL(u16, u32, uint16_t, uint32_t)
SC_I8_DEFINE_CSR_ALL(u32, u8, uint32_t, uint8_t)
SC_I8_DEFINE_CSR_ALL(u32, u16, uint32_t, uint16_t)
SC_I8_DEFINE_CSR_ALL(u32, u32, uint32_t, uint32_t)
SC_I8_DEFINE_LINEAR_REL(u8, uint8_t)
SC_I8_DEFINE_LINEAR_REL(u16, uint16_t)
SC_I8_DEFINE_LINEAR_REL(u32, uint32_t)
SC_I8_DEFINE_CONV_REL(u8, uint8_t)
SC_I8_DEFINE_CONV_REL(u16, uint16_t)
SC_I8_DEFINE_CONV_REL(u32, uint32_t)

/* ---- pooling (input and output share scale and zero point) ---------------------------------- */

typedef struct {
    int32_t c, hin, win, hout, wout;
    int32_t kh, kw, sh, sw, ph, pw, dh, dw;
    int32_t count_include_pad, divisor, zp;
} sc_i8_pool_params;

static inline void sc_i8_maxpool(const int8_t *in, int8_t *out, const sc_i8_pool_params *p)
{
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < p->c; ++c) {
        const int8_t *ic = in + c * p->hin * p->win;
        for (oy = 0; oy < p->hout; ++oy) {
            for (ox = 0; ox < p->wout; ++ox) {
                int32_t m = -128;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int32_t iy = oy * p->sh - p->ph + ky * p->dh;
                    if (iy < 0 || iy >= p->hin) continue;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int32_t ix = ox * p->sw - p->pw + kx * p->dw;
                        if (ix >= 0 && ix < p->win && ic[iy * p->win + ix] > m) m = ic[iy * p->win + ix];
                    }
                }
                *out++ = (int8_t)m;
            }
        }
    }
}

/* sum of (x - zp) over the window divided by the PyTorch divisor, rounded half away from zero. */
static inline void sc_i8_avgpool(const int8_t *in, int8_t *out, const sc_i8_pool_params *p)
{
    int32_t c, oy, ox, y, x;
    for (c = 0; c < p->c; ++c) {
        const int8_t *ic = in + c * p->hin * p->win;
        for (oy = 0; oy < p->hout; ++oy) {
            for (ox = 0; ox < p->wout; ++ox) {
                int32_t hs = oy * p->sh - p->ph, ws = ox * p->sw - p->pw;
                int32_t he = hs + p->kh, we = ws + p->kw, n, sum = 0, avg;
                if (he > p->hin + p->ph) he = p->hin + p->ph;
                if (we > p->win + p->pw) we = p->win + p->pw;
                n = (he - hs) * (we - ws);
                if (hs < 0) hs = 0;
                if (ws < 0) ws = 0;
                if (he > p->hin) he = p->hin;
                if (we > p->win) we = p->win;
                for (y = hs; y < he; ++y)
                    for (x = ws; x < we; ++x) sum += (int32_t)ic[y * p->win + x] - p->zp;
                if (p->divisor) n = p->divisor;
                else if (!p->count_include_pad) n = (he - hs) * (we - ws);
                if (n <= 0) n = 1;
                avg = sum > 0 ? (sum + n / 2) / n : (sum - n / 2) / n;
                *out++ = sc_i8_clamp(avg + p->zp, -128, 127);
            }
        }
    }
}

/* ---- elementwise ---------------------------------------------------------------------------- */

typedef struct {
    int32_t a_zp, a_mult, a_shift, b_zp, b_mult, b_shift;
    int32_t left_shift, out_mult, out_shift, out_zp, act_min, act_max;
} sc_i8_add_params;

/* TFLite's int8 add: both operands scaled to 2 * max(scale) with 2^left_shift headroom. */
static inline void sc_i8_add(const int8_t *a, const int8_t *b, int8_t *y, int32_t n, const sc_i8_add_params *p)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t av = sc_i8_mbqm(((int32_t)a[i] - p->a_zp) * ((int32_t)1 << p->left_shift), p->a_mult, p->a_shift);
        const int32_t bv = sc_i8_mbqm(((int32_t)b[i] - p->b_zp) * ((int32_t)1 << p->left_shift), p->b_mult, p->b_shift);
        y[i] = sc_i8_clamp(sc_i8_mbqm(av + bv, p->out_mult, p->out_shift) + p->out_zp, p->act_min, p->act_max);
    }
}

typedef struct {
    int32_t a_zp, b_zp, mult, shift, out_zp, act_min, act_max;
} sc_i8_mul_params;

static inline void sc_i8_mul(const int8_t *a, const int8_t *b, int8_t *y, int32_t n, const sc_i8_mul_params *p)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t prod = ((int32_t)a[i] - p->a_zp) * ((int32_t)b[i] - p->b_zp);
        y[i] = sc_i8_clamp(sc_i8_mbqm(prod, p->mult, p->shift) + p->out_zp, p->act_min, p->act_max);
    }
}

/* One input of a concatenation: `outer` blocks of `size` values, requantized to the output's
 * scale, written every `stride` values of y. */
static inline void sc_i8_concat_part(const int8_t *x, int8_t *y, int32_t outer, int32_t size, int32_t stride,
                                     int32_t in_zp, int32_t mult, int32_t shift, int32_t out_zp)
{
    int32_t o, i;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < size; ++i)
            y[i] = sc_i8_clamp(sc_i8_mbqm((int32_t)x[i] - in_zp, mult, shift) + out_zp, -128, 127);
        x += size;
        y += stride;
    }
}

/* Any elementwise activation as a 256-entry table computed at generation time: y = lut[x + 128]. */
static inline void sc_i8_lut(const int8_t *x, int8_t *y, int32_t n, const int8_t *lut)
{
    int32_t i;
    for (i = 0; i < n; ++i) y[i] = lut[(int32_t)x[i] + 128];
}

/* Constant padding of the last two dims of (C, H, W) with the quantized pad value. */
static inline void sc_i8_pad(const int8_t *x, int8_t *y, int32_t c, int32_t hin, int32_t win, int32_t hout,
                             int32_t wout, int32_t top, int32_t left, int32_t value)
{
    int32_t ch, oy, ox;
    for (ch = 0; ch < c; ++ch) {
        for (oy = 0; oy < hout; ++oy) {
            const int32_t iy = oy - top;
            for (ox = 0; ox < wout; ++ox) {
                const int32_t ix = ox - left;
                *y++ = (iy >= 0 && iy < hin && ix >= 0 && ix < win) ? x[iy * win + ix] : (int8_t)value;
            }
        }
        x += hin * win;
    }
}

static inline void sc_i8_copy(const int8_t *x, int8_t *y, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) y[i] = x[i];
}

#endif /* SC_INT8_H */
