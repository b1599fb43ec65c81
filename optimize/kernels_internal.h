/* The kernel tables of each family of formats (not part of the API). */
#ifndef TP_KERNELS_INTERNAL_H
#define TP_KERNELS_INTERNAL_H

#include <stdbool.h>

#include "tp_optimize.h"

/* Instruction sets a kernel may use, each a superset of the one before:
 * plain C; AVX2 + FMA + F16C; AVX-512 F/BW/VL + VNNI (on top of AVX2). */
enum { TP_KERNEL_C = 0, TP_KERNEL_AVX2 = 1, TP_KERNEL_AVX512 = 2 };

/* The highest level this CPU allows, after tp_quant_kernel_force_portable
 * and tp_quant_kernel_force_avx2. */
int tp_quant_kernel_level(void);
/* Never pick the AVX-512 kernels (tests compare each level with plain C);
 * returns the old setting. */
bool tp_quant_kernel_force_avx2(bool on);

/* The kernel for the format called name in this family at the given level
 * (or the highest lower one the family has), or NULL.
 * kernels_ggml.c: int8, q8_0, q4_0, q5_0, q4_k.
 * kernels_group.c: rtnB_gG, nf4, nf4_dq, fp16, bf16, int4_int2_residual. */
const tp_quant_kernel *tp_quant_kernel_ggml(const char *name, int level);
const tp_quant_kernel *tp_quant_kernel_group(const char *name, int level);
/* The group family's kernels that round decode inputs to 8 bits per group
 * (rtnB_gG and int4_sparse25: what tp_quant_kernel_group returns at
 * TP_KERNEL_AVX512 when the CPU has the VBMI/VBMI2 they need) at
 * TP_KERNEL_AVX512, and their plain-C references at TP_KERNEL_C; NULL for
 * other levels and formats. Only call the AVX-512 ones where
 * tp_quant_kernel_level() allows it. */
const tp_quant_kernel *tp_quant_kernel_group_q8(const char *name, int level);
/* The ggml family on fp32 activations (no 8-bit rounding of the input: the
 * widening path's values, summed in another order), for quality
 * measurements: tp_quant_kernel_find's choice under tp_quant_kernel_exact. */
const tp_quant_kernel *tp_quant_kernel_ggml_exact(const char *name, int level);
/* Whether this CPU and OS let the ggml family's AVX-512 kernels hand
 * prefill (16 inputs or more) of q8_0, q4_0 and q4_k to AMX-INT8 tiles;
 * tp_quant_kernel_ggml_amx_allow(false) keeps them on the VNNI tiles (tests
 * compare both; returns the old setting). */
bool tp_quant_kernel_ggml_amx(void);
bool tp_quant_kernel_ggml_amx_allow(bool on);

#endif
