/*
 * Opening an S3 store: the URL, settings (URL query, then the caller's
 * config), and credentials (environment, then the shared credentials file).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3_internal.h"

/* A shared credentials file is a few lines per profile. */
#define CREDENTIALS_FILE_MAX (1u << 20)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int strdup_to(char **out, const char *s, size_t n)
{
	*out = strndup(s, n);
	return *out ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

static bool bucket_name_ok(const char *b)
{
	size_t n = strlen(b);
	if (n < 3 || n > 63)
		return false;
	for (const char *p = b; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
			return false;
	return true;
}

/* Settings named in the URL query win over config: the URL is the more
 * specific statement. */
typedef struct s3_settings {
	const char *url;
	char *query; /* a copy, split in place */
	const char *names[8];
	const char *values[8];
	int n;
	tp_store_config_fn config;
	void *config_ctx;
} s3_settings;

static const char *const setting_names[] = { "endpoint", "region", "pathstyle", "partsize",
					     "parallel", "retries", "timeout" };

static int settings_parse_query(s3_settings *st, const char *q)
{
	if (!(st->query = strdup(q)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (char *pair = strtok(st->query, "&"); pair; pair = strtok(NULL, "&")) {
		char *eq = strchr(pair, '=');
		if (!eq)
			return tp_error_set(TP_ECONFIG, "store URL %s: \"%s\" needs a value", st->url, pair);
		*eq = '\0';
		bool known = false;
		for (size_t i = 0; i < sizeof(setting_names) / sizeof(setting_names[0]); i++)
			known |= strcmp(pair, setting_names[i]) == 0;
		if (!known || st->n == 8)
			return tp_error_set(TP_ECONFIG, "store URL %s: unknown setting \"%s\" (known: "
					    "endpoint, region, pathstyle, partsize, parallel, retries, "
					    "timeout)", st->url, pair);
		st->names[st->n] = pair;
		st->values[st->n++] = eq + 1;
	}
	return 0;
}

/* *out: malloc'd value, or NULL when unset. */
static int setting(s3_settings *st, const char *name, char **out)
{
	*out = NULL;
	for (int i = st->n - 1; i >= 0; i--)
		if (strcmp(st->names[i], name) == 0)
			return strdup_to(out, st->values[i], strlen(st->values[i]));
	char key[64];
	snprintf(key, sizeof(key), "s3.%s", name);
	int rc = tp_store_config_get(st->config, st->config_ctx, key, out);
	return rc == TP_ENOTFOUND ? 0 : rc;
}

static int parse_bool(const char *name, const char *v, bool *out)
{
	if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"))
		*out = true;
	else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off"))
		*out = false;
	else
		return tp_error_set(TP_ECONFIG, "s3 %s \"%s\" is not a boolean", name, v);
	return 0;
}

/* "64M", "64MiB", "8g", or plain bytes. */
static int parse_size(const char *name, const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
	if (tp_parse_size(v, lo, hi, out) < 0)
		return tp_error_set(TP_ECONFIG, "s3 %s \"%s\" must be a size from %llu to %llu bytes "
				    "(suffixes K, M, G)", name, v, (unsigned long long)lo,
				    (unsigned long long)hi);
	return 0;
}

static int parse_count(const char *name, const char *v, uint64_t lo, uint64_t hi, long *out)
{
	uint64_t n;
	if (tp_parse_u64(v, lo, hi, &n) < 0)
		return tp_error_set(TP_ECONFIG, "s3 %s \"%s\" must be a number from %llu to %llu",
				    name, v, (unsigned long long)lo, (unsigned long long)hi);
	*out = (long)n;
	return 0;
}

/* scheme://host[:port] into base URL parts; no path allowed. */
static int apply_endpoint(s3_store *s, const char *endpoint, bool pathstyle)
{
	const char *sep = strstr(endpoint, "://");
	if (!sep || (strncmp(endpoint, "http://", 7) && strncmp(endpoint, "https://", 8)))
		return tp_error_set(TP_ECONFIG, "s3 endpoint \"%s\" must start with http:// or https://",
				    endpoint);
	const char *host = sep + 3;
	size_t hlen = strcspn(host, "/?#");
	if (hlen == 0 || (host[hlen] && strcmp(host + hlen, "/") != 0))
		return tp_error_set(TP_ECONFIG, "s3 endpoint \"%s\" must be scheme://host[:port] "
				    "without a path", endpoint);
	int scheme_len = (int)(sep - endpoint);
	tp_buf b = TP_BUF_INIT(4096);
	int rc;
	if (pathstyle) {
		rc = tp_buf_addf(&b, "%.*s", (int)hlen, host);
		if (!rc)
			rc = strdup_to(&s->host, b.ptr, b.len);
		if (!rc)
			rc = strdup_to(&s->base_url, endpoint, (size_t)(host + hlen - endpoint));
		tp_buf_reset(&b);
		if (!rc)
			rc = tp_buf_addf(&b, "/%s", s->bucket);
		if (!rc)
			rc = strdup_to(&s->path_base, b.ptr, b.len);
	} else {
		rc = tp_buf_addf(&b, "%s.%.*s", s->bucket, (int)hlen, host);
		if (!rc)
			rc = strdup_to(&s->host, b.ptr, b.len);
		tp_buf_reset(&b);
		if (!rc)
			rc = tp_buf_addf(&b, "%.*s://%s", scheme_len, endpoint, s->host);
		if (!rc)
			rc = strdup_to(&s->base_url, b.ptr, b.len);
		if (!rc)
			rc = strdup_to(&s->path_base, "", 0);
	}
	tp_buf_free(&b);
	return rc;
}

static void trim(char **a, char **b)
{
	while (*a < *b && (**a == ' ' || **a == '\t'))
		(*a)++;
	while (*b > *a && ((*b)[-1] == ' ' || (*b)[-1] == '\t' || (*b)[-1] == '\r' || (*b)[-1] == '\n'))
		(*b)--;
}

/* The whole file in one buffer: tp_fs_read_regular reads a regular file
 * straight into one allocation, so one wipe of out->alloc bytes covers
 * every copy of a secret, where stdio's buffer and getline's reallocations
 * would leave some in freed memory. TP_ENOTFOUND when it cannot be read,
 * as when missing; out is to be wiped and freed whatever the result. */
static int read_credentials_file(const char *path, tp_buf *out)
{
	int rc = tp_fs_read_regular(path, out);
	if (rc == TP_ETOOBIG)
		return tp_error_set(TP_ECONFIG, "%s is larger than %u bytes; not an AWS credentials "
				    "file", path, CREDENTIALS_FILE_MAX);
	return rc || out->len == 0 ? TP_ENOTFOUND : 0;
}

/* The shared credentials file: [profile] sections of key = value lines. */
static int credentials_from_file(s3_store *s, const char *path, const char *profile)
{
	tp_buf file = TP_BUF_INIT(CREDENTIALS_FILE_MAX);
	int rc = read_credentials_file(path, &file);
	bool in_profile = false;
	char *text = file.ptr, *end = rc ? text : text + file.len;
	for (char *line = text, *next; !rc && line < end; line = next) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		next = nl ? nl + 1 : end;
		if (nl)
			*nl = '\0';
		char *a = line, *b = line + strlen(line);
		trim(&a, &b);
		*b = '\0';
		if (*a == '[') {
			char *close = strchr(a, ']');
			in_profile = close && (size_t)(close - a - 1) == strlen(profile) &&
				     strncmp(a + 1, profile, strlen(profile)) == 0;
			continue;
		}
		char *eq = strchr(a, '=');
		if (!in_profile || !eq || *a == '#' || *a == ';')
			continue;
		char *ke = eq, *vs = eq + 1, *ve = b;
		trim(&a, &ke);
		trim(&vs, &ve);
		char **dst = NULL;
		if ((size_t)(ke - a) == 17 && !strncmp(a, "aws_access_key_id", 17))
			dst = &s->access_key;
		else if ((size_t)(ke - a) == 21 && !strncmp(a, "aws_secret_access_key", 21))
			dst = &s->secret_key;
		else if ((size_t)(ke - a) == 17 && !strncmp(a, "aws_session_token", 17))
			dst = &s->session_token;
		if (dst) {
			tp_s3_secret_free(*dst);
			rc = strdup_to(dst, vs, (size_t)(ve - vs));
		}
	}
	if (file.ptr)
		tp_secure_zero(file.ptr, file.alloc);
	tp_buf_free(&file);
	if (!rc && (!s->access_key || !s->secret_key))
		rc = TP_ENOTFOUND;
	return rc;
}

static int load_credentials(s3_store *s)
{
	const char *id = getenv("AWS_ACCESS_KEY_ID"), *secret = getenv("AWS_SECRET_ACCESS_KEY");
	const char *token = getenv("AWS_SESSION_TOKEN");
	if (id && *id && secret && *secret) {
		int rc = strdup_to(&s->access_key, id, strlen(id));
		if (!rc)
			rc = strdup_to(&s->secret_key, secret, strlen(secret));
		if (!rc && token && *token)
			rc = strdup_to(&s->session_token, token, strlen(token));
		return rc;
	}
	const char *profile = getenv("AWS_PROFILE");
	const char *file = getenv("AWS_SHARED_CREDENTIALS_FILE");
	const char *home = getenv("HOME");
	char *path = NULL;
	int rc;
	if (!profile || !*profile)
		profile = "default";
	if (file && *file)
		rc = strdup_to(&path, file, strlen(file));
	else if (home && *home)
		rc = tp_path_join(&path, home, ".aws/credentials");
	else
		rc = tp_error_set(TP_ECONFIG, "HOME is not set");
	if (!rc) {
		rc = credentials_from_file(s, path, profile);
		if (rc == TP_ENOTFOUND)
			rc = tp_error_set(TP_ECONFIG, "no AWS credentials for s3://%s: set "
					  "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add "
					  "profile \"%s\" to %s", s->bucket, profile, path);
	}
	free(path);
	return rc;
}

static int parse_url(s3_store *s, s3_settings *st, const char *url)
{
	const char *p = url + 5; /* after s3:// */
	size_t blen = strcspn(p, "/?");
	int rc = strdup_to(&s->bucket, p, blen);
	if (rc)
		return rc;
	if (!bucket_name_ok(s->bucket))
		return tp_error_set(TP_ECONFIG, "store URL %s: \"%s\" is not a valid bucket name "
				    "(3-63 characters: a-z 0-9 . -)", url, s->bucket);
	p += blen;
	const char *q = strchr(p, '?');
	const char *pend = q ? q : p + strlen(p);
	while (p < pend && *p == '/')
		p++;
	while (pend > p && pend[-1] == '/')
		pend--;
	char *prefix = strndup(p, (size_t)(pend - p));
	if (!prefix)
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (*prefix && !tp_store_key_valid(prefix)) {
		free(prefix);
		return tp_error_set(TP_ECONFIG, "store URL %s: the prefix may only hold path "
				    "components of A-Z a-z 0-9 . _ -", url);
	}
	tp_buf b = TP_BUF_INIT(TP_STORE_KEY_MAX + 2);
	rc = *prefix ? tp_buf_addf(&b, "%s/", prefix) : tp_buf_adds(&b, "");
	free(prefix);
	if (!rc)
		rc = strdup_to(&s->prefix, b.ptr, b.len);
	tp_buf_free(&b);
	if (!rc && q && q[1])
		rc = settings_parse_query(st, q + 1);
	return rc;
}

static int apply_settings(s3_store *s, s3_settings *st)
{
	char *endpoint = NULL, *region = NULL, *v = NULL;
	bool pathstyle;
	uint64_t size = 0;
	int rc;
	if ((rc = setting(st, "region", &region)))
		goto done;
	if (!region) {
		const char *env = getenv("AWS_REGION");
		if (!env || !*env)
			env = getenv("AWS_DEFAULT_REGION");
		rc = strdup_to(&region, env && *env ? env : "us-east-1",
			       strlen(env && *env ? env : "us-east-1"));
		if (rc)
			goto done;
	}
	s->region = region;
	region = NULL;
	if ((rc = setting(st, "endpoint", &endpoint)))
		goto done;
	/* Custom endpoints (MinIO, Ceph, s3rver) usually want path style. */
	pathstyle = endpoint != NULL;
	if ((rc = setting(st, "pathstyle", &v)) || (v && (rc = parse_bool("pathstyle", v, &pathstyle))))
		goto done;
	free(v);
	v = NULL;
	if (!endpoint) {
		tp_buf b = TP_BUF_INIT(512);
		rc = tp_buf_addf(&b, "https://s3.%s.amazonaws.com", s->region);
		endpoint = tp_buf_detach(&b);
		if (rc)
			goto done;
	}
	while (strlen(endpoint) > 8 && endpoint[strlen(endpoint) - 1] == '/')
		endpoint[strlen(endpoint) - 1] = '\0';
	if ((rc = apply_endpoint(s, endpoint, pathstyle)))
		goto done;

	s->part_size = DEFAULT_PART_SIZE;
	if ((rc = setting(st, "partsize", &v)) ||
	    (v && (rc = parse_size("partsize", v, MIN_PART_SIZE, MAX_PART_SIZE, &size))))
		goto done;
	if (v)
		s->part_size = size;
	free(v);
	v = NULL;
	long parallel = DEFAULT_PARALLEL, retries = DEFAULT_RETRIES;
	s->timeout_s = DEFAULT_TIMEOUT_S;
	struct { const char *name; uint64_t lo, hi; long *dst; } ints[] = {
		{ "parallel", 1, 64, &parallel },
		{ "retries", 0, 100, &retries },
		{ "timeout", 1, 86400, &s->timeout_s },
	};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		if ((rc = setting(st, ints[i].name, &v)) ||
		    (v && (rc = parse_count(ints[i].name, v, ints[i].lo, ints[i].hi, ints[i].dst))))
			goto done;
		free(v);
		v = NULL;
	}
	s->parallel = (int)parallel;
	s->retries = (int)retries;
done:
	free(endpoint);
	free(region);
	free(v);
	return rc;
}

int tp_store_s3_open(tp_store **out, const char *url, tp_store_config_fn config, void *config_ctx)
{
	pthread_once(&curl_once, curl_init);
	s3_settings st = { .url = url, .config = config, .config_ctx = config_ctx };
	s3_store *s = calloc(1, sizeof(*s));
	int rc;
	if (!s)
		return tp_error_set(TP_ENOMEM, "out of memory");
	if ((rc = tp_store_init(&s->base, &tp_s3_backend, url)) || (rc = parse_url(s, &st, url)) ||
	    (rc = apply_settings(s, &st)) || (rc = load_credentials(s)))
		goto done;
	if (!(s->curl = curl_easy_init()))
		rc = tp_error_set(TP_ENOMEM, "cannot create a curl handle");
done:
	free(st.query);
	if (rc) {
		tp_s3_free(&s->base);
		return rc == TP_ENOMEM ? rc : TP_ECONFIG;
	}
	*out = &s->base;
	return 0;
}
