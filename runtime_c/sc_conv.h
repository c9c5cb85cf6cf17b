/*
 * sparsecomp runtime — 1-D/2-D convolution (any stride, padding, dilation, groups), float32.
 * Weights are [C_out][C_in/groups][kh][kw]; the sparse forms store that matrix as CSR rows of
 * length C_in/groups*kh*kw and walk the nonzeros directly (no im2col buffer): a channel's
 * nonzeros are decoded into input offsets, then accumulated at every output position in
 * registers (see "CSR kernels" below), so the cost is proportional to the number of nonzeros.
 */
#ifndef SC_CONV_H
#define SC_CONV_H

#include "sc_runtime.h"

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
                const float *x = col;
                const float *w0, *w1, *w2, *w3;
                float a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33;
                sc_conv_rows4(w, bias, out, g * cout_g + ob, cout_g - ob, cin_g, plane, ws, b, os);
                w0 = ws[0]; w1 = ws[1]; w2 = ws[2]; w3 = ws[3];
                a00 = a01 = a02 = a03 = b[0];
                a10 = a11 = a12 = a13 = b[1];
                a20 = a21 = a22 = a23 = b[2];
                a30 = a31 = a32 = a33 = b[3];
                for (ci = 0; ci < cin_g; ++ci) {
                    const float v0 = x[0], v1 = x[1], v2 = x[2], v3 = x[3];
                    const float c0 = *w0++, c1 = *w1++, c2 = *w2++, c3 = *w3++;
                    x += 4;
                    a00 = SC_FMA(c0, v0, a00); a01 = SC_FMA(c0, v1, a01);
                    a02 = SC_FMA(c0, v2, a02); a03 = SC_FMA(c0, v3, a03);
                    a10 = SC_FMA(c1, v0, a10); a11 = SC_FMA(c1, v1, a11);
                    a12 = SC_FMA(c1, v2, a12); a13 = SC_FMA(c1, v3, a13);
                    a20 = SC_FMA(c2, v0, a20); a21 = SC_FMA(c2, v1, a21);
                    a22 = SC_FMA(c2, v2, a22); a23 = SC_FMA(c2, v3, a23);
                    a30 = SC_FMA(c3, v0, a30); a31 = SC_FMA(c3, v1, a31);
                    a32 = SC_FMA(c3, v2, a32); a33 = SC_FMA(c3, v3, a33);
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
                    int32_t c;
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
 * each weight load. Safe in place (out == in) when the output plane is not larger than the
 * input plane: channel c's input is in `pad` before its output is written. */
static inline SC_SPECIALIZE void sc_conv_dense_dw(const float *in, float *out, const float *w, const float *bias,
                                    const sc_conv_params *p, float *pad)
{
    const int32_t hp = SC_CONV_DW_PAD_H(p), wp = SC_CONV_DW_PAD_W(p);
    const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout, khw = p->kh * p->kw;
    const int32_t rows = p->hin < hp - p->ph ? p->hin : hp - p->ph;
    const int32_t cols = p->win < wp - p->pw ? p->win : wp - p->pw;
    const int32_t row_skip = wp - p->kw, ystep = p->sh * wp;
    int32_t c, i, y, x, k, ky, kx;
    for (i = 0; i < hp * wp; ++i) pad[i] = 0.0f;
    for (c = 0; c < p->cout; ++c) {
        const float *ic = in + c * plane_in, *wc = w + c * khw;
        float *oc = out + c * plane_out;
        const float b = bias ? bias[c] : 0.0f;
        int32_t qy = 0, qx = 0;
        for (y = 0; y < rows; ++y) {
            float *d = pad + (y + p->ph) * wp + p->pw;
            const float *src = ic + y * p->win;
            for (x = 0; x < cols; ++x) d[x] = src[x];
        }
        /* explicit bounds: gcc 12 -O2 rejected the open tail loop ("iteration 1073741823 invokes
         * undefined behavior", -Werror=aggressive-loop-optimizations) for a constant plane of 16 */
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
}

/* Depthwise 3x3, stride 1, dilation 1 (the MobileNet / DS-CNN block): as sc_conv_dense_dw (same
 * padded plane, same in-place rule), but the 9 weights stay in registers and each output row is
 * swept left to right with the window's columns in registers: 2 outputs per pass take 6 loads
 * and 18 FMAs. */
static inline SC_SPECIALIZE void sc_conv_dense_dw3(const float *in, float *out, const float *w, const float *bias,
                                                   const sc_conv_params *p, float *pad)
{
    const int32_t hp = SC_CONV_DW_PAD_H(p), wp = SC_CONV_DW_PAD_W(p);
    const int32_t plane_in = p->hin * p->win, wout = p->wout;
    const int32_t rows = p->hin < hp - p->ph ? p->hin : hp - p->ph;
    const int32_t cols = p->win < wp - p->pw ? p->win : wp - p->pw;
    int32_t c, i, y, x, oy, ox;
    for (i = 0; i < hp * wp; ++i) pad[i] = 0.0f;
    for (c = 0; c < p->cout; ++c) {
        const float *wc = w + c * 9;
        const float w0 = wc[0], w1 = wc[1], w2 = wc[2], w3 = wc[3], w4 = wc[4];
        const float w5 = wc[5], w6 = wc[6], w7 = wc[7], w8 = wc[8];
        const float b = bias ? bias[c] : 0.0f;
        float *o = out + c * p->hout * wout;
        for (y = 0; y < rows; ++y) {
            float *d = pad + (y + p->ph) * wp + p->pw;
            const float *src = in + c * plane_in + y * p->win;
            for (x = 0; x < cols; ++x) d[x] = src[x];
        }
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
#define SC_DEFINE_CONV_CSR(SUFFIX, IT, PT)                                                        \
    static inline SC_SPECIALIZE void sc_conv_##SUFFIX(const float *in, float *out, const float *val,          \
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

SC_DEFINE_CONV_CSR(csr_u8_u8, uint8_t, uint8_t)
SC_DEFINE_CONV_CSR(csr_u8_u16, uint8_t, uint16_t)
SC_DEFINE_CONV_CSR(csr_u8_u32, uint8_t, uint32_t)
SC_DEFINE_CONV_CSR(csr_u16_u8, uint16_t, uint8_t)
SC_DEFINE_CONV_CSR(csr_u16_u16, uint16_t, uint16_t)
SC_DEFINE_CONV_CSR(csr_u16_u32, uint16_t, uint32_t)
SC_DEFINE_CONV_CSR(csr_u32_u8, uint32_t, uint8_t)
SC_DEFINE_CONV_CSR(csr_u32_u16, uint32_t, uint16_t)
SC_DEFINE_CONV_CSR(csr_u32_u32, uint32_t, uint32_t)

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

#define SC_DEFINE_CONV_CSR_SHAPES(SUFFIX, IT, PT)                                                 \
    static inline SC_SPECIALIZE void sc_conv_pw_##SUFFIX(const float *in, float *out,            \
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
    static inline SC_SPECIALIZE void sc_conv_pwc_##SUFFIX(const float *in, float *out,           \
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
    static inline SC_SPECIALIZE void sc_conv_dw_##SUFFIX(const float *in, float *out,            \
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

SC_DEFINE_CONV_CSR_SHAPES(csr_u8_u8, uint8_t, uint8_t)
SC_DEFINE_CONV_CSR_SHAPES(csr_u8_u16, uint8_t, uint16_t)
SC_DEFINE_CONV_CSR_SHAPES(csr_u8_u32, uint8_t, uint32_t)
SC_DEFINE_CONV_CSR_SHAPES(csr_u16_u8, uint16_t, uint8_t)
SC_DEFINE_CONV_CSR_SHAPES(csr_u16_u16, uint16_t, uint16_t)
SC_DEFINE_CONV_CSR_SHAPES(csr_u16_u32, uint16_t, uint32_t)
SC_DEFINE_CONV_CSR_SHAPES(csr_u32_u8, uint32_t, uint8_t)
SC_DEFINE_CONV_CSR_SHAPES(csr_u32_u16, uint32_t, uint16_t)
SC_DEFINE_CONV_CSR_SHAPES(csr_u32_u32, uint32_t, uint32_t)

#endif /* SC_CONV_H */
