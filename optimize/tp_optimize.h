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
#include "tp_runtime.h"

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
	/* Rows r0 <= r < r1 of the same values into out[(r1 - r0) * cols]
	 * (equal to those rows of dequantize's output, bit for bit), so that a
	 * packed matrix can be widened a block of rows at a time. */
	void (*dequantize_rows)(const void *packed, size_t rows, size_t cols, size_t r0, size_t r1,
				float *out);
} tp_quant_format;

/* The format called name, or NULL. */
const tp_quant_format *tp_quant_format_find(const char *name);
/* All formats, NULL-terminated. */
const tp_quant_format *const *tp_quant_formats(void);
/* Exact bits per weight of f for a rows x cols matrix: 8 * packed_size /
 * (rows * cols), scales, zeros, masks and padding included. */
double tp_quant_bpw(const tp_quant_format *f, size_t rows, size_t cols);

/* The format a cols-wide row is actually stored in when format's block size
 * does not divide cols (llama.cpp's fallback rules, see README.md): "q5_0"
 * or "fp16"; NULL when format stores such rows itself (or is unknown). */
const char *tp_quant_fallback(const char *format, size_t cols);

/* ---- asymmetric round-to-nearest groups (rtnB_gG; used by GPTQ and AWQ) ---
 * Groups of `group` weights along a row (the input dimension); the last group
 * of a row may be shorter. Layout and rounding: optimize/README.md. bits is
 * 2..8. */

/* Scale and zero of one group of n weights: scale = max(max-min, 1e-5) /
 * (2^bits-1), rounded to fp16 as it is stored (then kept in [2^-24, 65504]),
 * zero = clamp(round(-min/scale), 0, 2^bits-1) with that rounded scale.
 * NaNs are ignored; n = 0 or all NaN acts as min = max = 0. */
void tp_quant_group_params(const float *w, size_t n, int bits, float *scale, int *zero);
/* q = clamp(round(w/scale) + zero, 0, 2^bits-1), round half to even
 * (torch.round); NaN gives q = zero. */
int tp_quant_group_code(float w, float scale, int zero, int bits);
/* Bytes of a rows x cols matrix in the bits/group layout. */
size_t tp_quant_group_packed_size(int bits, size_t group, size_t rows, size_t cols);
/* Pack codes q[rows*cols] (each < 2^bits) with scale[rows*ngroups] and
 * zero[rows*ngroups] (ngroups = ceil(cols/group)); scales are stored as
 * fp16. For methods (GPTQ, AWQ) that choose the codes themselves. */
void tp_quant_group_pack(int bits, size_t group, size_t rows, size_t cols, const uint8_t *q,
			 const float *scale, const int *zero, void *packed);
/* RTN of w into the bits/group layout. */
void tp_quant_group_quantize(int bits, size_t group, const float *w, size_t rows, size_t cols,
			     void *packed);
/* w = (q - zero) * scale of every weight. */
void tp_quant_group_dequantize(int bits, size_t group, const void *packed, size_t rows,
			       size_t cols, float *w);
/* The registered format "rtn<bits>_g<group>" (rtn4_g128, rtn4_g64,
 * rtn4_g256, rtn3_g128; also rtn2_g128, which is not listed by
 * tp_quant_formats), or NULL. */
const tp_quant_format *tp_quant_group_format(int bits, size_t group);

/* ---- half-precision storage ----------------------------------------------- */

/* IEEE binary16 and bfloat16, round to nearest even; NaN stays NaN. */
uint16_t tp_quant_fp16_from_f32(float f);
float tp_quant_fp16_to_f32(uint16_t h);
uint16_t tp_quant_bf16_from_f32(float f);
float tp_quant_bf16_to_f32(uint16_t h);

/* ---- linear layers ------------------------------------------------------
 * A tp_linear that keeps its weights packed in a format and widens them a
 * block of rows at a time during forward (plain-C reference path): memory
 * is packed_size per layer instead of 4 bytes per weight. With fp16/bf16 it
 * is the unquantized baseline at 2 bytes per weight. */

/* Rows widened per block in forward. */
#define TP_QUANT_LINEAR_ROWS 64

/* A layer of rows (out) x cols (in) over packed (f's layout, f->packed_size
 * bytes, malloc'd; owned by the layer on success only); bias[rows] (copied)
 * may be NULL. weight_bytes reports the packed size. */
int tp_quant_linear_new(tp_linear **out, const tp_quant_format *f, void *packed, size_t rows,
			size_t cols, const float *bias);

/* Context of tp_optimize_make_linear_packed. */
typedef struct tp_optimize_packed_ctx {
	const tp_quant_format *format;
	/* Calibration statistics of a layer by name, or NULL; calib_fn may be
	 * NULL (formats that need statistics then fail with TP_EINVAL). */
	const tp_quant_calib *(*calib_fn)(void *calib_ctx, const char *name);
	void *calib_ctx;
	size_t made;          /* layers packed so far */
	uint64_t packed_bytes; /* their packed bytes */
} tp_optimize_packed_ctx;

/* True for the 7 decoder linear layers
 * "model.layers.N.self_attn.{q,k,v,o}_proj" and "model.layers.N.mlp.
 * {gate,up,down}_proj". */
bool tp_optimize_is_decoder_linear(const char *name);

/* A tp_linear_factory_fn (tp_model_opts.make_linear) with ctx a
 * tp_optimize_packed_ctx: quantizes the decoder linear layers with
 * ctx->format into packed layers; TP_ENOTFOUND for the others (lm_head
 * stays dense). */
int tp_optimize_make_linear_packed(void *ctx, const char *name, const float *w,
				   const float *bias, size_t out_dim, size_t in_dim,
				   tp_linear **made);

#endif
