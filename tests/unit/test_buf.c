/*
 * tp_buf_addf_cut: text past the cap is cut between UTF-8 sequences and
 * marked with "...", never an error; later additions do not extend it.
 * And growth itself, with any cap.
 */
#include "tp_common.h"
#include "tp_test.h"

#include <stdlib.h>
#include <string.h>

static void fits(void)
{
	tp_buf b = TP_BUF_INIT(16);
	CHECK_EQ_INT(tp_buf_addf_cut(&b, "%s-%d", "abc", 42), 0);
	CHECK_STR(b.ptr, "abc-42");
	CHECK_EQ_INT(tp_buf_addf_cut(&b, "%s", "0123456789"), 0);
	CHECK_STR(b.ptr, "abc-420123456789"); /* exactly the cap */
	tp_buf_free(&b);
}

static void cut(void)
{
	tp_buf b = TP_BUF_INIT(10);
	CHECK_EQ_INT(tp_buf_addf_cut(&b, "%s", "abcdefghijklmnop"), 0);
	CHECK_STR(b.ptr, "abcdefg...");
	CHECK_EQ_INT(b.len, 10);
	/* Full and already cut: nothing changes. */
	CHECK_EQ_INT(tp_buf_addf_cut(&b, "%s", "more"), 0);
	CHECK_STR(b.ptr, "abcdefg...");
	tp_buf_free(&b);

	/* Full without a mark: the next addition marks it. */
	tp_buf c = TP_BUF_INIT(8);
	CHECK_EQ_INT(tp_buf_addf_cut(&c, "%s", "abcdefgh"), 0);
	CHECK_EQ_INT(tp_buf_addf_cut(&c, "%s", "x"), 0);
	CHECK_STR(c.ptr, "abcde...");
	tp_buf_free(&c);

	/* Some room left: what fits, then the mark. */
	tp_buf d = TP_BUF_INIT(12);
	CHECK_EQ_INT(tp_buf_addf_cut(&d, "%s", "head; "), 0);
	CHECK_EQ_INT(tp_buf_addf_cut(&d, "%s", "a long tail"), 0);
	CHECK_STR(d.ptr, "head; a l...");
	tp_buf_free(&d);
}

static void utf8(void)
{
	/* "é" is two bytes: a cut never leaves half of it. */
	tp_buf b = TP_BUF_INIT(8);
	CHECK_EQ_INT(tp_buf_addf_cut(&b, "%s", "abcd\xc3\xa9\xc3\xa9\xc3\xa9"), 0);
	CHECK_STR(b.ptr, "abcd...");
	tp_buf_free(&b);
}

static void plain_addf_refuses(void)
{
	/* The contrast: tp_buf_addf fails on the same input. */
	tp_buf b = TP_BUF_INIT(10);
	CHECK_EQ_INT(tp_buf_addf(&b, "%s", "abcdefghijklmnop"), TP_ETOOBIG);
	tp_buf_free(&b);
}

/* An unbounded buffer (cap SIZE_MAX) grows like any other: cap + 1 must
 * not wrap to an allocation of 0 bytes. */
static void unbounded(void)
{
	tp_buf b = TP_BUF_INIT(SIZE_MAX);
	for (int i = 0; i < 100; i++)
		CHECK_EQ_INT(tp_buf_adds(&b, "0123456789"), 0);
	CHECK_EQ_INT(b.len, 1000);
	CHECK(b.alloc > 1000);
	CHECK_EQ_INT(b.ptr[999], '9');
	tp_buf_free(&b);
}

int main(void)
{
	TP_TEST_RUN(fits);
	TP_TEST_RUN(cut);
	TP_TEST_RUN(utf8);
	TP_TEST_RUN(plain_addf_refuses);
	TP_TEST_RUN(unbounded);
	return TP_TEST_RESULT();
}
