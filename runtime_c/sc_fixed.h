/*
 * sparsecomp runtime — the fixed-point math of fully integer inference (int8 activations, int8
 * weights, int32 accumulation, fixed-point requantization) and the DSP pair arithmetic its kernels
 * use. The int8 kernels themselves live in their op family's header, in its "int8" section
 * (sc_conv.h, sc_linear.h, sc_pool.h, sc_eltwise.h, sc_unary.h, sc_strided.h, sc_deconv.h, ...).
 * No float at run time: every int8 kernel uses int32 arithmetic plus one 32x32->64-bit
 * multiply-accumulate (SMLAL on Cortex-M3/M4).
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
#ifndef SC_FIXED_H
#define SC_FIXED_H

#include <string.h>

#include "sc_runtime.h"

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
/* (b2, b0) / (b3, b1) of x zero-extended: UXTB16, UXTB16 ROR #8 */
static inline uint32_t sc_uxtb16(uint32_t x) { return __uxtb16(x); }
#if defined(__GNUC__)
static inline uint32_t sc_uxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("uxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#else
static inline uint32_t sc_uxtb16_ror8(uint32_t x) { return __uxtb16((x >> 8) | (x << 24)); }
#endif
/* acc + lo(a) * lo(b) + hi(a) * hi(b), signed halfwords */
static inline int32_t sc_smlad(uint32_t a, uint32_t b, int32_t acc) { return __smlad((int32_t)a, (int32_t)b, acc); }
/* acc + lo(a) * hi(b) + hi(a) * lo(b) (SMLADX) */
static inline int32_t sc_smladx(uint32_t a, uint32_t b, int32_t acc) { return __smladx((int32_t)a, (int32_t)b, acc); }
/* acc + one signed halfword product: SMLA<x><y>, x / y the half (b bottom, t top) of a / b */
static inline int32_t sc_smlabb(uint32_t a, uint32_t b, int32_t acc) { return __smlabb((int32_t)a, (int32_t)b, acc); }
static inline int32_t sc_smlabt(uint32_t a, uint32_t b, int32_t acc) { return __smlabt((int32_t)a, (int32_t)b, acc); }
static inline int32_t sc_smlatb(uint32_t a, uint32_t b, int32_t acc) { return __smlatb((int32_t)a, (int32_t)b, acc); }
static inline int32_t sc_smlatt(uint32_t a, uint32_t b, int32_t acc) { return __smlatt((int32_t)a, (int32_t)b, acc); }
/* (hi(a) - hi(b), lo(a) - lo(b)), signed halfwords wrapping modulo 2^16 (SSUB16) */
static inline uint32_t sc_ssub16(uint32_t a, uint32_t b) { return (uint32_t)__ssub16((int32_t)a, (int32_t)b); }
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
static inline uint32_t sc_uxtb16(uint32_t x) { return x & 0x00FF00FFu; }
static inline uint32_t sc_uxtb16_ror8(uint32_t x) { return (x >> 8) & 0x00FF00FFu; }
static inline int32_t sc_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return acc + sc_s16lo(a) * sc_s16lo(b) + sc_s16hi(a) * sc_s16hi(b);
}
static inline int32_t sc_smladx(uint32_t a, uint32_t b, int32_t acc)
{
    return acc + sc_s16lo(a) * sc_s16hi(b) + sc_s16hi(a) * sc_s16lo(b);
}
static inline int32_t sc_smlabb(uint32_t a, uint32_t b, int32_t acc) { return acc + sc_s16lo(a) * sc_s16lo(b); }
static inline int32_t sc_smlabt(uint32_t a, uint32_t b, int32_t acc) { return acc + sc_s16lo(a) * sc_s16hi(b); }
static inline int32_t sc_smlatb(uint32_t a, uint32_t b, int32_t acc) { return acc + sc_s16hi(a) * sc_s16lo(b); }
static inline int32_t sc_smlatt(uint32_t a, uint32_t b, int32_t acc) { return acc + sc_s16hi(a) * sc_s16hi(b); }
static inline uint32_t sc_ssub16(uint32_t a, uint32_t b)
{
    return (((a & 0xFFFF0000u) - (b & 0xFFFF0000u)) & 0xFFFF0000u) | (((a & 0xFFFFu) - (b & 0xFFFFu)) & 0xFFFFu);
}
#endif

/* acc + (a * b + 2^31) / 2^32 rounded down (SMMLAR; the high word of acc * 2^32 + a * b + 2^31). */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__GNUC__)
static inline int32_t sc_smmlar(int32_t a, int32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
#else
static inline int32_t sc_smmlar(int32_t a, int32_t b, int32_t acc)
{
    const int64_t v = (int64_t)acc * 4294967296LL + (int64_t)a * (int64_t)b + 2147483648LL;
    return (int32_t)(uint32_t)(uint64_t)(v >= 0 ? v >> 32 : ~(~v >> 32));
}
#endif

/* 4 bytes from any address (one LDR on the M4, which allows unaligned word loads; no aliasing). */
static inline uint32_t sc_ld32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* x - zp for the 4 int8 of v as halfword pairs, bytes 0, 2 in *p02 and 1, 3 in *p13 (x - zp fits in 16 bits):
 * SXTB16 and SSUB16 (zp2: zp in both halves; none for zp 0), or for zp -128 (after a ReLU) x + 128 as the byte
 * with its top bit flipped, zero-extended: EOR and UXTB16 */
static inline SC_SPECIALIZE void sc_i8_pairs_zp(uint32_t v, int32_t zp, uint32_t zp2, uint32_t *p02, uint32_t *p13)
{
    if (zp == -128) {
        *p02 = sc_uxtb16(v ^ 0x80808080u);
        *p13 = sc_uxtb16_ror8(v ^ 0x80808080u);
    } else {
        *p02 = sc_sxtb16(v);
        *p13 = sc_sxtb16_ror8(v);
        if (zp) {
            *p02 = sc_ssub16(*p02, zp2);
            *p13 = sc_ssub16(*p13, zp2);
        }
    }
}

/* acc + the 4 products of the int8 word w with an operand word split as xa = sc_sxtb16(x) (bytes 0, 2)
 * and xb = sc_sxtb16_ror8(x) (bytes 1, 3): 2 SXTB16 and 2 SMLAD on the M4 */
static inline int32_t sc_i8_mac4(uint32_t w, uint32_t xa, uint32_t xb, int32_t acc)
{
    return sc_smlad(sc_sxtb16_ror8(w), xb, sc_smlad(sc_sxtb16(w), xa, acc));
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
/* v, hidden from the optimizer (a per-row constant gcc would otherwise re-expand into the loop) */
#if defined(__GNUC__)
static inline int32_t sc_opaque32(int32_t v)
{
    __asm__("" : "+r"(v));
    return v;
}
#else
static inline int32_t sc_opaque32(int32_t v) { return v; }
#endif

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

/* The requantization of kernels that accumulate 2 * acc (doubled weights or inputs in their halfword
 * pairs): clamp(mbqm(acc, mult, -e) + zp, lo, hi) for 1 <= e <= SC_I8_MM_EMAX and |acc| < 2^30 (every
 * partial sum too), with kz = 2^(e-1) + zp * 2^e (SC_I8_MM_KZ). t = floor((acc2 * mult + 2^31) / 2^32) =
 * floor((acc * mult + 2^30) / 2^31) is SaturatingRoundingDoublingHighMul (which never saturates for
 * mult >= 0, see sc_i8_srdhm), SMMLAR adds kz to it, and RoundingDivideByPOT is floor((t + 2^(e-1) -
 * [t < 0]) / 2^e), where [acc < 0] may stand for [t < 0] (acc < 0 with t == 0 gives 0 either way):
 * floor((t + kz - [acc < 0]) / 2^e) = rdbpot(t, e) + zp. |t| <= |acc| + 1 and |kz| < 2^29, so nothing
 * overflows. When lo >= zp (ReLU) the [acc < 0] term is dropped: a negative acc gives t <= 0, a result
 * <= zp with or without it, and both clamp to lo. On the M4: SMMLAR, (SUB), ASR, SSAT. */
#define SC_I8_MM_EMAX 21
#define SC_I8_MM_KZ(e, zp) ((int32_t)(((uint32_t)1) << ((e) - 1)) + (zp) * (int32_t)(((uint32_t)1) << (e)))
#if defined(__GNUC__)
#define SC_CONST_P(x) __builtin_constant_p(x)
#else
#define SC_CONST_P(x) 0
#endif
static inline int8_t sc_i8_requant_mm(int32_t acc2, int32_t mult, int32_t kz, int32_t e, int32_t zp, int32_t lo,
                                      int32_t hi)
{
    int32_t v = sc_smmlar(acc2, mult, kz);
    /* the tests drop out only where the bounds are compile-time constants (an inlined constant parameter
     * block); with run-time bounds one SUB and a compare each are cheaper than testing first */
    if (!(SC_CONST_P(lo) && SC_CONST_P(zp)) || lo < zp) v -= (int32_t)((uint32_t)acc2 >> 31);
    v = sc_ssat8(v >> e);
    if ((!SC_CONST_P(lo) || lo > -128) && v < lo) v = lo;
    if ((!SC_CONST_P(hi) || hi < 127) && v > hi) v = hi;
    return (int8_t)v;
}

/* sc_i8_mbqm(acc, mult, shift) for |acc| < 2^30: with 1 <= e = -shift <= SC_I8_MM_EMAX one SMMLAR on 2 * acc,
 * the [acc < 0] correction and a shift (sc_i8_requant_mm's derivation without the zero point); other shifts
 * take sc_i8_mbqm. */
static inline int32_t sc_i8_mbqm_small(int32_t acc, int32_t mult, int32_t shift)
{
    if (shift <= -1 && shift >= -SC_I8_MM_EMAX) {
        const int32_t e = -shift;
        return (sc_smmlar(2 * acc, mult, (int32_t)(((uint32_t)1) << (e - 1))) - (int32_t)((uint32_t)acc >> 31)) >> e;
    }
    return sc_i8_mbqm(acc, mult, shift);
}

/* sc_i8_requant_mm holds for a channel whose accumulator starts at b and adds `taps` products of int8
 * (|q * x| <= 2^14): -SC_I8_MM_EMAX <= shift <= -1 and |b| + 2^14 * taps < 2^30. sc_i8_mm_all: for all n. */
static inline int sc_i8_mm_ok(int32_t b, int32_t shift, int32_t taps)
{
    const int32_t lim = taps < 65536 ? ((int32_t)1 << 30) - taps * 16384 : 0;
    return shift <= -1 && shift >= -SC_I8_MM_EMAX && b > -lim && b < lim;
}

static inline int sc_i8_mm_all(const int32_t *b, const int8_t *shift, int32_t n, int32_t taps)
{
    int32_t c;
    for (c = 0; c < n; ++c)
        if (!sc_i8_mm_ok(b ? b[c] : 0, shift[c], taps)) return 0;
    return 1;
}

/* One layer-wide requantization applied to small values (elementwise kernels): for |x| <= xmax,
 * sc_i8_rq_init prepares it and returns 1 when sc_i8_rq_mbqm(r, x) == sc_i8_mbqm(x, mult, shift) + zp and
 * sc_i8_rq_out == sc_i8_requant exactly (else the caller keeps the generic functions). With L = max(shift, 0)
 * + 1 and e = max(-shift, 0), SMMLAR(x * 2^L, mult, kz) is floor((x * 2^max(shift, 0) * mult + 2^30) / 2^31)
 * + kz: SaturatingRoundingDoublingHighMul of the left-shifted x (which cannot saturate while |x * 2^L| <
 * 2^31) plus kz = 2^(e-1) + zp * 2^e (zp alone when e == 0); for e >= 1 subtracting [x < 0] and shifting
 * right by e is RoundingDivideByPOT (see sc_i8_requant_mm). Conditions: -SC_I8_MM_EMAX <= shift <= 22,
 * xmax * 2^L < 2^30. */
typedef struct {
    int32_t m, l, e, kz, cm; /* multiplier, left shift, right shift, added constant, [e >= 1] */
} sc_i8_rq;

static inline int sc_i8_rq_init(sc_i8_rq *r, int32_t mult, int32_t shift, int32_t zp, int32_t xmax)
{
    r->m = mult;
    r->l = (shift > 0 ? shift : 0) + 1;
    r->e = shift < 0 ? -shift : 0;
    r->cm = r->e > 0;
    if (shift < -SC_I8_MM_EMAX || shift > 22 || xmax < 0 || xmax >= ((int32_t)1 << (30 - r->l))) return 0;
    r->kz = (r->e > 0 ? (int32_t)(((uint32_t)1) << (r->e - 1)) : 0) + zp * (int32_t)(((uint32_t)1) << r->e);
    return 1;
}

static inline int32_t sc_i8_rq_mbqm(const sc_i8_rq *r, int32_t x)
{
    const int32_t xs = (int32_t)((uint32_t)x << r->l);
    return (sc_smmlar(xs, r->m, r->kz) - (int32_t)(((uint32_t)xs >> 31) & (uint32_t)r->cm)) >> r->e;
}

static inline int8_t sc_i8_rq_out(const sc_i8_rq *r, int32_t x, int32_t lo, int32_t hi)
{
    int32_t v = sc_ssat8(sc_i8_rq_mbqm(r, x));
    if ((!SC_CONST_P(lo) || lo > -128) && v < lo) v = lo;
    if ((!SC_CONST_P(hi) || hi < 127) && v > hi) v = hi;
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

#endif /* SC_FIXED_H */
