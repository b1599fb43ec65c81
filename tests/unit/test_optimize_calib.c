/* Calibration capture: hand-computed statistics, and a whole model run. */
#include "tp_test.h"
#include "runtime/evaltest.h"
#include "tp_optimize.h"

#include <math.h>

static const char *data_dir;

static void test_quantized_names(void)
{
	CHECK(tp_optimize_is_quantized("model.layers.0.self_attn.q_proj"));
	CHECK(tp_optimize_is_quantized("model.layers.31.mlp.down_proj"));
	CHECK(!tp_optimize_is_quantized("lm_head"));
	CHECK(!tp_optimize_is_quantized("model.layers.x.mlp.up_proj"));
	CHECK(!tp_optimize_is_quantized("model.layers.1.mlp.up_proj.bias"));
	CHECK(!tp_optimize_is_quantized("model.layers..mlp.up_proj"));
}

/* Two input rows through a 2x3 layer: every statistic by hand. */
static void test_capture_by_hand(void)
{
	const float w[6] = { 1, 2, 3, -1, 0, 1 }, x[6] = { 1, -2, 0.5f, -3, 4, 2 };
	double am[3] = { 0 }, sq[3] = { 0 }, h[9] = { 0 };
	tp_quant_calib st = { .cols = 3, .abs_mean = am, .sq_sum = sq, .hessian = h };
	tp_linear *dense = NULL, *cap = NULL;
	float y[4], want[4];
	CHECK_EQ_INT(tp_linear_dense_new(&dense, w, NULL, 2, 3), 0);
	CHECK_EQ_INT(tp_quant_capture_new(&cap, dense, &st), 0);
	CHECK(cap->in == 3 && cap->out == 2);
	tp_linear_forward(cap, x, 2, y, NULL);
	tp_linear_forward(dense, x, 2, want, NULL);
	CHECK(memcmp(y, want, sizeof(y)) == 0);
	CHECK(y[0] == 1 - 4 + 1.5f && y[3] == 3 + 2);
	tp_quant_calib_finish(&st);
	CHECK(st.nsamples == 2);
	CHECK(am[0] == 2 && am[1] == 3 && am[2] == 1.25);
	CHECK(sq[0] == 10 && sq[1] == 20 && sq[2] == 4.25);
	const double hh[9] = { 10, -14, -5.5, -14, 20, 7, -5.5, 7, 4.25 };
	for (int i = 0; i < 9; i++)
		CHECK(h[i] == hh[i]);
	CHECK(tp_quant_capture_release(cap) == dense);
	tp_linear_free(dense);
	tp_quant_calib bad = { .cols = 4, .abs_mean = am, .sq_sum = sq };
	CHECK_EQ_INT(tp_quant_capture_new(&cap, dense = NULL, &bad), TP_EINVAL);
}

/* The fixture model: every quantized layer observed, the model unchanged. */
static void test_calibrate_model(void)
{
	tp_model *m = tpt_repo_model(data_dir, "base", 1);
	size_t n = 0;
	int32_t *ids = tpt_heldout_ids(data_dir, &n);
	CHECK(m && ids && n > 300);
	if (!m || !ids)
		goto done;
	size_t count = tp_model_linear_count(m), V = tp_model_get_config(m)->vocab;
	tp_linear *before[64];
	CHECK(count <= 64);
	for (size_t i = 0; i < count && i < 64; i++)
		before[i] = tp_model_linear(m, i);
	float *lg0 = malloc(8 * V * sizeof(float)), *lg1 = malloc(8 * V * sizeof(float));
	tp_kv *kv = NULL;
	CHECK_EQ_INT(tp_kv_new(&kv, m, 64, 64), 0);
	CHECK_EQ_INT(tp_model_forward(m, kv, ids, 8, 0, lg0), 0);

	tp_quant_calib_set s = { 0 };
	tp_calib_opts o = { .ctx = 64, .max_tokens = 300, .bos = -1, .hessian = true };
	CHECK_EQ_INT(tp_optimize_calibrate(m, ids, n, &o, &s), 0);
	CHECK(s.count == count && s.tokens == 300);
	for (size_t i = 0; i < count && i < 64; i++) {
		CHECK(tp_model_linear(m, i) == before[i]);
		const tp_quant_calib *c = &s.layers[i];
		if (!tp_optimize_is_quantized(s.names[i])) {
			CHECK(c->cols == 0 && !c->abs_mean && strcmp(s.names[i], "lm_head") == 0);
			continue;
		}
		CHECK(c->cols == before[i]->in && c->nsamples == 300 && c->hessian);
		for (size_t j = 0; j < c->cols; j++) {
			CHECK(c->sq_sum[j] == c->hessian[j * c->cols + j]);
			CHECK(c->abs_mean[j] > 0);
			/* mean |x| <= sqrt(mean x^2) */
			CHECK(c->abs_mean[j] <= sqrt(c->sq_sum[j] / 300) * (1 + 1e-12));
		}
	}
	/* q, k and v read the same input, and so do gate and up. */
	const tp_quant_calib *q = tp_quant_calib_find(&s, "model.layers.2.self_attn.q_proj"),
			     *v = tp_quant_calib_find(&s, "model.layers.2.self_attn.v_proj"),
			     *g = tp_quant_calib_find(&s, "model.layers.2.mlp.gate_proj"),
			     *u = tp_quant_calib_find(&s, "model.layers.2.mlp.up_proj"),
			     *o2 = tp_quant_calib_find(&s, "model.layers.2.self_attn.o_proj");
	CHECK(q && v && g && u && o2 && !tp_quant_calib_find(&s, "lm_head"));
	if (q && v && g && u && o2) {
		CHECK(memcmp(q->sq_sum, v->sq_sum, q->cols * sizeof(double)) == 0);
		CHECK(memcmp(g->hessian, u->hessian, g->cols * g->cols * sizeof(double)) == 0);
		CHECK(memcmp(q->sq_sum, o2->sq_sum, q->cols * sizeof(double)) != 0);
	}
	tp_kv_reset(kv);
	CHECK_EQ_INT(tp_model_forward(m, kv, ids, 8, 0, lg1), 0);
	CHECK(memcmp(lg0, lg1, 8 * V * sizeof(float)) == 0);
	tp_quant_calib_set_free(&s);
	CHECK_EQ_INT(tp_optimize_calibrate(m, ids, 0, &o, &s), TP_EINVAL);
	tp_kv_free(kv);
	free(lg0);
	free(lg1);
done:
	free(ids);
	tp_model_free(m);
}

/* Only one block captured, with evenly spaced sample rows (AWQ's inputs). */
static void test_calibrate_range_and_samples(void)
{
	tp_model *m = tpt_repo_model(data_dir, "base", 1);
	size_t n = 0, layer = 0, which = 0;
	int32_t *ids = tpt_heldout_ids(data_dir, &n);
	CHECK(m && ids && n > 300);
	CHECK(tp_optimize_linear_slot("model.layers.12.mlp.up_proj", &layer, &which));
	CHECK(layer == 12 && which == 5);
	CHECK(!tp_optimize_linear_slot("lm_head", &layer, &which));
	if (!m || !ids)
		goto done;
	tp_quant_calib_set s = { 0 }, all = { 0 };
	/* 300 tokens in windows of 64 with no BOS: 300 rows, every 6th kept. */
	tp_calib_opts o = { .ctx = 64, .max_tokens = 300, .bos = -1, .sample_rows = 50,
			    .first = 14, .last = 21 };
	CHECK_EQ_INT(tp_optimize_calibrate(m, ids, n, &o, &s), 0);
	tp_calib_opts oa = { .ctx = 64, .max_tokens = 300, .bos = -1, .sample_rows = 300 };
	CHECK_EQ_INT(tp_optimize_calibrate(m, ids, n, &oa, &all), 0);
	for (size_t i = 0; i < s.count; i++) {
		const tp_quant_calib *c = &s.layers[i];
		if (i < 14 || i >= 21) {
			CHECK(c->cols == 0 && !c->x);
			continue;
		}
		const tp_quant_calib *a = &all.layers[i];
		CHECK(c->nsamples == 300 && c->nx == 50 && c->x_stride == 6 && c->x);
		CHECK(a->nx == 300 && a->x_stride == 1);
		/* Sample row k is input row 6k, as the full capture saw it. */
		for (size_t k = 0; k < c->nx && c->x && a->x; k++)
			CHECK(memcmp(c->x + k * c->cols, a->x + 6 * k * a->cols,
				     c->cols * sizeof(float)) == 0);
	}
	CHECK(memcmp(s.layers[14].x, s.layers[16].x, 50 * s.layers[14].cols * sizeof(float)) == 0);
	tp_quant_calib_set_free(&s);
	tp_quant_calib_set_free(&all);
done:
	free(ids);
	tp_model_free(m);
}

int main(int argc, char **argv)
{
	data_dir = argc > 1 ? argv[1] : "tests/data";
	TP_TEST_RUN(test_quantized_names);
	TP_TEST_RUN(test_capture_by_hand);
	TP_TEST_RUN(test_calibrate_model);
	TP_TEST_RUN(test_calibrate_range_and_samples);
	return TP_TEST_RESULT();
}
