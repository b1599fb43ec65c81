/*
 * What GPTQ (gptq.c) and AWQ (awq.c) share; private to optimize/.
 */
#ifndef TP_METHODS_H
#define TP_METHODS_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp_optimize.h"

/* Checks a who's arguments: a non-empty rows x cols matrix whose floats
 * fit in memory, bits in 2..8, and (when w is not NULL) every weight finite:
 * a NaN would spread through GPTQ's updates or every AWQ error. TP_EINVAL or
 * TP_ETOOBIG naming who; *group 0 or > cols becomes cols. */
int tp_quant_check_args(const char *who, const float *w, size_t rows, size_t cols, int bits,
			size_t *group);

/* tp_quant_check_args, then r's shape with its arrays allocated (perm too
 * when with_perm); on failure r is left empty. */
int tp_quant_result_init(tp_quant_result *r, const char *who, const float *w, size_t rows,
			 size_t cols, int bits, size_t group, bool with_perm);

/* ---- RTN block: replaced by the formats' group quantizer at merge ---------
 * Asymmetric round-to-nearest over one group of weights.
 *
 * The range always includes 0 (min <= 0 <= max), as AutoGPTQ's quantizer
 * does: otherwise a group of all-positive weights would get zero = 0 and its
 * largest values would be clipped to (2^b-1)*scale = max-min.
 */
/* scale and zero point of w[0..n) for bits-bit codes; NaNs are ignored. */
static inline void group_params(const float *w, size_t n, int bits, float *scale, float *zero)
{
	float mn = 0.0f, mx = 0.0f, maxq = (float)((1u << bits) - 1u);
	for (size_t i = 0; i < n; i++) {
		if (w[i] < mn)
			mn = w[i];
		if (w[i] > mx)
			mx = w[i];
	}
	float s = fmaxf(mx - mn, 1e-5f) / maxq;
	*scale = s;
	*zero = fminf(fmaxf(rintf(-mn / s), 0.0f), maxq);
}

/* The code of w (into *q when q is not NULL) and the value it stands for. */
static inline float group_quant(float w, float scale, float zero, int bits, uint8_t *q)
{
	float maxq = (float)((1u << bits) - 1u);
	/* fmaxf returns the non-NaN argument: a NaN weight becomes code 0. */
	float c = fminf(fmaxf(rintf(w / scale) + zero, 0.0f), maxq);
	if (q)
		*q = (uint8_t)c;
	return (c - zero) * scale;
}
/* ---- end of RTN block ---- */

#endif
