/*
 * S3-compatible object store backend (AWS S3, MinIO, Ceph RGW, R2, ...)
 * over libcurl, signed with AWS Signature V4.
 *
 * Keys map to objects under an optional prefix. A PUT is atomic in S3, and
 * so is a multipart upload: the object appears only when the upload is
 * completed, so readers never see a partial object. Transient failures
 * (5xx, 429/SlowDown, timeouts, resets) are retried with exponential
 * backoff and jitter; other failures are final and name bucket and key,
 * never a secret.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "s3_internal.h"

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


static s3_store *s3_of(tp_store *s)
{
	return (s3_store *)s;
}

/* ---- one HTTP exchange --------------------------------------------------- */

typedef struct s3_call {
	const char *method;
	const char *key;   /* store key, NULL for bucket-level requests */
	const char *query; /* canonical query string, "" for none */
	const unsigned char *body;
	size_t body_len;
	size_t body_pos;
	uint64_t range_from; /* GET only */
	uint64_t range_len;  /* 0: no Range header; UINT64_MAX: to the end */
	const tp_store_sink *sink;
	/* results */
	long status;
	tp_buf resp;
	uint64_t delivered; /* bytes handed to sink */
	int sink_rc;
	char etag[160];
} s3_call;

static size_t on_body(char *data, size_t size, size_t n, void *vcall)
{
	s3_call *c = vcall;
	size_t len = size * n;
	if (c->sink && c->status >= 200 && c->status < 300) {
		int rc = c->sink->write(c->sink->ctx, data, len);
		if (rc) {
			c->sink_rc = rc;
			return 0; /* aborts the transfer */
		}
		c->delivered += len;
		return len;
	}
	/* Error bodies and listings; anything past the cap is not needed. */
	if (c->resp.len + len <= RESPONSE_CAP)
		tp_buf_add(&c->resp, data, len);
	return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *vcall)
{
	s3_call *c = vcall;
	size_t len = size * n;
	if (strncmp(data, "HTTP/", 5) == 0) {
		/* A new status line (after a redirect or 100-continue). */
		const char *sp = memchr(data, ' ', len), *end;
		uint64_t code;
		/* Three digits; curl's lines end in CRLF, which stops the parse. */
		c->status = sp && tp_parse_u64_prefix(sp + 1, &end, 0, 999, &code) == 0 ? (long)code : 0;
	} else if (len > 5 && strncasecmp(data, "etag:", 5) == 0) {
		size_t i = 5, j = len;
		while (i < j && (data[i] == ' ' || data[i] == '\t'))
			i++;
		while (j > i && (data[j - 1] == '\r' || data[j - 1] == '\n' || data[j - 1] == ' '))
			j--;
		if (j - i < sizeof(c->etag)) {
			memcpy(c->etag, data + i, j - i);
			c->etag[j - i] = '\0';
		}
	}
	return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *vcall)
{
	s3_call *c = vcall;
	size_t want = size * n, left = c->body_len - c->body_pos;
	if (want > left)
		want = left;
	memcpy(buf, c->body + c->body_pos, want);
	c->body_pos += want;
	return want;
}

static void amz_now(char out[17])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static void body_hash(const s3_call *c, char out[TP_OID_HEXLEN + 1])
{
	tp_sha256_hex_of(c->body ? c->body : (const unsigned char *)"", c->body_len, out);
}

/* The object path: /bucket/prefix/key (path style) or /prefix/key. */
static int object_path(const s3_store *s, const char *key, tp_buf *raw)
{
	int rc = tp_buf_adds(raw, s->path_base);
	if (!rc)
		rc = key ? tp_buf_addf(raw, "/%s%s", s->prefix, key)
			 : tp_buf_adds(raw, s->path_base[0] ? "" : "/");
	return rc;
}

static int add_header(struct curl_slist **list, const char *fmt, const char *name,
		      const char *value)
{
	char line[4096];
	snprintf(line, sizeof(line), fmt, name, value);
	struct curl_slist *l = curl_slist_append(*list, line);
	tp_secure_zero(line, sizeof(line)); /* may hold the session token */
	if (!l)
		return tp_error_set(TP_ENOMEM, "out of memory");
	*list = l;
	return 0;
}

/* Header lines carry the session token and a signature: wiped, then freed. */
static void free_headers(struct curl_slist *list)
{
	for (struct curl_slist *l = list; l; l = l->next)
		tp_secure_zero(l->data, strlen(l->data));
	curl_slist_free_all(list);
}

/* Sign and perform c once on handle h. Returns the curl code; c->status
 * holds the HTTP status. */
static CURLcode perform_once(s3_store *s, CURL *h, s3_call *c, int *rc)
{
	tp_buf raw = TP_BUF_INIT(4096), uri = TP_BUF_INIT(8192), url = TP_BUF_INIT(16384),
	       auth = TP_BUF_INIT(2048);
	struct curl_slist *hdrs = NULL;
	char date[17], hash[TP_OID_HEXLEN + 1], range[64] = "";
	CURLcode cc = CURLE_OK;
	*rc = 0;

	c->status = 0;
	c->body_pos = 0;
	c->etag[0] = '\0';
	tp_buf_reset(&c->resp);
	amz_now(date);
	body_hash(c, hash);
	if (c->range_len) {
		if (c->range_len == UINT64_MAX)
			snprintf(range, sizeof(range), "bytes=%llu-", (unsigned long long)c->range_from);
		else
			snprintf(range, sizeof(range), "bytes=%llu-%llu",
				 (unsigned long long)c->range_from,
				 (unsigned long long)(c->range_from + c->range_len - 1));
	}
	if ((*rc = object_path(s, c->key, &raw)) || (*rc = tp_s3_uri_encode(&uri, raw.ptr, true)) ||
	    (*rc = tp_buf_addf(&url, "%s%s%s%s", s->base_url, uri.ptr, c->query[0] ? "?" : "",
			       c->query)))
		goto done;

	tp_s3_header sh[5] = {
		{ "host", s->host }, { "x-amz-content-sha256", hash }, { "x-amz-date", date },
	};
	size_t nsh = 3;
	if (range[0])
		sh[nsh++] = (tp_s3_header){ "range", range };
	if (s->session_token)
		sh[nsh++] = (tp_s3_header){ "x-amz-security-token", s->session_token };
	tp_s3_signer signer = { s->access_key, s->secret_key, s->region, "s3" };
	tp_s3_request_desc desc = { c->method, uri.ptr, c->query, sh, nsh, hash, date };
	if ((*rc = tp_s3_sign(&signer, &desc, &auth)))
		goto done;
	for (size_t i = 0; i < nsh && !*rc; i++)
		*rc = add_header(&hdrs, "%s: %s", sh[i].name, sh[i].value);
	if (!*rc)
		*rc = add_header(&hdrs, "%s: %s", "Authorization", auth.ptr);
	/* No 100-continue round trip: S3 servers answer errors promptly anyway. */
	if (!*rc)
		*rc = add_header(&hdrs, "%s%s", "Expect:", "");
	if (*rc)
		goto done;

	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url.ptr);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, s->timeout_s < 10 ? s->timeout_s : 10L);
	/* Stalled transfers, not slow ones, time out: < 1 byte/s for timeout_s. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, s->timeout_s);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
	if (strcmp(c->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(c->method, "PUT") == 0) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, c);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)c->body_len);
	} else if (strcmp(c->method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body ? (const char *)c->body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
	} else if (strcmp(c->method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
	}
	cc = curl_easy_perform(h);
	if (cc == CURLE_OK && c->status == 0) {
		long code = 0;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
		c->status = code;
	}
done:
	free_headers(hdrs);
	tp_buf_free(&raw);
	tp_buf_free(&uri);
	tp_buf_free(&url);
	tp_buf_free(&auth);
	return cc;
}

static bool retryable_curl(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
		return true;
	default:
		return false;
	}
}

static bool retryable_status(long status)
{
	return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

double tp_s3_backoff_base_s = 0.2;

/* Exponential backoff with jitter: 200 ms doubling, capped at 20 s, each
 * wait drawn from [d/2, d] so agents that failed together spread out. */
static void backoff(int attempt)
{
	static _Thread_local unsigned seed;
	if (!seed)
		seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)(uintptr_t)&seed;
	double d = tp_s3_backoff_base_s * (double)(1u << (attempt < 7 ? attempt : 7));
	if (d > 20.0)
		d = 20.0;
	d = d / 2 + d / 2 * ((double)rand_r(&seed) / RAND_MAX);
	struct timespec ts = { (time_t)d, (long)((d - (double)(time_t)d) * 1e9) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Text of <tag>...</tag> in xml (first occurrence after *from) into out. */
static bool xml_text(const char *xml, const char *tag, char *out, size_t outlen, const char **after)
{
	char open[64], close[64];
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	const char *a = xml ? strstr(xml, open) : NULL;
	const char *b = a ? strstr(a + strlen(open), close) : NULL;
	if (!b)
		return false;
	a += strlen(open);
	size_t n = (size_t)(b - a);
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, a, n);
	out[n] = '\0';
	if (after)
		*after = b + strlen(close);
	return true;
}

/* A final error for c, naming bucket and key. */
static int call_error(s3_store *s, const s3_call *c, CURLcode cc)
{
	const char *key = c->key ? c->key : "";
	if (c->sink_rc)
		return c->sink_rc;
	if (cc != CURLE_OK)
		return tp_error_set(TP_EIO, "s3://%s/%s%s: %s %s failed: %s", s->bucket, s->prefix, key,
				    c->method, s->base_url, curl_easy_strerror(cc));
	char code[128] = "", msg[256] = "";
	xml_text(c->resp.ptr, "Code", code, sizeof(code), NULL);
	xml_text(c->resp.ptr, "Message", msg, sizeof(msg), NULL);
	if (strcmp(code, "NoSuchBucket") == 0)
		return tp_error_set(TP_ECONFIG, "bucket \"%s\" does not exist at %s", s->bucket,
				    s->base_url);
	if (c->status == 404)
		return tp_error_set(TP_ENOTFOUND, "s3://%s/%s%s: not in the store", s->bucket,
				    s->prefix, key);
	if (c->status == 401 || c->status == 403)
		return tp_error_set(TP_EAUTH, "s3://%s/%s%s: access denied (%s%s%s); check the "
				    "AWS credentials and the bucket's permissions", s->bucket,
				    s->prefix, key, code[0] ? code : "HTTP 403", msg[0] ? ": " : "", msg);
	return tp_error_set(TP_EIO, "s3://%s/%s%s: %s failed with HTTP %ld%s%s%s%s", s->bucket,
			    s->prefix, key, c->method, c->status, code[0] ? " " : "", code,
			    msg[0] ? ": " : "", msg);
}

/* Perform with retries. On success c->status is 2xx (or 404 when
 * allow_404). A GET that fails after delivering data resumes where it
 * stopped, so the sink sees every byte exactly once. */
static int perform(s3_store *s, CURL *h, s3_call *c, bool allow_404)
{
	int rc = 0;
	for (int attempt = 0;; attempt++) {
		CURLcode cc = perform_once(s, h, c, &rc);
		if (rc)
			return rc;
		if (c->sink_rc)
			return c->sink_rc;
		bool ok = cc == CURLE_OK && ((c->status >= 200 && c->status < 300) ||
					     (allow_404 && c->status == 404));
		/* S3 may report a failed CompleteMultipartUpload inside a 200. */
		if (ok && c->resp.ptr && strstr(c->resp.ptr, "<Error>"))
			ok = false;
		if (ok)
			return 0;
		bool again = cc != CURLE_OK ? retryable_curl(cc) : retryable_status(c->status);
		if (!again || attempt >= s->retries)
			return call_error(s, c, cc);
		tp_log(TP_LOG_WARN, "s3://%s/%s%s: %s: %s; retrying (%d/%d)", s->bucket, s->prefix,
		       c->key ? c->key : "", c->method,
		       cc != CURLE_OK ? curl_easy_strerror(cc) : "server busy or failing",
		       attempt + 1, s->retries);
		if (c->delivered && c->range_len) {
			c->range_from += c->delivered;
			if (c->range_len != UINT64_MAX)
				c->range_len -= c->delivered;
			c->delivered = 0;
		} else if (c->delivered) {
			c->range_from = c->delivered;
			c->range_len = UINT64_MAX;
			c->delivered = 0;
		}
		backoff(attempt);
	}
}

static void call_init(s3_call *c, const char *method, const char *key, const char *query)
{
	memset(c, 0, sizeof(*c));
	c->method = method;
	c->key = key;
	c->query = query ? query : "";
	tp_buf_init(&c->resp, RESPONSE_CAP);
}

/* ---- backend operations ---------------------------------------------------- */

static int s3_stat(tp_store *st, const char *key, uint64_t *size)
{
	s3_store *s = s3_of(st);
	s3_call c;
	call_init(&c, "HEAD", key, NULL);
	int rc = perform(s, s->curl, &c, true);
	if (!rc && c.status == 404)
		rc = tp_error_set(TP_ENOTFOUND, "%s: not in the store", key);
	if (!rc) {
		curl_off_t len = -1;
		curl_easy_getinfo(s->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
		if (len < 0)
			rc = tp_error_set(TP_EIO, "s3://%s/%s%s: HEAD gave no Content-Length",
					  s->bucket, s->prefix, key);
		else
			*size = (uint64_t)len;
	}
	tp_buf_free(&c.resp);
	return rc;
}

static int s3_get(tp_store *st, const char *key, uint64_t offset, uint64_t len,
		  const tp_store_sink *sink)
{
	s3_store *s = s3_of(st);
	s3_call c;
	if (len == 0)
		return 0;
	call_init(&c, "GET", key, NULL);
	c.sink = sink;
	if (offset || len != UINT64_MAX) {
		c.range_from = offset;
		c.range_len = len;
	}
	int rc = perform(s, s->curl, &c, false);
	/* A range that starts past the end is an empty read, as for files. */
	if (rc && c.status == 416)
		rc = 0;
	tp_buf_free(&c.resp);
	return rc;
}

static int s3_remove(tp_store *st, const char *key)
{
	s3_store *s = s3_of(st);
	s3_call c;
	call_init(&c, "DELETE", key, NULL);
	int rc = perform(s, s->curl, &c, true);
	tp_buf_free(&c.resp);
	return rc;
}

static int put_body(s3_store *s, CURL *h, const char *key, const char *query,
		    const unsigned char *body, size_t len, char *etag, size_t etag_len)
{
	s3_call c;
	call_init(&c, "PUT", key, query);
	c.body = body;
	c.body_len = len;
	int rc = perform(s, h, &c, false);
	if (!rc && etag)
		snprintf(etag, etag_len, "%s", c.etag);
	tp_buf_free(&c.resp);
	return rc;
}

/* Fill buf with up to cap bytes from src; *eof when the source ended. */
static int fill_part(const tp_store_source *src, unsigned char *buf, size_t cap, size_t *len,
		     bool *eof)
{
	*len = 0;
	*eof = false;
	while (*len < cap) {
		size_t got = 0;
		int rc = src->read(src->ctx, buf + *len, cap - *len, &got);
		if (rc)
			return rc;
		if (got == 0) {
			*eof = true;
			break;
		}
		*len += got;
	}
	return 0;
}

/* ---- multipart upload ---------------------------------------------------- */

typedef struct part_job {
	s3_store *s;
	const char *key;
	const char *upload_id;
	int number;
	unsigned char *buf;
	size_t len;
	char etag[160];
	int rc;
	tp_error_state err; /* made on the part's thread */
	pthread_t thread;
	bool running;
} part_job;

static void *part_main(void *vjob)
{
	part_job *j = vjob;
	char query[512];
	CURL *h = curl_easy_init();
	tp_buf q = TP_BUF_INIT(1024);
	if (!h) {
		j->rc = tp_error_set(TP_ENOMEM, "out of memory");
	} else if (!(j->rc = tp_buf_addf(&q, "partNumber=%d&uploadId=", j->number)) &&
		   !(j->rc = tp_s3_uri_encode(&q, j->upload_id, false))) {
		snprintf(query, sizeof(query), "%s", q.ptr);
		j->rc = put_body(j->s, h, j->key, query, j->buf, j->len, j->etag, sizeof(j->etag));
	}
	if (j->rc)
		tp_error_state_capture(&j->err);
	curl_easy_cleanup(h);
	tp_buf_free(&q);
	return NULL;
}

/* Wait for a part; its error message moves to this thread. */
static int part_join(part_job *j, tp_buf *etags)
{
	if (!j->running)
		return 0;
	pthread_join(j->thread, NULL);
	j->running = false;
	if (j->rc) {
		tp_error_state_restore(&j->err);
		return j->rc;
	}
	return tp_buf_addf(etags, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>",
			   j->number, j->etag);
}

static int part_start(part_job *j)
{
	j->rc = 0;
	if (pthread_create(&j->thread, NULL, part_main, j) != 0)
		return tp_error_set(TP_EIO, "cannot start an upload thread");
	j->running = true;
	return 0;
}

static int multipart_begin(s3_store *s, const char *key, char *upload_id, size_t len)
{
	s3_call c;
	call_init(&c, "POST", key, "uploads=");
	int rc = perform(s, s->curl, &c, false);
	if (!rc && !xml_text(c.resp.ptr, "UploadId", upload_id, len, NULL))
		rc = tp_error_set(TP_EIO, "s3://%s/%s%s: no UploadId in the server's answer",
				  s->bucket, s->prefix, key);
	tp_buf_free(&c.resp);
	return rc;
}

static int upload_query(tp_buf *q, const char *upload_id)
{
	int rc = tp_buf_adds(q, "uploadId=");
	return rc ? rc : tp_s3_uri_encode(q, upload_id, false);
}

static int multipart_end(s3_store *s, const char *key, const char *upload_id, const tp_buf *etags)
{
	tp_buf q = TP_BUF_INIT(1024), body = TP_BUF_INIT(MAX_PARTS * 256);
	s3_call c;
	call_init(&c, "POST", key, NULL);
	int rc = upload_query(&q, upload_id);
	if (!rc)
		rc = tp_buf_addf(&body, "<CompleteMultipartUpload>%s</CompleteMultipartUpload>",
				 etags->ptr ? etags->ptr : "");
	if (!rc) {
		c.query = q.ptr;
		c.body = (const unsigned char *)body.ptr;
		c.body_len = body.len;
		rc = perform(s, s->curl, &c, false);
	}
	tp_buf_free(&c.resp);
	tp_buf_free(&q);
	tp_buf_free(&body);
	return rc;
}

/* Best effort: parts of a failed upload must not linger (and cost money). */
static void multipart_abort(s3_store *s, const char *key, const char *upload_id)
{
	tp_buf q = TP_BUF_INIT(1024);
	s3_call c;
	call_init(&c, "DELETE", key, NULL);
	tp_error_state first;
	tp_error_state_capture(&first);
	if (!upload_query(&q, upload_id)) {
		c.query = q.ptr;
		if (perform(s, s->curl, &c, true))
			tp_log(TP_LOG_WARN, "could not abort the multipart upload of s3://%s/%s%s: %s",
			       s->bucket, s->prefix, key, tp_error_last());
	}
	tp_error_state_restore(&first);
	tp_buf_free(&q);
	tp_buf_free(&c.resp);
}

static int multipart(s3_store *s, const char *key, const tp_store_source *src,
		     unsigned char *first, size_t first_len)
{
	char upload_id[1024];
	int np = s->parallel, number = 1, rc;
	part_job *jobs = calloc((size_t)np, sizeof(*jobs));
	tp_buf etags = TP_BUF_INIT(MAX_PARTS * 200);
	if (!jobs)
		return tp_error_set(TP_ENOMEM, "out of memory");
	if ((rc = multipart_begin(s, key, upload_id, sizeof(upload_id))) != 0)
		goto done_noabort;
	for (int i = 0; i < np; i++)
		jobs[i] = (part_job){ .s = s, .key = key, .upload_id = upload_id };
	jobs[0].buf = first;
	first = NULL;
	jobs[0].len = first_len;
	jobs[0].number = number++;
	if ((rc = part_start(&jobs[0])) != 0)
		goto done;
	for (bool eof = false; !eof;) {
		/* Slots are reused round robin, so parts are joined in order. */
		part_job *j = &jobs[(number - 1) % np];
		if ((rc = part_join(j, &etags)) != 0)
			goto done;
		if (number > MAX_PARTS) {
			rc = tp_error_set(TP_ETOOBIG, "s3://%s/%s%s: more than %d parts; raise "
					  "tenpak.s3.partsize", s->bucket, s->prefix, key, MAX_PARTS);
			goto done;
		}
		if (!j->buf && !(j->buf = malloc(s->part_size))) {
			rc = tp_error_set(TP_ENOMEM, "out of memory for an upload part");
			goto done;
		}
		if ((rc = fill_part(src, j->buf, s->part_size, &j->len, &eof)) != 0)
			goto done;
		if (j->len == 0)
			break;
		j->number = number++;
		if ((rc = part_start(j)) != 0)
			goto done;
	}
	for (int k = 0; k < np; k++) {
		part_job *j = &jobs[(number - 1 + k) % np];
		int jrc = part_join(j, &etags);
		if (jrc && !rc)
			rc = jrc;
	}
	if (!rc)
		rc = multipart_end(s, key, upload_id, &etags);
done:
	if (rc) {
		/* Parts still running are waited for, their errors dropped. */
		for (int k = 0; k < np; k++)
			if (jobs[k].running) {
				pthread_join(jobs[k].thread, NULL);
				jobs[k].running = false;
			}
		multipart_abort(s, key, upload_id);
	}
done_noabort:
	for (int k = 0; k < np; k++)
		free(jobs[k].buf);
	free(jobs);
	free(first);
	tp_buf_free(&etags);
	return rc;
}

static int s3_put(tp_store *st, const char *key, const tp_store_source *src)
{
	s3_store *s = s3_of(st);
	size_t len;
	bool eof;
	unsigned char *buf = malloc(s->part_size);
	if (!buf)
		return tp_error_set(TP_ENOMEM, "out of memory for an upload buffer");
	int rc = fill_part(src, buf, s->part_size, &len, &eof);
	if (rc) {
		free(buf);
		return rc;
	}
	if (eof) {
		rc = put_body(s, s->curl, key, "", buf, len, NULL, 0);
		free(buf);
		return rc;
	}
	return multipart(s, key, src, buf, len); /* takes buf */
}

/* ---- listing ----------------------------------------------------------- */

static int list_page(s3_store *s, const char *prefix, const char *token, tp_store_list_fn fn,
		     void *ctx, char *next, size_t next_len)
{
	tp_buf q = TP_BUF_INIT(4096), full = TP_BUF_INIT(4096);
	s3_call c;
	call_init(&c, "GET", NULL, NULL);
	int rc = 0;
	/* Canonical order: continuation-token < list-type < prefix. */
	if (token[0]) {
		rc = tp_buf_adds(&q, "continuation-token=");
		if (!rc)
			rc = tp_s3_uri_encode(&q, token, false);
		if (!rc)
			rc = tp_buf_adds(&q, "&");
	}
	if (!rc)
		rc = tp_buf_addf(&full, "%s%s", s->prefix, prefix);
	if (!rc)
		rc = tp_buf_adds(&q, "list-type=2&prefix=");
	if (!rc)
		rc = tp_s3_uri_encode(&q, full.ptr, false);
	if (rc)
		goto done;
	c.query = q.ptr;
	if ((rc = perform(s, s->curl, &c, false)) != 0)
		goto done;
	size_t plen = strlen(s->prefix);
	const char *p = c.resp.ptr;
	char block[4096];
	while (!rc && p && xml_text(p, "Contents", block, sizeof(block), &p)) {
		char key[TP_STORE_KEY_MAX + 256], size[32];
		if (!xml_text(block, "Key", key, sizeof(key), NULL) ||
		    !xml_text(block, "Size", size, sizeof(size), NULL))
			continue;
		/* Keys outside our prefix or our key syntax are not ours. */
		if (strncmp(key, s->prefix, plen) != 0 || !tp_store_key_valid(key + plen))
			continue;
		uint64_t n;
		if (tp_parse_u64(size, 0, UINT64_MAX, &n) != 0)
			rc = tp_error_set(TP_EPROTO, "s3://%s: the listing gives %s the size \"%s\"",
					  s->bucket, key, size);
		else
			rc = fn(ctx, key + plen, n);
	}
	char truncated[16] = "";
	next[0] = '\0';
	if (!rc && xml_text(c.resp.ptr, "IsTruncated", truncated, sizeof(truncated), NULL) &&
	    strcmp(truncated, "true") == 0 &&
	    !xml_text(c.resp.ptr, "NextContinuationToken", next, next_len, NULL))
		rc = tp_error_set(TP_EIO, "s3://%s: truncated listing without a continuation token",
				  s->bucket);
done:
	tp_buf_free(&q);
	tp_buf_free(&full);
	tp_buf_free(&c.resp);
	return rc;
}

static int s3_list(tp_store *st, const char *prefix, tp_store_list_fn fn, void *ctx)
{
	char token[2048] = "", next[2048];
	for (;;) {
		int rc = list_page(s3_of(st), prefix ? prefix : "", token, fn, ctx, next, sizeof(next));
		if (rc || !next[0])
			return rc;
		memcpy(token, next, sizeof(token));
	}
}

void tp_s3_secret_free(char *secret)
{
	if (secret)
		tp_secure_zero(secret, strlen(secret));
	free(secret);
}

void tp_s3_free(tp_store *st)
{
	s3_store *s = s3_of(st);
	if (!s)
		return;
	if (s->curl)
		curl_easy_cleanup(s->curl);
	free(s->bucket);
	free(s->prefix);
	free(s->base_url);
	free(s->host);
	free(s->path_base);
	free(s->region);
	free(s->access_key);
	tp_s3_secret_free(s->secret_key);
	tp_s3_secret_free(s->session_token);
	free(s->base.url);
	free(s);
}

const tp_store_backend tp_s3_backend = {
	.version = TP_STORE_BACKEND_VERSION,
	.scheme = "s3",
	.stat = s3_stat,
	.get = s3_get,
	.put = s3_put,
	.remove = s3_remove,
	.list = s3_list,
	.free = tp_s3_free,
};
