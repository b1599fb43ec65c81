/* Perplexity, KL divergence and speed over a token stream. */
#include "runtime_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CTX_DEFAULT 512

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

const char *tp_ppl_mode_name(tp_ppl_mode m)
{
	return m == TP_PPL_MODE_STRIDED ? "strided" : "llamacpp";
}

int tp_ppl_mode_from_name(const char *s, tp_ppl_mode *out)
{
	if (strcmp(s, "llamacpp") == 0)
		*out = TP_PPL_MODE_LLAMACPP;
	else if (strcmp(s, "strided") == 0)
		*out = TP_PPL_MODE_STRIDED;
	else
		return tp_error_set(TP_EINVAL, "unknown perplexity mode '%s' (llamacpp, strided)", s);
	return 0;
}

int32_t tp_runtime_choose_bos(const tp_model_config *c, const tp_tokenizer *t)
{
	int32_t tok = tp_tokenizer_bos(t);
	if (tok < 0)
		return -1;
	return c->bos_id >= 0 ? (int32_t)c->bos_id : tok;
}

/* One window: tokens [begin, begin + len) of the stream, rows whose
 * logits score the next token: [first, last]. */
typedef struct window {
	size_t begin, len, first, last;
} window;

/* Running sums over scored positions. */
typedef struct acc {
	double nll, nll2, kl, kl2;
	size_t n, same_top;
	float *kls; /* every KL value, for the percentile */
} acc;

/* A reference model's log-probs of every scored position, rows of vocab
 * floats in scoring order, in an unlinked temporary file: positions x
 * vocabulary can be far larger than the model's activations (a 32k
 * vocabulary over 50k positions is 6 GiB), and a window's rows are read
 * back with pread, so memory holds one window at a time. */
struct tp_eval_ref {
	int fd;
	size_t vocab, rows;
	/* what the scoring was: a candidate must be scored the same way */
	tp_ppl_mode mode;
	size_t ctx, stride, len;
	int32_t bos;
	uint64_t ids_hash;
};

/* The forward pass of a model on the CPU, as a tp_eval_forward: a cache
 * made at the first window (the longest: every later one is as long or
 * shorter), one batch per window. */
typedef struct model_fwd {
	const tp_model *m;
	tp_kv *kv;
	size_t cap;
} model_fwd;

static int model_run(void *ctx, const int32_t *ids, size_t n, size_t logits_from, float *logits)
{
	model_fwd *f = ctx;
	if (!f->kv || n > f->cap) {
		tp_kv_free(f->kv);
		f->kv = NULL;
		int rc = tp_kv_new(&f->kv, f->m, n, n);
		if (rc < 0)
			return rc;
		f->cap = n;
	}
	tp_kv_reset(f->kv);
	return tp_model_forward(f->m, f->kv, ids, n, logits_from, logits);
}

typedef struct run {
	const tp_eval_forward *m, *ref; /* ref: a second model for KL, or NULL */
	const tp_eval_opts *o;
	tp_eval_ref *rec;        /* writing m's log-probs into it */
	const tp_eval_ref *lps;  /* reading the reference's log-probs from it */
	size_t row;              /* next row of rec / lps */
	int32_t *stream;
	size_t len, fed;
	float *logits, *logits_ref;
	double seconds;
	acc a;
} run;

static size_t count_windows(const run *r, window *w, size_t max)
{
	size_t ctx = r->o->ctx, n = 0;
	if (r->o->mode == TP_PPL_MODE_LLAMACPP) {
		for (size_t b = 0; b + ctx <= r->len; b += ctx, n++)
			if (w && n < max)
				w[n] = (window){ b, ctx - 1, ctx / 2, ctx - 2 };
		return n;
	}
	/* HF guide: each window scores the tokens past the previous end. */
	size_t prev_end = 0;
	for (size_t b = 0;; b += r->o->stride, n++) {
		size_t end = b + ctx < r->len ? b + ctx : r->len, trg = end - prev_end;
		size_t wlen = end - b, first_label = wlen - trg > 1 ? wlen - trg : 1;
		prev_end = end;
		if (wlen < 2) /* a lone last token predicts nothing */
			return n;
		if (w && n < max)
			w[n] = (window){ b, wlen, first_label - 1, wlen - 2 };
		if (end == r->len)
			return n + 1;
	}
}

/* lg_ref: the reference's logits, or its log-probs already when r->lps. */
static void score_row(run *r, const float *lg, const float *lg_ref, int32_t target,
		      float *lp, float *lp_ref)
{
	size_t V = r->m->vocab;
	tp_runtime_log_softmax(lg, V, lp);
	double nll = -(double)lp[target];
	r->a.nll += nll;
	r->a.nll2 += nll * nll;
	if (lg_ref) {
		if (!r->lps)
			tp_runtime_log_softmax(lg_ref, V, lp_ref);
		double kl = 0;
		size_t top = 0, top_ref = 0;
		for (size_t i = 0; i < V; i++) {
			kl += exp((double)lp_ref[i]) * ((double)lp_ref[i] - lp[i]);
			top = lp[i] > lp[top] ? i : top;
			top_ref = lp_ref[i] > lp_ref[top_ref] ? i : top_ref;
		}
		r->a.kl += kl;
		r->a.kl2 += kl * kl;
		r->a.kls[r->a.n] = (float)kl;
		r->a.same_top += top == top_ref;
	}
	r->a.n++;
}

/* Write or read rows row0.. of ref's log-probs from/into buf. */
static int ref_io(const tp_eval_ref *ref, float *buf, size_t nrows, size_t row0, bool write)
{
	size_t row_bytes = ref->vocab * sizeof(float), left = nrows * row_bytes;
	if (row0 + nrows > ref->rows)
		return tp_error_set(TP_EINVAL, "reference log-probs: row %zu past %zu",
				    row0 + nrows, ref->rows);
	unsigned char *p = (unsigned char *)buf;
	off_t off = (off_t)row0 * (off_t)row_bytes;
	while (left) {
		ssize_t k = write ? pwrite(ref->fd, p, left, off) : pread(ref->fd, p, left, off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? tp_error_set_errno(TP_EIO, errno, "%s reference log-probs",
							  write ? "writing" : "reading")
				     : tp_error_set(TP_EIO, "reference log-probs: short file");
		p += k;
		left -= (size_t)k;
		off += k;
	}
	return 0;
}

static int eval_window(run *r, const window *w)
{
	size_t V = r->m->vocab;
	const int32_t *ids = r->stream + w->begin;
	int32_t *fixed = NULL;
	int rc;
	if (r->o->mode == TP_PPL_MODE_LLAMACPP && r->o->bos >= 0) {
		/* llama.cpp starts every window with BOS, replacing a token. */
		if (!(fixed = malloc(w->len * sizeof(*fixed))))
			return tp_error_set(TP_ENOMEM, "out of memory");
		memcpy(fixed, ids, w->len * sizeof(*fixed));
		fixed[0] = r->o->bos;
		ids = fixed;
	}
	double t0 = now_s();
	rc = r->m->run(r->m->ctx, ids, w->len, w->first, r->logits);
	if (rc == 0 && r->ref)
		rc = r->ref->run(r->ref->ctx, ids, w->len, w->first, r->logits_ref);
	r->seconds += now_s() - t0;
	r->fed += w->len * (r->ref ? 2 : 1);
	size_t nrows = w->last + 1 - w->first;
	if (rc == 0 && r->lps)
		rc = ref_io(r->lps, r->logits_ref, nrows, r->row, false);
	/* The scratch rows are reused as log-prob buffers once scored. */
	for (size_t i = w->first; rc == 0 && i <= w->last; i++) {
		float *lg = r->logits + (i - w->first) * V;
		float *lgr = r->ref || r->lps ? r->logits_ref + (i - w->first) * V : NULL;
		score_row(r, lg, lgr, r->stream[w->begin + i + 1], lg, lgr);
	}
	if (rc == 0 && r->rec)
		rc = ref_io(r->rec, r->logits, nrows, r->row, true);
	r->row += nrows;
	free(fixed);
	return rc;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

static void finish(const run *r, size_t nwin, tp_eval_result *out)
{
	const acc *a = &r->a;
	double n = (double)a->n, mean = a->nll / n;
	double var = a->nll2 / n - mean * mean;
	out->windows = nwin;
	out->scored = a->n;
	out->nll_mean = mean;
	out->ppl = exp(mean);
	out->ppl_err = a->n > 1 && var > 0 ? out->ppl * sqrt(var / (n - 1)) : 0;
	out->seconds = r->seconds;
	out->tokens_per_s = r->seconds > 0 ? (double)r->fed / r->seconds : 0;
	if (!r->ref && !r->lps)
		return;
	double klm = a->kl / n, klv = a->kl2 / n - klm * klm, p = (double)a->same_top / n;
	qsort(a->kls, a->n, sizeof(float), cmp_float);
	double at = 0.99 * (n - 1);
	size_t lo = (size_t)at, hi = lo + 1 < a->n ? lo + 1 : lo;
	out->has_kl = true;
	out->kl_mean = klm;
	out->kl_err = a->n > 1 && klv > 0 ? sqrt(klv / (n - 1)) : 0;
	out->kl_p99 = a->kls[lo] + (at - (double)lo) * (a->kls[hi] - a->kls[lo]);
	out->kl_max = a->kls[a->n - 1];
	out->same_top_pct = 100.0 * p;
	out->same_top_err = a->n > 1 ? 100.0 * sqrt(p * (1 - p) / (n - 1)) : 0;
}

static int check_opts(const tp_eval_forward *m, const tp_eval_forward *ref, tp_eval_opts *o)
{
	if (o->ctx == 0)
		o->ctx = CTX_DEFAULT;
	if (o->stride == 0)
		o->stride = o->ctx / 2;
	if (o->ctx < 4 || o->stride > o->ctx)
		return tp_error_set(TP_EINVAL, "bad context %zu / stride %zu", o->ctx, o->stride);
	if (ref && ref->vocab != m->vocab)
		return tp_error_set(TP_EINVAL, "reference vocabulary %zu differs from %zu",
				    ref->vocab, m->vocab);
	if (o->bos >= 0 && (size_t)o->bos >= m->vocab)
		return tp_error_set(TP_EINVAL, "BOS %d outside the vocabulary", (int)o->bos);
	return 0;
}

static int run_setup(run *r, const int32_t *ids, size_t n)
{
	const tp_eval_opts *o = r->o;
	size_t V = r->m->vocab, cells;
	if (o->max_tokens && n > o->max_tokens)
		n = o->max_tokens;
	size_t pre = o->bos >= 0 ? 1 : 0;
	if (!(r->stream = malloc((n + pre) * sizeof(int32_t))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (pre)
		r->stream[0] = o->bos;
	memcpy(r->stream + pre, ids, n * sizeof(int32_t));
	r->len = n + pre;
	if (r->len < 2 || (o->mode == TP_PPL_MODE_LLAMACPP && r->len < o->ctx))
		return tp_error_set(TP_EINVAL, "%zu tokens are too few for a context of %zu",
				    r->len, o->ctx);
	if (!tp_mul_ok(o->ctx, V, &cells) || cells > SIZE_MAX / sizeof(float))
		return tp_error_set(TP_ETOOBIG, "context x vocabulary too large");
	r->logits = malloc(cells * sizeof(float));
	bool kl = r->ref || r->lps;
	r->logits_ref = kl ? malloc(cells * sizeof(float)) : NULL;
	r->a.kls = kl ? malloc(r->len * sizeof(float)) : NULL;
	if (!r->logits || (kl && (!r->logits_ref || !r->a.kls)))
		return tp_error_set(TP_ENOMEM, "out of memory for logits");
	return 0;
}

/* FNV-1a of the token ids: a reference is only valid for the same text. */
static uint64_t hash_ids(const int32_t *ids, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	const unsigned char *p = (const unsigned char *)ids;
	for (size_t i = 0; i < n * sizeof(*ids); i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

/* The scored rows of all windows. */
static size_t count_rows(const window *w, size_t nwin)
{
	size_t rows = 0;
	for (size_t i = 0; i < nwin; i++)
		rows += w[i].last + 1 - w[i].first;
	return rows;
}

/* An empty reference file of rows x vocab floats in $TMPDIR (or /tmp),
 * unlinked at once so it goes away with the process. */
static int ref_create(tp_eval_ref **out, size_t vocab, size_t rows)
{
	const char *dir = getenv("TMPDIR");
	char path[4096];
	if (!dir || !*dir)
		dir = "/tmp";
	if ((size_t)snprintf(path, sizeof(path), "%s/tenpak-ref.XXXXXX", dir) >= sizeof(path))
		return tp_error_set(TP_EINVAL, "TMPDIR too long");
	if (rows > (uint64_t)INT64_MAX / sizeof(float) / (vocab ? vocab : 1))
		return tp_error_set(TP_ETOOBIG, "reference log-probs too large");
	tp_eval_ref *r = calloc(1, sizeof(*r));
	if (!r)
		return tp_error_set(TP_ENOMEM, "out of memory");
	r->fd = mkstemp(path);
	if (r->fd < 0) {
		int e = errno;
		free(r);
		return tp_error_set_errno(tp_error_from_errno(e), e, "creating %s", path);
	}
	unlink(path);
	r->vocab = vocab;
	r->rows = rows;
	*out = r;
	return 0;
}

/* TP_EINVAL unless ref was computed from stream[len] (BOS included) with o
 * (ctx and stride filled in) over vocab and rows scored rows. */
static int ref_check(const tp_eval_ref *ref, size_t vocab, const tp_eval_opts *o,
		     const int32_t *stream, size_t len, size_t rows)
{
	if (ref->vocab != vocab || ref->mode != o->mode || ref->ctx != o->ctx ||
	    ref->stride != o->stride || ref->len != len || ref->bos != o->bos ||
	    ref->ids_hash != hash_ids(stream, len) || ref->rows != rows)
		return tp_error_set(TP_EINVAL, "the reference log-probs were computed from other "
				    "tokens, options or vocabulary");
	return 0;
}

void tp_runtime_eval_ref_free(tp_eval_ref *r)
{
	if (!r)
		return;
	close(r->fd);
	free(r);
}

/* One scoring pass of m: with ref (a second model) or lps (its stored
 * log-probs) for KL, and recording m's log-probs into *rec when rec. */
static int eval_run(const tp_eval_forward *m, const tp_eval_forward *ref, const tp_eval_ref *lps,
		    tp_eval_ref **rec, const int32_t *ids, size_t n, const tp_eval_opts *opts,
		    tp_eval_result *out)
{
	tp_eval_opts o = *opts;
	run r = { .m = m, .ref = ref, .lps = lps, .o = &o };
	window *w = NULL;
	size_t nwin = 0;
	int rc;
	if ((rc = check_opts(m, ref, &o)) < 0 || (rc = run_setup(&r, ids, n)) < 0)
		goto done;
	nwin = count_windows(&r, NULL, 0);
	if (!(w = calloc(nwin ? nwin : 1, sizeof(*w)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	count_windows(&r, w, nwin);
	uint64_t h = hash_ids(r.stream, r.len);
	if (lps && (rc = ref_check(lps, m->vocab, &o, r.stream, r.len, count_rows(w, nwin))) < 0)
		goto done;
	if (rec) {
		if ((rc = ref_create(&r.rec, m->vocab, count_rows(w, nwin))) < 0)
			goto done;
		r.rec->mode = o.mode;
		r.rec->ctx = o.ctx;
		r.rec->stride = o.stride;
		r.rec->len = r.len;
		r.rec->bos = o.bos;
		r.rec->ids_hash = h;
	}
	for (size_t i = 0; i < nwin && rc == 0; i++) {
		rc = eval_window(&r, &w[i]);
		if (rc == 0 && o.progress)
			rc = o.progress(o.progress_ctx, i + 1, nwin);
	}
	if (rc == 0 && r.a.n == 0)
		rc = tp_error_set(TP_EINVAL, "no token was scored");
	if (rc < 0)
		goto done;
	*out = (tp_eval_result){ .mode = o.mode, .ctx = o.ctx, .stride = o.stride,
				 .tokens = r.len - (o.bos >= 0) };
	finish(&r, nwin, out);
	if (rec) {
		*rec = r.rec;
		r.rec = NULL;
	}
done:
	tp_runtime_eval_ref_free(r.rec);
	free(w);
	free(r.stream);
	free(r.logits);
	free(r.logits_ref);
	free(r.a.kls);
	return rc;
}

/* eval_run of CPU models m and ref (NULL: none). */
static int eval_models(const tp_model *m, const tp_model *ref, const tp_eval_ref *lps,
		       tp_eval_ref **rec, const int32_t *ids, size_t n, const tp_eval_opts *opts,
		       tp_eval_result *out)
{
	model_fwd fm = { .m = m }, fr = { .m = ref };
	tp_eval_forward em = { m->cfg.vocab, model_run, &fm };
	tp_eval_forward er = { ref ? ref->cfg.vocab : 0, model_run, &fr };
	int rc = eval_run(&em, ref ? &er : NULL, lps, rec, ids, n, opts, out);
	tp_kv_free(fm.kv);
	tp_kv_free(fr.kv);
	return rc;
}

int tp_runtime_eval_perplexity(const tp_model *m, const tp_model *ref, const int32_t *ids,
			       size_t n, const tp_eval_opts *opts, tp_eval_result *out)
{
	return eval_models(m, ref, NULL, NULL, ids, n, opts, out);
}

int tp_runtime_eval_reference(tp_eval_ref **ref, const tp_model *m, const int32_t *ids,
			      size_t n, const tp_eval_opts *opts, tp_eval_result *out)
{
	return eval_models(m, NULL, NULL, ref, ids, n, opts, out);
}

int tp_runtime_eval_perplexity_ref(const tp_model *m, const tp_eval_ref *ref,
				   const int32_t *ids, size_t n, const tp_eval_opts *opts,
				   tp_eval_result *out)
{
	if (!ref)
		return tp_error_set(TP_EINVAL, "no reference log-probs");
	return eval_models(m, NULL, ref, NULL, ids, n, opts, out);
}

int tp_runtime_eval_forward(const tp_eval_forward *f, const tp_eval_ref *ref, const int32_t *ids,
			    size_t n, const tp_eval_opts *opts, tp_eval_result *out)
{
	return eval_run(f, NULL, ref, NULL, ids, n, opts, out);
}

int tp_runtime_eval_forward_reference(tp_eval_ref **ref, const tp_eval_forward *f,
				      const int32_t *ids, size_t n, const tp_eval_opts *opts,
				      tp_eval_result *out)
{
	return eval_run(f, NULL, NULL, ref, ids, n, opts, out);
}

/* The q-quantile of sorted v[n] (n > 0), linear interpolation. */
static double quantile(const double *v, size_t n, double q)
{
	double at = q * (double)(n - 1);
	size_t lo = (size_t)at, hi = lo + 1 < n ? lo + 1 : lo;
	return v[lo] + (at - (double)lo) * (v[hi] - v[lo]);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int tp_runtime_eval_speed(const tp_model *m, const int32_t *ids, size_t n_prefill,
			  size_t n_decode, tp_speed_result *out)
{
	tp_kv *kv = NULL;
	float *logits = malloc(m->cfg.vocab * sizeof(float));
	double *step = malloc((n_decode ? n_decode : 1) * sizeof(double));
	int rc;
	if (!logits || !step) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if (n_prefill == 0) {
		rc = tp_error_set(TP_EINVAL, "nothing to prefill");
		goto done;
	}
	if ((rc = tp_kv_new(&kv, m, n_prefill + n_decode, n_prefill)) < 0)
		goto done;
	double t0 = now_s();
	if ((rc = tp_model_forward(m, kv, ids, n_prefill, n_prefill - 1, logits)) < 0)
		goto done;
	double t1 = now_s(), t = t1;
	for (size_t i = 0; i < n_decode && rc == 0; i++) {
		rc = tp_model_forward(m, kv, ids + n_prefill + i, 1, 0, logits);
		double t_end = now_s();
		step[i] = t_end - t;
		t = t_end;
	}
	double t2 = t;
	if (rc < 0)
		goto done;
	*out = (tp_speed_result){ n_prefill, n_decode, (double)n_prefill / (t1 - t0),
				  n_decode ? (double)n_decode / (t2 - t1) : 0, 0, 0, 0, 0 };
	if (n_decode) {
		qsort(step, n_decode, sizeof(*step), cmp_double);
		out->latency_p50_ms = 1e3 * quantile(step, n_decode, 0.50);
		out->latency_p95_ms = 1e3 * quantile(step, n_decode, 0.95);
		out->latency_p99_ms = 1e3 * quantile(step, n_decode, 0.99);
		out->latency_mean_ms = 1e3 * (t2 - t1) / (double)n_decode;
	}
done:
	tp_kv_free(kv);
	free(logits);
	free(step);
	return rc;
}
