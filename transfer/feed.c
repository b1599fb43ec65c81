/*
 * A store write fed while the codec codes: the stream goes into the store's
 * put (for a directory store, its temporary file) as it is made, on a thread
 * of its own, instead of into a scratch file copied there afterwards. The
 * put sees the end of its source only when the caller ends the feed with
 * its verdict that the stream is proven; any other end is an error of the
 * source, and a failed put stores nothing.
 */
#include "transfer_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes in flight between the codec and the store: a few frames, so that
 * neither side waits on the other's every write. */
#define FEED_CAP ((size_t)4 << 20)

struct tp_transfer_feed {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned char *buf; /* ring of FEED_CAP bytes: len of them from head */
	size_t head, len;
	int verdict; /* 0 while coding; 1: proven, end the object; -1: drop it */
	bool done;   /* the put returned, with rc (and err) */
	int rc;
	char err[TP_ERROR_MSG_MAX];
	pthread_t thread;
	tp_store *store;
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	tp_store_kind kind;
	char *manifest;
};

/* The put's source, on the feed's thread. */
static int feed_read(void *ctx, void *buf, size_t cap, size_t *got)
{
	tp_transfer_feed *f = ctx;
	pthread_mutex_lock(&f->mu);
	while (f->len == 0 && f->verdict == 0)
		pthread_cond_wait(&f->cv, &f->mu);
	size_t n = 0;
	while (n < cap && f->len) {
		size_t k = FEED_CAP - f->head < f->len ? FEED_CAP - f->head : f->len;
		if (k > cap - n)
			k = cap - n;
		memcpy((unsigned char *)buf + n, f->buf + f->head, k);
		f->head = (f->head + k) % FEED_CAP;
		f->len -= k;
		n += k;
	}
	int verdict = f->verdict;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	*got = n;
	if (n == 0 && verdict < 0)
		return tp_error_set(TP_ECORRUPT, "object %s: its stream was not proven; not storing it",
				    f->oid);
	return 0;
}

static void *feed_main(void *arg)
{
	tp_transfer_feed *f = arg;
	tp_store_source src = { feed_read, f };
	int rc = tp_store_object_put_delta_stream(f->store, f->oid, f->size, f->kind, f->manifest,
						  &src);
	pthread_mutex_lock(&f->mu);
	f->rc = rc;
	if (rc) /* errors are per thread: the caller's thread reports it */
		snprintf(f->err, sizeof(f->err), "%s", tp_error_last());
	f->done = true;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

static void feed_free(tp_transfer_feed *f)
{
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->mu);
	free(f->buf);
	free(f->manifest);
	free(f);
}

int tp_transfer_feed_start(tp_transfer_feed **out, tp_store *store, const char *oid,
			   uint64_t size, tp_store_kind kind, char *manifest)
{
	tp_transfer_feed *f = calloc(1, sizeof(*f));
	if (!f) {
		free(manifest);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	f->manifest = manifest;
	f->store = store;
	f->size = size;
	f->kind = kind;
	snprintf(f->oid, sizeof(f->oid), "%s", oid);
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	if (!(f->buf = malloc(FEED_CAP))) {
		feed_free(f);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	if (pthread_create(&f->thread, NULL, feed_main, f) != 0) {
		feed_free(f);
		return tp_error_set(TP_ENOMEM, "object %s: cannot start a thread to store it", oid);
	}
	*out = f;
	return 0;
}

int tp_transfer_feed_write(tp_transfer_feed *f, const void *data, size_t n)
{
	const unsigned char *p = data;
	int rc = 0;
	pthread_mutex_lock(&f->mu);
	while (n && !f->done) {
		if (f->len == FEED_CAP) {
			pthread_cond_wait(&f->cv, &f->mu);
			continue;
		}
		size_t tail = (f->head + f->len) % FEED_CAP;
		size_t k = tail >= f->head ? FEED_CAP - tail : f->head - tail;
		if (k > n)
			k = n;
		memcpy(f->buf + tail, p, k);
		f->len += k;
		p += k;
		n -= k;
		pthread_cond_broadcast(&f->cv);
	}
	/* The put ended before its source did: it failed. */
	if (n && f->done)
		rc = tp_error_set(f->rc ? f->rc : TP_EIO, "%s", f->rc ? f->err : "store write ended early");
	pthread_mutex_unlock(&f->mu);
	return rc;
}

int tp_transfer_feed_finish(tp_transfer_feed *f, bool proven)
{
	if (!f)
		return 0;
	pthread_mutex_lock(&f->mu);
	f->verdict = proven ? 1 : -1;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->thread, NULL);
	int rc = proven && f->rc ? tp_error_set(f->rc, "%s", f->err) : 0;
	feed_free(f);
	return rc;
}
