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
	/* Sample input rows x[nx][cols] (AWQ), every x_stride-th row seen, at
	 * most x_max of them; NULL when not kept. */
	float *x;
	size_t nx, x_max, x_stride;
	void *device; /* the Hessian's sums on a tp_calib_device, while capturing */
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

/* ---- kernels: products straight from the packed layout --------------------
 * A format's kernel computes y = x W^T from the packed bytes, dequantizing
 * inside the dot product, without a widened copy of the matrix
 * (optimize/kernels_*.c). Each has a plain-C version and, where the CPU has
 * AVX2/FMA, a SIMD one chosen at run time; tests compare the two and both
 * against the format's dequantize. Activations may be prepared once per
 * forward call (llama.cpp quantizes them to 8 bits per block for its integer
 * dot products); x_prepare NULL means the kernel reads fp32 rows. */
typedef struct tp_quant_kernel {
	const char *name; /* for reports: "q4_0 x q8_0 avx2" */
	/* Bytes of one prepared input row of cols values; NULL with x_prepare. */
	size_t (*x_size)(size_t cols);
	void (*x_prepare)(const float *x, size_t cols, void *xp);
	/* y[t * ldy + (r - r0)] = row r of W . input t for r0 <= r < r1 and
	 * t < n, no bias; x holds n prepared rows x_size(cols) bytes apart, or
	 * n fp32 rows cols floats apart. Never fails. */
	void (*rows)(const void *packed, size_t rows, size_t cols, size_t r0, size_t r1,
		     const void *x, size_t n, float *y, size_t ldy);
} tp_quant_kernel;

/* The kernel of format f on this CPU (SIMD unless forced off), or NULL when
 * f has none (then packed layers widen rows and take fp32 dot products). */
const tp_quant_kernel *tp_quant_kernel_find(const tp_quant_format *f);
/* Use the plain-C kernels only (tests compare both); returns the old
 * setting. */
bool tp_quant_kernel_force_portable(bool on);
/* Keep activations in fp32 in every kernel (results = the format's
 * dequantize + fp32 dot products, summed in another order) instead of
 * rounding them to 8 bits as llama.cpp does for its block formats (the
 * default, which is what serving costs and runs at); returns the old
 * setting. `tenpak optimize` measures quality exact and speed with the
 * default, so a format's quality is the format's, not its kernel's. */
bool tp_quant_kernel_exact(bool on);
/* True when SIMD kernels may run: the CPU has AVX2 and FMA, not forced off. */
bool tp_quant_kernel_use_avx2(void);

/* The format called name, or NULL. */
const tp_quant_format *tp_quant_format_find(const char *name);
/* fp32 held as it is (4 bytes per weight), a "format" for sources and
 * references; not a candidate, so tp_quant_format_find does not list it. */
const tp_quant_format *tp_quant_format_fp32(void);
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
/* The inverse of tp_quant_group_pack: codes q[rows*cols], scale and zero
 * [rows*ngroups] (each may be NULL when not wanted) of a packed matrix. */
void tp_quant_group_unpack(int bits, size_t group, const void *packed, size_t rows, size_t cols,
			   uint8_t *q, float *scale, int *zero);
/* True when f is a registered rtnB_gG format, with its bits and group. */
bool tp_quant_group_format_info(const tp_quant_format *f, int *bits, size_t *group);
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

/* ---- calibration: statistics of every quantized layer's inputs ------------
 * (optimize/calib.c) */

/* True for the 7 linear layers of a decoder block that candidates quantize
 * ("model.layers.N.self_attn.{q,k,v,o}_proj", "model.layers.N.mlp.{gate,up,down}_proj"). */
bool tp_optimize_is_quantized(const char *linear_name);
/* For such a layer, its block and its place in it (0..6: q, k, v, o, gate,
 * up, down; tp_model_linear index = 7 * layer + which); false otherwise. */
bool tp_optimize_linear_slot(const char *linear_name, size_t *layer, size_t *which);

/* A tp_linear that adds the statistics of its inputs x to *stats (cols = in,
 * arrays allocated by the caller; hessian may be NULL) and then runs inner,
 * which it owns until tp_quant_capture_release. While capturing, abs_mean
 * holds sums and hessian its upper triangle: tp_quant_calib_finish makes
 * them means and a full symmetric matrix. */
int tp_quant_capture_new(tp_linear **out, tp_linear *inner, tp_quant_calib *stats);
/* Free the wrapper only and hand back its inner layer. */
tp_linear *tp_quant_capture_release(tp_linear *capture);
/* For a device that runs a block itself (tp_calib_device.block_new): the
 * layer capture l wraps (l itself when it is no capture), and l's
 * statistics of its input rows x[n][in] taken as its forward takes them,
 * without the product (false when l is no capture). */
tp_linear *tp_quant_capture_inner(tp_linear *l);
bool tp_quant_capture_observe(tp_linear *l, const float *x, size_t n);
void tp_quant_calib_finish(tp_quant_calib *c);

/* Statistics for every linear layer of a model, in tp_model_linear order;
 * layers that are not quantized (lm_head) have cols == 0 and NULL arrays. */
typedef struct tp_quant_calib_set {
	size_t count;
	char **names;
	tp_quant_calib *layers;
	size_t tokens; /* calibration tokens fed */
} tp_quant_calib_set;

/* The expensive parts of calibration on another device (optimize/cuda/),
 * given by the caller as tp_optimize_backend is: the library cannot call
 * the device's (which links it). Every member may be NULL: that part runs
 * on the CPU. */
typedef struct tp_calib_device {
	void *ctx;
	/* A copy of src on the device with the same tp_linear forward (host
	 * buffers in and out, its rounding), kept while a method runs a block. */
	int (*linear_copy)(void *ctx, const tp_linear *src, tp_linear **out);
	/* The Hessian's upper triangle, sum x[t][j] x[t][k] over the n rows
	 * x[n][s->cols] (host memory), added on the device in the CPU's order
	 * (double, rows in turn), kept there in s->device between calls. */
	int (*hessian_add)(void *ctx, tp_quant_calib *s, const float *x, size_t n);
	/* The device's sums into s->hessian (upper triangle) when keep, and its
	 * memory released; s->device is NULL after it, even on failure. */
	int (*hessian_take)(void *ctx, tp_quant_calib *s, bool keep);
	/* Decoder block b of m on the device. block_new uploads its norms and
	 * the layers it holds now (a capture's inner layer), for windows of up
	 * to max_n tokens; block_run turns the hidden states x[n][hidden] (host
	 * memory, in place) into the block's output at positions 0..n-1 of an
	 * empty cache, as tp_model_forward_layers(m, kv, b, b + 1, x, n) does
	 * with the device's rounding, handing each captured layer its inputs
	 * (tp_quant_capture_observe). TP_EUNSUPPORTED from block_new: the
	 * block runs on the CPU (with linear_copy's layers). NULL: the same. */
	int (*block_new)(void *ctx, tp_model *m, size_t b, size_t max_n, void **blk);
	int (*block_run)(void *blk, float *x, size_t n);
	void (*block_free)(void *blk);
} tp_calib_device;

typedef struct tp_calib_opts {
	size_t ctx;        /* window length in tokens (0: 512) */
	size_t max_tokens; /* 0: all of ids */
	int32_t bos;       /* put first in every window; -1: none */
	bool hessian;      /* also sum x x^T (cols^2 doubles per layer) */
	/* Keep up to this many input rows per layer, evenly spaced over the
	 * tokens fed (0: none). */
	size_t sample_rows;
	/* Capture only linear layers first..last-1 (tp_model_linear order);
	 * last 0: every quantized layer. The others get cols == 0. */
	size_t first, last;
	/* When set, runs m (its layers first..last-1 capturing) over the same
	 * windows in place of running the whole model over ids, and sets *fed
	 * to the tokens fed: methods keep the hidden states entering a block
	 * and run only that block. NULL: the whole model. */
	int (*feed)(void *feed_ctx, tp_model *m, size_t *fed);
	void *feed_ctx;
	/* Where the Hessian sums and a method's block forward run (NULL: the
	 * CPU); tp_optimize_run sets the GPU backend's. */
	const tp_calib_device *device;
} tp_calib_opts;

/* Run m over ids in windows of ctx tokens with a capture layer around every
 * quantized layer and collect their input statistics; m is left as it was. */
int tp_optimize_calibrate(tp_model *m, const int32_t *ids, size_t n, const tp_calib_opts *o,
			  tp_quant_calib_set *out);
void tp_quant_calib_set_free(tp_quant_calib_set *s);
/* The statistics of the layer called name, or NULL. */
const tp_quant_calib *tp_quant_calib_find(const tp_quant_calib_set *s, const char *name);

/* ---- candidates (optimize/candidates.c) ----------------------------------- */

typedef struct tp_candidate_stats {
	uint64_t weights;      /* weights in the quantized layers */
	uint64_t packed_bytes; /* their packed size, scales and zeros included */
	uint64_t source_bytes; /* their size in the source dtype */
	size_t layers;         /* layers quantized */
	double bpw;            /* 8 * packed_bytes / weights */
	double compression;    /* source_bytes / packed_bytes (quantized layers only) */
	double quant_seconds;  /* time in the quantizer */
} tp_candidate_stats;

/* The stored dtype of dir's linear layers as a codec name ("bf16", "fp16",
 * "fp32") and its bits per weight; weights as in tp_model_opts. */
int tp_optimize_source_dtype(const char *dir, const char *weights, const char **codec,
			     unsigned *bits);

/* What candidates may calibrate with: the statistics of the unquantized
 * model (for formats that want them) and the calibration tokens and options
 * for methods (GPTQ, AWQ) that capture again as they quantize. */
typedef struct tp_candidate_calib {
	const tp_quant_calib_set *stats; /* may be NULL */
	const int32_t *ids;              /* NULL: methods fail with TP_EINVAL */
	size_t n;
	tp_calib_opts opts; /* ctx, max_tokens and bos; the rest is the method's */
} tp_candidate_calib;

/*
 * Load dir with the quantized layers of candidate name packed in its format
 * (tp_quant_linear_new: the format's kernel, or rows widened a block at a
 * time; no fp32 copy of the layers). name is a format ("rtn4_g128", "nf4":
 * that format's own quantize at load time) or a method with a group format
 * ("gptq4_g128", "awq3_g128": optimize/methods_pipeline.c). lm_head is
 * packed in the source dtype when that is bf16 or fp16 (lossless), dense
 * fp32 otherwise; embeddings and norms are fp32. source_bits is the source
 * dtype's bits per weight. TP_ENOTFOUND for an unknown name.
 */
int tp_optimize_candidate_load(tp_model **out, const char *dir, const tp_model_opts *opts,
			       const char *name, const tp_candidate_calib *calib,
			       unsigned source_bits, tp_candidate_stats *stats);

/* The unquantized baseline held as stored: decoder linears and lm_head
 * packed in bf16 or fp16 when the source is (exact, 2 bytes per weight),
 * dense fp32 when it is fp32. The model tp_optimize_candidate_load and
 * tp_optimize_calibrate compare with. */
int tp_optimize_baseline_load(tp_model **out, const char *dir, const tp_model_opts *opts);
/* The packed format holding dir's weights exactly (bf16, fp16), or NULL for
 * fp32 sources or when the dtype cannot be read. */
const tp_quant_format *tp_optimize_head_format(const char *dir, const char *weights);

/* The method candidates (optimize/methods_pipeline.c), NULL-terminated:
 * gptq4_g128, gptq3_g128, awq4_g128, awq4_g256, awq3_g128. */
const char *const *tp_optimize_method_candidates(void);
/* True when name is "gptq<B>_g<G>" or "awq<B>_g<G>" (whether or not that
 * format exists). */
bool tp_optimize_is_method(const char *name);
/*
 * A method candidate, quantized layer by layer in decoder-block order: the
 * model is loaded unquantized, then for each block the inputs of its layers
 * are captured from calib's tokens run through the model whose earlier
 * blocks are already quantized, and the block's layers are replaced
 * (optimize/README.md, "Pipeline"). stats->quant_seconds includes those
 * calibration passes.
 */
int tp_optimize_method_load(tp_model **out, const char *dir, const tp_model_opts *opts,
			    const char *name, const tp_candidate_calib *calib,
			    unsigned source_bits, tp_candidate_stats *stats);

/* ---- methods: GPTQ and AWQ ------------------------------------------------ */
/*
 * Both quantize a weight matrix w[rows][cols] with the asymmetric group rule
 * of the rtnB_gG formats (groups of `group` input columns along each row, the
 * last one may be shorter; group 0 = the whole row), bits in 2..8. They are
 * pure functions: no I/O, one thread, outputs written only on success.
 */

/* What a group-quantized matrix is made of, for a packed export. */
typedef struct tp_quant_result {
	size_t rows, cols, group, ngroups; /* ngroups = ceil(cols / group) */
	int bits;
	uint8_t *q;       /* [rows*cols] codes in 0..2^bits-1, original column order */
	float *scales;    /* [rows*ngroups] */
	uint8_t *zeros;   /* [rows*ngroups] integer zero points */
	uint32_t *g_idx;  /* [cols] group of each input column (= c / group) */
	uint32_t *perm;   /* [cols] GPTQ's processing order (act-order); NULL for AWQ */
	double damp;      /* GPTQ: damping used, as a fraction of the mean diagonal */
	double loss;      /* GPTQ: sum of (w-q)^2 / (2 [H^-1]_cc), its own error measure */
} tp_quant_result;

/* Free what a method put in r (r itself is the caller's). */
void tp_quant_result_free(tp_quant_result *r);

/*
 * GPTQ (Frantar et al. 2022) of w with the Hessian H = 2 calib->hessian /
 * calib->nsamples. Dead inputs (H_jj = 0) get weight 0; H is damped by 1% of
 * its mean diagonal, and if it is still not positive definite the damping is
 * raised (2%, 5%, 10%, 20%, 50%, 100%) before giving up with TP_EINVAL.
 * act_order processes columns by descending H_jj with static groups (group
 * parameters from the unmodified weights, AutoGPTQ's static_groups=True);
 * without it the parameters of a group are set when GPTQ reaches it.
 * w_out[rows*cols] gets the dequantized weights; res, when not NULL, the
 * codes (free with tp_quant_result_free).
 */
int tp_quant_gptq(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib, int bits,
		  size_t group, bool act_order, float *w_out, tp_quant_result *res);

/*
 * AWQ (Lin et al. 2023), step 1: per-input-channel scales shared by the nw
 * matrices w[m][rows[m]][cols] that read the same input (q/k/v, gate/up).
 * s = max(abs_mean^alpha, 1e-4) normalised by sqrt(max(s) min(s)), alpha on
 * the grid 0, 0.05, ..., 0.95, the one minimising
 * sum_m ||x (Q(W_m diag(s)) diag(1/s) - W_m)^T||^2 over the sample inputs
 * x[nx][cols]. abs_mean may be NULL (then taken from x). The error measured
 * is the linear layers' own outputs; tp_quant_awq_search_loss takes another.
 */
int tp_quant_awq_search(const float *const *w, const size_t *rows, size_t nw, size_t cols,
			const float *x, size_t nx, const double *abs_mean, int bits, size_t group,
			float *scales_out, double *alpha_out);

/* The error of one grid point: wq[m][rows[m]][cols] = Q(W_m diag(s))
 * diag(1/s), the weights the folded model computes with. 0 or TP_E*. */
typedef int (*tp_quant_awq_loss_fn)(void *ctx, const float *const *wq, double *loss);

/*
 * The same grid search with the error measured by loss_fn (for AutoAWQ's
 * loss: the output of the block the matrices belong to, which needs the
 * model; optimize/README.md, AWQ). abs_mean[cols] is required; a failing
 * loss_fn ends the search with its code.
 */
int tp_quant_awq_search_loss(const float *const *w, const size_t *rows, size_t nw, size_t cols,
			     const double *abs_mean, int bits, size_t group,
			     tp_quant_awq_loss_fn loss_fn, void *ctx, float *scales_out,
			     double *alpha_out);

/*
 * AWQ step 2: the clipping search on ws = W diag(s) (already scaled) for the
 * inputs it sees, xs = x diag(1/s): per row and group, the max |value| among
 * max|w| (1 - i/20), i = 0..9, minimising the group's output error (AutoAWQ's
 * _search_best_clip). max_out[rows*ngroups].
 */
int tp_quant_awq_clip(const float *ws, size_t rows, size_t cols, const float *xs, size_t nx,
		      int bits, size_t group, float *max_out);

/*
 * AWQ for one matrix with the scales of tp_quant_awq_search: scales the
 * columns (ws = W diag(s)), runs the clipping search when clip is set,
 * clamps, and quantizes ws by RTN. w_out[rows*cols] gets the dequantized ws:
 * the caller folds 1/s into the operation before (optimize/README.md).
 * x may be NULL when clip is false.
 */
int tp_quant_awq(const float *w, size_t rows, size_t cols, const float *scales, const float *x,
		 size_t nx, int bits, size_t group, bool clip, float *w_out, tp_quant_result *res);

/* ---- linear layers ------------------------------------------------------
 * A tp_linear that keeps its weights packed in a format and computes from
 * them with the format's kernel, or, for a format without one, widens them a
 * block of rows at a time and multiplies them with the runtime's fp32 kernel
 * (tp_matmul_rows, the same sums as a dense layer): memory is packed_size
 * per layer instead of 4 bytes per weight. With fp16/bf16 it is the
 * unquantized baseline at 2 bytes per weight. */

/* Rows widened per block in forward without a kernel. */
#define TP_QUANT_LINEAR_ROWS 64

/* A layer of rows (out) x cols (in) over packed (f's layout, f->packed_size
 * bytes, malloc'd; owned by the layer on success only); bias[rows] (copied)
 * may be NULL. weight_bytes reports the packed size. */
int tp_quant_linear_new(tp_linear **out, const tp_quant_format *f, void *packed, size_t rows,
			size_t cols, const float *bias);

/* The format, packed weights and bias (NULL when none) of a layer made by
 * tp_quant_linear_new, valid while it lives (any output may be NULL); false
 * for other layers. Lets a method widen one layer of a packed source at a
 * time, and an exporter read the packed bytes. */
bool tp_quant_linear_parts(const tp_linear *l, const tp_quant_format **f, const void **packed,
			   const float **bias);

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

/* ---- GGUF ------------------------------------------------------------------
 * A GGUF v3 writer (the file format of llama.cpp), for cross-checking tenpak's
 * quantized models with a real engine. It takes tensors already packed in a
 * ggml type, so any packer (F32, Q8_0, Q4_0, Q4_K, ...) can feed it. Tensor
 * data is referenced, not copied: it must stay valid until tp_gguf_write.
 */

/* ggml type ids (ggml.h enum ggml_type). */
typedef enum tp_ggml_type {
	TP_GGML_F32 = 0,
	TP_GGML_F16 = 1,
	TP_GGML_Q4_0 = 2,
	TP_GGML_Q5_0 = 6,
	TP_GGML_Q8_0 = 8,
	TP_GGML_Q4_K = 12,
	TP_GGML_BF16 = 30,
} tp_ggml_type;

#define TP_GGUF_ALIGNMENT 32u
#define TP_GGUF_MAX_DIMS 4u

/* Bytes of one row of ne0 elements of type t; 0 when the type is unknown or
 * its block size does not divide ne0. */
size_t tp_ggml_row_size(tp_ggml_type t, uint64_t ne0);

typedef struct tp_gguf tp_gguf;

int tp_gguf_new(tp_gguf **out);
void tp_gguf_free(tp_gguf *g);
/* Metadata key/value pairs, written in the order added. */
int tp_gguf_kv_str(tp_gguf *g, const char *key, const char *val);
int tp_gguf_kv_u32(tp_gguf *g, const char *key, uint32_t val);
int tp_gguf_kv_f32(tp_gguf *g, const char *key, float val);
int tp_gguf_kv_bool(tp_gguf *g, const char *key, bool val);
int tp_gguf_kv_str_array(tp_gguf *g, const char *key, const char *const *val, size_t n);
int tp_gguf_kv_i32_array(tp_gguf *g, const char *key, const int32_t *val, size_t n);
/* A tensor of ndim dims; ne[0] varies fastest (a Hugging Face weight
 * [out][in] is ne = {in, out}). size must be the packed size of that shape
 * in type t (TP_EINVAL otherwise). */
int tp_gguf_add_tensor(tp_gguf *g, const char *name, tp_ggml_type t, const uint64_t *ne,
		       unsigned ndim, const void *data, size_t size);
/* Write the file (replacing path). */
int tp_gguf_write(const tp_gguf *g, const char *path);

/* Llama models: the hyperparameters as llama.cpp's "llama" architecture reads
 * them, given as plain numbers so this needs no runtime. */
typedef struct tp_gguf_llama {
	const char *name;
	uint32_t ctx, hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
	float rms_eps, rope_theta;
} tp_gguf_llama;

int tp_gguf_llama_meta(tp_gguf *g, const tp_gguf_llama *h);
/* A byte-level vocabulary of 256 tokens, token id = byte value, as llama.cpp's
 * "gpt2" BPE tokenizer with no merges: token texts are GPT-2's
 * byte-to-unicode characters, so tokenizing text is the identity on bytes. */
int tp_gguf_byte_vocab(tp_gguf *g);
/* llama.cpp's name of a Hugging Face tensor ("model.layers.3.mlp.up_proj.weight"
 * -> "blk.3.ffn_up.weight") into out[cap]; TP_ENOTFOUND for other names. */
int tp_gguf_llama_tensor_name(const char *hf, char *out, size_t cap);
/* Reorder the rows of a q/k projection w[heads * head_dim][cols] from HF's
 * rotate-half RoPE layout to llama.cpp's interleaved one (the permute of
 * convert_hf_to_gguf.py): dst row h*hd + 2i + j = src row h*hd + j*hd/2 + i. */
void tp_gguf_rope_permute(const float *src, float *dst, size_t heads, size_t head_dim,
			  size_t cols);

/* ---- export (optimize/export.c; README.md "Export") -------------------------
 * A quantized model written for serving stacks:
 * - q8_0, q4_0, q4_k: one GGUF file, model-<candidate>.gguf, llama.cpp's
 *   "llama" architecture (rows the block does not divide in the format's
 *   fallback type, as the format stores them), byte-level BPE tokenizers only.
 * - rtnB_gG, gptqB_gG (and awq3_gG): model.safetensors in AutoGPTQ's layout
 *   (transformers' GPTQ loader): qweight int32 [in*B/32][out], qzeros int32
 *   [ngroups][out*B/32] (zero - 1: checkpoint_format "gptq"; zeros as they
 *   are, "gptq_v2", when some zero point is 0), scales fp16 [ngroups][out],
 *   g_idx int32 [in].
 * - awq4_gG: model.safetensors in AutoAWQ's GEMM layout: qweight int32
 *   [in][out/8] and qzeros int32 [ngroups][out/8], 8 codes per int32 in the
 *   order 0,2,4,6,1,3,5,7; scales fp16 [ngroups][out].
 * The safetensors layouts come with config.json's quantization_config and
 * the source directory's small files (tokenizer, ...). */

typedef enum tp_export_layout {
	TP_EXPORT_GGUF,
	TP_EXPORT_GPTQ,
	TP_EXPORT_AWQ,
} tp_export_layout;

typedef struct tp_export_plan {
	tp_export_layout layout;
	const char *candidate;         /* the name given */
	const tp_quant_format *format; /* the format every decoder layer is packed in */
	int bits;                      /* group layouts */
	size_t group;
	const char *method; /* "rtn", "gptq", "awq"; NULL for GGUF */
	tp_ggml_type ggml_type; /* GGUF */
	uint32_t file_type;     /* GGUF general.file_type */
} tp_export_plan;

/* How candidate is exported; TP_EUNSUPPORTED naming the exportable
 * candidates when it cannot be. */
int tp_optimize_export_plan(const char *candidate, tp_export_plan *out);

/*
 * Export m, candidate's model, into out_dir (created; not src_dir). Every
 * decoder linear layer of m must be a packed layer (tp_quant_linear_parts) in
 * the candidate's format; norms come from m (an AWQ model's are scaled),
 * every other tensor from src_dir's safetensors (weights as in
 * tp_model_opts) in its stored dtype. m is not changed. *written (may be
 * NULL) gets the path of the weights file written (malloc'd).
 */
int tp_optimize_export(tp_model *m, const char *src_dir, const char *weights,
		       const char *candidate, const char *out_dir, char **written);

/* The GGUF export of a ggml candidate (q8_0, q4_0, q4_k) written to path. */
int tp_optimize_export_gguf(tp_model *m, const char *src_dir, const char *weights,
			    const char *candidate, const char *path);

/* The loaders' reading of the exported layouts, for round-trip tests:
 * w[out][in] = (q - z) * scale. GPTQ: v1 adds 1 to the stored zero (AutoGPTQ);
 * g_idx gives each input's group. AWQ: 4 bits, group divides in. */
int tp_export_gptq_dequantize(int bits, size_t in, size_t out, size_t ngroups,
			      const uint32_t *qweight, const uint32_t *qzeros,
			      const uint16_t *scales, const int32_t *g_idx, bool v1, float *w);
int tp_export_awq_dequantize(size_t group, size_t in, size_t out, const uint32_t *qweight,
			     const uint32_t *qzeros, const uint16_t *scales, float *w);

/* ---- hardware, roofline, price, selection, reports -------------------------
 * What a candidate costs to serve and which one to pick (optimize/hardware.c,
 * cost.c, select.c, report.c, svg.c). Figures are plain numbers so that the
 * arithmetic can be tested by hand; none of this runs a model. */

/* A target machine: built in (optimize/hardware/NAME.json, compiled in) or
 * a user's file of the same shape. Unknown figures are 0. */
typedef struct tp_hw_profile {
	char name[64];
	char description[128];
	double memory_gb;     /* decimal GB (1e9 bytes) */
	double bandwidth_gbs; /* memory bandwidth, GB/s */
	double peak_tflops;   /* dense fp16/bf16 (cpu-local: measured fp32 GEMM) */
	double int8_tops;
	double usd_per_hour;
	double usd_per_hour_per_thread; /* cpu-local: price = this x threads */
	bool measured;                  /* cpu-local: figures are measured here */
	char price_source[256], price_read[64], price_note[512];
	char spec_source[256], spec_read[64], spec_note[512];
} tp_hw_profile;

/* Built-in profile names, NULL-terminated. */
const char *const *tp_hw_profile_names(void);
/* Parse a profile from JSON text (fields as the files in optimize/hardware);
 * TP_EINVAL with the reason for a bad one. */
int tp_hw_profile_parse(const char *json, size_t len, tp_hw_profile *out);
/* A built-in profile by name (case-insensitive), or the JSON file at
 * name_or_path when it names an existing file; TP_ENOTFOUND otherwise. */
int tp_hw_profile_load(const char *name_or_path, tp_hw_profile *out);
/* Fill a measured profile (cpu-local) on this machine: physical memory,
 * the CPU's name and price = usd_per_hour_per_thread x threads unless
 * already set; with rooflines also a STREAM-style read bandwidth with pool's
 * threads (best of 5 reads of tp_hw_stream_bytes(last-level cache), freed
 * after) and the fp32 GEMM's FLOP/s, else those stay 0 (unknown): only
 * projections need them. */
int tp_hw_measure_local(tp_hw_profile *p, tp_pool *pool, bool rooflines);
/* The bandwidth read's size for a last-level cache of llc bytes (0:
 * unknown): 8 x llc, at least 64 MiB, at most 512 MiB. */
size_t tp_hw_stream_bytes(size_t llc);

/* What one token costs a model in bytes and FLOPs (the roofline's inputs). */
typedef struct tp_roofline_in {
	double weight_bytes;  /* every weight as the candidate stores it */
	double matmul_params; /* weights multiplied per token (all but the embedding table) */
	double kv_bytes_per_pos; /* KV cache bytes per context position, all layers */
	double attn_dim;      /* layers x heads x head_dim: attention FLOPs scale */
	size_t ctx;           /* decode reads a KV cache of ctx positions */
	size_t prompt;        /* prefill length */
	size_t batch;         /* sequences decoded together (>= 1) */
} tp_roofline_in;

/* KV cache bytes per position of cfg's model in the runtime (fp32 K and V). */
double tp_roofline_kv_bytes_per_pos(const tp_model_config *cfg);
/* Roofline throughput (tokens/s, all sequences of the batch) on hw:
 * decode steps move weight_bytes + batch x KV(ctx) and compute batch x
 * (2 matmul_params + 4 attn_dim ctx) FLOPs, the slower bound wins; prefill
 * tokens cost 2 matmul_params + 2 attn_dim prompt FLOPs and the weights are
 * read once per prompt x batch tokens. 0 when hw lacks the figure needed
 * (bandwidth for decode, peak for prefill). */
double tp_roofline_decode_tps(const tp_roofline_in *in, const tp_hw_profile *hw);
double tp_roofline_prefill_tps(const tp_roofline_in *in, const tp_hw_profile *hw);
/* measured / roofline, kept in (0, 1]; 1 when either is 0. */
double tp_roofline_efficiency(double measured_tps, double roofline_tps);
/* $/1M tokens at usd_per_hour and tps tokens/s: usd / (tps x 3600) x 1e6;
 * 0 when tps <= 0. */
double tp_cost_per_1m(double usd_per_hour, double tps);
/* Blended $/1M for in_parts input (prefill) tokens per out_parts output
 * (decode) tokens; prefill_cost 0 (unknown) gives decode_cost. */
double tp_cost_blended(double prefill_cost, double decode_cost, double in_parts,
		       double out_parts);
/* Parse "3:1" (or "3") into parts; false when malformed or not positive. */
bool tp_cost_parse_ratio(const char *s, double *in_parts, double *out_parts);

/* One candidate as selection and the reports see it. */
typedef struct tp_candidate_figures {
	const char *codec;
	double bpw, compression, ppl, ppl_delta_pct, kl_mean;
	double prefill_tps, throughput_tps; /* decode tokens/s on the target */
	double latency_p50_ms, latency_p95_ms, latency_p99_ms;
	double memory_gb;                   /* weights + KV cache at ctx x batch */
	double cost_prefill, cost_decode, cost_per_1m; /* USD per 1M tokens */
	bool projected;                     /* speed_source: projected or measured */
	double eff_decode, eff_prefill;     /* calibration used when projected */
	/* Set by tp_select_run. */
	bool passed;
	char reason[512]; /* "awq4_g256: ΔPPL 2.4% > 2.0%; ..." when rejected */
} tp_candidate_figures;

/* What a candidate's figures are computed from. */
typedef struct tp_figures_in {
	const char *codec;
	const tp_candidate_stats *st;
	const tp_eval_result *r;
	double base_ppl;
	const tp_speed_result *sp;   /* measured on local, batch 1 */
	const tp_model_config *cfg;
	uint64_t params;             /* tp_model_params */
	unsigned source_bits;        /* bits per weight of the unquantized weights */
	size_t ctx, batch;
	double io_in, io_out;
	const tp_hw_profile *target, *local;
} tp_figures_in;

/* The roofline inputs of a candidate: its weights at their bits per weight
 * (packed layers plus the rest in the source dtype), the matmul weights (all
 * but an untied embedding table), the KV cache per position. */
tp_roofline_in tp_figures_roofline(const tp_figures_in *in);
/* Quality, speed (measured when the target is the measured local profile
 * and batch is 1, else projected: target roofline x the efficiency reached
 * locally), memory and price of one candidate. */
void tp_figures_compute(const tp_figures_in *in, tp_candidate_figures *out);

/* Constraints; NAN = not set. */
typedef struct tp_select_constraints {
	double max_ppl_delta_pct, max_kl, min_compression, max_latency_p99_ms,
		min_throughput_tps, max_memory_gb;
	double hw_memory_gb; /* the target's memory; 0: unknown, not checked */
} tp_select_constraints;

/* All unset. */
tp_select_constraints tp_select_constraints_none(void);
/* Set the constraint of a command-line flag ("--max-kl", ...) from its
 * value; TP_EINVAL for an unknown flag or a value that is not a finite
 * number >= 0. */
int tp_select_constraint_set(tp_select_constraints *c, const char *flag, const char *value);

typedef struct tp_select_result {
	long winner;          /* index into the figures, -1 when none passes */
	size_t passed;
	/* When none passes: the constraint that binds (the flag, "" when only
	 * the hardware's memory rejects) and what it says. */
	char binding_flag[32];
	char binding[512];
} tp_select_result;

/* Check every candidate against c (passed/reason), then pick the cheapest
 * passing one by cost_per_1m; costs within 1e-9 relative are a tie, broken
 * by lower KL, then lower ΔPPL, then the earlier candidate. */
void tp_select_run(tp_candidate_figures *f, size_t n, const tp_select_constraints *c,
		   tp_select_result *out);

/* What the reports show besides the candidates. */
typedef struct tp_report_info {
	const char *model, *baseline_codec;
	double baseline_ppl;
	const char *eval_text;
	size_t eval_tokens, ctx, prompt, decode_steps, batch;
	double io_in, io_out;
	bool quick;
	double budget_s, elapsed_s;
	const tp_hw_profile *hw, *local;
	const tp_select_constraints *constraints;
	const tp_select_result *sel;
	const char *const *skipped; /* "name: why", count nskipped */
	size_t nskipped;
	const char *const *failed; /* "name: error" */
	size_t nfailed;
} tp_report_info;

/* The Markdown report: every candidate, the winner, the rejections, the
 * hardware and how each figure was obtained. */
int tp_report_markdown_write(const char *path, const tp_report_info *info,
			     const tp_candidate_figures *f, size_t n);

/* The scatter plot (SVG, 800x500): KL against blended $/1M on the target,
 * log KL axis, the Pareto front (no other point is both cheaper and lower
 * in KL) joined by a line, the winner circled, rejected points hollow. */
int tp_svg_plot_write(const char *path, const tp_report_info *info,
		      const tp_candidate_figures *f, size_t n);

/* ---- sparse deltas (optimize/sparsify.c) -----------------------------------
 * A lossy alternative to storing a fine-tune: keep a fraction of its update
 * Δ = FT − BASE per tensor, quantize what is kept, and write
 * OUT = round_to_dtype(BASE + Q(Δ)). OUT is a different model: its quality
 * against FT is measured, never assumed. */

typedef enum tp_sparsify_select {
	TP_SPARSIFY_SELECT_MAGNITUDE, /* largest |Δ| */
	TP_SPARSIFY_SELECT_ACTIVATION, /* largest |Δ_ij|·‖x_j‖ (Wanda's score) */
	TP_SPARSIFY_SELECT_DARE,       /* random, kept entries scaled by 1/D */
} tp_sparsify_select;

/* "magnitude", "activation", "dare"; "?" for an invalid value. */
const char *tp_optimize_sparsify_select_name(tp_sparsify_select s);
/* TP_ENOTFOUND for an unknown name. */
int tp_optimize_sparsify_select_from_name(const char *name, tp_sparsify_select *out);

#define TP_SPARSIFY_BITS_MIN 2
#define TP_SPARSIFY_BITS_MAX 8

typedef struct tp_sparsify_tensor_stats {
	uint64_t entries; /* rows * cols */
	uint64_t chosen;  /* entries the selection kept */
	uint64_t nonzero; /* entries of Q(Δ) that are not 0 after quantization */
	double sq_err;    /* sum (Q(Δ) − Δ)² over all entries */
} tp_sparsify_tensor_stats;

/*
 * The update one tensor keeps: delta[rows][cols] (fp32, in place) becomes
 * Q(sparse(Δ)). The selection keeps ceil(density · rows · cols) entries
 * (never one that is 0): magnitude by |Δ|, activation by |Δ_ij|·col_norm[j]
 * (col_norm NULL: magnitude), dare each entry with probability density from
 * a generator seeded with seed, kept entries multiplied by 1/density. Kept
 * values are then rounded to a symmetric bits-bit grid with one scale per
 * row (for bits <= 4 the scale that minimizes the row's squared error over
 * a few clipping ratios, else the row's largest |value|). density in
 * (0, 1], bits in [TP_SPARSIFY_BITS_MIN, TP_SPARSIFY_BITS_MAX].
 */
int tp_optimize_sparsify_delta(float *delta, size_t rows, size_t cols, const float *col_norm,
			       tp_sparsify_select select, double density, unsigned bits,
			       uint64_t seed, tp_sparsify_tensor_stats *stats);

/* One step of a density search, or the single measurement of a fixed
 * density. ppl_delta_pct = 100 · (ppl(OUT) / ppl(FT) − 1). */
typedef struct tp_sparsify_step {
	double density;
	double kl, ppl, ppl_delta_pct;
	bool within; /* meets the budget (always true without one) */
} tp_sparsify_step;

typedef int (*tp_sparsify_step_fn)(void *ctx, const tp_sparsify_step *step);

#define TP_SPARSIFY_MAX_STEPS 32

typedef struct tp_sparsify_opts {
	double density;           /* (0, 1]; used when no budget is set */
	double max_ppl_delta_pct; /* > 0: the smallest density with |ΔPPL| within it */
	double max_kl;            /* > 0: the same for KL(FT || OUT) in nats */
	unsigned bits;            /* 0: 8 */
	tp_sparsify_select select;
	uint64_t seed;            /* dare */
	/* Evaluation text (FT's tokenizer); NULL with no budget: no quality
	 * figures. Calibration text for activation (NULL: the eval text). */
	const char *eval_text, *calib_text;
	size_t eval_len, calib_len;
	size_t ctx;        /* evaluation and calibration windows (0: 512) */
	size_t max_tokens; /* of the eval text (0: all) */
	bool skip_estimate; /* do not estimate the stored size */
	unsigned threads;  /* 0: all cores */
	tp_sparsify_step_fn on_step; /* each measured density, in order */
	void *step_ctx;
	tp_progress_fn progress; /* tensors done / total, while writing */
	void *progress_ctx;
} tp_sparsify_opts;

typedef struct tp_sparsify_result {
	double density;
	unsigned bits;
	tp_sparsify_select select;
	bool within_budget;  /* false: even density 1 misses the budget (OUT
			      * is then written at density 1) */
	uint64_t tensors;    /* in FT */
	uint64_t sparsified; /* tensors written as BASE + Q(Δ) */
	uint64_t exact;      /* changed tensors kept exactly (1-D, other shape
			      * or dtype than the base, no base) */
	uint64_t unchanged;  /* equal to the base: copied */
	uint64_t changed_weights; /* entries of sparsified and exact tensors */
	uint64_t kept;       /* nonzero entries of Q(Δ) */
	uint64_t out_bytes;  /* of OUT's weight files */
	/* Quality on the eval text (has_quality): OUT and BASE against FT. */
	bool has_quality, has_base;
	size_t eval_tokens;
	double ppl_ft, ppl_out, ppl_base;
	double kl_out, kl_base;        /* KL(FT || model), nats per token */
	double ppl_delta_pct, ppl_delta_base_pct;
	/* What the delta codec is estimated to store for OUT against BASE. */
	bool has_estimate;
	uint64_t stored_bytes;
	double stored_fraction;        /* stored_bytes / out_bytes */
	double bits_per_changed_weight; /* 8 · stored_bytes / changed_weights */
	size_t nsteps;
	tp_sparsify_step steps[TP_SPARSIFY_MAX_STEPS];
} tp_sparsify_result;

/*
 * Write out_dir (created) from base_dir and ft_dir (each with config.json and
 * model.safetensors or a shard index): every FT weight file under its own
 * name, float tensors of 2 or more dimensions that changed and match the
 * base in shape as BASE + Q(Δ) in FT's dtype, every other tensor and the
 * safetensors headers byte-identical to FT; FT's small files copied and its
 * model card's front matter given base_model and the recipe. With a budget
 * the density is searched by bisection on measured quality.
 */
int tp_optimize_sparsify(const char *base_dir, const char *ft_dir, const char *out_dir,
			 const tp_sparsify_opts *opts, tp_sparsify_result *out);

/* ---- the optimizer run (optimize/run.c; `tenpak optimize`) ----------------
 * One call measures what every candidate costs: the baseline is loaded and
 * scored once (its log-probs kept, the model freed), the calibration
 * statistics taken, then each candidate is loaded packed, scored against
 * the baseline and timed, one model in memory at a time; a candidate that
 * would not finish within the budget is skipped, one that fails is kept
 * with its error and the others still run. Then every measured candidate's
 * figures on the target hardware and the selection. The outcome feeds the
 * table (the caller's), the JSON / Markdown / SVG reports and the export. */

#define TP_OPTIMIZE_CANDIDATES_MAX 64
#define TP_OPTIMIZE_COMPARE_MAX 8

/* Where candidates are measured. CUDA and AUTO use the request's backend
 * when it finds a GPU, else fall back to the CPU with a note saying why. */
typedef enum tp_optimize_device {
	TP_OPTIMIZE_DEVICE_CPU,
	TP_OPTIMIZE_DEVICE_CUDA,
	TP_OPTIMIZE_DEVICE_AUTO,
} tp_optimize_device;

/* A device measuring candidates instead of the CPU, given by the caller
 * (optimize/cuda/ links this library, so the library cannot call it). */
typedef struct tp_optimize_backend {
	const char *name; /* "cuda" */
	void *ctx;
	/* 0 with the device's name in name[cap] when one is usable; else
	 * negative with the reason in tp_error_last(). */
	int (*probe)(void *ctx, char *name, size_t cap);
	/* Candidate m (loaded on the CPU) on the device: quality against ref as
	 * tp_runtime_eval_perplexity_ref scores it, speed as
	 * tp_runtime_eval_speed measures it (prefill, then decode steps). */
	int (*measure)(void *ctx, const tp_model *m, const tp_eval_ref *ref, const int32_t *ids,
		       size_t n, const tp_eval_opts *eo, size_t prefill, size_t decode,
		       tp_eval_result *r, tp_speed_result *sp);
	/* The baseline m's reference log-probs on the device, as
	 * tp_runtime_eval_reference keeps them. TP_EUNSUPPORTED (or NULL):
	 * the CPU computes them instead; another error fails the run. */
	int (*reference)(void *ctx, const tp_model *m, tp_eval_ref **ref, const int32_t *ids,
			 size_t n, const tp_eval_opts *eo, tp_eval_result *r);
	/* The calibration on the device (tp_calib_opts.device), or NULL. */
	const tp_calib_device *calib;
} tp_optimize_backend;

/* The built-in hardware profile of a GPU from its device name ("NVIDIA
 * H200" -> "h200"), NULL when none matches. */
const char *tp_optimize_gpu_profile(const char *device_name);

/* A text given by the caller (text NULL: the built-in one). */
typedef struct tp_optimize_text {
	const char *label; /* the file name shown in reports */
	const char *text;
	size_t len;
} tp_optimize_text;

typedef struct tp_optimize_request {
	const char *model;            /* Hugging Face model directory */
	tp_optimize_text eval, calib; /* must differ */
	const char *candidates;       /* comma-separated names; NULL: every format */
	size_t ctx;                   /* window; 0: 512 or the model's maximum */
	size_t max_tokens;            /* of each text; 0: all (quick: 1024), SIZE_MAX: all */
	unsigned threads;             /* 0: all cores */
	const char *hardware;         /* profile name or file; NULL: cpu-local */
	const char *compare;          /* comma-separated profiles, or NULL */
	tp_select_constraints constraints;
	size_t batch;                 /* >= 1 */
	double io_in, io_out;         /* blended price ratio, both > 0 */
	double usd_per_hour;          /* > 0: the target's price instead of its profile's */
	bool quick;                   /* fewer decode steps (and the defaults above) */
	double budget_s;              /* > 0: skip what would not finish (quick: 120) */
	const char *export_dir;       /* checked before the run; see outcome_export */
	const char *export_candidate; /* NULL: the winner */
	tp_optimize_device device;
	const tp_optimize_backend *backend; /* NULL: no GPU path built in */
} tp_optimize_request;

/* No constraints, batch 1, blended 3:1, device CPU, the rest 0 / NULL. */
void tp_optimize_request_init(tp_optimize_request *req);

/* One candidate's measurement. */
typedef struct tp_optimize_candidate {
	char *name;
	bool ok, skipped;
	char error[256]; /* why it failed or was skipped */
	tp_candidate_stats st;
	tp_eval_result r;  /* against the baseline, fp32 activations */
	tp_speed_result sp; /* the serving kernels, measured here */
	double seconds;
	long fig; /* index into the outcome's figures, -1 when not measured */
} tp_optimize_candidate;

typedef struct tp_optimize_kept tp_optimize_kept;

/* Read-only for callers; it points into itself, so it is never copied. */
typedef struct tp_optimize_outcome {
	char *model;
	const char *baseline_codec; /* "bf16", "fp16", "fp32" */
	unsigned source_bits;
	tp_eval_result baseline;
	char *eval_text, *calib_text; /* labels: a file, or "default:eval.txt" */
	size_t calib_tokens;
	tp_model_config config;
	uint64_t params;
	size_t ctx, prefill, decode_steps, batch;
	double io_in, io_out;
	tp_optimize_device device; /* where it was measured: CPU or CUDA */
	char device_name[128];     /* the GPU's name when CUDA */
	char device_note[640];     /* why CUDA or AUTO fell back to the CPU, or "" */
	tp_optimize_candidate *candidates; /* in the request's order */
	size_t ncandidates, nfailed, nskipped;
	tp_candidate_figures *figures; /* one per measured candidate */
	size_t nfigures;
	tp_select_constraints constraints; /* with the target's memory */
	tp_select_result sel;
	tp_hw_profile hw, local; /* the target; this machine, measured */
	tp_hw_profile compare[TP_OPTIMIZE_COMPARE_MAX];
	size_t ncompare;
	char measured_on[200]; /* "cpu-local (this machine: ...)" */
	tp_report_info info;   /* what the reports show */
	tp_optimize_kept *kept; /* what the export needs */
} tp_optimize_outcome;

/* Progress while it runs; every callback may be NULL. A non-zero return
 * (a negative TP_E* code, with tp_error_set) stops the run with it. */
typedef struct tp_optimize_progress {
	void *ctx;
	/* The baseline is scored (o->baseline). */
	int (*baseline)(void *ctx, const tp_optimize_outcome *o);
	/* Candidate i is measured, failed or skipped. */
	int (*candidate)(void *ctx, const tp_optimize_outcome *o, size_t i);
	/* A line worth showing (the device fallback, also in device_note). */
	void (*note)(void *ctx, const char *msg);
} tp_optimize_progress;

/* Run req. Failures of single candidates are in the outcome (nfailed);
 * an error return means no outcome (bad request, model, text, profile). */
int tp_optimize_run(const tp_optimize_request *req, const tp_optimize_progress *progress,
		    tp_optimize_outcome **out);
void tp_optimize_outcome_free(tp_optimize_outcome *o);
/* The figures of measured candidate i on another target (--compare). */
void tp_optimize_outcome_figures(const tp_optimize_outcome *o, size_t i,
				 const tp_hw_profile *target, tp_candidate_figures *out);
/* The request's export: its export_candidate, else the winner (TP_EINVAL
 * when none passes), into export_dir. *name and *written (malloc'd) say
 * what went where; both NULL when the request exports nothing. */
int tp_optimize_outcome_export(const tp_optimize_outcome *o, const char **name, char **written);
/* The reports of an outcome: JSON (optimize/report.c), Markdown, SVG plot. */
int tp_optimize_outcome_write_json(const tp_optimize_outcome *o, const char *path);
int tp_optimize_outcome_write_markdown(const tp_optimize_outcome *o, const char *path);
int tp_optimize_outcome_write_svg(const tp_optimize_outcome *o, const char *path);

#endif
