/* Protocol parser, serializer and line reader. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tp_protocol.h"
#include "tp_test.h"

#define OID "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"

static int parse(tp_proto_request *r, const char *line)
{
	return tp_proto_parse(r, line, strlen(line));
}

static void test_init(void)
{
	tp_proto_request r;
	CHECK_EQ_INT(parse(&r, "{\"event\":\"init\",\"operation\":\"upload\",\"remote\":\"origin\","
			       "\"concurrent\":true,\"concurrenttransfers\":3}"), 0);
	CHECK_EQ_INT(r.event, TP_PROTO_EVENT_INIT);
	CHECK_EQ_INT(r.operation, TP_PROTO_OP_UPLOAD);
	CHECK_STR(r.remote, "origin");
	CHECK(r.concurrent);
	CHECK_EQ_INT(r.concurrent_transfers, 3);
	tp_proto_request_clear(&r);

	/* Optional fields may be missing; remote may be a URL or null. */
	CHECK_EQ_INT(parse(&r, "{\"event\":\"init\",\"operation\":\"download\",\"remote\":null}"), 0);
	CHECK_EQ_INT(r.operation, TP_PROTO_OP_DOWNLOAD);
	CHECK(r.remote == NULL);
	CHECK(!r.concurrent);
	tp_proto_request_clear(&r);
}

static void test_transfers(void)
{
	tp_proto_request r;
	CHECK_EQ_INT(parse(&r, "{\"event\":\"upload\",\"oid\":\"" OID "\",\"size\":346232,"
			       "\"path\":\"/p/.git/lfs/objects/4d/7a/" OID "\",\"action\":null}"), 0);
	CHECK_EQ_INT(r.event, TP_PROTO_EVENT_UPLOAD);
	CHECK_STR(r.oid, OID);
	CHECK_EQ_INT(r.size, 346232);
	CHECK_STR(r.path, "/p/.git/lfs/objects/4d/7a/" OID);
	tp_proto_request_clear(&r);

	CHECK_EQ_INT(parse(&r, "  {\"event\":\"download\",\"oid\":\"" OID "\",\"size\":0,"
			       "\"action\":{\"href\":\"x\"}}  \r"), 0);
	CHECK_EQ_INT(r.event, TP_PROTO_EVENT_DOWNLOAD);
	CHECK_EQ_INT(r.size, 0);
	CHECK(r.path == NULL);
	tp_proto_request_clear(&r);

	/* The largest exact JSON integer is the largest size accepted. */
	CHECK_EQ_INT(parse(&r, "{\"event\":\"download\",\"oid\":\"" OID "\",\"size\":9007199254740992}"), 0);
	CHECK(r.size == TP_PROTO_SIZE_MAX);
	tp_proto_request_clear(&r);

	CHECK_EQ_INT(parse(&r, "{\"event\":\"terminate\"}"), 0);
	CHECK_EQ_INT(r.event, TP_PROTO_EVENT_TERMINATE);
	tp_proto_request_clear(&r);
}

static void test_malformed(void)
{
	static const char *bad[] = {
		"",
		"not json",
		"[1,2]",
		"\"event\"",
		"{}",
		"{\"event\":42}",
		"{\"event\":\"explode\"}",
		"{\"event\":\"init\"}",
		"{\"event\":\"init\",\"operation\":\"sideways\"}",
		"{\"event\":\"init\",\"operation\":7}",
		"{\"event\":\"init\",\"operation\":\"upload\",\"remote\":5}",
		"{\"event\":\"init\",\"operation\":\"upload\",\"concurrent\":\"yes\"}",
		"{\"event\":\"init\",\"operation\":\"upload\",\"concurrenttransfers\":-1}",
		"{\"event\":\"init\",\"operation\":\"upload\",\"concurrenttransfers\":1.5}",
		"{\"event\":\"upload\",\"size\":1,\"path\":\"/x\"}",
		"{\"event\":\"upload\",\"oid\":7,\"size\":1,\"path\":\"/x\"}",
		"{\"event\":\"upload\",\"oid\":\"" OID "\",\"size\":1}",
		"{\"event\":\"upload\",\"oid\":\"" OID "\",\"size\":1,\"path\":\"\"}",
		"{\"event\":\"upload\",\"oid\":\"" OID "\",\"size\":1,\"path\":3}",
		"{\"event\":\"download\",\"oid\":\"4D7A214614AB2935C943F9E0FF69D22EADBB8F32B1258DAAA5E2CA24D17E2393\",\"size\":1}",
		"{\"event\":\"download\",\"oid\":\"4d7a\",\"size\":1}",
		"{\"event\":\"download\",\"oid\":\"" OID "0\",\"size\":1}",
		"{\"event\":\"download\",\"oid\":\"../../../../etc/passwd-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"size\":1}",
		"{\"event\":\"download\",\"oid\":\"" OID "\"}",
		"{\"event\":\"download\",\"oid\":\"" OID "\",\"size\":\"12\"}",
		"{\"event\":\"download\",\"oid\":\"" OID "\",\"size\":-1}",
		"{\"event\":\"download\",\"oid\":\"" OID "\",\"size\":1.5}",
		"{\"event\":\"download\",\"oid\":\"" OID "\",\"size\":1e300}",
		"{\"event\":\"download\",\"oid\":\"" OID "\",\"size\":9007199254740994}",
		"{\"event\":\"terminate\"} {\"event\":\"terminate\"}",
		"{\"event\":\"terminate\"}x",
		"{\"event\":\"terminate\"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tp_proto_request r;
		int rc = parse(&r, bad[i]);
		if (rc != TP_EPROTO)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		CHECK_EQ_INT(rc, TP_EPROTO);
		CHECK(r.path == NULL && r.remote == NULL);
		tp_proto_request_clear(&r);
	}

	/* A NUL inside the line is refused, not truncated. */
	static const char nul[] = "{\"event\":\"terminate\"}\0garbage";
	tp_proto_request r;
	CHECK_EQ_INT(tp_proto_parse(&r, nul, sizeof(nul) - 1), TP_EPROTO);

	/* A bad transfer request keeps its valid oid so it can be answered. */
	CHECK_EQ_INT(parse(&r, "{\"event\":\"download\",\"oid\":\"" OID "\",\"size\":-5}"), TP_EPROTO);
	CHECK_EQ_INT(r.event, TP_PROTO_EVENT_DOWNLOAD);
	CHECK_STR(r.oid, OID);
	tp_proto_request_clear(&r);
	CHECK_EQ_INT(parse(&r, "{\"event\":\"download\",\"oid\":\"xyz\",\"size\":5}"), TP_EPROTO);
	CHECK(r.oid[0] == '\0');
}

static void test_serialize(void)
{
	tp_buf b = TP_BUF_INIT(1 << 16);
	CHECK_EQ_INT(tp_proto_format_init_ok(&b), 0);
	CHECK_STR(b.ptr, "{}\n");
	tp_buf_reset(&b);

	CHECK_EQ_INT(tp_proto_format_progress(&b, OID, 5000000000ull, 1), 0);
	CHECK_STR(b.ptr, "{\"event\":\"progress\",\"oid\":\"" OID
			 "\",\"bytesSoFar\":5000000000,\"bytesSinceLast\":1}\n");
	tp_buf_reset(&b);

	CHECK_EQ_INT(tp_proto_format_complete(&b, OID, NULL), 0);
	CHECK_STR(b.ptr, "{\"event\":\"complete\",\"oid\":\"" OID "\"}\n");
	tp_buf_reset(&b);

	CHECK_EQ_INT(tp_proto_format_complete(&b, OID, "/tmp/a \"b\"\\c"), 0);
	CHECK_STR(b.ptr, "{\"event\":\"complete\",\"oid\":\"" OID
			 "\",\"path\":\"/tmp/a \\\"b\\\"\\\\c\"}\n");
	tp_buf_reset(&b);

	CHECK_EQ_INT(tp_proto_format_complete_error(&b, OID, 404, "line\none\x01"), 0);
	CHECK_STR(b.ptr, "{\"event\":\"complete\",\"oid\":\"" OID
			 "\",\"error\":{\"code\":404,\"message\":\"line\\none\\u0001\"}}\n");
	tp_buf_reset(&b);

	CHECK_EQ_INT(tp_proto_format_init_error(&b, 400, "bad store"), 0);
	CHECK_STR(b.ptr, "{\"error\":{\"code\":400,\"message\":\"bad store\"}}\n");

	/* Every reply parses back as one JSON line (round trip via our parser
	 * would reject them as requests, so check the framing only). */
	CHECK(strchr(b.ptr, '\n') == b.ptr + b.len - 1);
	tp_buf_free(&b);

	CHECK_EQ_INT(tp_proto_error_code(TP_ENOTFOUND), 404);
	CHECK_EQ_INT(tp_proto_error_code(TP_ECORRUPT), 422);
	CHECK_EQ_INT(tp_proto_error_code(TP_EIO), 500);
}

/* Feed data through a pipe from a child so reads arrive in pieces. */
static int pipe_with(const char *data, size_t len)
{
	int fds[2];
	if (pipe(fds) != 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		/* Dribble in odd-sized pieces to split lines across reads. */
		for (size_t off = 0; off < len;) {
			size_t n = len - off < 7777 ? len - off : 7777;
			if (write(fds[1], data + off, n) < 0)
				_exit(1);
			off += n;
		}
		_exit(0);
	}
	close(fds[1]);
	return fds[0];
}

static void test_reader(void)
{
	/* A line over the cap is reported, then the next line is read. */
	size_t long_len = TP_PROTO_LINE_MAX + 10;
	tp_buf in = TP_BUF_INIT(4u << 20);
	tp_buf_adds(&in, "{\"event\":\"terminate\"}\n\n");
	for (size_t i = 0; i < long_len; i++)
		tp_buf_add(&in, "x", 1);
	tp_buf_adds(&in, "\nsecond\nlast-without-newline");

	int fd = pipe_with(in.ptr, in.len);
	CHECK(fd >= 0);
	tp_proto_reader r;
	CHECK_EQ_INT(tp_proto_reader_init(&r, fd), 0);
	const char *line;
	size_t len;
	CHECK_EQ_INT(tp_proto_reader_next(&r, &line, &len), 0);
	CHECK(line && len == 21 && strcmp(line, "{\"event\":\"terminate\"}") == 0);
	CHECK_EQ_INT(tp_proto_reader_next(&r, &line, &len), 0);
	CHECK(line && len == 0);
	CHECK_EQ_INT(tp_proto_reader_next(&r, &line, &len), TP_ETOOBIG);
	CHECK_EQ_INT(tp_proto_reader_next(&r, &line, &len), 0);
	CHECK(line && strcmp(line, "second") == 0);
	CHECK_EQ_INT(tp_proto_reader_next(&r, &line, &len), 0);
	CHECK(line && strcmp(line, "last-without-newline") == 0);
	CHECK_EQ_INT(tp_proto_reader_next(&r, &line, &len), 0);
	CHECK(line == NULL);
	tp_proto_reader_free(&r);
	close(fd);

	/* A line of exactly the cap is accepted. */
	tp_buf_reset(&in);
	for (size_t i = 0; i < TP_PROTO_LINE_MAX; i++)
		tp_buf_add(&in, "y", 1);
	tp_buf_adds(&in, "\n");
	fd = pipe_with(in.ptr, in.len);
	CHECK_EQ_INT(tp_proto_reader_init(&r, fd), 0);
	CHECK_EQ_INT(tp_proto_reader_next(&r, &line, &len), 0);
	CHECK(line && len == TP_PROTO_LINE_MAX);
	tp_proto_reader_free(&r);
	close(fd);
	tp_buf_free(&in);
}

int main(void)
{
	TP_TEST_RUN(test_init);
	TP_TEST_RUN(test_transfers);
	TP_TEST_RUN(test_malformed);
	TP_TEST_RUN(test_serialize);
	TP_TEST_RUN(test_reader);
	return TP_TEST_RESULT();
}
