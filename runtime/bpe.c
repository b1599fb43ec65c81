/*
 * Encoding with a loaded tokenizer: added tokens split the text, each
 * stretch goes through the normalizer and pre-tokenizer steps, and every
 * piece through BPE, lowest-ranked merge first as Hugging Face does.
 */
#include "tokenizer_internal.h"

#include "tp_array.h"

#include <stdlib.h>
#include <string.h>

/* Pieces of text between pipeline steps: spans of one buffer. */
typedef struct span {
	size_t off, len;
	bool first; /* starts at offset 0 of the original text */
} span;

typedef struct pieces {
	tp_buf text;
	tp_array(span) s;
} pieces;

#define PIECES_INIT { TP_BUF_INIT(SIZE_MAX / 2), TP_ARRAY_INIT(SIZE_MAX) }

typedef tp_array(int32_t) ids_vec;

/* Start a new piece; its bytes are added with tp_buf_add afterwards. */
static int piece_begin(pieces *p, bool first)
{
	return tp_array_push(&p->s, ((span){ p->text.len, 0, first }));
}

static int piece_add(pieces *p, const char *b, size_t n)
{
	int rc = tp_buf_add(&p->text, b, n);
	if (rc == 0)
		p->s.ptr[p->s.len - 1].len += n;
	return rc;
}

static void pieces_free(pieces *p)
{
	tp_buf_free(&p->text);
	tp_array_clear(&p->s);
}

/* GPT-2's printable stand-ins for bytes, as UTF-8. */
static void byte_char(unsigned b, char out[3], size_t *len)
{
	unsigned cp = b;
	if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) {
		unsigned k = 0;
		for (unsigned i = 0; i < b; i++)
			k += !((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174);
		cp = 256 + k;
	}
	if (cp < 0x80) {
		out[0] = (char)cp;
		*len = 1;
	} else {
		out[0] = (char)(0xC0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3F));
		*len = 2;
	}
}

static int add_byte_mapped(pieces *q, const char *s, size_t n)
{
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		char c[3];
		size_t cl;
		byte_char((unsigned char)s[i], c, &cl);
		rc = piece_add(q, c, cl);
	}
	return rc;
}

/* Split s by the regex into pieces of q, byte-mapping them if asked. */
static int regex_split(pieces *q, const char *s, size_t n, bool first, tp_pretok_regex re,
		       bool map_bytes)
{
	uint32_t *cps = malloc((n + 1) * sizeof(*cps));
	size_t *offs = malloc((n + 1) * sizeof(*offs)), nc = 0;
	int rc = 0;
	if (!cps || !offs) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; nc++) {
		offs[nc] = i;
		i += tp_utf8_decode(s + i, n - i, &cps[nc]);
	}
	offs[nc] = n;
	for (size_t i = 0; i < nc && rc == 0;) {
		size_t m = tp_pretok_match(re, cps, nc, i);
		const char *b = s + offs[i];
		size_t bl = offs[i + m] - offs[i];
		if ((rc = piece_begin(q, first && i == 0)) == 0)
			rc = map_bytes ? add_byte_mapped(q, b, bl) : piece_add(q, b, bl);
		i += m;
	}
done:
	free(cps);
	free(offs);
	return rc;
}

static int step_bytelevel(const step *st, pieces *q, const char *s, size_t n, bool first)
{
	int rc = 0;
	if (st->prefix_space && (n == 0 || s[0] != ' ')) {
		char *tmp = malloc(n + 1);
		if (!tmp)
			return tp_error_set(TP_ENOMEM, "out of memory");
		tmp[0] = ' ';
		memcpy(tmp + 1, s, n);
		rc = step_bytelevel(&(step){ .use_regex = st->use_regex, .re = st->re }, q, tmp,
				    n + 1, first);
		free(tmp);
		return rc;
	}
	if (st->use_regex)
		return regex_split(q, s, n, first, st->re, true);
	if ((rc = piece_begin(q, first)) == 0)
		rc = add_byte_mapped(q, s, n);
	return rc;
}

static int step_metaspace(const step *st, pieces *q, const char *s, size_t n, bool first)
{
	const size_t ml = sizeof(METASPACE) - 1;
	int rc = piece_begin(q, first);
	if (rc == 0 && (st->prepend == 2 || (st->prepend == 1 && first)) &&
	    !(n > 0 && s[0] == ' ') && !(n >= ml && memcmp(s, METASPACE, ml) == 0))
		rc = piece_add(q, METASPACE, ml);
	for (size_t i = 0; i < n && rc == 0; i++) {
		bool ms = s[i] == ' ' || (n - i >= ml && memcmp(s + i, METASPACE, ml) == 0);
		/* split: each metaspace starts a new piece (merged with next) */
		if (ms && st->split && q->s.ptr[q->s.len - 1].len > 0)
			rc = piece_begin(q, false);
		if (rc == 0)
			rc = ms ? piece_add(q, METASPACE, ml) : piece_add(q, s + i, 1);
		if (ms && s[i] != ' ')
			i += ml - 1;
	}
	return rc;
}

static int apply_pre(const step *st, pieces *q, const char *s, size_t n, bool first)
{
	switch (st->kind) {
	case STEP_BYTELEVEL: return step_bytelevel(st, q, s, n, first);
	case STEP_METASPACE: return step_metaspace(st, q, s, n, first);
	default: return regex_split(q, s, n, first, st->re, false);
	}
}

/* Normalizer steps rewrite the whole segment in place of p's only piece. */
static int apply_norm(const step *st, pieces *q, const char *s, size_t n, bool first)
{
	int rc = piece_begin(q, first);
	if (st->kind == STEP_PREPEND) {
		if (rc == 0 && n > 0)
			rc = piece_add(q, st->a, strlen(st->a));
		return rc ? rc : piece_add(q, s, n);
	}
	size_t pl = strlen(st->a);
	for (size_t i = 0; i < n && rc == 0;) {
		if (n - i >= pl && memcmp(s + i, st->a, pl) == 0) {
			rc = piece_add(q, st->b, strlen(st->b));
			i += pl;
		} else {
			rc = piece_add(q, s + i, 1);
			i++;
		}
	}
	return rc;
}

typedef int (*step_fn)(const step *st, pieces *q, const char *s, size_t n, bool first);

/* Run one step over every piece of *p, replacing *p with the result. */
static int run_step(const step *st, step_fn f, pieces *p)
{
	pieces q = PIECES_INIT;
	int rc = 0;
	for (size_t i = 0; i < p->s.len && rc == 0; i++)
		rc = f(st, &q, p->text.ptr + p->s.ptr[i].off, p->s.ptr[i].len, p->s.ptr[i].first);
	if (rc < 0) {
		pieces_free(&q);
		return rc;
	}
	pieces_free(p);
	*p = q;
	return 0;
}

typedef struct sym {
	int32_t id, prev, next;
	bool alive;
} sym;

typedef struct cand {
	int32_t rank, merged;
	size_t pos;
} cand;

typedef tp_array(cand) heap;

static bool cand_less(const cand *a, const cand *b)
{
	return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(heap *h, cand c)
{
	int rc = tp_array_push(h, c);
	if (rc)
		return rc;
	cand *v = h->ptr;
	for (size_t i = h->len - 1; i > 0 && cand_less(&v[i], &v[(i - 1) / 2]); i = (i - 1) / 2) {
		cand t = v[i];
		v[i] = v[(i - 1) / 2];
		v[(i - 1) / 2] = t;
	}
	return 0;
}

static cand heap_pop(heap *h)
{
	cand *v = h->ptr;
	cand top = v[0];
	v[0] = v[--h->len];
	for (size_t i = 0;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < h->len && cand_less(&v[l], &v[m]))
			m = l;
		if (r < h->len && cand_less(&v[r], &v[m]))
			m = r;
		if (m == i)
			break;
		cand t = v[i];
		v[i] = v[m];
		v[m] = t;
		i = m;
	}
	return top;
}

static int push_pair(const tp_tokenizer *t, heap *h, const sym *sy, size_t pos)
{
	int32_t rank, merged;
	if (sy[pos].next < 0 || !tp_tok_merge_get(&t->merges, sy[pos].id, sy[sy[pos].next].id, &rank,
					  &merged))
		return 0;
	return heap_push(h, (cand){ rank, merged, pos });
}

/* Initial symbols: characters, else their bytes (fallback), else unk. */
static int initial_symbols(const tp_tokenizer *t, const char *s, size_t n, sym *sy, size_t *ns)
{
	size_t k = 0;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t cl = tp_utf8_decode(s + i, n - i, &cp);
		int32_t id = tp_tok_vocab_get(&t->vocab, s + i, cl);
		bool bytes_ok = t->byte_fallback;
		for (size_t j = 0; id < 0 && bytes_ok && j < cl; j++)
			bytes_ok = t->byte_ids[(unsigned char)s[i + j]] >= 0;
		if (id >= 0) {
			sy[k++] = (sym){ id, 0, 0, true };
		} else if (bytes_ok) {
			for (size_t j = 0; j < cl; j++)
				sy[k++] = (sym){ t->byte_ids[(unsigned char)s[i + j]], 0, 0, true };
		} else if (t->unk >= 0) {
			sy[k++] = (sym){ t->unk, 0, 0, true };
		} else {
			return tp_error_set(TP_EINVAL, "text has a character (%.*s) the tokenizer "
					    "cannot encode", (int)cl, s + i);
		}
		i += cl;
	}
	for (size_t i = 0; i < k; i++) {
		sy[i].prev = (int32_t)i - 1;
		sy[i].next = i + 1 < k ? (int32_t)i + 1 : -1;
	}
	*ns = k;
	return 0;
}

/* Apply merges lowest rank first (leftmost on ties), as HF's BPE does. */
static int bpe_merge(const tp_tokenizer *t, sym *sy, size_t ns)
{
	heap h = TP_ARRAY_INIT(SIZE_MAX);
	int rc = 0;
	for (size_t i = 0; i < ns && rc == 0; i++)
		rc = push_pair(t, &h, sy, i);
	while (h.len && rc == 0) {
		cand c = heap_pop(&h);
		int32_t rank, merged, nx = sy[c.pos].next;
		if (!sy[c.pos].alive || nx < 0 ||
		    !tp_tok_merge_get(&t->merges, sy[c.pos].id, sy[nx].id, &rank, &merged) ||
		    rank != c.rank || merged != c.merged)
			continue; /* stale */
		sy[c.pos].id = merged;
		sy[nx].alive = false;
		sy[c.pos].next = sy[nx].next;
		if (sy[nx].next >= 0)
			sy[sy[nx].next].prev = (int32_t)c.pos;
		if (sy[c.pos].prev >= 0)
			rc = push_pair(t, &h, sy, (size_t)sy[c.pos].prev);
		if (rc == 0)
			rc = push_pair(t, &h, sy, c.pos);
	}
	tp_array_clear(&h);
	return rc;
}

static int bpe_piece(const tp_tokenizer *t, const char *s, size_t n, ids_vec *out)
{
	if (n == 0)
		return 0;
	int32_t whole = t->ignore_merges ? tp_tok_vocab_get(&t->vocab, s, n) : -1;
	if (whole >= 0)
		return tp_array_push(out, whole);
	size_t ns = 0;
	sym *sy = malloc(n * sizeof(*sy)); /* at most one symbol per byte */
	if (!sy)
		return tp_error_set(TP_ENOMEM, "out of memory");
	int rc = initial_symbols(t, s, n, sy, &ns);
	if (rc == 0)
		rc = bpe_merge(t, sy, ns);
	for (size_t i = 0; i < ns && rc == 0; i++)
		if (sy[i].alive)
			rc = tp_array_push(out, sy[i].id);
	free(sy);
	return rc;
}

/* Normalize, pre-tokenize and BPE one stretch of text between added tokens. */
static int encode_segment(const tp_tokenizer *t, const char *s, size_t n, bool first,
			  ids_vec *out)
{
	pieces p = PIECES_INIT;
	int rc = piece_begin(&p, first);
	if (rc == 0 && n)
		rc = piece_add(&p, s, n);
	for (size_t i = 0; i < t->nnorm && rc == 0; i++)
		rc = run_step(&t->norm[i], apply_norm, &p);
	for (size_t i = 0; i < t->npre && rc == 0; i++)
		rc = run_step(&t->pre[i], apply_pre, &p);
	for (size_t i = 0; i < p.s.len && rc == 0; i++)
		rc = bpe_piece(t, p.text.ptr + p.s.ptr[i].off, p.s.ptr[i].len, out);
	pieces_free(&p);
	return rc;
}

/* The longest added token at s, or NULL. */
static const added *match_added(const tp_tokenizer *t, const char *s, size_t n,
				bool parse_special)
{
	const added *best = NULL;
	for (size_t i = 0; i < t->nadded; i++) {
		const added *a = &t->added[i];
		if ((a->special && !parse_special) || a->len > n || (best && a->len <= best->len))
			continue;
		if (memcmp(s, a->text, a->len) == 0)
			best = a;
	}
	return best;
}

int tp_tokenizer_encode(const tp_tokenizer *t, const char *text, size_t len,
			bool parse_special, int32_t **ids, size_t *n)
{
	ids_vec out = TP_ARRAY_INIT(SIZE_MAX);
	size_t seg = 0;
	int rc = 0;
	for (size_t i = 0; i < len && rc == 0;) {
		const added *a = t->added_first[(unsigned char)text[i]]
					 ? match_added(t, text + i, len - i, parse_special) : NULL;
		if (!a) {
			i++;
			continue;
		}
		if (i > seg)
			rc = encode_segment(t, text + seg, i - seg, seg == 0, &out);
		if (rc == 0)
			rc = tp_array_push(&out, a->id);
		i += a->len;
		seg = i;
	}
	if (rc == 0 && len > seg)
		rc = encode_segment(t, text + seg, len - seg, seg == 0, &out);
	if (rc < 0) {
		tp_array_clear(&out);
		return rc;
	}
	*ids = out.ptr ? out.ptr : malloc(sizeof(int32_t));
	*n = out.len;
	return *ids ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}
