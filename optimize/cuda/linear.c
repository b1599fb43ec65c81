/*
 * Linear layers on the GPU: the packed bytes of a CPU layer uploaded as
 * they are, decoded by the kernels (kernels.cu) inside the products.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "host.h"
#include "quant_internal.h"

typedef struct glin {
	tp_linear base;
	tp_cuda_wfmt f;
	void *w;      /* device: packed bytes */
	float *bias;  /* device; NULL when none */
	size_t bytes; /* packed bytes */
	/* device scratch of the host-memory forward, grown on demand */
	float *x, *y;
	size_t cap;
} glin;

int tp_cuda_make_linear(void *ctx, const char *name, const float *w, const float *bias,
			size_t out_dim, size_t in_dim, tp_linear **made)
{
	const tp_quant_format *f = ctx ? ctx : tp_quant_format_fp32();
	size_t bytes = f->packed_size(out_dim, in_dim);
	void *packed = malloc(bytes ? bytes : 1);
	if (!packed)
		return tp_error_set(TP_ENOMEM, "%s: out of memory for %zu bytes", name, bytes);
	int rc = f->quantize(w, out_dim, in_dim, NULL, packed);
	if (rc == 0)
		rc = tp_quant_linear_new(made, f, packed, out_dim, in_dim, bias);
	if (rc < 0) {
		free(packed);
		return tp_error_wrap(rc, "%s: packing as %s", name, f->name);
	}
	return 0;
}

/* ---- formats -> kernels --------------------------------------------------- */

/* The kernels' reading of format f for a rows x cols matrix; false when
 * there is no kernel for it. */
static bool wfmt_of(const tp_quant_format *f, size_t rows, size_t cols, tp_cuda_wfmt *wf)
{
	int bits;
	size_t group;
	const char *name = f->name;
	memset(wf, 0, sizeof(*wf));
	wf->rows = rows;
	wf->cols = cols;
	if (f == tp_quant_format_fp32()) {
		wf->kind = TP_CUDA_F32;
		return true;
	}
	if (tp_quant_group_format_info(f, &bits, &group)) {
		wf->kind = TP_CUDA_GROUP;
		wf->bits = bits;
		wf->group = (uint32_t)group;
		return group > 0 && group <= UINT32_MAX;
	}
	/* llama.cpp's formats store rows their block does not divide in
	 * another type (ggml.c). */
	const char *fb = tp_quant_fallback(name, cols);
	if (fb)
		name = fb;
	static const struct {
		const char *name;
		tp_cuda_kind kind;
	} by_name[] = {
		{"fp16", TP_CUDA_FP16}, {"bf16", TP_CUDA_BF16}, {"int8", TP_CUDA_INT8},
		{"nf4", TP_CUDA_NF4},   {"nf4_dq", TP_CUDA_NF4_DQ}, {"q8_0", TP_CUDA_Q8_0},
		{"q4_0", TP_CUDA_Q4_0}, {"q5_0", TP_CUDA_Q5_0},     {"q4_k", TP_CUDA_Q4_K},
		{"int4_int2_residual", TP_CUDA_RESIDUAL},
	};
	for (size_t i = 0; i < sizeof(by_name) / sizeof(by_name[0]); i++)
		if (strcmp(name, by_name[i].name) == 0) {
			wf->kind = by_name[i].kind;
			if (wf->kind == TP_CUDA_RESIDUAL)
				wf->off2 = tp_quant_group_packed_size(4, 128, rows, cols);
			return true;
		}
	return false;
}

bool tp_cuda_format_supported(const tp_quant_format *f)
{
	tp_cuda_wfmt wf;
	/* cols 256: no fallback applies */
	return f && f->name && wfmt_of(f, 1, 256, &wf);
}

static int dequantize_on_host(const tp_quant_format *f, const void *packed, size_t rows,
			      size_t cols, size_t r0, size_t r1, float *w, int wide)
{
	tp_cuda_wfmt wf;
	float dq[256];
	if (!f || !packed || r0 > r1 || r1 > rows)
		return tp_error_set(TP_EINVAL, "decoding rows %zu..%zu of %zu", r0, r1, rows);
	if (!wfmt_of(f, rows, cols, &wf))
		return tp_error_set(TP_EUNSUPPORTED, "no CUDA kernel for format %s", f->name);
	wf.p = packed;
	tp_quant_nf4_dq_map(dq);
	tp_cuda_k_set_codes_host(tp_quant_nf4_code, dq);
	tp_cuda_k_dequantize_host(&wf, r0, r1, w, wide);
	return 0;
}

int tp_cuda_dequantize_on_host(const tp_quant_format *f, const void *packed, size_t rows,
			       size_t cols, size_t r0, size_t r1, float *w)
{
	return dequantize_on_host(f, packed, rows, cols, r0, r1, w, 0);
}

int tp_cuda_dequantize_on_host_wide(const tp_quant_format *f, const void *packed, size_t rows,
				    size_t cols, size_t r0, size_t r1, float *w)
{
	return dequantize_on_host(f, packed, rows, cols, r0, r1, w, 1);
}

/* ---- layers ---------------------------------------------------------------- */

static void glin_free(tp_linear *l)
{
	glin *g = (glin *)l;
	if (!g)
		return;
	cudaFree(g->w);
	cudaFree(g->bias);
	cudaFree(g->x);
	cudaFree(g->y);
	free(g);
}

static size_t glin_bytes(const tp_linear *l)
{
	return ((const glin *)l)->bytes;
}

int tp_cuda_linear_run(const tp_linear *l, const float *x, size_t n, float *y)
{
	glin *g = (glin *)(uintptr_t)l; /* the scratch grows; forward is single-threaded */
	size_t in = l->in, out = l->out, need = n > 0 ? n : 1;
	int e;
	if (!tp_cuda_linear_wfmt(l, NULL))
		return tp_error_set(TP_EINVAL, "not a CUDA linear layer");
	if (n == 0 || out == 0)
		return 0;
	if (need > SIZE_MAX / sizeof(float) / (in > out ? in : out))
		return tp_error_set(TP_ETOOBIG, "%zu rows too many", n);
	if (need > g->cap) {
		cudaFree(g->x);
		cudaFree(g->y);
		g->x = g->y = NULL;
		g->cap = 0;
		if ((e = cudaMalloc((void **)&g->x, need * in * sizeof(float))) ||
		    (e = cudaMalloc((void **)&g->y, need * out * sizeof(float))))
			return tp_cuda_fail(e, "allocating a layer's activations");
		g->cap = need;
	}
	if ((e = cudaMemcpy(g->x, x, n * in * sizeof(float), cudaMemcpyHostToDevice)) ||
	    (e = tp_cuda_k_linear(&g->f, g->bias, g->x, n, g->y, out)) ||
	    (e = cudaMemcpy(y, g->y, n * out * sizeof(float), cudaMemcpyDeviceToHost)))
		return tp_cuda_fail(e, "linear layer");
	return 0;
}

/* tp_linear's forward cannot fail: a failure leaves NaN, which no caller
 * mistakes for a result. */
static void glin_forward(const tp_linear *l, const float *x, size_t n, float *y, tp_pool *pool)
{
	(void)pool;
	if (tp_cuda_linear_run(l, x, n, y) < 0)
		for (size_t i = 0; i < n * l->out; i++)
			y[i] = NAN;
}

static const tp_linear_ops glin_ops = {glin_forward, glin_free, glin_bytes};

const tp_cuda_wfmt *tp_cuda_linear_wfmt(const tp_linear *l, const float **bias)
{
	if (!l || l->ops != &glin_ops)
		return NULL;
	const glin *g = (const glin *)l;
	if (bias)
		*bias = g->bias;
	return &g->f;
}

/* fp32 weights of a layer read through its forward: y = I W^T + b for
 * blocks of identity rows, minus b (from a zero row). */
static int read_back(const tp_linear *src, tp_pool *pool, float *w, float **bias_out)
{
	size_t in = src->in, out = src->out, B = 64;
	float *x = calloc(B * in, sizeof(float)), *y = malloc(B * out * sizeof(float));
	float *b = malloc(out * sizeof(float));
	int rc = 0;
	bool any = false;
	if (!x || !y || !b) {
		rc = tp_error_set(TP_ENOMEM, "out of memory reading a %zux%zu layer", out, in);
		goto done;
	}
	tp_linear_forward(src, x, 1, b, pool);
	for (size_t r = 0; r < out; r++)
		any |= b[r] != 0.0f;
	for (size_t c0 = 0; c0 < in; c0 += B) {
		size_t k = in - c0 < B ? in - c0 : B;
		memset(x, 0, B * in * sizeof(float));
		for (size_t j = 0; j < k; j++)
			x[j * in + c0 + j] = 1.0f;
		tp_linear_forward(src, x, k, y, pool);
		for (size_t j = 0; j < k; j++)
			for (size_t r = 0; r < out; r++)
				w[r * in + c0 + j] = y[j * out + r] - b[r];
	}
	if (any) {
		*bias_out = b;
		b = NULL;
	}
done:
	free(x);
	free(y);
	free(b);
	return rc;
}

int tp_cuda_linear_new_pool(tp_linear **out, const tp_linear *src, tp_pool *pool)
{
	const tp_quant_format *f = NULL;
	const void *packed = NULL;
	const float *bias = NULL;
	float *wtmp = NULL, *btmp = NULL;
	size_t rows = src->out, cols = src->in, cells;
	int rc = tp_cuda_init(), e = 0;
	glin *g = NULL;
	if (rc < 0)
		return rc;
	if (!tp_mul_ok(rows, cols, &cells) || cells > SIZE_MAX / sizeof(float))
		return tp_error_set(TP_ETOOBIG, "linear layer %zux%zu too large", rows, cols);
	if (!(g = calloc(1, sizeof(*g))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	g->base.ops = &glin_ops;
	g->base.in = cols;
	g->base.out = rows;
	if (tp_quant_linear_parts(src, &f, &packed, &bias)) {
		if (!wfmt_of(f, rows, cols, &g->f)) {
			rc = tp_error_set(TP_EUNSUPPORTED, "no CUDA kernel for format %s", f->name);
			goto done;
		}
		g->bytes = f->packed_size(rows, cols);
	} else {
		/* Not packed (a dense fp32 layer): read back, upload as fp32. */
		if (!(wtmp = malloc((cells ? cells : 1) * sizeof(float)))) {
			rc = tp_error_set(TP_ENOMEM, "out of memory for a %zux%zu layer", rows, cols);
			goto done;
		}
		if ((rc = read_back(src, pool, wtmp, &btmp)) < 0)
			goto done;
		wfmt_of(tp_quant_format_fp32(), rows, cols, &g->f);
		packed = wtmp;
		bias = btmp;
		g->bytes = cells * sizeof(float);
	}
	if ((e = cudaMalloc(&g->w, g->bytes ? g->bytes : 1)) ||
	    (e = cudaMemcpy(g->w, packed, g->bytes, cudaMemcpyHostToDevice)))
		goto done;
	if (bias && ((e = cudaMalloc((void **)&g->bias, rows * sizeof(float))) ||
		     (e = cudaMemcpy(g->bias, bias, rows * sizeof(float), cudaMemcpyHostToDevice))))
		goto done;
	g->f.p = g->w;
done:
	if (e)
		rc = tp_cuda_fail(e, "uploading a linear layer");
	free(wtmp);
	free(btmp);
	if (rc < 0) {
		glin_free(&g->base);
		return rc;
	}
	*out = &g->base;
	return 0;
}

int tp_cuda_linear_new(tp_linear **out, const tp_linear *src)
{
	return tp_cuda_linear_new_pool(out, src, NULL);
}

int tp_cuda_linear_dequantize(const tp_linear *l, size_t r0, size_t r1, float *w)
{
	const tp_cuda_wfmt *f = tp_cuda_linear_wfmt(l, NULL);
	float *d = NULL;
	size_t cells;
	int e;
	if (!f || r0 > r1 || r1 > l->out)
		return tp_error_set(TP_EINVAL, "rows %zu..%zu of a CUDA layer", r0, r1);
	if (!tp_mul_ok(r1 - r0, l->in, &cells) || cells > SIZE_MAX / sizeof(float))
		return tp_error_set(TP_ETOOBIG, "rows %zu..%zu too large", r0, r1);
	if (cells == 0)
		return 0;
	if ((e = cudaMalloc((void **)&d, cells * sizeof(float))) ||
	    (e = tp_cuda_k_dequantize(f, r0, r1, d)) ||
	    (e = cudaMemcpy(w, d, cells * sizeof(float), cudaMemcpyDeviceToHost))) {
		cudaFree(d);
		return tp_cuda_fail(e, "dequantizing");
	}
	cudaFree(d);
	return 0;
}

int tp_cuda_linear_time(const tp_linear *l, size_t n, size_t min_bytes, int reps,
			double *seconds, size_t *weight_bytes)
{
	const float *bias = NULL;
	const tp_cuda_wfmt *f = tp_cuda_linear_wfmt(l, &bias);
	const glin *g = (const glin *)l;
	float *x = NULL, *y = NULL, best = 0.0f;
	uint8_t *copies = NULL;
	cudaEvent_t t0 = NULL, t1 = NULL;
	int e = 0;
	if (!f || n == 0 || reps <= 0 || g->bytes == 0)
		return tp_error_set(TP_EINVAL, "timing a CUDA layer: %zu tokens, %d repetitions", n,
				    reps);
	if (n > SIZE_MAX / sizeof(float) / (l->in > l->out ? l->in : l->out))
		return tp_error_set(TP_ETOOBIG, "%zu tokens too many", n);
	/* Copies of the weights, read one after the other, so that the reads
	 * come from memory and not from the L2 cache. */
	size_t ncopy = min_bytes > g->bytes ? (min_bytes + g->bytes - 1) / g->bytes : 1;
	if (ncopy > SIZE_MAX / g->bytes)
		return tp_error_set(TP_ETOOBIG, "%zu copies of %zu bytes", ncopy, g->bytes);
	if ((e = cudaMalloc((void **)&copies, ncopy * g->bytes)))
		goto done;
	for (size_t i = 0; i < ncopy && !e; i++)
		e = cudaMemcpy(copies + i * g->bytes, g->w, g->bytes, cudaMemcpyDeviceToDevice);
	if (e || (e = cudaMalloc((void **)&x, n * l->in * sizeof(float))) ||
	    (e = cudaMalloc((void **)&y, n * l->out * sizeof(float))) ||
	    (e = cudaMemset(x, 0, n * l->in * sizeof(float))) || (e = cudaEventCreate(&t0)) ||
	    (e = cudaEventCreate(&t1)))
		goto done;
	for (int i = 0; i <= reps; i++) { /* the first one warms up */
		float ms = 0.0f;
		if ((e = cudaEventRecord(t0, 0)))
			goto done;
		for (size_t k = 0; k < ncopy; k++) {
			tp_cuda_wfmt fk = *f;
			fk.p = copies + k * g->bytes;
			if ((e = tp_cuda_k_linear(&fk, bias, x, n, y, l->out)))
				goto done;
		}
		if ((e = cudaEventRecord(t1, 0)) || (e = cudaEventSynchronize(t1)) ||
		    (e = cudaEventElapsedTime(&ms, t0, t1)))
			goto done;
		if (i > 0 && (best == 0.0f || ms < best))
			best = ms;
	}
	*seconds = best * 1e-3 / (double)ncopy;
	*weight_bytes = g->bytes;
done:
	if (t0)
		cudaEventDestroy(t0);
	if (t1)
		cudaEventDestroy(t1);
	cudaFree(copies);
	cudaFree(x);
	cudaFree(y);
	return e ? tp_cuda_fail(e, "timing a linear layer") : 0;
}
