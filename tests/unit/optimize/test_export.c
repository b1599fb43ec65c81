/* The export layouts' readers (tp_export_*_dequantize) against words packed
 * here by the rules of AutoGPTQ's and AutoAWQ's packers, written out bit by
 * bit (optimize/README.md, "Export"), and which candidate goes out how. */
#include "opt_test.h"

/* AutoGPTQ, 3 bits: 32 codes in 3 words; code 10 straddles words 0 and 1
 * (2 + 1 bits), code 21 words 1 and 2 (1 + 2 bits). */
static void gptq3_words(const unsigned *v, uint32_t *w0, uint32_t *w1, uint32_t *w2)
{
	uint32_t a = 0, b = 0, c = 0;
	for (unsigned j = 0; j < 10; j++)
		a |= (uint32_t)v[j] << (3 * j);
	a |= (uint32_t)v[10] << 30;
	b |= (v[10] >> 2) & 1u;
	for (unsigned j = 0; j < 10; j++)
		b |= (uint32_t)v[11 + j] << (3 * j + 1);
	b |= (uint32_t)v[21] << 31;
	c |= (v[21] >> 1) & 3u;
	for (unsigned j = 0; j < 10; j++)
		c |= (uint32_t)v[22 + j] << (3 * j + 2);
	*w0 = a, *w1 = b, *w2 = c;
}

static void test_gptq3(void)
{
	enum { IN = 64, OUT = 32, G = 32, NG = 2 };
	unsigned q[OUT][IN], z[NG][OUT], col[32];
	uint32_t qw[IN * 3 / 32 * OUT], qz[NG * 3], w0, w1, w2;
	uint16_t sc[NG * OUT];
	int32_t gi[IN];
	float w[OUT * IN];
	for (unsigned o = 0; o < OUT; o++)
		for (unsigned k = 0; k < IN; k++)
			q[o][k] = (k * 5 + o * 3 + k / 7) % 8;
	for (unsigned g = 0; g < NG; g++)
		for (unsigned o = 0; o < OUT; o++) {
			z[g][o] = 1 + (o + g) % 7; /* 1..7: v1 stores z - 1 */
			sc[g * OUT + o] = tp_fp16_from_f32(0.5f + 0.25f * (float)(o % 3));
		}
	for (unsigned k = 0; k < IN; k++)
		gi[k] = (int32_t)(k / G);
	for (unsigned o = 0; o < OUT; o++)
		for (unsigned r = 0; r < IN / 32; r++) {
			for (unsigned j = 0; j < 32; j++)
				col[j] = q[o][32 * r + j];
			gptq3_words(col, &w0, &w1, &w2);
			qw[(3 * r) * OUT + o] = w0;
			qw[(3 * r + 1) * OUT + o] = w1;
			qw[(3 * r + 2) * OUT + o] = w2;
		}
	for (unsigned g = 0; g < NG; g++) {
		for (unsigned o = 0; o < OUT; o++)
			col[o] = z[g][o] - 1;
		gptq3_words(col, &qz[3 * g], &qz[3 * g + 1], &qz[3 * g + 2]);
	}
	CHECK_EQ_INT(tp_export_gptq_dequantize(3, IN, OUT, NG, qw, qz, sc, gi, true, w), 0);
	int bad = 0;
	for (unsigned o = 0; o < OUT; o++)
		for (unsigned k = 0; k < IN; k++) {
			float want = (float)((int)q[o][k] - (int)z[k / G][o]) *
				     tp_fp16_to_f32(sc[(k / G) * OUT + o]);
			bad += w[o * IN + k] != want;
		}
	CHECK_EQ_INT(bad, 0);
	/* v2 stores the zero itself. */
	CHECK_EQ_INT(tp_export_gptq_dequantize(3, IN, OUT, NG, qw, qz, sc, gi, false, w), 0);
	CHECK(w[0] == (float)((int)q[0][0] - (int)z[0][0] + 1) * tp_fp16_to_f32(sc[0]));
	gi[5] = NG;
	CHECK(tp_export_gptq_dequantize(3, IN, OUT, NG, qw, qz, sc, gi, true, w) == TP_ECORRUPT);
}

/* AutoGPTQ, 4 bits: code j of 8 at bits 4j; qzeros hold zero - 1 (v1). */
static void test_gptq4(void)
{
	enum { IN = 32, OUT = 8 };
	uint32_t qw[4 * OUT] = { 0 }, qz[1] = { 0 };
	uint16_t sc[OUT];
	int32_t gi[IN] = { 0 };
	float w[OUT * IN];
	for (unsigned o = 0; o < OUT; o++) {
		sc[o] = tp_fp16_from_f32(1.0f);
		qz[0] |= (uint32_t)(o + 3 - 1) << (4 * o); /* zero o + 3 */
		for (unsigned k = 0; k < IN; k++)
			qw[(k / 8) * OUT + o] |= (uint32_t)((k + o) % 16) << (4 * (k % 8));
	}
	CHECK_EQ_INT(tp_export_gptq_dequantize(4, IN, OUT, 1, qw, qz, sc, gi, true, w), 0);
	int bad = 0;
	for (unsigned o = 0; o < OUT; o++)
		for (unsigned k = 0; k < IN; k++)
			bad += w[o * IN + k] != (float)((int)((k + o) % 16) - (int)(o + 3));
	CHECK_EQ_INT(bad, 0);
}

/* AutoAWQ GEMM: qweight [in][out/8], the 8 outputs of an int32 in the
 * order 0, 2, 4, 6, 1, 3, 5, 7 from the low nibble up; no zero offset. */
static void test_awq(void)
{
	enum { IN = 4, OUT = 16, G = 2 };
	static const unsigned order[8] = { 0, 2, 4, 6, 1, 3, 5, 7 };
	uint32_t qw[IN * OUT / 8] = { 0 }, qz[IN / G * OUT / 8] = { 0 };
	uint16_t sc[IN / G * OUT];
	float w[OUT * IN];
	for (unsigned i = 0; i < IN / G * OUT; i++)
		sc[i] = tp_fp16_from_f32(0.125f * (float)(1 + i % 5));
	for (unsigned c = 0; c < OUT / 8; c++)
		for (unsigned i = 0; i < 8; i++) {
			unsigned o = 8 * c + order[i];
			for (unsigned k = 0; k < IN; k++)
				qw[k * (OUT / 8) + c] |= (uint32_t)((o * 3 + k) % 16) << (4 * i);
			for (unsigned g = 0; g < IN / G; g++)
				qz[g * (OUT / 8) + c] |= (uint32_t)((o + g) % 16) << (4 * i);
		}
	CHECK_EQ_INT(tp_export_awq_dequantize(G, IN, OUT, qw, qz, sc, w), 0);
	int bad = 0;
	for (unsigned o = 0; o < OUT; o++)
		for (unsigned k = 0; k < IN; k++)
			bad += w[o * IN + k] != (float)((int)((o * 3 + k) % 16) - (int)((o + k / G) % 16)) *
							tp_fp16_to_f32(sc[(k / G) * OUT + o]);
	CHECK_EQ_INT(bad, 0);
	CHECK(tp_export_awq_dequantize(3, IN, OUT, qw, qz, sc, w) == TP_EINVAL);
}

static void test_plan(void)
{
	tp_export_plan p;
	CHECK(tp_optimize_export_plan("q4_k", &p) == 0 && p.layout == TP_EXPORT_GGUF &&
	      p.ggml_type == TP_GGML_Q4_K && p.format == tp_quant_format_find("q4_k"));
	CHECK(tp_optimize_export_plan("gptq4_g128", &p) == 0 && p.layout == TP_EXPORT_GPTQ &&
	      p.bits == 4 && p.group == 128 && p.format == tp_quant_format_find("rtn4_g128"));
	CHECK(tp_optimize_export_plan("rtn3_g128", &p) == 0 && p.layout == TP_EXPORT_GPTQ);
	CHECK(tp_optimize_export_plan("awq4_g256", &p) == 0 && p.layout == TP_EXPORT_AWQ &&
	      p.group == 256);
	CHECK(tp_optimize_export_plan("awq3_g128", &p) == 0 && p.layout == TP_EXPORT_GPTQ);
	CHECK(tp_optimize_export_plan("nf4", &p) == TP_EUNSUPPORTED);
	CHECK(tp_optimize_export_plan("int4_int2_residual", &p) == TP_EUNSUPPORTED);
	CHECK(tp_optimize_export_plan("gptq4_g100", &p) == TP_EUNSUPPORTED);
	CHECK(tp_optimize_export_plan("gptq4_g128x", &p) == TP_EUNSUPPORTED);
}

int main(void)
{
	TP_TEST_RUN(test_gptq3);
	TP_TEST_RUN(test_gptq4);
	TP_TEST_RUN(test_awq);
	TP_TEST_RUN(test_plan);
	return TP_TEST_RESULT();
}
