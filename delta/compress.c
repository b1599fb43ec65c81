/* Compress and estimate: plan the segments of the target, then code its
 * chunks on the worker pool and emit the frames in order. */
#include "delta_internal.h"
#include "delta_io.h"

#include <stdlib.h>
#include <string.h>

/* Bytes of each tensor coded both ways to choose XOR or ULP. */
#define CHOOSE_SAMPLE (64u << 10)
#define CHOOSE_LEVEL 1
/* Estimate codes 1 in 8 chunks of each kind of segment (at least 4, or all
 * when there are fewer), unless told another stride. */
#define ESTIMATE_ALL 4u
#define ESTIMATE_STRIDE 8u
/* Kinds of segment that code alike: transform x dtype (or none) x base. */
#define KINDS ((TP_DELTA_XFORM_QGRID + 1) * (TP_DTYPE_COUNT + 1) * 2)

typedef struct job {
	uint32_t seg, index;
} job;

typedef struct slot {
	tp_chunk_desc d;
	tp_chunk_desc v; /* verify: the same chunk as apply will decode it */
	uint8_t *out;
	size_t out_len;
	uint64_t bases_to; /* base bytes (all bases in order) hashed by this job's end */
} slot;

typedef struct coder {
	const tp_delta_layout *m;
	const tp_map *target;
	const tp_base_set *bases;
	int level;
	unsigned threads;
	tp_chunk_coder *coders; /* one per worker */
	slot *slots;
	size_t window, frame_cap;
	tp_pipe *pipe;
	/* compress: the target's sha256, fed by the jobs in job order (NULL
	 * for estimate). */
	tp_sha256 *sha;
	/* compress with opts.base_sha256: each base file hashed whole, in
	 * order, advancing with the target (bases_to), so that a base's bytes
	 * are hashed about when the jobs read them. Touched only by hash_job
	 * (one worker at a time; then by the main thread after the jobs). */
	tp_sha256 *base_sha;
	size_t base_at;       /* base being hashed */
	uint64_t base_off;    /* bytes of it hashed */
	uint64_t bases_total; /* bytes of all bases */
	/* verify: the plan parsed back from the JSON written, the base each
	 * of its bases resolves to, and one decode buffer per worker. */
	tp_delta_layout *vm;
	const tp_map **vbase;
	uint8_t **checks;
} coder;

/* Called in job order once a chunk's frame is ready. */
typedef int (*sink_fn)(void *ctx, const slot *s);

static void resolve_opts(tp_delta_opts *o, const tp_delta_opts *in)
{
	memset(o, 0, sizeof(*o));
	if (in)
		*o = *in;
	if (!o->threads)
		o->threads = tp_delta_default_threads();
	if (!o->level)
		o->level = TP_DELTA_LEVEL_DEFAULT;
	if (!o->chunk_size)
		o->chunk_size = TP_DELTA_CHUNK_DEFAULT;
}

/* ---- planning --------------------------------------------------------------- */

static size_t sample_cost(tp_chunk_coder *c, tp_delta_xform x, unsigned w, const uint8_t *t,
			  const uint8_t *b, size_t len)
{
	tp_delta_split(x, w, t, b, len, c->planes);
	size_t total = 0, n = len / w;
	uint8_t *dst = c->planes + len;
	for (unsigned p = 0; p < w; p++) {
		size_t r = ZSTD_compressCCtx(c->cctx, dst, ZSTD_compressBound(n), c->planes + p * n,
					     n, CHOOSE_LEVEL);
		total += ZSTD_isError(r) ? n : r;
	}
	return total;
}

/* XOR, ULP or no base at all (PLANES: an unrelated "base" only adds
 * noise), whichever codes a sample from the middle of the tensor smallest. */
static tp_delta_xform choose_xform(tp_chunk_coder *c, unsigned w, const uint8_t *t,
				   const uint8_t *b, uint64_t size)
{
	static const tp_delta_xform candidates[] = { TP_DELTA_XFORM_XOR, TP_DELTA_XFORM_ULP,
						     TP_DELTA_XFORM_PLANES };
	size_t len = size < CHOOSE_SAMPLE ? (size_t)size : CHOOSE_SAMPLE;
	uint64_t off = (size - len) / 2 / w * w;
	tp_delta_xform best = TP_DELTA_XFORM_XOR;
	size_t best_cost = SIZE_MAX;
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		tp_delta_xform x = candidates[i];
		size_t cost = sample_cost(c, x, w, t + off, x == TP_DELTA_XFORM_PLANES ? NULL : b + off,
					  len);
		if (cost < best_cost) {
			best = x;
			best_cost = cost;
		}
	}
	return best;
}

/* The base tensor with the same name, dtype and shape, if any. */
static const tp_st_tensor *find_base(const tp_base_set *b, const tp_st_tensor *t, int *which)
{
	for (size_t i = 0; i < b->len; i++) {
		const tp_safetensors *st = b->ptr[i].st;
		const tp_st_tensor *bt = st ? tp_safetensors_find(st, t->name) : NULL;
		if (bt && bt->dtype == t->dtype && bt->ndim == t->ndim &&
		    memcmp(bt->shape, t->shape, t->ndim * sizeof(t->shape[0])) == 0) {
			*which = (int)i;
			return bt;
		}
	}
	return NULL;
}

static tp_delta_seg_info *new_seg(tp_delta_layout *m, uint64_t offset, uint64_t size)
{
	tp_delta_seg_info *s = &m->segs[m->nsegs++];
	memset(s, 0, sizeof(*s));
	s->xform = TP_DELTA_XFORM_PLAIN;
	s->offset = offset;
	s->size = size;
	s->base = -1;
	s->chunks = tp_delta_seg_chunks(s, m->chunk_size);
	return s;
}

static int plan_tensor(tp_delta_layout *m, const tp_st_tensor *t, const tp_map *target,
		       const tp_base_set *b, const tp_delta_opts *o, tp_chunk_coder *c)
{
	tp_delta_seg_info *s = new_seg(m, t->offset, t->size);
	if (!(s->name = strdup(t->name)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	s->dtype = t->dtype;
	bool is_float = tp_dtype_is_float(t->dtype);
	const tp_st_tensor *bt = find_base(b, t, &s->base);
	if (bt)
		s->base_offset = bt->offset;
	if (!is_float)
		return 0;
	if (!bt) {
		s->xform = TP_DELTA_XFORM_PLANES;
		return 0;
	}
	s->xform = o->force_xform != TP_DELTA_XFORM_AUTO
			   ? o->force_xform
			   : choose_xform(c, tp_dtype_size(t->dtype), target->ptr + t->offset,
					  b->ptr[s->base].map.ptr + bt->offset, t->size);
	if (s->xform != TP_DELTA_XFORM_PLANES &&
	    tp_qgrid_choose(c, t, target->ptr + t->offset, b->ptr[s->base].map.ptr + bt->offset,
			    o->force_xform, &s->row)) {
		s->xform = TP_DELTA_XFORM_QGRID;
		m->version = 2; /* the only version-2 feature */
	} else if (s->xform == TP_DELTA_XFORM_QGRID) {
		s->xform = TP_DELTA_XFORM_ULP; /* forced where qgrid cannot code */
	}
	/* The sample's pages are not needed until the tensor is coded. */
	tp_map_release(target, t->offset, t->size);
	tp_map_release(&b->ptr[s->base].map, bt->offset, t->size);
	if (s->xform == TP_DELTA_XFORM_PLANES)
		s->base = -1;
	return 0;
}

static int plan_bases(tp_delta_layout *m, const tp_base_set *b)
{
	m->bases = calloc(b->len ? b->len : 1, sizeof(*m->bases));
	if (!m->bases)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < b->len; i++) {
		tp_delta_base_info *bi = &m->bases[m->nbases++];
		const char *slash = strrchr(b->ptr[i].map.path, '/');
		if (!(bi->name = strdup(slash ? slash + 1 : b->ptr[i].map.path)))
			return tp_error_set(TP_ENOMEM, "out of memory");
		bi->size = b->ptr[i].map.size;
		tp_map_fingerprint(&b->ptr[i].map, bi->fingerprint);
	}
	return 0;
}

/* Segments tile the target: header, each tensor, and any bytes between. */
static int plan_segments(tp_delta_layout *m, const tp_safetensors *st, const tp_map *target,
			 const tp_base_set *b, const tp_delta_opts *o)
{
	size_t cap = st ? 2 * st->ntensors + 2 : 1;
	tp_chunk_coder c;
	int rc = 0;
	if (!(m->segs = calloc(cap, sizeof(*m->segs))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (!st) { /* not safetensors: opaque bytes */
		new_seg(m, 0, target->size);
		return 0;
	}
	/* Sampling splits into planes[0, len) and compresses into the rest. */
	if ((rc = tp_chunk_coder_init(&c, CHOOSE_SAMPLE + ZSTD_compressBound(CHOOSE_SAMPLE))) < 0)
		return rc;
	uint64_t pos = 0;
	for (size_t i = 0; rc == 0 && i < st->ntensors; i++) {
		const tp_st_tensor *t = &st->tensors[i];
		if (t->offset > pos)
			new_seg(m, pos, t->offset - pos);
		rc = plan_tensor(m, t, target, b, o, &c);
		pos = t->offset + t->size;
	}
	if (rc == 0 && pos < target->size)
		new_seg(m, pos, target->size - pos);
	tp_chunk_coder_fini(&c);
	return rc;
}

static int plan_new(tp_delta_layout **out, const tp_map *target, const tp_base_set *b,
		    const tp_delta_opts *o)
{
	tp_delta_layout *m = calloc(1, sizeof(*m));
	tp_safetensors *st = NULL;
	int rc;
	if (!m)
		return tp_error_set(TP_ENOMEM, "out of memory");
	m->version = TP_DELTA_VERSION;
	m->target_size = target->size;
	m->chunk_size = o->chunk_size;
	if (target->size >= 8 &&
	    tp_safetensors_parse(&st, target->ptr, (size_t)target->size, target->size) < 0)
		tp_trace("delta: %s is not safetensors, coding it as bytes: %s", target->path,
			 tp_error_last());
	if ((rc = plan_bases(m, b)) == 0)
		rc = plan_segments(m, st, target, b, o);
	tp_safetensors_free(st);
	if (rc < 0)
		tp_delta_layout_free(m);
	else
		*out = m;
	return rc;
}

/* A plan made by tp_delta_estimate of these files (opts.plan), copied
 * through its JSON, as apply reads it: 0, or 1 when it does not fit them
 * (sizes, chunk size, a base's size or fingerprint) or cannot be copied,
 * and they are planned again. */
static int plan_reuse(tp_delta_layout **out, const tp_delta_layout *p, const tp_map *target,
		      const tp_base_set *b, const tp_delta_opts *o)
{
	char fp[65], *json = NULL;
	size_t len = 0;
	if (p->target_size != target->size || p->chunk_size != o->chunk_size || p->nbases != b->len)
		return 1;
	for (size_t i = 0; i < b->len; i++) {
		tp_map_fingerprint(&b->ptr[i].map, fp);
		if (p->bases[i].size != b->ptr[i].map.size || strcmp(p->bases[i].fingerprint, fp) != 0)
			return 1;
	}
	int rc = tp_delta_plan_write(p, &json, &len);
	if (rc == 0)
		rc = tp_delta_plan_parse(out, json, len);
	free(json);
	return rc < 0 ? 1 : 0;
}

/* ---- running chunk jobs on the pool --------------------------------------- */

/* Decode the frame just encoded, the way apply will, and compare it with
 * the target chunk while both are still in cache. */
static int verify_chunk(coder *c, slot *s, unsigned worker)
{
	uint8_t *back = c->checks[worker];
	int rc = tp_chunk_decode(&c->coders[worker], &s->v, s->out, s->out_len, back);
	if (rc < 0)
		return tp_error_wrap(rc, "delta: proving chunk %u of segment %u", s->d.index,
				     s->d.seg);
	if (s->v.len != s->d.len || memcmp(back, s->d.target, s->d.len) != 0)
		return tp_error_set(TP_ECORRUPT, "delta: chunk %u of segment %u does not decode to "
				    "the target's bytes", s->d.index, s->d.seg);
	return 0;
}

/* Hash the bases in order up to byte `to` of their concatenation, dropping
 * the hashed pages from RSS as they go. */
static void hash_bases_to(coder *c, uint64_t to)
{
	uint64_t before = 0;
	for (size_t i = 0; i < c->base_at; i++)
		before += c->bases->ptr[i].map.size;
	while (c->base_at < c->bases->len && before + c->base_off < to) {
		const tp_map *m = &c->bases->ptr[c->base_at].map;
		uint64_t n = m->size - c->base_off;
		if (n > to - before - c->base_off)
			n = to - before - c->base_off;
		for (uint64_t k = 0; k < n;) {
			/* size_t may be narrower than a file size. */
			size_t step = n - k > ((size_t)1 << 30) ? (size_t)1 << 30 : (size_t)(n - k);
			tp_sha256_update(&c->base_sha[c->base_at], m->ptr + c->base_off + k, step);
			k += step;
		}
		tp_map_release(m, c->base_off, n);
		c->base_off += n;
		if (c->base_off == m->size) {
			before += m->size;
			c->base_at++;
			c->base_off = 0;
		}
	}
}

static int encode_job(void *ctx, size_t i, unsigned worker)
{
	coder *c = ctx;
	slot *s = &c->slots[i];
	int rc = tp_chunk_encode(&c->coders[worker], &s->d, c->level, s->out, c->frame_cap,
				 &s->out_len);
	if (rc == 0 && c->vm)
		rc = verify_chunk(c, s, worker);
	return rc;
}

/* Hash the target chunk in job order on a worker, the pipe's ordered stage
 * (compress only): on the main thread, the hash was the serial part that
 * bounded scaling, and a worker waiting for its turn to hash idled while
 * the job before it was still being coded (most of the 2-thread run's
 * wall time on a loaded 2-core machine). Run by one worker at a time. */
static int hash_job(void *ctx, size_t i, unsigned worker)
{
	coder *c = ctx;
	const slot *s = &c->slots[i];
	(void)worker;
	tp_sha256_update(c->sha, s->d.target, s->d.len);
	if (c->base_sha)
		hash_bases_to(c, s->bases_to);
	return 0;
}

static void coder_fini(coder *c)
{
	tp_pipe_free(c->pipe);
	free(c->base_sha);
	for (unsigned i = 0; c->checks && i < c->threads; i++)
		free(c->checks[i]);
	free(c->checks);
	free(c->vbase);
	tp_delta_layout_free(c->vm);
	for (size_t i = 0; c->slots && i < c->window; i++)
		free(c->slots[i].out);
	for (unsigned i = 0; c->coders && i < c->threads; i++)
		tp_chunk_coder_fini(&c->coders[i]);
	free(c->slots);
	free(c->coders);
}

/* ordered: the pipe's in-order stage (hash_job for compress), or NULL. */
static int coder_init(coder *c, const tp_delta_layout *m, const tp_map *target,
		      const tp_base_set *b, const tp_delta_opts *o, tp_pipe_fn ordered)
{
	memset(c, 0, sizeof(*c));
	c->m = m;
	c->target = target;
	c->bases = b;
	c->level = o->level;
	c->threads = o->threads;
	/* Two jobs per worker keep everyone busy while the oldest is written. */
	c->window = 2 * (size_t)o->threads;
	c->frame_cap = tp_chunk_frame_bound(m->chunk_size);
	c->coders = calloc(c->threads, sizeof(*c->coders));
	c->slots = calloc(c->window, sizeof(*c->slots));
	if (!c->coders || !c->slots)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t i = 0; i < c->window; i++)
		if (!(c->slots[i].out = malloc(c->frame_cap)))
			return tp_error_set(TP_ENOMEM, "out of memory");
	for (unsigned i = 0; i < c->threads; i++) {
		int rc = tp_chunk_coder_init(&c->coders[i], m->chunk_size);
		if (rc < 0)
			return rc;
	}
	return tp_pipe_new_ordered(&c->pipe, c->threads > 1 ? c->threads : 0, c->window, encode_job,
				   ordered, c);
}

static void fill_desc(const coder *c, tp_chunk_desc *d, const job *j)
{
	const tp_delta_seg_info *s = &c->m->segs[j->seg];
	uint64_t off = (uint64_t)j->index * c->m->chunk_size;
	d->xform = s->xform;
	d->width = tp_delta_seg_width(s);
	d->seg = j->seg;
	d->index = j->index;
	d->len = (size_t)(s->size - off < c->m->chunk_size ? s->size - off : c->m->chunk_size);
	d->target = c->target->ptr + s->offset + off;
	d->dtype = s->dtype;
	d->row = s->row;
	d->first = off / d->width;
	d->base = s->base >= 0 ? c->bases->ptr[s->base].map.ptr + s->base_offset + off : NULL;
}

/* The chunk as apply will decode it: from the parsed plan, not m. */
static void fill_verify(const coder *c, tp_chunk_desc *v, const job *j)
{
	const tp_delta_seg_info *s = &c->vm->segs[j->seg];
	uint64_t off = (uint64_t)j->index * c->vm->chunk_size;
	memset(v, 0, sizeof(*v));
	v->xform = s->xform;
	v->width = tp_delta_seg_width(s);
	v->seg = j->seg;
	v->index = j->index;
	v->len = (size_t)(s->size - off < c->vm->chunk_size ? s->size - off : c->vm->chunk_size);
	v->base = s->base >= 0 ? c->vbase[s->base]->ptr + s->base_offset + off : NULL;
	v->dtype = s->dtype;
	v->row = s->row;
	v->first = off / v->width;
}

/* Where the bases' hash should be once the target is hashed through byte
 * `through`: the same fraction of the bases' bytes, all of them at the end. */
static uint64_t bases_share(const coder *c, uint64_t through)
{
	uint64_t t = c->m->target_size;
	if (through >= t)
		return c->bases_total;
	return (uint64_t)((double)c->bases_total * ((double)through / (double)t));
}

static int run_jobs(coder *c, const job *jobs, size_t njobs, sink_fn sink, void *sink_ctx)
{
	int rc = 0;
	size_t w = c->window, next = 0;
	uint64_t through = 0; /* target bytes of the jobs submitted */
	for (size_t done = 0; rc == 0 && done < njobs;) {
		if (next < njobs && next - done < w) {
			fill_desc(c, &c->slots[next % w].d, &jobs[next]);
			through += c->slots[next % w].d.len;
			c->slots[next % w].bases_to = bases_share(c, through);
			if (c->vm)
				fill_verify(c, &c->slots[next % w].v, &jobs[next]);
			tp_pipe_submit(c->pipe, next++);
			continue;
		}
		if ((rc = tp_pipe_wait(c->pipe, done)) == 0)
			rc = sink(sink_ctx, &c->slots[done % w]);
		done++;
	}
	return rc;
}

/* Drop a coded chunk's input pages so RSS stays flat however big the files. */
static void release_chunk(const coder *c, const tp_chunk_desc *d)
{
	const tp_delta_seg_info *seg = &c->m->segs[d->seg];
	uint64_t off = (uint64_t)d->index * c->m->chunk_size;
	tp_map_release(c->target, seg->offset + off, d->len);
	if (seg->base >= 0)
		tp_map_release(&c->bases->ptr[seg->base].map, seg->base_offset + off, d->len);
}

/* Segments of one kind code to about the same fraction of their bytes, so
 * an estimate samples each kind as a whole: a model of many tensors of a
 * few chunks each is sampled 1 in 8 too, not coded entirely. */
static unsigned seg_kind(const tp_delta_seg_info *s)
{
	unsigned dt = s->name ? (unsigned)s->dtype : TP_DTYPE_COUNT;
	return ((unsigned)s->xform * (TP_DTYPE_COUNT + 1) + dt) * 2 + (s->base >= 0);
}

/* How many of a kind's nc chunks to code: all of them (stride 0), or for
 * an estimate, 1 in stride (at least ESTIMATE_ALL). */
static uint64_t chunks_wanted(uint64_t nc, unsigned stride)
{
	if (!stride || nc <= ESTIMATE_ALL)
		return nc;
	uint64_t want = (nc + stride - 1) / stride;
	return want < ESTIMATE_ALL ? ESTIMATE_ALL : want;
}

/* The chunks to code, in file order; when sampling (stride), evenly
 * spaced over the chunks of each kind. */
static int list_jobs(const tp_delta_layout *m, unsigned stride, job **out, size_t *n)
{
	uint64_t total[KINDS] = { 0 }, seen[KINDS] = { 0 }, picked[KINDS] = { 0 }, want[KINDS];
	size_t all = 0;
	for (size_t i = 0; i < m->nsegs; i++) {
		total[seg_kind(&m->segs[i])] += m->segs[i].chunks;
		all += (size_t)m->segs[i].chunks;
	}
	for (unsigned k = 0; k < KINDS; k++)
		want[k] = chunks_wanted(total[k], stride);
	job *j = malloc((all ? all : 1) * sizeof(*j));
	if (!j)
		return tp_error_set(TP_ENOMEM, "out of memory");
	size_t n_out = 0;
	for (size_t i = 0; i < m->nsegs; i++) {
		unsigned k = seg_kind(&m->segs[i]);
		for (uint64_t c = 0; c < m->segs[i].chunks; c++, seen[k]++) {
			/* Pick p of want lies at chunk p * total / want of the kind. */
			if (picked[k] < want[k] && seen[k] == picked[k] * total[k] / want[k]) {
				j[n_out++] = (job){ (uint32_t)i, (uint32_t)c };
				picked[k]++;
			}
		}
	}
	*out = j;
	*n = n_out;
	return 0;
}

/* ---- compress --------------------------------------------------------------- */

typedef struct emit {
	tp_delta_write_fn write;
	void *ctx;
	coder *c;
	const tp_delta_opts *o;
	tp_delta_layout *m;
	tp_sha256 sha;
	uint64_t written, done;
} emit;

static int emit_bytes(emit *e, const void *buf, size_t n)
{
	e->written += n;
	return e->write(e->ctx, buf, n);
}

static int emit_chunk(void *ctx, const slot *s)
{
	emit *e = ctx;
	const tp_chunk_desc *d = &s->d; /* hashed by its job's ordered stage (hash_job) */
	release_chunk(e->c, d);
	e->m->segs[d->seg].stored_bytes += s->out_len;
	e->m->segs[d->seg].same_chunks += s->out_len == TP_DELTA_CHUNK_HDR;
	e->done += d->len;
	int rc = tp_delta_report(e->o, e->done, e->m->target_size);
	return rc ? rc : emit_bytes(e, s->out, s->out_len);
}

/* Read back the plan as written, as apply will: its segments must be
 * the ones coded (same chunks, in the same order), and each of its bases is
 * the first given base with the recorded size and fingerprint. */
static int verify_prepare(coder *c, const char *json, size_t len)
{
	const tp_delta_layout *m = c->m;
	tp_delta_layout *vm = NULL;
	int rc = tp_delta_plan_parse(&vm, json, len);
	if (rc < 0)
		return tp_error_wrap(rc, "delta: reading back the plan written");
	c->vm = vm;
	bool same = vm->target_size == m->target_size && vm->chunk_size == m->chunk_size &&
		    vm->nsegs == m->nsegs && vm->nbases == m->nbases;
	for (size_t i = 0; same && i < m->nsegs; i++)
		same = vm->segs[i].offset == m->segs[i].offset && vm->segs[i].size == m->segs[i].size &&
		       vm->segs[i].chunks == m->segs[i].chunks;
	if (!same)
		return tp_error_set(TP_ECORRUPT, "delta: the plan written does not read back as coded");
	c->vbase = calloc(vm->nbases ? vm->nbases : 1, sizeof(*c->vbase));
	c->checks = calloc(c->threads, sizeof(*c->checks));
	if (!c->vbase || !c->checks)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (unsigned i = 0; i < c->threads; i++)
		if (!(c->checks[i] = malloc(m->chunk_size)))
			return tp_error_set(TP_ENOMEM, "out of memory");
	/* m->bases[i] holds the fingerprint of given base i (plan_bases). */
	for (size_t k = 0; k < vm->nbases; k++) {
		for (size_t i = 0; i < m->nbases && !c->vbase[k]; i++)
			if (m->bases[i].size == vm->bases[k].size &&
			    strcmp(m->bases[i].fingerprint, vm->bases[k].fingerprint) == 0)
				c->vbase[k] = &c->bases->ptr[i].map;
		if (!c->vbase[k])
			return tp_error_set(TP_ECORRUPT, "delta: base %zu of the plan written matches "
					    "no base given", k);
	}
	return 0;
}

static int emit_plan(emit *e)
{
	char *json;
	size_t len;
	int rc = tp_delta_plan_write(e->m, &json, &len);
	if (rc < 0)
		return rc;
	uint8_t pre[TP_DELTA_PREAMBLE];
	memcpy(pre, TP_DELTA_MAGIC, 8);
	tp_le32(pre + 8, e->m->version);
	tp_le32(pre + 12, (uint32_t)len);
	if (len > TP_DELTA_PLAN_MAX)
		rc = tp_error_set(TP_ETOOBIG, "delta plan of %zu bytes is over the cap", len);
	else if ((rc = emit_bytes(e, pre, sizeof(pre))) == 0)
		rc = emit_bytes(e, json, len);
	if (rc == 0 && e->o->verify)
		rc = verify_prepare(e->c, json, len);
	free(json);
	return rc;
}

/* Chunks covering bytes outside tensors are hashed by their jobs too; empty
 * segments have no chunks and no bytes. */
static int emit_end(emit *e)
{
	uint8_t end[TP_DELTA_END_LEN] = { TP_DELTA_FRAME_END };
	tp_le64(end + 8, e->m->target_size);
	tp_sha256_final(&e->sha, end + 16);
	memcpy(e->m->sha256, end + 16, 32);
	return emit_bytes(e, end, sizeof(end));
}

typedef struct session {
	tp_delta_opts o;
	tp_map target;
	tp_base_set bases;
	tp_delta_layout *m;
	coder c;
	job *jobs;
	size_t njobs;
	double t0;
} session;

static int session_open(session *s, const char *target, const char *const *bases, size_t nbases,
			const tp_delta_opts *opts, tp_pipe_fn ordered)
{
	memset(s, 0, sizeof(*s));
	s->t0 = tp_delta_now();
	resolve_opts(&s->o, opts);
	if (s->o.chunk_size < TP_DELTA_CHUNK_MIN || s->o.chunk_size > TP_DELTA_CHUNK_MAX ||
	    s->o.chunk_size % 8)
		return tp_error_set(TP_EINVAL, "chunk size must be a multiple of 8 in [%u, %u]",
				    TP_DELTA_CHUNK_MIN, TP_DELTA_CHUNK_MAX);
	tp_delta_xform fx = s->o.force_xform;
	if (fx != TP_DELTA_XFORM_AUTO && fx != TP_DELTA_XFORM_XOR && fx != TP_DELTA_XFORM_ULP &&
	    fx != TP_DELTA_XFORM_QGRID)
		return tp_error_set(TP_EINVAL, "only xor, ulp or qgrid can be forced");
	int rc;
	if ((rc = tp_map_open(&s->target, target)) < 0 ||
	    (rc = tp_base_set_open(&s->bases, bases, nbases)) < 0)
		return rc;
	if ((!s->o.plan || plan_reuse(&s->m, s->o.plan, &s->target, &s->bases, &s->o) != 0) &&
	    (rc = plan_new(&s->m, &s->target, &s->bases, &s->o)) < 0)
		return rc;
	return coder_init(&s->c, s->m, &s->target, &s->bases, &s->o, ordered);
}

static void session_close(session *s)
{
	coder_fini(&s->c);
	free(s->jobs);
	tp_delta_layout_free(s->m);
	tp_base_set_close(&s->bases);
	tp_map_close(&s->target);
}

int tp_delta_compress(const char *target, const char *const *bases, size_t nbases,
		      tp_delta_write_fn write, void *write_ctx,
		      const tp_delta_opts *opts, tp_delta_stats *stats)
{
	session s;
	emit e = { .write = write, .ctx = write_ctx };
	int rc = session_open(&s, target, bases, nbases, opts, hash_job);
	if (rc < 0)
		goto done;
	e.c = &s.c;
	e.o = &s.o;
	e.m = s.m;
	tp_sha256_init(&e.sha);
	s.c.sha = &e.sha;
	/* An index file's shards are no one file with one hash. */
	for (size_t i = 0; s.o.base_sha256 && i < nbases; i++) {
		if (tp_safetensors_is_index(bases[i])) {
			rc = tp_error_set(TP_EINVAL, "%s: base hashes need one file per base, not an "
					  "index file", bases[i]);
			goto done;
		}
	}
	if (s.o.base_sha256 && s.bases.len) {
		if (!(s.c.base_sha = calloc(s.bases.len, sizeof(*s.c.base_sha)))) {
			rc = tp_error_set(TP_ENOMEM, "out of memory");
			goto done;
		}
		for (size_t i = 0; i < s.bases.len; i++) {
			tp_sha256_init(&s.c.base_sha[i]);
			s.c.bases_total += s.bases.ptr[i].map.size;
		}
	}
	/* run_jobs may return a progress callback's positive code. */
	if ((rc = list_jobs(s.m, 0, &s.jobs, &s.njobs)) < 0 || (rc = emit_plan(&e)) < 0 ||
	    (rc = run_jobs(&s.c, s.jobs, s.njobs, emit_chunk, &e)) != 0 || (rc = emit_end(&e)) < 0)
		goto done;
	if (s.c.base_sha) {
		/* The jobs hashed all but what an empty target left: finish here. */
		hash_bases_to(&s.c, s.c.bases_total);
		for (size_t i = 0; i < s.bases.len; i++)
			tp_sha256_final(&s.c.base_sha[i], s.o.base_sha256[i]);
	}
	if (stats) {
		stats->target_bytes = s.m->target_size;
		stats->delta_bytes = e.written;
		stats->seconds = tp_delta_now() - s.t0;
		memcpy(stats->sha256, s.m->sha256, sizeof(stats->sha256));
		stats->version = s.m->version;
	}
done:
	session_close(&s);
	return rc ? tp_error_wrap(rc, "delta compress %s", target) : 0;
}

int tp_delta_compress_file(const char *target, const char *const *bases, size_t nbases,
			   const char *out_path, const tp_delta_opts *opts,
			   tp_delta_stats *stats)
{
	tp_tmpfile t;
	int rc = tp_tmpfile_open(&t, out_path);
	if (rc < 0)
		return rc;
	rc = tp_delta_compress(target, bases, nbases, tp_delta_fd_write, &t.fd, opts, stats);
	return tp_tmpfile_finish(&t, rc);
}

/* ---- estimate ---------------------------------------------------------------- */

typedef struct tally {
	const coder *c;
	tp_delta_layout *m;
	uint64_t *sampled; /* target bytes coded per segment */
} tally;

static int tally_chunk(void *ctx, const slot *s)
{
	tally *t = ctx;
	t->m->segs[s->d.seg].stored_bytes += s->out_len;
	t->m->segs[s->d.seg].same_chunks += s->out_len == TP_DELTA_CHUNK_HDR;
	t->sampled[s->d.seg] += s->d.len;
	release_chunk(t->c, &s->d);
	return 0;
}

/* Each segment's sizes from its own sampled chunks, else from its kind's;
 * the sums are the estimate. */
static void extrapolate(tp_delta_layout *m, const uint64_t *sampled, size_t plan_len)
{
	double kbytes[KINDS] = { 0 }, kstored[KINDS] = { 0 }, ksame[KINDS] = { 0 },
	       kchunks[KINDS] = { 0 };
	for (size_t i = 0; i < m->nsegs; i++) {
		const tp_delta_seg_info *s = &m->segs[i];
		unsigned k = seg_kind(s);
		kbytes[k] += (double)sampled[i];
		kstored[k] += (double)s->stored_bytes;
		ksame[k] += (double)s->same_chunks;
		/* Sampled chunks: all full but perhaps the segment's last. */
		if (sampled[i])
			kchunks[k] += (double)((sampled[i] + m->chunk_size - 1) / m->chunk_size);
	}
	m->delta_size = TP_DELTA_PREAMBLE + plan_len + TP_DELTA_END_LEN;
	for (size_t i = 0; i < m->nsegs; i++) {
		tp_delta_seg_info *s = &m->segs[i];
		unsigned k = seg_kind(s);
		if (sampled[i] && sampled[i] < s->size) {
			double scale = (double)s->size / (double)sampled[i];
			s->stored_bytes = (uint64_t)((double)s->stored_bytes * scale + 0.5);
			s->same_chunks = (uint64_t)((double)s->same_chunks * scale + 0.5);
		} else if (!sampled[i] && s->size && kbytes[k] > 0) {
			s->stored_bytes = (uint64_t)((double)s->size * kstored[k] / kbytes[k] + 0.5);
			s->same_chunks = (uint64_t)((double)s->chunks * ksame[k] / kchunks[k] + 0.5);
		}
		m->delta_size += s->stored_bytes;
	}
}

int tp_delta_estimate(tp_delta_layout **out, const char *target,
		      const char *const *bases, size_t nbases, const tp_delta_opts *opts)
{
	session s;
	tally t = { 0 };
	char *json = NULL;
	size_t plan_len = 0;
	tp_delta_opts o = opts ? *opts : (tp_delta_opts){ 0 };
	o.plan = NULL; /* an estimate plans */
	int rc = session_open(&s, target, bases, nbases, &o, NULL);
	if (rc < 0)
		goto done;
	t.c = &s.c;
	t.m = s.m;
	if (!(t.sampled = calloc(s.m->nsegs ? s.m->nsegs : 1, sizeof(*t.sampled)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = tp_delta_plan_write(s.m, &json, &plan_len)) < 0 ||
	    (rc = list_jobs(s.m, s.o.estimate_stride ? s.o.estimate_stride : ESTIMATE_STRIDE,
			    &s.jobs, &s.njobs)) < 0 ||
	    (rc = run_jobs(&s.c, s.jobs, s.njobs, tally_chunk, &t)) < 0)
		goto done;
	extrapolate(s.m, t.sampled, plan_len);
	*out = s.m;
	s.m = NULL;
done:
	free(json);
	free(t.sampled);
	session_close(&s);
	return rc < 0 ? tp_error_wrap(rc, "delta estimate %s", target) : 0;
}
