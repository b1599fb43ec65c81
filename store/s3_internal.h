/* Private to store/s3*.c: the S3 backend's state. */
#ifndef TP_S3_INTERNAL_H
#define TP_S3_INTERNAL_H

#include <curl/curl.h>

#include "store_internal.h"

#define MiB (UINT64_C(1) << 20)
#define DEFAULT_PART_SIZE (64 * MiB)
#define MIN_PART_SIZE (5 * MiB) /* S3's own minimum for all but the last part */
#define MAX_PART_SIZE (5 * 1024 * MiB)
#define MAX_PARTS 10000
#define DEFAULT_PARALLEL 2
#define DEFAULT_RETRIES 5
#define DEFAULT_TIMEOUT_S 60
#define RESPONSE_CAP (1u << 20) /* XML listings and error bodies */

typedef struct s3_store {
	tp_store base;
	char *bucket;
	char *prefix;    /* "" or "dir/sub/" */
	char *base_url;  /* scheme://host[:port] requests go to */
	char *host;      /* Host header, signed */
	char *path_base; /* "/bucket" (path style) or "" (virtual-hosted) */
	char *region;
	char *access_key;
	char *secret_key;
	char *session_token;
	uint64_t part_size;
	int parallel;
	int retries;
	long timeout_s;
	CURL *curl; /* the caller's thread; part uploads use their own */
} s3_store;

/* First retry wait in seconds (0.2), doubling after. Only unit tests change
 * it, before opening a store, so retries cost milliseconds there. */
extern double tp_s3_backoff_base_s;

extern const tp_store_backend tp_s3_backend;
/* Frees everything s may hold, for a half-built store too. */
void tp_s3_free(tp_store *s);
/* Wipe a NUL-terminated secret (key, token) and free it; NULL is fine. */
void tp_s3_secret_free(char *secret);

#endif
