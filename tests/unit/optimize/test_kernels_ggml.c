/* The ggml family's kernels (int8, q8_0, q4_0, q5_0, q4_k): the AVX2 kernel
 * against the plain-C one on the same prepared inputs, both against the
 * format's dequantize + fp32 dot within the error that quantizing the
 * activations allows, the exact-mode kernels (fp32 inputs) against the same
 * within fp32 rounding, and the packed layer's forward (inline and on a pool)
 * against the same. */
#include <string.h>

#include "kernels_internal.h"
#include "opt_test.h"
#include "tp_runtime.h"

static const char *const names[] = {"int8", "q8_0", "q4_0", "q5_0", "q4_k"};

/* The block over which the kernel of name quantizes activations for a
 * cols-wide matrix, or 0 when it reads fp32 (the fp16 fallback). */
static size_t act_block(const char *name, size_t cols)
{
	if (strcmp(name, "int8") == 0)
		return 32;
	const char *fb = tp_quant_fallback(name, cols);
	if (fb && strcmp(fb, "fp16") == 0)
		return 0;
	return strcmp(name, "q4_k") == 0 && !fb ? 256 : 32;
}

/* Bound on |kernel - exact| for row w and input x: rounding x to 8 bits with
 * d = absmax/127 moves each value by at most d/2 (x * 127/absmax is rounded
 * to nearest), so the product moves by at most sum |w_c| * absmax_b / 254;
 * plus fp32 summation error, a few ulps of sum |w_c x_c| (1e-5 leaves room
 * for both orders and the per-block scale products). */
static double bound(const float *w, const float *x, size_t cols, size_t blk)
{
	double b = 0, s = 0;
	for (size_t c0 = 0; c0 < cols; c0 += blk ? blk : cols) {
		size_t c1 = blk && c0 + blk < cols ? c0 + blk : cols;
		double amax = 0;
		for (size_t c = c0; c < c1; c++)
			if (fabs(x[c]) > amax)
				amax = fabs(x[c]);
		for (size_t c = c0; c < c1; c++) {
			if (blk)
				b += fabs(w[c]) * amax / 254.0;
			s += fabs((double)w[c] * x[c]);
		}
	}
	return b * (1 + 1e-6) + 1e-5 * s + 1e-30;
}

static double exact_dot(const float *w, const float *x, size_t cols)
{
	double s = 0;
	for (size_t c = 0; c < cols; c++)
		s += (double)w[c] * x[c];
	return s;
}

/* One format and shape: C vs SIMD (tight, on r0..r1 sub-ranges), both vs
 * dequantize + dot (derived bound). */
static void check_kernel(const char *name, size_t rows, size_t cols, size_t n, int level)
{
	const tp_quant_format *f = tp_quant_format_find(name);
	const tp_quant_kernel *kc = tp_quant_kernel_ggml(name, TP_KERNEL_C);
	/* the SIMD side at level, or the highest this CPU has (C without AVX2) */
	if (level > tp_quant_kernel_level())
		level = tp_quant_kernel_level();
	const tp_quant_kernel *ks = tp_quant_kernel_ggml(name, level);
	CHECK(f && kc && ks && kc->x_prepare && kc->rows);
	if (!f || !kc || !ks)
		return;
	CHECK(kc->x_size(cols) == ks->x_size(cols));
	float *w = malloc(rows * cols * sizeof(float)), *deq = malloc(rows * cols * sizeof(float));
	float *x = malloc(n * cols * sizeof(float));
	float *yc = malloc(n * rows * sizeof(float)), *ys = malloc(n * rows * sizeof(float));
	size_t xs = kc->x_size(cols);
	unsigned char *xp = malloc(n * xs + 1), *xp2 = malloc(n * xs + 1);
	void *packed = malloc(f->packed_size(rows, cols) + 1);
	opt_fill_gauss(w, rows * cols, 0.05f);
	/* a few rows of outliers and a zero row, as real weights have */
	for (size_t c = 0; c < cols; c++) {
		w[c] *= 8.0f;
		if (rows > 2)
			w[2 * cols + c] = 0.0f;
	}
	opt_fill_gauss(x, n * cols, 1.0f);
	CHECK_EQ_INT(f->quantize(w, rows, cols, NULL, packed), 0);
	f->dequantize(packed, rows, cols, deq);
	for (size_t t = 0; t < n; t++) {
		kc->x_prepare(x + t * cols, cols, xp + t * xs);
		ks->x_prepare(x + t * cols, cols, xp2 + t * xs);
	}
	CHECK(memcmp(xp, xp2, n * xs) == 0);
	kc->rows(packed, rows, cols, 0, rows, xp, n, yc, rows);
	/* SIMD over uneven sub-ranges: [0,16), [16, 16+odd), rest */
	memset(ys, 0xff, n * rows * sizeof(float));
	size_t cut[4] = {0, rows < 16 ? rows : 16, 0, rows};
	cut[2] = cut[1] + (rows - cut[1]) / 2 + 1 > rows ? rows : cut[1] + (rows - cut[1]) / 2 + 1;
	for (int k = 0; k < 3; k++)
		if (cut[k + 1] > cut[k])
			ks->rows(packed, rows, cols, cut[k], cut[k + 1], xp, n, ys + cut[k], rows);
	size_t blk = act_block(name, cols);
	int bad_simd = 0, bad_exact = 0;
	for (size_t t = 0; t < n; t++)
		for (size_t r = 0; r < rows; r++) {
			const float *wr = deq + r * cols, *xt = x + t * cols;
			double c = yc[t * rows + r], s = ys[t * rows + r];
			double e = exact_dot(wr, xt, cols);
			/* C vs SIMD: the same integer sums, fp32 sums in another order */
			double sum = 0;
			for (size_t i = 0; i < cols; i++)
				sum += fabs((double)wr[i] * xt[i]);
			if (!(fabs(c - s) <= 1e-5 * sum + 1e-30))
				bad_simd++;
			double b = bound(wr, xt, cols, blk);
			if (!(fabs(c - e) <= b) || !(fabs(s - e) <= b))
				bad_exact++;
		}
	/* exact mode: fp32 inputs, C vs SIMD and both vs dequantize + dot,
	 * fp32 summation error only */
	const tp_quant_kernel *ec = tp_quant_kernel_ggml_exact(name, false);
	const tp_quant_kernel *es = tp_quant_kernel_ggml_exact(name, tp_quant_kernel_use_avx2());
	CHECK(ec && es && !ec->x_prepare && !es->x_prepare);
	int bad_fp32 = 0;
	if (ec && es) {
		ec->rows(packed, rows, cols, 0, rows, x, n, yc, rows);
		memset(ys, 0xff, n * rows * sizeof(float));
		for (int k = 0; k < 3; k++)
			if (cut[k + 1] > cut[k])
				es->rows(packed, rows, cols, cut[k], cut[k + 1], x, n, ys + cut[k],
					 rows);
		for (size_t t = 0; t < n; t++)
			for (size_t r = 0; r < rows; r++) {
				const float *wr = deq + r * cols, *xt = x + t * cols;
				double e = exact_dot(wr, xt, cols), b = bound(wr, xt, cols, 0);
				if (!(fabs(yc[t * rows + r] - e) <= b) ||
				    !(fabs(ys[t * rows + r] - e) <= b))
					bad_fp32++;
			}
	}
	CHECK_EQ_INT(bad_fp32, 0);
	if (bad_simd || bad_exact || bad_fp32)
		fprintf(stderr, "%s %zux%zu n=%zu: %d simd/c mismatches, %d over bound, %d over "
				"bound on fp32 inputs\n", name, rows, cols, n, bad_simd, bad_exact,
			bad_fp32);
	CHECK_EQ_INT(bad_simd, 0);
	CHECK_EQ_INT(bad_exact, 0);
	free(w);
	free(deq);
	free(x);
	free(yc);
	free(ys);
	free(xp);
	free(xp2);
	free(packed);
}

static void test_kernels(void)
{
	static const size_t cols[] = {32, 256, 288, 512, 40};
	static const size_t ns[] = {1, 2, 3, 7, 33};
	static const size_t rows[] = {37, 16, 5};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++)
			for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++)
				for (int level = TP_KERNEL_AVX2; level <= TP_KERNEL_AVX512; level++)
					check_kernel(names[i], rows[(c + k) % 3], cols[c], ns[k],
						     level);
	/* AVX-512 again with AMX kept off (above it was on where usable) */
	bool old = tp_quant_kernel_ggml_amx_allow(false);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++)
			check_kernel(names[i], rows[c % 3], cols[c], 33, TP_KERNEL_AVX512);
	tp_quant_kernel_ggml_amx_allow(old);
}

/* The SIMD activation quantizers give the C one's bytes, ties to even
 * included: amax 127 makes x / d exact, so the halves below are ties. */
static void test_prepare_ties(void)
{
	float x[512];
	for (size_t i = 0; i < 512; i++)
		x[i] = (float)((int)(i % 61) - 30) + ((i % 3) ? 0.5f : 0.25f);
	for (size_t b = 0; b < 512; b += 32)
		x[b + 7] = b % 64 ? 127.0f : -127.0f;
	x[300] = 1e-30f;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const tp_quant_kernel *kc = tp_quant_kernel_ggml(names[i], TP_KERNEL_C);
		const tp_quant_kernel *ks = tp_quant_kernel_ggml(names[i], tp_quant_kernel_level());
		static const size_t cols[] = {512, 40, 256};
		for (size_t c = 0; c < 3; c++) {
			size_t xs = kc->x_size(cols[c]);
			unsigned char *a = malloc(xs), *b = malloc(xs);
			kc->x_prepare(x, cols[c], a);
			ks->x_prepare(x, cols[c], b);
			CHECK(memcmp(a, b, xs) == 0);
			free(a);
			free(b);
		}
	}
}

/* The AMX-INT8 prefill (q8_0, q4_0, q4_k with 16 inputs or more) against
 * plain C on shapes that take it: several groups of 16 rows, rows and
 * inputs left over for the VNNI tiles, an odd number of blocks. */
static void test_amx(void)
{
	printf("# AMX-INT8 %s on this machine\n",
	       tp_quant_kernel_ggml_amx() ? "usable" : "not usable (VNNI tiles checked)");
	static const char *const amx_names[] = {"q8_0", "q4_0", "q4_k"};
	static const size_t shapes[][3] = {
		{48, 768, 16}, {40, 768, 35}, {64, 288, 32}, {16, 1024, 17}, {33, 512, 64},
	};
	for (size_t i = 0; i < 3; i++)
		for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++)
			check_kernel(amx_names[i], shapes[k][0], shapes[k][1], shapes[k][2],
				     TP_KERNEL_AVX512);
	/* a NaN in one input of a full tile: only that input's outputs are NaN */
	for (size_t i = 0; i < 3; i++) {
		const tp_quant_format *f = tp_quant_format_find(amx_names[i]);
		const tp_quant_kernel *k = tp_quant_kernel_ggml(amx_names[i], tp_quant_kernel_level());
		size_t rows = 32, cols = 512, n = 16;
		float *w = malloc(rows * cols * sizeof(float)), *x = malloc(n * cols * sizeof(float));
		float *y = malloc(n * rows * sizeof(float));
		void *packed = malloc(f->packed_size(rows, cols));
		unsigned char *xp = malloc(n * k->x_size(cols));
		opt_fill_gauss(w, rows * cols, 0.05f);
		opt_fill_gauss(x, n * cols, 1.0f);
		x[5 * cols + 300] = NAN;
		CHECK_EQ_INT(f->quantize(w, rows, cols, NULL, packed), 0);
		for (size_t t = 0; t < n; t++)
			k->x_prepare(x + t * cols, cols, xp + t * k->x_size(cols));
		k->rows(packed, rows, cols, 0, rows, xp, n, y, rows);
		int bad = 0;
		for (size_t t = 0; t < n; t++)
			for (size_t r = 0; r < rows; r++)
				bad += (t == 5) != (bool)isnan(y[t * rows + r]);
		CHECK_EQ_INT(bad, 0);
		free(w);
		free(x);
		free(y);
		free(packed);
		free(xp);
	}
}

/* The kernel table: every format of the family has one, SIMD only where the
 * CPU allows, and forcing portable gives the C one. */
static void test_find(void)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const tp_quant_kernel *k = tp_quant_kernel_find(tp_quant_format_find(names[i]));
		CHECK(k != NULL);
		if (!k)
			continue;
		CHECK(strstr(k->name, names[i]) == k->name);
		CHECK((strstr(k->name, "avx2") != NULL) ==
		      (tp_quant_kernel_level() == TP_KERNEL_AVX2));
		CHECK((strstr(k->name, "avx512") != NULL) ==
		      (tp_quant_kernel_level() == TP_KERNEL_AVX512));
		bool old2 = tp_quant_kernel_force_avx2(true);
		CHECK(tp_quant_kernel_find(tp_quant_format_find(names[i])) ==
		      tp_quant_kernel_ggml(names[i], tp_quant_kernel_level()));
		tp_quant_kernel_force_avx2(old2);
		bool old = tp_quant_kernel_force_portable(true);
		CHECK(tp_quant_kernel_find(tp_quant_format_find(names[i])) ==
		      tp_quant_kernel_ggml(names[i], false));
		tp_quant_kernel_force_portable(old);
	}
	CHECK(tp_quant_kernel_ggml("nf4", true) == NULL);
	CHECK(tp_quant_kernel_ggml(NULL, true) == NULL);
}

/* A NaN in the input makes the products it meets NaN, as a dense layer's. */
static void test_nan(void)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const tp_quant_format *f = tp_quant_format_find(names[i]);
		size_t rows = 4, cols = 256;
		float w[4 * 256], x[256], y[4];
		opt_fill_gauss(w, rows * cols, 0.05f);
		opt_fill_gauss(x, cols, 1.0f);
		x[100] = NAN;
		void *packed = malloc(f->packed_size(rows, cols));
		f->quantize(w, rows, cols, NULL, packed);
		for (int level = TP_KERNEL_C; level <= tp_quant_kernel_level(); level++) {
			const tp_quant_kernel *k = tp_quant_kernel_ggml(names[i], level);
			unsigned char *xp = malloc(k->x_size(cols));
			k->x_prepare(x, cols, xp);
			k->rows(packed, rows, cols, 0, rows, xp, 1, y, rows);
			for (size_t r = 0; r < rows; r++)
				CHECK(isnan(y[r]));
			free(xp);
		}
		free(packed);
	}
}

/* The packed layer's forward (with its kernel) against dequantize + dot
 * plus bias, inline and on a pool of 2, on 1 and 7 tokens. */
static void check_forward(const char *name, size_t rows, size_t cols, tp_pool *pool)
{
	const tp_quant_format *f = tp_quant_format_find(name);
	float *w = malloc(rows * cols * sizeof(float)), *deq = malloc(rows * cols * sizeof(float));
	float *bias = malloc(rows * sizeof(float)), *x = malloc(7 * cols * sizeof(float));
	float *y = malloc(7 * rows * sizeof(float));
	void *packed = malloc(f->packed_size(rows, cols) + 1);
	tp_linear *q = NULL;
	opt_fill_gauss(w, rows * cols, 0.05f);
	opt_fill_gauss(bias, rows, 0.1f);
	opt_fill_gauss(x, 7 * cols, 1.0f);
	CHECK_EQ_INT(f->quantize(w, rows, cols, NULL, packed), 0);
	f->dequantize(packed, rows, cols, deq);
	CHECK_EQ_INT(tp_quant_linear_new(&q, f, packed, rows, cols, bias), 0);
	if (!q) {
		free(packed);
		goto done;
	}
	size_t blk = act_block(name, cols);
	static const size_t ns[] = {1, 7};
	for (size_t k = 0; k < 2; k++) {
		size_t n = ns[k];
		memset(y, 0xff, n * rows * sizeof(float));
		tp_linear_forward(q, x, n, y, pool);
		int bad = 0;
		for (size_t t = 0; t < n; t++)
			for (size_t r = 0; r < rows; r++) {
				const float *wr = deq + r * cols, *xt = x + t * cols;
				double e = exact_dot(wr, xt, cols) + bias[r];
				double b = bound(wr, xt, cols, blk) + 1e-6 * fabs(bias[r]);
				if (!(fabs(y[t * rows + r] - e) <= b))
					bad++;
			}
		if (bad)
			fprintf(stderr, "%s %zux%zu n=%zu pool=%d: %d outputs over bound\n", name,
				rows, cols, n, pool != NULL, bad);
		CHECK_EQ_INT(bad, 0);
	}
done:
	tp_linear_free(q);
	free(w);
	free(deq);
	free(bias);
	free(x);
	free(y);
}

static void test_forward(void)
{
	static const size_t shape[][2] = {{130, 256}, {37, 288}, {200, 40}, {64, 512}};
	tp_pool *pool = NULL;
	CHECK_EQ_INT(tp_pool_new(&pool, 2), 0);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		for (size_t s = 0; s < sizeof(shape) / sizeof(shape[0]); s++) {
			check_forward(names[i], shape[s][0], shape[s][1], NULL);
			check_forward(names[i], shape[s][0], shape[s][1], pool);
		}
	tp_pool_free(pool);
}

/* tp_quant_kernel_exact switches the family to fp32 activations: the
 * kernel then reads x as it is (no x_prepare); the group family keeps fp32
 * activations but is held to its AVX2 kernels (quality figures stay those
 * of the AVX2 summation order). */
static void test_exact_switch(void)
{
	const char *fam[] = {"int8", "q8_0", "q4_0", "q5_0", "q4_k"};
	size_t nfam = sizeof(fam) / sizeof(fam[0]);
	CHECK(!tp_quant_kernel_exact(true));
	for (size_t i = 0; i < nfam; i++) {
		const tp_quant_kernel *k = tp_quant_kernel_find(tp_quant_format_find(fam[i]));
		CHECK(k && !k->x_prepare);
	}
	const tp_quant_kernel *g = tp_quant_kernel_find(tp_quant_format_find("rtn4_g128"));
	CHECK(g == tp_quant_kernel_group("rtn4_g128", tp_quant_kernel_use_avx2() ? TP_KERNEL_AVX2
										: TP_KERNEL_C));
	CHECK(tp_quant_kernel_exact(false));
	for (size_t i = 0; i < nfam; i++) {
		const tp_quant_kernel *k = tp_quant_kernel_find(tp_quant_format_find(fam[i]));
		CHECK(k && k->x_prepare);
	}
	CHECK(g && g == tp_quant_kernel_group("rtn4_g128", TP_KERNEL_AVX2 < tp_quant_kernel_level()
								  ? TP_KERNEL_AVX2
								  : tp_quant_kernel_level()));
	CHECK(tp_quant_kernel_find(tp_quant_format_find("rtn4_g128")) ==
	      tp_quant_kernel_group("rtn4_g128", tp_quant_kernel_level()));
}

int main(void)
{
	TP_TEST_RUN(test_find);
	TP_TEST_RUN(test_kernels);
	TP_TEST_RUN(test_amx);
	TP_TEST_RUN(test_prepare_ties);
	TP_TEST_RUN(test_nan);
	TP_TEST_RUN(test_forward);
	TP_TEST_RUN(test_exact_switch);
	return TP_TEST_RESULT();
}
