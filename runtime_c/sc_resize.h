/*
 * sparsecomp runtime — upsampling (nearest and bilinear; 1-D with h == 1). The source index of each
 * output row/column and its interpolation weight are tables computed at generation time with
 * PyTorch's own arithmetic (codegen/ops/resize.py); the kernels only gather and blend.
 */
#ifndef SC_RESIZE_H
#define SC_RESIZE_H

#include "sc_runtime.h"

typedef struct {
    int32_t c, hin, win, hout, wout;
} sc_resize_params;

/* ---- float ---------------------------------------------------------------------------------- */

/* out[c][y][x] = in[c][yi[y]][xi[x]] (indices stored as exact float32 integers). */
static inline void sc_resize_nearest(const float *in, float *out, const float *yi, const float *xi,
                                     const sc_resize_params *p)
{
    int32_t c, y, x;
    for (c = 0; c < p->c; ++c) {
        const float *ic = in + c * p->hin * p->win;
        for (y = 0; y < p->hout; ++y) {
            const float *row = ic + (int32_t)yi[y] * p->win;
            for (x = 0; x < p->wout; ++x) *out++ = row[(int32_t)xi[x]];
        }
    }
}

/* out = l0y * (l0x * a00 + l1x * a01) + l1y * (l0x * a10 + l1x * a11): index i0 and upper weight l1 per
 * row/column, i1 = i0 + 1 clamped to the edge, l0 = 1 - l1 (as ATen's upsample_bilinear2d). */
static inline void sc_resize_linear(const float *in, float *out, const float *yi, const float *yl,
                                    const float *xi, const float *xl, const sc_resize_params *p)
{
    int32_t c, y, x;
    for (c = 0; c < p->c; ++c) {
        const float *ic = in + c * p->hin * p->win;
        for (y = 0; y < p->hout; ++y) {
            const int32_t y0 = (int32_t)yi[y], y1 = y0 + (y0 < p->hin - 1);
            const float ly1 = yl[y], ly0 = 1.0f - ly1;
            const float *r0 = ic + y0 * p->win, *r1 = ic + y1 * p->win;
            for (x = 0; x < p->wout; ++x) {
                const int32_t x0 = (int32_t)xi[x], x1 = x0 + (x0 < p->win - 1);
                const float lx1 = xl[x], lx0 = 1.0f - lx1;
                *out++ = ly0 * (lx0 * r0[x0] + lx1 * r0[x1]) + ly1 * (lx0 * r1[x0] + lx1 * r1[x1]);
            }
        }
    }
}

/* ---- int8 (output keeps the input's scale and zero point) ----------------------------------- */

#define SC_DEFINE_RESIZE_I8(NEAREST, LINEAR, IT)                                                  \
    static inline void NEAREST(const int8_t *in, int8_t *out, const IT *yi,                        \
                                                     const IT *xi, const sc_resize_params *p)    \
    {                                                                                            \
        int32_t c, y, x;                                                                         \
        for (c = 0; c < p->c; ++c) {                                                             \
            const int8_t *ic = in + c * p->hin * p->win;                                         \
            for (y = 0; y < p->hout; ++y) {                                                      \
                const int8_t *row = ic + (int32_t)yi[y] * p->win;                                \
                for (x = 0; x < p->wout; ++x) *out++ = row[xi[x]];                               \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* TFLite ResizeBilinearInteger: weights w1 in 1/1024 steps, w0 = 1024 - w1, the sum of the  \
     * four products (scale 2^-20) rounded half away from zero. */                               \
    static inline void LINEAR(const int8_t *in, int8_t *out, const IT *yi,                         \
                                                    const int16_t *yw, const IT *xi,             \
                                                    const int16_t *xw, const sc_resize_params *p) \
    {                                                                                            \
        int32_t c, y, x;                                                                         \
        for (c = 0; c < p->c; ++c) {                                                             \
            const int8_t *ic = in + c * p->hin * p->win;                                         \
            for (y = 0; y < p->hout; ++y) {                                                      \
                const int32_t y0 = (int32_t)yi[y], y1 = y0 + (y0 < p->hin - 1);                   \
                const int32_t wy1 = yw[y], wy0 = 1024 - wy1;                                     \
                const int8_t *r0 = ic + y0 * p->win, *r1 = ic + y1 * p->win;                     \
                for (x = 0; x < p->wout; ++x) {                                                  \
                    const int32_t x0 = (int32_t)xi[x], x1 = x0 + (x0 < p->win - 1);               \
                    const int32_t wx1 = xw[x], wx0 = 1024 - wx1;                                 \
                    const int32_t t = wy0 * (wx0 * r0[x0] + wx1 * r0[x1])                        \
                                      + wy1 * (wx0 * r1[x0] + wx1 * r1[x1]);                     \
                    *out++ = (int8_t)((t + (t > 0 ? (1 << 19) : -(1 << 19))) / (1 << 20));        \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }

/* X(nearest, bilinear, index type) */
#define SC_RESIZE_I8_LIST(X)                                                                    \
    X(sc_i8_resize_nearest_u8, sc_i8_resize_linear_u8, uint8_t)                                 \
    X(sc_i8_resize_nearest_u16, sc_i8_resize_linear_u16, uint16_t)                              \
    X(sc_i8_resize_nearest_i32, sc_i8_resize_linear_i32, int32_t)
SC_RESIZE_I8_LIST(SC_DEFINE_RESIZE_I8)

#endif /* SC_RESIZE_H */
