/*
 * sparsecomp runtime — fully connected layer over the last dimension, float32.
 * y[r][o] = act(bias[o] + sum_i W[o][i] * x[r][i]) for each of `rows` leading positions.
 */
#ifndef SC_LINEAR_H
#define SC_LINEAR_H

#include "sc_runtime.h"

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
/* 4 outputs at a time (each input load feeds 4 MACs), inputs unrolled by 4; the weight rows are
 * walked with pointers. Outputs past the end repeat the last row (computed and stored twice). */
static inline void sc_linear_dense(const float *x, float *y, const float *w, const float *bias,
                                   const sc_linear_params *p)
{
    const int32_t n = p->in;
    int32_t r, o, i, j;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * n;
        float *yr = y + r * p->out;
        for (o = 0; o < p->out; o += 4) {
            const float *ws[4];
            float acc[4], a0, a1, a2, a3;
            const float *w0, *w1, *w2, *w3, *xp = xr;
            for (j = 0; j < 4; ++j) {
                const int32_t oj = o + j < p->out ? o + j : p->out - 1;
                ws[j] = w + oj * n;
                acc[j] = bias ? bias[oj] : 0.0f;
            }
            w0 = ws[0]; w1 = ws[1]; w2 = ws[2]; w3 = ws[3];
            a0 = acc[0]; a1 = acc[1]; a2 = acc[2]; a3 = acc[3];
            for (i = 0; i + 4 <= n; i += 4) {
                const float v0 = xp[0], v1 = xp[1], v2 = xp[2], v3 = xp[3];
                xp += 4;
                a0 = SC_FMA(w0[0], v0, a0); a1 = SC_FMA(w1[0], v0, a1);
                a2 = SC_FMA(w2[0], v0, a2); a3 = SC_FMA(w3[0], v0, a3);
                a0 = SC_FMA(w0[1], v1, a0); a1 = SC_FMA(w1[1], v1, a1);
                a2 = SC_FMA(w2[1], v1, a2); a3 = SC_FMA(w3[1], v1, a3);
                a0 = SC_FMA(w0[2], v2, a0); a1 = SC_FMA(w1[2], v2, a1);
                a2 = SC_FMA(w2[2], v2, a2); a3 = SC_FMA(w3[2], v2, a3);
                a0 = SC_FMA(w0[3], v3, a0); a1 = SC_FMA(w1[3], v3, a1);
                a2 = SC_FMA(w2[3], v3, a2); a3 = SC_FMA(w3[3], v3, a3);
                w0 += 4; w1 += 4; w2 += 4; w3 += 4;
            }
            for (; i < n; ++i) {
                const float v = *xp++;
                a0 = SC_FMA(*w0++, v, a0);
                a1 = SC_FMA(*w1++, v, a1);
                a2 = SC_FMA(*w2++, v, a2);
                a3 = SC_FMA(*w3++, v, a3);
            }
            acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
            for (j = 0; j < 4 && o + j < p->out; ++j) yr[o + j] = sc_act(acc[j], p->act, p->alpha);
        }
    }
}

#endif /* SC_SMALL_CODE */

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

#define SC_CSR_DOT8_C(IS, IT)                                                                     \
    static inline void sc_csr_dot8_c_##IS(const float *x, const float **vp, const IT **cp,      \
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
SC_CSR_DOT8_C(u8, uint8_t)
SC_CSR_DOT8_C(u16, uint16_t)
SC_CSR_DOT8_C(u32, uint32_t)

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
#define SC_CSR_DOT8_ASM(IS, IT, LDI, STEP)                                                        \
    static inline void sc_csr_dot8_##IS(const float *x, const float **vp, const IT **cp,        \
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
SC_CSR_DOT8_ASM(u8, uint8_t, "ldrb", "1")
SC_CSR_DOT8_ASM(u16, uint16_t, "ldrh", "2")
#else
#define sc_csr_dot8_u8 sc_csr_dot8_c_u8
#define sc_csr_dot8_u16 sc_csr_dot8_c_u16
#endif
#define sc_csr_dot8_u32 sc_csr_dot8_c_u32

/* CSR kernels, one per (column index type, row pointer type) pair: sc_linear_csr_<is>_<ps>.
 * Per output: 8 nonzeros at a time (sc_csr_dot8_<is>), then the rest one by one. */
#define SC_DEFINE_LINEAR_CSR(IS, PS, IT, PT)                                                      \
    static inline SC_SPECIALIZE void sc_linear_csr_##IS##_##PS(                                  \
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
                sc_csr_dot8_##IS(xr, &v, &c, k >> 3, &a0, &a1);                                  \
                for (k &= 7; k > 0; --k) a0 = SC_FMA(*v++, xr[*c++], a0);                        \
                yr[o] = sc_act(a0 + a1, p->act, p->alpha);                                       \
            }                                                                                    \
        }                                                                                        \
    }

SC_DEFINE_LINEAR_CSR(u8, u8, uint8_t, uint8_t)
SC_DEFINE_LINEAR_CSR(u8, u16, uint8_t, uint16_t)
SC_DEFINE_LINEAR_CSR(u8, u32, uint8_t, uint32_t)
SC_DEFINE_LINEAR_CSR(u16, u8, uint16_t, uint8_t)
SC_DEFINE_LINEAR_CSR(u16, u16, uint16_t, uint16_t)
SC_DEFINE_LINEAR_CSR(u16, u32, uint16_t, uint32_t)
SC_DEFINE_LINEAR_CSR(u32, u8, uint32_t, uint8_t)
SC_DEFINE_LINEAR_CSR(u32, u16, uint32_t, uint16_t)
SC_DEFINE_LINEAR_CSR(u32, u32, uint32_t, uint32_t)

#endif /* SC_LINEAR_H */
