/*
 * sparsecomp runtime — 1-D/2-D convolution (any stride, padding, dilation, groups).
 * Weights are [C_out][C_in/groups][kh][kw]; the sparse forms store that matrix as CSR rows of
 * length C_in/groups*kh*kw and walk the nonzeros directly (no im2col buffer): a channel's
 * nonzeros are decoded into input offsets, then accumulated at every output position in
 * registers (see "CSR kernels" below), so the cost is proportional to the number of nonzeros.
 *
 * Sections: float (dense, CSR), weight-only (int8 / codebook weights, float activations), int8
 * (int8 activations and weights, codegen/integer.py). The kernels defined once per index type (CSR
 * column index / row pointer: uint8/16/32) are macros instantiated at the end of the header from one
 * X-macro list per index set (SC_CONV_CSR_LIST, SC_CONV_REL_LIST), which names every generated function.
 */
#ifndef SC_CONV_H
#define SC_CONV_H

#include "sc_runtime.h"
#include "sc_gemm.h"  /* float micro-kernels */
#include "sc_bits.h"  /* weight-only forms */
#include "sc_fixed.h" /* int8 */

/* ==== float =================================================================================== */

typedef struct {
    int32_t cin, hin, win, cout, hout, wout;
    int32_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int32_t act;
    float alpha;
} sc_conv_params;

/* out_c[oy][ox] += wv * in_c[oy*sh + ky*dh - ph][ox*sw + kx*dw - pw] over the valid positions
 * (pointer walking; stride 1 unrolled by 4: load, load, FMA, store per MAC). */
static inline void sc_conv_tap(const float *in_c, float *out_c, float wv, int32_t ky, int32_t kx,
                               const sc_conv_params *p)
{
    int32_t oy0, oy1, ox0, ox1, oy, i, n;
    const int32_t yoff = ky * p->dh - p->ph, xoff = kx * p->dw - p->pw, sw = p->sw;
    sc_valid_range(yoff, p->sh, p->hin, p->hout, &oy0, &oy1);
    sc_valid_range(xoff, sw, p->win, p->wout, &ox0, &ox1);
    n = ox1 - ox0;
    for (oy = oy0; oy < oy1; ++oy) {
        const float *ip = in_c + (oy * p->sh + yoff) * p->win + ox0 * sw + xoff;
        float *op = out_c + oy * p->wout + ox0;
        if (sw == 1) {
            for (i = 0; i + 4 <= n; i += 4, ip += 4, op += 4) {
                const float v0 = ip[0], v1 = ip[1], v2 = ip[2], v3 = ip[3];
                op[0] = SC_FMA(wv, v0, op[0]);
                op[1] = SC_FMA(wv, v1, op[1]);
                op[2] = SC_FMA(wv, v2, op[2]);
                op[3] = SC_FMA(wv, v3, op[3]);
            }
            for (; i < n; ++i, ++ip, ++op) *op = SC_FMA(wv, *ip, *op);
        } else {
            for (i = 0; i < n; ++i, ip += sw, ++op) *op = SC_FMA(wv, *ip, *op);
        }
    }
}

static inline void sc_conv_fill(float *o, int32_t n, float b)
{
    int32_t i;
    for (i = 0; i < n; ++i) o[i] = b;
}

/* Weight-stationary dense conv (any dilation): each weight applied with sc_conv_tap. */
static inline void sc_conv_dense_any(const float *in, float *out, const float *w, const float *bias,
                                     const sc_conv_params *p)
{
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;
    int32_t oc, ci, ky, kx;
    for (oc = 0; oc < p->cout; ++oc) {
        float *o = out + oc * plane_out;
        const float *in_g = in + (oc / cout_g) * cin_g * plane_in;
        sc_conv_fill(o, plane_out, bias ? bias[oc] : 0.0f);
        for (ci = 0; ci < cin_g; ++ci)
            for (ky = 0; ky < p->kh; ++ky)
                for (kx = 0; kx < p->kw; ++kx) sc_conv_tap(in_g + ci * plane_in, o, *w++, ky, kx, p);
        sc_act_inplace(o, plane_out, p->act, p->alpha);
    }
}

/* ---- dense kernels (output-stationary, register-blocked) ------------------------------------ *
 * Every dense kernel keeps its accumulators in registers and walks weights and inputs with
 * pointers: 4 output channels x 4 output positions per block (16 accumulators: each weight load
 * feeds 4 MACs, each input load 4 MACs). Output positions whose window lies inside the input
 * ("interior") are blocked; the others clip their window (no padding buffer, no bounds test
 * per MAC). The template picks the most specific kernel for the layer's shape, so only the
 * kernels a model uses are compiled in:
 *   sc_conv_dense_pw   1x1, stride 1, no padding (a matrix product over the flattened plane)
 *   sc_conv_dense_dw   depthwise (groups == cin == cout), any kernel, stride, padding
 *   sc_conv_dense_d1   any grouped conv without dilation
 *   sc_conv_dense      anything (dispatches; dilated convs use the tap loop above)
 */

/* Interior outputs: [*lo, *hi) whose taps 0..k-1 (dilation 1) all lie inside [0, n_in). */
static inline void sc_conv_interior(int32_t pad, int32_t stride, int32_t k, int32_t n_in, int32_t n_out,
                                    int32_t *lo, int32_t *hi)
{
    int32_t a, b;
    sc_valid_range(-pad, stride, n_in, n_out, lo, hi);
    sc_valid_range(k - 1 - pad, stride, n_in, n_out, &a, &b);
    if (a > *lo) *lo = a;
    if (b < *hi) *hi = b;
    if (*hi < *lo) *hi = *lo;
}

/* Taps [*k0, *k1) of a window starting at input position i0 that lie inside [0, n) (dilation 1). */
static inline void sc_conv_clip(int32_t i0, int32_t k, int32_t n, int32_t *k0, int32_t *k1)
{
    int32_t a = i0 < 0 ? -i0 : 0, b = n - i0 < k ? n - i0 : k;
    if (b < a) b = a;
    *k0 = a;
    *k1 = b;
}

/* 4 output channels (weight rows w[0..3], 4 values per 4 positions) at 4 interior positions
 * whose windows start at x[0..3]; acc[c*4 + j] receives channel c at position j (bias added). */
static inline void sc_conv_block44(const float *const *xs, const float *const *ws, const float *b,
                                   int32_t cin_g, int32_t kh, int32_t kw, int32_t row_skip,
                                   int32_t ch_skip, float *acc)
{
    const float *x0 = xs[0], *x1 = xs[1], *x2 = xs[2], *x3 = xs[3];
    const float *w0 = ws[0], *w1 = ws[1], *w2 = ws[2], *w3 = ws[3];
    float a00 = b[0], a01 = b[0], a02 = b[0], a03 = b[0];
    float a10 = b[1], a11 = b[1], a12 = b[1], a13 = b[1];
    float a20 = b[2], a21 = b[2], a22 = b[2], a23 = b[2];
    float a30 = b[3], a31 = b[3], a32 = b[3], a33 = b[3];
    int32_t ci, ky, kx;
    for (ci = 0; ci < cin_g; ++ci) {
        for (ky = 0; ky < kh; ++ky) {
            for (kx = 0; kx < kw; ++kx) {
                const float v0 = *x0++, v1 = *x1++, v2 = *x2++, v3 = *x3++;
                const float c0 = *w0++, c1 = *w1++, c2 = *w2++, c3 = *w3++;
                a00 = SC_FMA(c0, v0, a00); a01 = SC_FMA(c0, v1, a01);
                a02 = SC_FMA(c0, v2, a02); a03 = SC_FMA(c0, v3, a03);
                a10 = SC_FMA(c1, v0, a10); a11 = SC_FMA(c1, v1, a11);
                a12 = SC_FMA(c1, v2, a12); a13 = SC_FMA(c1, v3, a13);
                a20 = SC_FMA(c2, v0, a20); a21 = SC_FMA(c2, v1, a21);
                a22 = SC_FMA(c2, v2, a22); a23 = SC_FMA(c2, v3, a23);
                a30 = SC_FMA(c3, v0, a30); a31 = SC_FMA(c3, v1, a31);
                a32 = SC_FMA(c3, v2, a32); a33 = SC_FMA(c3, v3, a33);
            }
            x0 += row_skip; x1 += row_skip; x2 += row_skip; x3 += row_skip;
        }
        x0 += ch_skip; x1 += ch_skip; x2 += ch_skip; x3 += ch_skip;
    }
    acc[0] = a00; acc[1] = a01; acc[2] = a02; acc[3] = a03;
    acc[4] = a10; acc[5] = a11; acc[6] = a12; acc[7] = a13;
    acc[8] = a20; acc[9] = a21; acc[10] = a22; acc[11] = a23;
    acc[12] = a30; acc[13] = a31; acc[14] = a32; acc[15] = a33;
}

/* 4 output channels at the position whose window starts at (iy, ix), clipped to the input. */
static inline void sc_conv_block41(const float *in_g, int32_t iy, int32_t ix, const float *const *ws,
                                   const float *b, int32_t cin_g, const sc_conv_params *p, float *acc)
{
    int32_t ky0, ky1, kx0, kx1;
    sc_conv_clip(iy, p->kh, p->hin, &ky0, &ky1);
    sc_conv_clip(ix, p->kw, p->win, &kx0, &kx1);
    if (ky1 == ky0 || kx1 == kx0) {
        acc[0] = b[0]; acc[1] = b[1]; acc[2] = b[2]; acc[3] = b[3];
        return;
    }
    {
    const float *x = in_g + (iy + ky0) * p->win + ix + kx0;
    const int32_t nkx = kx1 - kx0, khw = p->kh * p->kw;
    const int32_t row_skip = p->win - nkx, wskip = p->kw - nkx;
    const int32_t ch_skip = p->hin * p->win - (ky1 - ky0) * p->win, wch = khw - (ky1 - ky0) * p->kw;
    const int32_t start = ky0 * p->kw + kx0;
    const float *w0 = ws[0] + start, *w1 = ws[1] + start, *w2 = ws[2] + start, *w3 = ws[3] + start;
    float a0 = b[0], a1 = b[1], a2 = b[2], a3 = b[3];
    int32_t ci, ky, kx;
    for (ci = 0; ci < cin_g; ++ci) {
        for (ky = ky0; ky < ky1; ++ky) {
            for (kx = 0; kx < nkx; ++kx) {
                const float v = *x++;
                a0 = SC_FMA(*w0++, v, a0);
                a1 = SC_FMA(*w1++, v, a1);
                a2 = SC_FMA(*w2++, v, a2);
                a3 = SC_FMA(*w3++, v, a3);
            }
            x += row_skip;
            w0 += wskip; w1 += wskip; w2 += wskip; w3 += wskip;
        }
        x += ch_skip;
        w0 += wch; w1 += wch; w2 += wch; w3 += wch;
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
    }
}

/* Weight rows, biases and output planes of channels [oc, oc + 4) of a group with cout_g
 * channels; channels past the group's end repeat its last one (computed twice, stored twice). */
static inline void sc_conv_rows4(const float *w, const float *bias, float *out, int32_t oc, int32_t n,
                                 int32_t row_len, int32_t plane_out, const float **ws, float *b, float **os)
{
    int32_t i;
    for (i = 0; i < 4; ++i) {
        const int32_t c = oc + (i < n ? i : n - 1);
        ws[i] = w + c * row_len;
        b[i] = bias ? bias[c] : 0.0f;
        os[i] = out + c * plane_out;
    }
}

#if SC_SMALL_CODE
/* Dot product of one clipped window (nky rows of nkx taps per input channel) with its weights. */
static SC_NOINLINE float sc_conv_window(const float *x, const float *w, int32_t nky, int32_t nkx, float acc,
                                        const sc_conv_params *p)
{
    const int32_t cin_g = p->cin / p->groups;
    const int32_t x_row = p->win - nkx, x_ch = p->hin * p->win - nky * p->win;
    const int32_t w_row = p->kw - nkx, w_ch = p->kh * p->kw - nky * p->kw;
    int32_t ci, ky;
    for (ci = 0; ci < cin_g; ++ci, x += x_ch, w += w_ch)
        for (ky = 0; ky < nky; ++ky, x += x_row, w += w_row) {
            int32_t k;
            for (k = nkx; k >= 2; k -= 2, x += 2, w += 2) {
                acc = SC_FMA(w[0], x[0], acc);
                acc = SC_FMA(w[1], x[1], acc);
            }
            if (k) acc = SC_FMA(*w++, *x++, acc);
        }
    return acc;
}

/* Any conv with dilation 1 (groups allowed), compact form (-Os): one output at a time, its window
 * clipped to the input once. Never in place (the planner gives it its own output). */
static inline void sc_conv_dense_d1(const float *in, float *out, const float *w, const float *bias,
                                    const sc_conv_params *p)
{
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const int32_t plane_in = p->hin * p->win, row_len = cin_g * p->kh * p->kw;
    int32_t oc, oy, ox, ky0, ky1, kx0, kx1;
    for (oc = 0; oc < p->cout; ++oc) {
        const float *in_g = in + (oc / cout_g) * cin_g * plane_in;
        const float *wo = w + oc * row_len;
        for (oy = 0; oy < p->hout; ++oy) {
            const int32_t iy = oy * p->sh - p->ph;
            sc_conv_clip(iy, p->kh, p->hin, &ky0, &ky1);
            for (ox = 0; ox < p->wout; ++ox) {
                const int32_t ix = ox * p->sw - p->pw;
                sc_conv_clip(ix, p->kw, p->win, &kx0, &kx1);
                *out++ = sc_act(sc_conv_window(in_g + (iy + ky0) * p->win + ix + kx0, wo + ky0 * p->kw + kx0,
                                               ky1 - ky0, kx1 - kx0, bias ? bias[oc] : 0.0f, p),
                                p->act, p->alpha);
            }
        }
    }
}
#else
/* Any conv with dilation 1 (groups allowed). */
static inline void sc_conv_dense_d1(const float *in, float *out, const float *w, const float *bias,
                                    const sc_conv_params *p)
{
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;
    const int32_t row_len = cin_g * p->kh * p->kw;
    const int32_t row_skip = p->win - p->kw, ch_skip = plane_in - p->kh * p->win;
    int32_t y0, y1, x0, x1, nx, n_in, g, ob, k, j, c, oy, ox;
    sc_conv_interior(p->ph, p->sh, p->kh, p->hin, p->hout, &y0, &y1);
    sc_conv_interior(p->pw, p->sw, p->kw, p->win, p->wout, &x0, &x1);
    nx = x1 - x0;
    n_in = (y1 - y0) * nx;
    for (g = 0; g < p->groups; ++g) {
        const float *in_g = in + g * cin_g * plane_in;
        for (ob = 0; ob < cout_g; ob += 4) {
            const float *ws[4];
            float *os[4], b[4], acc[16];
            sc_conv_rows4(w, bias, out, g * cout_g + ob, cout_g - ob, row_len, plane_out, ws, b, os);
            /* interior positions, 4 at a time in raster order */
            for (k = 0; k + 4 <= n_in; k += 4) {
                const float *xs[4];
                int32_t oo[4];
                for (j = 0; j < 4; ++j) {
                    const int32_t qy = y0 + (k + j) / nx, qx = x0 + (k + j) % nx;
                    xs[j] = in_g + (qy * p->sh - p->ph) * p->win + qx * p->sw - p->pw;
                    oo[j] = qy * p->wout + qx;
                }
                sc_conv_block44(xs, ws, b, cin_g, p->kh, p->kw, row_skip, ch_skip, acc);
                for (c = 0; c < 4; ++c)
                    for (j = 0; j < 4; ++j) os[c][oo[j]] = sc_act(acc[c * 4 + j], p->act, p->alpha);
            }
            /* the remaining interior positions and the border, one at a time with clipped windows */
            for (oy = 0; oy < p->hout; ++oy) {
                for (ox = 0; ox < p->wout; ++ox) {
                    const int32_t r = (oy - y0) * nx + (ox - x0);
                    if (oy >= y0 && oy < y1 && ox >= x0 && ox < x1 && r < (n_in & ~3)) continue;
                    sc_conv_block41(in_g, oy * p->sh - p->ph, ox * p->sw - p->pw, ws, b, cin_g, p, acc);
                    for (c = 0; c < 4; ++c) os[c][oy * p->wout + ox] = sc_act(acc[c], p->act, p->alpha);
                }
            }
        }
    }
}

#endif /* SC_SMALL_CODE */

#if SC_SMALL_CODE
/* -Os: the compact kernel above (the column stays unused). */
static inline void sc_conv_dense_mm(const float *in, float *out, const float *w, const float *bias,
                                    const sc_conv_params *p, float *col)
{
    (void)col;
    sc_conv_dense_d1(in, out, w, bias, p);
}
#else
/* Any conv with dilation 1 (groups allowed): 4 output positions (raster order) at a time, their
 * windows copied into `col` as a column [row_len][4] (taps outside the input are 0), then 4 output
 * channels x 4 positions per pass (sc_mm44): every column value feeds every output channel. A short
 * last block repeats its last position; channels past the group's end repeat its last one. */
static inline SC_SPECIALIZE void sc_conv_dense_mm(const float *in, float *out, const float *w, const float *bias,
                                                  const sc_conv_params *p, float *col)
{
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;
    const int32_t row_len = cin_g * p->kh * p->kw;
    int32_t g, q, j, ob, c, ci, ky, kx;
    for (g = 0; g < p->groups; ++g) {
        const float *in_g = in + g * cin_g * plane_in;
        for (q = 0; q < plane_out; q += 4) {
            const int32_t n = plane_out - q < 4 ? plane_out - q : 4;
            for (j = 0; j < 4; ++j) {
                const int32_t pos = q + (j < n ? j : n - 1), oy = pos / p->wout, ox = pos - oy * p->wout;
                const int32_t iy0 = oy * p->sh - p->ph, ix0 = ox * p->sw - p->pw;
                float *d = col + j;
                if (iy0 >= 0 && iy0 + p->kh <= p->hin && ix0 >= 0 && ix0 + p->kw <= p->win) {
                    const float *src = in_g + iy0 * p->win + ix0;
                    for (ci = 0; ci < cin_g; ++ci, src += plane_in - p->kh * p->win)
                        for (ky = 0; ky < p->kh; ++ky, src += p->win)
                            for (kx = 0; kx < p->kw; ++kx, d += 4) *d = src[kx];
                } else {
                    for (ci = 0; ci < cin_g; ++ci)
                        for (ky = 0; ky < p->kh; ++ky) {
                            const int32_t iy = iy0 + ky, row = ci * plane_in + iy * p->win;
                            for (kx = 0; kx < p->kw; ++kx, d += 4) {
                                const int32_t ix = ix0 + kx;
                                *d = (iy >= 0 && iy < p->hin && ix >= 0 && ix < p->win) ? in_g[row + ix] : 0.0f;
                            }
                        }
                }
            }
            for (ob = 0; ob < cout_g; ob += 4) {
                const float *ws[4];
                float *os[4], b[4], acc[16];
                sc_conv_rows4(w, bias, out, g * cout_g + ob, cout_g - ob, row_len, plane_out, ws, b, os);
                for (c = 0; c < 4; ++c) acc[4 * c] = acc[4 * c + 1] = acc[4 * c + 2] = acc[4 * c + 3] = b[c];
                sc_mm44(col, ws[0], ws[1], ws[2], ws[3], row_len, acc);
                if (n == 4) {
                    for (c = 0; c < 4; ++c) {
                        float *o = os[c] + q;
                        o[0] = sc_act(acc[4 * c], p->act, p->alpha);
                        o[1] = sc_act(acc[4 * c + 1], p->act, p->alpha);
                        o[2] = sc_act(acc[4 * c + 2], p->act, p->alpha);
                        o[3] = sc_act(acc[4 * c + 3], p->act, p->alpha);
                    }
                } else {
                    for (c = 0; c < 4; ++c)
                        for (j = 0; j < n; ++j) os[c][q + j] = sc_act(acc[4 * c + j], p->act, p->alpha);
                }
            }
        }
    }
}
#endif /* SC_SMALL_CODE */

/* 1x1 convolution, stride 1, no padding: out[oc][q] = sum_ci w[oc][ci] * in[ci][q], 4 channels x
 * 4 positions per block. Positions q..q+3 of the group's input channels are first gathered into
 * `col` (4 * cin/groups floats), so the kernel is safe in place (out == in, cin == cout): those
 * positions are read by no other block. Past the plane's end the last position is repeated. */
static inline void sc_conv_dense_pw(const float *in, float *out, const float *w, const float *bias,
                                    const sc_conv_params *p, float *col)
{
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const int32_t plane = p->hin * p->win;
    int32_t g, ob, q, ci, j, n;
    for (g = 0; g < p->groups; ++g) {
        const float *in_g = in + g * cin_g * plane;
        for (q = 0; q < plane; q += 4) {
            n = plane - q < 4 ? plane - q : 4;
            if (n == 4) {
                const float *x = in_g + q;
                float *d = col;
                for (ci = 0; ci < cin_g; ++ci, x += plane, d += 4) {
                    const float v0 = x[0], v1 = x[1], v2 = x[2], v3 = x[3];
                    d[0] = v0; d[1] = v1; d[2] = v2; d[3] = v3;
                }
            } else {
                for (ci = 0; ci < cin_g; ++ci)
                    for (j = 0; j < 4; ++j) col[ci * 4 + j] = in_g[ci * plane + q + (j < n ? j : n - 1)];
            }
            for (ob = 0; ob < cout_g; ob += 4) {
                const float *ws[4];
                float *os[4], b[4];
                int32_t c;
                float a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33;
                sc_conv_rows4(w, bias, out, g * cout_g + ob, cout_g - ob, cin_g, plane, ws, b, os);
                {
                    float acc[16];
                    for (c = 0; c < 4; ++c) acc[4 * c] = acc[4 * c + 1] = acc[4 * c + 2] = acc[4 * c + 3] = b[c];
                    sc_mm44(col, ws[0], ws[1], ws[2], ws[3], cin_g, acc);
                    a00 = acc[0]; a01 = acc[1]; a02 = acc[2]; a03 = acc[3];
                    a10 = acc[4]; a11 = acc[5]; a12 = acc[6]; a13 = acc[7];
                    a20 = acc[8]; a21 = acc[9]; a22 = acc[10]; a23 = acc[11];
                    a30 = acc[12]; a31 = acc[13]; a32 = acc[14]; a33 = acc[15];
                }
                if (n == 4) {
                    float *o0 = os[0] + q, *o1 = os[1] + q, *o2 = os[2] + q, *o3 = os[3] + q;
                    o0[0] = sc_act(a00, p->act, p->alpha); o0[1] = sc_act(a01, p->act, p->alpha);
                    o0[2] = sc_act(a02, p->act, p->alpha); o0[3] = sc_act(a03, p->act, p->alpha);
                    o1[0] = sc_act(a10, p->act, p->alpha); o1[1] = sc_act(a11, p->act, p->alpha);
                    o1[2] = sc_act(a12, p->act, p->alpha); o1[3] = sc_act(a13, p->act, p->alpha);
                    o2[0] = sc_act(a20, p->act, p->alpha); o2[1] = sc_act(a21, p->act, p->alpha);
                    o2[2] = sc_act(a22, p->act, p->alpha); o2[3] = sc_act(a23, p->act, p->alpha);
                    o3[0] = sc_act(a30, p->act, p->alpha); o3[1] = sc_act(a31, p->act, p->alpha);
                    o3[2] = sc_act(a32, p->act, p->alpha); o3[3] = sc_act(a33, p->act, p->alpha);
                } else {
                    const float acc[16] = {a00, a01, a02, a03, a10, a11, a12, a13,
                                           a20, a21, a22, a23, a30, a31, a32, a33};
                    for (c = 0; c < 4; ++c)
                        for (j = 0; j < n; ++j) os[c][q + j] = sc_act(acc[c * 4 + j], p->act, p->alpha);
                }
            }
        }
    }
}

/* Extent of the zero-padded input plane a depthwise conv reads: SC_CONV_DW_PAD(p) floats. */
#define SC_CONV_DW_PAD_H(p) (((p)->hout - 1) * (p)->sh + (p)->kh)
#define SC_CONV_DW_PAD_W(p) (((p)->wout - 1) * (p)->sw + (p)->kw)

/* Depthwise convolution (groups == cin == cout, dilation 1). Each channel is first copied into
 * `pad` (SC_CONV_DW_PAD_H(p) x SC_CONV_DW_PAD_W(p) floats, the zero-padded window the outputs
 * read), so every output position is "interior": blocks of 4 positions in raster order share
 * each weight load (sc_conv_dw_plane). Safe in place (out == in) when the output plane is not
 * larger than the input plane: channel c's input is in `pad` before its output is written.
 * The weight-only depthwise kernels (below) run the same channel loops over decoded weights. */
/* Copies channel ic into the zero-padded plane (its border was zeroed once). */
static inline SC_SPECIALIZE void sc_conv_dw_copy(const float *ic, float *pad, int32_t wp, const sc_conv_params *p)
{
    const int32_t hp = SC_CONV_DW_PAD_H(p);
    const int32_t rows = p->hin < hp - p->ph ? p->hin : hp - p->ph;
    const int32_t cols = p->win < wp - p->pw ? p->win : wp - p->pw;
    int32_t y, x;
    for (y = 0; y < rows; ++y) {
        float *d = pad + (y + p->ph) * wp + p->pw;
        const float *src = ic + y * p->win;
        for (x = 0; x < cols; ++x) d[x] = src[x];
    }
}

/* One channel of a 3x3 stride-1 depthwise conv over its padded plane (wc: 9 weights). */
static inline SC_SPECIALIZE void sc_conv_dw3_plane(const float *pad, int32_t wp, float *o, const float *wc, float b,
                                                   const sc_conv_params *p)
{
    const int32_t wout = p->wout;
    const float w0 = wc[0], w1 = wc[1], w2 = wc[2], w3 = wc[3], w4 = wc[4];
    const float w5 = wc[5], w6 = wc[6], w7 = wc[7], w8 = wc[8];
    int32_t oy, ox;
    for (oy = 0; oy < p->hout; ++oy, o += wout) {
        const float *r0 = pad + oy * wp, *r1 = r0 + wp, *r2 = r1 + wp;
        float x00 = r0[0], x01 = r0[1], x10 = r1[0], x11 = r1[1], x20 = r2[0], x21 = r2[1];
        for (ox = 0; ox + 2 <= wout; ox += 2) {
            const float x02 = r0[ox + 2], x12 = r1[ox + 2], x22 = r2[ox + 2];
            const float x03 = r0[ox + 3], x13 = r1[ox + 3], x23 = r2[ox + 3];
            float a = b, e = b;
            a = SC_FMA(w0, x00, a); e = SC_FMA(w0, x01, e);
            a = SC_FMA(w1, x01, a); e = SC_FMA(w1, x02, e);
            a = SC_FMA(w2, x02, a); e = SC_FMA(w2, x03, e);
            a = SC_FMA(w3, x10, a); e = SC_FMA(w3, x11, e);
            a = SC_FMA(w4, x11, a); e = SC_FMA(w4, x12, e);
            a = SC_FMA(w5, x12, a); e = SC_FMA(w5, x13, e);
            a = SC_FMA(w6, x20, a); e = SC_FMA(w6, x21, e);
            a = SC_FMA(w7, x21, a); e = SC_FMA(w7, x22, e);
            a = SC_FMA(w8, x22, a); e = SC_FMA(w8, x23, e);
            o[ox] = sc_act(a, p->act, p->alpha);
            o[ox + 1] = sc_act(e, p->act, p->alpha);
            x00 = x02; x01 = x03; x10 = x12; x11 = x13; x20 = x22; x21 = x23;
        }
        if (ox < wout) {
            float a = b;
            a = SC_FMA(w0, x00, a); a = SC_FMA(w1, x01, a); a = SC_FMA(w2, r0[ox + 2], a);
            a = SC_FMA(w3, x10, a); a = SC_FMA(w4, x11, a); a = SC_FMA(w5, r1[ox + 2], a);
            a = SC_FMA(w6, x20, a); a = SC_FMA(w7, x21, a); a = SC_FMA(w8, r2[ox + 2], a);
            o[ox] = sc_act(a, p->act, p->alpha);
        }
    }
}

/* One channel of any depthwise conv (dilation 1) over its padded plane: 4 positions per pass. */
static inline SC_SPECIALIZE void sc_conv_dw_plane(const float *pad, int32_t wp, float *oc, const float *wc, float b,
                                                  const sc_conv_params *p)
{
    const int32_t plane_out = p->hout * p->wout, row_skip = wp - p->kw, ystep = p->sh * wp;
    int32_t qy = 0, qx = 0, i, k, ky, kx;
    for (k = 0; k < (plane_out & ~3); k += 4) {
        const float *xs[4], *wq = wc;
        float a0 = b, a1 = b, a2 = b, a3 = b;
        for (i = 0; i < 4; ++i) {
            xs[i] = pad + qy * ystep + qx * p->sw;
            if (++qx == p->wout) {
                qx = 0;
                ++qy;
            }
        }
        {
            const float *q0 = xs[0], *q1 = xs[1], *q2 = xs[2], *q3 = xs[3];
            for (ky = 0; ky < p->kh; ++ky) {
                for (kx = 0; kx < p->kw; ++kx) {
                    const float wv = *wq++;
                    a0 = SC_FMA(wv, *q0++, a0);
                    a1 = SC_FMA(wv, *q1++, a1);
                    a2 = SC_FMA(wv, *q2++, a2);
                    a3 = SC_FMA(wv, *q3++, a3);
                }
                q0 += row_skip; q1 += row_skip; q2 += row_skip; q3 += row_skip;
            }
        }
        oc[k] = sc_act(a0, p->act, p->alpha);
        oc[k + 1] = sc_act(a1, p->act, p->alpha);
        oc[k + 2] = sc_act(a2, p->act, p->alpha);
        oc[k + 3] = sc_act(a3, p->act, p->alpha);
    }
    for (k = plane_out & ~3; k < plane_out; ++k) {
        const float *q = pad + qy * ystep + qx * p->sw, *wq = wc;
        float a = b;
        for (ky = 0; ky < p->kh; ++ky) {
            for (kx = 0; kx < p->kw; ++kx) a = SC_FMA(*wq++, *q++, a);
            q += row_skip;
        }
        oc[k] = sc_act(a, p->act, p->alpha);
        if (++qx == p->wout) {
            qx = 0;
            ++qy;
        }
    }
}

static inline SC_SPECIALIZE void sc_conv_dense_dw(const float *in, float *out, const float *w, const float *bias,
                                                  const sc_conv_params *p, float *pad)
{
    const int32_t hp = SC_CONV_DW_PAD_H(p), wp = SC_CONV_DW_PAD_W(p), khw = p->kh * p->kw;
    const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;
    int32_t c, i;
    for (i = 0; i < hp * wp; ++i) pad[i] = 0.0f;
    for (c = 0; c < p->cout; ++c) {
        sc_conv_dw_copy(in + c * plane_in, pad, wp, p);
        sc_conv_dw_plane(pad, wp, out + c * plane_out, w + c * khw, bias ? bias[c] : 0.0f, p);
    }
}

/* Depthwise 3x3, stride 1, dilation 1 (the MobileNet / DS-CNN block): as sc_conv_dense_dw (same
 * padded plane, same in-place rule), but the 9 weights stay in registers and each output row is
 * swept left to right with the window's columns in registers (sc_conv_dw3_plane): 2 outputs per
 * pass take 6 loads and 18 FMAs. */
static inline SC_SPECIALIZE void sc_conv_dense_dw3(const float *in, float *out, const float *w, const float *bias,
                                                   const sc_conv_params *p, float *pad)
{
    const int32_t hp = SC_CONV_DW_PAD_H(p), wp = SC_CONV_DW_PAD_W(p);
    const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;
    int32_t c, i;
    for (i = 0; i < hp * wp; ++i) pad[i] = 0.0f;
    for (c = 0; c < p->cout; ++c) {
        sc_conv_dw_copy(in + c * plane_in, pad, wp, p);
        sc_conv_dw3_plane(pad, wp, out + c * plane_out, w + c * 9, bias ? bias[c] : 0.0f, p);
    }
}

/* Any convolution: the most specific kernel for the shape (the template calls those directly). */
static inline void sc_conv_dense(const float *in, float *out, const float *w, const float *bias,
                                 const sc_conv_params *p)
{
    if (p->dh != 1 || p->dw != 1)
        sc_conv_dense_any(in, out, w, bias, p);
    else
        sc_conv_dense_d1(in, out, w, bias, p);
}

/* ---- CSR kernels (output-stationary) ------------------------------------------------------- *
 * A channel's nonzeros are decoded SC_CSR_CHUNK at a time into input offsets relative to the
 * window origin (ci*H*W + ky*dh*W + kx*dw) on the stack, then every output position accumulates
 * them in registers: 4 positions per pass in the interior (each weight and offset load feeds 4
 * MACs), one at a time with a bounds test per tap on the border. The cost is proportional to the
 * nonzeros; the scratch is 12 bytes per chunk entry (384 B of stack by default). */
#ifndef SC_CSR_CHUNK
#define SC_CSR_CHUNK 32
#endif
/* Rows with fewer nonzeros than this use the weight-stationary tap loop (sc_conv_tap) instead. */
#ifndef SC_CSR_TAPS_BELOW
#define SC_CSR_TAPS_BELOW 3
#endif

/* Adds n taps (weights v, offsets off, tap rows ty / columns tx with dilation applied) of one
 * output channel to its output plane o. The first chunk starts from the bias b (`first`), the
 * others from the sums in o; the last chunk applies the activation as it stores (`last`). */
#define SC_SPARSE_LOAD(i) (first ? b : orow[i])
#define SC_SPARSE_STORE(i, a) (orow[i] = last ? sc_act((a), p->act, p->alpha) : (a))
static inline SC_SPECIALIZE void sc_conv_sparse_taps(const float *in_g, float *o, const float *v, const int32_t *off,
                                       const int32_t *ty, const int32_t *tx, int32_t n,
                                       const sc_conv_params *p, float b, int first, int last)
{
    const int32_t sw = p->sw, s2 = 2 * sw, s3 = 3 * sw;
    int32_t y0, y1, x0, x1, oy, ox, k;
    sc_conv_interior(p->ph, p->sh, (p->kh - 1) * p->dh + 1, p->hin, p->hout, &y0, &y1);
    sc_conv_interior(p->pw, sw, (p->kw - 1) * p->dw + 1, p->win, p->wout, &x0, &x1);
    for (oy = 0; oy < p->hout; ++oy) {
        const int32_t iy = oy * p->sh - p->ph;
        float *orow = o + oy * p->wout;
        const int inner = oy >= y0 && oy < y1;
        for (ox = 0; ox < p->wout;) {
            const int32_t i0 = iy * p->win + ox * sw - p->pw; /* input index of the window origin */
            if (inner && ox >= x0 && ox + 4 <= x1) {
                const float *base = in_g + i0;
                float a0 = SC_SPARSE_LOAD(ox), a1 = SC_SPARSE_LOAD(ox + 1);
                float a2 = SC_SPARSE_LOAD(ox + 2), a3 = SC_SPARSE_LOAD(ox + 3);
                if (sw == 1) {
                    for (k = 0; k < n; ++k) {
                        const float *q = base + off[k];
                        const float c = v[k];
                        a0 = SC_FMA(c, q[0], a0); a1 = SC_FMA(c, q[1], a1);
                        a2 = SC_FMA(c, q[2], a2); a3 = SC_FMA(c, q[3], a3);
                    }
                } else {
                    for (k = 0; k < n; ++k) {
                        const float *q = base + off[k];
                        const float c = v[k];
                        a0 = SC_FMA(c, q[0], a0); a1 = SC_FMA(c, q[sw], a1);
                        a2 = SC_FMA(c, q[s2], a2); a3 = SC_FMA(c, q[s3], a3);
                    }
                }
                SC_SPARSE_STORE(ox, a0); SC_SPARSE_STORE(ox + 1, a1);
                SC_SPARSE_STORE(ox + 2, a2); SC_SPARSE_STORE(ox + 3, a3);
                ox += 4;
            } else if (inner && ox >= x0 && ox < x1) {
                const float *base = in_g + i0;
                float a = SC_SPARSE_LOAD(ox);
                for (k = 0; k < n; ++k) a = SC_FMA(v[k], base[off[k]], a);
                SC_SPARSE_STORE(ox, a);
                ++ox;
            } else {
                const int32_t ix = ox * sw - p->pw;
                float a = SC_SPARSE_LOAD(ox);
                for (k = 0; k < n; ++k) {
                    const int32_t y = iy + ty[k], x = ix + tx[k];
                    if ((uint32_t)y < (uint32_t)p->hin && (uint32_t)x < (uint32_t)p->win)
                        a = SC_FMA(v[k], in_g[i0 + off[k]], a);
                }
                SC_SPARSE_STORE(ox, a);
                ++ox;
            }
        }
    }
}

#undef SC_SPARSE_LOAD
#undef SC_SPARSE_STORE

/* 1 when fewer than half of the outputs fall in the 4-position interior blocks of
 * sc_conv_sparse_taps (small padded planes, strided first layers): applying each weight to every
 * output it reaches (sc_conv_tap, window clipped once per weight) is then cheaper. */
static inline int sc_conv_mostly_border(const sc_conv_params *p)
{
    int32_t y0, y1, x0, x1;
    sc_conv_interior(p->ph, p->sh, (p->kh - 1) * p->dh + 1, p->hin, p->hout, &y0, &y1);
    sc_conv_interior(p->pw, p->sw, (p->kw - 1) * p->dw + 1, p->win, p->wout, &x0, &x1);
    return 2 * (y1 - y0) * ((x1 - x0) & ~3) < p->hout * p->wout;
}

/* One kernel per (column index type, row pointer type) pair: sc_conv_csr_<it>_<pt>. conv.j2 sends
 * 1x1 stride-1 convs to sc_conv_pw(c)_csr_* and depthwise convs to sc_conv_dw_csr_* (below). */
#define SC_DEFINE_CONV_CSR(NAME, PW, PWC, DW, Q8, CB, I8, IT, PT)                                 \
    static inline SC_SPECIALIZE void NAME(const float *in, float *out, const float *val,                      \
                                        const IT *col, const PT *ptr, const float *bias,        \
                                        const sc_conv_params *p)                                  \
    {                                                                                            \
        const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;             \
        const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;            \
        const int32_t khw = p->kh * p->kw;                                                     \
        int32_t off[SC_CSR_CHUNK];                                                               \
        int32_t ty[SC_CSR_CHUNK], tx[SC_CSR_CHUNK];                                              \
        int32_t oc, k, i, n;                                                                     \
        const int border = sc_conv_mostly_border(p);                                             \
        for (oc = 0; oc < p->cout; ++oc) {                                                       \
            float *o = out + oc * plane_out;                                                     \
            const float *in_g = in + (oc / cout_g) * cin_g * plane_in;                          \
            const int32_t start = (int32_t)ptr[oc], end = (int32_t)ptr[oc + 1];                  \
            const float b = bias ? bias[oc] : 0.0f;                                              \
            if (end - start < SC_CSR_TAPS_BELOW || border) {                                     \
                /* few nonzeros, or mostly border: weight-stationary taps are cheaper */         \
                sc_conv_fill(o, plane_out, b);                                                   \
                for (k = start; k < end; ++k) {                                                  \
                    const int32_t j = (int32_t)col[k];                                           \
                    const int32_t ci = j / khw, r = j - ci * khw;                                \
                    const int32_t ky = r / p->kw, kx = r - ky * p->kw;                         \
                    sc_conv_tap(in_g + ci * plane_in, o, val[k], ky, kx, p);                     \
                }                                                                                \
                sc_act_inplace(o, plane_out, p->act, p->alpha);                                \
                continue;                                                                        \
            }                                                                                    \
            k = start;                                                                           \
            do {                                                                                 \
                n = end - k < SC_CSR_CHUNK ? end - k : SC_CSR_CHUNK;                             \
                for (i = 0; i < n; ++i) {                                                        \
                    const int32_t j = (int32_t)col[k + i];                                       \
                    const int32_t ci = j / khw, r = j - ci * khw;                                \
                    const int32_t ky = r / p->kw, kx = r - ky * p->kw;                           \
                    ty[i] = ky * p->dh;                                                          \
                    tx[i] = kx * p->dw;                                                          \
                    off[i] = ci * plane_in + ty[i] * p->win + tx[i];                             \
                }                                                                                \
                sc_conv_sparse_taps(in_g, o, val + k, off, ty, tx, n, p, b, k == start,          \
                                    k + n == end);                                               \
                k += n;                                                                          \
            } while (k < end);                                                                   \
        }                                                                                        \
    }

/* ---- CSR kernels for the common specialized shapes ---------------------------------------- */

/* Adds n nonzeros (weights v, input planes xs) to a flat output row o of `len` positions, 16 per
 * pass (then 8, then 1): each weight load and plane pointer load feeds 16 MACs. The first chunk of a row starts
 * from the bias (`first`), the last one applies the activation as it stores (`last`). */
#define SC_SPARSE_LOAD(i) (first ? b : o[i])
#define SC_SPARSE_STORE(i, a) (o[i] = last ? sc_act((a), p->act, p->alpha) : (a))
static inline SC_SPECIALIZE void sc_conv_sparse_flat(float *o, const float *const *xs, const float *v,
                                                     int32_t n, int32_t len, float b, int first, int last,
                                                     const sc_conv_params *p)
{
    int32_t i, k;
    for (i = 0; i < (len & ~15); i += 16) { /* explicit bounds, as in sc_conv_dense_dw */
        float a0 = SC_SPARSE_LOAD(i), a1 = SC_SPARSE_LOAD(i + 1), a2 = SC_SPARSE_LOAD(i + 2);
        float a3 = SC_SPARSE_LOAD(i + 3), a4 = SC_SPARSE_LOAD(i + 4), a5 = SC_SPARSE_LOAD(i + 5);
        float a6 = SC_SPARSE_LOAD(i + 6), a7 = SC_SPARSE_LOAD(i + 7), a8 = SC_SPARSE_LOAD(i + 8);
        float a9 = SC_SPARSE_LOAD(i + 9), a10 = SC_SPARSE_LOAD(i + 10), a11 = SC_SPARSE_LOAD(i + 11);
        float a12 = SC_SPARSE_LOAD(i + 12), a13 = SC_SPARSE_LOAD(i + 13), a14 = SC_SPARSE_LOAD(i + 14);
        float a15 = SC_SPARSE_LOAD(i + 15);
        for (k = 0; k < n; ++k) {
            const float *q = xs[k] + i;
            const float c = v[k];
            a0 = SC_FMA(c, q[0], a0); a1 = SC_FMA(c, q[1], a1);
            a2 = SC_FMA(c, q[2], a2); a3 = SC_FMA(c, q[3], a3);
            a4 = SC_FMA(c, q[4], a4); a5 = SC_FMA(c, q[5], a5);
            a6 = SC_FMA(c, q[6], a6); a7 = SC_FMA(c, q[7], a7);
            a8 = SC_FMA(c, q[8], a8); a9 = SC_FMA(c, q[9], a9);
            a10 = SC_FMA(c, q[10], a10); a11 = SC_FMA(c, q[11], a11);
            a12 = SC_FMA(c, q[12], a12); a13 = SC_FMA(c, q[13], a13);
            a14 = SC_FMA(c, q[14], a14); a15 = SC_FMA(c, q[15], a15);
        }
        SC_SPARSE_STORE(i, a0); SC_SPARSE_STORE(i + 1, a1); SC_SPARSE_STORE(i + 2, a2);
        SC_SPARSE_STORE(i + 3, a3); SC_SPARSE_STORE(i + 4, a4); SC_SPARSE_STORE(i + 5, a5);
        SC_SPARSE_STORE(i + 6, a6); SC_SPARSE_STORE(i + 7, a7); SC_SPARSE_STORE(i + 8, a8);
        SC_SPARSE_STORE(i + 9, a9); SC_SPARSE_STORE(i + 10, a10); SC_SPARSE_STORE(i + 11, a11);
        SC_SPARSE_STORE(i + 12, a12); SC_SPARSE_STORE(i + 13, a13); SC_SPARSE_STORE(i + 14, a14);
        SC_SPARSE_STORE(i + 15, a15);
    }
    if (len & 8) {
        float a0 = SC_SPARSE_LOAD(i), a1 = SC_SPARSE_LOAD(i + 1), a2 = SC_SPARSE_LOAD(i + 2);
        float a3 = SC_SPARSE_LOAD(i + 3), a4 = SC_SPARSE_LOAD(i + 4), a5 = SC_SPARSE_LOAD(i + 5);
        float a6 = SC_SPARSE_LOAD(i + 6), a7 = SC_SPARSE_LOAD(i + 7);
        for (k = 0; k < n; ++k) {
            const float *q = xs[k] + i;
            const float c = v[k];
            a0 = SC_FMA(c, q[0], a0); a1 = SC_FMA(c, q[1], a1);
            a2 = SC_FMA(c, q[2], a2); a3 = SC_FMA(c, q[3], a3);
            a4 = SC_FMA(c, q[4], a4); a5 = SC_FMA(c, q[5], a5);
            a6 = SC_FMA(c, q[6], a6); a7 = SC_FMA(c, q[7], a7);
        }
        SC_SPARSE_STORE(i, a0); SC_SPARSE_STORE(i + 1, a1); SC_SPARSE_STORE(i + 2, a2);
        SC_SPARSE_STORE(i + 3, a3); SC_SPARSE_STORE(i + 4, a4); SC_SPARSE_STORE(i + 5, a5);
        SC_SPARSE_STORE(i + 6, a6); SC_SPARSE_STORE(i + 7, a7);
    }
    for (i = len & ~7; i < len; ++i) {
        float a = SC_SPARSE_LOAD(i);
        for (k = 0; k < n; ++k) a = SC_FMA(v[k], xs[k][i], a);
        SC_SPARSE_STORE(i, a);
    }
}

/* Adds n nonzeros (weights v, offsets off into the padded plane) to the output plane o of a
 * depthwise channel whose input is the zero-padded plane `pad` (width wp): 4 positions of an
 * output row per pass. */
static inline SC_SPECIALIZE void sc_conv_sparse_padded(float *o, const float *pad, int32_t wp, const float *v,
                                                       const int32_t *off, int32_t n, float b, int first,
                                                       int last, const sc_conv_params *p)
{
    const int32_t sw = p->sw, s2 = 2 * sw, s3 = 3 * sw;
    int32_t oy, ox, k;
    for (oy = 0; oy < p->hout; ++oy, o += p->wout) {
        const float *row = pad + oy * p->sh * wp;
        for (ox = 0; ox + 4 <= p->wout; ox += 4) {
            const float *base = row + ox * sw;
            float a0 = SC_SPARSE_LOAD(ox), a1 = SC_SPARSE_LOAD(ox + 1);
            float a2 = SC_SPARSE_LOAD(ox + 2), a3 = SC_SPARSE_LOAD(ox + 3);
            for (k = 0; k < n; ++k) {
                const float *q = base + off[k];
                const float c = v[k];
                a0 = SC_FMA(c, q[0], a0); a1 = SC_FMA(c, q[sw], a1);
                a2 = SC_FMA(c, q[s2], a2); a3 = SC_FMA(c, q[s3], a3);
            }
            SC_SPARSE_STORE(ox, a0); SC_SPARSE_STORE(ox + 1, a1);
            SC_SPARSE_STORE(ox + 2, a2); SC_SPARSE_STORE(ox + 3, a3);
        }
        for (; ox < p->wout; ++ox) {
            const float *base = row + ox * sw;
            float a = SC_SPARSE_LOAD(ox);
            for (k = 0; k < n; ++k) a = SC_FMA(v[k], base[off[k]], a);
            SC_SPARSE_STORE(ox, a);
        }
    }
}
#undef SC_SPARSE_LOAD
#undef SC_SPARSE_STORE

/* sc_conv_csr_pw_<it>_<pt>: 1x1, stride 1, no padding, any groups (a sparse matrix product over
 * the flattened plane). sc_conv_csr_dw_<it>_<pt>: depthwise (groups == cin == cout, dilation 1);
 * each channel with nonzeros is copied into the zero-padded plane `pad` (SC_CONV_DW_PAD_H(p) x
 * SC_CONV_DW_PAD_W(p) floats, as sc_conv_dense_dw) so that no tap needs a bounds test; a channel
 * without nonzeros is its activated bias. Safe in place under the same condition as
 * sc_conv_dense_dw (channel c's input is read before its output is written). */
/* Positions per pass of sc_conv_pwc_* (the column buffer is SC_PWC_BLOCK * cin floats). */
#define SC_PWC_BLOCK 8
#define SC_PWC_ACC float a0 = b, a1 = b, a2 = b, a3 = b, a4 = b, a5 = b, a6 = b, a7 = b
#define SC_PWC_FMA(w, x)                                                                          \
    a0 = SC_FMA(w, x[0], a0); a1 = SC_FMA(w, x[1], a1); a2 = SC_FMA(w, x[2], a2);                \
    a3 = SC_FMA(w, x[3], a3); a4 = SC_FMA(w, x[4], a4); a5 = SC_FMA(w, x[5], a5);                \
    a6 = SC_FMA(w, x[6], a6); a7 = SC_FMA(w, x[7], a7)
#define SC_PWC_STORE(o)                                                                           \
    o[0] = sc_act(a0, p->act, p->alpha); o[1] = sc_act(a1, p->act, p->alpha);                    \
    o[2] = sc_act(a2, p->act, p->alpha); o[3] = sc_act(a3, p->act, p->alpha);                    \
    o[4] = sc_act(a4, p->act, p->alpha); o[5] = sc_act(a5, p->act, p->alpha);                    \
    o[6] = sc_act(a6, p->act, p->alpha); o[7] = sc_act(a7, p->act, p->alpha)

#define SC_DEFINE_CONV_CSR_SHAPES(NAME, PW, PWC, DW, Q8, CB, I8, IT, PT)                          \
    static inline SC_SPECIALIZE void PW(const float *in, float *out,                             \
                                                         const float *val, const IT *col,         \
                                                         const PT *ptr, const float *bias,        \
                                                         const sc_conv_params *p)                 \
    {                                                                                            \
        const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;                 \
        const int32_t plane = p->hin * p->win;                                                   \
        const float *xs[SC_CSR_CHUNK];                                                           \
        int32_t oc, k, i, n;                                                                     \
        for (oc = 0; oc < p->cout; ++oc) {                                                       \
            float *o = out + oc * plane;                                                         \
            const float *in_g = in + (oc / cout_g) * cin_g * plane;                             \
            const int32_t start = (int32_t)ptr[oc], end = (int32_t)ptr[oc + 1];                  \
            const float b = bias ? bias[oc] : 0.0f;                                              \
            k = start;                                                                           \
            do {                                                                                 \
                n = end - k < SC_CSR_CHUNK ? end - k : SC_CSR_CHUNK;                             \
                for (i = 0; i < n; ++i) xs[i] = in_g + (int32_t)col[k + i] * plane;              \
                if (k == start && k + n == end) /* the common case: the row in one chunk */      \
                    sc_conv_sparse_flat(o, xs, val + k, n, plane, b, 1, 1, p);                   \
                else                                                                             \
                    sc_conv_sparse_flat(o, xs, val + k, n, plane, b, k == start, k + n == end, p); \
                k += n;                                                                          \
            } while (k < end);                                                                   \
        }                                                                                        \
    }                                                                                            \
    /* groups == 1, through `cbuf` (SC_PWC_BLOCK * cin floats): SC_PWC_BLOCK positions of every  \
     * input channel are gathered first, then every output channel's nonzeros are accumulated   \
     * over them; safe in place (out == in, cin == cout), like sc_conv_dense_pw. */              \
    static inline SC_SPECIALIZE void PWC(const float *in, float *out,                            \
                                                          const float *val, const IT *col,        \
                                                          const PT *ptr, const float *bias,       \
                                                          const sc_conv_params *p, float *cbuf)   \
    {                                                                                            \
        const int32_t plane = p->hin * p->win;                                                   \
        int32_t q, ci, j, oc, k;                                                                 \
        for (q = 0; q < plane; q += SC_PWC_BLOCK) {                                              \
            const int32_t n = plane - q < SC_PWC_BLOCK ? plane - q : SC_PWC_BLOCK;               \
            for (ci = 0; ci < p->cin; ++ci) {                                                    \
                const float *x = in + ci * plane + q;                                            \
                float *d = cbuf + ci * SC_PWC_BLOCK;                                             \
                if (n == SC_PWC_BLOCK) {                                                         \
                    for (j = 0; j < SC_PWC_BLOCK; j += 4) {                                      \
                        const float v0 = x[j], v1 = x[j + 1], v2 = x[j + 2], v3 = x[j + 3];      \
                        d[j] = v0; d[j + 1] = v1; d[j + 2] = v2; d[j + 3] = v3;                  \
                    }                                                                            \
                } else {                                                                         \
                    for (j = 0; j < SC_PWC_BLOCK; ++j) d[j] = x[j < n ? j : n - 1];              \
                }                                                                                \
            }                                                                                    \
            for (oc = 0; oc < p->cout; ++oc) {                                                   \
                const float b = bias ? bias[oc] : 0.0f;                                          \
                const float *v = val + ptr[oc];                                                  \
                const IT *c = col + ptr[oc];                                                     \
                float *o = out + oc * plane + q;                                                 \
                SC_PWC_ACC;                                                                      \
                for (k = (int32_t)(ptr[oc + 1] - ptr[oc]); k > 0; --k) {                         \
                    const float *x = cbuf + (int32_t)(*c++) * SC_PWC_BLOCK;                      \
                    const float w = *v++;                                                        \
                    SC_PWC_FMA(w, x);                                                            \
                }                                                                                \
                if (n == SC_PWC_BLOCK) {                                                         \
                    SC_PWC_STORE(o);                                                             \
                } else {                                                                         \
                    float t[SC_PWC_BLOCK];                                                       \
                    SC_PWC_STORE(t);                                                             \
                    for (j = 0; j < n; ++j) o[j] = t[j];                                         \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    static inline SC_SPECIALIZE void DW(const float *in, float *out,                             \
                                                         const float *val, const IT *col,         \
                                                         const PT *ptr, const float *bias,        \
                                                         const sc_conv_params *p, float *pad)     \
    {                                                                                            \
        const int32_t hp = SC_CONV_DW_PAD_H(p), wp = SC_CONV_DW_PAD_W(p);                       \
        const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;                \
        const int32_t rows = p->hin < hp - p->ph ? p->hin : hp - p->ph;                         \
        const int32_t cols = p->win < wp - p->pw ? p->win : wp - p->pw;                         \
        int32_t off[SC_CSR_CHUNK];                                                               \
        int32_t c, i, y, x, k, n;                                                                \
        for (i = 0; i < hp * wp; ++i) pad[i] = 0.0f;                                             \
        for (c = 0; c < p->cout; ++c) {                                                          \
            float *oc = out + c * plane_out;                                                     \
            const int32_t start = (int32_t)ptr[c], end = (int32_t)ptr[c + 1];                    \
            const float b = bias ? bias[c] : 0.0f;                                               \
            if (start == end) {                                                                  \
                const float a = sc_act(b, p->act, p->alpha);                                     \
                for (i = 0; i < plane_out; ++i) oc[i] = a;                                       \
                continue;                                                                        \
            }                                                                                    \
            for (y = 0; y < rows; ++y) {                                                         \
                float *d = pad + (y + p->ph) * wp + p->pw;                                       \
                const float *src = in + c * plane_in + y * p->win;                               \
                for (x = 0; x < cols; ++x) d[x] = src[x];                                        \
            }                                                                                    \
            k = start;                                                                           \
            do {                                                                                 \
                n = end - k < SC_CSR_CHUNK ? end - k : SC_CSR_CHUNK;                             \
                for (i = 0; i < n; ++i) {                                                        \
                    const int32_t j = (int32_t)col[k + i], ky = j / p->kw;                      \
                    off[i] = ky * wp + (j - ky * p->kw);                                         \
                }                                                                                \
                if (k == start && k + n == end)                                                  \
                    sc_conv_sparse_padded(oc, pad, wp, val + k, off, n, b, 1, 1, p);             \
                else                                                                             \
                    sc_conv_sparse_padded(oc, pad, wp, val + k, off, n, b, k == start,           \
                                          k + n == end, p);                                      \
                k += n;                                                                          \
            } while (k < end);                                                                   \
        }                                                                                        \
    }

/* ==== weight-only ============================================================================= */

/* ---- int8 / codebook weights (formats.py q8*, cb*), float activations ------------------------- *
 * Every quantized conv decodes an output channel's nonzero weights SC_CSR_CHUNK at a time into
 * float32 values (scale[oc] * q, exactly the model's weight, or codebook[i]) and input offsets on
 * the stack, then accumulates them with the CSR loops of sc_conv.h: 1x1 stride-1 convs over the
 * flattened plane (sc_conv_sparse_flat, 16 positions per pass), others output-stationary
 * (sc_conv_sparse_taps, 4 positions per pass), bias and activation fused. A conv whose outputs are
 * mostly on the border (fewer than half in 4-position interior blocks: small planes, depthwise
 * with padding, strided first layers) applies each weight to every output it reaches instead
 * (sc_conv_tap, windows clipped once per weight). Decoding costs a few instructions per nonzero
 * per output channel, not per MAC. */

#define SC_CONV_Q_DIMS                                                                            \
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;                     \
    const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;                    \
    const int32_t khw = p->kh * p->kw, row_len = cin_g * khw;                                   \
    const int cq_flat = khw == 1 && p->sh == 1 && p->sw == 1 && p->ph == 0 && p->pw == 0;        \
    const int cq_ws = !cq_flat && sc_conv_mostly_border(p);                                      \
    float cv[SC_CSR_CHUNK];                                                                      \
    const float *cxs[SC_CSR_CHUNK];                                                              \
    int32_t coff[SC_CSR_CHUNK], cty[SC_CSR_CHUNK], ctx[SC_CSR_CHUNK];                           \
    int32_t oc, cn, cfirst;                                                                      \
    float cb_;                                                                                   \
    float *o;                                                                                    \
    const float *in_g;                                                                           \
    (void)row_len

/* Accumulates a chunk into the channel's outputs (`last`: the row's final chunk). One out-of-line
 * copy per model: every quantized conv shares it (code size). */
static SC_NOINLINE void sc_conv_q_flush(const float *in_g, float *o, const float *cv, const float *const *cxs,
                                        const int32_t *coff, const int32_t *cty, const int32_t *ctx, int32_t n,
                                        int flat, float b, int first, int last, const sc_conv_params *p)
{
    if (flat)
        sc_conv_sparse_flat(o, cxs, cv, n, p->hout * p->wout, b, first, last, p);
    else
        sc_conv_sparse_taps(in_g, o, cv, coff, cty, ctx, n, p, b, first, last);
}

#define SC_CONV_Q_FLUSH(LAST)                                                                     \
    do {                                                                                         \
        sc_conv_q_flush(in_g, o, cv, cxs, coff, cty, ctx, cn, cq_flat, cb_, cfirst, (LAST), p);  \
        cfirst = 0;                                                                              \
        cn = 0;                                                                                  \
    } while (0)

/* Output channel oc: its plane, its group's input, its bias; the chunk starts empty. */
#define SC_CONV_Q_BEGIN                                                                           \
    o = out + oc * plane_out;                                                                    \
    in_g = in + (oc / cout_g) * cin_g * plane_in;                                               \
    cb_ = bias ? bias[oc] : 0.0f;                                                                \
    cn = 0;                                                                                      \
    cfirst = 1;                                                                                  \
    if (cq_ws) sc_conv_fill(o, plane_out, cb_)

/* Adds the weight wv at flat row position j ([C_in/groups][kh][kw]). */
#define SC_CONV_Q_PUSH(J, WV)                                                                     \
    do {                                                                                         \
        const int32_t j_ = (J), ci_ = j_ / khw, r_ = j_ - ci_ * khw;                            \
        const int32_t ky_ = r_ / p->kw, kx_ = r_ - ky_ * p->kw;                                  \
        if (cq_ws) {                                                                             \
            sc_conv_tap(in_g + ci_ * plane_in, o, (WV), ky_, kx_, p);                            \
        } else {                                                                                 \
            cv[cn] = (WV);                                                                       \
            cxs[cn] = in_g + ci_ * plane_in;                                                     \
            cty[cn] = ky_ * p->dh;                                                               \
            ctx[cn] = kx_ * p->dw;                                                               \
            coff[cn] = ci_ * plane_in + cty[cn] * p->win + ctx[cn];                             \
            if (++cn == SC_CSR_CHUNK) SC_CONV_Q_FLUSH(0);                                        \
        }                                                                                        \
    } while (0)

/* The channel's end: the last chunk (possibly empty) stores bias + sums, activated. */
#define SC_CONV_Q_END                                                                             \
    do {                                                                                         \
        if (cq_ws)                                                                               \
            sc_act_inplace(o, plane_out, p->act, p->alpha);                                      \
        else                                                                                     \
            SC_CONV_Q_FLUSH(1);                                                                  \
    } while (0)

static inline void sc_conv_q8(const float *in, float *out, const int8_t *q, const float *scale,
                              const float *bias, const sc_conv_params *p)
{
    SC_CONV_Q_DIMS;
    int32_t j;
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *qr = q + oc * row_len;
        SC_CONV_Q_BEGIN;
        for (j = 0; j < row_len; ++j)
            if (qr[j]) SC_CONV_Q_PUSH(j, scale[oc] * (float)qr[j]);
        SC_CONV_Q_END;
    }
}

static inline void sc_conv_cb(const float *in, float *out, const uint8_t *idx, const float *cb,
                              int32_t bits, const float *bias, const sc_conv_params *p)
{
    SC_CONV_Q_DIMS;
    int32_t j;
    sc_bitreader br;
    sc_bits_init(&br, idx);
    for (oc = 0; oc < p->cout; ++oc) {
        SC_CONV_Q_BEGIN;
        for (j = 0; j < row_len; ++j) {
            const float wv = cb[sc_bits_get(&br, bits)];
            if (wv != 0.0f) SC_CONV_Q_PUSH(j, wv);
        }
        SC_CONV_Q_END;
    }
}

/* sc_conv_q8_csr_<it>_<pt> and sc_conv_cb_csr_<it>_<pt>. */
#define SC_DEFINE_CONV_QCSR(NAME, PW, PWC, DW, Q8, CB, I8, IT, PT)                                \
    static inline void Q8(const float *in, float *out, const int8_t *q,                         \
                                                  const IT *col, const PT *ptr,                  \
                                                  const float *scale, const float *bias,         \
                                                  const sc_conv_params *p)                       \
    {                                                                                            \
        SC_CONV_Q_DIMS;                                                                          \
        int32_t k;                                                                               \
        for (oc = 0; oc < p->cout; ++oc) {                                                       \
            const int32_t end = (int32_t)ptr[oc + 1];                                            \
            SC_CONV_Q_BEGIN;                                                                     \
            for (k = (int32_t)ptr[oc]; k < end; ++k)                                             \
                SC_CONV_Q_PUSH((int32_t)col[k], scale[oc] * (float)q[k]);                        \
            SC_CONV_Q_END;                                                                       \
        }                                                                                        \
    }                                                                                            \
    static inline void CB(const float *in, float *out,                                          \
                                                  const uint8_t *idx, const float *cb,           \
                                                  const IT *col, const PT *ptr, int32_t bits,    \
                                                  const float *bias, const sc_conv_params *p)    \
    {                                                                                            \
        SC_CONV_Q_DIMS;                                                                          \
        int32_t k;                                                                               \
        sc_bitreader br;                                                                         \
        sc_bits_init(&br, idx);                                                                  \
        for (oc = 0; oc < p->cout; ++oc) {                                                       \
            const int32_t end = (int32_t)ptr[oc + 1];                                            \
            SC_CONV_Q_BEGIN;                                                                     \
            for (k = (int32_t)ptr[oc]; k < end; ++k)                                             \
                SC_CONV_Q_PUSH((int32_t)col[k], cb[sc_bits_get(&br, bits)]);                     \
            SC_CONV_Q_END;                                                                       \
        }                                                                                        \
    }

/* sc_conv_q8_rel_<pt> and sc_conv_cb_rel_<pt>. Filler entries (value zero) are skipped. */
/* The channel loop of the relative-index forms with float activations (also sc_huff.h's): NEXT is
 * the row's next entry f (gap | value << gap_bits), VT/VALUE its value (zero: a filler, skipped) and
 * WEIGHT the float weight of a value v. */
#define SC_CONV_REL_CHANNELS(NEXT, VT, VALUE, WEIGHT)                                           \
    const uint32_t gmask = (1u << gap_bits) - 1u;                                               \
    SC_CONV_Q_DIMS;                                                                             \
    int32_t k;                                                                                  \
    sc_bitreader br;                                                                            \
    sc_bits_init(&br, stream);                                                                  \
    for (oc = 0; oc < p->cout; ++oc) {                                                          \
        const int32_t n = (int32_t)ptr[oc + 1] - (int32_t)ptr[oc];                              \
        int32_t pos = 0;                                                                        \
        SC_CONV_Q_BEGIN;                                                                        \
        for (k = 0; k < n; ++k) {                                                               \
            const uint32_t f = NEXT;                                                            \
            const VT v = VALUE;                                                                 \
            pos += (int32_t)(f & gmask);                                                        \
            if (v) SC_CONV_Q_PUSH(pos, WEIGHT);                                                 \
            ++pos;                                                                              \
        }                                                                                       \
        SC_CONV_Q_END;                                                                          \
    }

#define SC_DEFINE_CONV_QREL(Q8, CB, I8, PT)                                                                       \
    static inline void Q8(const float *in, float *out, const uint8_t *stream, const PT *ptr, const float *scale,  \
                          int32_t gap_bits, const float *bias, const sc_conv_params *p)                           \
    {                                                                                                             \
        SC_CONV_REL_CHANNELS(sc_bits_get(&br, gap_bits + 8), int32_t, sc_s8(f >> gap_bits), scale[oc] * (float)v) \
    }                                                                                                             \
    static inline void CB(const float *in, float *out, const uint8_t *stream, const float *cb, const PT *ptr,     \
                          int32_t bits, int32_t gap_bits, const float *bias, const sc_conv_params *p)             \
    {                                                                                                             \
        SC_CONV_REL_CHANNELS(sc_bits_get(&br, gap_bits + bits), float, cb[f >> gap_bits], v)                      \
    }

/* ---- weight-only depthwise and 1x1 convs that run where the float ones do (in place) ------------ *
 * Depthwise (groups == cin == cout, dilation 1; sc_conv_{q8,cb}_dw3 / _dw): each channel's weights are
 * decoded once (scale[c] * q, exactly the model's weight, or codebook[i]) into floats after the padded
 * plane, then the float channel loop runs over them: the same instructions per MAC as float dense and
 * the same in-place rule. 1x1, stride 1, no padding, groups == 1 (sc_conv_{q8,cb}_pw): SC_WQ_PW_BLOCK
 * positions of every input channel are gathered into `col` (arena scratch) first, so the kernel may
 * write over its input (C_in == C_out); then 2 output channels x SC_WQ_PW_BLOCK positions per pass,
 * each weight decoded once per pass. */

/* The weight-only depthwise kernels: `pad` holds the padded plane (SC_CONV_DW_PAD_H x _W floats)
 * followed by kh * kw floats for the channel's decoded weights (codegen: Conv2d.kernel_choice). */
#define SC_WQ_DW_LOOP(DECODE, PLANE)                                                              \
    do {                                                                                         \
        const int32_t hp_ = SC_CONV_DW_PAD_H(p), wp_ = SC_CONV_DW_PAD_W(p), khw_ = p->kh * p->kw; \
        const int32_t plane_in_ = p->hin * p->win, plane_out_ = p->hout * p->wout;               \
        float *wdec = pad + hp_ * wp_;                                                           \
        int32_t c, k;                                                                            \
        for (k = 0; k < hp_ * wp_; ++k) pad[k] = 0.0f;                                           \
        for (c = 0; c < p->cout; ++c) {                                                          \
            for (k = 0; k < khw_; ++k) wdec[k] = (DECODE);                                       \
            sc_conv_dw_copy(in + c * plane_in_, pad, wp_, p);                                    \
            PLANE(pad, wp_, out + c * plane_out_, wdec, bias ? bias[c] : 0.0f, p);               \
        }                                                                                        \
    } while (0)

static inline SC_SPECIALIZE void sc_conv_q8_dw3(const float *in, float *out, const int8_t *q, const float *scale,
                                                const float *bias, const sc_conv_params *p, float *pad)
{
    SC_WQ_DW_LOOP(scale[c] * (float)q[c * 9 + k], sc_conv_dw3_plane);
}

static inline SC_SPECIALIZE void sc_conv_q8_dw(const float *in, float *out, const int8_t *q, const float *scale,
                                               const float *bias, const sc_conv_params *p, float *pad)
{
    SC_WQ_DW_LOOP(scale[c] * (float)q[c * khw_ + k], sc_conv_dw_plane);
}

static inline SC_SPECIALIZE void sc_conv_cb_dw3(const float *in, float *out, const uint8_t *idx, const float *cb,
                                                int32_t bits, const float *bias, const sc_conv_params *p, float *pad)
{
    sc_bitreader br;
    sc_bits_init(&br, idx);
    SC_WQ_DW_LOOP(cb[sc_bits_get(&br, bits)], sc_conv_dw3_plane);
}

static inline SC_SPECIALIZE void sc_conv_cb_dw(const float *in, float *out, const uint8_t *idx, const float *cb,
                                               int32_t bits, const float *bias, const sc_conv_params *p, float *pad)
{
    sc_bitreader br;
    sc_bits_init(&br, idx);
    SC_WQ_DW_LOOP(cb[sc_bits_get(&br, bits)], sc_conv_dw_plane);
}

/* Positions per pass of sc_conv_q8_pw / sc_conv_cb_pw (`col` is SC_WQ_PW_BLOCK * cin floats). */
#define SC_WQ_PW_BLOCK 8

/* Gathers positions [q, q + n) of every input channel into col (a short last block repeats its
 * last position). */
static inline void sc_conv_wq_gather(const float *in, float *col, int32_t q, int32_t n, const sc_conv_params *p)
{
    const int32_t plane = p->hin * p->win;
    int32_t ci, j;
    for (ci = 0; ci < p->cin; ++ci, in += plane, col += SC_WQ_PW_BLOCK)
        for (j = 0; j < SC_WQ_PW_BLOCK; ++j) col[j] = in[q + (j < n ? j : n - 1)];
}

/* Output channels oc and oc1 at the block's positions: SC_WQ_PW_ACC declares the sums, each
 * SC_WQ_PW_STEP adds input channel ci's column times the weights U (oc) and V (oc1), SC_WQ_PW_STORE
 * multiplies the sums by S0 / S1 (1 for codebooks), adds the biases and stores them activated. */
#define SC_WQ_PW_ACC                                                                              \
    const float *x = col;                                                                        \
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f; \
    float e0 = 0.0f, e1 = 0.0f, e2 = 0.0f, e3 = 0.0f, e4 = 0.0f, e5 = 0.0f, e6 = 0.0f, e7 = 0.0f

#define SC_WQ_PW_STEP(U, V)                                                                       \
    do {                                                                                         \
        const float u = (U), v = (V);                                                            \
        const float x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];                                  \
        const float x4 = x[4], x5 = x[5], x6 = x[6], x7 = x[7];                                  \
        x += SC_WQ_PW_BLOCK;                                                                     \
        a0 = SC_FMA(u, x0, a0); a1 = SC_FMA(u, x1, a1); a2 = SC_FMA(u, x2, a2); a3 = SC_FMA(u, x3, a3); \
        a4 = SC_FMA(u, x4, a4); a5 = SC_FMA(u, x5, a5); a6 = SC_FMA(u, x6, a6); a7 = SC_FMA(u, x7, a7); \
        e0 = SC_FMA(v, x0, e0); e1 = SC_FMA(v, x1, e1); e2 = SC_FMA(v, x2, e2); e3 = SC_FMA(v, x3, e3); \
        e4 = SC_FMA(v, x4, e4); e5 = SC_FMA(v, x5, e5); e6 = SC_FMA(v, x6, e6); e7 = SC_FMA(v, x7, e7); \
    } while (0)

#define SC_WQ_PW_STORE(S0, S1)                                                                    \
    do {                                                                                         \
        float *o0 = out + oc * plane + q, *o1 = out + oc1 * plane + q;                           \
        const float b0 = bias ? bias[oc] : 0.0f, b1 = bias ? bias[oc1] : 0.0f;                   \
        const float s0 = (S0), s1 = (S1);                                                        \
        if (n == SC_WQ_PW_BLOCK) {                                                               \
            o0[0] = sc_act(SC_FMA(s0, a0, b0), p->act, p->alpha);                                \
            o0[1] = sc_act(SC_FMA(s0, a1, b0), p->act, p->alpha);                                \
            o0[2] = sc_act(SC_FMA(s0, a2, b0), p->act, p->alpha);                                \
            o0[3] = sc_act(SC_FMA(s0, a3, b0), p->act, p->alpha);                                \
            o0[4] = sc_act(SC_FMA(s0, a4, b0), p->act, p->alpha);                                \
            o0[5] = sc_act(SC_FMA(s0, a5, b0), p->act, p->alpha);                                \
            o0[6] = sc_act(SC_FMA(s0, a6, b0), p->act, p->alpha);                                \
            o0[7] = sc_act(SC_FMA(s0, a7, b0), p->act, p->alpha);                                \
            o1[0] = sc_act(SC_FMA(s1, e0, b1), p->act, p->alpha);                                \
            o1[1] = sc_act(SC_FMA(s1, e1, b1), p->act, p->alpha);                                \
            o1[2] = sc_act(SC_FMA(s1, e2, b1), p->act, p->alpha);                                \
            o1[3] = sc_act(SC_FMA(s1, e3, b1), p->act, p->alpha);                                \
            o1[4] = sc_act(SC_FMA(s1, e4, b1), p->act, p->alpha);                                \
            o1[5] = sc_act(SC_FMA(s1, e5, b1), p->act, p->alpha);                                \
            o1[6] = sc_act(SC_FMA(s1, e6, b1), p->act, p->alpha);                                \
            o1[7] = sc_act(SC_FMA(s1, e7, b1), p->act, p->alpha);                                \
        } else {                                                                                 \
            const float acc[2 * SC_WQ_PW_BLOCK] = {a0, a1, a2, a3, a4, a5, a6, a7,               \
                                                   e0, e1, e2, e3, e4, e5, e6, e7};              \
            int32_t j;                                                                           \
            for (j = 0; j < n; ++j) {                                                            \
                o0[j] = sc_act(SC_FMA(s0, acc[j], b0), p->act, p->alpha);                        \
                o1[j] = sc_act(SC_FMA(s1, acc[SC_WQ_PW_BLOCK + j], b1), p->act, p->alpha);       \
            }                                                                                    \
        }                                                                                        \
    } while (0)

static inline SC_SPECIALIZE void sc_conv_q8_pw(const float *in, float *out, const int8_t *qw, const float *scale,
                                               const float *bias, const sc_conv_params *p, float *col)
{
    const int32_t plane = p->hin * p->win;
    int32_t q, oc, ci;
    for (q = 0; q < plane; q += SC_WQ_PW_BLOCK) {
        const int32_t n = plane - q < SC_WQ_PW_BLOCK ? plane - q : SC_WQ_PW_BLOCK;
        sc_conv_wq_gather(in, col, q, n, p);
        for (oc = 0; oc < p->cout; oc += 2) {
            const int32_t oc1 = oc + 1 < p->cout ? oc + 1 : oc; /* an odd last channel is computed twice */
            const int8_t *w0 = qw + oc * p->cin, *w1 = qw + oc1 * p->cin;
            SC_WQ_PW_ACC;
            for (ci = 0; ci < p->cin; ++ci) SC_WQ_PW_STEP((float)*w0++, (float)*w1++);
            SC_WQ_PW_STORE(scale[oc], scale[oc1]);
        }
    }
}

static inline SC_SPECIALIZE void sc_conv_cb_pw(const float *in, float *out, const uint8_t *idx, const float *cb,
                                               int32_t bits, const float *bias, const sc_conv_params *p, float *col)
{
    const int32_t plane = p->hin * p->win;
    int32_t q, oc, ci;
    for (q = 0; q < plane; q += SC_WQ_PW_BLOCK) {
        const int32_t n = plane - q < SC_WQ_PW_BLOCK ? plane - q : SC_WQ_PW_BLOCK;
        sc_conv_wq_gather(in, col, q, n, p);
        for (oc = 0; oc < p->cout; oc += 2) {
            const int32_t oc1 = oc + 1 < p->cout ? oc + 1 : oc; /* an odd last channel is computed twice */
            SC_WQ_PW_ACC;
            sc_bitreader r0, r1;
            sc_bits_at(&r0, idx, (uint32_t)(oc * p->cin * bits));
            sc_bits_at(&r1, idx, (uint32_t)(oc1 * p->cin * bits));
            for (ci = 0; ci < p->cin; ++ci) SC_WQ_PW_STEP(cb[sc_bits_get(&r0, bits)], cb[sc_bits_get(&r1, bits)]);
            SC_WQ_PW_STORE(1.0f, 1.0f);
        }
    }
}

/* ==== int8 ==================================================================================== */

/* ---- int8 (integer=True) convolution (also Conv1d with H == 1; depthwise with groups == cin)
 * Output-stationary: acc = bias[oc] + sum over in-bounds taps of q * (x - in_zp); padded taps are
 * real zeros (x == in_zp) and contribute nothing. */

typedef struct {
    int32_t cin, hin, win, cout, hout, wout;
    int32_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int32_t in_zp, out_zp, act_min, act_max;
} sc_i8_conv_params;

/* acc += q * (x - in_zp) for the tap at flat row position j = (ci * kh + ky) * kw + kx. */
static inline int32_t sc_i8_conv_tap(const int8_t *in_g, int32_t j, int32_t qv, int32_t iy0, int32_t ix0,
                                     const sc_i8_conv_params *p)
{
    const int32_t khw = p->kh * p->kw;
    const int32_t ci = j / khw, rr = j - ci * khw;
    const int32_t ky = rr / p->kw, kx = rr - ky * p->kw;
    const int32_t iy = iy0 + ky * p->dh, ix = ix0 + kx * p->dw;
    if (iy < 0 || iy >= p->hin || ix < 0 || ix >= p->win) return 0;
    return qv * ((int32_t)in_g[(ci * p->hin + iy) * p->win + ix] - p->in_zp);
}

/* SC_I8_CONV_BEGIN { acc += ... } SC_I8_CONV_END: the output-stationary loop around one output
 * position's accumulation (oc, in_g, iy0, ix0, acc and row_len are in scope inside). */
#define SC_I8_CONV_BEGIN                                                                          \
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;                     \
    const int32_t row_len = cin_g * p->kh * p->kw;                                               \
    int32_t oc, oy, ox;                                                                          \
    (void)row_len;                                                                               \
    for (oc = 0; oc < p->cout; ++oc) {                                                           \
        const int8_t *in_g = in + (oc / cout_g) * cin_g * p->hin * p->win;                      \
        for (oy = 0; oy < p->hout; ++oy) {                                                       \
            const int32_t iy0 = oy * p->sh - p->ph;                                              \
            for (ox = 0; ox < p->wout; ++ox) {                                                   \
                const int32_t ix0 = ox * p->sw - p->pw;                                          \
                int32_t acc = bias ? bias[oc] : 0;

#define SC_I8_CONV_END                                                                            \
                *out++ = sc_i8_requant(acc, mult[oc], shift[oc], p->out_zp, p->act_min,          \
                                       p->act_max);                                              \
            }                                                                                    \
        }                                                                                        \
    }

/* [lo, hi) of the kernel taps k with 0 <= base + k * d < n. */
static inline void sc_i8_tap_range(int32_t base, int32_t d, int32_t n, int32_t k, int32_t *lo, int32_t *hi)
{
    *lo = base >= 0 ? 0 : (-base + d - 1) / d;
    *hi = n - 1 - base < 0 ? 0 : (n - 1 - base) / d + 1;
    if (*hi > k) *hi = k;
}

/* Depthwise (groups == cin == cout): per channel the accumulator of a window fully inside the input
 * starts at bias - in_zp * sum(q) and adds q * x over the taps with walking pointers (no clipping, no
 * division); border windows clip their tap ranges once per output row (ky) and position (kx). */
static inline void sc_i8_conv_q8_dw(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                    const int32_t *mult, const int8_t *shift, const sc_i8_conv_params *p)
{
    const int32_t kh = p->kh, kw = p->kw, dh = p->dh, dw = p->dw, hin = p->hin, win = p->win;
    const int32_t khw = kh * kw, zp = p->in_zp, row_skip = dh * win - kw * dw;
    int32_t c, oy, ox, ky, kx, j;
    for (c = 0; c < p->cout; ++c) {
        const int8_t *const in_c = in + c * hin * win, *const wc = q + c * khw;
        const int32_t b = bias ? bias[c] : 0, m = mult[c], sh = shift[c];
        int32_t qsum = 0, b_in;
        for (j = 0; j < khw; ++j) qsum += wc[j];
        b_in = b - zp * qsum;
        for (oy = 0; oy < p->hout; ++oy) {
            const int32_t iy0 = oy * p->sh - p->ph;
            int32_t ky0, ky1;
            sc_i8_tap_range(iy0, dh, hin, kh, &ky0, &ky1);
            for (ox = 0; ox < p->wout; ++ox) {
                const int32_t ix0 = ox * p->sw - p->pw;
                int32_t acc;
                if (ky0 == 0 && ky1 == kh && ix0 >= 0 && ix0 + (kw - 1) * dw < win) {
                    const int8_t *w = wc;
                    int32_t xo = iy0 * win + ix0;
                    acc = b_in;
                    if (kw == 3) { /* the common 3-wide kernel: one row per iteration */
                        for (ky = 0; ky < kh; ++ky, w += 3, xo += dh * win)
                            acc += (int32_t)w[0] * in_c[xo] + (int32_t)w[1] * in_c[xo + dw] + (int32_t)w[2] * in_c[xo + 2 * dw];
                    } else {
                        for (ky = 0; ky < kh; ++ky, xo += row_skip)
                            for (kx = 0; kx < kw; ++kx, xo += dw) acc += (int32_t)*w++ * (int32_t)in_c[xo];
                    }
                } else {
                    int32_t kx0, kx1;
                    sc_i8_tap_range(ix0, dw, win, kw, &kx0, &kx1);
                    acc = b;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int32_t r = (iy0 + ky * dh) * win + ix0; /* + kx * dw >= 0 for kx >= kx0 */
                        for (kx = kx0; kx < kx1; ++kx)
                            acc += (int32_t)wc[ky * kw + kx] * ((int32_t)in_c[r + kx * dw] - zp);
                    }
                }
                *out++ = sc_i8_requant(acc, m, sh, p->out_zp, p->act_min, p->act_max);
            }
        }
    }
}

/* ---- depthwise on an in_zp-padded plane (groups == cin == cout, dense int8 weights) -------------
 * Per channel the input plane is copied into `pad` (int8 on the caller's stack, sized at generation
 * time: SC_I8_DW_PAD_BYTES(p)) whose border holds in_zp, so every window is interior: the accumulator
 * starts at bias - in_zp * sum(q) and adds q * x over all taps (padded taps add q * in_zp, which the
 * start value cancels: exactly the reference's sum over in-bounds taps of q * (x - in_zp)). The plane
 * is the extent the outputs read (rows/columns past it are never copied); 3 slack bytes after it let
 * the 3x3 kernel load a 4-byte word at the last column. */
#define SC_I8_DW_PAD_H(p) (((p)->hout - 1) * (p)->sh + ((p)->kh - 1) * (p)->dh + 1)
#define SC_I8_DW_PAD_W(p) (((p)->wout - 1) * (p)->sw + ((p)->kw - 1) * (p)->dw + 1)
#define SC_I8_DW_PAD_BYTES(p) (SC_I8_DW_PAD_H(p) * SC_I8_DW_PAD_W(p) + 3)

#if SC_INT8_DSP
/* The 3x3 kernels' doubled weight pairs (w0, w2) per row (u0..u2), the middle column (w1, w4) / (w7) (v01, v2),
 * the requantization constant and the doubled start value; one output: a += row r of the window. */
#define SC_I8_W2(i) ((uint32_t)(uint16_t)(int16_t)(2 * wc[i]))
#define SC_I8_DW3_WEIGHTS                                                                         \
    const uint32_t u0 = SC_I8_W2(0) | SC_I8_W2(2) << 16, u1 = SC_I8_W2(3) | SC_I8_W2(5) << 16;     \
    const uint32_t u2 = SC_I8_W2(6) | SC_I8_W2(8) << 16, v01 = SC_I8_W2(1) | SC_I8_W2(4) << 16;    \
    const uint32_t v2 = SC_I8_W2(7);                                                              \
    const int32_t kz = SC_I8_MM_KZ(e, zp), a0 = 2 * b_in
#define SC_I8_DW3_ONE(r, u, MLA_A, v)                                                             \
    do {                                                                                          \
        const uint32_t xw = sc_ld32(r);                                                           \
        a = sc_smlad(u, sc_sxtb16(xw), a);                                                        \
        a = MLA_A(v, sc_sxtb16_ror8(xw), a);                                                      \
    } while (0)
#endif

/* 3x3, stride 1, dilation 1: the channel's 9 weights in registers, 2 outputs per pass.
 * With SMLAD (SC_INT8_DSP) the weights are doubled in their halfword pairs, so the accumulator is 2 * acc
 * and the requantization is sc_i8_requant_mm (kz, e: SC_I8_MM_KZ; the caller checks its bounds). Per
 * kernel row one 4-byte load x0..x3, SXTB16 -> (x0, x2), SXTB16 ROR 8 -> (x1, x3); weights (w0, w2) of each
 * row and (w1, w4) / (w7) as halfwords: out0 += w0 x0 + w2 x2 (SMLAD) + w1 x1 (SMLABB), out1 += w0 x1 + w2 x3
 * + w1 x2 (SMLABT; rows 1 uses the top halves, SMLATB / SMLATT): 7 instructions for 6 MACs, then per output
 * SMMLAR, ASR, SSAT and the store (a SUB when the lower bound is below the zero point). Without DSP the same
 * 2 outputs share 4 byte loads per kernel row and sc_i8_requant_hk (e >= 2) requantizes. */
static inline SC_SPECIALIZE void sc_i8_dw3_plane(const int8_t *pc, int8_t *o, const int8_t *wc, int32_t b_in,
                                                 int32_t m, int32_t e, const sc_i8_conv_params *p)
{
    const int32_t wp = p->wout + 2, hout = p->hout, wout = p->wout, zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    int32_t oy, ox;
#if SC_INT8_DSP
    SC_I8_DW3_WEIGHTS;
#define SC_I8_DW3_ROW(r, u, MLA_A, MLA_B, v)                                                      \
    do {                                                                                          \
        const uint32_t xw = sc_ld32(r), xl = sc_sxtb16(xw), xh = sc_sxtb16_ror8(xw);                 \
        a = sc_smlad(u, xl, a);                                                                   \
        a = MLA_A(v, xh, a);                                                                      \
        b = sc_smlad(u, xh, b);                                                                   \
        b = MLA_B(v, xl, b);                                                                      \
    } while (0)
#define SC_I8_DW3_PAIR(r)                                                                         \
    SC_I8_DW3_ROW(r, u0, sc_smlabb, sc_smlabt, v01);                                              \
    SC_I8_DW3_ROW((r) + wp, u1, sc_smlatb, sc_smlatt, v01);                                       \
    SC_I8_DW3_ROW((r) + 2 * wp, u2, sc_smlabb, sc_smlabt, v2)
#define SC_I8_DW3_OUT(acc) sc_i8_requant_mm(acc, m, kz, e, zp, lo, hi)
#else
    const int32_t w0 = wc[0], w1 = wc[1], w2 = wc[2], w3 = wc[3], w4 = wc[4], w5 = wc[5];
    const int32_t w6 = wc[6], w7 = wc[7], w8 = wc[8], a0 = b_in;
    const uint32_t half = ((uint32_t)1) << (e - 2);
#define SC_I8_DW3_ROW(r, wa, wb, wc_)                                                             \
    do {                                                                                          \
        const int32_t x0 = (r)[0], x1 = (r)[1], x2 = (r)[2], x3 = (r)[3];                         \
        a += wa * x0 + wb * x1 + wc_ * x2;                                                        \
        b += wa * x1 + wb * x2 + wc_ * x3;                                                        \
    } while (0)
#define SC_I8_DW3_PAIR(r)                                                                         \
    SC_I8_DW3_ROW(r, w0, w1, w2);                                                                 \
    SC_I8_DW3_ROW((r) + wp, w3, w4, w5);                                                          \
    SC_I8_DW3_ROW((r) + 2 * wp, w6, w7, w8)
#define SC_I8_DW3_OUT(acc) sc_i8_requant_hk(acc, m, half, e - 1, zp, lo, hi)
#endif
    for (oy = 0; oy < hout; ++oy, o += wout) {
#if SC_I8_FAST_REQ
        const int8_t *r = pc + oy * wp;
        for (ox = 0; ox + 2 <= wout; ox += 2, r += 2) {
#else /* -Os: no tail code; the pair of an odd last output reads the row's slack bytes (the next row or the
       * plane's 3 slack bytes) for a second output that is not stored; one copy of the requantization */
        for (ox = 0; ox < wout;) {
            const int8_t *r = pc + oy * wp + ox;
            int32_t k;
#endif
            int32_t a = a0, b = a0;
            SC_I8_DW3_PAIR(r);
#if SC_I8_FAST_REQ
            o[ox] = SC_I8_DW3_OUT(a);
            o[ox + 1] = SC_I8_DW3_OUT(b);
        }
        if (ox < wout) { /* odd width: the last output alone */
            int32_t a = a0;
#if SC_INT8_DSP
            SC_I8_DW3_ONE(r, u0, sc_smlabb, v01);
            SC_I8_DW3_ONE(r + wp, u1, sc_smlatb, v01);
            SC_I8_DW3_ONE(r + 2 * wp, u2, sc_smlabb, v2);
#else
            a += w0 * r[0] + w1 * r[1] + w2 * r[2] + w3 * r[wp] + w4 * r[wp + 1] + w5 * r[wp + 2] + w6 * r[2 * wp] +
                 w7 * r[2 * wp + 1] + w8 * r[2 * wp + 2];
#endif
            o[ox] = SC_I8_DW3_OUT(a);
        }
#else
            for (k = 0; k < 2 && ox < wout; ++k, ++ox, a = b) o[ox] = SC_I8_DW3_OUT(a);
        }
#endif
    }
#undef SC_I8_DW3_ROW
#undef SC_I8_DW3_PAIR
#undef SC_I8_DW3_OUT
}

#if SC_INT8_DSP && SC_I8_FAST_REQ
/* 3x3, stride 2, dilation 1 (SMLAD build, not at -Os): one output per pass, per kernel row one 4-byte load
 * x0..x3 at column 2 ox (x3 unused; at the last column it is the next row's or the plane's slack byte),
 * SMLAD (w0, w2).(x0, x2) and SMLABB / SMLATB w1 x1 from the stride-1 kernel's registers: 5 instructions for
 * 3 MACs, then sc_i8_requant_mm (the caller checks sc_i8_mm_ok). */
static inline SC_SPECIALIZE void sc_i8_dw3s2_plane(const int8_t *pc, int8_t *o, const int8_t *wc, int32_t b_in,
                                                   int32_t m, int32_t e, const sc_i8_conv_params *p)
{
    const int32_t wp = SC_I8_DW_PAD_W(p), hout = p->hout, wout = p->wout, zp = p->out_zp, lo = p->act_min;
    const int32_t hi = p->act_max;
    int32_t oy, ox;
    SC_I8_DW3_WEIGHTS;
    for (oy = 0; oy < hout; ++oy) {
        const int8_t *r = pc + 2 * oy * wp;
        for (ox = 0; ox < wout; ++ox, r += 2) {
            int32_t a = a0;
            SC_I8_DW3_ONE(r, u0, sc_smlabb, v01);
            SC_I8_DW3_ONE(r + wp, u1, sc_smlatb, v01);
            SC_I8_DW3_ONE(r + 2 * wp, u2, sc_smlabb, v2);
            *o++ = sc_i8_requant_mm(a, m, kz, e, zp, lo, hi);
        }
    }
}
#endif

/* The 3x3 kernel's requantization holds for the channel: with DSP sc_i8_requant_mm on 2 * acc
 * (sc_i8_mm_ok), without it sc_i8_requant_hk (shift <= -2). Other channels take the generic loop. */
#if SC_INT8_DSP
#define SC_I8_DW3_OK(b_in, shift) sc_i8_mm_ok(b_in, shift, 9)
#else
#define SC_I8_DW3_OK(b_in, shift) ((shift) <= -2)
#endif

static inline SC_SPECIALIZE void sc_i8_conv_q8_dwp(const int8_t *in, int8_t *out, const int8_t *q,
                                                   const int32_t *bias, const int32_t *mult, const int8_t *shift,
                                                   int8_t *pad, const sc_i8_conv_params *p)
{
    const int32_t kh = p->kh, kw = p->kw, dh = p->dh, dw = p->dw, sh = p->sh, sw = p->sw, khw = kh * kw;
    const int32_t hp = SC_I8_DW_PAD_H(p), wp = SC_I8_DW_PAD_W(p), hout = p->hout, wout = p->wout;
    const int32_t rows = p->hin < hp - p->ph ? p->hin : hp - p->ph;
    const int32_t cols = p->win < wp - p->pw ? p->win : wp - p->pw;
    const int32_t zp = p->in_zp;
    int32_t c, y, oy, ox, ky, kx, j;
    memset(pad, (unsigned char)zp, (size_t)SC_I8_DW_PAD_BYTES(p));
    for (c = 0; c < p->cout; ++c) {
        const int8_t *const wc = q + c * khw;
        int8_t *o = out + c * hout * wout;
        int32_t qsum = 0, b_in;
        for (j = 0; j < khw; ++j) qsum += wc[j];
        b_in = (bias ? bias[c] : 0) - zp * qsum;
        for (y = 0; y < rows; ++y) memcpy(pad + (y + p->ph) * wp + p->pw, in + (c * p->hin + y) * p->win, (size_t)cols);
        if (kh == 3 && kw == 3 && sh == 1 && sw == 1 && dh == 1 && dw == 1 && SC_I8_DW3_OK(b_in, shift[c])) {
            sc_i8_dw3_plane(pad, o, wc, b_in, mult[c], -shift[c], p);
            continue;
        }
#if SC_INT8_DSP && SC_I8_FAST_REQ
        if (kh == 3 && kw == 3 && sh == 2 && sw == 2 && dh == 1 && dw == 1 && sc_i8_mm_ok(b_in, shift[c], 9)) {
            sc_i8_dw3s2_plane(pad, o, wc, b_in, mult[c], -shift[c], p);
            continue;
        }
#endif
        for (oy = 0; oy < hout; ++oy) {
            for (ox = 0; ox < wout; ++ox) {
                const int8_t *r = pad + oy * sh * wp + ox * sw, *w = wc;
                int32_t acc = b_in;
                for (ky = 0; ky < kh; ++ky, r += dh * wp)
                    for (kx = 0; kx < kw; ++kx) acc += (int32_t)*w++ * (int32_t)r[kx * dw];
                *o++ = sc_i8_requant(acc, mult[c], shift[c], p->out_zp, p->act_min, p->act_max);
            }
        }
    }
}

static inline void sc_i8_conv_q8(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                 const int32_t *mult, const int8_t *shift, const sc_i8_conv_params *p)
{
    if (p->groups == p->cin && p->cout == p->cin) {
        sc_i8_conv_q8_dw(in, out, q, bias, mult, shift, p);
        return;
    }
    {
    SC_I8_CONV_BEGIN
    {
        const int8_t *wr = q + oc * row_len;
        int32_t ci, ky, kx, ky0, ky1, kx0, kx1;
        sc_i8_tap_range(iy0, p->dh, p->hin, p->kh, &ky0, &ky1);
        sc_i8_tap_range(ix0, p->dw, p->win, p->kw, &kx0, &kx1);
        for (ci = 0; ci < cin_g; ++ci) {
            const int8_t *in_c = in_g + ci * p->hin * p->win;
            const int8_t *wc = wr + ci * p->kh * p->kw;
            for (ky = ky0; ky < ky1; ++ky) {
                const int32_t r = (iy0 + ky * p->dh) * p->win + ix0; /* + kx * dw >= 0 for kx >= kx0 */
                const int8_t *wrow = wc + ky * p->kw;
                for (kx = kx0; kx < kx1; ++kx) acc += (int32_t)wrow[kx] * ((int32_t)in_c[r + kx * p->dw] - p->in_zp);
            }
        }
    }
    SC_I8_CONV_END
    }
}

/* The 2 x 2 inner loop of the pair kernels (pointwise and im2col conv): while x < xend, per 4 taps the
 * column words (A0, A2), (A1, A3), (B0, B2), (B1, B3) of positions A and B times the weight words at wa
 * (channel a) and wa + db (channel b), both SXTB16-split: a00/a01 += row a . A/B, a10/a11 += row b . A/B.
 * x and wa advance past the taps. On the M4 (gcc) a hand-scheduled loop: 2 LDRD, 2 LDR, 4 SXTB16, 8 SMLAD
 * and the compare/branch, 18 instructions for 16 MACs (gcc's own schedule of the C loop takes 20); only when
 * optimizing (-O0 cannot give the block its registers: "impossible constraints"). */
#if SC_INT8_DSP && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__GNUC__) && defined(__OPTIMIZE__) && !defined(SC_NO_ASM)
#define SC_I8_MAC2X2(x, xend, wa, db, a00, a01, a10, a11)                                         \
    do {                                                                                          \
        if ((x) < (xend)) {                                                                       \
            uint32_t x0_, x1_, x2_, x3_, t_, u_;                                                  \
            __asm__ volatile("1:\n\t"                                                              \
                             "ldrd %[x0], %[x1], [%[x]], #16\n\t"                                \
                             "ldrd %[x2], %[x3], [%[x], #-8]\n\t"                                \
                             "ldr %[u], [%[wa]], #4\n\t"                                          \
                             "sxtb16 %[t], %[u]\n\t"                                              \
                             "sxtb16 %[u], %[u], ror #8\n\t"                                      \
                             "smlad %[a00], %[t], %[x0], %[a00]\n\t"                              \
                             "smlad %[a00], %[u], %[x1], %[a00]\n\t"                              \
                             "smlad %[a01], %[t], %[x2], %[a01]\n\t"                              \
                             "smlad %[a01], %[u], %[x3], %[a01]\n\t"                              \
                             "ldr %[u], [%[wa], %[db]]\n\t"                                       \
                             "sxtb16 %[t], %[u]\n\t"                                              \
                             "sxtb16 %[u], %[u], ror #8\n\t"                                      \
                             "smlad %[a10], %[t], %[x0], %[a10]\n\t"                              \
                             "smlad %[a10], %[u], %[x1], %[a10]\n\t"                              \
                             "smlad %[a11], %[t], %[x2], %[a11]\n\t"                              \
                             "smlad %[a11], %[u], %[x3], %[a11]\n\t"                              \
                             "cmp %[x], %[xend]\n\t"                                              \
                             "bne 1b\n\t"                                                         \
                             : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11),  \
                               [x] "+r"(x), [wa] "+r"(wa), [x0] "=&r"(x0_), [x1] "=&r"(x1_),       \
                               [x2] "=&r"(x2_), [x3] "=&r"(x3_), [t] "=&r"(t_), [u] "=&r"(u_)      \
                             : [xend] "r"(xend), [db] "r"((db) - 4)                               \
                             : "cc", "memory");                                                   \
        }                                                                                         \
    } while (0)
#else
#define SC_I8_MAC2X2(x, xend, wa, db, a00, a01, a10, a11)                                         \
    do {                                                                                          \
        while ((x) < (xend)) {                                                                    \
            const uint32_t xa0 = (x)[0], xa1 = (x)[1], xb0 = (x)[2], xb1 = (x)[3];                \
            uint32_t v_ = sc_ld32(wa), wl_ = sc_sxtb16(v_), wh_ = sc_sxtb16_ror8(v_);             \
            a00 = sc_smlad(wl_, xa0, a00);                                                        \
            a00 = sc_smlad(wh_, xa1, a00);                                                        \
            a01 = sc_smlad(wl_, xb0, a01);                                                        \
            a01 = sc_smlad(wh_, xb1, a01);                                                        \
            v_ = sc_ld32((wa) + (db));                                                            \
            wl_ = sc_sxtb16(v_);                                                                  \
            wh_ = sc_sxtb16_ror8(v_);                                                             \
            a10 = sc_smlad(wl_, xa0, a10);                                                        \
            a10 = sc_smlad(wh_, xa1, a10);                                                        \
            a11 = sc_smlad(wl_, xb0, a11);                                                        \
            a11 = sc_smlad(wh_, xb1, a11);                                                        \
            (wa) += 4;                                                                            \
            (x) += 4;                                                                             \
        }                                                                                         \
    } while (0)
#endif

#if SC_INT8_DSP
/* Scratch of the SMLAD conv (sc_i8_conv_q8_dsp), declared by the op template with sizes known at
 * generation time: acc0[cout] int32 (bias - in_zp * sum of the channel's weights) and the column of 2
 * output positions A and B, raw int8 inputs with padded taps = in_zp, interleaved per 4 taps
 * (A t0..t3, B t0..t3): row_len rounded up to 4, times 2 bytes, as uint32 words. */
#define SC_I8_COLB(j) ((j) + ((j) & ~3)) /* byte of tap j of position A (B: + 4) */

/* The window of one output position (its taps j at byte SC_I8_COLB(j) of `col`). The parameters are
 * copied to locals first: the byte stores may alias *p, which would reload them every tap. */
static inline SC_SPECIALIZE void sc_i8_im2col(const int8_t *in, unsigned char *col, int32_t iy0, int32_t ix0,
                                const sc_i8_conv_params *p)
{
    const unsigned char zp = (unsigned char)p->in_zp;
    const int32_t cin = p->cin, kh = p->kh, kw = p->kw, dh = p->dh, dw = p->dw, win = p->win;
    const int32_t plane = p->hin * win;
    int32_t ci, ky, j = 0, ky0, ky1, kx0, kx1;
    sc_i8_tap_range(iy0, dh, p->hin, kh, &ky0, &ky1);
    sc_i8_tap_range(ix0, dw, win, kw, &kx0, &kx1);
    if (kx0 > kw) kx0 = kw;
    if (kx1 < kx0) kx1 = kx0;
    for (ci = 0; ci < cin; ++ci) {
        const int8_t *in_c = in + ci * plane;
        for (ky = 0; ky < kh; ++ky) {
            const int32_t end = j + kw;
            if (ky < ky0 || ky >= ky1) {
                for (; j < end; ++j) col[SC_I8_COLB(j)] = zp;
            } else {
                const int8_t *src = in_c + (iy0 + ky * dh) * win + ix0 + kx0 * dw;
                const int32_t a = j + kx0, b = j + kx1;
                for (; j < a; ++j) col[SC_I8_COLB(j)] = zp;
                if (dw == 1)
                    for (; j < b; ++j) col[SC_I8_COLB(j)] = (unsigned char)*src++;
                else
                    for (; j < b; ++j, src += dw) col[SC_I8_COLB(j)] = (unsigned char)*src;
                for (; j < end; ++j) col[SC_I8_COLB(j)] = zp;
            }
        }
    }
}

/* Both windows of the pair at once when they are fully inside the input and B is A shifted by one
 * stride along x (the common case): one pointer walks the taps of A, B's are `sw` further. */
static inline SC_SPECIALIZE void sc_i8_im2col2_inner(const int8_t *src, unsigned char *col, const sc_i8_conv_params *p)
{
    const int32_t cin = p->cin, kh = p->kh, kw = p->kw, dw = p->dw, sw = p->sw;
    const int32_t row_step = p->dh * p->win, plane = p->hin * p->win;
    unsigned char *const colb = col + 4;
    int32_t ci, ky, j = 0;
    if (kh == 1 && kw == 1) { /* 1x1: one tap per input channel */
        for (ci = 0; ci < cin; ++ci) {
            const int32_t k = SC_I8_COLB(ci), o = ci * plane;
            col[k] = (unsigned char)src[o];
            colb[k] = (unsigned char)src[o + sw];
        }
        return;
    }
    for (ci = 0; ci < cin; ++ci) {
        int32_t r = ci * plane; /* offsets, not pointers: nothing points past the input */
        for (ky = 0; ky < kh; ++ky, r += row_step) {
            const int32_t end = j + kw;
            int32_t o = r;
            for (; j < end; ++j, o += dw) {
                const int32_t k = SC_I8_COLB(j);
                col[k] = (unsigned char)src[o];
                colb[k] = (unsigned char)src[o + sw];
            }
        }
    }
}

/* Dense conv, groups == 1, SMLAD pairs. Per output channel the accumulator starts at bias - in_zp *
 * sum(q) (acc0, computed once per call); the windows of 2 output positions are copied to the column
 * with padded taps = in_zp, so acc0 + sum q * x over all taps is exactly bias + sum q * (x - in_zp) over
 * the in-bounds taps. The column is then widened in place (from its end down) to sign-extended halfword
 * pairs matching the SXTB16 lanes of a weight word: per 4 taps (A0, A2), (A1, A3), (B0, B2), (B1, B3).
 * Then 2 output channels x 2 positions per pass: per 4 taps 2 weight loads, 4 column words, 4 SXTB16 and
 * 8 SMLAD for 16 MACs. An odd last channel or position is computed twice and written once. `scratch`
 * (arena, SC_I8_DSP_SCRATCH_WORDS) holds acc0[cout] then the column. */
#define SC_I8_DSP_SCRATCH_WORDS(cout, row_len) ((cout) + ((row_len) + 3) / 4 * 4)

static inline SC_SPECIALIZE void sc_i8_conv_q8_dsp(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                     const int32_t *mult, const int8_t *shift, uint32_t *scratch,
                                     const sc_i8_conv_params *p)
{
    const int32_t row_len = p->cin * p->kh * p->kw, n4 = row_len & ~3, groups = (row_len + 3) / 4;
    const int32_t npos = p->hout * p->wout, zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    int32_t *const acc0 = (int32_t *)scratch;
    uint32_t *const col = scratch + p->cout;
    unsigned char *const colb = (unsigned char *)col;
    int32_t pos, oc, j, g, mm;
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *w = q + oc * row_len;
        int32_t s = 0;
        for (j = 0; j < n4; j += 4) {
            const uint32_t v = sc_ld32(w + j);
            s = sc_smlad(sc_sxtb16(v), 0x00010001u, s);
            s = sc_smlad(sc_sxtb16_ror8(v), 0x00010001u, s);
        }
        for (; j < row_len; ++j) s += w[j];
        acc0[oc] = (bias ? bias[oc] : 0) - p->in_zp * s;
    }
    mm = SC_I8_FAST_REQ && sc_i8_mm_all(acc0, shift, p->cout, row_len);
    for (pos = 0; pos < npos; pos += 2) {
        const int32_t two = pos + 1 < npos;
        int32_t oy = pos / p->wout, ox = pos - oy * p->wout;
        const int32_t iy0 = oy * p->sh - p->ph, ix0 = ox * p->sw - p->pw;
        if (two && ox + 1 < p->wout && iy0 >= 0 && iy0 + (p->kh - 1) * p->dh < p->hin && ix0 >= 0 &&
            ix0 + p->sw + (p->kw - 1) * p->dw < p->win) {
            sc_i8_im2col2_inner(in + iy0 * p->win + ix0, colb, p);
        } else {
            int32_t k; /* one inlined copy of the window copy for both positions (code size) */
            for (k = 0; k < 8; k += 4) {
                sc_i8_im2col(in, colb + k, oy * p->sh - p->ph, ox * p->sw - p->pw, p);
                if (two && ++ox == p->wout) {
                    ox = 0;
                    ++oy;
                }
            }
        }
        if (row_len & 3) { /* the taps past row_len in the last group are never used: defined values */
            for (j = row_len; j < 4 * groups; ++j) colb[SC_I8_COLB(j)] = colb[SC_I8_COLB(j) + 4] = 0;
        }
        for (g = groups - 1; g >= 0; --g) { /* bytes 8g..8g+7 -> words 4g..4g+3 (from the end down) */
            const uint32_t a = col[2 * g], b = col[2 * g + 1];
            col[4 * g] = sc_sxtb16(a);
            col[4 * g + 1] = sc_sxtb16_ror8(a);
            col[4 * g + 2] = sc_sxtb16(b);
            col[4 * g + 3] = sc_sxtb16_ror8(b);
        }
        for (oc = 0; oc < p->cout; oc += 2) {
            const int32_t ob = oc + 1 < p->cout ? oc + 1 : oc;
            const int32_t db = (ob - oc) * row_len;
            const int8_t *wa = q + oc * row_len;
            const uint32_t *x = col;
            /* a short last group runs as a whole one where the weight bytes past row ob's end still lie in the
             * array (rows after ob): the column's taps past row_len are 0, so those bytes add nothing */
            const int32_t whole = (p->cout - 1 - ob) * row_len >= 3;
            const uint32_t *const xend = col + (whole ? 4 * groups : n4);
            int32_t a00 = acc0[oc], a10 = acc0[ob], a01 = a00, a11 = a10;
            int8_t *const o0 = out + oc * npos + pos;
            SC_I8_MAC2X2(x, xend, wa, db, a00, a01, a10, a11);
            for (j = whole ? row_len : n4; j < row_len; ++j, ++wa) { /* tap t of the last group: word t & 1, half t >> 1 */
                const int32_t t = j - n4, qa = wa[0], qb = wa[db];
                const uint32_t wA = x[t & 1] >> (16 * (t >> 1)), wB = x[2 + (t & 1)] >> (16 * (t >> 1));
                const int32_t xa = (int32_t)((wA & 0xFFFFu) ^ 0x8000u) - 0x8000;
                const int32_t xb = (int32_t)((wB & 0xFFFFu) ^ 0x8000u) - 0x8000;
                a00 += qa * xa;
                a01 += qa * xb;
                a10 += qb * xa;
                a11 += qb * xb;
            }
            {
                const int32_t ma = mult[oc], mb = mult[ob], sa = shift[oc], sb = shift[ob];
                int8_t *const o1 = out + ob * npos + pos;
                if (SC_I8_FAST_REQ && mm) { /* the usual case: SMMLAR, ASR, SSAT per output */
                    const int32_t kza = SC_I8_MM_KZ(-sa, zp), kzb = SC_I8_MM_KZ(-sb, zp);
                    o0[0] = sc_i8_requant_mm(2 * a00, ma, kza, -sa, zp, lo, hi);
                    if (two) o0[1] = sc_i8_requant_mm(2 * a01, ma, kza, -sa, zp, lo, hi);
                    o1[0] = sc_i8_requant_mm(2 * a10, mb, kzb, -sb, zp, lo, hi);
                    if (two) o1[1] = sc_i8_requant_mm(2 * a11, mb, kzb, -sb, zp, lo, hi);
                } else if (SC_I8_FAST_REQ && sa <= -2 && sb <= -2) { /* one SMLAL per output */
                    const uint32_t ha = ((uint32_t)1) << (-sa - 2), hb = ((uint32_t)1) << (-sb - 2);
                    o0[0] = sc_i8_requant_hk(a00, ma, ha, -sa - 1, zp, lo, hi);
                    if (two) o0[1] = sc_i8_requant_hk(a01, ma, ha, -sa - 1, zp, lo, hi);
                    o1[0] = sc_i8_requant_hk(a10, mb, hb, -sb - 1, zp, lo, hi);
                    if (two) o1[1] = sc_i8_requant_hk(a11, mb, hb, -sb - 1, zp, lo, hi);
                } else {
                    o0[0] = sc_i8_requant(a00, ma, sa, zp, lo, hi);
                    if (two) o0[1] = sc_i8_requant(a01, ma, sa, zp, lo, hi);
                    o1[0] = sc_i8_requant(a10, mb, sb, zp, lo, hi);
                    if (two) o1[1] = sc_i8_requant(a11, mb, sb, zp, lo, hi);
                }
            }
        }
    }
}
#endif

/* ---- pointwise conv (1x1, stride 1, no padding, groups == 1, dense int8 weights) -----------------
 * Output y[oc][p] = requant(bias'[oc] + sum_ci q[oc][ci] * x[ci][p]) over the flat plane p < H*W (no
 * row structure: a 1x1 stride-1 output position reads the same input position). bias' holds
 * -in_zp * sum(q) (folded at generation time), so the raw int8 inputs are multiplied.
 *
 * SMLAD form: 2 positions (A, B) of all channels are gathered into `col` (arena scratch of
 * SC_I8_PW_COL_WORDS(cin) words) as sign-extended halfword pairs matching the SXTB16 lanes of a 4-byte
 * weight word w0..w3: per 4 channels (x0A, x2A), (x1A, x3A), (x0B, x2B), (x1B, x3B). The gather is 2
 * byte loads + ORR per channel and 4 SXTB16 per 4 channels. Then 2 output channels x 2 positions per pass:
 * per 4 channels 2 LDRD of the column, 2 weight loads, 4 SXTB16 and 8 SMLAD for 16 MACs. The
 * requantization of the 4 outputs has the layer's zero point and bounds hoisted out of the loops. An odd
 * plane ends with the pair (n - 2, n - 1) (position n - 2 is written twice with the same value). */
#define SC_I8_PW_COL_WORDS(cin) (((cin) + 3) / 4 * 4)

/* bytes xA, xB of one channel as a halfword (B = A for a single-position plane) */
#define SC_I8_PW_PAIR(src) ((uint32_t)(uint8_t)(src)[0] | (uint32_t)(uint8_t)(src)[pb - pa] << 8)

static inline SC_SPECIALIZE void sc_i8_conv_q8_pw(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                    const int32_t *mult, const int8_t *shift, uint32_t *col,
                                    const sc_i8_conv_params *p)
{
    const int32_t cin = p->cin, cout = p->cout, n = p->hin * p->win;
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    int32_t pos, oc, ci;
#if SC_INT8_DSP
    const int32_t c4 = cin & ~3;
    const int32_t last = n >= 2 ? n - 2 : 0;
    const int mm = SC_I8_FAST_REQ && sc_i8_mm_all(bias, shift, cout, cin); /* sc_i8_requant_mm for every channel */
    for (pos = 0; pos < n; pos += 2) {
        const int32_t pa = pos < last ? pos : last, pb = n >= 2 ? pa + 1 : pa;
        uint32_t *c = col;
        const int8_t *s = in + pa;
        for (ci = 0; ci < c4; ci += 4, s += 4 * n, c += 4) { /* bytes x0A x0B x2A x2B and x1A x1B x3A x3B */
            const uint32_t t0 = SC_I8_PW_PAIR(s) | SC_I8_PW_PAIR(s + 2 * n) << 16;
            const uint32_t t1 = SC_I8_PW_PAIR(s + n) | SC_I8_PW_PAIR(s + 3 * n) << 16;
            c[0] = sc_sxtb16(t0);
            c[1] = sc_sxtb16(t1);
            c[2] = sc_sxtb16_ror8(t0);
            c[3] = sc_sxtb16_ror8(t1);
        }
        for (; ci < cin; ++ci, s += n, ++c) /* the last cin % 4 channels: (xA, xB) */
            *c = (uint32_t)(uint16_t)(int16_t)s[0] | ((uint32_t)(uint16_t)(int16_t)s[pb - pa] << 16);
        for (oc = 0; oc < cout; oc += 2) {
            const int32_t ob = oc + 1 < cout ? oc + 1 : oc;
            const int32_t db = (ob - oc) * cin; /* row ob is db bytes after row oc (an immediate offset) */
            const int8_t *wa = q + oc * cin;
            const uint32_t *x = col;
            const uint32_t *const xend = col + c4;
            int32_t a00 = bias ? bias[oc] : 0, a10 = bias ? bias[ob] : 0, a01 = a00, a11 = a10;
            const int32_t ma = mult[oc], mb = mult[ob], sa = shift[oc], sb = shift[ob];
            SC_I8_MAC2X2(x, xend, wa, db, a00, a01, a10, a11);
            for (ci = c4; ci < cin; ++ci, ++x, ++wa) {
                const int32_t xa = (int32_t)((*x & 0xFFFFu) ^ 0x8000u) - 0x8000, xb = (int32_t)((*x >> 16) ^ 0x8000u) - 0x8000;
                const int32_t qa = wa[0], qb = wa[db];
                a00 += qa * xa;
                a01 += qa * xb;
                a10 += qb * xa;
                a11 += qb * xb;
            }
            {
                int8_t *const o0 = out + oc * n + pa, *const o1 = o0 + (ob - oc) * n;
                const int32_t d = pb - pa;
                if (SC_I8_FAST_REQ && mm) { /* the usual case: SMMLAR, ASR, SSAT per output */
                    const int32_t kza = SC_I8_MM_KZ(-sa, zp), kzb = SC_I8_MM_KZ(-sb, zp);
                    o0[0] = sc_i8_requant_mm(2 * a00, ma, kza, -sa, zp, lo, hi);
                    o0[d] = sc_i8_requant_mm(2 * a01, ma, kza, -sa, zp, lo, hi);
                    o1[0] = sc_i8_requant_mm(2 * a10, mb, kzb, -sb, zp, lo, hi);
                    o1[d] = sc_i8_requant_mm(2 * a11, mb, kzb, -sb, zp, lo, hi);
                } else if (SC_I8_FAST_REQ && sa <= -2 && sb <= -2) { /* one SMLAL per output */
                    const uint32_t ha = ((uint32_t)1) << (-sa - 2), hb = ((uint32_t)1) << (-sb - 2);
                    o0[0] = sc_i8_requant_hk(a00, ma, ha, -sa - 1, zp, lo, hi);
                    o0[d] = sc_i8_requant_hk(a01, ma, ha, -sa - 1, zp, lo, hi);
                    o1[0] = sc_i8_requant_hk(a10, mb, hb, -sb - 1, zp, lo, hi);
                    o1[d] = sc_i8_requant_hk(a11, mb, hb, -sb - 1, zp, lo, hi);
                } else {
                    o0[0] = sc_i8_requant(a00, ma, sa, zp, lo, hi);
                    o0[d] = sc_i8_requant(a01, ma, sa, zp, lo, hi);
                    o1[0] = sc_i8_requant(a10, mb, sb, zp, lo, hi);
                    o1[d] = sc_i8_requant(a11, mb, sb, zp, lo, hi);
                }
            }
        }
    }
#else
    (void)col;
    for (oc = 0; oc < cout; ++oc) {
        const int8_t *const w = q + oc * cin;
        const int32_t b = bias ? bias[oc] : 0, m = mult[oc], sh = shift[oc];
        for (pos = 0; pos < n; pos += 2) {
            const int32_t two = pos + 1 < n;
            const int8_t *s = in + pos;
            int32_t a = b, c = b;
            for (ci = 0; ci < cin; ++ci, s += n) {
                const int32_t qv = w[ci];
                a += qv * s[0];
                if (two) c += qv * s[1];
            }
            out[oc * n + pos] = sc_i8_requant(a, m, sh, zp, lo, hi);
            if (two) out[oc * n + pos + 1] = sc_i8_requant(c, m, sh, zp, lo, hi);
        }
    }
#endif
}

/* ---- single-input-channel conv, 5 taps wide, stride 1, dilation 1 (first layers, e.g. LeNet's conv1) --
 * The input plane is copied into `pad` (arena scratch of SC_I8_C1_PAD_BYTES(p) int8) with in_zp borders and
 * rows of SC_I8_C1_WP(p) = wout rounded up to 4, + 4 bytes, so every window is interior and a quad of
 * outputs reads 8 bytes per kernel row. The bias holds -in_zp * sum(q) (folded at generation time), so the
 * padded taps (= in_zp) cancel exactly. Per output channel, 4 outputs per pass; with SMLAD per kernel row 3
 * word loads (x0..x3, x2..x5, x4..x7), 6 SXTB16 and 12 SMLAD(X) for 20 MACs against the weight pairs
 * (w0, w2), (w1, w3), (w4, 0) unpacked from the int8 row (one word load, 2 SXTB16, one byte load). The
 * requantization constants of the channel are hoisted out of its plane; a last partial quad stores only
 * its valid outputs. */
#define SC_I8_C1_WP(p) (((p)->wout + 3) / 4 * 4 + 4)
#define SC_I8_C1_PAD_BYTES(p) (((p)->hout + (p)->kh - 1) * SC_I8_C1_WP(p))

static inline SC_SPECIALIZE void sc_i8_conv_q8_c1k5(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                      const int32_t *mult, const int8_t *shift, int8_t *pad,
                                      const sc_i8_conv_params *p)
{
    const int32_t kh = p->kh, hout = p->hout, wout = p->wout, wp = SC_I8_C1_WP(p), hp = hout + kh - 1;
    const int32_t rows = p->hin < hp - p->ph ? p->hin : hp - p->ph;
    const int32_t cols = p->win < wp - p->pw ? p->win : wp - p->pw;
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    int32_t oc, y, oy, ox, ky;
    memset(pad, (unsigned char)p->in_zp, (size_t)SC_I8_C1_PAD_BYTES(p));
    for (y = 0; y < rows; ++y) memcpy(pad + (y + p->ph) * wp + p->pw, in + y * p->win, (size_t)cols);
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *const wc = q + oc * kh * 5;
        const int32_t b = bias ? bias[oc] : 0, m = mult[oc], sh = shift[oc];
        const int32_t fast = sh <= -2, k = -sh - 1;
        const uint32_t half = fast ? ((uint32_t)1) << (-sh - 2) : 0u;
        int8_t *o = out + oc * hout * wout;
        for (oy = 0; oy < hout; ++oy, o += wout) {
            const int8_t *const prow = pad + oy * wp;
            for (ox = 0; ox < wout; ox += 4) {
                const int8_t *r = prow + ox, *w = wc;
                int32_t a0 = b, a1 = b, a2 = b, a3 = b, n, i;
                for (ky = 0; ky < kh; ++ky, r += wp, w += 5) {
#if SC_INT8_DSP
                    const uint32_t wv = sc_ld32(w), u0 = sc_sxtb16(wv), u1 = sc_sxtb16_ror8(wv);
                    const uint32_t u2 = (uint16_t)(int16_t)w[4];
                    uint32_t v = sc_ld32(r), l = sc_sxtb16(v), h = sc_sxtb16_ror8(v); /* (x0, x2), (x1, x3) */
                    a0 = sc_smlad(u0, l, a0);
                    a0 = sc_smlad(u1, h, a0);
                    a1 = sc_smlad(u0, h, a1);
                    v = sc_ld32(r + 2); /* (x2, x4), (x3, x5) */
                    l = sc_sxtb16(v);
                    h = sc_sxtb16_ror8(v);
                    a1 = sc_smlad(u1, l, a1);
                    a2 = sc_smlad(u0, l, a2);
                    a2 = sc_smlad(u1, h, a2);
                    a3 = sc_smlad(u0, h, a3);
                    v = sc_ld32(r + 4); /* (x4, x6), (x5, x7) */
                    l = sc_sxtb16(v);
                    h = sc_sxtb16_ror8(v);
                    a0 = sc_smlad(u2, l, a0);
                    a1 = sc_smlad(u2, h, a1);
                    a2 = sc_smladx(u2, l, a2);
                    a3 = sc_smlad(u1, l, a3);
                    a3 = sc_smladx(u2, h, a3);
#else
                    for (i = 0; i < 5; ++i) {
                        const int32_t wk = w[i];
                        a0 += wk * r[i];
                        a1 += wk * r[i + 1];
                        a2 += wk * r[i + 2];
                        a3 += wk * r[i + 3];
                    }
#endif
                }
                n = wout - ox < 4 ? wout - ox : 4;
                (void)i;
                if (SC_I8_FAST_REQ && fast) {
                    o[ox] = sc_i8_requant_hk(a0, m, half, k, zp, lo, hi);
                    if (n > 1) o[ox + 1] = sc_i8_requant_hk(a1, m, half, k, zp, lo, hi);
                    if (n > 2) o[ox + 2] = sc_i8_requant_hk(a2, m, half, k, zp, lo, hi);
                    if (n > 3) o[ox + 3] = sc_i8_requant_hk(a3, m, half, k, zp, lo, hi);
                } else {
                    o[ox] = sc_i8_requant(a0, m, sh, zp, lo, hi);
                    if (n > 1) o[ox + 1] = sc_i8_requant(a1, m, sh, zp, lo, hi);
                    if (n > 2) o[ox + 2] = sc_i8_requant(a2, m, sh, zp, lo, hi);
                    if (n > 3) o[ox + 3] = sc_i8_requant(a3, m, sh, zp, lo, hi);
                }
            }
        }
    }
}

/* ---- 3-wide conv (kernel width 3, dilation 1 along x, groups == 1, dense int8 weights) ---------------
 * The first layers and the few-channel 3x3 convs (U-Nets, attention CNNs, stems) where the generic im2col
 * of sc_i8_conv_q8_dsp costs more than the MACs it feeds. Kernel rows r = ci * kh + ky (R of them) of 3 taps
 * each, in blocks of 4 rows r0..r3 and then R % 4 single rows; the weights are reordered at generation time
 * (codegen.ops.conv.k3_weight_order), per output channel and block the 12 bytes w0(r0) w0(r1) w2(r0) w2(r1) |
 * w0(r2) w0(r3) w2(r2) w2(r3) | w1(r0) w1(r2) w1(r1) w1(r3), per single row w0 w1 w2 0, so the SXTB16 lanes
 * of each weight word meet these column words of a window (v(r): its 4 bytes x0..x3 of row r): SXTB16 v(r) =
 * (x0, x2); in a block the middle taps x1 of two rows packed from SXTB16 ROR #8 (one PKHBT), in a single
 * row SXTB16 ROR #8 v(r) = (x1, x3) (x3 times the weight 0).
 * Per output row the band (arena) holds, for every kernel row, the input row it reads with in_zp borders
 * (rows are SC_I8_K3_WP bytes apart), so each window is interior; the bias holds -in_zp * sum(q) (folded at
 * generation time). Per pair of positions A, B of the output row: the column (A's and B's words interleaved
 * as SC_I8_MAC2X2 reads them; per block 8 word loads, 16 SXTB16 and 4 PKHBT), then 2 output channels x 2
 * positions per SC_I8_MAC2X2 pass. `scratch` (arena, SC_I8_K3_SCRATCH_WORDS) holds the column then the
 * band. An odd last position is paired with the one before it (written twice with the same value). */
#define SC_I8_K3_GROUPS(p) ((p)->cin * (p)->kh / 4 * 3 + (p)->cin * (p)->kh % 4) /* 4-tap groups of a row */
#define SC_I8_K3_WP(p) (((p)->wout - 1) * (p)->sw + 4)
#define SC_I8_K3_SCRATCH_WORDS(p) (4 * SC_I8_K3_GROUPS(p) + ((p)->cin * (p)->kh * SC_I8_K3_WP(p) + 3) / 4)

/* (lo(a), lo(b)): PKHBT */
static inline uint32_t sc_pkhbt(uint32_t a, uint32_t b) { return (a & 0xFFFFu) | (b << 16); }

/* the 4 outputs of a 2 x 2 block (channels a, b at o0, o1; positions at +0, +d): sc_i8_requant_mm on 2 * acc
 * when `mm` (every channel passes sc_i8_mm_ok), one SMLAL each when both shifts are <= -2, else generic */
static inline void sc_i8_out2x2(int8_t *o0, int8_t *o1, int32_t d, int32_t a00, int32_t a01, int32_t a10,
                                int32_t a11, int32_t ma, int32_t mb, int32_t sa, int32_t sb, int mm, int32_t zp,
                                int32_t lo, int32_t hi)
{
    if (SC_I8_FAST_REQ && mm) { /* the usual case: SMMLAR, ASR, SSAT per output */
        const int32_t kza = SC_I8_MM_KZ(-sa, zp), kzb = SC_I8_MM_KZ(-sb, zp);
        o0[0] = sc_i8_requant_mm(2 * a00, ma, kza, -sa, zp, lo, hi);
        o0[d] = sc_i8_requant_mm(2 * a01, ma, kza, -sa, zp, lo, hi);
        o1[0] = sc_i8_requant_mm(2 * a10, mb, kzb, -sb, zp, lo, hi);
        o1[d] = sc_i8_requant_mm(2 * a11, mb, kzb, -sb, zp, lo, hi);
    } else if (SC_I8_FAST_REQ && sa <= -2 && sb <= -2) { /* one SMLAL per output */
        const uint32_t ha = ((uint32_t)1) << (-sa - 2), hb = ((uint32_t)1) << (-sb - 2);
        o0[0] = sc_i8_requant_hk(a00, ma, ha, -sa - 1, zp, lo, hi);
        o0[d] = sc_i8_requant_hk(a01, ma, ha, -sa - 1, zp, lo, hi);
        o1[0] = sc_i8_requant_hk(a10, mb, hb, -sb - 1, zp, lo, hi);
        o1[d] = sc_i8_requant_hk(a11, mb, hb, -sb - 1, zp, lo, hi);
    } else {
        o0[0] = sc_i8_requant(a00, ma, sa, zp, lo, hi);
        o0[d] = sc_i8_requant(a01, ma, sa, zp, lo, hi);
        o1[0] = sc_i8_requant(a10, mb, sb, zp, lo, hi);
        o1[d] = sc_i8_requant(a11, mb, sb, zp, lo, hi);
    }
}

static inline SC_SPECIALIZE void sc_i8_conv_q8_k3(const int8_t *in, int8_t *out, const int8_t *q, const int32_t *bias,
                                                  const int32_t *mult, const int8_t *shift, uint32_t *scratch,
                                                  const sc_i8_conv_params *p)
{
    const int32_t cin = p->cin, kh = p->kh, hin = p->hin, win = p->win, hout = p->hout, wout = p->wout;
    const int32_t cout = p->cout, sh = p->sh, sw = p->sw, dh = p->dh, npos = hout * wout;
    const int32_t rows = cin * kh, r4 = rows & ~3, wp = SC_I8_K3_WP(p), rl = 4 * SC_I8_K3_GROUPS(p);
    const int32_t c0 = p->pw < wp ? p->pw : wp, ncp = win < wp - c0 ? win : wp - c0; /* band columns [c0, c0 + ncp) */
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    const int mm = SC_I8_FAST_REQ && sc_i8_mm_all(bias, shift, cout, rl);
    uint32_t *const col = scratch;
    int8_t *const band = (int8_t *)(scratch + rl);
    int32_t oy, ox, ci, ky, r, oc;
    /* the borders stay in_zp: rows in range overwrite only their columns [c0, c0 + ncp) */
    memset(band, (unsigned char)p->in_zp, (size_t)(rows * wp));
    for (oy = 0; oy < hout; ++oy) {
        int8_t *dst = band + c0;
        for (ci = 0; ci < cin; ++ci) {
            const int8_t *const in_c = in + ci * hin * win;
            for (ky = 0, r = oy * sh - p->ph; ky < kh; ++ky, r += dh, dst += wp) {
                if (r >= 0 && r < hin)
                    memcpy(dst, in_c + r * win, (size_t)ncp);
                else
                    memset(dst, (unsigned char)p->in_zp, (size_t)ncp);
            }
        }
#if SC_INT8_DSP
        for (ox = 0; ox < wout; ox += 2) {
            const int32_t pa = ox + 1 < wout || wout < 2 ? ox : wout - 2, pb = wout >= 2 ? pa + 1 : pa;
            const int8_t *ra = band + pa * sw, *rb = band + pb * sw;
            uint32_t *c = col;
            for (r = 0; r < r4; r += 4, ra += 4 * wp, rb += 4 * wp, c += 12) {
                const uint32_t a0 = sc_ld32(ra), a1 = sc_ld32(ra + wp), a2 = sc_ld32(ra + 2 * wp), a3 = sc_ld32(ra + 3 * wp);
                const uint32_t b0 = sc_ld32(rb), b1 = sc_ld32(rb + wp), b2 = sc_ld32(rb + 2 * wp), b3 = sc_ld32(rb + 3 * wp);
                c[0] = sc_sxtb16(a0);
                c[1] = sc_sxtb16(a1);
                c[2] = sc_sxtb16(b0);
                c[3] = sc_sxtb16(b1);
                c[4] = sc_sxtb16(a2);
                c[5] = sc_sxtb16(a3);
                c[6] = sc_sxtb16(b2);
                c[7] = sc_sxtb16(b3);
                c[8] = sc_pkhbt(sc_sxtb16_ror8(a0), sc_sxtb16_ror8(a1));
                c[9] = sc_pkhbt(sc_sxtb16_ror8(a2), sc_sxtb16_ror8(a3));
                c[10] = sc_pkhbt(sc_sxtb16_ror8(b0), sc_sxtb16_ror8(b1));
                c[11] = sc_pkhbt(sc_sxtb16_ror8(b2), sc_sxtb16_ror8(b3));
            }
            for (; r < rows; ++r, ra += wp, rb += wp, c += 4) {
                const uint32_t a0 = sc_ld32(ra), b0 = sc_ld32(rb);
                c[0] = sc_sxtb16(a0);
                c[1] = sc_sxtb16_ror8(a0);
                c[2] = sc_sxtb16(b0);
                c[3] = sc_sxtb16_ror8(b0);
            }
            for (oc = 0; oc < cout; oc += 2) {
                const int32_t ob = oc + 1 < cout ? oc + 1 : oc, db = (ob - oc) * rl;
                const int8_t *wa = q + oc * rl;
                const uint32_t *x = col;
                const uint32_t *const xend = col + rl;
                int32_t a00 = bias ? bias[oc] : 0, a10 = bias ? bias[ob] : 0, a01 = a00, a11 = a10;
                int8_t *const o0 = out + oc * npos + oy * wout + pa;
                SC_I8_MAC2X2(x, xend, wa, db, a00, a01, a10, a11);
                sc_i8_out2x2(o0, o0 + (ob - oc) * npos, pb - pa, a00, a01, a10, a11, mult[oc], mult[ob], shift[oc],
                             shift[ob], mm, zp, lo, hi);
            }
        }
#else /* plain C over the same weight order, one output at a time */
        (void)col;
        (void)mm;
        for (oc = 0; oc < cout; ++oc) {
            int8_t *const o = out + oc * npos + oy * wout;
            for (ox = 0; ox < wout; ++ox) {
                const int8_t *x = band + ox * sw, *w = q + oc * rl;
                int32_t acc = bias ? bias[oc] : 0;
                for (r = 0; r < r4; r += 4, x += 4 * wp, w += 12) {
                    const int8_t *const x1 = x + wp, *const x2 = x + 2 * wp, *const x3 = x + 3 * wp;
                    acc += w[0] * x[0] + w[1] * x1[0] + w[2] * x[2] + w[3] * x1[2] + w[4] * x2[0] + w[5] * x3[0] +
                           w[6] * x2[2] + w[7] * x3[2] + w[8] * x[1] + w[9] * x2[1] + w[10] * x1[1] + w[11] * x3[1];
                }
                for (; r < rows; ++r, x += wp, w += 4) acc += w[0] * x[0] + w[1] * x[1] + w[2] * x[2];
                o[ox] = sc_i8_requant(acc, mult[oc], shift[oc], zp, lo, hi);
            }
        }
#endif
    }
}

#define SC_I8_DEFINE_CONV_CSR(NAME, PW, PWC, DW, Q8, CB, I8, IT, PT)                              \
    static inline void I8(                                                                     \
        const int8_t *in, int8_t *out, const int8_t *q, const IT *col, const PT *ptr,            \
        const int32_t *bias, const int32_t *mult, const int8_t *shift,                           \
        const sc_i8_conv_params *p)                                                              \
    {                                                                                            \
        SC_I8_CONV_BEGIN {                                                                       \
            int32_t k;                                                                           \
            const int32_t end = (int32_t)ptr[oc + 1];                                            \
            for (k = (int32_t)ptr[oc]; k < end; ++k)                                             \
                acc += sc_i8_conv_tap(in_g, (int32_t)col[k], (int32_t)q[k], iy0, ix0, p);        \
        } SC_I8_CONV_END                                                                         \
    }

#define SC_I8_DEFINE_CONV_REL(Q8, CB, I8, PT)                                                     \
    static inline void I8(                                                                     \
        const int8_t *in, int8_t *out, const uint8_t *stream, const PT *ptr, int32_t gap_bits,   \
        const int32_t *bias, const int32_t *mult, const int8_t *shift,                           \
        const sc_i8_conv_params *p)                                                              \
    {                                                                                            \
        const uint32_t gmask = (1u << gap_bits) - 1u;                                            \
        SC_I8_CONV_BEGIN {                                                                       \
            int32_t k, pos = 0;                                                                  \
            const int32_t n = (int32_t)ptr[oc + 1] - (int32_t)ptr[oc];                           \
            sc_bitreader br;                                                                       \
            sc_bits_at(&br, stream, (uint32_t)ptr[oc] * (uint32_t)(gap_bits + 8));            \
            for (k = 0; k < n; ++k) {                                                            \
                const uint32_t f = sc_bits_get(&br, gap_bits + 8);                            \
                const int32_t qv = sc_s8(f >> gap_bits);                                      \
                pos += (int32_t)(f & gmask);                                                     \
                if (qv) acc += sc_i8_conv_tap(in_g, pos, qv, iy0, ix0, p);                       \
                ++pos;                                                                           \
            }                                                                                    \
        } SC_I8_CONV_END                                                                         \
    }

/* ==== the kernels per index type, by name ================================================== */

/* X(float CSR, 1x1, 1x1 gathering its columns first, depthwise, weight-only int8 CSR, codebook CSR, int8 CSR,
 *   column index type, row pointer type) */
#define SC_CONV_CSR_LIST(X)                                                                          \
    X(sc_conv_csr_u8_u8, sc_conv_pw_csr_u8_u8, sc_conv_pwc_csr_u8_u8, sc_conv_dw_csr_u8_u8,          \
      sc_conv_q8_csr_u8_u8, sc_conv_cb_csr_u8_u8, sc_i8_conv_q8_csr_u8_u8, uint8_t, uint8_t)         \
    X(sc_conv_csr_u8_u16, sc_conv_pw_csr_u8_u16, sc_conv_pwc_csr_u8_u16, sc_conv_dw_csr_u8_u16,      \
      sc_conv_q8_csr_u8_u16, sc_conv_cb_csr_u8_u16, sc_i8_conv_q8_csr_u8_u16, uint8_t, uint16_t)     \
    X(sc_conv_csr_u8_u32, sc_conv_pw_csr_u8_u32, sc_conv_pwc_csr_u8_u32, sc_conv_dw_csr_u8_u32,      \
      sc_conv_q8_csr_u8_u32, sc_conv_cb_csr_u8_u32, sc_i8_conv_q8_csr_u8_u32, uint8_t, uint32_t)     \
    X(sc_conv_csr_u16_u8, sc_conv_pw_csr_u16_u8, sc_conv_pwc_csr_u16_u8, sc_conv_dw_csr_u16_u8,      \
      sc_conv_q8_csr_u16_u8, sc_conv_cb_csr_u16_u8, sc_i8_conv_q8_csr_u16_u8, uint16_t, uint8_t)     \
    X(sc_conv_csr_u16_u16, sc_conv_pw_csr_u16_u16, sc_conv_pwc_csr_u16_u16, sc_conv_dw_csr_u16_u16,  \
      sc_conv_q8_csr_u16_u16, sc_conv_cb_csr_u16_u16, sc_i8_conv_q8_csr_u16_u16, uint16_t, uint16_t) \
    X(sc_conv_csr_u16_u32, sc_conv_pw_csr_u16_u32, sc_conv_pwc_csr_u16_u32, sc_conv_dw_csr_u16_u32,  \
      sc_conv_q8_csr_u16_u32, sc_conv_cb_csr_u16_u32, sc_i8_conv_q8_csr_u16_u32, uint16_t, uint32_t) \
    X(sc_conv_csr_u32_u8, sc_conv_pw_csr_u32_u8, sc_conv_pwc_csr_u32_u8, sc_conv_dw_csr_u32_u8,      \
      sc_conv_q8_csr_u32_u8, sc_conv_cb_csr_u32_u8, sc_i8_conv_q8_csr_u32_u8, uint32_t, uint8_t)     \
    X(sc_conv_csr_u32_u16, sc_conv_pw_csr_u32_u16, sc_conv_pwc_csr_u32_u16, sc_conv_dw_csr_u32_u16,  \
      sc_conv_q8_csr_u32_u16, sc_conv_cb_csr_u32_u16, sc_i8_conv_q8_csr_u32_u16, uint32_t, uint16_t) \
    X(sc_conv_csr_u32_u32, sc_conv_pw_csr_u32_u32, sc_conv_pwc_csr_u32_u32, sc_conv_dw_csr_u32_u32,  \
      sc_conv_q8_csr_u32_u32, sc_conv_cb_csr_u32_u32, sc_i8_conv_q8_csr_u32_u32, uint32_t, uint32_t)
SC_CONV_CSR_LIST(SC_DEFINE_CONV_CSR)
SC_CONV_CSR_LIST(SC_DEFINE_CONV_CSR_SHAPES)
SC_CONV_CSR_LIST(SC_DEFINE_CONV_QCSR)
SC_CONV_CSR_LIST(SC_I8_DEFINE_CONV_CSR)

/* X(weight-only int8 relative-index, codebook relative-index, int8 relative-index, row pointer type) */
#define SC_CONV_REL_LIST(X)                                                                     \
    X(sc_conv_q8_rel_u8, sc_conv_cb_rel_u8, sc_i8_conv_q8_rel_u8, uint8_t)                      \
    X(sc_conv_q8_rel_u16, sc_conv_cb_rel_u16, sc_i8_conv_q8_rel_u16, uint16_t)                  \
    X(sc_conv_q8_rel_u32, sc_conv_cb_rel_u32, sc_i8_conv_q8_rel_u32, uint32_t)
SC_CONV_REL_LIST(SC_DEFINE_CONV_QREL)
SC_CONV_REL_LIST(SC_I8_DEFINE_CONV_REL)

#endif /* SC_CONV_H */
