/* Kernels of the group family (rtnB_gG, nf4, nf4_dq, fp16, bf16,
 * int4_int2_residual): the SIMD kernel against the plain-C one on the same
 * inputs, both against the format's dequantize with exact sums, and one-hot
 * inputs, which make every product exact, against the dequantized weights
 * bit for bit. rtnB_gG's AVX-512 kernels round decode inputs to 8 bits per
 * group: they are held to their own plain-C reference as tightly, and to
 * the exact product within that rounding's bound. */
#include <string.h>

#include "kernels_internal.h"
#include "opt_test.h"
#include "tp_runtime.h"

static const char *const names[] = {"rtn4_g128", "rtn4_g64", "rtn4_g256", "rtn3_g128",
				    "rtn2_g128", "nf4",	     "nf4_dq",	  "fp16",
				    "bf16",	 "int4_int2_residual", "int4_sparse25"};

/* int4_sparse25 has a kernel on AVX-512 (VBMI2) only; below, rows are
 * widened (tp_quant_kernel_find gives NULL). */
static bool avx512_only(const tp_quant_format *f)
{
	return strcmp(f->name, "int4_sparse25") == 0;
}

/* The kernel of f at a level (TP_KERNEL_C, _AVX2, _AVX512), or the
 * highest lower one this CPU has. */
static const tp_quant_kernel *kernel(const tp_quant_format *f, int level)
{
	bool old = tp_quant_kernel_force_portable(level == TP_KERNEL_C);
	bool old2 = tp_quant_kernel_force_avx2(level < TP_KERNEL_AVX512);
	const tp_quant_kernel *k = tp_quant_kernel_find(f);
	tp_quant_kernel_force_portable(old);
	tp_quant_kernel_force_avx2(old2);
	return k;
}

/* The 8-bit-input kernel of f at level (its plain-C reference at
 * TP_KERNEL_C), or NULL when f has none or the CPU lacks it. */
static const tp_quant_kernel *kernel_q8(const tp_quant_format *f, int level)
{
	if (level == TP_KERNEL_AVX512 && tp_quant_kernel_level() < TP_KERNEL_AVX512)
		return NULL;
	return tp_quant_kernel_group_q8(f->name, level);
}

/* Columns per group of the 8-bit inputs: G of rtnB_gG. */
static size_t q8_group(const tp_quant_format *f)
{
	const char *g = strstr(f->name, "_g");
	if (avx512_only(f))
		return 128;
	return g ? (size_t)strtoul(g + 2, NULL, 10) : 0;
}

/* Bound on |sum w (x - x8)|, x8 the input rounded to 8 bits per group of
 * the row (d = amax / 127, |x - x8| <= d / 2, a little slack for the
 * roundings of d itself); 0 unless k rounds inputs (decode on whole
 * groups of whole 64-column steps). Then *mag becomes the magnitude the
 * fp32 roundings are relative to: the AVX-512 kernel rounds q * x8 and
 * - z * x8 (|z s| <= the group's largest |w|: its least code is 0) in
 * separate lanes before they cancel, so sum (|w| + 2 max |w|) (|x| + d). */
static double q8_bound(const tp_quant_format *f, const tp_quant_kernel *k, const float *w,
		       const float *x, size_t cols, size_t n, double *mag)
{
	size_t g = q8_group(f);
	if (!k || !strstr(k->name, " q8 ") || n >= 4 || !g || cols % 64 || cols % g)
		return 0;
	double b = 0, m = 0;
	for (size_t c0 = 0; c0 < cols; c0 += g) {
		double amax = 0, wsum = 0, wmax = 0;
		for (size_t c = c0; c < c0 + g; c++) {
			amax = fmax(amax, fabs(x[c]));
			wmax = fmax(wmax, fabs(w[c]));
			wsum += fabs(w[c]);
		}
		for (size_t c = c0; c < c0 + g; c++)
			m += (fabs(w[c]) + 2 * wmax) * (fabs(x[c]) + amax / 127);
		b += wsum * amax / 127 * 0.5001;
	}
	if (mag)
		*mag = m;
	return b;
}

static void *make_packed(const tp_quant_format *f, size_t rows, size_t cols, float *deq)
{
	float *w = malloc(rows * cols * sizeof(float));
	opt_fill_gauss(w, rows * cols, 0.05f);
	/* Exactly packed_size bytes: a kernel must not read past the end. */
	void *packed = malloc(f->packed_size(rows, cols));
	/* int4_sparse25 needs statistics of the inputs (any positive do) */
	double *sq = malloc(cols * sizeof(double));
	for (size_t c = 0; c < cols; c++)
		sq[c] = 1 + (double)(c % 7);
	tp_quant_calib calib = {.cols = cols, .nsamples = 1, .sq_sum = sq};
	CHECK_EQ_INT(f->quantize(w, rows, cols, &calib, packed), 0);
	free(sq);
	f->dequantize(packed, rows, cols, deq);
	free(w);
	return packed;
}

/* Every input in one run: y = W x_t for r0 <= r < r1 through k, the
 * inputs prepared first when k wants them so. */
static void run(const tp_quant_kernel *k, const void *packed, size_t rows, size_t cols,
		size_t r0, size_t r1, const float *x, size_t n, float *y, size_t ldy)
{
	if (!k->x_prepare) {
		k->rows(packed, rows, cols, r0, r1, x, n, y, ldy);
		return;
	}
	size_t xs = k->x_size(cols);
	unsigned char *xp = malloc(n * xs + 1);
	for (size_t t = 0; t < n; t++)
		k->x_prepare(x + t * cols, cols, xp + t * xs);
	k->rows(packed, rows, cols, r0, r1, xp, n, y, ldy);
	free(xp);
}

/* Random inputs: the SIMD and plain-C results each within the fp32
 * summation bound of the exact product of the dequantized weights:
 * |fl(sum) - sum| <= gamma_m * sum |w x| with m = cols + 8 roundings at most
 * on any path (a product, cols additions, a scale, a split sum). */
static void check_random_at(const tp_quant_format *f, int level, size_t rows, size_t cols,
			    size_t r0, size_t r1, size_t n)
{
	const tp_quant_kernel *ks = kernel(f, level), *kc = kernel(f, TP_KERNEL_C);
	if (!ks && avx512_only(f))
		return;
	/* An 8-bit-input kernel against its own reference. */
	if (ks && ks == kernel_q8(f, level))
		kc = kernel_q8(f, TP_KERNEL_C);
	CHECK(ks && kc);
	if (!ks || !kc)
		return;
	float *deq = malloc(rows * cols * sizeof(float)), *x = malloc(n * cols * sizeof(float));
	size_t m = r1 - r0, ldy = m + 3;
	float *ys = malloc(n * ldy * sizeof(float)), *yc = malloc(n * ldy * sizeof(float));
	void *packed = make_packed(f, rows, cols, deq);
	opt_fill_gauss(x, n * cols, 1.0f);
	memset(ys, 0x7f, n * ldy * sizeof(float));
	memset(yc, 0x7f, n * ldy * sizeof(float));
	run(ks, packed, rows, cols, r0, r1, x, n, ys, ldy);
	run(kc, packed, rows, cols, r0, r1, x, n, yc, ldy);
	double u = 0x1p-24, gamma = (double)(cols + 8) * u / (1 - (double)(cols + 8) * u);
	int bad = 0;
	for (size_t t = 0; t < n; t++) {
		for (size_t r = r0; r < r1; r++) {
			double exact = 0, mag = 0;
			for (size_t c = 0; c < cols; c++) {
				exact += (double)deq[r * cols + c] * x[t * cols + c];
				mag += fabs((double)deq[r * cols + c] * x[t * cols + c]);
			}
			/* Rounded inputs: both within q8 of the exact product, and
			 * of each other as two fp32 sums of the same products. */
			double q8 = q8_bound(f, ks, deq + r * cols, x + t * cols, cols, n, &mag);
			double bound = gamma * mag + q8, s = ys[t * ldy + r - r0],
			       c = yc[t * ldy + r - r0];
			if (!(fabs(s - exact) <= bound && fabs(c - exact) <= bound &&
			      fabs(s - c) <= 2 * gamma * mag) &&
			    bad++ < 3)
				fprintf(stderr,
					"%s %s %zux%zu rows %zu..%zu n=%zu t=%zu r=%zu: simd %.9g c %.9g "
					"exact %.9g bound %.3g\n",
					f->name, ks->name, rows, cols, r0, r1, n, t, r, s, c, exact, bound);
		}
		/* Nothing written past the m outputs of an input. */
		uint32_t pad;
		memcpy(&pad, ys + t * ldy + m, 4);
		if (pad != 0x7f7f7f7fu && bad++ < 3)
			fprintf(stderr, "%s: simd kernel wrote past row %zu\n", f->name, r1);
	}
	CHECK(bad == 0);
	free(packed);
	free(deq);
	free(x);
	free(ys);
	free(yc);
}

/* Each SIMD level against plain C. */
static void check_random(const tp_quant_format *f, size_t rows, size_t cols, size_t r0,
			 size_t r1, size_t n)
{
	check_random_at(f, TP_KERNEL_AVX2, rows, cols, r0, r1, n);
	check_random_at(f, TP_KERNEL_AVX512, rows, cols, r0, r1, n);
}

static void test_random(void)
{
	/* 2112 = 33 x 64: 33 groups of g64 a row, so every other row's zero
	 * points start mid-byte and a row has two chunks of 16 groups and one
	 * more; 1280: 20 groups of g64, 10 of g128, 5 of g256; 576 and 264: a
	 * last partial group of g128 / g256. */
	static const size_t shape[][2] = {{37, 576}, {50, 64},	{20, 4096}, {33, 100}, {19, 264},
					  {11, 96},  {13, 160}, {11, 2112}, {10, 1280}, {9, 768}};
	static const size_t ns[] = {1, 2, 3, 7, 33};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const tp_quant_format *f = tp_quant_format_find(names[i]);
		CHECK(f != NULL);
		for (size_t s = 0; f && s < sizeof(shape) / sizeof(shape[0]); s++)
			for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
				size_t rows = shape[s][0], cols = shape[s][1];
				check_random(f, rows, cols, 0, rows, ns[k]);
				/* sub-ranges: an odd start, and the last rows */
				check_random(f, rows, cols, 3, rows - 5, ns[k]);
				check_random(f, rows, cols, rows - 2, rows, ns[k]);
			}
	}
}

/* One-hot inputs: y[t][r] = w[r][c_t] exactly. cols inputs (the identity)
 * take the prefill path; one at a time the decode path. */
static void check_onehot(const tp_quant_format *f, size_t rows, size_t cols)
{
	float *deq = malloc(rows * cols * sizeof(float)), *x = calloc(cols * cols, sizeof(float));
	float *y = malloc(cols * rows * sizeof(float));
	void *packed = make_packed(f, rows, cols, deq);
	for (size_t c = 0; c < cols; c++)
		x[c * cols + c] = 1.0f;
	for (int level = TP_KERNEL_C; level <= TP_KERNEL_AVX512; level++) {
		const tp_quant_kernel *k = kernel(f, level);
		CHECK(k != NULL || avx512_only(f));
		if (!k)
			continue;
		int bad = 0;
		run(k, packed, rows, cols, 0, rows, x, cols, y, rows);
		for (size_t c = 0; c < cols; c++)
			for (size_t r = 0; r < rows; r++)
				if (y[c * rows + r] != deq[r * cols + c] && bad++ < 3)
					fprintf(stderr, "%s %s %zux%zu identity: w[%zu][%zu] %.9g != %.9g\n",
						f->name, k->name, rows, cols, r, c, y[c * rows + r],
						deq[r * cols + c]);
		/* Rounded to 8 bits, a one-hot input is 127 times d = 1 / 127:
		 * the product is w up to the roundings of d, scale * d, and of
		 * q * 127 * scale * d and - z * 127 * scale * d, summed after
		 * (|z scale| <= the group's largest |w|, here the row's). */
		bool q8 = strstr(k->name, " q8 ") != NULL;
		for (size_t c = 0; c < cols; c++) {
			run(k, packed, rows, cols, 0, rows, x + c * cols, 1, y, rows);
			for (size_t r = 0; r < rows; r++) {
				double wmax = 0;
				for (size_t j = 0; q8 && j < cols; j++)
					wmax = fmax(wmax, fabs(deq[r * cols + j]));
				double tol = 4 * 0x1p-24 * (fabs(deq[r * cols + c]) + 2 * wmax);
				if (!(q8 ? fabs((double)y[r] - deq[r * cols + c]) <= tol
					 : y[r] == deq[r * cols + c]) &&
				    bad++ < 3)
					fprintf(stderr, "%s %s %zux%zu one-hot: w[%zu][%zu] %.9g != %.9g\n",
						f->name, k->name, rows, cols, r, c, y[r],
						deq[r * cols + c]);
			}
		}
		CHECK(bad == 0);
	}
	free(packed);
	free(deq);
	free(x);
	free(y);
}

static void test_onehot(void)
{
	/* 384: whole groups of g64 and g128 (int4_sparse25's kernel) */
	static const size_t shape[][2] = {{37, 576}, {21, 64}, {9, 100}, {5, 264},
					  {3, 200},  {11, 96}, {7, 160}, {6, 384}};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const tp_quant_format *f = tp_quant_format_find(names[i]);
		for (size_t s = 0; f && s < sizeof(shape) / sizeof(shape[0]); s++)
			check_onehot(f, shape[s][0], shape[s][1]);
	}
}

/* The SIMD kernel is the one a CPU with AVX2/FMA gets, the 4-bit formats'
 * AVX-512 one a CPU with AVX-512 VNNI, but never under
 * tp_quant_kernel_exact (quality stays on the AVX2 kernels); every format
 * of the family has a plain-C one. */
static void test_find(void)
{
	bool has512 = tp_quant_kernel_level() == TP_KERNEL_AVX512;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const tp_quant_format *f = tp_quant_format_find(names[i]);
		if (avx512_only(f)) {
			/* a plain-C reference; the AVX-512 kernel where VBMI2 is */
			const tp_quant_kernel *k5 = kernel(f, TP_KERNEL_AVX512);
			CHECK(!kernel(f, TP_KERNEL_C) && !kernel(f, TP_KERNEL_AVX2));
			CHECK(kernel_q8(f, TP_KERNEL_C) != NULL);
			CHECK(k5 == kernel_q8(f, TP_KERNEL_AVX512));
			CHECK(!has512 || !__builtin_cpu_supports("avx512vbmi2") ||
			      (k5 && strstr(k5->name, "avx512")));
			bool old = tp_quant_kernel_exact(true);
			CHECK(tp_quant_kernel_find(f) == NULL);
			tp_quant_kernel_exact(old);
			continue;
		}
		const tp_quant_kernel *kc = kernel(f, TP_KERNEL_C), *ks = kernel(f, TP_KERNEL_AVX2);
		const tp_quant_kernel *k5 = kernel(f, TP_KERNEL_AVX512);
		CHECK(kc && strstr(kc->name, names[i]) == kc->name);
		CHECK(ks && (tp_quant_kernel_use_avx2() ? ks != kc : ks == kc));
		bool four = strncmp(names[i], "rtn4_", 5) == 0 || strncmp(names[i], "nf4", 3) == 0;
		/* rtnB_gG's AVX-512 kernel rounds decode inputs to 8 bits (the 3-
		 * and 2-bit ones need VBMI too); it has a plain-C reference. */
		bool rtn = strncmp(names[i], "rtn", 3) == 0;
		const tp_quant_kernel *q5 = kernel_q8(f, TP_KERNEL_AVX512), *qc = kernel_q8(f, TP_KERNEL_C);
		CHECK(rtn ? qc && strstr(qc->name, " q8 c") : !qc && !q5);
		CHECK(!kernel_q8(f, TP_KERNEL_AVX2));
		CHECK(k5 && (has512 && (four || q5) ? strstr(k5->name, "avx512") != NULL : k5 == ks));
		CHECK(!q5 || k5 == q5);
		CHECK(!has512 || !rtn || !four || q5);
		bool old = tp_quant_kernel_exact(true);
		CHECK(tp_quant_kernel_find(f) == ks);
		tp_quant_kernel_exact(old);
	}
}

/* Forward through tp_quant_linear_new (bias, n = 1 and 33, inline and on a
 * 2-thread pool) against tp_linear_dense_new over the dequantized weights. */
static void check_forward(const tp_quant_format *f, size_t rows, size_t cols, tp_pool *pool)
{
	size_t nmax = 33;
	float *deq = malloc(rows * cols * sizeof(float)), *bias = malloc(rows * sizeof(float));
	float *x = malloc(nmax * cols * sizeof(float)), *y0 = malloc(nmax * rows * sizeof(float)),
	      *y1 = malloc(nmax * rows * sizeof(float));
	void *packed = make_packed(f, rows, cols, deq);
	opt_fill_gauss(bias, rows, 0.1f);
	opt_fill_gauss(x, nmax * cols, 1.0f);
	tp_linear *dense = NULL, *q = NULL;
	CHECK_EQ_INT(tp_linear_dense_new(&dense, deq, bias, rows, cols), 0);
	CHECK_EQ_INT(tp_quant_linear_new(&q, f, packed, rows, cols, bias), 0);
	if (!q)
		free(packed);
	static const size_t ns[] = {1, 33};
	double gamma = (double)(2 * cols + 16) * 0x1p-24;
	for (size_t k = 0; k < 2 && dense && q; k++) {
		size_t n = ns[k];
		tp_linear_forward(dense, x, n, y0, pool);
		memset(y1, 0xff, n * rows * sizeof(float));
		tp_linear_forward(q, x, n, y1, pool);
		int bad = 0;
		for (size_t t = 0; t < n; t++)
			for (size_t r = 0; r < rows; r++) {
				double mag = fabs(bias[r]);
				for (size_t c = 0; c < cols; c++)
					mag += fabs((double)deq[r * cols + c] * x[t * cols + c]);
				double magz = 0;
				double q8 = q8_bound(f, tp_quant_kernel_find(f), deq + r * cols,
						     x + t * cols, cols, n, &magz);
				double d = fabs((double)y0[t * rows + r] - y1[t * rows + r]);
				if (!(d <= gamma * (mag + magz) + q8) && bad++ < 3)
					fprintf(stderr, "%s forward %zux%zu n=%zu: y[%zu][%zu] %.9g vs dense %.9g\n",
						f->name, rows, cols, n, t, r, y1[t * rows + r],
						y0[t * rows + r]);
			}
		CHECK(bad == 0);
	}
	tp_linear_free(dense);
	tp_linear_free(q);
	free(deq);
	free(bias);
	free(x);
	free(y0);
	free(y1);
}

static void test_forward(void)
{
	tp_pool *pool = NULL;
	CHECK_EQ_INT(tp_pool_new(&pool, 2), 0);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const tp_quant_format *f = tp_quant_format_find(names[i]);
		for (int level = TP_KERNEL_C; level <= TP_KERNEL_AVX512; level++) {
			bool old = tp_quant_kernel_force_portable(level == TP_KERNEL_C);
			bool old2 = tp_quant_kernel_force_avx2(level < TP_KERNEL_AVX512);
			check_forward(f, 200, 576, NULL);
			check_forward(f, 200, 576, pool);
			check_forward(f, 45, 100, pool);
			check_forward(f, 70, 1024, pool);
			tp_quant_kernel_force_portable(old);
			tp_quant_kernel_force_avx2(old2);
		}
	}
	tp_pool_free(pool);
}

/* 8-bit inputs: a non-finite input makes every output non-finite, as on
 * the fp32 path; inputs near the ends of fp32's range keep the bound. */
static void test_q8_range(void)
{
	const size_t rows = 9, cols = 1024;
	float *deq = malloc(rows * cols * sizeof(float)), *x = malloc(cols * sizeof(float));
	float y[9];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const tp_quant_format *f = tp_quant_format_find(names[i]);
		for (int level = TP_KERNEL_C; f && level <= TP_KERNEL_AVX512; level += 2) {
			const tp_quant_kernel *k = kernel_q8(f, level);
			if (!k)
				continue;
			void *packed = make_packed(f, rows, cols, deq);
			static const float special[] = {NAN, INFINITY, -INFINITY};
			for (size_t s = 0; s < 3; s++) {
				opt_fill_gauss(x, cols, 1.0f);
				x[517] = special[s];
				run(k, packed, rows, cols, 0, rows, x, 1, y, rows);
				for (size_t r = 0; r < rows; r++)
					CHECK(!isfinite(y[r]));
			}
			static const float scale[] = {1e-30f, 1e-41f, 1e30f};
			for (size_t s = 0; s < 3; s++) {
				opt_fill_gauss(x, cols, 1.0f);
				for (size_t c = 0; c < cols; c++)
					x[c] *= scale[s];
				run(k, packed, rows, cols, 0, rows, x, 1, y, rows);
				for (size_t r = 0; r < rows; r++) {
					double exact = 0, mag = 0;
					for (size_t c = 0; c < cols; c++) {
						exact += (double)deq[r * cols + c] * x[c];
						mag += fabs((double)deq[r * cols + c] * x[c]);
					}
					double q8 = q8_bound(f, k, deq + r * cols, x, cols, 1, NULL);
					/* subnormal inputs: d and the products keep few bits
					 * (as fp32 products of such inputs do); only finite
					 * and of the right size */
					double slack = scale[s] < 1e-38f ? mag : 0;
					CHECK(fabs(y[r] - exact) <= 1e-4 * mag + q8 + slack);
				}
			}
			free(packed);
		}
	}
	free(deq);
	free(x);
}

int main(void)
{
	TP_TEST_RUN(test_find);
	TP_TEST_RUN(test_onehot);
	TP_TEST_RUN(test_random);
	TP_TEST_RUN(test_forward);
	TP_TEST_RUN(test_q8_range);
	return TP_TEST_RESULT();
}
