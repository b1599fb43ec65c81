/* Per-thread errors: saving the first error across cleanup, and carrying
 * it to another thread. */
#include <pthread.h>
#include <string.h>

#include "tp_common.h"
#include "tp_test.h"

/* Cleanup that fails after the first error must not replace it. */
static void test_capture_restore(void)
{
	tp_error_state st;
	int rc = tp_error_set(TP_ENOTFOUND, "s3://b/k: not in the store");
	tp_error_state_capture(&st);
	CHECK_EQ_INT(st.code, TP_ENOTFOUND);
	CHECK_STR(tp_error_last(), "s3://b/k: not in the store"); /* capture leaves it set */
	tp_error_set(TP_EIO, "abort failed");
	CHECK_STR(tp_error_last(), "abort failed");
	CHECK_EQ_INT(tp_error_state_restore(&st), rc);
	CHECK_STR(tp_error_last(), "s3://b/k: not in the store");
	/* The restored code is what the next capture sees. */
	tp_error_state again;
	tp_error_state_capture(&again);
	CHECK_EQ_INT(again.code, TP_ENOTFOUND);
}

/* Every setter records its code, and clearing forgets it. */
static void test_codes(void)
{
	tp_error_state st;
	tp_error_set_errno(TP_EAUTH, 13, "opening %s", "x");
	tp_error_state_capture(&st);
	CHECK_EQ_INT(st.code, TP_EAUTH);
	tp_error_wrap(TP_ECONFIG, "reading config");
	tp_error_state_capture(&st);
	CHECK_EQ_INT(st.code, TP_ECONFIG);
	CHECK(strncmp(st.msg, "reading config: opening x: ", strlen("reading config: opening x: ")) == 0);
	tp_error_clear();
	tp_error_state_capture(&st);
	CHECK_EQ_INT(st.code, 0);
	tp_error_set(TP_EIO, "later");
	CHECK_EQ_INT(tp_error_state_restore(&st), 0);
	CHECK_STR(tp_error_last(), "unknown error");
}

/* A message at the size limit survives the round trip, still terminated. */
static void test_long_message(void)
{
	char big[3 * TP_ERROR_MSG_MAX];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	tp_error_set(TP_ETOOBIG, "%s", big);
	tp_error_state st;
	tp_error_state_capture(&st);
	tp_error_set(TP_EIO, "short");
	tp_error_state_restore(&st);
	CHECK_EQ_INT(strlen(tp_error_last()), TP_ERROR_MSG_MAX - 1);
	/* Even a state whose text fills the array ends at the limit. */
	memset(st.msg, 'y', sizeof(st.msg));
	tp_error_state_restore(&st);
	CHECK_EQ_INT(strlen(tp_error_last()), TP_ERROR_MSG_MAX - 1);
}

static void *worker(void *vst)
{
	tp_error_set(TP_ECORRUPT, "chunk 7: checksum mismatch");
	tp_error_state_capture(vst);
	return NULL;
}

/* Errors are per thread: a worker's error reaches the caller only through
 * a captured state. */
static void test_other_thread(void)
{
	tp_error_state st;
	pthread_t t;
	tp_error_set(TP_EIO, "caller's own");
	CHECK_EQ_INT(pthread_create(&t, NULL, worker, &st), 0);
	pthread_join(t, NULL);
	CHECK_STR(tp_error_last(), "caller's own");
	CHECK_EQ_INT(tp_error_state_restore(&st), TP_ECORRUPT);
	CHECK_STR(tp_error_last(), "chunk 7: checksum mismatch");
}

static void test_secure_zero(void)
{
	unsigned char key[40];
	memset(key, 0xa5, sizeof(key));
	tp_secure_zero(key + 4, 32);
	CHECK_EQ_INT(key[3], 0xa5);
	CHECK_EQ_INT(key[36], 0xa5);
	bool zero = true;
	for (int i = 4; i < 36; i++)
		zero &= key[i] == 0;
	CHECK(zero);
}

int main(void)
{
	TP_TEST_RUN(test_capture_restore);
	TP_TEST_RUN(test_codes);
	TP_TEST_RUN(test_long_message);
	TP_TEST_RUN(test_other_thread);
	TP_TEST_RUN(test_secure_zero);
	return TP_TEST_RESULT();
}
