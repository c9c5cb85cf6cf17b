/*
 * sparsecomp runtime — softmax over any dim: the input is viewed as (rows, cols, inner) and each
 * of the rows * inner vectors of cols values (stride inner) is normalized. The last-dim float
 * softmax is sc_softmax (sc_eltwise.h). The int8 kernel is all integer (codegen/ops/softmax.py).
 */
#ifndef SC_SOFTMAX_H
#define SC_SOFTMAX_H

#include "sc_runtime.h"

/* ---- float ---------------------------------------------------------------------------------- */

static inline void sc_softmax_axis(const float *x, float *out, int32_t rows, int32_t cols,
                                   int32_t inner, int log_)
{
    int32_t r, k, i;
    for (r = 0; r < rows; ++r) {
        for (k = 0; k < inner; ++k) {
            const float *xr = x + r * cols * inner + k;
            float *yr = out + r * cols * inner + k;
            float m = xr[0], sum = 0.0f;
            for (i = 1; i < cols; ++i)
                if (xr[i * inner] > m) m = xr[i * inner];
            if (log_) {
                float lse;
                for (i = 0; i < cols; ++i) sum += SC_EXPF(xr[i * inner] - m);
                lse = SC_LOGF(sum);
                for (i = 0; i < cols; ++i) yr[i * inner] = xr[i * inner] - m - lse;
            } else {
                for (i = 0; i < cols; ++i) {
                    yr[i * inner] = SC_EXPF(xr[i * inner] - m);
                    sum += yr[i * inner];
                }
                for (i = 0; i < cols; ++i) yr[i * inner] /= sum;
            }
        }
    }
}

/* ---- int8 ------------------------------------------------------------------------------------ */

/* e = exp_q15[max - x], S = sum e, out = floor((2 e K + S 2^k) / (S 2^(k+1))) + out_zp, clamped. */
static inline void sc_i8_softmax(const int8_t *x, int8_t *out, int32_t rows, int32_t cols,
                                 int32_t inner, const int32_t *exp_q15, int32_t mult, int32_t shift,
                                 int32_t out_zp)
{
    int32_t r, k, i;
    for (r = 0; r < rows; ++r) {
        for (k = 0; k < inner; ++k) {
            const int8_t *xr = x + r * cols * inner + k;
            int8_t *yr = out + r * cols * inner + k;
            int32_t m = xr[0], sum = 0;
            int64_t den, half;
            for (i = 1; i < cols; ++i)
                if (xr[i * inner] > m) m = xr[i * inner];
            for (i = 0; i < cols; ++i) sum += exp_q15[m - xr[i * inner]];
            den = (int64_t)sum << (shift + 1);
            half = (int64_t)sum << shift;
            for (i = 0; i < cols; ++i) {
                int64_t q = (2 * (int64_t)exp_q15[m - xr[i * inner]] * mult + half) / den + out_zp;
                yr[i * inner] = (int8_t)(q > 127 ? 127 : (q < -128 ? -128 : q));
            }
        }
    }
}

/* Per (row, inner) column of cols values: m = max x, T = sum exp_q15[m - x] (Q15, T >= 2^15), n = the
 * index of T's leading bit, L = (n - 15) ln2_q + ln_q[8 bits of T after the leading one] (= ln(T / 2^15)
 * in units of s_out / 2^16), y = out_zp - round(((m - x) c1 + L) / 2^16) with c1 = s_in / s_out in Q16. */
static inline void sc_i8_log_softmax(const int8_t *x, int8_t *out, int32_t rows, int32_t cols, int32_t inner,
                                     const int32_t *exp_q15, const int32_t *ln_q, int32_t ln2_q, int32_t c1,
                                     int32_t out_zp)
{
    int32_t r, k, i;
    for (r = 0; r < rows; ++r) {
        for (k = 0; k < inner; ++k) {
            const int8_t *xr = x + r * cols * inner + k;
            int8_t *yr = out + r * cols * inner + k;
            int32_t m = xr[0], n = 0;
            uint32_t sum = 0, t;
            int64_t lq;
            for (i = 1; i < cols; ++i)
                if (xr[i * inner] > m) m = xr[i * inner];
            for (i = 0; i < cols; ++i) sum += (uint32_t)exp_q15[m - xr[i * inner]];
            for (t = sum; t >= 2u; t >>= 1) ++n;
            lq = (int64_t)(n - 15) * ln2_q + ln_q[(sum >> (n - 8)) & 255u];
            for (i = 0; i < cols; ++i) {
                const int64_t v = (int64_t)(m - xr[i * inner]) * c1 + lq;
                const int64_t q = out_zp - ((v + 32768) >> 16);
                yr[i * inner] = (int8_t)(q > 127 ? 127 : (q < -128 ? -128 : q));
            }
        }
    }
}

#endif /* SC_SOFTMAX_H */
