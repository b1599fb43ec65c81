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

/* ---- the formats' RTN group quantizer (group.c), as methods use it ------
 * scale and zero point of w[0..n) for bits-bit codes (scale rounded to fp16
 * as stored; the range includes 0; NaNs are ignored). */
static inline void group_params(const float *w, size_t n, int bits, float *scale, float *zero)
{
	int z;
	tp_quant_group_params(w, n, bits, scale, &z);
	*zero = (float)z;
}

/* The code of w (into *q when q is not NULL) and the value it stands for. */
static inline float group_quant(float w, float scale, float zero, int bits, uint8_t *q)
{
	int c = tp_quant_group_code(w, scale, (int)zero, bits);
	if (q)
		*q = (uint8_t)c;
	return (float)(c - (int)zero) * scale;
}

#endif
