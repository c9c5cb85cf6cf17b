/*
 * sparsecomp runtime — LSTM and GRU cells, float32. The layer loop (templates/ops/recurrent.j2) runs
 * over the sequence: per step, the input and hidden projections come from the Linear kernels of the
 * weights' encodings (runtime_c/sc_linear.h, its float and weight-only sections), then one of these cells updates the state.
 * Gate order as PyTorch: LSTM i, f, g, o; GRU r, z, n.
 */
#ifndef SC_RECURRENT_H
#define SC_RECURRENT_H

#include "sc_runtime.h"

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

#endif /* SC_RECURRENT_H */
