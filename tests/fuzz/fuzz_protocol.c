/* Fuzz the git-lfs request parser, the line reader and the reply
 * serializers: every request byte comes from another process. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tp_protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse_one(const char *line, size_t len)
{
	tp_proto_request req;
	memset(&req, 0xa5, sizeof(req)); /* the parser must not rely on zeroed input */
	int rc = tp_proto_parse(&req, line, len);
	if (rc == 0 && (req.event == TP_PROTO_EVENT_UPLOAD || req.event == TP_PROTO_EVENT_DOWNLOAD)) {
		/* A valid transfer request carries a valid oid. */
		if (!tp_oid_valid(req.oid))
			abort();
		if (req.size > TP_PROTO_SIZE_MAX)
			abort();
	}
	tp_proto_request_clear(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy without a NUL so ASan sees any over-read. */
	char *line = malloc(size ? size : 1);
	if (!line)
		return 0;
	memcpy(line, data, size);
	parse_one(line, size);

	/* Serializers with attacker-influenced text (an error message may quote
	 * a request); the oid comes from the input when it is one. */
	tp_buf out = TP_BUF_INIT(1u << 22);
	char *msg = malloc(size + 1);
	if (msg) {
		memcpy(msg, data, size);
		msg[size] = '\0';
		const char *oid = "0000000000000000000000000000000000000000000000000000000000000000";
		for (int kind = 0; kind < 3; kind++) {
			int rc = kind == 0 ? tp_proto_format_complete_error(
						     &out, oid, tp_proto_error_code(-(int)(size % 12)), msg)
				 : kind == 1 ? tp_proto_format_init_error(&out, 500, msg)
					     : tp_proto_format_complete(&out, oid, msg);
			/* One reply is one line, whatever the message holds. */
			if (rc == 0 && (out.len == 0 || memchr(out.ptr, '\n', out.len) != out.ptr + out.len - 1))
				abort();
			tp_buf_reset(&out);
		}
		tp_buf_free(&out);
		free(msg);
	}
	free(line);

	/* The same bytes as a stream of lines through the reader, from a pipe
	 * as git-lfs gives them (max_len keeps inputs under the pipe buffer).
	 * One reader for the process: its 1 MiB buffer per input would
	 * dominate the run time; the fields reset are what init sets. */
	static tp_proto_reader r;
	if (!r.buf && tp_proto_reader_init(&r, -1) != 0)
		abort();
	int fds[2];
	if (size > 65536 || pipe(fds) != 0)
		return 0;
	if (size && tp_fs_write_all(fds[1], data, size) != 0)
		abort();
	close(fds[1]);
	r.fd = fds[0];
	r.len = r.start = 0;
	r.eof = false;
	for (int i = 0; i < 10000; i++) {
		const char *l;
		size_t n;
		int rc = tp_proto_reader_next(&r, &l, &n);
		if (rc == TP_ETOOBIG)
			continue;
		if (rc != 0 || !l)
			break;
		if (l[n] != '\0')
			abort(); /* the reader promises a NUL after the line */
		parse_one(l, n);
	}
	close(fds[0]);
	return 0;
}
