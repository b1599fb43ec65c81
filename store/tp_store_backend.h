/*
 * tenpak store backends: what a storage backend implements.
 *
 * Contract:
 * - A backend is a const tp_store_backend (a table of operations) and a
 *   struct that embeds tp_store as its first member. Its constructor fills
 *   the struct and calls tp_store_init, which refuses a table written for
 *   another TP_STORE_BACKEND_VERSION or missing an operation: a mismatch
 *   is an error at open, never a call through the wrong slot.
 * - Tables are initialised by field name (.stat = ..., never by position),
 *   with .version = TP_STORE_BACKEND_VERSION.
 * - Operations get keys already checked by tp_store_key_valid and follow
 *   the comments below; each returns 0 or a negative TP_E* code with a
 *   message (tp_error_set) naming the key and the store's URL. A non-zero
 *   return of a source, sink or list callback ends the operation and is
 *   returned as is.
 * - The version changes whenever a field is added, removed or changes
 *   meaning; backends built against the old header are then refused.
 * Users of stores need only tp_store.h.
 */
#ifndef TP_STORE_BACKEND_H
#define TP_STORE_BACKEND_H

#include "tp_store.h"

/* The interface this header describes. */
#define TP_STORE_BACKEND_VERSION 1

typedef struct tp_store_backend {
	/* TP_STORE_BACKEND_VERSION of the header the backend was built with;
	 * first, so that it is found whatever else changes. */
	unsigned version;
	/* URL scheme or a short name, for messages ("file", "s3", "mem"). */
	const char *scheme;
	/* Size of the stored bytes; TP_ENOTFOUND when absent. */
	int (*stat)(tp_store *s, const char *key, uint64_t *size);
	/* Stream bytes [offset, offset+len) to sink; len == UINT64_MAX: to
	 * end. A range past the end gives the bytes there are, maybe none;
	 * TP_ENOTFOUND when key is absent. */
	int (*get)(tp_store *s, const char *key, uint64_t offset, uint64_t len,
		   const tp_store_sink *sink);
	/* Store all of src under key, atomically replacing any old value: a
	 * reader sees the old value or the new one, and a failed put (the
	 * source's error included) leaves the old one. */
	int (*put)(tp_store *s, const char *key, const tp_store_source *src);
	/* Delete key; absent keys are not an error. */
	int (*remove)(tp_store *s, const char *key);
	/* Visit every key starting with prefix ("" or NULL: all), in no
	 * particular order. */
	int (*list)(tp_store *s, const char *prefix, tp_store_list_fn fn, void *ctx);
	/* Release everything, url included; s may be only partly built (as
	 * left by a failed constructor, after tp_store_init or not). */
	void (*free)(tp_store *s);
} tp_store_backend;

/* The part of every store the store layer uses; backends embed it first. */
struct tp_store {
	const tp_store_backend *backend;
	char *url; /* malloc'd by tp_store_init; for messages, never a secret */
};

/* Make s a store of backend b opened as url (copied). TP_EINVAL, with a
 * message naming the backend, when b was built for another interface
 * version or lacks an operation; s is then left as it was. */
int tp_store_init(tp_store *s, const tp_store_backend *b, const char *url);

#endif
