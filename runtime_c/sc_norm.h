/*
 * sparsecomp runtime — LayerNorm and GroupNorm: rows of contiguous values normalized with their
 * own mean and biased variance, then scaled and shifted (weight and bias may be NULL). Safe in
 * place (out may equal x).
 */
#ifndef SC_NORM_H
#define SC_NORM_H

#include "sc_runtime.h"

#ifndef SC_SQRTF
#define SC_SQRTF sqrtf
#endif

/* mean and 1 / sqrt(var + eps) of n values (two passes, as PyTorch) */
static inline void sc_norm_stats(const float *x, int32_t n, float eps, float *mean, float *inv)
{
    int32_t i;
    float s = 0.0f, v = 0.0f;
    for (i = 0; i < n; ++i) s += x[i];
    s /= (float)n;
    for (i = 0; i < n; ++i) v += (x[i] - s) * (x[i] - s);
    *mean = s;
    *inv = 1.0f / SC_SQRTF(v / (float)n + eps);
}

static inline void sc_layernorm(const float *x, float *out, int32_t rows, int32_t cols, float eps,
                                const float *weight, const float *bias)
{
    int32_t r, i;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * cols;
        float *yr = out + r * cols;
        float mean, inv;
        sc_norm_stats(xr, cols, eps, &mean, &inv);
        for (i = 0; i < cols; ++i) {
            float y = (xr[i] - mean) * inv;
            if (weight) y *= weight[i];
            if (bias) y += bias[i];
            yr[i] = y;
        }
    }
}

static inline void sc_groupnorm(const float *x, float *out, int32_t groups, int32_t channels,
                                int32_t inner, float eps, const float *weight, const float *bias)
{
    int32_t g, c, i, cpg = channels / groups;
    for (g = 0; g < groups; ++g) {
        float mean, inv;
        sc_norm_stats(x + g * cpg * inner, cpg * inner, eps, &mean, &inv);
        for (c = g * cpg; c < (g + 1) * cpg; ++c) {
            float w = weight ? weight[c] * inv : inv, b = bias ? bias[c] : 0.0f;
            for (i = 0; i < inner; ++i) out[c * inner + i] = (x[c * inner + i] - mean) * w + b;
        }
    }
}

#endif /* SC_NORM_H */
