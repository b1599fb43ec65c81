/* A small persistent thread pool: parallel loops over task indices. */
#include "tp_runtime.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define POOL_MAX_THREADS 256

struct tp_pool {
	unsigned nthreads; /* including the caller */
	pthread_t *threads;
	pthread_mutex_t mu;
	pthread_cond_t wake, idle;
	unsigned long generation; /* bumped per tp_pool_run */
	unsigned busy;            /* workers still inside the current run */
	bool stop;
	/* the current loop */
	tp_pool_fn fn;
	void *ctx;
	size_t n;
	atomic_size_t next;
};

/* Claim and run tasks until none is left. */
static void drain(tp_pool *p)
{
	size_t i;
	while ((i = atomic_fetch_add(&p->next, 1)) < p->n)
		p->fn(p->ctx, i, p->n);
}

static void *worker(void *arg)
{
	tp_pool *p = arg;
	unsigned long seen = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && p->generation == seen)
			pthread_cond_wait(&p->wake, &p->mu);
		if (p->stop)
			break;
		seen = p->generation;
		pthread_mutex_unlock(&p->mu);
		drain(p);
		pthread_mutex_lock(&p->mu);
		if (--p->busy == 0)
			pthread_cond_signal(&p->idle);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int tp_pool_new(tp_pool **out, unsigned threads)
{
	if (threads == 0)
		threads = tp_cpu_count();
	if (threads > POOL_MAX_THREADS)
		threads = POOL_MAX_THREADS;
	tp_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return tp_error_set(TP_ENOMEM, "out of memory");
	p->nthreads = 1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->idle, NULL);
	atomic_init(&p->next, 0);
	if (threads > 1 && !(p->threads = calloc(threads - 1, sizeof(pthread_t)))) {
		tp_pool_free(p);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	for (unsigned i = 1; i < threads; i++) {
		int err = pthread_create(&p->threads[i - 1], NULL, worker, p);
		if (err) {
			tp_pool_free(p);
			return tp_error_set_errno(TP_EIO, err, "starting a worker thread");
		}
		p->nthreads++;
	}
	*out = p;
	return 0;
}

void tp_pool_free(tp_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 1; i < p->nthreads; i++)
		pthread_join(p->threads[i - 1], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->idle);
	free(p->threads);
	free(p);
}

unsigned tp_pool_threads(const tp_pool *p)
{
	return p ? p->nthreads : 1;
}

void tp_pool_run(tp_pool *p, size_t n, tp_pool_fn fn, void *ctx)
{
	if (!p || p->nthreads == 1 || n <= 1) {
		for (size_t i = 0; i < n; i++)
			fn(ctx, i, n);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->ctx = ctx;
	p->n = n;
	atomic_store(&p->next, 0);
	p->busy = p->nthreads - 1;
	p->generation++;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	drain(p);
	pthread_mutex_lock(&p->mu);
	while (p->busy)
		pthread_cond_wait(&p->idle, &p->mu);
	pthread_mutex_unlock(&p->mu);
}
