/*
 * sparsecomp runtime — fully connected layer over the last dimension.
 * y[r][o] = act(bias[o] + sum_i W[o][i] * x[r][i]) for each of `rows` leading positions.
 *
 * Sections: float (dense, CSR), weight-only (int8 / codebook weights, float activations), int8
 * (int8 activations and weights, codegen/integer.py). The kernels defined once per index type (CSR
 * column index / row pointer: uint8/16/32) are macros instantiated at the end of the header from one
 * X-macro list per index set (SC_LINEAR_CSR_LIST, SC_LINEAR_REL_LIST), which names every generated function.
 */
#ifndef SC_LINEAR_H
#define SC_LINEAR_H

#include "sc_runtime.h"
#include "sc_gemm.h"  /* float micro-kernels */
#include "sc_bits.h"  /* weight-only forms */
#include "sc_fixed.h" /* int8 */

typedef struct {
    int32_t rows, in, out;
    int32_t act;
    float alpha;
} sc_linear_params;

#if SC_SMALL_CODE
/* Compact form (-Os): one output at a time. */
static inline void sc_linear_dense(const float *x, float *y, const float *w, const float *bias,
                                   const sc_linear_params *p)
{
    int32_t r, o, i;
    for (r = 0; r < p->rows; ++r, x += p->in) {
        const float *wr = w;
        for (o = 0; o < p->out; ++o) {
            float acc = bias ? bias[o] : 0.0f;
            for (i = 0; i < p->in; ++i) acc = SC_FMA(*wr++, x[i], acc);
            *y++ = sc_act(acc, p->act, p->alpha);
        }
    }
}
#else
/* 4 outputs at a time (sc_dot4: each input load feeds 4 MACs; on the M4F one VLDMIA of 8 inputs and
 * 4 of 8 weights per 32 MACs). Outputs past the end repeat the last row (computed and stored twice). */
static inline void sc_linear_dense(const float *x, float *y, const float *w, const float *bias,
                                   const sc_linear_params *p)
{
    const int32_t n = p->in;
    int32_t r, o, j;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * n;
        float *yr = y + r * p->out;
        for (o = 0; o < p->out; o += 4) {
            const float *ws[4];
            float acc[4];
            for (j = 0; j < 4; ++j) {
                const int32_t oj = o + j < p->out ? o + j : p->out - 1;
                ws[j] = w + oj * n;
                acc[j] = bias ? bias[oj] : 0.0f;
            }
            sc_dot4(xr, ws[0], ws[1], ws[2], ws[3], n, acc);
            for (j = 0; j < 4 && o + j < p->out; ++j) yr[o + j] = sc_act(acc[j], p->act, p->alpha);
        }
    }
}

#endif /* SC_SMALL_CODE */

/* ==== float =================================================================================== */

/* ---- CSR ------------------------------------------------------------------------------------
 * sc_csr_dot8_<is>(x, &v, &c, n8, &a0, &a1) adds 8 * n8 nonzeros (weights v, column indices c)
 * to the two accumulators and advances v and c. On a Cortex-M4F/M7 (SC_CSR_ASM, default on there
 * with GCC-compatible compilers) the uint8/uint16 forms are a hand-scheduled loop: per 8
 * nonzeros 8 index loads, 8 indexed input loads into core registers (LDR with a scaled register
 * offset: no address add), 4 VMOVs of register pairs, one VLDMIA of 8 weights and 8 VFMAs, 31
 * instructions where gcc's code for the C loop takes 48. -DSC_CSR_ASM=0 selects the C loop. */
#ifndef SC_CSR_ASM
#if defined(__GNUC__) && defined(__thumb2__) && defined(__ARM_ARCH_7EM__) && defined(__ARM_FP) && \
    (__ARM_FP & 4) && defined(__FP_FAST_FMAF)
#define SC_CSR_ASM 1
#else
#define SC_CSR_ASM 0
#endif
#endif

#define SC_CSR_DOT8_C(NAME, IT)                                                                   \
    static inline void NAME(const float *x, const float **vp, const IT **cp,                    \
                                          int32_t n8, float *a0p, float *a1p)                    \
    {                                                                                            \
        const float *v = *vp;                                                                    \
        const IT *c = *cp;                                                                       \
        float a0 = *a0p, a1 = *a1p;                                                              \
        for (; n8 > 0; --n8, v += 8, c += 8) {                                                   \
            a0 = SC_FMA(v[0], x[c[0]], a0); a1 = SC_FMA(v[1], x[c[1]], a1);                      \
            a0 = SC_FMA(v[2], x[c[2]], a0); a1 = SC_FMA(v[3], x[c[3]], a1);                      \
            a0 = SC_FMA(v[4], x[c[4]], a0); a1 = SC_FMA(v[5], x[c[5]], a1);                      \
            a0 = SC_FMA(v[6], x[c[6]], a0); a1 = SC_FMA(v[7], x[c[7]], a1);                      \
        }                                                                                        \
        *vp = v;                                                                                 \
        *cp = c;                                                                                 \
        *a0p = a0;                                                                               \
        *a1p = a1;                                                                               \
    }
/* X(name, column index type): the C loop */
#define SC_CSR_DOT8_C_LIST(X)                                                                   \
    X(sc_csr_dot8_c_u8, uint8_t)                                                                \
    X(sc_csr_dot8_c_u16, uint16_t)                                                              \
    X(sc_csr_dot8_c_u32, uint32_t)
SC_CSR_DOT8_C_LIST(SC_CSR_DOT8_C)

#if SC_CSR_ASM
/* LDI: the index load ("ldrb" / "ldrh"), STEP: its size in bytes. Same accumulation order as
 * the C loop (a0 takes the even nonzeros, a1 the odd ones). */
#define SC_CSR_DOT8_ASM_HALF(LDI, STEP, S0, S1, S2, S3, W0, W1, W2, W3)                           \
    LDI " %[i0], [%[c]], #" STEP "\n\t"                                                          \
    LDI " %[i1], [%[c]], #" STEP "\n\t"                                                          \
    LDI " %[i2], [%[c]], #" STEP "\n\t"                                                          \
    LDI " %[i3], [%[c]], #" STEP "\n\t"                                                          \
    "ldr %[i0], [%[x], %[i0], lsl #2]\n\t"                                                       \
    "ldr %[i1], [%[x], %[i1], lsl #2]\n\t"                                                       \
    "ldr %[i2], [%[x], %[i2], lsl #2]\n\t"                                                       \
    "ldr %[i3], [%[x], %[i3], lsl #2]\n\t"                                                       \
    "vmov " S0 ", " S1 ", %[i0], %[i1]\n\t"                                                      \
    "vmov " S2 ", " S3 ", %[i2], %[i3]\n\t"                                                      \
    "vfma.f32 %[a0], " W0 ", " S0 "\n\t"                                                         \
    "vfma.f32 %[a1], " W1 ", " S1 "\n\t"                                                         \
    "vfma.f32 %[a0], " W2 ", " S2 "\n\t"                                                         \
    "vfma.f32 %[a1], " W3 ", " S3 "\n\t"
#define SC_CSR_DOT8_ASM(NAME, IT, LDI, STEP)                                                      \
    static inline void NAME(const float *x, const float **vp, const IT **cp,                    \
                                        int32_t n8, float *a0p, float *a1p)                      \
    {                                                                                            \
        const float *v = *vp;                                                                    \
        const IT *c = *cp;                                                                       \
        float a0 = *a0p, a1 = *a1p;                                                              \
        uint32_t i0, i1, i2, i3;                                                                 \
        if (n8 <= 0) return;                                                                     \
        __asm__ volatile(                                                                        \
            "1:\n\t"                                                                             \
            "vldmia %[v]!, {s8-s15}\n\t"                                                         \
            SC_CSR_DOT8_ASM_HALF(LDI, STEP, "s0", "s1", "s2", "s3", "s8", "s9", "s10", "s11")    \
            SC_CSR_DOT8_ASM_HALF(LDI, STEP, "s4", "s5", "s6", "s7", "s12", "s13", "s14", "s15")  \
            "subs %[n], %[n], #1\n\t"                                                            \
            "bne 1b\n\t"                                                                         \
            : [c] "+r"(c), [v] "+r"(v), [n] "+r"(n8), [a0] "+t"(a0), [a1] "+t"(a1),              \
              [i0] "=&r"(i0), [i1] "=&r"(i1), [i2] "=&r"(i2), [i3] "=&r"(i3)                     \
            : [x] "r"(x)                                                                         \
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",   \
              "s13", "s14", "s15", "cc", "memory");                                              \
        *vp = v;                                                                                 \
        *cp = c;                                                                                 \
        *a0p = a0;                                                                               \
        *a1p = a1;                                                                               \
    }
/* X(name, column index type, index load, its size): the assembly loop */
#define SC_CSR_DOT8_ASM_LIST(X)                                                                 \
    X(sc_csr_dot8_u8, uint8_t, "ldrb", "1")                                                     \
    X(sc_csr_dot8_u16, uint16_t, "ldrh", "2")
SC_CSR_DOT8_ASM_LIST(SC_CSR_DOT8_ASM)
#else
#define sc_csr_dot8_u8 sc_csr_dot8_c_u8
#define sc_csr_dot8_u16 sc_csr_dot8_c_u16
#endif
#define sc_csr_dot8_u32 sc_csr_dot8_c_u32

/* CSR kernels, one per (column index type, row pointer type) pair: sc_linear_csr_<is>_<ps>.
 * Per output: 8 nonzeros at a time (sc_csr_dot8_<is>), then the rest one by one. */
#define SC_DEFINE_LINEAR_CSR(NAME, DOT8, Q8, CB, I8, IT, PT)                                      \
    static inline SC_SPECIALIZE void NAME(                                                       \
        const float *x, float *y, const float *val, const IT *col, const PT *ptr,                \
        const float *bias, const sc_linear_params *p)                                            \
    {                                                                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const float *xr = x + r * p->in;                                                     \
            float *yr = y + r * p->out;                                                          \
            for (o = 0; o < p->out; ++o) {                                                       \
                const float *v = val + ptr[o];                                                   \
                const IT *c = col + ptr[o];                                                      \
                float a0 = bias ? bias[o] : 0.0f, a1 = 0.0f;                                     \
                k = (int32_t)(ptr[o + 1] - ptr[o]);                                              \
                DOT8(xr, &v, &c, k >> 3, &a0, &a1);                                              \
                for (k &= 7; k > 0; --k) a0 = SC_FMA(*v++, xr[*c++], a0);                        \
                yr[o] = sc_act(a0 + a1, p->act, p->alpha);                                       \
            }                                                                                    \
        }                                                                                        \
    }

/* ==== weight-only ============================================================================= */

/* ---- int8 / codebook weights (formats.py q8*, cb*), float activations ------------------------- */

/* 4 outputs at a time (each input load feeds 4 MACs; outputs past the end repeat the last row,
 * computed and stored twice); each int8 weight is converted once (LDRSB, VMOV, VCVT). */
static inline void sc_linear_q8(const float *x, float *y, const int8_t *q, const float *scale,
                                const float *bias, const sc_linear_params *p)
{
    const int32_t n = p->in;
    int32_t r, o, i, j;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * n;
        float *yr = y + r * p->out;
        for (o = 0; o < p->out; o += 4) {
            const int8_t *w0, *w1, *w2, *w3;
            const float *xp = xr;
            float acc[4], a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            int32_t oj[4];
            for (j = 0; j < 4; ++j) oj[j] = o + j < p->out ? o + j : p->out - 1;
            w0 = q + oj[0] * n; w1 = q + oj[1] * n; w2 = q + oj[2] * n; w3 = q + oj[3] * n;
            for (i = 0; i < n; ++i) {
                const float v = *xp++;
                a0 = SC_FMA((float)*w0++, v, a0);
                a1 = SC_FMA((float)*w1++, v, a1);
                a2 = SC_FMA((float)*w2++, v, a2);
                a3 = SC_FMA((float)*w3++, v, a3);
            }
            acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
            for (j = 0; j < 4 && o + j < p->out; ++j)
                yr[o + j] = sc_act(scale[oj[j]] * acc[j] + (bias ? bias[oj[j]] : 0.0f), p->act, p->alpha);
        }
    }
}

static inline void sc_linear_cb(const float *x, float *y, const uint8_t *idx, const float *cb,
                                int32_t bits, const float *bias, const sc_linear_params *p)
{
    int32_t r, o, i;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * p->in;
        float *yr = y + r * p->out;
        sc_bitreader br;
        sc_bits_init(&br, idx);
        for (o = 0; o < p->out; ++o) {
            float acc = bias ? bias[o] : 0.0f;
            for (i = 0; i < p->in; ++i) acc += cb[sc_bits_get(&br, bits)] * xr[i];
            yr[o] = sc_act(acc, p->act, p->alpha);
        }
    }
}

/* sc_linear_q8_csr_<it>_<pt> and sc_linear_cb_csr_<it>_<pt>. */
#define SC_DEFINE_LINEAR_QCSR(NAME, DOT8, Q8, CB, I8, IT, PT)                                     \
    static inline void Q8(const float *x, float *y, const int8_t *q,                            \
                                                    const IT *col, const PT *ptr,                \
                                                    const float *scale, const float *bias,       \
                                                    const sc_linear_params *p)                   \
    {                                                                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const float *xr = x + r * p->in;                                                     \
            float *yr = y + r * p->out;                                                          \
            for (o = 0; o < p->out; ++o) {                                                       \
                const int8_t *v = q + ptr[o];                                                    \
                const IT *c = col + ptr[o];                                                      \
                float a0 = 0.0f, a1 = 0.0f;                                                      \
                for (k = (int32_t)(ptr[o + 1] - ptr[o]); k >= 4; k -= 4, v += 4, c += 4) {      \
                    a0 = SC_FMA((float)v[0], xr[c[0]], a0);                                      \
                    a1 = SC_FMA((float)v[1], xr[c[1]], a1);                                      \
                    a0 = SC_FMA((float)v[2], xr[c[2]], a0);                                      \
                    a1 = SC_FMA((float)v[3], xr[c[3]], a1);                                      \
                }                                                                                \
                for (; k > 0; --k) a0 = SC_FMA((float)*v++, xr[*c++], a0);                       \
                yr[o] = sc_act(scale[o] * (a0 + a1) + (bias ? bias[o] : 0.0f), p->act, p->alpha); \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    static inline void CB(const float *x, float *y, const uint8_t *idx,                          \
                                                    const float *cb, const IT *col,              \
                                                    const PT *ptr, int32_t bits,                 \
                                                    const float *bias, const sc_linear_params *p)\
    {                                                                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const float *xr = x + r * p->in;                                                     \
            float *yr = y + r * p->out;                                                          \
            sc_bitreader br;                                                                     \
            sc_bits_init(&br, idx);                                                              \
            for (o = 0; o < p->out; ++o) {                                                       \
                float acc = bias ? bias[o] : 0.0f;                                               \
                const int32_t end = (int32_t)ptr[o + 1];                                         \
                for (k = (int32_t)ptr[o]; k < end; ++k)                                          \
                    acc += cb[sc_bits_get(&br, bits)] * xr[col[k]];                              \
                yr[o] = sc_act(acc, p->act, p->alpha);                                           \
            }                                                                                    \
        }                                                                                        \
    }

/* sc_linear_q8_rel_<pt> and sc_linear_cb_rel_<pt>. */
/* The row loop of the relative-index forms with float activations (also sc_huff.h's): per output,
 * NEXT is the row's next entry f (gap | value << gap_bits), WEIGHT its weight, ACC0 the start value
 * and OUT the output from acc. */
#define SC_LINEAR_REL_ROWS(ACC0, NEXT, WEIGHT, OUT)                                             \
    const uint32_t gmask = (1u << gap_bits) - 1u;                                               \
    int32_t r, o, k;                                                                            \
    for (r = 0; r < p->rows; ++r) {                                                             \
        const float *xr = x + r * p->in;                                                        \
        float *yr = y + r * p->out;                                                             \
        sc_bitreader br;                                                                        \
        sc_bits_init(&br, stream);                                                              \
        for (o = 0; o < p->out; ++o) {                                                          \
            float acc = ACC0;                                                                   \
            int32_t pos = 0;                                                                    \
            const int32_t n = (int32_t)ptr[o + 1] - (int32_t)ptr[o];                            \
            for (k = 0; k < n; ++k) {                                                           \
                const uint32_t f = NEXT;                                                        \
                pos += (int32_t)(f & gmask);                                                    \
                acc += WEIGHT * xr[pos++];                                                      \
            }                                                                                   \
            yr[o] = OUT;                                                                        \
        }                                                                                       \
    }

#define SC_DEFINE_LINEAR_QREL(Q8, CB, I8, PT)                                                                 \
    static inline void Q8(const float *x, float *y, const uint8_t *stream, const PT *ptr, const float *scale, \
                          int32_t gap_bits, const float *bias, const sc_linear_params *p)                     \
    {                                                                                                         \
        SC_LINEAR_REL_ROWS(0.0f, sc_bits_get(&br, gap_bits + 8), (float)sc_s8(f >> gap_bits),                 \
                           sc_act(scale[o] * acc + (bias ? bias[o] : 0.0f), p->act, p->alpha))                \
    }                                                                                                         \
    static inline void CB(const float *x, float *y, const uint8_t *stream, const float *cb, const PT *ptr,    \
                          int32_t bits, int32_t gap_bits, const float *bias, const sc_linear_params *p)       \
    {                                                                                                         \
        SC_LINEAR_REL_ROWS(bias ? bias[o] : 0.0f, sc_bits_get(&br, gap_bits + bits), cb[f >> gap_bits],       \
                           sc_act(acc, p->act, p->alpha))                                                     \
    }
/* ---- codebook linear ------------------------------------------------------------------------
 * Dense codebook weights with in % 8 == 0: a row's 8 indices are `bits` bytes (rows start on a
 * byte). 4 rows per pass share the input loads; each row's sum runs in input order. On a
 * Cortex-M4F (SC_CSR_ASM, as sc_linear.h's CSR loop) 4- and 8-bit indices take a hand-scheduled
 * loop: per 8 weights of a row, one word load (4-bit: AND/UBFX/LSR cut the fields) or 8 LDRB
 * (8-bit), 8 codebook loads into core registers (LDR with a scaled register offset), 4 VMOVs of
 * register pairs and 8 VFMAs; one VLDMIA of 8 inputs serves the 4 rows: 117 (4-bit) / 113
 * (8-bit) instructions per 32 MACs. Elsewhere (other widths, host, M3) the C loop below. */

/* The 8 b-bit fields of a row's group (`bits` bytes at g; constant bits fold the shifts). */
#define SC_CB_F(K) ((uint32_t)(v >> ((K) * bits)) & mask)
static inline SC_SPECIALIZE void sc_cb_dot8_c(const float *x, const uint8_t *g, const float *cb, int32_t bits,
                                              int32_t n8, float *acc)
{
    const uint32_t mask = (1u << bits) - 1u;
    float a = *acc;
    for (; n8 > 0; --n8, g += bits, x += 8) {
        uint32_t lo = 0u, hi = 0u;
        uint64_t v;
        memcpy(&lo, g, bits < 4 ? (size_t)bits : 4u);
        if (bits > 4) memcpy(&hi, g + 4, (size_t)(bits - 4));
        v = (uint64_t)lo | (uint64_t)hi << 32;
        a = SC_FMA(cb[SC_CB_F(0)], x[0], a);
        a = SC_FMA(cb[SC_CB_F(1)], x[1], a);
        a = SC_FMA(cb[SC_CB_F(2)], x[2], a);
        a = SC_FMA(cb[SC_CB_F(3)], x[3], a);
        a = SC_FMA(cb[SC_CB_F(4)], x[4], a);
        a = SC_FMA(cb[SC_CB_F(5)], x[5], a);
        a = SC_FMA(cb[SC_CB_F(6)], x[6], a);
        a = SC_FMA(cb[SC_CB_F(7)], x[7], a);
    }
    *acc = a;
}
#undef SC_CB_F

#if SC_CSR_ASM
/* Two fields (codebook values) of row G into the pair S0/S1, added to A times inputs X0/X1. */
#define SC_CB_PAIR(E0, E1, S0, S1, X0, X1, A)                                                     \
    E0 "\n\t" E1 "\n\t"                                                                          \
    "ldr %[t0], [%[cb], %[t0], lsl #2]\n\t"                                                      \
    "ldr %[t1], [%[cb], %[t1], lsl #2]\n\t"                                                      \
    "vmov " S0 ", " S1 ", %[t0], %[t1]\n\t"                                                      \
    "vfma.f32 " A ", " S0 ", " X0 "\n\t"                                                         \
    "vfma.f32 " A ", " S1 ", " X1 "\n\t"
#define SC_CB_ROW4(G, A)                                                                          \
    "ldr %[w], [" G "], #4\n\t"                                                                  \
    SC_CB_PAIR("and %[t0], %[w], #15", "ubfx %[t1], %[w], #4, #4", "s16", "s17", "s8", "s9", A)  \
    SC_CB_PAIR("ubfx %[t0], %[w], #8, #4", "ubfx %[t1], %[w], #12, #4", "s18", "s19", "s10", "s11", A) \
    SC_CB_PAIR("ubfx %[t0], %[w], #16, #4", "ubfx %[t1], %[w], #20, #4", "s16", "s17", "s12", "s13", A) \
    SC_CB_PAIR("ubfx %[t0], %[w], #24, #4", "lsr %[t1], %[w], #28", "s18", "s19", "s14", "s15", A)
#define SC_CB_ROW8(G, A)                                                                          \
    SC_CB_PAIR("ldrb %[t0], [" G "], #1", "ldrb %[t1], [" G "], #1", "s16", "s17", "s8", "s9", A) \
    SC_CB_PAIR("ldrb %[t0], [" G "], #1", "ldrb %[t1], [" G "], #1", "s18", "s19", "s10", "s11", A) \
    SC_CB_PAIR("ldrb %[t0], [" G "], #1", "ldrb %[t1], [" G "], #1", "s16", "s17", "s12", "s13", A) \
    SC_CB_PAIR("ldrb %[t0], [" G "], #1", "ldrb %[t1], [" G "], #1", "s18", "s19", "s14", "s15", A)
#define SC_CB_DOT8X4_ASM(ROW)                                                                     \
    __asm__ volatile(                                                                            \
        "1:\n\t"                                                                                 \
        "vldmia %[x]!, {s8-s15}\n\t"                                                             \
        ROW("%[g0]", "%[a0]") ROW("%[g1]", "%[a1]") ROW("%[g2]", "%[a2]") ROW("%[g3]", "%[a3]")  \
        "subs %[n], %[n], #1\n\t"                                                                \
        "bne 1b\n\t"                                                                             \
        : [x] "+r"(x), [g0] "+r"(g0), [g1] "+r"(g1), [g2] "+r"(g2), [g3] "+r"(g3), [n] "+r"(n8), \
          [a0] "+t"(a0), [a1] "+t"(a1), [a2] "+t"(a2), [a3] "+t"(a3), [w] "=&r"(w),              \
          [t0] "=&r"(t0), [t1] "=&r"(t1)                                                         \
        : [cb] "r"(cb)                                                                           \
        : "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19", "cc", \
          "memory")
#endif

/* Adds rows g[0..3] (n8 groups of 8 indices) times x to acc[0..3]. */
static inline SC_SPECIALIZE void sc_cb_dot8x4(const float *x, const uint8_t *const *g, const float *cb, int32_t bits,
                                              int32_t n8, float *acc)
{
#if SC_CSR_ASM
    if ((bits == 4 || bits == 8) && n8 > 0) {
        const uint8_t *g0 = g[0], *g1 = g[1], *g2 = g[2], *g3 = g[3];
        float a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        uint32_t w, t0, t1;
        if (bits == 4)
            SC_CB_DOT8X4_ASM(SC_CB_ROW4);
        else
            SC_CB_DOT8X4_ASM(SC_CB_ROW8);
        (void)w;
        acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
        return;
    }
#endif
    sc_cb_dot8_c(x, g[0], cb, bits, n8, &acc[0]);
    sc_cb_dot8_c(x, g[1], cb, bits, n8, &acc[1]);
    sc_cb_dot8_c(x, g[2], cb, bits, n8, &acc[2]);
    sc_cb_dot8_c(x, g[3], cb, bits, n8, &acc[3]);
}

/* Dense codebook linear, in % 8 == 0: 4 rows per pass (rows past the end repeat the last one,
 * computed and stored twice). */
static inline SC_SPECIALIZE void sc_linear_cb8(const float *x, float *y, const uint8_t *idx, const float *cb,
                                               int32_t bits, const float *bias, const sc_linear_params *p)
{
    const int32_t n8 = p->in / 8, row_bytes = n8 * bits;
    int32_t r, o, j;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * p->in;
        float *yr = y + r * p->out;
        for (o = 0; o < p->out; o += 4) {
            const uint8_t *g[4];
            float a[4];
            for (j = 0; j < 4; ++j) {
                const int32_t oj = o + j < p->out ? o + j : p->out - 1;
                g[j] = idx + oj * row_bytes;
                a[j] = bias ? bias[oj] : 0.0f;
            }
            sc_cb_dot8x4(xr, g, cb, bits, n8, a);
            for (j = 0; j < 4 && o + j < p->out; ++j) yr[o + j] = sc_act(a[j], p->act, p->alpha);
        }
    }
}

/* ==== int8 ==================================================================================== */

/* ---- int8 (integer=True): y[r][o] = requant(bias[o] + sum_i q[o][i] * x[r][i])
 * bias already holds -in_zp * sum_i q[o][i] (folded at generation time), so the inner loop
 * multiplies raw int8 inputs. */

typedef struct {
    int32_t rows, in, out;
    int32_t out_zp, act_min, act_max;
} sc_i8_linear_params;

#define SC_I8_LINEAR_OUT                                                                          \
    yr[o] = sc_i8_requant(acc, mult[o], shift[o], p->out_zp, p->act_min, p->act_max)

/* SC_I8_LINEAR_ASM: the 4-row inner loop of sc_i8_linear_q8 as one asm block (Armv7E-M with gcc when optimizing:
 * -O0 cannot give it 12 registers); the C loop elsewhere, the same arithmetic. -DSC_I8_LINEAR_ASM=0 keeps the
 * C loop on the M4. */
#ifndef SC_I8_LINEAR_ASM
#if SC_INT8_DSP && defined(__GNUC__) && defined(__OPTIMIZE__) && defined(__ARM_ARCH_7EM__) && defined(__thumb2__)
#define SC_I8_LINEAR_ASM 1
#else
#define SC_I8_LINEAR_ASM 0
#endif
#endif

#if SC_INT8_DSP
/* acc + sum_i w[i] * x[i] over n values, 4 per SMLAD pair (bytes 0/2 and 1/3 of both sides match). */
static inline int32_t sc_i8_dot_dsp(const int8_t *w, const int8_t *x, int32_t n, int32_t acc)
{
    int32_t i;
    for (i = 0; i + 4 <= n; i += 4) {
        const uint32_t xv = sc_ld32(x + i);
        acc = sc_i8_mac4(sc_ld32(w + i), sc_sxtb16(xv), sc_sxtb16_ror8(xv), acc);
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
#if SC_I8_LINEAR_ASM
            if (n4 > 0) { /* 26 instructions per 16 MACs in 12 registers (the end pointer stays in memory; gcc's
                           * schedule of the C loop spills 5 values per pass) */
                const int8_t *xp = xr, *p0 = w0, *p2 = w2;
                const int8_t *const xe = xr + n4;
                uint32_t t0, t1, t2, t3;
                __asm__ volatile(
                    "1:\n\t"
                    "ldr %[xv], [%[x]], #4\n\t"
                    "ldr %[wv], [%[p0], %[in]]\n\t"
                    "sxtb16 %[xa], %[xv]\n\t"
                    "sxtb16 %[xv], %[xv], ror #8\n\t"
                    "sxtb16 %[wl], %[wv]\n\t"
                    "sxtb16 %[wv], %[wv], ror #8\n\t"
                    "smlad %[a1], %[wl], %[xa], %[a1]\n\t"
                    "smlad %[a1], %[wv], %[xv], %[a1]\n\t"
                    "ldr %[wv], [%[p0]], #4\n\t"
                    "sxtb16 %[wl], %[wv]\n\t"
                    "sxtb16 %[wv], %[wv], ror #8\n\t"
                    "smlad %[a0], %[wl], %[xa], %[a0]\n\t"
                    "smlad %[a0], %[wv], %[xv], %[a0]\n\t"
                    "ldr %[wv], [%[p2], %[in]]\n\t"
                    "sxtb16 %[wl], %[wv]\n\t"
                    "sxtb16 %[wv], %[wv], ror #8\n\t"
                    "smlad %[a3], %[wl], %[xa], %[a3]\n\t"
                    "smlad %[a3], %[wv], %[xv], %[a3]\n\t"
                    "ldr %[wv], [%[p2]], #4\n\t"
                    "sxtb16 %[wl], %[wv]\n\t"
                    "sxtb16 %[wv], %[wv], ror #8\n\t"
                    "smlad %[a2], %[wl], %[xa], %[a2]\n\t"
                    "smlad %[a2], %[wv], %[xv], %[a2]\n\t"
                    "ldr %[wl], %[xe]\n\t"
                    "cmp %[x], %[wl]\n\t"
                    "bne 1b\n\t"
                    : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [x] "+r"(xp), [p0] "+r"(p0),
                      [p2] "+r"(p2), [xv] "=&r"(t0), [xa] "=&r"(t1), [wv] "=&r"(t2), [wl] "=&r"(t3)
                    : [in] "r"(in), [xe] "m"(xe)
                    : "cc", "memory");
            }
#else
            /* one index counting up to 0 from -n4 walks all 5 rows: no end pointer, 14 registers */
            const int8_t *const xe = xr + n4, *const e0 = w0 + n4, *const e1 = w1 + n4;
            const int8_t *const e2 = w2 + n4, *const e3 = w3 + n4;
            for (i = -n4; i != 0; i += 4) {
                const uint32_t xv = sc_ld32(xe + i);
                const uint32_t xa = sc_sxtb16(xv), xb = sc_sxtb16_ror8(xv);
                a0 = sc_i8_mac4(sc_ld32(e0 + i), xa, xb, a0);
                a1 = sc_i8_mac4(sc_ld32(e1 + i), xa, xb, a1);
                a2 = sc_i8_mac4(sc_ld32(e2 + i), xa, xb, a2);
                a3 = sc_i8_mac4(sc_ld32(e3 + i), xa, xb, a3);
            }
#endif
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

#define SC_I8_DEFINE_LINEAR_CSR(NAME, DOT8, Q8, CB, I8, IT, PT)                                   \
    static inline void I8(                                                                     \
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

#define SC_I8_DEFINE_LINEAR_REL(Q8, CB, I8, PT)                                                   \
    static inline void I8(                                                                     \
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
/* ==== the kernels per index type, by name ================================================== */

/* X(float CSR, its dot8 loop, weight-only int8 CSR, codebook CSR, int8 CSR, column index type, row pointer type) */
#define SC_LINEAR_CSR_LIST(X)                                                                     \
    X(sc_linear_csr_u8_u8, sc_csr_dot8_u8, sc_linear_q8_csr_u8_u8, sc_linear_cb_csr_u8_u8,        \
      sc_i8_linear_q8_csr_u8_u8, uint8_t, uint8_t)                                                \
    X(sc_linear_csr_u8_u16, sc_csr_dot8_u8, sc_linear_q8_csr_u8_u16, sc_linear_cb_csr_u8_u16,     \
      sc_i8_linear_q8_csr_u8_u16, uint8_t, uint16_t)                                              \
    X(sc_linear_csr_u8_u32, sc_csr_dot8_u8, sc_linear_q8_csr_u8_u32, sc_linear_cb_csr_u8_u32,     \
      sc_i8_linear_q8_csr_u8_u32, uint8_t, uint32_t)                                              \
    X(sc_linear_csr_u16_u8, sc_csr_dot8_u16, sc_linear_q8_csr_u16_u8, sc_linear_cb_csr_u16_u8,    \
      sc_i8_linear_q8_csr_u16_u8, uint16_t, uint8_t)                                              \
    X(sc_linear_csr_u16_u16, sc_csr_dot8_u16, sc_linear_q8_csr_u16_u16, sc_linear_cb_csr_u16_u16, \
      sc_i8_linear_q8_csr_u16_u16, uint16_t, uint16_t)                                            \
    X(sc_linear_csr_u16_u32, sc_csr_dot8_u16, sc_linear_q8_csr_u16_u32, sc_linear_cb_csr_u16_u32, \
      sc_i8_linear_q8_csr_u16_u32, uint16_t, uint32_t)                                            \
    X(sc_linear_csr_u32_u8, sc_csr_dot8_u32, sc_linear_q8_csr_u32_u8, sc_linear_cb_csr_u32_u8,    \
      sc_i8_linear_q8_csr_u32_u8, uint32_t, uint8_t)                                              \
    X(sc_linear_csr_u32_u16, sc_csr_dot8_u32, sc_linear_q8_csr_u32_u16, sc_linear_cb_csr_u32_u16, \
      sc_i8_linear_q8_csr_u32_u16, uint32_t, uint16_t)                                            \
    X(sc_linear_csr_u32_u32, sc_csr_dot8_u32, sc_linear_q8_csr_u32_u32, sc_linear_cb_csr_u32_u32, \
      sc_i8_linear_q8_csr_u32_u32, uint32_t, uint32_t)
SC_LINEAR_CSR_LIST(SC_DEFINE_LINEAR_CSR)
SC_LINEAR_CSR_LIST(SC_DEFINE_LINEAR_QCSR)
SC_LINEAR_CSR_LIST(SC_I8_DEFINE_LINEAR_CSR)

/* X(weight-only int8 relative-index, codebook relative-index, int8 relative-index, row pointer type) */
#define SC_LINEAR_REL_LIST(X)                                                                   \
    X(sc_linear_q8_rel_u8, sc_linear_cb_rel_u8, sc_i8_linear_q8_rel_u8, uint8_t)                \
    X(sc_linear_q8_rel_u16, sc_linear_cb_rel_u16, sc_i8_linear_q8_rel_u16, uint16_t)            \
    X(sc_linear_q8_rel_u32, sc_linear_cb_rel_u32, sc_i8_linear_q8_rel_u32, uint32_t)
SC_LINEAR_REL_LIST(SC_DEFINE_LINEAR_QREL)
SC_LINEAR_REL_LIST(SC_I8_DEFINE_LINEAR_REL)

#endif /* SC_LINEAR_H */
