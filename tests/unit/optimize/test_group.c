/* Asymmetric RTN groups and the two hybrids built on them. */
#include "opt_test.h"

/* One group of 4 values, 2 bits: range 3 -> scale 1, zero = round(1) = 1,
 * q = round(w) + 1 with 0.5 rounding to even (torch.round). */
static void test_group_of_4_2bit(void)
{
	const float w[4] = {-1.0f, 0.0f, 0.5f, 2.0f};
	float s, y[4];
	int z;
	tp_quant_group_params(w, 4, 2, &s, &z);
	CHECK(s == 1.0f);
	CHECK_EQ_INT(z, 1);
	CHECK_EQ_INT(tp_quant_group_code(w[0], s, z, 2), 0);
	CHECK_EQ_INT(tp_quant_group_code(w[1], s, z, 2), 1);
	CHECK_EQ_INT(tp_quant_group_code(w[2], s, z, 2), 1);
	CHECK_EQ_INT(tp_quant_group_code(w[3], s, z, 2), 3);
	CHECK_EQ_INT(tp_quant_group_code(1.5f, s, z, 2), 3); /* 2 + 1 */
	CHECK_EQ_INT(tp_quant_group_code(9.0f, s, z, 2), 3); /* clamped */
	uint8_t p[16];
	/* 1 scale (2 bytes) + 1 zero (2 bits -> 1 byte) + 4 codes (1 byte) */
	CHECK_EQ_INT(tp_quant_group_packed_size(2, 4, 1, 4), 4);
	tp_quant_group_quantize(2, 4, w, 1, 4, p);
	CHECK_EQ_INT(p[0], 0x00); /* fp16 1.0 */
	CHECK_EQ_INT(p[1], 0x3c);
	CHECK_EQ_INT(p[2], 0x01);
	CHECK_EQ_INT(p[3], 0 | 1 << 2 | 1 << 4 | 3 << 6);
	tp_quant_group_dequantize(2, 4, p, 1, 4, y);
	CHECK(y[0] == -1.0f && y[1] == 0.0f && y[2] == 0.0f && y[3] == 2.0f);
}

/* 4 bits: range 1.5 -> scale fp16(0.1) = 0x2e66 = 0.0999755859375,
 * zero = round(0.2 / s) = 2, codes 3, 6, 0, 15; codes packed low nibble
 * first. */
static void test_group_of_4_4bit(void)
{
	const float w[4] = {0.1f, 0.4f, -0.2f, 1.3f};
	uint8_t p[16];
	float y[4];
	CHECK_EQ_INT(tp_quant_group_packed_size(4, 4, 1, 4), 5);
	tp_quant_group_quantize(4, 4, w, 1, 4, p);
	CHECK_EQ_INT(p[0], 0x66);
	CHECK_EQ_INT(p[1], 0x2e);
	CHECK_EQ_INT(p[2], 0x02);
	CHECK_EQ_INT(p[3], 0x63);
	CHECK_EQ_INT(p[4], 0xf0);
	tp_quant_group_dequantize(4, 4, p, 1, 4, y);
	const float s = 0.0999755859375f;
	CHECK(y[0] == 1 * s && y[1] == 4 * s && y[2] == -2 * s && y[3] == 13 * s);

	/* The range includes 0: all positive gives zero 0 and scale max/15, so
	 * the largest weight is not clipped; a constant group likewise. */
	const float pos[3] = {1.0f, 2.0f, 4.0f}, flat[2] = {0.5f, 0.5f};
	float sc;
	int z;
	tp_quant_group_params(pos, 3, 4, &sc, &z);
	CHECK(sc == 0.2666015625f); /* fp16(4/15): 2^-2 * (1 + 68/1024) */
	CHECK_EQ_INT(z, 0);
	CHECK_EQ_INT(tp_quant_group_code(4.0f, sc, z, 4), 15);
	tp_quant_group_params(flat, 2, 4, &sc, &z);
	CHECK(sc == tp_fp16_to_f32(tp_fp16_from_f32(0.5f / 15)));
	CHECK_EQ_INT(z, 0);
	tp_quant_group_params(NULL, 0, 3, &sc, &z);
	CHECK(sc > 0 && z == 0);
}

/* |w - deq| <= scale/2 in every group (plus the slack of the fp16-rounded
 * scale at the clipped ends), including a short last group. */
static void check_bound(int bits, size_t group, size_t rows, size_t cols, const float *w,
			const float *y)
{
	size_t ngr = (cols + group - 1) / group;
	int maxq = (1 << bits) - 1, bad = 0;
	for (size_t r = 0; r < rows; r++)
		for (size_t g = 0; g < ngr; g++) {
			size_t c0 = g * group, c1 = c0 + group < cols ? c0 + group : cols;
			float s, lo = INFINITY, hi = -INFINITY;
			int z;
			tp_quant_group_params(w + r * cols + c0, c1 - c0, bits, &s, &z);
			for (size_t c = c0; c < c1; c++) {
				lo = fminf(lo, w[r * cols + c]);
				hi = fmaxf(hi, w[r * cols + c]);
			}
			float slack = fabsf((hi - lo) - (float)maxq * s);
			for (size_t c = c0; c < c1; c++)
				if (!(fabsf(w[r * cols + c] - y[r * cols + c]) <=
				      s / 2 + slack + 1e-6f * s))
					bad++;
		}
	CHECK_EQ_INT(bad, 0);
}

static void test_rtn_formats(void)
{
	enum { R = 3, C = 576 }; /* 576 = 4.5 groups of 128: the last has 64 */
	static float w[R * C], y[R * C];
	opt_fill_gauss(w, R * C, 0.05f);
	/* The last group of row 0 is 100x smaller: its scale must be its own. */
	for (size_t c = 512; c < C; c++)
		w[c] *= 0.01f;
	const struct {
		const char *name;
		int bits;
		size_t group;
	} fm[] = {{"rtn4_g128", 4, 128}, {"rtn4_g64", 4, 64}, {"rtn4_g256", 4, 256},
		  {"rtn3_g128", 3, 128}, {"rtn2_g128", 2, 128}};
	for (size_t k = 0; k < sizeof(fm) / sizeof(fm[0]); k++) {
		const tp_quant_format *f = tp_quant_format_find(fm[k].name);
		CHECK(f != NULL && f == tp_quant_group_format(fm[k].bits, fm[k].group));
		size_t ng = R * ((C + fm[k].group - 1) / fm[k].group);
		CHECK_EQ_INT(f->packed_size(R, C),
			     2 * ng + (ng * fm[k].bits + 7) / 8 + (R * C * fm[k].bits + 7) / 8);
		CHECK_EQ_INT(opt_round_trip(f, w, R, C, NULL, y), 0);
		check_bound(fm[k].bits, fm[k].group, R, C, w, y);
	}
	CHECK(tp_quant_group_format(4, 32) == NULL);
	/* The short last group of row 0 (g128): error within ~0.05*0.01*8/15/2. */
	CHECK_EQ_INT(opt_round_trip(tp_quant_format_find("rtn4_g128"), w, R, C, NULL, y), 0);
	double worst = 0;
	for (size_t c = 512; c < C; c++)
		worst = fmax(worst, fabs(w[c] - y[c]));
	CHECK(worst < 0.05 * 0.01 * 10 / 15 / 2 * 1.01);

	/* Codes a method chose itself pack to the same bytes as RTN's. */
	size_t ng = R * 5;
	uint8_t *q = malloc(R * C), *p1 = malloc(4096), *p2 = malloc(4096);
	float *sc = malloc(ng * sizeof(float));
	int *zr = malloc(ng * sizeof(int));
	for (size_t r = 0; r < R; r++)
		for (size_t g = 0; g < 5; g++) {
			size_t c0 = g * 128, c1 = c0 + 128 < C ? c0 + 128 : C;
			tp_quant_group_params(w + r * C + c0, c1 - c0, 4, &sc[r * 5 + g], &zr[r * 5 + g]);
			for (size_t c = c0; c < c1; c++)
				q[r * C + c] = (uint8_t)tp_quant_group_code(w[r * C + c], sc[r * 5 + g],
									    zr[r * 5 + g], 4);
		}
	tp_quant_group_pack(4, 128, R, C, q, sc, zr, p1);
	tp_quant_group_quantize(4, 128, w, R, C, p2);
	CHECK(memcmp(p1, p2, tp_quant_group_packed_size(4, 128, R, C)) == 0);
	free(q);
	free(p1);
	free(p2);
	free(sc);
	free(zr);
}

/* tp_quant_group_unpack inverts tp_quant_group_pack for 2, 3, 4 and 8 bits
 * (a short last group included), and tp_quant_group_format_info names the
 * registered formats only. */
static void test_unpack(void)
{
	enum { R = 5, C = 300 };
	const size_t groups[] = {128, 64, 7};
	const int bits[] = {2, 3, 4, 8};
	for (size_t bi = 0; bi < 4; bi++)
		for (size_t gi = 0; gi < 3; gi++) {
			int b = bits[bi];
			size_t G = groups[gi], ng = R * ((C + G - 1) / G);
			uint8_t *q = malloc(R * C), *q2 = malloc(R * C);
			float *sc = malloc(ng * sizeof(float)), *sc2 = malloc(ng * sizeof(float));
			int *zr = malloc(ng * sizeof(int)), *zr2 = malloc(ng * sizeof(int));
			void *p = malloc(tp_quant_group_packed_size(b, G, R, C));
			for (size_t i = 0; i < R * C; i++)
				q[i] = (uint8_t)(opt_uniform() * (1 << b));
			for (size_t g = 0; g < ng; g++) {
				/* fp16 values, so the stored scale is exact */
				sc[g] = tp_fp16_to_f32(tp_fp16_from_f32((float)opt_uniform()));
				zr[g] = (int)(opt_uniform() * (1 << b));
			}
			tp_quant_group_pack(b, G, R, C, q, sc, zr, p);
			tp_quant_group_unpack(b, G, p, R, C, q2, sc2, zr2);
			CHECK(memcmp(q, q2, R * C) == 0);
			CHECK(memcmp(sc, sc2, ng * sizeof(float)) == 0);
			CHECK(memcmp(zr, zr2, ng * sizeof(int)) == 0);
			free(q), free(q2), free(sc), free(sc2), free(zr), free(zr2), free(p);
		}
	int b = 0;
	size_t g = 0;
	CHECK(tp_quant_group_format_info(tp_quant_format_find("rtn3_g128"), &b, &g));
	CHECK_EQ_INT(b, 3);
	CHECK_EQ_INT(g, 128);
	CHECK(tp_quant_group_format_info(tp_quant_group_format(2, 128), &b, &g) && b == 2);
	CHECK(!tp_quant_group_format_info(tp_quant_format_find("q4_0"), &b, &g));
	CHECK(!tp_quant_group_format_info(tp_quant_format_find("int4_int2_residual"), &b, &g));
}

/* int4_int2_residual: rtn4_g128, then rtn2_g128 of the rest; its packed
 * form is the two layouts one after the other. */
static void test_residual(void)
{
	enum { R = 4, C = 256 };
	static float w[R * C], y4[R * C], y[R * C], rest[R * C];
	opt_fill_gauss(w, R * C, 0.02f);
	const tp_quant_format *f = tp_quant_format_find("int4_int2_residual");
	CHECK(f != NULL);
	CHECK_EQ_INT(f->packed_size(R, C), tp_quant_group_packed_size(4, 128, R, C) +
						   tp_quant_group_packed_size(2, 128, R, C));
	CHECK_EQ_INT(opt_round_trip(f, w, R, C, NULL, y), 0);
	CHECK_EQ_INT(opt_round_trip(tp_quant_format_find("rtn4_g128"), w, R, C, NULL, y4), 0);
	for (size_t i = 0; i < R * C; i++)
		rest[i] = w[i] - y4[i];
	/* What is left after both passes is the 2-bit error of the residual. */
	static float r2[R * C];
	CHECK_EQ_INT(opt_round_trip(tp_quant_format_find("rtn2_g128"), rest, R, C, NULL, r2), 0);
	for (size_t i = 0; i < R * C; i++)
		CHECK(fabsf(y[i] - (y4[i] + r2[i])) <= 1e-7f);
	check_bound(2, 128, R, C, rest, r2);
	double e4 = opt_rmse(w, y4, R * C), e = opt_rmse(w, y, R * C);
	fprintf(stderr, "rmse rtn4_g128 %g, residual %g\n", e4, e);
	CHECK(e < e4 / 2);
}

/* int4_sparse25: per row the cols/4 weights of least |w|*||x|| become 0. */
static void test_sparse25(void)
{
	const tp_quant_format *f = tp_quant_format_find("int4_sparse25");
	CHECK(f != NULL);
	float w[8] = {0.1f, -0.2f, 0.3f, 0.05f, 1.0f, -1.0f, 0.5f, 0.4f}, y[8];
	double sq[8] = {1, 1, 1, 1, 1, 1, 1, 1};
	tp_quant_calib calib = {.cols = 8, .nsamples = 1, .sq_sum = sq};
	uint8_t p[64];
	/* NULL calib: refused */
	CHECK_EQ_INT(f->quantize(w, 1, 8, NULL, p), TP_EINVAL);
	/* scale, zeros, mask, 6 kept codes: 2 + 1 + 1 + 3 */
	CHECK_EQ_INT(f->packed_size(1, 8), 7);
	CHECK_EQ_INT(opt_round_trip(f, w, 1, 8, &calib, y), 0);
	CHECK(y[0] == 0.0f && y[3] == 0.0f); /* the two smallest |w| */
	for (int i = 0; i < 8; i++)
		if (i != 0 && i != 3)
			CHECK(y[i] != 0.0f && fabsf(y[i] - w[i]) <= 2.0f / 15 / 2 * 1.01f);
	CHECK_EQ_INT(f->quantize(w, 1, 8, &calib, p), 0);
	CHECK_EQ_INT(p[3], 0xf6); /* keep mask: bits 1, 2, 4..7 */

	/* A quiet input channel makes column 5 unimportant instead of 0. */
	sq[5] = 1e-4;
	CHECK_EQ_INT(opt_round_trip(f, w, 1, 8, &calib, y), 0);
	CHECK(y[3] == 0.0f && y[5] == 0.0f && y[0] != 0.0f);
	/* Kept weights are quantized over the kept ones: range 1.3 not 2. */
	CHECK(fabsf(y[4] - 1.0f) <= 1.3f / 15 / 2 * 1.01f);

	/* Random rows: exactly cols/4 zeros per row, the rest within bound. */
	enum { R = 3, C = 300 };
	static float wr[R * C], yr[R * C];
	static double sqr[C];
	opt_fill_gauss(wr, R * C, 0.1f);
	for (size_t c = 0; c < C; c++)
		sqr[c] = opt_uniform() * 10;
	tp_quant_calib cr = {.cols = C, .nsamples = 10, .sq_sum = sqr};
	static uint8_t pr[4096];
	CHECK(f->packed_size(R, C) <= sizeof(pr));
	CHECK_EQ_INT(f->quantize(wr, R, C, &cr, pr), 0);
	f->dequantize(pr, R, C, yr);
	/* the keep mask follows 9 fp16 scales and 9 4-bit zeros */
	const uint8_t *mask = pr + 2 * 9 + 5;
	for (size_t r = 0; r < R; r++) {
		int pruned = 0;
		float maxpruned = 0, minkept = INFINITY;
		for (size_t c = 0; c < C; c++) {
			size_t i = r * C + c;
			float imp = fabsf(wr[i]) * (float)sqrt(sqr[c]);
			if (!(mask[i / 8] >> (i % 8) & 1)) {
				pruned++;
				maxpruned = fmaxf(maxpruned, imp);
				CHECK(yr[i] == 0.0f);
			} else {
				minkept = fminf(minkept, imp);
			}
		}
		CHECK_EQ_INT(pruned, C / 4);
		CHECK(maxpruned <= minkept);
	}
	tp_quant_calib wrong = {.cols = C + 1, .sq_sum = sqr};
	CHECK_EQ_INT(f->quantize(wr, R, C, &wrong, pr), TP_EINVAL);
}

int main(void)
{
	TP_TEST_RUN(test_group_of_4_2bit);
	TP_TEST_RUN(test_group_of_4_4bit);
	TP_TEST_RUN(test_rtn_formats);
	TP_TEST_RUN(test_unpack);
	TP_TEST_RUN(test_residual);
	TP_TEST_RUN(test_sparse25);
	return TP_TEST_RESULT();
}
