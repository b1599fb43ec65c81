/* The ordered worker pool: every job's ordered stage runs once, in job
 * order, after its own fn; failures stop later stages and reach the caller. */
#include "delta_internal.h"
#include "testutil.h"

#include <sched.h>

enum { WINDOW = 5, JOBS = 400 };

typedef struct pctx {
	uint64_t job[WINDOW]; /* job held by each slot */
	bool ran[WINDOW];     /* fn ran for the slot's job */
	uint64_t seen;        /* jobs through the ordered stage, in order */
	uint64_t out_of_order;
	uint64_t before_fn;   /* stages run before their job's fn */
	uint64_t fail_fn, fail_stage; /* job that fails there, or JOBS */
} pctx;

static int fn(void *ctx, size_t slot, unsigned worker)
{
	pctx *c = ctx;
	(void)worker;
	/* Uneven job lengths make later jobs finish first. */
	for (uint64_t i = 0; i < (c->job[slot] * 7919) % 5; i++)
		sched_yield();
	c->ran[slot] = true;
	return c->job[slot] == c->fail_fn ? tp_error_set(TP_ECORRUPT, "fn %llu",
							   (unsigned long long)c->job[slot])
					  : 0;
}

static int stage(void *ctx, size_t slot, unsigned worker)
{
	pctx *c = ctx;
	(void)worker;
	c->out_of_order += c->job[slot] != c->seen;
	c->before_fn += !c->ran[slot];
	c->seen++;
	return c->job[slot] == c->fail_stage ? tp_error_set(TP_EIO, "stage") : 0;
}

/* Runs JOBS jobs; returns the first failing job's rc and sets *at to it. */
static int run(unsigned threads, pctx *c, uint64_t *at)
{
	tp_pipe *p = NULL;
	int rc = tp_pipe_new_ordered(&p, threads, WINDOW, fn, stage, c);
	CHECK(rc == 0);
	if (rc)
		return rc;
	uint64_t next = 0, done = 0;
	*at = JOBS;
	while (done < JOBS) {
		if (next < JOBS && next - done < WINDOW) {
			c->job[next % WINDOW] = next;
			c->ran[next % WINDOW] = false;
			tp_pipe_submit(p, next++);
			continue;
		}
		if ((rc = tp_pipe_wait(p, done)) < 0) {
			*at = done;
			break;
		}
		done++;
	}
	/* Collect what is still in flight, as a caller stopping early may not. */
	tp_pipe_free(p);
	return rc;
}

static void test_order(void)
{
	for (unsigned threads = 0; threads <= 4; threads++) {
		pctx c = { .fail_fn = JOBS, .fail_stage = JOBS };
		uint64_t at;
		CHECK_EQ_INT(run(threads, &c, &at), 0);
		CHECK_EQ_INT(c.seen, JOBS);
		CHECK_EQ_INT(c.out_of_order, 0);
		CHECK_EQ_INT(c.before_fn, 0);
	}
}

static void test_failures(void)
{
	for (unsigned threads = 0; threads <= 3; threads++) {
		pctx c = { .fail_fn = 123, .fail_stage = JOBS };
		uint64_t at;
		CHECK_EQ_INT(run(threads, &c, &at), TP_ECORRUPT);
		CHECK_EQ_INT(at, 123);
		CHECK_STR(tp_error_last(), "fn 123");
		CHECK_EQ_INT(c.seen, 123); /* no stage after the failed job */
		CHECK_EQ_INT(c.out_of_order, 0);

		pctx d = { .fail_fn = JOBS, .fail_stage = 77 };
		CHECK_EQ_INT(run(threads, &d, &at), TP_EIO);
		CHECK_EQ_INT(at, 77);
		CHECK_STR(tp_error_last(), "stage");
		CHECK_EQ_INT(d.seen, 78);
		CHECK_EQ_INT(d.out_of_order, 0);
	}
}

int main(void)
{
	TP_TEST_RUN(test_order);
	TP_TEST_RUN(test_failures);
	return TP_TEST_RESULT();
}
