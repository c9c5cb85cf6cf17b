/*
 * sparsecomp runtime — 1-D/2-D convolution (any stride, padding, dilation, groups), float32.
 * Weights are [C_out][C_in/groups][kh][kw]; the sparse forms store that matrix as CSR rows of
 * length C_in/groups*kh*kw and walk the nonzeros directly (no im2col buffer): each weight is
 * applied to every output position it reaches ("weight-stationary"), so the cost is
 * proportional to the number of nonzeros.
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

/* out_c[oy][ox] += wv * in_c[oy*sh + ky*dh - ph][ox*sw + kx*dw - pw] over the valid positions. */
static inline void sc_conv_tap(const float *in_c, float *out_c, float wv, int32_t ky, int32_t kx,
                               const sc_conv_params *p)
{
    int32_t oy0, oy1, ox0, ox1, oy, ox;
    const int32_t yoff = ky * p->dh - p->ph, xoff = kx * p->dw - p->pw;
    sc_valid_range(yoff, p->sh, p->hin, p->hout, &oy0, &oy1);
    sc_valid_range(xoff, p->sw, p->win, p->wout, &ox0, &ox1);
    for (oy = oy0; oy < oy1; ++oy) {
        const float *irow = in_c + (oy * p->sh + yoff) * p->win;
        float *orow = out_c + oy * p->wout;
        if (p->sw == 1) {
            for (ox = ox0; ox < ox1; ++ox) orow[ox] += wv * irow[ox + xoff];
        } else {
            for (ox = ox0; ox < ox1; ++ox) orow[ox] += wv * irow[ox * p->sw + xoff];
        }
    }
}

static inline void sc_conv_fill(float *o, int32_t n, float b)
{
    int32_t i;
    for (i = 0; i < n; ++i) o[i] = b;
}

static inline void sc_conv_dense(const float *in, float *out, const float *w, const float *bias,
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

/* CSR kernels, one per (column index type, row pointer type) pair: sc_conv_csr_<it>_<pt>. */
#define SC_DEFINE_CONV_CSR(SUFFIX, IT, PT)                                                        \
    static inline void sc_conv_##SUFFIX(const float *in, float *out, const float *val,          \
                                        const IT *col, const PT *ptr, const float *bias,        \
                                        const sc_conv_params *p)                                 \
    {                                                                                            \
        const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;                 \
        const int32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;                \
        const int32_t khw = p->kh * p->kw;                                                       \
        int32_t oc, k;                                                                           \
        for (oc = 0; oc < p->cout; ++oc) {                                                       \
            float *o = out + oc * plane_out;                                                     \
            const float *in_g = in + (oc / cout_g) * cin_g * plane_in;                          \
            const int32_t end = (int32_t)ptr[oc + 1];                                            \
            sc_conv_fill(o, plane_out, bias ? bias[oc] : 0.0f);                                  \
            for (k = (int32_t)ptr[oc]; k < end; ++k) {                                           \
                const int32_t j = (int32_t)col[k];                                               \
                const int32_t ci = j / khw, r = j - ci * khw;                                    \
                const int32_t ky = r / p->kw, kx = r - ky * p->kw;                               \
                sc_conv_tap(in_g + ci * plane_in, o, val[k], ky, kx, p);                         \
            }                                                                                    \
            sc_act_inplace(o, plane_out, p->act, p->alpha);                                      \
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

#endif /* SC_CONV_H */
