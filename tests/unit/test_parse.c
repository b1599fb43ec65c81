/*
 * tp_parse_u64 and tp_parse_size: whole strings only, ranges checked,
 * overflow caught, *out written only on success. tp_parse_u64_prefix: the
 * same rules for the digits that start a string, and where they end.
 */
#include "tp_common.h"
#include "tp_test.h"

#include <stdint.h>
#include <string.h>

#define SENTINEL 0x5a5a5a5a5a5a5a5aull

/* rc of tp_parse_u64(s, min, max); *v keeps SENTINEL on failure. */
static int u64(const char *s, uint64_t min, uint64_t max, uint64_t *v)
{
	*v = SENTINEL;
	return tp_parse_u64(s, min, max, v);
}

static int size(const char *s, uint64_t min, uint64_t max, uint64_t *v)
{
	*v = SENTINEL;
	return tp_parse_size(s, min, max, v);
}

static void plain_numbers(void)
{
	uint64_t v;
	CHECK_EQ_INT(u64("0", 0, 10, &v), 0);
	CHECK(v == 0);
	CHECK_EQ_INT(u64("10", 0, 10, &v), 0);
	CHECK(v == 10);
	CHECK_EQ_INT(u64("007", 0, 10, &v), 0);
	CHECK(v == 7);
	CHECK_EQ_INT(u64("18446744073709551615", 0, UINT64_MAX, &v), 0);
	CHECK(v == UINT64_MAX);
}

static void ranges(void)
{
	uint64_t v;
	CHECK_EQ_INT(u64("11", 0, 10, &v), TP_EINVAL);
	CHECK(v == SENTINEL);
	CHECK(strstr(tp_error_last(), "\"11\" is not a number from 0 to 10") != NULL);
	CHECK_EQ_INT(u64("3", 4, 10, &v), TP_EINVAL);
	CHECK(v == SENTINEL);
	CHECK_EQ_INT(u64("4", 4, 4, &v), 0);
	CHECK(v == 4);
}

static void overflow(void)
{
	uint64_t v;
	/* 2^64 and far beyond must not wrap into range. */
	CHECK_EQ_INT(u64("18446744073709551616", 0, UINT64_MAX, &v), TP_EINVAL);
	CHECK(v == SENTINEL);
	CHECK_EQ_INT(u64("36893488147419103232", 0, UINT64_MAX, &v), TP_EINVAL);
	CHECK_EQ_INT(u64("99999999999999999999999999999", 0, UINT64_MAX, &v), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "is not a number from") != NULL);
	CHECK(v == SENTINEL);
}

static void junk(void)
{
	static const char *const bad[] = {
		"", "-1", "-0", "+1", " 1", "1 ", "\t1", "1\n", "0x10", "1e3", "1.0", "1,000",
		"one", "1k", "--", "1-",
	};
	uint64_t v;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_EQ_INT(u64(bad[i], 0, UINT64_MAX, &v), TP_EINVAL);
		CHECK(v == SENTINEL);
	}
	CHECK_EQ_INT(u64(NULL, 0, 10, &v), TP_EINVAL);
	CHECK_EQ_INT(u64("12ab", 0, 100, &v), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "\"12ab\" is not a whole number") != NULL);
	/* " -5" once wrapped to 2^64 - 5 in strtoull. */
	CHECK_EQ_INT(u64(" -5", 0, UINT64_MAX, &v), TP_EINVAL);
	CHECK(v == SENTINEL);
}

static void long_input_is_quoted_short(void)
{
	char s[400];
	uint64_t v;
	memset(s, 'x', sizeof(s) - 1);
	s[sizeof(s) - 1] = '\0';
	CHECK_EQ_INT(u64(s, 0, 1, &v), TP_EINVAL);
	CHECK(strlen(tp_error_last()) < 120);
}

/* rc of tp_parse_u64_prefix(s, min, max); *v and *end keep sentinels on
 * failure. */
static int prefix(const char *s, uint64_t min, uint64_t max, uint64_t *v, const char **end)
{
	*v = SENTINEL;
	*end = NULL;
	return tp_parse_u64_prefix(s, end, min, max, v);
}

static void prefixes(void)
{
	uint64_t v;
	const char *end;
	const char *line = "123 path/to/model.safetensors";
	CHECK_EQ_INT(prefix(line, 0, UINT64_MAX, &v, &end), 0);
	CHECK(v == 123);
	CHECK(end == line + 3);
	CHECK_EQ_INT(prefix("42", 0, 100, &v, &end), 0);
	CHECK(v == 42 && *end == '\0');
	CHECK_EQ_INT(prefix("007\n", 0, 10, &v, &end), 0);
	CHECK(v == 7 && *end == '\n');
	CHECK_EQ_INT(prefix("18446744073709551615x", 0, UINT64_MAX, &v, &end), 0);
	CHECK(v == UINT64_MAX && *end == 'x');
}

static void prefix_failures(void)
{
	static const char *const bad[] = { "", " 1", "-1", "+1", "x1", "\n1" };
	uint64_t v;
	const char *end;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_EQ_INT(prefix(bad[i], 0, UINT64_MAX, &v, &end), TP_EINVAL);
		CHECK(v == SENTINEL && end == NULL);
	}
	CHECK_EQ_INT(prefix(NULL, 0, 10, &v, &end), TP_EINVAL);
	CHECK_EQ_INT(prefix("x 5", 0, 10, &v, &end), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "\"x 5\" does not start with a whole number") != NULL);
	/* The range and overflow apply as in tp_parse_u64; only the digits are
	 * quoted. */
	CHECK_EQ_INT(prefix("11 rest", 0, 10, &v, &end), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "\"11\" is not a number from 0 to 10") != NULL);
	CHECK_EQ_INT(prefix("18446744073709551616 x", 0, UINT64_MAX, &v, &end), TP_EINVAL);
	CHECK(v == SENTINEL && end == NULL);
	CHECK_EQ_INT(prefix("9223372036854775808", 0, INT64_MAX, &v, &end), TP_EINVAL);
	CHECK(v == SENTINEL && end == NULL);
}

static void sizes(void)
{
	uint64_t v;
	CHECK_EQ_INT(size("4096", 0, UINT64_MAX, &v), 0);
	CHECK(v == 4096);
	CHECK_EQ_INT(size("1k", 0, UINT64_MAX, &v), 0);
	CHECK(v == 1024);
	CHECK_EQ_INT(size("64M", 0, UINT64_MAX, &v), 0);
	CHECK(v == 64ull << 20);
	CHECK_EQ_INT(size("64MiB", 0, UINT64_MAX, &v), 0);
	CHECK(v == 64ull << 20);
	CHECK_EQ_INT(size("64MB", 0, UINT64_MAX, &v), 0);
	CHECK(v == 64ull << 20);
	CHECK_EQ_INT(size("8g", 0, UINT64_MAX, &v), 0);
	CHECK(v == 8ull << 30);
	CHECK_EQ_INT(size("0M", 0, UINT64_MAX, &v), 0);
	CHECK(v == 0);
	/* The range is in bytes: 5M..5G, as S3 parts are. */
	CHECK_EQ_INT(size("5M", 5ull << 20, 5ull << 30, &v), 0);
	CHECK_EQ_INT(size("5G", 5ull << 20, 5ull << 30, &v), 0);
	CHECK(v == 5ull << 30);
	CHECK_EQ_INT(size("5121M", 5ull << 20, 5ull << 30, &v), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "from 5242880 to 5368709120 bytes") != NULL);
	CHECK_EQ_INT(size("4M", 5ull << 20, 5ull << 30, &v), TP_EINVAL);
	CHECK_EQ_INT(size("5242879", 5ull << 20, 5ull << 30, &v), TP_EINVAL);
	CHECK(v == SENTINEL);
}

static void size_suffix_edges(void)
{
	static const char *const bad[] = {
		"M", "MiB", "", "64B", "64iB", "64MiBs", "64Mib", "64mib", "64MM", "64T", "64 M",
		"-64M", "+64M", " 64M", "64M ", "1.5G", "0x40M", "64KB/s",
	};
	uint64_t v;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_EQ_INT(size(bad[i], 0, UINT64_MAX, &v), TP_EINVAL);
		CHECK(v == SENTINEL);
	}
	CHECK_EQ_INT(size("64Q", 0, UINT64_MAX, &v), TP_EINVAL);
	CHECK(strstr(tp_error_last(), "\"64Q\" is not a size") != NULL);
	CHECK_EQ_INT(size(NULL, 0, 1, &v), TP_EINVAL);
}

static void size_overflow(void)
{
	uint64_t v;
	/* 2^34 G is 2^64 bytes: one past the largest. */
	CHECK_EQ_INT(size("17179869183G", 0, UINT64_MAX, &v), 0);
	CHECK(v == 17179869183ull << 30);
	CHECK_EQ_INT(size("17179869184G", 0, UINT64_MAX, &v), TP_EINVAL);
	CHECK(v == SENTINEL);
	CHECK_EQ_INT(size("18446744073709551616", 0, UINT64_MAX, &v), TP_EINVAL);
	CHECK_EQ_INT(size("18446744073709551615K", 0, UINT64_MAX, &v), TP_EINVAL);
	CHECK(v == SENTINEL);
}

int main(void)
{
	TP_TEST_RUN(plain_numbers);
	TP_TEST_RUN(ranges);
	TP_TEST_RUN(overflow);
	TP_TEST_RUN(junk);
	TP_TEST_RUN(long_input_is_quoted_short);
	TP_TEST_RUN(prefixes);
	TP_TEST_RUN(prefix_failures);
	TP_TEST_RUN(sizes);
	TP_TEST_RUN(size_suffix_edges);
	TP_TEST_RUN(size_overflow);
	return TP_TEST_RESULT();
}
