/* Chunk codec: transform against the base, split into byte planes, zstd.
 * Pure functions over caller buffers so they can be fuzzed in isolation. */
/* For ZSTD_registerSequenceProducer (zstd >= 1.5.4; the shared library
 * exports it): see literal_block. */
#define ZSTD_STATIC_LINKING_ONLY
#include "delta_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

void tp_le32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

void tp_le64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

uint32_t tp_rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

uint64_t tp_rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

int tp_chunk_coder_init(tp_chunk_coder *c, size_t chunk_size)
{
	memset(c, 0, sizeof(*c));
	c->cctx = ZSTD_createCCtx();
	c->dctx = ZSTD_createDCtx();
	c->planes = malloc(chunk_size ? chunk_size : 1);
	c->rans = malloc(TP_RANS_BOUND(chunk_size));
	c->cap = chunk_size;
	if (!c->cctx || !c->dctx || !c->planes || !c->rans) {
		tp_chunk_coder_fini(c);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	return 0;
}

void tp_chunk_coder_fini(tp_chunk_coder *c)
{
	ZSTD_freeCCtx(c->cctx);
	ZSTD_freeDCtx(c->dctx);
	free(c->planes);
	free(c->rans);
	free(c->qbuf);
	free(c->qframe);
	memset(c, 0, sizeof(*c));
}

unsigned tp_delta_nplanes(tp_delta_xform x, unsigned width)
{
	return x == TP_DELTA_XFORM_PLAIN ? 1 : width;
}

/* ---- word transforms on w-byte elements --------------------------------- */

INLINE uint64_t wmask(unsigned w)
{
	return w == 8 ? ~(uint64_t)0 : ((uint64_t)1 << (8 * w)) - 1;
}

INLINE uint64_t wsign(unsigned w)
{
	return (uint64_t)1 << (8 * w - 1);
}

/* Rotating the sign bit to the bottom puts the whole exponent in the top
 * byte for bf16 and fp32, so it gets a plane of its own. */
INLINE uint64_t rotl1(uint64_t v, unsigned w)
{
	return ((v << 1) | (v >> (8 * w - 1))) & wmask(w);
}

INLINE uint64_t rotr1(uint64_t v, unsigned w)
{
	return ((v >> 1) | (v << (8 * w - 1))) & wmask(w);
}

/* All ones when the sign bit of v is set. Branch-free because signs of
 * weights are coin flips that would defeat the branch predictor. */
INLINE uint64_t signmask(uint64_t v, unsigned w)
{
	return (0 - (v >> (8 * w - 1))) & wmask(w);
}

/* Sign-magnitude float bits -> unsigned ints in numeric order (-0 and +0
 * adjacent), so neighbouring values differ by their ULP distance. */
INLINE uint64_t ordkey(uint64_t v, unsigned w)
{
	return v ^ (signmask(v, w) | wsign(w));
}

INLINE uint64_t unordkey(uint64_t k, unsigned w)
{
	return k ^ ((~signmask(k, w) & wmask(w)) | wsign(w));
}

INLINE uint64_t zigzag(uint64_t d, unsigned w)
{
	return ((d << 1) & wmask(w)) ^ signmask(d, w);
}

INLINE uint64_t unzigzag(uint64_t z, unsigned w)
{
	return ((z >> 1) ^ (0 - (z & 1))) & wmask(w);
}

INLINE uint64_t fwd(tp_delta_xform x, uint64_t t, uint64_t b, unsigned w)
{
	switch (x) {
	case TP_DELTA_XFORM_XOR:
		return rotl1(t ^ b, w);
	case TP_DELTA_XFORM_ULP:
		return zigzag((ordkey(t, w) - ordkey(b, w)) & wmask(w), w);
	case TP_DELTA_XFORM_PLANES:
		return rotl1(t, w);
	default:
		return t;
	}
}

INLINE uint64_t inv(tp_delta_xform x, uint64_t v, uint64_t b, unsigned w)
{
	switch (x) {
	case TP_DELTA_XFORM_XOR:
		return rotr1(v, w) ^ b;
	case TP_DELTA_XFORM_ULP:
		return unordkey((ordkey(b, w) + unzigzag(v, w)) & wmask(w), w);
	case TP_DELTA_XFORM_PLANES:
		return rotr1(v, w);
	default:
		return v;
	}
}

INLINE uint64_t load(const uint8_t *p, unsigned w)
{
	uint64_t v = 0;
	memcpy(&v, p, w);
	return v;
}

/* Elements are coded grouped by their base's exponent: the size of an
 * update in ULPs depends strongly on the magnitude of the weight, so each
 * group is far more uniform than the whole chunk (measured on the bf16
 * fixtures: ULP 0.502 -> 0.457, XOR 0.552 -> 0.519 of the original). The
 * key is the top byte of the rotated base, which is the exponent for bf16
 * and fp32 and its high bits or more for the other formats; the decoder
 * knows the base, so the order costs nothing to transmit. */
INLINE unsigned group_key(const uint8_t *base, size_t i, unsigned w)
{
	return (unsigned)(rotl1(load(base + i * w, w), w) >> (8 * w - 8));
}

/* First slot of each group in a stable counting sort by group_key. */
INLINE void group_starts(const uint8_t *base, size_t n, unsigned w, size_t start[256])
{
	size_t count[256] = { 0 };
	for (size_t i = 0; i < n; i++)
		count[group_key(base, i, w)]++;
	size_t pos = 0;
	for (unsigned k = 0; k < 256; k++) {
		start[k] = pos;
		pos += count[k];
	}
}

/* Only transforms against a base reorder; known at compile time. */
INLINE bool grouped(tp_delta_xform x)
{
	return x == TP_DELTA_XFORM_XOR || x == TP_DELTA_XFORM_ULP;
}

/* Slot of element i: its place in the grouped order, or i. */
INLINE size_t slot_of(tp_delta_xform x, const uint8_t *base, size_t i, unsigned w,
		      size_t next[256])
{
	return grouped(x) ? next[group_key(base, i, w)]++ : i;
}

/* Plane 0 holds each word's most significant byte. Called with constant
 * x and w so the compiler emits one tight loop per combination. */
INLINE bool split_w(tp_delta_xform x, unsigned w, const uint8_t *tgt, const uint8_t *base,
		    size_t n, uint8_t *planes)
{
	size_t next[256];
	if (grouped(x))
		group_starts(base, n, w, next);
	uint64_t any = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t b = grouped(x) ? load(base + i * w, w) : 0;
		uint64_t v = fwd(x, load(tgt + i * w, w), b, w);
		size_t j = slot_of(x, base, i, w, next);
		any |= v;
		for (unsigned p = 0; p < w; p++)
			planes[p * n + j] = (uint8_t)(v >> (8 * (w - 1 - p)));
	}
	return any == 0;
}

INLINE void merge_w(tp_delta_xform x, unsigned w, const uint8_t *planes, const uint8_t *base,
		    size_t n, uint8_t *tgt)
{
	size_t next[256];
	if (grouped(x))
		group_starts(base, n, w, next);
	for (size_t i = 0; i < n; i++) {
		size_t j = slot_of(x, base, i, w, next);
		uint64_t v = 0;
		for (unsigned p = 0; p < w; p++)
			v |= (uint64_t)planes[p * n + j] << (8 * (w - 1 - p));
		uint64_t t = inv(x, v, grouped(x) ? load(base + i * w, w) : 0, w);
		memcpy(tgt + i * w, &t, w);
	}
}

/* One specialization per (transform, width) pair that can occur; `set`
 * receives the result ("same =") or is empty. */
#define CASE(set, fn, x, w, ...) \
	case (x) * 16 + (w): set fn(x, w, __VA_ARGS__); break;
#define DISPATCH(set, fn, x, w, ...)                                          \
	switch ((x) * 16 + (w)) {                                             \
	CASE(set, fn, TP_DELTA_XFORM_XOR, 1, __VA_ARGS__)                     \
	CASE(set, fn, TP_DELTA_XFORM_XOR, 2, __VA_ARGS__)                     \
	CASE(set, fn, TP_DELTA_XFORM_XOR, 4, __VA_ARGS__)                     \
	CASE(set, fn, TP_DELTA_XFORM_XOR, 8, __VA_ARGS__)                     \
	CASE(set, fn, TP_DELTA_XFORM_ULP, 1, __VA_ARGS__)                     \
	CASE(set, fn, TP_DELTA_XFORM_ULP, 2, __VA_ARGS__)                     \
	CASE(set, fn, TP_DELTA_XFORM_ULP, 4, __VA_ARGS__)                     \
	CASE(set, fn, TP_DELTA_XFORM_ULP, 8, __VA_ARGS__)                     \
	CASE(set, fn, TP_DELTA_XFORM_PLANES, 1, __VA_ARGS__)                  \
	CASE(set, fn, TP_DELTA_XFORM_PLANES, 2, __VA_ARGS__)                  \
	CASE(set, fn, TP_DELTA_XFORM_PLANES, 4, __VA_ARGS__)                  \
	CASE(set, fn, TP_DELTA_XFORM_PLANES, 8, __VA_ARGS__)                  \
	default: set fn(TP_DELTA_XFORM_PLAIN, 1, __VA_ARGS__); break;         \
	}

bool tp_delta_split_ref(tp_delta_xform x, unsigned width, const uint8_t *tgt,
			const uint8_t *base, size_t len, uint8_t *planes)
{
	if (x == TP_DELTA_XFORM_PLAIN) {
		memcpy(planes, tgt, len);
		return base && memcmp(tgt, base, len) == 0;
	}
	bool same = false;
	DISPATCH(same =, split_w, x, width, tgt, base, len / width, planes)
	return same;
}

void tp_delta_merge_ref(tp_delta_xform x, unsigned width, const uint8_t *planes,
			const uint8_t *base, size_t len, uint8_t *tgt)
{
	if (x == TP_DELTA_XFORM_PLAIN) {
		memcpy(tgt, planes, len);
		return;
	}
	DISPATCH(, merge_w, x, width, planes, base, len / width, tgt)
}

bool tp_delta_split(tp_delta_xform x, unsigned width, const uint8_t *tgt,
		    const uint8_t *base, size_t len, uint8_t *planes)
{
	if (width == 2 && x != TP_DELTA_XFORM_PLAIN)
		return tp_delta_split16(x, tgt, base, len / 2, planes);
	return tp_delta_split_ref(x, width, tgt, base, len, planes);
}

void tp_delta_merge(tp_delta_xform x, unsigned width, const uint8_t *planes,
		    const uint8_t *base, size_t len, uint8_t *tgt)
{
	if (width == 2 && x != TP_DELTA_XFORM_PLAIN)
		tp_delta_merge16(x, planes, base, len / 2, tgt);
	else
		tp_delta_merge_ref(x, width, planes, base, len, tgt);
}

/* ---- frames --------------------------------------------------------------- */

size_t tp_chunk_frame_bound(size_t chunk_size)
{
	/* Planes share chunk_size bytes; each zstd frame adds a small bound. */
	return TP_DELTA_CHUNK_HDR + TP_DELTA_MAX_PLANES * TP_DELTA_PLANE_HDR +
	       ZSTD_compressBound(chunk_size) + TP_DELTA_MAX_PLANES * 64;
}

static void put_head(uint8_t *out, const tp_chunk_desc *d, uint8_t flags, unsigned nplanes)
{
	out[0] = TP_DELTA_FRAME_CHUNK;
	out[1] = flags;
	out[2] = (uint8_t)nplanes;
	out[3] = 0;
	tp_le32(out + 4, d->seg);
	tp_le32(out + 8, d->index);
	tp_le32(out + 12, (uint32_t)d->len);
}

/* Float planes are mostly noise around a skewed distribution: long minimum
 * matches stop zstd spending bits on short chance matches and leave the
 * bytes to its entropy coder (measured on the bf16 fixtures: no-base 0.707
 * -> 0.683 of the original, deltas unchanged). */
/*
 * zstd's level-1 match finder takes every match of minMatch (7) bytes or
 * more. In a block of bytes drawn independently from one skewed
 * distribution, such as the low byte of small ULP or XOR deltas grouped by
 * exponent, 7-byte matches occur by chance when the collision probability
 * sum p^2 is high, and at few bits per byte one saves less than its
 * sequence costs. Such blocks are coded as literals only (the same Huffman
 * literals, no sequences): measured on the 256 MiB generated bf16 pair,
 * those blocks come out 7% smaller and their plane codes 1.7x faster. Low
 * entropy blocks dominated by one byte (runs: long matches pay) and
 * high entropy ones (matches rare, and long when found) keep the match
 * finder; so do the trained fixtures' planes, whose deltas are unchanged.
 * The decision reads every 8th byte.
 */
#define LITERAL_MIN_BYTES 4096
#define LITERAL_MAX_BITS 2.8     /* order-0 entropy per byte */
#define LITERAL_MAX_COLLISION 0.25 /* sum of p^2: Renyi entropy >= 2 bits */

bool tp_delta_literal_block(const uint8_t *src, size_t n)
{
	uint32_t c[4][256];
	size_t m = 0;
	if (n < LITERAL_MIN_BYTES)
		return false;
	memset(c, 0, sizeof(c));
	/* Four tables: see tp_delta_histogram. */
	for (size_t i = 0; i + 32 <= n; i += 32, m += 4) {
		c[0][src[i]]++;
		c[1][src[i + 9]]++;
		c[2][src[i + 18]]++;
		c[3][src[i + 27]]++;
	}
	double bits = 0, coll = 0, dm = (double)m;
	for (unsigned s = 0; s < 256; s++) {
		double k = (double)c[0][s] + c[1][s] + c[2][s] + c[3][s];
		if (k > 0) {
			bits -= k * log2(k / dm);
			coll += k * k;
		}
	}
	return bits <= LITERAL_MAX_BITS * dm && coll <= LITERAL_MAX_COLLISION * dm * dm;
}

#if ZSTD_VERSION_NUMBER >= 10504
#define TP_LITERAL_BLOCKS 1
/* Called by zstd for each block: all literals, or an error that makes zstd
 * run its own match finder on the block (enableSeqProducerFallback). */
static size_t literal_block(void *state, ZSTD_Sequence *out, size_t cap, const void *src,
			    size_t n, const void *dict, size_t dict_len, int level, size_t window)
{
	(void)state;
	(void)dict;
	(void)dict_len;
	(void)level;
	(void)window;
	if (cap < 1 || n > UINT32_MAX || !tp_delta_literal_block(src, n))
		return ZSTD_SEQUENCE_PRODUCER_ERROR;
	out[0] = (ZSTD_Sequence){ .offset = 0, .litLength = (unsigned)n, .matchLength = 0,
				  .rep = 0 };
	return 1;
}
#endif

static void set_plane_params(ZSTD_CCtx *cctx, int level, tp_delta_xform x)
{
	ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
	if (x != TP_DELTA_XFORM_PLAIN)
		ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, 7);
#ifdef TP_LITERAL_BLOCKS
	/* Only the grouped planes: the others' blocks are left as they were
	 * (the no-base exponent planes qualify, but there rANS usually wins
	 * and literals would only replace it with a larger zstd frame). Only
	 * at level 1, the default and the one measured: negative levels code
	 * literals raw, and higher ones parse matches by their cost. */
	if (level == 1 && (x == TP_DELTA_XFORM_XOR || x == TP_DELTA_XFORM_ULP)) {
		ZSTD_registerSequenceProducer(cctx, NULL, literal_block);
		ZSTD_CCtx_setParameter(cctx, ZSTD_c_enableSeqProducerFallback, 1);
	}
#endif
}

/* Byte histogram with four tables: planes are often one value repeated,
 * and a single table then serializes on its own increments (measured: the
 * histogram took a quarter of compress time on a 256 MiB bf16 pair). */
void tp_delta_histogram(const uint8_t *src, size_t n, uint32_t count[256])
{
	uint32_t c[4][256];
	memset(c, 0, sizeof(c));
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		c[0][src[i]]++;
		c[1][src[i + 1]]++;
		c[2][src[i + 2]]++;
		c[3][src[i + 3]]++;
	}
	for (; i < n; i++)
		c[0][src[i]]++;
	for (unsigned s = 0; s < 256; s++)
		count[s] = c[0][s] + c[1][s] + c[2][s] + c[3][s];
}

/* rANS replaces zstd only when the histogram promises a clear gain, since
 * it decodes slower than zstd's Huffman literals. */
#define RANS_MIN_GAIN 0.97

/* A plane's entropy is first estimated from every RANS_SAMPLE_STRIDE-th
 * block of RANS_SAMPLE_BLOCK bytes, which is far cheaper than the full
 * histogram and almost always says "zstd is better" for float deltas;
 * RANS_SAMPLE_SLACK covers the sampling error. */
#define RANS_SAMPLE_BLOCK 4096
#define RANS_SAMPLE_STRIDE 16
#define RANS_SAMPLE_SLACK 1.03

static bool rans_unpromising(const uint8_t *src, size_t n, size_t to_beat)
{
	size_t step = (size_t)RANS_SAMPLE_BLOCK * RANS_SAMPLE_STRIDE, got = 0;
	if (n < 4 * step)
		return false;
	uint32_t count[256] = { 0 }, part[256];
	for (size_t off = 0; off + RANS_SAMPLE_BLOCK <= n; off += step) {
		tp_delta_histogram(src + off, RANS_SAMPLE_BLOCK, part);
		for (unsigned s = 0; s < 256; s++)
			count[s] += part[s];
		got += RANS_SAMPLE_BLOCK;
	}
	/* Scale the coded bits, not the table. */
	size_t table = 40;
	for (unsigned s = 0; s < 256; s++)
		table += count[s] ? 2 : 0;
	double est = (double)(tp_rans_estimate(count, got) - table) * (double)n / (double)got +
		     (double)table;
	return est > RANS_SAMPLE_SLACK * RANS_MIN_GAIN * (double)to_beat;
}

static size_t try_rans(tp_chunk_coder *c, const uint8_t *src, size_t n, size_t to_beat)
{
	uint32_t count[256];
	if (rans_unpromising(src, n, to_beat))
		return 0;
	tp_delta_histogram(src, n, count);
	if ((double)tp_rans_estimate(count, n) > RANS_MIN_GAIN * (double)to_beat)
		return 0;
	size_t r = tp_rans_encode(src, n, count, c->rans, TP_RANS_BOUND(c->cap));
	return r && r < to_beat ? r : 0;
}

/* Code one plane with the smallest of zstd, rANS (float planes) and stored. */
int tp_chunk_encode_plane(tp_chunk_coder *c, tp_delta_xform x, int level, const uint8_t *src,
			  size_t n, uint8_t *dst, size_t cap, uint8_t *method, size_t *len)
{
	set_plane_params(c->cctx, level, x);
	size_t r = ZSTD_compress2(c->cctx, dst, cap, src, n);
	if (ZSTD_isError(r))
		return tp_error_set(TP_EIO, "zstd: %s", ZSTD_getErrorName(r));
	*method = TP_DELTA_METHOD_ZSTD;
	size_t rr = x != TP_DELTA_XFORM_PLAIN ? try_rans(c, src, n, r) : 0;
	if (rr) {
		memcpy(dst, c->rans, rr);
		r = rr;
		*method = TP_DELTA_METHOD_RANS;
	}
	if (r >= n) { /* incompressible: store, which also decodes faster */
		memcpy(dst, src, n);
		r = n;
		*method = TP_DELTA_METHOD_STORED;
	}
	*len = r;
	return 0;
}

/* A qgrid segment's chunk is coded both ways; the qgrid frame replaces the
 * ulp one only when it is smaller, so qgrid never costs more than ulp. */
static int encode_qgrid(tp_chunk_coder *c, const tp_chunk_desc *d, int level, uint8_t *out,
			size_t *out_len)
{
	size_t qlen = 0;
	int rc = tp_qgrid_encode(c, d, level, &qlen);
	if (rc == 0 && qlen < *out_len) {
		memcpy(out, c->qframe, qlen);
		*out_len = qlen;
	}
	return rc;
}

int tp_chunk_encode(tp_chunk_coder *c, const tp_chunk_desc *d, int level, uint8_t *out,
		    size_t cap, size_t *out_len)
{
	/* qgrid chunks that do not use the grid are ulp frames. */
	tp_delta_xform x = d->xform == TP_DELTA_XFORM_QGRID ? TP_DELTA_XFORM_ULP : d->xform;
	unsigned np = tp_delta_nplanes(x, d->width);
	if (d->len > c->cap || cap < tp_chunk_frame_bound(d->len) || d->len % d->width)
		return tp_error_set(TP_EINVAL, "chunk of %zu bytes does not fit the coder", d->len);
	bool same = tp_delta_split(x, d->width, d->target, d->base, d->len, c->planes);
	if (same && d->base) {
		put_head(out, d, TP_DELTA_FLAG_SAME, 0);
		*out_len = TP_DELTA_CHUNK_HDR;
		return 0;
	}
	put_head(out, d, 0, np);
	size_t n = d->len / np, pos = TP_DELTA_CHUNK_HDR + np * TP_DELTA_PLANE_HDR;
	for (unsigned p = 0; p < np; p++) {
		uint8_t *tab = out + TP_DELTA_CHUNK_HDR + p * TP_DELTA_PLANE_HDR;
		size_t r = 0;
		int rc = tp_chunk_encode_plane(c, x, level, c->planes + p * n, n, out + pos,
					       cap - pos, &tab[0], &r);
		if (rc < 0)
			return rc;
		memset(tab + 1, 0, 3);
		tp_le32(tab + 4, (uint32_t)r);
		pos += r;
	}
	*out_len = pos;
	return d->xform == TP_DELTA_XFORM_QGRID ? encode_qgrid(c, d, level, out, out_len) : 0;
}

int tp_chunk_head_size(const uint8_t *first4, size_t *out)
{
	if (first4[0] != TP_DELTA_FRAME_CHUNK || first4[2] > TP_DELTA_MAX_PLANES || first4[3])
		return tp_error_set(TP_ECORRUPT, "delta: bad chunk frame header");
	*out = TP_DELTA_CHUNK_HDR + (size_t)first4[2] * TP_DELTA_PLANE_HDR;
	return 0;
}

int tp_chunk_head_parse(tp_chunk_head *h, const uint8_t *buf, size_t len)
{
	size_t hs = 0;
	if (len < 4 || tp_chunk_head_size(buf, &hs) < 0 || len < hs)
		return tp_error_set(TP_ECORRUPT, "delta: bad chunk frame header");
	h->flags = buf[1];
	h->nplanes = buf[2];
	h->seg = tp_rd32(buf + 4);
	h->index = tp_rd32(buf + 8);
	h->len = tp_rd32(buf + 12);
	if ((h->flags & ~(TP_DELTA_FLAG_SAME | TP_DELTA_FLAG_QGRID)) ||
	    ((h->flags & TP_DELTA_FLAG_SAME) && h->nplanes) ||
	    ((h->flags & TP_DELTA_FLAG_QGRID) && h->nplanes != TP_QGRID_PLANES))
		return tp_error_set(TP_ECORRUPT, "delta: bad chunk flags");
	h->frame_size = hs;
	for (unsigned p = 0; p < h->nplanes; p++) {
		const uint8_t *tab = buf + TP_DELTA_CHUNK_HDR + p * TP_DELTA_PLANE_HDR;
		h->method[p] = tab[0];
		h->stored[p] = tp_rd32(tab + 4);
		if (tab[0] > TP_DELTA_METHOD_RANS || tab[1] || tab[2] || tab[3] ||
		    h->stored[p] > ZSTD_compressBound(h->len) + 64)
			return tp_error_set(TP_ECORRUPT, "delta: bad plane table");
		h->frame_size += h->stored[p];
	}
	return 0;
}

int tp_chunk_decode_plane(tp_chunk_coder *c, uint8_t method, const uint8_t *src, size_t stored,
			  uint8_t *dst, size_t n)
{
	if (method == TP_DELTA_METHOD_STORED) {
		if (stored != n)
			return tp_error_set(TP_ECORRUPT, "delta: stored plane has the wrong size");
		memcpy(dst, src, n);
		return 0;
	}
	if (method == TP_DELTA_METHOD_RANS)
		return tp_rans_decode(src, stored, dst, n);
	size_t r = ZSTD_decompressDCtx(c->dctx, dst, n, src, stored);
	if (ZSTD_isError(r))
		return tp_error_set(TP_ECORRUPT, "delta: zstd: %s", ZSTD_getErrorName(r));
	if (r != n)
		return tp_error_set(TP_ECORRUPT, "delta: plane decoded to %zu bytes, expected %zu", r, n);
	return 0;
}

int tp_chunk_decode(tp_chunk_coder *c, const tp_chunk_desc *d, const uint8_t *frame,
		    size_t frame_len, uint8_t *out)
{
	tp_chunk_head h;
	int rc = tp_chunk_head_parse(&h, frame, frame_len);
	if (rc < 0)
		return rc;
	tp_delta_xform x = d->xform == TP_DELTA_XFORM_QGRID ? TP_DELTA_XFORM_ULP : d->xform;
	unsigned np = tp_delta_nplanes(x, d->width);
	if (h.seg != d->seg || h.index != d->index || h.len != d->len || h.frame_size != frame_len)
		return tp_error_set(TP_ECORRUPT, "delta: chunk %u of segment %u out of place",
				    h.index, h.seg);
	if (h.flags & TP_DELTA_FLAG_SAME) {
		if (!d->base)
			return tp_error_set(TP_ECORRUPT, "delta: unmatched segment %u refers to its base",
					    h.seg);
		memcpy(out, d->base, d->len);
		return 0;
	}
	if (h.flags & TP_DELTA_FLAG_QGRID) {
		if (d->xform != TP_DELTA_XFORM_QGRID || !d->base || d->len > c->cap)
			return tp_error_set(TP_ECORRUPT, "delta: qgrid chunk in a %s segment",
					    tp_delta_xform_name(d->xform));
		return tp_qgrid_decode(c, d, &h, frame, out);
	}
	if (h.nplanes != np || d->len > c->cap)
		return tp_error_set(TP_ECORRUPT, "delta: chunk has %u planes, expected %u", h.nplanes, np);
	size_t n = d->len / np, pos = TP_DELTA_CHUNK_HDR + np * TP_DELTA_PLANE_HDR;
	/* PLAIN has nothing to merge: decode straight into the output. */
	uint8_t *planes = x == TP_DELTA_XFORM_PLAIN ? out : c->planes;
	for (unsigned p = 0; p < np; p++) {
		if ((rc = tp_chunk_decode_plane(c, h.method[p], frame + pos, h.stored[p],
						planes + p * n, n)) < 0)
			return rc;
		pos += h.stored[p];
	}
	if (planes != out)
		tp_delta_merge(x, d->width, planes, d->base, d->len, out);
	return 0;
}
