/*
 * In-memory backend: keys and values in this process's memory, so that the
 * code above the store (the object layer, the transfer policy) can be
 * tested without a disk or a server. Values live until tp_store_free.
 *
 * Each value is an immutable, reference-counted blob. A put reads its whole
 * source into a new blob before taking the lock and swaps it in, so readers
 * see a whole value or none, as with the other backends. A get holds a
 * reference while it streams and a list walks a copy of the keys, both
 * without the lock: sinks and list callbacks may call back into the store
 * (the object layer's stats do) and other threads may write meanwhile.
 */
#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

/* Reads reach sinks in pieces of this size unless tp_store_mem_set_pieces
 * says otherwise; the same chunk as the file backend's. */
#define MEM_PIECE (1u << 20)

typedef struct mem_blob {
	size_t refs; /* guarded by the store's lock */
	size_t len;
	/* Exactly len bytes, so that a reader running past the end of a
	 * value is caught by AddressSanitizer. */
	unsigned char data[];
} mem_blob;

typedef struct mem_entry {
	char *key;
	mem_blob *blob;
} mem_entry;

typedef struct mem_store {
	tp_store base;
	pthread_mutex_t lock;
	mem_entry *entries; /* sorted by key, for lookups and prefix listings */
	size_t n, alloc;
	size_t first_piece, piece;
} mem_store;

static mem_store *mem_of(tp_store *s)
{
	return (mem_store *)s;
}

/* Where key is, or would be inserted, in the sorted entries; lock held. */
static bool entry_find(const mem_store *m, const char *key, size_t *at)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->entries[mid].key, key);
		if (c == 0) {
			*at = mid;
			return true;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*at = lo;
	return false;
}

/* Drop a reference; lock held. */
static void blob_unref(mem_blob *b)
{
	if (b && --b->refs == 0)
		free(b);
}

static int not_found(const mem_store *m, const char *key)
{
	return tp_error_set(TP_ENOTFOUND, "%s: %s is not in the store", m->base.url, key);
}

static int mem_stat(tp_store *s, const char *key, uint64_t *size)
{
	mem_store *m = mem_of(s);
	size_t at;
	pthread_mutex_lock(&m->lock);
	bool found = entry_find(m, key, &at);
	if (found)
		*size = m->entries[at].blob->len;
	pthread_mutex_unlock(&m->lock);
	return found ? 0 : not_found(m, key);
}

static int mem_get(tp_store *s, const char *key, uint64_t offset, uint64_t len,
		   const tp_store_sink *sink)
{
	mem_store *m = mem_of(s);
	mem_blob *b = NULL;
	size_t at, piece, rest;
	int rc = 0;
	pthread_mutex_lock(&m->lock);
	if (entry_find(m, key, &at)) {
		b = m->entries[at].blob;
		b->refs++;
	}
	piece = m->first_piece;
	rest = m->piece;
	pthread_mutex_unlock(&m->lock);
	if (!b)
		return not_found(m, key);
	/* As a file read: a range past the end gives what there is, maybe nothing. */
	uint64_t end = b->len;
	if (offset < end && len < end - offset)
		end = offset + len;
	for (uint64_t pos = offset; pos < end && !rc;) {
		size_t n = end - pos < piece ? (size_t)(end - pos) : piece;
		rc = sink->write(sink->ctx, b->data + pos, n);
		pos += n;
		piece = rest;
	}
	pthread_mutex_lock(&m->lock);
	blob_unref(b);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* All of src in a new blob of exactly its length. */
static int blob_read(mem_store *m, const char *key, const tp_store_source *src, mem_blob **out)
{
	mem_blob *b = NULL;
	size_t len = 0, alloc = 0;
	int rc = 0;
	for (;;) {
		/* Sources are asked for a whole piece at a time, as backends do. */
		if (alloc - len < MEM_PIECE) {
			size_t want, bytes;
			if (!tp_add_ok(alloc > MEM_PIECE ? alloc : MEM_PIECE, alloc, &want) ||
			    !tp_add_ok(sizeof(*b), want, &bytes)) {
				rc = tp_error_set(TP_ETOOBIG, "%s: value of %s is too large",
						  m->base.url, key);
				break;
			}
			mem_blob *grown = realloc(b, bytes);
			if (!grown) {
				rc = tp_error_set(TP_ENOMEM, "out of memory storing %s", key);
				break;
			}
			b = grown;
			alloc = want;
		}
		size_t got = 0;
		if ((rc = src->read(src->ctx, b->data + len, alloc - len, &got)) != 0)
			break;
		assert(got <= alloc - len);
		if (got == 0)
			break;
		len += got;
	}
	if (rc) {
		free(b);
		return rc;
	}
	mem_blob *exact = realloc(b, sizeof(*b) + len);
	b = exact ? exact : b;
	b->refs = 1;
	b->len = len;
	*out = b;
	return 0;
}

static int mem_put(tp_store *s, const char *key, const tp_store_source *src)
{
	mem_store *m = mem_of(s);
	mem_blob *b = NULL, *old = NULL;
	char *k = NULL;
	size_t at;
	int rc = blob_read(m, key, src, &b);
	if (rc)
		return rc;
	/* Ready before the lock, whether or not the key turns out to be new. */
	if (!(k = strdup(key))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory storing %s", key);
		goto done;
	}
	pthread_mutex_lock(&m->lock);
	if (entry_find(m, key, &at)) {
		old = m->entries[at].blob;
		m->entries[at].blob = b;
		b = NULL;
	} else {
		if (m->n == m->alloc) {
			size_t n = m->alloc ? 2 * m->alloc : 16, bytes;
			mem_entry *grown = tp_mul_ok(n, sizeof(*grown), &bytes)
					   ? realloc(m->entries, bytes) : NULL;
			if (!grown) {
				pthread_mutex_unlock(&m->lock);
				rc = tp_error_set(TP_ENOMEM, "out of memory storing %s", key);
				goto done;
			}
			m->entries = grown;
			m->alloc = n;
		}
		memmove(m->entries + at + 1, m->entries + at, (m->n - at) * sizeof(*m->entries));
		m->entries[at] = (mem_entry){ .key = k, .blob = b };
		m->n++;
		k = NULL;
		b = NULL;
	}
	blob_unref(old);
	pthread_mutex_unlock(&m->lock);
done:
	free(k);
	free(b); /* only set on failure: never shared yet */
	return rc;
}

static int mem_remove(tp_store *s, const char *key)
{
	mem_store *m = mem_of(s);
	char *k = NULL;
	size_t at;
	pthread_mutex_lock(&m->lock);
	if (entry_find(m, key, &at)) {
		k = m->entries[at].key;
		blob_unref(m->entries[at].blob);
		m->n--;
		memmove(m->entries + at, m->entries + at + 1, (m->n - at) * sizeof(*m->entries));
	}
	pthread_mutex_unlock(&m->lock);
	free(k);
	return 0;
}

typedef struct listed {
	size_t key_at; /* offset of the key in the names buffer */
	uint64_t size;
} listed;

static int mem_list(tp_store *s, const char *prefix, tp_store_list_fn fn, void *ctx)
{
	mem_store *m = mem_of(s);
	/* Keys were capped when stored; memory is the only limit here. */
	tp_buf names = TP_BUF_INIT(SIZE_MAX / 2);
	listed *keys = NULL;
	size_t n = 0, at, plen;
	int rc = 0;
	prefix = prefix ? prefix : "";
	plen = strlen(prefix);
	/* A copy, so that fn runs without the lock and may use the store. */
	pthread_mutex_lock(&m->lock);
	entry_find(m, prefix, &at);
	size_t end = at;
	while (end < m->n && strncmp(m->entries[end].key, prefix, plen) == 0)
		end++;
	if (end > at && !(keys = calloc(end - at, sizeof(*keys))))
		rc = tp_error_set(TP_ENOMEM, "out of memory listing %s", m->base.url);
	for (size_t i = at; i < end && !rc; i++, n++) {
		keys[n] = (listed){ .key_at = names.len, .size = m->entries[i].blob->len };
		rc = tp_buf_add(&names, m->entries[i].key, strlen(m->entries[i].key) + 1);
	}
	pthread_mutex_unlock(&m->lock);
	for (size_t i = 0; i < n && !rc; i++)
		rc = fn(ctx, names.ptr + keys[i].key_at, keys[i].size);
	free(keys);
	tp_buf_free(&names);
	return rc;
}

static void mem_free(tp_store *s)
{
	mem_store *m = mem_of(s);
	for (size_t i = 0; i < m->n; i++) {
		free(m->entries[i].key);
		blob_unref(m->entries[i].blob);
	}
	free(m->entries);
	pthread_mutex_destroy(&m->lock);
	free(m->base.url);
	free(m);
}

static const tp_store_backend mem_backend = {
	.version = TP_STORE_BACKEND_VERSION,
	.scheme = "mem",
	.stat = mem_stat,
	.get = mem_get,
	.put = mem_put,
	.remove = mem_remove,
	.list = mem_list,
	.free = mem_free,
};

int tp_store_mem_new(tp_store **out)
{
	mem_store *m = calloc(1, sizeof(*m));
	if (!m)
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (pthread_mutex_init(&m->lock, NULL) != 0) {
		free(m);
		return tp_error_set(TP_ENOMEM, "creating an in-memory store: no lock");
	}
	m->first_piece = m->piece = MEM_PIECE;
	int rc = tp_store_init(&m->base, &mem_backend, "mem://");
	if (rc) {
		mem_free(&m->base);
		return rc;
	}
	*out = &m->base;
	return 0;
}

int tp_store_mem_set_pieces(tp_store *s, size_t first, size_t rest)
{
	if (s->backend != &mem_backend)
		return tp_error_set(TP_EINVAL, "store %s is not an in-memory store", s->url);
	if (first == 0 || rest == 0)
		return tp_error_set(TP_EINVAL, "read pieces must not be empty");
	mem_store *m = mem_of(s);
	pthread_mutex_lock(&m->lock);
	m->first_piece = first;
	m->piece = rest;
	pthread_mutex_unlock(&m->lock);
	return 0;
}
