/*
 * The S3 backend's retries and resumed reads against a scripted HTTP/1.1
 * responder on 127.0.0.1: each request gets the next scripted answer (an
 * error status, a reset or a truncated body, or the object), and the
 * responder records what it was asked, checking every request's SigV4
 * signature with the secret the store should be using.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "s3_internal.h"
#include "tp_test.h"

#define BUCKET "retry-bucket"
#define KEY "data/obj.bin"
#define OBJECT_PATH "/" BUCKET "/team/" KEY
#define ACCESS_ID "RETRYTESTID"
#define SECRET "TopSecretRetryKey123"
#define TOKEN "SessionTokenXYZ789"
#define OBJECT_LEN 100000
#define MAX_REQUESTS 16
#define PUT_MAX (1u << 20)

#define SLOWDOWN_XML                                                                \
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>" \
	"<Message>Please reduce your request rate.</Message></Error>"
#define INTERNAL_XML                                                                     \
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>" \
	"<Message>We encountered an internal error.</Message></Error>"
#define DENIED_XML                                                                      \
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>" \
	"<Message>Access Denied</Message></Error>"

/* How an answer's body goes out. */
typedef enum {
	SEND_ALL,
	SEND_HALF_RESET, /* half the body, then an RST (SO_LINGER 0) */
	SEND_HALF_CLOSE, /* half the body under a full Content-Length, then FIN */
} send_mode;

/* One scripted answer. A status of 300 or more is sent as such with
 * error_xml; below, a PUT gets 200 and a GET the object: 200, or 206 with
 * Content-Range for the Range asked (the status written is documentation). */
typedef struct step {
	int status;
	send_mode mode;
	const char *error_xml; /* body of an error status */
} step;

/* What one request asked for. */
typedef struct request {
	char method[8];
	char target[512];
	char range[64];      /* "" when none */
	char token[128];     /* x-amz-security-token, "" when none */
	char credential[64]; /* access key id in Authorization */
	bool signature_ok;
	size_t body_len;
} request;

typedef struct responder {
	int fd, port;
	pthread_t thread;
	atomic_bool stop;
	const step *script;
	int nscript;
	const char *secret; /* that signatures must verify against */
	const unsigned char *object;
	request req[MAX_REQUESTS];
	int nreq; /* every request, also past the script or the array */
	unsigned char *put; /* body of the last PUT */
	size_t put_len;
} responder;

static unsigned char object[OBJECT_LEN];

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static bool send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		c += w;
		n -= (size_t)w;
	}
	return true;
}

/* Value of header name in the head block (lines after the request line),
 * trimmed, into out; false when absent. */
static bool header(const char *head, const char *name, char *out, size_t outlen)
{
	size_t nlen = strlen(name);
	for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
		const char *line = l + 2;
		if (strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
			continue;
		const char *v = line + nlen + 1, *e = strstr(v, "\r\n");
		while (*v == ' ' || *v == '\t')
			v++;
		while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		size_t n = (size_t)(e - v) < outlen ? (size_t)(e - v) : outlen - 1;
		memcpy(out, v, n);
		out[n] = '\0';
		return true;
	}
	return false;
}

/* Recompute the request's SigV4 signature, as S3 does, with the expected
 * secret: the headers it names, the target as sent. */
static bool signature_valid(const responder *r, const char *method, const char *target,
			    const char *head, request *q)
{
	char auth[1024], names[512], date[32], hash[80], values[8][256];
	const char *cred, *sh, *sig;
	if (!header(head, "Authorization", auth, sizeof(auth)) ||
	    !(cred = strstr(auth, "Credential=")) || !(sh = strstr(auth, "SignedHeaders=")) ||
	    !(sig = strstr(auth, "Signature=")) ||
	    !header(head, "x-amz-date", date, sizeof(date)) ||
	    !header(head, "x-amz-content-sha256", hash, sizeof(hash)))
		return false;
	cred += strlen("Credential=");
	size_t idlen = strcspn(cred, "/");
	snprintf(q->credential, sizeof(q->credential), "%.*s", (int)idlen, cred);
	sh += strlen("SignedHeaders=");
	snprintf(names, sizeof(names), "%.*s", (int)strcspn(sh, ","), sh);
	tp_s3_header hs[8];
	size_t n = 0;
	for (char *save = NULL, *name = strtok_r(names, ";", &save); name && n < 8;
	     name = strtok_r(NULL, ";", &save), n++) {
		if (!header(head, name, values[n], sizeof(values[n])))
			return false;
		hs[n] = (tp_s3_header){ name, values[n] };
	}
	char path[512];
	const char *qm = strchr(target, '?');
	snprintf(path, sizeof(path), "%.*s", (int)(qm ? (size_t)(qm - target) : strlen(target)),
		 target);
	tp_s3_signer signer = { q->credential, r->secret, "us-east-1", "s3" };
	tp_s3_request_desc desc = { method, path, qm ? qm + 1 : "", hs, n, hash, date };
	tp_buf mine = TP_BUF_INIT(4096);
	bool ok = tp_s3_sign(&signer, &desc, &mine) == 0 && strstr(mine.ptr, "Signature=") &&
		  strcmp(strstr(mine.ptr, "Signature="), sig) == 0;
	tp_buf_free(&mine);
	return ok;
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 206: return "Partial Content";
	case 403: return "Forbidden";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Whatever";
	}
}

static void answer(responder *r, int cfd, const char *method, const char *range)
{
	static const step past_script = { 500, SEND_ALL, INTERNAL_XML };
	int i = r->nreq - 1;
	const step *st = i < r->nscript ? &r->script[i] : &past_script;
	char head[512];
	if (st->status >= 300) {
		const char *xml = st->error_xml ? st->error_xml : "";
		snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n", st->status,
			 reason(st->status), strlen(xml));
		if (send_all(cfd, head, strlen(head)))
			send_all(cfd, xml, strlen(xml));
		close(cfd);
		return;
	}
	if (strcmp(method, "PUT") == 0) {
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nETag: \"e%d\"\r\n"
			 "Content-Length: 0\r\nConnection: close\r\n\r\n", i);
		send_all(cfd, head, strlen(head));
		close(cfd);
		return;
	}
	/* GET of the object, whole or the asked range. */
	unsigned long long from = 0, to = OBJECT_LEN - 1;
	int status = 200;
	char content_range[96] = "";
	if (range[0]) {
		char *end;
		from = strtoull(range + strlen("bytes="), &end, 10);
		if (*end == '-' && end[1])
			to = strtoull(end + 1, NULL, 10);
		if (to > OBJECT_LEN - 1)
			to = OBJECT_LEN - 1;
		status = 206;
		snprintf(content_range, sizeof(content_range), "Content-Range: bytes %llu-%llu/%d\r\n",
			 from, to, OBJECT_LEN);
	}
	size_t len = (size_t)(to - from + 1), sent = st->mode == SEND_ALL ? len : len / 2;
	snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n%sContent-Length: %zu\r\n"
		 "Connection: close\r\n\r\n", status, reason(status), content_range, len);
	if (send_all(cfd, head, strlen(head)))
		send_all(cfd, r->object + from, sent);
	if (st->mode == SEND_HALF_RESET) {
		/* Let the half reach the client first; then reset, not close. */
		sleep_ms(30);
		struct linger lg = { 1, 0 };
		setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(cfd);
}

/* Read one request (head and body) from cfd, record it, answer it. */
static void serve(responder *r, int cfd)
{
	static char buf[PUT_MAX + 16384];
	size_t len = 0;
	char *end = NULL;
	while (!end && len < 16384) {
		ssize_t n = recv(cfd, buf + len, 16384 - len, 0);
		if (n <= 0) {
			close(cfd);
			return;
		}
		len += (size_t)n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	if (!end) {
		close(cfd);
		return;
	}
	end[2] = '\0'; /* the head, its last line ending in \r\n */
	char *body = end + 4, cl[32] = "", method[8] = "", target[512] = "", range[64] = "";
	size_t have = len - (size_t)(body - buf), want = 0;
	if (header(buf, "Content-Length", cl, sizeof(cl)))
		want = strtoull(cl, NULL, 10);
	while (have < want && have + (size_t)(body - buf) < sizeof(buf)) {
		ssize_t n = recv(cfd, body + have, sizeof(buf) - (size_t)(body - buf) - have, 0);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	sscanf(buf, "%7s %511s", method, target);
	header(buf, "Range", range, sizeof(range));
	r->nreq++;
	if (r->nreq <= MAX_REQUESTS) {
		request *q = &r->req[r->nreq - 1];
		snprintf(q->method, sizeof(q->method), "%s", method);
		snprintf(q->target, sizeof(q->target), "%s", target);
		snprintf(q->range, sizeof(q->range), "%s", range);
		header(buf, "x-amz-security-token", q->token, sizeof(q->token));
		q->signature_ok = signature_valid(r, method, target, buf, q);
		q->body_len = have;
	}
	if (strcmp(method, "PUT") == 0 && have <= PUT_MAX) {
		free(r->put);
		r->put = malloc(have ? have : 1);
		memcpy(r->put, body, have);
		r->put_len = have;
	}
	answer(r, cfd, method, range);
}

static void *responder_main(void *vr)
{
	responder *r = vr;
	while (!atomic_load(&r->stop)) {
		struct pollfd p = { r->fd, POLLIN, 0 };
		if (poll(&p, 1, 20) <= 0)
			continue;
		int cfd = accept(r->fd, NULL, NULL);
		if (cfd >= 0)
			serve(r, cfd);
	}
	return NULL;
}

/* Listen on 127.0.0.1, a free port; answer with script, in order. */
static bool responder_start(responder *r, const step *script, int nscript, const char *secret)
{
	memset(r, 0, sizeof(*r));
	r->script = script;
	r->nscript = nscript;
	r->secret = secret;
	r->object = object;
	atomic_init(&r->stop, false);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	r->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (r->fd < 0 || bind(r->fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(r->fd, 8) != 0 || getsockname(r->fd, (struct sockaddr *)&a, &alen) != 0)
		return false;
	r->port = ntohs(a.sin_port);
	return pthread_create(&r->thread, NULL, responder_main, r) == 0;
}

/* Stop answering; what it recorded can be read from here on. */
static void responder_stop(responder *r)
{
	atomic_store(&r->stop, true);
	pthread_join(r->thread, NULL);
	close(r->fd);
}

static void responder_free(responder *r)
{
	free(r->put);
}

static tp_store *open_store(const responder *r)
{
	char url[256];
	snprintf(url, sizeof(url), "s3://" BUCKET "/team?endpoint=http://127.0.0.1:%d"
		 "&pathstyle=true&retries=3&timeout=5", r->port);
	tp_store *s = NULL;
	if (tp_store_open(&s, url) != 0) {
		fprintf(stderr, "opening %s: %s\n", url, tp_error_last());
		return NULL;
	}
	return s;
}

typedef struct collected {
	unsigned char data[2 * OBJECT_LEN];
	size_t len;
} collected;

static int collect(void *ctx, const void *p, size_t n)
{
	collected *c = ctx;
	if (n > sizeof(c->data) - c->len)
		return tp_error_set(TP_ETOOBIG, "the sink got more bytes than the object has");
	memcpy(c->data + c->len, p, n);
	c->len += n;
	return 0;
}

/* Run a GET of [offset, offset+len) against script; the bytes into got. */
static int get_with(responder *r, const step *script, int nscript, uint64_t offset, uint64_t len,
		    collected *got)
{
	memset(got, 0, sizeof(*got));
	if (!responder_start(r, script, nscript, SECRET)) {
		CHECK(!"responder started");
		return TP_EIO;
	}
	tp_store *s = open_store(r);
	tp_store_sink sink = { collect, got };
	int rc = s ? tp_store_get(s, KEY, offset, len, &sink) : TP_ECONFIG;
	/* The first error is the one checked; freeing must not replace it. */
	tp_error_state st;
	tp_error_state_capture(&st);
	tp_store_free(s);
	responder_stop(r);
	tp_error_state_restore(&st);
	return rc;
}

static void check_requests_signed(const responder *r)
{
	for (int i = 0; i < r->nreq && i < MAX_REQUESTS; i++) {
		CHECK(r->req[i].signature_ok);
		CHECK_STR(r->req[i].credential, ACCESS_ID);
		CHECK_STR(r->req[i].token, TOKEN);
	}
}

/* No secret in an error message, whatever the failure. */
static void check_no_secret(const char *msg)
{
	CHECK(strstr(msg, SECRET) == NULL);
	CHECK(strstr(msg, TOKEN) == NULL);
}

typedef struct reader {
	const unsigned char *p;
	size_t left;
} reader;

static int read_some(void *ctx, void *buf, size_t cap, size_t *got)
{
	reader *rd = ctx;
	*got = cap < rd->left ? cap : rd->left;
	memcpy(buf, rd->p, *got);
	rd->p += *got;
	rd->left -= *got;
	return 0;
}

/* A 500 on a PUT is retried, and the retry sends the whole body again. */
static void test_put_500_then_200(void)
{
	static const step script[] = { { 500, SEND_ALL, INTERNAL_XML }, { 200, SEND_ALL, NULL } };
	responder r;
	if (!responder_start(&r, script, 2, SECRET)) {
		CHECK(!"responder started");
		return;
	}
	tp_store *s = open_store(&r);
	reader rd = { object, 30000 };
	tp_store_source src = { read_some, &rd };
	CHECK_EQ_INT(s ? tp_store_put(s, KEY, &src) : TP_ECONFIG, 0);
	tp_store_free(s);
	responder_stop(&r);
	CHECK_EQ_INT(r.nreq, 2);
	CHECK_STR(r.req[0].method, "PUT");
	CHECK_STR(r.req[1].method, "PUT");
	CHECK_STR(r.req[1].target, OBJECT_PATH);
	CHECK_EQ_INT(r.req[0].body_len, 30000);
	CHECK_EQ_INT(r.put_len, 30000);
	CHECK(r.put && memcmp(r.put, object, 30000) == 0);
	check_requests_signed(&r);
	responder_free(&r);
}

/* A GET that recovers: one request per scripted answer, each for the GET
 * of the object path with the Range given, and the sink sees bytes
 * [offset, offset+len) exactly once. */
static void check_get_recovers(const step *script, int nscript, uint64_t offset, uint64_t len,
			       const char *const ranges[])
{
	responder r;
	static collected got;
	CHECK_EQ_INT(get_with(&r, script, nscript, offset, len, &got), 0);
	CHECK_EQ_INT(r.nreq, nscript);
	for (int i = 0; i < nscript && i < r.nreq; i++) {
		CHECK_STR(r.req[i].method, "GET");
		CHECK_STR(r.req[i].target, OBJECT_PATH);
		CHECK_STR(r.req[i].range, ranges[i]);
	}
	size_t want = len == UINT64_MAX ? OBJECT_LEN - (size_t)offset : (size_t)len;
	CHECK_EQ_INT(got.len, want);
	CHECK(got.len == want && memcmp(got.data, object + offset, want) == 0);
	check_requests_signed(&r);
	responder_free(&r);
}

/* S3's SlowDown is retried; nothing had arrived, so no Range. */
static void test_get_503_slowdown_then_200(void)
{
	static const step script[] = { { 503, SEND_ALL, SLOWDOWN_XML }, { 200, SEND_ALL, NULL } };
	static const char *const ranges[] = { "", "" };
	check_get_recovers(script, 2, 0, UINT64_MAX, ranges);
}

/* A reset mid-body: the retry asks for the rest only. */
static void test_get_reset_resumes(void)
{
	static const step script[] = { { 200, SEND_HALF_RESET, NULL }, { 200, SEND_ALL, NULL } };
	static const char *const ranges[] = { "", "bytes=50000-" };
	check_get_recovers(script, 2, 0, UINT64_MAX, ranges);
}

/* Bodies cut short (FIN before Content-Length) twice in a ranged read: each
 * retry moves the range start by what arrived, keeping its end. */
static void test_get_truncated_resumes(void)
{
	static const step script[] = { { 200, SEND_HALF_CLOSE, NULL },
				       { 206, SEND_HALF_CLOSE, NULL },
				       { 206, SEND_ALL, NULL } };
	static const char *const ranges[] = { "bytes=1000-60999", "bytes=31000-60999",
					      "bytes=46000-60999" };
	check_get_recovers(script, 3, 1000, 60000, ranges);
}

/* Access denied is final: one request, and the error says what and where. */
static void test_403_not_retried(void)
{
	static const step script[] = { { 403, SEND_ALL, DENIED_XML }, { 200, SEND_ALL, NULL } };
	responder r;
	static collected got;
	CHECK_EQ_INT(get_with(&r, script, 2, 0, UINT64_MAX, &got), TP_EAUTH);
	CHECK_EQ_INT(r.nreq, 1);
	CHECK_EQ_INT(got.len, 0);
	CHECK(strstr(tp_error_last(), "s3://" BUCKET "/team/" KEY) != NULL);
	CHECK(strstr(tp_error_last(), "access denied (AccessDenied") != NULL);
	check_no_secret(tp_error_last());
	responder_free(&r);
}

/* retries=3: four attempts, then an error naming bucket, key and the
 * server's last answer, never the secret. */
static void test_retries_exhausted(void)
{
	static const step script[] = { { 503, SEND_ALL, SLOWDOWN_XML },
				       { 503, SEND_ALL, SLOWDOWN_XML },
				       { 503, SEND_ALL, SLOWDOWN_XML },
				       { 503, SEND_ALL, SLOWDOWN_XML },
				       { 200, SEND_ALL, NULL } };
	responder r;
	static collected got;
	CHECK_EQ_INT(get_with(&r, script, 5, 0, UINT64_MAX, &got), TP_EIO);
	CHECK_EQ_INT(r.nreq, 4);
	CHECK_EQ_INT(got.len, 0);
	CHECK_STR(tp_error_last(), "s3://" BUCKET "/team/" KEY ": GET failed with HTTP 503 "
		  "SlowDown: Please reduce your request rate.");
	check_no_secret(tp_error_last());
	check_requests_signed(&r);
	responder_free(&r);
}

/* Credentials from a shared credentials file: the named profile's last
 * value of each key wins, around comments, blank lines and CRLF endings. */
static void test_credentials_file(void)
{
	static const char text[] =
		"[default]\n"
		"aws_access_key_id = DEFAULTID\n"
		"aws_secret_access_key = defaultsecret\n"
		"\n"
		"# the team's keys\n"
		"[team]\r\n"
		"aws_access_key_id=OLDID\n"
		"  aws_access_key_id = TEAMID \r\n"
		"; aws_secret_access_key = commented\n"
		"aws_secret_access_key\t=\tteam/secret+x=y\n"
		"aws_session_token = team-token\n"
		"[other]\n"
		"aws_secret_access_key = othersecret";
	static const step script[] = { { 200, SEND_ALL, NULL } };
	char dir[] = "/tmp/tp-s3-retry-XXXXXX", path[64];
	if (!mkdtemp(dir)) {
		CHECK(!"temporary directory");
		return;
	}
	snprintf(path, sizeof(path), "%s/credentials", dir);
	FILE *f = fopen(path, "w");
	CHECK(f && fwrite(text, 1, sizeof(text) - 1, f) == sizeof(text) - 1);
	if (f)
		fclose(f);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	setenv("AWS_PROFILE", "team", 1);

	responder r;
	static collected got;
	memset(&got, 0, sizeof(got));
	if (responder_start(&r, script, 1, "team/secret+x=y")) {
		tp_store *s = open_store(&r);
		tp_store_sink sink = { collect, &got };
		CHECK_EQ_INT(s ? tp_store_get(s, KEY, 0, 10, &sink) : TP_ECONFIG, 0);
		tp_store_free(s);
		responder_stop(&r);
		CHECK_EQ_INT(r.nreq, 1);
		CHECK(r.req[0].signature_ok);
		CHECK_STR(r.req[0].credential, "TEAMID");
		CHECK_STR(r.req[0].token, "team-token");
		CHECK_EQ_INT(got.len, 10);
		responder_free(&r);
	}

	/* A profile without a secret, or no file: how to provide them. */
	tp_store *s = NULL;
	setenv("AWS_PROFILE", "nobody", 1);
	CHECK_EQ_INT(tp_store_open(&s, "s3://" BUCKET "?endpoint=http://127.0.0.1:9"), TP_ECONFIG);
	CHECK(strstr(tp_error_last(), "no AWS credentials for s3://" BUCKET) != NULL);
	CHECK(strstr(tp_error_last(), "profile \"nobody\"") != NULL);
	unlink(path);
	CHECK_EQ_INT(tp_store_open(&s, "s3://" BUCKET "?endpoint=http://127.0.0.1:9"), TP_ECONFIG);
	CHECK(strstr(tp_error_last(), "no AWS credentials") != NULL);
	rmdir(dir);

	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	unsetenv("AWS_PROFILE");
	setenv("AWS_ACCESS_KEY_ID", ACCESS_ID, 1);
	setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
	setenv("AWS_SESSION_TOKEN", TOKEN, 1);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < OBJECT_LEN; i++)
		object[i] = (unsigned char)(i * 131 + (i >> 8) * 7);
	/* Retries wait milliseconds, not the real 200 ms doubling. */
	tp_s3_backoff_base_s = 0.001;
	setenv("AWS_ACCESS_KEY_ID", ACCESS_ID, 1);
	setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
	setenv("AWS_SESSION_TOKEN", TOKEN, 1);
	setenv("AWS_REGION", "us-east-1", 1);
	TP_TEST_RUN(test_put_500_then_200);
	TP_TEST_RUN(test_get_503_slowdown_then_200);
	TP_TEST_RUN(test_get_reset_resumes);
	TP_TEST_RUN(test_get_truncated_resumes);
	TP_TEST_RUN(test_403_not_retried);
	TP_TEST_RUN(test_retries_exhausted);
	TP_TEST_RUN(test_credentials_file);
	return TP_TEST_RESULT();
}
