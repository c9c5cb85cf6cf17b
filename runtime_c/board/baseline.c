/*
 * baseline.c -- the inference function replaced by a stub, for code-size measurement.
 *
 * board.mk links app/main.c + this file (+ the same board files and flags) into
 * build/<target>/baseline.elf. The difference in flash/RAM between the real firmware and
 * this one is exactly what the model (model .c files, runtime kernels and weights) costs.
 * Compiled with -DSC_RUN_FN=<prefix>_run.
 */
#ifndef SC_RUN_FN
#define SC_RUN_FN model_run
#endif

int SC_RUN_FN(const float *input, float *output);
int SC_RUN_FN(const float *input, float *output)
{
    /* Opaque to the caller (separate translation unit): main's code is unchanged. */
    output[0] = input[0];
    return 0;
}
