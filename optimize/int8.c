/* int8: symmetric per output row, scale = absmax / 127 (LLM.int8's weight
 * format, without its activation-outlier decomposition). */
#include "quant_internal.h"

static size_t int8_packed_size(size_t rows, size_t cols)
{
	return 4 * rows + rows * cols;
}

static int int8_quantize(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib,
			 void *packed)
{
	(void)calib;
	uint8_t *p = packed;
	int8_t *q = (int8_t *)(p + 4 * rows);
	for (size_t r = 0; r < rows; r++) {
		const float *row = w + r * cols;
		float amax = 0.0f;
		for (size_t c = 0; c < cols; c++)
			if (fabsf(row[c]) > amax)
				amax = fabsf(row[c]);
		tp_quant_put_f32(p + 4 * r, amax / 127.0f);
		/* bitsandbytes: round(w * (127 / absmax)); all-zero rows stay 0. */
		float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
		for (size_t c = 0; c < cols; c++)
			q[r * cols + c] = (int8_t)tp_quant_rint_clamp(row[c] * inv, -127, 127);
	}
	return 0;
}

static void int8_dequantize_rows(const void *packed, size_t rows, size_t cols, size_t r0,
				 size_t r1, float *w)
{
	const uint8_t *p = packed;
	const int8_t *q = (const int8_t *)(p + 4 * rows);
	for (size_t r = r0; r < r1; r++) {
		float scale = tp_quant_get_f32(p + 4 * r);
		for (size_t c = 0; c < cols; c++)
			w[(r - r0) * cols + c] = (float)q[r * cols + c] * scale;
	}
}

TP_QUANT_FORMAT_DEF(tp_quant_fmt_int8, "int8", int8_packed_size, int8_quantize,
		    int8_dequantize_rows);
