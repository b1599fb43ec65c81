/* The cgroup cpu.max parser behind tp_cpu_count, and the count itself. */
#include "tp_test.h"
#include "tp_common.h"

static void test_quota_parse(void)
{
	unsigned c = 99;
	CHECK_EQ_INT(tp_cpu_quota_parse("max 100000\n", &c), 0);
	CHECK_EQ_INT(c, 0);
	CHECK_EQ_INT(tp_cpu_quota_parse("200000 100000\n", &c), 0);
	CHECK_EQ_INT(c, 2);
	/* 1.5 CPUs run two threads; a sliver still runs one. */
	CHECK_EQ_INT(tp_cpu_quota_parse("150000 100000", &c), 0);
	CHECK_EQ_INT(c, 2);
	CHECK_EQ_INT(tp_cpu_quota_parse("1000 100000", &c), 0);
	CHECK_EQ_INT(c, 1);
	/* The period defaults to 100 ms when absent (cgroup v1 quota alone). */
	CHECK_EQ_INT(tp_cpu_quota_parse("400000", &c), 0);
	CHECK_EQ_INT(c, 4);
	CHECK_EQ_INT(tp_cpu_quota_parse("", &c), TP_EINVAL);
	CHECK_EQ_INT(tp_cpu_quota_parse("abc 100000", &c), TP_EINVAL);
	CHECK_EQ_INT(tp_cpu_quota_parse("-5 100000", &c), TP_EINVAL);
	CHECK_EQ_INT(tp_cpu_quota_parse("100 0", &c), TP_EINVAL);
	CHECK_EQ_INT(tp_cpu_quota_parse("99999999999999999999 1", &c), 0);
	CHECK_EQ_INT(c, 65536);
}

static void test_count(void)
{
	unsigned n = tp_cpu_count();
	CHECK(n >= 1 && n <= 65536);
}

int main(void)
{
	TP_TEST_RUN(test_quota_parse);
	TP_TEST_RUN(test_count);
	return TP_TEST_RESULT();
}
