/*
 * Shared between the host sources (C) and the kernels (kernels.cu, C++):
 * plain C types only, so both compilers read it. Not installed.
 */
#ifndef TP_CUDA_INTERNAL_H
#define TP_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How the kernels read a weight matrix w[rows][cols]: the packed bytes of
 * the CPU format, uploaded unchanged (optimize/README.md has the layouts). */
typedef enum tp_cuda_kind {
	TP_CUDA_F32,    /* row-major fp32 (dense layers) */
	TP_CUDA_FP16,
	TP_CUDA_BF16,
	TP_CUDA_INT8,
	TP_CUDA_NF4,
	TP_CUDA_NF4_DQ,
	TP_CUDA_GROUP,    /* rtnB_gG: bits, group */
	TP_CUDA_RESIDUAL, /* int4_int2_residual: group 4/128 then 2/128 at off2 */
	TP_CUDA_Q8_0,
	TP_CUDA_Q4_0,
	TP_CUDA_Q5_0,
	TP_CUDA_Q4_K,
} tp_cuda_kind;

typedef struct tp_cuda_wfmt {
	int kind; /* tp_cuda_kind */
	int bits;
	uint32_t group;
	uint64_t rows, cols;
	uint64_t off2;      /* residual: byte offset of the 2-bit part */
	const uint8_t *p;   /* device pointer to the packed bytes */
} tp_cuda_wfmt;

/* Kernel launchers (kernels.cu). Each returns a cudaError_t as int (0 =
 * cudaSuccess) and runs on the default stream; pointers are device ones. */

/* The NF4 code and nf4_dq's 8-bit map into constant memory (once). */
int tp_cuda_k_set_codes(const float nf4[16], const float dq[256]);
/* The same decoder compiled for the host, on host bytes (f->p), with the
 * tables of tp_cuda_k_set_codes_host: lets tests without a GPU check the
 * layouts the kernels read. */
void tp_cuda_k_set_codes_host(const float nf4[16], const float dq[256]);
/* wide: the GEMV's 16-byte path (32 columns per load) where the layout
 * allows it, as on the device; else 8 columns at a time. */
void tp_cuda_k_dequantize_host(const tp_cuda_wfmt *f, uint64_t r0, uint64_t r1, float *out,
			       int wide);
/* out[(r - r0) * cols + c] = w[r][c] for r0 <= r < r1. */
int tp_cuda_k_dequantize(const tp_cuda_wfmt *f, uint64_t r0, uint64_t r1, float *out);
/* y[t * ldy + r] = bias[r] (bias may be NULL) + sum_c x[t * cols + c] w[r][c]
 * for t < n, r < rows: one warp per row for n == 1, tiles otherwise. */
int tp_cuda_k_linear(const tp_cuda_wfmt *f, const float *bias, const float *x, uint64_t n,
		     float *y, uint64_t ldy);
/* x[t][:] = embed[ids[t]][:]. */
int tp_cuda_k_embed(const float *embed, const int32_t *ids, uint64_t n, uint64_t dim, float *x);
/* out = w * (x * r) with r = 1 / sqrt(mean(x^2) + eps), per row (forward.c). */
int tp_cuda_k_rms_norm(const float *x, const float *w, uint64_t n, uint64_t dim, double eps,
		       float *out);
/* HF rotate-half RoPE of v[n][nheads][hd] at positions pos0.. divided by
 * pos_div (linear scaling; 1 otherwise). */
int tp_cuda_k_rope(float *v, uint64_t n, uint64_t nheads, uint64_t hd, uint64_t pos0,
		   double pos_div, const float *inv_freq);
/* Append kb/vb [n][kv_heads][hd] at positions pos.. of cache layer base
 * k/v [kv_heads][max_ctx][hd]. */
int tp_cuda_k_cache_store(float *k, float *v, const float *kb, const float *vb, uint64_t n,
			  uint64_t kv_heads, uint64_t hd, uint64_t max_ctx, uint64_t pos);
/* Causal attention of q[n][heads][hd] over the layer's cache (positions <
 * pos0 + t + 1 for query t) into att[n][heads][hd]; GQA maps head h to
 * KV head h / (heads / kv_heads). */
int tp_cuda_k_attention(const float *q, const float *k, const float *v, float *att, uint64_t n,
			uint64_t heads, uint64_t kv_heads, uint64_t hd, uint64_t max_ctx,
			uint64_t pos0);
/* g = silu(g) * u, elementwise over count values. */
int tp_cuda_k_swiglu(float *g, const float *u, uint64_t count);
/* x += d over count values. */
int tp_cuda_k_add(float *x, const float *d, uint64_t count);
/* GPTQ's Hessian: h[j][k] += sum_t x[t][j] x[t][k] over x[n][cols] for
 * k >= j (upper triangle of h[cols][cols], doubles), each cell summed in
 * row order as optimize/calib.c sums it; the _host build runs the same
 * steps on host memory (tests without a GPU). cols <= 16 * 65535. */
int tp_cuda_k_hessian_add(const float *x, uint64_t n, uint64_t cols, double *h);
void tp_cuda_k_hessian_add_host(const float *x, uint64_t n, uint64_t cols, double *h);
/* Largest max_ctx the attention kernel takes (its scores live in shared
 * memory). */
uint64_t tp_cuda_k_attention_max_ctx(void);

#ifdef __cplusplus
}
#endif

#endif
