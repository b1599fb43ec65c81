/*
 * TEMPORARY (dropped at merge in favour of optimize/formats*.c): one format,
 * rtn4_g128, so the measuring pipeline can be built and tested alone.
 *
 * Asymmetric round to nearest over groups of 128 along the input dimension
 * (the last group of a row may be shorter):
 *   scale = max(max - min, 1e-5) / 15, zero = clamp(round(-min / scale), 0, 15),
 *   q = clamp(round(w / scale) + zero, 0, 15), w' = (q - zero) * scale.
 * Packed: float32 scales [rows][groups], uint8 zeros [rows][groups], then the
 * 4-bit codes, two per byte (low nibble first), rows*cols of them.
 */
#include "tp_optimize.h"

#include <math.h>
#include <string.h>

#define GROUP 128

static size_t groups(size_t cols)
{
	return (cols + GROUP - 1) / GROUP;
}

static size_t rtn4_size(size_t rows, size_t cols)
{
	size_t ng = rows * groups(cols);
	return ng * 4 + ng + (rows * cols + 1) / 2;
}

static int rtn4_quantize(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib,
			 void *packed)
{
	(void)calib;
	size_t ng = groups(cols), nsc = rows * ng;
	unsigned char *p = packed, *zeros = p + nsc * 4, *codes = zeros + nsc;
	memset(codes, 0, (rows * cols + 1) / 2);
	for (size_t r = 0; r < rows; r++)
		for (size_t g = 0; g < ng; g++) {
			size_t c0 = g * GROUP, c1 = c0 + GROUP < cols ? c0 + GROUP : cols;
			float lo = INFINITY, hi = -INFINITY;
			for (size_t c = c0; c < c1; c++) {
				float v = w[r * cols + c];
				lo = v < lo ? v : lo; /* NaN never wins a comparison */
				hi = v > hi ? v : hi;
			}
			if (!(lo <= hi))
				lo = hi = 0;
			float range = hi - lo, scale = (range > 1e-5f ? range : 1e-5f) / 15.0f;
			if (!isfinite(scale))
				scale = 1e-5f / 15.0f;
			float zf = roundf(-lo / scale);
			unsigned zero = !(zf > 0) ? 0 : zf > 15 ? 15 : (unsigned)zf;
			memcpy(p + (r * ng + g) * 4, &scale, 4);
			zeros[r * ng + g] = (unsigned char)zero;
			for (size_t c = c0; c < c1; c++) {
				float qf = roundf(w[r * cols + c] / scale) + (float)zero;
				unsigned q = !(qf > 0) ? 0 : qf > 15 ? 15 : (unsigned)qf;
				size_t k = r * cols + c;
				codes[k / 2] |= (unsigned char)(q << (4 * (k & 1)));
			}
		}
	return 0;
}

static void rtn4_dequantize(const void *packed, size_t rows, size_t cols, float *w)
{
	size_t ng = groups(cols), nsc = rows * ng;
	const unsigned char *p = packed, *zeros = p + nsc * 4, *codes = zeros + nsc;
	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < cols; c++) {
			size_t g = c / GROUP, k = r * cols + c;
			float scale;
			memcpy(&scale, p + (r * ng + g) * 4, 4);
			int q = (codes[k / 2] >> (4 * (k & 1))) & 15;
			w[k] = (float)(q - (int)zeros[r * ng + g]) * scale;
		}
}

static const tp_quant_format rtn4_g128 = { "rtn4_g128", rtn4_size, rtn4_quantize,
					   rtn4_dequantize };
static const tp_quant_format *const all[] = { &rtn4_g128, NULL };

const tp_quant_format *const *tp_quant_formats(void)
{
	return all;
}

const tp_quant_format *tp_quant_format_find(const char *name)
{
	for (size_t i = 0; all[i]; i++)
		if (strcmp(all[i]->name, name) == 0)
			return all[i];
	return NULL;
}

double tp_quant_bpw(const tp_quant_format *f, size_t rows, size_t cols)
{
	return rows && cols ? 8.0 * (double)f->packed_size(rows, cols) / ((double)rows * cols) : 0;
}
