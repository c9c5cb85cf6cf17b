/*
 * sparsecomp runtime — reductions and adaptive pooling with uneven windows. A reduction views
 * its input as (outer, n, inner): out[o * inner + i] = reduce over j of x[(o * n + j) * inner + i].
 * Adaptive windows are PyTorch's: [floor(i * H / OH), ceil((i + 1) * H / OH)).
 */
#ifndef SC_REDUCE_H
#define SC_REDUCE_H

#include "sc_runtime.h"
#include "sc_fixed.h" /* int8 sum */

/* the modes, in the order of codegen.ops.reduce.REDUCE_MODES */
#define SC_REDUCE_SUM 0
#define SC_REDUCE_MEAN 1
#define SC_REDUCE_MAX 2
#define SC_REDUCE_MIN 3

/* ---- float ---------------------------------------------------------------------------------- */

static inline void sc_reduce(const float *x, float *out, int32_t outer, int32_t n, int32_t inner,
                             int mode)
{
    int32_t o, i, j;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            const float *p = x + o * n * inner + i;
            float acc = p[0];
            for (j = 1; j < n; ++j) {
                float v = p[j * inner];
                if (mode == SC_REDUCE_MAX) acc = v > acc ? v : acc;
                else if (mode == SC_REDUCE_MIN) acc = v < acc ? v : acc;
                else acc += v;
            }
            out[o * inner + i] = mode == SC_REDUCE_MEAN ? acc / (float)n : acc;
        }
    }
}

static inline void sc_adaptive_pool(const float *x, float *out, int32_t c, int32_t h, int32_t w,
                                    int32_t oh, int32_t ow, int mode)
{
    int32_t ch, oy, ox, y, xx;
    for (ch = 0; ch < c; ++ch) {
        const float *plane = x + ch * h * w;
        for (oy = 0; oy < oh; ++oy) {
            int32_t y0 = oy * h / oh, y1 = ((oy + 1) * h + oh - 1) / oh;
            for (ox = 0; ox < ow; ++ox) {
                int32_t x0 = ox * w / ow, x1 = ((ox + 1) * w + ow - 1) / ow;
                float acc = plane[y0 * w + x0];
                for (y = y0; y < y1; ++y)
                    for (xx = x0; xx < x1; ++xx) {
                        float v = plane[y * w + xx];
                        if (y == y0 && xx == x0) continue;
                        if (mode == SC_REDUCE_MAX) acc = v > acc ? v : acc;
                        else acc += v;
                    }
                *out++ = mode == SC_REDUCE_MAX ? acc : acc / (float)((y1 - y0) * (x1 - x0));
            }
        }
    }
}

/* ---- int8 (max, min and mean keep the input's scale and zero point) ------------------------------ */

/* total / n rounded half away from zero (as the int8 average pool) */
static inline int32_t sc_i8_reduce_div(int32_t total, int32_t n)
{
    return total > 0 ? (total + n / 2) / n : (total - n / 2) / n;
}

static inline int8_t sc_i8_reduce_sat(int32_t v)
{
    return (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
}

static inline void sc_i8_reduce(const int8_t *x, int8_t *out, int32_t outer, int32_t n,
                                int32_t inner, int mode, int32_t zp)
{
    int32_t o, i, j;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            const int8_t *p = x + o * n * inner + i;
            int32_t acc = mode == SC_REDUCE_MEAN ? 0 : p[0];
            for (j = mode == SC_REDUCE_MEAN ? 0 : 1; j < n; ++j) {
                int32_t v = p[j * inner];
                if (mode == SC_REDUCE_MAX) acc = v > acc ? v : acc;
                else if (mode == SC_REDUCE_MIN) acc = v < acc ? v : acc;
                else acc += v - zp;
            }
            out[o * inner + i] = mode == SC_REDUCE_MEAN ? sc_i8_reduce_sat(sc_i8_reduce_div(acc, n) + zp) : (int8_t)acc;
        }
    }
}

static inline void sc_i8_adaptive_pool(const int8_t *x, int8_t *out, int32_t c, int32_t h, int32_t w,
                                       int32_t oh, int32_t ow, int mode, int32_t zp)
{
    int32_t ch, oy, ox, y, xx;
    for (ch = 0; ch < c; ++ch) {
        const int8_t *plane = x + ch * h * w;
        for (oy = 0; oy < oh; ++oy) {
            int32_t y0 = oy * h / oh, y1 = ((oy + 1) * h + oh - 1) / oh;
            for (ox = 0; ox < ow; ++ox) {
                int32_t x0 = ox * w / ow, x1 = ((ox + 1) * w + ow - 1) / ow;
                int32_t acc = mode == SC_REDUCE_MAX ? -128 : 0;
                for (y = y0; y < y1; ++y)
                    for (xx = x0; xx < x1; ++xx) {
                        int32_t v = plane[y * w + xx];
                        if (mode == SC_REDUCE_MAX) acc = v > acc ? v : acc;
                        else acc += v - zp;
                    }
                *out++ = mode == SC_REDUCE_MAX ? (int8_t)acc
                                               : sc_i8_reduce_sat(sc_i8_reduce_div(acc, (y1 - y0) * (x1 - x0)) + zp);
            }
        }
    }
}

/* TFLite's int8 Sum: its own output range */
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

#endif /* SC_REDUCE_H */
