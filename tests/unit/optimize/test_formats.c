/* The format table: exact bits per weight, fp16/bf16, int8, nf4, nf4_dq by
 * hand, and every format on NaN/Inf/huge input. */
#include <float.h>

#include "opt_test.h"

static void test_table(void)
{
	const char *want[] = {"bf16",      "fp16",      "int8",      "nf4",  "nf4_dq",
			      "rtn4_g128", "rtn4_g64",  "rtn4_g256", "rtn3_g128", "q8_0",
			      "q4_0",      "q5_0",      "q4_k",      "int4_int2_residual",
			      "int4_sparse25"};
	const tp_quant_format *const *all = tp_quant_formats();
	size_t n = 0;
	while (all[n])
		n++;
	CHECK_EQ_INT(n, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < n && i < sizeof(want) / sizeof(want[0]); i++) {
		CHECK_STR(all[i]->name, want[i]);
		CHECK(tp_quant_format_find(want[i]) == all[i]);
	}
	CHECK(tp_quant_format_find("rtn2_g128") != NULL); /* the residual's 2nd pass */
	CHECK(tp_quant_format_find("q4_K") == NULL);
	CHECK(tp_quant_format_find(NULL) == NULL);
}

/* bpw = 8 * packed bytes / weights, everything counted. */
static void test_bpw(void)
{
	const size_t R = 4096, C = 4096;
	const double N = (double)R * C;
	struct {
		const char *name;
		double bpw;
	} want[] = {
		{"bf16", 16.0},
		{"fp16", 16.0},
		{"int8", 8.0 + 32.0 / 4096},                  /* fp32 scale per row */
		{"nf4", 4.0 + 32.0 / 64},                      /* fp32 absmax per 64 */
		{"nf4_dq", 4.0 + 8.0 / 64 + 32.0 * 1024 / N + 32.0 / N}, /* u8 per 64, fp32 per
									   256 blocks, offset */
		{"rtn4_g128", 4.0 + (16.0 + 4) / 128},
		{"rtn4_g64", 4.0 + (16.0 + 4) / 64},
		{"rtn4_g256", 4.0 + (16.0 + 4) / 256},
		{"rtn3_g128", 3.0 + (16.0 + 3) / 128},
		{"rtn2_g128", 2.0 + (16.0 + 2) / 128},
		{"q8_0", 34.0 * 8 / 32},
		{"q4_0", 18.0 * 8 / 32},
		{"q5_0", 22.0 * 8 / 32},
		{"q4_k", 144.0 * 8 / 256},
		{"int4_int2_residual", 4.0 + 20.0 / 128 + 2.0 + 18.0 / 128},
		{"int4_sparse25", 1.0 + 0.75 * 4 + 20.0 / 128}, /* mask + kept codes */
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		double got = tp_quant_bpw(tp_quant_format_find(want[i].name), R, C);
		if (got != want[i].bpw)
			fprintf(stderr, "%s: bpw %.10f, want %.10f\n", want[i].name, got,
				want[i].bpw);
		CHECK(got == want[i].bpw);
	}
	/* SmolLM-like shapes: 576 wide rows, q4_k falls back to q5_0. */
	CHECK(tp_quant_bpw(tp_quant_format_find("q4_k"), 1536, 576) == 5.5);
	CHECK(tp_quant_bpw(tp_quant_format_find("q4_k"), 576, 1536) == 4.5);
	/* 576 = 4 groups of 128 and one of 64: 5 scales and zeros per row */
	CHECK(tp_quant_bpw(tp_quant_format_find("rtn4_g128"), 576, 576) == 4.0 + 5 * 20.0 / 576);
	CHECK(tp_quant_bpw(tp_quant_format_find("int8"), 0, 10) == 0.0);
}

static void test_half(void)
{
	CHECK_EQ_INT(tp_fp16_from_f32(1.0f), 0x3c00);
	CHECK_EQ_INT(tp_fp16_from_f32(-2.0f), 0xc000);
	CHECK_EQ_INT(tp_fp16_from_f32(65504.0f), 0x7bff);
	CHECK_EQ_INT(tp_fp16_from_f32(65519.0f), 0x7bff);
	CHECK_EQ_INT(tp_fp16_from_f32(65520.0f), 0x7c00); /* tie to even: inf */
	CHECK_EQ_INT(tp_fp16_from_f32(1.0f + 0x1p-11f), 0x3c00); /* tie, even */
	CHECK_EQ_INT(tp_fp16_from_f32(1.0f + 3 * 0x1p-11f), 0x3c02);
	CHECK_EQ_INT(tp_fp16_from_f32(0x1p-24f), 0x0001);
	CHECK_EQ_INT(tp_fp16_from_f32(0x1p-25f), 0x0000); /* tie, even */
	CHECK_EQ_INT(tp_fp16_from_f32(3 * 0x1p-25f), 0x0002);
	CHECK_EQ_INT(tp_fp16_from_f32(0x1p-14f - 0x1p-26f), 0x0400); /* rounds up to normal */
	CHECK_EQ_INT(tp_fp16_from_f32(0.1f), 0x2e66);
	CHECK_EQ_INT(tp_fp16_from_f32(INFINITY), 0x7c00);
	CHECK((tp_fp16_from_f32(NAN) & 0x7c00) == 0x7c00 &&
	      (tp_fp16_from_f32(NAN) & 0x3ff) != 0);
	CHECK(tp_fp16_to_f32(0x3c00) == 1.0f);
	CHECK(tp_fp16_to_f32(0x0001) == 0x1p-24f);
	CHECK(tp_fp16_to_f32(0xfbff) == -65504.0f);
	CHECK(isinf(tp_fp16_to_f32(0x7c00)) && isnan(tp_fp16_to_f32(0x7e00)));
	CHECK_EQ_INT(tp_bf16_from_f32(1.0f), 0x3f80);
	CHECK_EQ_INT(tp_bf16_from_f32(1.0f + 0x1p-8f), 0x3f80); /* tie, even */
	CHECK_EQ_INT(tp_bf16_from_f32(1.0f + 3 * 0x1p-8f), 0x3f82);
	CHECK_EQ_INT(tp_bf16_from_f32(-0.0f), 0x8000);
	CHECK(isnan(tp_bf16_to_f32(tp_bf16_from_f32(NAN))));
	CHECK(tp_bf16_to_f32(0x3f80) == 1.0f);
	/* every fp16 survives f32 and back */
	int bad = 0;
	for (uint32_t h = 0; h < 0x10000; h++)
		if ((h & 0x7c00) != 0x7c00 || (h & 0x3ff) == 0)
			bad += tp_fp16_from_f32(tp_fp16_to_f32((uint16_t)h)) != h;
	CHECK_EQ_INT(bad, 0);

	/* the formats: 2 bytes a weight, little-endian */
	const float w[2] = {1.0f, -2.0f};
	uint8_t p[4];
	CHECK_EQ_INT(tp_quant_format_find("bf16")->quantize(w, 1, 2, NULL, p), 0);
	CHECK(p[0] == 0x80 && p[1] == 0x3f && p[2] == 0x00 && p[3] == 0xc0);
	CHECK_EQ_INT(tp_quant_format_find("fp16")->quantize(w, 2, 1, NULL, p), 0);
	CHECK(p[0] == 0x00 && p[1] == 0x3c && p[2] == 0x00 && p[3] == 0xc0);
}

/* int8: fp32 scale per row (absmax/127), then int8 round(w*127/absmax). */
static void test_int8(void)
{
	const float w[6] = {1.27f, -0.5f, 0.0f, 0.0f, 0.0f, 0.0f};
	uint8_t p[4 * 2 + 6];
	float y[6];
	const tp_quant_format *f = tp_quant_format_find("int8");
	CHECK_EQ_INT(f->packed_size(2, 3), 14);
	CHECK_EQ_INT(f->quantize(w, 2, 3, NULL, p), 0);
	float s;
	memcpy(&s, p, 4); /* little-endian host */
	CHECK(s == 1.27f / 127.0f);
	CHECK(p[4] == 0 && p[5] == 0 && p[6] == 0 && p[7] == 0); /* zero row: scale 0 */
	CHECK_EQ_INT((int8_t)p[8], 127);
	CHECK_EQ_INT((int8_t)p[9], -50);
	CHECK_EQ_INT((int8_t)p[10], 0);
	f->dequantize(p, 2, 3, y);
	CHECK(y[0] == 127 * s && y[1] == -50 * s && y[3] == 0.0f);

	enum { R = 8, C = 100 };
	static float wr[R * C], yr[R * C];
	opt_fill_gauss(wr, R * C, 1.0f);
	CHECK_EQ_INT(opt_round_trip(f, wr, R, C, NULL, yr), 0);
	for (size_t r = 0; r < R; r++) {
		float amax = 0;
		for (size_t c = 0; c < C; c++)
			amax = fmaxf(amax, fabsf(wr[r * C + c]));
		for (size_t c = 0; c < C; c++)
			CHECK(fabsf(wr[r * C + c] - yr[r * C + c]) <= amax / 127 / 2 * 1.001f);
	}
}

/* nf4: fp32 absmax per block of 64, then nibbles, the even element high. */
static void test_nf4(void)
{
	float w[64] = {0}, y[64];
	w[0] = 2.0f;  /* code 15 (1.0) */
	w[1] = -2.0f; /* code 0 (-1.0) */
	w[2] = 0.0f;  /* code 7 */
	w[3] = 0.2f;  /* 0.1 of absmax: nearest 0.0796 -> code 8 */
	w[4] = 2.0f * 0.6f; /* between 0.5626 and 0.7230 (mid 0.6428): 13 */
	w[5] = -2.0f * 0.45f; /* between -0.5251 and -0.3949 (mid -0.46): 3 */
	uint8_t p[4 + 32];
	const tp_quant_format *f = tp_quant_format_find("nf4");
	CHECK_EQ_INT(f->packed_size(1, 64), 36);
	CHECK_EQ_INT(f->quantize(w, 1, 64, NULL, p), 0);
	CHECK(p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0x40); /* 2.0f */
	CHECK_EQ_INT(p[4], 0xf0);
	CHECK_EQ_INT(p[5], 0x78);
	CHECK_EQ_INT(p[6], 0xd3);
	CHECK_EQ_INT(p[7], 0x77);
	f->dequantize(p, 1, 64, y);
	CHECK(y[0] == 2.0f && y[1] == -2.0f && y[2] == 0.0f);
	CHECK(y[3] == 0.07958029955625534f * 2.0f);
	CHECK(y[5] == -0.39491748809814453f * 2.0f);

	/* a short last block (100 = 64 + 36) and an odd count: padded nibble */
	CHECK_EQ_INT(f->packed_size(1, 101), 4 * 2 + 51);
	static float wr[1000], yr[1000];
	opt_fill_gauss(wr, 1000, 1.0f);
	CHECK_EQ_INT(opt_round_trip(f, wr, 10, 100, NULL, yr), 0);
	for (size_t b = 0; b < 1000; b += 64) {
		float amax = 0;
		for (size_t i = b; i < b + 64 && i < 1000; i++)
			amax = fmaxf(amax, fabsf(wr[i]));
		/* largest gap in the NF4 code is 0.3038 (0.7230 -> 1.0) */
		for (size_t i = b; i < b + 64 && i < 1000; i++)
			CHECK(fabsf(wr[i] - yr[i]) <= amax * 0.152f);
	}
}

/* nf4_dq: fp32 offset (mean absmax), fp32 absmax per 256 blocks, 8-bit
 * dynamic-map codes of (absmax - offset), then the nibbles. */
static void test_nf4_dq(void)
{
	const tp_quant_format *f = tp_quant_format_find("nf4_dq"),
			      *plain = tp_quant_format_find("nf4");
	float w[64] = {0}, y[64];
	w[0] = 2.0f;
	w[1] = -1.0f;
	uint8_t p[4 + 4 + 1 + 32];
	CHECK_EQ_INT(f->packed_size(1, 64), 41);
	CHECK_EQ_INT(f->quantize(w, 1, 64, NULL, p), 0);
	/* one block: offset = its absmax, so absmax - offset = 0: the code of 0
	 * is index 127 (127 negative values below it) and the block scale 0 */
	CHECK(p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0x40);
	CHECK(p[4] == 0 && p[5] == 0 && p[6] == 0 && p[7] == 0);
	CHECK_EQ_INT(p[8], 127);
	CHECK_EQ_INT(p[9], 0xf2); /* codes 15 and 2 (-0.5 -> -0.5251) */
	f->dequantize(p, 1, 64, y);
	CHECK(y[0] == 2.0f && y[1] == -0.5250730514526367f * 2.0f);

	/* Many blocks: same codes as nf4, absmax within the 8-bit map's step. */
	enum { R = 64, C = 512 }; /* 512 blocks of 64: two double-quant blocks */
	static float wr[R * C], yd[R * C], yp[R * C];
	for (size_t i = 0; i < (size_t)R * C; i++)
		wr[i] = opt_gauss(0.01f + 0.02f * (float)((i / 64) % 7));
	CHECK_EQ_INT(opt_round_trip(f, wr, R, C, NULL, yd), 0);
	CHECK_EQ_INT(opt_round_trip(plain, wr, R, C, NULL, yp), 0);
	enum { NB = R * C / 64 };
	static float amax[NB];
	double mean = 0;
	for (size_t b = 0; b < NB; b++) {
		amax[b] = 0;
		for (size_t i = b * 64; i < b * 64 + 64; i++)
			amax[b] = fmaxf(amax[b], fabsf(wr[i]));
		mean += amax[b] / NB;
	}
	int bad = 0;
	for (size_t b2 = 0; b2 < NB / 256; b2++) {
		/* the map's largest gap is 0.9/64 (its top decade): half of it
		 * times the double-quant block's scale */
		float scale2 = 0;
		for (size_t b = b2 * 256; b < b2 * 256 + 256; b++)
			scale2 = fmaxf(scale2, fabsf(amax[b] - (float)mean));
		for (size_t b = b2 * 256; b < b2 * 256 + 256; b++) {
			/* the largest element comes back as +-(dequantized absmax) */
			float got = 0;
			for (size_t i = b * 64; i < b * 64 + 64; i++)
				got = fmaxf(got, fabsf(yd[i]));
			bad += !(fabsf(got - amax[b]) <= 0.45f / 64 * scale2 * 1.001f + 1e-7f);
		}
	}
	CHECK_EQ_INT(bad, 0);
	double ed = opt_rmse(wr, yd, (size_t)R * C), ep = opt_rmse(wr, yp, (size_t)R * C);
	fprintf(stderr, "rmse nf4 %g nf4_dq %g\n", ep, ed);
	CHECK(ed < ep * 1.05);
}

/* NaN, Inf, huge and subnormal values: no crash (sanitizers watch), finite
 * values elsewhere in the matrix stay finite, and a zero matrix comes back
 * exactly zero in every format. */
static void test_special_values(void)
{
	enum { R = 2, C = 512 };
	static float w[R * C], y[R * C];
	static double sq[C];
	for (size_t c = 0; c < C; c++)
		sq[c] = c % 3 ? 1.0 : (c % 2 ? NAN : INFINITY);
	tp_quant_calib calib = {.cols = C, .nsamples = 1, .sq_sum = sq};
	const float special[] = {NAN, INFINITY, -INFINITY, 1e30f, -1e30f, FLT_MAX, -FLT_MAX,
				 FLT_TRUE_MIN, 0.0f, -0.0f, 65520.0f};
	const tp_quant_format *const *all = tp_quant_formats();
	for (size_t k = 0; all[k]; k++) {
		const tp_quant_format *f = all[k];
		/* row 0: specials spread over the row; row 1: ordinary values */
		opt_fill_gauss(w, R * C, 0.1f);
		for (size_t c = 0; c < C; c++)
			if (c % 17 == 0)
				w[c] = special[(c / 17) % (sizeof(special) / sizeof(special[0]))];
		CHECK_EQ_INT(opt_round_trip(f, w, R, C, &calib, y), 0);
		int nonfinite = 0;
		for (size_t c = 0; c < C; c++)
			nonfinite += !isfinite(y[C + c]);
		/* nf4/nf4_dq blocks and offsets span the flattened matrix: row 1's
		 * values may share nothing with row 0 but nf4_dq's mean offset */
		if (strcmp(f->name, "nf4_dq") != 0)
			CHECK_EQ_INT(nonfinite, 0);

		memset(w, 0, sizeof(w));
		CHECK_EQ_INT(opt_round_trip(f, w, R, C, &calib, y), 0);
		int nonzero = 0;
		for (size_t i = 0; i < (size_t)R * C; i++)
			nonzero += y[i] != 0.0f;
		if (nonzero)
			fprintf(stderr, "%s: zero matrix -> %d nonzero\n", f->name, nonzero);
		CHECK_EQ_INT(nonzero, 0);
	}
}

int main(void)
{
	TP_TEST_RUN(test_table);
	TP_TEST_RUN(test_bpw);
	TP_TEST_RUN(test_half);
	TP_TEST_RUN(test_int8);
	TP_TEST_RUN(test_nf4);
	TP_TEST_RUN(test_nf4_dq);
	TP_TEST_RUN(test_special_values);
	return TP_TEST_RESULT();
}
