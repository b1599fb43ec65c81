/* IEEE binary16 and bfloat16 <-> fp32 (tp_common.h): one copy for the
 * runtime's loader, the optimizer's formats and the GGUF writer. */
#include "tp_common.h"

#include <math.h>
#include <string.h>

uint16_t tp_fp16_from_f32(float f)
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

float tp_fp16_to_f32(uint16_t h)
{
	/* Bit by bit, so a NaN keeps its payload and -0 its sign. */
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	uint32_t bits;
	if (exp == 0x1f) {
		bits = sign | 0x7f800000u | (man << 13);
	} else if (exp != 0) {
		bits = sign | ((exp + 112) << 23) | (man << 13);
	} else if (man == 0) {
		bits = sign;
	} else { /* subnormal: normalize the mantissa */
		exp = 113;
		while (!(man & 0x400)) {
			man <<= 1;
			exp--;
		}
		bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
	}
	float f;
	memcpy(&f, &bits, sizeof(f));
	return f;
}

uint16_t tp_bf16_from_f32(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40); /* keep NaN a (quiet) NaN */
	x += 0x7fffu + ((x >> 16) & 1u);
	return (uint16_t)(x >> 16);
}

float tp_bf16_to_f32(uint16_t h)
{
	uint32_t x = (uint32_t)h << 16;
	float f;
	memcpy(&f, &x, 4);
	return f;
}
