/*
 * tenpak CUDA: the optimizer's packed formats and the model's forward pass
 * on an NVIDIA GPU (optimize/cuda/README.md). Weights are uploaded in the
 * CPU's packed layout, byte for byte, and decoded inside the products.
 *
 * - tp_cuda_available / tp_cuda_query: is there a GPU, what is it.
 * - tp_cuda_linear_new: a tp_linear computing on the GPU from a CPU layer
 *   (packed by tp_quant_linear_new, or any other, e.g. dense fp32); its
 *   forward takes and returns host memory like every tp_linear.
 * - tp_cuda_model_*: a whole tp_model (its current layers) on the GPU, with
 *   a KV cache, the forward pass of runtime/forward.c, perplexity as
 *   tp_runtime_eval_perplexity computes it (no reference model) and speed
 *   as tp_runtime_eval_speed measures it.
 *
 * All functions that can fail return 0 or a negative TP_E* code and set
 * tp_error_last(); without a usable GPU they fail with TP_EUNSUPPORTED.
 */
#ifndef TP_CUDA_H
#define TP_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp_optimize.h"
#include "tp_runtime.h"

/* ---- the device ----------------------------------------------------------- */

typedef struct tp_cuda_device {
	char name[256];
	int index, cc_major, cc_minor, sms;
	uint64_t mem_total, mem_free; /* bytes */
	/* 2 x memory clock x bus width: the datasheet's peak, GB/s (1e9 B/s);
	 * 0 when the driver does not report it. */
	double peak_bandwidth_gbs;
} tp_cuda_device;

/* True when a CUDA device can be used (cudaGetDeviceCount succeeds with at
 * least one); its name into name[cap] when name is not NULL. Never fails. */
bool tp_cuda_available(char *name, size_t cap);
/* Properties of the current device (device 0 unless CUDA_VISIBLE_DEVICES
 * says otherwise). */
int tp_cuda_query(tp_cuda_device *out);
/* Device-to-device copy bandwidth over bytes (read + written), GB/s, best
 * of reps: what a memory-bound kernel can reach. */
int tp_cuda_measure_bandwidth(size_t bytes, int reps, double *gbs);

/* ---- linear layers -------------------------------------------------------- */

/* True when the GPU has a kernel for format f (packed by tp_quant_linear_new):
 * fp16, bf16, int8, nf4, nf4_dq, rtnB_gG, int4_int2_residual, q8_0, q4_0,
 * q5_0, q4_k (with llama.cpp's fallbacks). int4_sparse25 has none. */
bool tp_cuda_format_supported(const tp_quant_format *f);

/* A tp_linear_factory_fn packing every linear layer, lm_head included, in
 * the format ctx (a const tp_quant_format *; NULL: tp_quant_format_fp32(),
 * which keeps an fp32 baseline all packed: the GPU reads dense layers back
 * only slowly). */
int tp_cuda_make_linear(void *ctx, const char *name, const float *w, const float *bias,
			size_t out_dim, size_t in_dim, tp_linear **made);

/* The kernels' decoder compiled for the CPU, run on packed (host memory)
 * in format f: rows r0..r1 of the rows x cols matrix into w. Needs no GPU,
 * so tests check the layouts the kernels read on every machine.
 * TP_EUNSUPPORTED when the GPU has no kernel for f. */
int tp_cuda_dequantize_on_host(const tp_quant_format *f, const void *packed, size_t rows,
			       size_t cols, size_t r0, size_t r1, float *w);

/* The same through the GEMV's 16-byte loads (32 columns of 4-bit codes
 * per load: rtn4_gG with G a multiple of 32, nf4, nf4_dq, when cols % 32
 * == 0), 8 columns at a time elsewhere. */
int tp_cuda_dequantize_on_host_wide(const tp_quant_format *f, const void *packed, size_t rows,
				    size_t cols, size_t r0, size_t r1, float *w);

/* A GPU copy of src (same in/out; src is not kept). A packed layer uploads
 * its packed bytes; any other layer is read back as fp32 weights through
 * its own forward (rows of the identity: exact for layers without bias;
 * with a bias, w = (w + b) - b in fp32) and uploaded as fp32. */
int tp_cuda_linear_new(tp_linear **out, const tp_linear *src);
/* The same layer's values widened on the GPU: w[(r1 - r0) * in] for rows
 * r0..r1 (host memory), which must equal the format's dequantize_rows. */
int tp_cuda_linear_dequantize(const tp_linear *l, size_t r0, size_t r1, float *w);
/* y[n][out] = x[n][in] W^T + bias on the GPU (host buffers), reporting
 * errors (tp_linear's forward cannot: on failure it writes NaN). */
int tp_cuda_linear_run(const tp_linear *l, const float *x, size_t n, float *y);
/* Time of one product of n tokens (input already on the GPU) and the bytes
 * of weights it reads: the best of reps passes over enough device copies of
 * the weights to read at least min_bytes (more than the L2 cache holds, so
 * a GEMV's bytes come from memory), divided by the copies. */
int tp_cuda_linear_time(const tp_linear *l, size_t n, size_t min_bytes, int reps,
			double *seconds, size_t *weight_bytes);

/* ---- models --------------------------------------------------------------- */

typedef struct tp_cuda_model tp_cuda_model;

/* m's embedding (as fp32), norms and every linear layer as m holds it now
 * (a candidate's packed layers, a baseline's fp16/bf16 or fp32 layers),
 * uploaded. m may be freed afterwards. */
int tp_cuda_model_new(tp_cuda_model **out, const tp_model *m);
void tp_cuda_model_free(tp_cuda_model *g);
const tp_model_config *tp_cuda_model_config(const tp_cuda_model *g);
/* Bytes of device memory held by the weights. */
uint64_t tp_cuda_model_weight_bytes(const tp_cuda_model *g);

typedef struct tp_cuda_kv tp_cuda_kv;

int tp_cuda_kv_new(tp_cuda_kv **out, const tp_cuda_model *g, size_t max_ctx, size_t max_batch);
void tp_cuda_kv_free(tp_cuda_kv *kv);
void tp_cuda_kv_reset(tp_cuda_kv *kv);

/* tp_model_forward on the GPU: n tokens at the next positions of kv,
 * logits of rows logits_from..n-1 into logits (host memory). */
int tp_cuda_model_forward(const tp_cuda_model *g, tp_cuda_kv *kv, const int32_t *ids, size_t n,
			  size_t logits_from, float *logits);

/* tp_runtime_eval_perplexity(m, NULL, ...) on the GPU: the same windows,
 * BOS handling and scoring (on the CPU, in double); no KL. */
int tp_cuda_eval_perplexity(const tp_cuda_model *g, const int32_t *ids, size_t n,
			    const tp_eval_opts *opts, tp_eval_result *out);

/* tp_runtime_eval_perplexity_ref on the GPU: KL against the log-probs of
 * tp_runtime_eval_reference or tp_cuda_eval_reference (other ids or opts:
 * TP_EINVAL). runtime/eval.c scores the logits (tp_runtime_eval_forward),
 * so the figures differ from the CPU's only by the forward pass. */
int tp_cuda_eval_perplexity_ref(const tp_cuda_model *g, const tp_eval_ref *ref,
				const int32_t *ids, size_t n, const tp_eval_opts *opts,
				tp_eval_result *out);

/* tp_runtime_eval_reference on the GPU: the baseline's log-probs, which
 * every candidate's KL is computed against, kept as the CPU keeps them
 * (the same file; tp_runtime_eval_perplexity_ref can read it too). */
int tp_cuda_eval_reference(tp_eval_ref **ref, const tp_cuda_model *g, const int32_t *ids,
			   size_t n, const tp_eval_opts *opts, tp_eval_result *out);

/* tp_runtime_eval_speed on the GPU: a prefill of n_prefill tokens, then
 * n_decode single-token steps, each timed to its logits on the host. */
int tp_cuda_measure_speed(const tp_cuda_model *g, const int32_t *ids, size_t n_prefill,
			  size_t n_decode, tp_speed_result *out);

/* ---- calibration --------------------------------------------------------------- */

/* GPTQ/AWQ calibration on the GPU (tp_calib_opts.device): a method's block
 * runs there (norms, RoPE, attention, its 7 products; the captured layers'
 * inputs come back to the host for their statistics), and GPTQ's Hessian
 * X^T X is summed on the device, read back once per capture: the same sums
 * as the CPU's for the same inputs, bit for bit (kernels.cu). */
const tp_calib_device *tp_cuda_calib_device(void);
/* The same steps on the host: the Hessian kernel's host build, the block
 * run by tp_model_forward_layers with observers standing in for the GPU
 * block's (handing the captures their inputs), CPU copies of packed layers
 * for linear_copy. Needs no GPU (tests). */
const tp_calib_device *tp_cuda_calib_device_host(void);

/* ---- the optimizer's backend ------------------------------------------------ */

/* The GPU for tp_optimize_request.backend (`tenpak optimize --device`):
 * probe names the device or says why there is none; measure uploads a
 * candidate and runs tp_cuda_eval_perplexity_ref and tp_cuda_measure_speed. */
const tp_optimize_backend *tp_cuda_optimize_backend(void);

#endif
