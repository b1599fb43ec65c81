/* Shared helpers of the optimize unit tests. */
#ifndef OPT_TEST_H
#define OPT_TEST_H

#include <math.h>
#include <stdint.h>

#include "tp_optimize.h"
#include "tp_test.h"

/* Deterministic pseudo-random numbers (xorshift64*). */
static uint64_t opt_rng = 0x9e3779b97f4a7c15ull;

static inline double opt_uniform(void)
{
	opt_rng ^= opt_rng >> 12;
	opt_rng ^= opt_rng << 25;
	opt_rng ^= opt_rng >> 27;
	return (double)((opt_rng * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0;
}

/* Normal(0, sigma), Box-Muller. */
static inline float opt_gauss(float sigma)
{
	double u = opt_uniform() + 1e-12, v = opt_uniform();
	return (float)(sigma * sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static inline void opt_fill_gauss(float *w, size_t n, float sigma)
{
	for (size_t i = 0; i < n; i++)
		w[i] = opt_gauss(sigma);
}

/* Quantize w with f and dequantize into out; the quantize return code. */
static inline int opt_round_trip(const tp_quant_format *f, const float *w, size_t rows,
				 size_t cols, const tp_quant_calib *calib, float *out)
{
	void *packed = malloc(f->packed_size(rows, cols) + 1);
	int rc = f->quantize(w, rows, cols, calib, packed);
	if (rc == 0)
		f->dequantize(packed, rows, cols, out);
	free(packed);
	return rc;
}

static inline double opt_rmse(const float *a, const float *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
	return sqrt(s / (double)n);
}

#endif
