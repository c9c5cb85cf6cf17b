/*
 * sparsecomp runtime — LSTM and GRU cells, float32. The layer loop (templates/ops/recurrent.j2) runs
 * over the sequence: per step, the input and hidden projections come from the Linear kernels of the
 * weights' encodings (runtime_c/sc_linear.h, its float and weight-only sections), then one of these cells updates the state.
 * Gate order as PyTorch: LSTM i, f, g, o; GRU r, z, n.
 */
#ifndef SC_RECURRENT_H
#define SC_RECURRENT_H

#include "sc_runtime.h"
#include "sc_fixed.h" /* int8 */

static inline float sc_rnn_sigmoid(float v) { return 1.0f / (1.0f + SC_EXPF(-v)); }

/* gx = W_ih x + b_ih, gh = W_hh h + b_hh (4H each); c and h (H) updated in place. */
static inline void sc_lstm_cell(const float *gx, const float *gh, float *c, float *h, int32_t n)
{
    int32_t j;
    for (j = 0; j < n; ++j) {
        const float i = sc_rnn_sigmoid(gx[j] + gh[j]);
        const float f = sc_rnn_sigmoid(gx[n + j] + gh[n + j]);
        const float g = SC_TANHF(gx[2 * n + j] + gh[2 * n + j]);
        const float o = sc_rnn_sigmoid(gx[3 * n + j] + gh[3 * n + j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * SC_TANHF(c[j]);
    }
}

/* gx = W_ih x + b_ih, gh = W_hh h + b_hh (3H each; b_hn inside r * (...) as PyTorch); h updated in place. */
static inline void sc_gru_cell(const float *gx, const float *gh, float *h, int32_t n)
{
    int32_t j;
    for (j = 0; j < n; ++j) {
        const float r = sc_rnn_sigmoid(gx[j] + gh[j]);
        const float z = sc_rnn_sigmoid(gx[n + j] + gh[n + j]);
        const float m = SC_TANHF(gx[2 * n + j] + r * gh[2 * n + j]);
        h[j] = (1.0f - z) * m + z * h[j];
    }
}

static inline void sc_rnn_zero(float *v, int32_t n)
{
    int32_t j;
    for (j = 0; j < n; ++j) v[j] = 0.0f;
}

/* dst[0..n) = src[0..n) (a state row copied out of the sequence). */
static inline void sc_rnn_copy(float *dst, const float *src, int32_t n)
{
    int32_t j;
    for (j = 0; j < n; ++j) dst[j] = src[j];
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

/* the Q12 gate pre-activation: |w (x - zp)| < 2^15, so |acc| < 2^30 while the row has fewer than 2^15 inputs
 * (always inlined at -O2: out of line, gru_kws_2layer took 723,840 instead of 673,360 M4 instructions). `mm`
 * (a constant of the call site, set at generation time): every row has -SC_I8_MM_EMAX <= shift <= -1 and
 * k_n < 2^15, so sc_i8_mbqm_small's SMMLAR form holds without testing the shift per row. */
static inline SC_SPECIALIZE int32_t sc_i8_rnn_gate(int32_t acc, int32_t mult, int32_t shift, int32_t k_n, int mm)
{
    if (mm) {
        const int32_t e = -shift;
        return (sc_smmlar(2 * acc, mult, (int32_t)(((uint32_t)1) << (e - 1))) - (int32_t)((uint32_t)acc >> 31)) >> e;
    }
    return k_n < 32768 ? sc_i8_mbqm_small(acc, mult, shift) : sc_i8_mbqm(acc, mult, shift);
}

/* out[g] = mbqm(sum_k w[g * k_n + k] (x[k] - zp), mult[g], shift[g]) + bias[g]: a gate projection in Q12
 * (mm: see sc_i8_rnn_gate). */
static inline void sc_i8_rnn_proj(const int8_t *x, const int8_t *w, int32_t rows, int32_t k_n, int32_t zp,
                                  const int32_t *mult, const int8_t *shift, const int32_t *bias, int mm, int32_t *out)
{
    int32_t g, k;
#if SC_INT8_DSP
    const int32_t g4 = rows & ~3; /* explicit bounds: gcc 12 -O2 warns of overflow in the tail otherwise */
#else
    const int32_t g4 = 0;
#endif
#if SC_INT8_DSP
    /* 4 gate rows per pass share the inputs: per 4 inputs one load, 2 SXTB16 (2 SSUB16 take the zero point
     * off both halfword lanes: x - zp fits in 16 bits; for zp = -128, after a ReLU, one EOR and 2 UXTB16
     * instead), then per row one load, 2 SXTB16, 2 SMLAD */
    const int32_t k4 = k_n & ~3;
    const uint32_t zp2 = ((uint32_t)zp & 0xFFFFu) * 0x10001u;
    for (g = 0; g < g4; g += 4) {
        const int8_t *const w0 = w + g * k_n, *const w1 = w0 + k_n, *const w2 = w1 + k_n, *const w3 = w2 + k_n;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (k = 0; k < k4; k += 4) {
            uint32_t xa, xb;
            sc_i8_pairs_zp(sc_ld32(x + k), zp, zp2, &xa, &xb);
            a0 = sc_i8_mac4(sc_ld32(w0 + k), xa, xb, a0);
            a1 = sc_i8_mac4(sc_ld32(w1 + k), xa, xb, a1);
            a2 = sc_i8_mac4(sc_ld32(w2 + k), xa, xb, a2);
            a3 = sc_i8_mac4(sc_ld32(w3 + k), xa, xb, a3);
        }
        for (k = k4; k < k_n; ++k) {
            const int32_t xv = (int32_t)x[k] - zp;
            a0 += (int32_t)w0[k] * xv;
            a1 += (int32_t)w1[k] * xv;
            a2 += (int32_t)w2[k] * xv;
            a3 += (int32_t)w3[k] * xv;
        }
        {
            const int32_t acc[4] = {a0, a1, a2, a3};
            int32_t j;
            for (j = 0; j < 4; ++j)
                out[g + j] = sc_i8_rnn_gate(acc[j], mult[g + j], shift[g + j], k_n, mm) + (bias ? bias[g + j] : 0);
        }
    }
#endif
    for (g = g4; g < rows; ++g) {
        const int8_t *wr = w + g * k_n;
        int32_t acc = 0;
        for (k = 0; k < k_n; ++k) acc += (int32_t)wr[k] * ((int32_t)x[k] - zp);
        out[g] = sc_i8_rnn_gate(acc, mult[g], shift[g], k_n, mm) + (bias ? bias[g] : 0);
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

#endif /* SC_RECURRENT_H */
