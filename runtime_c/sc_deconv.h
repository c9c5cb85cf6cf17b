/*
 * sparsecomp runtime — transposed convolution (1-D with h == 1, 2-D; stride, padding, dilation, groups,
 * output_padding through hout/wout), float32. The weight is the matrix [C_out][C_in/groups*kh*kw]
 * (codegen/ops/deconv.py); each weight is scattered over the output plane:
 * out[oc][iy*sh - ph + ky*dh][ix*sw - pw + kx*dw] += w * in[ic][iy][ix] for the positions inside it.
 */
#ifndef SC_DECONV_H
#define SC_DECONV_H

#include "sc_runtime.h"
#include "sc_fixed.h" /* int8 */

typedef struct {
    int32_t cin, hin, win, cout, hout, wout;
    int32_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
} sc_deconv_params;

/* The input positions i in [*lo, *hi) with 0 <= i * s + off < n_out. */
static inline void sc_deconv_range(int32_t off, int32_t s, int32_t n_in, int32_t n_out, int32_t *lo, int32_t *hi)
{
    const int32_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    const int32_t b = n_out - off <= 0 ? 0 : (n_out - off + s - 1) / s;
    *lo = a;
    *hi = b < n_in ? b : n_in;
}

/* One weight of input channel plane in_c scattered into output plane out_c. */
static inline void sc_deconv_tap(const float *in_c, float *out_c, float wv, int32_t ky, int32_t kx,
                                 const sc_deconv_params *p)
{
    const int32_t yoff = ky * p->dh - p->ph, xoff = kx * p->dw - p->pw;
    int32_t iy0, iy1, ix0, ix1, iy, ix;
    sc_deconv_range(yoff, p->sh, p->hin, p->hout, &iy0, &iy1);
    sc_deconv_range(xoff, p->sw, p->win, p->wout, &ix0, &ix1);
    for (iy = iy0; iy < iy1; ++iy) {
        const float *ip = in_c + iy * p->win;
        float *op = out_c + (iy * p->sh + yoff) * p->wout;
        for (ix = ix0; ix < ix1; ++ix) {
            const int32_t ox = ix * p->sw + xoff;
            op[ox] = SC_FMA(wv, ip[ix], op[ox]);
        }
    }
}

static inline void sc_deconv_bias(float *out, const float *bias, const sc_deconv_params *p)
{
    const int32_t plane = p->hout * p->wout;
    int32_t oc, i;
    for (oc = 0; oc < p->cout; ++oc)
        for (i = 0; i < plane; ++i) out[oc * plane + i] = bias ? bias[oc] : 0.0f;
}

static inline void sc_deconv_dense(const float *in, float *out, const float *w, const float *bias,
                                   const sc_deconv_params *p)
{
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout, khw = p->kh * p->kw;
    int32_t oc, ci, ky, kx;
    sc_deconv_bias(out, bias, p);
    for (oc = 0; oc < p->cout; ++oc) {
        const float *in_g = in + (oc / cout_g) * cin_g * plane_in;
        const float *wr = w + oc * cin_g * khw;
        for (ci = 0; ci < cin_g; ++ci)
            for (ky = 0; ky < p->kh; ++ky)
                for (kx = 0; kx < p->kw; ++kx) {
                    const float wv = wr[ci * khw + ky * p->kw + kx];
                    if (wv != 0.0f) sc_deconv_tap(in_g + ci * plane_in, out + oc * plane_out, wv, ky, kx, p);
                }
    }
}

/* CSR rows (one per output channel): sc_deconv_csr_<column index type>_<row pointer type>. */
#define SC_DEFINE_DECONV_CSR(NAME, IT, PT)                                                        \
    static inline void NAME(const float *in, float *out, const float *val, const IT *col,               \
                                          const PT *ptr, const float *bias, const sc_deconv_params *p) \
    {                                                                                            \
        const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;                  \
        const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;                 \
        const int32_t khw = p->kh * p->kw;                                                       \
        int32_t oc, k;                                                                           \
        sc_deconv_bias(out, bias, p);                                                            \
        for (oc = 0; oc < p->cout; ++oc) {                                                       \
            const float *in_g = in + (oc / cout_g) * cin_g * plane_in;                           \
            for (k = (int32_t)ptr[oc]; k < (int32_t)ptr[oc + 1]; ++k) {                          \
                const int32_t j = (int32_t)col[k], ci = j / khw, r = j - ci * khw;               \
                const int32_t ky = r / p->kw, kx = r - ky * p->kw;                               \
                sc_deconv_tap(in_g + ci * plane_in, out + oc * plane_out, val[k], ky, kx, p);    \
            }                                                                                    \
        }                                                                                        \
    }

/* X(name, column index type, row pointer type) */
#define SC_DECONV_CSR_LIST(X)                                                                   \
    X(sc_deconv_csr_u8_u8, uint8_t, uint8_t)                                                    \
    X(sc_deconv_csr_u8_u16, uint8_t, uint16_t)                                                  \
    X(sc_deconv_csr_u8_u32, uint8_t, uint32_t)                                                  \
    X(sc_deconv_csr_u16_u8, uint16_t, uint8_t)                                                  \
    X(sc_deconv_csr_u16_u16, uint16_t, uint16_t)                                                \
    X(sc_deconv_csr_u16_u32, uint16_t, uint32_t)                                                \
    X(sc_deconv_csr_u32_u8, uint32_t, uint8_t)                                                  \
    X(sc_deconv_csr_u32_u16, uint32_t, uint16_t)                                                \
    X(sc_deconv_csr_u32_u32, uint32_t, uint32_t)
SC_DECONV_CSR_LIST(SC_DEFINE_DECONV_CSR)

/* ---- int8 (codegen/ops/deconv.py ConvTranspose2dInt8): dense int8 weights per output channel, int32
 * accumulation, TFLite requantization (sc_fixed.h).
 * Output-stationary: each output gathers the inputs whose taps land on it. */

typedef struct {
    int32_t cin, hin, win, cout, hout, wout;
    int32_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int32_t in_zp, out_zp, act_min, act_max;
} sc_i8_deconv_params;

static inline void sc_i8_deconv_q8(const int8_t *in, int8_t *out, const int8_t *w, const int32_t *bias,
                                   const int32_t *mult, const int8_t *shift, const sc_i8_deconv_params *p)
{
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups, khw = p->kh * p->kw;
    int32_t oc, oy, ox, ci, ky, kx;
    for (oc = 0; oc < p->cout; ++oc) {
        const int8_t *in_g = in + (oc / cout_g) * cin_g * p->hin * p->win;
        const int8_t *wr = w + oc * cin_g * khw;
        for (oy = 0; oy < p->hout; ++oy) {
            for (ox = 0; ox < p->wout; ++ox) {
                int32_t acc = bias ? bias[oc] : 0;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int32_t ty = oy + p->ph - ky * p->dh, iy = ty / p->sh;
                    if (ty < 0 || iy * p->sh != ty || iy >= p->hin) continue;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int32_t tx = ox + p->pw - kx * p->dw, ix = tx / p->sw;
                        if (tx < 0 || ix * p->sw != tx || ix >= p->win) continue;
                        for (ci = 0; ci < cin_g; ++ci)
                            acc += ((int32_t)in_g[(ci * p->hin + iy) * p->win + ix] - p->in_zp)
                                   * (int32_t)wr[ci * khw + ky * p->kw + kx];
                    }
                }
                *out++ = sc_i8_requant(acc, mult[oc], shift[oc], p->out_zp, p->act_min, p->act_max);
            }
        }
    }
}

#endif /* SC_DECONV_H */
