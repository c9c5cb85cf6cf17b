/*
 * sparsecomp runtime — int8 and codebook (weight-shared) weights, executed directly from flash.
 * Activations stay float32 (weight-only quantization). Layouts (codegen/formats.py documents
 * the exact byte counts):
 *
 *   q8          int8 q[rows][cols], float scale[rows]: w = scale[row] * q
 *   q8_csr      CSR of q (col, ptr as in sc_linear.h/sc_conv.h), float scale[rows]
 *   q8_rel      relative index: per row, entries of (gap_bits + 8) bits, LSB-first:
 *               low gap_bits = zeros skipped before the entry, high 8 bits = q (two's complement)
 *   cb          b-bit indices into a float codebook, packed LSB-first, row-major
 *   cb_csr      CSR whose values are b-bit indices (packed LSB-first) into the codebook
 *   cb_rel      relative index: entries of (gap_bits + b) bits, low = gap, high = codebook index
 *
 * Packed streams are LSB-first: field i of width W is bits [i*W, (i+1)*W) of the stream, stream
 * bit k is bit (k % 8) of byte k / 8. Rows follow each other without padding, and every kernel
 * reads its streams sequentially. A gap too long for gap_bits is bridged by filler entries whose
 * value is zero, so an entry's column is always (previous column + 1 + gap).
 *
 * Linear: y = scale[o] * sum(q * x) + bias (q8 forms) or sum(codebook[i] * x) + bias. Conv decodes
 * each weight w = scale[oc] * q (exactly the float32 weight the model holds) or codebook[i] and
 * runs the output-stationary CSR loop of sc_conv.h over the nonzeros (see below).
 */
#ifndef SC_QUANT_H
#define SC_QUANT_H

#include "sc_runtime.h"
#include "sc_linear.h"
#include "sc_conv.h"
#include "sc_bits.h"

/* ---- linear ---------------------------------------------------------------------------------- */

/* 4 outputs at a time (each input load feeds 4 MACs; outputs past the end repeat the last row,
 * computed and stored twice); each int8 weight is converted once (LDRSB, VMOV, VCVT). */
static inline void sc_linear_q8(const float *x, float *y, const int8_t *q, const float *scale,
                                const float *bias, const sc_linear_params *p)
{
    const int32_t n = p->in;
    int32_t r, o, i, j;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * n;
        float *yr = y + r * p->out;
        for (o = 0; o < p->out; o += 4) {
            const int8_t *w0, *w1, *w2, *w3;
            const float *xp = xr;
            float acc[4], a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            int32_t oj[4];
            for (j = 0; j < 4; ++j) oj[j] = o + j < p->out ? o + j : p->out - 1;
            w0 = q + oj[0] * n; w1 = q + oj[1] * n; w2 = q + oj[2] * n; w3 = q + oj[3] * n;
            for (i = 0; i < n; ++i) {
                const float v = *xp++;
                a0 = SC_FMA((float)*w0++, v, a0);
                a1 = SC_FMA((float)*w1++, v, a1);
                a2 = SC_FMA((float)*w2++, v, a2);
                a3 = SC_FMA((float)*w3++, v, a3);
            }
            acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
            for (j = 0; j < 4 && o + j < p->out; ++j)
                yr[o + j] = sc_act(scale[oj[j]] * acc[j] + (bias ? bias[oj[j]] : 0.0f), p->act, p->alpha);
        }
    }
}

static inline void sc_linear_cb(const float *x, float *y, const uint8_t *idx, const float *cb,
                                int32_t bits, const float *bias, const sc_linear_params *p)
{
    int32_t r, o, i;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * p->in;
        float *yr = y + r * p->out;
        sc_bitreader br;
        sc_bits_init(&br, idx);
        for (o = 0; o < p->out; ++o) {
            float acc = bias ? bias[o] : 0.0f;
            for (i = 0; i < p->in; ++i) acc += cb[sc_bits_get(&br, bits)] * xr[i];
            yr[o] = sc_act(acc, p->act, p->alpha);
        }
    }
}

/* sc_linear_q8_csr_<it>_<pt> and sc_linear_cb_csr_<it>_<pt>. */
#define SC_DEFINE_LINEAR_QCSR(IS, PS, IT, PT)                                                     \
    static inline void sc_linear_q8_csr_##IS##_##PS(const float *x, float *y, const int8_t *q,  \
                                                    const IT *col, const PT *ptr,                \
                                                    const float *scale, const float *bias,       \
                                                    const sc_linear_params *p)                   \
    {                                                                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const float *xr = x + r * p->in;                                                     \
            float *yr = y + r * p->out;                                                          \
            for (o = 0; o < p->out; ++o) {                                                       \
                const int8_t *v = q + ptr[o];                                                    \
                const IT *c = col + ptr[o];                                                      \
                float a0 = 0.0f, a1 = 0.0f;                                                      \
                for (k = (int32_t)(ptr[o + 1] - ptr[o]); k >= 4; k -= 4, v += 4, c += 4) {      \
                    a0 = SC_FMA((float)v[0], xr[c[0]], a0);                                      \
                    a1 = SC_FMA((float)v[1], xr[c[1]], a1);                                      \
                    a0 = SC_FMA((float)v[2], xr[c[2]], a0);                                      \
                    a1 = SC_FMA((float)v[3], xr[c[3]], a1);                                      \
                }                                                                                \
                for (; k > 0; --k) a0 = SC_FMA((float)*v++, xr[*c++], a0);                       \
                yr[o] = sc_act(scale[o] * (a0 + a1) + (bias ? bias[o] : 0.0f), p->act, p->alpha); \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    static inline void sc_linear_cb_csr_##IS##_##PS(const float *x, float *y, const uint8_t *idx,\
                                                    const float *cb, const IT *col,              \
                                                    const PT *ptr, int32_t bits,                 \
                                                    const float *bias, const sc_linear_params *p)\
    {                                                                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const float *xr = x + r * p->in;                                                     \
            float *yr = y + r * p->out;                                                          \
            sc_bitreader br;                                                                     \
            sc_bits_init(&br, idx);                                                              \
            for (o = 0; o < p->out; ++o) {                                                       \
                float acc = bias ? bias[o] : 0.0f;                                               \
                const int32_t end = (int32_t)ptr[o + 1];                                         \
                for (k = (int32_t)ptr[o]; k < end; ++k)                                          \
                    acc += cb[sc_bits_get(&br, bits)] * xr[col[k]];                              \
                yr[o] = sc_act(acc, p->act, p->alpha);                                           \
            }                                                                                    \
        }                                                                                        \
    }

/* sc_linear_q8_rel_<pt> and sc_linear_cb_rel_<pt>. */
#define SC_DEFINE_LINEAR_QREL(PS, PT)                                                             \
    static inline void sc_linear_q8_rel_##PS(const float *x, float *y, const uint8_t *stream,   \
                                             const PT *ptr, const float *scale, int32_t gap_bits,\
                                             const float *bias, const sc_linear_params *p)       \
    {                                                                                            \
        const uint32_t gmask = (1u << gap_bits) - 1u;                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const float *xr = x + r * p->in;                                                     \
            float *yr = y + r * p->out;                                                          \
            sc_bitreader br;                                                                     \
            sc_bits_init(&br, stream);                                                           \
            for (o = 0; o < p->out; ++o) {                                                       \
                float acc = 0.0f;                                                                \
                int32_t pos = 0;                                                                 \
                const int32_t n = (int32_t)ptr[o + 1] - (int32_t)ptr[o];                         \
                for (k = 0; k < n; ++k) {                                                        \
                    const uint32_t f = sc_bits_get(&br, gap_bits + 8);                           \
                    pos += (int32_t)(f & gmask);                                                 \
                    acc += (float)sc_s8(f >> gap_bits) * xr[pos++];                              \
                }                                                                                \
                yr[o] = sc_act(scale[o] * acc + (bias ? bias[o] : 0.0f), p->act, p->alpha);      \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    static inline void sc_linear_cb_rel_##PS(const float *x, float *y, const uint8_t *stream,   \
                                             const float *cb, const PT *ptr, int32_t bits,       \
                                             int32_t gap_bits, const float *bias,                \
                                             const sc_linear_params *p)                          \
    {                                                                                            \
        const uint32_t gmask = (1u << gap_bits) - 1u;                                            \
        int32_t r, o, k;                                                                         \
        for (r = 0; r < p->rows; ++r) {                                                          \
            const float *xr = x + r * p->in;                                                     \
            float *yr = y + r * p->out;                                                          \
            sc_bitreader br;                                                                     \
            sc_bits_init(&br, stream);                                                           \
            for (o = 0; o < p->out; ++o) {                                                       \
                float acc = bias ? bias[o] : 0.0f;                                               \
                int32_t pos = 0;                                                                 \
                const int32_t n = (int32_t)ptr[o + 1] - (int32_t)ptr[o];                         \
                for (k = 0; k < n; ++k) {                                                        \
                    const uint32_t f = sc_bits_get(&br, gap_bits + bits);                        \
                    pos += (int32_t)(f & gmask);                                                 \
                    acc += cb[f >> gap_bits] * xr[pos++];                                        \
                }                                                                                \
                yr[o] = sc_act(acc, p->act, p->alpha);                                           \
            }                                                                                    \
        }                                                                                        \
    }

/* ---- convolution ---------------------------------------------------------------------------- *
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
#define SC_DEFINE_CONV_QCSR(IS, PS, IT, PT)                                                       \
    static inline void sc_conv_q8_csr_##IS##_##PS(const float *in, float *out, const int8_t *q, \
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
    static inline void sc_conv_cb_csr_##IS##_##PS(const float *in, float *out,                  \
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
#define SC_DEFINE_CONV_QREL(PS, PT)                                                               \
    static inline void sc_conv_q8_rel_##PS(const float *in, float *out, const uint8_t *stream,  \
                                           const PT *ptr, const float *scale, int32_t gap_bits,  \
                                           const float *bias, const sc_conv_params *p)           \
    {                                                                                            \
        const uint32_t gmask = (1u << gap_bits) - 1u;                                            \
        SC_CONV_Q_DIMS;                                                                          \
        int32_t k;                                                                               \
        sc_bitreader br;                                                                         \
        sc_bits_init(&br, stream);                                                               \
        for (oc = 0; oc < p->cout; ++oc) {                                                       \
            const int32_t n = (int32_t)ptr[oc + 1] - (int32_t)ptr[oc];                           \
            int32_t pos = 0;                                                                     \
            SC_CONV_Q_BEGIN;                                                                     \
            for (k = 0; k < n; ++k) {                                                            \
                const uint32_t f = sc_bits_get(&br, gap_bits + 8);                               \
                const int32_t qv = sc_s8(f >> gap_bits);                                         \
                pos += (int32_t)(f & gmask);                                                     \
                if (qv) SC_CONV_Q_PUSH(pos, scale[oc] * (float)qv);                              \
                ++pos;                                                                           \
            }                                                                                    \
            SC_CONV_Q_END;                                                                       \
        }                                                                                        \
    }                                                                                            \
    static inline void sc_conv_cb_rel_##PS(const float *in, float *out, const uint8_t *stream,  \
                                           const float *cb, const PT *ptr, int32_t bits,         \
                                           int32_t gap_bits, const float *bias,                  \
                                           const sc_conv_params *p)                              \
    {                                                                                            \
        const uint32_t gmask = (1u << gap_bits) - 1u;                                            \
        SC_CONV_Q_DIMS;                                                                          \
        int32_t k;                                                                               \
        sc_bitreader br;                                                                         \
        sc_bits_init(&br, stream);                                                               \
        for (oc = 0; oc < p->cout; ++oc) {                                                       \
            const int32_t n = (int32_t)ptr[oc + 1] - (int32_t)ptr[oc];                           \
            int32_t pos = 0;                                                                     \
            SC_CONV_Q_BEGIN;                                                                     \
            for (k = 0; k < n; ++k) {                                                            \
                const uint32_t f = sc_bits_get(&br, gap_bits + bits);                            \
                const float wv = cb[f >> gap_bits];                                              \
                pos += (int32_t)(f & gmask);                                                     \
                if (wv != 0.0f) SC_CONV_Q_PUSH(pos, wv);                                         \
                ++pos;                                                                           \
            }                                                                                    \
            SC_CONV_Q_END;                                                                       \
        }                                                                                        \
    }

#define SC_DEFINE_QCSR_ALL(IS, PS, IT, PT)                                                        \
    SC_DEFINE_LINEAR_QCSR(IS, PS, IT, PT)                                                        \
    SC_DEFINE_CONV_QCSR(IS, PS, IT, PT)

SC_DEFINE_QCSR_ALL(u8, u8, uint8_t, uint8_t)
SC_DEFINE_QCSR_ALL(u8, u16, uint8_t, uint16_t)
SC_DEFINE_QCSR_ALL(u8, u32, uint8_t, uint32_t)
SC_DEFINE_QCSR_ALL(u16, u8, uint16_t, uint8_t)
SC_DEFINE_QCSR_ALL(u16, u16, uint16_t, uint16_t)
SC_DEFINE_QCSR_ALL(u16, u32, uint16_t, uint32_t)
SC_DEFINE_QCSR_ALL(u32, u8, uint32_t, uint8_t)
SC_DEFINE_QCSR_ALL(u32, u16, uint32_t, uint16_t)
SC_DEFINE_QCSR_ALL(u32, u32, uint32_t, uint32_t)

SC_DEFINE_LINEAR_QREL(u8, uint8_t)
SC_DEFINE_LINEAR_QREL(u16, uint16_t)
SC_DEFINE_LINEAR_QREL(u32, uint32_t)
SC_DEFINE_CONV_QREL(u8, uint8_t)
SC_DEFINE_CONV_QREL(u16, uint16_t)
SC_DEFINE_CONV_QREL(u32, uint32_t)

#endif /* SC_QUANT_H */
