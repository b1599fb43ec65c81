/* The unquantized baseline formats, bf16 and fp16 (conversions: common/half.c). */
#include "quant_internal.h"

static size_t half_packed_size(size_t rows, size_t cols)
{
	return 2 * rows * cols;
}

/* 2 little-endian bytes per weight, converted by to / from. */
static void half_encode(const float *w, size_t n, uint16_t (*to)(float), uint8_t *p)
{
	for (size_t i = 0; i < n; i++)
		tp_quant_put_u16(p + 2 * i, to(w[i]));
}

static void half_decode(const uint8_t *p, size_t n, float (*from)(uint16_t), float *w)
{
	for (size_t i = 0; i < n; i++)
		w[i] = from(tp_quant_get_u16(p + 2 * i));
}

/* One format per half type: the vtable has no parameters. */
#define HALF_FORMAT(N)                                                                         \
	static int N##_quantize(const float *w, size_t rows, size_t cols,                      \
				const tp_quant_calib *calib, void *packed)                     \
	{                                                                                      \
		(void)calib;                                                                   \
		half_encode(w, rows * cols, tp_##N##_from_f32, packed);                        \
		return 0;                                                                      \
	}                                                                                      \
	static void N##_dequantize_rows(const void *packed, size_t rows, size_t cols,          \
					size_t r0, size_t r1, float *w)                        \
	{                                                                                      \
		(void)rows;                                                                    \
		half_decode((const uint8_t *)packed + 2 * r0 * cols, (r1 - r0) * cols,         \
			    tp_##N##_to_f32, w);                                               \
	}                                                                                      \
	TP_QUANT_FORMAT_DEF(tp_quant_fmt_##N, #N, half_packed_size, N##_quantize,              \
			    N##_dequantize_rows)

HALF_FORMAT(fp16);
HALF_FORMAT(bf16);
