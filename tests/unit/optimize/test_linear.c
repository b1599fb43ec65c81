/* Row-range dequantization of every format and the packed linear layer
 * against the dense fp32 layer over the same (dequantized) weights. */
#include <string.h>

#include "opt_test.h"
#include "tp_runtime.h"

/* Statistics that int4_sparse25 needs (any positive values do). */
static tp_quant_calib *make_calib(size_t cols)
{
	tp_quant_calib *c = calloc(1, sizeof(*c));
	c->cols = cols;
	c->nsamples = 1;
	c->sq_sum = malloc(cols * sizeof(double));
	c->abs_mean = malloc(cols * sizeof(double));
	for (size_t i = 0; i < cols; i++)
		c->sq_sum[i] = c->abs_mean[i] = 0.5 + opt_uniform();
	return c;
}

static void free_calib(tp_quant_calib *c)
{
	free(c->sq_sum);
	free(c->abs_mean);
	free(c);
}

/* Quantize a gaussian rows x cols matrix with f into a malloc'd buffer. */
static void *make_packed(const tp_quant_format *f, size_t rows, size_t cols, float *w)
{
	tp_quant_calib *calib = make_calib(cols);
	opt_fill_gauss(w, rows * cols, 0.05f);
	void *packed = malloc(f->packed_size(rows, cols) + 1);
	int rc = f->quantize(w, rows, cols, calib, packed);
	CHECK_EQ_INT(rc, 0);
	free_calib(calib);
	if (rc < 0) {
		free(packed);
		return NULL;
	}
	return packed;
}

/* dequantize_rows over every block of `step` rows equals the whole
 * dequantize, bit for bit. */
static void check_rows(const tp_quant_format *f, size_t rows, size_t cols, size_t step)
{
	float *w = malloc(rows * cols * sizeof(float)), *all = malloc(rows * cols * sizeof(float)),
	      *part = malloc(rows * cols * sizeof(float));
	void *packed = make_packed(f, rows, cols, w);
	if (packed) {
		f->dequantize(packed, rows, cols, all);
		memset(part, 0xff, rows * cols * sizeof(float));
		for (size_t r0 = 0; r0 < rows; r0 += step) {
			size_t r1 = r0 + step < rows ? r0 + step : rows;
			f->dequantize_rows(packed, rows, cols, r0, r1, part + r0 * cols);
		}
		bool same = memcmp(all, part, rows * cols * sizeof(float)) == 0;
		if (!same)
			fprintf(stderr, "%s %zux%zu step %zu: rows differ\n", f->name, rows, cols,
				step);
		CHECK(same);
	}
	free(packed);
	free(w);
	free(all);
	free(part);
}

static void test_dequantize_rows(void)
{
	static const size_t shape[][2] = {{3, 576}, {3, 100}, {70, 100}, {5, 256},
					  {130, 64}, {7, 33},  {1, 512}};
	static const size_t steps[] = {1, 2, 3, 64};
	const tp_quant_format *const *all = tp_quant_formats();
	size_t n = 0;
	while (all[n])
		n++;
	for (size_t i = 0; i <= n; i++) {
		/* all of them, then rtn2_g128, which the table does not list */
		const tp_quant_format *f = i < n ? all[i] : tp_quant_format_find("rtn2_g128");
		CHECK(f && f->dequantize_rows);
		for (size_t s = 0; f && s < sizeof(shape) / sizeof(shape[0]); s++)
			for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++)
				check_rows(f, shape[s][0], shape[s][1], steps[k]);
	}
}

/* The packed layer's forward against tp_linear_dense_new over its
 * dequantized weights, with a bias, on 1 and on 7 tokens, inline and on a
 * pool. */
static void check_forward(const tp_quant_format *f, size_t rows, size_t cols, tp_pool *pool)
{
	float *w = malloc(rows * cols * sizeof(float)), *deq = malloc(rows * cols * sizeof(float));
	float *bias = malloc(rows * sizeof(float)), *x = malloc(7 * cols * sizeof(float));
	float *y0 = malloc(7 * rows * sizeof(float)), *y1 = malloc(7 * rows * sizeof(float));
	void *packed = make_packed(f, rows, cols, w);
	tp_linear *dense = NULL, *q = NULL;
	if (!packed)
		goto done;
	f->dequantize(packed, rows, cols, deq);
	opt_fill_gauss(bias, rows, 0.1f);
	opt_fill_gauss(x, 7 * cols, 1.0f);
	CHECK_EQ_INT(tp_linear_dense_new(&dense, deq, bias, rows, cols), 0);
	CHECK_EQ_INT(tp_quant_linear_new(&q, f, packed, rows, cols, bias), 0);
	if (!q) {
		free(packed);
		goto done;
	}
	CHECK(q->in == cols && q->out == rows);
	CHECK_EQ_INT(q->ops->weight_bytes(q), f->packed_size(rows, cols));
	const tp_quant_kernel *kern = tp_quant_kernel_find(f);
	bool act8 = kern && kern->x_prepare;
	static const size_t ns[] = {1, 7};
	for (size_t k = 0; k < 2 && dense; k++) {
		size_t n = ns[k];
		tp_linear_forward(dense, x, n, y0, pool);
		memset(y1, 0xff, n * rows * sizeof(float));
		tp_linear_forward(q, x, n, y1, pool);
		double worst = 0, scale = 0;
		for (size_t i = 0; i < n * rows; i++) {
			double d = fabs((double)y0[i] - y1[i]);
			/* A kernel that prepares activations rounds them (the ggml
			 * family: 8 bits, d = absmax/127 per block), moving each x
			 * by at most absmax/254 <= max|x_t|/254: allow sum |w| of
			 * that. */
			if (act8) {
				size_t t = i / rows, r = i % rows;
				double wsum = 0, xmax = 0;
				for (size_t c = 0; c < cols; c++) {
					wsum += fabs(deq[r * cols + c]);
					if (fabs(x[t * cols + c]) > xmax)
						xmax = fabs(x[t * cols + c]);
				}
				d -= wsum * xmax / 254.0 * (1 + 1e-6);
			}
			if (!(d <= worst))
				worst = d;
			if (fabs(y0[i]) > scale)
				scale = fabs(y0[i]);
		}
		/* fp32 sums in different orders: a few ulps of the largest terms. */
		if (!(worst <= 1e-5 * (scale + 1)))
			fprintf(stderr, "%s %zux%zu n=%zu: max |diff| %g (max |y| %g)\n", f->name,
				rows, cols, n, worst, scale);
		CHECK(worst <= 1e-5 * (scale + 1));
		/* Without a kernel the widened rows go through the dense kernel:
		 * the same sums in the same order, bit for bit. */
		if (!tp_quant_kernel_find(f))
			CHECK(worst == 0);
	}
done:
	tp_linear_free(dense);
	tp_linear_free(q);
	free(w);
	free(deq);
	free(bias);
	free(x);
	free(y0);
	free(y1);
}

static void test_forward(void)
{
	static const char *const names[] = {"bf16", "fp16", "int8", "nf4", "nf4_dq",
					    "rtn4_g128", "q4_k", "q8_0", "int4_sparse25"};
	static const size_t shape[][2] = {{130, 256}, {3, 576}, {200, 100}};
	tp_pool *pool = NULL;
	CHECK_EQ_INT(tp_pool_new(&pool, 3), 0);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		for (size_t s = 0; s < sizeof(shape) / sizeof(shape[0]); s++) {
			const tp_quant_format *f = tp_quant_format_find(names[i]);
			CHECK(f != NULL);
			if (!f)
				continue;
			check_forward(f, shape[s][0], shape[s][1], NULL);
			check_forward(f, shape[s][0], shape[s][1], pool);
		}
	tp_pool_free(pool);
}

/* The factory packs exactly the 7 decoder linear layers. */
static void test_factory(void)
{
	CHECK(tp_optimize_is_decoder_linear("model.layers.0.self_attn.q_proj"));
	CHECK(tp_optimize_is_decoder_linear("model.layers.31.mlp.down_proj"));
	CHECK(tp_optimize_is_decoder_linear("model.layers.7.mlp.gate_proj"));
	CHECK(!tp_optimize_is_decoder_linear("lm_head"));
	CHECK(!tp_optimize_is_decoder_linear("model.layers..mlp.up_proj"));
	CHECK(!tp_optimize_is_decoder_linear("model.layers.1.mlp.up_proj.weight"));
	CHECK(!tp_optimize_is_decoder_linear("model.layers.x.self_attn.k_proj"));
	CHECK(!tp_optimize_is_decoder_linear(NULL));

	size_t rows = 64, cols = 128;
	float *w = malloc(rows * cols * sizeof(float));
	opt_fill_gauss(w, rows * cols, 0.05f);
	tp_optimize_packed_ctx ctx = {.format = tp_quant_format_find("rtn4_g128")};
	tp_linear *l = NULL;
	CHECK_EQ_INT(tp_optimize_make_linear_packed(&ctx, "lm_head", w, NULL, rows, cols, &l),
		     TP_ENOTFOUND);
	CHECK(l == NULL);
	CHECK_EQ_INT(tp_optimize_make_linear_packed(&ctx, "model.layers.2.self_attn.o_proj", w,
						    NULL, rows, cols, &l),
		     0);
	CHECK(l != NULL && l->ops->weight_bytes(l) == ctx.format->packed_size(rows, cols));
	CHECK_EQ_INT(ctx.made, 1);
	tp_linear_free(l);
	l = NULL;
	/* int4_sparse25 without statistics: the format's error, no layer. */
	ctx.format = tp_quant_format_find("int4_sparse25");
	CHECK_EQ_INT(tp_optimize_make_linear_packed(&ctx, "model.layers.0.mlp.up_proj", w, NULL,
						    rows, cols, &l),
		     TP_EINVAL);
	CHECK(l == NULL);
	free(w);
}

/* The fixture model loaded through the factory: 28 packed decoder layers,
 * a dense lm_head, and with bf16 (the file's own precision: exact) the same
 * logits as the default fp32 model up to summation order. */
static tp_model *load_fixture(const char *data, tp_optimize_packed_ctx *ctx)
{
	char dir[4096], weights[4096];
	snprintf(dir, sizeof(dir), "%s/eval", data);
	snprintf(weights, sizeof(weights), "%s/fixtures/base-bf16.safetensors", data);
	tp_model_opts o = {.weights = weights, .threads = 2};
	if (ctx) {
		o.make_linear = tp_optimize_make_linear_packed;
		o.make_linear_ctx = ctx;
	}
	tp_model *m = NULL;
	if (tp_model_load(&m, dir, &o) < 0)
		fprintf(stderr, "loading %s: %s\n", dir, tp_error_last());
	return m;
}

static void test_model(const char *data)
{
	enum { N = 32 };
	tp_optimize_packed_ctx bf = {.format = tp_quant_format_find("bf16")};
	tp_optimize_packed_ctx q4 = {.format = tp_quant_format_find("rtn4_g128")};
	tp_model *dense = load_fixture(data, NULL), *half = load_fixture(data, &bf),
		 *quant = load_fixture(data, &q4);
	CHECK(dense && half && quant);
	if (!dense || !half || !quant)
		goto done;
	size_t nl = tp_model_linear_count(half), V = tp_model_get_config(half)->vocab;
	CHECK_EQ_INT(bf.made, nl - 1);
	CHECK_EQ_INT(q4.made, nl - 1);
	for (size_t i = 0; i < nl; i++) {
		const tp_linear *l = tp_model_linear(quant, i);
		size_t want = i + 1 < nl ? q4.format->packed_size(l->out, l->in)
					 : l->out * l->in * sizeof(float);
		CHECK_EQ_INT(l->ops->weight_bytes(l), want);
	}
	CHECK_STR(tp_model_linear_name(quant, nl - 1), "lm_head");
	int32_t ids[N];
	for (int i = 0; i < N; i++)
		ids[i] = (int32_t)((i * 37 + 11) % (int)V);
	float *lg[3] = {malloc(N * V * sizeof(float)), malloc(N * V * sizeof(float)),
			malloc(N * V * sizeof(float))};
	tp_model *ms[3] = {dense, half, quant};
	for (int k = 0; k < 3; k++) {
		tp_kv *kv = NULL;
		CHECK_EQ_INT(tp_kv_new(&kv, ms[k], N, N), 0);
		CHECK_EQ_INT(tp_model_forward(ms[k], kv, ids, N, 0, lg[k]), 0);
		tp_kv_free(kv);
	}
	double d_half = 0, d_quant = 0;
	for (size_t i = 0; i < N * V; i++) {
		d_half = fmax(d_half, fabs((double)lg[0][i] - lg[1][i]));
		d_quant = fmax(d_quant, fabs((double)lg[0][i] - lg[2][i]));
	}
	fprintf(stderr, "max |logit diff| vs dense fp32: bf16 %g, rtn4_g128 %g\n", d_half,
		d_quant);
	CHECK(d_half < 1e-3);
	/* 4-bit weights change the logits, but not wildly. */
	CHECK(d_quant > d_half && d_quant < 2.0);
	for (int k = 0; k < 3; k++)
		free(lg[k]);
done:
	tp_model_free(dense);
	tp_model_free(half);
	tp_model_free(quant);
}

int main(int argc, char **argv)
{
	TP_TEST_RUN(test_dequantize_rows);
	TP_TEST_RUN(test_forward);
	TP_TEST_RUN(test_factory);
	if (argc > 1)
		test_model(argv[1]);
	return TP_TEST_RESULT();
}
