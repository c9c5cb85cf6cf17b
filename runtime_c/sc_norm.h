/*
 * sparsecomp runtime — LayerNorm and GroupNorm: rows of contiguous values normalized with their
 * own mean and biased variance, then scaled and shifted (weight and bias may be NULL). Safe in
 * place (out may equal x).
 */
#ifndef SC_NORM_H
#define SC_NORM_H

#include "sc_runtime.h"
#include "sc_fixed.h" /* int8 */

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

/* ---- int8 (LayerNorm; codegen/ops/norm.py LayerNormInt8) ------------------------------------ */

/* floor(sqrt(v)) of a 64-bit value, exactly (bit by bit; no float). */
static inline uint64_t sc_i8_isqrt64(uint64_t v)
{
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > v) bit >>= 2;
    while (bit) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return r;
}

typedef struct {
    int32_t rows, cols, in_zp, out_zp;
    int64_t eps_q; /* round(eps * cols^2 / s_in^2): eps in the units of V below */
    int32_t frac;  /* F: the root carries F fractional bits */
    int32_t prec;  /* P: the normalized value carries P fractional bits */
} sc_i8_layernorm_params;

/* Per row of cols values, d_j = x_j - in_zp: S = sum d, V = cols * sum d^2 - S^2 (= cols^2 var / s_in^2),
 * root = isqrt((V + eps_q) << 2F), z_j = round((cols d_j - S) 2^(P+F) / root) (= normalized value 2^P),
 * y_j = clamp(mbqm(z_j, mult[j], shift[j]) * sign[j] + bias[j] + out_zp) with mult[j] 2^(shift-31) =
 * |w_j| / (2^P s_out) and bias[j] = round(b_j / s_out). */
static inline void sc_i8_layernorm(const int8_t *x, int8_t *y, const sc_i8_layernorm_params *p, const int32_t *mult,
                                   const int8_t *shift, const int8_t *sign, const int32_t *bias)
{
    int32_t r, j;
    for (r = 0; r < p->rows; ++r) {
        const int8_t *xr = x + r * p->cols;
        int8_t *yr = y + r * p->cols;
        int64_t s = 0, q = 0, v, root;
        for (j = 0; j < p->cols; ++j) {
            const int64_t d = (int64_t)xr[j] - p->in_zp;
            s += d;
            q += d * d;
        }
        v = (int64_t)p->cols * q - s * s + p->eps_q;
        root = (int64_t)sc_i8_isqrt64((uint64_t)v << (2 * p->frac));
        for (j = 0; j < p->cols; ++j) {
            const int64_t num = ((int64_t)p->cols * ((int64_t)xr[j] - p->in_zp) - s) * ((int64_t)1 << (p->prec + p->frac));
            const int64_t z = root == 0 ? 0 : (num >= 0 ? (num + root / 2) / root : -((-num + root / 2) / root));
            int32_t o = sc_i8_mbqm((int32_t)z, mult[j], shift[j]);
            o = (sign[j] < 0 ? -o : o) + bias[j] + p->out_zp;
            yr[j] = (int8_t)(o > 127 ? 127 : (o < -128 ? -128 : o));
        }
    }
}

#endif /* SC_NORM_H */
