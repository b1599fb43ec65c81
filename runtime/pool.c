/* A small persistent thread pool: parallel loops over task indices.
 *
 * A prefill runs a few hundred short loops (each linear layer, attention,
 * the per-token steps), so waking the workers must cost little: a worker
 * that has just finished a loop spins a while on the generation counter
 * before it sleeps on the condition variable, and the caller spins a while
 * for the workers to finish before it sleeps. Each spin adapts: after a
 * wait that ended in sleep the next spin is half as long, after one that
 * ended in time it doubles, up to POOL_SPIN. So an idle pool sleeps, and when
 * other processes hold the cores (the other thread is not running, spinning
 * only burns the share the scheduler gives us) the spins shrink away. */
#include "tp_runtime.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define POOL_MAX_THREADS 256
/* Pause iterations before sleeping: some tens of microseconds, longer than
 * the gap between two loops of a prefill or a decode step. Measured on the
 * 2-core bench machine (q8_0 100M Llama, 2 threads, tp-kernel-bench speed):
 * 256, 1024 and 4096 gave prefill 1824, 1907, 1900 tok/s against 1641
 * without spinning; 4096 hurt most when other processes held the cores. */
#define POOL_SPIN 1024
#define POOL_SPIN_MIN 16

/* The next spin length after one of spin iterations ended in time or not. */
static unsigned spin_next(unsigned spin, bool in_time)
{
	if (in_time)
		return spin * 2 < POOL_SPIN ? spin * 2 : POOL_SPIN;
	return spin / 2 > POOL_SPIN_MIN ? spin / 2 : POOL_SPIN_MIN;
}

struct tp_pool {
	unsigned nthreads; /* including the caller */
	pthread_t *threads;
	pthread_mutex_t mu;
	pthread_cond_t wake, idle;
	atomic_ulong generation; /* bumped per tp_pool_run, after the loop is set */
	atomic_uint busy;        /* workers still inside the current run */
	atomic_bool stop;
	unsigned spin; /* the caller's current spin length */
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

static bool woken(tp_pool *p, unsigned long seen)
{
	return atomic_load_explicit(&p->stop, memory_order_acquire) ||
	       atomic_load_explicit(&p->generation, memory_order_acquire) != seen;
}

static void *worker(void *arg)
{
	tp_pool *p = arg;
	unsigned long seen = 0;
	unsigned spin = POOL_SPIN;
	for (;;) {
		for (unsigned s = 0; s < spin && !woken(p, seen); s++)
			CPU_RELAX();
		bool in_time = woken(p, seen);
		spin = spin_next(spin, in_time);
		if (!in_time) {
			pthread_mutex_lock(&p->mu);
			while (!woken(p, seen))
				pthread_cond_wait(&p->wake, &p->mu);
			pthread_mutex_unlock(&p->mu);
		}
		if (atomic_load_explicit(&p->stop, memory_order_acquire))
			break;
		seen = atomic_load_explicit(&p->generation, memory_order_acquire);
		drain(p);
		if (atomic_fetch_sub_explicit(&p->busy, 1, memory_order_acq_rel) == 1) {
			/* Under the mutex, so a caller between its check and its
			 * wait cannot miss the signal. */
			pthread_mutex_lock(&p->mu);
			pthread_cond_signal(&p->idle);
			pthread_mutex_unlock(&p->mu);
		}
	}
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
	p->spin = POOL_SPIN;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->idle, NULL);
	atomic_init(&p->generation, 0);
	atomic_init(&p->busy, 0);
	atomic_init(&p->stop, false);
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
	atomic_store_explicit(&p->stop, true, memory_order_release);
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
	/* No worker is inside a run here (the last one waited for busy == 0),
	 * so the loop's fields can be written before the generation bump
	 * publishes them. */
	p->fn = fn;
	p->ctx = ctx;
	p->n = n;
	atomic_store_explicit(&p->next, 0, memory_order_relaxed);
	atomic_store_explicit(&p->busy, p->nthreads - 1, memory_order_relaxed);
	pthread_mutex_lock(&p->mu);
	atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	drain(p);
	for (unsigned s = 0; s < p->spin && atomic_load_explicit(&p->busy, memory_order_acquire);
	     s++)
		CPU_RELAX();
	bool in_time = atomic_load_explicit(&p->busy, memory_order_acquire) == 0;
	p->spin = spin_next(p->spin, in_time);
	if (!in_time) {
		pthread_mutex_lock(&p->mu);
		while (atomic_load_explicit(&p->busy, memory_order_acquire))
			pthread_cond_wait(&p->idle, &p->mu);
		pthread_mutex_unlock(&p->mu);
	}
}
