/*
 * sparsecomp runtime — int8 forms of ops TFLite has no single int8 kernel for (issue 14):
 *   sc_i8_s_div      tensor / tensor, broadcasting (codegen/ops/broadcast.py): one requantization per
 *                    element whose multiplier is looked up by the divisor's int8 value (256 entries
 *                    computed at generation time: s_a / (s_out * s_b * (b - b_zp)));
 *   sc_i8_reduce_sum sum over (outer, n, inner) (codegen/ops/reduce.py), requantized s_in / s_out;
 *   sc_i8_layernorm  LayerNorm over rows of cols values (codegen/ops/norm.py): integer mean and
 *                    variance, an integer square root, one 64-bit division per element;
 *   sc_i8_log_softmax log-softmax over any dim (codegen/ops/softmax.py): the softmax's Q15 exp table
 *                    summed, its log from the leading bit and a 256-entry table of the next 8 bits;
 *   sc_i8_rnn_*      LSTM / GRU layers (codegen/ops/recurrent.py): int8 input and hidden state (h at the
 *                    fixed scale 1/128), int32 gate pre-activations in Q12, sigmoid/tanh from 513-point
 *                    Q15 tables over [-8, 8] with linear interpolation, the LSTM cell state in int32 Q15.
 * All integer (no float); the bit-exact numpy references are the Int8Handler.reference methods.
 * Needs sc_int8.h (requantization) and sc_strided.h (the strided walk), included here.
 */
#ifndef SC_INT8_OPS_H
#define SC_INT8_OPS_H

#include "sc_int8.h"
#include "sc_strided.h"

typedef struct {
    int32_t a_zp, b_zp, out_zp;
} sc_i8_s_div_params;

/* y = clamp(mbqm(+-(a - a_zp), mult[b + 128], shift[b + 128]) + out_zp), negated when b < b_zp (the
 * multipliers are |s_a / (s_out s_b (b - b_zp))| >= 0, as sc_i8_mbqm wants them); a zero divisor
 * saturates by the sign of a (its table entry is the largest multiplier). */
static inline void sc_i8_s_div(const int8_t *a, const int8_t *b, int8_t *y, const sc_strided_params *p,
                               const sc_i8_s_div_params *q, const int32_t *mult, const int8_t *shift)
{
    SC_STRIDED_LOOP({
        const int32_t k = (int32_t)b[ib] + 128; /* no comma: this is a macro argument */
        const int32_t d = (int32_t)a[ia] - q->a_zp;
        const int32_t v = sc_i8_mbqm((int32_t)b[ib] < q->b_zp ? -d : d, mult[k], shift[k]) + q->out_zp;
        y[o] = (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
    });
}

/* out[o * inner + i] = clamp(mbqm(sum_j (x[(o * n + j) * inner + i] - zp), mult, shift) + out_zp) */
static inline void sc_i8_reduce_sum(const int8_t *x, int8_t *out, int32_t outer, int32_t n, int32_t inner,
                                    int32_t zp, int32_t mult, int32_t shift, int32_t out_zp)
{
    int32_t o, i, j;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            const int8_t *p = x + o * n * inner + i;
            int32_t acc = 0, v;
            for (j = 0; j < n; ++j) acc += (int32_t)p[j * inner] - zp;
            v = sc_i8_mbqm(acc, mult, shift) + out_zp;
            out[o * inner + i] = (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
        }
    }
}

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

/* ---- LSTM / GRU --------------------------------------------------------------------------------- */

/* v / 2^n rounded half away from zero (n >= 1), without shifting a negative value. */
static inline int64_t sc_i8_rshr64(int64_t v, int32_t n)
{
    const int64_t half = (int64_t)1 << (n - 1);
    return v >= 0 ? (v + half) >> n : -((-v + half) >> n);
}

/* f(v / 2^12) in Q15 from lut[i] = f(-8 + i / 32), i = 0..512, interpolated linearly over the 7 low bits;
 * v saturates to [-8, 8). The tables (sigmoid, tanh) increase, so the interpolated step is >= 0. */
static inline int32_t sc_i8_rnn_act(const int16_t *lut, int32_t v)
{
    int32_t u, i;
    v = v < -32768 ? -32768 : (v > 32767 ? 32767 : v);
    u = v + 32768;
    i = u >> 7;
    return lut[i] + (((int32_t)(lut[i + 1] - lut[i]) * (u & 127) + 64) >> 7);
}

/* out[g] = mbqm(sum_k w[g * k_n + k] (x[k] - zp), mult[g], shift[g]) + bias[g]: a gate projection in Q12. */
static inline void sc_i8_rnn_proj(const int8_t *x, const int8_t *w, int32_t rows, int32_t k_n, int32_t zp,
                                  const int32_t *mult, const int8_t *shift, const int32_t *bias, int32_t *out)
{
    int32_t g, k;
    for (g = 0; g < rows; ++g) {
        const int8_t *wr = w + g * k_n;
        int32_t acc = 0;
        for (k = 0; k < k_n; ++k) acc += (int32_t)wr[k] * ((int32_t)x[k] - zp);
        out[g] = sc_i8_mbqm(acc, mult[g], shift[g]) + (bias ? bias[g] : 0);
    }
}

static inline int8_t sc_i8_rnn_h(int64_t q30) /* a Q30 product -> h at scale 1/128 */
{
    const int64_t v = sc_i8_rshr64(q30, 23);
    return (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
}

/* gx, gh: 4H gate pre-activations (i, f, g, o) in Q12; c (Q15, int32) and h (1/128) updated in place. */
static inline void sc_i8_lstm_cell(const int32_t *gx, const int32_t *gh, int32_t *c, int8_t *h, int32_t n,
                                   const int16_t *sig, const int16_t *tnh)
{
    int32_t j;
    for (j = 0; j < n; ++j) {
        const int32_t i = sc_i8_rnn_act(sig, gx[j] + gh[j]);
        const int32_t f = sc_i8_rnn_act(sig, gx[n + j] + gh[n + j]);
        const int32_t g = sc_i8_rnn_act(tnh, gx[2 * n + j] + gh[2 * n + j]);
        const int32_t o = sc_i8_rnn_act(sig, gx[3 * n + j] + gh[3 * n + j]);
        int64_t cv = sc_i8_rshr64((int64_t)f * c[j] + (int64_t)i * g, 15);
        cv = cv > (1 << 30) ? (1 << 30) : (cv < -(1 << 30) ? -(1 << 30) : cv);
        c[j] = (int32_t)cv;
        h[j] = sc_i8_rnn_h((int64_t)o * sc_i8_rnn_act(tnh, (int32_t)sc_i8_rshr64(cv, 3)));
    }
}

/* gx, gh: 3H gate pre-activations (r, z, n; b_hn inside gh as PyTorch) in Q12; h (1/128) updated in place. */
static inline void sc_i8_gru_cell(const int32_t *gx, const int32_t *gh, int8_t *h, int32_t n,
                                  const int16_t *sig, const int16_t *tnh)
{
    int32_t j;
    for (j = 0; j < n; ++j) {
        const int32_t r = sc_i8_rnn_act(sig, gx[j] + gh[j]);
        const int32_t z = sc_i8_rnn_act(sig, gx[n + j] + gh[n + j]);
        const int32_t m = sc_i8_rnn_act(tnh, gx[2 * n + j] + (int32_t)sc_i8_rshr64((int64_t)r * gh[2 * n + j], 15));
        h[j] = sc_i8_rnn_h((int64_t)(32768 - z) * m + (int64_t)z * ((int32_t)h[j] * 256));
    }
}

static inline void sc_i8_rnn_copy(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t j;
    for (j = 0; j < n; ++j) dst[j] = src[j];
}

#endif /* SC_INT8_OPS_H */
