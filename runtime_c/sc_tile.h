/*
 * sparsecomp runtime — tiled (patch-based) execution: window copies between (C, H, W) planes.
 * codegen/tiling.py plans the tiles; templates/tiled_stage.j2 calls these. Sections: float, int8.
 */
#ifndef SC_TILE_H
#define SC_TILE_H

#include <string.h>

#include "sc_runtime.h"

/* ---- float -------------------------------------------------------------------------------------- */

/* Copies c channels of an h x w window: from the plane src (src_h x src_w per channel) at row sy,
 * column sx, to the plane dst (dst_h x dst_w per channel) at row dy, column dx. src and dst do not
 * overlap. Gathers a tile's input patch with its halo, crops a window, places an output tile. */
static inline void sc_tile_copy(const float *src, float *dst, int32_t c, int32_t src_h, int32_t src_w,
                                int32_t sy, int32_t sx, int32_t dst_h, int32_t dst_w, int32_t dy, int32_t dx,
                                int32_t h, int32_t w)
{
    int32_t ch, y, x;
    for (ch = 0; ch < c; ++ch) {
        const float *s = src + ch * src_h * src_w + sy * src_w + sx;
        float *d = dst + ch * dst_h * dst_w + dy * dst_w + dx;
        for (y = 0; y < h; ++y) {
            for (x = 0; x < w; ++x) d[x] = s[x];
            s += src_w;
            d += dst_w;
        }
    }
}

/* ---- int8 (integer=True) ------------------------------------------------------------------------ */

/* sc_tile_copy for int8 planes (the integer path's tiles). */
static inline void sc_tile_copy_i8(const int8_t *src, int8_t *dst, int32_t c, int32_t src_h, int32_t src_w,
                                   int32_t sy, int32_t sx, int32_t dst_h, int32_t dst_w, int32_t dy, int32_t dx,
                                   int32_t h, int32_t w)
{
    int32_t ch, y;
    for (ch = 0; ch < c; ++ch) {
        const int8_t *s = src + ch * src_h * src_w + sy * src_w + sx;
        int8_t *d = dst + ch * dst_h * dst_w + dy * dst_w + dx;
        for (y = 0; y < h; ++y) {
            memcpy(d, s, (size_t)w);
            s += src_w;
            d += dst_w;
        }
    }
}

#endif /* SC_TILE_H */
