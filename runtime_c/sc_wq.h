/*
 * sparsecomp runtime — weight-only int8 / codebook kernels for the shapes the float dense kernels
 * run in place (issue 15): depthwise convs and 1x1 convs, and the dense codebook linear layer.
 * Activations stay float32; layouts as in sc_quant.h (q8: int8 q[rows][cols], w = scale[row] * q;
 * cb: b-bit codebook indices packed LSB-first, row-major).
 *
 * Depthwise (groups == cin == cout, dilation 1): each channel's weights are decoded once into
 * float32 values (scale[c] * q, exactly the model's weight, or codebook[i]) next to the padded plane,
 * then the float channel loop of sc_conv_dense_dw3 / sc_conv_dense_dw runs over it: the same
 * instructions per MAC as float dense, and the same in-place rule.
 *
 * 1x1, stride 1, no padding, groups == 1: SC_WQ_PW_BLOCK positions of every input channel are
 * gathered into `col` (arena scratch) first, so the kernel may write over its input (C_in == C_out);
 * then 2 output channels x SC_WQ_PW_BLOCK positions per pass, each weight decoded once per pass.
 *
 * Codebook linear with in % 8 == 0: 8 indices of a row are `bits` bytes; 4 rows per pass share the
 * input loads, the fields are cut with constant shifts when the kernel is inlined (SC_SPECIALIZE).
 */
#ifndef SC_WQ_H
#define SC_WQ_H

#include "sc_runtime.h"
#include "sc_conv.h"
#include "sc_linear.h"
#include "sc_bits.h"
#include <string.h>

/* ---- depthwise ------------------------------------------------------------------------------ */

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

/* ---- 1x1 ------------------------------------------------------------------------------------ */

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

/* ---- codebook linear ------------------------------------------------------------------------
 * Dense codebook weights with in % 8 == 0: a row's 8 indices are `bits` bytes (rows start on a
 * byte). 4 rows per pass share the input loads; each row's sum runs in input order. On a
 * Cortex-M4F (SC_CSR_ASM, as sc_linear.h's CSR loop) 4- and 8-bit indices take a hand-scheduled
 * loop: per 8 weights of a row, one word load (4-bit: AND/UBFX/LSR cut the fields) or 8 LDRB
 * (8-bit), 8 codebook loads into core registers (LDR with a scaled register offset), 4 VMOVs of
 * register pairs and 8 VFMAs; one VLDMIA of 8 inputs serves the 4 rows: 117 (4-bit) / 113
 * (8-bit) instructions per 32 MACs. Elsewhere (other widths, host, M3) the C loop below. */

/* The 8 b-bit fields of a row's group (`bits` bytes at g; constant bits fold the shifts). */
#define SC_CB_F(K) ((uint32_t)(v >> ((K) * bits)) & mask)
static inline SC_SPECIALIZE void sc_cb_dot8_c(const float *x, const uint8_t *g, const float *cb, int32_t bits,
                                              int32_t n8, float *acc)
{
    const uint32_t mask = (1u << bits) - 1u;
    float a = *acc;
    for (; n8 > 0; --n8, g += bits, x += 8) {
        uint32_t lo = 0u, hi = 0u;
        uint64_t v;
        memcpy(&lo, g, bits < 4 ? (size_t)bits : 4u);
        if (bits > 4) memcpy(&hi, g + 4, (size_t)(bits - 4));
        v = (uint64_t)lo | (uint64_t)hi << 32;
        a = SC_FMA(cb[SC_CB_F(0)], x[0], a);
        a = SC_FMA(cb[SC_CB_F(1)], x[1], a);
        a = SC_FMA(cb[SC_CB_F(2)], x[2], a);
        a = SC_FMA(cb[SC_CB_F(3)], x[3], a);
        a = SC_FMA(cb[SC_CB_F(4)], x[4], a);
        a = SC_FMA(cb[SC_CB_F(5)], x[5], a);
        a = SC_FMA(cb[SC_CB_F(6)], x[6], a);
        a = SC_FMA(cb[SC_CB_F(7)], x[7], a);
    }
    *acc = a;
}
#undef SC_CB_F

#if SC_CSR_ASM
/* Two fields (codebook values) of row G into the pair S0/S1, added to A times inputs X0/X1. */
#define SC_CB_PAIR(E0, E1, S0, S1, X0, X1, A)                                                     \
    E0 "\n\t" E1 "\n\t"                                                                          \
    "ldr %[t0], [%[cb], %[t0], lsl #2]\n\t"                                                      \
    "ldr %[t1], [%[cb], %[t1], lsl #2]\n\t"                                                      \
    "vmov " S0 ", " S1 ", %[t0], %[t1]\n\t"                                                      \
    "vfma.f32 " A ", " S0 ", " X0 "\n\t"                                                         \
    "vfma.f32 " A ", " S1 ", " X1 "\n\t"
#define SC_CB_ROW4(G, A)                                                                          \
    "ldr %[w], [" G "], #4\n\t"                                                                  \
    SC_CB_PAIR("and %[t0], %[w], #15", "ubfx %[t1], %[w], #4, #4", "s16", "s17", "s8", "s9", A)  \
    SC_CB_PAIR("ubfx %[t0], %[w], #8, #4", "ubfx %[t1], %[w], #12, #4", "s18", "s19", "s10", "s11", A) \
    SC_CB_PAIR("ubfx %[t0], %[w], #16, #4", "ubfx %[t1], %[w], #20, #4", "s16", "s17", "s12", "s13", A) \
    SC_CB_PAIR("ubfx %[t0], %[w], #24, #4", "lsr %[t1], %[w], #28", "s18", "s19", "s14", "s15", A)
#define SC_CB_ROW8(G, A)                                                                          \
    SC_CB_PAIR("ldrb %[t0], [" G "], #1", "ldrb %[t1], [" G "], #1", "s16", "s17", "s8", "s9", A) \
    SC_CB_PAIR("ldrb %[t0], [" G "], #1", "ldrb %[t1], [" G "], #1", "s18", "s19", "s10", "s11", A) \
    SC_CB_PAIR("ldrb %[t0], [" G "], #1", "ldrb %[t1], [" G "], #1", "s16", "s17", "s12", "s13", A) \
    SC_CB_PAIR("ldrb %[t0], [" G "], #1", "ldrb %[t1], [" G "], #1", "s18", "s19", "s14", "s15", A)
#define SC_CB_DOT8X4_ASM(ROW)                                                                     \
    __asm__ volatile(                                                                            \
        "1:\n\t"                                                                                 \
        "vldmia %[x]!, {s8-s15}\n\t"                                                             \
        ROW("%[g0]", "%[a0]") ROW("%[g1]", "%[a1]") ROW("%[g2]", "%[a2]") ROW("%[g3]", "%[a3]")  \
        "subs %[n], %[n], #1\n\t"                                                                \
        "bne 1b\n\t"                                                                             \
        : [x] "+r"(x), [g0] "+r"(g0), [g1] "+r"(g1), [g2] "+r"(g2), [g3] "+r"(g3), [n] "+r"(n8), \
          [a0] "+t"(a0), [a1] "+t"(a1), [a2] "+t"(a2), [a3] "+t"(a3), [w] "=&r"(w),              \
          [t0] "=&r"(t0), [t1] "=&r"(t1)                                                         \
        : [cb] "r"(cb)                                                                           \
        : "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19", "cc", \
          "memory")
#endif

/* Adds rows g[0..3] (n8 groups of 8 indices) times x to acc[0..3]. */
static inline SC_SPECIALIZE void sc_cb_dot8x4(const float *x, const uint8_t *const *g, const float *cb, int32_t bits,
                                              int32_t n8, float *acc)
{
#if SC_CSR_ASM
    if ((bits == 4 || bits == 8) && n8 > 0) {
        const uint8_t *g0 = g[0], *g1 = g[1], *g2 = g[2], *g3 = g[3];
        float a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        uint32_t w, t0, t1;
        if (bits == 4)
            SC_CB_DOT8X4_ASM(SC_CB_ROW4);
        else
            SC_CB_DOT8X4_ASM(SC_CB_ROW8);
        (void)w;
        acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
        return;
    }
#endif
    sc_cb_dot8_c(x, g[0], cb, bits, n8, &acc[0]);
    sc_cb_dot8_c(x, g[1], cb, bits, n8, &acc[1]);
    sc_cb_dot8_c(x, g[2], cb, bits, n8, &acc[2]);
    sc_cb_dot8_c(x, g[3], cb, bits, n8, &acc[3]);
}

/* Dense codebook linear, in % 8 == 0: 4 rows per pass (rows past the end repeat the last one,
 * computed and stored twice). */
static inline SC_SPECIALIZE void sc_linear_cb8(const float *x, float *y, const uint8_t *idx, const float *cb,
                                               int32_t bits, const float *bias, const sc_linear_params *p)
{
    const int32_t n8 = p->in / 8, row_bytes = n8 * bits;
    int32_t r, o, j;
    for (r = 0; r < p->rows; ++r) {
        const float *xr = x + r * p->in;
        float *yr = y + r * p->out;
        for (o = 0; o < p->out; o += 4) {
            const uint8_t *g[4];
            float a[4];
            for (j = 0; j < 4; ++j) {
                const int32_t oj = o + j < p->out ? o + j : p->out - 1;
                g[j] = idx + oj * row_bytes;
                a[j] = bias ? bias[oj] : 0.0f;
            }
            sc_cb_dot8x4(xr, g, cb, bits, n8, a);
            for (j = 0; j < 4 && o + j < p->out; ++j) yr[o + j] = sc_act(a[j], p->act, p->alpha);
        }
    }
}

#endif /* SC_WQ_H */
