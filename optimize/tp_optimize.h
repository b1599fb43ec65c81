/*
 * tenpak optimize: quantization candidates for a model's linear layers and
 * their measured quality.
 *
 * Contract:
 * - A *format* (tp_quant_format) is a packed storage layout for one weight
 *   matrix w[rows = out][cols = in] (row-major, as Hugging Face stores it):
 *   a plain-C reference quantize/dequantize pair, its packed size and its
 *   exact bits per weight, scales and zeros included. Formats do no I/O and
 *   never fail on any float input (NaN/Inf included): they can be fuzzed.
 * - A *method* decides the quantized values: round to nearest (RTN) for
 *   every format, and GPTQ / AWQ for the group formats, which need
 *   calibration statistics of the layer's inputs (tp_quant_calib).
 * - A *candidate* is a method with a format ("gptq4_g128" = GPTQ into the
 *   4-bit g128 group format); its name is what the CLI and JSON use.
 * - Embeddings, norms and lm_head stay in the source precision; the 7 linear
 *   layers of every decoder block (q, k, v, o, gate, up, down) are quantized.
 */
#ifndef TP_OPTIMIZE_H
#define TP_OPTIMIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp_common.h"

/* ---- calibration statistics of one linear layer's inputs ----------------- */

typedef struct tp_quant_calib {
	size_t cols;         /* input dimension */
	uint64_t nsamples;   /* input rows (tokens) seen */
	double *abs_mean;    /* [cols] mean |x_j| (AWQ scales) */
	double *sq_sum;      /* [cols] sum x_j^2 (importance |w|*||x||) */
	double *hessian;     /* [cols*cols] sum x x^T, or NULL when not kept (GPTQ) */
} tp_quant_calib;

/* ---- storage formats ------------------------------------------------------ */

typedef struct tp_quant_format {
	const char *name; /* "int8", "nf4", "nf4_dq", "rtn4_g128", "q8_0", "q4_0", "q4_k", ... */
	/* Bytes of the packed form of a rows x cols matrix. */
	size_t (*packed_size)(size_t rows, size_t cols);
	/* Round-to-nearest quantization of w into packed (packed_size bytes).
	 * calib may be NULL except for formats that need it (they say so with
	 * TP_EINVAL). */
	int (*quantize)(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib,
			void *packed);
	/* w = the values packed stands for. */
	void (*dequantize)(const void *packed, size_t rows, size_t cols, float *w);
} tp_quant_format;

/* The format called name, or NULL. */
const tp_quant_format *tp_quant_format_find(const char *name);
/* All formats, NULL-terminated. */
const tp_quant_format *const *tp_quant_formats(void);
/* Exact bits per weight of f for a rows x cols matrix. */
double tp_quant_bpw(const tp_quant_format *f, size_t rows, size_t cols);

#endif
