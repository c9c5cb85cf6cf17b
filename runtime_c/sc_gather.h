/*
 * sparsecomp runtime — strided copies (slicing, chunk/split, transpose/permute, expand): the
 * output is written contiguously, element (i0, i1, i2, i3) read from
 * in[offset + i0*s0 + i1*s1 + i2*s2 + i3*s3]. The (count, stride) tables are prepared in Python
 * (codegen/ops/gather.py). The output never overlaps the input.
 */
#ifndef SC_GATHER_H
#define SC_GATHER_H

#include "sc_runtime.h"

/* One kernel body for float and int8 (the element type T). */
#define SC_GATHER_BODY(T)                                                                   \
    {                                                                                       \
        int32_t i0, i1, i2, i3;                                                             \
        const T *p0 = in + offset;                                                          \
        for (i0 = 0; i0 < n0; ++i0, p0 += s0) {                                             \
            const T *p1 = p0;                                                               \
            for (i1 = 0; i1 < n1; ++i1, p1 += s1) {                                         \
                const T *p2 = p1;                                                           \
                for (i2 = 0; i2 < n2; ++i2, p2 += s2) {                                     \
                    const T *p3 = p2;                                                       \
                    for (i3 = 0; i3 < n3; ++i3, p3 += s3) *out++ = *p3;                     \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

/* ---- float ---------------------------------------------------------------------------------- */

static inline void sc_gather(float *out, const float *in, int32_t offset, int32_t n0, int32_t n1,
                             int32_t n2, int32_t n3, int32_t s0, int32_t s1, int32_t s2, int32_t s3)
SC_GATHER_BODY(float)

/* ---- int8 (a copy keeps the input's scale and zero point) ------------------------------------ */

static inline void sc_i8_gather(int8_t *out, const int8_t *in, int32_t offset, int32_t n0,
                                int32_t n1, int32_t n2, int32_t n3, int32_t s0, int32_t s1,
                                int32_t s2, int32_t s3)
SC_GATHER_BODY(int8_t)

#endif /* SC_GATHER_H */
