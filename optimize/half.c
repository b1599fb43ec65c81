/* fp16 / bf16 conversions and the unquantized baseline formats. */
#include "quant_internal.h"

uint16_t tp_quant_fp16_from_f32(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
	x &= 0x7fffffffu;
	if (x > 0x7f800000u)
		return sign | 0x7e00; /* NaN */
	if (x >= 0x477ff000u)
		return sign | 0x7c00; /* 65520 and up round to infinity */
	if (x < 0x38800000u) {
		/* Below 2^-14: a subnormal half, in units of 2^-24; the scaling
		 * is exact and nearbyintf rounds half to even. */
		float a;
		memcpy(&a, &x, 4);
		return sign | (uint16_t)nearbyintf(a * 0x1p24f);
	}
	/* Round the 13 dropped mantissa bits half to even; a carry moves
	 * into the exponent, which is right. */
	x += 0xfffu + ((x >> 13) & 1u);
	x -= (uint32_t)(127 - 15) << 23;
	return sign | (uint16_t)(x >> 13);
}

float tp_quant_fp16_to_f32(uint16_t h)
{
	int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	float v;
	if (exp == 0x1f)
		v = man ? NAN : INFINITY;
	else if (exp == 0)
		v = ldexpf((float)man, -24);
	else
		v = ldexpf((float)(man | 0x400), exp - 25);
	return (h & 0x8000) ? -v : v;
}

uint16_t tp_quant_bf16_from_f32(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40); /* keep NaN a (quiet) NaN */
	x += 0x7fffu + ((x >> 16) & 1u);
	return (uint16_t)(x >> 16);
}

float tp_quant_bf16_to_f32(uint16_t h)
{
	uint32_t x = (uint32_t)h << 16;
	float f;
	memcpy(&f, &x, 4);
	return f;
}

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
		half_encode(w, rows * cols, tp_quant_##N##_from_f32, packed);                  \
		return 0;                                                                      \
	}                                                                                      \
	static void N##_dequantize_rows(const void *packed, size_t rows, size_t cols,          \
					size_t r0, size_t r1, float *w)                        \
	{                                                                                      \
		(void)rows;                                                                    \
		half_decode((const uint8_t *)packed + 2 * r0 * cols, (r1 - r0) * cols,         \
			    tp_quant_##N##_to_f32, w);                                         \
	}                                                                                      \
	TP_QUANT_FORMAT_DEF(tp_quant_fmt_##N, #N, half_packed_size, N##_quantize,              \
			    N##_dequantize_rows)

HALF_FORMAT(fp16);
HALF_FORMAT(bf16);
