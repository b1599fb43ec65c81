/* The trained fixture models: bit-exact round trips, sane ratios, estimate
 * within 5%, and a clear failure with the wrong base. */
#include "testutil.h"

#include <unistd.h>

static char base[512], ft[512], delta[512], out[512];

static void check_estimate(const char *target, const char *const *b, size_t nb, uint64_t actual)
{
	tp_delta_layout *m = NULL;
	CHECK(tp_delta_estimate(&m, target, b, nb, NULL) == 0);
	if (!m)
		return;
	double err = ((double)m->delta_size - (double)actual) / (double)actual;
	printf("estimate %llu vs actual %llu (%+.2f%%)\n", (unsigned long long)m->delta_size,
	       (unsigned long long)actual, 100 * err);
	CHECK(err < 0.05 && err > -0.05);
	tp_delta_layout_free(m);
}

static void check_pair(const char *target, const char *const *b, size_t nb, double max_ratio)
{
	tp_delta_stats cs = { 0 }, as = { 0 };
	unlink(out);
	CHECK(tp_delta_compress_file(target, b, nb, delta, NULL, &cs) == 0);
	CHECK(tp_delta_apply_file(delta, b, nb, out, NULL, &as) == 0);
	CHECK(t_same_files(target, out));
	double ratio = cs.target_bytes ? (double)cs.delta_bytes / (double)cs.target_bytes : 1;
	printf("%s with %zu base(s): ratio %.4f\n", target, nb, ratio);
	CHECK(ratio < max_ratio);
	check_estimate(target, b, nb, cs.delta_bytes);
}

int main(int argc, char **argv)
{
	const char *fix = argc > 1 ? argv[1] : "tests/data/fixtures";
	char dir[] = "/tmp/tp-delta-fix-XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	snprintf(base, sizeof(base), "%s/base-bf16.safetensors", fix);
	snprintf(ft, sizeof(ft), "%s/full_ft-bf16.safetensors", fix);
	snprintf(delta, sizeof(delta), "%s/d", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	if (!t_exists(base) || !t_exists(ft)) {
		fprintf(stderr, "fixtures missing under %s\n", fix);
		return 1;
	}
	const char *b = base;
	check_pair(ft, &b, 1, 0.60);      /* fine-tune against its base */
	check_pair(base, NULL, 0, 0.72);  /* no-base mode */
	check_pair(base, &b, 1, 0.01);    /* identical: references only */
	/* The fine-tune's delta applied to the fine-tune instead of the base. */
	CHECK(tp_delta_compress_file(ft, &b, 1, delta, NULL, NULL) == 0);
	const char *wrong = ft;
	unlink(out);
	CHECK(tp_delta_apply_file(delta, &wrong, 1, out, NULL, NULL) == TP_ENOTFOUND);
	CHECK(strstr(tp_error_last(), "wrong or missing base") != NULL);
	CHECK(!t_exists(out));
	unlink(delta);
	rmdir(dir);
	return TP_TEST_RESULT();
}
