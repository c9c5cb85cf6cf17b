/* sc_bits.h: the LSB-first bit reader of the packed weight forms (the weight-only int8 / codebook and
 * the int8 sections of sc_conv.h and sc_linear.h, sc_huff.h). Fields of 1..16 bits; sc_bits_at starts at any bit. */
#ifndef SC_BITS_H
#define SC_BITS_H

#include "sc_runtime.h"

typedef struct {
    const uint8_t *p;
    uint32_t buf;
    int32_t n;
} sc_bitreader;

static inline void sc_bits_init(sc_bitreader *r, const uint8_t *p)
{
    r->p = p;
    r->buf = 0u;
    r->n = 0;
}

/* The next `width` bits (1..16); reads only the bytes it needs. */
static inline uint32_t sc_bits_get(sc_bitreader *r, int32_t width)
{
    uint32_t v;
    while (r->n < width) {
        r->buf |= (uint32_t)(*r->p++) << r->n;
        r->n += 8;
    }
    v = r->buf & ((1u << width) - 1u);
    r->buf >>= width;
    r->n -= width;
    return v;
}

/* The int8 value held in the low 8 bits of v (two's complement). */
static inline int32_t sc_s8(uint32_t v)
{
    const int32_t b = (int32_t)(v & 0xFFu);
    return b - ((b & 0x80) << 1);
}

/* Starts reading `stream` at bit `bit`. */
static inline void sc_bits_at(sc_bitreader *r, const uint8_t *stream, uint32_t bit)
{
    r->p = stream + (bit >> 3);
    r->buf = 0u;
    r->n = 0;
    if (bit & 7u) (void)sc_bits_get(r, (int32_t)(bit & 7u));
}

#endif /* SC_BITS_H */
