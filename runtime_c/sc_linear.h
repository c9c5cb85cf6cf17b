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

static inline void sc_linear_dense(const float *x, float *y, const float *w, const float *bias,
                                   const sc_linear_params *p)
{
    int32_t r, o, i;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * p->in;
        const float *wr = w;
        float *yr = y + r * p->out;
        for (o = 0; o < p->out; ++o) {
            float acc = bias ? bias[o] : 0.0f;
            for (i = 0; i < p->in; ++i) acc += wr[i] * xr[i];
            wr += p->in;
            yr[o] = sc_act(acc, p->act, p->alpha);
        }
    }
}

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
                float acc = bias ? bias[o] : 0.0f;                                               \
                const int32_t end = (int32_t)ptr[o + 1];                                         \
                for (k = (int32_t)ptr[o]; k < end; ++k) acc += val[k] * xr[col[k]];              \
                yr[o] = sc_act(acc, p->act, p->alpha);                                           \
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
