/*
 * sparsecomp runtime — fully integer inference (int8 activations, int8 weights, int32
 * accumulation, fixed-point requantization). No float at run time: every kernel here uses
 * int32 arithmetic plus one 32x32->64-bit multiply-accumulate (SMLAL on Cortex-M3/M4).
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

#include <string.h>

#include "sc_runtime.h"
#include "sc_bits.h"

/* ---- DSP pair arithmetic ----------------------------------------------------------------------
 * SC_INT8_DSP selects the dense linear and conv (groups == 1) kernels that multiply int8 pairs with
 * SMLAD (two 16x16 products + accumulate in one instruction): 4 int8 are loaded with one 32-bit
 * load, SXTB16 sign-extends bytes 0 and 2 into two halfwords and SXTB16 ROR #8 bytes 1 and 3.
 * Default: 1 where the target has the DSP extension (__ARM_FEATURE_DSP: Cortex-M4/M7/M33/M55),
 * 0 elsewhere (Cortex-M0/M3, host) where the plain kernels run. Override with -DSC_INT8_DSP=0/1:
 * without the DSP extension the helpers below are exact portable C, so the same pair kernels run
 * (and are tested, under ASan/UBSan too) on the host. They assume little-endian byte order. */
#ifndef SC_INT8_DSP
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define SC_INT8_DSP 1
#else
#define SC_INT8_DSP 0
#endif
#endif

#if SC_INT8_DSP && defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the SC_INT8_DSP pair kernels assume little-endian byte order; build with -DSC_INT8_DSP=0"
#endif
#endif

#if (defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP) || (defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT)
#include <arm_acle.h>
#endif
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
/* (b2, b0) of x as two sign-extended halfwords */
static inline uint32_t sc_sxtb16(uint32_t x) { return (uint32_t)__sxtb16((int32_t)x); }
/* (b3, b1) of x: SXTB16 with ROR #8 (one instruction; gcc 12 does not fold a rotate into __sxtb16) */
#if defined(__GNUC__)
static inline uint32_t sc_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#else
static inline uint32_t sc_sxtb16_ror8(uint32_t x) { return (uint32_t)__sxtb16((int32_t)((x >> 8) | (x << 24))); }
#endif
/* acc + lo(a) * lo(b) + hi(a) * hi(b), signed halfwords */
static inline int32_t sc_smlad(uint32_t a, uint32_t b, int32_t acc) { return __smlad((int32_t)a, (int32_t)b, acc); }
/* acc + lo(a) * hi(b) + hi(a) * lo(b) (SMLADX) */
static inline int32_t sc_smladx(uint32_t a, uint32_t b, int32_t acc) { return __smladx((int32_t)a, (int32_t)b, acc); }
#else
static inline int32_t sc_s16lo(uint32_t x) { return (int32_t)((x & 0xFFFFu) ^ 0x8000u) - 0x8000; }
static inline int32_t sc_s16hi(uint32_t x) { return (int32_t)((x >> 16) ^ 0x8000u) - 0x8000; }
static inline uint32_t sc_sxtb16(uint32_t x)
{
    const uint32_t lo = ((x & 0xFFu) ^ 0x80u) - 0x80u; /* sign-extended modulo 2^32 */
    const uint32_t hi = (((x >> 16) & 0xFFu) ^ 0x80u) - 0x80u;
    return (lo & 0xFFFFu) | (hi << 16);
}
static inline uint32_t sc_sxtb16_ror8(uint32_t x) { return sc_sxtb16((x >> 8) | (x << 24)); }
static inline int32_t sc_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return acc + sc_s16lo(a) * sc_s16lo(b) + sc_s16hi(a) * sc_s16hi(b);
}
static inline int32_t sc_smladx(uint32_t a, uint32_t b, int32_t acc)
{
    return acc + sc_s16lo(a) * sc_s16hi(b) + sc_s16hi(a) * sc_s16lo(b);
}
#endif

/* 4 bytes from any address (one LDR on the M4, which allows unaligned word loads; no aliasing). */
static inline uint32_t sc_ld32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ---- fixed-point primitives ----------------------------------------------------------------- */

/* TFLite's SaturatingRoundingDoublingHighMul: (a * b + nudge) / 2^31 truncated toward zero, nudge
 * 2^30 when a * b >= 0 and 1 - 2^30 otherwise; saturates the single overflow case. For both signs that
 * equals floor((a * b + 2^30) / 2^31) (for ab < 0: trunc(v / 2^31) = floor((v + 2^31 - 1) / 2^31) with
 * v = ab + 1 - 2^30), one SMLAL and a shift on the M4. The floor is written without shifting a negative
 * value (implementation-defined in C): ~(~v >> 31) == floor(v / 2^31) for v < 0. */
static inline int32_t sc_i8_srdhm(int32_t a, int32_t b)
{
    int64_t v;
    if (a == b && a == INT32_MIN) return INT32_MAX;
    v = (int64_t)a * (int64_t)b + ((int64_t)1 << 30);
    return (int32_t)(v >= 0 ? (v >> 31) : ~(~v >> 31));
}

/* x / 2^e rounded to nearest, ties away from zero (e in 0..31). */
static inline int32_t sc_i8_rdbpot(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)((((uint32_t)1) << e) - 1u);
    const int32_t rem = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (rem > threshold ? 1 : 0);
}

/* sc_i8_rdbpot(sc_i8_srdhm(x, mult), e) for e >= 2 and mult >= 0 with one SMLAL: with t =
 * floor((x * mult + 2^30) / 2^31) (srdhm never saturates for mult >= 0), rounding half away from zero
 * is rdbpot(t, e) = floor((t + 2^(e-1) - [t < 0]) / 2^e), and floor((floor(a / b) + k) / c) =
 * floor((a + k * b) / (b * c)), so the result is floor((x * mult + C) / 2^(31+e)) with
 * C = 2^30 - [t < 0] * 2^31 + 2^(30+e). t < 0 implies x < 0, and for x < 0 with t == 0 both forms give 0,
 * so [x < 0] selects C. Its low word is 2^30 | [x < 0] << 31, its high word 2^(e-2) - [x < 0]; the
 * result is the high word of x * mult + C shifted right by e - 1 (LSR, ORR, SUB, SMLAL, ASR on the M4). */
static inline int32_t sc_i8_mbqm_hk(int32_t x, int32_t mult, uint32_t half, int32_t k) /* half 2^(e-2), k e-1 */
{
    const uint32_t neg = (uint32_t)x >> 31;
    const uint64_t c = ((uint64_t)(half - neg) << 32) | (0x40000000u | (neg << 31));
    const uint64_t v = (uint64_t)((int64_t)x * (int64_t)mult) + c;
    return (int32_t)(uint32_t)(v >> 32) >> k;
}

static inline int32_t sc_i8_mbqm_e2(int32_t x, int32_t mult, int32_t e)
{
    return sc_i8_mbqm_hk(x, mult, ((uint32_t)1) << (e - 2), e - 1);
}

/* x * mult * 2^(shift - 31), rounded (TFLite's MultiplyByQuantizedMultiplier). mult >= 0 (as
 * codegen.integer.quantize_multiplier makes it); shift <= -2, the usual case, takes sc_i8_mbqm_e2. */
static inline int32_t sc_i8_mbqm(int32_t x, int32_t mult, int32_t shift)
{
    if (shift <= -2) return sc_i8_mbqm_e2(x, mult, -shift);
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

/* clamp(mbqm(acc, mult, shift) + zp, lo, hi), lo/hi within int8: the clamp is applied before adding zp
 * (bounds lo - zp, hi - zp), so a saturated mbqm near INT32_MAX cannot overflow. */
static inline int8_t sc_i8_requant(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi)
{
    if (shift <= -2) { /* |sc_i8_mbqm_e2| <= 2^29 + 1: adding zp cannot overflow */
        const int32_t v = sc_i8_mbqm_e2(acc, mult, -shift) + zp;
        return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
    } else {
        const int32_t v = sc_i8_mbqm(acc, mult, shift), a = lo - zp, b = hi - zp;
        return (int8_t)((v < a ? a : (v > b ? b : v)) + zp);
    }
}

/* v saturated to int8 (one SSAT on Armv7-M) */
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
static inline int32_t sc_ssat8(int32_t v) { return __ssat(v, 8); }
#else
static inline int32_t sc_ssat8(int32_t v) { return v < -128 ? -128 : (v > 127 ? 127 : v); }
#endif

/* The shift <= -2 requantization for kernels whose act bounds are compile-time constants (inlined with
 * a static const parameter block): SSAT, and a compare only for a bound inside int8. */
static inline int8_t sc_i8_requant_hk(int32_t acc, int32_t mult, uint32_t half, int32_t k, int32_t zp, int32_t lo,
                                      int32_t hi)
{
    int32_t v = sc_ssat8(sc_i8_mbqm_hk(acc, mult, half, k) + zp);
    if (lo > -128 && v < lo) v = lo;
    if (hi < 127 && v > hi) v = hi;
    return (int8_t)v;
}

/* 1: the block kernels (pointwise, im2col conv, C_in == 1) inline the shift <= -2 requantization
 * (sc_i8_requant_hk) next to the generic one; 0 (the default at -Os): only the generic sc_i8_requant. */
#ifndef SC_I8_FAST_REQ
#if defined(__OPTIMIZE_SIZE__)
#define SC_I8_FAST_REQ 0
#else
#define SC_I8_FAST_REQ 1
#endif
#endif

/* ---- linear: y[r][o] = requant(bias[o] + sum_i q[o][i] * x[r][i]) -----------------------------
 * bias already holds -in_zp * sum_i q[o][i] (folded at generation time), so the inner loop
 * multiplies raw int8 inputs. */

typedef struct {
    int32_t rows, in, out;
    int32_t out_zp, act_min, act_max;
} sc_i8_linear_params;

#define SC_I8_LINEAR_OUT                                                                          \
    yr[o] = sc_i8_requant(acc, mult[o], shift[o], p->out_zp, p->act_min, p->act_max)


#if SC_INT8_DSP
/* acc + sum_i w[i] * x[i] over n values, 4 per SMLAD pair (bytes 0/2 and 1/3 of both sides match). */
static inline int32_t sc_i8_dot_dsp(const int8_t *w, const int8_t *x, int32_t n, int32_t acc)
{
    int32_t i;
    for (i = 0; i + 4 <= n; i += 4) {
        const uint32_t xv = sc_ld32(x + i), wv = sc_ld32(w + i);
        acc = sc_smlad(sc_sxtb16(wv), sc_sxtb16(xv), acc);
        acc = sc_smlad(sc_sxtb16_ror8(wv), sc_sxtb16_ror8(xv), acc);
    }
    for (; i < n; ++i) acc += (int32_t)w[i] * (int32_t)x[i];
    return acc;
}
#endif

static inline void sc_i8_linear_q8(const int8_t *x, int8_t *y, const int8_t *q, const int32_t *bias,
                                   const int32_t *mult, const int8_t *shift, const sc_i8_linear_params *p)
{
    int32_t r, o, i;
#if SC_INT8_DSP
    /* 4 output rows per pass share the input loads: per 4 inputs 5 loads, 10 SXTB16, 8 SMLAD (16 MACs) */
    const int32_t in = p->in, n4 = p->in & ~3, out4 = p->out & ~3;
    for (r = 0; r < p->rows; ++r) {
        const int8_t *xr = x + r * in;
        int8_t *yr = y + r * p->out;
        const int8_t *w = q; /* row o of the weights (walked, not o * in: gcc 12 then warns of overflow) */
        for (o = 0; o < out4; o += 4, w += 4 * in) {
            const int8_t *w0 = w, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
            int32_t a0 = bias ? bias[o] : 0, a1 = bias ? bias[o + 1] : 0;
            int32_t a2 = bias ? bias[o + 2] : 0, a3 = bias ? bias[o + 3] : 0;
            /* one index counting up to 0 from -n4 walks all 5 rows: no end pointer, 14 registers */
            const int8_t *const xe = xr + n4, *const e0 = w0 + n4, *const e1 = w1 + n4;
            const int8_t *const e2 = w2 + n4, *const e3 = w3 + n4;
            for (i = -n4; i != 0; i += 4) {
                const uint32_t xv = sc_ld32(xe + i);
                const uint32_t xa = sc_sxtb16(xv), xb = sc_sxtb16_ror8(xv);
                uint32_t wv = sc_ld32(e0 + i);
                a0 = sc_smlad(sc_sxtb16(wv), xa, a0);
                a0 = sc_smlad(sc_sxtb16_ror8(wv), xb, a0);
                wv = sc_ld32(e1 + i);
                a1 = sc_smlad(sc_sxtb16(wv), xa, a1);
                a1 = sc_smlad(sc_sxtb16_ror8(wv), xb, a1);
                wv = sc_ld32(e2 + i);
                a2 = sc_smlad(sc_sxtb16(wv), xa, a2);
                a2 = sc_smlad(sc_sxtb16_ror8(wv), xb, a2);
                wv = sc_ld32(e3 + i);
                a3 = sc_smlad(sc_sxtb16(wv), xa, a3);
                a3 = sc_smlad(sc_sxtb16_ror8(wv), xb, a3);
            }
            for (i = n4; i < in; ++i) {
                const int32_t xv = xr[i];
                a0 += (int32_t)w0[i] * xv;
                a1 += (int32_t)w1[i] * xv;
                a2 += (int32_t)w2[i] * xv;
                a3 += (int32_t)w3[i] * xv;
            }
            yr[o] = sc_i8_requant(a0, mult[o], shift[o], p->out_zp, p->act_min, p->act_max);
            yr[o + 1] = sc_i8_requant(a1, mult[o + 1], shift[o + 1], p->out_zp, p->act_min, p->act_max);
            yr[o + 2] = sc_i8_requant(a2, mult[o + 2], shift[o + 2], p->out_zp, p->act_min, p->act_max);
            yr[o + 3] = sc_i8_requant(a3, mult[o + 3], shift[o + 3], p->out_zp, p->act_min, p->act_max);
        }
        for (o = out4; o < p->out; ++o, w += in) {
            const int32_t acc = sc_i8_dot_dsp(w, xr, in, bias ? bias[o] : 0);
            SC_I8_LINEAR_OUT;
        }
    }
    (void)i;
#else
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
#endif
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
            sc_bitreader br;                                                                       \
            sc_bits_at(&br, stream, 0u);                                                      \
            for (o = 0; o < p->out; ++o) {                                                       \
                int32_t acc = bias ? bias[o] : 0, pos = 0;                                       \
                const int32_t n = (int32_t)ptr[o + 1] - (int32_t)ptr[o];                         \
                for (k = 0; k < n; ++k) {                                                        \
                    const uint32_t f = sc_bits_get(&br, gap_bits + 8);                        \
                    pos += (int32_t)(f & gmask);                                                 \
                    acc += sc_s8(f >> gap_bits) * (int32_t)xr[pos++];                         \
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
                *out++ = sc_i8_requant(acc, mult[oc], shift[oc], p->out_zp, p->act_min,          \
                                       p->act_max);                                              \
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

/* Depthwise (groups == cin == cout): per channel the accumulator of a window fully inside the input
 * starts at bias - in_zp * sum(q) and adds q * x over the taps with walking pointers (no clipping, no
 * division); border windows clip their tap ranges once per output row (ky) and position (kx). */
static inline void sc_i8_conv_q8_dw(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                    const int32_t *mult, const int8_t *shift, const sc_i8_conv_params *p)
{
    const int32_t kh = p->kh, kw = p->kw, dh = p->dh, dw = p->dw, hin = p->hin, win = p->win;
    const int32_t khw = kh * kw, zp = p->in_zp, row_skip = dh * win - kw * dw;
    int32_t c, oy, ox, ky, kx, j;
    for (c = 0; c < p->cout; ++c) {
        const int8_t *const in_c = in + c * hin * win, *const wc = q + c * khw;
        const int32_t b = bias ? bias[c] : 0, m = mult[c], sh = shift[c];
        int32_t qsum = 0, b_in;
        for (j = 0; j < khw; ++j) qsum += wc[j];
        b_in = b - zp * qsum;
        for (oy = 0; oy < p->hout; ++oy) {
            const int32_t iy0 = oy * p->sh - p->ph;
            int32_t ky0, ky1;
            sc_i8_tap_range(iy0, dh, hin, kh, &ky0, &ky1);
            for (ox = 0; ox < p->wout; ++ox) {
                const int32_t ix0 = ox * p->sw - p->pw;
                int32_t acc;
                if (ky0 == 0 && ky1 == kh && ix0 >= 0 && ix0 + (kw - 1) * dw < win) {
                    const int8_t *w = wc;
                    int32_t xo = iy0 * win + ix0;
                    acc = b_in;
                    if (kw == 3) { /* the common 3-wide kernel: one row per iteration */
                        for (ky = 0; ky < kh; ++ky, w += 3, xo += dh * win)
                            acc += (int32_t)w[0] * in_c[xo] + (int32_t)w[1] * in_c[xo + dw] + (int32_t)w[2] * in_c[xo + 2 * dw];
                    } else {
                        for (ky = 0; ky < kh; ++ky, xo += row_skip)
                            for (kx = 0; kx < kw; ++kx, xo += dw) acc += (int32_t)*w++ * (int32_t)in_c[xo];
                    }
                } else {
                    int32_t kx0, kx1;
                    sc_i8_tap_range(ix0, dw, win, kw, &kx0, &kx1);
                    acc = b;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int32_t r = (iy0 + ky * dh) * win + ix0; /* + kx * dw >= 0 for kx >= kx0 */
                        for (kx = kx0; kx < kx1; ++kx)
                            acc += (int32_t)wc[ky * kw + kx] * ((int32_t)in_c[r + kx * dw] - zp);
                    }
                }
                *out++ = sc_i8_requant(acc, m, sh, p->out_zp, p->act_min, p->act_max);
            }
        }
    }
}

/* ---- depthwise on an in_zp-padded plane (groups == cin == cout, dense int8 weights) -------------
 * Per channel the input plane is copied into `pad` (int8 on the caller's stack, sized at generation
 * time: SC_I8_DW_PAD_BYTES(p)) whose border holds in_zp, so every window is interior: the accumulator
 * starts at bias - in_zp * sum(q) and adds q * x over all taps (padded taps add q * in_zp, which the
 * start value cancels: exactly the reference's sum over in-bounds taps of q * (x - in_zp)). The plane
 * is the extent the outputs read (rows/columns past it are never copied); 3 slack bytes after it let
 * the 3x3 kernel load a 4-byte word at the last column. */
#define SC_I8_DW_PAD_H(p) (((p)->hout - 1) * (p)->sh + ((p)->kh - 1) * (p)->dh + 1)
#define SC_I8_DW_PAD_W(p) (((p)->wout - 1) * (p)->sw + ((p)->kw - 1) * (p)->dw + 1)
#define SC_I8_DW_PAD_BYTES(p) (SC_I8_DW_PAD_H(p) * SC_I8_DW_PAD_W(p) + 3)

/* 3x3, stride 1, dilation 1: the channel's 9 weights in registers, 2 outputs per pass. With SMLAD, per
 * kernel row one 4-byte load x0..x3, SXTB16 -> (x0, x2), SXTB16 ROR 8 -> (x1, x3), weights (w0, w2) and
 * (w1, 0) as halfwords: out0 += w0 x0 + w2 x2 + w1 x1, out1 += w0 x1 + w2 x3 + w1 x2 (SMLADX): 7
 * instructions for 6 MACs. Without DSP the same 2 outputs share 4 byte loads per kernel row. */
static inline SC_SPECIALIZE void sc_i8_dw3_plane(const int8_t *pc, int8_t *o, const int8_t *wc, int32_t b_in,
                                                 int32_t m, int32_t e, const sc_i8_conv_params *p)
{
    const int32_t wp = p->wout + 2, hout = p->hout, wout = p->wout, zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    const uint32_t half = ((uint32_t)1) << (e - 2);
    int32_t oy, ox;
#if SC_INT8_DSP
#define SC_I8_W02(i) ((uint32_t)(uint16_t)(int16_t)wc[i] | ((uint32_t)(uint16_t)(int16_t)wc[(i) + 2] << 16))
    const uint32_t u0 = SC_I8_W02(0), u1 = SC_I8_W02(3), u2 = SC_I8_W02(6);
    const uint32_t v0 = (uint16_t)(int16_t)wc[1], v1 = (uint16_t)(int16_t)wc[4], v2 = (uint16_t)(int16_t)wc[7];
#undef SC_I8_W02
#define SC_I8_DW3_ROW(r, u, v)                                                                    \
    do {                                                                                          \
        const uint32_t xw = sc_ld32(r), xl = sc_sxtb16(xw), xh = sc_sxtb16_ror8(xw);                 \
        a = sc_smlad(u, xl, a);                                                                   \
        a = sc_smlad(v, xh, a);                                                                   \
        b = sc_smlad(u, xh, b);                                                                   \
        b = sc_smladx(v, xl, b);                                                                  \
    } while (0)
#else
    const int32_t w0 = wc[0], w1 = wc[1], w2 = wc[2], w3 = wc[3], w4 = wc[4], w5 = wc[5];
    const int32_t w6 = wc[6], w7 = wc[7], w8 = wc[8];
#define SC_I8_DW3_ROW(r, wa, wb, wc_)                                                             \
    do {                                                                                          \
        const int32_t x0 = (r)[0], x1 = (r)[1], x2 = (r)[2], x3 = (r)[3];                         \
        a += wa * x0 + wb * x1 + wc_ * x2;                                                        \
        b += wa * x1 + wb * x2 + wc_ * x3;                                                        \
    } while (0)
#endif
    for (oy = 0; oy < hout; ++oy, o += wout) {
        const int8_t *r = pc + oy * wp;
        for (ox = 0; ox + 2 <= wout; ox += 2, r += 2) {
            int32_t a = b_in, b = b_in;
#if SC_INT8_DSP
            SC_I8_DW3_ROW(r, u0, v0);
            SC_I8_DW3_ROW(r + wp, u1, v1);
            SC_I8_DW3_ROW(r + 2 * wp, u2, v2);
#else
            SC_I8_DW3_ROW(r, w0, w1, w2);
            SC_I8_DW3_ROW(r + wp, w3, w4, w5);
            SC_I8_DW3_ROW(r + 2 * wp, w6, w7, w8);
#endif
            o[ox] = sc_i8_requant_hk(a, m, half, e - 1, zp, lo, hi);
            o[ox + 1] = sc_i8_requant_hk(b, m, half, e - 1, zp, lo, hi);
        }
        if (ox < wout) { /* odd width: the last output alone */
#if SC_INT8_DSP
#define SC_I8_DW3_ONE(r, u, v)                                                                    \
    do {                                                                                          \
        const uint32_t xw = sc_ld32(r);                                                           \
        a = sc_smlad(u, sc_sxtb16(xw), a);                                                        \
        a = sc_smlad(v, sc_sxtb16_ror8(xw), a);                                                   \
    } while (0)
            int32_t a = b_in;
            SC_I8_DW3_ONE(r, u0, v0);
            SC_I8_DW3_ONE(r + wp, u1, v1);
            SC_I8_DW3_ONE(r + 2 * wp, u2, v2);
#undef SC_I8_DW3_ONE
#else
            const int32_t a = b_in + w0 * r[0] + w1 * r[1] + w2 * r[2] + w3 * r[wp] + w4 * r[wp + 1] + w5 * r[wp + 2] +
                              w6 * r[2 * wp] + w7 * r[2 * wp + 1] + w8 * r[2 * wp + 2];
#endif
            o[ox] = sc_i8_requant_hk(a, m, half, e - 1, zp, lo, hi);
        }
    }
#undef SC_I8_DW3_ROW
}

static inline SC_SPECIALIZE void sc_i8_conv_q8_dwp(const int8_t *in, int8_t *out, const int8_t *q,
                                                   const int32_t *bias, const int32_t *mult, const int8_t *shift,
                                                   int8_t *pad, const sc_i8_conv_params *p)
{
    const int32_t kh = p->kh, kw = p->kw, dh = p->dh, dw = p->dw, sh = p->sh, sw = p->sw, khw = kh * kw;
    const int32_t hp = SC_I8_DW_PAD_H(p), wp = SC_I8_DW_PAD_W(p), hout = p->hout, wout = p->wout;
    const int32_t rows = p->hin < hp - p->ph ? p->hin : hp - p->ph;
    const int32_t cols = p->win < wp - p->pw ? p->win : wp - p->pw;
    const int32_t zp = p->in_zp;
    int32_t c, y, oy, ox, ky, kx, j;
    memset(pad, (unsigned char)zp, (size_t)SC_I8_DW_PAD_BYTES(p));
    for (c = 0; c < p->cout; ++c) {
        const int8_t *const wc = q + c * khw;
        int8_t *o = out + c * hout * wout;
        int32_t qsum = 0, b_in;
        for (j = 0; j < khw; ++j) qsum += wc[j];
        b_in = (bias ? bias[c] : 0) - zp * qsum;
        for (y = 0; y < rows; ++y) memcpy(pad + (y + p->ph) * wp + p->pw, in + (c * p->hin + y) * p->win, (size_t)cols);
        if (kh == 3 && kw == 3 && sh == 1 && sw == 1 && dh == 1 && dw == 1 && shift[c] <= -2) {
            sc_i8_dw3_plane(pad, o, wc, b_in, mult[c], -shift[c], p);
            continue;
        }
        for (oy = 0; oy < hout; ++oy) {
            for (ox = 0; ox < wout; ++ox) {
                const int8_t *r = pad + oy * sh * wp + ox * sw, *w = wc;
                int32_t acc = b_in;
                for (ky = 0; ky < kh; ++ky, r += dh * wp)
                    for (kx = 0; kx < kw; ++kx) acc += (int32_t)*w++ * (int32_t)r[kx * dw];
                *o++ = sc_i8_requant(acc, mult[c], shift[c], p->out_zp, p->act_min, p->act_max);
            }
        }
    }
}

static inline void sc_i8_conv_q8(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                 const int32_t *mult, const int8_t *shift, const sc_i8_conv_params *p)
{
    if (p->groups == p->cin && p->cout == p->cin) {
        sc_i8_conv_q8_dw(in, out, q, bias, mult, shift, p);
        return;
    }
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
}

#if SC_INT8_DSP
/* Scratch of the SMLAD conv (sc_i8_conv_q8_dsp), declared by the op template with sizes known at
 * generation time: acc0[cout] int32 (bias - in_zp * sum of the channel's weights) and the column of 2
 * output positions A and B, raw int8 inputs with padded taps = in_zp, interleaved per 4 taps
 * (A t0..t3, B t0..t3): row_len rounded up to 4, times 2 bytes, as uint32 words. */
#define SC_I8_COLB(j) ((j) + ((j) & ~3)) /* byte of tap j of position A (B: + 4) */

/* The window of one output position (its taps j at byte SC_I8_COLB(j) of `col`). The parameters are
 * copied to locals first: the byte stores may alias *p, which would reload them every tap. */
static inline void sc_i8_im2col(const int8_t *in, unsigned char *col, int32_t iy0, int32_t ix0,
                                const sc_i8_conv_params *p)
{
    const unsigned char zp = (unsigned char)p->in_zp;
    const int32_t cin = p->cin, kh = p->kh, kw = p->kw, dh = p->dh, dw = p->dw, win = p->win;
    const int32_t plane = p->hin * win;
    int32_t ci, ky, j = 0, ky0, ky1, kx0, kx1;
    sc_i8_tap_range(iy0, dh, p->hin, kh, &ky0, &ky1);
    sc_i8_tap_range(ix0, dw, win, kw, &kx0, &kx1);
    if (kx0 > kw) kx0 = kw;
    if (kx1 < kx0) kx1 = kx0;
    for (ci = 0; ci < cin; ++ci) {
        const int8_t *in_c = in + ci * plane;
        for (ky = 0; ky < kh; ++ky) {
            const int32_t end = j + kw;
            if (ky < ky0 || ky >= ky1) {
                for (; j < end; ++j) col[SC_I8_COLB(j)] = zp;
            } else {
                const int8_t *src = in_c + (iy0 + ky * dh) * win + ix0 + kx0 * dw;
                const int32_t a = j + kx0, b = j + kx1;
                for (; j < a; ++j) col[SC_I8_COLB(j)] = zp;
                if (dw == 1)
                    for (; j < b; ++j) col[SC_I8_COLB(j)] = (unsigned char)*src++;
                else
                    for (; j < b; ++j, src += dw) col[SC_I8_COLB(j)] = (unsigned char)*src;
                for (; j < end; ++j) col[SC_I8_COLB(j)] = zp;
            }
        }
    }
}

/* Both windows of the pair at once when they are fully inside the input and B is A shifted by one
 * stride along x (the common case): one pointer walks the taps of A, B's are `sw` further. */
static inline void sc_i8_im2col2_inner(const int8_t *src, unsigned char *col, const sc_i8_conv_params *p)
{
    const int32_t cin = p->cin, kh = p->kh, kw = p->kw, dw = p->dw, sw = p->sw;
    const int32_t row_step = p->dh * p->win, plane = p->hin * p->win;
    unsigned char *const colb = col + 4;
    int32_t ci, ky, j = 0;
    if (kh == 1 && kw == 1) { /* 1x1: one tap per input channel */
        for (ci = 0; ci < cin; ++ci) {
            const int32_t k = SC_I8_COLB(ci), o = ci * plane;
            col[k] = (unsigned char)src[o];
            colb[k] = (unsigned char)src[o + sw];
        }
        return;
    }
    for (ci = 0; ci < cin; ++ci) {
        int32_t r = ci * plane; /* offsets, not pointers: nothing points past the input */
        for (ky = 0; ky < kh; ++ky, r += row_step) {
            const int32_t end = j + kw;
            int32_t o = r;
            for (; j < end; ++j, o += dw) {
                const int32_t k = SC_I8_COLB(j);
                col[k] = (unsigned char)src[o];
                colb[k] = (unsigned char)src[o + sw];
            }
        }
    }
}

/* The 2 x 2 inner loop of the pair kernels (pointwise and im2col conv): while x < xend, per 4 taps the
 * column words (A0, A2), (A1, A3), (B0, B2), (B1, B3) of positions A and B times the weight words at wa
 * (channel a) and wa + db (channel b), both SXTB16-split: a00/a01 += row a . A/B, a10/a11 += row b . A/B.
 * x and wa advance past the taps. On the M4 (gcc) a hand-scheduled loop: 2 LDRD, 2 LDR, 4 SXTB16, 8 SMLAD
 * and the compare/branch, 18 instructions for 16 MACs (gcc's own schedule of the C loop takes 20). */
#if SC_INT8_DSP && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__GNUC__) && !defined(SC_NO_ASM)
#define SC_I8_MAC2X2(x, xend, wa, db, a00, a01, a10, a11)                                         \
    do {                                                                                          \
        if ((x) < (xend)) {                                                                       \
            uint32_t x0_, x1_, x2_, x3_, t_, u_;                                                  \
            __asm__ volatile("1:\n\t"                                                              \
                             "ldrd %[x0], %[x1], [%[x]], #16\n\t"                                \
                             "ldrd %[x2], %[x3], [%[x], #-8]\n\t"                                \
                             "ldr %[u], [%[wa]], #4\n\t"                                          \
                             "sxtb16 %[t], %[u]\n\t"                                              \
                             "sxtb16 %[u], %[u], ror #8\n\t"                                      \
                             "smlad %[a00], %[t], %[x0], %[a00]\n\t"                              \
                             "smlad %[a00], %[u], %[x1], %[a00]\n\t"                              \
                             "smlad %[a01], %[t], %[x2], %[a01]\n\t"                              \
                             "smlad %[a01], %[u], %[x3], %[a01]\n\t"                              \
                             "ldr %[u], [%[wa], %[db]]\n\t"                                       \
                             "sxtb16 %[t], %[u]\n\t"                                              \
                             "sxtb16 %[u], %[u], ror #8\n\t"                                      \
                             "smlad %[a10], %[t], %[x0], %[a10]\n\t"                              \
                             "smlad %[a10], %[u], %[x1], %[a10]\n\t"                              \
                             "smlad %[a11], %[t], %[x2], %[a11]\n\t"                              \
                             "smlad %[a11], %[u], %[x3], %[a11]\n\t"                              \
                             "cmp %[x], %[xend]\n\t"                                              \
                             "bne 1b\n\t"                                                         \
                             : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11),  \
                               [x] "+r"(x), [wa] "+r"(wa), [x0] "=&r"(x0_), [x1] "=&r"(x1_),       \
                               [x2] "=&r"(x2_), [x3] "=&r"(x3_), [t] "=&r"(t_), [u] "=&r"(u_)      \
                             : [xend] "r"(xend), [db] "r"((db) - 4)                               \
                             : "cc", "memory");                                                   \
        }                                                                                         \
    } while (0)
#else
#define SC_I8_MAC2X2(x, xend, wa, db, a00, a01, a10, a11)                                         \
    do {                                                                                          \
        while ((x) < (xend)) {                                                                    \
            const uint32_t xa0 = (x)[0], xa1 = (x)[1], xb0 = (x)[2], xb1 = (x)[3];                \
            uint32_t v_ = sc_ld32(wa), wl_ = sc_sxtb16(v_), wh_ = sc_sxtb16_ror8(v_);             \
            a00 = sc_smlad(wl_, xa0, a00);                                                        \
            a00 = sc_smlad(wh_, xa1, a00);                                                        \
            a01 = sc_smlad(wl_, xb0, a01);                                                        \
            a01 = sc_smlad(wh_, xb1, a01);                                                        \
            v_ = sc_ld32((wa) + (db));                                                            \
            wl_ = sc_sxtb16(v_);                                                                  \
            wh_ = sc_sxtb16_ror8(v_);                                                             \
            a10 = sc_smlad(wl_, xa0, a10);                                                        \
            a10 = sc_smlad(wh_, xa1, a10);                                                        \
            a11 = sc_smlad(wl_, xb0, a11);                                                        \
            a11 = sc_smlad(wh_, xb1, a11);                                                        \
            (wa) += 4;                                                                            \
            (x) += 4;                                                                             \
        }                                                                                         \
    } while (0)
#endif

/* Dense conv, groups == 1, SMLAD pairs. Per output channel the accumulator starts at bias - in_zp *
 * sum(q) (acc0, computed once per call); the windows of 2 output positions are copied to the column
 * with padded taps = in_zp, so acc0 + sum q * x over all taps is exactly bias + sum q * (x - in_zp) over
 * the in-bounds taps. The column is then widened in place (from its end down) to sign-extended halfword
 * pairs matching the SXTB16 lanes of a weight word: per 4 taps (A0, A2), (A1, A3), (B0, B2), (B1, B3).
 * Then 2 output channels x 2 positions per pass: per 4 taps 2 weight loads, 4 column words, 4 SXTB16 and
 * 8 SMLAD for 16 MACs. An odd last channel or position is computed twice and written once. `scratch`
 * (arena, SC_I8_DSP_SCRATCH_WORDS) holds acc0[cout] then the column. */
#define SC_I8_DSP_SCRATCH_WORDS(cout, row_len) ((cout) + ((row_len) + 3) / 4 * 4)

static inline void sc_i8_conv_q8_dsp(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                     const int32_t *mult, const int8_t *shift, uint32_t *scratch,
                                     const sc_i8_conv_params *p)
{
    const int32_t row_len = p->cin * p->kh * p->kw, n4 = row_len & ~3, groups = (row_len + 3) / 4;
    const int32_t npos = p->hout * p->wout, zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    int32_t *const acc0 = (int32_t *)scratch;
    uint32_t *const col = scratch + p->cout;
    unsigned char *const colb = (unsigned char *)col;
    int32_t pos, oc, j, g;
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *w = q + oc * row_len;
        int32_t s = 0;
        for (j = 0; j < n4; j += 4) {
            const uint32_t v = sc_ld32(w + j);
            s = sc_smlad(sc_sxtb16(v), 0x00010001u, s);
            s = sc_smlad(sc_sxtb16_ror8(v), 0x00010001u, s);
        }
        for (; j < row_len; ++j) s += w[j];
        acc0[oc] = (bias ? bias[oc] : 0) - p->in_zp * s;
    }
    for (pos = 0; pos < npos; pos += 2) {
        const int32_t two = pos + 1 < npos;
        int32_t oy = pos / p->wout, ox = pos - oy * p->wout;
        const int32_t iy0 = oy * p->sh - p->ph, ix0 = ox * p->sw - p->pw;
        if (two && ox + 1 < p->wout && iy0 >= 0 && iy0 + (p->kh - 1) * p->dh < p->hin && ix0 >= 0 &&
            ix0 + p->sw + (p->kw - 1) * p->dw < p->win) {
            sc_i8_im2col2_inner(in + iy0 * p->win + ix0, colb, p);
        } else {
            sc_i8_im2col(in, colb, iy0, ix0, p);
            if (two && ++ox == p->wout) {
                ox = 0;
                ++oy;
            }
            sc_i8_im2col(in, colb + 4, oy * p->sh - p->ph, ox * p->sw - p->pw, p);
        }
        if (row_len & 3) { /* the taps past row_len in the last group are never used: defined values */
            for (j = row_len; j < 4 * groups; ++j) colb[SC_I8_COLB(j)] = colb[SC_I8_COLB(j) + 4] = 0;
        }
        for (g = groups - 1; g >= 0; --g) { /* bytes 8g..8g+7 -> words 4g..4g+3 (from the end down) */
            const uint32_t a = col[2 * g], b = col[2 * g + 1];
            col[4 * g] = sc_sxtb16(a);
            col[4 * g + 1] = sc_sxtb16_ror8(a);
            col[4 * g + 2] = sc_sxtb16(b);
            col[4 * g + 3] = sc_sxtb16_ror8(b);
        }
        for (oc = 0; oc < p->cout; oc += 2) {
            const int32_t ob = oc + 1 < p->cout ? oc + 1 : oc;
            const int32_t db = (ob - oc) * row_len;
            const int8_t *wa = q + oc * row_len;
            const uint32_t *x = col;
            const uint32_t *const xend = col + n4;
            int32_t a00 = acc0[oc], a10 = acc0[ob], a01 = a00, a11 = a10;
            int8_t *const o0 = out + oc * npos + pos;
            SC_I8_MAC2X2(x, xend, wa, db, a00, a01, a10, a11);
            for (j = n4; j < row_len; ++j, ++wa) { /* tap t of the last group: word t & 1, half t >> 1 */
                const int32_t t = j - n4, qa = wa[0], qb = wa[db];
                const uint32_t wA = x[t & 1] >> (16 * (t >> 1)), wB = x[2 + (t & 1)] >> (16 * (t >> 1));
                const int32_t xa = (int32_t)((wA & 0xFFFFu) ^ 0x8000u) - 0x8000;
                const int32_t xb = (int32_t)((wB & 0xFFFFu) ^ 0x8000u) - 0x8000;
                a00 += qa * xa;
                a01 += qa * xb;
                a10 += qb * xa;
                a11 += qb * xb;
            }
            {
                const int32_t ma = mult[oc], mb = mult[ob], sa = shift[oc], sb = shift[ob];
                int8_t *const o1 = out + ob * npos + pos;
                if (SC_I8_FAST_REQ && sa <= -2 && sb <= -2) { /* the usual case: one SMLAL per output */
                    const uint32_t ha = ((uint32_t)1) << (-sa - 2), hb = ((uint32_t)1) << (-sb - 2);
                    o0[0] = sc_i8_requant_hk(a00, ma, ha, -sa - 1, zp, lo, hi);
                    if (two) o0[1] = sc_i8_requant_hk(a01, ma, ha, -sa - 1, zp, lo, hi);
                    o1[0] = sc_i8_requant_hk(a10, mb, hb, -sb - 1, zp, lo, hi);
                    if (two) o1[1] = sc_i8_requant_hk(a11, mb, hb, -sb - 1, zp, lo, hi);
                } else {
                    o0[0] = sc_i8_requant(a00, ma, sa, zp, lo, hi);
                    if (two) o0[1] = sc_i8_requant(a01, ma, sa, zp, lo, hi);
                    o1[0] = sc_i8_requant(a10, mb, sb, zp, lo, hi);
                    if (two) o1[1] = sc_i8_requant(a11, mb, sb, zp, lo, hi);
                }
            }
        }
    }
}
#endif

/* ---- pointwise conv (1x1, stride 1, no padding, groups == 1, dense int8 weights) -----------------
 * Output y[oc][p] = requant(bias'[oc] + sum_ci q[oc][ci] * x[ci][p]) over the flat plane p < H*W (no
 * row structure: a 1x1 stride-1 output position reads the same input position). bias' holds
 * -in_zp * sum(q) (folded at generation time), so the raw int8 inputs are multiplied.
 *
 * SMLAD form: 2 positions (A, B) of all channels are gathered into `col` (arena scratch of
 * SC_I8_PW_COL_WORDS(cin) words) as sign-extended halfword pairs matching the SXTB16 lanes of a 4-byte
 * weight word w0..w3: per 4 channels (x0A, x2A), (x1A, x3A), (x0B, x2B), (x1B, x3B). The gather is 2
 * byte loads + ORR per channel and 4 SXTB16 per 4 channels. Then 2 output channels x 2 positions per pass:
 * per 4 channels 2 LDRD of the column, 2 weight loads, 4 SXTB16 and 8 SMLAD for 16 MACs. The
 * requantization of the 4 outputs has the layer's zero point and bounds hoisted out of the loops. An odd
 * plane ends with the pair (n - 2, n - 1) (position n - 2 is written twice with the same value). */
#define SC_I8_PW_COL_WORDS(cin) (((cin) + 3) / 4 * 4)

/* bytes xA, xB of one channel as a halfword (B = A for a single-position plane) */
#define SC_I8_PW_PAIR(src) ((uint32_t)(uint8_t)(src)[0] | (uint32_t)(uint8_t)(src)[pb - pa] << 8)

static inline SC_SPECIALIZE void sc_i8_conv_q8_pw(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                    const int32_t *mult, const int8_t *shift, uint32_t *col,
                                    const sc_i8_conv_params *p)
{
    const int32_t cin = p->cin, cout = p->cout, n = p->hin * p->win;
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    int32_t pos, oc, ci;
#if SC_INT8_DSP
    const int32_t c4 = cin & ~3;
    const int32_t last = n >= 2 ? n - 2 : 0;
    for (pos = 0; pos < n; pos += 2) {
        const int32_t pa = pos < last ? pos : last, pb = n >= 2 ? pa + 1 : pa;
        uint32_t *c = col;
        const int8_t *s = in + pa;
        for (ci = 0; ci < c4; ci += 4, s += 4 * n, c += 4) { /* bytes x0A x0B x2A x2B and x1A x1B x3A x3B */
            const uint32_t t0 = SC_I8_PW_PAIR(s) | SC_I8_PW_PAIR(s + 2 * n) << 16;
            const uint32_t t1 = SC_I8_PW_PAIR(s + n) | SC_I8_PW_PAIR(s + 3 * n) << 16;
            c[0] = sc_sxtb16(t0);
            c[1] = sc_sxtb16(t1);
            c[2] = sc_sxtb16_ror8(t0);
            c[3] = sc_sxtb16_ror8(t1);
        }
        for (; ci < cin; ++ci, s += n, ++c) /* the last cin % 4 channels: (xA, xB) */
            *c = (uint32_t)(uint16_t)(int16_t)s[0] | ((uint32_t)(uint16_t)(int16_t)s[pb - pa] << 16);
        for (oc = 0; oc < cout; oc += 2) {
            const int32_t ob = oc + 1 < cout ? oc + 1 : oc;
            const int32_t db = (ob - oc) * cin; /* row ob is db bytes after row oc (an immediate offset) */
            const int8_t *wa = q + oc * cin;
            const uint32_t *x = col;
            const uint32_t *const xend = col + c4;
            int32_t a00 = bias ? bias[oc] : 0, a10 = bias ? bias[ob] : 0, a01 = a00, a11 = a10;
            const int32_t ma = mult[oc], mb = mult[ob], sa = shift[oc], sb = shift[ob];
            SC_I8_MAC2X2(x, xend, wa, db, a00, a01, a10, a11);
            for (ci = c4; ci < cin; ++ci, ++x, ++wa) {
                const int32_t xa = (int32_t)((*x & 0xFFFFu) ^ 0x8000u) - 0x8000, xb = (int32_t)((*x >> 16) ^ 0x8000u) - 0x8000;
                const int32_t qa = wa[0], qb = wa[db];
                a00 += qa * xa;
                a01 += qa * xb;
                a10 += qb * xa;
                a11 += qb * xb;
            }
            {
                int8_t *const o0 = out + oc * n + pa, *const o1 = o0 + (ob - oc) * n;
                const int32_t d = pb - pa;
                if (SC_I8_FAST_REQ && sa <= -2 && sb <= -2) { /* the usual case: one SMLAL per output */
                    const uint32_t ha = ((uint32_t)1) << (-sa - 2), hb = ((uint32_t)1) << (-sb - 2);
                    o0[0] = sc_i8_requant_hk(a00, ma, ha, -sa - 1, zp, lo, hi);
                    o0[d] = sc_i8_requant_hk(a01, ma, ha, -sa - 1, zp, lo, hi);
                    o1[0] = sc_i8_requant_hk(a10, mb, hb, -sb - 1, zp, lo, hi);
                    o1[d] = sc_i8_requant_hk(a11, mb, hb, -sb - 1, zp, lo, hi);
                } else {
                    o0[0] = sc_i8_requant(a00, ma, sa, zp, lo, hi);
                    o0[d] = sc_i8_requant(a01, ma, sa, zp, lo, hi);
                    o1[0] = sc_i8_requant(a10, mb, sb, zp, lo, hi);
                    o1[d] = sc_i8_requant(a11, mb, sb, zp, lo, hi);
                }
            }
        }
    }
#else
    (void)col;
    for (oc = 0; oc < cout; ++oc) {
        const int8_t *const w = q + oc * cin;
        const int32_t b = bias ? bias[oc] : 0, m = mult[oc], sh = shift[oc];
        for (pos = 0; pos < n; pos += 2) {
            const int32_t two = pos + 1 < n;
            const int8_t *s = in + pos;
            int32_t a = b, c = b;
            for (ci = 0; ci < cin; ++ci, s += n) {
                const int32_t qv = w[ci];
                a += qv * s[0];
                if (two) c += qv * s[1];
            }
            out[oc * n + pos] = sc_i8_requant(a, m, sh, zp, lo, hi);
            if (two) out[oc * n + pos + 1] = sc_i8_requant(c, m, sh, zp, lo, hi);
        }
    }
#endif
}

/* ---- single-input-channel conv, 5 taps wide, stride 1, dilation 1 (first layers, e.g. LeNet's conv1) --
 * The input plane is copied into `pad` (arena scratch of SC_I8_C1_PAD_BYTES(p) int8) with in_zp borders and
 * rows of SC_I8_C1_WP(p) = wout rounded up to 4, + 4 bytes, so every window is interior and a quad of
 * outputs reads 8 bytes per kernel row. The bias holds -in_zp * sum(q) (folded at generation time), so the
 * padded taps (= in_zp) cancel exactly. Per output channel, 4 outputs per pass; with SMLAD per kernel row 3
 * word loads (x0..x3, x2..x5, x4..x7), 6 SXTB16 and 12 SMLAD(X) for 20 MACs against the weight pairs
 * (w0, w2), (w1, w3), (w4, 0) unpacked from the int8 row (one word load, 2 SXTB16, one byte load). The
 * requantization constants of the channel are hoisted out of its plane; a last partial quad stores only
 * its valid outputs. */
#define SC_I8_C1_WP(p) (((p)->wout + 3) / 4 * 4 + 4)
#define SC_I8_C1_PAD_BYTES(p) (((p)->hout + (p)->kh - 1) * SC_I8_C1_WP(p))

static inline SC_SPECIALIZE void sc_i8_conv_q8_c1k5(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                      const int32_t *mult, const int8_t *shift, int8_t *pad,
                                      const sc_i8_conv_params *p)
{
    const int32_t kh = p->kh, hout = p->hout, wout = p->wout, wp = SC_I8_C1_WP(p), hp = hout + kh - 1;
    const int32_t rows = p->hin < hp - p->ph ? p->hin : hp - p->ph;
    const int32_t cols = p->win < wp - p->pw ? p->win : wp - p->pw;
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    int32_t oc, y, oy, ox, ky;
    memset(pad, (unsigned char)p->in_zp, (size_t)SC_I8_C1_PAD_BYTES(p));
    for (y = 0; y < rows; ++y) memcpy(pad + (y + p->ph) * wp + p->pw, in + y * p->win, (size_t)cols);
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *const wc = q + oc * kh * 5;
        const int32_t b = bias ? bias[oc] : 0, m = mult[oc], sh = shift[oc];
        const int32_t fast = sh <= -2, k = -sh - 1;
        const uint32_t half = fast ? ((uint32_t)1) << (-sh - 2) : 0u;
        int8_t *o = out + oc * hout * wout;
        for (oy = 0; oy < hout; ++oy, o += wout) {
            const int8_t *const prow = pad + oy * wp;
            for (ox = 0; ox < wout; ox += 4) {
                const int8_t *r = prow + ox, *w = wc;
                int32_t a0 = b, a1 = b, a2 = b, a3 = b, n, i;
                for (ky = 0; ky < kh; ++ky, r += wp, w += 5) {
#if SC_INT8_DSP
                    const uint32_t wv = sc_ld32(w), u0 = sc_sxtb16(wv), u1 = sc_sxtb16_ror8(wv);
                    const uint32_t u2 = (uint16_t)(int16_t)w[4];
                    uint32_t v = sc_ld32(r), l = sc_sxtb16(v), h = sc_sxtb16_ror8(v); /* (x0, x2), (x1, x3) */
                    a0 = sc_smlad(u0, l, a0);
                    a0 = sc_smlad(u1, h, a0);
                    a1 = sc_smlad(u0, h, a1);
                    v = sc_ld32(r + 2); /* (x2, x4), (x3, x5) */
                    l = sc_sxtb16(v);
                    h = sc_sxtb16_ror8(v);
                    a1 = sc_smlad(u1, l, a1);
                    a2 = sc_smlad(u0, l, a2);
                    a2 = sc_smlad(u1, h, a2);
                    a3 = sc_smlad(u0, h, a3);
                    v = sc_ld32(r + 4); /* (x4, x6), (x5, x7) */
                    l = sc_sxtb16(v);
                    h = sc_sxtb16_ror8(v);
                    a0 = sc_smlad(u2, l, a0);
                    a1 = sc_smlad(u2, h, a1);
                    a2 = sc_smladx(u2, l, a2);
                    a3 = sc_smlad(u1, l, a3);
                    a3 = sc_smladx(u2, h, a3);
#else
                    for (i = 0; i < 5; ++i) {
                        const int32_t wk = w[i];
                        a0 += wk * r[i];
                        a1 += wk * r[i + 1];
                        a2 += wk * r[i + 2];
                        a3 += wk * r[i + 3];
                    }
#endif
                }
                n = wout - ox < 4 ? wout - ox : 4;
                (void)i;
                if (SC_I8_FAST_REQ && fast) {
                    o[ox] = sc_i8_requant_hk(a0, m, half, k, zp, lo, hi);
                    if (n > 1) o[ox + 1] = sc_i8_requant_hk(a1, m, half, k, zp, lo, hi);
                    if (n > 2) o[ox + 2] = sc_i8_requant_hk(a2, m, half, k, zp, lo, hi);
                    if (n > 3) o[ox + 3] = sc_i8_requant_hk(a3, m, half, k, zp, lo, hi);
                } else {
                    o[ox] = sc_i8_requant(a0, m, sh, zp, lo, hi);
                    if (n > 1) o[ox + 1] = sc_i8_requant(a1, m, sh, zp, lo, hi);
                    if (n > 2) o[ox + 2] = sc_i8_requant(a2, m, sh, zp, lo, hi);
                    if (n > 3) o[ox + 3] = sc_i8_requant(a3, m, sh, zp, lo, hi);
                }
            }
        }
    }
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
            sc_bitreader br;                                                                       \
            sc_bits_at(&br, stream, (uint32_t)ptr[oc] * (uint32_t)(gap_bits + 8));            \
            for (k = 0; k < n; ++k) {                                                            \
                const uint32_t f = sc_bits_get(&br, gap_bits + 8);                            \
                const int32_t qv = sc_s8(f >> gap_bits);                                      \
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
#if defined(__OPTIMIZE_SIZE__) || defined(SC_I8_MAXPOOL_FAST)
    if (p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 && p->pw == 0 && p->dh == 1 && p->dw == 1 &&
        2 * p->hout <= p->hin && 2 * p->wout <= p->win) {
        /* 2x2 stride 2, no padding, no dilation, no ceil-mode window past the input (LeNet's pools): every
         * window is interior, so no per-tap bounds checks. At -Os only: there the kernel is not inlined with
         * its constant parameters (the generic loop takes 8x longer); at -O2 the folded generic loop is faster. */
        const int32_t win = p->win, hout = p->hout, wout = p->wout;
        for (c = 0; c < p->c; ++c) {
            const int8_t *ic = in + c * p->hin * win;
            for (oy = 0; oy < hout; ++oy, ic += 2 * win) {
                for (ox = 0; ox < wout; ++ox) {
                    const int8_t *r = ic + 2 * ox;
                    const int32_t a = r[0] > r[1] ? r[0] : r[1], b = r[win] > r[win + 1] ? r[win] : r[win + 1];
                    *out++ = (int8_t)(a > b ? a : b);
                }
            }
        }
        return;
    }
#endif
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
        y[i] = sc_i8_requant(av + bv, p->out_mult, p->out_shift, p->out_zp, p->act_min, p->act_max);
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
        y[i] = sc_i8_requant(prod, p->mult, p->shift, p->out_zp, p->act_min, p->act_max);
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
            y[i] = sc_i8_requant((int32_t)x[i] - in_zp, mult, shift, out_zp, -128, 127);
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
