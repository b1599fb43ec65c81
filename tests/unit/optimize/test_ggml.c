/* llama.cpp block formats against bytes derived by hand from ggml's
 * definitions (ggml-common.h layouts, ggml-quants.c quantize_row_*_ref). */
#include "opt_test.h"

static uint8_t packed[4096];

static void quantize(const char *name, const float *w, size_t rows, size_t cols)
{
	const tp_quant_format *f = tp_quant_format_find(name);
	CHECK(f != NULL);
	CHECK(f->packed_size(rows, cols) <= sizeof(packed));
	memset(packed, 0xAA, sizeof(packed));
	CHECK_EQ_INT(f->quantize(w, rows, cols, NULL, packed), 0);
}

static void dequantize(const char *name, float *w, size_t rows, size_t cols)
{
	tp_quant_format_find(name)->dequantize(packed, rows, cols, w);
}

/* Q8_0: fp16 d = amax/127, then 32 int8 q = roundf(x/d) (half away from 0). */
static void test_q8_0_block(void)
{
	float x[32] = {0}, y[32];
	x[0] = 127.0f; /* amax 127: d = 1 */
	x[1] = 2.5f;   /* roundf -> 3 (round half to even would give 2) */
	x[2] = -2.5f;  /* -> -3 */
	x[3] = -126.4f;
	x[4] = 0.49f;
	x[31] = -1.5f; /* -> -2 */
	quantize("q8_0", x, 1, 32);
	CHECK_EQ_INT(tp_quant_format_find("q8_0")->packed_size(1, 32), 34);
	CHECK_EQ_INT(packed[0], 0x00); /* fp16 1.0 = 0x3c00, little-endian */
	CHECK_EQ_INT(packed[1], 0x3c);
	CHECK_EQ_INT(packed[2], 127);
	CHECK_EQ_INT(packed[3], 3);
	CHECK_EQ_INT((int8_t)packed[4], -3);
	CHECK_EQ_INT((int8_t)packed[5], -126);
	CHECK_EQ_INT(packed[6], 0);
	CHECK_EQ_INT((int8_t)packed[33], -2);
	for (int j = 7; j < 33; j++)
		CHECK_EQ_INT(packed[j], 0);
	dequantize("q8_0", y, 1, 32);
	CHECK(y[0] == 127.0f && y[1] == 3.0f && y[3] == -126.0f && y[31] == -2.0f);
}

/* Q4_0: d = (the value of largest |x|) / -8, q = min(15, trunc(x/d + 8.5)),
 * byte j = q[j] | q[j+16] << 4. */
static void test_q4_0_block(void)
{
	float x[32] = {0}, y[32];
	x[0] = -8.0f; /* the max by |x|, negative: d = 1, q = 0 */
	x[1] = 7.6f;  /* 16.1 -> 16 -> 15 */
	x[2] = 0.5f;  /* 9.0 -> 9: ties go up */
	x[3] = -0.5f; /* 8.0 -> 8 */
	x[16] = 1.2f; /* 9.7 -> 9, high nibble of byte 0 */
	x[17] = -3.0f; /* 5.5 -> 5 */
	quantize("q4_0", x, 1, 32);
	CHECK_EQ_INT(tp_quant_format_find("q4_0")->packed_size(1, 32), 18);
	CHECK_EQ_INT(packed[0], 0x00);
	CHECK_EQ_INT(packed[1], 0x3c);
	CHECK_EQ_INT(packed[2], 0x90); /* q0 = 0, q16 = 9 */
	CHECK_EQ_INT(packed[3], 0x5f); /* q1 = 15, q17 = 5 */
	CHECK_EQ_INT(packed[4], 0x89); /* q2 = 9, q18 = 8 (x = 0) */
	CHECK_EQ_INT(packed[5], 0x88); /* q3 = 8, q19 = 8 */
	for (int j = 6; j < 18; j++)
		CHECK_EQ_INT(packed[j], 0x88);
	dequantize("q4_0", y, 1, 32);
	CHECK(y[0] == -8.0f && y[1] == 7.0f && y[2] == 1.0f && y[3] == 0.0f && y[16] == 1.0f);

	/* A positive max: d = 4 / -8 = -0.5 (fp16 0xb800), x/d flips sign. */
	memset(x, 0, sizeof(x));
	x[0] = 4.0f;  /* -8 + 8.5 -> 0 */
	x[1] = -4.0f; /* 8 + 8.5 = 16.5 -> 16 -> 15 */
	x[16] = 1.0f; /* -2 + 8.5 -> 6 */
	quantize("q4_0", x, 1, 32);
	CHECK_EQ_INT(packed[0], 0x00);
	CHECK_EQ_INT(packed[1], 0xb8);
	CHECK_EQ_INT(packed[2], 0x60);
	CHECK_EQ_INT(packed[3], 0x8f);
	dequantize("q4_0", y, 1, 32);
	CHECK(y[0] == 4.0f && y[1] == -3.5f && y[16] == 1.0f && y[5] == 0.0f);
}

/* Q5_0 (Q4_K's fallback): d = max / -16, q = min(31, trunc(x/d + 16.5)),
 * low nibbles as Q4_0, fifth bits in a little-endian u32 qh (bit j for
 * element j, bit j+16 for element j+16). */
static void test_q5_0_block(void)
{
	float x[32] = {0}, y[32];
	x[0] = -16.0f; /* d = 1, q = 0 */
	x[1] = 15.0f;  /* 31.5 -> 31 */
	x[2] = 0.5f;   /* 17 */
	x[20] = -1.0f; /* 15.5 -> 15 */
	quantize("q5_0", x, 1, 32);
	CHECK_EQ_INT(tp_quant_format_find("q5_0")->packed_size(1, 32), 22);
	CHECK_EQ_INT(packed[0], 0x00);
	CHECK_EQ_INT(packed[1], 0x3c);
	/* q = 16 (x = 0) everywhere else: fifth bit set except elements 0 and 20 */
	uint32_t qh = (uint32_t)packed[2] | (uint32_t)packed[3] << 8 | (uint32_t)packed[4] << 16 |
		      (uint32_t)packed[5] << 24;
	CHECK(qh == (0xffffffffu & ~(1u << 0) & ~(1u << 20)));
	CHECK_EQ_INT(packed[6], 0x00);  /* q0 = 0, q16 = 16 -> nibble 0 */
	CHECK_EQ_INT(packed[7], 0x0f);  /* q1 = 31 */
	CHECK_EQ_INT(packed[8], 0x01);  /* q2 = 17 */
	CHECK_EQ_INT(packed[10], 0xf0); /* q4 = 16, q20 = 15 */
	dequantize("q5_0", y, 1, 32);
	CHECK(y[0] == -16.0f && y[1] == 15.0f && y[2] == 1.0f && y[20] == -1.0f);
}

/* Q4_K on blocks whose sub-blocks are exactly representable, so that
 * make_qkx2_quants' search cannot improve on its first guess and every byte
 * follows by hand: fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128
 * bytes of nibbles (low: element l of a 64-chunk, high: element l+32). */
static void test_q4_k_block(void)
{
	float x[256], y[256];
	/* Codes 0..15, min 0: every scale 1 -> ls 63, mins -0 -> lm 0. */
	for (int i = 0; i < 256; i++)
		x[i] = (float)(i % 16);
	quantize("q4_k", x, 1, 256);
	CHECK_EQ_INT(tp_quant_format_find("q4_k")->packed_size(1, 256), 144);
	/* d = fp16(1/63): 2^-6 * (1 + 16/1024) = 0x2410; dmin = 0 */
	CHECK_EQ_INT(packed[0] | packed[1] << 8, 0x2410);
	CHECK_EQ_INT(packed[2] | packed[3] << 8, 0x0000);
	for (int j = 0; j < 4; j++) {
		CHECK_EQ_INT(packed[4 + j], 0xff);     /* 63 | (63 >> 4) << 6 */
		CHECK_EQ_INT(packed[4 + j + 4], 0x00); /* mins 0 */
		CHECK_EQ_INT(packed[4 + j + 8], 0x0f); /* 63 & 15 | (0 & 15) << 4 */
	}
	for (int l = 0; l < 128; l++)
		CHECK_EQ_INT(packed[16 + l], (l % 16) * 0x11);
	dequantize("q4_k", y, 1, 256);
	float d = 0.015869140625f * 63.0f; /* 0x2410 times 63 */
	for (int i = 0; i < 256; i++)
		CHECK(y[i] == d * x[i]);

	/* Codes -8..7: scale 1, min 8 -> ls = lm = 63: all 12 bytes 0xff,
	 * dmin = fp16(8/63) = 2^-3 * (1 + 16/1024) = 0x3010. */
	for (int i = 0; i < 256; i++)
		x[i] = (float)(i % 16) - 8.0f;
	quantize("q4_k", x, 1, 256);
	CHECK_EQ_INT(packed[0] | packed[1] << 8, 0x2410);
	CHECK_EQ_INT(packed[2] | packed[3] << 8, 0x3010);
	for (int j = 0; j < 12; j++)
		CHECK_EQ_INT(packed[4 + j], 0xff);
	for (int l = 0; l < 128; l++)
		CHECK_EQ_INT(packed[16 + l], (l % 16) * 0x11);
	dequantize("q4_k", y, 1, 256);
	for (int i = 0; i < 256; i++)
		CHECK(fabsf(y[i] - x[i]) < 0.01f);
}

/* Random data: every format keeps its error within its step, and Q4_K's
 * searched scales beat Q4_0 (the ordering the optimizer relies on). */
static void test_round_trip(void)
{
	enum { R = 4, C = 512 };
	static float w[R * C], y[R * C];
	opt_fill_gauss(w, R * C, 0.02f);
	const char *names[] = {"q8_0", "q4_0", "q5_0", "q4_k"};
	double rmse[4];
	for (int k = 0; k < 4; k++) {
		const tp_quant_format *f = tp_quant_format_find(names[k]);
		CHECK_EQ_INT(opt_round_trip(f, w, R, C, NULL, y), 0);
		rmse[k] = opt_rmse(w, y, R * C);
		/* per block of 32: |x - y| <= d (Q4_0/Q5_0 clip the far end
		 * by one step at most) */
		for (size_t b = 0; b < R * C / 32; b++) {
			float amax = 0;
			for (int j = 0; j < 32; j++)
				amax = fmaxf(amax, fabsf(w[b * 32 + j]));
			float step = k == 0 ? amax / 127 : k == 1 ? amax / 8 : amax / 16;
			if (k == 3)
				step = 2 * amax / 15 * 1.2f; /* 6-bit scales lose up to ~1/63 */
			for (int j = 0; j < 32; j++)
				CHECK(fabsf(w[b * 32 + j] - y[b * 32 + j]) <= step * 1.001f + 1e-7f);
		}
	}
	fprintf(stderr, "rmse q8_0 %g q4_0 %g q5_0 %g q4_k %g\n", rmse[0], rmse[1], rmse[2], rmse[3]);
	CHECK(rmse[0] < rmse[2] && rmse[2] < rmse[1]);
	CHECK(rmse[3] < rmse[1]);
}

/* llama.cpp's fallbacks: Q4_K rows not divisible by 256 -> Q5_0, or F16
 * when 32 does not divide them either; Q8_0/Q4_0 rows not divisible by 32
 * (llama.cpp refuses them) -> fp16. */
static void test_fallback(void)
{
	CHECK(tp_quant_fallback("q4_k", 512) == NULL);
	CHECK_STR(tp_quant_fallback("q4_k", 576), "q5_0");
	CHECK_STR(tp_quant_fallback("q4_k", 100), "fp16");
	CHECK(tp_quant_fallback("q8_0", 576) == NULL);
	CHECK_STR(tp_quant_fallback("q8_0", 100), "fp16");
	CHECK_STR(tp_quant_fallback("q4_0", 33), "fp16");
	CHECK(tp_quant_fallback("rtn4_g128", 576) == NULL);

	/* A 576-wide q4_k matrix is stored exactly as q5_0. */
	enum { R = 2, C = 576 };
	static float w[R * C], y1[R * C], y2[R * C];
	opt_fill_gauss(w, R * C, 1.0f);
	const tp_quant_format *k4 = tp_quant_format_find("q4_k"), *q5 = tp_quant_format_find("q5_0");
	CHECK_EQ_INT(k4->packed_size(R, C), q5->packed_size(R, C));
	CHECK_EQ_INT(k4->packed_size(R, C), R * (C / 32) * 22);
	CHECK_EQ_INT(opt_round_trip(k4, w, R, C, NULL, y1), 0);
	CHECK_EQ_INT(opt_round_trip(q5, w, R, C, NULL, y2), 0);
	CHECK(memcmp(y1, y2, sizeof(y1)) == 0);
	/* 100 wide: fp16 */
	CHECK_EQ_INT(k4->packed_size(3, 100), 600);
	CHECK_EQ_INT(tp_quant_format_find("q8_0")->packed_size(3, 100), 600);
	CHECK_EQ_INT(opt_round_trip(tp_quant_format_find("q4_0"), w, 3, 100, NULL, y1), 0);
	for (int i = 0; i < 300; i++)
		CHECK(fabsf(y1[i] - w[i]) <= fabsf(w[i]) * 0x1p-11f + 0x1p-24f);
}

int main(void)
{
	TP_TEST_RUN(test_q8_0_block);
	TP_TEST_RUN(test_q4_0_block);
	TP_TEST_RUN(test_q5_0_block);
	TP_TEST_RUN(test_q4_k_block);
	TP_TEST_RUN(test_round_trip);
	TP_TEST_RUN(test_fallback);
	return TP_TEST_RESULT();
}
