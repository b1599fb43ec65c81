/* Apply and inspect: read the plan, then the frames in order. Frames are
 * decoded on worker threads; the sha256 of the output is taken in order,
 * either by the workers (the pipe's ordered stage: whichever worker finds
 * the next chunk decoded hashes it, none sleeps waiting for its turn) or,
 * with a single worker, by this thread beside the writes, so that decoding
 * and hashing overlap (--threads 2). The sha256 is checked before the output is published. */
#include "delta_internal.h"
#include "delta_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct dslot {
	tp_chunk_desc d;
	uint8_t *frame; /* as read */
	size_t frame_len;
	uint8_t *out;   /* decoded chunk */
	uint64_t base_off;
} dslot;

typedef struct decoder {
	const tp_delta_layout *m;
	unsigned char digest[TP_SHA256_LEN]; /* the target's, once checked */
	const tp_map **base_of; /* layout base -> mapped file */
	tp_chunk_coder *coders;
	unsigned threads; /* decode workers */
	bool hash_on_main; /* else the pipe's ordered stage hashes */
	dslot *slots;
	size_t window, frame_cap;
	tp_pipe *pipe;
	tp_delta_write_fn write; /* NULL: hash only */
	void *write_ctx;
	tp_sha256 sha;
	const tp_delta_opts *o;
	uint64_t done;
} decoder;

static int decode_job(void *ctx, size_t i, unsigned worker)
{
	decoder *dc = ctx;
	dslot *s = &dc->slots[i];
	return tp_chunk_decode(&dc->coders[worker], &s->d, s->frame, s->frame_len, s->out);
}

/* The pipe's ordered stage: one chunk at a time, in order. */
static int hash_job(void *ctx, size_t i, unsigned worker)
{
	(void)worker;
	decoder *dc = ctx;
	tp_sha256_update(&dc->sha, dc->slots[i].out, dc->slots[i].d.len);
	return 0;
}

/* Each base recorded in the plan must be among those given: matched by
 * fingerprint, so order and file names do not matter. */
static int match_bases(decoder *dc, const tp_base_set *b)
{
	const tp_delta_layout *m = dc->m;
	char (*fps)[65] = calloc(b->len ? b->len : 1, sizeof(*fps));
	dc->base_of = calloc(m->nbases ? m->nbases : 1, sizeof(*dc->base_of));
	int rc = 0;
	if (!fps || !dc->base_of) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < b->len; i++)
		tp_map_fingerprint(&b->ptr[i].map, fps[i]);
	for (size_t k = 0; k < m->nbases; k++) {
		for (size_t i = 0; i < b->len && !dc->base_of[k]; i++)
			if (b->ptr[i].map.size == m->bases[k].size &&
			    strcmp(fps[i], m->bases[k].fingerprint) == 0)
				dc->base_of[k] = &b->ptr[i].map;
		if (!dc->base_of[k]) {
			rc = tp_error_set(TP_ENOTFOUND,
					  "wrong or missing base: the delta was made against '%s' "
					  "(%llu bytes, fingerprint %.16s), and no --base matches it",
					  m->bases[k].name, (unsigned long long)m->bases[k].size,
					  m->bases[k].fingerprint);
			goto done;
		}
	}
done:
	free(fps);
	return rc;
}

static void decoder_fini(decoder *dc)
{
	tp_pipe_free(dc->pipe);
	for (size_t i = 0; dc->slots && i < dc->window; i++) {
		free(dc->slots[i].frame);
		free(dc->slots[i].out);
	}
	for (unsigned i = 0; dc->coders && i < dc->threads; i++)
		tp_chunk_coder_fini(&dc->coders[i]);
	free(dc->slots);
	free(dc->coders);
	free(dc->base_of);
}

static int decoder_init(decoder *dc, const tp_delta_layout *m, const tp_base_set *b,
			const tp_delta_opts *o)
{
	dc->m = m;
	dc->o = o;
	dc->threads = o->threads;
	/* Two more than the workers: a chunk being read and one being written
	 * do not stall them. */
	dc->window = 2 * (size_t)o->threads + 2;
	dc->frame_cap = tp_chunk_frame_bound(m->chunk_size);
	int rc = match_bases(dc, b);
	if (rc < 0)
		return rc;
	dc->coders = calloc(dc->threads, sizeof(*dc->coders));
	dc->slots = calloc(dc->window, sizeof(*dc->slots));
	if (!dc->coders || !dc->slots)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < dc->window; i++) {
		dc->slots[i].frame = malloc(dc->frame_cap);
		dc->slots[i].out = malloc(m->chunk_size);
		if (!dc->slots[i].frame || !dc->slots[i].out)
			return tp_error_set(TP_ENOMEM, "out of memory");
	}
	for (unsigned i = 0; i < dc->threads; i++)
		if ((rc = tp_chunk_coder_init(&dc->coders[i], m->chunk_size)) < 0)
			return rc;
	tp_sha256_init(&dc->sha);
	/* threads counts the CPUs kept busy. With two, one worker decodes while
	 * this thread hashes and writes, as zstd -d writes from a second thread;
	 * with more, the workers also hash, in the pipe's ordered stage, and this
	 * thread's share is only reading and writing, the serial part that bounds
	 * scaling; with one, everything runs inline on this thread. */
	unsigned workers = dc->threads > 1 ? dc->threads - 1 : 0;
	dc->hash_on_main = workers == 1;
	return tp_pipe_new_ordered(&dc->pipe, workers, dc->window, decode_job,
				   dc->hash_on_main ? NULL : hash_job, dc);
}

/* Read chunk `index` of segment `seg` into a slot, checking it belongs there. */
static int read_chunk(decoder *dc, tp_reader *r, dslot *s, uint32_t seg, uint32_t index)
{
	const tp_delta_seg_info *sg = &dc->m->segs[seg];
	uint64_t off = (uint64_t)index * dc->m->chunk_size;
	tp_chunk_head h;
	bool end;
	int rc = tp_reader_frame(r, s->frame, dc->frame_cap, &h, &end);
	if (rc < 0)
		return rc;
	if (end)
		return tp_error_set(TP_ECORRUPT, "delta: ends before segment %u is complete", seg);
	s->frame_len = h.frame_size;
	s->d.xform = sg->xform;
	s->d.width = tp_delta_seg_width(sg);
	s->d.seg = seg;
	s->d.index = index;
	s->d.len = (size_t)(sg->size - off < dc->m->chunk_size ? sg->size - off : dc->m->chunk_size);
	s->base_off = sg->base_offset + off;
	s->d.base = sg->base >= 0 ? dc->base_of[sg->base]->ptr + s->base_off : NULL;
	s->d.dtype = sg->dtype;
	s->d.row = sg->row;
	s->d.first = off / s->d.width;
	return 0;
}

static int write_chunk(decoder *dc, const dslot *s)
{
	const tp_delta_seg_info *sg = &dc->m->segs[s->d.seg];
	if (sg->base >= 0)
		tp_map_release(dc->base_of[sg->base], s->base_off, s->d.len);
	if (dc->hash_on_main)
		tp_sha256_update(&dc->sha, s->out, s->d.len);
	dc->done += s->d.len;
	int rc = tp_delta_report(dc->o, dc->done, dc->m->target_size);
	if (rc)
		return rc;
	rc = dc->write ? dc->write(dc->write_ctx, s->out, s->d.len) : 0;
	return rc < 0 ? tp_error_wrap(rc, "writing output") : 0;
}

/* Keeps `window` frames in flight: read ahead, decode on the pool, write in order. */
static int decode_all(decoder *dc, tp_reader *r)
{
	size_t w = dc->window;
	uint64_t next = 0, done = 0;
	uint32_t seg = 0, index = 0;
	int rc = 0;
	for (;;) {
		while (seg < dc->m->nsegs && index >= dc->m->segs[seg].chunks) {
			seg++;
			index = 0;
		}
		bool more = seg < dc->m->nsegs;
		if (more && next - done < w) {
			if ((rc = read_chunk(dc, r, &dc->slots[next % w], seg, index++)) < 0)
				return rc;
			tp_pipe_submit(dc->pipe, next++);
			continue;
		}
		if (done == next)
			return 0;
		if ((rc = tp_pipe_wait(dc->pipe, done)) < 0 ||
		    (rc = write_chunk(dc, &dc->slots[done % w])) != 0)
			return rc;
		done++;
	}
}

static int check_end(decoder *dc, tp_reader *r)
{
	uint8_t end[TP_DELTA_END_LEN], d[TP_SHA256_LEN], extra;
	tp_chunk_head h;
	bool is_end;
	int rc = tp_reader_frame(r, end, sizeof(end), &h, &is_end);
	if (rc < 0)
		return rc;
	if (!is_end || tp_rd64(end + 8) != dc->m->target_size)
		return tp_error_set(TP_ECORRUPT, "delta: bad end frame");
	size_t got = 0;
	if ((rc = r->read(r->ctx, &extra, 1, &got)) < 0)
		return rc;
	if (got)
		return tp_error_set(TP_ECORRUPT, "delta: trailing bytes after the end frame");
	tp_sha256_final(&dc->sha, d);
	if (memcmp(d, end + 16, TP_SHA256_LEN) != 0) {
		char want[65], have[65];
		tp_sha256_hex(end + 16, want);
		tp_sha256_hex(d, have);
		return tp_error_set(TP_ECORRUPT,
				    "rebuilt file has sha256 %.16s…, the delta expects %.16s… "
				    "(corrupt delta or wrong base)", have, want);
	}
	memcpy(dc->digest, d, TP_SHA256_LEN);
	return 0;
}

int tp_delta_apply_to(tp_delta_read_fn read, void *read_ctx,
		      const char *const *bases, size_t nbases, tp_delta_write_fn write,
		      void *write_ctx, const tp_delta_opts *opts, tp_delta_stats *stats)
{
	double t0 = tp_delta_now();
	tp_delta_opts o = { 0 };
	if (opts)
		o = *opts;
	if (!o.threads)
		o.threads = tp_delta_default_threads();
	tp_reader r = { read, read_ctx, 0 };
	tp_delta_layout *m = NULL;
	tp_base_set b = { 0 };
	decoder dc = { .write = write, .write_ctx = write_ctx };
	int rc;
	if ((rc = tp_reader_plan(&r, &m)) < 0)
		goto done;
	if (o.expect_size && m->target_size != o.expect_size) {
		rc = tp_error_set(TP_ECORRUPT, "delta: rebuilds %llu bytes, expected %llu",
				  (unsigned long long)m->target_size,
				  (unsigned long long)o.expect_size);
		goto done;
	}
	if ((rc = tp_base_set_open(&b, bases, nbases)) < 0 ||
	    (rc = decoder_init(&dc, m, &b, &o)) < 0 || (rc = decode_all(&dc, &r)) != 0 ||
	    (rc = check_end(&dc, &r)) < 0)
		goto done;
	if (stats) {
		stats->target_bytes = m->target_size;
		stats->delta_bytes = r.pos;
		stats->seconds = tp_delta_now() - t0;
		memcpy(stats->sha256, dc.digest, sizeof(stats->sha256));
	}
done:
	decoder_fini(&dc);
	tp_base_set_close(&b);
	tp_delta_layout_free(m);
	return rc ? tp_error_wrap(rc, "delta apply") : 0;
}

int tp_delta_apply(tp_delta_read_fn read, void *read_ctx,
		   const char *const *bases, size_t nbases, int out_fd,
		   const tp_delta_opts *opts, tp_delta_stats *stats)
{
	return tp_delta_apply_to(read, read_ctx, bases, nbases, tp_delta_fd_write, &out_fd, opts,
				 stats);
}

int tp_delta_apply_file(const char *delta_path, const char *const *bases, size_t nbases,
			const char *out_path, const tp_delta_opts *opts,
			tp_delta_stats *stats)
{
	int fd = open(delta_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", delta_path);
	tp_tmpfile t;
	int rc = tp_tmpfile_open(&t, out_path);
	if (rc == 0) {
		tp_delta_durable w = { .fd = t.fd };
		rc = tp_delta_apply_to(tp_delta_fd_read, &fd, bases, nbases, tp_delta_durable_write,
				       &w, opts, stats);
		rc = tp_tmpfile_finish(&t, rc);
	}
	close(fd);
	return rc;
}

/* ---- inspect ------------------------------------------------------------------ */

static int scan_frames(tp_delta_layout *m, tp_reader *r)
{
	size_t cap = tp_chunk_frame_bound(m->chunk_size);
	uint8_t *buf = malloc(cap);
	int rc = 0;
	if (!buf)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (;;) {
		tp_chunk_head h;
		bool end;
		if ((rc = tp_reader_frame(r, buf, cap, &h, &end)) < 0)
			break;
		if (end) {
			memcpy(m->sha256, buf + 16, TP_SHA256_LEN);
			break;
		}
		if (h.seg >= m->nsegs) {
			rc = tp_error_set(TP_ECORRUPT, "delta: frame for segment %u of %zu", h.seg,
					  m->nsegs);
			break;
		}
		m->segs[h.seg].stored_bytes += h.frame_size;
		m->segs[h.seg].same_chunks += (h.flags & TP_DELTA_FLAG_SAME) != 0;
	}
	free(buf);
	return rc;
}

int tp_delta_inspect(tp_delta_layout **out, tp_delta_read_fn read, void *read_ctx)
{
	tp_reader r = { read, read_ctx, 0 };
	tp_delta_layout *m = NULL;
	int rc = tp_reader_plan(&r, &m);
	if (rc == 0)
		rc = scan_frames(m, &r);
	if (rc < 0) {
		tp_delta_layout_free(m);
		return tp_error_wrap(rc, "delta inspect");
	}
	m->delta_size = r.pos;
	*out = m;
	return 0;
}
