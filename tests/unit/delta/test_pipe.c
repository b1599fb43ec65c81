/* The worker pool's ordered stage (tp_pipe_set_ordered): stages run one at
 * a time in job order, each after its job's fn and before the job is done,
 * and a failed job or stage fails every later job without its stage. */
#include "delta_internal.h"
#include "testutil.h"

#include <pthread.h>

enum { JOBS = 300 };

typedef struct ctx {
	size_t window;
	uint64_t job[64];     /* per slot: its job number, set before submit */
	int fn_done[JOBS];    /* fn finished (set by fn) */
	uint64_t staged_next; /* next job the stage expects */
	int order_ok, stage_ran[JOBS], busy;
	uint64_t fail_fn, fail_stage; /* job whose fn or stage fails; JOBS: none */
	pthread_mutex_t mu;
} ctx;

static int job_fn(void *p, size_t slot, unsigned worker)
{
	ctx *c = p;
	uint64_t j = c->job[slot];
	(void)worker;
	/* Uneven work, so that jobs finish out of order. */
	volatile uint64_t x = 0;
	for (uint64_t i = 0; i < (j * 7919 % 13) * 20000; i++)
		x += i;
	pthread_mutex_lock(&c->mu);
	c->fn_done[j] = 1;
	pthread_mutex_unlock(&c->mu);
	return j == c->fail_fn ? tp_error_set(TP_EIO, "job %u failed", (unsigned)j) : 0;
}

static int stage_fn(void *p, size_t slot, unsigned worker)
{
	ctx *c = p;
	uint64_t j = c->job[slot];
	(void)worker;
	/* No lock: only one stage may run at a time (busy checks it). */
	if (__atomic_exchange_n(&c->busy, 1, __ATOMIC_ACQ_REL))
		c->order_ok = 0;
	pthread_mutex_lock(&c->mu);
	if (j != c->staged_next || !c->fn_done[j])
		c->order_ok = 0;
	pthread_mutex_unlock(&c->mu);
	c->staged_next = j + 1;
	c->stage_ran[j] = 1;
	__atomic_store_n(&c->busy, 0, __ATOMIC_RELEASE);
	return j == c->fail_stage ? tp_error_set(TP_EIO, "stage %u failed", (unsigned)j) : 0;
}

/* Submit JOBS jobs through a window of 2 per thread and collect them in
 * order; returns the first job that failed (JOBS when none). */
static uint64_t run(unsigned threads, uint64_t fail_fn, uint64_t fail_stage, ctx *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->mu, NULL);
	c->order_ok = 1;
	c->fail_fn = fail_fn;
	c->fail_stage = fail_stage;
	tp_pipe *p = NULL;
	c->window = 2 * (size_t)threads;
	CHECK(tp_pipe_new(&p, threads, c->window, job_fn, c) == 0);
	if (!p)
		return 0;
	tp_pipe_set_ordered(p, stage_fn);
	uint64_t next = 0, first_bad = JOBS;
	for (uint64_t done = 0; done < JOBS;) {
		if (next < JOBS && next - done < c->window) {
			c->job[next % c->window] = next;
			tp_pipe_submit(p, next++);
			continue;
		}
		int rc = tp_pipe_wait(p, done);
		if (rc == 0) {
			CHECK(c->stage_ran[done]); /* done means staged */
		} else if (first_bad == JOBS) {
			first_bad = done;
			CHECK(rc == TP_EIO && strstr(tp_error_last(), "failed") != NULL);
		}
		if (first_bad != JOBS && done > first_bad) /* every later job fails too */
			CHECK(rc < 0 && !c->stage_ran[done]);
		done++;
	}
	tp_pipe_free(p);
	pthread_mutex_destroy(&c->mu);
	CHECK(c->order_ok);
	return first_bad;
}

static void test_ordered(void)
{
	static ctx c;
	for (unsigned threads = 1; threads <= 4; threads++) {
		CHECK(run(threads, JOBS, JOBS, &c) == JOBS);
		CHECK(c.staged_next == JOBS);
		CHECK(run(threads, 50, JOBS, &c) == 50);
		CHECK(!c.stage_ran[50] && c.stage_ran[49]);
		CHECK(run(threads, JOBS, 70, &c) == 70);
		CHECK(c.stage_ran[70] && !c.stage_ran[71]);
	}
}

int main(void)
{
	TP_TEST_RUN(test_ordered);
	return TP_TEST_RESULT();
}
