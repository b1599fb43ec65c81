/* hooks/: parsing git's pre-push ref lines and printing stored reports. */
#include <stdlib.h>
#include <string.h>

#include "tp_hooks.h"
#include "tp_test.h"

#define A40 "1111111111111111111111111111111111111111"
#define B40 "abcdef0123456789abcdef0123456789abcdef01"
#define Z40 "0000000000000000000000000000000000000000"

static int parse(const char *text, tp_hooks_ref **refs, size_t *n)
{
	*refs = NULL;
	*n = 0;
	return tp_hooks_refs_parse(text, strlen(text), refs, n);
}

static void refs_good(void)
{
	tp_hooks_ref *r = NULL;
	size_t n = 0;
	const char *text = "refs/heads/main " A40 " refs/heads/main " B40 "\n"
			   "\n"
			   "(delete) " Z40 " refs/heads/old " A40 "\n"
			   "refs/heads/new " B40 " refs/heads/new " Z40; /* no final LF */
	CHECK_EQ_INT(parse(text, &r, &n), 0);
	CHECK_EQ_INT(n, 3);
	if (n == 3) {
		CHECK_STR(r[0].local_ref, "refs/heads/main");
		CHECK_STR(r[0].local_oid, A40);
		CHECK_STR(r[0].remote_ref, "refs/heads/main");
		CHECK_STR(r[0].remote_oid, B40);
		CHECK_STR(r[1].local_ref, "(delete)");
		CHECK_STR(r[1].local_oid, Z40);
		CHECK_STR(r[2].remote_oid, Z40);
	}
	free(r);
	/* sha256 repositories: 64 hex digits */
	const char *sha256 = "refs/heads/a " A40 "012345678901234567890123 refs/heads/a " Z40
			     "000000000000000000000000\n";
	CHECK_EQ_INT(parse(sha256, &r, &n), 0);
	CHECK_EQ_INT(n, 1);
	free(r);
	CHECK_EQ_INT(parse("", &r, &n), 0);
	CHECK_EQ_INT(n, 0);
	CHECK(r == NULL);
}

static void refs_bad(void)
{
	const char *bad[] = {
		"refs/heads/main " A40 " refs/heads/main\n",                 /* 3 fields */
		"refs/heads/main " A40 " refs/heads/main " B40 " extra\n",   /* 5 fields */
		"refs/heads/main " A40 "  refs/heads/main " B40 "\n",        /* empty field */
		"refs/heads/main 1234 refs/heads/main " B40 "\n",            /* short oid */
		"refs/heads/main " "ABCDEF0123456789ABCDEF0123456789ABCDEF01" " r " B40 "\n",
		"refs/heads/main " "g111111111111111111111111111111111111111" " r " B40 "\n",
		"garbage\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tp_hooks_ref *r = NULL;
		size_t n = 0;
		CHECK_EQ_INT(parse(bad[i], &r, &n), TP_EINVAL);
		CHECK(r == NULL);
		CHECK(strstr(tp_error_last(), "line 1") != NULL);
	}
	/* a ref name longer than the field holds is refused, not cut */
	char line[700];
	memset(line, 'x', 400);
	snprintf(line + 400, sizeof(line) - 400, " " A40 " r " B40 "\n");
	tp_hooks_ref *r = NULL;
	size_t n = 0;
	CHECK_EQ_INT(parse(line, &r, &n), TP_EINVAL);
	/* the line number is the failing one's */
	CHECK_EQ_INT(parse("r " A40 " r " B40 "\nbad\n", &r, &n), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "line 2") != NULL);
}

static void report_print(void)
{
	const char *json =
		"{\"model\":\"m\",\"all_candidates\":[{\"codec\":\"rtn4_g128\",\"bpw\":4.156,"
		"\"ppl_delta_pct\":-0.5,\"kl_mean\":0.0006,\"compression\":3.85}],"
		"\"winner\":{\"codec\":\"rtn4_g128\",\"compression\":3.85,\"ppl_delta\":-0.5},"
		"\"rejected\":[{\"codec\":\"int8\",\"reason\":\"compression 2.0 < 3.0\"},"
		"{\"codec\":\"q4_k\",\"reasons\":[\"a\",\"b\"]},\"plain words\"],"
		"\"pushed\":{\"commit\":\"" A40 "\",\"model_dir\":\"models/x\"}}";
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	CHECK(f != NULL);
	if (!f)
		return;
	CHECK_EQ_INT(tp_hooks_report_print(f, json, strlen(json)), 0);
	fclose(f);
	CHECK(strstr(out, "  model models/x at commit 111111111111\n") != NULL);
	CHECK(strstr(out, "  winner: rtn4_g128  3.85x smaller  dPPL -0.50%\n") != NULL);
	CHECK(strstr(out, "  rtn4_g128        4.16    -0.500   0.00060     3.85\n") != NULL);
	CHECK(strstr(out, "    int8: compression 2.0 < 3.0\n") != NULL);
	CHECK(strstr(out, "    q4_k: a; b\n") != NULL);
	CHECK(strstr(out, "    plain words\n") != NULL);
	free(out);

	/* no winner: said so */
	const char *none = "{\"all_candidates\":[],\"winner\":null}";
	f = open_memstream(&out, &len);
	CHECK_EQ_INT(tp_hooks_report_print(f, none, strlen(none)), 0);
	fclose(f);
	CHECK(strstr(out, "no candidate meets the constraints") != NULL);
	free(out);

	/* a store's strings reach a terminal: no escape sequences */
	const char *esc = "{\"all_candidates\":[{\"codec\":\"x\\u001b[2Jy\"}],"
			  "\"rejected\":[\"a\\nb\"]}";
	f = open_memstream(&out, &len);
	CHECK_EQ_INT(tp_hooks_report_print(f, esc, strlen(esc)), 0);
	fclose(f);
	CHECK(strchr(out, 0x1b) == NULL);
	CHECK(strstr(out, "  x?[2Jy") != NULL);
	CHECK(strstr(out, "    a?b\n") != NULL);
	free(out);

	/* not a report */
	f = open_memstream(&out, &len);
	CHECK_EQ_INT(tp_hooks_report_print(f, "[1]", 3), TP_ECORRUPT);
	CHECK_EQ_INT(tp_hooks_report_print(f, "{\"model\":1", 10), TP_ECORRUPT);
	fclose(f);
	CHECK_EQ_INT(len, 0);
	free(out);
}

static void report_key(void)
{
	char key[TP_HOOKS_REPORT_KEY_LEN + 1];
	const char *oid = "6537f65eb741a487f870e8b7d4d008c51e45d4265e3de75aee7cbeeed031d8d9";
	tp_hooks_report_key(key, oid);
	CHECK_STR(key, "reports/6537f65eb741a487f870e8b7d4d008c51e45d4265e3de75aee7cbeeed031d8d9.json");
	CHECK(tp_store_key_valid(key));
}

int main(void)
{
	TP_TEST_RUN(refs_good);
	TP_TEST_RUN(refs_bad);
	TP_TEST_RUN(report_print);
	TP_TEST_RUN(report_key);
	return TP_TEST_RESULT();
}
