/*
 * AWQ (Lin et al. 2023, activation-aware weight quantization): scale up the
 * input channels that see large activations before rounding, so their
 * weights lose less relative precision, and fold the inverse scale into the
 * operation that produces the input. Then shrink each group's range where
 * that lowers the output error (clipping), and round to nearest.
 *
 * Errors are measured on the layer outputs for sample inputs x[nx][cols]:
 * the scale search directly (nx*rows*cols per grid point), the clipping
 * search through each group's Gram block x_g^T x_g (cols*group per row).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "methods.h"
#include "tp_optimize.h"

#define AWQ_GRID 20       /* alpha = i / 20, i < 20; clipping shrink = i / 20 */
#define AWQ_MAX_SHRINK 10 /* clipping tries shrinks 0 .. 0.45 (max_shrink 0.5) */

/* out = the RTN value of each element of one row of cols, group by group;
 * codes, scales and zeros into r's row when r is not NULL. */
static void rtn_row(const float *w, size_t cols, int bits, size_t group, float *out,
		    tp_quant_result *r, size_t row)
{
	for (size_t c0 = 0, g = 0; c0 < cols; c0 += group, g++) {
		size_t len = c0 + group > cols ? cols - c0 : group;
		float scale, zero;
		group_params(w + c0, len, bits, &scale, &zero);
		for (size_t c = c0; c < c0 + len; c++)
			out[c] = group_quant(w[c], scale, zero, bits, r ? &r->q[row * cols + c] : NULL);
		if (r) {
			r->scales[row * r->ngroups + g] = scale;
			r->zeros[row * r->ngroups + g] = (uint8_t)zero;
		}
	}
}

/* s for one alpha: max(mean^alpha, 1e-4) normalised by sqrt(max s min s). */
static void grid_scales(const double *xmean, size_t cols, double alpha, float *s)
{
	double smax = 0.0, smin = INFINITY;
	for (size_t c = 0; c < cols; c++) {
		double v = pow(xmean[c] > 0.0 ? xmean[c] : 0.0, alpha);
		v = v > 1e-4 ? v : 1e-4; /* also catches NaN */
		s[c] = (float)v;
		smax = v > smax ? v : smax;
		smin = v < smin ? v : smin;
	}
	float norm = (float)sqrt(smax * smin);
	for (size_t c = 0; c < cols; c++)
		s[c] /= norm;
}

/* The built-in loss: the matrices' own outputs on the sample inputs. */
typedef struct own_loss {
	const float *const *w;
	const size_t *rows;
	size_t nw, cols, nx;
	const float *xt; /* x transposed [cols][nx] */
	float *y;        /* [nx] */
} own_loss;

/* sum over rows and inputs of (x_t . (wq - w))^2 */
static int own_loss_eval(void *ctx, const float *const *wq, double *loss_out)
{
	own_loss *o = ctx;
	size_t cols = o->cols, nx = o->nx;
	double loss = 0.0;
	for (size_t m = 0; m < o->nw; m++) {
		for (size_t rr = 0; rr < o->rows[m]; rr++) {
			const float *wr = o->w[m] + rr * cols, *qr = wq[m] + rr * cols;
			memset(o->y, 0, nx * sizeof(float));
			for (size_t c = 0; c < cols; c++) {
				float d = qr[c] - wr[c];
				const float *xc = o->xt + c * nx;
				if (d != 0.0f)
					for (size_t t = 0; t < nx; t++)
						o->y[t] += d * xc[t];
			}
			for (size_t t = 0; t < nx; t++)
				loss += (double)o->y[t] * o->y[t];
		}
	}
	*loss_out = loss;
	return 0;
}

int tp_quant_awq_search_loss(const float *const *w, const size_t *rows, size_t nw, size_t cols,
			     const double *abs_mean, int bits, size_t group,
			     tp_quant_awq_loss_fn loss_fn, void *ctx, float *scales_out,
			     double *alpha_out)
{
	float *s = NULL, *best = NULL, **wq = NULL;
	double best_loss = INFINITY, best_alpha = -1.0;
	int rc;

	if (!w || !rows || nw == 0 || !abs_mean || !loss_fn || !scales_out)
		return tp_error_set(TP_EINVAL, "awq: needs weights, mean inputs, a loss and an output");
	for (size_t m = 0; m < nw; m++) {
		if (!w[m])
			return tp_error_set(TP_EINVAL, "awq: weight matrix %zu is missing", m);
		size_t gm = group;
		rc = tp_quant_check_args("awq", w[m], rows[m], cols, bits, &gm);
		if (rc)
			return rc;
	}
	if (group == 0 || group > cols)
		group = cols;
	s = malloc(cols * sizeof(float));
	best = malloc(cols * sizeof(float));
	wq = calloc(nw, sizeof(*wq));
	rc = s && best && wq ? 0 : TP_ENOMEM;
	for (size_t m = 0; m < nw && rc == 0; m++)
		if (!(wq[m] = malloc(rows[m] * cols * sizeof(float))))
			rc = TP_ENOMEM;
	if (rc) {
		rc = tp_error_set(TP_ENOMEM, "awq: out of memory for %zu inputs", cols);
		goto done;
	}
	for (int a = 0; a < AWQ_GRID; a++) {
		double alpha = (double)a / AWQ_GRID, loss;
		grid_scales(abs_mean, cols, alpha, s);
		/* wq = Q(W diag s) diag(1/s): what the folded model computes */
		for (size_t m = 0; m < nw; m++) {
			for (size_t rr = 0; rr < rows[m]; rr++) {
				const float *wr = w[m] + rr * cols;
				float *qr = wq[m] + rr * cols;
				for (size_t c = 0; c < cols; c++)
					qr[c] = wr[c] * s[c];
				rtn_row(qr, cols, bits, group, qr, NULL, 0);
				for (size_t c = 0; c < cols; c++)
					qr[c] /= s[c];
			}
		}
		if ((rc = loss_fn(ctx, (const float *const *)wq, &loss)) < 0)
			goto done;
		if (loss < best_loss) {
			best_loss = loss;
			best_alpha = alpha;
			memcpy(best, s, cols * sizeof(float));
		}
	}
	if (best_alpha < 0.0) {
		rc = tp_error_set(TP_EINVAL, "awq: the output error is NaN for every scale (NaN or Inf in weights or inputs)");
		goto done;
	}
	memcpy(scales_out, best, cols * sizeof(float));
	if (alpha_out)
		*alpha_out = best_alpha;
	rc = 0;
done:
	for (size_t m = 0; wq && m < nw; m++)
		free(wq[m]);
	free(wq);
	free(s);
	free(best);
	return rc;
}

int tp_quant_awq_search(const float *const *w, const size_t *rows, size_t nw, size_t cols,
			const float *x, size_t nx, const double *abs_mean, int bits, size_t group,
			float *scales_out, double *alpha_out)
{
	double *xmean = NULL;
	float *xt = NULL, *y = NULL;
	int rc;

	if (!w || !rows || nw == 0 || !x || nx == 0 || !scales_out || cols == 0)
		return tp_error_set(TP_EINVAL, "awq: needs weights, sample inputs and an output");
	if (nx > SIZE_MAX / sizeof(float) / cols)
		return tp_error_set(TP_ETOOBIG, "awq: %zu sample inputs are too many", nx);
	xmean = malloc(cols * sizeof(double));
	xt = malloc(nx * cols * sizeof(float));
	y = malloc(nx * sizeof(float));
	if (!xmean || !xt || !y) {
		rc = tp_error_set(TP_ENOMEM, "awq: out of memory for %zu inputs", cols);
		goto done;
	}
	/* x transposed: the outputs of a row for all inputs are then sums of
	 * contiguous vectors (vectorised; a dot per input would not be). */
	for (size_t t = 0; t < nx; t++)
		for (size_t c = 0; c < cols; c++)
			xt[c * nx + t] = x[t * cols + c];
	for (size_t c = 0; c < cols; c++) {
		if (abs_mean) {
			xmean[c] = abs_mean[c];
			continue;
		}
		double sum = 0.0;
		for (size_t t = 0; t < nx; t++)
			sum += fabs((double)x[t * cols + c]);
		xmean[c] = sum / (double)nx;
	}
	own_loss o = { .w = w, .rows = rows, .nw = nw, .cols = cols, .nx = nx, .xt = xt, .y = y };
	rc = tp_quant_awq_search_loss(w, rows, nw, cols, xmean, bits, group, own_loss_eval, &o,
				      scales_out, alpha_out);
done:
	free(xmean);
	free(xt);
	free(y);
	return rc;
}

int tp_quant_awq_clip(const float *ws, size_t rows, size_t cols, const float *xs, size_t nx,
		      int bits, size_t group, float *max_out)
{
	double *gram = NULL;
	float *cur = NULL, *dq = NULL;
	int rc;

	if (!ws || !xs || nx == 0 || !max_out)
		return tp_error_set(TP_EINVAL, "awq clip: needs weights, sample inputs and an output");
	rc = tp_quant_check_args("awq clip", NULL, rows, cols, bits, &group);
	if (rc)
		return rc;
	if (group > SIZE_MAX / sizeof(double) / cols || nx > SIZE_MAX / sizeof(float) / cols)
		return tp_error_set(TP_ETOOBIG, "awq clip: %zu inputs in groups of %zu are too many",
				    cols, group);
	size_t ng = (cols + group - 1) / group;
	/* Gram block of group g at gram + g*group*group (row-major len x len). */
	gram = calloc(ng * group * group, sizeof(double));
	cur = malloc(group * sizeof(float));
	dq = malloc(group * sizeof(float));
	if (!gram || !cur || !dq) {
		rc = tp_error_set(TP_ENOMEM, "awq clip: out of memory for %zu inputs", cols);
		goto done;
	}
	for (size_t t = 0; t < nx; t++) {
		const float *xt = xs + t * cols;
		for (size_t g = 0, c0 = 0; g < ng; g++, c0 += group) {
			size_t len = c0 + group > cols ? cols - c0 : group;
			double *G = gram + g * group * group;
			for (size_t i = 0; i < len; i++) {
				double xi = xt[c0 + i];
				if (xi == 0.0)
					continue;
				for (size_t j = 0; j < len; j++)
					G[i * len + j] += xi * xt[c0 + j];
			}
		}
	}
	for (size_t rr = 0; rr < rows; rr++) {
		for (size_t g = 0, c0 = 0; g < ng; g++, c0 += group) {
			size_t len = c0 + group > cols ? cols - c0 : group;
			const float *wg = ws + rr * cols + c0;
			const double *G = gram + g * group * group;
			float org = 0.0f;
			for (size_t i = 0; i < len; i++)
				org = fmaxf(org, fabsf(wg[i]));
			float best = org;
			double best_err = INFINITY;
			for (int k = 0; k < AWQ_MAX_SHRINK; k++) {
				float mv = org * (1.0f - (float)k / AWQ_GRID);
				for (size_t i = 0; i < len; i++)
					cur[i] = fminf(fmaxf(wg[i], -mv), mv);
				rtn_row(cur, len, bits, len, dq, NULL, 0);
				for (size_t i = 0; i < len; i++)
					dq[i] -= wg[i];
				/* dq^T G dq: the group's output error over the inputs */
				double e = 0.0;
				for (size_t i = 0; i < len; i++) {
					double si = 0.0;
					for (size_t j = 0; j < len; j++)
						si += G[i * len + j] * dq[j];
					e += si * dq[i];
				}
				if (e < best_err) {
					best_err = e;
					best = mv;
				}
			}
			max_out[rr * ng + g] = best;
		}
	}
	rc = 0;
done:
	free(gram);
	free(cur);
	free(dq);
	return rc;
}

int tp_quant_awq(const float *w, size_t rows, size_t cols, const float *scales, const float *x,
		 size_t nx, int bits, size_t group, bool clip, float *w_out, tp_quant_result *res)
{
	tp_quant_result r;
	float *ws = NULL, *xs = NULL, *maxv = NULL;
	int rc;

	if (!w || !scales || !w_out || (clip && (!x || nx == 0)))
		return tp_error_set(TP_EINVAL, "awq: needs weights, scales, an output (and inputs to clip)");
	rc = tp_quant_result_init(&r, "awq", w, rows, cols, bits, group, false);
	if (rc)
		return rc;
	group = r.group;
	ws = malloc(rows * cols * sizeof(float));
	if (clip) {
		xs = nx <= SIZE_MAX / sizeof(float) / cols ? malloc(nx * cols * sizeof(float)) : NULL;
		maxv = malloc(rows * r.ngroups * sizeof(float));
	}
	if (!ws || (clip && (!xs || !maxv))) {
		rc = tp_error_set(TP_ENOMEM, "awq: out of memory for a %zux%zu layer", rows, cols);
		goto done;
	}
	for (size_t i = 0; i < rows * cols; i++)
		ws[i] = w[i] * scales[i % cols];
	if (clip) {
		for (size_t i = 0; i < nx * cols; i++)
			xs[i] = x[i] / scales[i % cols];
		rc = tp_quant_awq_clip(ws, rows, cols, xs, nx, bits, group, maxv);
		if (rc)
			goto done;
		for (size_t i = 0; i < rows * cols; i++) {
			float mv = maxv[(i / cols) * r.ngroups + (i % cols) / group];
			ws[i] = fminf(fmaxf(ws[i], -mv), mv);
		}
	}
	for (size_t rr = 0; rr < rows; rr++)
		rtn_row(ws + rr * cols, cols, bits, group, w_out + rr * cols, &r, rr);
	rc = 0;
done:
	free(ws);
	free(xs);
	free(maxv);
	if (rc == 0 && res)
		*res = r;
	else
		tp_quant_result_free(&r);
	return rc;
}
