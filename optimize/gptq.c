/*
 * GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022): quantize the columns of
 * w one at a time and spread each column's rounding error over the columns
 * not yet quantized, weighted by the inverse Hessian of the layer's inputs,
 * so that ||(W - Q) X|| rather than ||W - Q|| is what stays small.
 *
 * Layout: the working copy is transposed (wt[column][row]) so that each
 * column, and each update of a column, is a contiguous vector. The Hessian
 * work (damping, Cholesky, inverse, Cholesky of the inverse) is in double
 * in one cols x cols array.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "methods.h"
#include "tp_optimize.h"

#define GPTQ_BLOCK 128 /* columns per lazy batch update */

void tp_quant_result_free(tp_quant_result *r)
{
	if (!r)
		return;
	free(r->q);
	free(r->scales);
	free(r->zeros);
	free(r->g_idx);
	free(r->perm);
	memset(r, 0, sizeof(*r));
}

int tp_quant_check_args(const char *who, const float *w, size_t rows, size_t cols, int bits,
			size_t *group)
{
	if (rows == 0 || cols == 0)
		return tp_error_set(TP_EINVAL, "%s: empty %zux%zu matrix", who, rows, cols);
	if (bits < 2 || bits > 8)
		return tp_error_set(TP_EINVAL, "%s: %d bits (2..8 supported)", who, bits);
	if (cols > UINT32_MAX || rows > SIZE_MAX / sizeof(float) / cols ||
	    cols > SIZE_MAX / sizeof(double) / cols)
		return tp_error_set(TP_ETOOBIG, "%s: %zux%zu matrix is too large", who, rows, cols);
	for (size_t i = 0; w && i < rows * cols; i++)
		if (!isfinite(w[i]))
			return tp_error_set(TP_EINVAL, "%s: weight [%zu][%zu] is not finite", who,
					    i / cols, i % cols);
	if (*group == 0 || *group > cols)
		*group = cols;
	return 0;
}

int tp_quant_result_init(tp_quant_result *r, const char *who, const float *w, size_t rows,
			 size_t cols, int bits, size_t group, bool with_perm)
{
	memset(r, 0, sizeof(*r));
	int rc = tp_quant_check_args(who, w, rows, cols, bits, &group);
	if (rc)
		return rc;
	r->rows = rows;
	r->cols = cols;
	r->bits = bits;
	r->group = group;
	r->ngroups = (cols + group - 1) / group;
	r->q = malloc(rows * cols);
	r->scales = malloc(rows * r->ngroups * sizeof(float));
	r->zeros = malloc(rows * r->ngroups);
	r->g_idx = malloc(cols * sizeof(uint32_t));
	r->perm = with_perm ? malloc(cols * sizeof(uint32_t)) : NULL;
	if (!r->q || !r->scales || !r->zeros || !r->g_idx || (with_perm && !r->perm)) {
		tp_quant_result_free(r);
		return tp_error_set(TP_ENOMEM, "%s: out of memory for a %zux%zu matrix", who,
				    rows, cols);
	}
	for (size_t c = 0; c < cols; c++) {
		r->g_idx[c] = (uint32_t)(c / group);
		if (r->perm)
			r->perm[c] = (uint32_t)c;
	}
	return 0;
}

/* a . b in four partial sums, which the compiler can keep in vector
 * registers (one running sum is a serial chain it must not reorder). */
static double dot4(const double *a, const double *b, size_t n)
{
	double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
	size_t k = 0;
	for (; k + 4 <= n; k += 4) {
		s0 += a[k] * b[k];
		s1 += a[k + 1] * b[k + 1];
		s2 += a[k + 2] * b[k + 2];
		s3 += a[k + 3] * b[k + 3];
	}
	for (; k < n; k++)
		s0 += a[k] * b[k];
	return (s0 + s2) + (s1 + s3);
}

/* In place: the lower triangle of a (n x n, row-major) becomes L with
 * a = L L^T; false when a is not positive definite (or holds NaN). */
static bool chol_lower(double *a, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		double *aj = a + j * n;
		double d = aj[j] - dot4(aj, aj, j);
		if (!(d > 0.0) || !isfinite(d))
			return false;
		double l = sqrt(d);
		aj[j] = l;
		for (size_t i = j + 1; i < n; i++) {
			double *ai = a + i * n;
			ai[j] = (ai[j] - dot4(ai, aj, j)) / l;
		}
	}
	return true;
}

/*
 * The factor GPTQ's updates use: U upper with U^T U = H^-1. With J the
 * order-reversing permutation, factor J H J = L L^T; then
 * H^-1 = J L^-T L^-1 J = U^T U for U = J L^-1 J, an upper triangle. So a
 * holds J H J, and on success it holds U (in its upper triangle): one
 * Cholesky and one triangular inverse instead of factoring H^-1 again.
 * t is a scratch vector of n.
 */
static bool chol_inverse_upper(double *a, size_t n, double *t)
{
	if (!chol_lower(a, n))
		return false;
	/* L^-1 in place, row by row: row i is (e_i - sum_{k<i} L_ik X_k) / L_ii */
	for (size_t i = 0; i < n; i++) {
		double *ai = a + i * n;
		memset(t, 0, (i + 1) * sizeof(double));
		t[i] = 1.0;
		for (size_t k = 0; k < i; k++) {
			double c = ai[k];
			const double *xk = a + k * n;
			for (size_t j = 0; j <= k; j++)
				t[j] -= c * xk[j];
		}
		double l = ai[i];
		for (size_t j = 0; j <= i; j++)
			ai[j] = t[j] / l;
	}
	/* J X J: element (i, j) moves to (n-1-i, n-1-j), the whole array
	 * reversed. */
	for (size_t i = 0, j = n * n - 1; i < j; i++, j--) {
		double v = a[i];
		a[i] = a[j];
		a[j] = v;
	}
	return true;
}

typedef struct diag_key {
	double h;     /* H_jj */
	uint32_t col; /* j */
} diag_key;

/* Descending H_jj, ties by column index so the order is deterministic. */
static int cmp_diag_desc(const void *pa, const void *pb)
{
	const diag_key *a = pa, *b = pb;
	if (a->h != b->h)
		return a->h > b->h ? -1 : 1;
	return a->col < b->col ? -1 : (a->col > b->col);
}

/* h = J P H P^T J: the damped Hessian H = 2 S / n (S = calib->hessian, dead
 * inputs' diagonal set to 1) in the order perm, reversed (J). */
static void build_hessian(double *h, const tp_quant_calib *calib, const uint32_t *perm,
			  size_t n, double damp_frac, double mean_diag)
{
	double f = 2.0 / (double)calib->nsamples;
	for (size_t i = 0; i < n; i++) {
		const double *src = calib->hessian + (size_t)perm[n - 1 - i] * n;
		double *dst = h + i * n;
		for (size_t j = 0; j < n; j++)
			dst[j] = f * src[perm[n - 1 - j]];
		if (dst[i] == 0.0)
			dst[i] = 1.0;
		dst[i] += damp_frac * mean_diag;
	}
}

int tp_quant_gptq(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib, int bits,
		  size_t group, bool act_order, float *w_out, tp_quant_result *res)
{
	static const double damps[] = {0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0};
	tp_quant_result r;
	double *h = NULL, *t = NULL;
	diag_key *diag = NULL;
	float *wt = NULL, *err = NULL, *gbuf = NULL;
	int rc;

	if (!w || !w_out || !calib || !calib->hessian)
		return tp_error_set(TP_EINVAL, "gptq: needs weights, an output and a Hessian");
	if (calib->cols != cols || calib->nsamples == 0)
		return tp_error_set(TP_EINVAL,
				    "gptq: calibration has %zu inputs and %llu samples, layer has %zu inputs",
				    calib->cols, (unsigned long long)calib->nsamples, cols);
	rc = tp_quant_result_init(&r, "gptq", w, rows, cols, bits, group, true);
	if (rc)
		return rc;
	group = r.group;
	size_t ng = r.ngroups, n = cols;
	h = malloc(n * n * sizeof(double));
	diag = malloc(n * sizeof(*diag));
	t = malloc(n * sizeof(double));
	wt = malloc(n * rows * sizeof(float));
	err = malloc((size_t)GPTQ_BLOCK * rows * sizeof(float));
	gbuf = malloc((group > rows ? group : rows) * 2 * sizeof(float));
	if (!h || !diag || !t || !wt || !err || !gbuf) {
		rc = tp_error_set(TP_ENOMEM, "gptq: out of memory for a %zux%zu layer", rows, cols);
		goto done;
	}

	/* Diagonal of 2S/n; dead inputs count as 1 (their weights become 0). */
	double mean_diag = 0.0, f = 2.0 / (double)calib->nsamples;
	for (size_t j = 0; j < n; j++) {
		double hjj = f * calib->hessian[j * n + j];
		diag[j] = (diag_key){hjj == 0.0 ? 1.0 : hjj, (uint32_t)j};
		mean_diag += diag[j].h;
	}
	mean_diag /= (double)n;
	if (!isfinite(mean_diag)) {
		rc = tp_error_set(TP_EINVAL, "gptq: the Hessian's diagonal is not finite");
		goto done;
	}
	if (act_order) {
		qsort(diag, n, sizeof(*diag), cmp_diag_desc);
		for (size_t j = 0; j < n; j++)
			r.perm[j] = diag[j].col;
	}

	/* Static groups: parameters from the weights as given (dead inputs 0). */
	if (act_order) {
		for (size_t row = 0; row < rows; row++) {
			for (size_t g = 0; g < ng; g++) {
				size_t c0 = g * group, len = c0 + group > n ? n - c0 : group;
				float z;
				for (size_t c = 0; c < len; c++) {
					size_t col = c0 + c;
					bool dead = calib->hessian[col * n + col] == 0.0;
					gbuf[c] = dead ? 0.0f : w[row * n + col];
				}
				group_params(gbuf, len, bits, &r.scales[row * ng + g], &z);
				r.zeros[row * ng + g] = (uint8_t)z;
			}
		}
	}

	/* Hessian, damped until its inverse factors. */
	size_t di = 0;
	for (;; di++) {
		if (di == sizeof(damps) / sizeof(damps[0])) {
			rc = tp_error_set(TP_EINVAL,
					  "gptq: the Hessian of a %zux%zu layer is not positive definite even with damping of 100%% of its mean diagonal",
					  rows, cols);
			goto done;
		}
		build_hessian(h, calib, r.perm, n, damps[di], mean_diag);
		if (chol_inverse_upper(h, n, t))
			break;
	}
	r.damp = damps[di];

	/* Working copy, transposed and permuted; dead inputs zeroed. */
	for (size_t i = 0; i < n; i++) {
		size_t col = r.perm[i];
		bool dead = calib->hessian[col * n + col] == 0.0;
		for (size_t row = 0; row < rows; row++)
			wt[i * rows + row] = dead ? 0.0f : w[row * n + col];
	}

	double loss = 0.0;
	for (size_t i1 = 0; i1 < n; i1 += GPTQ_BLOCK) {
		size_t i2 = i1 + GPTQ_BLOCK < n ? i1 + GPTQ_BLOCK : n;
		for (size_t i = i1; i < i2; i++) {
			size_t col = r.perm[i], g = col / group;
			float *wi = wt + i * rows, *ei = err + (i - i1) * rows;
			if (!act_order && i % group == 0) {
				/* Dynamic groups: parameters from the weights as GPTQ
				 * has updated them so far (min/max per row). */
				size_t len = i + group > n ? n - i : group;
				float *mn = gbuf, *mx = gbuf + rows;
				for (size_t row = 0; row < rows; row++)
					mn[row] = mx[row] = 0.0f;
				for (size_t c = i; c < i + len; c++) {
					const float *wc = wt + c * rows;
					for (size_t row = 0; row < rows; row++) {
						if (wc[row] < mn[row])
							mn[row] = wc[row];
						if (wc[row] > mx[row])
							mx[row] = wc[row];
					}
				}
				for (size_t row = 0; row < rows; row++) {
					float pair[2] = {mn[row], mx[row]};
					float z;
					group_params(pair, 2, bits, &r.scales[row * ng + g], &z);
					r.zeros[row * ng + g] = (uint8_t)z;
				}
			}
			double dii = h[i * n + i];
			float inv_d = (float)(1.0 / dii);
			for (size_t row = 0; row < rows; row++) {
				size_t gi = row * ng + g;
				float v = wi[row];
				float q = group_quant(v, r.scales[gi], (float)r.zeros[gi], bits,
						      &r.q[row * n + col]);
				w_out[row * n + col] = q;
				float e = (v - q) * inv_d;
				ei[row] = e;
				loss += 0.5 * (double)e * (double)e;
			}
			/* Spread the error over the rest of the block now... */
			const double *hi = h + i * n;
			for (size_t j = i + 1; j < i2; j++) {
				float c = (float)hi[j];
				float *wj = wt + j * rows;
				for (size_t row = 0; row < rows; row++)
					wj[row] -= ei[row] * c;
			}
		}
		/* ...and over the columns after it once per block. */
		for (size_t j = i2; j < n; j++) {
			float *wj = wt + j * rows;
			for (size_t k = i1; k < i2; k++) {
				float c = (float)h[k * n + j];
				const float *ek = err + (k - i1) * rows;
				for (size_t row = 0; row < rows; row++)
					wj[row] -= ek[row] * c;
			}
		}
	}
	r.loss = loss;
	rc = 0;
done:
	free(h);
	free(diag);
	free(t);
	free(wt);
	free(err);
	free(gbuf);
	if (rc == 0 && res)
		*res = r;
	else
		tp_quant_result_free(&r);
	return rc;
}
