/* Perplexity and KL divergence against the fixture's PyTorch numbers. */
#include "../tp_test.h"
#include "evaltest.h"

#include <cjson/cJSON.h>
#include <math.h>

static const char *data_dir, *shared_dir;

/* reference.json's number for "base/BF16" and "ppl_llamacpp". */
static double ref_number(const char *dir, const char *model, const char *key)
{
	char buf[8192];
	FILE *f = fopen(tpt_path("%s/reference.json", dir), "rb");
	if (!f)
		return NAN;
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	cJSON *root = cJSON_ParseWithLength(buf, n);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "models"),
						 model), key);
	double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
	cJSON_Delete(root);
	return d;
}

static double rel_err(double a, double b)
{
	return fabs(a - b) / fabs(b);
}

/* Both conventions at the fixture's ctx 128 (stride 64), within 0.1%. */
static void check_ppl(const tp_model *m, const char *ref_dir, const char *name,
		      const int32_t *ids, size_t n)
{
	static const tp_ppl_mode modes[] = { TP_PPL_MODE_LLAMACPP, TP_PPL_MODE_STRIDED };
	for (size_t i = 0; i < 2; i++) {
		tp_eval_opts o = { .mode = modes[i], .ctx = 128, .stride = 64, .bos = -1 };
		tp_eval_result r;
		const char *mode = tp_ppl_mode_name(modes[i]);
		CHECK_EQ_INT(tp_runtime_eval_perplexity(m, NULL, ids, n, &o, &r), 0);
		char key[64];
		snprintf(key, sizeof(key), "ppl_%s", mode);
		double want = ref_number(ref_dir, name, key);
		snprintf(key, sizeof(key), "scored_%s", mode);
		double scored = ref_number(ref_dir, name, key);
		fprintf(stderr, "   %-12s %-8s ppl %.6f ± %.4f  reference %.6f  error %.2e  "
			"scored %zu  %.0f tok/s\n", name, mode, r.ppl, r.ppl_err, want,
			rel_err(r.ppl, want), r.scored, r.tokens_per_s);
		CHECK(rel_err(r.ppl, want) < 1e-3);
		CHECK_EQ_INT(r.scored, (long long)scored);
		CHECK(r.ppl_err > 0 && r.ppl_err < r.ppl * 0.1);
	}
}

/* The held-out text and the in-repo models, loaded once (threads 1: the
 * test machines are small and shared). */
static int32_t *ids;
static size_t nids;
static tp_model *base, *ft;

static void test_repo_ppl(void)
{
	tp_model *models[] = { base, ft };
	const char *names[] = { "base/BF16", "full_ft/BF16" };
	CHECK_EQ_INT(nids, 8192);
	for (size_t i = 0; i < 2; i++)
		check_ppl(models[i], tpt_path("%s/eval", data_dir), names[i], ids, nids);
}

/* F32 and F16 from the shared fixtures. */
static void test_shared_ppl(void)
{
	const char *variants[] = { "base", "full_ft" }, *dtypes[] = { "F32", "F16" };
	for (size_t i = 0; ids && i < 2; i++)
		for (size_t d = 0; d < 2; d++) {
			tp_model *m = NULL;
			tp_model_opts o = { .threads = 1 };
			char name[64];
			snprintf(name, sizeof(name), "%s/%s", variants[i], dtypes[d]);
			CHECK_EQ_INT(tp_model_load(&m, tpt_path("%s/models/%s", shared_dir, name),
						   &o), 0);
			if (m)
				check_ppl(m, tpt_path("%s/eval", shared_dir), name, ids, nids);
			tp_model_free(m);
		}
}

/* KL of a model against itself is zero; against its fine-tune it is not. */
static void test_kl(void)
{
	tp_eval_opts o = { .mode = TP_PPL_MODE_LLAMACPP, .ctx = 128, .max_tokens = 1024,
			   .bos = -1 };
	tp_eval_result self, other;
	CHECK_EQ_INT(tp_runtime_eval_perplexity(base, base, ids, nids, &o, &self), 0);
	CHECK_EQ_INT(tp_runtime_eval_perplexity(ft, base, ids, nids, &o, &other), 0);
	fprintf(stderr, "   KL(base||full_ft) mean %.5f ± %.5f p99 %.4f, same top %.2f%%\n",
		other.kl_mean, other.kl_err, other.kl_p99, other.same_top_pct);
	CHECK(self.has_kl && fabs(self.kl_mean) < 1e-6 && self.same_top_pct == 100.0);
	CHECK_EQ_INT(self.scored, 8 * 63);
	CHECK_EQ_INT(self.tokens, 1024);
	CHECK(other.kl_mean > 0.01 && other.kl_p99 >= other.kl_mean && other.kl_max >= other.kl_p99);
	CHECK(other.same_top_pct > 30 && other.same_top_pct < 100);
}

/* KL against log-probs computed once equals KL against the model run again,
 * in both modes; other options are refused. */
static void test_kl_reference(void)
{
	for (int mode = 0; mode < 2; mode++) {
		tp_eval_opts o = { .mode = mode ? TP_PPL_MODE_STRIDED : TP_PPL_MODE_LLAMACPP,
				   .ctx = 128, .stride = 48, .max_tokens = 1024, .bos = 1 };
		tp_eval_result two, one, plain, self;
		tp_eval_ref *ref = NULL;
		CHECK_EQ_INT(tp_runtime_eval_perplexity(ft, base, ids, nids, &o, &two), 0);
		CHECK_EQ_INT(tp_runtime_eval_perplexity(base, NULL, ids, nids, &o, &plain), 0);
		CHECK_EQ_INT(tp_runtime_eval_reference(&ref, base, ids, nids, &o, &self), 0);
		if (!ref)
			continue;
		CHECK(!self.has_kl && self.ppl == plain.ppl && self.scored == plain.scored);
		CHECK_EQ_INT(tp_runtime_eval_perplexity_ref(ft, ref, ids, nids, &o, &one), 0);
		CHECK(one.has_kl && one.scored == two.scored && one.ppl == two.ppl);
		CHECK(one.kl_mean == two.kl_mean && one.kl_p99 == two.kl_p99 &&
		      one.kl_max == two.kl_max && one.same_top_pct == two.same_top_pct);
		CHECK_EQ_INT(tp_runtime_eval_perplexity_ref(base, ref, ids, nids, &o, &one), 0);
		CHECK(one.kl_mean == 0 && one.same_top_pct == 100.0);
		tp_eval_opts other = o;
		other.max_tokens = 512;
		CHECK_EQ_INT(tp_runtime_eval_perplexity_ref(ft, ref, ids, nids, &other, &one),
			     TP_EINVAL);
		other = o;
		other.bos = -1;
		CHECK_EQ_INT(tp_runtime_eval_perplexity_ref(ft, ref, ids, nids, &other, &one),
			     TP_EINVAL);
		CHECK_EQ_INT(tp_runtime_eval_perplexity_ref(ft, ref, ids + 1, nids - 1, &o, &one),
			     TP_EINVAL);
		tp_runtime_eval_ref_free(ref);
	}
}

/* BOS goes first in every llama.cpp window and once in strided mode. */
static void test_bos_and_errors(void)
{
	const tp_model *m = base;
	size_t n = nids;
	tp_eval_result r;
	tp_eval_opts o = { .mode = TP_PPL_MODE_LLAMACPP, .ctx = 64, .max_tokens = 255, .bos = 0 };
	CHECK_EQ_INT(tp_runtime_eval_perplexity(m, NULL, ids, n, &o, &r), 0);
	CHECK_EQ_INT(r.windows, 4); /* 1 + 255 tokens in windows of 64 */
	CHECK_EQ_INT(r.scored, 4 * 31);
	o.mode = TP_PPL_MODE_STRIDED;
	o.stride = 0; /* ctx / 2 */
	CHECK_EQ_INT(tp_runtime_eval_perplexity(m, NULL, ids, n, &o, &r), 0);
	CHECK_EQ_INT(r.scored, 255);
	CHECK_EQ_INT(r.stride, 32);
	/* stride == ctx leaves a one-token last window: it scores nothing */
	o = (tp_eval_opts){ .mode = TP_PPL_MODE_STRIDED, .ctx = 64, .stride = 64,
			    .max_tokens = 129, .bos = -1 };
	CHECK_EQ_INT(tp_runtime_eval_perplexity(m, NULL, ids, n, &o, &r), 0);
	CHECK_EQ_INT(r.windows, 2);
	CHECK_EQ_INT(r.scored, 126);
	o.max_tokens = 10;
	o.bos = 0;
	o.mode = TP_PPL_MODE_LLAMACPP;
	CHECK_EQ_INT(tp_runtime_eval_perplexity(m, NULL, ids, n, &o, &r), TP_EINVAL);
	o.bos = 999;
	CHECK_EQ_INT(tp_runtime_eval_perplexity(m, NULL, ids, n, &o, &r), TP_EINVAL);
	tp_ppl_mode mode;
	CHECK_EQ_INT(tp_ppl_mode_from_name("strided", &mode), 0);
	CHECK_EQ_INT(tp_ppl_mode_from_name("sliding", &mode), TP_EINVAL);
	tp_speed_result s;
	CHECK_EQ_INT(tp_runtime_eval_speed(m, ids, 64, 16, &s), 0);
	CHECK(s.prefill_tps > 0 && s.decode_tps > 0 && s.decode_tokens == 16);
	/* Percentiles of the step times: ordered, and the mean of the same
	 * steps lies between the fastest and the slowest. */
	CHECK(s.latency_p50_ms > 0 && s.latency_p50_ms <= s.latency_p95_ms &&
	      s.latency_p95_ms <= s.latency_p99_ms);
	CHECK(fabs(s.latency_mean_ms - 1e3 / s.decode_tps) < 1e-6 * s.latency_mean_ms);
	CHECK_EQ_INT(tp_runtime_eval_speed(m, ids, 8, 0, &s), 0);
	CHECK(s.latency_p99_ms == 0 && s.decode_tps == 0);
}

int main(int argc, char **argv)
{
	data_dir = argc > 1 ? argv[1] : "tests/data";
	shared_dir = argc > 2 ? argv[2] : NULL;
	if (shared_dir && !tpt_have(tpt_path("%s/README.md", shared_dir), "shared fixtures"))
		return TPT_SKIP;
	ids = tpt_heldout_ids(data_dir, &nids);
	CHECK(ids != NULL);
	/* The shared fixtures' other dtypes run as their own ctest test. */
	if (ids && shared_dir) {
		TP_TEST_RUN(test_shared_ppl);
	} else if (ids) {
		base = tpt_repo_model(data_dir, "base", 1);
		ft = tpt_repo_model(data_dir, "full_ft", 1);
		CHECK(base && ft);
		if (base && ft) {
			TP_TEST_RUN(test_repo_ppl);
			TP_TEST_RUN(test_kl);
			TP_TEST_RUN(test_kl_reference);
			TP_TEST_RUN(test_bos_and_errors);
		}
	}
	free(ids);
	tp_model_free(base);
	tp_model_free(ft);
	return TP_TEST_RESULT();
}
