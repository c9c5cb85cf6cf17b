/*
 * sparsecomp runtime — tiled (patch-based) execution of the integer path: window copies between int8
 * (C, H, W) planes. The int8 form of sc_tile_copy (sc_tile.h); codegen/tiling.py plans the tiles and
 * templates/tiled_stage.j2 calls it from model_int8.c.j2.
 */
#ifndef SC_TILE_I8_H
#define SC_TILE_I8_H

#include <string.h>

#include "sc_runtime.h"

/* Copies c channels of an h x w window of int8: from the plane src (src_h x src_w per channel) at row sy,
 * column sx, to the plane dst (dst_h x dst_w per channel) at row dy, column dx. src and dst do not
 * overlap. Gathers a tile's input patch with its halo, crops a window, places an output tile. */
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

#endif /* SC_TILE_I8_H */
