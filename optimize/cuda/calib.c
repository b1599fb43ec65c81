/* Calibration on the GPU (tp_calib_device): a method's block runs there
 * (model.c's tp_cuda_block: norms, RoPE, attention and the products; the
 * captured layers' inputs come back for their statistics), and GPTQ's
 * Hessian sums stay on the device while the windows pass, read back once. */
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "host.h"

static int linear_copy(void *ctx, const tp_linear *src, tp_linear **out)
{
	(void)ctx;
	return tp_cuda_linear_new(out, src);
}

/* A layer's sums on the device (s->device) and room for a batch of rows. */
typedef struct dev_hessian {
	double *h; /* [cols][cols], upper triangle */
	float *x;
	size_t xcap; /* rows */
} dev_hessian;

static int hessian_add(void *ctx, tp_quant_calib *s, const float *x, size_t n)
{
	(void)ctx;
	dev_hessian *d = s->device;
	size_t cols = s->cols, cells, xcells;
	int e = 0, rc;
	if (n == 0)
		return 0;
	if (!tp_mul_ok(cols, cols, &cells) || cells > SIZE_MAX / sizeof(double) ||
	    !tp_mul_ok(n, cols, &xcells) || xcells > SIZE_MAX / sizeof(float))
		return tp_error_set(TP_ETOOBIG, "a Hessian of %zu columns is too large", cols);
	if (!d) {
		if ((rc = tp_cuda_init()) < 0)
			return rc;
		if (!(d = calloc(1, sizeof(*d))))
			return tp_error_set(TP_ENOMEM, "out of memory");
		s->device = d;
		if ((e = cudaMalloc((void **)&d->h, cells * sizeof(double))) ||
		    (e = cudaMemset(d->h, 0, cells * sizeof(double))))
			return tp_cuda_fail(e, "allocating a Hessian");
	}
	if (n > d->xcap) {
		cudaFree(d->x);
		d->x = NULL;
		d->xcap = 0;
		if ((e = cudaMalloc((void **)&d->x, xcells * sizeof(float))))
			return tp_cuda_fail(e, "allocating calibration rows");
		d->xcap = n;
	}
	if ((e = cudaMemcpy(d->x, x, xcells * sizeof(float), cudaMemcpyHostToDevice)) ||
	    (e = tp_cuda_k_hessian_add(d->x, n, cols, d->h)))
		return tp_cuda_fail(e, "summing a Hessian");
	return 0;
}

static int hessian_take(void *ctx, tp_quant_calib *s, bool keep)
{
	(void)ctx;
	dev_hessian *d = s->device;
	int e = 0;
	s->device = NULL;
	if (!d)
		return 0;
	if (keep && d->h && s->hessian)
		e = cudaMemcpy(s->hessian, d->h, s->cols * s->cols * sizeof(double),
			       cudaMemcpyDeviceToHost);
	cudaFree(d->h);
	cudaFree(d->x);
	free(d);
	return e ? tp_cuda_fail(e, "reading a Hessian back") : 0;
}

static int block_new(void *ctx, tp_model *m, size_t b, size_t max_n, void **blk)
{
	(void)ctx;
	tp_cuda_block *x = NULL;
	int rc = tp_cuda_block_new(&x, m, b, max_n);
	if (rc == 0)
		*blk = x;
	return rc;
}

static int block_run(void *blk, float *x, size_t n)
{
	return tp_cuda_block_run(blk, x, n);
}

static void block_free(void *blk)
{
	tp_cuda_block_free(blk);
}

const tp_calib_device tp_cuda_calib_dev = { NULL,	  linear_copy, hessian_add, hessian_take,
					    block_new, block_run,   block_free };

const tp_calib_device *tp_cuda_calib_device(void)
{
	return &tp_cuda_calib_dev;
}

/* ---- the same sums on the host (tests without a GPU) ------------------------ */

static int host_add(void *ctx, tp_quant_calib *s, const float *x, size_t n)
{
	(void)ctx;
	size_t cells;
	if (!tp_mul_ok(s->cols, s->cols, &cells) || cells > SIZE_MAX / sizeof(double))
		return tp_error_set(TP_ETOOBIG, "a Hessian of %zu columns is too large", s->cols);
	if (!s->device && !(s->device = calloc(cells ? cells : 1, sizeof(double))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	tp_cuda_k_hessian_add_host(x, n, s->cols, s->device);
	return 0;
}

static int host_take(void *ctx, tp_quant_calib *s, bool keep)
{
	(void)ctx;
	if (keep && s->device && s->hessian)
		memcpy(s->hessian, s->device, s->cols * s->cols * sizeof(double));
	free(s->device);
	s->device = NULL;
	return 0;
}

/* A packed layer copied on the CPU: the block swaps, the AWQ loss passes
 * over the kept states and their fp32 layers run as on a device. */
static int host_copy(void *ctx, const tp_linear *src, tp_linear **out)
{
	(void)ctx;
	const tp_quant_format *f;
	const void *packed;
	const float *bias;
	if (!tp_quant_linear_parts(src, &f, &packed, &bias))
		return tp_error_set(TP_EUNSUPPORTED, "not a packed layer");
	size_t bytes = f->packed_size(src->out, src->in);
	void *p = malloc(bytes ? bytes : 1);
	if (!p)
		return tp_error_set(TP_ENOMEM, "out of memory");
	memcpy(p, packed, bytes);
	int rc = tp_quant_linear_new(out, f, p, src->out, src->in, bias);
	if (rc < 0)
		free(p);
	return rc;
}

/* The host's block: each of its layers swapped for an observer that hands
 * its inputs to the layer's capture, as the GPU block's observer does, and
 * computes with the capture's inner layer; tp_model_forward_layers runs it. */
typedef struct host_obs {
	tp_linear base;
	tp_linear *layer; /* the model's: a capture or not */
} host_obs;

static void obs_forward(const tp_linear *l, const float *x, size_t n, float *y, tp_pool *pool)
{
	const host_obs *o = (const host_obs *)l;
	tp_quant_capture_observe(o->layer, x, n);
	tp_linear_forward(tp_quant_capture_inner(o->layer), x, n, y, pool);
}

static void obs_free(tp_linear *l)
{
	free(l);
}

static size_t obs_bytes(const tp_linear *l)
{
	(void)l;
	return 0;
}

static const tp_linear_ops obs_ops = { obs_forward, obs_free, obs_bytes };

enum { HOST_PER_BLOCK = 7 };

typedef struct host_block {
	tp_model *m;
	size_t b;
	tp_kv *kv;
} host_block;

static int host_block_new(void *ctx, tp_model *m, size_t b, size_t max_n, void **blk)
{
	(void)ctx;
	host_block *h = calloc(1, sizeof(*h));
	if (!h)
		return tp_error_set(TP_ENOMEM, "out of memory");
	int rc = tp_kv_new(&h->kv, m, max_n, max_n);
	if (rc < 0) {
		free(h);
		return rc;
	}
	h->m = m;
	h->b = b;
	*blk = h;
	return 0;
}

static int host_block_run(void *blk, float *x, size_t n)
{
	host_block *h = blk;
	tp_linear *old[HOST_PER_BLOCK];
	size_t swapped = 0, base = h->b * HOST_PER_BLOCK;
	int rc = 0;
	for (; swapped < HOST_PER_BLOCK; swapped++) {
		tp_linear *l = tp_model_linear(h->m, base + swapped);
		host_obs *o = malloc(sizeof(*o));
		if (!o) {
			rc = tp_error_set(TP_ENOMEM, "out of memory");
			break;
		}
		*o = (host_obs){ { &obs_ops, l->in, l->out }, l };
		if ((rc = tp_model_swap_linear(h->m, base + swapped, &o->base, &old[swapped])) < 0) {
			free(o);
			break;
		}
	}
	if (rc == 0) {
		tp_kv_reset(h->kv);
		rc = tp_model_forward_layers(h->m, h->kv, h->b, h->b + 1, x, n);
	}
	while (swapped--) {
		tp_linear *o = NULL;
		if (tp_model_swap_linear(h->m, base + swapped, old[swapped], &o) == 0)
			free(o);
	}
	return rc;
}

static void host_block_free(void *blk)
{
	host_block *h = blk;
	if (h)
		tp_kv_free(h->kv);
	free(h);
}

const tp_calib_device *tp_cuda_calib_device_host(void)
{
	static const tp_calib_device d = { NULL,	   host_copy,	   host_add,	   host_take,
					   host_block_new, host_block_run, host_block_free };
	return &d;
}
