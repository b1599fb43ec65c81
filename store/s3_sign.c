/*
 * AWS Signature Version 4 for S3 requests (header-based authorization).
 * Pure string and hash work, no I/O, so it is unit-tested against AWS's
 * published examples.
 */
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

int tp_s3_uri_encode(tp_buf *out, const char *s, bool keep_slash)
{
	int rc = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p && !rc; p++) {
		if (unreserved(*p) || (keep_slash && *p == '/'))
			rc = tp_buf_add(out, p, 1);
		else
			rc = tp_buf_addf(out, "%%%02X", *p);
	}
	return rc;
}

static int cmp_header(const void *a, const void *b)
{
	return strcmp(((const tp_s3_header *)a)->name, ((const tp_s3_header *)b)->name);
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request"). */
static void signing_key(const tp_s3_signer *s, const char *date8, unsigned char key[TP_SHA256_LEN])
{
	size_t slen = strlen(s->secret_key);
	char *k0 = malloc(slen + 5);
	if (!k0) {
		memset(key, 0, TP_SHA256_LEN);
		return;
	}
	memcpy(k0, "AWS4", 4);
	memcpy(k0 + 4, s->secret_key, slen + 1);
	tp_hmac_sha256(k0, slen + 4, date8, 8, key);
	tp_secure_zero(k0, slen + 5); /* the secret does not linger in freed memory */
	free(k0);
	tp_hmac_sha256(key, TP_SHA256_LEN, s->region, strlen(s->region), key);
	tp_hmac_sha256(key, TP_SHA256_LEN, s->service, strlen(s->service), key);
	tp_hmac_sha256(key, TP_SHA256_LEN, "aws4_request", 12, key);
}

int tp_s3_sign(const tp_s3_signer *s, const tp_s3_request_desc *r, tp_buf *authorization)
{
	tp_buf canon = TP_BUF_INIT(1 << 20), signed_names = TP_BUF_INIT(4096),
	       sts = TP_BUF_INIT(4096);
	tp_s3_header *hs = NULL;
	int rc = 0;
	if (strlen(r->amz_date) != 16) {
		rc = tp_error_set(TP_EINVAL, "x-amz-date must look like 20130524T000000Z");
		goto done;
	}
	hs = malloc((r->nheaders ? r->nheaders : 1) * sizeof(*hs));
	if (!hs) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	memcpy(hs, r->headers, r->nheaders * sizeof(*hs));
	qsort(hs, r->nheaders, sizeof(*hs), cmp_header);

	/* The canonical request holds the session token: sized once up front so
	 * no reallocation leaves a copy in freed memory, and wiped at the end. */
	size_t need = strlen(r->method) + strlen(r->canonical_uri) + strlen(r->payload_hash) + 8 +
		      (r->canonical_query ? strlen(r->canonical_query) : 0);
	for (size_t i = 0; i < r->nheaders; i++)
		need += 2 * strlen(hs[i].name) + strlen(hs[i].value) + 3;
	if (need > canon.cap)
		need = canon.cap;
	if ((rc = tp_buf_addf(&canon, "%*s", (int)need, "")) != 0)
		goto done;
	tp_buf_reset(&canon);

	rc = tp_buf_addf(&canon, "%s\n%s\n%s\n", r->method, r->canonical_uri,
			 r->canonical_query ? r->canonical_query : "");
	for (size_t i = 0; !rc && i < r->nheaders; i++) {
		rc = tp_buf_addf(&canon, "%s:%s\n", hs[i].name, hs[i].value);
		if (!rc)
			rc = tp_buf_addf(&signed_names, "%s%s", i ? ";" : "", hs[i].name);
	}
	if (!rc)
		rc = tp_buf_addf(&canon, "\n%s\n%s", signed_names.ptr ? signed_names.ptr : "",
				 r->payload_hash);
	if (rc)
		goto done;

	char canon_hash[TP_OID_HEXLEN + 1];
	tp_sha256_hex_of(canon.ptr, canon.len, canon_hash);
	char date8[9];
	memcpy(date8, r->amz_date, 8);
	date8[8] = '\0';
	rc = tp_buf_addf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", r->amz_date,
			 date8, s->region, s->service, canon_hash);
	if (rc)
		goto done;

	unsigned char key[TP_SHA256_LEN], sig[TP_SHA256_LEN];
	char sig_hex[TP_OID_HEXLEN + 1];
	signing_key(s, date8, key);
	tp_hmac_sha256(key, sizeof(key), sts.ptr, sts.len, sig);
	tp_secure_zero(key, sizeof(key));
	tp_sha256_hex(sig, sig_hex);
	rc = tp_buf_addf(authorization,
			 "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, "
			 "SignedHeaders=%s, Signature=%s",
			 s->access_key, date8, s->region, s->service,
			 signed_names.ptr ? signed_names.ptr : "", sig_hex);
done:
	free(hs);
	if (canon.ptr)
		tp_secure_zero(canon.ptr, canon.alloc);
	tp_buf_free(&canon);
	tp_buf_free(&signed_names);
	tp_buf_free(&sts);
	return rc;
}
