/*
 * sparsecomp runtime — product of two activations (attention scores q k^T, the weighted sum p v):
 * out[b] = a[b] x c[b] for b < batch, a[b] (m x k) and c[b] (k x n) row-major; a_stride / c_stride are
 * the elements between consecutive a[b] / c[b] (0: one matrix shared by every b, broadcasting).
 * Per output row, the k products of a row of a are accumulated into the n outputs in input order
 * (out[i][j] = sum_t a[i][t] c[t][j], t ascending). The int8 form is not emitted (codegen/ops/matmul.py).
 */
#ifndef SC_MATMUL_H
#define SC_MATMUL_H

#include "sc_runtime.h"

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

#endif /* SC_MATMUL_H */
