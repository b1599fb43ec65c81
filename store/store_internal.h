/* Private to store/ (and its unit tests): backend constructors, S3 signing. */
#ifndef TP_STORE_INTERNAL_H
#define TP_STORE_INTERNAL_H

#include "tp_store_backend.h"

/* create: make the directory if missing; else a missing one is TP_ENOTFOUND. */
int tp_store_file_open(tp_store **out, const char *url, bool create);
int tp_store_s3_open(tp_store **out, const char *url, tp_store_config_fn config,
		     void *config_ctx);

/* Look up a backend setting; TP_ENOTFOUND when unset. */
int tp_store_config_get(tp_store_config_fn config, void *ctx, const char *key, char **value);

/* ---- AWS Signature V4 ---------------------------------------------------- */

typedef struct tp_s3_header {
	const char *name;  /* lowercase */
	const char *value; /* trimmed */
} tp_s3_header;

typedef struct tp_s3_signer {
	const char *access_key;
	const char *secret_key;
	const char *region;
	const char *service; /* "s3" */
} tp_s3_signer;

typedef struct tp_s3_request_desc {
	const char *method;
	const char *canonical_uri;   /* URI-encoded path, '/' kept */
	const char *canonical_query; /* sorted, encoded "a=1&b=2", or "" */
	const tp_s3_header *headers; /* every header to sign, any order */
	size_t nheaders;
	const char *payload_hash;    /* hex sha256 of the body, or UNSIGNED-PAYLOAD */
	const char *amz_date;        /* 20130524T000000Z */
} tp_s3_request_desc;

/* Append the Authorization header value for request r. */
int tp_s3_sign(const tp_s3_signer *s, const tp_s3_request_desc *r, tp_buf *authorization);
/* Percent-encode s as SigV4 wants (RFC 3986 unreserved kept). */
int tp_s3_uri_encode(tp_buf *out, const char *s, bool keep_slash);

#endif
