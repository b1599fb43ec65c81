/*
 * GPTQ and AWQ (optimize/gptq.c, awq.c) on synthetic layers with a fixed
 * seed: each must beat plain round-to-nearest on the output error
 * ||(W - W^) X^T||^2 it exists to lower, match RTN exactly where the theory
 * says so (H = identity), and stay finite on degenerate inputs.
 * `test_methods --bench` times GPTQ on two layer sizes instead.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tp_test.h"
#include "tp_optimize.h"

static uint64_t rng_state;

static double rnd_unit(void)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}

static float rnd_normal(void)
{
	return (float)(sqrt(-2.0 * log(rnd_unit())) * cos(6.283185307179586 * rnd_unit()));
}

static float fp16(float f)
{
	return tp_fp16_to_f32(tp_fp16_from_f32(f));
}

/* The test's own RTN, written from the rule in the issue (range including 0,
 * scale rounded to fp16 as stored), independent of optimize/ but in the same
 * float arithmetic. */
static void rtn(const float *w, size_t rows, size_t cols, int bits, size_t group, float *out)
{
	float maxq = (float)((1 << bits) - 1);
	for (size_t r = 0; r < rows; r++) {
		for (size_t c0 = 0; c0 < cols; c0 += group) {
			size_t c1 = c0 + group < cols ? c0 + group : cols;
			float mn = 0, mx = 0;
			for (size_t c = c0; c < c1; c++) {
				mn = fminf(mn, w[r * cols + c]);
				mx = fmaxf(mx, w[r * cols + c]);
			}
			float s = fp16(fmaxf(mx - mn, 1e-5f) / maxq);
			float z = fminf(fmaxf(nearbyintf(-mn / s), 0), maxq);
			for (size_t c = c0; c < c1; c++) {
				float q = fminf(fmaxf(nearbyintf(w[r * cols + c] / s) + z, 0), maxq);
				out[r * cols + c] = (q - z) * s;
			}
		}
	}
}

/* ||(W - Wq) X^T||^2 */
static double out_err(const float *w, const float *wq, size_t rows, size_t cols, const float *x,
		      size_t nx)
{
	double e = 0;
	for (size_t r = 0; r < rows; r++)
		for (size_t t = 0; t < nx; t++) {
			double d = 0;
			for (size_t c = 0; c < cols; c++)
				d += ((double)w[r * cols + c] - wq[r * cols + c]) * x[t * cols + c];
			e += d * d;
		}
	return e;
}

/* Calibration statistics of x, as the capture computes them. */
static tp_quant_calib make_calib(const float *x, size_t nx, size_t cols)
{
	tp_quant_calib k = {.cols = cols, .nsamples = nx};
	k.abs_mean = calloc(cols, sizeof(double));
	k.sq_sum = calloc(cols, sizeof(double));
	k.hessian = calloc(cols * cols, sizeof(double));
	for (size_t t = 0; t < nx; t++)
		for (size_t i = 0; i < cols; i++) {
			double xi = x[t * cols + i];
			k.abs_mean[i] += fabs(xi) / (double)nx;
			k.sq_sum[i] += xi * xi;
			for (size_t j = 0; j < cols; j++)
				k.hessian[i * cols + j] += xi * x[t * cols + j];
		}
	return k;
}

static void free_calib(tp_quant_calib *k)
{
	free(k->abs_mean);
	free(k->sq_sum);
	free(k->hessian);
}

/* Correlated inputs (a random mix of fewer latent factors plus noise);
 * channels in `loud` (if any) scaled by `gain`. */
static float *make_inputs(size_t nx, size_t cols, const size_t *loud, size_t nloud, float gain)
{
	size_t nf = cols / 4 + 1;
	float *mix = malloc(nf * cols * sizeof(float)), *x = malloc(nx * cols * sizeof(float));
	for (size_t i = 0; i < nf * cols; i++)
		mix[i] = rnd_normal() / sqrtf((float)nf);
	for (size_t t = 0; t < nx; t++) {
		float z[1024];
		for (size_t f = 0; f < nf; f++)
			z[f] = rnd_normal();
		for (size_t c = 0; c < cols; c++) {
			float v = 0.3f * rnd_normal();
			for (size_t f = 0; f < nf; f++)
				v += z[f] * mix[f * cols + c];
			x[t * cols + c] = v;
		}
		for (size_t l = 0; l < nloud; l++)
			x[t * cols + loud[l]] *= gain;
	}
	free(mix);
	return x;
}

static float *make_weights(size_t rows, size_t cols)
{
	float *w = malloc(rows * cols * sizeof(float));
	for (size_t i = 0; i < rows * cols; i++)
		w[i] = 0.02f * rnd_normal();
	return w;
}

static bool all_finite(const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(v[i]))
			return false;
	return true;
}

/* 1 x 4, H = identity: no error to spread, so GPTQ is RTN; values by hand:
 * 2 bits, min -1, max 1: scale s = fp16(2/3), zero round(1/s) = 2; codes
 * 0,2,2,3. */
static void test_gptq_identity_is_rtn(void)
{
	const float w[4] = {-1.0f, -0.2f, 0.3f, 1.0f};
	double h[16] = {0};
	for (int i = 0; i < 4; i++)
		h[i * 5] = 1.0;
	tp_quant_calib k = {.cols = 4, .nsamples = 1, .hessian = h};
	for (int act = 0; act < 2; act++) {
		float out[4];
		tp_quant_result r;
		CHECK_EQ_INT(tp_quant_gptq(w, 1, 4, &k, 2, 4, act, out, &r), 0);
		const float sc = fp16(2.0f / 3);
		CHECK(out[0] == -2 * sc && out[1] == 0.0f && out[2] == 0.0f && out[3] == sc);
		CHECK(r.q[0] == 0 && r.q[1] == 2 && r.q[2] == 2 && r.q[3] == 3);
		CHECK(r.zeros[0] == 2 && r.scales[0] == sc);
		CHECK(r.ngroups == 1 && r.g_idx[3] == 0 && r.damp == 0.01);
		tp_quant_result_free(&r);
	}
}

/* Two correlated inputs by hand: S = H = [[1, .5], [.5, 1]] (n = 2), damped
 * to 1.01 on the diagonal; w = (0.045, 0.1), 3 bits, one group: scale
 * s = fp16(1/70), zero 0. Column 0: 3.15 -> 3, e0 = 0.045 - 3s. GPTQ moves
 * column 1 by -e0 [H^-1]01/[H^-1]00 = +e0 .5/1.01 to ~0.10106 (rounds to 7 ->
 * 7s, left with e1). Its loss e^2/(2 [U]ii^2) has U00^2 = 1.01/det, U11^2 = 1/1.01. */
static void test_gptq_error_propagates(void)
{
	const float w[2] = {0.045f, 0.1f};
	double h[4] = {1.0, 0.5, 0.5, 1.0};
	tp_quant_calib k = {.cols = 2, .nsamples = 2, .hessian = h};
	float out[2];
	tp_quant_result r;
	CHECK_EQ_INT(tp_quant_gptq(w, 1, 2, &k, 3, 2, false, out, &r), 0);
	const double sc = fp16(1.0f / 70);
	CHECK(fabs(out[0] - 3 * sc) < 1e-7 && fabs(out[1] - 7 * sc) < 1e-7);
	CHECK(r.q[0] == 3 && r.q[1] == 7 && r.zeros[0] == 0);
	double det = 1.01 * 1.01 - 0.25, e0 = 0.045 - 3 * sc, w1 = 0.1 + e0 * 0.5 / 1.01;
	double e1 = w1 - 7 * sc, loss = e0 * e0 * det / 1.01 / 2 + e1 * e1 * 1.01 / 2;
	fprintf(stderr, "   loss %.9g expected %.9g\n", r.loss, loss);
	CHECK(fabs(r.loss - loss) < 1e-4 * loss);
	tp_quant_result_free(&r);
}

static void test_gptq_beats_rtn(void)
{
	rng_state = 12;
	size_t rows = 64, cols = 256, nx = 1024;
	float *x = make_inputs(nx, cols, NULL, 0, 1), *w = make_weights(rows, cols);
	float *wr = malloc(rows * cols * 4), *wg = malloc(rows * cols * 4);
	tp_quant_calib k = make_calib(x, nx, cols);
	const int bits[2] = {4, 3};
	for (int b = 0; b < 2; b++) {
		rtn(w, rows, cols, bits[b], 128, wr);
		CHECK_EQ_INT(tp_quant_gptq(w, rows, cols, &k, bits[b], 128, false, wg, NULL), 0);
		double er = out_err(w, wr, rows, cols, x, nx), eg = out_err(w, wg, rows, cols, x, nx);
		fprintf(stderr, "   %d-bit g128: rtn %.4g gptq %.4g (%.2f)\n", bits[b], er, eg, eg / er);
		CHECK(eg < 0.8 * er);
		CHECK(all_finite(wg, rows * cols));
	}
	free_calib(&k);
	free(x);
	free(w);
	free(wr);
	free(wg);
}

static void test_gptq_act_order_outliers(void)
{
	rng_state = 34;
	size_t rows = 64, cols = 256, nx = 1024;
	const size_t loud[] = {3, 77, 130, 200, 201, 250};
	float *x = make_inputs(nx, cols, loud, 6, 20), *w = make_weights(rows, cols);
	float *wr = malloc(rows * cols * 4), *w0 = malloc(rows * cols * 4), *w1 = malloc(rows * cols * 4);
	tp_quant_calib k = make_calib(x, nx, cols);
	tp_quant_result r;
	rtn(w, rows, cols, 4, 128, wr);
	CHECK_EQ_INT(tp_quant_gptq(w, rows, cols, &k, 4, 128, false, w0, NULL), 0);
	CHECK_EQ_INT(tp_quant_gptq(w, rows, cols, &k, 4, 128, true, w1, &r), 0);
	double er = out_err(w, wr, rows, cols, x, nx), e0 = out_err(w, w0, rows, cols, x, nx),
	       e1 = out_err(w, w1, rows, cols, x, nx);
	fprintf(stderr, "   outliers: rtn %.4g gptq %.4g gptq+act-order %.4g\n", er, e0, e1);
	CHECK(e1 <= e0);
	CHECK(e0 < er);
	/* the loudest inputs go first; g_idx stays in the original order */
	bool first_loud = false;
	for (int l = 0; l < 6; l++)
		first_loud |= r.perm[0] == loud[l];
	CHECK(first_loud);
	CHECK(r.g_idx[0] == 0 && r.g_idx[255] == 1);
	/* static groups: codes and parameters give back w_out */
	bool same = true;
	for (size_t i = 0; i < rows * cols; i++) {
		size_t gi = (i / cols) * r.ngroups + r.g_idx[i % cols];
		same &= (r.q[i] - (float)r.zeros[gi]) * r.scales[gi] == w1[i];
	}
	CHECK(same);
	tp_quant_result_free(&r);
	free_calib(&k);
	free(x);
	free(w);
	free(wr);
	free(w0);
	free(w1);
}

/* Damping: an indefinite "Hessian" fails cleanly; one just short of
 * positive definite factors once the damping is raised. */
static void test_gptq_damping(void)
{
	const float w[2] = {0.1f, -0.2f};
	float out[2] = {7, 7};
	double bad[4] = {1, 3, 3, 1}, near[4] = {1, 1.03, 1.03, 1};
	tp_quant_calib k = {.cols = 2, .nsamples = 2, .hessian = bad};
	tp_quant_result r;
	CHECK_EQ_INT(tp_quant_gptq(w, 1, 2, &k, 4, 0, false, out, NULL), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "not positive definite") != NULL);
	CHECK(out[0] == 7 && out[1] == 7);
	k.hessian = near;
	CHECK_EQ_INT(tp_quant_gptq(w, 1, 2, &k, 4, 0, false, out, &r), 0);
	CHECK(r.damp == 0.05);
	tp_quant_result_free(&r);
	k.cols = 3;
	CHECK_EQ_INT(tp_quant_gptq(w, 1, 2, &k, 4, 0, false, out, NULL), TP_EINVAL);
}

/* Inputs whose channels differ a lot in size, a few of them salient. */
static void test_awq_beats_rtn(void)
{
	rng_state = 56;
	size_t cols = 256, nx = 256, rows[2] = {96, 64};
	const size_t loud[] = {5, 9, 60, 61, 140, 222, 223, 255};
	float *x = make_inputs(nx, cols, loud, 8, 30);
	float *w[2] = {make_weights(rows[0], cols), make_weights(rows[1], cols)};
	float *s = malloc(cols * 4);
	tp_quant_calib k = make_calib(x, nx, cols);
	double alpha = -1;
	CHECK_EQ_INT(tp_quant_awq_search((const float *const *)w, rows, 2, cols, x, nx, k.abs_mean,
					 4, 128, s, &alpha),
		     0);
	CHECK(alpha > 0 && alpha < 1);
	CHECK(s[5] > s[6] && s[222] > s[221]);
	for (int m = 0; m < 2; m++) {
		size_t n = rows[m] * cols;
		float *wr = malloc(n * 4), *wa = malloc(n * 4), *wc = malloc(n * 4);
		rtn(w[m], rows[m], cols, 4, 128, wr);
		CHECK_EQ_INT(tp_quant_awq(w[m], rows[m], cols, s, x, nx, 4, 128, false, wa, NULL), 0);
		CHECK_EQ_INT(tp_quant_awq(w[m], rows[m], cols, s, x, nx, 4, 128, true, wc, NULL), 0);
		/* back to the unfolded domain: W^ = Q(W diag s) diag(1/s) */
		for (size_t i = 0; i < n; i++) {
			wa[i] /= s[i % cols];
			wc[i] /= s[i % cols];
		}
		double er = out_err(w[m], wr, rows[m], cols, x, nx),
		       ea = out_err(w[m], wa, rows[m], cols, x, nx),
		       ec = out_err(w[m], wc, rows[m], cols, x, nx);
		fprintf(stderr, "   awq m%d alpha %.2f: rtn %.4g awq %.4g awq+clip %.4g\n", m, alpha,
			er, ea, ec);
		CHECK(ea < 0.9 * er);
		CHECK(ec < 0.9 * er);
		free(wr);
		free(wa);
		free(wc);
	}
	/* scales all 1 and no clipping is RTN, codes included */
	float *ones = malloc(cols * 4), *wr = malloc(rows[0] * cols * 4), *wo = malloc(rows[0] * cols * 4);
	tp_quant_result r;
	for (size_t c = 0; c < cols; c++)
		ones[c] = 1;
	rtn(w[0], rows[0], cols, 4, 128, wr);
	CHECK_EQ_INT(tp_quant_awq(w[0], rows[0], cols, ones, NULL, 0, 4, 128, false, wo, &r), 0);
	CHECK(memcmp(wr, wo, rows[0] * cols * 4) == 0);
	CHECK(r.perm == NULL && r.ngroups == 2);
	tp_quant_result_free(&r);
	free(ones);
	free(wr);
	free(wo);
	free_calib(&k);
	free(x);
	free(w[0]);
	free(w[1]);
	free(s);
}

/* A loss for tp_quant_awq_search_loss: the matrices' output error on x
 * (what tp_quant_awq_search measures), or a code from call fail_at on. */
typedef struct loss_ctx {
	const float *const *w;
	const size_t *rows;
	size_t nw, cols, nx, calls, fail_at;
	const float *x;
	bool nan;
} loss_ctx;

static int test_loss(void *ctx, const float *const *wq, double *loss)
{
	loss_ctx *l = ctx;
	if (++l->calls >= l->fail_at)
		return tp_error_set(TP_EIO, "loss failed");
	double e = 0;
	for (size_t m = 0; m < l->nw; m++)
		e += out_err(l->w[m], wq[m], l->rows[m], l->cols, l->x, l->nx);
	*loss = l->nan ? NAN : e;
	return 0;
}

/* The search with a loss callback: one call per grid point with the weights
 * the folded model computes with; with the built-in loss it picks the same
 * scales as tp_quant_awq_search; its failures end the search. */
static void test_awq_search_loss(void)
{
	rng_state = 57;
	size_t cols = 128, nx = 128, rows[2] = {48, 32};
	const size_t loud[] = {3, 40, 41, 100};
	float *x = make_inputs(nx, cols, loud, 4, 20);
	float *w[2] = {make_weights(rows[0], cols), make_weights(rows[1], cols)};
	float *s1 = malloc(cols * 4), *s2 = malloc(cols * 4);
	tp_quant_calib k = make_calib(x, nx, cols);
	const float *const *wc = (const float *const *)w;
	double a1 = -1, a2 = -2;
	loss_ctx l = {.w = wc, .rows = rows, .nw = 2, .cols = cols, .nx = nx, .x = x,
		      .fail_at = SIZE_MAX};
	CHECK_EQ_INT(tp_quant_awq_search(wc, rows, 2, cols, x, nx, k.abs_mean, 4, 64, s1, &a1), 0);
	CHECK_EQ_INT(tp_quant_awq_search_loss(wc, rows, 2, cols, k.abs_mean, 4, 64, test_loss, &l,
					      s2, &a2),
		     0);
	CHECK(l.calls == 20);
	CHECK(a1 > 0 && a1 == a2);
	CHECK(memcmp(s1, s2, cols * 4) == 0);
	/* a failing loss: its code, scales untouched */
	memset(s2, 0, cols * 4);
	l.calls = 0;
	l.fail_at = 3;
	CHECK_EQ_INT(tp_quant_awq_search_loss(wc, rows, 2, cols, k.abs_mean, 4, 64, test_loss, &l,
					      s2, &a2),
		     TP_EIO);
	CHECK(l.calls == 3 && s2[0] == 0 && a2 == a1);
	l.fail_at = SIZE_MAX;
	l.nan = true;
	CHECK_EQ_INT(tp_quant_awq_search_loss(wc, rows, 2, cols, k.abs_mean, 4, 64, test_loss, &l,
					      s2, &a2),
		     TP_EINVAL);
	CHECK(strstr(tp_error_last(), "NaN for every scale") != NULL);
	CHECK_EQ_INT(tp_quant_awq_search_loss(wc, rows, 2, cols, NULL, 4, 64, test_loss, &l, s2,
					      &a2),
		     TP_EINVAL);
	CHECK_EQ_INT(tp_quant_awq_search_loss(wc, rows, 2, cols, k.abs_mean, 4, 64, NULL, &l, s2,
					      &a2),
		     TP_EINVAL);
	free_calib(&k);
	free(x);
	free(w[0]);
	free(w[1]);
	free(s1);
	free(s2);
}

/* All-zero input columns (dead in H), all-zero weight columns, constant
 * rows, and an all-zero input: finite outputs, no error. */
static void test_degenerate(void)
{
	rng_state = 78;
	size_t rows = 8, cols = 40, nx = 64;
	float *x = make_inputs(nx, cols, NULL, 0, 1), *w = make_weights(rows, cols);
	float *out = malloc(rows * cols * 4), *s = malloc(cols * 4);
	for (size_t t = 0; t < nx; t++)
		x[t * cols + 7] = x[t * cols + 8] = 0;
	for (size_t r = 0; r < rows; r++)
		w[r * cols + 20] = 0;
	for (size_t c = 0; c < cols; c++) {
		w[2 * cols + c] = 0.5f;
		w[3 * cols + c] = 0;
		w[4 * cols + c] = -0.25f;
	}
	tp_quant_calib k = make_calib(x, nx, cols);
	for (int act = 0; act < 2; act++) {
		CHECK_EQ_INT(tp_quant_gptq(w, rows, cols, &k, 4, 16, act, out, NULL), 0);
		CHECK(all_finite(out, rows * cols));
		CHECK(out[0 * cols + 7] == 0 && out[5 * cols + 8] == 0); /* dead inputs */
		CHECK(fabsf(out[2 * cols + 30] - 0.5f) < 0.02f && out[3 * cols + 1] == 0);
	}
	const float *wl[1] = {w};
	double alpha;
	CHECK_EQ_INT(tp_quant_awq_search(wl, &rows, 1, cols, x, nx, NULL, 4, 16, s, &alpha), 0);
	CHECK(all_finite(s, cols));
	CHECK_EQ_INT(tp_quant_awq(w, rows, cols, s, x, nx, 4, 16, true, out, NULL), 0);
	CHECK(all_finite(out, rows * cols));

	/* nothing seen at all: every input dead */
	memset(x, 0, nx * cols * 4);
	free_calib(&k);
	k = make_calib(x, nx, cols);
	CHECK_EQ_INT(tp_quant_gptq(w, rows, cols, &k, 3, 0, true, out, NULL), 0);
	CHECK(all_finite(out, rows * cols));
	CHECK_EQ_INT(tp_quant_awq_search(wl, &rows, 1, cols, x, nx, k.abs_mean, 3, 0, s, &alpha), 0);
	CHECK(all_finite(s, cols) && alpha == 0);
	CHECK_EQ_INT(tp_quant_awq(w, rows, cols, s, x, nx, 3, 0, true, out, NULL), 0);
	CHECK(all_finite(out, rows * cols));
	CHECK_EQ_INT(tp_quant_awq(w, rows, cols, s, x, nx, 9, 0, true, out, NULL), TP_EINVAL);
	/* a NaN weight is refused, not spread over the layer */
	w[3 * cols + 5] = NAN;
	CHECK_EQ_INT(tp_quant_gptq(w, rows, cols, &k, 4, 0, false, out, NULL), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "weight [3][5] is not finite") != NULL);
	CHECK_EQ_INT(tp_quant_awq_search(wl, &rows, 1, cols, x, nx, NULL, 4, 0, s, &alpha),
		     TP_EINVAL);
	free_calib(&k);
	free(x);
	free(w);
	free(out);
	free(s);
}

/* CPU seconds of this (one-threaded) process: what a layer costs, whatever
 * else the machine is running. */
static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench(void)
{
	static const size_t shapes[][2] = {{768, 256}, {2048, 2048}};
	for (int i = 0; i < 2; i++) {
		size_t rows = shapes[i][0], cols = shapes[i][1], nx = 2 * cols;
		rng_state = 90 + i;
		float *x = make_inputs(nx, cols, NULL, 0, 1), *w = make_weights(rows, cols);
		float *out = malloc(rows * cols * 4);
		tp_quant_calib k = {.cols = cols, .nsamples = nx};
		k.hessian = calloc(cols * cols, sizeof(double));
		for (size_t t = 0; t < nx; t++) /* S = X^T X, lower then mirrored */
			for (size_t a = 0; a < cols; a++)
				for (size_t b = 0; b <= a; b++)
					k.hessian[a * cols + b] += (double)x[t * cols + a] * x[t * cols + b];
		for (size_t a = 0; a < cols; a++)
			for (size_t b = 0; b < a; b++)
				k.hessian[b * cols + a] = k.hessian[a * cols + b];
		for (int act = 0; act < 2; act++) {
			double t0 = now();
			int rc = tp_quant_gptq(w, rows, cols, &k, 4, 128, act, out, NULL);
			printf("gptq4_g128 %zux%zu act_order=%d: %.3f s CPU (rc %d)\n", rows, cols, act,
			       now() - t0, rc);
		}
		free(k.hessian);
		free(x);
		free(w);
		free(out);
	}
	/* AWQ for q/k/v of a 576-wide model with 512 sample rows */
	size_t cols = 576, nx = 512, rows[3] = {576, 192, 192};
	rng_state = 99;
	float *x = make_inputs(nx, cols, NULL, 0, 1), *s = malloc(cols * 4);
	float *w[3] = {make_weights(rows[0], cols), make_weights(rows[1], cols),
		       make_weights(rows[2], cols)};
	float *out = malloc(rows[0] * cols * 4);
	double alpha, t0 = now();
	int rc = tp_quant_awq_search((const float *const *)w, rows, 3, cols, x, nx, NULL, 4, 128, s,
				     &alpha);
	double t1 = now();
	for (int m = 0; m < 3 && rc == 0; m++)
		rc = tp_quant_awq(w[m], rows[m], cols, s, x, nx, 4, 128, true, out, NULL);
	printf("awq4_g128 q/k/v 576+192+192 x 576, %zu samples: search %.3f s, clip+rtn %.3f s CPU (rc %d)\n",
	       nx, t1 - t0, now() - t1, rc);
	for (int m = 0; m < 3; m++)
		free(w[m]);
	free(x);
	free(s);
	free(out);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--bench") == 0)
		return bench();
	TP_TEST_RUN(test_gptq_identity_is_rtn);
	TP_TEST_RUN(test_gptq_error_propagates);
	TP_TEST_RUN(test_gptq_beats_rtn);
	TP_TEST_RUN(test_gptq_act_order_outliers);
	TP_TEST_RUN(test_gptq_damping);
	TP_TEST_RUN(test_awq_beats_rtn);
	TP_TEST_RUN(test_awq_search_loss);
	TP_TEST_RUN(test_degenerate);
	return TP_TEST_RESULT();
}
