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

#ifndef SC_FMA
#if defined(__FP_FAST_FMAF)
#define SC_FMA(a, b, c) __builtin_fmaf((a), (b), (c)) /* one VFMA on the Cortex-M4F */
#else
#define SC_FMA(a, b, c) ((a) * (b) + (c))
#endif
#endif

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

/* CSR kernels, one per (column index type, row pointer type) pair: sc_linear_csr_<it>_<pt>. */
#define SC_DEFINE_LINEAR_CSR(SUFFIX, IT, PT)                                                      \
    static inline void sc_linear_##SUFFIX(const float *x, float *y, const float *val,           \
                                          const IT *col, const PT *ptr, const float *bias,      \
                                          const sc_linear_params *p)                             \
    {                                                                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const float *xr = x + r * p->in;                                                     \
            float *yr = y + r * p->out;                                                          \
            for (o = 0; o < p->out; ++o) {                                                       \
                const float *v = val + ptr[o];                                                   \
                const IT *c = col + ptr[o];                                                      \
                float a0 = bias ? bias[o] : 0.0f, a1 = 0.0f;                                     \
                for (k = (int32_t)(ptr[o + 1] - ptr[o]); k >= 4; k -= 4, v += 4, c += 4) {      \
                    a0 = SC_FMA(v[0], xr[c[0]], a0);                                             \
                    a1 = SC_FMA(v[1], xr[c[1]], a1);                                             \
                    a0 = SC_FMA(v[2], xr[c[2]], a0);                                             \
                    a1 = SC_FMA(v[3], xr[c[3]], a1);                                             \
                }                                                                                \
                for (; k > 0; --k) a0 = SC_FMA(*v++, xr[*c++], a0);                              \
                yr[o] = sc_act(a0 + a1, p->act, p->alpha);                                       \
            }                                                                                    \
        }                                                                                        \
    }

SC_DEFINE_LINEAR_CSR(csr_u8_u8, uint8_t, uint8_t)
SC_DEFINE_LINEAR_CSR(csr_u8_u16, uint8_t, uint16_t)
SC_DEFINE_LINEAR_CSR(csr_u8_u32, uint8_t, uint32_t)
SC_DEFINE_LINEAR_CSR(csr_u16_u8, uint16_t, uint8_t)
SC_DEFINE_LINEAR_CSR(csr_u16_u16, uint16_t, uint16_t)
SC_DEFINE_LINEAR_CSR(csr_u16_u32, uint16_t, uint32_t)
SC_DEFINE_LINEAR_CSR(csr_u32_u8, uint32_t, uint8_t)
SC_DEFINE_LINEAR_CSR(csr_u32_u16, uint32_t, uint16_t)
SC_DEFINE_LINEAR_CSR(csr_u32_u32, uint32_t, uint32_t)

#endif /* SC_LINEAR_H */
