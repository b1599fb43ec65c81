/*
 * tp_array: typed pushes, doubling growth, the cap, overflow and failed
 * allocations leave the array as it was.
 */
#include "tp_array.h"
#include "tp_test.h"

#include <string.h>

/* A failed giant allocation must return NULL under the sanitizer too. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}

typedef struct pair {
	uint64_t a, b;
} pair;

static void pushes_and_grows(void)
{
	tp_array(int) v = TP_ARRAY_INIT(SIZE_MAX);
	size_t reallocs = 0, last_alloc = 0;
	for (int i = 0; i < 1000; i++) {
		CHECK_EQ_INT(tp_array_push(&v, i * 3), 0);
		if (v.alloc != last_alloc) {
			reallocs++;
			CHECK(last_alloc == 0 || v.alloc == 2 * last_alloc);
			last_alloc = v.alloc;
		}
	}
	CHECK_EQ_INT(v.len, 1000);
	CHECK(reallocs <= 8); /* 8, 16, ... 1024 */
	bool same = true;
	for (size_t i = 0; i < v.len; i++)
		same &= v.ptr[i] == (int)i * 3;
	CHECK(same);
	tp_array_clear(&v);
	CHECK(v.ptr == NULL && v.len == 0 && v.alloc == 0 && v.cap == SIZE_MAX);
}

static void structs(void)
{
	tp_array(pair) v = TP_ARRAY_INIT(100);
	CHECK_EQ_INT(tp_array_push(&v, ((pair){ 1, 2 })), 0);
	pair p = { 3, 4 };
	CHECK_EQ_INT(tp_array_push(&v, p), 0);
	CHECK(v.len == 2 && v.ptr[0].b == 2 && v.ptr[1].a == 3);
	tp_array_clear(&v);
}

static void cap_is_kept(void)
{
	tp_array(char *) v = TP_ARRAY_INIT(5);
	char s[] = "x";
	for (int i = 0; i < 5; i++)
		CHECK_EQ_INT(tp_array_push(&v, s), 0);
	CHECK_EQ_INT(v.alloc, 5); /* never allocated past the cap */
	char *before = (char *)v.ptr;
	CHECK_EQ_INT(tp_array_push(&v, s), TP_ETOOBIG);
	CHECK(strstr(tp_error_last(), "5-element limit") != NULL);
	CHECK(v.len == 5 && (char *)v.ptr == before && v.ptr[4] == s);
	CHECK_EQ_INT(tp_array_reserve(&v, 0), 0);
	tp_array_clear(&v);

	tp_array(int) z = TP_ARRAY_INIT(0);
	CHECK_EQ_INT(tp_array_push(&z, 1), TP_ETOOBIG);
	CHECK(z.ptr == NULL && z.len == 0);
}

static void overflow(void)
{
	tp_array(pair) v = TP_ARRAY_INIT(SIZE_MAX);
	CHECK_EQ_INT(tp_array_push(&v, ((pair){ 5, 6 })), 0);
	CHECK_EQ_INT(tp_array_push(&v, ((pair){ 7, 8 })), 0);
	/* len + n and n * sizeof(pair) would both wrap. */
	CHECK_EQ_INT(tp_array_reserve(&v, SIZE_MAX), TP_ETOOBIG);
	CHECK_EQ_INT(tp_array_reserve(&v, SIZE_MAX - 1), TP_ETOOBIG);
	CHECK_EQ_INT(tp_array_reserve(&v, SIZE_MAX / sizeof(pair)), TP_ETOOBIG);
	CHECK(v.len == 2 && v.alloc == 8 && v.ptr[1].b == 8);
	/* Within what size_t can count, but not what memory can hold. */
	CHECK_EQ_INT(tp_array_reserve(&v, SIZE_MAX / sizeof(pair) / 2), TP_ENOMEM);
	CHECK(v.len == 2 && v.alloc == 8 && v.ptr[0].a == 5);
	tp_array_clear(&v);
}

int main(void)
{
	TP_TEST_RUN(pushes_and_grows);
	TP_TEST_RUN(structs);
	TP_TEST_RUN(cap_is_kept);
	TP_TEST_RUN(overflow);
	return TP_TEST_RESULT();
}
