/*
 * git-lfs custom transfer protocol (docs/custom-transfers.md in git-lfs):
 * one JSON object per line on stdin (requests) and stdout (responses).
 *
 * Parsing validates everything the agent relies on (event, oid, size, path)
 * so that nothing unchecked reaches the store.
 */
#ifndef TP_PROTOCOL_H
#define TP_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp_common.h"

/* Longest request line accepted; git-lfs lines are a few hundred bytes. */
#define TP_PROTO_LINE_MAX (1u << 20)
/* Largest object size accepted: JSON numbers are exact up to 2^53. */
#define TP_PROTO_SIZE_MAX (UINT64_C(1) << 53)

typedef enum {
	TP_PROTO_EVENT_INIT = 1,
	TP_PROTO_EVENT_UPLOAD,
	TP_PROTO_EVENT_DOWNLOAD,
	TP_PROTO_EVENT_TERMINATE,
} tp_proto_event;

typedef enum {
	TP_PROTO_OP_UPLOAD = 1,
	TP_PROTO_OP_DOWNLOAD,
} tp_proto_op;

typedef struct tp_proto_request {
	tp_proto_event event;
	/* init */
	tp_proto_op operation;
	char *remote;              /* may be NULL */
	bool concurrent;
	int concurrent_transfers;  /* 0 when absent */
	/* upload / download; oid is also filled, when it was valid, on a
	 * parse error of a transfer request so the caller can answer it. */
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	char *path;                /* upload only: the local file to send */
} tp_proto_request;

/* Parse one line (without its '\n'). On error returns TP_EPROTO with a
 * message; req->event and req->oid are still set when they were readable,
 * so a bad transfer request can get a per-object error reply. */
int tp_proto_parse(tp_proto_request *req, const char *line, size_t len);
/* Free what tp_proto_parse allocated and zero the request. */
void tp_proto_request_clear(tp_proto_request *req);

/* Serializers append one complete line, '\n' included, to out. */
int tp_proto_format_init_ok(tp_buf *out);
int tp_proto_format_init_error(tp_buf *out, int code, const char *message);
int tp_proto_format_progress(tp_buf *out, const char *oid, uint64_t bytes_so_far,
			     uint64_t bytes_since_last);
/* path: the downloaded file for a download, NULL for an upload. */
int tp_proto_format_complete(tp_buf *out, const char *oid, const char *path);
int tp_proto_format_complete_error(tp_buf *out, const char *oid, int code,
				   const char *message);
/* Map a TP_E* code to the HTTP-like code reported to git-lfs. */
int tp_proto_error_code(int tp_code);

/* Buffered line reader over a file descriptor with a line-length cap. */
typedef struct tp_proto_reader {
	int fd;
	char *buf;
	size_t len;   /* bytes held */
	size_t start; /* first unconsumed byte */
	bool eof;
} tp_proto_reader;

int tp_proto_reader_init(tp_proto_reader *r, int fd);
void tp_proto_reader_free(tp_proto_reader *r);
/* Next line without its '\n' (a final line without '\n' counts). *line
 * points into the reader and stays valid until the next call. Returns 0
 * with *line == NULL at end of input; TP_ETOOBIG for a line over
 * TP_PROTO_LINE_MAX (the rest of that line is skipped). */
int tp_proto_reader_next(tp_proto_reader *r, const char **line, size_t *len);

#endif
