/* The kernel tables of each family of formats (not part of the API). */
#ifndef TP_KERNELS_INTERNAL_H
#define TP_KERNELS_INTERNAL_H

#include <stdbool.h>

#include "tp_optimize.h"

/* The kernel for the format called name in this family (SIMD when simd is
 * set and the family has one), or NULL.
 * kernels_ggml.c: int8, q8_0, q4_0, q5_0, q4_k.
 * kernels_group.c: rtnB_gG, nf4, nf4_dq, fp16, bf16, int4_int2_residual. */
const tp_quant_kernel *tp_quant_kernel_ggml(const char *name, bool simd);
const tp_quant_kernel *tp_quant_kernel_group(const char *name, bool simd);
/* The ggml family on fp32 activations (no 8-bit rounding of the input: the
 * widening path's values, summed in another order), for quality
 * measurements: tp_quant_kernel_find's choice under tp_quant_kernel_exact. */
const tp_quant_kernel *tp_quant_kernel_ggml_exact(const char *name, bool simd);

#endif
