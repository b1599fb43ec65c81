#include "tp_protocol.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- parsing ----------------------------------------------------------- */

static int parse_event(const cJSON *root, tp_proto_event *out)
{
	static const struct { const char *name; tp_proto_event ev; } events[] = {
		{ "init", TP_PROTO_EVENT_INIT },
		{ "upload", TP_PROTO_EVENT_UPLOAD },
		{ "download", TP_PROTO_EVENT_DOWNLOAD },
		{ "terminate", TP_PROTO_EVENT_TERMINATE },
	};
	const cJSON *ev = cJSON_GetObjectItemCaseSensitive(root, "event");
	if (!cJSON_IsString(ev))
		return tp_error_set(TP_EPROTO, "request has no \"event\" string");
	for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
		if (strcmp(ev->valuestring, events[i].name) == 0) {
			*out = events[i].ev;
			return 0;
		}
	}
	return tp_error_set(TP_EPROTO, "unknown event \"%.64s\"", ev->valuestring);
}

static int dup_string(char **out, const char *s)
{
	*out = strdup(s);
	return *out ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

static int parse_init(const cJSON *root, tp_proto_request *req)
{
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(root, "operation");
	if (!cJSON_IsString(op))
		return tp_error_set(TP_EPROTO, "init has no \"operation\" string");
	if (strcmp(op->valuestring, "upload") == 0)
		req->operation = TP_PROTO_OP_UPLOAD;
	else if (strcmp(op->valuestring, "download") == 0)
		req->operation = TP_PROTO_OP_DOWNLOAD;
	else
		return tp_error_set(TP_EPROTO, "init has unknown operation \"%.64s\"",
				    op->valuestring);

	const cJSON *remote = cJSON_GetObjectItemCaseSensitive(root, "remote");
	if (cJSON_IsString(remote)) {
		int rc = dup_string(&req->remote, remote->valuestring);
		if (rc)
			return rc;
	} else if (remote && !cJSON_IsNull(remote)) {
		return tp_error_set(TP_EPROTO, "init \"remote\" is not a string");
	}

	const cJSON *conc = cJSON_GetObjectItemCaseSensitive(root, "concurrent");
	if (conc && !cJSON_IsBool(conc))
		return tp_error_set(TP_EPROTO, "init \"concurrent\" is not a boolean");
	req->concurrent = cJSON_IsTrue(conc);

	const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "concurrenttransfers");
	if (n) {
		if (!cJSON_IsNumber(n) || n->valuedouble < 0 || n->valuedouble > 1024 ||
		    n->valuedouble != floor(n->valuedouble))
			return tp_error_set(TP_EPROTO,
					    "init \"concurrenttransfers\" is not a count");
		req->concurrent_transfers = (int)n->valuedouble;
	}
	return 0;
}

static int parse_transfer(const cJSON *root, tp_proto_request *req)
{
	const char *what = req->event == TP_PROTO_EVENT_UPLOAD ? "upload" : "download";
	const cJSON *oid = cJSON_GetObjectItemCaseSensitive(root, "oid");
	if (!cJSON_IsString(oid))
		return tp_error_set(TP_EPROTO, "%s has no \"oid\" string", what);
	if (!tp_oid_valid(oid->valuestring))
		return tp_error_set(TP_EPROTO, "%s oid is not 64 lowercase hex digits", what);
	memcpy(req->oid, oid->valuestring, TP_OID_HEXLEN + 1);

	const cJSON *size = cJSON_GetObjectItemCaseSensitive(root, "size");
	if (!cJSON_IsNumber(size))
		return tp_error_set(TP_EPROTO, "%s %s has no numeric \"size\"", what, req->oid);
	double d = size->valuedouble;
	if (!(d >= 0) || d != floor(d) || d > (double)TP_PROTO_SIZE_MAX)
		return tp_error_set(TP_EPROTO, "%s %s has an invalid size", what, req->oid);
	req->size = (uint64_t)d;

	const cJSON *path = cJSON_GetObjectItemCaseSensitive(root, "path");
	if (req->event == TP_PROTO_EVENT_UPLOAD) {
		if (!cJSON_IsString(path) || path->valuestring[0] == '\0')
			return tp_error_set(TP_EPROTO, "upload %s has no \"path\"", req->oid);
		return dup_string(&req->path, path->valuestring);
	}
	return 0;
}

int tp_proto_parse(tp_proto_request *req, const char *line, size_t len)
{
	int rc = 0;
	const char *end = NULL;
	memset(req, 0, sizeof(*req));
	if (len > TP_PROTO_LINE_MAX)
		return tp_error_set(TP_EPROTO, "request line longer than %u bytes",
				    TP_PROTO_LINE_MAX);
	if (memchr(line, '\0', len))
		return tp_error_set(TP_EPROTO, "request line contains a NUL byte");

	cJSON *root = cJSON_ParseWithLengthOpts(line, len, &end, false);
	if (!root) {
		rc = tp_error_set(TP_EPROTO, "request line is not valid JSON");
		goto done;
	}
	for (; end < line + len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\r') {
			rc = tp_error_set(TP_EPROTO, "trailing data after the JSON request");
			goto done;
		}
	}
	if (!cJSON_IsObject(root)) {
		rc = tp_error_set(TP_EPROTO, "request is not a JSON object");
		goto done;
	}
	if ((rc = parse_event(root, &req->event)) != 0)
		goto done;
	switch (req->event) {
	case TP_PROTO_EVENT_INIT:
		rc = parse_init(root, req);
		break;
	case TP_PROTO_EVENT_UPLOAD:
	case TP_PROTO_EVENT_DOWNLOAD:
		rc = parse_transfer(root, req);
		break;
	case TP_PROTO_EVENT_TERMINATE:
		break;
	}
done:
	cJSON_Delete(root);
	if (rc) {
		/* Keep event and oid for the error reply; drop the rest. */
		free(req->remote);
		free(req->path);
		req->remote = req->path = NULL;
		if (rc == TP_ENOMEM)
			return rc;
		return TP_EPROTO;
	}
	return 0;
}

void tp_proto_request_clear(tp_proto_request *req)
{
	if (!req)
		return;
	free(req->remote);
	free(req->path);
	memset(req, 0, sizeof(*req));
}

/* ---- serializing ------------------------------------------------------- */

/* Append s as a JSON string literal. Bytes >= 0x80 pass through: paths and
 * messages are UTF-8 on the systems git-lfs runs on. */
static int add_json_string(tp_buf *out, const char *s)
{
	int rc = tp_buf_add(out, "\"", 1);
	for (; !rc && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };
			rc = tp_buf_add(out, esc, 2);
		} else if (c == '\n') {
			rc = tp_buf_adds(out, "\\n");
		} else if (c == '\t') {
			rc = tp_buf_adds(out, "\\t");
		} else if (c < 0x20 || c == 0x7f) {
			rc = tp_buf_addf(out, "\\u%04x", c);
		} else {
			rc = tp_buf_add(out, s, 1);
		}
	}
	return rc ? rc : tp_buf_add(out, "\"", 1);
}

int tp_proto_format_init_ok(tp_buf *out)
{
	return tp_buf_adds(out, "{}\n");
}

static int add_error_object(tp_buf *out, int code, const char *message)
{
	int rc = tp_buf_addf(out, "\"error\":{\"code\":%d,\"message\":", code);
	if (!rc)
		rc = add_json_string(out, message ? message : "error");
	return rc ? rc : tp_buf_adds(out, "}");
}

int tp_proto_format_init_error(tp_buf *out, int code, const char *message)
{
	int rc = tp_buf_adds(out, "{");
	if (!rc)
		rc = add_error_object(out, code, message);
	return rc ? rc : tp_buf_adds(out, "}\n");
}

int tp_proto_format_progress(tp_buf *out, const char *oid, uint64_t so_far,
			     uint64_t since_last)
{
	return tp_buf_addf(out,
			   "{\"event\":\"progress\",\"oid\":\"%s\",\"bytesSoFar\":%llu,"
			   "\"bytesSinceLast\":%llu}\n",
			   oid, (unsigned long long)so_far, (unsigned long long)since_last);
}

int tp_proto_format_complete(tp_buf *out, const char *oid, const char *path)
{
	int rc = tp_buf_addf(out, "{\"event\":\"complete\",\"oid\":\"%s\"", oid);
	if (!rc && path) {
		rc = tp_buf_adds(out, ",\"path\":");
		if (!rc)
			rc = add_json_string(out, path);
	}
	return rc ? rc : tp_buf_adds(out, "}\n");
}

int tp_proto_format_complete_error(tp_buf *out, const char *oid, int code,
				   const char *message)
{
	int rc = tp_buf_addf(out, "{\"event\":\"complete\",\"oid\":\"%s\",", oid);
	if (!rc)
		rc = add_error_object(out, code, message);
	return rc ? rc : tp_buf_adds(out, "}\n");
}

int tp_proto_error_code(int tp_code)
{
	switch (tp_code) {
	case TP_ENOTFOUND: return 404;
	case TP_EAUTH: return 403;
	case TP_EINVAL: case TP_EPROTO: return 400;
	case TP_ETOOBIG: return 413;
	case TP_ECORRUPT: return 422;
	case TP_ENOSPACE: return 507;
	default: return 500;
	}
}

/* ---- line reader ------------------------------------------------------- */

/* One extra byte so the longest allowed line plus its '\n' fits. */
#define READER_CAP (TP_PROTO_LINE_MAX + 1)

int tp_proto_reader_init(tp_proto_reader *r, int fd)
{
	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->buf = malloc(READER_CAP + 1);
	return r->buf ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

void tp_proto_reader_free(tp_proto_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	r->buf = NULL;
}

static int fill(tp_proto_reader *r)
{
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->len - r->start);
		r->len -= r->start;
		r->start = 0;
	}
	for (;;) {
		ssize_t n = read(r->fd, r->buf + r->len, READER_CAP - r->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return tp_error_set_errno(TP_EIO, errno, "reading requests");
		if (n == 0)
			r->eof = true;
		r->len += (size_t)n;
		return 0;
	}
}

int tp_proto_reader_next(tp_proto_reader *r, const char **line, size_t *len)
{
	bool skipping = false;
	*line = NULL;
	*len = 0;
	for (;;) {
		char *base = r->buf + r->start;
		size_t avail = r->len - r->start;
		char *nl = memchr(base, '\n', avail);
		if (nl) {
			r->start += (size_t)(nl - base) + 1;
			if (skipping)
				return tp_error_set(TP_ETOOBIG, "request line longer than %u bytes",
						    TP_PROTO_LINE_MAX);
			*nl = '\0';
			*line = base;
			*len = (size_t)(nl - base);
			return 0;
		}
		if (r->eof) {
			r->start = r->len;
			if (skipping)
				return tp_error_set(TP_ETOOBIG, "request line longer than %u bytes",
						    TP_PROTO_LINE_MAX);
			if (avail == 0)
				return 0;
			base[avail] = '\0';
			*line = base;
			*len = avail;
			return 0;
		}
		if (avail == READER_CAP) {
			/* Over the cap: drop what we have and skip to the next line. */
			skipping = true;
			r->start = r->len = 0;
		}
		int rc = fill(r);
		if (rc)
			return rc;
	}
}
