/*
 * sparsecomp runtime — product of two activations (attention scores q k^T, the weighted sum p v):
 * out[b] = a[b] x c[b] for b < batch, a[b] (m x k) and c[b] (k x n) row-major; a_stride / c_stride are
 * the elements between consecutive a[b] / c[b] (0: one matrix shared by every b, broadcasting).
 * Per output row, the k products of a row of a are accumulated into the n outputs in input order
 * (out[i][j] = sum_t a[i][t] c[t][j], t ascending).
 * int8 (integer=True): acc = sum_t (a - a_zp)(c - c_zp) in int32 (codegen/ops/matmul.py bounds k so it cannot
 * overflow), requantized once with the TFLite multiplier of s_a s_c / s_out (sc_i8_requant).
 */
#ifndef SC_MATMUL_H
#define SC_MATMUL_H

#include "sc_runtime.h"
#include "sc_fixed.h"

/* ---- float ---------------------------------------------------------------------------------- */

static inline void sc_matmul(const float *a, const float *c, float *out, int32_t batch, int32_t m, int32_t k,
                             int32_t n, int32_t a_stride, int32_t c_stride)
{
    int32_t b, i, j, t;
    for (b = 0; b < batch; ++b) {
        const float *ab = a + b * a_stride, *cb = c + b * c_stride;
        float *ob = out + b * m * n;
        for (i = 0; i < m; ++i) {
            float *orow = ob + i * n;
            const float *arow = ab + i * k;
            for (j = 0; j < n; ++j) orow[j] = 0.0f;
            for (t = 0; t < k; ++t) {
                const float av = arow[t];
                const float *crow = cb + t * n;
                for (j = 0; j < n; ++j) orow[j] += av * crow[j];
            }
        }
    }
}

/* ---- int8 ----------------------------------------------------------------------------------- */

typedef struct {
    int32_t a_zp, c_zp, mult, shift, out_zp;
} sc_i8_matmul_params;

static inline void sc_i8_matmul(const int8_t *a, const int8_t *c, int8_t *out, int32_t batch, int32_t m,
                                int32_t k, int32_t n, int32_t a_stride, int32_t c_stride,
                                const sc_i8_matmul_params *p)
{
    int32_t b, i, j, t;
    for (b = 0; b < batch; ++b) {
        const int8_t *ab = a + b * a_stride, *cb = c + b * c_stride;
        int8_t *ob = out + b * m * n;
        for (i = 0; i < m; ++i) {
            const int8_t *arow = ab + i * k;
            for (j = 0; j < n; ++j) {
                int32_t acc = 0;
                for (t = 0; t < k; ++t) acc += ((int32_t)arow[t] - p->a_zp) * ((int32_t)cb[t * n + j] - p->c_zp);
                ob[i * n + j] = sc_i8_requant(acc, p->mult, p->shift, p->out_zp, -128, 127);
            }
        }
    }
}

#endif /* SC_MATMUL_H */
