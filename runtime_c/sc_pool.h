/*
 * sparsecomp runtime — max and average pooling over (C, H, W); 1-D pools use H == 1.
 * Semantics follow PyTorch: max pooling pads with -inf, average pooling divides by the
 * window clipped to the padded input (count_include_pad) or to the input, or by divisor.
 */
#ifndef SC_POOL_H
#define SC_POOL_H

#include "sc_runtime.h"
#include "sc_fixed.h" /* int8 */

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

/* Declares the window of output (oy, ox) of an average pool clipped to the input, rows [hs, he) and
 * columns [ws, we), and n, the size of the window clipped to the padded input (PyTorch's divisor with
 * count_include_pad; the kernels replace it by `divisor` or the clipped size after summing).
 * p: sc_pool_params or sc_i8_pool_params. */
#define SC_AVGPOOL_WINDOW(p)                                                                    \
    int32_t hs = oy * (p)->sh - (p)->ph, ws = ox * (p)->sw - (p)->pw;                           \
    int32_t he = hs + (p)->kh, we = ws + (p)->kw, n;                                            \
    if (he > (p)->hin + (p)->ph) he = (p)->hin + (p)->ph;                                       \
    if (we > (p)->win + (p)->pw) we = (p)->win + (p)->pw;                                       \
    n = (he - hs) * (we - ws);                                                                  \
    if (hs < 0) hs = 0;                                                                         \
    if (ws < 0) ws = 0;                                                                         \
    if (he > (p)->hin) he = (p)->hin;                                                           \
    if (we > (p)->win) we = (p)->win

static inline void sc_avgpool(const float *in, float *out, const sc_pool_params *p)
{
    int32_t c, oy, ox, y, x;
    for (c = 0; c < p->c; ++c) {
        const float *ic = in + c * p->hin * p->win;
        for (oy = 0; oy < p->hout; ++oy) {
            for (ox = 0; ox < p->wout; ++ox) {
                SC_AVGPOOL_WINDOW(p);
                float sum = 0.0f;
                for (y = hs; y < he; ++y)
                    for (x = ws; x < we; ++x) sum += ic[y * p->win + x];
                if (p->divisor) n = p->divisor;
                else if (!p->count_include_pad) n = (he - hs) * (we - ws);
                *out++ = sum / (float)n;
            }
        }
    }
}

/* ==== int8 ==================================================================================== */

/* ---- pooling (input and output share scale and zero point) ---------------------------------- */

typedef struct {
    int32_t c, hin, win, hout, wout;
    int32_t kh, kw, sh, sw, ph, pw, dh, dw;
    int32_t count_include_pad, divisor, zp;
} sc_i8_pool_params;

static inline void sc_i8_maxpool(const int8_t *in, int8_t *out, const sc_i8_pool_params *p)
{
    int32_t c, oy, ox, ky, kx;
#if defined(__OPTIMIZE_SIZE__) || defined(SC_I8_MAXPOOL_FAST)
    if (p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 && p->pw == 0 && p->dh == 1 && p->dw == 1 &&
        2 * p->hout <= p->hin && 2 * p->wout <= p->win) {
        /* 2x2 stride 2, no padding, no dilation, no ceil-mode window past the input (LeNet's pools): every
         * window is interior, so no per-tap bounds checks. At -Os only: there the kernel is not inlined with
         * its constant parameters (the generic loop takes 8x longer); at -O2 the folded generic loop is faster. */
        const int32_t win = p->win, hout = p->hout, wout = p->wout;
        for (c = 0; c < p->c; ++c) {
            const int8_t *ic = in + c * p->hin * win;
            for (oy = 0; oy < hout; ++oy, ic += 2 * win) {
                for (ox = 0; ox < wout; ++ox) {
                    const int8_t *r = ic + 2 * ox;
                    const int32_t a = r[0] > r[1] ? r[0] : r[1], b = r[win] > r[win + 1] ? r[win] : r[win + 1];
                    *out++ = (int8_t)(a > b ? a : b);
                }
            }
        }
        return;
    }
#endif
    for (c = 0; c < p->c; ++c) {
        const int8_t *ic = in + c * p->hin * p->win;
        for (oy = 0; oy < p->hout; ++oy) {
            for (ox = 0; ox < p->wout; ++ox) {
                int32_t m = -128;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int32_t iy = oy * p->sh - p->ph + ky * p->dh;
                    if (iy < 0 || iy >= p->hin) continue;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int32_t ix = ox * p->sw - p->pw + kx * p->dw;
                        if (ix >= 0 && ix < p->win && ic[iy * p->win + ix] > m) m = ic[iy * p->win + ix];
                    }
                }
                *out++ = (int8_t)m;
            }
        }
    }
}

/* sum of (x - zp) over the window divided by the PyTorch divisor, rounded half away from zero. */
static inline void sc_i8_avgpool(const int8_t *in, int8_t *out, const sc_i8_pool_params *p)
{
    int32_t c, oy, ox, y, x;
    for (c = 0; c < p->c; ++c) {
        const int8_t *ic = in + c * p->hin * p->win;
        for (oy = 0; oy < p->hout; ++oy) {
            for (ox = 0; ox < p->wout; ++ox) {
                SC_AVGPOOL_WINDOW(p);
                int32_t sum = 0, avg;
                for (y = hs; y < he; ++y)
                    for (x = ws; x < we; ++x) sum += (int32_t)ic[y * p->win + x] - p->zp;
                if (p->divisor) n = p->divisor;
                else if (!p->count_include_pad) n = (he - hs) * (we - ws);
                if (n <= 0) n = 1;
                avg = sum > 0 ? (sum + n / 2) / n : (sum - n / 2) / n;
                *out++ = sc_i8_clamp(avg + p->zp, -128, 127);
            }
        }
    }
}

#endif /* SC_POOL_H */
