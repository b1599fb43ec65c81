/* A bounded pool of worker threads processing numbered jobs, collected by
 * the caller in submission order. At most `window` jobs are in flight, which
 * bounds memory to window chunk buffers. */
#include "delta_internal.h"

#include <pthread.h>
#include <stdlib.h>

struct tp_pipe {
	pthread_mutex_t mu;
	pthread_cond_t work_cv, done_cv;
	pthread_t *threads;
	unsigned nthreads;
	size_t window;
	tp_pipe_fn fn;
	tp_pipe_fn ordered; /* NULL: none */
	void *ctx;
	uint64_t submitted, taken;
	uint64_t *ran;    /* per slot: job number + 1 when fn returned (ordered pipes) */
	uint64_t *done;   /* per slot: job number + 1 when finished */
	int *rc;          /* per slot */
	tp_error_state *err; /* per slot: a failed job's error, made on its thread */
	uint64_t turn;    /* next job whose ordered stage may run */
	bool turn_failed; /* a job's fn or ordered stage failed */
	bool ordering;    /* a worker is running ordered stages */
	bool stop;
	bool inited; /* mutex and condition variables */
};

unsigned tp_delta_default_threads(void)
{
	unsigned n = tp_cpu_count();
	return n > 256 ? 256 : n;
}

/* Called with the lock held by a worker whose job just ran: unless another
 * worker is at it already, run the ordered stage of every job that is next
 * in order and has run, so no worker ever sleeps waiting for its turn. A job
 * whose fn failed skips the stage, and so do all later ones. */
static void run_ordered(tp_pipe *p, unsigned id)
{
	if (p->ordering)
		return;
	p->ordering = true;
	for (;;) {
		size_t slot = (size_t)(p->turn % p->window);
		if (p->ran[slot] != p->turn + 1)
			break;
		if (p->rc[slot] < 0) {
			p->turn_failed = true;
		} else if (!p->turn_failed) {
			pthread_mutex_unlock(&p->mu);
			int rc = p->ordered(p->ctx, slot, id);
			if (rc < 0)
				tp_error_state_capture(&p->err[slot]);
			pthread_mutex_lock(&p->mu);
			p->rc[slot] = rc;
			p->turn_failed = rc < 0;
		}
		p->done[slot] = p->turn + 1;
		p->turn++;
		pthread_cond_broadcast(&p->done_cv);
	}
	p->ordering = false;
}

static void *worker_main(void *arg)
{
	tp_pipe *p = arg;
	pthread_mutex_lock(&p->mu);
	unsigned id = 0;
	/* Worker ids index per-worker scratch; hand them out in start order. */
	while (!pthread_equal(p->threads[id], pthread_self()))
		id++;
	for (;;) {
		while (!p->stop && p->taken == p->submitted)
			pthread_cond_wait(&p->work_cv, &p->mu);
		if (p->stop)
			break;
		uint64_t job = p->taken++;
		pthread_mutex_unlock(&p->mu);
		size_t slot = (size_t)(job % p->window);
		int rc = p->fn(p->ctx, slot, id);
		if (rc < 0) /* errors are per thread: carry it to the caller */
			tp_error_state_capture(&p->err[slot]);
		pthread_mutex_lock(&p->mu);
		p->rc[slot] = rc;
		if (p->ordered) {
			p->ran[slot] = job + 1;
			run_ordered(p, id);
		} else {
			p->done[slot] = job + 1;
		}
		pthread_cond_broadcast(&p->done_cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static int pipe_make(tp_pipe **out, unsigned threads, size_t window, tp_pipe_fn fn,
		     tp_pipe_fn ordered, void *ctx)
{
	tp_pipe *p = calloc(1, sizeof(*p));
	if (!p)
		return tp_error_set(TP_ENOMEM, "out of memory");
	p->window = window ? window : 1;
	p->fn = fn;
	p->ordered = ordered;
	p->ctx = ctx;
	p->ran = calloc(p->window, sizeof(*p->ran));
	p->done = calloc(p->window, sizeof(*p->done));
	p->rc = calloc(p->window, sizeof(*p->rc));
	p->err = calloc(p->window, sizeof(*p->err));
	p->threads = calloc(threads ? threads : 1, sizeof(*p->threads));
	if (!p->ran || !p->done || !p->rc || !p->err || !p->threads) {
		tp_pipe_free(p);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work_cv, NULL);
	pthread_cond_init(&p->done_cv, NULL);
	p->inited = true;
	if (threads > 0) {
		/* Hold the lock so workers see every pthread_t before looking up their id. */
		pthread_mutex_lock(&p->mu);
		for (unsigned i = 0; i < threads; i++) {
			if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0)
				break;
			p->nthreads++;
		}
		pthread_mutex_unlock(&p->mu);
		if (p->nthreads < threads) {
			tp_pipe_free(p);
			return tp_error_set(TP_EIO, "cannot start worker threads");
		}
	}
	*out = p;
	return 0;
}

int tp_pipe_new(tp_pipe **out, unsigned threads, size_t window, tp_pipe_fn fn, void *ctx)
{
	return pipe_make(out, threads > 1 ? threads : 0, window, fn, NULL, ctx);
}

int tp_pipe_new_ordered(tp_pipe **out, unsigned threads, size_t window, tp_pipe_fn fn,
			tp_pipe_fn ordered, void *ctx)
{
	return pipe_make(out, threads, window, fn, ordered, ctx);
}

unsigned tp_pipe_workers(const tp_pipe *p)
{
	return p->nthreads ? p->nthreads : 1;
}

size_t tp_pipe_window(const tp_pipe *p)
{
	return p->window;
}

void tp_pipe_submit(tp_pipe *p, uint64_t job)
{
	size_t slot = (size_t)(job % p->window);
	if (!p->nthreads) {
		int rc = p->fn(p->ctx, slot, 0);
		if (p->ordered && rc == 0 && !p->turn_failed)
			rc = p->ordered(p->ctx, slot, 0);
		p->turn_failed |= rc < 0;
		p->rc[slot] = rc;
		p->done[slot] = job + 1;
		p->submitted = job + 1;
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->submitted = job + 1;
	pthread_cond_signal(&p->work_cv);
	pthread_mutex_unlock(&p->mu);
}

int tp_pipe_wait(tp_pipe *p, uint64_t job)
{
	size_t slot = (size_t)(job % p->window);
	pthread_mutex_lock(&p->mu);
	while (p->done[slot] != job + 1)
		pthread_cond_wait(&p->done_cv, &p->mu);
	int rc = p->rc[slot];
	pthread_mutex_unlock(&p->mu);
	if (rc < 0 && p->nthreads)
		tp_error_state_restore(&p->err[slot]);
	return rc;
}

void tp_pipe_free(tp_pipe *p)
{
	if (!p)
		return;
	if (p->nthreads) {
		pthread_mutex_lock(&p->mu);
		p->stop = true;
		pthread_cond_broadcast(&p->work_cv);
		pthread_mutex_unlock(&p->mu);
		for (unsigned i = 0; i < p->nthreads; i++)
			pthread_join(p->threads[i], NULL);
	}
	if (p->inited) {
		pthread_mutex_destroy(&p->mu);
		pthread_cond_destroy(&p->work_cv);
		pthread_cond_destroy(&p->done_cv);
	}
	free(p->threads);
	free(p->ran);
	free(p->done);
	free(p->rc);
	free(p->err);
	free(p);
}
