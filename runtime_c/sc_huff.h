/*
 * sparsecomp runtime — Huffman-coded codebook weights executed from flash (no RAM copy).
 *
 *   cb_huff     the entries of cb_rel (per row, a gap of zeros skipped then a codebook index;
 *               filler entries of value zero bridge gaps longer than gap_bits), each entry's symbol
 *               s = gap | index << gap_bits written as a canonical Huffman code, MSB of the code
 *               first, into one LSB-first bit stream (rows follow each other without padding).
 *               count[l - 1] = number of codes of length l (1..maxlen), sym[] = the symbols in
 *               canonical order (by length, then value); ptr[] = entries per row, cumulated.
 *
 * The kernels decode each code on the fly inside the dot product (bit by bit, the canonical-code
 * walk of zlib's puff), so the weights never leave flash. codegen/formats.py (CodebookHuff) writes
 * the stream and counts its bytes exactly.
 */
#ifndef SC_HUFF_H
#define SC_HUFF_H

#include "sc_runtime.h"
#include "sc_bits.h"
#include "sc_linear.h"
#include "sc_conv.h"

/* The next symbol of a canonical Huffman stream (0 on a code longer than maxlen: a damaged table). */
static inline uint32_t sc_huff_decode(sc_bitreader *br, const uint16_t *count, const uint16_t *sym,
                                      int32_t maxlen)
{
    int32_t code = 0, first = 0, index = 0, len;
    for (len = 1; len <= maxlen; ++len) {
        int32_t n;
        code |= (int32_t)sc_bits_get(br, 1);
        n = (int32_t)count[len - 1];
        if (code - first < n) return sym[index + code - first];
        index += n;
        first = (first + n) << 1;
        code <<= 1;
    }
    return 0u;
}

#define SC_DEFINE_HUFF(LINEAR, CONV, PT)                                                                      \
    static inline void LINEAR(const float *x, float *y, const uint8_t *stream, const float *cb,               \
                              const uint16_t *count, const uint16_t *sym, const PT *ptr, int32_t gap_bits,    \
                              int32_t maxlen, const float *bias, const sc_linear_params *p)                   \
    {                                                                                                         \
        SC_LINEAR_REL_ROWS(bias ? bias[o] : 0.0f, sc_huff_decode(&br, count, sym, maxlen), cb[f >> gap_bits], \
                           sc_act(acc, p->act, p->alpha))                                                     \
    }                                                                                                         \
    static inline void CONV(const float *in, float *out, const uint8_t *stream, const float *cb,              \
                            const uint16_t *count, const uint16_t *sym, const PT *ptr, int32_t gap_bits,      \
                            int32_t maxlen, const float *bias, const sc_conv_params *p)                       \
    {                                                                                                         \
        SC_CONV_REL_CHANNELS(sc_huff_decode(&br, count, sym, maxlen), float, cb[f >> gap_bits], v)            \
    }

/* X(linear, conv, row pointer type) */
#define SC_HUFF_LIST(X)                                                                         \
    X(sc_linear_cb_huff_u8, sc_conv_cb_huff_u8, uint8_t)                                        \
    X(sc_linear_cb_huff_u16, sc_conv_cb_huff_u16, uint16_t)                                     \
    X(sc_linear_cb_huff_u32, sc_conv_cb_huff_u32, uint32_t)
SC_HUFF_LIST(SC_DEFINE_HUFF)

#endif /* SC_HUFF_H */
