/*
 * sparsecomp runtime — elementwise and data-movement ops, float32. Elementwise kernels are
 * safe in place (out may equal an input): the planner uses that to save arena memory.
 */
#ifndef SC_ELTWISE_H
#define SC_ELTWISE_H

#include "sc_runtime.h"
#include "sc_fixed.h" /* int8 */

static inline void sc_add(const float *a, const float *b, float *out, int32_t n, int act, float alpha)
{
    int32_t i;
    for (i = 0; i < n; ++i) out[i] = sc_act(a[i] + b[i], act, alpha);
}

static inline void sc_mul(const float *a, const float *b, float *out, int32_t n, int act, float alpha)
{
    int32_t i;
    for (i = 0; i < n; ++i) out[i] = sc_act(a[i] * b[i], act, alpha);
}

static inline void sc_activation(const float *x, float *out, int32_t n, int act, float alpha)
{
    int32_t i;
    for (i = 0; i < n; ++i) out[i] = sc_act(x[i], act, alpha);
}

/* Inference-form BatchNorm: out[c][i] = act(x[c][i] * scale[c] + shift[c]). */
static inline void sc_affine(const float *x, float *out, const float *scale, const float *shift,
                             int32_t channels, int32_t inner, int act, float alpha)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        const float s = scale[c], t = shift[c];
        for (i = 0; i < inner; ++i) out[c * inner + i] = sc_act(x[c * inner + i] * s + t, act, alpha);
    }
}

/* A parameter operand of add/sub (shift only) or of mul/div (scale only): y = x + shift[c] / x * scale[c]. */
static inline void sc_affine_shift(const float *x, float *out, const float *shift, int32_t channels,
                                   int32_t inner, int act, float alpha)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        const float t = shift[c];
        for (i = 0; i < inner; ++i) out[c * inner + i] = sc_act(x[c * inner + i] + t, act, alpha);
    }
}

static inline void sc_affine_scale(const float *x, float *out, const float *scale, int32_t channels,
                                   int32_t inner, int act, float alpha)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        const float s = scale[c];
        for (i = 0; i < inner; ++i) out[c * inner + i] = sc_act(x[c * inner + i] * s, act, alpha);
    }
}

static inline void sc_copy(float *dst, const float *src, int32_t n)
{
    int32_t i;
    if (dst == src) return;
    for (i = 0; i < n; ++i) dst[i] = src[i];
}

/* One input of a concatenation: `outer` blocks of `part` values, placed at `offset` within
 * output blocks of `total` values. */
static inline void sc_concat_part(float *out, const float *in, int32_t outer, int32_t part,
                                  int32_t total, int32_t offset)
{
    int32_t o;
    for (o = 0; o < outer; ++o) sc_copy(out + o * total + offset, in + o * part, part);
}

/* Softmax (or log-softmax) over rows of `cols` values. */
static inline void sc_softmax(const float *x, float *out, int32_t rows, int32_t cols, int log_)
{
    int32_t r, i;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * cols;
        float *yr = out + r * cols;
        float m = xr[0], sum = 0.0f;
        for (i = 1; i < cols; ++i)
            if (xr[i] > m) m = xr[i];
        if (log_) {
            float lse;
            for (i = 0; i < cols; ++i) sum += SC_EXPF(xr[i] - m);
            lse = SC_LOGF(sum);
            for (i = 0; i < cols; ++i) yr[i] = xr[i] - m - lse;
        } else {
            for (i = 0; i < cols; ++i) {
                yr[i] = SC_EXPF(xr[i] - m);
                sum += yr[i];
            }
            for (i = 0; i < cols; ++i) yr[i] /= sum;
        }
    }
}

/* Constant padding of (C, H, W) to (C, Hout, Wout), input placed at (top, left). */
static inline void sc_pad(const float *in, float *out, int32_t c, int32_t hin, int32_t win,
                          int32_t hout, int32_t wout, int32_t top, int32_t left, float value)
{
    int32_t ch, y, x;
    for (ch = 0; ch < c; ++ch) {
        float *oc = out + ch * hout * wout;
        const float *ic = in + ch * hin * win;
        for (y = 0; y < hout * wout; ++y) oc[y] = value;
        for (y = 0; y < hin; ++y)
            for (x = 0; x < win; ++x) oc[(y + top) * wout + x + left] = ic[y * win + x];
    }
}

/* ==== int8 ==================================================================================== */

/* ---- elementwise ---------------------------------------------------------------------------- */

/* y = clamp(((k + a * a_mult + b * b_mult) >> shift) + out_zp): both operands rescaled to the output's scale
 * in int32, with integer multipliers below 2^21 and the zero points folded into k (codegen.integer.add_constants:
 * every partial sum stays below 2^31). */
typedef struct {
    int32_t k, a_mult, b_mult, shift, out_zp, act_min, act_max;
} sc_i8_add_params;

/* (act bounds that are the int8 range take one SSAT once the constant parameters are inlined: SC_SPECIALIZE) */
static inline SC_SPECIALIZE void sc_i8_add(const int8_t *a, const int8_t *b, int8_t *y, int32_t n,
                                           const sc_i8_add_params *p)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t acc = p->k + (int32_t)a[i] * p->a_mult + (int32_t)b[i] * p->b_mult;
        const int32_t v = (acc >> p->shift) + p->out_zp;
        y[i] = (int8_t)(p->act_min == -128 && p->act_max == 127 ? sc_ssat8(v) : sc_i8_clamp(v, p->act_min, p->act_max));
    }
}

/* y = clamp((((a - a_zp)(b - b_zp) mult + round) >> shift) + out_zp), mult below 2^14 (codegen.integer.mul_constants). */
typedef struct {
    int32_t a_zp, b_zp, mult, round, shift, out_zp, act_min, act_max;
} sc_i8_mul_params;

static inline void sc_i8_mul(const int8_t *a, const int8_t *b, int8_t *y, int32_t n, const sc_i8_mul_params *p)
{
    int32_t i = 0;
#if SC_INT8_DSP && SC_I8_FAST_REQ
    /* int8 output bounds and shift <= 22: 4 values per step, the differences x - zp as halfword pairs (SXTB16 and
     * SSUB16; for zp = -128 EOR and UXTB16), one SMULBB / SMULTT and one MLA each, out_zp folded into the
     * rounding term (|prod * mult| < 2^30 and |kz| < 2^30: no overflow), the shift inside the SSAT */
    if (p->act_min == -128 && p->act_max == 127 && p->shift >= 0 && p->shift <= 22) {
        const int32_t m = p->mult, sh = p->shift, kz = p->round + p->out_zp * (int32_t)(((uint32_t)1) << p->shift);
        const uint32_t za = ((uint32_t)p->a_zp & 0xFFFFu) * 0x10001u, zb = ((uint32_t)p->b_zp & 0xFFFFu) * 0x10001u;
        for (; i + 4 <= n; i += 4) {
            uint32_t a02, a13, b02, b13;
            sc_i8_pairs_zp(sc_ld32(a + i), p->a_zp, za, &a02, &a13);
            sc_i8_pairs_zp(sc_ld32(b + i), p->b_zp, zb, &b02, &b13);
            y[i] = (int8_t)sc_ssat8((sc_smlabb(a02, b02, 0) * m + kz) >> sh);
            y[i + 1] = (int8_t)sc_ssat8((sc_smlabb(a13, b13, 0) * m + kz) >> sh);
            y[i + 2] = (int8_t)sc_ssat8((sc_smlatt(a02, b02, 0) * m + kz) >> sh);
            y[i + 3] = (int8_t)sc_ssat8((sc_smlatt(a13, b13, 0) * m + kz) >> sh);
        }
    }
#endif
    for (; i < n; ++i) {
        const int32_t v = ((((int32_t)a[i] - p->a_zp) * ((int32_t)b[i] - p->b_zp) * p->mult + p->round) >> p->shift) + p->out_zp;
        y[i] = (int8_t)(p->act_min == -128 && p->act_max == 127 ? sc_ssat8(v) : sc_i8_clamp(v, p->act_min, p->act_max));
    }
}

/* One input of a concatenation: `outer` blocks of `size` values, requantized to the output's
 * scale, written every `stride` values of y. */
static inline void sc_i8_concat_part(const int8_t *x, int8_t *y, int32_t outer, int32_t size, int32_t stride,
                                     int32_t in_zp, int32_t mult, int32_t shift, int32_t out_zp)
{
    int32_t o, i;
#if SC_I8_FAST_REQ
    sc_i8_rq r;
    if (sc_i8_rq_init(&r, mult, shift, out_zp, 255)) {
        for (o = 0; o < outer; ++o, x += size, y += stride)
            for (i = 0; i < size; ++i) y[i] = sc_i8_rq_out(&r, (int32_t)x[i] - in_zp, -128, 127);
        return;
    }
#endif
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < size; ++i)
            y[i] = sc_i8_requant((int32_t)x[i] - in_zp, mult, shift, out_zp, -128, 127);
        x += size;
        y += stride;
    }
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

#endif /* SC_ELTWISE_H */
