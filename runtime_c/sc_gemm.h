/*
 * sparsecomp runtime — float32 micro-kernels shared by the dense conv and linear kernels (issue 15).
 *
 * sc_mm44: 4 output channels x 4 positions over n inputs: x is a column [n][4] (input k of the 4
 * positions side by side), w0..w3 the 4 weight rows; acc[c * 4 + j] += sum_k w_c[k] * x[k][j].
 * sc_dot4: 4 weight rows times one input vector; acc[r] += sum_k w_r[k] * x[k].
 *
 * On a Cortex-M4F / M7 (SC_GEMM_ASM: GCC-compatible compiler, single-precision FPU with fast fmaf,
 * as SC_CSR_ASM in sc_linear.h) both are hand-scheduled loops that load with VLDMIA: sc_mm44 per 2
 * inputs one VLDMIA of the 8 column values and one of 2 weights per row, then 32 VFMAs (39
 * instructions per 32 MACs with the loop's SUBS/BNE; the C loop takes 24 per 16); sc_dot4 per 8
 * inputs one VLDMIA of x and one of 8 weights per row, 32 VFMAs (39 per 32 MACs). The sums run in
 * input order (the C loops elsewhere add in the same order). -DSC_GEMM_ASM=0 selects the C loops.
 * QEMU counts instructions: a VLDMIA of n registers is one instruction but n + 1 cycles on the M4
 * (n separate VLDRs: 2n), so cycles fall less than instructions.
 */
#ifndef SC_GEMM_H
#define SC_GEMM_H

#include "sc_runtime.h"

#ifndef SC_GEMM_ASM
#if defined(__GNUC__) && defined(__thumb2__) && defined(__ARM_ARCH_7EM__) && defined(__ARM_FP) && \
    (__ARM_FP & 4) && defined(__FP_FAST_FMAF)
#define SC_GEMM_ASM 1
#else
#define SC_GEMM_ASM 0
#endif
#endif

/* One input k of sc_mm44 in C (the tail of the assembly loop, and the whole loop elsewhere). */
static inline void sc_mm44_step(const float *x, float c0, float c1, float c2, float c3, float *acc)
{
    const float v0 = x[0], v1 = x[1], v2 = x[2], v3 = x[3];
    acc[0] = SC_FMA(c0, v0, acc[0]); acc[1] = SC_FMA(c0, v1, acc[1]);
    acc[2] = SC_FMA(c0, v2, acc[2]); acc[3] = SC_FMA(c0, v3, acc[3]);
    acc[4] = SC_FMA(c1, v0, acc[4]); acc[5] = SC_FMA(c1, v1, acc[5]);
    acc[6] = SC_FMA(c1, v2, acc[6]); acc[7] = SC_FMA(c1, v3, acc[7]);
    acc[8] = SC_FMA(c2, v0, acc[8]); acc[9] = SC_FMA(c2, v1, acc[9]);
    acc[10] = SC_FMA(c2, v2, acc[10]); acc[11] = SC_FMA(c2, v3, acc[11]);
    acc[12] = SC_FMA(c3, v0, acc[12]); acc[13] = SC_FMA(c3, v1, acc[13]);
    acc[14] = SC_FMA(c3, v2, acc[14]); acc[15] = SC_FMA(c3, v3, acc[15]);
}

#if SC_GEMM_ASM
#define SC_MM44_K(W0, W1, W2, W3, X0, X1, X2, X3)                                                 \
    "vfma.f32 s0, " W0 ", " X0 "\n\t" "vfma.f32 s1, " W0 ", " X1 "\n\t"                          \
    "vfma.f32 s2, " W0 ", " X2 "\n\t" "vfma.f32 s3, " W0 ", " X3 "\n\t"                          \
    "vfma.f32 s4, " W1 ", " X0 "\n\t" "vfma.f32 s5, " W1 ", " X1 "\n\t"                          \
    "vfma.f32 s6, " W1 ", " X2 "\n\t" "vfma.f32 s7, " W1 ", " X3 "\n\t"                          \
    "vfma.f32 s8, " W2 ", " X0 "\n\t" "vfma.f32 s9, " W2 ", " X1 "\n\t"                          \
    "vfma.f32 s10, " W2 ", " X2 "\n\t" "vfma.f32 s11, " W2 ", " X3 "\n\t"                        \
    "vfma.f32 s12, " W3 ", " X0 "\n\t" "vfma.f32 s13, " W3 ", " X1 "\n\t"                        \
    "vfma.f32 s14, " W3 ", " X2 "\n\t" "vfma.f32 s15, " W3 ", " X3 "\n\t"
#endif

static inline void sc_mm44(const float *x, const float *w0, const float *w1, const float *w2, const float *w3,
                           int32_t n, float *acc)
{
#if SC_GEMM_ASM
    int32_t n2 = n >> 1;
    if (n2 > 0) {
        __asm__ volatile(
            "vldmia %[acc], {s0-s15}\n\t"
            "1:\n\t"
            "vldmia %[x]!, {s16-s23}\n\t"
            "vldmia %[w0]!, {s24-s25}\n\t"
            "vldmia %[w1]!, {s26-s27}\n\t"
            "vldmia %[w2]!, {s28-s29}\n\t"
            "vldmia %[w3]!, {s30-s31}\n\t"
            SC_MM44_K("s24", "s26", "s28", "s30", "s16", "s17", "s18", "s19")
            SC_MM44_K("s25", "s27", "s29", "s31", "s20", "s21", "s22", "s23")
            "subs %[n], %[n], #1\n\t"
            "bne 1b\n\t"
            "vstmia %[acc], {s0-s15}\n\t"
            : [x] "+r"(x), [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3), [n] "+r"(n2)
            : [acc] "r"(acc)
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
              "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27", "s28",
              "s29", "s30", "s31", "cc", "memory");
    }
    if (n & 1) sc_mm44_step(x, *w0, *w1, *w2, *w3, acc);
#else
    int32_t k;
    for (k = 0; k < n; ++k, x += 4) sc_mm44_step(x, *w0++, *w1++, *w2++, *w3++, acc);
#endif
}

static inline void sc_dot4(const float *x, const float *w0, const float *w1, const float *w2, const float *w3,
                           int32_t n, float *acc)
{
    int32_t k = 0;
#if SC_GEMM_ASM
    int32_t n8 = n >> 3;
    if (n8 > 0) {
        __asm__ volatile(
            "vldmia %[acc], {s0-s3}\n\t"
            "1:\n\t"
            "vldmia %[x]!, {s8-s15}\n\t"
            "vldmia %[w0]!, {s16-s23}\n\t"
            "vldmia %[w1]!, {s24-s31}\n\t"
            "vfma.f32 s0, s16, s8\n\t" "vfma.f32 s0, s17, s9\n\t" "vfma.f32 s0, s18, s10\n\t"
            "vfma.f32 s0, s19, s11\n\t" "vfma.f32 s0, s20, s12\n\t" "vfma.f32 s0, s21, s13\n\t"
            "vfma.f32 s0, s22, s14\n\t" "vfma.f32 s0, s23, s15\n\t"
            "vldmia %[w2]!, {s16-s23}\n\t"
            "vfma.f32 s1, s24, s8\n\t" "vfma.f32 s1, s25, s9\n\t" "vfma.f32 s1, s26, s10\n\t"
            "vfma.f32 s1, s27, s11\n\t" "vfma.f32 s1, s28, s12\n\t" "vfma.f32 s1, s29, s13\n\t"
            "vfma.f32 s1, s30, s14\n\t" "vfma.f32 s1, s31, s15\n\t"
            "vldmia %[w3]!, {s24-s31}\n\t"
            "vfma.f32 s2, s16, s8\n\t" "vfma.f32 s2, s17, s9\n\t" "vfma.f32 s2, s18, s10\n\t"
            "vfma.f32 s2, s19, s11\n\t" "vfma.f32 s2, s20, s12\n\t" "vfma.f32 s2, s21, s13\n\t"
            "vfma.f32 s2, s22, s14\n\t" "vfma.f32 s2, s23, s15\n\t"
            "vfma.f32 s3, s24, s8\n\t" "vfma.f32 s3, s25, s9\n\t" "vfma.f32 s3, s26, s10\n\t"
            "vfma.f32 s3, s27, s11\n\t" "vfma.f32 s3, s28, s12\n\t" "vfma.f32 s3, s29, s13\n\t"
            "vfma.f32 s3, s30, s14\n\t" "vfma.f32 s3, s31, s15\n\t"
            "subs %[n], %[n], #1\n\t"
            "bne 1b\n\t"
            "vstmia %[acc], {s0-s3}\n\t"
            : [x] "+r"(x), [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3), [n] "+r"(n8)
            : [acc] "r"(acc)
            : "s0", "s1", "s2", "s3", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "s16", "s17", "s18",
              "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27", "s28", "s29", "s30", "s31", "cc",
              "memory");
        k = n & ~7;
    }
#endif
    {
        float a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
        for (; k < n; ++k) {
            const float v = *x++;
            a0 = SC_FMA(*w0++, v, a0);
            a1 = SC_FMA(*w1++, v, a1);
            a2 = SC_FMA(*w2++, v, a2);
            a3 = SC_FMA(*w3++, v, a3);
        }
        acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
    }
}

#endif /* SC_GEMM_H */
