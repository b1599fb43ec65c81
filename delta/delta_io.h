/* Stream and file helpers shared by compress, apply and inspect. */
#ifndef TP_DELTA_IO_H
#define TP_DELTA_IO_H

#include "delta_internal.h"

#define TP_DELTA_MAGIC "TPKDELTA"
#define TP_DELTA_PREAMBLE 16 /* magic, u32 version, u32 plan length */
#define TP_DELTA_PLAN_MAX (256u << 20)

double tp_delta_now(void);

/* Tell the caller how far the work is (o->progress). Non-zero: the
 * caller's code, the work must stop. */
int tp_delta_report(const tp_delta_opts *o, uint64_t done, uint64_t total);

/*
 * Where a compress or apply result goes. A regular file, or a path not there
 * yet, is written under a temporary name beside it and renamed into place on
 * success, so it is whole or untouched. A device or FIFO is written directly
 * (direct): renaming over it would replace the device itself, and as root
 * `-o /dev/null` would turn the system's /dev/null into a file. A symlink
 * is written through: the regular file it points to is replaced and the
 * link kept; a link to nothing is refused.
 */
typedef struct tp_tmpfile {
	int fd;
	char *path;             /* the temporary; NULL when direct */
	const char *final_path;
	char *owned;            /* a symlink's resolved target */
	bool direct;
} tp_tmpfile;

int tp_tmpfile_open(tp_tmpfile *t, const char *final_path);
/* Publish (rc == 0) or discard (rc < 0); returns the final result. A direct
 * output cannot be discarded: what was written stays written. */
int tp_tmpfile_finish(tp_tmpfile *t, int rc);

typedef struct tp_reader {
	tp_delta_read_fn read;
	void *ctx;
	uint64_t pos;
} tp_reader;

/* Read exactly n bytes; a short read is a truncated delta. */
int tp_reader_exact(tp_reader *r, void *buf, size_t n);
/* Read the preamble and the plan. */
int tp_reader_plan(tp_reader *r, tp_delta_layout **out);
/* Read the next frame into buf[cap]; *end is set for the end frame, whose
 * TP_DELTA_END_LEN bytes are then in buf. */
int tp_reader_frame(tp_reader *r, uint8_t *buf, size_t cap, tp_chunk_head *h, bool *end);

#endif
