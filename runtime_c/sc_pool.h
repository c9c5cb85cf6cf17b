/*
 * sparsecomp runtime — max and average pooling over (C, H, W); 1-D pools use H == 1.
 * Semantics follow PyTorch: max pooling pads with -inf, average pooling divides by the
 * window clipped to the padded input (count_include_pad) or to the input, or by divisor.
 */
#ifndef SC_POOL_H
#define SC_POOL_H

#include "sc_runtime.h"

typedef struct {
    int32_t c, hin, win, hout, wout;
    int32_t kh, kw, sh, sw, ph, pw, dh, dw;
    int32_t count_include_pad, divisor;
} sc_pool_params;

static inline void sc_maxpool(const float *in, float *out, const sc_pool_params *p)
{
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < p->c; ++c) {
        const float *ic = in + c * p->hin * p->win;
        for (oy = 0; oy < p->hout; ++oy) {
            for (ox = 0; ox < p->wout; ++ox) {
                float m = -INFINITY;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int32_t iy = oy * p->sh - p->ph + ky * p->dh;
                    if (iy < 0 || iy >= p->hin) continue;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int32_t ix = ox * p->sw - p->pw + kx * p->dw;
                        float v;
                        if (ix < 0 || ix >= p->win) continue;
                        v = ic[iy * p->win + ix];
                        if (v > m || v != v) m = v;
                    }
                }
                *out++ = m;
            }
        }
    }
}

static inline void sc_avgpool(const float *in, float *out, const sc_pool_params *p)
{
    int32_t c, oy, ox, y, x;
    for (c = 0; c < p->c; ++c) {
        const float *ic = in + c * p->hin * p->win;
        for (oy = 0; oy < p->hout; ++oy) {
            for (ox = 0; ox < p->wout; ++ox) {
                int32_t hs = oy * p->sh - p->ph, ws = ox * p->sw - p->pw;
                int32_t he = hs + p->kh, we = ws + p->kw, n;
                float sum = 0.0f;
                if (he > p->hin + p->ph) he = p->hin + p->ph;
                if (we > p->win + p->pw) we = p->win + p->pw;
                n = (he - hs) * (we - ws);
                if (hs < 0) hs = 0;
                if (ws < 0) ws = 0;
                if (he > p->hin) he = p->hin;
                if (we > p->win) we = p->win;
                for (y = hs; y < he; ++y)
                    for (x = ws; x < we; ++x) sum += ic[y * p->win + x];
                if (p->divisor) n = p->divisor;
                else if (!p->count_include_pad) n = (he - hs) * (we - ws);
                *out++ = sum / (float)n;
            }
        }
    }
}

#endif /* SC_POOL_H */
