/* qgrid (format v2): a transform for targets that are a base plus a
 * per-row quantized update, OUT = round(BASE + code * scale), as
 * `tenpak delta sparsify` writes them. The ULP difference of such a pair is
 * entangled with each base weight's exponent; qgrid finds each row's scale,
 * stores one int8 code per weight and a ULP residual that makes any input
 * round-trip bit-exactly. The decode arithmetic is specified in FORMAT.md
 * ("qgrid"); this file is compiled with -ffp-contract=off so that the fp32
 * product and sum are rounded separately, as specified. */
#include "delta_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- dtype conversions (exact; round to nearest even) -------------------- */

static float f32_of_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static uint32_t bits_of_f32(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

/* common/half.c's conversions, chosen by dtype: exact widening, and
 * round-to-nearest-even narrowing with overflow to infinity, as FORMAT.md
 * specifies. NaN never reaches the narrowing from the decoder (see
 * predict). */
float tp_qgrid_to_f32(tp_dtype dt, uint16_t h)
{
	return dt == TP_DTYPE_BF16 ? tp_bf16_to_f32(h) : tp_fp16_to_f32(h);
}

uint16_t tp_qgrid_from_f32(tp_dtype dt, float f)
{
	return dt == TP_DTYPE_BF16 ? tp_bf16_from_f32(f) : tp_fp16_from_f32(f);
}

static bool finite16(tp_dtype dt, uint16_t h)
{
	return dt == TP_DTYPE_BF16 ? (h & 0x7F80) != 0x7F80 : (h & 0x7C00) != 0x7C00;
}

/* The decoder's prediction of a weight from its base, code and row scale:
 * two separately rounded fp32 operations, then rounding to the dtype. With
 * a finite base and a finite scale the sum is never NaN. */
static uint16_t predict(tp_dtype dt, uint16_t b, int c, float s)
{
	if (c == 0 || !finite16(dt, b))
		return b;
	float p = (float)c * s;
	float sum = tp_qgrid_to_f32(dt, b) + p;
	return tp_qgrid_from_f32(dt, sum);
}

static uint16_t ord16(uint16_t v)
{
	return v ^ ((v & 0x8000) ? 0xFFFF : 0x8000);
}

static uint16_t unord16(uint16_t k)
{
	return k ^ ((k & 0x8000) ? 0x8000 : 0xFFFF);
}

static uint16_t zz16(uint16_t d)
{
	return (uint16_t)((uint16_t)(d << 1) ^ ((d & 0x8000) ? 0xFFFF : 0));
}

static uint16_t unzz16(uint16_t z)
{
	return (uint16_t)((z >> 1) ^ (0 - (z & 1)));
}

/* ---- layout of a chunk ------------------------------------------------------ */

size_t tp_qgrid_nscales(uint64_t first, size_t n, uint64_t row)
{
	return n ? (size_t)((first + n - 1) / row - first / row + 1) : 0;
}

void tp_qgrid_plane_sizes(size_t n, uint64_t first, uint64_t row, size_t sizes[TP_QGRID_PLANES])
{
	sizes[0] = sizes[1] = sizes[2] = n;
	sizes[3] = 4 * tp_qgrid_nscales(first, n, row);
}

/* ---- encoder: each row's scale from the data ------------------------------- */

/* Scale candidates per grid size: spread across the interval of scales that
 * put the row's largest update exactly on code qmax. */
#define QG_CANDIDATES 17
#define QG_CANDIDATES_PIECE 9
/* Changed weights of a row piece the candidates are scored on. */
#define QG_SCORE 64
#define QG_MISS_BITS 32

/* 8 and 4 bits. A finer grid can land on the same rounded values as the
 * right one; the score counts the codes' bits, so it does not win. */
static const int qg_qmax[] = { 127, 7 };

static uint16_t rd16(const uint8_t *p, size_t i)
{
	uint16_t v;
	memcpy(&v, p + 2 * i, 2);
	return v;
}

/* Distance from |t| to its next representable magnitude. */
static double spacing(tp_dtype dt, uint16_t t)
{
	uint16_t a = t & 0x7FFF, n = (uint16_t)(a + 1);
	if (!finite16(dt, n))
		n = (uint16_t)(a - 1);
	return fabs((double)tp_qgrid_to_f32(dt, n) - (double)tp_qgrid_to_f32(dt, a));
}

static int code_for(double d, float s)
{
	if (!(s > 0))
		return 0;
	double q = d / (double)s;
	if (!(q < 127.5)) /* also NaN */
		return q > 0 ? 127 : 0;
	if (q <= -127.5)
		return -127;
	/* Half away from zero: ties do not matter to the encoder. */
	return (int)(q + (q >= 0 ? 0.5 : -0.5));
}

/* A changed, finite weight of a row piece with what the encoder needs of
 * it computed once: target and base bits, F(base) and F(t) - F(base). */
typedef struct qg_w {
	uint16_t t, b;
	float bf;
	double d;
} qg_w;

/* predict() for a weight with a finite base and its F(b) at hand. */
static uint16_t predict_w(tp_dtype dt, const qg_w *w, int c, float s)
{
	if (c == 0)
		return w->b;
	float p = (float)c * s;
	float sum = w->bf + p;
	return tp_qgrid_from_f32(dt, sum);
}

/* The code whose prediction hits t if one of round(d/s) and its two
 * neighbours does, else round(d/s). */
static int best_code(tp_dtype dt, const qg_w *w, float s)
{
	int c = code_for(w->d, s);
	if (predict_w(dt, w, c, s) == w->t)
		return c;
	for (int k = -1; k <= 1; k += 2) {
		int c2 = c + k;
		if (c2 >= -127 && c2 <= 127 && c2 != 0 && predict_w(dt, w, c2, s) == w->t)
			return c2;
	}
	return c;
}

/* One end of the interval of scales that put a weight on its target. */
typedef struct qg_event {
	double x;
	int up; /* +1 opens, -1 closes */
} qg_event;

static int event_cmp(const void *a, const void *b)
{
	const qg_event *x = a, *y = b;
	if (x->x != y->x)
		return x->x < y->x ? -1 : 1;
	return y->up - x->up; /* opens first: touching intervals overlap */
}

static double neighbour(tp_dtype dt, uint16_t t, int dir)
{
	uint16_t k = (uint16_t)(ord16(t) + dir);
	float v = tp_qgrid_to_f32(dt, unord16(k));
	float f = tp_qgrid_to_f32(dt, t);
	if (!isfinite(v)) /* past the largest value: mirror the other side */
		v = 2 * f - tp_qgrid_to_f32(dt, unord16((uint16_t)(ord16(t) - dir)));
	return v;
}

static size_t misses(tp_dtype dt, const qg_w *w, size_t nc, float s)
{
	size_t bad = 0;
	for (size_t i = 0; i < nc; i++)
		bad += predict_w(dt, &w[i], code_for(w[i].d, s), s) != w[i].t;
	return bad;
}

/* With the codes that s0 gives, the scale inside the most weights'
 * intervals (a sweep over their ends): the exact scale the writer used
 * lies in every interval, however narrow some are next to the candidates'
 * spacing. */
static float refine(tp_dtype dt, const qg_w *w, size_t nc, float s0, qg_event *ev)
{
	size_t ne = 0;
	for (size_t i = 0; i < nc; i++) {
		int c = code_for(w[i].d, s0);
		if (!c)
			continue;
		double tf = (double)w[i].bf + w[i].d, bf = w[i].bf;
		double lo = ((neighbour(dt, w[i].t, -1) + tf) / 2 - bf) / c;
		double hi = ((neighbour(dt, w[i].t, +1) + tf) / 2 - bf) / c;
		if (lo > hi) {
			double x = lo;
			lo = hi;
			hi = x;
		}
		ev[ne++] = (qg_event){ lo, 1 };
		ev[ne++] = (qg_event){ hi, -1 };
	}
	if (!ne)
		return s0;
	qsort(ev, ne, sizeof(*ev), event_cmp);
	int depth = 0, best = 0;
	double at = s0;
	for (size_t e = 0; e + 1 < ne; e++) {
		depth += ev[e].up;
		if (depth > best) {
			best = depth;
			at = (ev[e].x + ev[e + 1].x) / 2;
		}
	}
	float s = (float)at;
	return s > 0 && isfinite(s) ? s : s0;
}

/* Scale for the weights [j0, j1) of a chunk: 0 when none changed. whole
 * says they are a whole row, whose largest update sits at code qmax; a
 * piece of a row cut by the chunk's edge may miss it, so there every code
 * up to 127 is tried for its largest update (with fewer offsets). w is
 * scratch of j1 - j0 entries. */
static float row_scale(tp_dtype dt, const uint8_t *tgt, const uint8_t *base, size_t j0,
		       size_t j1, bool whole, qg_w *w, qg_event *ev)
{
	size_t nc = 0, m = 0;
	double amax = -1;
	for (size_t j = j0; j < j1; j++) {
		uint16_t t = rd16(tgt, j), b = rd16(base, j);
		if (t == b || !finite16(dt, t) || !finite16(dt, b))
			continue;
		float bf = tp_qgrid_to_f32(dt, b);
		double d = (double)tp_qgrid_to_f32(dt, t) - (double)bf;
		if (fabs(d) > amax) {
			amax = fabs(d);
			m = nc;
		}
		w[nc++] = (qg_w){ t, b, bf, d };
	}
	if (!nc || !(amax > 0))
		return 0;
	double half = spacing(dt, w[m].t) / 2;
	/* Score on QG_SCORE changed weights spread over the piece. */
	size_t step = nc > QG_SCORE ? nc / QG_SCORE : 1;
	float best = 0;
	size_t best_bad = SIZE_MAX;
	size_t nq = whole ? sizeof(qg_qmax) / sizeof(qg_qmax[0]) : 127;
	int ncand = whole ? QG_CANDIDATES : QG_CANDIDATES_PIECE;
	for (size_t qi = 0; qi < nq; qi++) {
		int qmax = whole ? qg_qmax[qi] : (int)qi + 1;
		for (int k = 0; k < ncand; k++) {
			double off = (2.0 * k / (ncand - 1) - 1) * half;
			float s = (float)((amax + off) / qmax);
			if (!(s > 0) || !isfinite(s))
				continue;
			/* Rough bits: a code costs about twice its bit length, a
			 * miss a residual of QG_MISS_BITS. */
			size_t bad = 0;
			for (size_t i = 0; i < nc && bad < best_bad; i += step) {
				int c = code_for(w[i].d, s);
				unsigned a = (unsigned)(c < 0 ? -c : c), bits = 0;
				while (a >> bits)
					bits++;
				bad += 2 * bits + (predict_w(dt, &w[i], c, s) != w[i].t ? QG_MISS_BITS : 0);
			}
			if (bad < best_bad) {
				best_bad = bad;
				best = s;
			}
		}
	}
	/* A row that misses more than half is no grid: skip the sort. */
	size_t miss = best > 0 ? misses(dt, w, nc, best) : 0;
	if (miss && miss * 2 <= nc) {
		float r = refine(dt, w, nc, best, ev);
		if (r != best && misses(dt, w, nc, r) < miss)
			best = r;
	}
	return best;
}

int tp_qgrid_split(tp_dtype dt, const uint8_t *tgt, const uint8_t *base, size_t n,
		   uint64_t first, uint64_t row, uint8_t *planes)
{
	size_t ns = tp_qgrid_nscales(first, n, row);
	uint8_t *codes = planes, *hi = planes + n, *lo = planes + 2 * n, *sc = planes + 3 * n;
	size_t most = row < n ? (size_t)row : n;
	qg_w *w = malloc(most * sizeof(*w) + 1);
	qg_event *ev = malloc(2 * most * sizeof(*ev) + 1);
	if (!w || !ev) {
		free(w);
		free(ev);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	size_t j0 = 0;
	for (size_t k = 0; k < ns; k++) {
		/* Row piece k: up to the next row boundary or the chunk's end. */
		uint64_t next = (first / row + k + 1) * row - first;
		size_t j1 = next < n ? (size_t)next : n;
		float s = row_scale(dt, tgt, base, j0, j1, j1 - j0 == row, w, ev);
		uint32_t u = bits_of_f32(s);
		for (unsigned p = 0; p < 4; p++)
			sc[p * ns + k] = (uint8_t)(u >> (8 * (3 - p)));
		/* w holds the piece's changed finite weights, in order. */
		for (size_t j = j0, i = 0; j < j1; j++) {
			uint16_t t = rd16(tgt, j), b = rd16(base, j), p = b;
			int c = 0;
			if (t != b && finite16(dt, t) && finite16(dt, b)) {
				c = best_code(dt, &w[i], s);
				p = predict_w(dt, &w[i++], c, s);
			}
			uint16_t r = zz16((uint16_t)(ord16(t) - ord16(p)));
			codes[j] = (uint8_t)(int8_t)c;
			hi[j] = (uint8_t)(r >> 8);
			lo[j] = (uint8_t)r;
		}
		j0 = j1;
	}
	free(w);
	free(ev);
	return 0;
}

int tp_qgrid_merge(tp_dtype dt, const uint8_t *planes, const uint8_t *base, size_t n,
		   uint64_t first, uint64_t row, uint8_t *tgt)
{
	size_t ns = tp_qgrid_nscales(first, n, row);
	const uint8_t *codes = planes, *hi = planes + n, *lo = planes + 2 * n, *sc = planes + 3 * n;
	size_t j0 = 0;
	for (size_t k = 0; k < ns; k++) {
		uint64_t next = (first / row + k + 1) * row - first;
		size_t j1 = next < n ? (size_t)next : n;
		uint32_t u = 0;
		for (unsigned p = 0; p < 4; p++)
			u |= (uint32_t)sc[p * ns + k] << (8 * (3 - p));
		float s = f32_of_bits(u);
		if (!isfinite(s))
			return tp_error_set(TP_ECORRUPT, "delta: qgrid scale is not finite");
		for (size_t j = j0; j < j1; j++) {
			uint16_t p = predict(dt, rd16(base, j), (int8_t)codes[j], s);
			uint16_t t = unord16((uint16_t)(ord16(p) + unzz16((uint16_t)(hi[j] << 8 | lo[j]))));
			memcpy(tgt + 2 * j, &t, 2);
		}
		j0 = j1;
	}
	return 0;
}

/* ---- frames ------------------------------------------------------------------ */

/* The planes' buffer, and for encoding the frame buffer, at first use. */
static int ensure_scratch(tp_chunk_coder *c, bool frame)
{
	/* Planes of a chunk of cap bytes: 3 * cap/2 bytes of codes and
	 * residuals and at most cap + 4 of scales (rows of >= 2 weights). */
	if (!c->qbuf && !(c->qbuf = malloc(3 * c->cap + 64)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (frame && !c->qframe) {
		c->qframe_cap = tp_chunk_frame_bound(3 * c->cap + 64);
		if (!(c->qframe = malloc(c->qframe_cap)))
			return tp_error_set(TP_ENOMEM, "out of memory");
	}
	return 0;
}

int tp_qgrid_encode(tp_chunk_coder *c, const tp_chunk_desc *d, int level, size_t *out_len)
{
	size_t n = d->len / 2, sizes[TP_QGRID_PLANES];
	int rc = ensure_scratch(c, true);
	if (rc < 0)
		return rc;
	if (d->width != 2 || d->row < 2 || d->len % 2)
		return tp_error_set(TP_EINVAL, "qgrid: bad chunk");
	if ((rc = tp_qgrid_split(d->dtype, d->target, d->base, n, d->first, d->row, c->qbuf)) < 0)
		return rc;
	tp_qgrid_plane_sizes(n, d->first, d->row, sizes);
	uint8_t *out = c->qframe;
	out[0] = TP_DELTA_FRAME_CHUNK;
	out[1] = TP_DELTA_FLAG_QGRID;
	out[2] = TP_QGRID_PLANES;
	out[3] = 0;
	tp_le32(out + 4, d->seg);
	tp_le32(out + 8, d->index);
	tp_le32(out + 12, (uint32_t)d->len);
	size_t pos = TP_DELTA_CHUNK_HDR + TP_QGRID_PLANES * TP_DELTA_PLANE_HDR, src = 0;
	for (unsigned p = 0; p < TP_QGRID_PLANES; p++) {
		uint8_t *tab = out + TP_DELTA_CHUNK_HDR + p * TP_DELTA_PLANE_HDR;
		size_t r = 0;
		rc = tp_chunk_encode_plane(c, TP_DELTA_XFORM_QGRID, level, c->qbuf + src, sizes[p],
					   out + pos, c->qframe_cap - pos, &tab[0], &r);
		if (rc < 0)
			return rc;
		memset(tab + 1, 0, 3);
		tp_le32(tab + 4, (uint32_t)r);
		pos += r;
		src += sizes[p];
	}
	*out_len = pos;
	return 0;
}

int tp_qgrid_decode(tp_chunk_coder *c, const tp_chunk_desc *d, const tp_chunk_head *h,
		    const uint8_t *frame, uint8_t *out)
{
	size_t n = d->len / 2, sizes[TP_QGRID_PLANES];
	if (h->nplanes != TP_QGRID_PLANES || d->width != 2 || d->row < 2)
		return tp_error_set(TP_ECORRUPT, "delta: bad qgrid frame");
	int rc = ensure_scratch(c, false);
	if (rc < 0)
		return rc;
	tp_qgrid_plane_sizes(n, d->first, d->row, sizes);
	size_t pos = TP_DELTA_CHUNK_HDR + TP_QGRID_PLANES * TP_DELTA_PLANE_HDR, dst = 0;
	for (unsigned p = 0; p < TP_QGRID_PLANES; p++) {
		rc = tp_chunk_decode_plane(c, h->method[p], frame + pos, h->stored[p], c->qbuf + dst,
					   sizes[p]);
		if (rc < 0)
			return rc;
		pos += h->stored[p];
		dst += sizes[p];
	}
	return tp_qgrid_merge(d->dtype, c->qbuf, d->base, n, d->first, d->row, out);
}

/* ---- choosing qgrid for a tensor --------------------------------------------- */

/* Weights of a sample checked for a grid before it is costed. */
#define QG_PROBE 4096

/* Bytes a plane would take: the smaller of zstd at level 1 and the order-0
 * entropy, as the plane coder would choose (rANS or zstd). */
static size_t plane_cost(tp_chunk_coder *c, const uint8_t *src, size_t n, uint8_t *dst,
			 size_t cap)
{
	size_t r = ZSTD_compressCCtx(c->cctx, dst, cap, src, n, 1);
	if (ZSTD_isError(r) || r > n)
		r = n;
	uint32_t count[256];
	tp_delta_histogram(src, n, count);
	size_t e = tp_rans_estimate(count, n);
	return e < r ? e : r;
}

bool tp_qgrid_worth(tp_chunk_coder *c, tp_dtype dt, const uint8_t *t, const uint8_t *b,
		    size_t len, uint64_t first, uint64_t row)
{
	if ((dt != TP_DTYPE_BF16 && dt != TP_DTYPE_F16) || row < 2 || len < 2 ||
	    ensure_scratch(c, true) < 0)
		return false;
	size_t n = len / 2, sizes[TP_QGRID_PLANES];
	uint8_t *dst = c->qframe;
	size_t cap = c->qframe_cap, other = SIZE_MAX;
	/* Cheap rejections first, on the first QG_PROBE weights: an update
	 * that changes more than 3 in 4 weights is an ordinary fine-tune's
	 * (whose ULP-sized steps fit a fine grid about as well as ulp codes
	 * them, at the cost of a search); then all but 1 in 16 changed
	 * weights must land on a grid (sparsify output misses almost none). */
	size_t np = n < QG_PROBE ? n : QG_PROBE, changed = 0, missed = 0;
	for (size_t j = 0; j < np; j++)
		changed += rd16(t, j) != rd16(b, j);
	if (!changed || changed * 4 > np * 3 ||
	    tp_qgrid_split(dt, t, b, np, first, row, c->qbuf) < 0)
		return false;
	for (size_t j = 0; j < np; j++)
		missed += c->qbuf[np + j] || c->qbuf[2 * np + j];
	if (missed * 16 > changed)
		return false;
	/* The base transforms, measured the same way. */
	static const tp_delta_xform base_x[] = { TP_DELTA_XFORM_ULP, TP_DELTA_XFORM_XOR };
	for (size_t k = 0; k < 2; k++) {
		tp_delta_split(base_x[k], 2, t, b, 2 * n, c->qbuf);
		size_t cost = plane_cost(c, c->qbuf, n, dst, cap) +
			      plane_cost(c, c->qbuf + n, n, dst, cap);
		if (cost < other)
			other = cost;
	}
	if (tp_qgrid_split(dt, t, b, n, first, row, c->qbuf) < 0)
		return false;
	tp_qgrid_plane_sizes(n, first, row, sizes);
	size_t cost = 0, src = 0;
	for (unsigned p = 0; p < TP_QGRID_PLANES; p++) {
		cost += plane_cost(c, c->qbuf + src, sizes[p], dst, cap);
		src += sizes[p];
	}
	return (double)cost < TP_QGRID_MARGIN * (double)other;
}

/* Bytes of a tensor's middle that are coded to choose qgrid. */
#define QG_SAMPLE (64u << 10)

/* Elements per row as `tenpak delta sparsify` scales them (the first
 * dimension is the rows), or 0 when qgrid does not apply. */
static uint64_t tensor_row(const tp_st_tensor *t)
{
	if ((t->dtype != TP_DTYPE_BF16 && t->dtype != TP_DTYPE_F16) || t->ndim < 2 ||
	    !t->shape[0] || t->size % 2)
		return 0;
	uint64_t row = t->size / 2 / t->shape[0];
	return row >= 2 && row <= 0xFFFFFFFFu ? row : 0;
}

bool tp_qgrid_choose(tp_chunk_coder *c, const tp_st_tensor *t, const uint8_t *tgt,
		     const uint8_t *base, tp_delta_xform force, uint64_t *row)
{
	uint64_t r = tensor_row(t);
	if (!r || (force != TP_DELTA_XFORM_AUTO && force != TP_DELTA_XFORM_QGRID))
		return false;
	if (force == TP_DELTA_XFORM_AUTO) {
		size_t len = t->size < QG_SAMPLE ? (size_t)t->size : QG_SAMPLE;
		uint64_t off = (t->size - len) / 2 / 2 * 2;
		if (!tp_qgrid_worth(c, t->dtype, tgt + off, base + off, len / 2 * 2, off / 2, r))
			return false;
	}
	*row = r;
	return true;
}
