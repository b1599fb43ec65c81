/*
 * Packed linear layers: weights stay in a quant format (or fp16/bf16). With
 * the format's kernel (tp_quant_kernel_find) forward computes from the packed
 * bytes, rows split across the pool; without one it widens
 * TP_QUANT_LINEAR_ROWS rows at a time into scratch and multiplies them with
 * the runtime's blocked fp32 kernel (tp_matmul_rows).
 */
#include <stdlib.h>
#include <string.h>

#include "tp_optimize.h"

typedef struct qlinear {
	tp_linear base;
	const tp_quant_format *f;
	void *packed;
	size_t packed_bytes;
	float *bias;
	/* One row of scratch: forward falls back to it, serially, when the
	 * per-call scratch cannot be allocated (forward must not fail). */
	float *row;
} qlinear;

typedef struct qjob {
	const qlinear *q;
	const float *x;
	size_t n;
	float *y;
	float *scratch; /* [tasks][per_task]: widened rows, then the matmul's panels */
	size_t block, blocks, tasks, per_task;
} qjob;

/* y[t][r0..r1) from rows r0..r1 widened into w, through the runtime's
 * blocked fp32 kernel (mm scratch: tp_matmul_rows_scratch floats): the
 * same sums, in the same order, as a dense layer of the widened weights. */
static void qrows(const qlinear *q, const float *x, size_t n, float *y, size_t r0, size_t r1,
		  float *w, float *mm)
{
	size_t in = q->base.in, out = q->base.out;
	q->f->dequantize_rows(q->packed, out, in, r0, r1, w);
	tp_matmul_rows(w, r1 - r0, in, q->bias ? q->bias + r0 : NULL, x, n, y + r0, out, mm);
}

/* The last resort when no scratch can be had: one row at a time, plain
 * dot products into the layer's own row buffer. */
static void qrows_serial(const qlinear *q, const float *x, size_t n, float *y)
{
	size_t in = q->base.in, out = q->base.out;
	for (size_t r = 0; r < out; r++) {
		q->f->dequantize_rows(q->packed, out, in, r, r + 1, q->row);
		for (size_t t = 0; t < n; t++) {
			const float *xt = x + t * in;
			float acc = 0.0f;
			for (size_t c = 0; c < in; c++)
				acc += xt[c] * q->row[c];
			y[t * out + r] = acc + (q->bias ? q->bias[r] : 0.0f);
		}
	}
}

/* Task i of tasks: every tasks-th block of rows starting at block i, in its
 * own slice of scratch. */
static void qtask(void *ctx, size_t i, size_t tasks)
{
	const qjob *j = ctx;
	float *w = j->scratch + i * j->per_task;
	float *mm = w + j->block * j->q->base.in;
	for (size_t b = i; b < j->blocks; b += tasks) {
		size_t r0 = b * j->block, r1 = r0 + j->block;
		if (r1 > j->q->base.out)
			r1 = j->q->base.out;
		qrows(j->q, j->x, j->n, j->y, r0, r1, w, mm);
	}
}

typedef struct kjob {
	const qlinear *q;
	const tp_quant_kernel *k;
	const void *x; /* prepared rows, or the fp32 input */
	size_t n, chunk;
	float *y;
} kjob;

/* Rows [i*chunk, (i+1)*chunk) of every output row, bias added. */
static void ktask(void *ctx, size_t i, size_t tasks)
{
	(void)tasks;
	const kjob *j = ctx;
	const qlinear *q = j->q;
	size_t out = q->base.out, r0 = i * j->chunk, r1 = r0 + j->chunk;
	if (r1 > out)
		r1 = out;
	j->k->rows(q->packed, out, q->base.in, r0, r1, j->x, j->n, j->y + r0, out);
	if (q->bias)
		for (size_t t = 0; t < j->n; t++)
			for (size_t r = r0; r < r1; r++)
				j->y[t * out + r] += q->bias[r];
}

typedef struct pjob {
	const tp_quant_kernel *k;
	const float *x;
	size_t in, xsize;
	unsigned char *xp;
} pjob;

static void ptask(void *ctx, size_t t, size_t n)
{
	(void)n;
	const pjob *p = ctx;
	p->k->x_prepare(p->x + t * p->in, p->in, p->xp + t * p->xsize);
}

/* forward through kernel k; false when the prepared input cannot be
 * allocated (the caller then takes the widening path, which needs none). */
static bool kernel_forward(const qlinear *q, const tp_quant_kernel *k, const float *x,
			   size_t n, float *y, tp_pool *pool)
{
	size_t out = q->base.out, in = q->base.in;
	unsigned char *xp = NULL;
	const void *xin = x;
	if (k->x_prepare) {
		size_t xsize = k->x_size(in);
		if (xsize && n >= SIZE_MAX / xsize)
			return false;
		if (!(xp = malloc(n * xsize + 1)))
			return false;
		pjob p = {k, x, in, xsize, xp};
		tp_pool_run(n > 1 ? pool : NULL, n, ptask, &p);
		xin = xp;
	}
	/* Several chunks per thread so uneven ones even out; chunks of whole
	 * 16-row tiles so SIMD kernels see aligned starts. */
	size_t threads = pool ? tp_pool_threads(pool) : 1;
	size_t chunk = (out + 4 * threads - 1) / (4 * threads);
	chunk = (chunk + 15) / 16 * 16;
	kjob j = {q, k, xin, n, chunk, y};
	tp_pool_run(pool, (out + chunk - 1) / chunk, ktask, &j);
	free(xp);
	return true;
}

static void qlinear_forward(const tp_linear *l, const float *x, size_t n, float *y,
			    tp_pool *pool)
{
	const qlinear *q = (const qlinear *)l;
	size_t out = l->out, in = l->in;
	if (out == 0 || n == 0)
		return;
	const tp_quant_kernel *k = tp_quant_kernel_find(q->f);
	if (k && kernel_forward(q, k, x, n, y, pool))
		return;
	qjob j = {q, x, n, y, NULL, TP_QUANT_LINEAR_ROWS, 0, 0, 0};
	j.blocks = (out + j.block - 1) / j.block;
	j.tasks = pool ? tp_pool_threads(pool) : 1;
	if (j.tasks > j.blocks)
		j.tasks = j.blocks;
	if (j.tasks == 0)
		j.tasks = 1;
	size_t floats = 0;
	j.per_task = j.block * in + tp_matmul_rows_scratch(j.block, in);
	if (in && tp_mul_ok(j.tasks, j.per_task, &floats) && floats <= SIZE_MAX / sizeof(float))
		j.scratch = malloc(floats * sizeof(float));
	if (!j.scratch) {
		qrows_serial(q, x, n, y);
		return;
	}
	tp_pool_run(j.tasks > 1 ? pool : NULL, j.tasks, qtask, &j);
	free(j.scratch);
}

static void qlinear_free(tp_linear *l)
{
	qlinear *q = (qlinear *)l;
	if (!q)
		return;
	free(q->packed);
	free(q->bias);
	free(q->row);
	free(q);
}

static size_t qlinear_bytes(const tp_linear *l)
{
	return ((const qlinear *)l)->packed_bytes;
}

static const tp_linear_ops qlinear_ops = {qlinear_forward, qlinear_free, qlinear_bytes};

int tp_quant_linear_new(tp_linear **out, const tp_quant_format *f, void *packed, size_t rows,
			size_t cols, const float *bias)
{
	if (!f || !f->dequantize_rows || !packed)
		return tp_error_set(TP_EINVAL, "packed linear layer: no format or weights");
	if (cols && rows > SIZE_MAX / cols / sizeof(float) / TP_QUANT_LINEAR_ROWS)
		return tp_error_set(TP_ETOOBIG, "packed linear layer %zux%zu too large", rows, cols);
	qlinear *q = calloc(1, sizeof(*q));
	if (!q || !(q->row = malloc((cols ? cols : 1) * sizeof(float))) ||
	    (bias && !(q->bias = malloc((rows ? rows : 1) * sizeof(float))))) {
		if (q) {
			free(q->row);
			free(q);
		}
		return tp_error_set(TP_ENOMEM, "packed linear layer %zux%zu: out of memory", rows,
				    cols);
	}
	if (bias)
		memcpy(q->bias, bias, rows * sizeof(float));
	q->base.ops = &qlinear_ops;
	q->base.in = cols;
	q->base.out = rows;
	q->f = f;
	q->packed = packed;
	q->packed_bytes = f->packed_size(rows, cols);
	*out = &q->base;
	return 0;
}

bool tp_quant_linear_parts(const tp_linear *l, const tp_quant_format **f, const void **packed,
			   const float **bias)
{
	if (!l || l->ops != &qlinear_ops)
		return false;
	const qlinear *q = (const qlinear *)l;
	if (f)
		*f = q->f;
	if (packed)
		*packed = q->packed;
	if (bias)
		*bias = q->bias;
	return true;
}

bool tp_optimize_is_decoder_linear(const char *name)
{
	static const char *const suffix[] = {"self_attn.q_proj", "self_attn.k_proj",
					     "self_attn.v_proj", "self_attn.o_proj",
					     "mlp.gate_proj",    "mlp.up_proj",
					     "mlp.down_proj"};
	static const char prefix[] = "model.layers.";
	if (!name || strncmp(name, prefix, sizeof(prefix) - 1) != 0)
		return false;
	const char *p = name + sizeof(prefix) - 1;
	if (*p < '0' || *p > '9')
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p++ != '.')
		return false;
	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++)
		if (strcmp(p, suffix[i]) == 0)
			return true;
	return false;
}

int tp_optimize_make_linear_packed(void *ctx, const char *name, const float *w,
				   const float *bias, size_t out_dim, size_t in_dim,
				   tp_linear **made)
{
	tp_optimize_packed_ctx *c = ctx;
	if (!c || !c->format)
		return tp_error_set(TP_EINVAL, "packed linear layers: no format given");
	if (!tp_optimize_is_decoder_linear(name))
		return TP_ENOTFOUND;
	const tp_quant_format *f = c->format;
	const tp_quant_calib *calib = c->calib_fn ? c->calib_fn(c->calib_ctx, name) : NULL;
	size_t bytes = f->packed_size(out_dim, in_dim);
	void *packed = malloc(bytes ? bytes : 1);
	if (!packed)
		return tp_error_set(TP_ENOMEM, "%s: out of memory for %zu packed bytes (%s)", name,
				    bytes, f->name);
	int rc = f->quantize(w, out_dim, in_dim, calib, packed);
	if (rc < 0) {
		free(packed);
		return tp_error_wrap(rc, "%s: quantizing to %s", name, f->name);
	}
	tp_linear *l = NULL;
	if ((rc = tp_quant_linear_new(&l, f, packed, out_dim, in_dim, bias)) < 0) {
		free(packed);
		return rc;
	}
	c->made++;
	c->packed_bytes += bytes;
	*made = l;
	return 0;
}
